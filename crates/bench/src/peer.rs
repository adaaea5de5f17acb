//! What a peer of the benchmark is: something messages are published to and consumed from, durably.
//! Every system is driven through these traits with its own client used the way its users would
//! (pipelined publishes with confirms, batched acknowledgements), so one workload runs unchanged on all.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;

/// A boxed future.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Resolves once the peer confirmed one message durable (in its durability class).
pub type Confirm = BoxFuture<'static, anyhow::Result<()>>;

/// When a peer acknowledges a publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// On disk before the ack: ferry `fsync = "always"`, JetStream `sync_interval: always`, RabbitMQ
    /// quorum queues.
    OnDisk,
    /// Flushed in the background: ferry `fsync = { interval }`, JetStream's default, RabbitMQ classic
    /// durable queues (persistent messages).
    Background,
}

impl Durability {
    /// How tables label it.
    pub fn label(self) -> &'static str {
        match self {
            Self::OnDisk => "on disk before ack",
            Self::Background => "flushed in the background",
        }
    }
}

/// Publishes messages to one destination.
pub trait Producer: Send {
    /// Sends `payload`: returns once the message is handed to the client (which may apply
    /// backpressure), with a future that resolves when the peer confirmed it.
    fn send(&mut self, payload: Bytes) -> BoxFuture<'_, anyhow::Result<Confirm>>;
}

/// Consumes messages of one destination with acknowledgements, as a queue consumer.
pub trait Consumer: Send {
    /// Up to `max` next messages, waiting up to `wait` for the first; their acknowledgement is under
    /// way when they are returned, and (where the peer answers acks at all) its answer is awaited once
    /// the next receive returned, before the next ack starts: at most one ack in flight, running
    /// alongside the next receive, as a consumer that pipelines its acks does. Consumers of JetStream
    /// and AMQP get no answer to an ack; ferry's is answered once durable. Waiting for it before
    /// returning, or before the next receive, would add its round trip (and under `always` its fsync)
    /// to the next batch's latency whenever messages come faster than that.
    fn next(&mut self, max: usize, wait: Duration) -> BoxFuture<'_, anyhow::Result<Vec<Bytes>>>;

    /// Waits for what is still under way (the last batch's acknowledgement), so that its failure is
    /// seen and nothing races the destination's removal. Nothing to wait for by default.
    fn finish(&mut self) -> BoxFuture<'_, anyhow::Result<()>> {
        Box::pin(async { Ok(()) })
    }
}

/// A system under test, running (its server started by the benchmark, or reached at a URL).
pub trait Peer: Send + Sync {
    /// Its name in tables: `ferry (embedded)`, `NATS JetStream 2.9.10`, ...
    fn name(&self) -> String;
    /// When it acknowledges a publish.
    fn durability(&self) -> Durability;
    /// The server's process, to measure its CPU and memory; `None` when it runs in this process or
    /// elsewhere.
    fn server_pid(&self) -> Option<u32>;
    /// Makes destination `name` (a topic, stream or queue) and its one consumer group, empty.
    fn prepare<'a>(&'a self, name: &'a str) -> BoxFuture<'a, anyhow::Result<()>>;
    /// Deletes destination `name` and what it holds (the benchmark removes each once measured, so a long
    /// run does not fill the disk).
    fn remove<'a>(&'a self, name: &'a str) -> BoxFuture<'a, anyhow::Result<()>>;
    /// A producer to `name`.
    fn producer<'a>(&'a self, name: &'a str) -> BoxFuture<'a, anyhow::Result<Box<dyn Producer>>>;
    /// A consumer of `name`'s group; several share the messages.
    fn consumer<'a>(&'a self, name: &'a str) -> BoxFuture<'a, anyhow::Result<Box<dyn Consumer>>>;
}

/// A destination's name, checked: it goes into NATS stream names and subjects and AMQP queue names.
///
/// # Errors
/// Empty, or other than ASCII letters, digits, `-` and `_`.
pub fn checked_name(name: &str) -> anyhow::Result<&str> {
    let valid = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    anyhow::ensure!(
        valid,
        "destination name `{name}`: use ASCII letters, digits, `-` and `_`"
    );
    Ok(name)
}

/// The acknowledgement of a consumer's last batch, under way in a task of its own (see
/// [`Consumer::next`]): ferry's consumers start one per batch and await it before the next one.
#[derive(Debug, Default)]
pub struct PendingAck(Option<tokio::task::JoinHandle<anyhow::Result<()>>>);

impl PendingAck {
    /// Starts `ack`; the previous one must have been awaited.
    pub fn start(&mut self, ack: impl Future<Output = anyhow::Result<()>> + Send + 'static) {
        self.0 = Some(tokio::spawn(ack));
    }

    /// Waits for the one under way, if any, and gives its outcome.
    pub async fn wait(&mut self) -> anyhow::Result<()> {
        match self.0.take() {
            Some(ack) => ack.await?,
            None => Ok(()),
        }
    }
}
