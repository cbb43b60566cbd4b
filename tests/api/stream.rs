//! GET /orders/stream and the tracker behind it, against a real broker.

use std::time::Duration;

use serde_json::Value;

use crate::helpers::{SseStream, TestApp, broker, config, eventually, kafka, order};

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
    let huge = format!(
        r#"{{"order_id": "huge", "user": "{}", "item": "x", "quantity": 1}}"#,
        "u".repeat(200_000)
    );
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    for (key, value) in [
        ("a", &b"not json"[..]),
        ("b", br#"{"user": 1}"#),
        ("c", b""),
        ("d", b"\xff\xfe{"),
        ("e", huge.as_bytes()),
        ("f", deep.as_bytes()),
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
    assert_eq!(app.get("/healthz").await.status(), 200);
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

/// Places `n` orders one after the other (one record per batch keeps Tansu's high
/// watermark exact) and returns their order ids.
async fn place(app: &TestApp, user: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::with_capacity(n);
    for _ in 0..n {
        let accepted: Value = app.post_order(&order(user)).await.json().await.unwrap();
        ids.push(accepted["order_id"].as_str().unwrap().to_owned());
    }
    ids
}

fn order_ids(events: &[crate::helpers::sse::SseEvent]) -> Vec<String> {
    events
        .iter()
        .map(|e| e.json()["order_id"].as_str().unwrap().to_owned())
        .collect()
}

/// Orders of one partition must arrive in offset order; across partitions any interleaving.
fn assert_partition_order(events: &[crate::helpers::sse::SseEvent]) {
    let mut last = std::collections::HashMap::new();
    for e in events {
        let d = e.json();
        let (p, o) = (
            d["partition"].as_i64().unwrap(),
            d["offset"].as_i64().unwrap(),
        );
        if let Some(prev) = last.insert(p, o) {
            assert!(o > prev, "partition {p}: offset {o} after {prev}");
        }
    }
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_resuming_mid_stream_gets_every_missed_order_once() {
    let app = TestApp::ready(broker::shared()).await;
    let mut first = app.stream("").await;
    let early = place(&app, "lara", 10).await;
    let seen = first.orders(4, Duration::from_secs(10)).await;
    let resume_id = seen.last().unwrap().id.clone().unwrap();
    drop(first);
    let late = place(&app, "lara", 5).await;

    let mut resumed =
        SseStream::open_with_header(&app.http, &app.url("/orders/stream"), &resume_id).await;
    let rest = resumed.orders(11, Duration::from_secs(15)).await;
    assert_partition_order(&rest);
    let mut expected: Vec<String> = early.into_iter().chain(late).collect();
    for id in order_ids(&seen) {
        expected.retain(|e| *e != id);
    }
    assert_eq!(
        sorted(order_ids(&rest)),
        sorted(expected),
        "no gap, no duplicate"
    );
    assert!(
        resumed
            .next_event(Duration::from_millis(500))
            .await
            .is_none(),
        "nothing more"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_older_than_memory_is_read_from_kafka_and_joins_the_live_feed() {
    // The hub remembers only 3 orders; the client resumes 9 orders back.
    let app = TestApp::spawn(config(broker::shared(), &["--stream-replay", "3"])).await;
    app.wait_ready(Duration::from_secs(30)).await;
    let mut first = app.stream("").await;
    let placed = place(&app, "lara", 10).await;
    let seen = first.orders(10, Duration::from_secs(10)).await;
    let resume_id = seen[0].id.clone().unwrap();

    let mut resumed = app.stream(&format!("?last_event_id={resume_id}")).await;
    let replayed = resumed.orders(9, Duration::from_secs(15)).await;
    assert_partition_order(&replayed);
    let after_first: Vec<String> = order_ids(&seen)[1..].to_vec();
    assert_eq!(sorted(order_ids(&replayed)), sorted(after_first));
    // The seam: a live order comes next, exactly once.
    let live = place(&app, "lara", 1).await;
    assert_eq!(
        order_ids(&resumed.orders(1, Duration::from_secs(10)).await),
        live
    );
    assert!(
        resumed
            .next_event(Duration::from_millis(500))
            .await
            .is_none()
    );
    assert_eq!(placed.len(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_true_starts_at_the_tail_and_filters_select_by_user_and_item() {
    let app = TestApp::ready(broker::shared()).await;
    // The live tail is what the tracker hands over after the client connects: wait until
    // the old orders were tracked before connecting.
    let mut probe = app.stream("").await;
    place(&app, "old", 2).await;
    probe.orders(2, Duration::from_secs(10)).await;
    let mut live = app.stream("?live=true").await;
    let mut alice = app.stream("?user=alice").await;
    let mut alice_tea = app.stream("?user=alice&item=tea").await;
    for (user, item) in [("bob", "tea"), ("alice", "cake"), ("alice", "tea")] {
        let body = serde_json::json!({"user": user, "item": item, "quantity": 1});
        assert_eq!(app.post_order(&body).await.status(), 202);
    }
    let users = |events: Vec<crate::helpers::sse::SseEvent>| -> Vec<(String, String)> {
        events
            .iter()
            .map(|e| {
                let d = e.json();
                (
                    d["user"].as_str().unwrap().to_owned(),
                    d["item"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let all = users(live.orders(3, Duration::from_secs(10)).await);
    assert!(
        !all.iter().any(|(u, _)| u == "old"),
        "live starts at the tail: {all:?}"
    );
    let mut of_alice = users(alice.orders(2, Duration::from_secs(10)).await);
    of_alice.sort();
    assert_eq!(
        of_alice,
        [
            ("alice".into(), "cake".into()),
            ("alice".into(), "tea".into())
        ]
    );
    assert_eq!(
        users(alice_tea.orders(1, Duration::from_secs(10)).await),
        [("alice".into(), "tea".into())]
    );
    assert!(
        alice_tea
            .next_event(Duration::from_millis(500))
            .await
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filtered_stream_resumes_with_its_filter() {
    let app = TestApp::ready(broker::shared()).await;
    let mut first = app.stream("?user=alice").await;
    let mine = place(&app, "alice", 2).await;
    place(&app, "bob", 2).await;
    let seen = first.orders(2, Duration::from_secs(10)).await;
    drop(first);
    let bobs_later = place(&app, "bob", 1).await;
    let alices_later = place(&app, "alice", 1).await;
    let id = seen.last().unwrap().id.clone().unwrap();
    let mut resumed = app.stream(&format!("?user=alice&last_event_id={id}")).await;
    let next = resumed.orders(1, Duration::from_secs(10)).await;
    assert_eq!(order_ids(&next), alices_later);
    assert!(
        resumed
            .next_event(Duration::from_millis(500))
            .await
            .is_none(),
        "{bobs_later:?} filtered"
    );
    assert_eq!(sorted(order_ids(&seen)), sorted(mine));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_or_foreign_last_event_ids_are_400_problems() {
    let app = TestApp::ready(broker::shared()).await;
    let other_topic = {
        let mut p = orders_gateway::domain::Position::default();
        p.advance(0, 1, 1_764_000_000_000);
        p.encode("some-other-topic")
    };
    for id in ["not-an-id", "AAAA", other_topic.as_str()] {
        let response = app
            .http
            .get(app.url("/orders/stream"))
            .header("last-event-id", id)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{id}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        let problem: Value = response.json().await.unwrap();
        assert!(
            problem["detail"]
                .as_str()
                .unwrap()
                .contains("last event id"),
            "{problem}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_max_streams_a_client_gets_429_with_retry_after() {
    let app = TestApp::spawn(config(broker::shared(), &["--max-streams", "2"])).await;
    app.wait_ready(Duration::from_secs(30)).await;
    let one = app.stream("").await;
    let _two = app.stream("").await;
    let response = app.get("/orders/stream").await;
    assert_eq!(response.status(), 429);
    assert!(response.headers().contains_key("retry-after"));
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    drop(one);
    eventually(
        Duration::from_secs(5),
        Duration::from_millis(50),
        || async {
            match app
                .get("/orders/stream?limit=1&live=true")
                .await
                .status()
                .as_u16()
            {
                200 => Ok(()),
                status => Err(format!("a freed slot is still refused: {status}")),
            }
        },
    )
    .await;
}

/// Two gateways, one broker, default settings: a client on either replica sees every
/// order, whichever replica accepted it, and the group keeps committing the progress.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_each_stream_every_order_and_share_the_group() {
    let shared = config(broker::shared(), &[]);
    let a = TestApp::spawn(shared.clone()).await;
    let b = TestApp::spawn(shared).await;
    a.wait_ready(Duration::from_secs(30)).await;
    b.wait_ready(Duration::from_secs(30)).await;
    let mut on_a = a.stream("").await;
    let mut on_b = b.stream("").await;

    let mut placed = Vec::new();
    for i in 0..6 {
        let via = if i % 2 == 0 { &a } else { &b };
        placed.extend(place(via, &format!("u{i}"), 1).await);
    }
    let seen_a = order_ids(&on_a.orders(6, Duration::from_secs(15)).await);
    let seen_b = order_ids(&on_b.orders(6, Duration::from_secs(15)).await);
    assert_eq!(sorted(seen_a), sorted(placed.clone()));
    assert_eq!(sorted(seen_b), sorted(placed));

    let (topic, group) = (a.topic().to_owned(), a.config.tracker_group_id.clone());
    eventually(
        Duration::from_secs(15),
        Duration::from_millis(300),
        || async {
            match kafka::committed_total(broker::shared(), &group, &topic, 3) {
                6 => Ok(()),
                committed => Err(format!("the group committed {committed} of 6")),
            }
        },
    )
    .await;
}

/// Opens the stream over a socket with a tiny receive window and reads nothing until
/// `read_all`: a client on a slow network.
async fn stalled_client(app: &TestApp, path: &str) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(app.addr).await.unwrap();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: test\r\nAccept: text/event-stream\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    stream
}

/// Everything the server sent until it closed, as SSE events (chunked encoding undone).
async fn read_all(mut stream: tokio::net::TcpStream) -> Vec<crate::helpers::sse::SseEvent> {
    use tokio::io::AsyncReadExt;
    let mut raw = Vec::new();
    let done = tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut raw)).await;
    let text = String::from_utf8_lossy(&raw).into_owned();
    assert!(
        done.is_ok(),
        "the stalled stream did not end: {} bytes, {} orders, {} overflow events",
        raw.len(),
        text.matches("event: order").count(),
        text.matches("event: overflow").count()
    );
    let (head, mut chunked) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let mut body = String::new();
    while let Some((size, rest)) = chunked.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap();
        if size == 0 {
            break;
        }
        body.push_str(&rest[..size]);
        chunked = &rest[size + 2..];
    }
    body.split("\n\n")
        .map(crate::helpers::sse::parse)
        .filter(|e| !e.event.is_empty())
        .collect()
}

/// Thousands of orders: a client that cannot keep up is told so with the id to resume
/// from, while the fast client beside it gets every order; resuming from that id (read
/// from Kafka, as memory holds only 100) completes the slow client's set with no gap and
/// no duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_client_beside_a_fast_one_loses_nothing_under_3000_orders() {
    const N: usize = 3000;
    // Accepted sockets inherit the listener's small send buffer, so the kernel cannot hide a
    // slow reader behind megabytes of loopback buffering (its autotuning would).
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_send_buffer_size(8192).unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(1024).unwrap();
    let app = TestApp::spawn_on(
        // The slow client must overflow within N orders: a buffer below N, whatever the
        // default.
        config(
            broker::shared(),
            &["--stream-replay", "100", "--stream-buffer", "1024"],
        ),
        listener,
    )
    .await;
    app.wait_ready(Duration::from_secs(30)).await;
    let mut fast = app.stream("").await;
    // The fast client reads as orders arrive.
    let fast =
        tokio::spawn(async move { order_ids(&fast.orders(N, Duration::from_secs(90)).await) });
    let slow = stalled_client(&app, "/orders/stream").await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let workers = (0..8).map(|w| {
        let (http, url) = (app.http.clone(), app.url("/orders"));
        tokio::spawn(async move {
            for i in 0..N / 8 {
                let response = http
                    .post(&url)
                    .json(&order(&format!("w{w}-{i}")))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 202);
            }
        })
    });
    for worker in futures_util::future::join_all(workers).await {
        worker.unwrap();
    }
    let all = fast.await.unwrap();
    assert_eq!(
        all.iter().collect::<std::collections::BTreeSet<_>>().len(),
        N
    );

    let events = read_all(slow).await;
    let (orders, rest): (Vec<_>, Vec<_>) = events.into_iter().partition(|e| e.event == "order");
    assert_eq!(
        rest.len(),
        1,
        "one overflow event, then the stream closed: {rest:?}"
    );
    assert_eq!(rest[0].event, "overflow");
    let overflow = rest[0].json();
    assert!(overflow["missed"].as_u64().unwrap() > 0, "{overflow}");
    assert_eq!(
        overflow["last_event_id"].as_str(),
        orders.last().and_then(|e| e.id.as_deref())
    );

    let resume = overflow["last_event_id"]
        .as_str()
        .map_or(String::new(), |id| format!("?last_event_id={id}"));
    let mut resumed = app.stream(&resume).await;
    let caught_up = resumed
        .orders(N - orders.len(), Duration::from_secs(60))
        .await;
    assert_partition_order(&caught_up);
    let mut slow_total = order_ids(&orders);
    slow_total.extend(order_ids(&caught_up));
    assert_eq!(sorted(slow_total), sorted(all), "no gap, no duplicate");
    assert!(
        resumed
            .next_event(Duration::from_millis(500))
            .await
            .is_none()
    );
}

/// A broker that lost everything (Tansu restarts empty; Kafka after the topic was deleted and
/// created again): the new topic soon holds other records at the client's old offsets. The
/// record stamps in the id tell them apart: the client is told with a `gap` event and gets
/// every order of the new topic, none taken for one it had seen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_position_on_a_recreated_topic_is_announced_as_a_gap() {
    let mut broker = crate::helpers::Broker::start();
    let app = TestApp::spawn(config(
        &broker.bootstrap(),
        &["--orders-topic-partitions", "1"],
    ))
    .await;
    app.wait_ready(Duration::from_secs(30)).await;
    let mut first = app.stream("").await;
    place(&app, "before", 2).await;
    let old_id = first.orders(2, Duration::from_secs(10)).await[1]
        .id
        .clone()
        .unwrap();
    drop(first);

    broker.restart();
    let mut after = eventually(
        Duration::from_secs(40),
        Duration::from_millis(200),
        || async {
            let response = app.post_order(&order("after")).await;
            match response.status().as_u16() {
                202 => Ok(vec![
                    response.json::<Value>().await.unwrap()["order_id"]
                        .as_str()
                        .unwrap()
                        .to_owned(),
                ]),
                status => Err(format!("POST answered {status} after the broker restart")),
            }
        },
    )
    .await;
    // The new topic grows past the old position (offset 2).
    after.extend(place(&app, "after", 3).await);

    let mut resumed = app.stream(&format!("?last_event_id={old_id}")).await;
    let gap = resumed
        .next_event(Duration::from_secs(10))
        .await
        .expect("a gap event");
    assert_eq!(gap.event, "gap", "{gap:?}");
    let data = gap.json();
    assert_eq!(
        (
            data["partition"].as_i64(),
            data["from"].as_i64(),
            data["to"].as_i64()
        ),
        (Some(0), Some(2), Some(0))
    );
    let rest = order_ids(&resumed.orders(4, Duration::from_secs(10)).await);
    assert_eq!(rest, after, "every order of the new topic, in order");
    assert!(
        resumed
            .next_event(Duration::from_millis(500))
            .await
            .is_none()
    );
}
