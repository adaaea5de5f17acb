//! The queue consumer: a receiver of a queue group (SQS, RabbitMQ queues, Kafka share groups).
//!
//! [`QueueConsumer::receive`] leases records for a visibility timeout; while leased, no other receiver of
//! the group gets them. [`QueueConsumer::ack`] finishes a record; [`QueueConsumer::nack`] (optionally
//! after a delay) or an expired lease makes it available again with its delivery count raised; past the
//! group's `max_deliveries` the server moves it to the dead-letter topic. [`QueueConsumer::extend`]
//! renews leases of records that take long to process.

use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::admin::{QueueConfig, QueueInfo};
use crate::error::Result;
use crate::http::{Http, Verb, path};
use crate::record::{self, AsRecordId, Record, RecordId};

/// A leased record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The record.
    pub record: Record,
    /// How many times it has been delivered, this time included.
    pub delivery_count: u32,
    /// When the lease ends (ms since the Unix epoch) unless acked, nacked or extended.
    pub lease_expires_ms: i64,
}

impl Deref for Delivery {
    type Target = Record;
    fn deref(&self) -> &Record {
        &self.record
    }
}

impl AsRecordId for Delivery {
    fn record_id(&self) -> RecordId {
        self.record.id()
    }
}

/// A receiver of one queue group on one topic. Cheap to clone.
#[derive(Debug, Clone)]
pub struct QueueConsumer {
    http: Arc<Http>,
    group: String,
    topic: String,
}

#[derive(Serialize)]
struct ReceiveBody {
    max_records: usize,
    max_wait_ms: u128,
    #[serde(skip_serializing_if = "Option::is_none")]
    visibility_timeout_ms: Option<u128>,
}

#[derive(Serialize)]
struct RecordsBody {
    records: Vec<RecordId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    delay_ms: Option<u128>,
    #[serde(skip_serializing_if = "Option::is_none")]
    visibility_timeout_ms: Option<u128>,
}

/// `/v1/queues/{group}/topics/{topic}{tail}`.
pub(crate) fn queue_path(group: &str, topic: &str, tail: &str) -> Result<String> {
    path(&["/v1/queues/", group, "/topics/", topic, tail])
}

fn ids<R: AsRecordId>(records: &[R]) -> Vec<RecordId> {
    records.iter().map(AsRecordId::record_id).collect()
}

impl QueueConsumer {
    pub(crate) fn new(http: Arc<Http>, group: &str, topic: &str) -> Self {
        Self {
            http,
            group: group.into(),
            topic: topic.into(),
        }
    }

    /// The group.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Creates the queue group (or confirms it with the same settings); see
    /// [`crate::Client::create_queue`].
    ///
    /// # Errors
    /// As [`crate::Client::create_queue`].
    pub async fn create(&self, config: &QueueConfig) -> Result<QueueInfo> {
        self.http
            .send_json(Verb::Put, &queue_path(&self.group, &self.topic, "")?, config)
            .await
    }

    /// The group's settings and state (depth, in flight).
    ///
    /// # Errors
    /// [`crate::Error::Api`]: `topic_not_found`, `group_not_found`.
    pub async fn info(&self) -> Result<QueueInfo> {
        self.http.get(&queue_path(&self.group, &self.topic, "")?).await
    }

    /// Leases up to `max_records` (1..=1000) available records, waiting up to `max_wait` (at most 60 s)
    /// for the first; `visibility` (up to 12 h) overrides the group's visibility timeout for these
    /// leases. A receive on a group that does not exist creates it with the server's defaults.
    ///
    /// # Errors
    /// [`crate::Error::Api`]: `topic_not_found`, `out_of_range` for a limit.
    pub async fn receive(
        &self,
        max_records: usize,
        max_wait: Duration,
        visibility: Option<Duration>,
    ) -> Result<Vec<Delivery>> {
        let body = ReceiveBody {
            max_records,
            max_wait_ms: max_wait.as_millis(),
            visibility_timeout_ms: visibility.map(|v| v.as_millis()),
        };
        let body = serde_json::to_vec(&body).map_err(|e| crate::Error::invalid("body", e.to_string()))?;
        let url = queue_path(&self.group, &self.topic, "/receive")?;
        let answer = self
            .http
            .send(Verb::Post, &url, Some(body.into()), max_wait)
            .await?;
        let records = record::parse_records(&answer.body).map_err(|m| answer.protocol(m))?;
        records
            .into_iter()
            .map(|p| match (p.delivery_count, p.lease_expires_ms) {
                (Some(delivery_count), Some(lease_expires_ms)) => Ok(Delivery {
                    record: p.record,
                    delivery_count,
                    lease_expires_ms,
                }),
                _ => Err(answer.protocol(format!(
                    "record {}/{} has no delivery_count or lease_expires_ms",
                    p.record.partition, p.record.offset
                ))),
            })
            .collect()
    }

    async fn post_records(&self, tail: &str, body: RecordsBody) -> Result<()> {
        if body.records.is_empty() {
            return Ok(());
        }
        self.http
            .send_empty(
                Verb::Post,
                &queue_path(&self.group, &self.topic, tail)?,
                Some(&body),
            )
            .await
    }

    /// Finishes `records`: they are never delivered again. Nothing is sent when `records` is empty.
    ///
    /// # Errors
    /// [`crate::Error::Api`]: 409 `not_leased` naming `records[i]` for a record not leased right now
    /// (its lease ran out, or it was acked already): then nothing changed, for any of `records`; 404
    /// `group_not_found`.
    pub async fn ack<R: AsRecordId>(&self, records: &[R]) -> Result<()> {
        let body = RecordsBody {
            records: ids(records),
            delay_ms: None,
            visibility_timeout_ms: None,
        };
        self.post_records("/ack", body).await
    }

    /// Gives `records` back: available again after `delay` (zero: at once; up to 12 h). Their next
    /// delivery counts as one more.
    ///
    /// # Errors
    /// As [`QueueConsumer::ack`].
    pub async fn nack<R: AsRecordId>(&self, records: &[R], delay: Duration) -> Result<()> {
        let body = RecordsBody {
            records: ids(records),
            delay_ms: Some(delay.as_millis()),
            visibility_timeout_ms: None,
        };
        self.post_records("/nack", body).await
    }

    /// Renews the leases of `records` for `visibility` from now.
    ///
    /// # Errors
    /// As [`QueueConsumer::ack`].
    pub async fn extend<R: AsRecordId>(&self, records: &[R], visibility: Duration) -> Result<()> {
        let body = RecordsBody {
            records: ids(records),
            delay_ms: None,
            visibility_timeout_ms: Some(visibility.as_millis()),
        };
        self.post_records("/extend", body).await
    }
}
