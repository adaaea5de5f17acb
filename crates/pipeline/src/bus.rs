//! The broker a pipeline runs on: the embedded one in the same process (`ferry up`), or a ferry server
//! over HTTP (`ferry run --url`). Stages only publish, receive under a lease, ack, nack and extend, so
//! both give the same delivery contract: a record is done when acked; a lease that runs out (a crashed
//! stage) makes it available again.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ferry_broker::{Broker, BrokerError, Header, Produce, QueueConfig, ReceiveOptions, TopicConfig};
use ferry_client::{Client, ProduceRecord};

use crate::error::BusError;

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
}

/// Settings of the queue groups stages read with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupSettings {
    /// Lease length of a receive; stages extend leases of records they hold longer.
    pub visibility: Duration,
    /// Most records leased at once.
    pub max_in_flight: u32,
}

impl Default for GroupSettings {
    fn default() -> Self {
        Self {
            visibility: Duration::from_secs(30),
            max_in_flight: 100_000,
        }
    }
}

/// What a pipeline needs of a broker. Every call is durable when it returns `Ok` (publishes under the
/// topic's fsync policy, acks in the broker's metadata).
pub trait Bus: Send + Sync + std::fmt::Debug + 'static {
    /// Creates `topic` with default settings unless it exists.
    fn ensure_topic<'a>(&'a self, topic: &'a str) -> BoxFuture<'a, Result<(), BusError>>;
    /// Creates queue group `group` on `topic` unless it exists. Stages dead-letter records themselves
    /// (to `<pipeline>.dlq`), so the broker's own delivery limit is only a guard against a record that
    /// crashes its stage again and again.
    fn ensure_group<'a>(
        &'a self,
        group: &'a str,
        topic: &'a str,
        settings: GroupSettings,
    ) -> BoxFuture<'a, Result<(), BusError>>;
    /// Publishes `records` to `topic`; returns once they are durable.
    fn publish<'a>(&'a self, topic: &'a str, records: Vec<OutRecord>) -> BoxFuture<'a, Result<(), BusError>>;
    /// Leases up to `max` records of `group`, waiting up to `wait` for the first.
    fn receive<'a>(
        &'a self,
        group: &'a str,
        topic: &'a str,
        max: usize,
        wait: Duration,
    ) -> BoxFuture<'a, Result<Vec<InRecord>, BusError>>;
    /// Finishes records.
    fn ack<'a>(
        &'a self,
        group: &'a str,
        topic: &'a str,
        ids: &'a [(u32, u64)],
    ) -> BoxFuture<'a, Result<(), BusError>>;
    /// Gives records back, available again after `delay`.
    fn nack<'a>(
        &'a self,
        group: &'a str,
        topic: &'a str,
        ids: &'a [(u32, u64)],
        delay: Duration,
    ) -> BoxFuture<'a, Result<(), BusError>>;
    /// Renews leases for `visibility` from now.
    fn extend<'a>(
        &'a self,
        group: &'a str,
        topic: &'a str,
        ids: &'a [(u32, u64)],
        visibility: Duration,
    ) -> BoxFuture<'a, Result<(), BusError>>;
}

/// The broker a pipeline runs on, shared by its stages.
pub type SharedBus = Arc<dyn Bus>;

fn guard_deliveries() -> u32 {
    1000
}

/// The embedded broker of this process.
#[derive(Debug, Clone)]
pub struct EmbeddedBus(pub Broker);

impl Bus for EmbeddedBus {
    fn ensure_topic<'a>(&'a self, topic: &'a str) -> BoxFuture<'a, Result<(), BusError>> {
        Box::pin(async move {
            match self.0.describe_topic(topic) {
                Ok(_) => Ok(()),
                Err(BrokerError::TopicNotFound(_)) => {
                    match self.0.create_topic(topic, TopicConfig::default()).await {
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
    ) -> BoxFuture<'a, Result<(), BusError>> {
        Box::pin(async move {
            let config = QueueConfig {
                visibility_timeout_ms: settings.visibility.as_millis().try_into().unwrap_or(u64::MAX),
                max_deliveries: guard_deliveries(),
                max_in_flight: settings.max_in_flight,
                ..QueueConfig::default()
            };
            match self.0.create_queue(group, topic, config).await {
                // A group made earlier with other settings keeps them: its backlog matters more.
                Ok(_) | Err(BrokerError::QueueExists { .. }) => Ok(()),
                Err(e) => Err(e.into()),
            }
        })
    }

    fn publish<'a>(&'a self, topic: &'a str, records: Vec<OutRecord>) -> BoxFuture<'a, Result<(), BusError>> {
        Box::pin(async move {
            if records.is_empty() {
                return Ok(());
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
            self.0.publish(topic, records).await?;
            Ok(())
        })
    }

    fn receive<'a>(
        &'a self,
        group: &'a str,
        topic: &'a str,
        max: usize,
        wait: Duration,
    ) -> BoxFuture<'a, Result<Vec<InRecord>, BusError>> {
        Box::pin(async move {
            let options = ReceiveOptions {
                max_records: max,
                max_wait: wait,
                visibility_timeout: None,
            };
            let leased = self.0.receive(group, topic, options).await?;
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
    ) -> BoxFuture<'a, Result<(), BusError>> {
        Box::pin(async move { Ok(self.0.ack(group, topic, ids).await?) })
    }

    fn nack<'a>(
        &'a self,
        group: &'a str,
        topic: &'a str,
        ids: &'a [(u32, u64)],
        delay: Duration,
    ) -> BoxFuture<'a, Result<(), BusError>> {
        Box::pin(async move { Ok(self.0.nack(group, topic, ids, delay).await?) })
    }

    fn extend<'a>(
        &'a self,
        group: &'a str,
        topic: &'a str,
        ids: &'a [(u32, u64)],
        visibility: Duration,
    ) -> BoxFuture<'a, Result<(), BusError>> {
        Box::pin(async move { Ok(self.0.extend(group, topic, ids, visibility).await?) })
    }
}

