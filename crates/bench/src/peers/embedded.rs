//! ferry's broker in this process: what an application embedding `ferry-broker` gets, and the ceiling
//! the server adds its HTTP cost to.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use ferry_broker::{Broker, FsyncPolicy, Produce, QueueConfig, ReceiveOptions, TopicConfig};

use crate::peer::{BoxFuture, Confirm, Consumer, Durability, Peer, PendingAck, Producer};

/// fsync interval of the `Background` class, as JetStream's default is minutes: ferry's is tighter.
pub const BACKGROUND_FSYNC: Duration = Duration::from_secs(1);

/// The group consumers read with.
const GROUP: &str = "bench";

/// A broker over a temporary directory (removed on drop).
#[derive(Debug)]
pub struct EmbeddedPeer {
    broker: Broker,
    durability: Durability,
    _dir: tempfile::TempDir,
}

impl EmbeddedPeer {
    /// A broker in a new directory under `parent` (a real disk: fsync costs what it costs there).
    ///
    /// # Errors
    /// The directory or the broker cannot be made.
    pub fn open(parent: &std::path::Path, durability: Durability) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("ferry-bench-")
            .tempdir_in(parent)
            .with_context(|| format!("a directory under {}", parent.display()))?;
        let broker = Broker::open(dir.path()).context("opening the broker")?;
        Ok(Self {
            broker,
            durability,
            _dir: dir,
        })
    }
}

/// The topic settings of a durability class.
pub fn fsync_of(durability: Durability) -> FsyncPolicy {
    match durability {
        Durability::OnDisk => FsyncPolicy::Always,
        Durability::Background => FsyncPolicy::Interval(BACKGROUND_FSYNC),
    }
}

impl Peer for EmbeddedPeer {
    fn name(&self) -> String {
        "ferry (embedded)".into()
    }

    fn durability(&self) -> Durability {
        self.durability
    }

    fn server_pid(&self) -> Option<u32> {
        None
    }

    fn prepare<'a>(&'a self, name: &'a str) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            if self.broker.describe_topic(name).is_ok() {
                self.broker.delete_topic(name).await?;
            }
            let config = TopicConfig {
                fsync: fsync_of(self.durability),
                ..TopicConfig::default()
            };
            self.broker.create_topic(name, config).await?;
            let queue = QueueConfig {
                max_in_flight: 100_000,
                ..QueueConfig::default()
            };
            self.broker.create_queue(GROUP, name, queue).await?;
            Ok(())
        })
    }

    fn remove<'a>(&'a self, name: &'a str) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            if self.broker.describe_topic(name).is_ok() {
                self.broker.delete_topic(name).await?;
            }
            Ok(())
        })
    }

    fn producer<'a>(&'a self, name: &'a str) -> BoxFuture<'a, anyhow::Result<Box<dyn Producer>>> {
        Box::pin(async move {
            let p: Box<dyn Producer> = Box::new(EmbeddedProducer {
                broker: self.broker.clone(),
                topic: Arc::from(name),
            });
            Ok(p)
        })
    }

    fn consumer<'a>(&'a self, name: &'a str) -> BoxFuture<'a, anyhow::Result<Box<dyn Consumer>>> {
        Box::pin(async move {
            let c: Box<dyn Consumer> = Box::new(EmbeddedConsumer {
                broker: self.broker.clone(),
                topic: name.to_owned(),
                acking: PendingAck::default(),
            });
            Ok(c)
        })
    }
}

struct EmbeddedProducer {
    broker: Broker,
    topic: Arc<str>,
}

impl Producer for EmbeddedProducer {
    fn send(&mut self, payload: Bytes) -> BoxFuture<'_, anyhow::Result<Confirm>> {
        let (broker, topic) = (self.broker.clone(), self.topic.clone());
        // Each publish runs as a task of its own, so that publishes in flight share fsyncs (group
        // commit) whether or not the caller polls them.
        let task = tokio::spawn(async move {
            let record = Produce {
                key: None,
                headers: Vec::new(),
                value: payload,
                timestamp: None,
                partition: None,
            };
            broker.publish(&topic, vec![record]).await.map(|_| ())
        });
        Box::pin(async move {
            let confirm: Confirm = Box::pin(async move { Ok(task.await??) });
            Ok(confirm)
        })
    }
}

struct EmbeddedConsumer {
    broker: Broker,
    topic: String,
    /// The last batch's ack, awaited before the next one starts (see `Consumer::next`).
    acking: PendingAck,
}

impl Consumer for EmbeddedConsumer {
    fn next(&mut self, max: usize, wait: Duration) -> BoxFuture<'_, anyhow::Result<Vec<Bytes>>> {
        Box::pin(async move {
            let options = ReceiveOptions {
                max_records: max,
                max_wait: wait,
                visibility_timeout: None,
            };
            let got = self.broker.receive(GROUP, &self.topic, options).await?;
            self.acking.wait().await?;
            let ids: Vec<(u32, u64)> = got
                .iter()
                .map(|l| (l.record.partition, l.record.offset))
                .collect();
            if !ids.is_empty() {
                let (broker, topic) = (self.broker.clone(), self.topic.clone());
                self.acking.start(async move {
                    broker.ack(GROUP, &topic, &ids).await?;
                    Ok(())
                });
            }
            Ok(got.into_iter().map(|l| l.record.value).collect())
        })
    }

    fn finish(&mut self) -> BoxFuture<'_, anyhow::Result<()>> {
        Box::pin(async move { self.acking.wait().await })
    }
}
