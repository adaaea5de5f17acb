//! Rust client of ferry's HTTP API (`/v1`) and wire protocol: admin of topics, queue groups and
//! subscriptions, a batching [`Producer`], a [`StreamConsumer`] (Kafka consumer groups) and a
//! [`QueueConsumer`] (SQS-like leases).
//!
//! ```no_run
//! # async fn demo() -> Result<(), ferry_client::Error> {
//! use std::time::Duration;
//! use ferry_client::{Client, ProduceRecord, TopicConfig};
//!
//! let client = Client::from_env()?; // FERRY_URL (default http://127.0.0.1:5555), FERRY_TOKEN, FERRY_WIRE
//! client.create_topic("orders", &TopicConfig::default().partitions(4)).await?;
//!
//! let producer = client.producer();
//! let ack = producer.send("orders", ProduceRecord::json(&serde_json::json!({"id": 1}))?.key("c-1"));
//! let at = ack.await?; // durable under the topic's fsync policy
//! println!("partition {} offset {}", at.partition, at.offset);
//!
//! let mut consumer = client.stream_consumer("billing", "orders");
//! let records = consumer.poll(100, Duration::from_secs(5)).await?;
//! consumer.commit(&records).await?;
//! # Ok(()) }
//! ```
//!
//! # Transports
//! By default every call is one HTTP request (the producer's sends are batched into few). With a wire
//! address ([`ClientBuilder::wire`], or `FERRY_WIRE` for [`Client::from_env`]) the hot path goes over
//! ferry's framed binary protocol (`ferry-wire`) instead:
//!
//! ```no_run
//! # fn demo() -> Result<(), ferry_client::Error> {
//! let client = ferry_client::Client::builder()
//!     .url("http://127.0.0.1:5555") // admin, fetch, stream consumers
//!     .wire("127.0.0.1:5556") // publish, producer, queue receive/ack/nack/extend
//!     .build()?;
//! # Ok(()) }
//! ```
//!
//! - Over the wire: [`Client::publish`], the [`Producer`]'s batches (one PUBLISH frame each, records
//!   never JSON-encoded) and [`QueueConsumer::receive`], [`QueueConsumer::ack`],
//!   [`QueueConsumer::nack`] and [`QueueConsumer::extend`]. Everything else stays on HTTP.
//! - One TCP connection per [`Client`] (`TCP_NODELAY`), shared by its clones and everything made from
//!   it, opened on first use with a HELLO carrying the token. Requests are pipelined on it and
//!   answered in any order; frames queued together go out in one write.
//! - Results and error answers are those of the HTTP API ([`Error::Api`] with the same status, code
//!   and field), without `retry_after`. Received records hold the stored bytes, as the HTTP path gives
//!   them after undoing its JSON rendering (see [`Record`]).
//! - When the connection breaks (the server stops, a reset, no answer within the client's timeout),
//!   every request pending on it fails with [`Error::Wire`] and the next request connects again.
//!
//! Plain TCP and HTTP only (no TLS in this build): fine on loopback and inside a trusted network.
//! Nothing is retried behind your back, since a publish retried after a lost answer may be stored
//! twice.

mod admin;
mod error;
mod http;
mod producer;
mod queue;
mod record;
mod stream;
mod wire;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use serde::Deserialize;
use serde_json::Value;

pub use crate::admin::{
    FilterScope, Fsync, GroupLag, GroupPartition, MemberInfo, PartitionInfo, QueueConfig, QueueInfo, SeekTo,
    SubscriptionInfo, SubscriptionKind, SubscriptionSpec, TopicConfig, TopicInfo,
};
pub use crate::error::{ApiError, Error, Result};
pub use crate::producer::{DeliveryFuture, Producer, ProducerConfig};
pub use crate::queue::{Delivery, Prefetch, QueueConsumer};
pub use crate::record::{AsRecordId, ProduceRecord, Produced, Record, RecordId};
pub use crate::stream::{Membership, StreamConsumer};

