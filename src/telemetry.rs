//! Observability: log set-up and the per-request span with its request id.

use axum::http::Request;
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
