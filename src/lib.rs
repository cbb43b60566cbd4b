//! orders-gateway: an HTTP front for an Apache Kafka orders topic.
//!
//! ```text
//! POST /orders --> http::orders (validate: domain) --> kafka::producer --> topic `orders`
//!                                                                              |
//! GET /orders/stream <-- http::stream <-- hub <-- kafka::tracker (group order-tracker)
//! ```
//!
//! - [`config`]: the one configuration struct (flags and env vars).
//! - [`domain`]: orders and stream positions; no I/O.
//! - [`http`]: the HTTP edge (router, handlers, problem+json errors).
//! - [`publisher`]: the port between the HTTP edge and Kafka.
//! - [`history`]: the port to the topic's history, for resuming streams.
//! - [`hub`]: fan-out of tracked orders to stream clients; no Kafka types.
//! - [`kafka`]: producer, tracker, topic supervisor, embedded broker.
//! - [`readiness`]: what `/readyz` reports.
//! - [`telemetry`]: logs, request spans, Prometheus metrics.
//! - [`views`]: read-only topic and group views (types and the port to Kafka).
//! - [`app`]: process lifetime: start, run, shut down in order.

pub mod app;
pub mod config;
pub mod domain;
pub mod history;
pub mod http;
pub mod hub;
pub mod idempotency;
pub mod kafka;
pub mod publisher;
pub mod readiness;
pub mod telemetry;
pub mod views;

pub use app::{AppError, run};
pub use config::Config;
