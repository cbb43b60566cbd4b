//! The tracker. Two consumers with one job each:
//!
//! - the *feed* reads every partition of the topic (assigned, not subscribed) and hands
//!   each order to the hub, so every gateway replica streams every order;
//! - the *member* belongs to the group `order-tracker`. It never fetches (its partitions
//!   stay paused); it commits, for the partitions the group gave it, how far this replica's
//!   hub has got. Operators see the group's progress and lag as before, replicas share the
//!   partitions, and a restarted replica's feed starts from the group's committed offsets
//!   (at-least-once: committed only after the hub took the order).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use futures_util::FutureExt;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::topic_partition_list::{TopicPartitionList, TopicPartitionListElem};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientConfig, ClientContext, Offset};
use tokio_util::sync::CancellationToken;

use super::ClientSettings;
use super::producer::timestamp;
use crate::domain::TrackedOrder;
use crate::hub::Hub;
use crate::readiness::Readiness;

/// How often the member commits the hub's progress and measures lag.
const COMMIT_INTERVAL: Duration = Duration::from_secs(1);
const LAG_INTERVAL: Duration = Duration::from_secs(5);
/// Longest one blocking broker call of the tracker may take.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Logs client errors; for the member also rebalances and commits.
pub struct TrackerContext {
    readiness: Arc<Readiness>,
    role: &'static str,
    /// The partitions the group gave this member.
    owned: Mutex<Vec<i32>>,
}

impl TrackerContext {
    fn new(readiness: Arc<Readiness>, role: &'static str) -> Self {
        Self {
            readiness,
            role,
            owned: Mutex::new(Vec::new()),
        }
    }

    fn owned(&self) -> Vec<i32> {
        self.owned
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set_owned(&self, partitions: Vec<i32>) {
        *self.owned.lock().unwrap_or_else(PoisonError::into_inner) = partitions;
    }
}

impl ClientContext for TrackerContext {
    fn error(&self, error: KafkaError, reason: &str) {
        // The first sign of an outage, seconds before the supervisor's next probe: the
        // feed is closed at once (see `Tracker::follow_broker`).
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
            self.readiness.set_broker(false);
        }
        tracing::warn!(%error, reason, role = self.role, "tracker: Kafka client error");
    }
}

