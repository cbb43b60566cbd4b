//! Read-only views of the orders topic and the tracker group, the answers of the original
//! demo's `kafka-topics --describe` and `kafka-consumer-groups --describe`. Our own types:
//! the HTTP edge never sees Kafka's.

use futures_util::future::BoxFuture;
use serde::Serialize;
use utoipa::ToSchema;

/// The orders topic, partition by partition.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TopicView {
    pub topic: String,
    pub partitions: Vec<PartitionView>,
}

/// One partition of the topic.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PartitionView {
    pub partition: i32,
    /// Broker id of the partition leader.
    pub leader: i32,
    pub replicas: Vec<i32>,
    /// In-sync replicas.
    pub isr: Vec<i32>,
    /// Earliest offset still held.
    pub low_watermark: i64,
    /// Offset the next record will get.
    pub high_watermark: i64,
}

/// The tracker's consumer group.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct GroupView {
    pub group: String,
    /// Group state as the broker reports it (`Stable`, `PreparingRebalance`, `Empty`, ...).
    pub state: String,
    /// Assignment strategy in use (`range`, `roundrobin`, ...).
    pub protocol: String,
    pub members: Vec<MemberView>,
    /// Committed progress and lag for every partition of the topic.
    pub partitions: Vec<GroupPartitionView>,
    /// Sum of the partitions' lag.
    pub total_lag: i64,
}

/// One member of the group.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MemberView {
    pub member_id: String,
    pub client_id: String,
    pub client_host: String,
    /// Partitions of the orders topic assigned to this member.
    pub partitions: Vec<i32>,
}

/// The group's progress on one partition.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct GroupPartitionView {
    pub partition: i32,
    /// Next offset the group will read; absent when it has committed nothing yet.
    pub committed_offset: Option<i64>,
    pub high_watermark: i64,
    /// High watermark minus committed offset (minus the low watermark when nothing is
    /// committed).
    pub lag: i64,
}

/// Why a view could not be read.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct ViewError(pub String);

/// Reads the views from the cluster.
pub trait ClusterViews: Send + Sync + 'static {
    fn topic(&self) -> BoxFuture<'_, Result<TopicView, ViewError>>;
    fn group(&self) -> BoxFuture<'_, Result<GroupView, ViewError>>;
}
