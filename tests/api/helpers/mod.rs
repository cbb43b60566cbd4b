//! Shared test helpers: brokers, an in-process gateway, an SSE reader, Kafka clients,
//! TCP proxies.

pub mod broker;
pub mod gateway;
pub mod kafka;
pub mod load;
pub mod metrics;
pub mod proxy;
pub mod round_robin;
pub mod sse;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use clap::Parser;
use orders_gateway::{AppError, Config};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use broker::Broker;
pub use sse::SseStream;

/// Logs of the gateway under test, shown for failing tests (`RUST_LOG=debug` for more).
pub fn init_logs() {
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "warn,orders_gateway=info".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// A random suffix so every test has its own topic and group.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// A gateway running in this process on a free port.
pub struct TestApp {
    pub addr: SocketAddr,
    pub config: Config,
    pub http: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<Result<(), AppError>>>,
}

/// Configuration for a gateway on `bootstrap` with a fresh topic and group.
pub fn config(bootstrap: &str, extra: &[&str]) -> Config {
    let topic = unique("orders");
    let group = unique("tracker");
    let mut args = vec![
        "orders-gateway",
        "--kafka-bootstrap-servers",
        bootstrap,
        "--listen-addr",
        "127.0.0.1:0",
        "--orders-topic",
        &topic,
        "--tracker-group-id",
        &group,
    ];
    args.extend_from_slice(extra);
    Config::try_parse_from(args).expect("valid test config")
}

impl TestApp {
    /// Starts a gateway on `bootstrap` and waits until it is ready.
    pub async fn ready(bootstrap: &str) -> Self {
        let app = Self::spawn(config(bootstrap, &[])).await;
        app.wait_ready(Duration::from_secs(30)).await;
        app
    }

    /// Starts a gateway with `config` without waiting for readiness.
    pub async fn spawn(config: Config) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        Self::spawn_on(config, listener).await
    }

    /// Starts a gateway serving `listener` (a test may shape its sockets).
    pub async fn spawn_on(config: Config, listener: tokio::net::TcpListener) -> Self {
        init_logs();
        let addr = listener.local_addr().expect("local addr");
        let (tx, rx) = oneshot::channel();
        let handle = tokio::spawn(orders_gateway::run(config.clone(), listener, async {
            let _ = rx.await;
        }));
        Self {
            addr,
            config,
            http: reqwest::Client::new(),
            shutdown: Some(tx),
            handle: Some(handle),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn topic(&self) -> &str {
        &self.config.orders_topic
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(self.url(path)).send().await.expect("GET")
    }

    /// POSTs `body` as JSON to /orders.
    pub async fn post_order(&self, body: &Value) -> reqwest::Response {
        self.http
            .post(self.url("/orders"))
            .json(body)
            .send()
            .await
            .expect("POST /orders")
    }

    /// Polls /readyz until 200.
    pub async fn wait_ready(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let status = self.get("/readyz").await.status();
            if status == 200 {
                return;
            }
            assert!(Instant::now() < deadline, "not ready within {timeout:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Opens `GET /orders/stream{query}` and reads its opening comment.
    pub async fn stream(&self, query: &str) -> SseStream {
        SseStream::open(&self.http, &self.url(&format!("/orders/stream{query}"))).await
    }

    /// Shuts the gateway down the way a signal does and returns its result.
    pub async fn stop(mut self) -> Result<(), AppError> {
        self.shutdown.take().map(|tx| tx.send(()));
        let handle = self.handle.take().expect("running");
        tokio::time::timeout(Duration::from_secs(15), handle)
            .await
            .expect("gateway stopped within 15 s")
            .expect("gateway task did not panic")
    }
}

impl Drop for TestApp {
    /// Shuts the gateway down properly even when a test ends without `stop` (or panics):
    /// dropping librdkafka clients mid-flight with the runtime is not a path production takes.
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(handle) = self.handle.take() {
            tokio::task::block_in_place(|| {
                tokio::runtime::Handle::current().block_on(async {
                    let _ = tokio::time::timeout(Duration::from_secs(15), handle).await;
                });
            });
        }
    }
}

/// A valid order body.
pub fn order(user: &str) -> Value {
    json!({"user": user, "item": "frozen yogurt", "quantity": 10})
}

/// Polls `check` every `every` until it returns `Ok`, and fails the test with its last
/// `Err` reason once `timeout` has passed.
pub async fn eventually<T, F, Fut>(timeout: Duration, every: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match check().await {
            Ok(value) => return value,
            Err(reason) => assert!(Instant::now() < deadline, "after {timeout:?}: {reason}"),
        }
        tokio::time::sleep(every).await;
    }
}
