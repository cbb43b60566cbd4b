//! The edge's limits and policies, built once from the configuration: body and header
//! sizes, the request timeout, the rate limit, CORS and the bearer tokens. Shared behind one
//! `Arc`, so cloning the state per request copies no strings.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::response::{IntoResponse, Response};
use futures_util::future::{Either, Ready, ready};
use pin_project_lite::pin_project;
use tokio::time::Timeout;
use tower::{Layer, Service};
use tower_http::cors::{AllowOrigin, CorsLayer};

use super::error::ApiError;
use super::rate_limit::{self, RateLimiter};
use crate::config::{Config, Secret};

/// What every request is checked against before a handler sees it.
pub struct Edge {
    pub body_limit: usize,
    pub max_header_bytes: usize,
    pub request_timeout: Duration,
    /// `API_TOKENS`; empty: anyone may place orders.
    pub api_tokens: Vec<Secret>,
    /// `ADMIN_TOKEN`; unset: the admin views answer loopback clients only.
    pub admin_token: Option<Secret>,
    pub rate_limiter: Option<RateLimiter>,
    pub cors_allowed_origins: Vec<String>,
}

impl Edge {
    pub fn new(config: &Config) -> Self {
        Self {
            body_limit: config.max_body_bytes.get(),
            max_header_bytes: config.max_header_bytes.get(),
            request_timeout: config.request_timeout,
            api_tokens: config.api_tokens.clone(),
            admin_token: config.admin_token.clone(),
            rate_limiter: RateLimiter::new(config.rate_limit, config.rate_limit_burst.get()),
            cors_allowed_origins: config.cors_allowed_origins.clone(),
        }
    }

    /// The CORS policy; `None` (same-origin only) unless origins are configured.
    pub fn cors(&self) -> Option<CorsLayer> {
        let origins = &self.cors_allowed_origins;
        if origins.is_empty() {
            return None;
        }
        let allow = if origins.iter().any(|o| o == "*") {
            AllowOrigin::any()
        } else {
            AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
        };
        let name = HeaderName::from_static;
        Some(
            CorsLayer::new()
                .allow_origin(allow)
                .allow_methods([Method::GET, Method::POST])
                .allow_headers([
                    header::CONTENT_TYPE,
                    header::AUTHORIZATION,
                    name("idempotency-key"),
                    name("last-event-id"),
                    name("traceparent"),
                    name("x-request-id"),
                ])
                .expose_headers([
                    header::RETRY_AFTER,
                    name("idempotent-replayed"),
                    name("x-request-id"),
                ])
                .max_age(Duration::from_secs(3600)),
        )
    }

    /// Why a request is refused before its handler sees it, as the answer to give: 429 when
    /// its client is over RATE_LIMIT, 431 when its header block is larger than
    /// MAX_HEADER_BYTES.
    fn refusal(&self, request: &Request) -> Option<Response> {
        if let Some(limiter) = &self.rate_limiter
            && let Err(refused) = rate_limit::admit(limiter, request)
        {
            return Some(refused.into_response());
        }
        let header_bytes: usize = request
            .headers()
            .iter()
            // Each line is `name: value\r\n`.
            .map(|(name, value)| name.as_str().len() + value.len() + 4)
            .sum();
        (header_bytes > self.max_header_bytes)
            .then(|| ApiError::HeadersTooLarge(self.max_header_bytes).into_response())
    }
}

/// Passes every request through [`Edge::refusal`] and bounds it by REQUEST_TIMEOUT (408).
/// A hand-written layer, not `axum::middleware::from_fn`: that one clones its inner
/// service (a boxed route) and boxes a future for every request.
#[derive(Clone)]
pub struct AdmitLayer(Arc<Edge>);

impl AdmitLayer {
    pub fn new(edge: Arc<Edge>) -> Self {
        Self(edge)
    }
}

impl<S> Layer<S> for AdmitLayer {
    type Service = Admit<S>;

    fn layer(&self, inner: S) -> Admit<S> {
        Admit {
            edge: self.0.clone(),
            inner,
        }
    }
}

/// The service of [`AdmitLayer`].
#[derive(Clone)]
pub struct Admit<S> {
    edge: Arc<Edge>,
    inner: S,
}

impl<S> Service<Request> for Admit<S>
where
    S: Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Either<Ready<Result<Response, S::Error>>, Bounded<S::Future>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        if let Some(refused) = self.edge.refusal(&request) {
            return Either::Left(ready(Ok(refused)));
        }
        let limit = self.edge.request_timeout;
        Either::Right(Bounded {
            inner: tokio::time::timeout(limit, self.inner.call(request)),
            limit,
        })
    }
}

pin_project! {
    /// A request's answer, or 408 once REQUEST_TIMEOUT passed (a stream counts only until
    /// its answer starts).
    pub struct Bounded<F> {
        #[pin]
        inner: Timeout<F>,
        limit: Duration,
    }
}

impl<F, E> Future for Bounded<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.inner.poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(answer)) => Poll::Ready(answer),
            Poll::Ready(Err(_)) => {
                Poll::Ready(Ok(ApiError::RequestTimeout(*this.limit).into_response()))
            }
        }
    }
}
