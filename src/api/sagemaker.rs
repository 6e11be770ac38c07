//! The SageMaker Runtime wire API: `POST /endpoints/{EndpointName}/invocations` and `GET /ping`,
//! so that boto3, the AWS CLI or a SigV4-signing HTTP client pointed at infergate with
//! `--endpoint-url` gain its cache, limits and batching without a code change.
//!
//! Errors use AWS's rest-json shape (`x-amzn-ErrorType` header, `{"message": ...}` body) with
//! SageMaker's codes, so that botocore raises its modelled exceptions.

use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use std::sync::Arc;

use super::media_type;
use super::wants_refresh;
use crate::domain::clip;
use crate::error::{ErrorKind, RenderedError};
use crate::middleware::auth::Caller;
use crate::model::RawRequest;
use crate::pipeline::{Admit, ScoreError};
use crate::state::AppState;

/// The production variant every response names (a single-model endpoint's default).
pub const VARIANT: &str = "AllTraffic";

/// Most problems listed in one `ValidationError` message.
const MAX_LISTED: usize = 10;

/// The endpoint names the route answers to: the model's own name and `model.endpoint_aliases`.
#[derive(Debug, Clone)]
pub struct EndpointNames {
    names: Vec<String>,
    any: bool,
}

impl EndpointNames {
    /// `label` is the model's (`name@version`); its name is the endpoint's.
    pub fn new(label: &str, aliases: &[String]) -> Self {
        let own = label.split_once('@').map_or(label, |(name, _)| name);
        let mut names = vec![own.to_owned()];
        names.extend(aliases.iter().filter(|a| *a != "*").cloned());
        Self {
            names,
            any: aliases.iter().any(|a| a == "*"),
        }
    }

    pub fn admits(&self, name: &str) -> bool {
        self.any || self.names.iter().any(|n| n == name)
    }
}

/// An error in AWS's rest-json shape.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"message": "row 2 has 8 values; the model reads 9 features"}))]
pub struct AwsError {
    pub message: String,
}

/// `{"predictions": [{"score": ...}]}`, for `Accept: application/json`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"predictions": [{"score": 0.0031}, {"score": 0.9712}]}))]
pub struct Predictions {
    pub predictions: Vec<Prediction>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Prediction {
    pub score: f32,
}

/// A JSON answer: the scores (`Accept: application/json`), or Clarify's explanations (with
/// `X-Amzn-SageMaker-Enable-Explanations`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum JsonAnswer {
    Scores(Predictions),
    Clarify(super::clarify::ClarifyAnswer),
}

/// A SageMaker Runtime error: its code, HTTP status and message.
#[derive(Debug, Clone)]
pub struct SageMakerError {
    pub code: &'static str,
    pub status: StatusCode,
    pub message: String,
    pub retry_after: Option<HeaderValue>,
}

impl SageMakerError {
    fn validation(message: impl Into<String>) -> Self {
        Self {
            code: "ValidationError",
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            retry_after: None,
        }
    }

    /// The SageMaker error for one of our REST error kinds.
    fn from_kind(kind: ErrorKind, message: String) -> Self {
        let (code, status) = match kind {
            ErrorKind::InvalidInput => ("ValidationError", StatusCode::BAD_REQUEST),
            ErrorKind::PayloadTooLarge => ("ValidationError", StatusCode::PAYLOAD_TOO_LARGE),
            ErrorKind::UnsupportedMediaType => {
                ("ValidationError", StatusCode::UNSUPPORTED_MEDIA_TYPE)
            }
            ErrorKind::NotFound => ("ValidationError", StatusCode::NOT_FOUND),
            ErrorKind::MethodNotAllowed => ("ValidationError", StatusCode::METHOD_NOT_ALLOWED),
            ErrorKind::RequestTimeout => ("ValidationError", StatusCode::REQUEST_TIMEOUT),
            // What AWS answers for credentials it does not know.
            ErrorKind::Unauthorized => ("UnrecognizedClientException", StatusCode::UNAUTHORIZED),
            ErrorKind::RateLimited => ("ThrottlingException", StatusCode::TOO_MANY_REQUESTS),
            ErrorKind::Overloaded | ErrorKind::LimitsUnavailable | ErrorKind::ShuttingDown => {
                ("ServiceUnavailable", StatusCode::SERVICE_UNAVAILABLE)
            }
            // SageMaker reports a container that failed or timed out as a ModelError (424).
            ErrorKind::ModelUnavailable | ErrorKind::DeadlineExceeded => {
                ("ModelError", StatusCode::FAILED_DEPENDENCY)
            }
            ErrorKind::Internal => ("InternalFailure", StatusCode::INTERNAL_SERVER_ERROR),
        };
        Self {
            code,
            status,
            message,
            retry_after: None,
        }
    }
}

