//! The parameters of `GET /orders/stream`: where a client starts and what it wants to see.

use std::time::{Duration, SystemTime};

use axum::http::HeaderMap;

use crate::domain::Position;
use crate::http::error::ApiError;

/// Largest `limit` a client may ask for.
const LIMIT_MAX: u32 = 10_000;
/// Longest `user` / `item` filter value (the longest valid field).
const FILTER_MAX_CHARS: usize = 128;

/// Query parameters of `GET /orders/stream`.
#[derive(Debug, Default, PartialEq, Eq, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StreamQuery {
    /// Resume after this event id, for clients that cannot send the `Last-Event-ID` header.
    /// The header wins when both are sent (EventSource sends it on every reconnect).
    #[param(value_type = Option<String>, example = "AeyWXjIAAQ")]
    pub last_event_id: Option<String>,
    /// Replay every order whose record timestamp is at or after this time, then go live:
    /// RFC 3339 (`2026-11-26T14:00:00Z`, any offset) or milliseconds since the Unix epoch.
    #[param(value_type = Option<String>, example = "2026-11-26T14:00:00Z")]
    pub since: Option<SystemTime>,
    /// `true`: start at the live tail, the default for a new client. A `Last-Event-ID`
    /// header still resumes exactly.
    pub live: Option<bool>,
    /// Only orders of this user (exact match). Combines with `item` by AND.
    #[param(max_length = 128)]
    pub user: Option<String>,
    /// Only orders of this item (exact match). Combines with `user` by AND.
    #[param(max_length = 128)]
    pub item: Option<String>,
    /// End the stream after this many `order` events (1 to 10000). Without it the stream
    /// is endless.
    #[param(minimum = 1, maximum = 10000)]
    pub limit: Option<u32>,
}

/// Where a stream starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// At the live tail.
    Live,
    /// Just after this position (a resuming client).
    After(Position),
    /// At the first orders stamped at or after this time.
    Since(SystemTime),
}

impl StreamQuery {
    /// Parses the raw query; unknown parameters are ignored (cache busters are common).
    pub fn parse(raw: Option<&str>) -> Result<Self, ApiError> {
        let mut query = Self::default();
        for (key, value) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
            match key.as_ref() {
                "last_event_id" => query.last_event_id = Some(value.into_owned()),
                "since" => query.since = Some(parse_since(&value)?),
                "live" => query.live = Some(parse_bool("live", &value)?),
                "user" => query.user = Some(parse_filter("user", &value)?),
                "item" => query.item = Some(parse_filter("item", &value)?),
                "limit" => query.limit = Some(parse_limit(&value)?),
                _ => {}
            }
        }
        Ok(query)
    }

    /// Where to start: a `Last-Event-ID` header first, then `last_event_id`, `since`,
    /// `live`; the live tail by default. Ids must be this topic's, else 400.
    pub fn start(&self, headers: &HeaderMap, topic: &str) -> Result<Start, ApiError> {
        let header = headers.get("last-event-id").map(|v| {
            v.to_str()
                .map_err(|_| ApiError::BadRequest("`Last-Event-ID` is not valid text".into()))
        });
        let id = match header {
            Some(id) => Some(id?),
            None if self.live == Some(true) => None,
            None => self.last_event_id.as_deref(),
        };
        if self.last_event_id.is_some() && self.since.is_some() {
            return Err(ApiError::BadRequest(
                "use either `last_event_id` or `since`, not both".into(),
            ));
        }
        if self.live == Some(true) && self.since.is_some() {
            return Err(ApiError::BadRequest(
                "use either `live=true` or `since`, not both".into(),
            ));
        }
        match (id, self.since) {
            (Some(id), _) => Position::decode(id.trim(), topic)
                .map(Start::After)
                .map_err(|e| {
                    ApiError::BadRequest(format!("the last event id `{id}` cannot be used: {e}"))
                }),
            (None, Some(since)) if self.live != Some(true) => Ok(Start::Since(since)),
            _ => Ok(Start::Live),
        }
    }

    /// Whether an order passes the `user` and `item` filters.
    pub fn wants(&self, user: &str, item: &str) -> bool {
        self.user.as_deref().is_none_or(|u| u == user)
            && self.item.as_deref().is_none_or(|i| i == item)
    }
}

fn parse_since(value: &str) -> Result<SystemTime, ApiError> {
    let bad = || {
        ApiError::BadRequest(format!(
            "`since` must be an RFC 3339 time (2026-11-26T14:00:00Z) or epoch milliseconds, got `{value}`"
        ))
    };
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        let ms = value.parse::<u64>().map_err(|_| bad())?;
        return SystemTime::UNIX_EPOCH
            .checked_add(Duration::from_millis(ms))
            .ok_or_else(bad);
    }
    let t = time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc3339)
        .map_err(|_| bad())?;
    // Times before 1970 replay everything, like the epoch itself.
    let nanos = u64::try_from(t.unix_timestamp_nanos().max(0)).map_err(|_| bad())?;
    Ok(SystemTime::UNIX_EPOCH + Duration::from_nanos(nanos))
}

