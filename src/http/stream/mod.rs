//! `GET /orders/stream`: tracked orders as Server-Sent Events, resumable without gaps or
//! duplicates.
//!
//! The handler checks the request and decides where the client starts; from there one
//! client's stream is three parts, each in its own file:
//!
//! - [`feed`]: what this client is sent next: the replay from the topic, the hub's memory,
//!   then the live subscription; its position, filters and `limit`;
//! - [`writer`]: turns the feed into the response body, a chunk per wake-up, with the
//!   opening comment, keep-alives and the shutdown notice;
//! - [`frame`]: the SSE text itself, written by hand into shared buffers;
//!
//! and [`events`] holds the `data` of the events that are not orders.

mod events;
mod feed;
mod frame;
mod query;
mod writer;

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, header};
use axum::response::IntoResponse;
use tokio::sync::OwnedSemaphorePermit;

pub use events::{Gap, Overflow, Unavailable};
pub use query::{Start, StreamQuery};

use super::AppState;
use super::error::{ApiError, Problem};
use crate::domain::{Position, TrackedOrder};
use feed::Feed;
use writer::Writer;

/// Watch orders as they are tracked.
///
/// A `text/event-stream` of Server-Sent Events:
///
/// - it opens with a `: connected` comment and a `retry: 2000` reconnect hint;
/// - `event: order`: one order. `id` is the stream position after it (every partition's
///   next offset, compact and versioned); `data` is the `TrackedOrder` JSON. Orders of one
///   partition arrive in offset order;
/// - `event: gap`: orders the client asked for are gone from the topic (retention, or the
///   topic was recreated); `data` is the `Gap` schema; the stream continues after it;
/// - `event: overflow`: the client fell more than STREAM_BUFFER orders behind the live
///   feed; `data` is the `Overflow` schema; the stream closes. Reconnecting with its
///   `last_event_id` replays what was missed from the topic;
/// - `event: unavailable`: the history to resume from could not be read (`Unavailable`);
///   the stream closes;
/// - `: keep-alive` comment after 15 s without an event;
/// - `: gateway shutting down; reconnect with Last-Event-ID` and a `retry` hint when the
///   gateway stops.
///
/// Where it starts: after the `Last-Event-ID` header (sent by EventSource on reconnect) or
/// `last_event_id`, with no gap and no duplicate, reading from the topic what memory no
/// longer holds; at `since`; else, and with `live=true`, at the live tail. A malformed or
/// foreign id is a 400.
#[utoipa::path(get, path = "/orders/stream", tag = "orders", params(StreamQuery,
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event id (sent by EventSource on reconnect)")),
    responses(
        (status = 200,
            description = "Server-Sent Events; the schema is that of an `order` event's `data`",
            content_type = "text/event-stream", body = TrackedOrder,
            headers(
                ("Cache-Control" = String, description = "`no-cache`"),
                ("X-Accel-Buffering" = String, description = "`no`: proxies must not buffer the stream"),
            )),
        (status = 400, description = "A parameter or the last event id is invalid", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "MAX_STREAMS streams are open; see Retry-After", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u32, description = "Seconds to wait before reconnecting"))),
        (status = 503, description = "`since` could not be resolved against the topic", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn stream_orders(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<impl IntoResponse, ApiError> {
    let query = StreamQuery::parse(raw.as_deref())?;
    let start = query.start(&headers, state.hub.topic())?;
    let permit = state
        .streams
        .clone()
        .try_acquire_owned()
        .map_err(|_| ApiError::TooManyStreams)?;
    let from = match &start {
        Start::Live => None,
        Start::After(position) => Some(position.clone()),
        Start::Since(at) => Some(since_position(&state, *at).await?),
    };
    let feed = Feed::open(&state, query, start, from, OpenStream::new(permit));
    let writer = Writer::new(feed, state.stream_keep_alive);
    Ok((
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            // Reverse proxies such as nginx would otherwise buffer the stream.
            (header::HeaderName::from_static("x-accel-buffering"), "no"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(writer.into_stream()),
    ))
}

/// The position of the first orders at or after `at`: the topic's answer, moved back to
/// any earlier order the hub still holds from that time, because brokers answer
/// offsets_for_times loosely (the embedded broker does not look at times at all).
/// Orders stamped before `at` are filtered out on the way, so starting early is harmless.
async fn since_position(state: &AppState, at: std::time::SystemTime) -> Result<Position, ApiError> {
    let mut position = state
        .history
        .position_at(at)
        .await
        .map_err(|e| ApiError::HistoryUnavailable(e.0))?;
    for (partition, first) in state.hub.first_since(at).iter() {
        if position
            .next_offset(partition)
            .is_none_or(|next| first < next)
        {
            position.restart(partition, first);
        }
    }
    for (partition, next) in state.hub.position().iter() {
        if position.next_offset(partition).is_none() {
            position.restart(partition, next);
        }
    }
    Ok(position)
}

/// Holds a MAX_STREAMS slot and counts open streams down however a stream ends.
pub(super) struct OpenStream {
    _slot: OwnedSemaphorePermit,
}

impl OpenStream {
    fn new(slot: OwnedSemaphorePermit) -> Self {
        metrics::gauge!("orders_gateway_open_streams").increment(1.0);
        Self { _slot: slot }
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        metrics::gauge!("orders_gateway_open_streams").decrement(1.0);
    }
}
