//! NATS JetStream as a peer, driven with async-nats the way its users do: JetStream publishes
//! pipelined (each publish returns a future of its ack), a durable pull consumer with explicit acks.
//!
//! Durability classes:
//! - [`Durability::Background`]: JetStream's default, file storage flushed to the OS at once and
//!   fsynced every 2 minutes;
//! - [`Durability::OnDisk`]: `sync_interval: always` in the server's configuration (NATS 2.10+), so
//!   that JetStream fsyncs before acknowledging. Older servers cannot do that: [`NatsPeer::start`] and
//!   [`NatsPeer::connect`] refuse it with an error saying so.
//!
//! Every producer and consumer has its own connection, so that they do not share one socket.

use std::time::Duration;

use anyhow::{Context as _, anyhow};
use async_nats::jetstream::consumer::{AckPolicy, PullConsumer, pull};
use async_nats::jetstream::context::{ContextBuilder, DeleteStreamErrorKind};
use async_nats::jetstream::stream::{self, RetentionPolicy, StorageType};
use async_nats::jetstream::{self, ErrorCode};
use async_nats::{Client, Subject};
use bytes::Bytes;
use ferry_engines::servers::NatsServer;
use futures_util::{FutureExt as _, StreamExt as _};

use crate::peer::{BoxFuture, Confirm, Consumer, Durability, Peer, Producer};

/// The durable consumer every destination gets.
const CONSUMER: &str = "bench";
/// The server's shortest `expires` worth asking for: shorter pull requests may end before the
/// server saw them.
const MIN_EXPIRES: Duration = Duration::from_millis(10);
/// How long the client waits for a publish's ack (and for JetStream API answers): async-nats' 5 s
/// default is short for a loaded server fsyncing every write.
const ACK_TIMEOUT: Duration = Duration::from_secs(30);
/// Publishes a producer's connection may have unacknowledged (async-nats holds a permit per
/// publish until its ack came): high, so that the workload's window, not the client's default of
/// 5 000, bounds what is in flight.
const MAX_ACKS_IN_FLIGHT: usize = 1 << 16;
/// What [`Durability::OnDisk`] adds to the server's configuration.
const SYNC_ALWAYS: &str = "jetstream { sync_interval: always }\n";

/// NATS JetStream, on a private server this peer started (and stops when dropped) or at a URL.
#[derive(Debug)]
pub struct NatsPeer {
    url: String,
    version: String,
    durability: Durability,
    client: Client,
    js: jetstream::Context,
    /// Last, so that the clients above are dropped before the server stops.
    server: Option<NatsServer>,
}

/// Why `nats-server <version>` cannot give [`Durability::OnDisk`].
fn no_sync_always(version: &str) -> anyhow::Error {
    anyhow!("nats-server {version} cannot fsync before acknowledging (sync_interval needs 2.10+)")
}

/// Whether `version` (`2.9.10`) is at least 2.10, when it can be read.
fn has_sync_interval(version: &str) -> Option<bool> {
    let mut parts = version.trim_start_matches('v').split('.');
    let major: u32 = parts.next()?.parse().ok()?;
    let minor: u32 = parts
        .next()?
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()?;
    Some((major, minor) >= (2, 10))
}

fn stream_name(name: &str) -> anyhow::Result<String> {
    Ok(format!("bench_{}", crate::peer::checked_name(name)?))
}

fn subject(name: &str) -> anyhow::Result<Subject> {
    Ok(Subject::from(format!(
        "bench.{}",
        crate::peer::checked_name(name)?
    )))
}

/// A connection of its own, named for the server's connection list.
async fn connect(url: &str, role: &str) -> anyhow::Result<Client> {
    async_nats::ConnectOptions::new()
        .name(format!("ferry-bench {role}"))
        .connect(url)
        .await
        .with_context(|| format!("connecting to NATS at {url}"))
}

fn context(client: Client) -> jetstream::Context {
    ContextBuilder::new()
        .timeout(ACK_TIMEOUT)
        .max_ack_inflight(MAX_ACKS_IN_FLIGHT)
        .backpressure_on_inflight(true)
        .build(client)
}

