//! The producer watchdog: a broker that lost its state (Tansu restarted empty) while
//! another replica recreated the topic before this one's probe could see it missing. The
//! supervisor never learns that the topic is new, so only the watchdog (orders timing out
//! while the broker answers and the topic is there) can start the producer over.

use std::time::{Duration, Instant};

use rdkafka::Message;
use serde_json::json;

use crate::helpers::gateway::Gateway;
use crate::helpers::load::{Answer, place};
use crate::helpers::sse::Background;
use crate::helpers::{Broker, kafka, metrics, unique};

const PRODUCE_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a gateway may answer 503 after it can reach the restarted broker again:
/// - up to 7 s until its supervisor's probe answers (backoff capped at 5 s, plus a probe
///   of up to 2 s); orders sent before that do not count for the watchdog;
/// - 3 × PRODUCE_TIMEOUT (6 s) for the watchdog's evidence: three timed-out orders whose
///   sends span 2 × PRODUCE_TIMEOUT, the last one failing PRODUCE_TIMEOUT after its send;
/// - up to 2 s until the supervisor's next check (it looks after every probe);
/// - one PRODUCE_TIMEOUT for the order already in flight on the old producer;
///
/// 17 s in all, plus 8 s of slack for two gateways, a broker and the test on two shared
/// cores.
const RECOVERY: Duration =
    Duration::from_secs(7 + 2 + 8).saturating_add(PRODUCE_TIMEOUT.saturating_mul(4));

