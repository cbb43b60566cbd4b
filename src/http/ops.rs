//! Operational endpoints: liveness, readiness and metrics.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use super::error::{ApiError, Problem};

/// A healthy answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Status {
    /// `ok` for liveness, `ready` for readiness.
    #[schema(example = "ok")]
    pub status: &'static str,
}

/// Liveness: 200 while the process serves HTTP.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "The process serves HTTP", body = Status)))]
pub async fn healthz() -> Json<Status> {
    Json(Status { status: "ok" })
}

/// Readiness: 200 only when the broker is reachable, the topic exists and the tracker holds
/// partitions; otherwise 503 naming what is missing. Recovers by itself.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready to take and track orders", body = Status),
        (status = 503, description = "Not ready; `detail` names every failing check", body = Problem,
            content_type = "application/problem+json"),
    ))]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Status>, ApiError> {
    let checks = state.readiness.checks();
    if checks.ready() {
        Ok(Json(Status { status: "ready" }))
    } else {
        Err(ApiError::NotReady(checks.missing()))
    }
}

/// Prometheus metrics in the text exposition format.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format 0.0.4",
        content_type = "text/plain; version=0.0.4", body = String)))]
pub async fn metrics() -> impl axum::response::IntoResponse {
    let handle = crate::telemetry::metrics();
    handle.run_upkeep();
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        handle.render(),
    )
}
