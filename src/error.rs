//! The REST API's one error vocabulary: [`ErrorKind`] maps to a status code, a stable problem
//! `type`, and the label used in metrics; [`ApiError`] renders RFC 9457 `application/problem+json`.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::domain::{FieldError, Invalid};
use crate::pipeline::ScoreError;

pub const PROBLEM_JSON: &str = "application/problem+json";

/// Every error the REST API returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    InvalidInput,
    Unauthorized,
    NotFound,
    MethodNotAllowed,
    RequestTimeout,
    PayloadTooLarge,
    UnsupportedMediaType,
    RateLimited,
    Overloaded,
    ModelUnavailable,
    /// The fleet's shared limits cannot be reached and `fleet.on_redis_error = "deny"`.
    LimitsUnavailable,
    DeadlineExceeded,
    ShuttingDown,
    /// A handler failed (panicked): a bug, never the caller's fault.
    Internal,
}

impl ErrorKind {
    pub const fn status(self) -> StatusCode {
        match self {
            Self::InvalidInput => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Overloaded
            | Self::ModelUnavailable
            | Self::LimitsUnavailable
            | Self::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            Self::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Stable snake_case name: the tail of the problem `type` and the metrics label.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::InvalidInput => "invalid_input",
            Self::Unauthorized => "unauthorized",
            Self::RateLimited => "rate_limited",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::RequestTimeout => "request_timeout",
            Self::PayloadTooLarge => "payload_too_large",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::Overloaded => "overloaded",
            Self::ModelUnavailable => "model_unavailable",
            Self::LimitsUnavailable => "limits_unavailable",
            Self::DeadlineExceeded => "deadline_exceeded",
            Self::ShuttingDown => "shutting_down",
            Self::Internal => "internal",
        }
    }

    const fn title(self) -> &'static str {
        match self {
            Self::InvalidInput => "Invalid input",
            Self::Unauthorized => "Unauthorized",
            Self::RateLimited => "Rate limited",
            Self::NotFound => "Not found",
            Self::MethodNotAllowed => "Method not allowed",
            Self::RequestTimeout => "Request timeout",
            Self::PayloadTooLarge => "Payload too large",
            Self::UnsupportedMediaType => "Unsupported media type",
            Self::Overloaded => "Overloaded",
            Self::ModelUnavailable => "Model unavailable",
            Self::LimitsUnavailable => "Limits unavailable",
            Self::DeadlineExceeded => "Deadline exceeded",
            Self::ShuttingDown => "Shutting down",
            Self::Internal => "Internal error",
        }
    }

    /// Seconds a client should wait before retrying, for the kinds where retrying helps.
    const fn retry_after(self) -> Option<u32> {
        match self {
            Self::Overloaded
            | Self::ModelUnavailable
            | Self::LimitsUnavailable
            | Self::ShuttingDown => Some(1),
            _ => None,
        }
    }
}

/// RFC 9457 problem details, with the field errors of a 400.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({
    "type": "urn:infergate:problem:invalid_input",
    "title": "Invalid input",
    "status": 400,
    "detail": "the transaction has 2 invalid fields",
    "errors": [
        {"field": "amount", "code": "out_of_range", "message": "`amount` must be >= 0. Given: -3.5"},
        {"field": "card_id", "code": "missing", "message": "`card_id` is required (a string of 1 to 128 characters)"}
    ]
}))]
pub struct Problem {
    /// Stable identifier of the problem kind: `urn:infergate:problem:<kind>`.
    #[serde(rename = "type")]
    pub type_: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// The field problems, for `invalid_input`: at most 100 per transaction and 1,000 per
    /// batch response.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// How many more field problems were found than `errors` lists (absent when none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncated: Option<usize>,
}

/// An error answered to a REST caller.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub kind: ErrorKind,
    pub detail: String,
    pub errors: Vec<FieldError>,
    /// Field problems found but not listed in `errors`.
    pub omitted: usize,
    /// Headers the error carries besides the defaults (rate-limit state, a computed
    /// `Retry-After`). Boxed: errors travel in `Result`s on hot paths, so they stay small.
    pub headers: Box<HeaderMap>,
}

impl ApiError {
    pub fn new(kind: ErrorKind, detail: impl Into<String>) -> Self {
        Self {
            kind,
            detail: detail.into(),
            errors: Vec::new(),
            omitted: 0,
            headers: Box::default(),
        }
    }

    pub fn invalid(detail: impl Into<String>, errors: Vec<FieldError>) -> Self {
        Self {
            errors,
            ..Self::new(ErrorKind::InvalidInput, detail)
        }
    }

    /// 413: the body is over `limits.body_limit_bytes`, however it was being read.
    pub fn payload_too_large() -> Self {
        Self::new(
            ErrorKind::PayloadTooLarge,
            "the body is larger than the configured limit (`limits.body_limit_bytes`)",
        )
    }

    /// A 400 for an invalid transaction, its problems listed (bounded) and the rest counted.
    pub fn invalid_transaction(invalid: Invalid) -> Self {
        let detail = format!("the transaction has {} invalid field(s)", invalid.total());
        Self {
            omitted: invalid.omitted,
            ..Self::invalid(detail, invalid.errors)
        }
    }

    pub fn problem(&self) -> Problem {
        Problem {
            type_: format!("urn:infergate:problem:{}", self.kind.as_str()),
            title: self.kind.title().to_owned(),
            status: self.kind.status().as_u16(),
            detail: self.detail.clone(),
            errors: self.errors.clone(),
            truncated: (self.omitted > 0).then_some(self.omitted),
        }
    }
}

impl From<ScoreError> for ApiError {
    fn from(e: ScoreError) -> Self {
        let kind = match e {
            ScoreError::Overloaded { .. } => ErrorKind::Overloaded,
            ScoreError::DeadlineExceeded { .. } => ErrorKind::DeadlineExceeded,
            ScoreError::Model(_) => ErrorKind::ModelUnavailable,
            ScoreError::ShuttingDown => ErrorKind::ShuttingDown,
        };
        Self::new(kind, e.to_string())
    }
}

/// Rides every error response as an extension, so that a route speaking another error dialect
/// (the SageMaker route's rest-json) can re-render it without parsing the body.
#[derive(Debug, Clone)]
pub struct RenderedError {
    pub kind: ErrorKind,
    pub detail: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = self.problem();
        let mut response = (self.kind.status(), axum::Json(problem)).into_response();
        response.extensions_mut().insert(RenderedError {
            kind: self.kind,
            detail: self.detail,
        });
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let Some(secs) = self.kind.retry_after() {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.kind == ErrorKind::Unauthorized {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("ApiKey header=\"x-api-key\", AWS4-HMAC-SHA256"),
            );
        }
        headers.extend(*self.headers);
        response
    }
}
