//! Independent Kafka clients: they check what the gateway wrote and write behind its back.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

/// Reads the record at `partition`/`offset` with a consumer outside any group.
pub fn read_record(bootstrap: &str, topic: &str, partition: i32, offset: i64) -> OwnedMessage {
    let consumer = reader(bootstrap);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(offset))
        .expect("add partition");
    consumer.assign(&tpl).expect("assign");
    let message =
        poll_one(&consumer, Duration::from_secs(10)).expect("record at the acknowledged offset");
    assert_eq!((message.partition(), message.offset()), (partition, offset));
    message
}

/// Reads every record of `partitions` partitions of `topic` until `expected` arrived.
pub fn read_all(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    expected: usize,
) -> Vec<OwnedMessage> {
    let consumer = reader(bootstrap);
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .expect("add partition");
    }
    consumer.assign(&tpl).expect("assign");
    let mut records = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while records.len() < expected && std::time::Instant::now() < deadline {
        if let Some(m) = poll_one(&consumer, Duration::from_millis(500)) {
            records.push(m);
        }
    }
    // Anything beyond `expected` would be a duplicate: give it a moment to show up.
    while let Some(m) = poll_one(&consumer, Duration::from_millis(500)) {
        records.push(m);
    }
    records
}

fn reader(bootstrap: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", super::unique("reader"))
        .set("enable.auto.commit", "false")
        .create()
        .expect("reader consumer")
}

fn poll_one(consumer: &BaseConsumer, timeout: Duration) -> Option<OwnedMessage> {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => return Some(m.detach()),
            Some(Err(e)) => panic!("read failed: {e}"),
            None => {}
        }
    }
    None
}

/// The value of header `key`, as text.
pub fn header(message: &OwnedMessage, key: &str) -> Option<String> {
    let headers = message.headers()?;
    headers
        .iter()
        .find(|h| h.key == key)
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// Produces a raw record as another Kafka client would (the original producer.py).
pub async fn produce_raw(bootstrap: &str, topic: &str, key: &str, value: &[u8]) -> (i32, i64) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("producer");
    let record = FutureRecord::to(topic).key(key).payload(value);
    let delivery = producer
        .send(record, Duration::from_secs(10))
        .await
        .expect("delivered");
    (delivery.partition, delivery.offset)
}

/// Creates `topic` as another gateway replica would (the gateway's own settings: no
/// auto-creation, `partitions` partitions, replication 1).
pub async fn create_topic(bootstrap: &str, topic: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin client");
    let new_topic = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(5)));
    let results = admin
        .create_topics([&new_topic], &options)
        .await
        .expect("create topics");
    for result in results {
        result.expect("topic created");
    }
}

/// Produces `value` to `partition` of `topic`, as another producer would.
pub async fn produce_to(bootstrap: &str, topic: &str, partition: i32, key: &str, value: &[u8]) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("producer");
    let record = FutureRecord::to(topic)
        .partition(partition)
        .key(key)
        .payload(value);
    producer
        .send(record, Duration::from_secs(10))
        .await
        .expect("delivered");
}

/// The group's committed offsets, summed over the topic's partitions.
pub fn committed_total(bootstrap: &str, group: &str, topic: &str, partitions: i32) -> i64 {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .create()
        .expect("group reader");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let committed = consumer
        .committed_offsets(tpl, Duration::from_secs(5))
        .expect("committed offsets");
    committed
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some(o),
            _ => None,
        })
        .sum()
}
