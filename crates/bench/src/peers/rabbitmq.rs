//! RabbitMQ as a peer, driven with lapin the way its users do: publisher confirms on a channel of
//! the producer's own, persistent messages to the default exchange, a consumer with a prefetch window
//! and manual acks, acked a batch at a time with one `basic.ack` (`multiple`).
//!
//! Durability classes:
//! - [`Durability::OnDisk`]: a quorum queue (Raft log fsynced before the confirm);
//! - [`Durability::Background`]: a durable classic queue with persistent messages.
//!
//! Every producer and consumer has its own connection, so that they do not share one socket.

use std::io::{Read as _, Write as _};
use std::net::{TcpStream, ToSocketAddrs as _};
use std::time::Duration;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use ferry_engines::servers::RabbitServer;
use futures_util::{FutureExt as _, StreamExt as _};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::uri::{AMQPScheme, AMQPUri};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};

use crate::peer::{BoxFuture, Confirm, Consumer, Durability, Peer, Producer};

/// Deliveries the server sends a consumer ahead of its acks.
const PREFETCH: u16 = 1000;
/// AMQP `delivery_mode` of persistent messages.
const PERSISTENT: u8 = 2;
/// How long the version probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// RabbitMQ, on a private node this peer started (and stops when dropped) or at a URL.
pub struct RabbitPeer {
    url: String,
    version: Option<String>,
    durability: Durability,
    conn: Connection,
    /// Last, so that the connection above is dropped before the node stops.
    server: Option<RabbitServer>,
}

impl std::fmt::Debug for RabbitPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitPeer")
            .field("url", &redacted(&self.url))
            .field("version", &self.version)
            .field("durability", &self.durability)
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

fn queue_name(name: &str) -> anyhow::Result<ShortString> {
    Ok(ShortString::from(format!(
        "bench.{}",
        crate::peer::checked_name(name)?
    )))
}

/// A connection of its own, named for the server's connection list.
async fn connect(url: &str, role: &str) -> anyhow::Result<Connection> {
    let props = ConnectionProperties::default().with_connection_name(format!("ferry-bench {role}").into());
    Connection::connect(url, props)
        .await
        .with_context(|| format!("connecting to RabbitMQ at {}", redacted(url)))
}

/// `url` without its password.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

/// The server's `version` property, read from the `connection.start` frame it sends first (lapin
/// does not keep the server's properties): connects over plain TCP, reads that frame and hangs up.
fn probe_version(url: &str) -> anyhow::Result<String> {
    let uri: AMQPUri = url.parse().map_err(|e: String| anyhow::anyhow!(e))?;
    if uri.scheme != AMQPScheme::AMQP {
        bail!("not probing a TLS listener");
    }
    let (host, port) = (uri.authority.host.as_str(), uri.authority.port);
    let addr = (host, port)
        .to_socket_addrs()?
        .next()
        .with_context(|| format!("no address for {host}"))?;
    let mut socket = TcpStream::connect_timeout(&addr, PROBE_TIMEOUT)?;
    socket.set_read_timeout(Some(PROBE_TIMEOUT))?;
    socket.write_all(b"AMQP\x00\x00\x09\x01")?;
    let mut header = [0u8; 7];
    socket.read_exact(&mut header)?;
    let size = u32::from_be_bytes([header[3], header[4], header[5], header[6]]);
    if header[0] != 1 || size > 1 << 20 {
        bail!("the server did not start with a method frame");
    }
    let mut payload = vec![0; usize::try_from(size)?];
    socket.read_exact(&mut payload)?;
    version_in_start(&payload).context("no `version` in the server's properties")
}

