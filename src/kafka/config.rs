//! librdkafka settings for each client, with the reason for every non-default value.

use std::time::Duration;

use rdkafka::ClientConfig;

use crate::config::Config;

/// What every Kafka client of the gateway shares.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    pub bootstrap_servers: String,
    /// User pass-through settings, applied last so they can tune our defaults.
    pub overrides: Vec<(String, String)>,
}

impl ClientSettings {
    pub fn new(bootstrap_servers: impl Into<String>, config: &Config) -> Self {
        Self {
            bootstrap_servers: bootstrap_servers.into(),
            overrides: config.kafka_config.clone(),
        }
    }

    fn base(&self, client_id: &str) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap_servers)
            .set("client.id", client_id)
            // The gateway creates the topic with the configured partition count; a broker
            // auto-creating it on first metadata request would pick its own default.
            .set("allow.auto.create.topics", "false")
            // librdkafka's own log lines go through our tracing subscriber.
            .set_log_level(rdkafka::config::RDKafkaLogLevel::Warning);
        c
    }

    fn finish(&self, mut c: ClientConfig) -> ClientConfig {
        for (key, value) in &self.overrides {
            c.set(key, value);
        }
        c
    }

    /// The one long-lived producer behind `POST /orders`.
    pub(crate) fn producer(&self, produce_timeout: Duration) -> ClientConfig {
        let mut c = self.base("orders-gateway-producer");
        // A 2xx means the record is on every in-sync replica, and retries never duplicate
        // or reorder it.
        c.set("acks", "all")
            .set("enable.idempotence", "true")
            // Give up on a record when the HTTP caller stops waiting, so a 503 is not
            // followed by a late write long after the client was told it failed.
            .set("message.timeout.ms", millis(produce_timeout))
            // Idle: a lone order waits at most 1 ms; under load batches fill up while the
            // partition's batch in flight is acknowledged. Measured against 5 ms
            // (librdkafka's default), same-run A/B at c=256: 53.5 vs 55.4 and 51.7 vs 49.5
            // us of gateway CPU per order, i.e. no difference, while 1 ms gives a lone order
            // p50 1.9 ms instead of 4.7-5.0 ms at 1,000/s. (5 ms used to save ~20% CPU only
            // because librdkafka's broker thread spun while waiting; patched, see
            // vendor/README.md.)
            .set("linger.ms", "1")
            // Bounded queue: beyond it POSTs get 503 at once instead of piling up memory.
            .set("queue.buffering.max.messages", "100000")
            // Find a lost broker again quickly once it is back.
            .set("reconnect.backoff.max.ms", "1000");
        self.finish(c)
    }

    /// The tracker's member of the `order-tracker` group: it only holds partitions and
    /// commits the hub's progress for them; the feed does the reading.
    pub(crate) fn tracker(&self, group_id: &str) -> ClientConfig {
        let mut c = self.base("orders-gateway-tracker");
        c.set("group.id", group_id)
            // Commits are explicit: the hub's position, after the hub took each order.
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            // A group join takes about session.timeout.ms / 2. 6 s is the smallest session
            // Kafka accepts by default (group.min.session.timeout.ms) and joins in ~3 s
            // instead of ~23 s with librdkafka's 45 s default.
            .set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", "1000")
            .set("reconnect.backoff.max.ms", "1000");
        self.finish(c)
    }

    /// The tracker's feed: reads every partition by assignment. It carries the group id only
    /// to read the group's committed offsets as its start; it never joins or commits.
    pub(crate) fn feed(&self, group_id: &str) -> ClientConfig {
        let mut c = self.base("orders-gateway-feed");
        c.set("group.id", group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            // The original tracker.py read the topic from the beginning for a new group.
            .set("auto.offset.reset", "earliest")
            // Tansu answers a fetch only at this deadline when there is less than
            // fetch.min.bytes to send, so at librdkafka's 500 ms it was most of the stream's
            // latency (e2e p99 380 ms at 10,000 streams x 100/s). 100 ms helps 1,000 streams
            // more but leaves 10,000 bound by the gateway's CPU (bench/README.md); shorter
            // waits also met a librdkafka crash after broker restarts, patched since
            // (vendor/README.md). One extra fetch per partition every 200 ms is nothing to a
            // real cluster.
            .set("fetch.wait.max.ms", "200")
            .set("reconnect.backoff.max.ms", "1000");
        self.finish(c)
    }

    /// The client behind the topic and group views: it carries the group id only to read
    /// the group's committed offsets.
    pub(crate) fn viewer(&self, group_id: &str) -> ClientConfig {
        let mut c = self.base("orders-gateway-viewer");
        c.set("group.id", group_id)
            .set("enable.auto.commit", "false");
        self.finish(c)
    }

    /// Short-lived readers of the topic's history: assigned, never in a group, never
    /// committing.
    pub(crate) fn replayer(&self) -> ClientConfig {
        let mut c = self.base("orders-gateway-replay");
        c.set("group.id", "orders-gateway-replay")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            // Ranges are checked against the watermarks before reading; a reset mid-replay
            // moves to what is still there.
            .set("auto.offset.reset", "earliest")
            // A replay reads records that exist; waiting for more only stalls it (on Tansu
            // the first fetch took the whole 500 ms default: a resuming client's first
            // event came after half a second).
            .set("fetch.wait.max.ms", "10");
        self.finish(c)
    }

    /// The admin client that checks and creates the topic.
    pub(crate) fn admin(&self) -> ClientConfig {
        let c = self.base("orders-gateway-admin");
        self.finish(c)
    }
}

fn millis(d: Duration) -> String {
    d.as_millis().to_string()
}
