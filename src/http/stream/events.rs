//! The `data` of the events that are not orders.

use serde::Serialize;

/// The `data` of an `overflow` event: the client fell too far behind and is disconnected.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Overflow {
    /// Orders that were dropped from this client's buffer.
    pub missed: u64,
    /// Resume from here (`Last-Event-ID`) to get them from the topic.
    pub last_event_id: Option<String>,
    /// What happened, in words.
    pub detail: &'static str,
}

/// The `data` of a `gap` event: offsets that are gone from the topic and cannot be sent.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Gap {
    pub partition: i32,
    /// First missing offset (the client's position).
    pub from: i64,
    /// Where the stream continues: the earliest offset the topic still holds.
    pub to: i64,
    pub detail: &'static str,
}

/// The `data` of an `unavailable` event: the history needed to resume could not be read;
/// the stream closes so the client retries from `last_event_id`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Unavailable {
    pub last_event_id: Option<String>,
    pub detail: String,
}
