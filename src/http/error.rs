//! The one error type of the HTTP edge, rendered as RFC 9457 `application/problem+json`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::FieldError;
use crate::publisher::PublishError;

/// Media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Everything the API can answer with instead of success.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the body is not JSON.
    #[error("the request body is not valid JSON: {0}")]
    MalformedJson(String),
    /// 400: a query parameter or header has a value the endpoint cannot use.
    #[error("{0}")]
    BadRequest(String),
    /// 401: a protected route without a valid bearer token.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// 403: a protected route the client may not read from where it is.
    #[error("{0}")]
    Forbidden(String),
    /// 404: no such route.
    #[error("there is no resource at {0}")]
    NotFound(String),
    /// 405: the route exists, the method does not.
    #[error("{0} is not allowed here")]
    MethodNotAllowed(String),
    /// 408: the request was not complete within REQUEST_TIMEOUT.
    #[error("the request did not complete within {0:?} (REQUEST_TIMEOUT)")]
    RequestTimeout(std::time::Duration),
    /// 409: an `Idempotency-Key` already used for a different order.
    #[error(
        "this Idempotency-Key was already used for a different order; use a new key for a new order"
    )]
    IdempotencyKeyReused,
    /// 429: the client made more requests than RATE_LIMIT allows; retry after the seconds given.
    #[error("too many requests from this client; retry in {0} s")]
    RateLimited(u32),
    /// 431: the header lines exceed MAX_HEADER_BYTES.
    #[error("the request's headers are larger than {0} bytes")]
    HeadersTooLarge(usize),
    /// 413: the body exceeds the limit.
    #[error("the request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    /// 415: the body is not declared as JSON.
    #[error("the request body must be sent with Content-Type: application/json")]
    UnsupportedMediaType,
    /// 422: JSON, but not a valid order; lists every invalid field.
    #[error("the order has {} invalid field(s)", .0.len())]
    Validation(Vec<FieldError>),
    /// 503: the broker did not acknowledge the order; the client should retry.
    #[error(transparent)]
    Publish(PublishError),
    /// 429: MAX_STREAMS streams are open.
    #[error("too many open streams; retry shortly")]
    TooManyStreams,
    /// 503: the topic's history could not be read.
    #[error("the Kafka broker did not answer: {0}")]
    HistoryUnavailable(String),
    /// 503: a topic or group view could not be read from the broker.
    #[error("the Kafka broker did not answer: {0}")]
    ViewUnavailable(String),
    /// 503: readiness checks fail.
    #[error("not ready: {}", .0.join("; "))]
    NotReady(Vec<&'static str>),
    /// 500: a bug. The cause is logged, never sent.
    #[error("internal error: {0}")]
    Internal(String),
}

