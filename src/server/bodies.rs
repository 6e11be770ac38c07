//! Request bodies bounded in size and in time, and no error answered without a problem body.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::domain::clip;
use crate::error::{ApiError, ErrorKind, RenderedError};

/// How much body a request may send, and how fast.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BodyLimits {
    pub max_bytes: usize,
    pub read_timeout: Duration,
}

/// Reads the whole body before the request goes on, within `max_bytes` and `read_timeout`: a
/// `Content-Length` over the limit is answered 413 before any of the body is read (so an
/// `Expect: 100-continue` client gets no `100 Continue`), a body that stops short or trickles
/// 408. Either closes the connection, whose remaining bytes are unknown.
pub(crate) async fn read_body(
    State(limits): State<BodyLimits>,
    request: Request,
    next: Next,
) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.max_bytes as u64) {
        return closing(ApiError::payload_too_large());
    }
    let (parts, body) = request.into_parts();
    let read = axum::body::to_bytes(body, limits.max_bytes);
    let bytes = match tokio::time::timeout(limits.read_timeout, read).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(e)) if is_too_long(&e) => return closing(ApiError::payload_too_large()),
        Ok(Err(_)) => {
            return closing(ApiError::new(
                ErrorKind::InvalidInput,
                "the request body could not be read",
            ));
        }
        Err(_) => {
            return closing(ApiError::new(
                ErrorKind::RequestTimeout,
                format!(
                    "the request body did not arrive within {} ms (`http.body_read_timeout_ms`)",
                    limits.read_timeout.as_millis()
                ),
            ));
        }
    };
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

fn is_too_long(e: &axum::Error) -> bool {
    std::error::Error::source(e)
        .is_some_and(|source| source.is::<http_body_util::LengthLimitError>())
}

fn closing(error: ApiError) -> Response {
    let mut response = error.into_response();
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// Renders error responses that carry no JSON body (axum's 405 and path rejections, the
/// request timeout's 504) as problems, keeping their status and headers (`Allow`, say).
pub(crate) async fn problems_only(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error())
        || response.extensions().get::<RenderedError>().is_some()
        || is_json(&response)
    {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 1024).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let kind = match status.as_u16() {
        401 => ErrorKind::Unauthorized,
        404 => ErrorKind::NotFound,
        405 => ErrorKind::MethodNotAllowed,
        408 => ErrorKind::RequestTimeout,
        413 => ErrorKind::PayloadTooLarge,
        415 => ErrorKind::UnsupportedMediaType,
        429 => ErrorKind::RateLimited,
        504 => ErrorKind::DeadlineExceeded,
        500.. => ErrorKind::Internal,
        _ => ErrorKind::InvalidInput,
    };
    let detail = match (kind, text.trim()) {
        (ErrorKind::MethodNotAllowed, _) => "the route does not take this method".to_owned(),
        (ErrorKind::DeadlineExceeded, "") => "no answer within the request timeout".to_owned(),
        (_, "") => status
            .canonical_reason()
            .unwrap_or("error")
            .to_ascii_lowercase(),
        (_, text) => clip(text, 200).to_owned(),
    };
    let problem = ApiError::new(kind, detail).into_response();
    let (problem_parts, problem_body) = problem.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.extend(problem_parts.headers);
    parts.extensions.extend(problem_parts.extensions);
    Response::from_parts(parts, problem_body)
}

fn is_json(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(crate::api::json::is_json)
}
