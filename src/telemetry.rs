//! Observability: logs, the per-request span with its request id, and Prometheus metrics.

use std::future::Future;
use std::io::Write;
use std::pin::Pin;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::MatchedPath;
use axum::http::{HeaderName, HeaderValue, Method, Request, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use pin_project_lite::pin_project;
use tower::{Layer, Service};
use tower_http::classify::{ServerErrorsAsFailures, SharedClassifier};
use tower_http::trace::{DefaultOnResponse, MakeSpan, TraceLayer};
use tracing::Level;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber. Called once, from `main`.
pub fn init(filter: &str, format: LogFormat) {
    let builder = tracing_subscriber::fmt().with_env_filter(EnvFilter::new(filter));
    // A second init (tests) keeps the first subscriber; nothing to report.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// The span of one request: method, path, request id, and (for POSTs) the order id.
#[derive(Debug, Clone, Copy)]
pub struct RequestSpan;

impl<B> MakeSpan<B> for RequestSpan {
    fn make_span(&mut self, request: &Request<B>) -> tracing::Span {
        let request_id = request
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        tracing::info_span!(
            "request",
            method = %request.method(),
            path = %request.uri().path(),
            request_id,
            order_id = tracing::field::Empty,
        )
    }
}

/// Traces each request inside a [`RequestSpan`] and logs its response.
pub type HttpTrace = TraceLayer<
    SharedClassifier<ServerErrorsAsFailures>,
    RequestSpan,
    (),
    DefaultOnResponse,
    (),
    (),
    (),
>;

pub fn trace_layer() -> HttpTrace {
    TraceLayer::new_for_http()
        .make_span_with(RequestSpan)
        .on_request(())
        .on_response(DefaultOnResponse::new().level(Level::INFO))
        // The response line already carries the status; a 503 from /readyz is not an error.
        .on_body_chunk(())
        .on_eos(())
        .on_failure(())
}

/// Latency buckets (seconds) for every `_seconds` histogram: sub-millisecond to PRODUCE_TIMEOUT.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The process-wide Prometheus recorder, installed on first use. Every gateway in the
/// process (tests run several) shares it, as they share the `metrics` facade.
pub fn metrics() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
            .map(PrometheusBuilder::build_recorder);
        match recorder {
            Ok(recorder) => {
                let handle = recorder.handle();
                if metrics::set_global_recorder(recorder).is_err() {
                    tracing::warn!(
                        "a metrics recorder was already installed; /metrics stays empty"
                    );
                }
                describe_metrics();
                upkeep(handle.clone());
                handle
            }
            // Only an empty bucket list fails, and ours is not empty.
            Err(error) => {
                tracing::error!(%error, "metrics disabled");
                PrometheusBuilder::new().build_recorder().handle()
            }
        }
    })
}

/// How often histogram samples are folded into their buckets.
const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// The recorder keeps every histogram sample until an upkeep folds them into buckets, and
/// `build_recorder` starts no upkeep of its own: without a scrape of /metrics the gateway
/// grew by ~29 bytes per request (90 MiB after 2.3 million requests in the load harness).
/// A thread, not a task: it must outlive any one runtime (tests run several).
fn upkeep(handle: PrometheusHandle) {
    let spawned = std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || {
            loop {
                std::thread::sleep(UPKEEP_EVERY);
                handle.run_upkeep();
            }
        });
    if let Err(error) = spawned {
        tracing::warn!(%error, "no metrics upkeep thread; only scrapes of /metrics drain histograms");
    }
}

/// Counts every request by route template (never the raw path: bounded label values),
/// method and status, and times it to its response head. Inside the router's layer stack,
/// so it sees the matched route; a hand-written layer, as [`crate::http::edge::AdmitLayer`]
/// says why.
#[derive(Debug, Clone, Copy, Default)]
pub struct TrackHttpLayer;

impl<S> Layer<S> for TrackHttpLayer {
    type Service = TrackHttp<S>;

    fn layer(&self, inner: S) -> TrackHttp<S> {
        TrackHttp(inner)
    }
}

/// The service of [`TrackHttpLayer`].
#[derive(Debug, Clone)]
pub struct TrackHttp<S>(S);

impl<S, B, R> Service<Request<B>> for TrackHttp<S>
where
    S: Service<Request<B>, Response = Response<R>>,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = Tracked<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        Tracked {
            route: request.extensions().get::<MatchedPath>().cloned(),
            method: method_label(request.method()),
            started: Instant::now(),
            inner: self.0.call(request),
        }
    }
}

pin_project! {
    /// A request's answer, counted and timed when it is ready.
    pub struct Tracked<F> {
        #[pin]
        inner: F,
        route: Option<MatchedPath>,
        method: &'static str,
        started: Instant,
    }
}