/// The `version` of the server properties in a `connection.start` method's arguments.
fn version_in_start(payload: &[u8]) -> Option<String> {
    // class 10, method 10 (start), version-major, version-minor, then the properties table.
    if payload.get(..4)? != [0, 10, 0, 10] {
        return None;
    }
    let len = usize::try_from(u32::from_be_bytes(payload.get(6..10)?.try_into().ok()?)).ok()?;
    let mut table = payload.get(10..10 + len)?;
    while !table.is_empty() {
        let name_len = usize::from(*table.first()?);
        let name = table.get(1..1 + name_len)?;
        let kind = *table.get(1 + name_len)?;
        table = table.get(2 + name_len..)?;
        let value_len = match kind {
            b't' | b'b' | b'B' => 1,
            b's' | b'u' => 2,
            b'I' | b'i' | b'f' => 4,
            b'D' => 5,
            b'l' | b'L' | b'd' | b'T' => 8,
            b'V' => 0,
            b'S' | b'x' | b'F' | b'A' => {
                4 + usize::try_from(u32::from_be_bytes(table.get(..4)?.try_into().ok()?)).ok()?
            }
            _ => return None,
        };
        if name == b"version" && kind == b'S' {
            return String::from_utf8(table.get(4..value_len)?.to_vec()).ok();
        }
        table = table.get(value_len..)?;
    }
    None
}

/// The server's version, or `None` when it cannot be read.
async fn version_of(url: &str) -> Option<String> {
    let url = url.to_owned();
    match tokio::task::spawn_blocking(move || probe_version(&url)).await {
        Ok(Ok(version)) => Some(version),
        Ok(Err(e)) => {
            tracing::debug!(error = %format!("{e:#}"), "could not read RabbitMQ's version");
            None
        }
        Err(_) => None,
    }
}

impl RabbitPeer {
    /// Starts a private RabbitMQ node (about 5 s) and connects to it; `Ok(None)` when RabbitMQ is not
    /// installed.
    pub async fn start(durability: Durability) -> anyhow::Result<Option<RabbitPeer>> {
        let started = tokio::task::spawn_blocking(RabbitServer::start)
            .await
            .context("starting rabbitmq-server")?;
        let Some(server) = started.context("starting rabbitmq-server")? else {
            return Ok(None);
        };
        let mut peer = Self::connect(&server.url(), durability).await?;
        if peer.version.is_none() {
            peer.version = RabbitServer::installed_version();
        }
        peer.server = Some(server);
        Ok(Some(peer))
    }

    /// Connects to RabbitMQ at `url` (`amqp://user:password@host:port/vhost`).
    pub async fn connect(url: &str, durability: Durability) -> anyhow::Result<RabbitPeer> {
        let conn = connect(url, "admin").await?;
        Ok(Self {
            url: url.to_owned(),
            version: version_of(url).await,
            durability,
            conn,
            server: None,
        })
    }

    /// The queue type of this peer's durability class.
    fn queue_type(&self) -> &'static str {
        match self.durability {
            Durability::OnDisk => "quorum",
            Durability::Background => "classic",
        }
    }
}

impl Peer for RabbitPeer {
    fn name(&self) -> String {
        match &self.version {
            Some(version) => format!("RabbitMQ {version}"),
            None => "RabbitMQ".to_owned(),
        }
    }

    fn durability(&self) -> Durability {
        self.durability
    }

    fn server_pid(&self) -> Option<u32> {
        self.server.as_ref().and_then(RabbitServer::pid)
    }

