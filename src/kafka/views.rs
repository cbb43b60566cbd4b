//! The topic and group views, read with a consumer client that never joins the group.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};

use super::ClientSettings;
use crate::views::{
    ClusterViews, GroupPartitionView, GroupView, MemberView, PartitionView, TopicView, ViewError,
};

/// Longest one broker round trip of a view may take.
const TIMEOUT: Duration = Duration::from_secs(3);

/// Reads views of `topic` and `group`.
pub struct KafkaViews {
    /// Carries the tracker's group id so it may read the group's committed offsets; it
    /// never subscribes, so it never joins the group or disturbs its assignment.
    client: Arc<BaseConsumer>,
    topic: String,
    group: String,
}

impl KafkaViews {
    pub fn new(settings: &ClientSettings, topic: &str, group: &str) -> Result<Self, KafkaError> {
        let client = settings.viewer(group).create()?;
        Ok(Self {
            client: Arc::new(client),
            topic: topic.to_owned(),
            group: group.to_owned(),
        })
    }

    /// Runs a blocking librdkafka call off the runtime threads.
    fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&BaseConsumer, &str, &str) -> Result<T, KafkaError> + Send + 'static,
    ) -> BoxFuture<'static, Result<T, ViewError>> {
        let (client, topic, group) = (self.client.clone(), self.topic.clone(), self.group.clone());
        async move {
            tokio::task::spawn_blocking(move || f(&client, &topic, &group))
                .await
                .map_err(|e| ViewError(e.to_string()))?
                .map_err(|e| ViewError(e.to_string()))
        }
        .boxed()
    }
}

impl ClusterViews for KafkaViews {
    fn topic(&self) -> BoxFuture<'_, Result<TopicView, ViewError>> {
        self.blocking(|client, topic, _| read_topic(client, topic))
    }

    fn group(&self) -> BoxFuture<'_, Result<GroupView, ViewError>> {
        self.blocking(read_group)
    }
}

fn read_topic(client: &BaseConsumer, topic: &str) -> Result<TopicView, KafkaError> {
    let metadata = client.fetch_metadata(Some(topic), TIMEOUT)?;
    let mut partitions = Vec::new();
    if let Some(t) = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
    {
        for p in t.partitions() {
            let (low, high) = client.fetch_watermarks(topic, p.id(), TIMEOUT)?;
            partitions.push(PartitionView {
                partition: p.id(),
                leader: p.leader(),
                replicas: p.replicas().to_vec(),
                isr: p.isr().to_vec(),
                low_watermark: low,
                high_watermark: high,
            });
        }
    }
    partitions.sort_by_key(|p| p.partition);
    Ok(TopicView {
        topic: topic.to_owned(),
        partitions,
    })
}

fn read_group(client: &BaseConsumer, topic: &str, group: &str) -> Result<GroupView, KafkaError> {
    let view = read_topic(client, topic)?;
    let mut tpl = TopicPartitionList::new();
    for p in &view.partitions {
        tpl.add_partition(topic, p.partition);
    }
    let committed = client.committed_offsets(tpl, TIMEOUT)?;
    let committed: BTreeMap<i32, i64> = committed
        .elements_for_topic(topic)
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some((e.partition(), o)),
            _ => None,
        })
        .collect();
    let partitions: Vec<_> = view
        .partitions
        .iter()
        .map(|p| {
            let committed_offset = committed.get(&p.partition).copied();
            let from = committed_offset.unwrap_or(p.low_watermark);
            GroupPartitionView {
                partition: p.partition,
                committed_offset,
                high_watermark: p.high_watermark,
                lag: (p.high_watermark - from).max(0),
            }
        })
        .collect();

    let groups = client.fetch_group_list(Some(group), TIMEOUT)?;
    let info = groups.groups().iter().find(|g| g.name() == group);
    let members = info
        .map(|g| {
            g.members()
                .iter()
                .map(|m| MemberView {
                    member_id: m.id().to_owned(),
                    client_id: m.client_id().to_owned(),
                    client_host: m.client_host().to_owned(),
                    partitions: m
                        .assignment()
                        .map(|a| assigned(a, topic))
                        .unwrap_or_default(),
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(GroupView {
        group: group.to_owned(),
        state: info.map_or_else(|| "Unknown".to_owned(), |g| g.state().to_owned()),
        protocol: info.map(|g| g.protocol().to_owned()).unwrap_or_default(),
        members,
        total_lag: partitions.iter().map(|p| p.lag).sum(),
        partitions,
    })
}

/// Decodes a consumer-protocol member assignment (version, then `[topic, [partition]]`)
/// and returns the partitions of `topic`. Anything malformed reads as no partitions.
fn assigned(bytes: &[u8], topic: &str) -> Vec<i32> {
    let mut r = Reader(bytes);
    let mut partitions = Vec::new();
    let decoded = (|| {
        r.i16()?;
        for _ in 0..r.i32()? {
            let name_len = usize::try_from(r.i16()?).ok()?;
            let ours = r.take(name_len)? == topic.as_bytes();
            for _ in 0..r.i32()? {
                let p = r.i32()?;
                if ours {
                    partitions.push(p);
                }
            }
        }
        Some(())
    })();
    if decoded.is_none() {
        partitions.clear();
    }
    partitions.sort_unstable();
    partitions
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn i16(&mut self) -> Option<i16> {
        Some(i16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }

    fn i32(&mut self) -> Option<i32> {
        Some(i32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assignment(topics: &[(&str, &[i32])]) -> Vec<u8> {
        let mut b = 0i16.to_be_bytes().to_vec();
        b.extend((topics.len() as i32).to_be_bytes());
        for (name, parts) in topics {
            b.extend((name.len() as i16).to_be_bytes());
            b.extend(name.as_bytes());
            b.extend((parts.len() as i32).to_be_bytes());
            for p in *parts {
                b.extend(p.to_be_bytes());
            }
        }
        b.extend(0i32.to_be_bytes());
        b
    }

    #[test]
    fn member_assignments_decode_to_the_topics_partitions() {
        let bytes = assignment(&[("other", &[0]), ("orders", &[2, 0])]);
        assert_eq!(assigned(&bytes, "orders"), [0, 2]);
        assert_eq!(
            assigned(&bytes[..bytes.len() - 9], "orders"),
            Vec::<i32>::new(),
            "truncated"
        );
        assert!(assigned(&[], "orders").is_empty());
    }
}