/// Places orders one after another until one is acknowledged; every answer, in order, and
/// `Err` with them when none was acknowledged `within`.
async fn until_taken(gateway: &Gateway, within: Duration) -> Result<Vec<Answer>, Vec<Answer>> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let started = Instant::now();
    let mut answers = Vec::new();
    loop {
        let answer = place(&http, &gateway.base).await;
        let taken = answer.status == Some(202);
        answers.push(answer);
        if taken {
            return Ok(answers);
        }
        if started.elapsed() > within {
            return Err(answers);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn renewals(http: &reqwest::Client, gateway: &Gateway, reason: &str) -> f64 {
    let samples = metrics::scrape(http, &gateway.base).await;
    metrics::sum(
        &samples,
        "orders_gateway_producer_renewals_total",
        &format!("reason=\"{reason}\""),
    )
}

/// Two replicas on one topic. The broker restarts empty, and "the other replica" (this
/// test) recreates the topic and writes to it before either gateway could look: both
/// gateways are frozen (SIGSTOP) from just after they saw the broker go away until the
/// topic is back, so the race that hides the recreation from them is decided, not hoped
/// for. Both must take orders again within RECOVERY, each 202 on the topic where it says.
///
/// It also proves the tracker's side: a feed that resumed on the restarted broker without
/// being started over crashed librdkafka 2.12 (upstream 5280: SIGSEGV in
/// `rd_kafka_metadata_update_op`) in about two runs of a gateway in three, which failed
/// this test saying the gateway died by signal 11; and each replica must go on streaming
/// what the other takes on the new topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_stuck_after_the_broker_lost_its_state_is_renewed_by_the_watchdog() {
    let mut broker = Broker::start();
    let bootstrap = broker.bootstrap();
    let (topic, group) = (unique("orders"), unique("tracker"));
    let env = [
        ("KAFKA_BOOTSTRAP_SERVERS", bootstrap.as_str()),
        ("ORDERS_TOPIC", topic.as_str()),
        ("TRACKER_GROUP_ID", group.as_str()),
        ("PRODUCE_TIMEOUT", "2s"), // PRODUCE_TIMEOUT
        ("RUST_LOG", "warn,orders_gateway=info"),
    ];
    let mut gateways = [Gateway::start(&env), Gateway::start(&env)];
    let http = reqwest::Client::new();
    for gateway in &gateways {
        gateway.wait_ready(&http, Duration::from_secs(30)).await;
        // The producer has an id and sequence numbers the broker is about to forget, and
        // the streams' positions lie beyond where the new topic will end.
        for _ in 0..10 {
            assert_eq!(gateway.post_order(&http).await.status(), 202);
        }
    }

    broker.stop();
    for gateway in &gateways {
        let not_ready = async {
            loop {
                let status = http.get(format!("{}/readyz", gateway.base)).send().await;
                if status.is_ok_and(|r| r.status() == 503) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(15), not_ready)
            .await
            .expect("a gateway notices the broker is gone");
    }
    // An outage of a few seconds, as a broker restart takes: the feeds' last fetches to
    // the old broker are over before it comes back.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for gateway in &gateways {
        gateway.pause();
    }
    broker.restart();
    kafka::create_topic(&bootstrap, &topic, 3).await;
    // The other replica takes orders at once, so no partition is empty when the gateways
    // look: nothing about the topic itself says it is new.
    for partition in 0..3 {
        let id = uuid::Uuid::new_v4().to_string();
        let value = json!({"order_id": id, "user": "other", "item": "tea", "quantity": 1});
        kafka::produce_to(
            &bootstrap,
            &topic,
            partition,
            &id,
            value.to_string().as_bytes(),
        )
        .await;
    }
    for gateway in &gateways {
        gateway.resume();
    }
    let resumed = Instant::now();

    let (a, b) = tokio::join!(
        until_taken(&gateways[0], RECOVERY),
        until_taken(&gateways[1], RECOVERY)
    );
    let took = resumed.elapsed();
    let mut by_watchdog = Vec::new();
    for (gateway, answers) in gateways.iter_mut().zip([a, b]) {
        let answers = answers.unwrap_or_else(|answers| {
            let statuses: Vec<_> = answers.iter().map(|a| a.status).collect();
            let state = gateway
                .exited()
                .map_or("still running".into(), |s| format!("it died: {s}"));
            panic!(
                "{} took no order within {RECOVERY:?} after the restart ({}): {statuses:?}; log: {}",
                gateway.base,
                state,
                gateway.log.display()
            )
        });
        let taken = answers.last().unwrap();
        eprintln!(
            "{}: {} answers before the first 202 ({:?}), taking orders {:?} after the restart",
            gateway.base,
            answers.len() - 1,
            answers.iter().map(|a| a.status).collect::<Vec<_>>(),
            taken.sent_at.duration_since(resumed) + taken.took,
        );
        assert!(
            answers.iter().all(|a| matches!(a.status, Some(202 | 503))),
            "only 202 or 503: {answers:?}"
        );
        let (partition, offset) = taken.position.unwrap();
        let record = kafka::read_record(&bootstrap, &topic, partition, offset);
        assert_eq!(record.key(), Some(taken.order_id.as_bytes()));
        // The supervisor never saw the topic missing.
        assert_eq!(renewals(&http, gateway, "topic_recreated").await, 0.0);
        let (watchdog, fenced) = (
            renewals(&http, gateway, "watchdog").await,
            renewals(&http, gateway, "identity_lost").await,
        );
        eprintln!(
            "{}: renewed by the watchdog {watchdog}, after an error {fenced}",
            gateway.base
        );
        assert!(
            watchdog + fenced >= 1.0,
            "{} took orders with its old producer; log: {}",
            gateway.base,
            gateway.log.display()
        );
        by_watchdog.push(watchdog);
    }
    // The restarted broker hands out producer ids from the start again, so the first
    // replica to renew may get the id the other's old producer had: that one then hears
    // ProducerFenced and renews on the error. The first renewal has no such error to
    // follow: it is always the watchdog's.
    assert!(
        by_watchdog.iter().any(|n| *n >= 1.0),
        "no replica was renewed by the watchdog: {by_watchdog:?}"
    );
    eprintln!("both replicas take orders again {took:?} after the restart");

    // Each replica streams what the other takes: its feed saw the topic end before its
    // position and started the stream over instead of skipping the new records as seen.
    for (watching, taking) in [(0, 1), (1, 0)] {
        let stream =
            Background::open(&http, &format!("{}/orders/stream", gateways[watching].base)).await;
        let taken = until_taken(&gateways[taking], RECOVERY)
            .await
            .expect("the replica still takes orders");
        let order_id = &taken.last().unwrap().order_id;
        stream.order(order_id, Duration::from_secs(15)).await;
    }
}
