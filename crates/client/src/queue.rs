//! The queue consumer: a receiver of a queue group (SQS, RabbitMQ queues, Kafka share groups).
//!
//! [`QueueConsumer::receive`] leases records for a visibility timeout; while leased, no other receiver of
//! the group gets them. [`QueueConsumer::ack`] finishes a record; [`QueueConsumer::nack`] (optionally
//! after a delay) or an expired lease makes it available again with its delivery count raised; past the
//! group's `max_deliveries` the server moves it to the dead-letter topic. [`QueueConsumer::extend`]
//! renews leases of records that take long to process.
//!
//! With a wire address ([`crate::ClientBuilder::wire`]), receive, ack, nack and extend go over the
//! client's wire connection (RECEIVE, ACK, NACK, EXTEND frames) instead of HTTP, with the same results
//! and the same errors; [`QueueConsumer::create`] and [`QueueConsumer::info`] stay on HTTP.

use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use ferry_wire::{Request, Response};
use serde::Serialize;

use crate::admin::{QueueConfig, QueueInfo};
use crate::error::{Error, Result};
use crate::http::{Http, Verb, path};
use crate::record::{self, AsRecordId, Record, RecordId};
use crate::wire::{self, Wire};

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
    wire: Option<Arc<Wire>>,
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

/// What [`QueueConsumer::settle`] does with records.
#[derive(Debug, Clone, Copy)]
enum Settle {
    Ack,
    Nack(Duration),
    Extend(Duration),
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

/// A leased record of a RECORDS answer. Keys, header values and values are the stored bytes, as the
/// HTTP path gives them after undoing its JSON, base64 or text rendering (see [`crate::Record`]).
fn from_wire(topic: &str, d: ferry_wire::Delivery) -> Delivery {
    Delivery {
        record: Record {
            topic: topic.to_string(),
            partition: d.partition,
            offset: d.offset,
            timestamp: d.timestamp,
            key: d.key,
            headers: d.headers.into_iter().map(|h| (h.key, h.value)).collect(),
            value: d.value,
        },
        delivery_count: d.deliveries,
        lease_expires_ms: d.lease_expires_ms,
    }
}

fn ids<R: AsRecordId>(records: &[R]) -> Vec<RecordId> {
    records.iter().map(AsRecordId::record_id).collect()
}

impl QueueConsumer {
    pub(crate) fn new(http: Arc<Http>, wire: Option<Arc<Wire>>, group: &str, topic: &str) -> Self {
        Self {
            http,
            wire,
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
    /// [`crate::Error::Api`]: `topic_not_found`, `out_of_range` for a limit. Over the wire, a
    /// `visibility` under 1 ms is refused by the client ([`crate::Error::InvalidArgument`] naming
    /// `visibility_timeout_ms`) rather than by the server, since the wire protocol's 0 means the
    /// group's timeout.
    pub async fn receive(
        &self,
        max_records: usize,
        max_wait: Duration,
        visibility: Option<Duration>,
    ) -> Result<Vec<Delivery>> {
        if let Some(wire) = &self.wire {
            return self.receive_wire(wire, max_records, max_wait, visibility).await;
        }
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

    async fn receive_wire(
        &self,
        wire: &Wire,
        max_records: usize,
        max_wait: Duration,
        visibility: Option<Duration>,
    ) -> Result<Vec<Delivery>> {
        let visibility_ms = match visibility.map(wire::millis) {
            None => 0,
            Some(0) => {
                return Err(Error::invalid("visibility_timeout_ms", "must be at least 1 ms"));
            }
            Some(ms) => ms,
        };
        let request = Request::Receive {
            group: self.group.clone(),
            topic: self.topic.clone(),
            max_records: wire::count(max_records),
            max_wait_ms: wire::millis(max_wait),
            visibility_ms,
        };
        match wire.request(&request, max_wait).await? {
            Response::Records { records } => {
                Ok(records.into_iter().map(|d| from_wire(&self.topic, d)).collect())
            }
            other => Err(wire.unexpected("RECEIVE", &other)),
        }
    }

    /// Acks, nacks or extends `records` over the client's transport.
    async fn settle<R: AsRecordId>(&self, records: &[R], op: Settle) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        if let Some(wire) = &self.wire {
            let (group, topic) = (self.group.clone(), self.topic.clone());
            let records = records
                .iter()
                .map(|r| {
                    let id = r.record_id();
                    (id.partition, id.offset)
                })
                .collect();
            let (name, request) = match op {
                Settle::Ack => (
                    "ACK",
                    Request::Ack {
                        group,
                        topic,
                        records,
                    },
                ),
                Settle::Nack(delay) => (
                    "NACK",
                    Request::Nack {
                        group,
                        topic,
                        records,
                        delay_ms: wire::millis(delay),
                    },
                ),
                Settle::Extend(visibility) => (
                    "EXTEND",
                    Request::Extend {
                        group,
                        topic,
                        records,
                        visibility_ms: wire::millis(visibility),
                    },
                ),
            };
            return match wire.request(&request, Duration::ZERO).await? {
                Response::Done => Ok(()),
                other => Err(wire.unexpected(name, &other)),
            };
        }
        let (tail, delay_ms, visibility_timeout_ms) = match op {
            Settle::Ack => ("/ack", None, None),
            Settle::Nack(delay) => ("/nack", Some(delay.as_millis()), None),
            Settle::Extend(visibility) => ("/extend", None, Some(visibility.as_millis())),
        };
        let body = RecordsBody {
            records: ids(records),
            delay_ms,
            visibility_timeout_ms,
        };
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
        self.settle(records, Settle::Ack).await
    }

    /// Gives `records` back: available again after `delay` (zero: at once; up to 12 h). Their next
    /// delivery counts as one more.
    ///
    /// # Errors
    /// As [`QueueConsumer::ack`].
    pub async fn nack<R: AsRecordId>(&self, records: &[R], delay: Duration) -> Result<()> {
        self.settle(records, Settle::Nack(delay)).await
    }

    /// Renews the leases of `records` for `visibility` from now.
    ///
    /// # Errors
    /// As [`QueueConsumer::ack`].
    pub async fn extend<R: AsRecordId>(&self, records: &[R], visibility: Duration) -> Result<()> {
        self.settle(records, Settle::Extend(visibility)).await
    }

    /// A receiver of this group that keeps its next receive in flight while the application works on
    /// the batch [`Prefetch::next`] gave it (as Kafka's fetcher, a NATS pull consumer's `messages()`
    /// and RabbitMQ's prefetch do): the server reads and sends the next batch meanwhile, instead of
    /// after the application asked. Each receive takes up to `max_records` (1..=1000), waits up to
    /// `max_wait` for the first and leases them for `visibility` (the group's timeout when `None`).
    ///
    /// Records received ahead are leased from when the server sent them, not from when `next` returns
    /// them: keep the work on one batch well inside the visibility timeout. [`Prefetch::close`] gives
    /// records received ahead back (nack, no delay); dropping a `Prefetch` does the same in the
    /// background. Needs a Tokio runtime (the receive ahead runs as a task of its own).
    pub fn prefetch(&self, max_records: usize, max_wait: Duration, visibility: Option<Duration>) -> Prefetch {
        Prefetch {
            queue: self.clone(),
            max_records,
            max_wait,
            visibility,
            ahead: None,
        }
    }
}

/// A receive already sent, its answer not yet taken.
type Ahead = tokio::task::JoinHandle<Result<Vec<Delivery>>>;

/// A queue receiver with its next receive in flight ([`QueueConsumer::prefetch`]).
#[derive(Debug)]
pub struct Prefetch {
    queue: QueueConsumer,
    max_records: usize,
    max_wait: Duration,
    visibility: Option<Duration>,
    ahead: Option<Ahead>,
}

impl Prefetch {
    /// The group's consumer, to ack, nack or extend what [`Prefetch::next`] returned.
    pub fn queue(&self) -> &QueueConsumer {
        &self.queue
    }

    fn receive_ahead(&self) -> Ahead {
        let (queue, max, wait, visibility) = (
            self.queue.clone(),
            self.max_records,
            self.max_wait,
            self.visibility,
        );
        tokio::spawn(async move { queue.receive(max, wait, visibility).await })
    }

    /// The next batch: the one received ahead, or (first, or after an error) one received now; sends the
    /// receive after it before returning. Empty when `max_wait` passed with nothing available.
    /// Cancel-safe: a batch received ahead stays there until a `next` returns it.
    ///
    /// # Errors
    /// As [`QueueConsumer::receive`]; after an error nothing is in flight, and the next call receives
    /// afresh. [`crate::Error::ReceiveStopped`] when the receive ahead was stopped by its runtime
    /// shutting down.
    pub async fn next(&mut self) -> Result<Vec<Delivery>> {
        let got = match self.ahead.as_mut() {
            Some(ahead) => {
                let got = joined(ahead.await);
                self.ahead = None;
                got
            }
            None => {
                self.queue
                    .receive(self.max_records, self.max_wait, self.visibility)
                    .await
            }
        };
        if got.is_ok() {
            self.ahead = Some(self.receive_ahead());
        }
        got
    }

    /// Stops receiving ahead: waits for the receive in flight (up to `max_wait`) and gives back what it
    /// got, available to the group's receivers again at once (a nack: their next delivery counts as
    /// one more).
    ///
    /// # Errors
    /// As [`QueueConsumer::nack`].
    pub async fn close(mut self) -> Result<()> {
        match self.ahead.take() {
            Some(ahead) => match joined(ahead.await) {
                Ok(got) => self.queue.nack(&got, Duration::ZERO).await,
                // Nothing was leased by a receive that failed.
                Err(_) => Ok(()),
            },
            None => Ok(()),
        }
    }
}

/// The answer of a receive ahead.
fn joined(r: std::result::Result<Result<Vec<Delivery>>, tokio::task::JoinError>) -> Result<Vec<Delivery>> {
    match r {
        Ok(got) => got,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Err(Error::ReceiveStopped),
    }
}

impl Drop for Prefetch {
    /// Gives back what the receive in flight gets, in the background (see [`Prefetch::close`]).
    fn drop(&mut self) {
        if let Some(ahead) = self.ahead.take() {
            let queue = self.queue.clone();
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    if let Ok(Ok(got)) = ahead.await {
                        let _ = queue.nack(&got, Duration::ZERO).await;
                    }
                });
            }
        }
    }
}