impl<F, R, E> Future for Tracked<F>
where
    F: Future<Output = Result<Response<R>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let answer = std::task::ready!(this.inner.poll(cx));
        if let Ok(response) = &answer {
            let route = this.route.as_ref().map_or("unmatched", MatchedPath::as_str);
            let elapsed = this.started.elapsed().as_secs_f64();
            HttpMetrics::record(route, this.method, response.status().as_u16(), elapsed);
        }
        Poll::Ready(answer)
    }
}

/// A bounded label for any method: the standard ones by name, the rest as `other`.
fn method_label(method: &Method) -> &'static str {
    [
        Method::GET,
        Method::POST,
        Method::HEAD,
        Method::OPTIONS,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
        Method::TRACE,
        Method::CONNECT,
    ]
    .iter()
    .find(|m| *m == method)
    .map_or("other", Method::as_str)
}

/// The metric handles of one route and method, kept per worker thread. Building a
/// labelled metric per request (label strings, key, registry lookup) was a visible share
/// of a request's CPU; a handle points at the same shared counter.
struct HttpMetrics {
    route: &'static str,
    method: &'static str,
    duration: metrics::Histogram,
    /// By status; a route answers with a handful.
    by_status: Vec<(u16, metrics::Counter)>,
}

thread_local! {
    static HTTP_METRICS: std::cell::RefCell<Vec<HttpMetrics>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

impl HttpMetrics {
    fn record(route: &str, method: &'static str, status: u16, seconds: f64) {
        HTTP_METRICS.with_borrow_mut(|all| {
            let at = match all
                .iter()
                .position(|m| m.method == method && m.route == route)
            {
                Some(at) => at,
                None => {
                    all.push(Self::new(route, method));
                    all.len() - 1
                }
            };
            let metrics = &mut all[at];
            metrics.duration.record(seconds);
            metrics.requests(status).increment(1);
        });
    }

    fn new(route: &str, method: &'static str) -> Self {
        // Handles made before the recorder is installed would count nowhere.
        metrics();
        // One leaked copy per route template: as many as the router has routes.
        let route: &'static str = Box::leak(route.to_owned().into_boxed_str());
        Self {
            route,
            method,
            duration: metrics::histogram!("orders_gateway_http_request_duration_seconds",
                "route" => route, "method" => method),
            by_status: Vec::new(),
        }
    }

    fn requests(&mut self, status: u16) -> &metrics::Counter {
        let at = match self.by_status.iter().position(|(s, _)| *s == status) {
            Some(at) => at,
            None => {
                let counter = metrics::counter!("orders_gateway_http_requests_total",
                    "route" => self.route, "method" => self.method, "status" => status.to_string());
                self.by_status.push((status, counter));
                self.by_status.len() - 1
            }
        };
        &self.by_status[at].1
    }
}

/// Gives every request an `x-request-id` (its own, or a new one) and echoes it on the
/// answer. Outermost, so the request's span and every log line carry it.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestIdLayer;

impl<S> Layer<S> for RequestIdLayer {
    type Service = WithRequestId<S>;

    fn layer(&self, inner: S) -> WithRequestId<S> {
        WithRequestId(inner)
    }
}

/// The service of [`RequestIdLayer`].
#[derive(Debug, Clone)]
pub struct WithRequestId<S>(S);

impl<S, B, R> Service<Request<B>> for WithRequestId<S>
where
    S: Service<Request<B>, Response = Response<R>>,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = Echoed<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let id = match request.headers().get(X_REQUEST_ID) {
            Some(id) => id.clone(),
            None => {
                let id = new_request_id();
                request.headers_mut().insert(X_REQUEST_ID, id.clone());
                id
            }
        };
        Echoed {
            inner: self.0.call(request),
            id: Some(id),
        }
    }
}

pin_project! {
    /// A request's answer, with its request id added unless the handler set one.
    pub struct Echoed<F> {
        #[pin]
        inner: F,
        id: Option<HeaderValue>,
    }
}

impl<F, R, E> Future for Echoed<F>
where
    F: Future<Output = Result<Response<R>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let mut answer = std::task::ready!(this.inner.poll(cx));
        if let (Ok(response), Some(id)) = (&mut answer, this.id.take()) {
            response.headers_mut().entry(X_REQUEST_ID).or_insert(id);
        }
        Poll::Ready(answer)
    }
}

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// A request id for a request that came without one: a random prefix per process and a
/// counter, unique across replicas without a UUID (random bytes and formatting) per
/// request, written on the stack.
fn new_request_id() -> HeaderValue {
    static PREFIX: OnceLock<u64> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let prefix = *PREFIX.get_or_init(|| uuid::Uuid::new_v4().as_u128() as u64);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    // 16 hex digits, a dash, at most 16 more.
    let mut buffer = [0u8; 33];
    let mut cursor = std::io::Cursor::new(&mut buffer[..]);
    // The buffer holds the longest id, so the write cannot fail.
    let _ = write!(cursor, "{prefix:016x}-{n:x}");
    let len = cursor.position() as usize;
    // Hex digits and a dash are valid header bytes.
    HeaderValue::from_bytes(&buffer[..len]).unwrap_or(HeaderValue::from_static("0"))
}

