//! The batching producer (Kafka's model over HTTP or the wire protocol).
//!
//! [`Producer::send`] encodes the record, puts it in its topic's open batch and returns a
//! [`DeliveryFuture`] at once; nothing waits for the network there. A batch is sealed when it reaches
//! `max_batch_records` or `max_batch_bytes`, or `linger` after its first record, and then sent as one
//! `POST /v1/topics/{topic}/records` with a JSON array, or, when the client has a wire address
//! ([`crate::ClientBuilder::wire`]), as one PUBLISH frame on the client's wire connection (records are
//! then never JSON-encoded; batches in flight are pipelined on that one connection). Up to
//! `max_in_flight` batches (over all topics) are in flight at once. A batch whose linger is over waits
//! for a free slot *open*, taking more records until it is full (Kafka's model), so `linger` 0 sends the
//! first records at once and still sends large batches under load; full batches wait their turn in the
//! order they filled.
//!
//! The contract:
//! - A delivery resolves to the record's partition and offset only after the server answered, i.e. once
//!   the record is durable under its topic's fsync policy.
//! - A batch that fails fails every send in it with the same error. A refused request stores nothing
//!   (bad input, a record too large); a request that fails in storage (a 5xx) or whose answer was lost
//!   may be partly or wholly stored. Nothing is retried: a batch whose answer was lost may or may not be stored, and
//!   resending it could store it twice. So one record the server refuses (too large for the topic)
//!   fails the records batched with it; records are checked on the client first where it can.
//! - Records of one topic keep their order within a batch. With `max_in_flight > 1` two batches of a
//!   topic may be stored out of order (one may fail and the next succeed); set `max_in_flight` to 1 for
//!   strict order per topic.
//! - [`Producer::flush`] sends what is buffered without waiting for the linger and returns once every
//!   record sent before it has its answer. [`Producer::close`] does the same and refuses later sends.
//!   Dropping the last handle closes the producer: buffered records are still sent and their deliveries
//!   still resolve, as long as the Tokio runtime runs. If the runtime stops first, pending deliveries
//!   resolve to [`Error::Abandoned`].
//! - Memory is bounded by `max_buffered_bytes` of encoded records (JSON text over HTTP, frame bytes
//!   over the wire) not yet answered: past it,
//!   [`Producer::send`] fails at once with [`Error::BufferFull`] and [`Producer::enqueue`] waits for room.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, TryAcquireError, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::http::Http;
use crate::publish_body;
use crate::record::{self, ProduceRecord, Produced};
use crate::wire::Wire;

/// Largest request body the server accepts.
const SERVER_BODY_LIMIT: usize = 16 * 1024 * 1024;

/// Settings of a [`Producer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerConfig {
    linger: Duration,
    max_batch_records: usize,
    max_batch_bytes: usize,
    max_in_flight: usize,
    max_buffered_bytes: usize,
}

impl Default for ProducerConfig {
    /// linger 5 ms, 1000 records or 1 MiB per batch, 5 requests in flight, 64 MiB buffered.
    fn default() -> Self {
        Self {
            linger: Duration::from_millis(5),
            max_batch_records: 1000,
            max_batch_bytes: 1024 * 1024,
            max_in_flight: 5,
            max_buffered_bytes: 64 * 1024 * 1024,
        }
    }
}

impl ProducerConfig {
    /// How long a batch waits for more records after its first (0: as soon as a request slot is free).
    #[must_use]
    pub fn linger(mut self, linger: Duration) -> Self {
        self.linger = linger;
        self
    }

    /// Most records in one request (at least 1).
    #[must_use]
    pub fn max_batch_records(mut self, n: usize) -> Self {
        self.max_batch_records = n.max(1);
        self
    }

    /// Most bytes of encoded records in one request, 1..=16 MiB (the server's body limit). A record
    /// larger than this goes in a batch of its own.
    #[must_use]
    pub fn max_batch_bytes(mut self, n: usize) -> Self {
        self.max_batch_bytes = n.clamp(1, SERVER_BODY_LIMIT);
        self
    }

    /// Most requests in flight at once (at least 1; 1 keeps batches of a topic in order).
    #[must_use]
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n.max(1);
        self
    }

    /// Most bytes of encoded records sent and not yet answered (at least 1).
    #[must_use]
    pub fn max_buffered_bytes(mut self, n: usize) -> Self {
        self.max_buffered_bytes = n.clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize));
        self
    }
}

/// A record encoded for the producer's transport.
#[derive(Debug)]
enum Encoded {
    /// One JSON object of a publish body.
    Json(Vec<u8>),
    /// One record of a PUBLISH frame, and the bytes it takes there.
    Wire(ferry_wire::PublishRecord, usize),
}