/// A ferry server, over its HTTP API.
#[derive(Debug, Clone)]
pub struct RemoteBus(pub Client);

impl Bus for RemoteBus {
    fn ensure_topic<'a>(&'a self, topic: &'a str) -> BoxFuture<'a, Result<(), BusError>> {
        Box::pin(async move {
            match self
                .0
                .create_topic(topic, &ferry_client::TopicConfig::default())
                .await
            {
                Ok(_) => Ok(()),
                Err(e) if e.code() == Some("topic_exists") => Ok(()),
                Err(e) => Err(e.into()),
            }
        })
    }

    fn ensure_group<'a>(
        &'a self,
        group: &'a str,
        topic: &'a str,
        settings: GroupSettings,
    ) -> BoxFuture<'a, Result<(), BusError>> {
        Box::pin(async move {
            let config = ferry_client::QueueConfig {
                visibility_timeout_ms: Some(settings.visibility.as_millis().try_into().unwrap_or(u64::MAX)),
                max_deliveries: Some(guard_deliveries()),
                max_in_flight: Some(settings.max_in_flight),
                ..ferry_client::QueueConfig::default()
            };
            match self.0.create_queue(group, topic, &config).await {
                Ok(_) => Ok(()),
                Err(e) if e.code() == Some("queue_exists") => Ok(()),
                Err(e) => Err(e.into()),
            }
        })
    }

    fn publish<'a>(&'a self, topic: &'a str, records: Vec<OutRecord>) -> BoxFuture<'a, Result<(), BusError>> {
        Box::pin(async move {
            if records.is_empty() {
                return Ok(());
            }
            let mut out = Vec::with_capacity(records.len());
            for r in records {
                let mut p = ProduceRecord::json_bytes(r.value)?;
                if let Some(k) = r.key {
                    p = p.key(k);
                }
                for (k, v) in r.headers {
                    p = p.header(k, v);
                }
                out.push(p);
            }
            self.0.publish(topic, &out).await?;
            Ok(())
        })
    }

    fn receive<'a>(
        &'a self,
        group: &'a str,
        topic: &'a str,
        max: usize,
        wait: Duration,
    ) -> BoxFuture<'a, Result<Vec<InRecord>, BusError>> {
        Box::pin(async move {
            let got = self
                .0
                .queue_consumer(group, topic)
                .receive(max, wait, None)
                .await?;
            Ok(got
                .into_iter()
                .map(|d| InRecord {
                    partition: d.record.partition,
                    offset: d.record.offset,
                    timestamp_ms: d.record.timestamp,
                    key: d
                        .record
                        .key
                        .as_ref()
                        .and_then(|k| String::from_utf8(k.to_vec()).ok()),
                    headers: d
                        .record
                        .headers
                        .iter()
                        .filter_map(|(k, v)| String::from_utf8(v.to_vec()).ok().map(|v| (k.clone(), v)))
                        .collect(),
                    value: d.record.value.clone(),
                    deliveries: d.delivery_count,
                })
                .collect())
        })
    }

    fn ack<'a>(
        &'a self,
        group: &'a str,
        topic: &'a str,
        ids: &'a [(u32, u64)],
    ) -> BoxFuture<'a, Result<(), BusError>> {
        Box::pin(async move { Ok(self.0.queue_consumer(group, topic).ack(ids).await?) })
    }

    fn nack<'a>(
        &'a self,
        group: &'a str,
        topic: &'a str,
        ids: &'a [(u32, u64)],
        delay: Duration,
    ) -> BoxFuture<'a, Result<(), BusError>> {
        Box::pin(async move { Ok(self.0.queue_consumer(group, topic).nack(ids, delay).await?) })
    }

    fn extend<'a>(
        &'a self,
        group: &'a str,
        topic: &'a str,
        ids: &'a [(u32, u64)],
        visibility: Duration,
    ) -> BoxFuture<'a, Result<(), BusError>> {
        Box::pin(async move {
            Ok(self
                .0
                .queue_consumer(group, topic)
                .extend(ids, visibility)
                .await?)
        })
    }
}
