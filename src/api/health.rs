//! Liveness, readiness and metrics.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{ApiError, ErrorKind, Problem};
use crate::health::NotReady;
use crate::state::AppState;

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Health {
    #[schema(example = "ok")]
    pub status: String,
    /// The model that answers, `name@version`.
    #[schema(example = "fraud-xgb@3be5a2c1f09e")]
    pub model: String,
    /// Rows admitted and not yet answered.
    pub queued_rows: usize,
    /// With a DynamoDB lease table: the shards this instance reads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leases: Option<LeaseStatus>,
    /// With `[fleet]`: whether limits are decided in Redis now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet: Option<FleetStatus>,
}

/// How this replica decides usage plans now, when replicas share them through Redis.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FleetStatus {
    /// `up`, or `down` after a failed call until a probe gets an answer.
    #[schema(example = "up")]
    pub redis: String,
    /// `shared` (in Redis), `local` (this replica's share) or `deny` (503 `limits_unavailable`).
    #[schema(example = "shared")]
    pub mode: String,
}

/// This instance's share of the stream, when instances share it through leases.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LeaseStatus {
    /// Its name in the lease table (`leaseOwner`).
    #[schema(example = "gateway-a")]
    pub worker_id: String,
    /// The shards it holds leases for.
    #[schema(example = json!(["shardId-000000000000", "shardId-000000000002"]))]
    pub shards: Vec<String>,
}

/// The process is up (restart it if this fails).
#[utoipa::path(get, path = "/health/live", tag = "operations",
    responses((status = 200, description = "Alive", body = Health)))]
pub async fn live(State(state): State<Arc<AppState>>) -> Json<Health> {
    Json(health(&state, "ok"))
}

/// The gateway can score now (route traffic to it only while this answers 200).
#[utoipa::path(get, path = "/health/ready", tag = "operations",
    responses(
        (status = 200, description = "Ready", body = Health),
        (status = 503, description = "Model not ready, stream shards not progressing, or shutting down", body = Problem,
            content_type = "application/problem+json",
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying"))),
    ))]
pub async fn ready(State(state): State<Arc<AppState>>) -> Result<Json<Health>, ApiError> {
    if let Err(reason) = state.health.readiness() {
        let kind = match reason {
            NotReady::ShuttingDown => ErrorKind::ShuttingDown,
            NotReady::Stream | NotReady::Shards(_) | NotReady::Model | NotReady::Leases(_) => {
                ErrorKind::ModelUnavailable
            }
        };
        return Err(ApiError::new(kind, reason.to_string()));
    }
    Ok(Json(health(&state, "ready")))
}

fn health(state: &AppState, status: &str) -> Health {
    Health {
        status: status.to_owned(),
        model: state.scoring.model().label().to_owned(),
        queued_rows: state.scoring.pipeline().queued_rows(),
        leases: state
            .health
            .lease_holding()
            .map(|(worker_id, shards)| LeaseStatus { worker_id, shards }),
        fleet: state.fleet.as_ref().map(|fleet| {
            let up = fleet.is_up();
            FleetStatus {
                redis: if up { "up" } else { "down" }.to_owned(),
                mode: if up {
                    "shared"
                } else {
                    fleet.on_error().as_str()
                }
                .to_owned(),
            }
        }),
    }
}

/// Prometheus metrics (text exposition format).
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", body = String,
        content_type = "text/plain; version=0.0.4")))]
pub async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    state.scoring.record_cache_sizes();
    state.health.record_stalled_shards();
    crate::telemetry::record_process_memory();
    let ready = state.health.readiness().is_ok();
    metrics::gauge!("infergate_ready").set(if ready { 1.0 } else { 0.0 });
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::telemetry::prometheus().render(),
    )
}
