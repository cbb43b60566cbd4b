//! The edge's limits and policies, built once from the configuration: body and header
//! sizes, the request timeout, the rate limit, CORS and the bearer tokens. Shared behind one
//! `Arc`, so cloning the state per request copies no strings.

use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tower_http::cors::{AllowOrigin, CorsLayer};

use super::AppState;
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
}

/// Every request passes here before its handler: refused (429) when its client is over
/// RATE_LIMIT, refused (431) when its header block is larger than MAX_HEADER_BYTES, and
/// answered 408 when it does not finish within REQUEST_TIMEOUT (a stream counts only until
/// its answer starts). One middleware, not one per check: axum's `from_fn` clones its inner
/// service and boxes a future for every request it passes.
pub async fn admit(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let edge = &state.edge;
    if let Some(limiter) = &edge.rate_limiter
        && let Err(refused) = rate_limit::admit(limiter, &request)
    {
        return refused.into_response();
    }
    let header_bytes: usize = request
        .headers()
        .iter()
        // Each line is `name: value\r\n`.
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if header_bytes > edge.max_header_bytes {
        return ApiError::HeadersTooLarge(edge.max_header_bytes).into_response();
    }
    match tokio::time::timeout(edge.request_timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::RequestTimeout(edge.request_timeout).into_response(),
    }
}
