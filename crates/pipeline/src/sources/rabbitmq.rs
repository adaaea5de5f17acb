//! The `rabbitmq` source: a bridge from an existing RabbitMQ queue into a pipeline.
//!
//! It consumes `queue` with manual acks and a prefetch of `prefetch` messages. Each message's body
//! becomes a record (`format = "json"`: the body's JSON value; `"text"`: `{"text": body}`), its AMQP
//! headers with string values become the record's headers, and it is published to the source's topic
//! (`<pipeline>.<stage>`). The message is acked only after that publish returned `Ok`, so a crash
//! between the two delivers it again (at-least-once). Messages that are available at once are published
//! together, then acked one by one.
//!
//! - A body that cannot be read as `format` says is rejected without requeue (RabbitMQ drops it, or
//!   dead-letters it when the queue has a dead-letter exchange), logged with a warning and counted in
//!   `records_failed`; the messages after it go on.
//! - A publish to the pipeline's broker that fails nacks the messages with requeue, then waits (200 ms,
//!   doubled after each failure, at most 10 s) before taking the next.
//! - When the broker refuses the records themselves (`EngineError::is_refused`: a record too large for
//!   it, a header it reserves, such as `Nats-*` on JetStream), the source makes sure the topic exists
//!   and publishes the batch's records one at a time, in order: each one published is acked; each one
//!   refused again is rejected without requeue (dropped, or dead-lettered by RabbitMQ when the queue
//!   has a dead-letter exchange), logged as an error (without its body) and counted in
//!   `records_failed`, so one such message does not hold up the ones behind it. A publish of one record
//!   that fails otherwise requeues it and the messages after it and backs off, as above.
//! - A connection or channel that is lost, or a queue that cannot be declared, is tried again after the
//!   same backoff; messages not yet acked are requeued by RabbitMQ.
//! - With `declare = true` the queue is declared with `durable` as given (not exclusive, not
//!   auto-delete), which RabbitMQ accepts only if it matches how the queue was declared before
//!   (PRECONDITION_FAILED otherwise: the log says to set `durable` accordingly). A queue declared by
//!   pika's `channel.queue_declare(queue='messages')` is not durable: `durable = false`. With
//!   `declare = false` the queue must exist (a passive declare).

use std::time::Instant;

use futures_util::{FutureExt, StreamExt};
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions, BasicRejectOptions,
    QueueDeclareOptions,
};
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::uri::AMQPUri;
use lapin::{Acker, BasicProperties, Connection, ConnectionProperties, Consumer};
use tokio_util::sync::CancellationToken;

use crate::bus::{BusError, OutRecord};
use crate::config::RabbitMqSourceConfig;
use crate::event::Event;
use crate::runtime::out_record;
use crate::sources::{Backoff, BridgeContext, decode_body, pause};

/// Longest a connection attempt may take.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Consumes a RabbitMQ queue into the source's topic (see the module documentation).
pub struct RabbitMqSource {
    config: RabbitMqSourceConfig,
    uri: AMQPUri,
    ctx: BridgeContext,
}

impl std::fmt::Debug for RabbitMqSource {
    // Not the URL: it may hold a password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitMqSource")
            .field("server", &self.server())
            .field("queue", &self.config.queue)
            .field("ctx", &self.ctx)
            .finish_non_exhaustive()
    }
}

/// Why consuming stopped.
enum End {
    /// The pipeline is stopping.
    Stopped,
    /// The connection, channel or consumer is gone: connect again.
    Lost(String),
}

impl RabbitMqSource {
    /// A source for `config` publishing to `ctx.topic` (nothing is connected until [`Self::run`]).
    ///
    /// # Errors
    /// Invalid settings, naming the key.
    pub fn new(config: &RabbitMqSourceConfig, ctx: BridgeContext) -> anyhow::Result<Self> {
        if let Some((key, message)) = config.validate().into_iter().next() {
            anyhow::bail!("{key}: {message}");
        }
        let uri: AMQPUri = config
            .url
            .parse()
            .map_err(|_| anyhow::anyhow!("url: not a valid AMQP URL"))?;
        Ok(Self {
            config: config.clone(),
            uri,
            ctx,
        })
    }

    /// `host:port/vhost`, for messages (never the password).
    fn server(&self) -> String {
        format!(
            "{}:{}/{}",
            self.uri.authority.host, self.uri.authority.port, self.uri.vhost
        )
    }

