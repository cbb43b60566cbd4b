//! The tracker: a consumer in group `order-tracker` that hands every order it reads to the
//! hub and commits only what the hub has taken (at-least-once).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rdkafka::ClientContext;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::topic_partition_list::TopicPartitionList;
use tokio_util::sync::CancellationToken;

use super::ClientSettings;
use super::producer::timestamp;
use crate::domain::TrackedOrder;
use crate::hub::Hub;
use crate::readiness::Readiness;

/// Logs rebalances and commits, and tells readiness whether the tracker holds partitions.
pub struct TrackerContext {
    readiness: Arc<Readiness>,
}

impl ClientContext for TrackerContext {
    fn error(&self, error: KafkaError, reason: &str) {
        // Broker outages surface here on every reconnect attempt; readiness reports them.
        tracing::warn!(%error, reason, "tracker: Kafka client error");
    }
}

impl ConsumerContext for TrackerContext {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                metrics::counter!("orders_gateway_tracker_rebalances_total", "kind" => "assign")
                    .increment(1);
                tracing::info!(partitions = %partitions(tpl), "tracker: partitions assigned");
                self.readiness.set_tracker(tpl.count() > 0);
            }
            Rebalance::Revoke(tpl) => {
                metrics::counter!("orders_gateway_tracker_rebalances_total", "kind" => "revoke")
                    .increment(1);
                tracing::info!(partitions = %partitions(tpl), "tracker: partitions revoked");
                self.readiness.set_tracker(false);
            }
            Rebalance::Error(error) => {
                metrics::counter!("orders_gateway_tracker_rebalances_total", "kind" => "error")
                    .increment(1);
                tracing::warn!(%error, "tracker: rebalance failed");
            }
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        match result {
            Ok(()) => tracing::debug!(offsets = %partitions(offsets), "tracker: committed"),
            // Nothing new to commit since the last time: not a problem.
            Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(error) => tracing::warn!(%error, "tracker: commit failed"),
        }
    }
}

fn partitions(tpl: &TopicPartitionList) -> String {
    let parts: Vec<_> = tpl
        .elements()
        .iter()
        .map(|e| match e.offset().to_raw() {
            Some(offset) if offset >= 0 => format!("{}:{offset}", e.partition()),
            _ => e.partition().to_string(),
        })
        .collect();
    parts.join(",")
}

/// The tracker's consumer, created before it runs so configuration errors stop start-up.
pub struct Tracker {
    /// Shared with the blocking lag probe.
    consumer: Arc<StreamConsumer<TrackerContext>>,
    topic: String,
}

/// How often consumer lag is measured for /metrics.
const LAG_INTERVAL: Duration = Duration::from_secs(5);
/// Longest a lag probe may block on the broker.
const LAG_TIMEOUT: Duration = Duration::from_secs(2);

impl Tracker {
    pub fn new(
        settings: &ClientSettings,
        topic: &str,
        group_id: &str,
        readiness: Arc<Readiness>,
    ) -> Result<Self, KafkaError> {
        let consumer = settings
            .tracker(group_id)
            .create_with_context(TrackerContext { readiness })?;
        Ok(Self {
            consumer: Arc::new(consumer),
            topic: topic.to_owned(),
        })
    }

    /// Feeds the hub until `cancel`, then commits what the hub has taken.
    pub async fn run(self, hub: Arc<Hub>, cancel: CancellationToken) -> Result<(), KafkaError> {
        self.consumer.subscribe(&[&self.topic])?;
        tracing::info!(topic = %self.topic, "tracker: subscribed");
        let mut lag_timer = tokio::time::interval(LAG_INTERVAL);
        loop {
            let message = tokio::select! {
                () = cancel.cancelled() => break,
                _ = lag_timer.tick() => {
                    self.record_lag();
                    continue;
                }
                message = self.consumer.recv() => message,
            };
            match message {
                Ok(message) => self.handle(&message, &hub),
                Err(error) => {
                    tracing::warn!(%error, "tracker: receive failed");
                    // Errors come back at once while the broker is away; don't spin on them.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        self.close().await;
        Ok(())
    }

    fn handle(&self, message: &BorrowedMessage<'_>, hub: &Hub) {
        let (partition, offset) = (message.partition(), message.offset());
        let when = timestamp(message.timestamp()).unwrap_or_else(SystemTime::now);
        match TrackedOrder::from_record(
            message.payload().unwrap_or_default(),
            partition,
            offset,
            when,
        ) {
            Ok(order) => {
                metrics::counter!("orders_gateway_tracker_records_total").increment(1);
                if !hub.publish(order) {
                    tracing::debug!(partition, offset, "tracker: skipped a redelivered record");
                }
            }
            Err(error) => {
                metrics::counter!("orders_gateway_tracker_poison_records_total").increment(1);
                tracing::warn!(partition, offset, %error, "tracker: skipped a record that is not an order");
            }
        }
        // The hub has the order (or it was skipped as poison): only now may it be committed.
        if let Err(error) = self.consumer.store_offset_from_message(message) {
            tracing::warn!(partition, offset, %error, "tracker: could not store offset");
        }
    }

    /// Publishes `orders_gateway_tracker_lag{partition}`: high watermark minus committed
    /// offset, per assigned partition. Runs in the background: both lookups block.
    fn record_lag(&self) {
        let consumer = self.consumer.clone();
        let topic = self.topic.clone();
        tokio::task::spawn_blocking(move || {
            let Ok(committed) = consumer.committed(LAG_TIMEOUT) else {
                return;
            };
            for element in committed.elements_for_topic(&topic) {
                let partition = element.partition();
                let Ok((_, high)) = consumer.fetch_watermarks(&topic, partition, LAG_TIMEOUT)
                else {
                    continue;
                };
                // Nothing committed yet: the whole partition is still to be tracked.
                let committed = element.offset().to_raw().filter(|o| *o >= 0).unwrap_or(0);
                let lag = (high - committed).max(0);
                metrics::gauge!("orders_gateway_tracker_lag", "partition" => partition.to_string())
                    .set(lag as f64);
            }
        });
    }

    /// Commits stored offsets and leaves the group; both block, so off the runtime threads.
    async fn close(self) {
        let consumer = self.consumer;
        let closed = tokio::task::spawn_blocking(move || {
            match consumer.commit_consumer_state(CommitMode::Sync) {
                Ok(()) => tracing::info!("tracker: committed on shutdown"),
                Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
                Err(error) => tracing::warn!(%error, "tracker: commit on shutdown failed"),
            }
            consumer.unsubscribe();
        })
        .await;
        if let Err(error) = closed {
            tracing::warn!(%error, "tracker: close task failed");
        }
    }
}
