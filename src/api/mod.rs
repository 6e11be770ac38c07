//! The HTTP API: routes and the OpenAPI document generated from them.

use std::sync::Arc;

use axum::Router;
use axum::middleware::from_fn_with_state;
use axum::routing::{get, post};
use utoipa::OpenApi;
use utoipa_swagger_ui::SwaggerUi;

use crate::middleware::auth;
use crate::middleware::rate_limit::{self, CostFn, RateLimitState};
use crate::state::AppState;
pub use docs::{ApiDoc, openapi_json};

mod clarify;
pub mod docs;
pub mod health;
pub mod json;
pub mod sagemaker;
pub mod score;
pub mod timing;

/// A media type's essence: lower-cased, without parameters (`Text/CSV; charset=utf-8` ->
/// `text/csv`).
pub(crate) fn essence(raw: &str) -> String {
    raw.split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// The essence of a media-type header (`Content-Type`, `Accept`); empty when absent.
pub(crate) fn media_type(headers: &axum::http::HeaderMap, name: axum::http::HeaderName) -> String {
    essence(
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or(""),
    )
}

/// `Cache-Control: no-cache` asks for a fresh score; only plans that allow it get one (others
/// are served as usual, as API Gateway does).
pub(crate) fn wants_refresh(headers: &axum::http::HeaderMap, caller: &auth::Caller) -> bool {
    caller.may_bypass_cache()
        && headers
            .get_all(axum::http::header::CACHE_CONTROL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|directive| directive.trim().eq_ignore_ascii_case("no-cache"))
}

/// Every route. The scoring routes carry their own stack (who is calling, then their limits);
/// `server::app` wraps everything in the common one. With `admin_elsewhere` (an `admin_bind` is
/// configured), `/metrics` is left to [`admin_router`].
pub fn router(state: AppState, admin_elsewhere: bool) -> Router {
    // One `Arc` for the whole state: axum clones the state for every request, and a clone of
    // the fields (two caches, several `Arc`s) costs measurably more on the hot path.
    let state = Arc::new(state);
    let single = Router::new().route("/v1/transactions/score", post(score::score));
    let batch = Router::new().route("/v1/transactions/score-batch", post(score::score_batch));
    let invocations = Router::new().route(
        "/endpoints/{endpoint_name}/invocations",
        post(sagemaker::invocations),
    );
    // Errors on the SageMaker route, the shared middleware's included, speak AWS's rest-json.
    let invocations = guarded(invocations, &state, Some(sagemaker::csv_cost))
        .route_layer(axum::middleware::from_fn(sagemaker::aws_errors));
    let mut routes = Router::new()
        .merge(guarded(single, &state, None))
        .merge(guarded(batch, &state, Some(score::batch_cost)))
        .merge(invocations)
        .route("/ping", get(sagemaker::ping))
        .route("/health/live", get(health::live))
        .route("/health/ready", get(health::ready));
    if !admin_elsewhere {
        routes = routes.route("/metrics", get(health::metrics));
    }
    routes
        .with_state(state)
        .merge(SwaggerUi::new("/docs").url("/openapi.json", ApiDoc::openapi()))
}

/// The operator routes served on `admin_bind`: `/metrics` and the health checks (so that
/// probes and scrapes can share a port the public never reaches).
pub fn admin_router(state: AppState) -> Router {
    Router::new()
        .route("/health/live", get(health::live))
        .route("/health/ready", get(health::ready))
        .route("/metrics", get(health::metrics))
        .with_state(Arc::new(state))
}

/// The per-route stack. In request order: authenticate (401), then charge the caller's plan and
/// the global limit (429); validation happens in the handler, after both. (`route_layer` wraps
/// what is already there, so the layer added last runs first.)
fn guarded(
    routes: Router<Arc<AppState>>,
    state: &AppState,
    cost: Option<CostFn>,
) -> Router<Arc<AppState>> {
    let limits = RateLimitState {
        limits: Arc::clone(&state.rate_limits),
        fleet: state.fleet.clone(),
        cost,
        body_limit: state.limits.body_limit_bytes,
    };
    routes
        .route_layer(from_fn_with_state(limits, rate_limit::rate_limit))
        .route_layer(from_fn_with_state(
            Arc::clone(&state.auth),
            auth::authenticate,
        ))
        .route_layer(axum::middleware::from_fn(timing::server_timing))
}