impl NatsPeer {
    /// Starts a private `nats-server -js` (with `sync_interval: always` for
    /// [`Durability::OnDisk`]) and connects to it; `Ok(None)` when `nats-server` is not installed.
    /// Fails with "nats-server 2.9.10 cannot fsync before acknowledging (sync_interval needs 2.10+)"
    /// when asked for [`Durability::OnDisk`] of a server that does not know `sync_interval`.
    pub async fn start(durability: Durability) -> anyhow::Result<Option<NatsPeer>> {
        let started = tokio::task::spawn_blocking(move || match durability {
            Durability::Background => NatsServer::start(),
            Durability::OnDisk => NatsServer::start_with_config(SYNC_ALWAYS),
        })
        .await
        .context("starting nats-server")?;
        let server = match started {
            Ok(Some(server)) => server,
            Ok(None) => return Ok(None),
            // Servers before 2.10 refuse the file: `unknown field "sync_interval"`.
            Err(e) if durability == Durability::OnDisk && e.to_string().contains("sync_interval") => {
                let version = tokio::task::spawn_blocking(NatsServer::installed_version)
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .flatten()
                    .unwrap_or_else(|| "(unknown version)".to_owned());
                return Err(no_sync_always(&version));
            }
            Err(e) => return Err(anyhow::Error::new(e).context("starting nats-server")),
        };
        let mut peer = Self::connect(&server.url(), durability).await?;
        peer.server = Some(server);
        Ok(Some(peer))
    }

    /// Connects to a NATS server with JetStream at `url`. For [`Durability::OnDisk`] the caller
    /// vouches that it runs with `sync_interval: always` (a client cannot see that); a server before
    /// 2.10, which cannot, is refused.
    pub async fn connect(url: &str, durability: Durability) -> anyhow::Result<NatsPeer> {
        let client = connect(url, "admin").await?;
        let version = client.server_info().version;
        if durability == Durability::OnDisk && has_sync_interval(&version) == Some(false) {
            return Err(no_sync_always(&version));
        }
        Ok(Self {
            url: url.to_owned(),
            version,
            durability,
            js: context(client.clone()),
            client,
            server: None,
        })
    }
}

impl Peer for NatsPeer {
    fn name(&self) -> String {
        format!("NATS JetStream {}", self.version)
    }

    fn durability(&self) -> Durability {
        self.durability
    }

    fn server_pid(&self) -> Option<u32> {
        self.server.as_ref().and_then(NatsServer::pid)
    }

    fn remove<'a>(&'a self, name: &'a str) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            let stream = stream_name(name)?;
            match self.js.delete_stream(&stream).await {
                Ok(_) => Ok(()),
                Err(e)
                    if matches!(e.kind(), DeleteStreamErrorKind::JetStream(j)
                    if j.error_code() == ErrorCode::STREAM_NOT_FOUND) =>
                {
                    Ok(())
                }
                Err(e) => Err(e).with_context(|| format!("deleting stream `{stream}`")),
            }
        })
    }

    fn prepare<'a>(&'a self, name: &'a str) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            self.remove(name).await?;
            let stream = stream_name(name)?;
            let config = stream::Config {
                name: stream.clone(),
                subjects: vec![subject(name)?.to_string()],
                storage: StorageType::File,
                retention: RetentionPolicy::Limits,
                num_replicas: 1,
                ..Default::default()
            };
            let created = self.js.create_stream(config).await;
            let created = created.with_context(|| format!("creating stream `{stream}`"))?;
            let consumer = pull::Config {
                durable_name: Some(CONSUMER.to_owned()),
                ack_policy: AckPolicy::Explicit,
                ack_wait: Duration::from_secs(30),
                max_ack_pending: 100_000,
                ..Default::default()
            };
            created
                .create_consumer(consumer)
                .await
                .with_context(|| format!("creating consumer `{CONSUMER}` of stream `{stream}`"))?;
            // The admin connection stays quiet during the run: make sure it still works now.
            self.client
                .flush()
                .await
                .context("flushing the NATS admin connection")?;
            Ok(())
        })
    }

    fn producer<'a>(&'a self, name: &'a str) -> BoxFuture<'a, anyhow::Result<Box<dyn Producer>>> {
        Box::pin(async move {
            let subject = subject(name)?;
            let client = connect(&self.url, "producer").await?;
            Ok(Box::new(NatsProducer {
                js: context(client),
                subject,
            }) as Box<dyn Producer>)
        })
    }

    fn consumer<'a>(&'a self, name: &'a str) -> BoxFuture<'a, anyhow::Result<Box<dyn Consumer>>> {
        Box::pin(async move {
            let stream = stream_name(name)?;
            let client = connect(&self.url, "consumer").await?;
            let js = context(client.clone());
            let consumer: PullConsumer = js
                .get_consumer_from_stream(CONSUMER, &stream)
                .await
                .with_context(|| format!("opening consumer `{CONSUMER}` of stream `{stream}`"))?;
            Ok(Box::new(NatsConsumer {
                client,
                consumer,
                messages: None,
            }) as Box<dyn Consumer>)
        })
    }
}

