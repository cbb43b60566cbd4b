//! Kafka adapters: the producer behind [`crate::publisher::Publisher`], the tracker that
//! feeds the hub, the topic supervisor with the producer watchdog, and the embedded
//! development broker. librdkafka types never leave this module.

pub mod admin;
mod config;
pub mod embedded;
pub mod history;
pub mod producer;
pub mod tracker;
pub mod views;
pub mod watchdog;

pub use config::ClientSettings;