fn parse_limit(value: &str) -> Result<u32, ApiError> {
    match value.parse::<u32>() {
        Ok(n @ 1..=LIMIT_MAX) => Ok(n),
        _ => Err(ApiError::BadRequest(format!(
            "`limit` must be an integer from 1 to {LIMIT_MAX}, got `{value}`"
        ))),
    }
}

fn parse_bool(name: &str, value: &str) -> Result<bool, ApiError> {
    match value {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(ApiError::BadRequest(format!(
            "`{name}` must be true or false, got `{value}`"
        ))),
    }
}

fn parse_filter(name: &str, value: &str) -> Result<String, ApiError> {
    let chars = value.chars().count();
    if chars == 0 || chars > FILTER_MAX_CHARS {
        return Err(ApiError::BadRequest(format!(
            "`{name}` must be 1 to {FILTER_MAX_CHARS} characters"
        )));
    }
    Ok(value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start(raw: &str, header: Option<&str>) -> Result<Start, ApiError> {
        let mut headers = HeaderMap::new();
        if let Some(h) = header {
            headers.insert("last-event-id", h.parse().unwrap());
        }
        StreamQuery::parse(Some(raw))?.start(&headers, "orders")
    }

    fn id(pairs: &[(i32, i64)]) -> String {
        let mut p = Position::default();
        for &(partition, next) in pairs {
            p.advance(partition, next - 1, 1_764_000_000_000);
        }
        p.encode("orders")
    }

    #[test]
    fn since_takes_rfc3339_with_any_offset_or_epoch_millis() {
        let at = |s| StreamQuery::parse(Some(s)).unwrap().since.unwrap();
        let expected = SystemTime::UNIX_EPOCH + Duration::from_millis(1_764_165_600_000);
        assert_eq!(at("since=2025-11-26T14:00:00Z"), expected);
        assert_eq!(at("since=2025-11-26T15:00:00%2B01:00"), expected);
        assert_eq!(at("since=1764165600000"), expected);
    }

    #[test]
    fn bad_parameters_are_400s_and_unknown_ones_are_ignored() {
        for raw in [
            "since=yesterday",
            "since=",
            "limit=0",
            "limit=10001",
            "limit=-1",
            "limit=x",
            "live=yes",
            "user=",
            "item=",
        ] {
            let err = StreamQuery::parse(Some(raw)).unwrap_err();
            assert!(matches!(err, ApiError::BadRequest(_)), "{raw}");
        }
        assert_eq!(
            StreamQuery::parse(Some("_=123")).unwrap(),
            StreamQuery::default()
        );
        assert_eq!(StreamQuery::parse(Some("limit=3")).unwrap().limit, Some(3));
    }

    #[test]
    fn a_new_client_starts_live_and_a_resuming_one_after_its_id() {
        assert_eq!(start("", None).unwrap(), Start::Live);
        assert_eq!(start("live=true", None).unwrap(), Start::Live);
        let expected = Start::After(Position::decode(&id(&[(0, 4)]), "orders").unwrap());
        assert_eq!(
            start(&format!("last_event_id={}", id(&[(0, 4)])), None).unwrap(),
            expected
        );
        assert_eq!(start("", Some(&id(&[(0, 4)]))).unwrap(), expected);
        assert!(matches!(start("since=0", None).unwrap(), Start::Since(_)));
    }

    #[test]
    fn the_header_wins_over_the_query_even_with_live() {
        let query = format!("live=true&last_event_id={}", id(&[(0, 1)]));
        let started = start(&query, Some(&id(&[(0, 9)]))).unwrap();
        assert_eq!(
            started,
            Start::After(Position::decode(&id(&[(0, 9)]), "orders").unwrap())
        );
        assert_eq!(
            start(&query, None).unwrap(),
            Start::Live,
            "live=true ignores the query id"
        );
    }

    #[test]
    fn malformed_or_foreign_ids_and_conflicts_are_400s() {
        let foreign = {
            let mut p = Position::default();
            p.advance(0, 1, 1_764_000_000_000);
            p.encode("payments")
        };
        for (raw, header) in [
            ("last_event_id=garbage", None),
            ("", Some("garbage")),
            ("", Some(foreign.as_str())),
            ("since=0&live=true", None),
        ] {
            assert!(
                matches!(start(raw, header), Err(ApiError::BadRequest(_))),
                "{raw} {header:?}"
            );
        }
        let both = format!("since=0&last_event_id={}", id(&[(0, 1)]));
        assert!(matches!(start(&both, None), Err(ApiError::BadRequest(_))));
    }

    #[test]
    fn filters_combine_with_and() {
        let q = StreamQuery::parse(Some("user=lara&item=tea")).unwrap();
        assert!(q.wants("lara", "tea"));
        assert!(!q.wants("lara", "cake") && !q.wants("bo", "tea"));
        assert!(StreamQuery::default().wants("anyone", "anything"));
    }
}
