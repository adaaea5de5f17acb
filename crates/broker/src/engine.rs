//! The engine boundary: what the pipeline runtime needs of the storage below it, implemented by the
//! embedded broker, by a ferry server over HTTP (`ferry run`), and by NATS JetStream and RabbitMQ
//! (`ferry-engines`). A record is identified by `(partition, offset)` on every engine; an engine that
//! has no partitions uses partition 0 and its own sequence number.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::{Broker, BrokerError, Header, Produce, QueueConfig, ReceiveOptions, TopicConfig};

/// Why an engine call failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The embedded broker refused or failed.
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// The engine could not be reached, or is busy or restarting: trying again later may succeed.
    #[error("{engine} is unavailable: {message}")]
    Unavailable {
        /// Which engine: `nats`, `rabbitmq`, `ferry server`.
        engine: &'static str,
        /// What happened.
        message: String,
    },
    /// The engine refused the request: trying again will not help.
    #[error("{engine} refused: {message}")]
    Refused {
        /// Which engine.
        engine: &'static str,
        /// What it said.
        message: String,
    },
    /// The engine turned the request down for a reason that is neither the records' nor passing (a
    /// wrong token, a missing permission): retrying alone will not help, and other records fare no better.
    #[error("{engine} failed: {message}")]
    Failed {
        /// Which engine.
        engine: &'static str,
        /// What it said.
        message: String,
    },
    /// An ack, nack or extend of records this process does not hold (any more): their lease ran out or
    /// their connection was lost, so they will be delivered again; retrying the call cannot help.
    #[error("{engine}: {message}")]
    NotLeased {
        /// Which engine.
        engine: &'static str,
        /// Which records, and why.
        message: String,
    },
    /// The engine has no such feature (listed in docs/engines.md).
    #[error("the {engine} engine does not support {what}")]
    Unsupported {
        /// Which engine.
        engine: &'static str,
        /// The feature.
        what: String,
    },
}

impl EngineError {
    /// True when trying again later may succeed (a server unreachable, busy or restarting).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }

    /// True when the engine refused the records themselves (too large, a header it reserves): publishing
    /// the same records again cannot succeed.
    pub fn is_refused(&self) -> bool {
        matches!(
            self,
            Self::Refused { .. }
                | Self::Broker(BrokerError::RecordTooLarge { .. } | BrokerError::InvalidArgument { .. })
        )
    }

    /// True for an ack, nack or extend of records this process does not hold (any more): their lease
    /// ran out or their connection was lost, so they will be delivered again and retrying cannot help.
    pub fn is_not_leased(&self) -> bool {
        matches!(
            self,
            Self::Broker(BrokerError::NotLeased { .. }) | Self::NotLeased { .. }
        )
    }
}

/// A boxed future, so that [`Bus`] and the stage traits can be used as trait objects.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A record to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutRecord {
    /// Key (same key, same partition).
    pub key: Option<String>,
    /// Headers, in order.
    pub headers: Vec<(String, String)>,
    /// Value: JSON text.
    pub value: Bytes,
}

/// A record received under a lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InRecord {
    /// Partition.
    pub partition: u32,
    /// Offset.
    pub offset: u64,
    /// When it was published, ms since the Unix epoch.
    pub timestamp_ms: i64,
    /// Key (dropped if not UTF-8).
    pub key: Option<String>,
    /// Headers (those whose value is not UTF-8 are dropped).
    pub headers: Vec<(String, String)>,
    /// Value.
    pub value: Bytes,
    /// Deliveries so far, this one included.
    pub deliveries: u32,
}

impl InRecord {
    /// `(partition, offset)`.
    pub fn id(&self) -> (u32, u64) {
        (self.partition, self.offset)
    }

    /// The headers as the broker keeps them (what filter policies match against).
    pub fn broker_headers(&self) -> Vec<Header> {
        self.headers
            .iter()
            .map(|(key, value)| Header {
                key: key.clone(),
                value: Bytes::from(value.clone()),
            })
            .collect()
    }
}

/// Cuts `records` to the first ones within about `max_bytes` of keys and values, at least one (as a
/// fetch of the embedded broker does).
pub fn truncate_to_bytes(records: &mut Vec<InRecord>, max_bytes: usize) {
    let mut bytes = 0;
    let keep = records
        .iter()
        .position(|r| {
            bytes += r.value.len() + r.key.as_ref().map_or(0, String::len);
            bytes > max_bytes
        })
        .map_or(records.len(), |i| i.max(1));
    records.truncate(keep);
}

