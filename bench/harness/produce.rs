//! The produce path: POST /orders at fixed concurrencies and at a fixed rate, beside its two
//! limits measured in the same run (GET /healthz, and a raw rdkafka producer with the
//! gateway's settings), and the read-back that proves every counted 202 is on the topic.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use hyper::Method;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{Value, json};

use super::Res;
use super::hist::{Latency, round1};
use super::http::{Conn, json_int};
use super::procs::{UsageReport, now_us};

/// One acknowledged order: its key and where the broker said it is.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Acked {
    pub(crate) key: u128,
    pub(crate) partition: i32,
    pub(crate) offset: i64,
}

/// What the load is sent to.
#[derive(Clone)]
pub(crate) enum Target {
    Healthz(SocketAddr),
    Post(SocketAddr),
    /// The same records, straight to the broker with the gateway's producer settings.
    Raw(FutureProducer, String),
}

impl Target {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Target::Healthz(_) => "healthz",
            Target::Post(_) => "post",
            Target::Raw(..) => "raw",
        }
    }
}

/// How load is offered.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Load {
    /// `n` clients, each sending its next request when the last one was answered.
    Concurrency(usize),
    /// Requests started at this rate whatever the answers do (open loop).
    Rate(u32),
}

pub(crate) struct Run {
    pub(crate) target: &'static str,
    pub(crate) load: Load,
    pub(crate) seconds: f64,
    /// Successful requests inside the measured window.
    pub(crate) ok: u64,
    pub(crate) errors: u64,
    pub(crate) latency: Latency,
    pub(crate) usage: Option<UsageReport>,
    /// Every acknowledged order, warm-up included: all of them are verified.
    pub(crate) acked: Vec<Acked>,
}

impl Run {
    /// A run that was not made (the baseline build measures no raw producer).
    pub(crate) fn skipped(target: &Target, concurrency: usize) -> Self {
        Self {
            target: target.name(),
            load: Load::Concurrency(concurrency),
            seconds: 0.0,
            ok: 0,
            errors: 0,
            latency: Latency::new(),
            usage: None,
            acked: Vec::new(),
        }
    }

    /// Microseconds of gateway CPU per successful request: the figure that does not
    /// depend on how many cores the broker and the load generator leave the gateway.
    pub(crate) fn cpu_us_per_request(&self) -> Option<f64> {
        let usage = self.usage?;
        (self.ok > 0).then(|| usage.cpu_cores * self.seconds * 1e6 / self.ok as f64)
    }

    pub(crate) fn per_second(&self) -> f64 {
        self.ok as f64 / self.seconds.max(1e-9)
    }

    pub(crate) fn to_json(&self) -> Value {
        let (concurrency, rate) = match self.load {
            Load::Concurrency(c) => (Some(c), None),
            Load::Rate(r) => (None, Some(r)),
        };
        json!({
            "target": self.target,
            "concurrency": concurrency,
            "rate": rate,
            "seconds": self.seconds,
            "ok": self.ok,
            "errors": self.errors,
            "per_second": round1(self.per_second()),
            "latency": self.latency.summary(),
            "gateway_cpu_cores": self.usage.map(|u| super::hist::round3(u.cpu_cores)),
            "gateway_cpu_us_per_request": self.cpu_us_per_request().map(round1),
            "gateway_rss_peak_mib": self.usage.map(|u| round1(u.rss_peak as f64 / 1048576.0)),
            "gateway_rss_end_mib": self.usage.map(|u| round1(u.rss_end as f64 / 1048576.0)),
        })
    }
}

/// The order body of every request, with a fresh order id.
fn order_body(key: u128) -> Bytes {
    let id = uuid::Uuid::from_u128(key);
    Bytes::from(format!(
        r#"{{"order_id":"{id}","user":"bench","item":"frozen yogurt","quantity":1}}"#
    ))
}

/// The record value the gateway would write for that order.
fn record_value(key: u128, now: SystemTime) -> String {
    let id = uuid::Uuid::from_u128(key);
    let created = humantime::format_rfc3339_millis(now);
    format!(
        r#"{{"order_id":"{id}","user":"bench","item":"frozen yogurt","quantity":1,"created_at":"{created}"}}"#
    )
}

