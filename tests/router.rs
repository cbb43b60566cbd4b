//! The HTTP edge in process, with a fake publisher and a hub the test feeds: no broker.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use clap::Parser;
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use http_body_util::BodyExt;
use orders_gateway::Config;
use orders_gateway::domain::{Order, Position, TrackedOrder};
use orders_gateway::history::{History, HistoryError, Replayed};
use orders_gateway::http::edge::Edge;
use orders_gateway::http::{AppState, Services, router};
use orders_gateway::hub::Hub;
use orders_gateway::idempotency::Idempotency;
use orders_gateway::publisher::{PublishError, Publisher, Receipt};
use orders_gateway::readiness::Readiness;
use orders_gateway::views::{ClusterViews, GroupView, PartitionView, TopicView, ViewError};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// Answers with a fixed outcome and remembers what it was asked to publish.
#[derive(Default)]
struct FakePublisher {
    fail_with: Option<PublishError>,
    /// How long the "broker" takes to acknowledge.
    delay: Duration,
    published: Mutex<Vec<Order>>,
}

impl Publisher for FakePublisher {
    fn publish<'a>(
        &'a self,
        order: &'a Order,
        _traceparent: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Receipt, PublishError>> {
        Box::pin(async move {
            tokio::time::sleep(self.delay).await;
            if let Some(e) = &self.fail_with {
                return Err(e.clone());
            }
            let mut published = self.published.lock().unwrap();
            published.push(order.clone());
            Ok(Receipt {
                topic: "orders".into(),
                partition: 1,
                offset: published.len() as i64 - 1,
                timestamp: SystemTime::UNIX_EPOCH,
            })
        })
    }
}

/// A cluster of one partition.
struct FakeViews;

impl ClusterViews for FakeViews {
    fn topic(&self) -> BoxFuture<'_, Result<TopicView, ViewError>> {
        Box::pin(async {
            Ok(TopicView {
                topic: "orders".into(),
                partitions: vec![PartitionView {
                    partition: 0,
                    leader: 1,
                    replicas: vec![1],
                    isr: vec![1],
                    low_watermark: 0,
                    high_watermark: 7,
                }],
            })
        })
    }

    fn group(&self) -> BoxFuture<'_, Result<GroupView, ViewError>> {
        Box::pin(async { Err(ViewError("broker down".into())) })
    }
}

/// A topic whose history holds one order at partition 0, offset 0.
struct FakeHistory;

impl History for FakeHistory {
    fn position_at(&self, _: SystemTime) -> BoxFuture<'_, Result<Position, HistoryError>> {
        Box::pin(async { Ok(Position::default()) })
    }

    fn replay(
        &self,
        from: Position,
        to: Position,
    ) -> mpsc::Receiver<Result<Replayed, HistoryError>> {
        let (tx, rx) = mpsc::channel(8);
        if !from.has_passed(0, 0) && to.next_offset(0).is_some_and(|end| end > 0) {
            let _ = tx.try_send(Ok(Replayed::Order(tracked(0))));
        }
        rx
    }
}

struct Harness {
    state: AppState,
    publisher: Arc<FakePublisher>,
}

fn harness(publisher: FakePublisher, buffer: usize) -> Harness {
    harness_with(publisher, buffer, &["--admin-token", "s3cret"])
}

/// A harness whose edge policies come from these command-line flags.
fn harness_with(publisher: FakePublisher, buffer: usize, flags: &[&str]) -> Harness {
    let config =
        Config::try_parse_from(std::iter::once("orders-gateway").chain(flags.iter().copied()))
            .unwrap();
    let publisher = Arc::new(publisher);
    let state = AppState::new(Services {
        publisher: publisher.clone(),
        hub: Arc::new(Hub::new("orders", buffer, 100)),
        readiness: Arc::new(Readiness::default()),
        shutdown: CancellationToken::new(),
        stream_keep_alive: Duration::from_secs(15),
        views: Arc::new(FakeViews),
        edge: Arc::new(Edge::new(&config)),
        idempotency: Arc::new(Idempotency::new(Duration::from_secs(60), 100)),
        history: Arc::new(FakeHistory),
        streams: Arc::new(tokio::sync::Semaphore::new(3)),
    });
    Harness { state, publisher }
}