impl From<ScoreError> for SageMakerError {
    fn from(e: ScoreError) -> Self {
        let kind = crate::error::ApiError::from(e.clone()).kind;
        let mut error = Self::from_kind(kind, e.to_string());
        if matches!(kind, ErrorKind::Overloaded | ErrorKind::ShuttingDown) {
            error.retry_after = Some(HeaderValue::from_static("1"));
        }
        error
    }
}

impl IntoResponse for SageMakerError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            Json(AwsError {
                message: self.message,
            }),
        )
            .into_response();
        let headers = response.headers_mut();
        headers.insert("x-amzn-errortype", HeaderValue::from_static(self.code));
        if let Some(retry_after) = self.retry_after {
            headers.insert(header::RETRY_AFTER, retry_after);
        }
        response
    }
}

/// Turns the problem+json errors of the shared middleware (401, 413, 429) into rest-json on
/// this route, keeping their headers (`Retry-After`, `RateLimit-*`).
pub async fn aws_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let Some(error) = response.extensions().get::<RenderedError>().cloned() else {
        return response;
    };
    let (mut parts, _problem) = response.into_parts();
    let converted = SageMakerError::from_kind(error.kind, error.detail).into_response();
    let (converted_parts, converted_body) = converted.into_parts();
    parts.status = converted_parts.status;
    parts.headers.remove(header::WWW_AUTHENTICATE);
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.extend(converted_parts.headers);
    Response::from_parts(parts, converted_body)
}

/// Cost of a CSV body for the rate limit: its number of rows.
pub fn csv_cost(body: &[u8]) -> u32 {
    let rows = body
        .split(|b| *b == b'\n')
        .filter(|line| line.iter().any(|b| !b.is_ascii_whitespace()))
        .count();
    u32::try_from(rows).unwrap_or(u32::MAX).max(1)
}

