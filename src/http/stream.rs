//! `GET /orders/stream`: tracked orders as Server-Sent Events, resumable without gaps or
//! duplicates.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::ops::ControlFlow;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, header};
use axum::response::IntoResponse;
use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use futures_util::stream;
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::AppState;
use super::error::{ApiError, Problem};
use super::stream_query::{Start, StreamQuery};
use crate::domain::{Position, TrackedOrder};
use crate::history::{HistoryError, Replayed};
use crate::hub::{Catchup, Next, StreamEvent, Subscription};

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
        sent: 0,
        _open: OpenStream { _slot: permit },
    };
    let writer = Writer {
        feed,
        keep_alive: Box::pin(tokio::time::sleep(state.stream_keep_alive)),
        interval: state.stream_keep_alive,
        last_write: Instant::now(),
    };
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
    /// The id of the last event sent, for `overflow` and `unavailable`.
    last_id: Option<LastId>,
    phase: Phase,
    /// Order events written since the metric was last updated.
    sent: u64,
    _open: OpenStream,
}

/// The id of the last event sent: a hub event's own (shared, not copied per client) or one
/// this client's position produced.
enum LastId {
    Hub(Arc<StreamEvent>),
    Own(String),
}

impl LastId {
    fn to_id(&self) -> String {
        match self {
            LastId::Hub(event) => event.id.clone(),
            LastId::Own(id) => id.clone(),
        }
    }
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

/// Most bytes one body chunk gathers before it is handed to the connection.
const MAX_CHUNK: usize = 64 * 1024;

/// The SSE text of one client, written chunk by chunk: everything that is ready when the
/// client's task runs goes out in one chunk (one write on the socket). With thousands of
/// clients a write per event per client was the cost that mattered: 44% of the gateway's
/// CPU at 5,000 streams was `writev`.
struct Writer {
    feed: Feed,
    /// Fires `interval` after the last write; a keep-alive comment follows a silence.
    keep_alive: Pin<Box<tokio::time::Sleep>>,
    interval: Duration,
    last_write: Instant,
}

impl Writer {
    fn into_stream(self) -> impl Stream<Item = Result<Bytes, Infallible>> {
        stream::unfold(self, |mut w| async move {
            let chunk = w.next_chunk().await?;
            Some((Ok(chunk), w))
        })
    }

    async fn next_chunk(&mut self) -> Option<Bytes> {
        let mut out = Chunk::default();
        match self.feed.phase {
            // Sent at once so clients and proxies see the stream is open.
            Phase::Start => {
                self.feed.phase = Phase::Live;
                out.push_static(b": connected\nretry: 2000\n\n");
            }
            Phase::Live => {
                self.wait_for_first(&mut out).await;
                if out.is_empty() {
                    return None;
                }
                self.feed.drain_ready(&mut out);
            }
            Phase::Done => return None,
        }
        if self.feed.sent > 0 {
            metrics::counter!("orders_gateway_stream_events_total").increment(self.feed.sent);
            self.feed.sent = 0;
        }
        // The keep-alive timer is not reset here: resetting a timer per write costs more
        // than checking, when it fires, whether there was a write since.
        self.last_write = Instant::now();
        Some(out.freeze())
    }

