//! The HTTP server: the accept loop with its connection limits and timers, the router with its one
//! middleware stack, request ids, and the request metrics.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::api;
use crate::config::{Config, HttpConfig};
use crate::error::{ApiError, ErrorKind};
use crate::state::AppState;
use bodies::{BodyLimits, problems_only, read_body};
use failures::SampledFailures;

mod bodies;
mod failures;

mod connection;

/// How long connections may take to send the 503s of the rows the pipeline gave up at the end
/// of the shutdown grace period, before they are closed regardless.
const ABANDON_WAIT: Duration = Duration::from_millis(300);

/// Accepts connections until `stop`, then lets open connections finish their requests until
/// `grace_over` (which the gateway fires `http.shutdown_grace_ms` after `stop`, when the
/// pipeline answers the rows it holds 503): what is still open shortly after is closed. Our
/// own loop rather than `axum::serve`, because that one sets no timer, so a client could take
/// forever to send its headers (slow loris) or hold an idle connection open, and it has no
/// bound on open connections.
pub(crate) async fn serve_connections(
    listener: TcpListener,
    router: Router,
    http: &HttpConfig,
    stop: CancellationToken,
    grace_over: CancellationToken,
) -> std::io::Result<()> {
    let mut builder = ConnBuilder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_millis(http.header_read_timeout_ms));
    // Keep-alive PINGs notice a peer that has gone even while its requests wait; connections
    // with no request in progress are closed by the watch in `connection`.
    let ping = (Duration::from_millis(http.idle_timeout_ms) / 2).max(Duration::from_millis(1));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(http.max_concurrent_streams)
        .keep_alive_interval(ping)
        .keep_alive_timeout(ping);
    let limits = connection::Limits::new(http);
    let connections = TaskTracker::new();
    let kill = CancellationToken::new();
    let slots = Arc::new(Semaphore::new(http.max_connections));
    let open = metrics::gauge!("infergate_http_connections");
    // Under a sustained flood the limit is reached again with every closed connection: say so
    // once a minute, not each time.
    let mut warned_at: Option<Instant> = None;
    loop {
        // At the limit, stop accepting: new clients wait in the listen backlog, not in memory.
        let slot = match Arc::clone(&slots).try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                if warned_at.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
                    warned_at = Some(Instant::now());
                    tracing::warn!(
                        max_connections = http.max_connections,
                        "connection limit reached; new connections wait until one closes"
                    );
                }
                tokio::select! {
                    slot = Arc::clone(&slots).acquire_owned() => {
                        slot.expect("the connection semaphore is never closed")
                    }
                    () = stop.cancelled() => break,
                }
            }
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Usually out of file descriptors: wait for some to be released rather
                    // than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stop.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let activity = connection::Activity::new();
        let service = connection::Tracked::new(
            TowerToHyperService::new(router.clone()),
            Arc::clone(&activity),
        );
        let served = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let served = connection::drive(served, activity, limits, stop.clone(), kill.clone());
        let open = open.clone();
        open.increment(1.0);
        connections.spawn(async move {
            if let Err(e) = served.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            open.decrement(1.0);
            drop(slot);
        });
    }
    drop(listener);
    connections.close();
    tokio::select! {
        () = connections.wait() => return Ok(()),
        () = grace_over.cancelled() => {}
    }
    tracing::warn!(
        grace_ms = http.shutdown_grace_ms,
        "in-flight requests outlived the shutdown grace period; answering them 503 and \
         closing their connections"
    );
    if tokio::time::timeout(ABANDON_WAIT, connections.wait())
        .await
        .is_err()
    {
        kill.cancel();
        connections.wait().await;
    }
    Ok(())
}

/// Request ids for requests that arrive without one: a random prefix drawn once per process and
/// a counter, so ids are unique across replicas and restarts without reading the system's random
/// source per request (a random UUID each did, a syscall that showed in profiles).
#[derive(Clone, Debug)]
pub struct RequestIds {
    prefix: u64,
    next: Arc<AtomicU64>,
}

