//! Bearer tokens: `API_TOKENS` for placing orders, `ADMIN_TOKEN` for the admin views.
//!
//! Tokens are compared in constant time and never logged; a failed check says only that a
//! valid token is missing.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};

use super::AppState;
use super::error::ApiError;
use crate::config::Secret;

/// A caller allowed to place orders. Extracted before the body, so a caller without a
/// token learns nothing about what it sent.
pub struct MayOrder;

impl FromRequestParts<AppState> for MayOrder {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        require_api_token(&state.edge.api_tokens, &parts.headers).map(|()| Self)
    }
}

/// Checks `POST /orders` against `API_TOKENS`; with none configured every caller may order.
pub fn require_api_token(tokens: &[Secret], headers: &HeaderMap) -> Result<(), ApiError> {
    if tokens.is_empty() {
        return Ok(());
    }
    let presented = bearer(headers).unwrap_or_default();
    // Every token is compared, so timing does not tell which one came close.
    let matches = tokens.iter().fold(false, |found, token| {
        found | constant_time_eq(presented.as_bytes(), token.expose().as_bytes())
    });
    if matches {
        Ok(())
    } else {
        Err(ApiError::Unauthorized(
            "placing orders needs `Authorization: Bearer <token>` with one of the API_TOKENS",
        ))
    }
}

/// The token of an `Authorization: Bearer <token>` header.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Compares without stopping at the first difference, so timing does not reveal how much
/// of a guessed token was right.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let len_differs = u8::from(a.len() != b.len());
    let mut diff = len_differs;
    for (i, x) in a.iter().enumerate() {
        diff |= x ^ b.get(i % b.len().max(1)).copied().unwrap_or(0xff);
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn with_auth(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn tokens_compare_equal_only_when_identical() {
        assert!(constant_time_eq(b"s3cret", b"s3cret"));
        for other in [&b""[..], b"s3cre", b"s3cret!", b"S3cret", b"x"] {
            assert!(!constant_time_eq(other, b"s3cret"), "{other:?}");
        }
    }

    #[test]
    fn any_configured_token_may_order() {
        let tokens = [Secret::new("alpha"), Secret::new("beta")];
        assert!(require_api_token(&tokens, &with_auth("Bearer beta")).is_ok());
        assert!(require_api_token(&tokens, &with_auth("bearer alpha")).is_ok());
        for bad in [
            "Bearer gamma",
            "Bearer ",
            "Basic alpha",
            "alpha",
            "Bearer alphabeta",
        ] {
            assert!(
                require_api_token(&tokens, &with_auth(bad)).is_err(),
                "{bad}"
            );
        }
        assert!(require_api_token(&tokens, &HeaderMap::new()).is_err());
    }

    #[test]
    fn without_tokens_everyone_may_order() {
        assert!(require_api_token(&[], &HeaderMap::new()).is_ok());
    }
}