    /// Consumes until `cancel`: connects, consumes, and connects again with backoff when the connection
    /// is lost or cannot be made.
    pub async fn run(self, cancel: CancellationToken) {
        let mut backoff = Backoff::new();
        loop {
            let opened = tokio::select! {
                () = cancel.cancelled() => return,
                opened = self.open() => opened,
            };
            match opened {
                Ok((conn, consumer)) => {
                    backoff.reset();
                    tracing::info!(pipeline = %self.ctx.pipeline, stage = %self.ctx.stage, server = %self.server(), queue = %self.config.queue, "consuming from rabbitmq");
                    let end = self.consume(consumer, &cancel, &mut backoff).await;
                    // Unacked messages are requeued by RabbitMQ when the connection closes.
                    close(&conn).await;
                    match end {
                        End::Stopped => return,
                        End::Lost(why) => {
                            tracing::warn!(pipeline = %self.ctx.pipeline, stage = %self.ctx.stage, server = %self.server(), queue = %self.config.queue, error = %why, "rabbitmq connection lost; reconnecting");
                        }
                    }
                }
                Err(Problem::Connection(why)) => {
                    tracing::warn!(pipeline = %self.ctx.pipeline, stage = %self.ctx.stage, server = %self.server(), error = %why, "cannot connect to rabbitmq; retrying");
                }
                Err(Problem::Setup(why)) => {
                    tracing::error!(pipeline = %self.ctx.pipeline, stage = %self.ctx.stage, server = %self.server(), queue = %self.config.queue, error = %why, "cannot consume from rabbitmq; retrying");
                }
            }
            if !pause(&cancel, backoff.fail()).await {
                return;
            }
        }
    }

    /// Connects, sets the prefetch, declares the queue and starts a consumer.
    async fn open(&self) -> Result<(Connection, Consumer), Problem> {
        let name = format!("ferry {}.{}", self.ctx.pipeline, self.ctx.stage);
        let props = ConnectionProperties::default().with_connection_name(name.as_str().into());
        let conn =
            match tokio::time::timeout(CONNECT_TIMEOUT, Connection::connect_uri(self.uri.clone(), props))
                .await
            {
                Ok(Ok(conn)) => conn,
                Ok(Err(e)) => return Err(Problem::Connection(e.to_string())),
                Err(_) => {
                    return Err(Problem::Connection(format!("no answer in {CONNECT_TIMEOUT:?}")));
                }
            };
        match self.consumer(&conn).await {
            Ok(consumer) => Ok((conn, consumer)),
            Err(e) => {
                close(&conn).await;
                Err(e)
            }
        }
    }

    async fn consumer(&self, conn: &Connection) -> Result<Consumer, Problem> {
        let queue = ShortString::try_new(self.config.queue.clone())
            .map_err(|e| Problem::Setup(format!("queue: {e}")))?;
        let channel = conn
            .create_channel()
            .await
            .map_err(|e| Problem::Connection(e.to_string()))?;
        channel
            .basic_qos(self.config.prefetch, BasicQosOptions::default())
            .await
            .map_err(|e| Problem::Connection(e.to_string()))?;
        let options = QueueDeclareOptions {
            passive: !self.config.declare,
            durable: self.config.durable,
            ..QueueDeclareOptions::default()
        };
        channel
            .queue_declare(queue.clone(), options, FieldTable::default())
            .await
            .map_err(|e| self.declare_problem(&e))?;
        channel
            .basic_consume(
                queue,
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| self.declare_problem(&e))
    }

    /// What a refused declare or consume means, and what to change.
    fn declare_problem(&self, e: &lapin::Error) -> Problem {
        let queue = &self.config.queue;
        let Some(soft) = soft_error(e) else {
            return Problem::Connection(e.to_string());
        };
        Problem::Setup(match soft {
            AMQPSoftError::PRECONDITIONFAILED => format!(
                "queue `{queue}` exists with other settings ({e}): set `durable = {}` to match how it was declared \
                 (a queue declared by pika's `channel.queue_declare(queue='{queue}')` is not durable: `durable = false`)",
                !self.config.durable
            ),
            AMQPSoftError::NOTFOUND if !self.config.declare => {
                format!("queue `{queue}` does not exist and `declare = false` ({e})")
            }
            AMQPSoftError::ACCESSREFUSED => format!("access to queue `{queue}` refused ({e})"),
            _ => e.to_string(),
        })
    }

