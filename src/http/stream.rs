//! `GET /orders/stream`: tracked orders as Server-Sent Events.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::{RawQuery, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use futures_util::stream;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::AppState;
use super::error::{ApiError, Problem};
use crate::domain::TrackedOrder;
use crate::hub::{Next, StreamEvent, Subscription};

/// How long a client waits before reconnecting after the stream ends.
const RETRY: Duration = Duration::from_secs(2);
/// Largest `limit` a client may ask for.
const LIMIT_MAX: u32 = 10_000;

/// The `data` of an `overflow` event: the client fell too far behind and is disconnected.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Overflow {
    /// Orders that were dropped from this client's buffer.
    pub missed: u64,
    /// The id of the last `order` event this client was sent, if any.
    pub last_event_id: Option<String>,
    /// What happened, in words.
    pub detail: &'static str,
}

/// Query parameters of `GET /orders/stream`.
#[derive(Debug, Default, PartialEq, Eq, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StreamQuery {
    /// First replay the recent orders the gateway keeps in memory whose record timestamp
    /// is at or after this time: RFC 3339 (`2026-11-26T14:00:00Z`, any offset) or
    /// milliseconds since the Unix epoch. Without it the stream starts at the live tail.
    #[param(value_type = Option<String>, example = "2026-11-26T14:00:00Z")]
    pub since: Option<SystemTime>,
    /// End the stream after this many `order` events (1 to 10000). Without it the stream
    /// is endless.
    #[param(minimum = 1, maximum = 10000)]
    pub limit: Option<u32>,
}

impl StreamQuery {
    /// Parses the raw query; unknown parameters are ignored (cache busters are common).
    pub fn parse(raw: Option<&str>) -> Result<Self, ApiError> {
        let mut query = Self::default();
        for (key, value) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
            match key.as_ref() {
                "since" => query.since = Some(parse_since(&value)?),
                "limit" => query.limit = Some(parse_limit(&value)?),
                _ => {}
            }
        }
        Ok(query)
    }
}

fn parse_since(value: &str) -> Result<SystemTime, ApiError> {
    let bad = || {
        ApiError::BadRequest(format!(
            "`since` must be an RFC 3339 time (2026-11-26T14:00:00Z) or epoch milliseconds, got `{value}`"
        ))
    };
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        let ms = value.parse::<u64>().map_err(|_| bad())?;
        return SystemTime::UNIX_EPOCH
            .checked_add(Duration::from_millis(ms))
            .ok_or_else(bad);
    }
    let t = time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc3339)
        .map_err(|_| bad())?;
    // Times before 1970 replay everything kept, like the epoch itself.
    let nanos = u64::try_from(t.unix_timestamp_nanos().max(0)).map_err(|_| bad())?;
    Ok(SystemTime::UNIX_EPOCH + Duration::from_nanos(nanos))
}

fn parse_limit(value: &str) -> Result<u32, ApiError> {
    match value.parse::<u32>() {
        Ok(n @ 1..=LIMIT_MAX) => Ok(n),
        _ => Err(ApiError::BadRequest(format!(
            "`limit` must be an integer from 1 to {LIMIT_MAX}, got `{value}`"
        ))),
    }
}

