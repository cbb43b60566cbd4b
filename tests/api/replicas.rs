//! Several replicas of the real binary behind a plain TCP round-robin balancer: streams need
//! no session affinity, because every replica streams every order and an event id written
//! by one replica resumes exactly on another.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use rdkafka::Message;

use crate::helpers::broker::{self, free_port};
use crate::helpers::gateway::Gateway;
use crate::helpers::load::{Load, acknowledged_on_topic, tally};
use crate::helpers::round_robin::RoundRobin;
use crate::helpers::sse::{Background, SseEvent};
use crate::helpers::unique;

const REPLICAS: usize = 3;
/// Enough that every replica serves several streams.
const CLIENTS: usize = 12;
/// Senders placing orders side by side, each pausing `PAUSE` between orders: about
/// 40 orders a second in all.
const SENDERS: usize = 4;
const PAUSE: Duration = Duration::from_millis(80);
/// How long orders are placed; a replica is killed half-way.
const SENDING: Duration = Duration::from_secs(10);
/// The replica that is killed.
const KILLED: usize = 1;
/// What a client waits before it reconnects: the gateway's `retry: 2000` hint, which
/// EventSource follows. Orders placed meanwhile must come with the resume.
const RECONNECT_AFTER: Duration = Duration::from_secs(2);
/// How long the clients may take to stream the last order once the senders stopped.
const CATCH_UP: Duration = Duration::from_secs(15);

/// Three gateway processes on one topic and group behind a round-robin balancer. Twelve
/// EventSource-like clients stream through it while orders are placed through it; one
/// replica is killed mid-way, and its clients reconnect through the balancer with their
/// `Last-Event-ID` to whichever survivor it picks. Every client sees every record on the
/// topic exactly once, each partition in offset order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_of_a_killed_replica_resume_on_any_other_and_see_every_order_once() {
    let began = Instant::now();
    let (topic, group) = (unique("orders"), unique("tracker"));
    let env = [
        ("KAFKA_BOOTSTRAP_SERVERS", broker::shared()),
        ("ORDERS_TOPIC", topic.as_str()),
        ("TRACKER_GROUP_ID", group.as_str()),
    ];
    let ports: Vec<u16> = (0..REPLICAS).map(|_| free_port()).collect();
    let mut replicas: Vec<Gateway> = ports.iter().map(|&p| Gateway::start_on(p, &env)).collect();
    let http = reqwest::Client::new();
    for replica in &replicas {
        replica.wait_ready(&http, Duration::from_secs(30)).await;
    }

    // Streams and orders cross two balancers of the same kind, so that the connection
    // counts per replica tell where the streams went.
    let streams = RoundRobin::start(&ports).await;
    let orders = RoundRobin::start(&ports).await;
    // No pooled connections: a reconnect is a new connection through the balancer, as
    // EventSource's is after a stream ended.
    let sse = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let url = format!("{}/orders/stream", streams.base());
    // Opened one after another before the first order, at the live tail, so client `i` is
    // on replica `i % REPLICAS` and every client's stream starts before the topic's first
    // record.
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        clients.push(Background::open_reconnecting_after(&sse, &url, RECONNECT_AFTER).await);
    }
    assert_eq!(streams.handed(), [CLIENTS / REPLICAS; REPLICAS]);

    let load = Load::paced(&orders.base(), SENDERS, PAUSE);
    let sending = Instant::now();
    // A client without an id could only reconnect at the live tail: every client has one
    // before the kill.
    for client in &clients {
        client.orders(1, Duration::from_secs(15)).await;
    }
    tokio::time::sleep((SENDING / 2).saturating_sub(sending.elapsed())).await;
    let before_kill = streams.handed();
    let mut killed = replicas.remove(KILLED);
    killed.kill();
    let killed_at = Instant::now();
    let status = tokio::task::spawn_blocking(move || killed.wait_exit(Duration::from_secs(10)))
        .await
        .unwrap();
    assert_eq!(status.code(), None, "killed by a signal: {status}");
    tokio::time::sleep(SENDING.saturating_sub(sending.elapsed())).await;
    let answers = load.stop().await;

    let t = tally(&answers);
    assert_eq!(t.other, 0, "only 202, 503 or no answer: {t:?}");
    assert!(
        answers
            .iter()
            .any(|a| a.status == Some(202) && a.sent_at > killed_at),
        "the survivors take orders"
    );
    // The truth: every record on the topic. It holds every 202 at the partition and offset
    // it named (checked here), and any unanswered order that landed nonetheless.
    let sent = answers.len();
    let records = tokio::task::spawn_blocking({
        let topic = topic.clone();
        move || acknowledged_on_topic(broker::shared(), &topic, &answers)
    })
    .await
    .unwrap();
    let truth: BTreeMap<(i32, i64), String> = records
        .iter()
        .map(|r| {
            let key = String::from_utf8(r.key().expect("keyed").to_vec()).expect("utf-8 key");
            ((r.partition(), r.offset()), key)
        })
        .collect();

    // Every client catches up (in well under a second, here), or the checks below say what
    // it lacks; then a duplicate trailing the last order would show within a second.
    let stopped = Instant::now();
    let deadline = stopped + CATCH_UP;
    while Instant::now() < deadline && clients.iter().any(|c| c.events().len() < truth.len()) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let caught_up = stopped.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;

    let resumes: Vec<usize> = clients.iter().map(Background::resumes).collect();
    let after_kill: Vec<usize> = streams
        .handed()
        .iter()
        .zip(&before_kill)
        .map(|(now, before)| now - before)
        .collect();
    eprintln!(
        "replicas: {CLIENTS} clients on {REPLICAS} replicas (replica {KILLED} killed), \
         {sent} orders sent ({} acknowledged, {} unanswered, {} unavailable), {} on the topic, \
         caught up {:.1} s after the last; {} reconnects {resumes:?}; stream connections per \
         replica {:?} ({after_kill:?} after the kill, {} refused), order connections per replica \
         {:?} ({} refused); {:.1} s in all",
        t.acknowledged,
        t.unanswered,
        t.unavailable,
        truth.len(),
        caught_up.as_secs_f64(),
        resumes.iter().sum::<usize>(),
        streams.handed(),
        streams.skipped(),
        orders.handed(),
        orders.skipped(),
        began.elapsed().as_secs_f64(),
    );
    for (i, client) in clients.iter().enumerate() {
        assert_saw_exactly(i, &client.events(), &truth);
    }
    for (i, resumed) in resumes.iter().enumerate() {
        if i % REPLICAS == KILLED {
            assert!(
                *resumed > 0,
                "client {i} was on the killed replica: {resumes:?}"
            );
        }
    }
    for (r, reconnected) in after_kill.iter().enumerate() {
        if r != KILLED {
            assert!(
                *reconnected > 0,
                "reconnects spread over the survivors: {after_kill:?}"
            );
        }
    }
}

