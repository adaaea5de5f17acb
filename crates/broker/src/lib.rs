//! ferry's broker semantics on top of the log: topics of N partitions, publishing with key-based or
//! round-robin partitioning, fetching by offset with long-poll, stream groups (Kafka consumer groups)
//! with durable committed offsets, seek and lag, and live members sharing their partitions (`membership`),
//! queue groups (SQS-like leases, acks, dead letters) and
//! subscriptions (SNS-like fan-out with filter policies).
//!
//! ```text
//! <data>/
//!   meta/                      a ferry log of metadata events (topics, committed offsets); see `meta`
//!   topics/<name>.<id>/<p>/    one ferry log per partition; <id> is never reused, so deleting and
//!                              re-creating a topic never mixes old and new files
//! ```
//!
//! Invariants:
//! - A publish is answered only when every record is durable under its topic's fsync policy.
//! - Metadata changes are durable (fsync always) before they are visible, and applied in log order.
//! - Async callers never block on I/O: reads run on the blocking pool, appends complete through callbacks.

mod broker;
mod config;
pub mod engine;
pub mod engine_groups;
pub mod engine_policies;
mod error;
mod filter;
mod membership;
mod meta;
mod names;
mod queue;
mod stats;
mod subscription;

pub use crate::broker::{
    Broker, FetchLimits, GroupPartition, PartitionInfo, Produce, Produced, SeekTo, StoredRecord, TopicInfo,
    partition_for_key,
};
pub use crate::config::{MAX_PARTITIONS, MAX_RECORD_BYTES_LIMIT, QueueConfig, TopicConfig};
pub use crate::error::{BrokerError, Result};
pub use crate::filter::{FilterPolicy, FilterScope};
pub use crate::membership::{
    DEFAULT_SESSION_TIMEOUT, GroupStatus, JoinOptions, MAX_SESSION_TIMEOUT, MIN_SESSION_TIMEOUT, MemberInfo,
    MemberRef, Membership,
};
pub use crate::names::{MAX_NAME_LEN, validate_name};
pub use crate::queue::{Leased, QueueInfo, ReceiveOptions};
pub use crate::stats::BrokerOptions;
pub use crate::subscription::{SubscriptionInfo, SubscriptionKind, SubscriptionSpec};
pub use ferry_log::{FsyncPolicy, Header, LogObserver};
