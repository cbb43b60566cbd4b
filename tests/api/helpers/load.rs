//! Order load for fault tests: workers POSTing orders until told to stop, every answer
//! recorded, and the check that every acknowledged order is on the topic exactly once.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::Message;
use rdkafka::message::OwnedMessage;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use super::kafka;

/// What one POST came to.
#[derive(Debug, Clone)]
pub struct Answer {
    pub order_id: String,
    /// The HTTP status, or `None` when no answer came (refused, reset).
    pub status: Option<u16>,
    pub took: Duration,
    pub sent_at: Instant,
    /// Where a 202 said the order was written.
    pub position: Option<(i32, i64)>,
}

pub struct Load {
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<Vec<Answer>>>,
}

impl Load {
    /// `workers` clients, each placing one order after another on `base`.
    pub fn start(base: &str, workers: usize) -> Self {
        Self::spawn(base, workers, None)
    }

    /// `workers` clients, each placing an order every `pause` or so on `base`, each order
    /// over a new connection, so a balancer in front of several replicas spreads them.
    pub fn paced(base: &str, workers: usize, pause: Duration) -> Self {
        Self::spawn(base, workers, Some(pause))
    }

    fn spawn(base: &str, workers: usize, pause: Option<Duration>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let workers = (0..workers)
            .map(|_| tokio::spawn(work(base.to_owned(), stop.clone(), pause)))
            .collect();
        Self { stop, workers }
    }

    /// Stops the workers after their current request; every answer, in no set order.
    pub async fn stop(self) -> Vec<Answer> {
        self.stop.store(true, Ordering::SeqCst);
        let mut answers = Vec::new();
        for worker in self.workers {
            answers.extend(worker.await.expect("load worker"));
        }
        answers
    }
}

async fn work(base: String, stop: Arc<AtomicBool>, pause: Option<Duration>) -> Vec<Answer> {
    // Far above any PRODUCE_TIMEOUT the tests use: a request this slow is a hang.
    let mut http = reqwest::Client::builder().timeout(Duration::from_secs(30));
    if pause.is_some() {
        http = http.pool_max_idle_per_host(0);
    }
    let http = http.build().expect("http client");
    let mut answers = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        let answer = place(&http, &base).await;
        let answered = answer.status.is_some();
        answers.push(answer);
        if let Some(pause) = pause {
            tokio::time::sleep(pause).await;
        } else if !answered {
            // Nobody listens: do not spin.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    answers
}

/// Places one order with an id of our own, so even an unanswered order can be traced.
pub async fn place(http: &reqwest::Client, base: &str) -> Answer {
    let order_id = uuid::Uuid::new_v4().to_string();
    let body =
        json!({"order_id": order_id, "user": "load", "item": "frozen yogurt", "quantity": 1});
    let started = Instant::now();
    let response = http.post(format!("{base}/orders")).json(&body).send().await;
    let (status, position) = match response {
        Ok(response) => {
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            let position = (status == 202).then(|| {
                (
                    body["partition"].as_i64().expect("partition") as i32,
                    body["offset"].as_i64().expect("offset"),
                )
            });
            (Some(status), position)
        }
        Err(_) => (None, None),
    };
    Answer {
        order_id,
        status,
        took: started.elapsed(),
        sent_at: started,
        position,
    }
}

/// How a run went, for the test's output and its assertions.
#[derive(Debug, Default)]
pub struct Tally {
    pub acknowledged: usize,
    pub unavailable: usize,
    pub unanswered: usize,
    pub other: usize,
    pub slowest: Duration,
}

pub fn tally(answers: &[Answer]) -> Tally {
    let mut t = Tally::default();
    for a in answers {
        match a.status {
            Some(202) => t.acknowledged += 1,
            Some(503) => t.unavailable += 1,
            None => t.unanswered += 1,
            Some(_) => t.other += 1,
        }
        t.slowest = t.slowest.max(a.took);
    }
    t
}

/// Reads the whole topic and checks that every acknowledged order is on it, at the
/// partition and offset its 202 named, and that no order is on it twice. Returns how many
/// records the topic holds (orders whose POST failed may be among them: a timeout does
/// not mean "not written").
pub fn assert_acknowledged_on_topic(bootstrap: &str, topic: &str, answers: &[Answer]) -> usize {
    acknowledged_on_topic(bootstrap, topic, answers).len()
}

/// [`assert_acknowledged_on_topic`], returning the topic's records.
pub fn acknowledged_on_topic(
    bootstrap: &str,
    topic: &str,
    answers: &[Answer],
) -> Vec<OwnedMessage> {
    let acknowledged: Vec<&Answer> = answers.iter().filter(|a| a.status == Some(202)).collect();
    let records = kafka::read_all(bootstrap, topic, 3, acknowledged.len());
    let mut at = HashMap::new();
    let mut keys = HashSet::new();
    for record in &records {
        let key = String::from_utf8(record.key().expect("keyed").to_vec()).expect("utf-8 key");
        at.insert((record.partition(), record.offset()), key.clone());
        assert!(
            keys.insert(key.clone()),
            "order {key} is on the topic twice"
        );
    }
    let sent: HashSet<&str> = answers.iter().map(|a| a.order_id.as_str()).collect();
    assert!(
        keys.iter().all(|k| sent.contains(k.as_str())),
        "the topic holds an order nobody sent"
    );
    for answer in acknowledged {
        let position = answer.position.expect("a 202 names its position");
        assert_eq!(
            at.get(&position),
            Some(&answer.order_id),
            "acknowledged order {} is not at {position:?}",
            answer.order_id
        );
    }
    records
}