fn new_key() -> u128 {
    uuid::Uuid::new_v4().as_u128()
}

/// The producer the gateway builds (src/kafka/config.rs), outside the gateway.
pub(crate) fn raw_producer(bootstrap: &str) -> Res<FutureProducer> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("message.timeout.ms", "5000")
        .set("linger.ms", "1")
        .set("queue.buffering.max.messages", "100000")
        .create()?)
}

/// One request against `target`: Ok(acked order) for a POST / raw produce, Ok(None) for
/// a health check, Err(status or error text) otherwise.
async fn once(target: &Target, conn: &mut Option<Conn>) -> Result<Option<Acked>, String> {
    match target {
        Target::Healthz(addr) | Target::Post(addr) => {
            if conn.as_ref().is_some_and(Conn::is_closed) {
                *conn = None;
            }
            if conn.is_none() {
                *conn = Some(Conn::open(*addr).await.map_err(|e| e.to_string())?);
            }
            let Some(c) = conn.as_mut() else {
                return Err("no connection".into());
            };
            let post = matches!(target, Target::Post(_));
            let key = new_key();
            let answer = if post {
                c.call(Method::POST, "/orders", Some(order_body(key))).await
            } else {
                c.call(Method::GET, "/healthz", None).await
            };
            let (status, body) = match answer {
                Ok(a) => a,
                Err(e) => {
                    *conn = None;
                    return Err(e.to_string());
                }
            };
            match (post, status) {
                (false, 200) => Ok(None),
                (true, 202) => {
                    let partition = json_int(&body, br#""partition""#);
                    let offset = json_int(&body, br#""offset""#);
                    match (partition, offset) {
                        (Some(p), Some(o)) => Ok(Some(Acked {
                            key,
                            partition: p as i32,
                            offset: o,
                        })),
                        _ => Err("202 without partition/offset".into()),
                    }
                }
                (_, s) => Err(format!("status {s}")),
            }
        }
        Target::Raw(producer, topic) => {
            let key = new_key();
            let now = SystemTime::now();
            let value = record_value(key, now);
            let id = uuid::Uuid::from_u128(key).to_string();
            let ms = now
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            let record = FutureRecord::to(topic)
                .key(&id)
                .payload(&value)
                .headers(OwnedHeaders::new().insert(Header {
                    key: "content-type",
                    value: Some("application/json"),
                }))
                .timestamp(ms);
            let delivery = producer
                .send_result(record)
                .map_err(|(e, _)| e.to_string())?;
            match delivery.await {
                Ok(Ok(d)) => Ok(Some(Acked {
                    key,
                    partition: d.partition,
                    offset: d.offset,
                })),
                Ok(Err((e, _))) => Err(e.to_string()),
                Err(_) => Err("producer gone".into()),
            }
        }
    }
}

#[derive(Default)]
struct Tally {
    ok: u64,
    errors: u64,
    first_error: Option<String>,
    acked: Vec<Acked>,
}

/// Closed loop: `n` workers for `warmup + seconds`; the window after the warm-up counts.
pub(crate) async fn closed_loop(
    target: &Target,
    n: usize,
    warmup: Duration,
    seconds: Duration,
    gateway_pid: Option<u32>,
) -> Res<Run> {
    let start = Instant::now();
    let measure_from = start + warmup;
    let stop_at = measure_from + seconds;
    let mut workers = Vec::new();
    for _ in 0..n {
        let target = target.clone();
        workers.push(tokio::spawn(async move {
            let mut conn = None;
            let mut tally = Tally::default();
            let mut latency = Latency::new();
            loop {
                let t = Instant::now();
                if t >= stop_at {
                    break;
                }
                let result = once(&target, &mut conn).await;
                let measured = t >= measure_from;
                match result {
                    Ok(acked) => {
                        if measured {
                            latency.record(t.elapsed().as_micros() as u64);
                            tally.ok += 1;
                        }
                        tally.acked.extend(acked);
                    }
                    Err(e) => {
                        tally.errors += 1;
                        tally.first_error.get_or_insert(e);
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            (tally, latency)
        }));
    }
    tokio::time::sleep_until(measure_from.into()).await;
    let usage = gateway_pid.map(super::procs::Usage::start);
    tokio::time::sleep_until(stop_at.into()).await;
    let usage = usage.map(super::procs::Usage::finish);
    let mut run = Run {
        target: target.name(),
        load: Load::Concurrency(n),
        seconds: seconds.as_secs_f64(),
        ok: 0,
        errors: 0,
        latency: Latency::new(),
        usage,
        acked: Vec::new(),
    };
    let mut first_error = None;
    for w in workers {
        let (tally, latency) = w.await?;
        run.ok += tally.ok;
        run.errors += tally.errors;
        run.acked.extend(tally.acked);
        run.latency.add(&latency);
        first_error = first_error.or(tally.first_error);
    }
    if let Some(e) = first_error {
        eprintln!("  {} c={n}: {} errors, first: {e}", run.target, run.errors);
    }
    Ok(run)
}

/// Called with every acknowledged order and the time (µs) its 202 arrived.
pub(crate) type OnAck = Arc<dyn Fn(&Acked, u64) + Send + Sync>;

/// Open loop: one request started every 1/rate s for `warmup + seconds`, each on an idle
/// keep-alive connection (a new one when all are busy). Latency runs from the moment the
/// request was started.
pub(crate) async fn open_loop(
    target: &Target,
    rate: u32,
    warmup: Duration,
    seconds: Duration,
    gateway_pid: Option<u32>,
    on_ack: Option<OnAck>,
) -> Res<Run> {
    let pool: Arc<Mutex<Vec<Conn>>> = Arc::default();
    let start = Instant::now();
    let measure_from = start + warmup;
    let stop_at = measure_from + seconds;
    let interval = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
    let mut tasks = Vec::new();
    let mut usage = None;
    let mut i: u32 = 0;
    loop {
        let at = start + interval * i;
        i += 1;
        if at >= stop_at {
            break;
        }
        tokio::time::sleep_until(at.into()).await;
        if usage.is_none() && at >= measure_from {
            usage = Some(gateway_pid.map(super::procs::Usage::start));
        }
        let (target, pool, on_ack) = (target.clone(), pool.clone(), on_ack.clone());
        tasks.push(tokio::spawn(async move {
            let taken = pool.lock().unwrap_or_else(PoisonError::into_inner).pop();
            let mut conn = taken;
            let t = Instant::now();
            let result = once(&target, &mut conn).await;
            let us = t.elapsed().as_micros() as u64;
            if let Ok(Some(acked)) = &result
                && let Some(on_ack) = &on_ack
            {
                on_ack(acked, now_us());
            }
            if let Some(conn) = conn {
                pool.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(conn);
            }
            (t >= measure_from, us, result)
        }));
    }
    // In-flight requests still count: wait for their answers before closing the window.
    let mut run = Run {
        target: target.name(),
        load: Load::Rate(rate),
        seconds: seconds.as_secs_f64(),
        ok: 0,
        errors: 0,
        latency: Latency::new(),
        usage: None,
        acked: Vec::new(),
    };
    let mut first_error = None;
    for task in tasks {
        let (measured, us, result) = task.await?;
        match result {
            Ok(acked) => {
                if measured {
                    run.ok += 1;
                    run.latency.record(us);
                }
                run.acked.extend(acked);
            }
            Err(e) => {
                run.errors += 1;
                first_error.get_or_insert(e);
            }
        }
    }
    run.usage = usage.flatten().map(super::procs::Usage::finish);
    if let Some(e) = first_error {
        eprintln!(
            "  {} rate={rate}: {} errors, first: {e}",
            run.target, run.errors
        );
    }
    Ok(run)
}

/// What reading the topic back found.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Verified {
    pub(crate) acked: u64,
    /// Acknowledged orders found at their partition/offset with their key.
    pub(crate) found: u64,
    /// Acknowledged orders not on the topic, or another record at their place.
    pub(crate) lost: u64,
    /// Acknowledged keys that appear more than once on the topic.
    pub(crate) duplicated: u64,
}

impl Verified {
    pub(crate) fn add(&mut self, other: Self) {
        self.acked += other.acked;
        self.found += other.found;
        self.lost += other.lost;
        self.duplicated += other.duplicated;
    }

    pub(crate) fn to_json(self) -> Value {
        json!({"acked": self.acked, "found": self.found, "lost": self.lost, "duplicated": self.duplicated})
    }
}

/// Reads `topic` from the start and checks every acknowledged order is at its place, once.
/// Blocking; it does not trust the high watermark (Tansu's can lag after a batch): it reads
/// until every expected offset was passed, then a second of silence for duplicates.
pub(crate) fn verify(bootstrap: &str, topic: &str, acked: &[Acked]) -> Res<Verified> {
    let expected: HashMap<(i32, i64), u128> = acked
        .iter()
        .map(|a| ((a.partition, a.offset), a.key))
        .collect();
    let keys: HashSet<u128> = acked.iter().map(|a| a.key).collect();
    let mut last: HashMap<i32, i64> = HashMap::new();
    for a in acked {
        let e = last.entry(a.partition).or_insert(a.offset);
        *e = (*e).max(a.offset);
    }
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set(
            "group.id",
            format!("verify-{}", uuid::Uuid::new_v4().simple()),
        )
        .set("enable.auto.commit", "false")
        .create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let mut tpl = TopicPartitionList::new();
    for t in metadata.topics().iter().filter(|t| t.name() == topic) {
        for p in t.partitions() {
            tpl.add_partition_offset(topic, p.id(), Offset::Beginning)?;
        }
    }
    consumer.assign(&tpl)?;
    let mut verified = Verified {
        acked: acked.len() as u64,
        ..Verified::default()
    };
    let mut seen: HashSet<u128> = HashSet::with_capacity(keys.len());
    let mut matched: HashSet<(i32, i64)> = HashSet::with_capacity(expected.len());
    let mut passed: HashMap<i32, i64> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut quiet_since = None;
    while Instant::now() < deadline {
        let done = last
            .iter()
            .all(|(p, o)| passed.get(p).is_some_and(|x| x >= o));
        let Some(message) = consumer.poll(Duration::from_millis(100)) else {
            if done {
                let since = *quiet_since.get_or_insert_with(Instant::now);
                if since.elapsed() > Duration::from_secs(1) {
                    break;
                }
            }
            continue;
        };
        quiet_since = None;
        let message = message?;
        let (p, o) = (message.partition(), message.offset());
        passed.insert(p, o);
        let key = message
            .key()
            .and_then(|k| std::str::from_utf8(k).ok())
            .and_then(|k| uuid::Uuid::parse_str(k).ok())
            .map(|u| u.as_u128());
        let Some(key) = key else { continue };
        if keys.contains(&key) && !seen.insert(key) {
            verified.duplicated += 1;
        }
        if expected.get(&(p, o)) == Some(&key) {
            matched.insert((p, o));
        }
    }
    verified.found = matched.len() as u64;
    verified.lost = verified.acked - verified.found;
    Ok(verified)
}

/// Creates `topic` with `partitions` partitions, as the gateway creates its own.
pub(crate) async fn create_topic(bootstrap: &str, topic: &str, partitions: i32) -> Res<()> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()?;
    let results = admin
        .create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await?;
    for r in results {
        r.map_err(|(t, e)| format!("create topic {t}: {e}"))?;
    }
    Ok(())
}

/// Writes `n` gateway-shaped orders to `topic` as fast as the producer takes them (for the
/// catch-up backlog). Returns the acknowledged orders.
pub(crate) async fn backfill(producer: &FutureProducer, topic: &str, n: usize) -> Res<Vec<Acked>> {
    use futures_util::StreamExt;
    let target = Target::Raw(producer.clone(), topic.to_owned());
    let results: Vec<Result<Option<Acked>, String>> = futures_util::stream::iter(0..n)
        .map(|_| {
            let target = target.clone();
            async move { once(&target, &mut None).await }
        })
        .buffer_unordered(2048)
        .collect()
        .await;
    let mut acked = Vec::with_capacity(n);
    for r in results {
        acked.extend(r?);
    }
    Ok(acked)
}