use crate::http::{Http, Verb, path, query};
use crate::wire::Wire;

/// Address used when neither the builder nor `FERRY_URL` names one.
pub const DEFAULT_URL: &str = "http://127.0.0.1:5555";

/// Most records one fetch, poll or receive may ask for (the server's limit).
pub const MAX_FETCH_RECORDS: usize = 10_000;

/// How many bytes of keys and values a poll asks for by default (the server's default).
pub(crate) const DEFAULT_MAX_BYTES: usize = 1024 * 1024;

/// Longest long-poll the server accepts.
pub const MAX_WAIT: Duration = Duration::from_secs(60);

/// A connection to one ferry server. Cheap to clone; clones share connections (the HTTP pool and
/// the wire connection, with everything made from them: producers and consumers).
#[derive(Debug, Clone)]
pub struct Client {
    http: Arc<Http>,
    wire: Option<Arc<Wire>>,
}

/// Settings of a [`Client`].
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    url: String,
    token: Option<String>,
    timeout: Duration,
    connect_timeout: Duration,
    wire: Option<String>,
}

impl Default for ClientBuilder {
    fn default() -> Self {
        Self {
            url: DEFAULT_URL.into(),
            token: None,
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            wire: None,
        }
    }
}

impl ClientBuilder {
    /// The server's base URL, `http://host:port` (a path prefix is kept; `host:port` alone means http).
    #[must_use]
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.url = url.into();
        self
    }

    /// A bearer token sent as `Authorization: Bearer <token>` with every request (and in the wire
    /// protocol's HELLO).
    #[must_use]
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Limit of one request (default 30 s); long-polls get their wait on top. Over the wire, a request
    /// without an answer past it fails with [`Error::Wire`] and the connection is closed (every
    /// request pending on it fails alike; the next one reconnects).
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Limit of connecting (default 10 s); for the wire connection, the TCP connect and the HELLO
    /// exchange together.
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The address of the server's wire protocol listener, `host:port` (`127.0.0.1:5556`): publishes
    /// ([`Client::publish`], the [`Producer`]) and queue receive/ack/nack/extend ([`QueueConsumer`])
    /// then go over one framed binary TCP connection instead of HTTP, pipelined; everything else
    /// (admin, fetch, stream consumers) stays on HTTP at [`ClientBuilder::url`]. The connection is
    /// opened on first use, authenticates with [`ClientBuilder::token`], is shared by the client's
    /// clones and everything made from them, and is opened again by the next request after it broke.
    /// Results and error answers are the same as over HTTP; a broken connection fails the requests
    /// pending on it with [`Error::Wire`]. Plain TCP, like the HTTP side (no TLS).
    #[must_use]
    pub fn wire(mut self, addr: impl Into<String>) -> Self {
        self.wire = Some(addr.into());
        self
    }

    /// The client. Connects lazily: a wrong address shows at the first request.
    ///
    /// # Errors
    /// [`Error::Config`] for a URL that does not parse or is not `http://`, a wire address that is not
    /// `host:port`, or a token that cannot be sent in a header.
    pub fn build(self) -> Result<Client> {
        let raw = self.url.trim();
        let with_scheme = if raw.contains("://") {
            raw.to_string()
        } else {
            format!("http://{raw}")
        };
        let url = reqwest::Url::parse(&with_scheme)
            .map_err(|e| Error::Config(format!("ferry URL `{raw}`: {e}")))?;
        match url.scheme() {
            "http" => {}
            "https" => {
                return Err(Error::Config(format!(
                    "ferry URL `{raw}`: https is not supported by this client (no TLS); use http://"
                )));
            }
            other => {
                return Err(Error::Config(format!(
                    "ferry URL `{raw}`: scheme `{other}` is not http"
                )));
            }
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(Error::Config(format!(
                "ferry URL `{raw}`: must not have a query or fragment"
            )));
        }
        let wire = self.wire.as_deref().map(wire_addr).transpose()?;
        let mut headers = HeaderMap::new();
        let token = self.token.filter(|t| !t.is_empty());
        if let Some(token) = &token {
            let mut value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
                Error::Config("the token holds characters that cannot be sent in a header".into())
            })?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true)
            .build()
            .map_err(|e| Error::Config(format!("cannot set up the HTTP client: {e}")))?;
        let base = url.as_str().trim_end_matches('/').to_string();
        let wire = wire.map(|addr| {
            Arc::new(Wire::new(
                addr,
                token.unwrap_or_default(),
                self.connect_timeout,
                self.timeout,
            ))
        });
        Ok(Client {
            http: Arc::new(Http::new(http, base, self.timeout)),
            wire,
        })
    }
}

