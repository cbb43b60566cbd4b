//! Faults under load: the broker unreachable or killed, the gateway terminated or killed.
//! Nothing acknowledged may be lost or doubled, no request may hang, and the gateway must
//! recover by itself.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::broker::{self, free_port};
use crate::helpers::gateway::Gateway;
use crate::helpers::load::{Answer, Load, assert_acknowledged_on_topic, place, tally};
use crate::helpers::proxy::Proxy;
use crate::helpers::sse::Background;
use crate::helpers::{Broker, SseStream, TestApp, config, order, unique};

const PRODUCE_TIMEOUT: Duration = Duration::from_secs(2);
/// What a failing POST may take beyond PRODUCE_TIMEOUT: scheduling on a loaded 2-core box.
const SLACK: Duration = Duration::from_millis(1500);
const WORKERS: usize = 8;

/// Places orders until the gateway acknowledges one again; every attempt, for the checks.
async fn until_orders_are_taken(app: &TestApp, within: Duration) -> Vec<Answer> {
    let deadline = Instant::now() + within;
    let mut probes = Vec::new();
    loop {
        let answer = place(&app.http, &app.url("")).await;
        let taken = answer.status == Some(202);
        probes.push(answer);
        if taken {
            return probes;
        }
        assert!(
            Instant::now() < deadline,
            "no order taken within {within:?}: {:?}",
            probes.last()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A way for the broker to become unreachable, and to come back.
trait Outage {
    async fn begin(&mut self);
    async fn end(&mut self);
}

/// Cut off: every connection dropped, new ones refused; the broker keeps its data.
impl Outage for Proxy {
    async fn begin(&mut self) {
        self.cut().await;
    }
    async fn end(&mut self) {
        self.heal();
    }
}

/// Killed, then restarted (empty: Tansu keeps its data in memory).
impl Outage for Broker {
    async fn begin(&mut self) {
        self.stop();
    }
    async fn end(&mut self) {
        self.restart();
    }
}

/// Places orders without pause through an outage of `lasting`, until orders are taken again,
/// and checks what every outage must leave true: every request answered, with 202 or 503,
/// none later than PRODUCE_TIMEOUT allows, and orders taken again without a restart.
async fn through_an_outage(
    app: &TestApp,
    outage: &mut impl Outage,
    lasting: Duration,
) -> Vec<Answer> {
    let load = Load::start(&app.url(""), WORKERS);
    tokio::time::sleep(Duration::from_secs(2)).await;
    outage.begin().await;
    tokio::time::sleep(lasting).await;
    outage.end().await;
    let recovered = Instant::now();
    let probes = until_orders_are_taken(app, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut answers = load.stop().await;
    answers.extend(probes);

    let t = tally(&answers);
    eprintln!("outage under load: {} sent, {t:?}", answers.len());
    assert_eq!(
        (t.other, t.unanswered),
        (0, 0),
        "only 202 or 503, always an answer"
    );
    assert!(t.unavailable > 0, "the outage was felt");
    assert!(
        t.slowest <= PRODUCE_TIMEOUT + SLACK,
        "slowest answer {:?}",
        t.slowest
    );
    assert!(
        answers
            .iter()
            .any(|a| a.status == Some(202) && a.sent_at > recovered),
        "orders are taken again after the broker came back"
    );
    answers
}

/// The broker becomes unreachable (every connection cut, new ones refused) and comes back
/// with its data: every 202 is on the topic once, failures come within PRODUCE_TIMEOUT, and
/// a stream opened before the cut delivers every order without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_cut_off_under_load_loses_no_acknowledged_order() {
    let proxy_port = free_port();
    let broker = Broker::start_behind(proxy_port);
    let mut proxy = Proxy::start(proxy_port, broker.port()).await;
    let app = TestApp::spawn(config(&proxy.bootstrap(), &["--produce-timeout", "2s"])).await;
    app.wait_ready(Duration::from_secs(30)).await;
    let stream = Background::open(&app.http, &app.url("/orders/stream")).await;

    let answers = through_an_outage(&app, &mut proxy, Duration::from_secs(5)).await;
    let on_topic = assert_acknowledged_on_topic(&proxy.bootstrap(), app.topic(), &answers);
    eprintln!("records on the topic: {on_topic}");

    // The stream saw every acknowledged order exactly once, without a reconnect.
    let acknowledged: HashSet<&str> = answers
        .iter()
        .filter(|a| a.status == Some(202))
        .map(|a| a.order_id.as_str())
        .collect();
    let events = stream.orders(on_topic, Duration::from_secs(60)).await;
    let streamed: Vec<String> = events
        .iter()
        .map(|e| e.json()["order_id"].as_str().unwrap().to_owned())
        .collect();
    eprintln!(
        "streamed {} orders, resumed {} times",
        streamed.len(),
        stream.resumes()
    );
    let unique_streamed: HashSet<&str> = streamed.iter().map(String::as_str).collect();
    assert_eq!(
        unique_streamed.len(),
        streamed.len(),
        "no order streamed twice"
    );
    let missing: Vec<_> = acknowledged.difference(&unique_streamed).collect();
    assert!(
        missing.is_empty(),
        "acknowledged but not streamed: {missing:?}"
    );
}

/// The broker process dies under load and restarts empty (Tansu keeps data in memory):
/// in-flight POSTs fail within PRODUCE_TIMEOUT, and orders flow again, to an open stream
/// too, without restarting the gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_killed_under_load_fails_fast_and_the_gateway_recovers() {
    let mut broker = Broker::start();
    let app = TestApp::spawn(config(&broker.bootstrap(), &["--produce-timeout", "2s"])).await;
    app.wait_ready(Duration::from_secs(30)).await;
    let stream = Background::open(&app.http, &app.url("/orders/stream")).await;

    through_an_outage(&app, &mut broker, Duration::from_secs(4)).await;

    // The stream opened before the outage carries an order placed after it.
    let accepted: Value = app.post_order(&order("after")).await.json().await.unwrap();
    let after = accepted["order_id"].as_str().unwrap().to_owned();
    stream.order(&after, Duration::from_secs(30)).await;
}

/// Signals under load: every order the clients saw acknowledged is on the topic once.
async fn signal_under_load(kill: bool) {
    let topic = unique("orders");
    let env = [
        ("KAFKA_BOOTSTRAP_SERVERS", broker::shared()),
        ("ORDERS_TOPIC", topic.as_str()),
    ];
    let mut gateway = Gateway::start(&env);
    let http = reqwest::Client::new();
    gateway.wait_ready(&http, Duration::from_secs(30)).await;
    let load = Load::start(&gateway.base, WORKERS);
    tokio::time::sleep(Duration::from_secs(2)).await;
    if kill {
        gateway.kill();
    } else {
        gateway.terminate();
    }
    let status = tokio::task::spawn_blocking(move || gateway.wait_exit(Duration::from_secs(10)))
        .await
        .unwrap();
    let answers = load.stop().await;
    let t = tally(&answers);
    eprintln!(
        "gateway {} under load: {t:?}",
        if kill { "SIGKILL" } else { "SIGTERM" }
    );
    if !kill {
        assert_eq!(
            status.code(),
            Some(0),
            "a terminated gateway exits 0: {status}"
        );
    }
    assert!(t.acknowledged > 0);
    assert_eq!(t.other, 0, "only 202, 503 or no answer");
    let on_topic = assert_acknowledged_on_topic(broker::shared(), &topic, &answers);
    eprintln!("records on the topic: {on_topic}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_loses_no_acknowledged_order() {
    signal_under_load(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_loses_no_acknowledged_order() {
    signal_under_load(true).await;
}

/// A client that read part of the stream resumes, with its last id, on a gateway started
/// after the first one stopped: it gets every order it missed, once, in order, no gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_resumed_on_a_restarted_gateway_has_no_gap_and_no_duplicate() {
    let (topic, group) = (unique("orders"), unique("tracker"));
    let env = [
        ("KAFKA_BOOTSTRAP_SERVERS", broker::shared()),
        ("ORDERS_TOPIC", topic.as_str()),
        ("TRACKER_GROUP_ID", group.as_str()),
    ];
    let http = reqwest::Client::new();
    let place = |gateway: &Gateway, n: usize| {
        let (http, gateway_base) = (http.clone(), gateway.base.clone());
        async move {
            let mut ids = Vec::new();
            for _ in 0..n {
                let response = http
                    .post(format!("{gateway_base}/orders"))
                    .json(&order("lara"))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 202);
                let accepted: Value = response.json().await.unwrap();
                ids.push(accepted["order_id"].as_str().unwrap().to_owned());
            }
            ids
        }
    };

    let mut first = Gateway::start(&env);
    first.wait_ready(&http, Duration::from_secs(30)).await;
    let mut stream = SseStream::open(&http, &format!("{}/orders/stream", first.base)).await;
    let seen = place(&first, 5).await;
    let events = stream.orders(5, Duration::from_secs(15)).await;
    let last_id = events[4].id.clone().expect("events carry ids");
    drop(stream);
    let mut missed = place(&first, 3).await;
    first.terminate();
    tokio::task::spawn_blocking(move || first.wait_exit(Duration::from_secs(10)))
        .await
        .unwrap();

    let second = Gateway::start(&env);
    second.wait_ready(&http, Duration::from_secs(30)).await;
    missed.extend(place(&second, 4).await);
    let mut resumed =
        SseStream::open_with_header(&http, &format!("{}/orders/stream", second.base), &last_id)
            .await;
    let mut got = Vec::new();
    while got.len() < missed.len() {
        let block = resumed
            .next_block(Duration::from_secs(15))
            .await
            .unwrap_or_else(|| panic!("stream stalled after {got:?}"));
        assert_ne!(block.event, "gap", "no gap on resume: {block:?}");
        if block.event == "order" {
            got.push(block.json()["order_id"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(got.len(), missed.len());
    let got_set: HashSet<&String> = got.iter().collect();
    assert_eq!(
        got_set,
        missed.iter().collect(),
        "exactly the missed orders"
    );
    assert!(
        got.iter().all(|id| !seen.contains(id)),
        "nothing seen before came again"
    );
    // Nothing more arrives: no duplicate trails the missed orders.
    let extra = resumed.next_block(Duration::from_secs(2)).await;
    assert!(
        extra.as_ref().is_none_or(|b| b.event != "order"),
        "unexpected extra order: {extra:?}"
    );
}