impl Encoded {
    /// Bytes of the record in the request; counted against the batch and buffer limits.
    fn len(&self) -> usize {
        match self {
            Self::Json(json) => json.len(),
            Self::Wire(_, len) => *len,
        }
    }
}

/// A record waiting for its answer.
#[derive(Debug)]
struct Pending {
    encoded: Encoded,
    tx: oneshot::Sender<Result<Produced>>,
}

#[derive(Debug)]
struct Batch {
    /// Increasing in creation order; [`Producer::flush`] waits for the ids below its barrier.
    id: u64,
    records: Vec<Pending>,
    /// Body size: the records, their commas and the brackets.
    bytes: usize,
    deadline: Instant,
    /// Room in the buffer taken by the records, given back when the answer came.
    permit: Option<OwnedSemaphorePermit>,
}

impl Batch {
    fn add(&mut self, record: Pending, permit: OwnedSemaphorePermit) {
        self.bytes += record.encoded.len() + 1;
        self.records.push(record);
        match &mut self.permit {
            Some(p) => p.merge(permit),
            None => self.permit = Some(permit),
        }
    }

    fn full(&self, config: &ProducerConfig) -> bool {
        self.records.len() >= config.max_batch_records || self.bytes >= config.max_batch_bytes
    }

    fn fits(&self, len: usize, config: &ProducerConfig) -> bool {
        self.records.len() < config.max_batch_records && self.bytes + len <= config.max_batch_bytes
    }
}

#[derive(Debug, Default)]
struct State {
    /// The batch filling up, per topic.
    open: HashMap<String, Batch>,
    /// Sealed batches in the order they are to be sent.
    ready: VecDeque<(String, Batch)>,
    /// Ids of batches created and not yet answered.
    incomplete: BTreeSet<u64>,
    next_id: u64,
    closed: bool,
}

impl State {
    /// Adds a record to its topic's batch; true if the dispatcher must look (a batch was sealed or a
    /// new deadline started).
    fn push(
        &mut self,
        topic: &str,
        record: Pending,
        permit: OwnedSemaphorePermit,
        config: &ProducerConfig,
    ) -> bool {
        let len = record.encoded.len() + 1;
        let mut wake = false;
        if self.open.get(topic).is_some_and(|b| !b.fits(len, config))
            && let Some(full) = self.open.remove(topic)
        {
            self.ready.push_back((topic.to_string(), full));
            wake = true;
        }
        if let Some(batch) = self.open.get_mut(topic) {
            batch.add(record, permit);
            if batch.full(config)
                && let Some(full) = self.open.remove(topic)
            {
                self.ready.push_back((topic.to_string(), full));
                wake = true;
            }
            return wake;
        }
        let id = self.next_id;
        self.next_id += 1;
        self.incomplete.insert(id);
        let mut batch = Batch {
            id,
            records: Vec::new(),
            bytes: 1,
            deadline: Instant::now() + config.linger,
            permit: None,
        };
        batch.add(record, permit);
        if batch.full(config) {
            self.ready.push_back((topic.to_string(), batch));
        } else {
            self.open.insert(topic.to_string(), batch);
        }
        true
    }

    /// The batch to send next: the oldest full one, else the oldest open one that is due (every open
    /// one is, once closed).
    fn take_next(&mut self, now: Instant) -> Option<(String, Batch)> {
        if let Some(full) = self.ready.pop_front() {
            return Some(full);
        }
        let closed = self.closed;
        let topic = self
            .open
            .iter()
            .filter(|(_, b)| closed || b.deadline <= now)
            .min_by_key(|(_, b)| b.id)
            .map(|(t, _)| t.clone())?;
        self.open.remove(&topic).map(|b| (topic, b))
    }

    fn seal_all(&mut self) {
        let mut open: Vec<(String, Batch)> = self.open.drain().collect();
        open.sort_by_key(|(_, b)| b.id);
        self.ready.extend(open);
    }
}

#[derive(Debug)]
struct Shared {
    http: Arc<Http>,
    /// Batches go here instead of HTTP when set.
    wire: Option<Arc<Wire>>,
    config: ProducerConfig,
    state: Mutex<State>,
    /// Wakes the dispatcher (a permit is kept if it is busy, so no wake-up is lost).
    wake: Notify,
    /// Signalled whenever a batch got its answer.
    done: Notify,
    buffer: Arc<Semaphore>,
    in_flight: Arc<Semaphore>,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    fn close(&self) {
        lock(&self.state).closed = true;
        self.wake.notify_one();
    }