/// A wire address as given, trimmed, if it is `host:port`; resolved when connecting.
fn wire_addr(raw: &str) -> Result<String> {
    let addr = raw.trim();
    let bad = |why: &str| Error::Config(format!("ferry wire address `{raw}`: {why}"));
    if addr.contains("://") {
        return Err(bad("must be host:port, without a scheme"));
    }
    let Some((host, port)) = addr.rsplit_once(':') else {
        return Err(bad("must be host:port"));
    };
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(bad("must be host:port with a port 0..=65535"));
    }
    Ok(addr.to_string())
}

#[derive(Deserialize)]
struct OffsetsWire {
    offsets: Vec<RecordId>,
}

#[derive(Deserialize)]
struct TopicsWire {
    topics: Vec<TopicInfo>,
}

#[derive(Deserialize)]
struct SubscriptionsWire {
    subscriptions: Vec<SubscriptionInfo>,
}

impl Client {
    /// A client of the server at `url` (`http://host:port`), without a token.
    ///
    /// # Errors
    /// As [`ClientBuilder::build`].
    pub fn new(url: impl Into<String>) -> Result<Self> {
        Self::builder().url(url).build()
    }

    /// Settings: URL, token, timeouts.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// A client of `FERRY_URL` (default [`DEFAULT_URL`]) with the token `FERRY_TOKEN`, if set and not
    /// empty, and the wire address `FERRY_WIRE` ([`ClientBuilder::wire`], `host:port`), if set and not
    /// empty.
    ///
    /// # Errors
    /// As [`ClientBuilder::build`], and [`Error::Config`] if a variable is not Unicode.
    pub fn from_env() -> Result<Self> {
        let var = |name: &str| match std::env::var(name) {
            Ok(v) if v.is_empty() => Ok(None),
            Ok(v) => Ok(Some(v)),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => {
                Err(Error::Config(format!("{name} is not valid Unicode")))
            }
        };
        let mut builder = Self::builder();
        if let Some(url) = var("FERRY_URL")? {
            builder = builder.url(url);
        }
        if let Some(token) = var("FERRY_TOKEN")? {
            builder = builder.token(token);
        }
        if let Some(addr) = var("FERRY_WIRE")? {
            builder = builder.wire(addr);
        }
        builder.build()
    }

    /// The base URL requests go to.
    pub fn url(&self) -> &str {
        self.http.base()
    }

    /// The wire address publishes and queue operations go to, if one was set
    /// ([`ClientBuilder::wire`]).
    pub fn wire_addr(&self) -> Option<&str> {
        self.wire.as_deref().map(Wire::addr)
    }

    /// `GET /healthz`.
    ///
    /// # Errors
    /// [`Error::Transport`] if the server cannot be reached, [`Error::Api`] if it answers with an error.
    pub async fn health(&self) -> Result<()> {
        self.http
            .send(Verb::Get, "/healthz", None, Duration::ZERO)
            .await?;
        Ok(())
    }

    /// Creates a topic (`POST /v1/topics`).
    ///
    /// # Errors
    /// [`Error::Api`]: `topic_exists` (409), `invalid_name` (400), `invalid_config` (422) naming the key.
    pub async fn create_topic(&self, name: &str, config: &TopicConfig) -> Result<TopicInfo> {
        let mut body = match serde_json::to_value(config) {
            Ok(Value::Object(map)) => map,
            _ => return Err(Error::invalid("config", "does not serialize to a JSON object")),
        };
        body.insert("name".into(), Value::from(name));
        self.http.send_json(Verb::Post, "/v1/topics", &body).await
    }