/// Invoke the model, as SageMaker Runtime's `InvokeEndpoint`.
///
/// The body is `text/csv`: one row per line, the model's features in its order (see
/// `GET /health/ready` for the model; the fraud model reads `amount, amount_ratio_30d,
/// hour_of_day, merchant_category, card_present, foreign, distance_from_home_km, tx_count_1h,
/// tx_count_24h`), no header; an empty value is a missing value. The answer has one score per
/// row, in order: a line each (`text/csv`), or `{"predictions": [{"score": ...}]}` for
/// `Accept: application/json`. The endpoint name is the model's (`fraud-xgb` for the built-in
/// model, the endpoint's with a SageMaker backend) or one of `model.endpoint_aliases`; another
/// name is a `ValidationError`, as SageMaker answers for an endpoint that does not exist. With a SageMaker backend, other
/// content types are passed to the endpoint whole (and their answers cached by body hash).
#[utoipa::path(
    post,
    path = "/endpoints/{EndpointName}/invocations",
    tag = "sagemaker",
    params(
        ("EndpointName" = String, Path, description = "The model's name (`fraud-xgb` for the built-in model) or one of `model.endpoint_aliases`", example = "fraud-xgb"),
        ("X-Amzn-SageMaker-Enable-Explanations" = Option<String>, Header, description = "SageMaker Clarify's `EnableExplanations`: `` `true` ``, `` `false` `` or a comparison of the score such as `` [0]>`0.5` ``. With it, the answer is Clarify's JSON (`version`, `predictions`, `explanations.kernel_shap` with exact TreeSHAP values on the log-odds scale)", example = "[0]>`0.5`"),
    ),
    request_body(content = String, content_type = "text/csv",
        example = "1500,30,2,6051,0,1,9000,5,9\n42.5,0.83,14,5411,1,0,3.2,0,2\n"),
    security(("api_key" = []), ("sigv4" = [])),
    responses(
        (status = 200, description = "One score per row", content(
            (String = "text/csv", example = "0.92125046\n0.0010378546\n"),
            (JsonAnswer = "application/json"),
        ), headers(
            ("x-Amzn-Invoked-Production-Variant" = String, description = "Always `AllTraffic`"),
            ("Server-Timing" = String, description = "`auth`, `queue`, `model` (the longest among the rows' computed scores) and `total`, in ms"),
        )),
        (status = 400, description = "`ValidationError`: an endpoint name the gateway does not answer to, no rows, a row with the wrong number of values, or a value that is not a finite number",
            body = AwsError, headers(("x-amzn-ErrorType" = String, description = "The error code"))),
        (status = 401, description = "`UnrecognizedClientException`: missing or unknown credentials",
            body = AwsError, headers(("x-amzn-ErrorType" = String, description = "The error code"))),
        (status = 413, description = "`ValidationError`: body over `limits.body_limit_bytes`",
            body = AwsError, headers(("x-amzn-ErrorType" = String, description = "The error code"))),
        (status = 415, description = "`ValidationError`: the embedded model reads only `text/csv` (a SageMaker backend takes any content type, passed through whole)",
            body = AwsError, headers(("x-amzn-ErrorType" = String, description = "The error code"))),
        (status = 424, description = "`ModelError`: the model failed or passed the deadline",
            body = AwsError, headers(("x-amzn-ErrorType" = String, description = "The error code"))),
        (status = 429, description = "`ThrottlingException`: the caller's plan or the global limit is exhausted",
            body = AwsError, headers(
                ("x-amzn-ErrorType" = String, description = "The error code"),
                ("Retry-After" = u64, description = "Seconds until the request can succeed"),
            )),
        (status = 503, description = "`ServiceUnavailable`: the queue is full or the gateway is stopping",
            body = AwsError, headers(
                ("x-amzn-ErrorType" = String, description = "The error code"),
                ("Retry-After" = u32, description = "Seconds to wait before retrying"),
            )),
    )
)]
pub async fn invocations(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    endpoint: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, SageMakerError> {
    let started = std::time::Instant::now();
    let Path(endpoint) = endpoint.map_err(|_| {
        SageMakerError::validation("the endpoint name is not a valid percent-encoded UTF-8 name")
    })?;
    if !state.endpoints.admits(&endpoint) {
        // SageMaker's answer for an endpoint that does not exist.
        return Err(SageMakerError::validation(format!(
            "Endpoint {} not found.",
            clip(&endpoint, 64)
        )));
    }
    tracing::debug!(endpoint = %endpoint, "invocation");
    let content_type = media_type(&headers, header::CONTENT_TYPE);
    // Clarify's explanations for a model that cannot give them (a SageMaker backend): the
    // endpoint's own explainer answers, the request passed through whole.
    let clarify_elsewhere =
        headers.contains_key(super::clarify::HEADER) && !state.scoring.model().explains();
    if content_type != "text/csv" || clarify_elsewhere {
        return pass_through(&state, &caller, &headers, &body).await;
    }
    let layout = state.scoring.model().layout();
    let rows = parse_csv(&body, layout.len()).map_err(SageMakerError::validation)?;
    if rows.len() > state.limits.max_batch_items {
        return Err(SageMakerError::validation(format!(
            "the body has {} rows; at most {} (`limits.max_batch_items`) are accepted",
            rows.len(),
            state.limits.max_batch_items
        )));
    }
    // CSV rows carry no transaction id: a row is identified by its values alone.
    let items: Vec<(String, _)> = rows
        .iter()
        .map(|values| (String::new(), layout.scatter(values)))
        .collect();
    let explain =
        super::clarify::Filter::from_headers(&headers).map_err(SageMakerError::validation)?;
    if explain.is_some() {
        state
            .scoring
            .may_explain(true)
            .map_err(SageMakerError::validation)?;
    }
    let features: Vec<_> = items.iter().map(|(_, features)| *features).collect();
    let outcomes = state
        .scoring
        .many(items, wants_refresh(&headers, &caller), Admit::TryNow)
        .await?;
    let mut scored = Vec::with_capacity(outcomes.len());
    for outcome in outcomes {
        // InvokeEndpoint answers a request whole: the first failed row fails it.
        scored.push(outcome?);
    }
    let timing = super::timing::HandlerTiming::of(started, &scored);
    let scores: Vec<f32> = scored.iter().map(|s| s.fraud_score).collect();
    if let Some(filter) = explain {
        let admitted: Vec<bool> = scores.iter().map(|s| filter.admits(*s)).collect();
        let rows = features
            .iter()
            .zip(&admitted)
            .filter(|(_, admitted)| **admitted)
            .map(|(features, _)| *features)
            .collect();
        let mut computed = state.scoring.explain_all(rows).await.into_iter();
        let mut explained = Vec::with_capacity(scores.len());
        for admitted in admitted {
            explained.push(match admitted {
                true => Some(
                    computed
                        .next()
                        .expect("one explanation per admitted row")
                        .map_err(SageMakerError::validation)?,
                ),
                false => None,
            });
        }
        let mut response = super::clarify::response(csv_lines(&scores), explained);
        response.extensions_mut().insert(timing);
        return Ok(response);
    }
    let mut response = if media_type(&headers, header::ACCEPT) == "application/json" {
        let predictions = scores
            .into_iter()
            .map(|score| Prediction { score })
            .collect();
        Json(Predictions { predictions }).into_response()
    } else {
        ([(header::CONTENT_TYPE, "text/csv")], csv_lines(&scores)).into_response()
    };
    response.headers_mut().insert(
        "x-amzn-invoked-production-variant",
        HeaderValue::from_static(VARIANT),
    );
    response.extensions_mut().insert(timing);
    Ok(response)
}

/// One score per line, as the CSV answer holds them.
fn csv_lines(scores: &[f32]) -> String {
    let mut text = String::with_capacity(scores.len() * 12);
    for score in scores {
        text.push_str(&score.to_string());
        text.push('\n');
    }
    text
}

/// Bodies other than CSV go to a SageMaker backend whole, and their answers are cached by body
/// hash; the embedded model, which only reads CSV rows, refuses them (415).
async fn pass_through(
    state: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, SageMakerError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/octet-stream");
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let enable_explanations = headers
        .get(super::clarify::HEADER)
        .and_then(|v| v.to_str().ok());
    let request = RawRequest {
        body,
        content_type,
        accept,
        enable_explanations,
    };
    let refresh = wants_refresh(headers, caller);
    let Some(answer) = state.scoring.raw(request, refresh).await? else {
        return Err(SageMakerError {
            code: "ValidationError",
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            message: format!(
                "the embedded model accepts `text/csv`; given content type {:?}",
                clip(content_type, 64)
            ),
            retry_after: None,
        });
    };
    let mut response = answer.body.clone().into_response();
    let headers = response.headers_mut();
    if let Some(ct) = answer
        .content_type
        .as_deref()
        .and_then(|ct| HeaderValue::from_str(ct).ok())
    {
        headers.insert(header::CONTENT_TYPE, ct);
    }
    headers.insert(
        "x-amzn-invoked-production-variant",
        HeaderValue::from_static(VARIANT),
    );
    Ok(response)
}

/// A SageMaker container's health check.
#[utoipa::path(get, path = "/ping", tag = "sagemaker",
    responses((status = 200, description = "The model is loaded")))]
