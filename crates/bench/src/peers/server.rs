//! A ferry server over loopback, in a process of its own (`ferry up`), driven with `ferry-client`: its
//! batching producer and its queue consumer, as an application would; over HTTP, or over the wire
//! protocol (`docs/protocol.md`) with each producer and consumer on a connection of its own.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use ferry_client::{
    Client, Fsync, Prefetch, ProduceRecord, Producer as ClientProducer, ProducerConfig, QueueConsumer,
};
use tokio::io::AsyncBufReadExt as _;

use crate::peer::{BoxFuture, Confirm, Consumer, Durability, Peer, PendingAck, Producer};
use crate::peers::embedded::BACKGROUND_FSYNC;

/// The group consumers read with.
const GROUP: &str = "bench";

/// `ferry up` on a free loopback port over a temporary directory; stopped on drop.
#[derive(Debug)]
pub struct ServerPeer {
    client: Client,
    /// Where the wire protocol listens, when producers and consumers use it instead of HTTP.
    wire: Option<String>,
    url: String,
    durability: Durability,
    child: Option<tokio::process::Child>,
    _dir: Option<tempfile::TempDir>,
}

impl ServerPeer {
    /// Starts `ferry up` (the binary at `ferry`) with its data under `parent`.
    ///
    /// # Errors
    /// The server does not start or does not say where it listens.
    /// With `wire`, the server also serves the wire protocol, and producers and consumers use it.
    pub async fn start(
        ferry: &Path,
        parent: &Path,
        durability: Durability,
        wire: bool,
    ) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("ferry-bench-server-")
            .tempdir_in(parent)
            .with_context(|| format!("a directory under {}", parent.display()))?;
        let config = dir.path().join("ferry.toml");
        let data = dir.path().join("data");
        let mut toml = format!("[server]\ndata_dir = \"{}\"\n", data.display());
        if wire {
            toml.push_str("wire_listen = \"127.0.0.1:0\"\n");
        }
        std::fs::write(&config, toml)?;
        let (child, listening) = spawn_up(ferry, &config, dir.path()).await?;
        let mut peer = Self::connect(&listening.url, listening.wire.as_deref(), durability)?;
        peer.child = Some(child);
        peer._dir = Some(dir);
        Ok(peer)
    }

    /// A ferry server running at `url`, its producers and consumers on the wire protocol at `wire` if
    /// given.
    ///
    /// # Errors
    /// A bad URL.
    pub fn connect(url: &str, wire: Option<&str>, durability: Durability) -> anyhow::Result<Self> {
        Ok(Self {
            client: client(url, None)?,
            wire: wire.map(str::to_owned),
            url: url.to_owned(),
            durability,
            child: None,
            _dir: None,
        })
    }

    /// A client of its own (and so a connection of its own) for one producer or consumer.
    fn own_client(&self) -> anyhow::Result<Client> {
        client(&self.url, self.wire.as_deref())
    }
}

fn client(url: &str, wire: Option<&str>) -> anyhow::Result<Client> {
    let mut builder = Client::builder().url(url);
    if let Ok(token) = std::env::var("FERRY_TOKEN") {
        builder = builder.token(token);
    }
    if let Some(wire) = wire {
        builder = builder.wire(wire);
    }
    Ok(builder.build()?)
}

/// Where a started `ferry up` listens.
#[derive(Debug, Clone)]
pub struct Listening {
    /// The HTTP API's URL.
    pub url: String,
    /// The wire protocol's address, when it is on.
    pub wire: Option<String>,
}

/// Starts `ferry up --config config` in `cwd` on a free loopback port (no tokens, warnings only); the
/// process and where it listens. The process is killed when the handle is dropped.
///
/// # Errors
/// It does not start or does not say where it listens.
pub async fn spawn_up(
    ferry: &Path,
    config: &Path,
    cwd: &Path,
) -> anyhow::Result<(tokio::process::Child, Listening)> {
    let mut child = tokio::process::Command::new(ferry)
        .args(["up", "--listen", "127.0.0.1:0", "--config"])
        .arg(config)
        .current_dir(cwd)
        .env_remove("FERRY_TOKENS")
        .env_remove("FERRY_TOKENS_FILE")
        .env_remove("SMTP_HOST")
        // The configuration says where the data goes: not a FERRY_DATA_DIR of the user's (or of a .env).
        .env_remove("FERRY_DATA_DIR")
        .env_remove("FERRY_READ_TOKENS")
        .env_remove("FERRY_READ_TOKENS_FILE")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {} up", ferry.display()))?;
    let stdout = child.stdout.take().context("the server's stdout")?;
    let mut line = String::new();
    tokio::io::BufReader::new(stdout).read_line(&mut line).await?;
    let v: serde_json::Value = serde_json::from_str(&line)
        .with_context(|| format!("ferry up printed `{}` instead of where it listens", line.trim()))?;
    let Some(url) = v["listening"].as_str() else {
        bail!("ferry up printed no `listening`: {line}");
    };
    let listening = Listening {
        url: url.to_owned(),
        wire: v["wire"].as_str().map(str::to_owned),
    };
    Ok((child, listening))
}

