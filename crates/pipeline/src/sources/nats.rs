//! The `nats` source: a bridge from a core NATS subject into a pipeline.
//!
//! It subscribes to `subject` (wildcards allowed), as the queue group `queue_group` when one is given
//! (NATS then gives each message to one member of the group: several ferry processes share the
//! subject). Each message's body becomes a record (`format = "json"`: the body's JSON value; `"text"`:
//! `{"text": body}`), its NATS headers become the record's headers, and it is published to the source's
//! topic (`<pipeline>.<stage>`); the next message is taken once that publish returned `Ok` (messages
//! available at once are published together).
//!
//! Core NATS delivers at most once: a message published while ferry is not subscribed, or held in this
//! process when it crashes, is lost, and NATS drops messages for a subscriber that falls too far behind
//! (a slow consumer). From the topic on, delivery is at-least-once. For durable consumption, run the
//! pipeline on ferry's `nats` engine (JetStream), or publish into a ferry topic.
//!
//! - A body that cannot be read as `format` says is dropped, logged with a warning and counted in
//!   `records_failed`.
//! - A publish to the pipeline's broker that fails is tried again (200 ms, doubled after each failure,
//!   at most 10 s) until it succeeds or the pipeline stops; meanwhile NATS buffers the messages that
//!   follow in the subscription.
//! - When the broker refuses the records themselves (`EngineError::is_refused`: a record too large for
//!   it, a header it reserves, such as `Nats-*` on JetStream), the source makes sure the topic exists
//!   and publishes the batch's records one at a time, in order; each one refused again is dropped,
//!   logged as an error (without its body) and counted in `records_failed`, so one such message does
//!   not hold up the ones behind it. When a publish of one record fails otherwise, that record and the
//!   ones after it are tried again with the backoff above.
//! - On stopping it unsubscribes and publishes the messages NATS had sent it already (for up to 5 s).
//! - The NATS client reconnects and subscribes again by itself after a lost connection; a first
//!   connection that cannot be made is tried again with the same backoff.

use std::time::Instant;

use async_nats::{Client, Message, Subscriber};
use futures_util::{FutureExt, StreamExt};
use tokio_util::sync::CancellationToken;

use crate::bus::{BusError, OutRecord};
use crate::config::NatsSourceConfig;
use crate::event::Event;
use crate::runtime::out_record;
use crate::sources::{Backoff, BridgeContext, decode_body, pause};

/// Messages published to the topic together, at most.
const BATCH: usize = 100;
/// Longest a stopping source takes to publish the messages NATS had sent it already.
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(5);

/// Subscribes to a NATS subject and publishes its messages to the source's topic (see the module
/// documentation).
pub struct NatsSource {
    config: NatsSourceConfig,
    ctx: BridgeContext,
}

impl std::fmt::Debug for NatsSource {
    // Not the URL: it may hold credentials.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsSource")
            .field("subject", &self.config.subject)
            .field("queue_group", &self.config.queue_group)
            .field("ctx", &self.ctx)
            .finish_non_exhaustive()
    }
}

impl NatsSource {
    /// A source for `config` publishing to `ctx.topic` (nothing is connected until [`Self::run`]).
    ///
    /// # Errors
    /// Invalid settings, naming the key.
    pub fn new(config: &NatsSourceConfig, ctx: BridgeContext) -> anyhow::Result<Self> {
        if let Some((key, message)) = config.validate().into_iter().next() {
            anyhow::bail!("{key}: {message}");
        }
        Ok(Self {
            config: config.clone(),
            ctx,
        })
    }

