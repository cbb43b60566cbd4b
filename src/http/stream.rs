//! `GET /orders/stream`: tracked orders as Server-Sent Events, resumable without gaps or
//! duplicates.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, header};
use axum::response::IntoResponse;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use futures_util::stream;
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio_util::sync::CancellationToken;

use super::AppState;
use super::error::{ApiError, Problem};
use super::stream_query::{Start, StreamQuery};
use crate::domain::{Position, TrackedOrder};
use crate::history::{HistoryError, Replayed};
use crate::hub::{Catchup, Next, StreamEvent, Subscription};

/// How long a client waits before reconnecting after the stream ends.
const RETRY: Duration = Duration::from_secs(2);

/// The `data` of an `overflow` event: the client fell too far behind and is disconnected.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Overflow {
    /// Orders that were dropped from this client's buffer.
    pub missed: u64,
    /// Resume from here (`Last-Event-ID`) to get them from the topic.
    pub last_event_id: Option<String>,
    /// What happened, in words.
    pub detail: &'static str,
}

/// The `data` of a `gap` event: offsets that are gone from the topic and cannot be sent.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Gap {
    pub partition: i32,
    /// First missing offset (the client's position).
    pub from: i64,
    /// Where the stream continues: the earliest offset the topic still holds.
    pub to: i64,
    pub detail: &'static str,
}