    /// Takes deliveries until `cancel` or until the consumer ends.
    async fn consume(
        &self,
        mut consumer: Consumer,
        cancel: &CancellationToken,
        backoff: &mut Backoff,
    ) -> End {
        let max = usize::from(self.config.prefetch);
        loop {
            let first = tokio::select! {
                () = cancel.cancelled() => return End::Stopped,
                next = consumer.next() => next,
            };
            let mut batch = match first {
                Some(Ok(d)) => vec![d],
                Some(Err(e)) => return End::Lost(e.to_string()),
                None => return End::Lost("the consumer was cancelled by RabbitMQ".into()),
            };
            // What is there already goes in the same publish.
            let mut ended = None;
            while batch.len() < max {
                match consumer.next().now_or_never() {
                    Some(Some(Ok(d))) => batch.push(d),
                    Some(Some(Err(e))) => {
                        ended = Some(e.to_string());
                        break;
                    }
                    Some(None) => {
                        ended = Some("the consumer was cancelled by RabbitMQ".into());
                        break;
                    }
                    None => break,
                }
            }
            if let Some(end) = self.deliver(batch, cancel, backoff).await {
                return end;
            }
            if let Some(why) = ended {
                return End::Lost(why);
            }
        }
    }

    /// Publishes a batch of deliveries, then acks them; rejects those that cannot be read; when the broker
    /// refuses the records, publishes them one at a time (see [`Self::one_by_one`]); on another failed
    /// publish requeues them and backs off. `Some` when consuming must end.
    async fn deliver(
        &self,
        batch: Vec<Delivery>,
        cancel: &CancellationToken,
        backoff: &mut Backoff,
    ) -> Option<End> {
        let started = Instant::now();
        let m = &self.ctx.metrics;
        let mut records = Vec::with_capacity(batch.len());
        let mut ackers = Vec::with_capacity(batch.len());
        for d in batch {
            m.records_in.inc();
            match decode_body(self.config.format, &d.data) {
                Ok(value) => {
                    let event = Event {
                        value,
                        headers: headers(&d.properties),
                        key: None,
                        origin: None,
                    };
                    records.push(out_record(&event));
                    ackers.push(d.acker);
                }
                Err(why) => {
                    tracing::warn!(pipeline = %self.ctx.pipeline, stage = %self.ctx.stage, queue = %self.config.queue, delivery_tag = d.delivery_tag, format = ?self.config.format, error = %why, "rejecting a message");
                    m.failed.inc();
                    let options = BasicRejectOptions { requeue: false };
                    if let Err(e) = d.acker.reject(options).await {
                        return Some(End::Lost(e.to_string()));
                    }
                }
            }
        }
        if records.is_empty() {
            return None;
        }
        match self.ctx.bus.publish(&self.ctx.topic, records.clone()).await {
            Ok(()) => {
                backoff.reset();
                let count = ackers.len() as u64;
                for acker in ackers {
                    if let Some(end) = settled(acker.ack(BasicAckOptions::default()).await, "an ack") {
                        return Some(end);
                    }
                }
                self.counted(count, started);
                None
            }
            Err(e) if e.is_refused() => {
                tracing::warn!(pipeline = %self.ctx.pipeline, stage = %self.ctx.stage, topic = %self.ctx.topic, error = %e, count = records.len(), "the broker refused the messages; publishing them one at a time");
                self.one_by_one(records, ackers, started, cancel, backoff).await
            }
            Err(e) => self.requeue(ackers, &e, cancel, backoff).await,
        }
    }

