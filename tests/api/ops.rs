//! Readiness, broker outages and shutdown against real broker processes.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::gateway::Gateway;
use crate::helpers::metrics::{self, parse_prometheus};
use crate::helpers::{Broker, TestApp, broker, config, eventually, order};

async fn readyz(app: &TestApp) -> (u16, Value) {
    let response = app.get("/readyz").await;
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

async fn wait_for_status(app: &TestApp, want: u16, timeout: Duration) -> Value {
    eventually(timeout, Duration::from_millis(100), || async {
        match readyz(app).await {
            (status, body) if status == want => Ok(body),
            (status, body) => Err(format!("/readyz stayed {status}: {body}")),
        }
    })
    .await
}

/// Compose starts Kafka and the gateway together: the gateway must wait for the broker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_started_before_its_broker_serves_http_and_becomes_ready_by_itself() {
    let port = broker::free_port();
    let app = TestApp::spawn(config(&format!("127.0.0.1:{port}"), &[])).await;

    assert_eq!(app.get("/healthz").await.status(), 200);
    let problem = wait_for_status(&app, 503, Duration::from_secs(5)).await;
    assert_eq!(problem["type"], "/problems/not-ready");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("broker is not reachable"),
        "{problem}"
    );

    let _broker = Broker::start_on(port);
    wait_for_status(&app, 200, Duration::from_secs(30)).await;
    assert_eq!(app.post_order(&order("lara")).await.status(), 202);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_is_a_prompt_503_and_recovery_needs_no_restart() {
    let mut broker = Broker::start();
    let app = TestApp::spawn(config(&broker.bootstrap(), &["--produce-timeout", "2s"])).await;
    app.wait_ready(Duration::from_secs(30)).await;
    assert_eq!(app.post_order(&order("before")).await.status(), 202);

    broker.stop();
    let started = Instant::now();
    let response = app.post_order(&order("during")).await;
    let waited = started.elapsed();
    assert_eq!(response.status(), 503);
    assert!(
        waited <= Duration::from_millis(2_300),
        "answered after {waited:?}"
    );
    assert!(response.headers().contains_key("retry-after"));
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );

    assert_eq!(
        app.get("/healthz").await.status(),
        200,
        "the process stays healthy"
    );
    let problem = wait_for_status(&app, 503, Duration::from_secs(10)).await;
    assert!(
        problem["detail"].as_str().unwrap().contains("broker"),
        "{problem}"
    );

    broker.restart();
    wait_for_status(&app, 200, Duration::from_secs(40)).await;
    eventually(
        Duration::from_secs(30),
        Duration::from_millis(250),
        || async {
            match app.post_order(&order("after")).await.status().as_u16() {
                202 => Ok(()),
                status => Err(format!(
                    "POSTs still fail with {status} after the broker returned"
                )),
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_streams_with_a_reconnect_hint_and_returns_ok() {
    let app = TestApp::ready(broker::shared()).await;
    let mut stream = app.stream("").await;
    assert_eq!(app.post_order(&order("lara")).await.status(), 202);
    stream.orders(1, Duration::from_secs(10)).await;

    let stopping = tokio::spawn(app.stop());
    let last = stream
        .next_block(Duration::from_secs(10))
        .await
        .expect("a final block");
    assert_eq!(
        last.comments,
        ["gateway shutting down; reconnect with Last-Event-ID"]
    );
    assert_eq!(last.retry, Some(2000));
    assert!(
        stream.next_block(Duration::from_secs(5)).await.is_none(),
        "stream closed"
    );
    stopping.await.unwrap().expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_produces_streams_and_tracker_progress() {
    let app = TestApp::ready(broker::shared()).await;
    let mut stream = app.stream("").await;
    for i in 0..3 {
        assert_eq!(app.post_order(&order(&format!("m{i}"))).await.status(), 202);
    }
    stream.orders(3, Duration::from_secs(10)).await;
    assert_eq!(app.post_order(&serde_json::json!({})).await.status(), 422);

    // Lag is measured every 5 s; wait for the first measurement of this topic's group.
    let deadline = Instant::now() + Duration::from_secs(15);
    let samples = loop {
        let response = app.get("/metrics").await;
        assert_eq!(response.status(), 200);
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/plain")
        );
        let samples = parse_prometheus(&response.text().await.unwrap());
        if samples
            .iter()
            .any(|(n, _, _)| n == "orders_gateway_tracker_lag")
            || Instant::now() > deadline
        {
            break samples;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let value = |name: &str, label: &str| -> f64 {
        samples
            .iter()
            .filter(|(n, l, _)| n == name && l.contains(label))
            .map(|(_, _, v)| v)
            .sum()
    };
    // Other tests share this process's recorder, so counts are at least ours.
    assert!(
        value(
            "orders_gateway_http_requests_total",
            r#"route="/orders",method="POST",status="202""#
        ) >= 3.0
    );
    assert!(value("orders_gateway_http_requests_total", r#"status="422""#) >= 1.0);
    assert!(
        value(
            "orders_gateway_http_request_duration_seconds_count",
            r#"route="/orders""#
        ) >= 4.0
    );
    assert!(value("orders_gateway_produce_total", r#"outcome="acked""#) >= 3.0);
    assert!(
        value(
            "orders_gateway_produce_duration_seconds_bucket",
            r#"le="+Inf""#
        ) >= 3.0
    );
    assert!(value("orders_gateway_tracker_records_total", "") >= 3.0);
    assert!(value("orders_gateway_stream_events_total", "") >= 3.0);
    assert!(value("orders_gateway_open_streams", "") >= 1.0);
    assert!(
        value(
            "orders_gateway_tracker_rebalances_total",
            r#"kind="assign""#
        ) >= 1.0
    );
    for name in [
        "orders_gateway_tracker_poison_records_total",
        "orders_gateway_stream_overflows_total",
        "orders_gateway_tracker_lag",
    ] {
        assert!(
            samples.iter().any(|(n, _, _)| n == name),
            "{name} is exported"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_topic_and_group_views_describe_the_cluster() {
    let app = TestApp::ready(broker::shared()).await;
    let mut stream = app.stream("").await;
    for i in 0..4 {
        assert_eq!(app.post_order(&order(&format!("v{i}"))).await.status(), 202);
    }
    stream.orders(4, Duration::from_secs(10)).await;

    let topic: Value = app.get("/admin/topic").await.json().await.unwrap();
    assert_eq!(topic["topic"], app.topic());
    let partitions = topic["partitions"].as_array().unwrap();
    assert_eq!(partitions.len(), 3);
    assert!(
        partitions
            .iter()
            .all(|p| p["leader"].as_i64().is_some() && p["low_watermark"] == 0)
    );

    let group = eventually(
        Duration::from_secs(10),
        Duration::from_millis(300),
        || async {
            let group: Value = app.get("/admin/group").await.json().await.unwrap();
            let committed: i64 = group["partitions"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|p| p["committed_offset"].as_i64())
                .sum();
            match (committed, group["members"].as_array().map(Vec::len)) {
                (4, Some(1)) => Ok(group),
                _ => Err(format!(
                    "group view never showed 4 committed orders and 1 member: {group}"
                )),
            }
        },
    )
    .await;
    assert_eq!(group["group"], app.config.tracker_group_id.as_str());
    assert_eq!(group["state"], "Stable");
    assert_eq!(group["total_lag"], 0, "{group}");
    // Tansu answers DescribeGroups without client ids or member assignments (Kafka sends
    // both), so the assignment decoder is covered by its unit test instead.
    let member = &group["members"][0];
    assert!(
        member["member_id"]
            .as_str()
            .is_some_and(|id| !id.is_empty())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_traceparent_travels_into_the_record_headers() {
    let app = TestApp::ready(broker::shared()).await;
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let response = app
        .http
        .post(app.url("/orders"))
        .header("traceparent", traceparent)
        .header("x-request-id", "req-42")
        .json(&order("traced"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    assert_eq!(response.headers()["x-request-id"], "req-42");
    let accepted: Value = response.json().await.unwrap();
    let record = crate::helpers::kafka::read_record(
        broker::shared(),
        app.topic(),
        accepted["partition"].as_i64().unwrap() as i32,
        accepted["offset"].as_i64().unwrap(),
    );
    assert_eq!(
        crate::helpers::kafka::header(&record, "traceparent").as_deref(),
        Some(traceparent)
    );
}

/// A client that sends its request head slowly (slowloris) is cut off after
/// REQUEST_TIMEOUT, and the gateway keeps serving everyone else meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_finishes_its_headers_is_disconnected() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let config = crate::helpers::config(
        broker::shared(),
        &["--produce-timeout", "500ms", "--request-timeout", "1s"],
    );
    let app = TestApp::spawn(config).await;
    app.wait_ready(Duration::from_secs(30)).await;

    let mut slow = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    assert_eq!(app.get("/healthz").await.status(), 200, "others are served");
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), slow.read_to_end(&mut rest)).await;
    assert!(
        read.is_ok(),
        "the half-sent request was still open after 10 s"
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "closed after {took:?}"
    );
}

/// `orders_gateway_ready` says what /readyz says, and every flip is counted: ready after
/// start, not ready while the broker is gone, ready again once it is back. The binary runs
/// in its own process, so its metrics are its own (in-process gateways share a recorder).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_metrics_follow_readyz_through_an_outage() {
    let mut broker = Broker::start();
    let bootstrap = broker.bootstrap();
    let gateway = Gateway::start(&[("KAFKA_BOOTSTRAP_SERVERS", bootstrap.as_str())]);
    let http = reqwest::Client::new();
    let readiness = || async {
        let samples = metrics::scrape(&http, &gateway.base).await;
        let ready = metrics::sum(&samples, "orders_gateway_ready", "");
        let changes = metrics::sum(&samples, "orders_gateway_readiness_changes_total", "");
        // Not ready at start, so an odd number of flips means ready.
        assert_eq!(changes % 2.0, ready, "{changes} flips, ready {ready}");
        (ready, changes)
    };
    let readyz = |want: u16| {
        let (http, url) = (http.clone(), format!("{}/readyz", gateway.base));
        eventually(
            Duration::from_secs(40),
            Duration::from_millis(100),
            move || {
                let (http, url) = (http.clone(), url.clone());
                async move {
                    match http.get(&url).send().await.map(|r| r.status().as_u16()) {
                        Ok(status) if status == want => Ok(()),
                        other => Err(format!("/readyz: {other:?}, waiting for {want}")),
                    }
                }
            },
        )
    };

    gateway.wait_ready(&http, Duration::from_secs(30)).await;
    let (ready, started) = readiness().await;
    assert_eq!(ready, 1.0);
    assert!(started >= 1.0);

    broker.stop();
    readyz(503).await;
    let (ready, away) = readiness().await;
    assert_eq!(ready, 0.0);
    assert!(away > started, "the outage was counted");

    broker.restart();
    readyz(200).await;
    let (ready, back) = readiness().await;
    assert_eq!(ready, 1.0);
    assert!(back > away, "the recovery was counted");
}