/// Publishes to one stream's subject on its own connection.
#[derive(Debug)]
struct NatsProducer {
    js: jetstream::Context,
    subject: Subject,
}

impl Producer for NatsProducer {
    fn send(&mut self, payload: Bytes) -> BoxFuture<'_, anyhow::Result<Confirm>> {
        Box::pin(async move {
            // Returns once the message is queued for the socket (waiting while the connection's
            // buffer or its acks in flight are full); the ack comes later.
            let ack = self
                .js
                .publish(self.subject.clone(), payload)
                .await
                .with_context(|| format!("publishing to `{}`", self.subject))?;
            let confirm: Confirm = Box::pin(async move {
                ack.await
                    .map(drop)
                    .context("JetStream did not acknowledge a publish")
            });
            Ok(confirm)
        })
    }
}

/// Pulls from the durable consumer on its own connection, with the client's message stream: it keeps
/// pull requests in flight (the next sent when half of the last is delivered), so that messages come
/// while the bench counts a batch, as an application consuming JetStream does (`messages()`).
struct NatsConsumer {
    client: Client,
    consumer: PullConsumer,
    /// Made on the first `next`, with its limits.
    messages: Option<pull::Stream>,
}

impl Consumer for NatsConsumer {
    fn next(&mut self, max: usize, wait: Duration) -> BoxFuture<'_, anyhow::Result<Vec<Bytes>>> {
        Box::pin(async move {
            if max == 0 {
                return Ok(Vec::new());
            }
            let stream = match &mut self.messages {
                Some(stream) => stream,
                None => {
                    // Each pull waits up to `expires` for its messages, then the stream sends another.
                    let mut builder = self.consumer.stream().max_messages_per_batch(max);
                    if !wait.is_zero() {
                        builder = builder.expires(wait.max(MIN_EXPIRES));
                    }
                    let stream = builder.messages().await.context("JetStream pull stream")?;
                    self.messages.insert(stream)
                }
            };
            // Up to `wait` for the first message, then those already received, without waiting.
            let first = match tokio::time::timeout(wait, stream.next()).await {
                Err(_) => return Ok(Vec::new()),
                Ok(None) => return Err(anyhow!("the JetStream pull stream ended")),
                Ok(Some(m)) => m.map_err(|e| anyhow!("{e}")).context("JetStream pull stream")?,
            };
            let mut messages = vec![first];
            while messages.len() < max {
                match stream.next().now_or_never() {
                    Some(Some(Ok(m))) => messages.push(m),
                    // Keep what came: those messages are ours to ack; the error comes again if it lasts.
                    Some(Some(Err(e))) => {
                        tracing::debug!(error = %e, "the JetStream pull stream gave an error");
                        break;
                    }
                    Some(None) | None => break,
                }
            }
            // JetStream has no batch ack for explicit acks: one `+ACK` per message, published without
            // waiting for the server's confirmation (its clients' default; `double_ack` asks for one
            // per message). The flush puts them on the wire before the messages are handed out.
            for m in &messages {
                m.ack()
                    .await
                    .map_err(|e| anyhow!("{e}"))
                    .context("acking a JetStream message")?;
            }
            self.client.flush().await.context("flushing JetStream acks")?;
            Ok(messages.into_iter().map(|m| m.message.payload).collect())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_with_sync_interval() {
        assert_eq!(has_sync_interval("2.9.10"), Some(false));
        assert_eq!(has_sync_interval("v2.10.0"), Some(true));
        assert_eq!(has_sync_interval("2.11.0-beta.1"), Some(true));
        assert_eq!(has_sync_interval("3.0.0"), Some(true));
        assert_eq!(has_sync_interval("garbage"), None);
    }

    #[test]
    fn names_are_checked() {
        assert_eq!(stream_name("t-1_x").ok(), Some("bench_t-1_x".to_owned()));
        assert!(stream_name("a.b").is_err());
        assert!(stream_name("").is_err());
    }

    #[test]
    fn the_refusal_says_why() {
        assert_eq!(
            no_sync_always("2.9.10").to_string(),
            "nats-server 2.9.10 cannot fsync before acknowledging (sync_interval needs 2.10+)"
        );
    }
}
