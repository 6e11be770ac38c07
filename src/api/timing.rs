//! `Server-Timing` on the scoring routes, so that a caller (and the load tool) can split a
//! request's latency without traces: `auth` (credentials and the usage plan, everything before
//! the handler), `queue` (waiting for a batch), `model` (the batch's model call) and `total`.
//! A score answered from the cache has no `queue` or `model`.

use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;

use crate::domain::Score;

/// What a scoring handler tells the timing layer, as a response extension.
#[derive(Debug, Clone, Copy)]
pub struct HandlerTiming {
    pub started: Instant,
    /// The longest queue wait and model call among the request's computed scores.
    pub computed: Option<(Duration, Duration)>,
}

impl HandlerTiming {
    /// The timing of a handler that started at `started` and answered `scores`.
    pub fn of<'a>(started: Instant, scores: impl IntoIterator<Item = &'a Score>) -> Self {
        let computed = scores
            .into_iter()
            .filter_map(|s| s.timing)
            .map(|t| (t.queue, t.model))
            .reduce(|a, b| (a.0.max(b.0), a.1.max(b.1)));
        Self { started, computed }
    }
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1000.0)
}

/// Adds `Server-Timing` to a response whose handler left a [`HandlerTiming`].
pub async fn server_timing(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let mut response = next.run(request).await;
    let Some(handler) = response.extensions().get::<HandlerTiming>().copied() else {
        return response;
    };
    let mut value = format!("auth;dur={}", ms(handler.started.duration_since(started)));
    if let Some((queue, model)) = handler.computed {
        value.push_str(&format!(
            ", queue;dur={}, model;dur={}",
            ms(queue),
            ms(model)
        ));
    }
    value.push_str(&format!(", total;dur={}", ms(started.elapsed())));
    if let Ok(value) = HeaderValue::from_str(&value) {
        response.headers_mut().insert("server-timing", value);
    }
    response
}