impl RequestIds {
    pub fn new() -> Self {
        use std::hash::{BuildHasher, Hasher};
        // std seeds `RandomState` from the operating system's random source.
        let prefix = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        Self {
            prefix,
            next: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl Default for RequestIds {
    fn default() -> Self {
        Self::new()
    }
}

impl MakeRequestId for RequestIds {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<RequestId> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let id = format!("{:016x}-{n:x}", self.prefix);
        Some(RequestId::new(
            axum::http::HeaderValue::from_str(&id)
                .expect("hex digits and a dash are a valid header"),
        ))
    }
}

/// The router with the one middleware stack.
pub fn app(state: AppState, config: &Config) -> Router {
    with_stack(api::router(state, config.admin_bind.is_some()), config)
}

/// The operator routes (for `admin_bind`) with the same stack.
pub fn admin_app(state: AppState, config: &Config) -> Router {
    with_stack(api::admin_router(state), config)
}

/// The one middleware stack. `ServiceBuilder` runs top to bottom for a request.
fn with_stack(routes: Router, config: &Config) -> Router {
    routes.fallback(not_found).layer(
        ServiceBuilder::new()
            // A panic anywhere below becomes a 500 problem instead of a dropped connection.
            .layer(CatchPanicLayer::custom(panic_response))
            // Every request carries an id (the caller's, or a new one) into logs and the response.
            .layer(SetRequestIdLayer::x_request_id(RequestIds::new()))
            .layer(TraceLayer::new_for_http().on_failure(SampledFailures::new()))
            .layer(PropagateRequestIdLayer::x_request_id())
            // Measured outside the timeout so that timed-out requests are counted too.
            .layer(middleware::from_fn(record_metrics))
            // No error leaves without a problem body (axum's 405, the timeout's 504, ...).
            .layer(middleware::from_fn(problems_only))
            // Bounds a request end to end; the pipeline's own deadline answers 504 before this.
            .layer(TimeoutLayer::with_status_code(
                axum::http::StatusCode::GATEWAY_TIMEOUT,
                config.request_timeout(),
            ))
            // The body arrives whole, within its size and time, before anything reads it.
            .layer(middleware::from_fn_with_state(
                BodyLimits {
                    max_bytes: config.limits.body_limit_bytes,
                    read_timeout: Duration::from_millis(config.http.body_read_timeout_ms),
                },
                read_body,
            ))
            // Bodies are read into memory, so their size is bounded (413 past it).
            .layer(DefaultBodyLimit::max(config.limits.body_limit_bytes)),
    )
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        ErrorKind::NotFound,
        format!("no route for {}", crate::domain::clip(uri.path(), 128)),
    )
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a request handler panicked");
    ApiError::new(
        ErrorKind::Internal,
        "the gateway failed to handle the request",
    )
    .into_response()
}

async fn record_metrics(request: Request, next: Next) -> Response {
    let started = Instant::now();
    // Label by route template, never by raw path: paths are caller-controlled and unbounded.
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().as_str().to_owned();
    let response = next.run(request).await;
    let labels = [
        ("route", route),
        ("method", method),
        ("status", response.status().as_u16().to_string()),
    ];
    metrics::counter!("infergate_http_requests_total", &labels).increment(1);
    metrics::histogram!("infergate_http_request_duration_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
    response
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn a_panic_answers_a_500_problem() {
        let response = super::panic_response(Box::new("boom"));
        assert_eq!(response.status(), 500);
        assert_eq!(
            response.headers()["content-type"],
            crate::error::PROBLEM_JSON
        );
        let body = axum::body::to_bytes(response.into_body(), 4096)
            .await
            .unwrap();
        let problem: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            problem,
            serde_json::json!({
                "type": "urn:infergate:problem:internal",
                "title": "Internal error",
                "status": 500,
                "detail": "the gateway failed to handle the request",
            })
        );
    }
}
