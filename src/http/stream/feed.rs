//! One client's feed: what it is sent next, from the replay, the hub's memory or the live
//! subscription, and what each of those means for its position and its filters.

use std::collections::VecDeque;
use std::ops::ControlFlow;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::OpenStream;
use super::events::{Gap, Overflow, Unavailable};
use super::frame::{Chunk, MAX_CHUNK, data, field, json, render_order, write_order};
use super::query::{Start, StreamQuery};
use crate::domain::{Position, TrackedOrder};
use crate::history::{HistoryError, Replayed};
use crate::http::AppState;
use crate::hub::{Catchup, Next, StreamEvent, Subscription};

pub(super) enum Phase {
    Start,
    Live,
    Done,
}

/// One client's stream.
pub(super) struct Feed {
    topic: String,
    pub(super) query: StreamQuery,
    start: Start,
    /// Missed orders still in memory, sent first.
    backlog: VecDeque<Arc<StreamEvent>>,
    /// Missed orders read from the topic, sent first.
    replay: Option<mpsc::Receiver<Result<Replayed, HistoryError>>>,
    /// The client's own position while it differs from the hub's (catching up, or ahead
    /// of this replica); `None` once they agree, so the hub's ready-made ids are used.
    position: Option<Position>,
    subscription: Subscription,
    pub(super) shutdown: CancellationToken,
    /// The id of the last event sent, for `overflow` and `unavailable`.
    last_id: Option<LastId>,
    pub(super) phase: Phase,
    /// Order events written since the metric was last updated.
    pub(super) sent: u64,
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

/// What the feed has next.
pub(super) enum Item {
    Replayed(Result<Replayed, HistoryError>),
    /// The replay from the topic is complete.
    ReplayDone,
    Hub(Arc<StreamEvent>),
    Lagged(u64),
    Closed,
}

impl Feed {
    /// A client's feed after `from` (`None`: from the live tail): what it missed, from the
    /// hub's memory while that still holds all of it, else replayed from the topic; then
    /// the live subscription, taken in the same step so nothing falls between the two.
    pub(super) fn open(
        state: &AppState,
        query: StreamQuery,
        start: Start,
        from: Option<Position>,
        open: OpenStream,
    ) -> Self {
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
        Self {
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
            _open: open,
        }
    }

    /// Waits for the next item: the replay from the topic first, then the orders still in
    /// memory, then the live subscription.
    pub(super) async fn next_item(&mut self) -> Item {
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
    pub(super) fn drain_ready(&mut self, out: &mut Chunk) {
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
    pub(super) fn apply(&mut self, item: Item, out: &mut Chunk) -> ControlFlow<()> {
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