/// An RFC 9457 problem.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({
    "type": "/problems/validation",
    "title": "Invalid order",
    "status": 422,
    "detail": "the order has 1 invalid field(s)",
    "errors": [{"field": "quantity", "message": "must be an integer from 1 to 1000"}]
}))]
pub struct Problem {
    /// A URI reference naming the kind of problem; stable, safe to switch on.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Short summary of the kind of problem.
    pub title: &'static str,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong this time.
    pub detail: String,
    /// For validation problems: every invalid field.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

impl ApiError {
    /// The status, kind and title of each variant, in one place.
    fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        match self {
            Self::MalformedJson(_) => (
                StatusCode::BAD_REQUEST,
                "/problems/malformed-json",
                "Malformed JSON",
            ),
            Self::BadRequest(_) => (
                StatusCode::BAD_REQUEST,
                "/problems/bad-request",
                "Bad request",
            ),
            Self::Unauthorized(_) => (
                StatusCode::UNAUTHORIZED,
                "/problems/unauthorized",
                "Unauthorized",
            ),
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, "/problems/forbidden", "Forbidden"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "/problems/not-found", "Not found"),
            Self::MethodNotAllowed(_) => (
                StatusCode::METHOD_NOT_ALLOWED,
                "/problems/method-not-allowed",
                "Method not allowed",
            ),
            Self::PayloadTooLarge(_) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "/problems/payload-too-large",
                "Payload too large",
            ),
            Self::UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "/problems/unsupported-media-type",
                "Unsupported media type",
            ),
            Self::RequestTimeout(_) => (
                StatusCode::REQUEST_TIMEOUT,
                "/problems/request-timeout",
                "Request timeout",
            ),
            Self::IdempotencyKeyReused => (
                StatusCode::CONFLICT,
                "/problems/idempotency-key-reused",
                "Idempotency-Key reused",
            ),
            Self::RateLimited(_) => (
                StatusCode::TOO_MANY_REQUESTS,
                "/problems/rate-limited",
                "Too many requests",
            ),
            Self::HeadersTooLarge(_) => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "/problems/headers-too-large",
                "Request headers too large",
            ),
            Self::Validation(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "/problems/validation",
                "Invalid order",
            ),
            Self::Publish(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "/problems/broker-unavailable",
                "Order not accepted",
            ),
            Self::NotReady(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "/problems/not-ready",
                "Not ready",
            ),
            Self::ViewUnavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "/problems/broker-unavailable",
                "View unavailable",
            ),
            Self::HistoryUnavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "/problems/broker-unavailable",
                "History unavailable",
            ),
            Self::TooManyStreams => (
                StatusCode::TOO_MANY_REQUESTS,
                "/problems/too-many-streams",
                "Too many streams",
            ),
            Self::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "/problems/internal",
                "Internal server error",
            ),
        }
    }

    /// What the client reads. Internal causes stay in the log.
    fn detail(&self) -> String {
        match self {
            Self::Internal(_) => "something went wrong on our side; it has been logged".into(),
            Self::Publish(PublishError::Timeout) => format!(
                "{self}; it may still be written. Retry with the same order_id to make a \
                 duplicate recognisable"
            ),
            Self::Publish(PublishError::Unavailable(_)) => {
                "the Kafka broker did not take the order; it was not written. Retry later".into()
            }
            other => other.to_string(),
        }
    }

    /// Seconds a client should wait before retrying, for 503s.
    fn retry_after(&self) -> Option<u32> {
        match self {
            Self::Publish(PublishError::QueueFull) => Some(1),
            Self::RateLimited(seconds) => Some(*seconds),
            Self::Publish(_)
            | Self::NotReady(_)
            | Self::ViewUnavailable(_)
            | Self::HistoryUnavailable(_)
            | Self::TooManyStreams => Some(5),
            _ => None,
        }
    }

    /// The body of this error.
    pub fn problem(&self) -> Problem {
        let (status, kind, title) = self.parts();
        let errors = match self {
            Self::Validation(errors) => errors.clone(),
            _ => Vec::new(),
        };
        Problem {
            kind,
            title,
            status: status.as_u16(),
            detail: self.detail(),
            errors,
        }
    }
}

impl From<PublishError> for ApiError {
    fn from(e: PublishError) -> Self {
        Self::Publish(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = self.problem();
        match &self {
            Self::Internal(cause) => tracing::error!(%cause, "internal error"),
            Self::Publish(cause) => tracing::warn!(%cause, "order not acknowledged"),
            _ => {
                tracing::debug!(status = problem.status, detail = %problem.detail, "request rejected");
            }
        }
        let status =
            StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let Some(seconds) = self.retry_after() {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if matches!(self, Self::Unauthorized(_)) {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_causes_are_never_sent() {
        let problem = ApiError::Internal("db password is hunter2".into()).problem();
        assert_eq!(problem.status, 500);
        assert!(!problem.detail.contains("hunter2"));
    }

    #[test]
    fn broker_failures_are_503_with_retry_after() {
        let response = ApiError::Publish(PublishError::Timeout).into_response();
        assert_eq!(response.status(), 503);
        assert_eq!(response.headers()[header::RETRY_AFTER], "5");
        assert_eq!(response.headers()[header::CONTENT_TYPE], PROBLEM_JSON);
    }

    #[test]
    fn validation_problems_list_their_fields() {
        let errors = vec![FieldError {
            field: "user".into(),
            message: "is required".into(),
        }];
        let body = serde_json::to_value(ApiError::Validation(errors).problem()).unwrap();
        assert_eq!(body["status"], 422);
        assert_eq!(body["type"], "/problems/validation");
        assert_eq!(body["errors"][0]["field"], "user");
    }
}