/// The `data` of an `unavailable` event: the history needed to resume could not be read;
/// the stream closes so the client retries from `last_event_id`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Unavailable {
    pub last_event_id: Option<String>,
    pub detail: String,
}

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
    let (catchup, subscription) = match &from {
        None => (Catchup::Memory(Vec::new()), state.hub.subscribe()),
        Some(from) => state.hub.resume(from),
    };
    let (backlog, replay) = match (catchup, &from) {
        (Catchup::History { until }, Some(from)) => (
            VecDeque::new(),
            Some(state.history.replay(from.clone(), until)),
        ),
        (Catchup::Memory(events), _) => (events.into(), None),
        // Resume without a position cannot happen: a live start never asks for history.
        (Catchup::History { .. }, None) => (VecDeque::new(), None),
    };
    metrics::gauge!("orders_gateway_open_streams").increment(1.0);
    let feed = Feed {
        topic: state.hub.topic().to_owned(),
        query,
        start,
        backlog,
        replay,
        position: from,
        subscription,
        shutdown: state.shutdown.clone(),
        last_id: None,
        phase: Phase::Start,
        _open: OpenStream { _slot: permit },
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

enum Phase {
    Start,
    Live,
    Done,
}

/// One client's stream.
struct Feed {
    topic: String,
    query: StreamQuery,
    start: Start,
    /// Missed orders still in memory, sent first.
    backlog: VecDeque<Arc<StreamEvent>>,
    /// Missed orders read from the topic, sent first.
    replay: Option<mpsc::Receiver<Result<Replayed, HistoryError>>>,
    /// The client's own position while it differs from the hub's (catching up, or ahead
    /// of this replica); `None` once they agree, so the hub's ready-made ids are used.
    position: Option<Position>,
    subscription: Subscription,
    shutdown: CancellationToken,
    last_id: Option<String>,
    phase: Phase,
    _open: OpenStream,
}

/// Holds a MAX_STREAMS slot and counts open streams down however a stream ends.
struct OpenStream {
    _slot: OwnedSemaphorePermit,
}

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

/// What one step of the feed produced.
enum Step {
    Send(Event),
    /// Nothing for this client (filtered, skipped, or already seen); go on.
    Pass,
    End,
}

impl Feed {
    async fn next_event(&mut self) -> Option<Event> {
        loop {
            if self.query.limit == Some(0) {
                return None;
            }
            let shutdown = self.shutdown.clone();
            let step = tokio::select! {
                biased;
                () = shutdown.cancelled() => {
                    self.phase = Phase::Done;
                    return Some(Event::default()
                        .comment("gateway shutting down; reconnect with Last-Event-ID")
                        .retry(RETRY));
                }
                step = self.step() => step,
            };
            match step {
                Step::Send(event) => return Some(event),
                Step::Pass => {}
                Step::End => return None,
            }
        }
    }

    async fn step(&mut self) -> Step {
        if let Some(replay) = &mut self.replay {
            return match replay.recv().await {
                Some(Ok(item)) => self.replayed(item),
                Some(Err(error)) => self.unavailable(&error),
                None => {
                    self.replay = None;
                    Step::Pass
                }
            };
        }
        if let Some(event) = self.backlog.pop_front() {
            return self.hub_event(&event);
        }
        match self.subscription.next().await {
            Next::Event(event) => self.hub_event(&event),
            Next::Lagged { missed } => self.overflow(missed),
            Next::Closed => Step::End,
        }
    }

    /// An order from the hub, live or from its memory.
    fn hub_event(&mut self, event: &StreamEvent) -> Step {
        let order = &event.order;
        let id = match &mut self.position {
            None => event.id.clone(),
            Some(position) => {
                if position.has_passed(order.partition, order.offset) {
                    return Step::Pass;
                }
                position.advance(order.partition, order.offset, order.stamp());
                let id = position.encode(&self.topic);
                if id == event.id {
                    self.position = None;
                }
                id
            }
        };
        if !self.wants(order) {
            return Step::Pass;
        }
        self.send_order(id, &event.data)
    }

    /// A record replayed from the topic.
    fn replayed(&mut self, item: Replayed) -> Step {
        let wanted = matches!(&item, Replayed::Order(order) if self.wants(order));
        let position = self.position.get_or_insert_with(Position::default);
        match item {
            Replayed::Order(order) => {
                position.advance(order.partition, order.offset, order.stamp());
                if !wanted {
                    return Step::Pass;
                }
                let id = position.encode(&self.topic);
                // A struct of strings and integers always serialises.
                let data = serde_json::to_string(&order).unwrap_or_default();
                self.send_order(id, &data)
            }
            Replayed::Skipped {
                partition,
                offset,
                stamp,
            } => {
                position.advance(partition, offset, stamp);
                Step::Pass
            }
            Replayed::Gap {
                partition,
                from,
                to,
            } => {
                position.restart(partition, to);
                let id = position.encode(&self.topic);
                let gap = Gap {
                    partition,
                    from,
                    to,
                    detail: "these orders are no longer on the topic; the stream continues after them",
                };
                metrics::counter!("orders_gateway_stream_gaps_total").increment(1);
                self.last_id = Some(id.clone());
                Step::Send(Event::default().event("gap").id(id).data(json(&gap)))
            }
        }
    }

    /// Whether the client asked for this order: its filters, and for a `since` start the
    /// record timestamp itself (a broker's offsets_for_times may start a little early;
    /// Tansu answers with the partition's beginning).
    fn wants(&self, order: &TrackedOrder) -> bool {
        self.query.wants(&order.user, &order.item)
            && !matches!(self.start, Start::Since(since) if order.at < since)
    }

    fn send_order(&mut self, id: String, data: &str) -> Step {
        metrics::counter!("orders_gateway_stream_events_total").increment(1);
        if let Some(n) = &mut self.query.limit {
            *n -= 1;
        }
        let event = Event::default().event("order").id(&id).data(data);
        self.last_id = Some(id);
        Step::Send(event)
    }

    fn overflow(&mut self, missed: u64) -> Step {
        metrics::counter!("orders_gateway_stream_overflows_total").increment(1);
        self.phase = Phase::Done;
        let overflow = Overflow {
            missed,
            last_event_id: self.last_id.clone(),
            detail: "this client fell too far behind the live feed; reconnect with last_event_id",
        };
        Step::Send(
            Event::default()
                .event("overflow")
                .data(json(&overflow))
                .retry(RETRY),
        )
    }

    fn unavailable(&mut self, error: &HistoryError) -> Step {
        tracing::warn!(%error, "stream: replay from the topic failed");
        self.phase = Phase::Done;
        let unavailable = Unavailable {
            last_event_id: self.last_id.clone(),
            detail: "the orders to resume from could not be read from Kafka; reconnect later"
                .into(),
        };
        Step::Send(
            Event::default()
                .event("unavailable")
                .data(json(&unavailable))
                .retry(RETRY),
        )
    }
}

fn json(value: &impl Serialize) -> String {
    // Our event payloads are plain structs of strings and integers.
    serde_json::to_string(value).unwrap_or_default()
}