    fn remove<'a>(&'a self, name: &'a str) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            let queue = queue_name(name)?;
            let channel = self
                .conn
                .create_channel()
                .await
                .context("opening a RabbitMQ channel")?;
            // Deleting a queue that is not there succeeds.
            channel
                .queue_delete(queue.clone(), QueueDeleteOptions::default())
                .await
                .with_context(|| format!("deleting queue `{queue}`"))?;
            let _ = channel.close(200, "done".into()).await;
            Ok(())
        })
    }

    fn prepare<'a>(&'a self, name: &'a str) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            self.remove(name).await?;
            let queue = queue_name(name)?;
            let channel = self
                .conn
                .create_channel()
                .await
                .context("opening a RabbitMQ channel")?;
            let mut arguments = FieldTable::default();
            let kind = self.queue_type();
            arguments.insert("x-queue-type".into(), AMQPValue::LongString(kind.into()));
            let options = QueueDeclareOptions {
                durable: true,
                ..Default::default()
            };
            channel
                .queue_declare(queue.clone(), options, arguments)
                .await
                .with_context(|| format!("declaring {kind} queue `{queue}`"))?;
            channel
                .close(200, "prepared".into())
                .await
                .context("closing a RabbitMQ channel")?;
            Ok(())
        })
    }

    fn producer<'a>(&'a self, name: &'a str) -> BoxFuture<'a, anyhow::Result<Box<dyn Producer>>> {
        Box::pin(async move {
            let queue = queue_name(name)?;
            let conn = connect(&self.url, "producer").await?;
            let channel = conn
                .create_channel()
                .await
                .context("opening a RabbitMQ channel")?;
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await
                .context("turning publisher confirms on")?;
            Ok(Box::new(RabbitProducer {
                channel,
                queue,
                properties: BasicProperties::default().with_delivery_mode(PERSISTENT),
                _conn: conn,
            }) as Box<dyn Producer>)
        })
    }

    fn consumer<'a>(&'a self, name: &'a str) -> BoxFuture<'a, anyhow::Result<Box<dyn Consumer>>> {
        Box::pin(async move {
            let queue = queue_name(name)?;
            let conn = connect(&self.url, "consumer").await?;
            let channel = conn
                .create_channel()
                .await
                .context("opening a RabbitMQ channel")?;
            channel
                .basic_qos(PREFETCH, BasicQosOptions::default())
                .await
                .context("setting the consumer's prefetch")?;
            let deliveries = channel
                .basic_consume(
                    queue.clone(),
                    "".into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
                .with_context(|| format!("consuming queue `{queue}`"))?;
            Ok(Box::new(RabbitConsumer {
                deliveries,
                queue,
                _channel: channel,
                _conn: conn,
            }) as Box<dyn Consumer>)
        })
    }
}

/// Publishes persistent messages to one queue through the default exchange, with confirms.
#[derive(Debug)]
struct RabbitProducer {
    channel: Channel,
    queue: ShortString,
    properties: BasicProperties,
    _conn: Connection,
}

impl Producer for RabbitProducer {
    fn send(&mut self, payload: Bytes) -> BoxFuture<'_, anyhow::Result<Confirm>> {
        Box::pin(async move {
            // Mandatory: should the queue be missing, the message comes back instead of vanishing
            // with a positive confirm.
            let options = BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            };
            // Returns once lapin wrote the frames.
            let confirm = self
                .channel
                .basic_publish(
                    "".into(),
                    self.queue.clone(),
                    options,
                    &payload,
                    self.properties.clone(),
                )
                .await
                .with_context(|| format!("publishing to queue `{}`", self.queue))?;
            let confirm: Confirm = Box::pin(async move {
                match confirm
                    .await
                    .context("waiting for a RabbitMQ publisher confirm")?
                {
                    Confirmation::Ack(None) => Ok(()),
                    Confirmation::Ack(Some(_)) | Confirmation::Nack(Some(_)) => {
                        bail!("RabbitMQ returned a message as unroutable (is its queue there?)")
                    }
                    Confirmation::Nack(None) => bail!("RabbitMQ refused a message (basic.nack)"),
                    Confirmation::NotRequested => bail!("publisher confirms are not on"),
                }
            });
            Ok(confirm)
        })
    }
}

/// Takes deliveries of one queue, with manual acks.
#[derive(Debug)]
struct RabbitConsumer {
    deliveries: lapin::Consumer,
    queue: ShortString,
    _channel: Channel,
    _conn: Connection,
}

impl RabbitConsumer {
    fn ended(&self) -> anyhow::Error {
        anyhow::anyhow!("RabbitMQ ended the consumer of queue `{}`", self.queue)
    }
}

