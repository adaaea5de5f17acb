//! ferry on RabbitMQ (AMQP 0-9-1, with `lapin`): an [`Engine`] for RabbitMQ 3.10 or later.
//!
//! # Mapping
//!
//! - Topic `T` (`[A-Za-z0-9._-]{1,249}`) is a durable `fanout` exchange `ferry.T`; `ensure_topic`
//!   declares it.
//! - Queue group `G` on `T` is a durable quorum queue `ferry.T:G` (`x-queue-type = quorum`,
//!   `x-delivery-limit = 1000` as a guard: stages dead-letter records themselves) bound to `ferry.T`;
//!   `ensure_group` checks that the exchange exists, then declares and binds the queue. Both calls are
//!   idempotent. Names longer than AMQP's 255 bytes are refused. Of the [`GroupSettings`], only
//!   `visibility` is used, by this process only (the lease length is not stored in RabbitMQ, below);
//!   a process holds at most 1000 unacked records per group (prefetch).
//! - `publish` sends every record of a call on a channel in confirm mode, `mandatory`, then waits for
//!   every confirm: `Ok` once RabbitMQ has acked them all (quorum queues confirm after a Raft commit).
//!   A record that reached no queue (the topic has no group) comes back with its confirm, and the call
//!   is refused: RabbitMQ would keep nothing of it. Sending and confirming all take at most 60 s, else
//!   the call fails as unavailable (whether the records were kept is then unknown). A record is
//!   persistent, its headers are AMQP long-string headers, its key the header `ferry-key`, `timestamp`
//!   is set (seconds), `app_id` is `ferry`, and `message_id` is its ferry id: the decimal text of
//!   `(ms since the Unix epoch << 22) | 22 random bits`, increasing within a process (below 2^63).
//! - `receive` starts one consumer per `(group, topic)` on first use (own channel, manual acks,
//!   prefetch 1000; it lives as long as the engine; a task moves its deliveries into a counted buffer),
//!   takes up to `max` of its deliveries and waits up to `wait` for the first. Each record it hands
//!   out is leased until now + the group's `visibility` (as given to `ensure_group` in this process,
//!   else the default 30 s). An [`InRecord`] has partition 0, an offset, the publish time in ms and
//!   `x-delivery-count + 1` deliveries (quorum queues count redeliveries). For a message ferry wrote
//!   (`app_id = ferry` and a numeric `message_id` below 2^63) the offset is its ferry id, and the time
//!   comes from it; any other message (published by another client) gets a process-unique offset
//!   `2^63 | n` at each delivery, and the time of its `timestamp` property (0 without one). A ferry id
//!   that arrives while this process holds the same id (a redelivery racing its first delivery, or a
//!   copy published by hand) is requeued until the first is done.
//! - `ack`, `nack` and `extend` work on records this process holds, by id; an id it does not hold, or
//!   whose lease has run out, fails with [`EngineError::NotLeased`] and nothing changes. `ack` forgets
//!   a record only once its `basic.ack` was sent; `nack` gives records back at once (or holds them for
//!   the delay: no longer leased, so the lease timer leaves them alone); `extend` makes the leases end
//!   `visibility` from now.
//! - Leases are timed by the engine: one task per engine sleeps until the earliest lease ends (woken
//!   when an earlier one is made) and requeues the records whose lease ran out with `basic.nack`
//!   (requeue), so RabbitMQ delivers them again with `x-delivery-count` one higher. It holds the engine
//!   weakly and ends once the engine is dropped.
//!
//! - `describe_topic` checks the exchange with a passive declare; `delete_topic` deletes the exchange
//!   only (AMQP cannot list queues, so the group queues `ferry.T:G` remain, bound to nothing, until
//!   deleted otherwise); `group_state` reads the queue's ready count with a passive declare.
//!   `topics`, `fetch`, `meta_get` and `meta_put` are unsupported: RabbitMQ keeps no log to list or
//!   read by offset, and has no key-value store over AMQP.
//!
//! # What RabbitMQ does differently
//!
//! - An exchange keeps nothing: records published to `T` before a group's queue exists are not kept
//!   for that group, and a publish to a topic without groups is refused (above). No replay, no offsets
//!   to seek to, no partitions (order is per queue, and redeliveries break it).
//! - AMQP has no delayed requeue: a `nack` with a delay keeps the record held by this process and
//!   requeues it from a timer (at once if the process dies first).
//! - AMQP has no lease timeout: this engine times leases itself (above), so a lease ends after
//!   `visibility` only while its process runs. A crashed process's records come back when its
//!   connection closes (at once when the process dies, or after the heartbeat timeout), not after
//!   `visibility`; and RabbitMQ's `consumer_timeout` (30 min by default) still closes a channel that
//!   holds a record longer (prefetched records count, and `extend` does not reset it).
//! - Acks are not confirmed in AMQP: one lost with its connection means the record comes again.
//! - Headers are an AMQP table: they come back sorted by name, a repeated name keeps its last value,
//!   and the name `ferry-key` is reserved.
//!
//! # Failures
//!
//! lapin does not reconnect, so this engine does: once the connection is lost, calls fail with
//! [`EngineError::Unavailable`] (the pipeline retries them) and the next call reconnects, waiting
//! 100 ms doubling to 5 s between failed attempts. Consumers are made again on the new connection;
//! records held on the old one are void (RabbitMQ requeues them; acking one fails with `NotLeased`,
//! as does retrying an ack that failed with its channel). A publish to a topic that does not exist is
//! refused: it first checks the exchange (a passive declare, once per topic and connection), as
//! publishing to a missing one closes the channel, and the frames queued behind it can then make
//! RabbitMQ close the whole connection (`CHANNEL_ERROR`).
//!
//! The URL's password appears in no error message and in no `Debug` output: a malformed URL is refused
//! without quoting it, and connection errors are scrubbed of the password.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use ferry_broker::engine::{
    BoxFuture, Engine, EngineError, GroupSettings, GroupState, InRecord, OutRecord, TopicState,
};
use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::uri::AMQPUri;
use lapin::{
    Acker, BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, Consumer, ErrorKind,
};
use tokio::sync::{Notify, mpsc};
use tokio::time::{Instant, timeout, timeout_at};

