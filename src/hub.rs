//! Fan-out hub: hands every tracked order to every connected stream client.
//! It knows orders and positions, never Kafka, so streaming is testable without a broker.

use std::sync::{Arc, Mutex, PoisonError};

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

/// Publishes tracked orders to any number of subscribers, each with a bounded buffer.
#[derive(Debug)]
pub struct Hub {
    topic: String,
    tx: broadcast::Sender<Arc<StreamEvent>>,
    /// Held while sending, so ids reach subscribers in the order positions advance.
    position: Mutex<Position>,
}

impl Hub {
    /// `buffer` is how many orders one subscriber may fall behind before it lags.
    pub fn new(topic: impl Into<String>, buffer: usize) -> Self {
        let (tx, _) = broadcast::channel(buffer.max(1));
        Self {
            topic: topic.into(),
            tx,
            position: Mutex::new(Position::default()),
        }
    }

    /// The topic whose positions this hub's ids encode.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Hands an order to every subscriber. A record at or before the current position of
    /// its partition was already published (Kafka redelivers after a rebalance) and is
    /// skipped, so clients never see it twice; returns whether it was published.
    pub fn publish(&self, order: TrackedOrder) -> bool {
        let mut position = self.position.lock().unwrap_or_else(PoisonError::into_inner);
        if position.has_passed(order.partition, order.offset) {
            return false;
        }
        position.advance(order.partition, order.offset);
        let event = StreamEvent {
            id: position.encode(&self.topic),
            // A struct of strings and integers always serialises.
            data: serde_json::to_string(&order).unwrap_or_default(),
            order,
        };
        // No subscribers is not an error: the order is simply not watched right now.
        let _ = self.tx.send(Arc::new(event));
        true
    }

    /// Forgets every position: the topic was recreated, so its offsets start again at 0.
    pub fn reset(&self) {
        *self.position.lock().unwrap_or_else(PoisonError::into_inner) = Position::default();
    }

    /// The position after the last published order.
    pub fn position(&self) -> Position {
        self.position
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// A new subscriber that receives every order published from now on.
    pub fn subscribe(&self) -> Subscription {
        Subscription {
            rx: self.tx.subscribe(),
        }
    }

    /// How many subscribers are connected.
    pub fn subscribers(&self) -> usize {
        self.tx.receiver_count()
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
        let hub = Hub::new("orders", 16);
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
        let hub = Hub::new("orders", 16);
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
        let hub = Hub::new("orders", 16);
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
        let hub = Hub::new("orders", 4);
        let mut slow = hub.subscribe();
        let mut fast = hub.subscribe();
        for offset in 0..10 {
            hub.publish(order(0, offset));
            assert_eq!(expect_event(&mut fast).await.order.offset, offset);
        }
        assert!(matches!(slow.next().await, Next::Lagged { missed: 6 }));
        assert_eq!(expect_event(&mut slow).await.order.offset, 6);
    }

    #[tokio::test]
    async fn subscribers_see_the_hub_close() {
        let hub = Hub::new("orders", 4);
        let mut sub = hub.subscribe();
        assert_eq!(hub.subscribers(), 1);
        drop(hub);
        assert!(matches!(sub.next().await, Next::Closed));
    }
}
