//! The Kafka producer behind `POST /orders`: one per process, acks=all, idempotent.

use std::sync::{Arc, OnceLock, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{ClientConfig, Timestamp};

use super::ClientSettings;
use super::watchdog::{ProduceWatch, RenewReason};
use crate::domain::Order;
use crate::domain::order::millis;
use crate::publisher::{PublishError, Publisher, Receipt};

/// Publishes orders to the orders topic, keyed by order id.
pub struct KafkaPublisher {
    /// Replaced, never mutated: a producer whose idempotence state the broker lost can
    /// never deliver again (see [`KafkaPublisher::renew`]).
    producer: RwLock<FutureProducer>,
    config: ClientConfig,
    topic: Arc<str>,
    timeout: Duration,
    metrics: OnceLock<ProduceMetrics>,
    /// Acks and timeouts, for the supervisor to tell a stuck producer (see `watchdog`).
    watchdog: ProduceWatch,
}

impl KafkaPublisher {
    /// Creates the producer; it connects lazily, so this succeeds while the broker is down.
    pub fn new(
        settings: &ClientSettings,
        topic: &str,
        timeout: Duration,
    ) -> Result<Self, KafkaError> {
        let config = settings.producer(timeout);
        let producer = RwLock::new(config.create()?);
        Ok(Self {
            producer,
            config,
            topic: topic.into(),
            timeout,
            metrics: OnceLock::new(),
            watchdog: ProduceWatch::new(timeout),
        })
    }

    /// The current producer (a cheap handle clone).
    fn producer(&self) -> FutureProducer {
        self.producer
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Starts over with a new producer. Needed when the broker lost our producer id (a
    /// broker without persistent storage restarted, or a fatal idempotence error):
    /// librdkafka would retry the old id until every order times out.
    pub fn renew(&self, reason: RenewReason, why: &str) {
        self.replace(None, reason, why);
    }

    /// The producer's ack and timeout counters.
    pub fn watchdog(&self) -> &ProduceWatch {
        &self.watchdog
    }

    /// Renews the producer unless `failed` was already replaced: the many orders that fail
    /// together on a dead producer must not each create a new one.
    fn replace(&self, failed: Option<&FutureProducer>, reason: RenewReason, why: &str) {
        let mut current = self
            .producer
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if failed.is_some_and(|f| f.client().native_ptr() != current.client().native_ptr()) {
            return;
        }
        match self.config.create::<FutureProducer>() {
            Ok(fresh) => {
                *current = fresh;
                // Orders still in flight on the old producer time out as before (503);
                // they are no evidence against the new one.
                self.watchdog.restart(std::time::Instant::now());
                metrics::counter!("orders_gateway_producer_renewals_total", "reason" => reason.as_str())
                    .increment(1);
                tracing::warn!(reason = reason.as_str(), why, "producer renewed");
            }
            Err(error) => tracing::error!(%error, why, "could not renew the producer"),
        }
    }

    /// Waits up to `timeout` for every queued order to be acknowledged (shutdown).
    pub async fn flush(&self, timeout: Duration) {
        let producer = self.producer();
        let flushed = tokio::task::spawn_blocking(move || producer.flush(timeout)).await;
        match flushed {
            Ok(Ok(())) => tracing::info!("producer flushed"),
            Ok(Err(e)) => tracing::warn!(error = %e, "producer flush incomplete"),
            Err(e) => tracing::warn!(error = %e, "producer flush task failed"),
        }
    }

    async fn send(
        &self,
        order: &Order,
        traceparent: Option<&str>,
    ) -> Result<Receipt, PublishError> {
        let mut key = uuid::Uuid::encode_buffer();
        let key = order.order_id.hyphenated().encode_lower(&mut key);
        let mut headers = OwnedHeaders::new().insert(Header {
            key: "content-type",
            value: Some("application/json"),
        });
        if let Some(traceparent) = traceparent {
            // W3C Trace Context for Kafka: consumers continue the caller's trace.
            headers = headers.insert(Header {
                key: "traceparent",
                value: Some(traceparent),
            });
        }
        let created = millis(order.accepted_at);
        let record = FutureRecord::to(&self.topic)
            .key(key.as_bytes())
            .payload(order.json())
            .headers(headers)
            .timestamp(created);
        // send_result never waits for queue space: a full queue is an immediate 503.
        let producer = self.producer();
        let delivery = producer
            .send_result(record)
            .map_err(|(e, _)| publish_error(&e))?;
        // librdkafka also gives up at message.timeout.ms, but checks that only about once a
        // second; this bound keeps the HTTP answer within PRODUCE_TIMEOUT.
        let acked = tokio::time::timeout(self.timeout, delivery)
            .await
            .map_err(|_| PublishError::Timeout)?
            .map_err(|_| PublishError::Unavailable("the producer was shut down".into()))?;
        match acked {
            Ok(d) => Ok(Receipt {
                topic: self.topic.clone(),
                partition: d.partition,
                offset: d.offset,
                timestamp: stored_timestamp(d.timestamp, created),
            }),
            Err((e, _)) => {
                if let Some((code, reason)) = producer.client().fatal_error() {
                    self.replace(
                        Some(&producer),
                        RenewReason::Fatal,
                        &format!("fatal producer error {code:?}: {reason}"),
                    );
                } else if identity_lost(&e) {
                    self.replace(
                        Some(&producer),
                        RenewReason::IdentityLost,
                        &format!("producer identity lost: {e}"),
                    );
                }
                Err(publish_error(&e))
            }
        }
    }
}

impl Publisher for KafkaPublisher {
    fn publish<'a>(
        &'a self,
        order: &'a Order,
        traceparent: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Receipt, PublishError>> {
        async move {
            let started = std::time::Instant::now();
            let result = self.send(order, traceparent).await;
            self.watchdog.record(&result, started);
            let outcome = match &result {
                Ok(_) => Outcome::Acked,
                Err(PublishError::QueueFull) => Outcome::QueueFull,
                Err(PublishError::Timeout) => Outcome::Timeout,
                Err(PublishError::Unavailable(_)) => Outcome::Unavailable,
            };
            let (duration, total) = self.metrics.get_or_init(ProduceMetrics::new).of(outcome);
            duration.record(started.elapsed().as_secs_f64());
            total.increment(1);
            result
        }
        .boxed()
    }
}

/// How a produce ended, as the `outcome` label says it.
#[derive(Debug, Clone, Copy)]
enum Outcome {
    Acked,
    QueueFull,
    Timeout,
    Unavailable,
}

/// The produce metrics by outcome, made once: building a labelled metric per order (key,
/// labels, registry lookup) is work the handles do once.
struct ProduceMetrics([(metrics::Histogram, metrics::Counter); 4]);

impl ProduceMetrics {
    fn new() -> Self {
        // Handles made before the recorder is installed would count nowhere.
        crate::telemetry::metrics();
        Self(["acked", "queue_full", "timeout", "unavailable"].map(|outcome| {
            (
                metrics::histogram!("orders_gateway_produce_duration_seconds", "outcome" => outcome),
                metrics::counter!("orders_gateway_produce_total", "outcome" => outcome),
            )
        }))
    }

    fn of(&self, outcome: Outcome) -> &(metrics::Histogram, metrics::Counter) {
        &self.0[outcome as usize]
    }
}

fn publish_error(e: &KafkaError) -> PublishError {
    match e.rdkafka_error_code() {
        Some(RDKafkaErrorCode::QueueFull) => PublishError::QueueFull,
        Some(RDKafkaErrorCode::MessageTimedOut) => PublishError::Timeout,
        _ => PublishError::Unavailable(e.to_string()),
    }
}

/// Errors after which this producer's id and epoch are no good: each later order would
/// fail the same way. Seen after a broker was unreachable long enough for in-flight orders
/// to time out: the epoch bump that follows can be refused as fenced.
fn identity_lost(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::ProducerFenced
                | RDKafkaErrorCode::InvalidProducerEpoch
                | RDKafkaErrorCode::UnknownProducerId
                | RDKafkaErrorCode::OutOfOrderSequenceNumber
                | RDKafkaErrorCode::InvalidProducerIdMapping
        )
    )
}

/// A topic with `message.timestamp.type=LogAppendTime` stores the broker's time; otherwise
/// the record keeps the creation time we set. A log-append time from before we created the
/// record beyond any clock skew is not real: librdkafka's mock cluster (the embedded
/// broker) always answers 1234 ms.
fn stored_timestamp(acked: Timestamp, created: i64) -> SystemTime {
    const MAX_SKEW_MS: i64 = 60 * 60 * 1000;
    let stored = match acked {
        Timestamp::LogAppendTime(at) if at >= created - MAX_SKEW_MS => acked,
        _ => Timestamp::CreateTime(created),
    };
    timestamp(stored).unwrap_or_else(SystemTime::now)
}

/// A Kafka timestamp as a point in time; `None` when the record carries none.
pub(crate) fn timestamp(t: Timestamp) -> Option<SystemTime> {
    let ms = u64::try_from(t.to_millis()?).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_millis(ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_full_and_timeouts_keep_their_meaning() {
        let full = KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull);
        assert_eq!(publish_error(&full), PublishError::QueueFull);
        let late = KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut);
        assert_eq!(publish_error(&late), PublishError::Timeout);
        let down = KafkaError::MessageProduction(RDKafkaErrorCode::AllBrokersDown);
        assert!(matches!(publish_error(&down), PublishError::Unavailable(_)));
    }

    #[test]
    fn only_identity_errors_renew_the_producer() {
        let fenced = KafkaError::MessageProduction(RDKafkaErrorCode::ProducerFenced);
        assert!(identity_lost(&fenced));
        let late = KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut);
        assert!(!identity_lost(&late));
    }

    #[test]
    fn a_log_append_time_is_used_unless_it_cannot_be_real() {
        let at = |ms: u64| SystemTime::UNIX_EPOCH + Duration::from_millis(ms);
        let created = 1_764_000_000_000;
        let later = Timestamp::LogAppendTime(created + 5);
        assert_eq!(stored_timestamp(later, created), at(1_764_000_000_005));
        let mock = Timestamp::LogAppendTime(1234);
        assert_eq!(stored_timestamp(mock, created), at(1_764_000_000_000));
        let echoed = Timestamp::CreateTime(7);
        assert_eq!(stored_timestamp(echoed, created), at(1_764_000_000_000));
    }

    #[test]
    fn kafka_timestamps_become_points_in_time() {
        let t = timestamp(Timestamp::CreateTime(1_500)).unwrap();
        assert_eq!(t, SystemTime::UNIX_EPOCH + Duration::from_millis(1_500));
        assert_eq!(timestamp(Timestamp::NotAvailable), None);
    }
}