    /// Every topic, by name.
    ///
    /// # Errors
    /// [`Error::Transport`], [`Error::Api`].
    pub async fn list_topics(&self) -> Result<Vec<TopicInfo>> {
        Ok(self.http.get::<TopicsWire>("/v1/topics").await?.topics)
    }

    /// One topic.
    ///
    /// # Errors
    /// [`Error::Api`] `topic_not_found` (404).
    pub async fn describe_topic(&self, name: &str) -> Result<TopicInfo> {
        self.http.get(&path(&["/v1/topics/", name])?).await
    }

    /// Deletes a topic and its records.
    ///
    /// # Errors
    /// [`Error::Api`] `topic_not_found` (404).
    pub async fn delete_topic(&self, name: &str) -> Result<()> {
        self.http
            .send_empty::<()>(Verb::Delete, &path(&["/v1/topics/", name])?, None)
            .await
    }

    /// Creates a subscription `name` on `topic` (`POST /v1/topics/{topic}/subscriptions`); creating it
    /// again with the same spec is a no-op.
    ///
    /// # Errors
    /// [`Error::Api`]: `topic_not_found`, `invalid_name`, `out_of_range` for a bad filter policy, a 409
    /// when the name is taken with another spec.
    pub async fn create_subscription(
        &self,
        topic: &str,
        name: &str,
        spec: &SubscriptionSpec,
    ) -> Result<SubscriptionInfo> {
        let mut body = match serde_json::to_value(spec) {
            Ok(Value::Object(map)) => map,
            _ => return Err(Error::invalid("spec", "does not serialize to a JSON object")),
        };
        body.insert("name".into(), Value::from(name));
        self.http
            .send_json(
                Verb::Post,
                &path(&["/v1/topics/", topic, "/subscriptions"])?,
                &body,
            )
            .await
    }

    /// The subscriptions of a topic.
    ///
    /// # Errors
    /// [`Error::Api`] `topic_not_found`.
    pub async fn list_subscriptions(&self, topic: &str) -> Result<Vec<SubscriptionInfo>> {
        let answer: SubscriptionsWire = self
            .http
            .get(&path(&["/v1/topics/", topic, "/subscriptions"])?)
            .await?;
        Ok(answer.subscriptions)
    }

    /// Deletes a subscription and its group's state.
    ///
    /// # Errors
    /// [`Error::Api`] `topic_not_found`, `group_not_found` (no such subscription).
    pub async fn delete_subscription(&self, topic: &str, name: &str) -> Result<()> {
        self.http
            .send_empty::<()>(
                Verb::Delete,
                &path(&["/v1/topics/", topic, "/subscriptions/", name])?,
                None,
            )
            .await
    }