impl Peer for ServerPeer {
    fn name(&self) -> String {
        if self.wire.is_some() {
            "ferry (server, wire)".into()
        } else {
            "ferry (server, HTTP)".into()
        }
    }

    fn durability(&self) -> Durability {
        self.durability
    }

    fn server_pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(tokio::process::Child::id)
    }

    fn prepare<'a>(&'a self, name: &'a str) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            match self.client.delete_topic(name).await {
                Ok(()) => {}
                Err(e) if e.code() == Some("topic_not_found") => {}
                Err(e) => return Err(e.into()),
            }
            let fsync = match self.durability {
                Durability::OnDisk => Fsync::Always,
                Durability::Background => Fsync::Interval(BACKGROUND_FSYNC),
            };
            let config = ferry_client::TopicConfig {
                fsync: Some(fsync),
                ..ferry_client::TopicConfig::default()
            };
            self.client.create_topic(name, &config).await?;
            let queue = ferry_client::QueueConfig {
                max_in_flight: Some(100_000),
                ..ferry_client::QueueConfig::default()
            };
            self.client.queue_consumer(GROUP, name).create(&queue).await?;
            Ok(())
        })
    }

    fn remove<'a>(&'a self, name: &'a str) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            match self.client.delete_topic(name).await {
                Ok(()) => Ok(()),
                Err(e) if e.code() == Some("topic_not_found") => Ok(()),
                Err(e) => Err(e.into()),
            }
        })
    }

    fn producer<'a>(&'a self, name: &'a str) -> BoxFuture<'a, anyhow::Result<Box<dyn Producer>>> {
        Box::pin(async move {
            let config = ProducerConfig::default().linger(Duration::ZERO);
            let p: Box<dyn Producer> = Box::new(ServerProducer {
                producer: self.own_client()?.producer_with(config),
                topic: name.to_owned(),
            });
            Ok(p)
        })
    }

    fn consumer<'a>(&'a self, name: &'a str) -> BoxFuture<'a, anyhow::Result<Box<dyn Consumer>>> {
        Box::pin(async move {
            let c: Box<dyn Consumer> = Box::new(ServerConsumer {
                queue: self.own_client()?.queue_consumer(GROUP, name),
                ahead: None,
                acking: PendingAck::default(),
            });
            Ok(c)
        })
    }
}

struct ServerProducer {
    producer: ClientProducer,
    topic: String,
}

impl Producer for ServerProducer {
    fn send(&mut self, payload: Bytes) -> BoxFuture<'_, anyhow::Result<Confirm>> {
        Box::pin(async move {
            let record = ProduceRecord::json_bytes(payload)?;
            let delivery = self.producer.enqueue(&self.topic, record).await;
            let confirm: Confirm = Box::pin(async move {
                delivery.await?;
                Ok(())
            });
            Ok(confirm)
        })
    }
}

struct ServerConsumer {
    queue: QueueConsumer,
    /// The receiver, its next receive in flight while the bench counts a batch (made on the first
    /// `next`, with that call's limits).
    ahead: Option<Prefetch>,
    /// The last batch's ack, awaited before the next one starts (see `Consumer::next`).
    acking: PendingAck,
}

impl Consumer for ServerConsumer {
    fn next(&mut self, max: usize, wait: Duration) -> BoxFuture<'_, anyhow::Result<Vec<Bytes>>> {
        Box::pin(async move {
            let queue = &self.queue;
            let got = self
                .ahead
                .get_or_insert_with(|| queue.prefetch(max, wait, None))
                .next()
                .await?;
            self.acking.wait().await?;
            let values = got.iter().map(|d| d.record.value.clone()).collect();
            if !got.is_empty() {
                let queue = self.queue.clone();
                self.acking.start(async move {
                    queue.ack(&got).await?;
                    Ok(())
                });
            }
            Ok(values)
        })
    }

    fn finish(&mut self) -> BoxFuture<'_, anyhow::Result<()>> {
        Box::pin(async move {
            if let Some(ahead) = self.ahead.take() {
                ahead.close().await?;
            }
            self.acking.wait().await
        })
    }
}
