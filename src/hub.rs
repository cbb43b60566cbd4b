//! Fan-out hub: hands every tracked order to every connected stream client.
//! It knows orders and positions, never Kafka, so streaming is testable without a broker.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::SystemTime;

use bytes::Bytes;
use tokio::sync::broadcast;

use crate::domain::{Position, TrackedOrder};

/// One order as every client receives it, rendered once for all of them.
#[derive(Debug)]
pub struct StreamEvent {
    /// The stream position just after this order, as an opaque event id.
    pub id: String,
    /// The order as JSON, the event's `data`.
    pub data: String,
    /// The order itself, for filtering.
    pub order: TrackedOrder,
    /// The event as the HTTP edge writes it, rendered by the first client that sends it and
    /// shared by all the others (the hub does not know the wire format).
    pub rendered: OnceLock<Bytes>,
}

/// What a subscriber gets next.
#[derive(Debug)]
pub enum Next {
    /// The next order.
    Event(Arc<StreamEvent>),
    /// The subscriber fell so far behind that `missed` orders were dropped from its buffer.
    Lagged { missed: u64 },
    /// The hub is gone (shutdown).
    Closed,
}

/// Publishes tracked orders to any number of subscribers, each with a bounded buffer, and
/// keeps the most recent ones for clients that ask for a replay.
#[derive(Debug)]
pub struct Hub {
    topic: String,
    tx: broadcast::Sender<Arc<StreamEvent>>,
    /// Held while sending, so ids reach subscribers in the order positions advance, and a
    /// replay taken together with a subscription neither misses nor repeats an order.
    inner: Mutex<Inner>,
    replay: usize,
}

#[derive(Debug, Default)]
struct Inner {
    position: Position,
    recent: VecDeque<Arc<StreamEvent>>,
    /// Per partition, the offset from which every order is still in `recent`.
    kept_from: BTreeMap<i32, i64>,
}

impl Inner {
    /// Whether the record a client passed last on `partition` (stamped in `from`) is the
    /// one this hub knows at that offset. A different stamp means the topic was recreated;
    /// a record the hub no longer holds can only be checked against the topic.
    fn holds_record_before(&self, from: &Position, partition: i32, next: i64) -> bool {
        let Some(stamp) = from.stamp(partition) else {
            return true;
        };
        if self.position.next_offset(partition) == Some(next) {
            return self.position.stamp(partition) == Some(stamp);
        }
        self.recent
            .iter()
            .find(|e| e.order.partition == partition && e.order.offset == next - 1)
            .is_some_and(|e| e.order.stamp() == stamp)
    }
}

/// Where a resuming subscriber's missed orders come from.
#[derive(Debug)]
pub enum Catchup {
    /// All of them are in memory: send these, then the subscription.
    Memory(Vec<Arc<StreamEvent>>),
    /// Some are older than memory: replay from the topic up to `until` (the hub's
    /// position when the subscription began), then the subscription.
    History { until: Position },
}

