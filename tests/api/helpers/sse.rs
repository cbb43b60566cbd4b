//! A small Server-Sent Events reader for tests.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use serde_json::Value;
use tokio::task::JoinHandle;

/// One event of the stream; comments are kept separately.
#[derive(Debug, Clone, Default)]
pub struct SseEvent {
    pub event: String,
    pub id: Option<String>,
    pub data: String,
    pub comments: Vec<String>,
    pub retry: Option<u64>,
}

impl SseEvent {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).expect("event data is JSON")
    }
}

pub struct SseStream {
    pub response_headers: reqwest::header::HeaderMap,
    body: BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buffer: String,
}

impl SseStream {
    pub async fn open(http: &reqwest::Client, url: &str) -> Self {
        Self::opened(http.get(url)).await
    }

    /// Opens with a `Last-Event-ID` header, as EventSource does on reconnect.
    pub async fn open_with_header(http: &reqwest::Client, url: &str, last_event_id: &str) -> Self {
        Self::opened(http.get(url).header("last-event-id", last_event_id)).await
    }

    async fn opened(request: reqwest::RequestBuilder) -> Self {
        Self::try_open(request)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Opens `request`; `Err` when the connection fails before the stream is open (a
    /// dropped or refused connection: EventSource tries again). Any answer but 200 fails
    /// the test, as EventSource gives up on those.
    pub async fn try_open(request: reqwest::RequestBuilder) -> Result<Self, String> {
        let response = request
            .header("accept", "text/event-stream")
            .send()
            .await
            .map_err(|e| format!("open stream: {e}"))?;
        assert_eq!(
            response.status(),
            200,
            "stream answered {}",
            response.status()
        );
        let response_headers = response.headers().clone();
        let mut stream = Self {
            response_headers,
            body: response.bytes_stream().boxed(),
            buffer: String::new(),
        };
        let opening = stream
            .next_block(Duration::from_secs(5))
            .await
            .ok_or("the stream ended before its opening comment")?;
        assert_eq!(opening.comments, ["connected"]);
        Ok(stream)
    }

    /// The next block (event or comment-only), or `None` when the stream ended or
    /// nothing arrived in `timeout`.
    pub async fn next_block(&mut self, timeout: Duration) -> Option<SseEvent> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                return Some(parse(&block));
            }
            let chunk = tokio::time::timeout_at(deadline, self.body.next())
                .await
                .ok()??;
            let chunk = chunk.ok()?;
            self.buffer
                .push_str(std::str::from_utf8(&chunk).expect("UTF-8 stream"));
        }
    }

    /// The next real event (skipping keep-alive comments).
    pub async fn next_event(&mut self, timeout: Duration) -> Option<SseEvent> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let block = self.next_block(left).await?;
            if !block.event.is_empty() || !block.data.is_empty() {
                return Some(block);
            }
        }
    }

    /// The next `n` order events, failing the test if they do not arrive in `timeout`.
    pub async fn orders(&mut self, n: usize, timeout: Duration) -> Vec<SseEvent> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut events = Vec::with_capacity(n);
        while events.len() < n {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let event = self
                .next_event(left)
                .await
                .unwrap_or_else(|| panic!("only {} of {n} orders arrived", events.len()));
            assert_eq!(event.event, "order", "unexpected event {event:?}");
            events.push(event);
        }
        events
    }
}

/// A stream read in the background the way EventSource reads one: after an `overflow`, or
/// when the stream ends, it reconnects with the last id it has. Under load a client that
/// falls behind is cut off by design; the contract is that resuming loses nothing.
pub struct Background {
    events: Arc<Mutex<Vec<SseEvent>>>,
    resumes: Arc<std::sync::atomic::AtomicUsize>,
    task: JoinHandle<()>,
}

impl Background {
    pub async fn open(http: &reqwest::Client, url: &str) -> Self {
        Self::open_reconnecting_after(http, url, Duration::ZERO).await
    }

