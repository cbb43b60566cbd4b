//! The port between the HTTP edge and the store of orders: Kafka in production, a fake in
//! handler tests. Only our own types cross it.

use std::sync::Arc;
use std::time::SystemTime;

use futures_util::future::BoxFuture;

use crate::domain::Order;

/// Where an acknowledged order was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// Shared, not copied per order.
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
    /// The record's timestamp as the broker stored it.
    pub timestamp: SystemTime,
}

/// Why an order was not acknowledged. Every variant means "not known to be on the topic".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// Too many orders are waiting for the broker; nothing was sent.
    #[error("too many orders are waiting for the broker")]
    QueueFull,
    /// The broker did not acknowledge in time. The order may still have been written.
    #[error("the broker did not acknowledge the order in time")]
    Timeout,
    /// The broker refused the order or could not be reached.
    #[error("the broker did not take the order: {0}")]
    Unavailable(String),
}

/// Publishes valid orders and answers only once they are durably stored.
pub trait Publisher: Send + Sync + 'static {
    /// Resolves to a receipt only after the store acknowledged the order. `traceparent` is
    /// the caller's W3C trace context, carried along with the order.
    fn publish<'a>(
        &'a self,
        order: &'a Order,
        traceparent: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Receipt, PublishError>>;
}