const ENGINE: &str = "rabbitmq";
const KEY_HEADER: &str = "ferry-key";
const DELIVERY_COUNT: &str = "x-delivery-count";
const PREFETCH: u16 = 1000;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(60);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
const IDLE_PUBLISHERS: usize = 16;
/// The `app_id` of messages ferry publishes: only their `message_id` is taken as a ferry id.
const APP_ID: &str = "ferry";
/// Offsets of messages ferry did not write have this bit set; ferry ids never do.
const FOREIGN: u64 = 1 << 63;

/// A RabbitMQ node as a ferry engine. Clones share one connection.
#[derive(Clone)]
pub struct RabbitMq {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RabbitMq {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let a = &self.inner.uri.authority;
        write!(f, "RabbitMq({}:{})", a.host, a.port)
    }
}

/// `(group, topic)`.
type Key = (String, String);
/// Held records of a group by offset.
type Held = HashMap<u64, Lease>;
/// What a consumer's task passes on: a delivery, or the error that ended the consumer.
type Pushed = lapin::Result<Delivery>;

/// A record this process holds: handed out by `receive`, not yet acked, nacked or expired.
struct Lease {
    acker: Acker,
    /// The serial of the consumer it came from.
    consumer: u64,
    /// When the lease ends: the record is then requeued, and no longer held.
    until: Instant,
}

impl Lease {
    /// Held still: its channel is alive and its lease has not run out.
    fn valid(&self, now: Instant) -> bool {
        !self.acker.poisoned() && self.until > now
    }
}

#[derive(Default)]
struct Leases {
    groups: HashMap<Key, Held>,
    /// When the lease timer wakes next (`None`: it waits for a lease to be made).
    armed: Option<Instant>,
}

impl Leases {
    /// Wakes the lease timer if a lease now ends before the timer would wake.
    fn arm(&mut self, until: Instant, timer: &Notify) {
        if self.armed.is_none_or(|at| until < at) {
            self.armed = Some(until);
            timer.notify_one();
        }
    }
}

struct Inner {
    uri: AMQPUri,
    link: tokio::sync::Mutex<LinkState>,
    consumers: tokio::sync::Mutex<HashMap<Key, Arc<Consuming>>>,
    leases: Mutex<Leases>,
    /// The lease length of each group ensured by this process.
    visibility: Mutex<HashMap<Key, Duration>>,
    /// Wakes the lease timer (`expire_leases`): a lease ends earlier than it would wake, or the engine
    /// is gone.
    timer: Arc<Notify>,
    /// Idle publishing channels (in confirm mode), with the serial of their connection.
    publishers: Mutex<Vec<(u64, Channel)>>,
    serials: AtomicU64,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The lease timer finds the engine gone and ends.
        self.timer.notify_one();
    }
}

#[derive(Default)]
struct LinkState {
    current: Option<Arc<Link>>,
    failures: u32,
    retry_at: Option<Instant>,
}

struct Link {
    conn: Connection,
    serial: u64,
    /// Topics whose exchange is known to exist (publishing to a missing one would close the channel).
    topics: Mutex<HashSet<String>>,
}

/// A consumer of a group: a task (`pump`) moves its deliveries into `buffer` as they arrive, so that
/// they can be counted.
struct Consuming {
    serial: u64,
    link: u64,
    channel: Channel,
    buffer: tokio::sync::Mutex<mpsc::UnboundedReceiver<Pushed>>,
    /// Deliveries in `buffer`: prefetched, not yet handed out by `receive`.
    buffered: Arc<AtomicUsize>,
}

/// What [`RabbitMq::held`] does with the leases it checked.
#[derive(Clone, Copy)]
enum Hold {
    /// Nothing (an ack forgets them once sent).
    Keep,
    /// Forgets them (a nack).
    Take,
    /// Makes them end `visibility` from now (an extend).
    Renew(Duration),
}

fn key(group: &str, topic: &str) -> Key {
    (group.to_owned(), topic.to_owned())
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn unavailable(message: impl Into<String>) -> EngineError {
    let message = message.into();
    EngineError::Unavailable {
        engine: ENGINE,
        message,
    }
}

fn refused(message: impl Into<String>) -> EngineError {
    let message = message.into();
    EngineError::Refused {
        engine: ENGINE,
        message,
    }
}

fn not_leased(message: impl Into<String>) -> EngineError {
    let message = message.into();
    EngineError::NotLeased {
        engine: ENGINE,
        message,
    }
}

fn lost(e: lapin::Error) -> EngineError {
    unavailable(e.to_string())
}

/// A lapin error as an engine error: a channel-level refusal is final (a 404 says `not_found`), the
/// rest (a lost connection, a queue whose node is down) transient.
fn classify(e: &lapin::Error, not_found: impl FnOnce() -> String) -> EngineError {
    if let ErrorKind::ProtocolError(p) = e.kind()
        && let AMQPErrorKind::Soft(soft) = p.kind()
        && !p.get_message().as_str().contains("down or inaccessible")
    {
        return refused(if *soft == AMQPSoftError::NOTFOUND {
            not_found()
        } else {
            e.to_string()
        });
    }
    lost(e.clone())
}

/// True for a refusal with `404 NOT_FOUND` (a passive declare of something that does not exist).
fn is_not_found(e: &lapin::Error) -> bool {
    if let ErrorKind::ProtocolError(p) = e.kind()
        && let AMQPErrorKind::Soft(soft) = p.kind()
    {
        return *soft == AMQPSoftError::NOTFOUND;
    }
    false
}

fn no_topic(topic: &str) -> impl FnOnce() -> String + '_ {
    move || format!("topic `{topic}` does not exist (no exchange `ferry.{topic}`)")
}

