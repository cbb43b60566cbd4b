//! Idempotent order placement: a retry with the same `Idempotency-Key` gets the first
//! attempt's answer instead of writing the order a second time.
//!
//! Keys are remembered in memory, per gateway instance, for IDEMPOTENCY_TTL and at most
//! IDEMPOTENCY_KEYS at once (the oldest are forgotten first). Beyond one instance the key
//! still fixes the order id (a UUID v5 of the key) and with it the record key and partition,
//! so an order written twice by two instances is at least recognisable downstream.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};
use uuid::Uuid;

use crate::domain::Order;
use crate::publisher::{PublishError, Receipt};

/// What placing an order came to: the order as written and where, or why it was not.
pub type Outcome = Result<(Order, Receipt), PublishError>;

/// One publish, awaited by the request that started it and by every retry that joins it.
type Attempt = Shared<BoxFuture<'static, Outcome>>;

/// Order ids derived from keys live in their own UUID v5 namespace.
const KEY_NAMESPACE: Uuid = Uuid::from_u128(0x6f72_6465_7273_2d67_6174_6577_6179_2d6b);

/// A client's `Idempotency-Key`: 1 to 255 visible ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn parse(value: &str) -> Result<Self, &'static str> {
        if (1..=255).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_graphic()) {
            Ok(Self(value.to_owned()))
        } else {
            Err("Idempotency-Key must be 1 to 255 visible ASCII characters")
        }
    }

    /// The order id an order placed with this key gets when it names none, the same on
    /// every instance.
    pub fn order_id(&self) -> Uuid {
        Uuid::new_v5(&KEY_NAMESPACE, self.0.as_bytes())
    }
}

/// The key was used before for a different order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the Idempotency-Key was used for a different order")]
pub struct KeyReused;

/// Whether an answer comes from this request's own publish or from an earlier one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Published,
    Replayed,
}

/// The remembered keys and the attempts they stand for.
pub struct Idempotency {
    ttl: Duration,
    capacity: usize,
    /// Keyed per process, so clients cannot craft two orders with one fingerprint.
    hasher: RandomState,
    store: Mutex<Store>,
}

#[derive(Default)]
struct Store {
    entries: HashMap<String, Entry>,
    /// Keys in the order they were first used, for expiry and eviction.
    ages: VecDeque<(Instant, String)>,
}

struct Entry {
    fingerprint: u64,
    attempt: Attempt,
}

