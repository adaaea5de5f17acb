//! ferry on NATS JetStream: [`JetStream`] implements [`Engine`] with `async-nats`.
//!
//! # Mapping
//!
//! - **Topic** `T` → a stream named `ferry_` + `T` with `_` escaped as `_u` and `.` as `_d` (stream
//!   names cannot contain `.`), file storage, 7 days' retention (the embedded default), and exactly one
//!   subject, `ferry.t.T`, without wildcards: topics `a` and `a.b` never overlap. Any NATS client can
//!   publish to a topic on that subject.
//! - **Record**: partition always 0; offset = the stream sequence; timestamp = the time JetStream
//!   stored it. The key travels in header `Ferry-Key`; record headers are NATS headers, values with
//!   `\`, CR or LF escaped as `\\`, `\r`, `\n` (NATS header values are single lines).
//! - **Publish**: every record is sent before any `PubAck` is awaited (up to 1024 in flight); `Ok`
//!   means JetStream stored every one of them.
//! - **Queue group** `G` on `T` → a durable pull consumer on `T`'s stream named `ferry_` + `G` (escaped
//!   like streams): explicit acks, `ack_wait` = the visibility, `max_ack_pending` = max in flight,
//!   `max_deliver` = 1000 (a guard: stages dead-letter records themselves), deliver all. A consumer that
//!   exists keeps its settings.
//! - **Receive** = a pull request (`no_wait` with `expires`: the server waits up to `wait` for the
//!   first message and then returns what it has). This process remembers the ack subject of each
//!   received message, so **ack, nack and extend only work for records this process received**;
//!   other ids (never received here, already acked or nacked, a partition other than 0) fail with
//!   [`EngineError::NotLeased`] and nothing is sent. A receive cancelled while it waits may leave
//!   messages the server sent meanwhile leased to nobody until their `ack_wait` runs out.
//! - **Ack** = `+ACK` awaiting the server's confirmation; **nack** = `-NAK` with the delay, confirmed;
//!   **extend** = `+WPI`, confirmed.
//! - **Topic state**: `topics` lists the streams named `ferry_…` whose subject is `ferry.t.T` with
//!   `stream_name(T)` their own name (the topic is read back from the subject, which carries it
//!   verbatim; streams that do not match are not ferry's and are skipped). `start_offset` is the first
//!   sequence still stored and `next_offset` the last sequence + 1 (an empty stream: both the last
//!   sequence + 1); `size_bytes` is what JetStream reports. `delete_topic` deletes the stream, its
//!   groups (consumers) and records.
//! - **Fetch** (reading by offset, no lease) = an ephemeral pull consumer (`DeliverPolicy::
//!   ByStartSequence`, no acks, in memory, removed by the server after `wait` + 30 s of inactivity if
//!   this process cannot delete it) and one pull request on it, then the consumer is deleted.
//! - **Group state**: depth = the consumer's `num_pending` + `num_ack_pending`, in flight =
//!   `num_ack_pending` (across every process).
//! - **Metadata** (`meta_get`, `meta_put`) lives in the key-value bucket `ferry_meta` (history 1, file
//!   storage), made on first use; keys are encoded by [`meta_key`], revisions are the bucket's.
//! - **Credentials** in the URL (`nats://user:password@host:port`, `nats://token@host:port`) are kept
//!   only to connect: errors, logs and `Debug` show `nats://user:***@host:port` (`nats://***@host:port`).
//!
//! # What JetStream cannot do (docs/engines.md)
//!
//! - One partition per topic; no partitioning by key.
//! - `extend` restarts the lease for the group's own `ack_wait`: JetStream cannot set another length,
//!   so the `visibility` argument is ignored.
//! - A group's settings are fixed when it is created.
//! - Header order is not kept across names (NATS headers are a map): headers come back sorted by name,
//!   values of one name in order. Header names must be printable ASCII without `:`, and `Ferry-Key`
//!   and `Nats-*` are reserved: such records are refused.
//! - Topics whose name starts or ends with `.` or contains `..` (not a valid NATS subject), or whose
//!   stream name would exceed 255 characters, are unsupported.
//! - Records are limited by the server's `max_payload` (1 MiB by default).
//! - A stored message is on disk but fsynced only every `sync_interval` (2 minutes by default) unless
//!   the server is configured otherwise; the embedded log fsyncs before it acknowledges.

use std::collections::HashMap;
use std::fmt;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_nats::connection::State;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use async_nats::jetstream::context::{
    CreateStreamError, CreateStreamErrorKind, GetStreamError, GetStreamErrorKind, PublishError,
    PublishErrorKind,
};
use async_nats::jetstream::kv::{self, Operation, UpdateErrorKind};
use async_nats::jetstream::message::AckKind;
use async_nats::jetstream::stream::{
    ConsumerCreateStrictErrorKind, ConsumerError, ConsumerErrorKind, StorageType,
};
use async_nats::jetstream::{self, stream};
use async_nats::jetstream::{Error as ApiError, ErrorCode};
use async_nats::{Client, ConnectErrorKind, HeaderMap, HeaderName, HeaderValue, Subject};
use bytes::Bytes;
use ferry_broker::engine::{
    BoxFuture, Engine, EngineError, GroupSettings, GroupState, InRecord, MetaValue, OutRecord, TopicState,
};
use futures_util::StreamExt;
use futures_util::future::join_all;