    /// After the broker refused a batch: publishes its records one at a time, in order, acking each
    /// published one and rejecting (without requeue) each one the broker refuses again; on another failure
    /// requeues the messages not done yet and backs off. `Some` when consuming must end.
    async fn one_by_one(
        &self,
        records: Vec<OutRecord>,
        ackers: Vec<Acker>,
        started: Instant,
        cancel: &CancellationToken,
        backoff: &mut Backoff,
    ) -> Option<End> {
        // A topic deleted meanwhile is not the records' fault.
        if let Err(e) = self.ctx.bus.ensure_topic(&self.ctx.topic).await {
            return self.requeue(ackers, &e, cancel, backoff).await;
        }
        let mut published = 0;
        let mut pending = records.into_iter().zip(ackers);
        while let Some((record, acker)) = pending.next() {
            let end = match self.ctx.bus.publish(&self.ctx.topic, vec![record]).await {
                Ok(()) => {
                    let end = settled(acker.ack(BasicAckOptions::default()).await, "an ack");
                    if end.is_none() {
                        published += 1;
                    }
                    end
                }
                Err(e) if e.is_refused() => {
                    tracing::error!(pipeline = %self.ctx.pipeline, stage = %self.ctx.stage, topic = %self.ctx.topic, queue = %self.config.queue, error = %e, "the broker refused a message; rejecting it without requeue");
                    self.ctx.metrics.failed.inc();
                    let options = BasicRejectOptions { requeue: false };
                    settled(acker.reject(options).await, "a reject")
                }
                Err(e) => {
                    self.counted(published, started);
                    let rest = std::iter::once(acker).chain(pending.map(|(_, acker)| acker));
                    return self.requeue(rest, &e, cancel, backoff).await;
                }
            };
            if end.is_some() {
                self.counted(published, started);
                return end;
            }
        }
        backoff.reset();
        self.counted(published, started);
        None
    }

    /// After a failed publish: nacks the messages with requeue, then backs off. `Some` when consuming
    /// must end.
    async fn requeue(
        &self,
        ackers: impl IntoIterator<Item = Acker>,
        e: &BusError,
        cancel: &CancellationToken,
        backoff: &mut Backoff,
    ) -> Option<End> {
        let wait = backoff.fail();
        tracing::warn!(pipeline = %self.ctx.pipeline, stage = %self.ctx.stage, topic = %self.ctx.topic, error = %e, ?wait, "publishing failed; requeueing the messages");
        for acker in ackers {
            let options = BasicNackOptions {
                multiple: false,
                requeue: true,
            };
            if let Err(e) = acker.nack(options).await {
                return Some(End::Lost(e.to_string()));
            }
        }
        if !pause(cancel, wait).await {
            return Some(End::Stopped);
        }
        None
    }

    /// Counts `count` messages published (and acked) since `started`.
    fn counted(&self, count: u64, started: Instant) {
        if count == 0 {
            return;
        }
        let m = &self.ctx.metrics;
        m.records_out.inc_by(count);
        let per = started.elapsed().as_secs_f64() / count as f64;
        for _ in 0..count {
            m.latency.observe(per);
        }
    }
}

/// `None` when an ack or reject (`what`) went through; otherwise the end of consuming: the channel is
/// gone, and RabbitMQ delivers the message again.
fn settled(result: lapin::Result<bool>, what: &str) -> Option<End> {
    match result {
        Ok(true) => None,
        Ok(false) => Some(End::Lost(format!("{what} was lost with its channel"))),
        Err(e) => Some(End::Lost(e.to_string())),
    }
}

/// Closes a connection (it may be broken already: not waiting long). Messages not acked on it are
/// requeued by RabbitMQ.
async fn close(conn: &Connection) {
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        conn.close(200, "ferry source stopping".into()),
    )
    .await;
}

/// Why a consumer could not be started.
enum Problem {
    /// No connection (or it broke): worth trying again soon.
    Connection(String),
    /// RabbitMQ refused the queue's declaration or the consumer: the settings need a look.
    Setup(String),
}

/// The channel-level AMQP error of `e`, if it is one.
pub(crate) fn soft_error(e: &lapin::Error) -> Option<AMQPSoftError> {
    match e.kind() {
        lapin::ErrorKind::ProtocolError(p) => match p.kind() {
            AMQPErrorKind::Soft(soft) => Some(soft.clone()),
            AMQPErrorKind::Hard(_) => None,
        },
        _ => None,
    }
}

/// The AMQP headers with string values, as record headers (sorted by name, as AMQP tables are).
fn headers(props: &BasicProperties) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (name, value) in props.headers().iter().flatten() {
        let text = match value {
            AMQPValue::LongString(s) => String::from_utf8(s.as_bytes().to_vec()).ok(),
            AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
            _ => None,
        };
        if let Some(text) = text {
            out.push((name.as_str().to_owned(), text));
        }
    }
    out
}
