//! The HTTP API: routes and the OpenAPI document generated from them.

use axum::Router;
use axum::routing::{get, post};
use utoipa::OpenApi;
use utoipa_swagger_ui::SwaggerUi;

use crate::state::AppState;

pub mod health;
pub mod json;
pub mod score;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "infergate",
        description = "Real-time fraud scoring gateway: REST in front of an XGBoost model. \
            Errors are RFC 9457 `application/problem+json` with a stable `type`.",
        license(name = "Apache-2.0")
    ),
    paths(
        score::score,
        score::score_batch,
        health::live,
        health::ready,
        health::metrics,
    ),
    tags(
        (name = "scoring", description = "Score card transactions"),
        (name = "operations", description = "Health and metrics"),
    )
)]
pub struct ApiDoc;

/// The OpenAPI document as pretty JSON, exactly as committed in `openapi/openapi.json`.
pub fn openapi_json() -> String {
    let mut s = ApiDoc::openapi()
        .to_pretty_json()
        .expect("the OpenAPI document serializes. This is a bug.");
    s.push('\n');
    s
}

/// Every route, without middleware (see `server::app` for the stack).
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/transactions/score", post(score::score))
        .route("/v1/transactions/score-batch", post(score::score_batch))
        .route("/health/live", get(health::live))
        .route("/health/ready", get(health::ready))
        .route("/metrics", get(health::metrics))
        .with_state(state)
        .merge(SwaggerUi::new("/docs").url("/openapi.json", ApiDoc::openapi()))
}