const ENGINE: &str = "nats";
const KEY_HEADER: &str = "Ferry-Key";
const GUARD_DELIVERIES: i64 = 1000;
const RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
const MIN_EXPIRES: Duration = Duration::from_millis(10);
const PUBLISH_WINDOW: usize = 1024;
const MAX_STREAM_NAME: usize = 255;
const STREAM_PREFIX: &str = "ferry_";
const SUBJECT_PREFIX: &str = "ferry.t.";
/// How long the server keeps a fetch's ephemeral consumer after the pull request's `wait`, should this
/// process not delete it (cancelled, or the connection lost).
const FETCH_LINGER: Duration = Duration::from_secs(30);
/// The key-value bucket of [`Engine::meta_get`] and [`Engine::meta_put`].
const META_BUCKET: &str = "ferry_meta";

/// The JetStream stream of `topic`: `ferry_` + the name with `_` → `_u` and `.` → `_d`.
pub fn stream_name(topic: &str) -> String {
    encode(topic)
}

/// The durable consumer name of queue group `group` (encoded like [`stream_name`]).
pub fn consumer_name(group: &str) -> String {
    encode(group)
}

/// The one subject of `topic`'s stream: `ferry.t.<topic>`.
pub fn subject(topic: &str) -> String {
    format!("ferry.t.{topic}")
}

/// The key under which the metadata key `key` is stored in the key-value bucket `ferry_meta`. KV keys
/// may only use `[-/_=.a-zA-Z0-9]`, and not start or end with `.` (nor, being subjects, contain `..`);
/// ferry's keys are any text. So ASCII letters, digits, `-`, `_` and `/` are kept as they are, and
/// every other byte of the key's UTF-8 (`.` and `=` included) becomes `=XX`, two upper-case hex
/// digits; the empty key is `=`. Reversible (`=` only starts an escape, and an escape always has two
/// digits), and never a `.`: `g/x.y/..z` is `g/x=2Ey/=2E=2Ez`.
pub fn meta_key(key: &str) -> String {
    if key.is_empty() {
        return "=".to_owned();
    }
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'/') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "={b:02X}");
        }
    }
    out
}

/// The topic whose stream is configured as `config`: the one subject `ferry.t.T` whose topic `T` maps
/// to the stream's own name (the subject carries the name verbatim, where the stream name escapes it).
/// `None` for streams ferry did not make.
fn topic_of(config: &stream::Config) -> Option<String> {
    if !config.name.starts_with(STREAM_PREFIX) {
        return None;
    }
    config
        .subjects
        .iter()
        .filter_map(|s| s.strip_prefix(SUBJECT_PREFIX))
        .find(|topic| stream_name(topic) == config.name)
        .map(str::to_owned)
}

/// A topic's offsets and size from its stream's state.
fn topic_state(name: String, info: &stream::Info) -> TopicState {
    let state = &info.state;
    let next_offset = state.last_sequence.saturating_add(1);
    let start_offset = if state.messages == 0 {
        next_offset
    } else {
        state.first_sequence.clamp(1, next_offset)
    };
    TopicState {
        name,
        start_offset,
        next_offset,
        size_bytes: state.bytes,
        created_ns: u64::try_from(info.created.unix_timestamp_nanos()).unwrap_or(0),
    }
}

