//! Rust client of ferry's HTTP API (`/v1`): admin of topics, queue groups and subscriptions, a batching
//! [`Producer`], a [`StreamConsumer`] (Kafka consumer groups) and a [`QueueConsumer`] (SQS-like leases).
//!
//! ```no_run
//! # async fn demo() -> Result<(), ferry_client::Error> {
//! use std::time::Duration;
//! use ferry_client::{Client, ProduceRecord, TopicConfig};
//!
//! let client = Client::from_env()?; // FERRY_URL (default http://127.0.0.1:5555), FERRY_TOKEN
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
//! Plain HTTP only (no TLS in this build): fine on loopback and inside a trusted network. Every call is
//! one HTTP request (the producer's sends are batched into few); nothing is retried behind your back,
//! since a publish retried after a lost answer may be stored twice.

mod admin;
mod error;
mod http;
mod producer;
mod queue;
mod record;
mod stream;

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
pub use crate::queue::{Delivery, QueueConsumer};
pub use crate::record::{AsRecordId, ProduceRecord, Produced, Record, RecordId};
pub use crate::stream::{Membership, StreamConsumer};

use crate::http::{Http, Verb, path, query};

/// Address used when neither the builder nor `FERRY_URL` names one.
pub const DEFAULT_URL: &str = "http://127.0.0.1:5555";

/// Most records one fetch, poll or receive may ask for (the server's limit).
pub const MAX_FETCH_RECORDS: usize = 10_000;

/// How many bytes of keys and values a poll asks for by default (the server's default).
pub(crate) const DEFAULT_MAX_BYTES: usize = 1024 * 1024;

/// Longest long-poll the server accepts.
pub const MAX_WAIT: Duration = Duration::from_secs(60);

/// A connection to one ferry server. Cheap to clone; clones share connections.
#[derive(Debug, Clone)]
pub struct Client {
    http: Arc<Http>,
}

/// Settings of a [`Client`].
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    url: String,
    token: Option<String>,
    timeout: Duration,
    connect_timeout: Duration,
}

impl Default for ClientBuilder {
    fn default() -> Self {
        Self {
            url: DEFAULT_URL.into(),
            token: None,
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
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

    /// A bearer token sent as `Authorization: Bearer <token>` with every request.
    #[must_use]
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Limit of one request (default 30 s); long-polls get their wait on top.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Limit of connecting (default 10 s).
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The client. Connects lazily: a wrong address shows at the first request.
    ///
    /// # Errors
    /// [`Error::Config`] for a URL that does not parse or is not `http://`, or a token that cannot be
    /// sent in a header.
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
        let mut headers = HeaderMap::new();
        if let Some(token) = self.token.filter(|t| !t.is_empty()) {
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
        Ok(Client {
            http: Arc::new(Http::new(http, base, self.timeout)),
        })
    }
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
        builder.build()
    }

    /// The base URL requests go to.
    pub fn url(&self) -> &str {
        self.http.base()
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
    /// partition and offset, in order, once all are durable. Nothing is stored if any is refused.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a record the server would refuse (a header given twice);
    /// [`Error::Api`]: `topic_not_found`, `record_too_large` / `partition_not_found` naming
    /// `records[i]`, `body_too_large` (over 16 MiB).
    pub async fn publish(&self, topic: &str, records: &[ProduceRecord]) -> Result<Vec<Produced>> {
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
        Producer::new(self.http.clone(), ProducerConfig::default())
    }

    /// A producer with these settings.
    ///
    /// # Panics
    /// Outside a Tokio runtime (it spawns its task there).
    pub fn producer_with(&self, config: ProducerConfig) -> Producer {
        Producer::new(self.http.clone(), config)
    }

    /// A consumer of `topic` in stream group `group`.
    pub fn stream_consumer(&self, group: &str, topic: &str) -> StreamConsumer {
        StreamConsumer::new(self.clone(), group, topic)
    }

    /// A consumer of `topic` in queue group `group`.
    pub fn queue_consumer(&self, group: &str, topic: &str) -> QueueConsumer {
        QueueConsumer::new(self.http.clone(), group, topic)
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
