//! Request middleware for the scoring routes: who is calling, and whether their plan (and the
//! gateway's global limit) admits the request.

pub mod auth;
pub mod rate_limit;
pub mod sigv4;

use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::{Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::{ApiError, ErrorKind};
use auth::Caller;
use rate_limit::RateLimits;

/// How many tokens a request costs, from its body (one per transaction).
pub type CostFn = fn(&[u8]) -> u32;

/// State of the rate-limit middleware on one route.
#[derive(Clone)]
pub struct RateLimitState {
    pub limits: Arc<RateLimits>,
    /// `None`: every request costs one token and the body is not read here.
    pub cost: Option<CostFn>,
    pub body_limit: usize,
}

/// Charges the caller's plan and the global limit; 429 with `Retry-After` and `RateLimit-*`
/// headers when either is exhausted, and the caller's `RateLimit-*` state on every response.
pub async fn rate_limit(
    State(state): State<RateLimitState>,
    request: Request,
    next: Next,
) -> Response {
    let caller = request
        .extensions()
        .get::<Caller>()
        .cloned()
        .unwrap_or_else(Caller::anonymous);
    let (request, cost) = match state.cost {
        None => (request, 1),
        Some(cost_of) => {
            let (parts, body) = request.into_parts();
            let Ok(bytes) = axum::body::to_bytes(body, state.body_limit).await else {
                return ApiError::payload_too_large().into_response();
            };
            let cost = cost_of(&bytes);
            (
                Request::from_parts(parts, axum::body::Body::from(bytes)),
                cost,
            )
        }
    };
    let name = (!caller.is_anonymous()).then_some(&*caller.name);
    match state.limits.check(name, cost, SystemTime::now()) {
        Ok(info) => {
            let mut response = next.run(request).await;
            if let Some(info) = info {
                info.write_headers(response.headers_mut());
            }
            response
        }
        Err(limited) => {
            metrics::counter!(
                "infergate_rate_limited_total",
                "caller" => caller.name.to_string(),
                "scope" => limited.scope.as_str()
            )
            .increment(1);
            let mut error = ApiError::new(ErrorKind::RateLimited, limited.detail);
            limited.info.write_headers(&mut error.headers);
            if let Some(secs) = limited.retry_after_secs {
                error.headers.insert("retry-after", HeaderValue::from(secs));
            }
            error.into_response()
        }
    }
}

/// Cost of a score-batch body: its number of transactions (at least 1). A body that is not a
/// batch costs 1; validation then refuses it.
pub fn batch_cost(body: &[u8]) -> u32 {
    #[derive(serde::Deserialize)]
    struct Shape {
        transactions: Vec<serde::de::IgnoredAny>,
    }
    serde_json::from_slice::<Shape>(body)
        .map(|s| {
            u32::try_from(s.transactions.len())
                .unwrap_or(u32::MAX)
                .max(1)
        })
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::batch_cost;

    #[test]
    fn batch_cost_counts_transactions() {
        assert_eq!(batch_cost(br#"{"transactions": [{}, 1, "x"]}"#), 3);
        assert_eq!(batch_cost(br#"{"transactions": []}"#), 1);
        assert_eq!(batch_cost(b"not json"), 1);
    }
}