    /// Waits until there is something to write: an event, the shutdown notice, or a
    /// keep-alive after a silence. Leaves `out` empty when the stream ends.
    async fn wait_for_first(&mut self, out: &mut Chunk) {
        let feed = &mut self.feed;
        let shutdown = feed.shutdown.clone();
        while out.is_empty() {
            if feed.query.limit == Some(0) || matches!(feed.phase, Phase::Done) {
                return;
            }
            tokio::select! {
                biased;
                () = shutdown.cancelled() => {
                    feed.phase = Phase::Done;
                    out.push_static(
                        b": gateway shutting down; reconnect with Last-Event-ID\nretry: 2000\n\n",
                    );
                }
                item = feed.next_item() => {
                    if feed.apply(item, out).is_break() {
                        feed.phase = Phase::Done;
                    }
                }
                () = self.keep_alive.as_mut() => {
                    let due = self.last_write + self.interval;
                    if Instant::now() >= due {
                        out.push_static(b": keep-alive\n\n");
                        self.keep_alive.as_mut().reset(Instant::now() + self.interval);
                    } else {
                        self.keep_alive.as_mut().reset(due);
                    }
                }
            }
        }
    }
}

/// What the feed has next.
enum Item {
    Replayed(Result<Replayed, HistoryError>),
    /// The replay from the topic is complete.
    ReplayDone,
    Hub(Arc<StreamEvent>),
    Lagged(u64),
    Closed,
}

/// One chunk of the body: a single shared frame as is, several copied into one buffer.
#[derive(Default)]
struct Chunk {
    single: Option<Bytes>,
    buf: BytesMut,
}

impl Chunk {
    fn is_empty(&self) -> bool {
        self.single.is_none() && self.buf.is_empty()
    }

    fn len(&self) -> usize {
        self.single.as_ref().map_or(0, Bytes::len) + self.buf.len()
    }

    fn push_shared(&mut self, frame: &Bytes) {
        if self.is_empty() {
            self.single = Some(frame.clone());
        } else {
            self.buf().extend_from_slice(frame);
        }
    }

    fn push_static(&mut self, frame: &'static [u8]) {
        self.push_shared(&Bytes::from_static(frame));
    }

    fn buf(&mut self) -> &mut BytesMut {
        if let Some(single) = self.single.take() {
            self.buf.extend_from_slice(&single);
        }
        &mut self.buf
    }

    fn freeze(self) -> Bytes {
        match self.single {
            Some(single) => single,
            None => self.buf.freeze(),
        }
    }
}

impl Feed {
    /// Waits for the next item: the replay from the topic first, then the orders still in
    /// memory, then the live subscription.
    async fn next_item(&mut self) -> Item {
        if let Some(replay) = &mut self.replay {
            return match replay.recv().await {
                Some(item) => Item::Replayed(item),
                None => Item::ReplayDone,
            };
        }
        if let Some(event) = self.backlog.pop_front() {
            return Item::Hub(event);
        }
        match self.subscription.next().await {
            Next::Event(event) => Item::Hub(event),
            Next::Lagged { missed } => Item::Lagged(missed),
            Next::Closed => Item::Closed,
        }
    }

    /// The next item if one is ready now, without waiting.
    fn ready_item(&mut self) -> Option<Item> {
        if let Some(replay) = &mut self.replay {
            return match replay.try_recv() {
                Ok(item) => Some(Item::Replayed(item)),
                Err(mpsc::error::TryRecvError::Disconnected) => Some(Item::ReplayDone),
                Err(mpsc::error::TryRecvError::Empty) => None,
            };
        }
        if let Some(event) = self.backlog.pop_front() {
            return Some(Item::Hub(event));
        }
        match self.subscription.try_next()? {
            Next::Event(event) => Some(Item::Hub(event)),
            Next::Lagged { missed } => Some(Item::Lagged(missed)),
            Next::Closed => Some(Item::Closed),
        }
    }

    /// Adds everything that is ready to `out`, up to MAX_CHUNK bytes.
    fn drain_ready(&mut self, out: &mut Chunk) {
        while out.len() < MAX_CHUNK
            && matches!(self.phase, Phase::Live)
            && self.query.limit != Some(0)
            // A pending shutdown notice goes out next, before further events.
            && !self.shutdown.is_cancelled()
        {
            let Some(item) = self.ready_item() else {
                return;
            };
            if self.apply(item, out).is_break() {
                self.phase = Phase::Done;
            }
        }
    }