    /// Waits until no batch with an id below `barrier` is unanswered.
    async fn wait_below(&self, barrier: u64) {
        loop {
            let notified = self.done.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if lock(&self.state)
                .incomplete
                .first()
                .is_none_or(|id| *id >= barrier)
            {
                return;
            }
            notified.await;
        }
    }

    fn buffer_cost(&self, len: usize) -> u32 {
        // A record larger than the whole buffer still goes, alone: it takes all of it.
        len.clamp(1, self.config.max_buffered_bytes) as u32
    }

    /// The record encoded for this producer's transport.
    fn encode(&self, record: ProduceRecord) -> Result<Encoded> {
        if self.wire.is_some() {
            let record = record.into_wire()?;
            let len = record::wire_len(&record);
            Ok(Encoded::Wire(record, len))
        } else {
            record.encode().map(Encoded::Json)
        }
    }

    fn push(&self, topic: &str, encoded: Encoded, permit: OwnedSemaphorePermit) -> DeliveryFuture {
        let (tx, rx) = oneshot::channel();
        let mut state = lock(&self.state);
        if state.closed {
            return DeliveryFuture::failed(Error::Closed);
        }
        let wake = state.push(topic, Pending { encoded, tx }, permit, &self.config);
        drop(state);
        if wake {
            self.wake.notify_one();
        }
        DeliveryFuture {
            state: DeliveryState::Waiting(rx),
        }
    }
}

#[derive(Debug)]
struct Handle {
    shared: Arc<Shared>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        // The dispatcher sends what is left and stops; it does not keep the handle alive.
        self.shared.close();
    }
}

/// A batching producer. Cheap to clone; clones share batches, and the producer closes when the last
/// clone is dropped or [`Producer::close`] is called on any. See the module docs for the contract.
#[derive(Debug, Clone)]
pub struct Producer {
    handle: Arc<Handle>,
}

impl Producer {
    pub(crate) fn new(http: Arc<Http>, wire: Option<Arc<Wire>>, config: ProducerConfig) -> Self {
        let shared = Arc::new(Shared {
            http,
            wire,
            buffer: Arc::new(Semaphore::new(config.max_buffered_bytes)),
            in_flight: Arc::new(Semaphore::new(config.max_in_flight)),
            config,
            state: Mutex::new(State::default()),
            wake: Notify::new(),
            done: Notify::new(),
        });
        let task = tokio::spawn(dispatch(shared.clone()));
        Self {
            handle: Arc::new(Handle {
                shared,
                task: Mutex::new(Some(task)),
            }),
        }
    }

    /// Queues `record` for `topic` and returns at once; the future resolves to where the record was
    /// stored once the server acknowledged it. Dropping the future does not cancel the send.
    ///
    /// The future resolves to an error:
    /// - at once, without sending: [`Error::InvalidArgument`] (a header name given twice),
    ///   [`Error::BufferFull`], [`Error::Closed`];
    /// - with its batch: [`Error::Api`] (`topic_not_found`, `record_too_large`, ...),
    ///   [`Error::Transport`] or [`Error::Wire`] (stored or not: unknown), [`Error::Abandoned`].
    pub fn send(&self, topic: &str, record: ProduceRecord) -> DeliveryFuture {
        let shared = &self.handle.shared;
        let encoded = match shared.encode(record) {
            Ok(e) => e,
            Err(e) => return DeliveryFuture::failed(e),
        };
        let cost = shared.buffer_cost(encoded.len());
        match shared.buffer.clone().try_acquire_many_owned(cost) {
            Ok(permit) => shared.push(topic, encoded, permit),
            Err(TryAcquireError::NoPermits) => DeliveryFuture::failed(Error::BufferFull {
                limit: shared.config.max_buffered_bytes,
            }),
            Err(TryAcquireError::Closed) => DeliveryFuture::failed(Error::Closed),
        }
    }

    /// As [`Producer::send`], but waits for room in the buffer instead of failing with
    /// [`Error::BufferFull`]: backpressure for a sender faster than the server.
    pub async fn enqueue(&self, topic: &str, record: ProduceRecord) -> DeliveryFuture {
        let shared = &self.handle.shared;
        let encoded = match shared.encode(record) {
            Ok(e) => e,
            Err(e) => return DeliveryFuture::failed(e),
        };
        let cost = shared.buffer_cost(encoded.len());
        match shared.buffer.clone().acquire_many_owned(cost).await {
            Ok(permit) => shared.push(topic, encoded, permit),
            Err(_) => DeliveryFuture::failed(Error::Closed),
        }
    }

    /// Sends every buffered record now (no linger) and waits until each record sent before this call
    /// has its answer. Outcomes are reported by each send's [`DeliveryFuture`], not here.
    pub async fn flush(&self) {
        let shared = &self.handle.shared;
        let barrier = {
            let mut state = lock(&shared.state);
            state.seal_all();
            state.next_id
        };
        shared.wake.notify_one();
        shared.wait_below(barrier).await;
    }

