//! The `orders-gateway` binary as operators run it.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::broker;
use crate::helpers::gateway::Gateway;
use crate::helpers::{SseStream, order};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_streams_and_exits_zero_within_ten_seconds() {
    let mut gateway = Gateway::start(&[("KAFKA_BOOTSTRAP_SERVERS", broker::shared())]);
    let http = reqwest::Client::new();
    gateway.wait_ready(&http, Duration::from_secs(30)).await;
    let mut stream = SseStream::open(&http, &format!("{}/orders/stream", gateway.base)).await;
    let response = gateway.post_order(&http).await;
    assert_eq!(response.status(), 202);

    let started = Instant::now();
    gateway.terminate();
    let status = tokio::task::spawn_blocking(move || gateway.wait_exit(Duration::from_secs(10)))
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0), "exit status {status}");
    assert!(started.elapsed() < Duration::from_secs(10));
    let mut saw_goodbye = false;
    while let Some(block) = stream.next_block(Duration::from_secs(2)).await {
        saw_goodbye |= block.comments.iter().any(|c| c.contains("shutting down"));
    }
    assert!(saw_goodbye, "the stream got the shutdown comment");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_cluster_the_gateway_runs_end_to_end_on_its_embedded_broker() {
    let gateway = Gateway::start(&[]);
    let http = reqwest::Client::new();
    let took = gateway.wait_ready(&http, Duration::from_secs(20)).await;
    eprintln!("embedded gateway ready in {took:?}");
    let mut stream = SseStream::open(&http, &format!("{}/orders/stream", gateway.base)).await;

    let response = gateway.post_order(&http).await;
    assert_eq!(response.status(), 202);
    let accepted: Value = response.json().await.unwrap();
    let event = &stream.orders(1, Duration::from_secs(10)).await[0];
    assert_eq!(event.json()["order_id"], accepted["order_id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_the_request_id_and_the_order_id() {
    let mut gateway = Gateway::start(&[("LOG_FORMAT", "json"), ("RUST_LOG", "info")]);
    let http = reqwest::Client::new();
    gateway.wait_ready(&http, Duration::from_secs(20)).await;
    let url = format!("{}/orders", gateway.base);
    let request = http
        .post(url)
        .header("x-request-id", "trace-me-42")
        .json(&order("lara"));
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 202);
    let accepted: Value = response.json().await.unwrap();
    gateway.terminate();
    let log = gateway.log.clone();
    tokio::task::spawn_blocking(move || gateway.wait_exit(Duration::from_secs(10)))
        .await
        .unwrap();

    let text = std::fs::read_to_string(log).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(
        lines
            .iter()
            .all(|l| l["level"].is_string() && l["timestamp"].is_string())
    );
    let finished = lines
        .iter()
        .find(|l| l["span"]["request_id"] == "trace-me-42")
        .unwrap_or_else(|| panic!("no line in the request's span: {text}"));
    assert_eq!(finished["span"]["order_id"], accepted["order_id"]);
    assert_eq!(finished["span"]["path"], "/orders");
}

#[test]
fn an_invalid_setting_stops_start_up_with_exit_code_2_naming_flag_and_env_var() {
    for (var, value, flag) in [
        ("PRODUCE_TIMEOUT", "soon", "--produce-timeout"),
        ("ORDERS_TOPIC_PARTITIONS", "0", "--orders-topic-partitions"),
        ("PRODUCE_TIMEOUT", "1ms", "--produce-timeout"),
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_orders-gateway"))
            .env_clear()
            .env(var, value)
            .output()
            .expect("run gateway");
        assert_eq!(output.status.code(), Some(2), "{var}={value}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(flag), "{var}={value}: {stderr}");
        assert!(
            stderr.contains(var) || stderr.contains(&format!("{flag} <")),
            "{var}={value}: {stderr}"
        );
    }
}

/// Two gateway processes with default settings on one broker, topic and group: a client on
/// either sees every order, whichever process accepted it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateway_processes_each_stream_every_order() {
    let topic = crate::helpers::unique("orders");
    let group = crate::helpers::unique("tracker");
    let env = [
        ("KAFKA_BOOTSTRAP_SERVERS", broker::shared()),
        ("ORDERS_TOPIC", topic.as_str()),
        ("TRACKER_GROUP_ID", group.as_str()),
    ];
    let (a, b) = (Gateway::start(&env), Gateway::start(&env));
    let http = reqwest::Client::new();
    a.wait_ready(&http, Duration::from_secs(30)).await;
    b.wait_ready(&http, Duration::from_secs(30)).await;
    let mut on_a = SseStream::open(&http, &format!("{}/orders/stream", a.base)).await;
    let mut on_b = SseStream::open(&http, &format!("{}/orders/stream", b.base)).await;

    let mut placed = Vec::new();
    for i in 0..6 {
        let via = if i % 2 == 0 { &a } else { &b };
        let accepted: Value = via.post_order(&http).await.json().await.unwrap();
        placed.push(accepted["order_id"].as_str().unwrap().to_owned());
    }
    placed.sort();
    for stream in [&mut on_a, &mut on_b] {
        let mut seen: Vec<String> = stream
            .orders(6, Duration::from_secs(15))
            .await
            .iter()
            .map(|e| e.json()["order_id"].as_str().unwrap().to_owned())
            .collect();
        seen.sort();
        assert_eq!(seen, placed);
    }
}
