//! `POST /orders`: validate, publish, answer once the broker acknowledged.

use std::time::SystemTime;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use super::error::{ApiError, Problem};
use super::json::JsonBody;
use crate::domain::order::rfc3339;
use crate::domain::{NewOrder, Order};

/// The answer to an acknowledged order: the order as stored, and where.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrderAccepted {
    #[serde(flatten)]
    pub order: Order,
    /// Topic the order was written to.
    pub topic: String,
    /// Partition it was written to.
    pub partition: i32,
    /// Its offset within the partition.
    pub offset: i64,
    /// The record's timestamp as stored by the broker (RFC 3339, UTC).
    pub timestamp: String,
}

/// Place an order.
///
/// The order is validated, then produced to Kafka (key: `order_id`, acks=all, idempotent).
/// The answer comes only after the broker acknowledged the record: a 202 means the order
/// is on the topic. Unknown fields are rejected.
#[utoipa::path(
    post,
    path = "/orders",
    tag = "orders",
    request_body(content = NewOrder, content_type = "application/json"),
    responses(
        (status = 202, description = "The broker acknowledged the order", body = OrderAccepted),
        (status = 400, description = "The body is not valid JSON", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "The body is larger than 64 KiB", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "The body is not declared as JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields, each listed in `errors`", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The broker did not acknowledge in time, or too many orders are waiting; see Retry-After",
            body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying"))),
    )
)]
pub async fn place_order(
    State(state): State<AppState>,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> Result<(StatusCode, Json<OrderAccepted>), ApiError> {
    let order = Order::parse(body, SystemTime::now()).map_err(ApiError::Validation)?;
    tracing::Span::current().record("order_id", tracing::field::display(order.order_id));
    let traceparent = headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .filter(|v| is_traceparent(v));
    let receipt = state.publisher.publish(&order, traceparent).await?;
    let accepted = OrderAccepted {
        order,
        topic: receipt.topic,
        partition: receipt.partition,
        offset: receipt.offset,
        timestamp: rfc3339(receipt.timestamp),
    };
    Ok((StatusCode::ACCEPTED, Json(accepted)))
}

/// A W3C `traceparent` (version 00): `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`,
/// ids not all zero. Anything else is ignored, as the Trace Context spec asks.
fn is_traceparent(value: &str) -> bool {
    let parts: Vec<&str> = value.split('-').collect();
    let hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let nonzero = |s: &str| s.bytes().any(|b| b != b'0');
    matches!(parts.as_slice(), [version, trace, parent, flags]
        if *version == "00" && hex(trace, 32) && hex(parent, 16) && hex(flags, 2)
            && nonzero(trace) && nonzero(parent))
}

#[cfg(test)]
mod tests {
    use super::is_traceparent;

    #[test]
    fn only_valid_w3c_traceparents_are_carried() {
        assert!(is_traceparent(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        ));
        for bad in [
            "",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
        ] {
            assert!(!is_traceparent(bad), "{bad}");
        }
    }
}
