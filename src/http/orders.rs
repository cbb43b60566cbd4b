//! `POST /orders`: validate, publish, answer once the broker acknowledged.

use std::time::SystemTime;

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt;
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use super::auth::MayOrder;
use super::error::{ApiError, Problem};
use super::json::JsonBody;
use crate::domain::order::write_rfc3339;
use crate::domain::{NewOrder, Order, Rejected};
use crate::idempotency::{IdempotencyKey, KeyReused, Source};
use crate::publisher::Receipt;

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
///
/// Send an `Idempotency-Key` to retry safely: a retry with the same key and the same order
/// gets the first answer (same `order_id`, partition and offset, with
/// `Idempotent-Replayed: true`) and writes nothing; a retry while the first attempt is in
/// flight waits for it; the same key with a different order is 409. Keys are remembered per gateway instance for IDEMPOTENCY_TTL (24 h by
/// default). An order with a key and no `order_id` gets an id derived from the key, the same
/// on every instance, so a duplicate is recognisable downstream.
#[utoipa::path(
    post,
    path = "/orders",
    tag = "orders",
    params(
        ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255,
            pattern = "^[\\x21-\\x7e]+$",
            description = "Makes retries safe: 1 to 255 visible ASCII characters, unique per order (a UUID, say)"),
    ),
    request_body(content = NewOrder, content_type = "application/json"),
    security((), ("api_token" = [])),
    responses(
        (status = 202, description = "The broker acknowledged the order", body = OrderAccepted,
            headers(("Idempotent-Replayed" = bool, description = "Present (`true`) when the answer repeats an earlier attempt with the same Idempotency-Key"))),
        (status = 400, description = "The body is not valid JSON, or the Idempotency-Key is malformed", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "API_TOKENS are set and the request lacks a valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 408, description = "The request did not complete within REQUEST_TIMEOUT", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "The body is larger than MAX_BODY_BYTES (64 KiB by default)", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "The body is not declared as JSON", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The Idempotency-Key was used for a different order (`/problems/idempotency-key-reused`)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields, each listed in `errors`", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "The client exceeded RATE_LIMIT; see Retry-After", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying"))),
        (status = 431, description = "The header lines exceed MAX_HEADER_BYTES", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The broker did not acknowledge in time, or too many orders are waiting; see Retry-After",
            body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying"))),
    )
)]
pub async fn place_order(
    State(state): State<AppState>,
    _: MayOrder,
    headers: OrderHeaders,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let key = headers.idempotency_key?;
    // Without an id of its own, an order sent with a key takes the key's: retries on any
    // instance then name the same order.
    let order = Order::from_json(
        &body,
        SystemTime::now(),
        key.as_ref().map(IdempotencyKey::order_id),
    )
    .map_err(|rejected| match rejected {
        Rejected::Malformed(why) => ApiError::MalformedJson(why),
        Rejected::Invalid(errors) => ApiError::Validation(errors),
    })?;
    tracing::Span::current().record("order_id", tracing::field::display(order.order_id));
    let traceparent = headers.traceparent.as_ref().and_then(|v| v.to_str().ok());
    let (outcome, source) = match key {
        None => {
            let receipt = state.publisher.publish(&order, traceparent).await;
            (receipt.map(|receipt| (order, receipt)), Source::Published)
        }
        Some(key) => {
            let (publisher, traceparent) =
                (state.publisher.clone(), traceparent.map(str::to_owned));
            let publish = move |order: Order| {
                async move {
                    let receipt = publisher.publish(&order, traceparent.as_deref()).await?;
                    Ok((order, receipt))
                }
                .boxed()
            };
            state
                .idempotency
                .place(key, order, publish)
                .await
                .map_err(|KeyReused| ApiError::IdempotencyKeyReused)?
        }
    };
    let (order, receipt) = outcome?;
    let mut response = (
        StatusCode::ACCEPTED,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        accepted_json(&order, &receipt),
    )
        .into_response();
    if source == Source::Replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// The [`OrderAccepted`] JSON: the record value with where it was written appended, so the
/// order is serialised once per request, not twice.
fn accepted_json(order: &Order, receipt: &Receipt) -> Vec<u8> {
    let record = order.json();
    let mut out = Vec::with_capacity(record.len() + 96 + receipt.topic.len());
    out.extend_from_slice(record.strip_suffix(b"}").unwrap_or(record));
    out.extend_from_slice(br#","topic":"#);
    // Writing a string into memory cannot fail.
    let _ = serde_json::to_writer(&mut out, &*receipt.topic);
    out.extend_from_slice(br#","partition":"#);
    out.extend_from_slice(itoa::Buffer::new().format(receipt.partition).as_bytes());
    out.extend_from_slice(br#","offset":"#);
    out.extend_from_slice(itoa::Buffer::new().format(receipt.offset).as_bytes());
    out.extend_from_slice(br#","timestamp":""#);
    write_rfc3339(&mut out, receipt.timestamp);
    out.extend_from_slice(br#""}"#);
    out
}

/// The two headers `POST /orders` reads, taken from the request without copying its
/// header map (axum's `HeaderMap` extractor clones every header).
pub struct OrderHeaders {
    /// A malformed key is refused once the body was read, as any other bad input.
    idempotency_key: Result<Option<IdempotencyKey>, ApiError>,
    /// A valid W3C `traceparent`, to carry into the record.
    traceparent: Option<HeaderValue>,
}

impl<S: Sync> FromRequestParts<S> for OrderHeaders {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let traceparent = parts
            .headers
            .get("traceparent")
            .filter(|v| v.to_str().is_ok_and(is_traceparent))
            .cloned();
        Ok(Self {
            idempotency_key: idempotency_key(&parts.headers),
            traceparent,
        })
    }
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<IdempotencyKey>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let invalid = |why: &str| ApiError::BadRequest(why.to_owned());
    let value = value
        .to_str()
        .map_err(|_| invalid("Idempotency-Key must be 1 to 255 visible ASCII characters"))?;
    IdempotencyKey::parse(value).map(Some).map_err(invalid)
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
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::domain::order::rfc3339;

    #[test]
    fn the_accepted_answer_is_what_order_accepted_serialises_to() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(1_764_166_282_123);
        let order = Order::from_json(
            br#"{"user":"l\u00e4ra","item":"frozen \"yogurt\"","quantity":10}"#,
            at,
            None,
        )
        .unwrap();
        let receipt = Receipt {
            topic: "orders.\"eu\"".into(),
            partition: 2,
            offset: 41,
            timestamp: at + Duration::from_millis(5),
        };
        let documented = OrderAccepted {
            order: order.clone(),
            topic: receipt.topic.to_string(),
            partition: receipt.partition,
            offset: receipt.offset,
            timestamp: rfc3339(receipt.timestamp),
        };
        assert_eq!(
            String::from_utf8(accepted_json(&order, &receipt)).unwrap(),
            serde_json::to_string(&documented).unwrap()
        );
    }

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