fn post(body: &str) -> Request<Body> {
    Request::post("/orders")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_owned()))
        .unwrap()
}

async fn send(
    state: &AppState,
    request: Request<Body>,
) -> (StatusCode, axum::http::HeaderMap, Value) {
    let response = router(state.clone()).oneshot(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (parts.status, parts.headers, value)
}

/// GETs `path` and returns the status, headers and body text.
async fn get_text(state: &AppState, path: &str) -> (StatusCode, axum::http::HeaderMap, String) {
    let response = router(state.clone())
        .oneshot(Request::get(path).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    (
        parts.status,
        parts.headers,
        String::from_utf8(bytes.to_vec()).unwrap(),
    )
}

fn tracked(offset: i64) -> TrackedOrder {
    TrackedOrder {
        order_id: format!("o{offset}"),
        user: "lara".into(),
        item: "frozen yogurt".into(),
        quantity: 1,
        created_at: None,
        partition: 0,
        offset,
        timestamp: "2026-11-26T00:00:00.000Z".into(),
        at: SystemTime::UNIX_EPOCH,
    }
}

#[tokio::test]
async fn a_valid_order_is_published_once_and_answered_with_its_receipt() {
    let h = harness(FakePublisher::default(), 16);
    let (status, headers, body) = send(
        &h.state,
        post(r#"{"user":"lara","item":"frozen yogurt","quantity":10}"#),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert!(headers.contains_key("x-request-id"));
    let published = h.publisher.published.lock().unwrap().clone();
    assert_eq!(published.len(), 1);
    assert_eq!(body["order_id"], published[0].order_id.to_string());
    assert_eq!(
        (
            body["topic"].as_str(),
            body["partition"].as_i64(),
            body["offset"].as_i64()
        ),
        (Some("orders"), Some(1), Some(0))
    );
    assert_eq!(body["timestamp"], "1970-01-01T00:00:00.000Z");
}

#[tokio::test]
async fn an_invalid_order_is_never_published() {
    let h = harness(FakePublisher::default(), 16);
    let (status, _, body) = send(&h.state, post(r#"{"user":"lara","quantity":0}"#)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["errors"].as_array().unwrap().len(), 2);
    assert!(h.publisher.published.lock().unwrap().is_empty());
}

#[tokio::test]
async fn broker_failures_become_503_problems_with_retry_after() {
    for (error, retry_after) in [
        (PublishError::Timeout, "5"),
        (PublishError::QueueFull, "1"),
        (
            PublishError::Unavailable("Local: All broker connections are down".into()),
            "5",
        ),
    ] {
        let h = harness(
            FakePublisher {
                fail_with: Some(error.clone()),
                ..Default::default()
            },
            16,
        );
        let (status, headers, body) =
            send(&h.state, post(r#"{"user":"a","item":"b","quantity":1}"#)).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{error:?}");
        assert_eq!(headers[header::RETRY_AFTER], retry_after);
        assert_eq!(headers[header::CONTENT_TYPE], "application/problem+json");
        assert_eq!(body["type"], "/problems/broker-unavailable");
        assert!(
            !body["detail"].as_str().unwrap().contains("Local:"),
            "no librdkafka text leaks"
        );
    }
}

#[tokio::test]
async fn unknown_routes_and_methods_are_problems_too() {
    let h = harness(FakePublisher::default(), 16);
    let (status, headers, body) =
        send(&h.state, Request::get("/nope").body(Body::empty()).unwrap()).await;
    assert_eq!(
        (status, body["status"].as_u64()),
        (StatusCode::NOT_FOUND, Some(404))
    );
    assert_eq!(headers[header::CONTENT_TYPE], "application/problem+json");
    let (status, headers, body) = send(
        &h.state,
        Request::delete("/orders").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(
        (status, body["status"].as_u64()),
        (StatusCode::METHOD_NOT_ALLOWED, Some(405))
    );
    assert_eq!(headers[header::CONTENT_TYPE], "application/problem+json");
}

#[tokio::test]
async fn readiness_names_what_is_missing_and_recovers() {
    let h = harness(FakePublisher::default(), 16);
    let get = || Request::get("/readyz").body(Body::empty()).unwrap();
    let (status, headers, body) = send(&h.state, get()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(headers.contains_key(header::RETRY_AFTER));
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("broker is not reachable")
    );
    h.state.readiness.set_broker(true);
    h.state.readiness.set_topic(true);
    h.state.readiness.set_tracker(true);
    assert_eq!(send(&h.state, get()).await.0, StatusCode::OK);
    let (status, _, body) = send(
        &h.state,
        Request::get("/healthz").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::OK, Some("ok"))
    );
}

#[tokio::test]
async fn a_request_id_sent_by_the_client_is_echoed() {
    let h = harness(FakePublisher::default(), 16);
    let request = Request::get("/healthz")
        .header("x-request-id", "abc-123")
        .body(Body::empty())
        .unwrap();
    let (_, headers, _) = send(&h.state, request).await;
    assert_eq!(headers["x-request-id"], "abc-123");
}

type SseBody = axum::body::BodyDataStream;

/// Opens `GET /orders/stream` and reads its opening comment.
async fn open_stream(state: &AppState) -> SseBody {
    let response = router(state.clone())
        .oneshot(Request::get("/orders/stream").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "text/event-stream"
    );
    let mut body = response.into_body().into_data_stream();
    assert!(
        read_until(&mut body, ": connected")
            .await
            .contains("retry: 2000")
    );
    body
}

/// The stream ends within 2 s.
async fn assert_closed(body: &mut SseBody) {
    let next = tokio::time::timeout(Duration::from_secs(2), body.next()).await;
    assert!(next.unwrap().is_none(), "the stream is closed");
}

/// Reads SSE text from a body until `needle` appears (or the body ends).
async fn read_until(
    body: &mut (impl futures_util::Stream<Item = Result<axum::body::Bytes, axum::Error>> + Unpin),
    needle: &str,
) -> String {
    let mut text = String::new();
    while !text.contains(needle) {
        match tokio::time::timeout(Duration::from_secs(5), body.next()).await {
            Ok(Some(chunk)) => text.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap()),
            _ => break,
        }
    }
    text
}

#[tokio::test]
async fn the_stream_sends_hub_orders_as_order_events_with_ids() {
    let h = harness(FakePublisher::default(), 16);
    let mut body = open_stream(&h.state).await;
    h.state.hub.publish(tracked(0));
    let text = read_until(&mut body, "\n\n").await;
    let id = h.state.hub.position().encode("orders");
    assert!(text.contains("event: order"), "{text}");
    assert!(text.contains(&format!("id: {id}")), "{text}");
    assert!(text.contains(r#""order_id":"o0""#), "{text}");
}

/// A client whose connection is not read falls behind; it is told how much it missed and
/// closed, while the hub and other clients are never held up.
#[tokio::test]
async fn a_client_that_falls_too_far_behind_gets_an_overflow_event_and_is_closed() {
    let h = harness(FakePublisher::default(), 4);
    let mut body = open_stream(&h.state).await;
    let mut fast = h.state.hub.subscribe();
    for offset in 0..20 {
        assert!(h.state.hub.publish(tracked(offset)), "the hub never blocks");
        assert!(matches!(
            fast.next().await,
            orders_gateway::hub::Next::Event(_)
        ));
    }
    let text = read_until(&mut body, "event: overflow").await;
    assert!(text.contains("event: overflow"), "{text}");
    let data = text
        .split("event: overflow\ndata: ")
        .nth(1)
        .unwrap()
        .lines()
        .next()
        .unwrap();
    let overflow: Value = serde_json::from_str(data).unwrap();
    assert_eq!(overflow["missed"], 16);
    assert_closed(&mut body).await;
}

#[tokio::test]
async fn shutdown_ends_the_stream_with_a_reconnect_hint() {
    let h = harness(FakePublisher::default(), 16);
    let mut body = open_stream(&h.state).await;
    h.state.shutdown.cancel();
    let text = read_until(&mut body, "retry:").await;
    assert!(text.contains(": gateway shutting down"), "{text}");
    assert_closed(&mut body).await;
}

#[tokio::test]
async fn a_body_over_64_kib_is_413_even_without_content_length() {
    let h = harness(FakePublisher::default(), 16);
    let chunks =
        futures_util::stream::iter((0..17).map(|_| Ok::<_, std::io::Error>(vec![b' '; 4096])));
    let request = Request::post("/orders")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(chunks))
        .unwrap();
    let (status, _, body) = send(&h.state, request).await;
    assert_eq!(
        (status, body["type"].as_str()),
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            Some("/problems/payload-too-large")
        )
    );
}

#[tokio::test]
async fn the_served_openapi_document_is_the_generated_one() {
    let h = harness(FakePublisher::default(), 16);
    let (_, headers, body) = get_text(&h.state, "/openapi.json").await;
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");
    assert_eq!(body, orders_gateway::http::docs::openapi_json());
}

#[tokio::test]
async fn the_docs_page_is_served_from_the_binary() {
    let h = harness(FakePublisher::default(), 16);
    let (status, _, html) = get_text(&h.state, "/docs/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        html.contains("swagger-ui-bundle.js") && !html.contains("http"),
        "no CDN asset: {html}"
    );
}

#[tokio::test]
async fn admin_views_need_the_bearer_token_when_one_is_set() {
    let h = harness(FakePublisher::default(), 16);
    let get = |auth: Option<&str>| {
        let mut request = Request::get("/admin/topic");
        if let Some(auth) = auth {
            request = request.header(header::AUTHORIZATION, auth);
        }
        request.body(Body::empty()).unwrap()
    };
    for auth in [
        None,
        Some("Bearer wrong"),
        Some("s3cret"),
        Some("Basic czNjcmV0"),
    ] {
        let (status, headers, body) = send(&h.state, get(auth)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{auth:?}");
        assert_eq!(headers[header::WWW_AUTHENTICATE], "Bearer");
        assert_eq!(body["type"], "/problems/unauthorized");
    }
    let (status, _, body) = send(&h.state, get(Some("Bearer s3cret"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["partitions"][0]["high_watermark"], 7);

    let group = Request::get("/admin/group").header(header::AUTHORIZATION, "Bearer s3cret");
    let (status, headers, _) = send(&h.state, group.body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(headers.contains_key(header::RETRY_AFTER));
}

#[tokio::test]
async fn without_a_token_admin_views_are_local_only() {
    let h = harness_with(FakePublisher::default(), 16, &[]);
    let from = |ip: [u8; 4]| {
        let mut request = Request::get("/admin/topic").body(Body::empty()).unwrap();
        let addr = std::net::SocketAddr::from((ip, 40000));
        request
            .extensions_mut()
            .insert(axum::extract::ConnectInfo(addr));
        request
    };
    assert_eq!(send(&h.state, from([127, 0, 0, 1])).await.0, StatusCode::OK);
    let (status, _, body) = send(&h.state, from([192, 0, 2, 7])).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body["detail"].as_str().unwrap().contains("ADMIN_TOKEN"));
}

#[tokio::test]
async fn the_live_page_is_served_at_the_root_without_outside_assets() {
    let h = harness(FakePublisher::default(), 16);
    let (status, headers, html) = get_text(&h.state, "/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(headers.contains_key(header::CONTENT_SECURITY_POLICY));
    assert!(html.contains("/orders/stream") && html.contains("EventSource"));
    assert!(
        !html.contains("src=\"http") && !html.contains("href=\"http"),
        "no CDN asset"
    );
}

fn post_with(body: &str, headers: &[(&str, &str)]) -> Request<Body> {
    let mut request = post(body);
    for (name, value) in headers {
        request.headers_mut().insert(
            axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    request
}

const ORDER: &str = r#"{"user":"lara","item":"frozen yogurt","quantity":10}"#;

#[tokio::test]
async fn a_retry_with_the_same_idempotency_key_gets_the_first_answer() {
    let h = harness(FakePublisher::default(), 16);
    let request = || post_with(ORDER, &[("idempotency-key", "order-7")]);
    let (status, headers, first) = send(&h.state, request()).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert!(!headers.contains_key("idempotent-replayed"));
    let (status, headers, again) = send(&h.state, request()).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(headers["idempotent-replayed"], "true");
    assert_eq!(
        first, again,
        "same order_id, created_at, partition and offset"
    );
    assert_eq!(h.publisher.published.lock().unwrap().len(), 1);

    // Without the key, the same body is a new order.
    let (_, _, other) = send(&h.state, post(ORDER)).await;
    assert_ne!(other["order_id"], first["order_id"]);
    assert_eq!(h.publisher.published.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn concurrent_retries_with_one_key_publish_once() {
    let publisher = FakePublisher {
        delay: Duration::from_millis(50),
        ..FakePublisher::default()
    };
    let h = harness(publisher, 16);
    let answers = futures_util::future::join_all(
        (0..16).map(|_| send(&h.state, post_with(ORDER, &[("idempotency-key", "k-1")]))),
    )
    .await;
    assert_eq!(h.publisher.published.lock().unwrap().len(), 1);
    for (status, _, body) in &answers {
        assert_eq!(*status, StatusCode::ACCEPTED);
        assert_eq!(body, &answers[0].2);
    }
    let replayed = answers
        .iter()
        .filter(|(_, headers, _)| headers.contains_key("idempotent-replayed"))
        .count();
    assert_eq!(replayed, 15);
}

#[tokio::test]
async fn a_key_reused_for_another_order_is_409_and_publishes_nothing() {
    let h = harness(FakePublisher::default(), 16);
    send(&h.state, post_with(ORDER, &[("idempotency-key", "k")])).await;
    let other = r#"{"user":"lara","item":"frozen yogurt","quantity":11}"#;
    let (status, headers, body) =
        send(&h.state, post_with(other, &[("idempotency-key", "k")])).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(headers[header::CONTENT_TYPE], "application/problem+json");
    assert_eq!(body["type"], "/problems/idempotency-key-reused");
    assert_eq!(h.publisher.published.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_key_names_the_order_when_the_body_does_not() {
    let h = harness(FakePublisher::default(), 16);
    let (_, _, first) = send(&h.state, post_with(ORDER, &[("idempotency-key", "k-42")])).await;
    // A second gateway (a fresh store) derives the same order id from the same key.
    let other = harness(FakePublisher::default(), 16);
    let (_, _, second) = send(
        &other.state,
        post_with(ORDER, &[("idempotency-key", "k-42")]),
    )
    .await;
    assert_eq!(first["order_id"], second["order_id"]);
    // An explicit order id wins over the key's.
    let explicit = r#"{"order_id":"6f1c1e1e-0c1a-4a8e-9d4e-6f0b5d8f3c2a","user":"lara","item":"x","quantity":1}"#;
    let (_, _, body) = send(
        &h.state,
        post_with(explicit, &[("idempotency-key", "k-43")]),
    )
    .await;
    assert_eq!(body["order_id"], "6f1c1e1e-0c1a-4a8e-9d4e-6f0b5d8f3c2a");
}

#[tokio::test]
async fn a_malformed_idempotency_key_is_400() {
    let h = harness(FakePublisher::default(), 16);
    let long = "k".repeat(256);
    for key in ["", "has space", long.as_str()] {
        let (status, _, body) = send(&h.state, post_with(ORDER, &[("idempotency-key", key)])).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{key:?}");
        assert!(body["detail"].as_str().unwrap().contains("Idempotency-Key"));
    }
    assert!(h.publisher.published.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_failed_attempt_answers_503_and_is_not_remembered() {
    let h = harness(
        FakePublisher {
            fail_with: Some(PublishError::Timeout),
            ..FakePublisher::default()
        },
        16,
    );
    let (status, _, _) = send(&h.state, post_with(ORDER, &[("idempotency-key", "k")])).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let (status, headers, _) = send(&h.state, post_with(ORDER, &[("idempotency-key", "k")])).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        !headers.contains_key("idempotent-replayed"),
        "the retry tried again"
    );
}

#[tokio::test]
async fn with_api_tokens_only_their_holders_may_order() {
    let h = harness_with(FakePublisher::default(), 16, &["--api-token", "alpha,beta"]);
    for auth in [None, Some("Bearer gamma"), Some("Basic YWxwaGE=")] {
        let headers: Vec<(&str, &str)> = auth.map(|a| ("authorization", a)).into_iter().collect();
        let (status, headers, body) = send(&h.state, post_with(ORDER, &headers)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{auth:?}");
        assert_eq!(headers[header::WWW_AUTHENTICATE], "Bearer");
        assert_eq!(body["type"], "/problems/unauthorized");
    }
    // Checked before the body: a caller without a token learns nothing about its body.
    let (status, _, _) = send(&h.state, post("not json")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(h.publisher.published.lock().unwrap().is_empty());

    let (status, _, _) = send(
        &h.state,
        post_with(ORDER, &[("authorization", "Bearer beta")]),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    // Reading stays open.
    let (status, _, _) = get_text(&h.state, "/healthz").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_client_over_its_rate_gets_429_with_retry_after_and_probes_never_do() {
    let h = harness_with(
        FakePublisher::default(),
        16,
        &["--rate-limit", "1", "--rate-limit-burst", "3"],
    );
    for _ in 0..3 {
        let (status, _, _) = send(&h.state, post(ORDER)).await;
        assert_eq!(status, StatusCode::ACCEPTED);
    }
    let (status, headers, body) = send(&h.state, post(ORDER)).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(headers[header::RETRY_AFTER], "1");
    assert_eq!(body["type"], "/problems/rate-limited");
    assert_eq!(h.publisher.published.lock().unwrap().len(), 3);
    for path in ["/healthz", "/readyz", "/metrics"] {
        let (status, _, _) = get_text(&h.state, path).await;
        assert_ne!(status, StatusCode::TOO_MANY_REQUESTS, "{path}");
    }
}

#[tokio::test]
async fn oversized_bodies_and_headers_are_refused_by_the_configured_limits() {
    let h = harness_with(
        FakePublisher::default(),
        16,
        &["--max-body-bytes", "100", "--max-header-bytes", "1024"],
    );
    let padded = format!(
        r#"{{"user":"lara","item":"{}","quantity":1}}"#,
        "x".repeat(100)
    );
    let (status, _, body) = send(&h.state, post(&padded)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(body["detail"].as_str().unwrap().contains("100 bytes"));

    let big = "v".repeat(1024);
    let (status, headers, body) = send(&h.state, post_with(ORDER, &[("x-padding", &big)])).await;
    assert_eq!(status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert_eq!(headers[header::CONTENT_TYPE], "application/problem+json");
    assert_eq!(body["type"], "/problems/headers-too-large");
    assert!(h.publisher.published.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_request_that_outlasts_request_timeout_is_408() {
    let publisher = FakePublisher {
        delay: Duration::from_secs(5),
        ..FakePublisher::default()
    };
    let h = harness_with(publisher, 16, &["--request-timeout", "100ms"]);
    let (status, _, body) = send(&h.state, post(ORDER)).await;
    assert_eq!(status, StatusCode::REQUEST_TIMEOUT);
    assert_eq!(body["type"], "/problems/request-timeout");
}

async fn preflight(state: &AppState, origin: &str) -> axum::http::HeaderMap {
    let request = Request::builder()
        .method("OPTIONS")
        .uri("/orders")
        .header(header::ORIGIN, origin)
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
        .header(
            header::ACCESS_CONTROL_REQUEST_HEADERS,
            "content-type,idempotency-key",
        )
        .body(Body::empty())
        .unwrap();
    send(state, request).await.1
}

#[tokio::test]
async fn cors_is_same_origin_unless_origins_are_configured() {
    let closed = harness(FakePublisher::default(), 16);
    let headers = preflight(&closed.state, "https://shop.example").await;
    assert!(!headers.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN));

    let open = harness_with(
        FakePublisher::default(),
        16,
        &["--cors-allowed-origins", "https://shop.example"],
    );
    let headers = preflight(&open.state, "https://shop.example").await;
    assert_eq!(
        headers[header::ACCESS_CONTROL_ALLOW_ORIGIN],
        "https://shop.example"
    );
    let allowed = headers[header::ACCESS_CONTROL_ALLOW_HEADERS]
        .to_str()
        .unwrap();
    assert!(allowed.contains("idempotency-key"), "{allowed}");
    let headers = preflight(&open.state, "https://evil.example").await;
    assert!(!headers.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN));
}
