//! Read-only operator views: the orders topic and the tracker group.
//!
//! Protected by `ADMIN_TOKEN` (Bearer) when set; without it, only clients on this host
//! (loopback) may read them, so a default deployment exposes nothing about the cluster.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::HeaderMap;
use axum::{Extension, Json};

use super::AppState;
use super::auth::{bearer, constant_time_eq};
use super::error::{ApiError, Problem};
use crate::views::{GroupView, TopicView};

/// The orders topic: partitions, leaders, replicas, low and high watermarks
/// (`kafka-topics --describe`).
#[utoipa::path(get, path = "/admin/topic", tag = "operations",
    security((), ("admin_token" = [])),
    responses(
        (status = 200, description = "The orders topic", body = TopicView),
        (status = 401, description = "ADMIN_TOKEN is set and the request lacks it", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "ADMIN_TOKEN is unset and the client is not on this host", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The broker did not answer", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn topic(
    State(state): State<AppState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
) -> Result<Json<TopicView>, ApiError> {
    authorize(&state, peer, &headers)?;
    let view = state
        .views
        .topic()
        .await
        .map_err(|e| ApiError::ViewUnavailable(e.0))?;
    Ok(Json(view))
}

/// The tracker's consumer group: state, members, committed offset and lag per partition
/// (`kafka-consumer-groups --describe`).
#[utoipa::path(get, path = "/admin/group", tag = "operations",
    security((), ("admin_token" = [])),
    responses(
        (status = 200, description = "The tracker group", body = GroupView),
        (status = 401, description = "ADMIN_TOKEN is set and the request lacks it", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "ADMIN_TOKEN is unset and the client is not on this host", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The broker did not answer", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn group(
    State(state): State<AppState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
) -> Result<Json<GroupView>, ApiError> {
    authorize(&state, peer, &headers)?;
    let view = state
        .views
        .group()
        .await
        .map_err(|e| ApiError::ViewUnavailable(e.0))?;
    Ok(Json(view))
}

fn authorize(
    state: &AppState,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: &HeaderMap,
) -> Result<(), ApiError> {
    match &state.edge.admin_token {
        Some(token) => {
            let presented = bearer(headers).unwrap_or_default();
            if constant_time_eq(presented.as_bytes(), token.expose().as_bytes()) {
                Ok(())
            } else {
                Err(ApiError::Unauthorized(
                    "this view needs `Authorization: Bearer <ADMIN_TOKEN>`",
                ))
            }
        }
        None if peer.is_some_and(|Extension(ConnectInfo(addr))| addr.ip().is_loopback()) => Ok(()),
        None => Err(ApiError::Forbidden(
            "the admin views are local-only; set ADMIN_TOKEN to read them remotely".into(),
        )),
    }
}