    /// Writes what `item` means for this client into `out`; `Break` ends the stream after it.
    fn apply(&mut self, item: Item, out: &mut Chunk) -> ControlFlow<()> {
        match item {
            Item::Replayed(Ok(item)) => self.replayed(item, out),
            Item::Replayed(Err(error)) => {
                self.unavailable(&error, out);
                ControlFlow::Break(())
            }
            Item::ReplayDone => {
                self.replay = None;
                ControlFlow::Continue(())
            }
            Item::Hub(event) => self.hub_event(event, out),
            Item::Lagged(missed) => {
                self.overflow(missed, out);
                ControlFlow::Break(())
            }
            Item::Closed => ControlFlow::Break(()),
        }
    }

    /// An order from the hub, live or from its memory.
    fn hub_event(&mut self, event: Arc<StreamEvent>, out: &mut Chunk) -> ControlFlow<()> {
        let order = &event.order;
        let own_id = match &mut self.position {
            None => None,
            Some(position) => {
                if position.has_passed(order.partition, order.offset) {
                    return ControlFlow::Continue(());
                }
                position.advance(order.partition, order.offset, order.stamp());
                let id = position.encode(&self.topic);
                if id == event.id {
                    self.position = None;
                    None
                } else {
                    Some(id)
                }
            }
        };
        if !self.wants(order) {
            return ControlFlow::Continue(());
        }
        match own_id {
            // The hub's id: the frame every such client writes, rendered once.
            None => {
                let frame = event
                    .rendered
                    .get_or_init(|| render_order(&event.id, &event.data));
                out.push_shared(frame);
                self.last_id = Some(LastId::Hub(event));
            }
            Some(id) => {
                write_order(out.buf(), &id, &event.data);
                self.last_id = Some(LastId::Own(id));
            }
        }
        self.count_order()
    }

