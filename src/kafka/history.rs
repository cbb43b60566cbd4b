//! The topic's history, read with short-lived consumers outside any group (assign + seek),
//! for stream clients that resume from further back than the hub remembers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::{Semaphore, mpsc};

use super::ClientSettings;
use super::producer::timestamp;
use crate::domain::{Position, TrackedOrder};
use crate::history::{History, HistoryError, Replayed};

/// Replays reading Kafka at once; more wait their turn, so a reconnect storm cannot open
/// thousands of consumers.
const CONCURRENT_REPLAYS: usize = 16;
/// Orders read ahead of a replaying client.
const REPLAY_BUFFER: usize = 512;
/// Longest one broker round trip of a replay may take.
const TIMEOUT: Duration = Duration::from_secs(5);
/// A replay that receives nothing for this long while records are still expected ends
/// with an error instead of holding the client forever.
const STALL: Duration = Duration::from_secs(10);

/// Reads history from the orders topic.
pub struct KafkaHistory {
    settings: ClientSettings,
    topic: String,
    slots: Arc<Semaphore>,
}

impl KafkaHistory {
    pub fn new(settings: &ClientSettings, topic: &str) -> Self {
        Self {
            settings: settings.clone(),
            topic: topic.to_owned(),
            slots: Arc::new(Semaphore::new(CONCURRENT_REPLAYS)),
        }
    }

    fn reader(&self) -> Result<BaseConsumer, KafkaError> {
        self.settings.replayer().create()
    }
}

impl History for KafkaHistory {
    fn position_at(&self, at: SystemTime) -> BoxFuture<'_, Result<Position, HistoryError>> {
        let reader = self.reader();
        let topic = self.topic.clone();
        async move {
            let reader = reader.map_err(|e| HistoryError(e.to_string()))?;
            tokio::task::spawn_blocking(move || position_at(&reader, &topic, at))
                .await
                .map_err(|e| HistoryError(e.to_string()))?
                .map_err(|e| HistoryError(e.to_string()))
        }
        .boxed()
    }

    fn replay(
        &self,
        from: Position,
        to: Position,
    ) -> mpsc::Receiver<Result<Replayed, HistoryError>> {
        let (tx, rx) = mpsc::channel(REPLAY_BUFFER);
        let reader = self.reader();
        let (topic, slots) = (self.topic.clone(), self.slots.clone());
        tokio::spawn(async move {
            let Ok(_slot) = slots.acquire_owned().await else {
                return;
            };
            let reader = match reader {
                Ok(reader) => reader,
                Err(e) => {
                    let _ = tx.send(Err(HistoryError(e.to_string()))).await;
                    return;
                }
            };
            let done = tokio::task::spawn_blocking(move || {
                if let Err(e) = replay(&reader, &topic, &from, &to, &tx) {
                    let _ = tx.blocking_send(Err(HistoryError(e.to_string())));
                }
            });
            let _ = done.await;
        });
        rx
    }
}

fn partitions(reader: &BaseConsumer, topic: &str) -> Result<Vec<i32>, KafkaError> {
    let metadata = reader.fetch_metadata(Some(topic), TIMEOUT)?;
    Ok(metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic)
        .flat_map(|t| {
            t.partitions()
                .iter()
                .map(rdkafka::metadata::MetadataPartition::id)
        })
        .collect())
}

fn position_at(reader: &BaseConsumer, topic: &str, at: SystemTime) -> Result<Position, KafkaError> {
    let ms = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let ms = i64::try_from(ms).unwrap_or(i64::MAX);
    let mut tpl = TopicPartitionList::new();
    for partition in partitions(reader, topic)? {
        tpl.add_partition_offset(topic, partition, Offset::Offset(ms))?;
    }
    let found = reader.offsets_for_times(tpl, TIMEOUT)?;
    let mut position = Position::default();
    for element in found.elements_for_topic(topic) {
        let partition = element.partition();
        match element.offset() {
            Offset::Offset(offset) => position.restart(partition, offset),
            // Nothing at or after `at` in this partition: start at its end.
            _ => position.restart(
                partition,
                reader.fetch_watermarks(topic, partition, TIMEOUT)?.1,
            ),
        }
    }
    Ok(position)
}