impl Idempotency {
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            ttl,
            capacity: capacity.max(1),
            hasher: RandomState::new(),
            store: Mutex::default(),
        }
    }

    /// Places `order` through `publish` once per key. A retry of a finished attempt gets
    /// its answer; a retry of one in flight waits for it. A failed attempt is not an
    /// answer: the next retry publishes again (with the same order id, so a record the
    /// broker wrote despite a timeout has a recognisable twin).
    ///
    /// The publish runs as a task of its own, so a client that hangs up cannot cancel the
    /// attempt others are waiting for.
    pub async fn place<F>(
        &self,
        key: IdempotencyKey,
        order: Order,
        publish: F,
    ) -> Result<(Outcome, Source), KeyReused>
    where
        F: FnOnce(Order) -> BoxFuture<'static, Outcome> + Send + 'static,
    {
        let fingerprint = self.fingerprint(&order);
        let (attempt, source) = {
            let now = Instant::now();
            let mut store = self
                .store
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            store.forget_older_than(now.checked_sub(self.ttl));
            match store.entries.get_mut(&key.0) {
                Some(entry) if entry.fingerprint != fingerprint => return Err(KeyReused),
                Some(entry) if matches!(entry.attempt.peek(), Some(Err(_))) => {
                    entry.attempt = start(order, publish);
                    (entry.attempt.clone(), Source::Published)
                }
                Some(entry) => (entry.attempt.clone(), Source::Replayed),
                None => {
                    let attempt = start(order, publish);
                    store.remember(key.0, fingerprint, attempt.clone(), now, self.capacity);
                    (attempt, Source::Published)
                }
            }
        };
        if source == Source::Replayed {
            metrics::counter!("orders_gateway_idempotency_replays_total").increment(1);
        }
        Ok((attempt.await, source))
    }

    /// What makes two orders the same order; `created_at` is the gateway's, not the client's.
    fn fingerprint(&self, order: &Order) -> u64 {
        self.hasher
            .hash_one((order.order_id, &order.user, &order.item, order.quantity))
    }

    /// Keys remembered now.
    pub fn len(&self) -> usize {
        let store = self
            .store
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        store.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Store {
    fn remember(
        &mut self,
        key: String,
        fingerprint: u64,
        attempt: Attempt,
        now: Instant,
        capacity: usize,
    ) {
        self.ages.push_back((now, key.clone()));
        self.entries.insert(
            key,
            Entry {
                fingerprint,
                attempt,
            },
        );
        while self.entries.len() > capacity {
            let Some((_, oldest)) = self.ages.pop_front() else {
                break;
            };
            self.entries.remove(&oldest);
            metrics::counter!("orders_gateway_idempotency_keys_evicted_total").increment(1);
        }
    }

    fn forget_older_than(&mut self, cutoff: Option<Instant>) {
        let Some(cutoff) = cutoff else { return };
        while self.ages.front().is_some_and(|(at, _)| *at <= cutoff) {
            if let Some((_, key)) = self.ages.pop_front() {
                self.entries.remove(&key);
            }
        }
    }
}

fn start<F>(order: Order, publish: F) -> Attempt
where
    F: FnOnce(Order) -> BoxFuture<'static, Outcome> + Send + 'static,
{
    let task = tokio::spawn(publish(order));
    async move {
        task.await.unwrap_or_else(|e| {
            Err(PublishError::Unavailable(format!(
                "the publish task ended: {e}"
            )))
        })
    }
    .boxed()
    .shared()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::SystemTime;

    use serde_json::json;

    use super::*;

    fn order(quantity: u32) -> Order {
        Order::parse(
            json!({"order_id": "6f1c1e1e-0c1a-4a8e-9d4e-6f0b5d8f3c2a", "user": "lara",
                   "item": "frozen yogurt", "quantity": quantity}),
            SystemTime::now(),
        )
        .unwrap()
    }

    fn key(s: &str) -> IdempotencyKey {
        IdempotencyKey::parse(s).unwrap()
    }

    /// A publisher that counts its calls and answers with a receipt at offset = call number,
    /// after `delay`, or fails while `fail` is set.
    #[derive(Clone, Default)]
    struct Counting {
        calls: Arc<AtomicUsize>,
        fail: Arc<std::sync::atomic::AtomicBool>,
    }

    impl Counting {
        fn publish(
            &self,
            delay: Duration,
        ) -> impl FnOnce(Order) -> BoxFuture<'static, Outcome> + use<> {
            let (calls, fail) = (self.calls.clone(), self.fail.clone());
            move |order| {
                async move {
                    let n = calls.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(delay).await;
                    if fail.load(Ordering::SeqCst) {
                        return Err(PublishError::Timeout);
                    }
                    let receipt = Receipt {
                        topic: "orders".into(),
                        partition: 0,
                        offset: n as i64,
                        timestamp: SystemTime::UNIX_EPOCH,
                    };
                    Ok((order, receipt))
                }
                .boxed()
            }
        }

        fn calls(&self) -> usize {
            self.calls.load(Ordering::SeqCst)
        }
    }

    /// Places order(`quantity`) with `key` through a publisher that answers at once.
    async fn place(
        store: &Idempotency,
        key: &str,
        quantity: u32,
        publisher: &Counting,
    ) -> (Outcome, Source) {
        store
            .place(
                self::key(key),
                order(quantity),
                publisher.publish(Duration::ZERO),
            )
            .await
            .unwrap()
    }

    fn offset(outcome: &Outcome) -> i64 {
        outcome.as_ref().unwrap().1.offset
    }

    #[test]
    fn keys_are_visible_ascii_up_to_255_characters() {
        assert!(IdempotencyKey::parse("a").is_ok());
        assert!(IdempotencyKey::parse(&"k".repeat(255)).is_ok());
        for bad in ["", " ", "has space", "tab\t", "é", &"k".repeat(256)] {
            assert!(IdempotencyKey::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_key_always_derives_the_same_order_id() {
        assert_eq!(key("retry-1").order_id(), key("retry-1").order_id());
        assert_ne!(key("retry-1").order_id(), key("retry-2").order_id());
        assert_eq!(key("retry-1").order_id().get_version_num(), 5);
    }

    #[tokio::test]
    async fn a_retry_gets_the_first_answer_and_publishes_nothing() {
        let store = Idempotency::new(Duration::from_secs(60), 10);
        let publisher = Counting::default();
        let (first, source) = place(&store, "k", 1, &publisher).await;
        assert_eq!(source, Source::Published);
        let (again, source) = place(&store, "k", 1, &publisher).await;
        assert_eq!(source, Source::Replayed);
        assert_eq!(offset(&first), offset(&again));
        assert_eq!(publisher.calls(), 1);
    }

    #[tokio::test]
    async fn concurrent_retries_wait_for_the_first_attempt() {
        let store = Arc::new(Idempotency::new(Duration::from_secs(60), 10));
        let publisher = Counting::default();
        let attempts = (0..20).map(|_| {
            let (store, publisher) = (store.clone(), publisher.clone());
            tokio::spawn(async move {
                store
                    .place(
                        key("k"),
                        order(1),
                        publisher.publish(Duration::from_millis(50)),
                    )
                    .await
                    .unwrap()
            })
        });
        let answers = futures_util::future::join_all(attempts).await;
        assert_eq!(publisher.calls(), 1);
        let published = answers
            .iter()
            .filter(|a| a.as_ref().unwrap().1 == Source::Published)
            .count();
        assert_eq!(published, 1);
        assert!(answers.iter().all(|a| offset(&a.as_ref().unwrap().0) == 0));
    }

    #[tokio::test]
    async fn the_same_key_for_another_order_is_refused() {
        let store = Idempotency::new(Duration::from_secs(60), 10);
        let publisher = Counting::default();
        let publish = || publisher.publish(Duration::ZERO);
        let (first, _) = store.place(key("k"), order(1), publish()).await.unwrap();
        assert!(first.is_ok());
        assert_eq!(
            store
                .place(key("k"), order(2), publish())
                .await
                .unwrap_err(),
            KeyReused
        );
        assert_eq!(publisher.calls(), 1);
    }

    #[tokio::test]
    async fn a_failed_attempt_is_retried_with_the_next_request() {
        let store = Idempotency::new(Duration::from_secs(60), 10);
        let publisher = Counting::default();
        publisher.fail.store(true, Ordering::SeqCst);
        let (failed, _) = place(&store, "k", 1, &publisher).await;
        assert_eq!(failed.unwrap_err(), PublishError::Timeout);
        publisher.fail.store(false, Ordering::SeqCst);
        let (retried, source) = place(&store, "k", 1, &publisher).await;
        assert_eq!(source, Source::Published);
        assert_eq!(offset(&retried), 1);
        assert_eq!(publisher.calls(), 2);
    }

    #[tokio::test]
    async fn an_attempt_outlives_the_request_that_started_it() {
        let store = Arc::new(Idempotency::new(Duration::from_secs(60), 10));
        let publisher = Counting::default();
        let first = tokio::spawn({
            let (store, publisher) = (store.clone(), publisher.clone());
            async move {
                store
                    .place(
                        key("k"),
                        order(1),
                        publisher.publish(Duration::from_millis(50)),
                    )
                    .await
            }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        first.abort();
        let (answer, source) = place(&store, "k", 1, &publisher).await;
        assert_eq!(source, Source::Replayed);
        assert_eq!(offset(&answer), 0);
        assert_eq!(publisher.calls(), 1);
    }

    #[tokio::test]
    async fn the_store_is_bounded_and_forgets_the_oldest_first() {
        let store = Idempotency::new(Duration::from_secs(60), 2);
        let publisher = Counting::default();
        for k in ["a", "b", "c"] {
            let (outcome, _) = place(&store, k, 1, &publisher).await;
            assert!(outcome.is_ok());
        }
        assert_eq!(store.len(), 2);
        let (_, source) = place(&store, "a", 1, &publisher).await;
        assert_eq!(source, Source::Published, "the oldest key was forgotten");
        let (_, source) = place(&store, "c", 1, &publisher).await;
        assert_eq!(source, Source::Replayed);
    }

    #[tokio::test]
    async fn keys_expire_after_the_ttl() {
        let store = Idempotency::new(Duration::from_millis(30), 10);
        let publisher = Counting::default();
        let publish = || publisher.publish(Duration::ZERO);
        let (first, _) = store.place(key("k"), order(1), publish()).await.unwrap();
        assert!(first.is_ok());
        tokio::time::sleep(Duration::from_millis(60)).await;
        let (_, source) = store.place(key("k"), order(2), publish()).await.unwrap();
        assert_eq!(source, Source::Published);
        assert_eq!(store.len(), 1);
    }
}