/// Settings of the queue groups stages read with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupSettings {
    /// Lease length of a receive; stages extend leases of records they hold longer.
    pub visibility: Duration,
    /// Most records leased at once.
    pub max_in_flight: u32,
    /// A new group gets only the records published after it exists (a subscription's, as with SNS),
    /// rather than every record the topic keeps. RabbitMQ groups always start there.
    pub from_end: bool,
}

impl Default for GroupSettings {
    fn default() -> Self {
        Self {
            visibility: Duration::from_secs(30),
            max_in_flight: 100_000,
            from_end: false,
        }
    }
}

/// What ferry needs of an engine: the boundary between the runtime above (pipelines, and in time the
/// HTTP API) and the storage below: the embedded log, NATS JetStream or RabbitMQ. Every call is durable
/// when it returns `Ok` (publishes under the topic's fsync policy, acks in the engine's metadata).
pub trait Engine: Send + Sync + std::fmt::Debug + 'static {
    /// Creates `topic` with default settings unless it exists.
    fn ensure_topic<'a>(&'a self, topic: &'a str) -> BoxFuture<'a, Result<(), EngineError>>;
    /// Creates queue group `group` on `topic` unless it exists. Stages dead-letter records themselves
    /// (to `<pipeline>.dlq`), so the broker's own delivery limit is only a guard against a record that
    /// crashes its stage again and again.
    fn ensure_group<'a>(
        &'a self,
        group: &'a str,
        topic: &'a str,
        settings: GroupSettings,
    ) -> BoxFuture<'a, Result<(), EngineError>>;
    /// Creates queue group `group` on `topic` with a queue group's settings (the API's), unless it exists.
    /// Engines apply `visibility_timeout_ms` and `max_in_flight`; [`crate::engine_policies::Policies`]
    /// applies `max_deliveries` and `dead_letter_topic` on engines that have no dead-lettering of their own.
    fn ensure_queue<'a>(
        &'a self,
        group: &'a str,
        topic: &'a str,
        config: &'a QueueConfig,
    ) -> BoxFuture<'a, Result<(), EngineError>> {
        let settings = GroupSettings {
            visibility: Duration::from_millis(config.visibility_timeout_ms),
            max_in_flight: config.max_in_flight,
            from_end: false,
        };
        self.ensure_group(group, topic, settings)
    }
    /// Publishes `records` to `topic`; returns once they are durable, with each record's id
    /// `(partition, offset)`, in order.
    fn publish_ids<'a>(
        &'a self,
        topic: &'a str,
        records: Vec<OutRecord>,
    ) -> BoxFuture<'a, Result<Vec<(u32, u64)>, EngineError>>;
    /// [`Engine::publish_ids`] without the ids.
    fn publish<'a>(
        &'a self,
        topic: &'a str,
        records: Vec<OutRecord>,
    ) -> BoxFuture<'a, Result<(), EngineError>> {
        Box::pin(async move { self.publish_ids(topic, records).await.map(|_| ()) })
    }
    /// Leases up to `max` records of `group`, waiting up to `wait` for the first.
    fn receive<'a>(
        &'a self,
        group: &'a str,
        topic: &'a str,
        max: usize,
        wait: Duration,
    ) -> BoxFuture<'a, Result<Vec<InRecord>, EngineError>>;
    /// Finishes records.
    fn ack<'a>(
        &'a self,
        group: &'a str,
        topic: &'a str,
        ids: &'a [(u32, u64)],
    ) -> BoxFuture<'a, Result<(), EngineError>>;
    /// Gives records back, available again after `delay`.
    fn nack<'a>(
        &'a self,
        group: &'a str,
        topic: &'a str,
        ids: &'a [(u32, u64)],
        delay: Duration,
    ) -> BoxFuture<'a, Result<(), EngineError>>;
    /// Renews leases for `visibility` from now.
    fn extend<'a>(
        &'a self,
        group: &'a str,
        topic: &'a str,
        ids: &'a [(u32, u64)],
        visibility: Duration,
    ) -> BoxFuture<'a, Result<(), EngineError>>;

    /// The engine's name in messages: `nats`, `rabbitmq`, `embedded`.
    fn name(&self) -> &'static str {
        "embedded"
    }

    /// Every topic ferry made on the engine, by name.
    fn topics(&self) -> BoxFuture<'_, Result<Vec<TopicState>, EngineError>> {
        unsupported(self.name(), "listing topics")
    }

    /// `topic`, or `None` when the engine has no such topic.
    fn describe_topic<'a>(
        &'a self,
        topic: &'a str,
    ) -> BoxFuture<'a, Result<Option<TopicState>, EngineError>> {
        let _ = topic;
        unsupported(self.name(), "describing topics")
    }

    /// Deletes `topic` and its records; `false` when there was no such topic.
    fn delete_topic<'a>(&'a self, topic: &'a str) -> BoxFuture<'a, Result<bool, EngineError>> {
        let _ = topic;
        unsupported(self.name(), "deleting topics")
    }

    /// Up to `max` records of `topic` from `offset` on (partition 0), in order, waiting up to `wait` for
    /// the first when there is none yet; no lease is taken and `deliveries` is 1. An offset below the
    /// first record still stored reads from that one.
    fn fetch<'a>(
        &'a self,
        topic: &'a str,
        offset: u64,
        max: usize,
        wait: Duration,
    ) -> BoxFuture<'a, Result<Vec<InRecord>, EngineError>> {
        let _ = (topic, offset, max, wait);
        unsupported(self.name(), "reading topics by offset")
    }

    /// Queue group `group` on `topic`, or `None` when it does not exist.
    fn group_state<'a>(
        &'a self,
        group: &'a str,
        topic: &'a str,
    ) -> BoxFuture<'a, Result<Option<GroupState>, EngineError>> {
        let _ = (group, topic);
        unsupported(self.name(), "describing queue groups")
    }

    /// The filter policy ferry applies to group `group` on `topic` (a subscription's), if any.
    fn filter<'a>(&'a self, group: &'a str, topic: &'a str) -> BoxFuture<'a, Option<crate::FilterPolicy>> {
        let _ = (group, topic);
        Box::pin(std::future::ready(None))
    }

    /// Creates subscription `name` on `topic` (see [`crate::engine_policies::Policies`]); `false` when it
    /// existed with the same settings.
    fn create_subscription<'a>(
        &'a self,
        topic: &'a str,
        name: &'a str,
        spec: crate::SubscriptionSpec,
    ) -> BoxFuture<'a, Result<bool, EngineError>> {
        let _ = (topic, name, spec);
        unsupported(self.name(), "subscriptions made through the API")
    }

    /// The subscriptions of `topic`, by name.
    fn list_subscriptions<'a>(
        &'a self,
        topic: &'a str,
    ) -> BoxFuture<'a, Result<Vec<crate::SubscriptionInfo>, EngineError>> {
        let _ = topic;
        unsupported(self.name(), "subscriptions made through the API")
    }

    /// Deletes subscription `name` of `topic`; `false` when there was none.
    fn delete_subscription<'a>(
        &'a self,
        topic: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<bool, EngineError>> {
        let _ = (topic, name);
        unsupported(self.name(), "subscriptions made through the API")
    }

    /// The value under `key` in the engine's durable metadata store (any text key), or `None`.
    fn meta_get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<MetaValue>, EngineError>> {
        let _ = key;
        unsupported(self.name(), "a metadata store (stream groups)")
    }

    /// Stores `value` under `key` if the key's revision is still `revision` (`None`: if the key does not
    /// exist), durably; returns the new revision, or `None` when another writer came first.
    fn meta_put<'a>(
        &'a self,
        key: &'a str,
        value: Bytes,
        revision: Option<u64>,
    ) -> BoxFuture<'a, Result<Option<u64>, EngineError>> {
        let _ = (key, value, revision);
        unsupported(self.name(), "a metadata store (stream groups)")
    }
}