impl Consumer for RabbitConsumer {
    fn next(&mut self, max: usize, wait: Duration) -> BoxFuture<'_, anyhow::Result<Vec<Bytes>>> {
        Box::pin(async move {
            if max == 0 {
                return Ok(Vec::new());
            }
            // Up to `wait` for the first delivery (a zero `wait` still takes one already there)...
            let first = match tokio::time::timeout(wait, self.deliveries.next()).await {
                Err(_) => return Ok(Vec::new()),
                Ok(None) => return Err(self.ended()),
                Ok(Some(delivery)) => delivery.context("receiving from RabbitMQ")?,
            };
            let mut deliveries = vec![first];
            // ...then those already received, without waiting.
            while deliveries.len() < max {
                match self.deliveries.next().now_or_never() {
                    Some(Some(delivery)) => deliveries.push(delivery.context("receiving from RabbitMQ")?),
                    Some(None) => return Err(self.ended()),
                    None => break,
                }
            }
            // One ack for all of them (`multiple`: every delivery up to the last one's tag).
            let last = deliveries.last().map(|d| d.acker.clone());
            if let Some(acker) = last {
                let acked = acker
                    .ack(BasicAckOptions { multiple: true })
                    .await
                    .context("acking RabbitMQ deliveries")?;
                if !acked {
                    bail!("could not ack RabbitMQ deliveries: their channel is closed");
                }
            }
            Ok(deliveries.into_iter().map(|d| Bytes::from(d.data)).collect())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `connection.start` payload with `properties` (already encoded as table entries).
    fn start(properties: &[u8]) -> Vec<u8> {
        let mut payload = vec![0, 10, 0, 10, 0, 9];
        payload.extend_from_slice(&u32::try_from(properties.len()).unwrap_or(0).to_be_bytes());
        payload.extend_from_slice(properties);
        payload.extend_from_slice(b"\x00\x00\x00\x05PLAIN\x00\x00\x00\x05en_US");
        payload
    }

    fn entry(name: &str, kind: u8, value: &[u8]) -> Vec<u8> {
        let mut e = vec![u8::try_from(name.len()).unwrap_or(0)];
        e.extend_from_slice(name.as_bytes());
        e.push(kind);
        e.extend_from_slice(value);
        e
    }

    fn long_string(s: &str) -> Vec<u8> {
        let mut v = u32::try_from(s.len()).unwrap_or(0).to_be_bytes().to_vec();
        v.extend_from_slice(s.as_bytes());
        v
    }

    #[test]
    fn reads_the_version_among_other_properties() {
        let capabilities = [entry("publisher_confirms", b't', &[1]), entry("x", b'l', &[0; 8])].concat();
        let properties = [
            entry("capabilities", b'F', &long_string_bytes(&capabilities)),
            entry("cluster_name", b'S', &long_string("rabbit@host")),
            entry("version", b'S', &long_string("3.10.8")),
        ]
        .concat();
        assert_eq!(version_in_start(&start(&properties)).as_deref(), Some("3.10.8"));
        let without = entry("product", b'S', &long_string("RabbitMQ"));
        assert_eq!(version_in_start(&start(&without)), None);
        assert_eq!(version_in_start(&[0, 10, 0, 11]), None);
        assert_eq!(version_in_start(&start(&properties)[..20]), None);
    }

    fn long_string_bytes(b: &[u8]) -> Vec<u8> {
        let mut v = u32::try_from(b.len()).unwrap_or(0).to_be_bytes().to_vec();
        v.extend_from_slice(b);
        v
    }

    #[test]
    fn urls_are_shown_without_passwords() {
        assert_eq!(
            redacted("amqp://guest:secret@127.0.0.1:5672/%2f"),
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
        assert_eq!(redacted("amqp://127.0.0.1"), "amqp://127.0.0.1");
    }

    #[test]
    fn names_are_checked() {
        assert_eq!(queue_name("t").ok(), Some(ShortString::from("bench.t")));
        assert!(queue_name("a b").is_err());
    }
}
