//! The embedded development broker: librdkafka's in-process mock cluster, so that
//! `cargo run` works with no Kafka installed. Data lives in memory only.

use std::num::NonZeroI32;

use rdkafka::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, Producer};

/// A running mock cluster; it stops when this is dropped.
pub struct EmbeddedBroker {
    /// The mock cluster belongs to this client and lives exactly as long as it.
    _owner: BaseProducer,
    bootstrap_servers: String,
}

impl EmbeddedBroker {
    /// Starts a one-broker cluster holding `topic`.
    pub fn start(topic: &str, partitions: NonZeroI32) -> Result<Self, KafkaError> {
        let owner: BaseProducer = ClientConfig::new()
            .set("test.mock.num.brokers", "1")
            .create()?;
        let bootstrap_servers = {
            let cluster = owner
                .client()
                .mock_cluster()
                .ok_or(KafkaError::ClientCreation(
                    "librdkafka did not create a mock cluster".into(),
                ))?;
            cluster.create_topic(topic, partitions.get(), 1)?;
            cluster.bootstrap_servers()
        };
        no_initial_rebalance_delay(&owner);
        Ok(Self {
            _owner: owner,
            bootstrap_servers,
        })
    }

    /// Where clients connect.
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap_servers
    }
}

/// The mock cluster waits 3 s before the first group rebalance, like a real broker's
/// group.initial.rebalance.delay.ms. A dev server should be ready at once; the Rust API
/// has no setter, so call librdkafka directly.
#[allow(unsafe_code)]
fn no_initial_rebalance_delay(owner: &BaseProducer) {
    use rdkafka::bindings::{
        rd_kafka_handle_mock_cluster, rd_kafka_mock_group_initial_rebalance_delay_ms,
    };
    // SAFETY: `owner` is a live client handle; the cluster pointer it yields lives as long
    // as that client, and the call only stores an integer in the cluster.
    unsafe {
        let cluster = rd_kafka_handle_mock_cluster(owner.client().native_ptr());
        if !cluster.is_null() {
            rd_kafka_mock_group_initial_rebalance_delay_ms(cluster, 0);
        }
    }
}