/// JetStream's answer in an error of the client library, wherever it is in the chain of sources.
fn answer_in(e: &(dyn std::error::Error + 'static)) -> Option<ApiError> {
    let mut next = Some(e);
    while let Some(e) = next {
        if let Some(j) = e.downcast_ref::<ApiError>() {
            return Some(j.clone());
        }
        if let Some(g) = e.downcast_ref::<GetStreamError>()
            && let GetStreamErrorKind::JetStream(j) = g.kind()
        {
            return Some(j);
        }
        if let Some(c) = e.downcast_ref::<CreateStreamError>()
            && let CreateStreamErrorKind::JetStream(j) = c.kind()
        {
            return Some(j);
        }
        if let Some(c) = e.downcast_ref::<ConsumerError>()
            && let ConsumerErrorKind::JetStream(j) = c.kind()
        {
            return Some(j);
        }
        next = e.source();
    }
    None
}

/// [`failure`] with JetStream's answer taken from the error itself.
fn failed(context: &str, e: &(dyn std::error::Error + 'static)) -> EngineError {
    failure(context, answer_in(e).as_ref(), e)
}

fn is_code(answer: Option<ApiError>, codes: &[ErrorCode]) -> bool {
    answer.is_some_and(|j| codes.contains(&j.error_code()))
}

fn encode(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 8);
    out.push_str(STREAM_PREFIX);
    for c in name.chars() {
        match c {
            '_' => out.push_str("_u"),
            '.' => out.push_str("_d"),
            c => out.push(c),
        }
    }
    out
}

fn unavailable(message: impl fmt::Display) -> EngineError {
    EngineError::Unavailable {
        engine: ENGINE,
        message: message.to_string(),
    }
}

fn refused(message: impl fmt::Display) -> EngineError {
    EngineError::Refused {
        engine: ENGINE,
        message: message.to_string(),
    }
}

/// A failed JetStream request: refused when JetStream answered with a 4xx error; transient when it
/// answered 5xx (not ready, busy) or did not answer (no connection, timeout, JetStream not running).
fn failure(context: &str, answer: Option<&ApiError>, e: impl fmt::Display) -> EngineError {
    match answer {
        Some(j) if j.code() < 500 => refused(format!("{context}: {e}")),
        _ => unavailable(format!("{context}: {e}")),
    }
}

/// Checks a topic or group name as the embedded broker does; for a topic, also what NATS needs.
fn checked(field: &'static str, name: &str) -> Result<String, EngineError> {
    ferry_broker::validate_name(field, name)?;
    let encoded = encode(name);
    let subject_ok =
        field != "topic" || !(name.starts_with('.') || name.ends_with('.') || name.contains(".."));
    if !subject_ok || encoded.len() > MAX_STREAM_NAME {
        return Err(EngineError::Unsupported {
            engine: ENGINE,
            what: format!(
                "{field} name `{name}` (a name starting or ending with `.`, containing `..`, or whose \
                 encoded name `{encoded}` is longer than {MAX_STREAM_NAME} characters)"
            ),
        });
    }
    Ok(encoded)
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('\r', "\\r")
        .replace('\n', "\\n")
}

fn unescape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('r') => out.push('\r'),
            Some('n') => out.push('\n'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

fn headers_of(record: &OutRecord) -> Result<HeaderMap, EngineError> {
    let mut map = HeaderMap::new();
    let value = |v: &str| escape(v).parse::<HeaderValue>().map_err(refused);
    if let Some(key) = &record.key {
        map.insert(HeaderName::from_static(KEY_HEADER), value(key)?);
    }
    for (name, v) in &record.headers {
        let lower = name.to_ascii_lowercase();
        if lower == KEY_HEADER.to_ascii_lowercase() || lower.starts_with("nats-") {
            return Err(refused(format!("header `{name}` is reserved on NATS")));
        }
        let header = HeaderName::try_from(name.as_str())
            .map_err(|e| refused(format!("header name `{}`: {e}", name.escape_default())))?;
        map.append(header, value(v)?);
    }
    Ok(map)
}

/// The record in a JetStream message, and the subject that acks it.
fn into_record(m: jetstream::Message) -> Option<(InRecord, Subject)> {
    let info = m.info().ok()?;
    let (offset, delivered, published) = (info.stream_sequence, info.delivered, info.published);
    let message = m.message;
    let (mut key, mut headers) = (None, Vec::new());
    for (name, values) in message.headers.iter().flat_map(HeaderMap::iter) {
        let name = name.to_string();
        if name == KEY_HEADER {
            key = values.last().map(|v| unescape(v.as_str()));
        } else if !name.to_ascii_lowercase().starts_with("nats-") {
            headers.extend(values.iter().map(|v| (name.clone(), unescape(v.as_str()))));
        }
    }
    headers.sort_by(|a, b| a.0.cmp(&b.0));
    let record = InRecord {
        partition: 0,
        offset,
        timestamp_ms: i64::try_from(published.unix_timestamp_nanos() / 1_000_000).unwrap_or(0),
        key,
        headers,
        value: message.payload,
        deliveries: u32::try_from(delivered).unwrap_or(u32::MAX),
    };
    Some((record, message.reply?))
}

/// A record this process received and has not finished: the subject that acks it.
#[derive(Debug)]
struct Lease {
    reply: Subject,
    /// Set when an ack or nack of it was confirmed but another id of the same call failed: a retry of
    /// the call skips it.
    settled: Option<&'static str>,
}

type GroupKey = (String, String);

/// A server URL (or a comma-separated list of them) with its credentials hidden, and the secrets to
/// scrub from texts that may echo them (the client library's errors). No `Debug`: nothing here leaks.
struct Redacted {
    /// `nats://user:***@host:port`, `nats://***@host:port` for a lone token, others unchanged.
    shown: String,
    /// Passwords and tokens as written, and percent-decoded when that differs; longest first.
    secrets: Vec<String>,
}

impl Redacted {
    fn new(url: &str) -> Self {
        let mut secrets = Vec::new();
        let shown: Vec<String> = url
            .split(',')
            .map(|part| {
                let start = part.find("://").map_or(0, |i| i + 3);
                let (scheme, rest) = part.split_at(start);
                // The last `@`: a password with an unescaped `@` or `/` is still hidden whole.
                let Some(at) = rest.rfind('@') else {
                    return part.to_owned();
                };
                let (userinfo, host) = (&rest[..at], &rest[at + 1..]);
                let (shown_user, secret) = match userinfo.split_once(':') {
                    Some((user, password)) => (format!("{user}:***"), password),
                    None => ("***".to_owned(), userinfo),
                };
                if !secret.is_empty() {
                    let decoded = percent_decode(secret);
                    if decoded != secret && !decoded.is_empty() {
                        secrets.push(decoded);
                    }
                    secrets.push(secret.to_owned());
                }
                format!("{scheme}{shown_user}@{host}")
            })
            .collect();
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        Self {
            shown: shown.join(","),
            secrets,
        }
    }

    /// `text` (an error of the client library, say) with every secret replaced by `***`.
    fn scrub(&self, text: impl fmt::Display) -> String {
        let mut text = text.to_string();
        for secret in &self.secrets {
            if text.contains(secret.as_str()) {
                text = text.replace(secret.as_str(), "***");
            }
        }
        text
    }
}

/// `%XX` escapes decoded (others kept as they are); invalid UTF-8 replaced.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

struct Inner {
    /// The server URL, credentials hidden: the only form kept.
    url: Arc<Redacted>,
    client: Client,
    js: jetstream::Context,
    consumers: Mutex<HashMap<GroupKey, PullConsumer>>,
    leases: Mutex<HashMap<GroupKey, HashMap<u64, Lease>>>,
    /// The bucket `ferry_meta`, once opened.
    meta: Mutex<Option<kv::Store>>,
}

/// ferry's engine on a NATS server with JetStream (see the module documentation for the mapping).
/// Cloning shares the connection and the leases.
#[derive(Clone)]
pub struct JetStream(Arc<Inner>);

impl fmt::Debug for JetStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JetStream")
            .field("url", &self.0.url.shown)
            .field("state", &self.0.client.connection_state())
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl JetStream {
    /// Connects to `url` (`nats://host:port`, or several separated by commas, with credentials as
    /// `user:password@` or `token@` if the server wants them); the client reconnects by itself after
    /// that, and calls fail with [`EngineError::Unavailable`] meanwhile. Errors, logs and `Debug` show
    /// the URL with its password or token replaced by `***`.
    pub async fn connect(url: &str) -> Result<Self, EngineError> {
        let redacted = Arc::new(Redacted::new(url));
        let for_events = Arc::clone(&redacted);
        let client = async_nats::ConnectOptions::new()
            .name("ferry")
            .event_callback(move |event| {
                let event = for_events.scrub(event);
                async move { tracing::info!(%event, "nats connection event") }
            })
            // async-nats parses a `&str` as one URL: give it the list.
            .connect(
                url.split(',')
                    .map(str::trim)
                    .filter(|u| !u.is_empty())
                    .collect::<Vec<_>>(),
            )
            .await
            .map_err(|e| {
                // The client's error may echo the URL: scrub it.
                let message = format!("connecting to {}: {}", redacted.shown, redacted.scrub(&e));
                match e.kind() {
                    ConnectErrorKind::ServerParse => refused(message),
                    _ => unavailable(message),
                }
            })?;
        Ok(Self(Arc::new(Inner {
            url: redacted,
            js: jetstream::new(client.clone()),
            client,
            consumers: Mutex::default(),
            leases: Mutex::default(),
            meta: Mutex::default(),
        })))
    }

    fn online(&self) -> Result<(), EngineError> {
        match self.0.client.connection_state() {
            State::Connected => Ok(()),
            state => Err(unavailable(format!(
                "not connected to {} ({state:?})",
                self.0.url.shown
            ))),
        }
    }

    async fn publish_error(&self, topic: &str, stream: &str, e: PublishError) -> EngineError {
        let context = format!("publishing to topic `{topic}`");
        match e.kind() {
            // No stream listens on the subject, or JetStream is not (yet) running: ask which.
            PublishErrorKind::StreamNotFound => match self.0.js.get_stream(stream).await {
                Err(g)
                    if matches!(g.kind(), GetStreamErrorKind::JetStream(j)
                    if j.error_code() == ErrorCode::STREAM_NOT_FOUND) =>
                {
                    refused(format!("topic `{topic}` does not exist (no stream {stream})"))
                }
                _ => unavailable(format!("{context}: {e}")),
            },
            PublishErrorKind::MaxPayloadExceeded => refused(format!("{context}: {e}")),
            _ => {
                let answer = std::error::Error::source(&e).and_then(|s| s.downcast_ref::<ApiError>());
                failure(&context, answer, &e)
            }
        }
    }

    /// The consumer of `group` on `topic`, from the cache or the server.
    async fn consumer(&self, group: &str, topic: &str) -> Result<PullConsumer, EngineError> {
        let key = (group.to_owned(), topic.to_owned());
        if let Some(c) = lock(&self.0.consumers).get(&key) {
            return Ok(c.clone());
        }
        let (stream, durable) = (checked("topic", topic)?, checked("group", group)?);
        self.online()?;
        let context = format!("group `{group}` on topic `{topic}`");
        let consumer: PullConsumer = self
            .0
            .js
            .get_consumer_from_stream(&durable, &stream)
            .await
            .map_err(|e| match e.kind() {
                ConsumerErrorKind::JetStream(j)
                    if [ErrorCode::CONSUMER_NOT_FOUND, ErrorCode::STREAM_NOT_FOUND]
                        .contains(&j.error_code()) =>
                {
                    refused(format!("{context} does not exist"))
                }
                ConsumerErrorKind::JetStream(j) => failure(&context, Some(&j), &e),
                _ => failure(&context, None, &e),
            })?;
        lock(&self.0.consumers).insert(key, consumer.clone());
        Ok(consumer)
    }

    /// Forgets the consumers and leases of every group on `topic` (its stream is gone).
    fn forget_topic(&self, topic: &str) {
        lock(&self.0.consumers).retain(|(_, t), _| t != topic);
        lock(&self.0.leases).retain(|(_, t), _| t != topic);
    }

    /// Up to `max` records from one pull request on `consumer` (a fetch's: no acks).
    async fn read(
        &self,
        consumer: &PullConsumer,
        context: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<InRecord>, EngineError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        // The server waits up to `expires` for the first message, then returns what it has.
        let mut request = consumer.fetch().max_messages(max);
        if !wait.is_zero() {
            request = request.expires(wait.max(MIN_EXPIRES));
        }
        let mut batch = request
            .messages()
            .await
            .map_err(|e| unavailable(format!("{context}: pull request: {e}")))?;
        let mut records = Vec::new();
        while let Some(message) = batch.next().await {
            match message.map(into_record) {
                Ok(Some((mut record, _))) => {
                    // Without acks JetStream counts no redeliveries: each fetch is a first reading.
                    record.deliveries = 1;
                    records.push(record);
                }
                Ok(None) => tracing::warn!("skipped a message without JetStream metadata"),
                Err(e) if records.is_empty() => {
                    return Err(unavailable(format!("{context}: pull request: {e}")));
                }
                Err(e) => {
                    tracing::debug!(error = %e, "a pull request ended with an error");
                    break;
                }
            }
        }
        if records.is_empty() {
            // A pull request lost with the connection ends empty: say why.
            self.online()?;
        }
        Ok(records)
    }

    /// The bucket `ferry_meta`, made on first use. Its stream (`KV_ferry_meta`) is made here with the
    /// settings a NATS client gives a bucket with history 1 and file storage, rather than with
    /// `create_key_value`: that first reads the account's limits, and async-nats 0.51 cannot parse
    /// the answer of servers before 2.10.
    async fn meta(&self) -> Result<kv::Store, EngineError> {
        if let Some(store) = lock(&self.0.meta).clone() {
            return Ok(store);
        }
        self.online()?;
        let store = match self.0.js.get_key_value(META_BUCKET).await {
            Ok(store) => store,
            Err(e) if is_code(answer_in(&e), &[ErrorCode::STREAM_NOT_FOUND]) => {
                let config = stream::Config {
                    name: format!("KV_{META_BUCKET}"),
                    description: Some("ferry's metadata (stream groups)".to_owned()),
                    subjects: vec![format!("$KV.{META_BUCKET}.>")],
                    max_messages_per_subject: 1,
                    storage: StorageType::File,
                    discard: stream::DiscardPolicy::New,
                    allow_rollup: true,
                    deny_delete: true,
                    deny_purge: false,
                    allow_direct: true,
                    num_replicas: 1,
                    ..Default::default()
                };
                let created = self.0.js.create_stream(config).await;
                // Made by another process meanwhile, or now: open it.
                match self.0.js.get_key_value(META_BUCKET).await {
                    Ok(store) => store,
                    Err(e) => {
                        let context = "creating the metadata bucket `ferry_meta`";
                        return Err(match created {
                            Err(c) => failed(context, &c),
                            Ok(_) => failed(context, &e),
                        });
                    }
                }
            }
            Err(e) => return Err(failed("opening the metadata bucket `ferry_meta`", &e)),
        };
        *lock(&self.0.meta) = Some(store.clone());
        Ok(store)
    }

    /// An error of the metadata bucket; it is opened again on the next call (it may have been deleted).
    fn meta_failed(&self, context: &str, e: &(dyn std::error::Error + 'static)) -> EngineError {
        *lock(&self.0.meta) = None;
        failed(context, e)
    }

    /// Stores `value` under `kv_key` unless the key has a value: on a key that never had one, or
    /// whose last operation was a delete or purge.
    async fn meta_create(
        &self,
        store: &kv::Store,
        context: &str,
        kv_key: &str,
        value: Bytes,
    ) -> Result<Option<u64>, EngineError> {
        match store.update(kv_key, value.clone(), 0).await {
            Ok(revision) => return Ok(Some(revision)),
            Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => {}
            Err(e) => return Err(self.meta_failed(context, &e)),
        }
        // The key has a last entry: a value (another writer came first), or a delete or purge marker
        // after which the key may be created again.
        match store.entry(kv_key).await {
            Ok(Some(entry)) if entry.operation != Operation::Put => {
                match store.update(kv_key, value, entry.revision).await {
                    Ok(revision) => Ok(Some(revision)),
                    Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => Ok(None),
                    Err(e) => Err(self.meta_failed(context, &e)),
                }
            }
            // A value, or nothing any more (purged meanwhile): either way another writer came first.
            Ok(_) => Ok(None),
            Err(e) => Err(self.meta_failed(context, &e)),
        }
    }

    /// Sends `kind` for each of `ids` and waits for the server to confirm. `settle` (ack, nack) ends the
    /// leases once every one is confirmed; a retry after a partial failure skips those confirmed.
    async fn confirm(
        &self,
        group: &str,
        topic: &str,
        ids: &[(u32, u64)],
        kind: AckKind,
        settle: Option<&'static str>,
    ) -> Result<(), EngineError> {
        let key = (group.to_owned(), topic.to_owned());
        let todo: Vec<(u64, Subject)> = {
            let leases = lock(&self.0.leases);
            let mut todo = Vec::with_capacity(ids.len());
            for &(partition, offset) in ids {
                let lease = leases
                    .get(&key)
                    .and_then(|l| l.get(&offset))
                    .filter(|_| partition == 0);
                match lease {
                    Some(l) if l.settled.is_some() && l.settled == settle => {}
                    Some(l) if l.settled.is_none() => todo.push((offset, l.reply.clone())),
                    _ => {
                        return Err(EngineError::NotLeased {
                            engine: ENGINE,
                            message: format!(
                                "record {partition}/{offset} of group `{group}` on topic `{topic}` is not \
                                 leased by this process (never received here, already acked or nacked, \
                                 or not on partition 0)"
                            ),
                        });
                    }
                }
            }
            todo
        };
        if !todo.is_empty() {
            self.online()?;
        }
        let payload = Bytes::from(kind);
        let results = join_all(todo.into_iter().map(|(offset, reply)| {
            let payload = payload.clone();
            async move { (offset, self.0.client.request(reply, payload).await) }
        }))
        .await;
        let mut leases = lock(&self.0.leases);
        let group_leases = leases.entry(key).or_default();
        let mut failed = None;
        for (offset, result) in results {
            match result {
                Ok(_) => {
                    if let Some(lease) = group_leases.get_mut(&offset) {
                        lease.settled = settle;
                    }
                }
                Err(e) => failed = Some(unavailable(format!("{kind:?} of record 0/{offset}: {e}"))),
            }
        }
        if let Some(e) = failed {
            return Err(e);
        }
        if settle.is_some() {
            for (_, offset) in ids {
                group_leases.remove(offset);
            }
        }
        Ok(())
    }
}

impl Engine for JetStream {
    fn ensure_topic<'a>(&'a self, topic: &'a str) -> BoxFuture<'a, Result<(), EngineError>> {
        Box::pin(async move {
            let name = checked("topic", topic)?;
            let config = stream::Config {
                name: name.clone(),
                subjects: vec![subject(topic)],
                storage: StorageType::File,
                max_age: RETENTION,
                ..Default::default()
            };
            self.online()?;
            let Err(e) = self.0.js.get_or_create_stream(config).await else {
                return Ok(());
            };
            let context = format!("creating topic `{topic}`");
            match e.kind() {
                // Racing another creator, JetStream may say "name exists" or "subjects overlap".
                CreateStreamErrorKind::JetStream(_) if self.0.js.get_stream(&name).await.is_ok() => Ok(()),
                CreateStreamErrorKind::JetStream(j) => Err(failure(&context, Some(&j), &e)),
                _ => Err(failure(&context, None, &e)),
            }
        })
    }

    fn ensure_group<'a>(
        &'a self,
        group: &'a str,
        topic: &'a str,
        settings: GroupSettings,
    ) -> BoxFuture<'a, Result<(), EngineError>> {
        Box::pin(async move {
            let stream = checked("topic", topic)?;
            let durable = checked("group", group)?;
            match self.consumer(group, topic).await {
                Ok(_) => return Ok(()),
                Err(EngineError::Refused { .. }) => {}
                Err(e) => return Err(e),
            }
            let config = pull::Config {
                durable_name: Some(durable),
                ack_policy: AckPolicy::Explicit,
                ack_wait: settings.visibility,
                max_deliver: GUARD_DELIVERIES,
                max_ack_pending: i64::from(settings.max_in_flight),
                deliver_policy: if settings.from_end {
                    DeliverPolicy::New
                } else {
                    DeliverPolicy::All
                },
                ..Default::default()
            };
            let context = format!("creating group `{group}` on topic `{topic}`");
            let e = match self.0.js.create_consumer_strict_on_stream(config, &stream).await {
                Ok(c) => {
                    lock(&self.0.consumers).insert((group.to_owned(), topic.to_owned()), c);
                    return Ok(());
                }
                Err(e) => e,
            };
            match e.kind() {
                ConsumerCreateStrictErrorKind::JetStream(j)
                    if j.error_code() == ErrorCode::STREAM_NOT_FOUND =>
                {
                    Err(refused(format!("{context}: the topic does not exist")))
                }
                // Another process created it meanwhile (with other settings, or JetStream says so in
                // another way while racing); it keeps its settings.
                ConsumerCreateStrictErrorKind::AlreadyExists
                | ConsumerCreateStrictErrorKind::JetStream(_)
                    if self.consumer(group, topic).await.is_ok() =>
                {
                    Ok(())
                }
                ConsumerCreateStrictErrorKind::JetStream(j) => Err(failure(&context, Some(&j), &e)),
                _ => Err(failure(&context, None, &e)),
            }
        })
    }

    fn publish_ids<'a>(
        &'a self,
        topic: &'a str,
        records: Vec<OutRecord>,
    ) -> BoxFuture<'a, Result<Vec<(u32, u64)>, EngineError>> {
        Box::pin(async move {
            let stream = checked("topic", topic)?;
            if records.is_empty() {
                return Ok(Vec::new());
            }
            let mut ids = Vec::with_capacity(records.len());
            // Refuse a bad record before anything is sent.
            let mut messages = Vec::with_capacity(records.len());
            for r in records {
                messages.push((headers_of(&r)?, r.value));
            }
            self.online()?;
            let subject = Subject::from(subject(topic));
            let mut messages = messages.into_iter().peekable();
            while messages.peek().is_some() {
                let mut acks = Vec::with_capacity(PUBLISH_WINDOW);
                for (headers, value) in messages.by_ref().take(PUBLISH_WINDOW) {
                    match self
                        .0
                        .js
                        .publish_with_headers(subject.clone(), headers, value)
                        .await
                    {
                        Ok(ack) => acks.push(ack),
                        Err(e) => return Err(self.publish_error(topic, &stream, e).await),
                    }
                }
                for result in join_all(acks.into_iter().map(std::future::IntoFuture::into_future)).await {
                    match result {
                        Ok(ack) => ids.push((0, ack.sequence)),
                        Err(e) => return Err(self.publish_error(topic, &stream, e).await),
                    }
                }
            }
            Ok(ids)
        })
    }

    fn receive<'a>(
        &'a self,
        group: &'a str,
        topic: &'a str,
        max: usize,
        wait: Duration,
    ) -> BoxFuture<'a, Result<Vec<InRecord>, EngineError>> {
        Box::pin(async move {
            let consumer = self.consumer(group, topic).await?;
            if max == 0 {
                return Ok(Vec::new());
            }
            self.online()?;
            // One pull request: the server waits up to `expires` for the first message, then returns
            // what it has.
            let mut request = consumer.fetch().max_messages(max);
            if !wait.is_zero() {
                request = request.expires(wait.max(MIN_EXPIRES));
            }
            let forget = || lock(&self.0.consumers).remove(&(group.to_owned(), topic.to_owned()));
            let mut batch = request.messages().await.map_err(|e| {
                forget();
                unavailable(format!("pull request: {e}"))
            })?;
            let (mut records, mut leases) = (Vec::new(), Vec::new());
            while let Some(message) = batch.next().await {
                match message.map(into_record) {
                    Ok(Some((record, reply))) => {
                        leases.push((record.offset, reply));
                        records.push(record);
                    }
                    Ok(None) => tracing::warn!("skipped a message without JetStream metadata"),
                    // Keep what came before the error: those messages are leased to us.
                    Err(e) if records.is_empty() => {
                        forget(); // The consumer may be gone: look it up again next time.
                        return Err(unavailable(format!("pull request: {e}")));
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "a pull request ended with an error");
                        break;
                    }
                }
            }
            if records.is_empty() {
                // A pull request lost with the connection ends empty: say why.
                self.online()?;
            }
            let mut all = lock(&self.0.leases);
            let group_leases = all.entry((group.to_owned(), topic.to_owned())).or_default();
            for (offset, reply) in leases {
                // A redelivery (its lease ran out) replaces the old entry.
                group_leases.insert(offset, Lease { reply, settled: None });
            }
            Ok(records)
        })
    }

    fn ack<'a>(
        &'a self,
        group: &'a str,
        topic: &'a str,
        ids: &'a [(u32, u64)],
    ) -> BoxFuture<'a, Result<(), EngineError>> {
        Box::pin(self.confirm(group, topic, ids, AckKind::Ack, Some("ack")))
    }

    fn nack<'a>(
        &'a self,
        group: &'a str,
        topic: &'a str,
        ids: &'a [(u32, u64)],
        delay: Duration,
    ) -> BoxFuture<'a, Result<(), EngineError>> {
        let kind = AckKind::Nak((!delay.is_zero()).then_some(delay));
        Box::pin(self.confirm(group, topic, ids, kind, Some("nack")))
    }

    /// Restarts the leases for the group's own `ack_wait` (`+WPI`): JetStream cannot set another
    /// length, so `visibility` is ignored.
    fn extend<'a>(
        &'a self,
        group: &'a str,
        topic: &'a str,
        ids: &'a [(u32, u64)],
        _visibility: Duration,
    ) -> BoxFuture<'a, Result<(), EngineError>> {
        Box::pin(self.confirm(group, topic, ids, AckKind::Progress, None))
    }

    fn name(&self) -> &'static str {
        ENGINE
    }

    /// Every stream ferry made (see the module documentation), sorted by topic name.
    fn topics(&self) -> BoxFuture<'_, Result<Vec<TopicState>, EngineError>> {
        Box::pin(async move {
            self.online()?;
            let mut streams = self.0.js.streams();
            let mut topics = Vec::new();
            while let Some(info) = streams.next().await {
                let info = info.map_err(|e| failed("listing topics", &e))?;
                if let Some(topic) = topic_of(&info.config) {
                    topics.push(topic_state(topic, &info));
                }
            }
            topics.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(topics)
        })
    }

    fn describe_topic<'a>(
        &'a self,
        topic: &'a str,
    ) -> BoxFuture<'a, Result<Option<TopicState>, EngineError>> {
        Box::pin(async move {
            let name = checked("topic", topic)?;
            self.online()?;
            match self.0.js.get_stream(&name).await {
                Ok(stream) => Ok(Some(topic_state(topic.to_owned(), stream.cached_info()))),
                Err(e) if is_code(answer_in(&e), &[ErrorCode::STREAM_NOT_FOUND]) => Ok(None),
                Err(e) => Err(failed(&format!("describing topic `{topic}`"), &e)),
            }
        })
    }

    /// Deletes the topic's stream, with its records and groups; this process forgets its consumers and
    /// leases on it.
    fn delete_topic<'a>(&'a self, topic: &'a str) -> BoxFuture<'a, Result<bool, EngineError>> {
        Box::pin(async move {
            let name = checked("topic", topic)?;
            self.online()?;
            let deleted = self.0.js.delete_stream(&name).await;
            self.forget_topic(topic);
            match deleted {
                Ok(status) if status.success => Ok(true),
                Ok(_) => Err(unavailable(format!(
                    "deleting topic `{topic}`: JetStream did not delete stream {name}"
                ))),
                Err(e) if is_code(answer_in(&e), &[ErrorCode::STREAM_NOT_FOUND]) => Ok(false),
                Err(e) => Err(failed(&format!("deleting topic `{topic}`"), &e)),
            }
        })
    }

    /// One pull request on an ephemeral consumer starting at `offset` (see the module documentation):
    /// it returns as soon as it has the records stored from `offset` on (up to `max`), or waits up to
    /// `wait` for the first. A topic that does not exist is refused.
    fn fetch<'a>(
        &'a self,
        topic: &'a str,
        offset: u64,
        max: usize,
        wait: Duration,
    ) -> BoxFuture<'a, Result<Vec<InRecord>, EngineError>> {
        Box::pin(async move {
            let stream = checked("topic", topic)?;
            self.online()?;
            let context = format!("reading topic `{topic}`");
            let config = pull::Config {
                deliver_policy: DeliverPolicy::ByStartSequence {
                    start_sequence: offset.max(1),
                },
                ack_policy: AckPolicy::None,
                inactive_threshold: wait.saturating_add(FETCH_LINGER),
                memory_storage: true,
                ..Default::default()
            };
            let consumer: PullConsumer = self
                .0
                .js
                .create_consumer_on_stream(config, &stream)
                .await
                .map_err(|e| match e.kind() {
                    ConsumerErrorKind::JetStream(j) if j.error_code() == ErrorCode::STREAM_NOT_FOUND => {
                        refused(format!("topic `{topic}` does not exist (no stream {stream})"))
                    }
                    ConsumerErrorKind::JetStream(j) => failure(&context, Some(&j), &e),
                    _ => failure(&context, None, &e),
                })?;
            let read = self.read(&consumer, &context, max, wait).await;
            // Best effort: else the server removes it once inactive.
            let name = &consumer.cached_info().name;
            if let Err(e) = self.0.js.delete_consumer_from_stream(name, &stream).await {
                tracing::debug!(error = %e, consumer = %name, "could not delete a fetch's consumer");
            }
            read
        })
    }

    fn group_state<'a>(
        &'a self,
        group: &'a str,
        topic: &'a str,
    ) -> BoxFuture<'a, Result<Option<GroupState>, EngineError>> {
        Box::pin(async move {
            let (stream, durable) = (checked("topic", topic)?, checked("group", group)?);
            self.online()?;
            let consumer: Result<PullConsumer, _> =
                self.0.js.get_consumer_from_stream(&durable, &stream).await;
            match consumer {
                Ok(consumer) => {
                    let info = consumer.cached_info();
                    let in_flight = u64::try_from(info.num_ack_pending).unwrap_or(u64::MAX);
                    Ok(Some(GroupState {
                        depth: info.num_pending.saturating_add(in_flight),
                        in_flight,
                    }))
                }
                Err(e)
                    if is_code(
                        answer_in(&e),
                        &[ErrorCode::CONSUMER_NOT_FOUND, ErrorCode::STREAM_NOT_FOUND],
                    ) =>
                {
                    Ok(None)
                }
                Err(e) => Err(failed(
                    &format!("describing group `{group}` on topic `{topic}`"),
                    &e,
                )),
            }
        })
    }

    /// The value of `key` in the bucket `ferry_meta` (under [`meta_key`]), `None` if it has none or
    /// was deleted.
    fn meta_get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<MetaValue>, EngineError>> {
        Box::pin(async move {
            let store = self.meta().await?;
            match store.entry(meta_key(key)).await {
                Ok(Some(entry)) if entry.operation == Operation::Put => Ok(Some(MetaValue {
                    value: entry.value,
                    revision: entry.revision,
                })),
                Ok(_) => Ok(None),
                Err(e) => Err(self.meta_failed("reading metadata", &e)),
            }
        })
    }

    /// Stores `value` under `key` in the bucket `ferry_meta`: with `revision` `None` only if the key
    /// has no value (never had one, or was deleted or purged), else only if `revision` is still the
    /// key's last; the new revision, or `None` when another writer came first.
    fn meta_put<'a>(
        &'a self,
        key: &'a str,
        value: Bytes,
        revision: Option<u64>,
    ) -> BoxFuture<'a, Result<Option<u64>, EngineError>> {
        Box::pin(async move {
            let store = self.meta().await?;
            let (kv_key, context) = (meta_key(key), "writing metadata");
            let Some(revision) = revision else {
                return self.meta_create(&store, context, &kv_key, value).await;
            };
            match store.update(&kv_key, value, revision).await {
                Ok(revision) => Ok(Some(revision)),
                Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => Ok(None),
                Err(e) => Err(self.meta_failed(context, &e)),
            }
        })
    }
}