    /// Publishes `records` in one request, without batching or lingering; answers with each record's
    /// partition and offset, in order, once all are durable. Nothing is stored if any is refused. With
    /// a wire address, one PUBLISH frame on the wire connection.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a record the server would refuse (a header given twice), and over
    /// the wire for records over the server's frame limit (about 16 MiB; over HTTP the server answers
    /// that); [`Error::Api`]: `topic_not_found`, `record_too_large` / `partition_not_found` naming
    /// `records[i]`, `body_too_large` (over 16 MiB); [`Error::Transport`] or [`Error::Wire`] (stored
    /// or not: unknown).
    pub async fn publish(&self, topic: &str, records: &[ProduceRecord]) -> Result<Vec<Produced>> {
        if let Some(wire) = &self.wire {
            let records = records
                .iter()
                .enumerate()
                .map(|(i, r)| r.clone().into_wire().map_err(|e| at_index(e, i)))
                .collect::<Result<Vec<_>>>()?;
            return wire.publish(topic, records).await;
        }
        let mut body = Vec::new();
        body.push(b'[');
        for (i, r) in records.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(&r.encode().map_err(|e| at_index(e, i))?);
        }
        body.push(b']');
        publish_body(&self.http, topic, body.into(), records.len()).await
    }

    /// Reads one partition from `offset`: up to `max_records` (1..=10000) records, waiting up to
    /// `max_wait` (at most 60 s) for the first one.
    ///
    /// # Errors
    /// [`Error::Api`]: `topic_not_found`, `partition_not_found`, `offset_out_of_range` (422),
    /// `out_of_range` for a limit.
    pub async fn fetch(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        max_records: usize,
        max_wait: Duration,
    ) -> Result<Vec<Record>> {
        let url = path(&["/v1/topics/", topic, "/partitions/", &partition.to_string()])?
            + "/records"
            + &query(&[
                ("offset", offset.to_string()),
                ("max_records", max_records.to_string()),
                ("max_wait_ms", max_wait.as_millis().to_string()),
            ]);
        let answer = self.http.send(Verb::Get, &url, None, max_wait).await?;
        record::parse_fetched(&answer.body).map_err(|m| answer.protocol(m))
    }

    /// A producer with the default settings ([`ProducerConfig::default`]).
    ///
    /// # Panics
    /// Outside a Tokio runtime (it spawns its task there).
    pub fn producer(&self) -> Producer {
        Producer::new(self.http.clone(), self.wire.clone(), ProducerConfig::default())
    }

    /// A producer with these settings.
    ///
    /// # Panics
    /// Outside a Tokio runtime (it spawns its task there).
    pub fn producer_with(&self, config: ProducerConfig) -> Producer {
        Producer::new(self.http.clone(), self.wire.clone(), config)
    }

    /// A consumer of `topic` in stream group `group`.
    pub fn stream_consumer(&self, group: &str, topic: &str) -> StreamConsumer {
        StreamConsumer::new(self.clone(), group, topic)
    }

    /// A consumer of `topic` in queue group `group`.
    pub fn queue_consumer(&self, group: &str, topic: &str) -> QueueConsumer {
        QueueConsumer::new(self.http.clone(), self.wire.clone(), group, topic)
    }

    /// Creates (or confirms) queue group `group` on `topic` (`PUT /v1/queues/{group}/topics/{topic}`);
    /// the same settings again are a no-op.
    ///
    /// # Errors
    /// [`Error::Api`]: `topic_not_found`, `invalid_config` naming the key, 409 with other settings.
    pub async fn create_queue(&self, group: &str, topic: &str, config: &QueueConfig) -> Result<QueueInfo> {
        self.http
            .send_json(Verb::Put, &queue::queue_path(group, topic, "")?, config)
            .await
    }

    /// A queue group's settings and state.
    ///
    /// # Errors
    /// [`Error::Api`]: `topic_not_found`, `group_not_found`.
    pub async fn describe_queue(&self, group: &str, topic: &str) -> Result<QueueInfo> {
        self.http.get(&queue::queue_path(group, topic, "")?).await
    }
}

/// An error about one record of a batch, named as the server would (`records[i].headers`).
fn at_index(e: Error, i: usize) -> Error {
    match e {
        Error::InvalidArgument { field, message } => Error::InvalidArgument {
            field: format!("records[{i}].{field}"),
            message,
        },
        other => other,
    }
}

/// POSTs a publish body of `n` records; the offsets, in order.
pub(crate) async fn publish_body(http: &Http, topic: &str, body: Bytes, n: usize) -> Result<Vec<Produced>> {
    let answer = http
        .send(
            Verb::Post,
            &path(&["/v1/topics/", topic, "/records"])?,
            Some(body),
            Duration::ZERO,
        )
        .await?;
    let offsets = answer.json::<OffsetsWire>()?.offsets;
    if offsets.len() != n {
        return Err(answer.protocol(format!("{} offsets for {n} records", offsets.len())));
    }
    Ok(offsets)
}