    /// Like `open`, but waits `pause` before each reconnect, as EventSource waits the
    /// `retry` the stream asked for: what the client misses meanwhile must come with the
    /// resume.
    pub async fn open_reconnecting_after(
        http: &reqwest::Client,
        url: &str,
        pause: Duration,
    ) -> Self {
        let mut stream = SseStream::open(http, url).await;
        let events = Arc::new(Mutex::new(Vec::new()));
        let resumes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let task = tokio::spawn({
            let (events, http, url) = (events.clone(), http.clone(), url.to_owned());
            let resumes = resumes.clone();
            async move {
                let mut last_id: Option<String> = None;
                loop {
                    while let Some(event) = stream.next_event(Duration::from_secs(3600)).await {
                        if event.event == "overflow" {
                            last_id = event.json()["last_event_id"].as_str().map(str::to_owned);
                            break;
                        }
                        last_id = event.id.clone().or(last_id);
                        events.lock().unwrap().push(event);
                    }
                    let Some(id) = &last_id else { return };
                    resumes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    tokio::time::sleep(pause).await;
                    stream = reopen(&http, &url, id).await;
                }
            }
        });
        Self {
            events,
            resumes,
            task,
        }
    }

    /// Every event so far.
    pub fn events(&self) -> Vec<SseEvent> {
        self.events.lock().unwrap().clone()
    }

    /// How often the client had to reconnect.
    pub fn resumes(&self) -> usize {
        self.resumes.load(std::sync::atomic::Ordering::SeqCst)
    }
    /// Waits until `n` events arrived and returns them; fails on any event but `order`.
    pub async fn orders(&self, n: usize, timeout: Duration) -> Vec<SseEvent> {
        super::eventually(timeout, Duration::from_millis(50), || async {
            let events = self.events.lock().unwrap().clone();
            if let Some(other) = events.iter().find(|e| e.event != "order") {
                panic!("unexpected event {other:?}");
            }
            if events.len() >= n {
                Ok(events)
            } else if self.task.is_finished() {
                panic!(
                    "the reader stopped (see above) after {} orders",
                    events.len()
                )
            } else {
                Err(format!("only {} of {n} orders arrived", events.len()))
            }
        })
        .await
    }

    /// Waits until the order `order_id` arrived.
    pub async fn order(&self, order_id: &str, timeout: Duration) {
        super::eventually(timeout, Duration::from_millis(50), || async {
            let events = self.events.lock().unwrap();
            let found = events
                .iter()
                .any(|e| e.event == "order" && e.json()["order_id"] == order_id);
            let others: Vec<&SseEvent> = events.iter().filter(|e| e.event != "order").collect();
            found.then_some(()).ok_or(format!(
                "order {order_id} not streamed; {} events so far, besides orders: {others:?}",
                events.len()
            ))
        })
        .await;
    }
}

/// Reconnects with `Last-Event-ID` the way EventSource does: while the connection fails
/// (a replica that just died), again after a pause; the test fails after 10 s of that.
async fn reopen(http: &reqwest::Client, url: &str, last_event_id: &str) -> SseStream {
    let mut failures = Vec::new();
    loop {
        let request = http.get(url).header("last-event-id", last_event_id);
        match SseStream::try_open(request).await {
            Ok(stream) => return stream,
            Err(e) => failures.push(e),
        }
        assert!(failures.len() < 50, "cannot reconnect: {failures:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub fn parse(block: &str) -> SseEvent {
    let mut event = SseEvent::default();
    for line in block.lines() {
        if let Some(comment) = line.strip_prefix(':') {
            event.comments.push(comment.trim().to_owned());
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => event.event = value.to_owned(),
            "id" => event.id = Some(value.to_owned()),
            "data" => {
                if !event.data.is_empty() {
                    event.data.push('\n');
                }
                event.data.push_str(value);
            }
            "retry" => event.retry = value.parse().ok(),
            _ => {}
        }
    }
    event
}