impl Hub {
    /// `buffer` is how many orders one subscriber may fall behind before it lags;
    /// `replay` how many recent orders are kept for `since` replays.
    pub fn new(topic: impl Into<String>, buffer: usize, replay: usize) -> Self {
        let (tx, _) = broadcast::channel(buffer.max(1));
        Self {
            topic: topic.into(),
            tx,
            inner: Mutex::default(),
            replay,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The topic whose positions this hub's ids encode.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Hands an order to every subscriber. A record at or before the current position of
    /// its partition was already published (Kafka redelivers after a rebalance) and is
    /// skipped, so clients never see it twice; returns whether it was published.
    pub fn publish(&self, order: TrackedOrder) -> bool {
        // Written before the lock is taken: subscribers joining meanwhile need not wait.
        // A struct of strings and integers always serialises.
        let data = serde_json::to_string(&order).unwrap_or_default();
        let mut inner = self.lock();
        if inner.position.has_passed(order.partition, order.offset) {
            return false;
        }
        inner
            .position
            .advance(order.partition, order.offset, order.stamp());
        let event = Arc::new(StreamEvent {
            id: inner.position.encode(&self.topic),
            data,
            order,
            rendered: OnceLock::new(),
        });
        inner
            .kept_from
            .entry(event.order.partition)
            .or_insert(event.order.offset);
        let full = self.replay > 0 && inner.recent.len() == self.replay;
        if let Some(evicted) = full.then(|| inner.recent.pop_front()).flatten() {
            let o = &evicted.order;
            inner.kept_from.insert(o.partition, o.offset + 1);
        }
        if self.replay > 0 {
            inner.recent.push_back(event.clone());
        } else {
            inner
                .kept_from
                .insert(event.order.partition, event.order.offset + 1);
        }
        // No subscribers is not an error: the order is simply not watched right now.
        let _ = self.tx.send(event);
        true
    }

    /// Moves past a record that is not an order, so the position (which is committed for
    /// the group) does not stop before it.
    pub fn pass(&self, partition: i32, offset: i64, stamp: i64) {
        self.lock().position.advance(partition, offset, stamp);
    }

    /// Forgets every position and kept order: the topic was recreated, so its offsets
    /// start again at 0.
    pub fn reset(&self) {
        *self.lock() = Inner::default();
    }

    /// The position after the last published order.
    pub fn position(&self) -> Position {
        self.lock().position.clone()
    }

    /// A new subscriber that receives every order published from now on.
    pub fn subscribe(&self) -> Subscription {
        Subscription {
            rx: self.tx.subscribe(),
        }
    }

    /// A subscriber that resumes after `from`: what it missed (from memory when the hub
    /// still holds all of it, else a range to replay from the topic) and a subscription for
    /// everything after. Taken under one lock, so nothing falls between the two.
    pub fn resume(&self, from: &Position) -> (Catchup, Subscription) {
        let inner = self.lock();
        let in_memory = inner.position.iter().all(|(partition, next)| {
            let wanted = from.next_offset(partition).unwrap_or(0);
            wanted >= next
                || inner
                    .kept_from
                    .get(&partition)
                    .is_some_and(|kept| *kept <= wanted)
        });
        // A position ahead of the hub on some partition is either another replica's or a
        // recreated topic's; only the topic can tell which.
        let ahead = from
            .iter()
            .any(|(p, o)| o > inner.position.next_offset(p).unwrap_or(0));
        let same_records = from
            .iter()
            .all(|(p, next)| inner.holds_record_before(from, p, next));
        let catchup = if in_memory && !ahead && same_records {
            Catchup::Memory(
                inner
                    .recent
                    .iter()
                    .filter(|e| !from.has_passed(e.order.partition, e.order.offset))
                    .cloned()
                    .collect(),
            )
        } else {
            Catchup::History {
                until: inner.position.clone(),
            }
        };
        (catchup, self.subscribe())
    }

    /// Per partition, the offset of the first kept order stamped at or after `since`.
    pub fn first_since(&self, since: SystemTime) -> Position {
        let inner = self.lock();
        let mut first = Position::default();
        for event in inner.recent.iter().filter(|e| e.order.at >= since) {
            let (p, o) = (event.order.partition, event.order.offset);
            if first.next_offset(p).is_none() {
                first.restart(p, o);
            }
        }
        first
    }
}

/// One client's view of the hub.
#[derive(Debug)]
pub struct Subscription {
    rx: broadcast::Receiver<Arc<StreamEvent>>,
}

impl Subscription {
    /// Waits for the next order.
    pub async fn next(&mut self) -> Next {
        match self.rx.recv().await {
            Ok(event) => Next::Event(event),
            Err(broadcast::error::RecvError::Lagged(missed)) => Next::Lagged { missed },
            Err(broadcast::error::RecvError::Closed) => Next::Closed,
        }
    }

    /// The next order if one is waiting, without waiting for it.
    pub fn try_next(&mut self) -> Option<Next> {
        match self.rx.try_recv() {
            Ok(event) => Some(Next::Event(event)),
            Err(broadcast::error::TryRecvError::Empty) => None,
            Err(broadcast::error::TryRecvError::Lagged(missed)) => Some(Next::Lagged { missed }),
            Err(broadcast::error::TryRecvError::Closed) => Some(Next::Closed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn order(partition: i32, offset: i64) -> TrackedOrder {
        TrackedOrder {
            order_id: format!("o-{partition}-{offset}"),
            user: "lara".into(),
            item: "frozen yogurt".into(),
            quantity: 1,
            created_at: None,
            partition,
            offset,
            timestamp: "2026-11-26T00:00:00.000Z".into(),
            at: SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(offset.unsigned_abs()),
        }
    }

    async fn expect_event(sub: &mut Subscription) -> Arc<StreamEvent> {
        match sub.next().await {
            Next::Event(e) => e,
            other => panic!("expected an event, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn every_subscriber_gets_every_order_in_order() {
        let hub = Hub::new("orders", 16, 0);
        let (mut a, mut b) = (hub.subscribe(), hub.subscribe());
        for offset in 0..3 {
            assert!(hub.publish(order(0, offset)));
        }
        for sub in [&mut a, &mut b] {
            for offset in 0..3 {
                assert_eq!(expect_event(sub).await.order.offset, offset);
            }
        }
    }

    #[tokio::test]
    async fn ids_encode_the_position_after_each_order() {
        let hub = Hub::new("orders", 16, 0);
        let mut sub = hub.subscribe();
        hub.publish(order(1, 4));
        hub.publish(order(0, 9));
        let first = Position::decode(&expect_event(&mut sub).await.id, "orders").unwrap();
        assert_eq!(first.iter().collect::<Vec<_>>(), [(1, 5)]);
        let second = Position::decode(&expect_event(&mut sub).await.id, "orders").unwrap();
        assert_eq!(second.iter().collect::<Vec<_>>(), [(0, 10), (1, 5)]);
        assert_eq!(hub.position(), second);
    }

    #[tokio::test]
    async fn redelivered_records_are_not_published_twice() {
        let hub = Hub::new("orders", 16, 0);
        let mut sub = hub.subscribe();
        assert!(hub.publish(order(0, 0)));
        assert!(hub.publish(order(0, 1)));
        assert!(!hub.publish(order(0, 1)));
        assert!(!hub.publish(order(0, 0)));
        assert!(hub.publish(order(0, 2)));
        let offsets = [
            expect_event(&mut sub).await,
            expect_event(&mut sub).await,
            expect_event(&mut sub).await,
        ]
        .map(|e| e.order.offset);
        assert_eq!(offsets, [0, 1, 2]);
    }

    #[tokio::test]
    async fn a_slow_subscriber_is_told_how_much_it_missed_without_slowing_others() {
        let hub = Hub::new("orders", 4, 0);
        let mut slow = hub.subscribe();
        let mut fast = hub.subscribe();
        for offset in 0..10 {
            hub.publish(order(0, offset));
            assert_eq!(expect_event(&mut fast).await.order.offset, offset);
        }
        assert!(matches!(slow.next().await, Next::Lagged { missed: 6 }));
        assert_eq!(expect_event(&mut slow).await.order.offset, 6);
    }

    fn at(pairs: &[(i32, i64)]) -> Position {
        let mut p = Position::default();
        for &(partition, next) in pairs {
            p.restart(partition, next);
        }
        p
    }

    #[tokio::test]
    async fn a_resume_from_memory_and_its_subscription_neither_miss_nor_repeat() {
        let hub = Hub::new("orders", 16, 3);
        for offset in 0..5 {
            hub.publish(order(0, offset));
        }
        let (catchup, mut sub) = hub.resume(&at(&[(0, 3)]));
        let Catchup::Memory(backlog) = catchup else {
            panic!("offsets 3 and 4 are kept")
        };
        assert_eq!(
            backlog.iter().map(|e| e.order.offset).collect::<Vec<_>>(),
            [3, 4]
        );
        hub.publish(order(0, 5));
        assert_eq!(expect_event(&mut sub).await.order.offset, 5);
    }

    #[tokio::test]
    async fn a_resume_older_than_memory_asks_for_history_up_to_the_hub() {
        let hub = Hub::new("orders", 16, 3);
        for offset in 0..5 {
            hub.publish(order(0, offset));
        }
        let (catchup, _) = hub.resume(&at(&[(0, 1)]));
        assert!(matches!(catchup, Catchup::History { until } if until.next_offset(0) == Some(5)));
        let (ahead, _) = hub.resume(&at(&[(0, 9)]));
        assert!(
            matches!(ahead, Catchup::History { .. }),
            "ahead of the hub: only the topic can tell"
        );
    }

    #[tokio::test]
    async fn since_finds_the_first_kept_order_per_partition() {
        let hub = Hub::new("orders", 16, 8);
        for offset in 0..5 {
            hub.publish(order(1, offset));
        }
        let since = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(3);
        assert_eq!(hub.first_since(since), at(&[(1, 3)]));
    }

    #[tokio::test]
    async fn a_reset_forgets_positions_and_kept_orders() {
        let hub = Hub::new("orders", 16, 8);
        hub.publish(order(0, 7));
        hub.reset();
        assert!(
            hub.publish(order(0, 0)),
            "offset 0 of a recreated topic is new"
        );
        let (catchup, _) = hub.resume(&Position::default());
        assert!(matches!(catchup, Catchup::Memory(events) if events.len() == 1));
    }

    #[tokio::test]
    async fn subscribers_see_the_hub_close() {
        let hub = Hub::new("orders", 4, 0);
        let mut sub = hub.subscribe();
        drop(hub);
        assert!(matches!(sub.next().await, Next::Closed));
    }
}