    /// Subscribes and publishes until `cancel`; connects (again) with backoff when it cannot.
    pub async fn run(self, cancel: CancellationToken) {
        let mut backoff = Backoff::new();
        loop {
            let opened = tokio::select! {
                () = cancel.cancelled() => return,
                opened = self.open() => opened,
            };
            match opened {
                Ok((client, subscriber)) => {
                    backoff.reset();
                    tracing::info!(pipeline = %self.ctx.pipeline, stage = %self.ctx.stage, subject = %self.config.subject, queue_group = ?self.config.queue_group, "subscribed to nats");
                    let stopped = self.consume(subscriber, &cancel, &mut backoff).await;
                    drop(client);
                    if stopped {
                        return;
                    }
                    tracing::warn!(pipeline = %self.ctx.pipeline, stage = %self.ctx.stage, subject = %self.config.subject, "nats subscription ended; subscribing again");
                }
                Err(why) => {
                    tracing::warn!(pipeline = %self.ctx.pipeline, stage = %self.ctx.stage, error = %why, "cannot subscribe to nats; retrying");
                }
            }
            if !pause(&cancel, backoff.fail()).await {
                return;
            }
        }
    }

    async fn open(&self) -> Result<(Client, Subscriber), String> {
        let client = connect(
            &self.config.url,
            &format!("{}.{}", self.ctx.pipeline, self.ctx.stage),
        )
        .await?;
        let subject = self.config.subject.clone();
        let subscribed = match &self.config.queue_group {
            Some(group) => client.queue_subscribe(subject, group.clone()).await,
            None => client.subscribe(subject).await,
        };
        let subscriber = subscribed.map_err(|e| format!("subscribing to `{}`: {e}", self.config.subject))?;
        // The subscription is registered on the server once this returns: messages published after it
        // are delivered.
        client
            .flush()
            .await
            .map_err(|e| format!("subscribing to `{}`: {e}", self.config.subject))?;
        Ok((client, subscriber))
    }

    /// Takes messages until `cancel` (true) or until the subscription ends (false).
    async fn consume(
        &self,
        mut subscriber: Subscriber,
        cancel: &CancellationToken,
        backoff: &mut Backoff,
    ) -> bool {
        loop {
            let first = tokio::select! {
                () = cancel.cancelled() => {
                    self.drain(subscriber).await;
                    return true;
                }
                next = subscriber.next() => next,
            };
            let Some(first) = first else {
                return false;
            };
            let started = Instant::now();
            let (batch, ended) = more(&mut subscriber, first);
            let records = self.records(batch);
            if !records.is_empty() && !self.publish(records, started, cancel, backoff).await {
                return true;
            }
            if ended {
                return false;
            }
        }
    }

    /// On stopping: unsubscribes, then publishes (once each; one at a time after the broker refused a
    /// batch) the messages NATS had sent already.
    async fn drain(&self, mut subscriber: Subscriber) {
        if subscriber.drain().await.is_err() {
            return;
        }
        let deadline = tokio::time::Instant::now() + DRAIN_TIME;
        while let Ok(Some(first)) = tokio::time::timeout_at(deadline, subscriber.next()).await {
            let started = Instant::now();
            let (batch, _) = more(&mut subscriber, first);
            let records = self.records(batch);
            let count = records.len() as u64;
            if count == 0 {
                continue;
            }
            let failed = match self.ctx.bus.publish(&self.ctx.topic, records.clone()).await {
                Ok(()) => {
                    self.counted(count, started);
                    None
                }
                Err(e) if e.is_refused() => self.one_by_one(records, started).await.err(),
                Err(e) => Some((e, records)),
            };
            if let Some((e, records)) = failed {
                tracing::warn!(pipeline = %self.ctx.pipeline, stage = %self.ctx.stage, topic = %self.ctx.topic, error = %e, lost = records.len(), "stopping: nats messages could not be published");
            }
        }
    }

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

    /// The records of `batch`; bodies that cannot be read are logged and counted.
    fn records(&self, batch: Vec<Message>) -> Vec<OutRecord> {
        let m = &self.ctx.metrics;
        let mut out = Vec::with_capacity(batch.len());
        for message in batch {
            m.records_in.inc();
            match decode_body(self.config.format, &message.payload) {
                Ok(value) => {
                    let mut headers = Vec::new();
                    for (name, values) in message.headers.iter().flat_map(|h| h.iter()) {
                        for v in values {
                            headers.push((name.to_string(), v.as_str().to_owned()));
                        }
                    }
                    headers.sort();
                    let event = Event {
                        value,
                        headers,
                        key: None,
                        origin: None,
                    };
                    out.push(out_record(&event));
                }
                Err(why) => {
                    tracing::warn!(pipeline = %self.ctx.pipeline, stage = %self.ctx.stage, subject = %message.subject, format = ?self.config.format, error = %why, "dropping a message");
                    m.failed.inc();
                }
            }
        }
        out
    }

