//! The port to the topic's history: where a point in time falls, and the orders between two
//! positions. Kafka implements it (`kafka::history`); the stream uses it to resume clients
//! beyond what the hub keeps in memory. Only our own types cross it.

use std::time::SystemTime;

use futures_util::future::BoxFuture;
use tokio::sync::mpsc;

use crate::domain::{Position, TrackedOrder};

/// One step of a replay, in per-partition offset order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replayed {
    /// An order between the two positions.
    Order(TrackedOrder),
    /// Offsets `from..to` of `partition` are gone from the topic (retention, or the topic
    /// was recreated): the replay continues at `to`.
    Gap { partition: i32, from: i64, to: i64 },
    /// A record that is not an order; the client's position passes it.
    Skipped {
        partition: i32,
        offset: i64,
        stamp: i64,
    },
}

/// Why history could not be read.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct HistoryError(pub String);

/// Reads the topic's history.
pub trait History: Send + Sync + 'static {
    /// For every partition, the offset of the first record stamped at or after `at`; for a
    /// partition with no such record, its end.
    fn position_at(&self, at: SystemTime) -> BoxFuture<'_, Result<Position, HistoryError>>;

    /// Streams everything from `from` (inclusive) up to `to` (exclusive) for every partition
    /// of `to`; a partition absent from `from` starts at its beginning, one absent from `to`
    /// is read up to its current end. The receiver's
    /// bound is the client's buffer: a slow client slows only its own replay.
    fn replay(
        &self,
        from: Position,
        to: Position,
    ) -> mpsc::Receiver<Result<Replayed, HistoryError>>;
}