/// `ferry.T` for a topic, `ferry.T:G` for a group on it (`:` is not in names, so no two pairs share a queue).
fn amqp_name(topic: &str, group: Option<&str>) -> Result<ShortString, EngineError> {
    let valid = |field, name| ferry_broker::validate_name(field, name).map_err(|e| refused(e.to_string()));
    valid("topic", topic)?;
    let name = match group {
        Some(group) => valid("group", group).map(|()| format!("ferry.{topic}:{group}"))?,
        None => format!("ferry.{topic}"),
    };
    ShortString::try_new(name).map_err(|e| refused(format!("name too long for AMQP: {e}")))
}

static LAST_ID: AtomicU64 = AtomicU64::new(0);
static FOREIGN_IDS: AtomicU64 = AtomicU64::new(0);

/// A process-unique offset for a message ferry did not write: `2^63 | n`, never a ferry id.
fn foreign_id() -> u64 {
    FOREIGN | (FOREIGN_IDS.fetch_add(1, Ordering::Relaxed) & !FOREIGN)
}

/// A new ferry id: `(ms since the Unix epoch << 22) | 22 random bits`, increasing within the process.
fn next_id(now_ms: u64) -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(now_ms);
    let candidate = (now_ms << 22) | (h.finish() & ((1 << 22) - 1));
    let mut last = LAST_ID.load(Ordering::Relaxed);
    loop {
        let id = candidate.max(last.saturating_add(1));
        match LAST_ID.compare_exchange_weak(last, id, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return id,
            Err(seen) => last = seen,
        }
    }
}