/// Help texts, and a zero for every unlabelled counter so dashboards see it before the
/// first event.
fn describe_metrics() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "orders_gateway_http_requests_total",
        "HTTP requests by route, method and status"
    );
    describe_histogram!(
        "orders_gateway_http_request_duration_seconds",
        Unit::Seconds,
        "Time to the response head (for streams: until the stream opened)"
    );
    describe_counter!(
        "orders_gateway_produce_total",
        "Produce results by outcome: acked, timeout, queue_full, unavailable"
    );
    describe_histogram!(
        "orders_gateway_produce_duration_seconds",
        Unit::Seconds,
        "Time from produce to broker acknowledgement"
    );
    describe_gauge!(
        "orders_gateway_open_streams",
        "Open GET /orders/stream connections"
    );
    describe_counter!(
        "orders_gateway_stream_events_total",
        "Order events sent to stream clients"
    );
    describe_counter!(
        "orders_gateway_stream_overflows_total",
        "Stream clients disconnected for falling too far behind"
    );
    describe_counter!(
        "orders_gateway_tracker_records_total",
        "Orders the tracker read from the topic"
    );
    describe_counter!(
        "orders_gateway_tracker_poison_records_total",
        "Records on the topic that are not orders, skipped"
    );
    describe_counter!(
        "orders_gateway_tracker_rebalances_total",
        "Tracker group rebalances by kind: assign, revoke, error"
    );
    describe_counter!(
        "orders_gateway_tracker_feed_restarts_total",
        "Tracker feeds started again after an outage or a recreated topic"
    );
    describe_gauge!(
        "orders_gateway_tracker_lag",
        "Per partition: high watermark minus the group's committed offset"
    );
    describe_counter!(
        "orders_gateway_idempotency_replays_total",
        "POSTs answered from an earlier attempt with the same Idempotency-Key"
    );
    describe_counter!(
        "orders_gateway_idempotency_keys_evicted_total",
        "Idempotency keys forgotten before their TTL because IDEMPOTENCY_KEYS were held"
    );
    describe_counter!(
        "orders_gateway_rate_limited_total",
        "Requests answered 429 because their client exceeded RATE_LIMIT"
    );
    describe_counter!(
        "orders_gateway_producer_renewals_total",
        "Producers started over, by reason: topic_recreated, identity_lost, fatal, watchdog \
         (orders kept timing out while the broker answered and the topic existed)"
    );
    for reason in crate::kafka::watchdog::RenewReason::ALL {
        metrics::counter!("orders_gateway_producer_renewals_total", "reason" => reason.as_str())
            .increment(0);
    }
    describe_gauge!(
        "orders_gateway_ready",
        "1 while GET /readyz answers 200 (broker reachable, topic present, tracker holds \
         partitions), else 0"
    );
    describe_counter!(
        "orders_gateway_readiness_changes_total",
        "Times readiness flipped between ready and not ready"
    );
    metrics::gauge!("orders_gateway_ready").set(0.0);
    for name in [
        "orders_gateway_readiness_changes_total",
        "orders_gateway_idempotency_replays_total",
        "orders_gateway_idempotency_keys_evicted_total",
        "orders_gateway_rate_limited_total",
        "orders_gateway_stream_events_total",
        "orders_gateway_stream_overflows_total",
        "orders_gateway_tracker_records_total",
        "orders_gateway_tracker_poison_records_total",
    ] {
        metrics::counter!(name).increment(0);
    }
    metrics::gauge!("orders_gateway_open_streams").increment(0.0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_request_ids_are_a_process_prefix_and_a_counter() {
        let (a, b) = (new_request_id(), new_request_id());
        let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());
        assert_ne!(a, b);
        for id in [a, b] {
            let (prefix, n) = id.split_once('-').unwrap();
            assert_eq!(prefix.len(), 16, "{id}");
            assert!(
                prefix
                    .bytes()
                    .chain(n.bytes())
                    .all(|c| c.is_ascii_hexdigit()),
                "{id}"
            );
        }
        assert_eq!(a.split_once('-').unwrap().0, b.split_once('-').unwrap().0);
    }
}