/// Watch orders as they are tracked.
///
/// A `text/event-stream` of Server-Sent Events:
///
/// - it opens with a `: connected` comment and a `retry: 2000` reconnect hint;
/// - `event: order`: one tracked order. `id` is the opaque stream position after it;
///   `data` is the order JSON (the `TrackedOrder` schema: the order plus `partition`,
///   `offset` and the record `timestamp`). Orders of one partition arrive in offset order;
/// - `: keep-alive` comment after 15 s without an order;
/// - `event: overflow`: this client fell more than STREAM_BUFFER orders behind; `data` is
///   the `Overflow` schema; then the stream closes;
/// - `: gateway shutting down; reconnect with Last-Event-ID` and a `retry` hint when the
///   gateway stops; then the stream closes.
///
/// New clients start at the live tail unless `since` is given.
#[utoipa::path(get, path = "/orders/stream", tag = "orders", params(StreamQuery),
    responses(
        (status = 200,
            description = "Server-Sent Events; the schema is that of an `order` event's `data`",
            content_type = "text/event-stream", body = TrackedOrder,
            headers(
                ("Cache-Control" = String, description = "`no-cache`"),
                ("X-Accel-Buffering" = String, description = "`no`: proxies must not buffer the stream"),
            )),
        (status = 400, description = "A query parameter is invalid", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn stream_orders(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<impl IntoResponse, ApiError> {
    let query = StreamQuery::parse(raw.as_deref())?;
    let (backlog, subscription) = match query.since {
        Some(since) => state.hub.subscribe_since(since),
        None => (Vec::new(), state.hub.subscribe()),
    };
    metrics::gauge!("orders_gateway_open_streams").increment(1.0);
    let feed = Feed {
        backlog: backlog.into(),
        subscription,
        shutdown: state.shutdown.clone(),
        since: query.since,
        remaining: query.limit,
        last_id: None,
        phase: Phase::Start,
        _open: OpenStream,
    };
    let keep_alive = KeepAlive::new()
        .interval(state.stream_keep_alive)
        .text("keep-alive");
    Ok((
        // Reverse proxies such as nginx would otherwise buffer the stream.
        [
            (header::HeaderName::from_static("x-accel-buffering"), "no"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Sse::new(order_events(feed)).keep_alive(keep_alive),
    ))
}

enum Phase {
    Start,
    Live,
    Done,
}

struct Feed {
    /// Replayed orders, sent before the live ones.
    backlog: VecDeque<Arc<StreamEvent>>,
    subscription: Subscription,
    shutdown: CancellationToken,
    /// Orders stamped before this are not sent, replayed or live.
    since: Option<SystemTime>,
    /// Order events still to send when the client set `limit`.
    remaining: Option<u32>,
    last_id: Option<String>,
    phase: Phase,
    _open: OpenStream,
}

/// Counts open streams down when a stream ends, however it ends.
struct OpenStream;

impl Drop for OpenStream {
    fn drop(&mut self) {
        metrics::gauge!("orders_gateway_open_streams").decrement(1.0);
    }
}

fn order_events(feed: Feed) -> impl Stream<Item = Result<Event, Infallible>> {
    stream::unfold(feed, |mut feed| async move {
        let event = match feed.phase {
            Phase::Start => {
                feed.phase = Phase::Live;
                // Sent at once so clients and proxies see the stream is open.
                Event::default().comment("connected").retry(RETRY)
            }
            Phase::Live => feed.next_event().await?,
            Phase::Done => return None,
        };
        Some((Ok(event), feed))
    })
}

impl Feed {
    async fn next_event(&mut self) -> Option<Event> {
        if self.remaining == Some(0) {
            return None;
        }
        if let Some(event) = self.backlog.pop_front() {
            return Some(self.order_event(&event));
        }
        loop {
            let next = self.next_live().await?;
            if let Some(event) = next {
                return Some(event);
            }
        }
    }

    /// The next live event; `Some(None)` for an order this client did not ask for.
    async fn next_live(&mut self) -> Option<Option<Event>> {
        let next = tokio::select! {
            () = self.shutdown.cancelled() => {
                self.phase = Phase::Done;
                return Some(Some(Event::default()
                    .comment("gateway shutting down; reconnect with Last-Event-ID")
                    .retry(RETRY)));
            }
            next = self.subscription.next() => next,
        };
        match next {
            Next::Event(event) if self.since.is_some_and(|since| event.order.at < since) => {
                Some(None)
            }
            Next::Event(event) => Some(Some(self.order_event(&event))),
            Next::Lagged { missed } => {
                metrics::counter!("orders_gateway_stream_overflows_total").increment(1);
                self.phase = Phase::Done;
                let data = Overflow {
                    missed,
                    last_event_id: self.last_id.clone(),
                    detail: "this client fell too far behind the live feed and was disconnected",
                };
                // A struct of strings and integers always serialises.
                let data = serde_json::to_string(&data).unwrap_or_default();
                let overflow = Event::default().event("overflow").data(data);
                Some(Some(overflow.retry(RETRY)))
            }
            Next::Closed => None,
        }
    }

    fn order_event(&mut self, event: &StreamEvent) -> Event {
        metrics::counter!("orders_gateway_stream_events_total").increment(1);
        self.last_id = Some(event.id.clone());
        if let Some(n) = &mut self.remaining {
            *n -= 1;
        }
        Event::default()
            .event("order")
            .id(&event.id)
            .data(&event.data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_rfc3339_with_any_offset_or_epoch_millis() {
        let at = |s| StreamQuery::parse(Some(s)).unwrap().since.unwrap();
        let expected = SystemTime::UNIX_EPOCH + Duration::from_millis(1_764_165_600_000);
        assert_eq!(at("since=2025-11-26T14:00:00Z"), expected);
        assert_eq!(at("since=2025-11-26T15:00:00%2B01:00"), expected);
        assert_eq!(at("since=1764165600000"), expected);
    }

    #[test]
    fn bad_parameters_are_400s_and_unknown_ones_are_ignored() {
        for raw in [
            "since=yesterday",
            "since=",
            "limit=0",
            "limit=10001",
            "limit=-1",
            "limit=x",
        ] {
            let err = StreamQuery::parse(Some(raw)).unwrap_err();
            assert!(matches!(err, ApiError::BadRequest(_)), "{raw}");
        }
        assert_eq!(
            StreamQuery::parse(Some("_=123")).unwrap(),
            StreamQuery::default()
        );
        assert_eq!(StreamQuery::parse(Some("limit=3")).unwrap().limit, Some(3));
    }
}