pub async fn ping(State(state): State<Arc<AppState>>) -> StatusCode {
    if state.scoring.model().ready() && !state.health.is_shutting_down() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

/// Rows of `width` numbers; every problem is reported (up to a limit), with its row and column.
pub(crate) fn parse_csv(body: &[u8], width: usize) -> Result<Vec<Vec<f32>>, String> {
    let text = std::str::from_utf8(body).map_err(|_| "the body is not UTF-8 text".to_owned())?;
    let mut rows = Vec::new();
    let mut problems = Vec::new();
    for (n, line) in text.split('\n').enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split(',').collect();
        if fields.len() != width {
            problems.push(format!(
                "row {} has {} values; the model reads {width} features",
                n + 1,
                fields.len()
            ));
            continue;
        }
        let mut values = Vec::with_capacity(width);
        for (c, field) in fields.iter().enumerate() {
            let field = field.trim();
            if field.is_empty() {
                values.push(f32::NAN);
                continue;
            }
            match field.parse::<f32>() {
                Ok(v) if v.is_finite() => values.push(v),
                _ => problems.push(format!(
                    "row {} column {}: {:?} is not a finite number",
                    n + 1,
                    c + 1,
                    clip(field, 32)
                )),
            }
        }
        if values.len() == width {
            rows.push(values);
        }
    }
    if !problems.is_empty() {
        let total = problems.len();
        problems.truncate(MAX_LISTED);
        let more = if total > MAX_LISTED {
            format!(" (and {} more)", total - MAX_LISTED)
        } else {
            String::new()
        };
        return Err(format!("{}{more}", problems.join("; ")));
    }
    if rows.is_empty() {
        return Err("the body has no rows".to_owned());
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_rows_with_missing_values_and_every_problem_listed() {
        let rows = parse_csv(b"1,2,3\r\n4,,6\n\n", 3).unwrap();
        assert_eq!(rows.len(), 2);
        assert!(rows[1][1].is_nan());
        let err = parse_csv(b"1,2\n1,x,3\n1,2,inf\n", 3).unwrap_err();
        assert!(err.contains("row 1 has 2 values"), "{err}");
        assert!(err.contains("row 2 column 2"), "{err}");
        assert!(err.contains("row 3 column 3"), "{err}");
        assert_eq!(parse_csv(b"\n \n", 3).unwrap_err(), "the body has no rows");
        assert!(parse_csv(&[0xff, 0xfe], 3).is_err());
    }

    #[test]
    fn csv_cost_counts_rows() {
        assert_eq!(csv_cost(b"1,2\n3,4\n"), 2);
        assert_eq!(csv_cost(b"1,2\r\n\r\n3,4"), 2);
        assert_eq!(csv_cost(b""), 1);
    }
}