    /// A record replayed from the topic.
    fn replayed(&mut self, item: Replayed, out: &mut Chunk) -> ControlFlow<()> {
        let wanted = matches!(&item, Replayed::Order(order) if self.wants(order));
        let position = self.position.get_or_insert_with(Position::default);
        match item {
            Replayed::Order(order) => {
                position.advance(order.partition, order.offset, order.stamp());
                if !wanted {
                    return ControlFlow::Continue(());
                }
                let id = position.encode(&self.topic);
                // A struct of strings and integers always serialises.
                let data = serde_json::to_string(&order).unwrap_or_default();
                write_order(out.buf(), &id, &data);
                self.last_id = Some(LastId::Own(id));
                self.count_order()
            }
            Replayed::Skipped {
                partition,
                offset,
                stamp,
            } => {
                position.advance(partition, offset, stamp);
                ControlFlow::Continue(())
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
                let buf = out.buf();
                field(buf, "event", "gap");
                field(buf, "id", &id);
                data(buf, &json(&gap));
                buf.extend_from_slice(b"\n");
                self.last_id = Some(LastId::Own(id));
                ControlFlow::Continue(())
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

    /// Counts an order event written; with a `limit`, ends the stream after the last one.
    fn count_order(&mut self) -> ControlFlow<()> {
        self.sent += 1;
        if let Some(n) = &mut self.query.limit {
            *n -= 1;
        }
        ControlFlow::Continue(())
    }

    fn overflow(&mut self, missed: u64, out: &mut Chunk) {
        metrics::counter!("orders_gateway_stream_overflows_total").increment(1);
        let overflow = Overflow {
            missed,
            last_event_id: self.last_id.as_ref().map(LastId::to_id),
            detail: "this client fell too far behind the live feed; reconnect with last_event_id",
        };
        let buf = out.buf();
        field(buf, "event", "overflow");
        data(buf, &json(&overflow));
        buf.extend_from_slice(b"retry: 2000\n\n");
    }

    fn unavailable(&mut self, error: &HistoryError, out: &mut Chunk) {
        tracing::warn!(%error, "stream: replay from the topic failed");
        let unavailable = Unavailable {
            last_event_id: self.last_id.as_ref().map(LastId::to_id),
            detail: "the orders to resume from could not be read from Kafka; reconnect later"
                .into(),
        };
        let buf = out.buf();
        field(buf, "event", "unavailable");
        data(buf, &json(&unavailable));
        buf.extend_from_slice(b"retry: 2000\n\n");
    }
}

/// `event: order`, `id`, `data`: the frame of one order, as `axum`'s `Event` renders it.
fn render_order(id: &str, data: &str) -> Bytes {
    let mut buf = BytesMut::with_capacity(32 + id.len() + data.len());
    write_order(&mut buf, id, data);
    buf.freeze()
}

fn write_order(buf: &mut BytesMut, id: &str, payload: &str) {
    field(buf, "event", "order");
    field(buf, "id", id);
    data(buf, payload);
    buf.extend_from_slice(b"\n");
}

/// One `name: value` line. Our names and values (event names, base64url ids) never hold
/// line breaks.
fn field(buf: &mut BytesMut, name: &str, value: &str) {
    buf.reserve(name.len() + value.len() + 3);
    buf.extend_from_slice(name.as_bytes());
    buf.extend_from_slice(b": ");
    buf.extend_from_slice(value.as_bytes());
    buf.extend_from_slice(b"\n");
}

/// `data:` lines: a line break inside the value starts a new `data:` line (JSON from
/// serde_json has none, but the format must hold for any text).
fn data(buf: &mut BytesMut, value: &str) {
    if value.is_empty() {
        return;
    }
    let value = value.as_bytes();
    buf.reserve(value.len() + 7);
    buf.extend_from_slice(b"data: ");
    let mut last = 0;
    for at in memchr::memchr2_iter(b'\n', b'\r', value) {
        buf.extend_from_slice(&value[last..=at]);
        buf.extend_from_slice(b"data: ");
        last = at + 1;
    }
    buf.extend_from_slice(&value[last..]);
    buf.extend_from_slice(b"\n");
}

fn json(value: &impl Serialize) -> String {
    // Our event payloads are plain structs of strings and integers.
    serde_json::to_string(value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::response::sse::Event;
    use bytes::BytesMut;

    use super::{data, field, render_order};

    /// The frames are written by hand for speed; they must stay what `axum` would write.
    async fn axum_bytes(event: Event) -> Vec<u8> {
        use axum::response::IntoResponse;
        let stream = futures_util::stream::iter([Ok::<_, std::convert::Infallible>(event)]);
        let body = axum::response::sse::Sse::new(stream)
            .into_response()
            .into_body();
        axum::body::to_bytes(body, usize::MAX)
            .await
            .unwrap()
            .to_vec()
    }

    #[tokio::test]
    async fn hand_written_frames_are_the_ones_axum_writes() {
        let payload = r#"{"order_id":"o1","user":"lara","quantity":1}"#;
        let ours = render_order("AeyWXjIAAQ", payload);
        let theirs = Event::default()
            .event("order")
            .id("AeyWXjIAAQ")
            .data(payload);
        assert_eq!(&ours[..], axum_bytes(theirs).await);

        let odd = "two\nlines\rand\r\nmore";
        let mut ours = BytesMut::new();
        field(&mut ours, "event", "overflow");
        data(&mut ours, odd);
        ours.extend_from_slice(b"retry: 2000\n\n");
        let theirs = Event::default()
            .event("overflow")
            .data(odd)
            .retry(Duration::from_secs(2));
        assert_eq!(&ours[..], axum_bytes(theirs).await);

        let comment = Event::default()
            .comment("gateway shutting down; reconnect with Last-Event-ID")
            .retry(Duration::from_secs(2));
        assert_eq!(
            axum_bytes(comment).await,
            b": gateway shutting down; reconnect with Last-Event-ID\nretry: 2000\n\n"
        );
        let connected = Event::default()
            .comment("connected")
            .retry(Duration::from_secs(2));
        assert_eq!(axum_bytes(connected).await, b": connected\nretry: 2000\n\n");
        assert_eq!(
            axum_bytes(Event::default().comment("keep-alive")).await,
            b": keep-alive\n\n"
        );
    }
}