/// The timestamp (ms) of the record at `offset`, if the partition holds one there.
fn stamp_at(
    reader: &BaseConsumer,
    topic: &str,
    partition: i32,
    offset: i64,
) -> Result<Option<i64>, KafkaError> {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(offset))?;
    reader.assign(&tpl)?;
    let started = Instant::now();
    while started.elapsed() < TIMEOUT {
        match reader.poll(Duration::from_millis(100)) {
            Some(Ok(m)) if m.partition() == partition => {
                return Ok((m.offset() == offset)
                    .then(|| m.timestamp().to_millis())
                    .flatten());
            }
            Some(Err(e)) => return Err(e),
            _ => {}
        }
    }
    Ok(None)
}

/// Sends every record in `from..to`; blocks, so it runs on a blocking thread.
fn replay(
    reader: &BaseConsumer,
    topic: &str,
    from: &Position,
    to: &Position,
    tx: &mpsc::Sender<Result<Replayed, HistoryError>>,
) -> Result<(), KafkaError> {
    let send = |item: Replayed| tx.blocking_send(Ok(item)).is_ok();
    let mut tpl = TopicPartitionList::new();
    let mut remaining = BTreeMap::new();
    // Partitions the hub has not seen yet (`from` only) are checked too, up to their end:
    // a client's position there may belong to a topic that no longer exists.
    let mut ranges: BTreeMap<i32, Option<i64>> = to.iter().map(|(p, end)| (p, Some(end))).collect();
    for (partition, _) in from.iter() {
        ranges.entry(partition).or_insert(None);
    }
    for (partition, end) in ranges {
        let mut start = from.next_offset(partition).unwrap_or(0);
        let (low, high) = reader.fetch_watermarks(topic, partition, TIMEOUT)?;
        let end = end.unwrap_or(high);
        // The same offset on a recreated topic holds another record: compare stamps.
        let recreated = match from.stamp(partition) {
            Some(stamp) if start > low && start <= high => {
                stamp_at(reader, topic, partition, start - 1)? != Some(stamp)
            }
            _ => false,
        };
        // Older than the partition still holds (retention), or beyond its end (the topic
        // was recreated under the client): say so, and go on from what is there.
        if recreated || start < low || start > high.max(end) {
            if !send(Replayed::Gap {
                partition,
                from: start,
                to: low,
            }) {
                return Ok(());
            }
            start = low;
        }
        if start < end {
            tpl.add_partition_offset(topic, partition, Offset::Offset(start))?;
            remaining.insert(partition, end);
        }
    }
    if remaining.is_empty() {
        return Ok(());
    }
    reader.assign(&tpl)?;
    let mut last_progress = Instant::now();
    while !remaining.is_empty() {
        let Some(message) = reader.poll(Duration::from_millis(200)) else {
            if last_progress.elapsed() > STALL {
                return Err(KafkaError::Global(
                    rdkafka::types::RDKafkaErrorCode::OperationTimedOut,
                ));
            }
            continue;
        };
        let message = message?;
        last_progress = Instant::now();
        let (partition, offset) = (message.partition(), message.offset());
        let Some(&end) = remaining.get(&partition) else {
            continue;
        };
        if offset >= end {
            remaining.remove(&partition);
            continue;
        }
        let when = timestamp(message.timestamp()).unwrap_or_else(SystemTime::now);
        let item = match TrackedOrder::from_record(
            message.payload().unwrap_or_default(),
            partition,
            offset,
            when,
        ) {
            Ok(order) => Replayed::Order(order),
            Err(_) => Replayed::Skipped {
                partition,
                offset,
                stamp: crate::domain::order::millis(when),
            },
        };
        if !send(item) {
            return Ok(());
        }
        if offset + 1 >= end {
            remaining.remove(&partition);
        }
    }
    Ok(())
}