/// What an engine reports of a topic (one partition, 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicState {
    /// The topic's name.
    pub name: String,
    /// First offset still stored.
    pub start_offset: u64,
    /// Offset the next record gets.
    pub next_offset: u64,
    /// Bytes the engine reports for the topic's records.
    pub size_bytes: u64,
    /// When the engine made the topic, ns since the Unix epoch (0 when it does not say): a topic deleted
    /// and made again has another, so state kept for the old one is not taken for the new one.
    pub created_ns: u64,
}

/// What an engine reports of a queue group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupState {
    /// Records published to the group and not yet acked, leased ones included (when the engine counts
    /// those it has handed out apart, as RabbitMQ does not: then the records waiting only).
    pub depth: u64,
    /// Records leased right now.
    pub in_flight: u64,
}

/// A value in an engine's metadata store, with the revision a [`Engine::meta_put`] must name to replace it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaValue {
    /// The value.
    pub value: Bytes,
    /// Its revision.
    pub revision: u64,
}

fn unsupported<T>(engine: &'static str, what: &str) -> BoxFuture<'static, Result<T, EngineError>>
where
    T: Send + 'static,
{
    let what = what.to_owned();
    Box::pin(async move { Err(EngineError::Unsupported { engine, what }) })
}

/// The delivery limit of the queue groups stages read with: stages dead-letter records themselves
/// (to `<pipeline>.dlq`), so this is only a guard against a record that crashes its stage again and again.
pub const GUARD_DELIVERIES: u32 = 1000;

/// An engine shared by the tasks that use it.
pub type SharedEngine = Arc<dyn Engine>;

/// The embedded broker of this process.
impl Engine for Broker {
    fn ensure_topic<'a>(&'a self, topic: &'a str) -> BoxFuture<'a, Result<(), EngineError>> {
        Box::pin(async move {
            match self.describe_topic(topic) {
                Ok(_) => Ok(()),
                Err(BrokerError::TopicNotFound(_)) => {
                    match self.create_topic(topic, TopicConfig::default()).await {
                        Ok(_) | Err(BrokerError::TopicExists(_)) => Ok(()),
                        Err(e) => Err(e.into()),
                    }
                }
                Err(e) => Err(e.into()),
            }
        })
    }

    fn ensure_group<'a>(
        &'a self,
        group: &'a str,
        topic: &'a str,
        settings: GroupSettings,
    ) -> BoxFuture<'a, Result<(), EngineError>> {
        Box::pin(async move {
            let config = QueueConfig {
                visibility_timeout_ms: settings.visibility.as_millis().try_into().unwrap_or(u64::MAX),
                max_deliveries: GUARD_DELIVERIES,
                max_in_flight: settings.max_in_flight,
                ..QueueConfig::default()
            };
            match self.create_queue(group, topic, config).await {
                // A group made earlier with other settings keeps them: its backlog matters more.
                Ok(_) | Err(BrokerError::QueueExists { .. }) => Ok(()),
                Err(e) => Err(e.into()),
            }
        })
    }

    fn publish_ids<'a>(
        &'a self,
        topic: &'a str,
        records: Vec<OutRecord>,
    ) -> BoxFuture<'a, Result<Vec<(u32, u64)>, EngineError>> {
        Box::pin(async move {
            if records.is_empty() {
                return Ok(Vec::new());
            }
            let records = records
                .into_iter()
                .map(|r| Produce {
                    key: r.key.map(Bytes::from),
                    headers: r
                        .headers
                        .into_iter()
                        .map(|(key, value)| Header {
                            key,
                            value: Bytes::from(value),
                        })
                        .collect(),
                    value: r.value,
                    timestamp: None,
                    partition: None,
                })
                .collect();
            let produced = self.publish(topic, records).await?;
            Ok(produced.into_iter().map(|p| (p.partition, p.offset)).collect())
        })
    }

    fn receive<'a>(
        &'a self,
        group: &'a str,
        topic: &'a str,
        max: usize,
        wait: Duration,
    ) -> BoxFuture<'a, Result<Vec<InRecord>, EngineError>> {
        Box::pin(async move {
            let options = ReceiveOptions {
                max_records: max,
                max_wait: wait,
                visibility_timeout: None,
            };
            let leased = self.receive(group, topic, options).await?;
            Ok(leased
                .into_iter()
                .map(|l| InRecord {
                    partition: l.record.partition,
                    offset: l.record.offset,
                    timestamp_ms: l.record.timestamp,
                    key: l.record.key.and_then(|k| String::from_utf8(k.to_vec()).ok()),
                    headers: l
                        .record
                        .headers
                        .into_iter()
                        .filter_map(|h| String::from_utf8(h.value.to_vec()).ok().map(|v| (h.key, v)))
                        .collect(),
                    value: l.record.value,
                    deliveries: l.deliveries,
                })
                .collect())
        })
    }

    fn ack<'a>(
        &'a self,
        group: &'a str,
        topic: &'a str,
        ids: &'a [(u32, u64)],
    ) -> BoxFuture<'a, Result<(), EngineError>> {
        Box::pin(async move { Ok(self.ack(group, topic, ids).await?) })
    }

    fn nack<'a>(
        &'a self,
        group: &'a str,
        topic: &'a str,
        ids: &'a [(u32, u64)],
        delay: Duration,
    ) -> BoxFuture<'a, Result<(), EngineError>> {
        Box::pin(async move { Ok(self.nack(group, topic, ids, delay).await?) })
    }

    fn extend<'a>(
        &'a self,
        group: &'a str,
        topic: &'a str,
        ids: &'a [(u32, u64)],
        visibility: Duration,
    ) -> BoxFuture<'a, Result<(), EngineError>> {
        Box::pin(async move { Ok(self.extend(group, topic, ids, visibility).await?) })
    }
}
