//! Readiness, broker outages and shutdown against real broker processes.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::{Broker, TestApp, broker, config, order};

async fn readyz(app: &TestApp) -> (u16, Value) {
    let response = app.get("/readyz").await;
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

async fn wait_for_status(app: &TestApp, want: u16, timeout: Duration) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let (status, body) = readyz(app).await;
        if status == want {
            return body;
        }
        assert!(Instant::now() < deadline, "/readyz stayed {status}: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
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
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = app.post_order(&order("after")).await.status();
        if status == 202 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "POSTs still fail with {status} after the broker returned"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
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