fn text(v: &AMQPValue) -> Option<String> {
    match v {
        AMQPValue::LongString(s) => String::from_utf8(s.as_bytes().to_vec()).ok(),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

fn integer(v: &AMQPValue) -> Option<u64> {
    match *v {
        AMQPValue::LongLongInt(n) => u64::try_from(n).ok(),
        AMQPValue::LongInt(n) => u64::try_from(n).ok(),
        AMQPValue::LongUInt(n) => Some(n.into()),
        AMQPValue::ShortInt(n) => u64::try_from(n).ok(),
        AMQPValue::ShortUInt(n) => Some(n.into()),
        _ => None,
    }
}

/// A record's AMQP properties, made before anything is sent.
fn properties(record: &OutRecord) -> Result<BasicProperties, EngineError> {
    let mut headers = FieldTable::default();
    for (name, value) in record.headers.iter().filter(|(name, _)| name != KEY_HEADER) {
        let name = ShortString::try_new(name.as_str()).map_err(|e| refused(format!("header name: {e}")))?;
        headers.insert(name, AMQPValue::LongString(value.as_str().into()));
    }
    if let Some(key) = &record.key {
        headers.insert(KEY_HEADER.into(), AMQPValue::LongString(key.as_str().into()));
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let now_ms = u64::try_from(now.as_millis()).unwrap_or(u64::MAX >> 22);
    Ok(BasicProperties::default()
        .with_delivery_mode(2)
        .with_timestamp(now_ms / 1000)
        .with_app_id(APP_ID.into())
        .with_message_id(next_id(now_ms).to_string().into())
        .with_headers(headers))
}

/// A delivery as a record, and its acker.
fn to_record(d: Delivery) -> (InRecord, Acker) {
    let props = &d.properties;
    // Only ferry's own message ids are ferry ids: another client's could be anything, and collide.
    let id = props
        .message_id()
        .as_ref()
        .filter(|_| props.app_id().as_ref().is_some_and(|a| a.as_str() == APP_ID))
        .and_then(|m| m.as_str().parse::<u64>().ok())
        .filter(|id| id & FOREIGN == 0);
    let ms = match (id, *props.timestamp()) {
        (Some(id), Some(s)) if (id >> 22) / 1000 == s => id >> 22,
        (_, Some(s)) => s.saturating_mul(1000),
        _ => 0,
    };
    let (mut key, mut headers, mut count) = (None, Vec::new(), None);
    for (name, value) in props.headers().iter().flatten() {
        match name.as_str() {
            DELIVERY_COUNT => count = integer(value),
            KEY_HEADER => key = text(value),
            other => headers.extend(text(value).map(|v| (other.to_owned(), v))),
        }
    }
    let deliveries = match count {
        Some(n) => u32::try_from(n).unwrap_or(u32::MAX).saturating_add(1),
        None => 1 + u32::from(d.redelivered),
    };
    let record = InRecord {
        partition: 0,
        offset: id.unwrap_or_else(foreign_id),
        timestamp_ms: i64::try_from(ms).unwrap_or(i64::MAX),
        key,
        headers,
        value: Bytes::from(d.data),
        deliveries,
    };
    (record, d.acker)
}

/// The outcome of acking or requeueing one record as the outcome of the call.
fn settled(done: lapin::Result<bool>, group: &str, offset: u64) -> Result<(), EngineError> {
    match done {
        Ok(true) => Ok(()),
        // Poisoned (the channel is gone and RabbitMQ has requeued the record), or settled already.
        Ok(false) => Err(not_leased(format!(
            "record 0/{offset} of group {group} is not leased by this process any more (its lease \
             was lost with its channel, or it was settled already)"
        ))),
        Err(e) => Err(lost(e)),
    }
}

/// Requeues records, all of them even after a failure.
async fn requeue(ackers: Vec<(u64, Acker)>, group: &str) -> Result<(), EngineError> {
    let mut result = Ok(());
    for (offset, acker) in ackers {
        let options = BasicNackOptions {
            multiple: false,
            requeue: true,
        };
        result = result.and(settled(acker.nack(options).await, group, offset));
    }
    result
}

/// `now + visibility`, or (for a visibility too long to add) some 30 years from now.
fn lease_end(now: Instant, visibility: Duration) -> Instant {
    const FAR: Duration = Duration::from_secs(30 * 365 * 24 * 3600);
    now.checked_add(visibility.min(FAR)).unwrap_or(now)
}

/// Moves a consumer's deliveries into its buffer (counting them) as they arrive, until the consumer
/// ends (its error is passed on first) or the buffer is dropped with its [`Consuming`]; the consumer
/// is then dropped too, which cancels it.
async fn pump(mut stream: Consumer, buffer: mpsc::UnboundedSender<Pushed>, buffered: Arc<AtomicUsize>) {
    loop {
        let next = tokio::select! {
            next = stream.next() => next,
            () = buffer.closed() => return,
        };
        let Some(next) = next else {
            return;
        };
        let failed = next.is_err();
        if !failed {
            buffered.fetch_add(1, Ordering::SeqCst);
        }
        if buffer.send(next).is_err() || failed {
            return;
        }
    }
}

/// The lease timer: requeues the records whose lease ran out, then sleeps until the next lease ends
/// (or `timer` wakes it for an earlier one). Ends once the engine is dropped.
async fn expire_leases(engine: Weak<Inner>, timer: Arc<Notify>) {
    loop {
        let Some(inner) = engine.upgrade() else {
            return;
        };
        let now = Instant::now();
        let mut expired = Vec::new();
        let next = {
            let mut leases = lock(&inner.leases);
            let mut next: Option<Instant> = None;
            for ((group, _), held) in &mut leases.groups {
                let ackers: Vec<(u64, Acker)> = held
                    .extract_if(|_, l| l.until <= now)
                    .map(|(offset, l)| (offset, l.acker))
                    .collect();
                if !ackers.is_empty() {
                    expired.push((group.clone(), ackers));
                }
                next = held.values().map(|l| l.until).chain(next).min();
            }
            leases.groups.retain(|_, held| !held.is_empty());
            leases.armed = next;
            next
        };
        drop(inner);
        for (group, ackers) in expired {
            // Given back (a lease lost with its channel was given back by RabbitMQ already).
            tracing::debug!(group, records = ackers.len(), "leases ran out; requeueing");
            tokio::spawn(async move { requeue(ackers, &group).await });
        }
        match next {
            Some(at) => {
                tokio::select! {
                    () = tokio::time::sleep_until(at) => {}
                    () = timer.notified() => {}
                }
            }
            None => timer.notified().await,
        }
    }
}

impl RabbitMq {
    /// Connects to `url` (`amqp://user:password@host:port/vhost`); reconnects with backoff by itself
    /// after the connection is lost.
    pub async fn connect(url: &str) -> Result<Self, EngineError> {
        // amq-protocol-uri's errors can quote the URL, password and all.
        let uri: AMQPUri = url
            .parse()
            .map_err(|_: String| refused("the URL is not a valid amqp:// URL"))?;
        let timer = Arc::new(Notify::new());
        let engine = Self {
            inner: Arc::new(Inner {
                uri,
                link: tokio::sync::Mutex::default(),
                consumers: tokio::sync::Mutex::default(),
                leases: Mutex::default(),
                visibility: Mutex::default(),
                timer: timer.clone(),
                publishers: Mutex::default(),
                serials: AtomicU64::new(1),
            }),
        };
        engine.link().await?;
        tokio::spawn(expire_leases(Arc::downgrade(&engine.inner), timer));
        Ok(engine)
    }

    /// `message` without the URL's password.
    fn scrub(&self, message: String) -> String {
        let password = &self.inner.uri.authority.userinfo.password;
        if password.is_empty() {
            return message;
        }
        message.replace(password.as_str(), "***")
    }

    fn serial(&self) -> u64 {
        self.inner.serials.fetch_add(1, Ordering::Relaxed)
    }

    /// The connection; connects again (at most once per backoff period) when it is lost.
    async fn link(&self) -> Result<Arc<Link>, EngineError> {
        let mut state = self.inner.link.lock().await;
        if let Some(link) = &state.current {
            if link.conn.status().connected() {
                return Ok(link.clone());
            }
            tracing::warn!("rabbitmq connection lost; reconnecting");
            state.current = None;
            lock(&self.inner.leases).groups.clear();
            lock(&self.inner.publishers).clear();
        }
        let now = Instant::now();
        if let Some(at) = state.retry_at.filter(|at| *at > now) {
            return Err(unavailable(format!(
                "reconnecting, next attempt in {:?}",
                at - now
            )));
        }
        let props = ConnectionProperties::default().with_connection_name("ferry".into());
        let error = match timeout(
            CONNECT_TIMEOUT,
            Connection::connect_uri(self.inner.uri.clone(), props),
        )
        .await
        {
            Ok(Ok(conn)) => {
                let (serial, topics) = (self.serial(), Mutex::default());
                let link = Arc::new(Link { conn, serial, topics });
                (state.current, state.failures, state.retry_at) = (Some(link.clone()), 0, None);
                return Ok(link);
            }
            Ok(Err(e)) => format!("cannot connect: {e}"),
            Err(_) => format!("cannot connect: no answer in {CONNECT_TIMEOUT:?}"),
        };
        state.failures = state.failures.saturating_add(1);
        let backoff = Duration::from_millis(100) * 2u32.pow(state.failures.min(7) - 1);
        state.retry_at = Some(now + backoff.min(MAX_BACKOFF));
        Err(unavailable(self.scrub(error)))
    }

    /// A fresh channel for declarations (a refusal closes it, so it is never reused).
    async fn admin(&self) -> Result<Channel, EngineError> {
        self.link().await?.conn.create_channel().await.map_err(lost)
    }

    /// Declares the exchange of `topic`, or with `passive` checks that it exists (unless known to).
    async fn exchange(&self, topic: &str, passive: bool) -> Result<(), EngineError> {
        let exchange = amqp_name(topic, None)?;
        let link = self.link().await?;
        if passive && lock(&link.topics).contains(topic) {
            return Ok(());
        }
        let channel = link.conn.create_channel().await.map_err(lost)?;
        let options = ExchangeDeclareOptions {
            passive,
            durable: true,
            ..Default::default()
        };
        let (kind, arguments) = (lapin::ExchangeKind::Fanout, FieldTable::default());
        let declared = channel.exchange_declare(exchange, kind, options, arguments).await;
        declared.map_err(|e| classify(&e, no_topic(topic)))?;
        lock(&link.topics).insert(topic.to_owned());
        Ok(())
    }

    /// Whether the exchange of `topic` exists, asked anew with a passive declare on a throwaway channel
    /// (a 404 closes it); the connection's list of known topics follows the answer.
    async fn exists(&self, topic: &str) -> Result<bool, EngineError> {
        let exchange = amqp_name(topic, None)?;
        let link = self.link().await?;
        let channel = link.conn.create_channel().await.map_err(lost)?;
        let options = ExchangeDeclareOptions {
            passive: true,
            durable: true,
            ..Default::default()
        };
        let (kind, arguments) = (lapin::ExchangeKind::Fanout, FieldTable::default());
        match channel.exchange_declare(exchange, kind, options, arguments).await {
            Ok(()) => {
                lock(&link.topics).insert(topic.to_owned());
                Ok(true)
            }
            Err(e) if is_not_found(&e) => {
                lock(&link.topics).remove(topic);
                Ok(false)
            }
            Err(e) => Err(classify(&e, no_topic(topic))),
        }
    }

    /// Records of `(group, topic)` this process holds (leased by a receive, not yet acked, nacked or
    /// requeued by the lease timer).
    fn held_count(&self, group: &str, topic: &str) -> u64 {
        let leases = lock(&self.inner.leases);
        let held = leases
            .groups
            .get(&key(group, topic))
            .map_or(0, |h| h.values().filter(|l| !l.acker.poisoned()).count());
        u64::try_from(held).unwrap_or(u64::MAX)
    }

    /// Deliveries the consumer of `(group, topic)` has prefetched and `receive` not yet handed out.
    async fn buffered_count(&self, group: &str, topic: &str) -> u64 {
        let consumers = self.inner.consumers.lock().await;
        let buffered = consumers
            .get(&key(group, topic))
            .filter(|c| c.channel.status().connected())
            .map_or(0, |c| c.buffered.load(Ordering::SeqCst));
        u64::try_from(buffered).unwrap_or(u64::MAX)
    }

    /// The lease length of a group: as ensured by this process, else the default.
    fn visibility(&self, group: &str, topic: &str) -> Duration {
        let visibility = lock(&self.inner.visibility).get(&key(group, topic)).copied();
        visibility.unwrap_or_else(|| GroupSettings::default().visibility)
    }

    /// The consumer of `(group, topic)`, made (again) if missing or its channel or connection is gone.
    async fn consumer(&self, group: &str, topic: &str) -> Result<Arc<Consuming>, EngineError> {
        let queue = amqp_name(topic, Some(group))?;
        let link = self.link().await?;
        let mut consumers = self.inner.consumers.lock().await;
        if let Some(c) = consumers.remove(&key(group, topic)) {
            if c.link == link.serial && c.channel.status().connected() {
                consumers.insert(key(group, topic), c.clone());
                return Ok(c);
            }
            if let Some(held) = lock(&self.inner.leases).groups.get_mut(&key(group, topic)) {
                held.retain(|_, lease| lease.consumer != c.serial);
            }
        }
        let channel = link.conn.create_channel().await.map_err(lost)?;
        channel
            .basic_qos(PREFETCH, BasicQosOptions::default())
            .await
            .map_err(lost)?;
        let (options, arguments) = (BasicConsumeOptions::default(), FieldTable::default());
        let stream = channel
            .basic_consume(queue, "".into(), options, arguments)
            .await
            .map_err(|e| {
                classify(&e, || {
                    format!("queue group `{group}` on topic `{topic}` does not exist")
                })
            })?;
        let (sender, buffer) = mpsc::unbounded_channel();
        let buffered = Arc::new(AtomicUsize::new(0));
        tokio::spawn(pump(stream, sender, buffered.clone()));
        let c = Arc::new(Consuming {
            serial: self.serial(),
            link: link.serial,
            channel,
            buffer: tokio::sync::Mutex::new(buffer),
            buffered,
        });
        consumers.insert(key(group, topic), c.clone());
        Ok(c)
    }

    /// Checks that every id is held by this process, its lease not run out (nothing changes otherwise),
    /// and returns their offsets and ackers; `hold` says what becomes of the leases.
    fn held(
        &self,
        group: &str,
        topic: &str,
        ids: &[(u32, u64)],
        hold: Hold,
    ) -> Result<Vec<(u64, Acker)>, EngineError> {
        let now = Instant::now();
        let mut guard = lock(&self.inner.leases);
        let leases = &mut *guard;
        let held = leases.groups.get_mut(&key(group, topic));
        for &(partition, offset) in ids {
            let lease = held
                .as_ref()
                .and_then(|h| h.get(&offset))
                .filter(|_| partition == 0);
            if !lease.is_some_and(|l| l.valid(now)) {
                let id = format!("{partition}/{offset}");
                return Err(not_leased(format!(
                    "record {id} of group {group} is not leased by this process"
                )));
            }
        }
        let Some(held) = held else {
            return Ok(Vec::new());
        };
        let mut seen = HashSet::new();
        let mut ackers = Vec::with_capacity(ids.len());
        for &(_, offset) in ids.iter().filter(|(_, o)| seen.insert(*o)) {
            let acker = match hold {
                Hold::Keep => held.get(&offset).map(|l| l.acker.clone()),
                Hold::Take => held.remove(&offset).map(|l| l.acker),
                Hold::Renew(visibility) => held.get_mut(&offset).map(|l| {
                    l.until = lease_end(now, visibility);
                    l.acker.clone()
                }),
            };
            ackers.extend(acker.map(|a| (offset, a)));
        }
        if let Hold::Renew(visibility) = hold
            && !ackers.is_empty()
        {
            leases.arm(lease_end(now, visibility), &self.inner.timer);
        }
        Ok(ackers)
    }

    /// Forgets a held record once it is settled (unless it is held anew under another acker).
    fn forget(&self, group: &str, topic: &str, offset: u64, acker: &Acker) {
        let mut leases = lock(&self.inner.leases);
        if let Some(held) = leases.groups.get_mut(&key(group, topic))
            && held.get(&offset).is_some_and(|l| l.acker == *acker)
        {
            held.remove(&offset);
        }
    }

    /// Sends `records` to `topic` and waits for their confirms (the caller bounds the time).
    async fn send(
        &self,
        topic: &str,
        exchange: ShortString,
        records: &[OutRecord],
        props: Vec<BasicProperties>,
    ) -> Result<(), EngineError> {
        // A publish to a missing exchange closes its channel, and with it perhaps the connection
        // (frames already queued behind it reach RabbitMQ after the channel is gone): check first.
        self.exchange(topic, true).await?;
        let link = self.link().await?;
        let idle = {
            let mut pool = lock(&self.inner.publishers);
            pool.retain(|(serial, c)| *serial == link.serial && c.status().connected());
            pool.pop()
        };
        let channel = match idle {
            Some((_, channel)) => channel,
            None => {
                let channel = link.conn.create_channel().await.map_err(lost)?;
                channel
                    .confirm_select(ConfirmSelectOptions::default())
                    .await
                    .map_err(lost)?;
                channel
            }
        };
        let (mut confirms, mut errors) = (Vec::with_capacity(records.len()), Vec::new());
        for (record, props) in records.iter().zip(props) {
            // Mandatory: a record no queue takes comes back (with its confirm) instead of vanishing.
            let options = BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            };
            let sent = channel.basic_publish(exchange.clone(), "".into(), options, &record.value, props);
            match sent.await {
                Ok(confirm) => confirms.push(confirm),
                Err(e) => {
                    errors.push(e);
                    break;
                }
            }
        }
        let confirmed = futures_util::future::join_all(confirms).await;
        let (mut nacked, mut returned) = (0, 0);
        for confirmation in confirmed {
            match confirmation {
                Ok(Confirmation::Ack(Some(_)) | Confirmation::Nack(Some(_))) => returned += 1,
                Ok(Confirmation::Nack(None)) => nacked += 1,
                Ok(Confirmation::Ack(None) | Confirmation::NotRequested) => {}
                Err(e) => errors.push(e),
            }
        }
        // A channel-level refusal (a 404 closes the channel) explains the errors that follow it.
        if let Some(e) = errors.iter().find(|e| e.is_amqp_error()).or(errors.first()) {
            lock(&link.topics).remove(topic);
            return Err(classify(e, no_topic(topic)));
        }
        if returned > 0 {
            // Not pooled: a channel that had messages returned is dropped (and so closed), so that no
            // return can ever be matched with a later call's confirm.
            let which = match records.len() {
                1 => "the record".to_owned(),
                n => format!("{returned} of {n} records"),
            };
            return Err(refused(format!(
                "topic `{topic}` has no queue group to keep {which} (RabbitMQ keeps nothing for a \
                 topic without groups)"
            )));
        }
        {
            let mut pool = lock(&self.inner.publishers);
            if pool.len() < IDLE_PUBLISHERS {
                pool.push((link.serial, channel));
            }
        }
        match nacked {
            0 => Ok(()),
            n => Err(refused(format!(
                "RabbitMQ nacked {n} of {} records",
                records.len()
            ))),
        }
    }
}

impl Engine for RabbitMq {
    fn ensure_topic<'a>(&'a self, topic: &'a str) -> BoxFuture<'a, Result<(), EngineError>> {
        Box::pin(self.exchange(topic, false))
    }

    fn ensure_group<'a>(
        &'a self,
        group: &'a str,
        topic: &'a str,
        settings: GroupSettings,
    ) -> BoxFuture<'a, Result<(), EngineError>> {
        Box::pin(async move {
            let (exchange, queue) = (amqp_name(topic, None)?, amqp_name(topic, Some(group))?);
            self.exchange(topic, true).await?;
            let channel = self.admin().await?;
            let mut arguments = FieldTable::default();
            arguments.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
            arguments.insert("x-delivery-limit".into(), AMQPValue::LongLongInt(1000));
            let options = QueueDeclareOptions {
                durable: true,
                ..Default::default()
            };
            let declared = channel.queue_declare(queue.clone(), options, arguments).await;
            declared.map_err(|e| classify(&e, no_topic(topic)))?;
            let bound = channel
                .queue_bind(
                    queue,
                    exchange,
                    "".into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await;
            bound.map_err(|e| classify(&e, no_topic(topic)))?;
            lock(&self.inner.visibility).insert(key(group, topic), settings.visibility);
            Ok(())
        })
    }

    fn publish_ids<'a>(
        &'a self,
        topic: &'a str,
        records: Vec<OutRecord>,
    ) -> BoxFuture<'a, Result<Vec<(u32, u64)>, EngineError>> {
        Box::pin(async move {
            let exchange = amqp_name(topic, None)?;
            let props = records.iter().map(properties).collect::<Result<Vec<_>, _>>()?;
            if records.is_empty() {
                return Ok(Vec::new());
            }
            // Each record's id is the ferry id in its message_id, set by `properties`.
            let ids: Vec<(u32, u64)> = props
                .iter()
                .map(|p| {
                    let id = p.message_id().as_ref().and_then(|m| m.as_str().parse().ok());
                    (0, id.unwrap_or(0))
                })
                .collect();
            // The whole publish, sending included: a channel blocked by RabbitMQ's flow control or
            // memory alarm would otherwise hold the call forever.
            match timeout(CONFIRM_TIMEOUT, self.send(topic, exchange, &records, props)).await {
                Ok(result) => result.map(|()| ids),
                Err(_) => Err(unavailable(format!(
                    "publish of {} records not confirmed in {CONFIRM_TIMEOUT:?}",
                    records.len()
                ))),
            }
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
            let deadline = Instant::now() + wait;
            let consuming = self.consumer(group, topic).await?;
            if max == 0 {
                return Ok(Vec::new());
            }
            let Ok(mut buffer) = timeout_at(deadline, consuming.buffer.lock()).await else {
                return Ok(Vec::new());
            };
            let mut deliveries = Vec::new();
            let Ok(mut next) = timeout_at(deadline, buffer.recv()).await else {
                return Ok(Vec::new());
            };
            loop {
                if let Some(Ok(_)) = next {
                    consuming.buffered.fetch_sub(1, Ordering::SeqCst);
                }
                match next {
                    Some(Ok(d)) if d.acker.usable() => deliveries.push(d),
                    Some(Ok(_)) => {}
                    end => {
                        // The consumer failed or was cancelled: the next receive makes a new one.
                        drop(buffer);
                        let mut consumers = self.inner.consumers.lock().await;
                        if consumers
                            .get(&key(group, topic))
                            .is_some_and(|c| c.serial == consuming.serial)
                        {
                            consumers.remove(&key(group, topic));
                        }
                        let why = end
                            .and_then(Result::err)
                            .map_or("cancelled".into(), |e| e.to_string());
                        return Err(unavailable(format!("consumer of {group} on {topic}: {why}")));
                    }
                }
                if deliveries.len() >= max {
                    break;
                }
                next = match buffer.try_recv() {
                    Ok(more) => Some(more),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => None,
                };
            }
            drop(buffer);
            let now = Instant::now();
            let until = lease_end(now, self.visibility(group, topic));
            let mut guard = lock(&self.inner.leases);
            let leases = &mut *guard;
            let held = leases.groups.entry(key(group, topic)).or_default();
            let mut out = Vec::with_capacity(deliveries.len());
            for (record, acker) in deliveries.into_iter().map(to_record) {
                // (Expired but not yet requeued counts as held: the timer requeues the old one.)
                if held.get(&record.offset).is_some_and(|l| !l.acker.poisoned()) {
                    // A ferry id held already (only ferry-written messages keep their id: a
                    // redelivery, or a copy): it comes again once the first is done.
                    let (group, offset) = (group.to_owned(), record.offset);
                    tokio::spawn(async move { requeue(vec![(offset, acker)], &group).await });
                    continue;
                }
                let consumer = consuming.serial;
                held.insert(
                    record.offset,
                    Lease {
                        acker,
                        consumer,
                        until,
                    },
                );
                out.push(record);
            }
            if !out.is_empty() {
                leases.arm(until, &self.inner.timer);
            }
            Ok(out)
        })
    }

    fn ack<'a>(
        &'a self,
        group: &'a str,
        topic: &'a str,
        ids: &'a [(u32, u64)],
    ) -> BoxFuture<'a, Result<(), EngineError>> {
        Box::pin(async move {
            let mut result = Ok(());
            for (offset, acker) in self.held(group, topic, ids, Hold::Keep)? {
                let done = acker.ack(BasicAckOptions::default()).await;
                // Forgotten only once acked (or found void): after a failure the ack can be retried.
                if done.is_ok() {
                    self.forget(group, topic, offset, &acker);
                }
                result = result.and(settled(done, group, offset));
            }
            result
        })
    }

    fn nack<'a>(
        &'a self,
        group: &'a str,
        topic: &'a str,
        ids: &'a [(u32, u64)],
        delay: Duration,
    ) -> BoxFuture<'a, Result<(), EngineError>> {
        Box::pin(async move {
            let ackers = self.held(group, topic, ids, Hold::Take)?;
            if delay.is_zero() {
                return requeue(ackers, group).await;
            }
            let group = group.to_owned();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                // If the channel is gone meanwhile, RabbitMQ has requeued the records already.
                let _ = requeue(ackers, &group).await;
            });
            Ok(())
        })
    }

    fn extend<'a>(
        &'a self,
        group: &'a str,
        topic: &'a str,
        ids: &'a [(u32, u64)],
        visibility: Duration,
    ) -> BoxFuture<'a, Result<(), EngineError>> {
        Box::pin(async move { self.held(group, topic, ids, Hold::Renew(visibility)).map(drop) })
    }

    fn name(&self) -> &'static str {
        ENGINE
    }

    /// The topic if its exchange `ferry.T` exists. RabbitMQ keeps no log: an exchange stores nothing,
    /// so the offsets and the size are always 0.
    fn describe_topic<'a>(
        &'a self,
        topic: &'a str,
    ) -> BoxFuture<'a, Result<Option<TopicState>, EngineError>> {
        Box::pin(async move {
            let exists = self.exists(topic).await?;
            Ok(exists.then(|| TopicState {
                name: topic.to_owned(),
                start_offset: 0,
                next_offset: 0,
                size_bytes: 0,
                created_ns: 0,
            }))
        })
    }

    /// Deletes the exchange `ferry.T`; `false` if it did not exist. AMQP cannot list queues, so the
    /// queues of the topic's groups (`ferry.T:G`) remain until deleted otherwise: they receive nothing
    /// more, keep the records they hold, and a group made again on a topic of the same name uses its
    /// queue again. This process's consumers and leases on them stay valid.
    fn delete_topic<'a>(&'a self, topic: &'a str) -> BoxFuture<'a, Result<bool, EngineError>> {
        Box::pin(async move {
            let exchange = amqp_name(topic, None)?;
            if !self.exists(topic).await? {
                return Ok(false);
            }
            let link = self.link().await?;
            let channel = link.conn.create_channel().await.map_err(lost)?;
            let deleted = channel
                .exchange_delete(exchange, ExchangeDeleteOptions::default())
                .await;
            // A publish checks the exchange again from now on.
            lock(&link.topics).remove(topic);
            deleted.map_err(|e| classify(&e, no_topic(topic)))?;
            Ok(true)
        })
    }

    /// The group's queue `ferry.T:G` if it exists: depth = its ready messages (RabbitMQ's count, which
    /// leaves out the unacked ones) + the records this process's consumer has prefetched but not yet
    /// handed out + the records this process holds for the group; in flight = the records this process
    /// holds. Records other processes hold or have prefetched, and records nacked with a delay that is
    /// still running, are unacked in RabbitMQ and counted in neither. The three counts are read one
    /// after the other, so while records move between them the sum can be off for a moment.
    fn group_state<'a>(
        &'a self,
        group: &'a str,
        topic: &'a str,
    ) -> BoxFuture<'a, Result<Option<GroupState>, EngineError>> {
        Box::pin(async move {
            let queue = amqp_name(topic, Some(group))?;
            let channel = self.admin().await?;
            let options = QueueDeclareOptions {
                passive: true,
                durable: true,
                ..Default::default()
            };
            let queue = match channel.queue_declare(queue, options, FieldTable::default()).await {
                Ok(queue) => queue,
                Err(e) if is_not_found(&e) => return Ok(None),
                Err(e) => {
                    return Err(classify(&e, || {
                        format!("queue group `{group}` on topic `{topic}` does not exist")
                    }));
                }
            };
            let buffered = self.buffered_count(group, topic).await;
            let in_flight = self.held_count(group, topic);
            let depth = u64::from(queue.message_count())
                .saturating_add(buffered)
                .saturating_add(in_flight);
            Ok(Some(GroupState { depth, in_flight }))
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn inner(timer: Arc<Notify>) -> Arc<Inner> {
        Arc::new(Inner {
            uri: "amqp://127.0.0.1:1/%2f".parse().unwrap(),
            link: tokio::sync::Mutex::default(),
            consumers: tokio::sync::Mutex::default(),
            leases: Mutex::default(),
            visibility: Mutex::default(),
            timer,
            publishers: Mutex::default(),
            serials: AtomicU64::new(1),
        })
    }

    /// The lease timer ends with its engine (after being woken for a lease, too).
    #[tokio::test]
    async fn the_lease_timer_ends_with_the_engine() {
        for woken in [false, true] {
            let timer = Arc::new(Notify::new());
            let engine = inner(timer.clone());
            let task = tokio::spawn(expire_leases(Arc::downgrade(&engine), timer));
            tokio::task::yield_now().await;
            if woken {
                let at = Instant::now() + Duration::from_secs(3600);
                lock(&engine.leases).arm(at, &engine.timer);
                tokio::task::yield_now().await;
            }
            assert!(!task.is_finished());
            drop(engine);
            timeout(Duration::from_secs(5), task).await.unwrap().unwrap();
        }
    }
}