    /// Refuses further sends (for every clone), sends what is buffered and waits for every answer.
    pub async fn close(self) {
        let shared = &self.handle.shared;
        shared.close();
        shared.wait_below(u64::MAX).await;
        let task = self
            .handle
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(task) = task {
            // The dispatcher stops once closed and drained; a panic there already failed its sends.
            let _ = task.await;
        }
    }
}

/// The dispatcher: hands batches to request tasks, at most `max_in_flight` at a time. A batch is sent
/// once it is full or its linger is over *and* a request slot is free: while every slot is busy, the
/// open batch keeps filling (Kafka's model), so a linger of 0 still sends large batches under load.
async fn dispatch(shared: Arc<Shared>) {
    loop {
        let (sendable, deadline, finished) = {
            let state = lock(&shared.state);
            let now = Instant::now();
            let sendable = !state.ready.is_empty()
                || (state.closed && !state.open.is_empty())
                || state.open.values().any(|b| b.deadline <= now);
            let deadline = state.open.values().map(|b| b.deadline).min();
            let finished = state.closed && state.open.is_empty() && state.ready.is_empty();
            (sendable, deadline, finished)
        };
        if sendable {
            let Ok(permit) = shared.in_flight.clone().acquire_owned().await else {
                return;
            };
            // Taken only now, with the slot in hand: a due batch took what came in while it waited.
            let next = lock(&shared.state).take_next(Instant::now());
            if let Some((topic, batch)) = next {
                tokio::spawn(send_batch(shared.clone(), topic, batch, permit));
            }
            continue;
        }
        if finished {
            return;
        }
        match deadline {
            Some(at) => {
                tokio::select! {
                    () = shared.wake.notified() => {}
                    () = tokio::time::sleep_until(at) => {}
                }
            }
            None => shared.wake.notified().await,
        }
    }
}

async fn send_batch(shared: Arc<Shared>, topic: String, batch: Batch, _in_flight: OwnedSemaphorePermit) {
    let Batch {
        id,
        records,
        bytes,
        permit,
        ..
    } = batch;
    let (senders, encoded): (Vec<_>, Vec<_>) = records.into_iter().map(|p| (p.tx, p.encoded)).unzip();
    let n = senders.len();
    // `Shared::encode` encodes every record for the producer's one transport, so the other kind never
    // shows up below.
    let outcome = match &shared.wire {
        Some(wire) => {
            let records = encoded
                .into_iter()
                .filter_map(|e| match e {
                    Encoded::Wire(record, _) => Some(record),
                    Encoded::Json(_) => None,
                })
                .collect();
            wire.publish(&topic, records).await
        }
        None => {
            let mut body = Vec::with_capacity(bytes + 1);
            body.push(b'[');
            for (i, e) in encoded.iter().enumerate() {
                if let Encoded::Json(json) = e {
                    if i > 0 {
                        body.push(b',');
                    }
                    body.extend_from_slice(json);
                }
            }
            body.push(b']');
            publish_body(&shared.http, &topic, body.into(), n).await
        }
    };
    match outcome {
        Ok(offsets) => {
            for (tx, at) in senders.into_iter().zip(offsets) {
                let _ = tx.send(Ok(at));
            }
        }
        Err(error) => {
            tracing::warn!(topic, records = n, %error, "publish batch failed; failing each of its sends");
            for tx in senders {
                let _ = tx.send(Err(error.clone()));
            }
        }
    }
    drop(permit);
    lock(&shared.state).incomplete.remove(&id);
    shared.done.notify_waiters();
}

/// The outcome of one [`Producer::send`]: where the record was stored once the server acknowledged it.
#[derive(Debug)]
#[must_use = "a send's outcome is only known through its future (dropping it does not cancel the send)"]
pub struct DeliveryFuture {
    state: DeliveryState,
}

#[derive(Debug)]
enum DeliveryState {
    Waiting(oneshot::Receiver<Result<Produced>>),
    Failed(Option<Error>),
}

impl DeliveryFuture {
    fn failed(error: Error) -> Self {
        Self {
            state: DeliveryState::Failed(Some(error)),
        }
    }
}

impl Future for DeliveryFuture {
    type Output = Result<Produced>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.get_mut().state {
            DeliveryState::Waiting(rx) => Pin::new(rx).poll(cx).map(|r| r.unwrap_or(Err(Error::Abandoned))),
            DeliveryState::Failed(error) => Poll::Ready(Err(error.take().unwrap_or(Error::Abandoned))),
        }
    }
}