/// Client `i` streamed exactly the records of `truth`: each once, with its order id, and
/// every partition in offset order.
fn assert_saw_exactly(i: usize, events: &[SseEvent], truth: &BTreeMap<(i32, i64), String>) {
    let mut seen = BTreeMap::new();
    let mut last_offset: HashMap<i32, i64> = HashMap::new();
    for event in events {
        assert_eq!(
            event.event, "order",
            "client {i}: unexpected event {event:?}"
        );
        let data = event.json();
        let partition = i32::try_from(data["partition"].as_i64().unwrap()).unwrap();
        let offset = data["offset"].as_i64().unwrap();
        let order_id = data["order_id"].as_str().unwrap().to_owned();
        let before = last_offset.insert(partition, offset);
        assert!(
            before.is_none_or(|b| b < offset),
            "client {i}: partition {partition} went from offset {before:?} to {offset}"
        );
        let twice = seen.insert((partition, offset), order_id);
        assert!(
            twice.is_none(),
            "client {i}: {partition}/{offset} streamed twice"
        );
    }
    let missing: Vec<_> = truth.keys().filter(|at| !seen.contains_key(at)).collect();
    let foreign: Vec<_> = seen.keys().filter(|at| !truth.contains_key(at)).collect();
    assert!(
        missing.is_empty() && foreign.is_empty(),
        "client {i}: {} records missing (first {:?}), {} not on the topic (first {:?})",
        missing.len(),
        missing.first(),
        foreign.len(),
        foreign.first()
    );
    assert_eq!(&seen, truth, "client {i}: another order at some position");
}