    /// Publishes until it succeeds (true) or the pipeline stops (false); when the broker refuses the
    /// records, publishes them one at a time (see [`Self::one_by_one`]).
    async fn publish(
        &self,
        mut records: Vec<OutRecord>,
        started: Instant,
        cancel: &CancellationToken,
        backoff: &mut Backoff,
    ) -> bool {
        loop {
            let e = match self.ctx.bus.publish(&self.ctx.topic, records.clone()).await {
                Ok(()) => {
                    backoff.reset();
                    self.counted(records.len() as u64, started);
                    return true;
                }
                Err(e) if e.is_refused() => match self.one_by_one(records, started).await {
                    Ok(()) => {
                        backoff.reset();
                        return true;
                    }
                    Err((e, rest)) => {
                        records = rest;
                        e
                    }
                },
                Err(e) => e,
            };
            let wait = backoff.fail();
            tracing::warn!(pipeline = %self.ctx.pipeline, stage = %self.ctx.stage, topic = %self.ctx.topic, error = %e, ?wait, "publishing failed; retrying");
            if !pause(cancel, wait).await {
                tracing::warn!(pipeline = %self.ctx.pipeline, stage = %self.ctx.stage, lost = records.len(), "stopped with nats messages unpublished");
                return false;
            }
        }
    }

    /// After the broker refused a batch: makes sure the topic exists, then publishes the records one at a
    /// time, in order, dropping (logged, counted) each one the broker refuses again. On another failure,
    /// the error and the records not published yet (that one first).
    async fn one_by_one(
        &self,
        records: Vec<OutRecord>,
        started: Instant,
    ) -> Result<(), (BusError, Vec<OutRecord>)> {
        tracing::warn!(pipeline = %self.ctx.pipeline, stage = %self.ctx.stage, topic = %self.ctx.topic, count = records.len(), "the broker refused the messages; publishing them one at a time");
        // A topic deleted meanwhile is not the records' fault.
        if let Err(e) = self.ctx.bus.ensure_topic(&self.ctx.topic).await {
            return Err((e, records));
        }
        let mut published = 0;
        let mut pending = records.into_iter();
        while let Some(record) = pending.next() {
            match self.ctx.bus.publish(&self.ctx.topic, vec![record.clone()]).await {
                Ok(()) => published += 1,
                Err(e) if e.is_refused() => {
                    tracing::error!(pipeline = %self.ctx.pipeline, stage = %self.ctx.stage, topic = %self.ctx.topic, error = %e, "the broker refused a message; dropping it");
                    self.ctx.metrics.failed.inc();
                }
                Err(e) => {
                    self.counted(published, started);
                    let rest = std::iter::once(record).chain(pending).collect();
                    return Err((e, rest));
                }
            }
        }
        self.counted(published, started);
        Ok(())
    }
}

/// `first` and the messages that are there already, up to [`BATCH`]; true when the subscription ended.
fn more(subscriber: &mut Subscriber, first: Message) -> (Vec<Message>, bool) {
    let mut batch = vec![first];
    while batch.len() < BATCH {
        match subscriber.next().now_or_never() {
            Some(Some(m)) => batch.push(m),
            Some(None) => return (batch, true),
            None => break,
        }
    }
    (batch, false)
}

/// A NATS client for a bridge, named `ferry <name>`.
///
/// # Errors
/// The connection could not be made, as text.
pub(crate) async fn connect(url: &str, name: &str) -> Result<Client, String> {
    async_nats::ConnectOptions::new()
        .name(format!("ferry {name}"))
        .connection_timeout(std::time::Duration::from_secs(10))
        .connect(url)
        .await
        .map_err(|e| format!("cannot connect to nats: {e}"))
}
