//! The JSON body extractor: its rejections are our own problem+json errors.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, header};
use http_body_util::LengthLimitError;

use super::AppState;
use super::error::ApiError;

/// A request body declared as JSON, within the size limit, not parsed yet: the handler
/// reads it straight into its own type.
#[derive(Debug)]
pub struct JsonBody(pub Bytes);

impl FromRequest<AppState> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        if !declares_json(req.headers()) {
            return Err(ApiError::UnsupportedMediaType);
        }
        // The limit applied here, not by axum's `DefaultBodyLimit` layer, which costs every
        // request an extension.
        let limit = state.edge.body_limit;
        axum::body::to_bytes(req.into_body(), limit)
            .await
            .map(JsonBody)
            .map_err(|error| {
                let cause = std::error::Error::source(&error);
                if cause.is_some_and(<dyn std::error::Error>::is::<LengthLimitError>) {
                    ApiError::PayloadTooLarge(limit)
                } else {
                    ApiError::BadRequest(format!("Failed to read the request body: {error}"))
                }
            })
    }
}

/// `application/json` or any `application/*+json`, parameters such as charset allowed.
fn declares_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .as_bytes();
    let (prefix, json) = (b"application/".as_slice(), b"+json".as_slice());
    essence.eq_ignore_ascii_case(b"application/json")
        || (essence.len() >= prefix.len() + json.len()
            && essence[..prefix.len()].eq_ignore_ascii_case(prefix)
            && essence[essence.len() - json.len()..].eq_ignore_ascii_case(json))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(content_type: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, content_type.parse().unwrap());
        h
    }

    #[test]
    fn json_media_types_are_recognised() {
        for ok in [
            "application/json",
            "Application/JSON; charset=utf-8",
            "application/merge-patch+json",
            "APPLICATION/Problem+JSON",
        ] {
            assert!(declares_json(&with(ok)), "{ok}");
        }
        for bad in [
            "text/plain",
            "application/jsonx",
            "text/json",
            "application/x-www-form-urlencoded",
            "text/plain+json",
        ] {
            assert!(!declares_json(&with(bad)), "{bad}");
        }
        assert!(!declares_json(&HeaderMap::new()));
    }
}
