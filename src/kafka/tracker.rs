//! The tracker: a consumer in group `order-tracker` that hands every order it reads to the
//! hub and commits only what the hub has taken (at-least-once).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::topic_partition_list::TopicPartitionList;
use rdkafka::{ClientConfig, ClientContext};
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
        // The first sign of an outage, seconds before the supervisor's next probe: the
        // tracker pauses at once (see `Tracker::follow_broker`).
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
            self.readiness.set_broker(false);
        }
        tracing::warn!(%error, reason, "tracker: Kafka client error");
    }
}

impl ConsumerContext for TrackerContext {
    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                metrics::counter!("orders_gateway_tracker_rebalances_total", "kind" => "assign")
                    .increment(1);
                tracing::info!(partitions = %partitions(tpl), "tracker: partitions assigned");
                let checks = self.readiness.checks();
                if !(checks.broker && checks.topic) {
                    // Assigned while the topic is not confirmed: wait like the rest.
                    if let Err(error) = consumer.pause(tpl) {
                        tracing::warn!(%error, "tracker: could not pause new partitions");
                    }
                }
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
    /// To build a new consumer after the topic was recreated.
    config: ClientConfig,
    topic: String,
    readiness: Arc<Readiness>,
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
        let config = settings.tracker(group_id);
        let consumer = Arc::new(config.create_with_context(TrackerContext {
            readiness: readiness.clone(),
        })?);
        Ok(Self {
            consumer,
            config,
            topic: topic.to_owned(),
            readiness,
        })
    }

    /// Starts over with a new consumer, for a topic that was created again: the old one
    /// holds fetch positions and leader state of a topic that no longer exists, and a
    /// broker that lost everything answers its fetches with leader hints that librdkafka
    /// 2.12 mishandles (see `follow_broker`). The old consumer leaves the group and closes
    /// completely first, so the group does not wait for it to rejoin.
    async fn renew(&mut self) -> Result<(), KafkaError> {
        let fresh: StreamConsumer<TrackerContext> =
            self.config.create_with_context(TrackerContext {
                readiness: self.readiness.clone(),
            })?;
        let old = std::mem::replace(&mut self.consumer, Arc::new(fresh));
        let closed = tokio::task::spawn_blocking(move || {
            old.unsubscribe();
            drop(old);
        })
        .await;
        if let Err(error) = closed {
            tracing::warn!(%error, "tracker: closing the old consumer failed");
        }
        self.consumer.subscribe(&[&self.topic])?;
        tracing::warn!(topic = %self.topic, "tracker: renewed for the recreated topic");
        Ok(())
    }

    /// Feeds the hub until `cancel`, then commits what the hub has taken.
    pub async fn run(mut self, hub: Arc<Hub>, cancel: CancellationToken) -> Result<(), KafkaError> {
        self.consumer.subscribe(&[&self.topic])?;
        tracing::info!(topic = %self.topic, "tracker: subscribed");
        let mut lag_timer = tokio::time::interval(LAG_INTERVAL);
        let mut checks = self.readiness.watch();
        let mut generation = checks.borrow().topic_generation;
        let mut paused = false;
        loop {
            let message = tokio::select! {
                () = cancel.cancelled() => break,
                _ = lag_timer.tick() => {
                    self.record_lag();
                    continue;
                }
                Ok(()) = checks.changed() => {
                    let now = *checks.borrow_and_update();
                    if now.topic_generation != generation {
                        generation = now.topic_generation;
                        self.renew().await?;
                        paused = false;
                    }
                    paused = self.follow_broker(now.broker && now.topic, paused);
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

    /// Fetches only while the broker is reachable and the topic confirmed; returns whether
    /// the tracker is paused now.
    ///
    /// Why: a broker that lost its state (Tansu without persistent storage, after a
    /// restart) answers the first fetches with leader hints that carry neither topic name
    /// nor id, and librdkafka 2.12 dereferences the missing name and crashes (upstream
    /// issue 5280). Pausing on the first outage signal and resuming once the supervisor has
    /// seen (or recreated) the topic keeps the tracker away from that window. Kafka itself
    /// always sends topic ids, so this only costs an idle pause there.
    fn follow_broker(&self, usable: bool, paused: bool) -> bool {
        if usable != paused {
            return paused;
        }
        let Ok(assignment) = self.consumer.assignment() else {
            return paused;
        };
        let result = if usable {
            self.consumer.resume(&assignment)
        } else {
            self.consumer.pause(&assignment)
        };
        match result {
            Ok(()) => {
                tracing::info!(
                    usable,
                    "tracker: {}",
                    if usable {
                        "resumed"
                    } else {
                        "paused until the broker and topic are back"
                    }
                );
                !usable
            }
            Err(error) => {
                tracing::warn!(%error, "tracker: pause/resume failed");
                paused
            }
        }
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
