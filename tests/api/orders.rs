//! POST /orders against a real broker.

use std::collections::HashSet;
use std::time::Duration;

use rdkafka::Message;
use serde_json::{Value, json};

use crate::helpers::{TestApp, broker, kafka, order};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledged_order_is_on_the_topic_and_on_the_stream() {
    let app = TestApp::ready(broker::shared()).await;
    let mut stream = app.stream("").await;

    let response = app.post_order(&order("lara")).await;
    assert_eq!(response.status(), 202);
    let accepted: Value = response.json().await.unwrap();
    let (partition, offset) = (
        accepted["partition"].as_i64().unwrap(),
        accepted["offset"].as_i64().unwrap(),
    );
    assert_eq!(accepted["topic"], app.topic());

    let record = kafka::read_record(broker::shared(), app.topic(), partition as i32, offset);
    let order_id = accepted["order_id"].as_str().unwrap();
    assert_eq!(record.key(), Some(order_id.as_bytes()), "keyed by order id");
    assert_eq!(
        kafka::header(&record, "content-type").as_deref(),
        Some("application/json")
    );
    let value: Value = serde_json::from_slice(record.payload().unwrap()).unwrap();
    assert_eq!(
        value,
        json!({"order_id": order_id, "user": "lara", "item": "frozen yogurt", "quantity": 10,
               "created_at": accepted["created_at"]})
    );

    let event = &stream.orders(1, Duration::from_secs(10)).await[0];
    let data = event.json();
    assert_eq!(data["order_id"], order_id);
    assert_eq!(
        (data["partition"].as_i64(), data["offset"].as_i64()),
        (Some(partition), Some(offset))
    );
    assert!(event.id.as_deref().is_some_and(|id| !id.is_empty()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_orders_are_all_acknowledged_exactly_once() {
    const N: usize = 250;
    let app = TestApp::ready(broker::shared()).await;
    let posts = (0..N).map(|i| {
        let (http, url) = (app.http.clone(), app.url("/orders"));
        tokio::spawn(async move {
            let response = http
                .post(url)
                .json(&order(&format!("user-{i}")))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 202);
            response.json::<Value>().await.unwrap()
        })
    });
    let accepted: Vec<Value> = futures_util::future::join_all(posts)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();

    let positions: HashSet<_> = accepted
        .iter()
        .map(|a| (a["partition"].as_i64(), a["offset"].as_i64()))
        .collect();
    assert_eq!(
        positions.len(),
        N,
        "every order got its own partition/offset"
    );
    let acked_ids: HashSet<_> = accepted
        .iter()
        .map(|a| a["order_id"].as_str().unwrap().to_owned())
        .collect();

    let records = kafka::read_all(broker::shared(), app.topic(), 3, N);
    let stored_ids: Vec<_> = records
        .iter()
        .map(|r| String::from_utf8(r.key().unwrap().to_vec()).unwrap())
        .collect();
    assert_eq!(stored_ids.len(), N, "no record missing, none duplicated");
    assert_eq!(stored_ids.into_iter().collect::<HashSet<_>>(), acked_ids);
}

/// Retries with one Idempotency-Key, at once and one after another, write one record and all
/// get its answer; the same key for another order is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_with_one_idempotency_key_write_exactly_one_record() {
    const RETRIES: usize = 20;
    let app = TestApp::ready(broker::shared()).await;
    let body = order("lara");
    let post = |body: Value| {
        let (http, url) = (app.http.clone(), app.url("/orders"));
        async move {
            let response = http
                .post(url)
                .header("idempotency-key", "checkout-81723")
                .json(&body)
                .send()
                .await
                .unwrap();
            let replayed = response.headers().contains_key("idempotent-replayed");
            (
                response.status(),
                replayed,
                response.json::<Value>().await.unwrap(),
            )
        }
    };
    let mut answers =
        futures_util::future::join_all((0..RETRIES).map(|_| tokio::spawn(post(body.clone()))))
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect::<Vec<_>>();
    answers.push(post(body.clone()).await);
    let first = &answers[0].2;
    for (status, _, answer) in &answers {
        assert_eq!(*status, 202);
        assert_eq!(answer, first, "every retry gets the first answer");
    }
    let published = answers.iter().filter(|(_, replayed, _)| !replayed).count();
    assert_eq!(published, 1, "one attempt published, the rest replayed it");

    let mut changed = body.clone();
    changed["quantity"] = json!(11);
    let (status, _, problem) = post(changed).await;
    assert_eq!(status, 409);
    assert_eq!(problem["type"], "/problems/idempotency-key-reused");

    let records = kafka::read_all(broker::shared(), app.topic(), 3, 1);
    assert_eq!(records.len(), 1, "exactly one record for all the retries");
    let record = &records[0];
    assert_eq!(
        (i64::from(record.partition()), record.offset()),
        (
            first["partition"].as_i64().unwrap(),
            first["offset"].as_i64().unwrap()
        )
    );
    assert_eq!(
        record.key(),
        Some(first["order_id"].as_str().unwrap().as_bytes())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_chosen_order_id_is_the_record_key() {
    let app = TestApp::ready(broker::shared()).await;
    let id = uuid::Uuid::new_v4().to_string();
    let response = app
        .post_order(
            &json!({"order_id": id, "user": "lara", "item": "frozen yogurt", "quantity": 1}),
        )
        .await;
    assert_eq!(response.status(), 202);
    let accepted: Value = response.json().await.unwrap();
    assert_eq!(accepted["order_id"], id.as_str());
    let record = kafka::read_record(
        broker::shared(),
        app.topic(),
        accepted["partition"].as_i64().unwrap() as i32,
        accepted["offset"].as_i64().unwrap(),
    );
    assert_eq!(record.key(), Some(id.as_bytes()));
}

/// Every kind of bad input gets its 4xx problem, and the gateway keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_clear_4xx_and_leaves_the_gateway_healthy() {
    let app = TestApp::ready(broker::shared()).await;
    let post = |content_type: Option<&str>, body: Vec<u8>| {
        let mut request = app.http.post(app.url("/orders")).body(body);
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        request.send()
    };
    let json_ct = Some("application/json");
    let cases: Vec<(Option<&str>, Vec<u8>, u16, &str)> = vec![
        (
            json_ct,
            b"{\"user\": ".to_vec(),
            400,
            "/problems/malformed-json",
        ),
        (
            json_ct,
            b"\xff\xfe".to_vec(),
            400,
            "/problems/malformed-json",
        ),
        (
            json_ct,
            "[".repeat(10_000).into_bytes(),
            400,
            "/problems/malformed-json",
        ),
        (
            None,
            br#"{"user":"a","item":"b","quantity":1}"#.to_vec(),
            415,
            "/problems/unsupported-media-type",
        ),
        (
            Some("text/plain"),
            br#"{"user":"a","item":"b","quantity":1}"#.to_vec(),
            415,
            "/problems/unsupported-media-type",
        ),
        (
            json_ct,
            vec![b' '; 64 * 1024 + 1],
            413,
            "/problems/payload-too-large",
        ),
        (
            json_ct,
            br#"{"user":"","item":7,"quantity":1001,"order_id":"x","extra":true}"#.to_vec(),
            422,
            "/problems/validation",
        ),
        (json_ct, b"[]".to_vec(), 422, "/problems/validation"),
    ];
    for (content_type, body, status, kind) in cases {
        let response = post(content_type, body).await.unwrap();
        assert_eq!(response.status(), status, "{kind}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        let problem: Value = response.json().await.unwrap();
        assert_eq!(
            (problem["type"].as_str(), problem["status"].as_u64()),
            (Some(kind), Some(u64::from(status)))
        );
        assert!(problem["detail"].as_str().is_some_and(|d| !d.is_empty()));
    }

    let problem: Value = post(
        json_ct,
        br#"{"user":"","item":7,"quantity":1001,"order_id":"x","extra":true}"#.to_vec(),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let fields: Vec<_> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        ["order_id", "user", "item", "quantity", "extra"],
        "every invalid field at once"
    );

    assert_eq!(app.get("/healthz").await.status(), 200);
    assert_eq!(app.post_order(&order("still-fine")).await.status(), 202);
}