impl ConsumerContext for TrackerContext {
    /// The member takes part in the group but never fetches: it remembers the partitions the
    /// group gave it and acknowledges the assignment with an empty local one: the feed
    /// reads every partition anyway, and it alone follows broker outages (see
    /// `Tracker::follow_broker`).
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let (kind, result) = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                tracing::info!(partitions = %partitions(tpl), "tracker: group assigned partitions");
                self.set_owned(
                    tpl.elements()
                        .iter()
                        .map(TopicPartitionListElem::partition)
                        .collect(),
                );
                ("assign", consumer.assign(&TopicPartitionList::new()))
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                tracing::info!(partitions = %partitions(tpl), "tracker: group revoked partitions");
                self.set_owned(Vec::new());
                ("revoke", consumer.unassign())
            }
            other => {
                let error = KafkaError::Rebalance(other.into());
                tracing::warn!(%error, "tracker: rebalance failed");
                ("error", Ok(()))
            }
        };
        metrics::counter!("orders_gateway_tracker_rebalances_total", "kind" => kind).increment(1);
        if let Err(error) = result {
            tracing::warn!(%error, kind, "tracker: could not apply the rebalance");
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        match result {
            Ok(()) => tracing::debug!(offsets = %partitions(offsets), "tracker: committed"),
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

type Client = StreamConsumer<TrackerContext>;

/// The tracker's consumers, created before they run so configuration errors stop start-up.
pub struct Tracker {
    /// `None` while the broker or the topic is away (see `follow_broker`).
    feed: Option<Arc<Client>>,
    member: Arc<Client>,
    /// To build the feed again after an outage or a recreated topic.
    feed_config: ClientConfig,
    topic: String,
    readiness: Arc<Readiness>,
}

impl Tracker {
    pub fn new(
        settings: &ClientSettings,
        topic: &str,
        group_id: &str,
        readiness: Arc<Readiness>,
    ) -> Result<Self, KafkaError> {
        let feed_config = settings.feed(group_id);
        let context = |role| TrackerContext::new(readiness.clone(), role);
        let feed = Arc::new(feed_config.create_with_context(context("feed"))?);
        let member = Arc::new(
            settings
                .tracker(group_id)
                .create_with_context(context("member"))?,
        );
        Ok(Self {
            feed: Some(feed),
            member,
            feed_config,
            topic: topic.to_owned(),
            readiness,
        })
    }

    /// Feeds the hub until `cancel`, committing its progress for the group all along and
    /// once more at the end.
    pub async fn run(mut self, hub: Arc<Hub>, cancel: CancellationToken) -> Result<(), KafkaError> {
        self.member.subscribe(&[&self.topic])?;
        if let Some(feed) = &self.feed {
            assign_all(feed, &self.topic, &hub, &self.readiness).await?;
        }
        let mut commit_timer = tokio::time::interval(COMMIT_INTERVAL);
        let mut lag_timer = tokio::time::interval(LAG_INTERVAL);
        let mut checks = self.readiness.watch();
        let mut generation = checks.borrow().topic_generation;
        loop {
            let message = tokio::select! {
                () = cancel.cancelled() => break,
                _ = commit_timer.tick() => {
                    self.commit(&hub, CommitMode::Async).await;
                    continue;
                }
                _ = lag_timer.tick() => {
                    self.record_lag();
                    continue;
                }
                // Serves the member's group protocol; it never yields records (it fetches nothing).
                _ = self.member.recv() => continue,
                Ok(()) = checks.changed() => {
                    let now = *checks.borrow_and_update();
                    let recreated = now.topic_generation != generation;
                    generation = now.topic_generation;
                    self.follow_broker(now.broker && now.topic, recreated, &hub).await?;
                    continue;
                }
                message = next(self.feed.as_deref()) => message,
            };
            let received = message.and_then(|message| {
                handle(&message, &hub);
                drain(self.feed.as_deref(), &hub)
            });
            if let Err(error) = received {
                tracing::warn!(%error, "tracker: receive failed");
                // Errors come back at once while the broker is away; don't spin on them.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        self.commit(&hub, CommitMode::Sync).await;
        self.close().await;
        Ok(())
    }

    /// Keeps a feed only while the broker is reachable and the topic confirmed: closes it
    /// on the first outage signal, builds a new one once both are back (or the topic was
    /// recreated).
    ///
    /// Why: a broker that lost its state (Tansu without persistent storage, after a
    /// restart) answers the first fetches with leader hints that carry neither topic name
    /// nor id. Stock librdkafka 2.12 dereferenced the missing name and crashed; ours is
    /// patched (vendor/README.md), and a new feed still starts cleaner: with a metadata
    /// request for a topic the supervisor has just seen, and a check that the topic was
    /// not recreated behind the stream's position. Kafka itself always sends topic ids, so
    /// there this only costs a new consumer per outage.
    async fn follow_broker(
        &mut self,
        usable: bool,
        recreated: bool,
        hub: &Hub,
    ) -> Result<(), KafkaError> {
        if (!usable || recreated)
            && let Some(old) = self.feed.take()
        {
            // Closing blocks until librdkafka's threads have stopped.
            tokio::task::spawn_blocking(move || drop(old));
            tracing::info!("tracker: feed closed until the broker and topic are back");
        }
        if usable && self.feed.is_none() {
            let fresh: Arc<Client> = Arc::new(
                self.feed_config
                    .create_with_context(TrackerContext::new(self.readiness.clone(), "feed"))?,
            );
            assign_all(&fresh, &self.topic, hub, &self.readiness).await?;
            self.feed = Some(fresh);
            metrics::counter!("orders_gateway_tracker_feed_restarts_total").increment(1);
            tracing::info!("tracker: feed started again");
        }
        Ok(())
    }

    /// Commits, for the partitions the group gave this replica, the hub's position: every
    /// order before it was handed to the hub.
    async fn commit(&self, hub: &Hub, mode: CommitMode) {
        let (member, topic) = (self.member.clone(), self.topic.clone());
        let position = hub.position();
        let committed = tokio::task::spawn_blocking(move || {
            let mut tpl = TopicPartitionList::new();
            for partition in member.context().owned() {
                if let Some(next) = position.next_offset(partition) {
                    tpl.add_partition_offset(&topic, partition, Offset::Offset(next))?;
                }
            }
            if tpl.count() == 0 {
                return Ok(());
            }
            member.commit(&tpl, mode)
        })
        .await;
        match committed {
            Ok(Ok(())) if matches!(mode, CommitMode::Sync) => {
                tracing::info!("tracker: committed on shutdown");
            }
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, "tracker: commit failed"),
            Err(error) => tracing::warn!(%error, "tracker: commit task failed"),
        }
    }

    /// Publishes `orders_gateway_tracker_lag{partition}`: high watermark minus the group's
    /// committed offset, for this replica's partitions. Runs in the background: it blocks.
    fn record_lag(&self) {
        let (member, topic) = (self.member.clone(), self.topic.clone());
        tokio::task::spawn_blocking(move || {
            let mut owned = TopicPartitionList::new();
            for partition in member.context().owned() {
                owned.add_partition(&topic, partition);
            }
            let Ok(committed) = member.committed_offsets(owned, TIMEOUT) else {
                return;
            };
            for element in committed.elements_for_topic(&topic) {
                let partition = element.partition();
                let Ok((_, high)) = member.fetch_watermarks(&topic, partition, TIMEOUT) else {
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

    /// Leaves the group and closes both consumers; both block, so off the runtime threads.
    async fn close(self) {
        let (member, feed) = (self.member, self.feed);
        let closed = tokio::task::spawn_blocking(move || {
            member.unsubscribe();
            drop(member);
            drop(feed);
        })
        .await;
        if let Err(error) = closed {
            tracing::warn!(%error, "tracker: close task failed");
        }
    }
}

/// The feed's next record; never, while there is no feed.
async fn next(feed: Option<&Client>) -> KafkaResult<BorrowedMessage<'_>> {
    match feed {
        Some(feed) => feed.recv().await,
        None => std::future::pending().await,
    }
}

/// At most this many records are handled in one go before the tracker's other duties
/// (commits, lag, the member's group protocol, shutdown) get a look.
const DRAIN_AT_MOST: usize = 512;

/// Handles the records the feed already holds without another trip through the tracker's
/// `select!`, which polls two timers, the member's queue, the readiness watch and the
/// cancel token for every record it passes on. A receive error ends the run and goes to
/// the caller, which reports it and backs off as for any other.
fn drain(feed: Option<&Client>, hub: &Hub) -> KafkaResult<()> {
    let Some(feed) = feed else { return Ok(()) };
    for _ in 0..DRAIN_AT_MOST {
        match feed.recv().now_or_never() {
            Some(message) => handle(&message?, hub),
            None => break,
        }
    }
    Ok(())
}

/// Assigns the feed every partition, each at the group's committed offset (the start for a
/// new group, like `tracker.py`'s `auto.offset.reset=earliest`).
///
/// A partition that ends before the hub's position is a new topic under the old name:
/// another replica recreated it while this one could not see the broker (the supervisor
/// only notices a recreation it does itself). The stream starts over then, as on a
/// recreation seen here, or the hub would skip the new topic's first records as already
/// published.
async fn assign_all(
    feed: &Arc<Client>,
    topic: &str,
    hub: &Hub,
    readiness: &Readiness,
) -> Result<(), KafkaError> {
    let (feed, topic) = (feed.clone(), topic.to_owned());
    let position = hub.position();
    let (assigned, recreated) = tokio::task::spawn_blocking(move || {
        let metadata = feed.fetch_metadata(Some(&topic), TIMEOUT)?;
        let mut tpl = TopicPartitionList::new();
        let mut recreated = false;
        for t in metadata.topics().iter().filter(|t| t.name() == topic) {
            for p in t.partitions() {
                tpl.add_partition(&topic, p.id());
                if let Some(next) = position.next_offset(p.id()) {
                    let (_, high) = feed.fetch_watermarks(&topic, p.id(), TIMEOUT)?;
                    recreated |= high < next;
                }
            }
        }
        let mut start = feed.committed_offsets(tpl, TIMEOUT)?;
        let parts: Vec<i32> = start
            .elements()
            .iter()
            .map(TopicPartitionListElem::partition)
            .collect();
        for partition in parts {
            let committed = start.find_partition(&topic, partition).map(|e| e.offset());
            if recreated || !matches!(committed, Some(Offset::Offset(_))) {
                start.set_partition_offset(&topic, partition, Offset::Beginning)?;
            }
        }
        feed.assign(&start)?;
        Ok::<_, KafkaError>((start, recreated))
    })
    .await
    .map_err(|e| KafkaError::Subscription(e.to_string()))??;
    if recreated {
        tracing::warn!(
            "tracker: the topic ends before the stream's position, so it was recreated \
             elsewhere; stream positions restart"
        );
        hub.reset();
    }
    tracing::info!(partitions = %partitions(&assigned), "tracker: feed reads every partition");
    readiness.set_tracker(assigned.count() > 0);
    Ok(())
}

fn handle(message: &BorrowedMessage<'_>, hub: &Hub) {
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
            // Poison records pass too: the hub's position, which the member commits, must
            // move past them.
            hub.pass(partition, offset, crate::domain::order::millis(when));
        }
    }
}
