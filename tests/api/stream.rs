//! GET /orders/stream and the tracker behind it, against a real broker.

use std::time::Duration;

use serde_json::Value;

use crate::helpers::{TestApp, broker, eventually, kafka, order};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_is_an_event_stream_that_proxies_do_not_buffer() {
    let app = TestApp::ready(broker::shared()).await;
    let stream = app.stream("").await;
    let headers = &stream.response_headers;
    assert_eq!(headers["content-type"], "text/event-stream");
    assert_eq!(headers["cache-control"], "no-cache");
    assert_eq!(headers["x-accel-buffering"], "no");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_written_by_another_kafka_client_appears_on_the_stream() {
    let app = TestApp::ready(broker::shared()).await;
    let mut stream = app.stream("").await;
    // What the original producer.py sent: no created_at, its own id.
    let value = br#"{"order_id": "py-1", "user": "lara", "item": "frozen yogurt", "quantity": 10}"#;
    let (partition, offset) =
        kafka::produce_raw(broker::shared(), app.topic(), "py-1", value).await;

    let data = stream.orders(1, Duration::from_secs(10)).await[0].json();
    assert_eq!(data["order_id"], "py-1");
    assert_eq!(
        (data["partition"].as_i64(), data["offset"].as_i64()),
        (Some(partition.into()), Some(offset))
    );
    assert!(data.get("created_at").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_records_are_skipped_and_the_stream_goes_on() {
    let app = TestApp::ready(broker::shared()).await;
    let mut stream = app.stream("").await;
    let bootstrap = broker::shared();
    for (key, value) in [
        ("a", &b"not json"[..]),
        ("b", br#"{"user": 1}"#),
        ("c", b""),
    ] {
        kafka::produce_raw(bootstrap, app.topic(), key, value).await;
    }
    let good = br#"{"order_id": "good", "user": "lara", "item": "frozen yogurt", "quantity": 1}"#;
    kafka::produce_raw(bootstrap, app.topic(), "good", good).await;

    let events = stream.orders(1, Duration::from_secs(10)).await;
    assert_eq!(events[0].json()["order_id"], "good");
    assert!(
        stream
            .next_event(Duration::from_millis(500))
            .await
            .is_none(),
        "poison was not streamed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_client_gets_every_order_once_in_partition_order() {
    let app = TestApp::ready(broker::shared()).await;
    let mut a = app.stream("").await;
    let mut b = app.stream("").await;
    for i in 0..30 {
        assert_eq!(app.post_order(&order(&format!("u{i}"))).await.status(), 202);
    }
    let key = |e: &crate::helpers::sse::SseEvent| {
        let d = e.json();
        (
            d["partition"].as_i64().unwrap(),
            d["offset"].as_i64().unwrap(),
        )
    };
    let seen_a: Vec<_> = a
        .orders(30, Duration::from_secs(15))
        .await
        .iter()
        .map(key)
        .collect();
    let seen_b: Vec<_> = b
        .orders(30, Duration::from_secs(15))
        .await
        .iter()
        .map(key)
        .collect();
    assert_eq!(seen_a, seen_b);
    for p in 0..3 {
        let offsets: Vec<_> = seen_a
            .iter()
            .filter(|(q, _)| *q == p)
            .map(|(_, o)| *o)
            .collect();
        assert_eq!(
            offsets,
            (0..offsets.len() as i64).collect::<Vec<_>>(),
            "partition {p}"
        );
    }
    assert!(
        a.next_event(Duration::from_millis(300)).await.is_none(),
        "nothing twice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tracker_commits_what_it_handed_to_the_hub() {
    let app = TestApp::ready(broker::shared()).await;
    let mut stream = app.stream("").await;
    for i in 0..5 {
        assert_eq!(app.post_order(&order(&format!("u{i}"))).await.status(), 202);
    }
    stream.orders(5, Duration::from_secs(10)).await;
    let (topic, group) = (app.topic().to_owned(), app.config.tracker_group_id.clone());
    eventually(
        Duration::from_secs(10),
        Duration::from_millis(200),
        || async {
            match kafka::committed_total(broker::shared(), &group, &topic, 3) {
                5 => Ok(()),
                committed => Err(format!("group committed {committed} of 5")),
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn since_replays_recent_orders_and_limit_ends_the_stream() {
    let app = TestApp::ready(broker::shared()).await;
    let first: Value = app.post_order(&order("early")).await.json().await.unwrap();
    let second: Value = app.post_order(&order("late")).await.json().await.unwrap();

    let since = second["created_at"].as_str().unwrap();
    let mut stream = app.stream(&format!("?since={since}&limit=1")).await;
    let events = stream.orders(1, Duration::from_secs(10)).await;
    assert_eq!(
        events[0].json()["order_id"],
        second["order_id"],
        "{first} {second} {:?}",
        events[0]
    );
    let after = stream.next_block(Duration::from_secs(2)).await;
    assert!(after.is_none(), "the stream ended, got {after:?}");

    let mut all = app.stream("?since=0&limit=2").await;
    let mut ids: Vec<_> = all
        .orders(2, Duration::from_secs(10))
        .await
        .iter()
        .map(|e| e.json()["order_id"].clone())
        .collect();
    let mut expected = vec![first["order_id"].clone(), second["order_id"].clone()];
    // Order holds per partition only; the two orders may sit on different partitions.
    ids.sort_by_key(ToString::to_string);
    expected.sort_by_key(ToString::to_string);
    assert_eq!(ids, expected);

    let response = app.get("/orders/stream?since=yesterday").await;
    assert_eq!(response.status(), 400);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
}
