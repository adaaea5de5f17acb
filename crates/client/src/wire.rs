//! The wire transport: ferry's framed binary protocol (`ferry-wire`) over one TCP connection, used
//! instead of HTTP for publishing and for queue receive/ack/nack/extend when
//! [`crate::ClientBuilder::wire`] is set.
//!
//! One connection per [`crate::Client`] (shared by its clones, producers and consumers), opened on
//! first use: TCP with `TCP_NODELAY`, then HELLO (version, token, client name) answered by READY.
//! After that:
//! - Requests are pipelined. Each gets an id; its oneshot waits in the pending map under that id until
//!   the reader task routes the answer with the same id to it (answers may come in any order).
//! - The writer task takes encoded frames from a channel and writes everything queued at that moment
//!   at once: small frames copied into one buffer, large ones passed as they are, in one vectored
//!   write.
//! - When the connection breaks (the server closed it, an I/O error, a frame that does not decode, a
//!   request without an answer past its timeout), every pending request fails with [`Error::Wire`]
//!   (for a publish: stored or not is unknown) and the connection is dropped; the next request opens
//!   a new one. Connects happen one at a time: requests that waited for a connect that failed get its
//!   error instead of each trying again.
//!
//! A request future dropped before its answer leaves the request on the connection (it may still be
//! carried out); its answer is discarded.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::io::IoSlice;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use ferry_wire::{PublishRecord, Request, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, oneshot, watch};

use crate::error::{ApiError, Error, Result};
use crate::record::Produced;

/// How the client names itself in HELLO.
pub(crate) const CLIENT_NAME: &str = concat!("ferry-client ", env!("CARGO_PKG_VERSION"));

/// Frames waiting for the writer; a sender past this waits (backpressure when the socket is slow).
const QUEUED_FRAMES: usize = 256;

/// Frames taken off the queue for one write (tokio writes at most 64 slices per vectored write).
const FRAMES_PER_WRITE: usize = 256;

/// Frames up to this size are copied into one buffer for the write; larger ones are written from
/// where they are.
const SMALL_FRAME: usize = 8 * 1024;

/// Room made in the read buffer before each read.
const READ_CHUNK: usize = 64 * 1024;

/// The wire endpoint of a client: the address, the HELLO settings and the current connection.
pub(crate) struct Wire {
    addr: String,
    token: String,
    connect_timeout: Duration,
    /// Limit of a request without a long-poll; a long-poll gets its wait on top.
    timeout: Duration,
    current: Mutex<Option<Arc<Conn>>>,
    /// Connect attempts finished so far.
    attempts: AtomicU64,
    /// Held while connecting, so that there is one connect at a time; holds the error of the last
    /// attempt if it failed. (A Tokio mutex, made to be held across the connect's awaits.)
    connecting: tokio::sync::Mutex<Option<Error>>,
}

impl fmt::Debug for Wire {
    /// Without the token, as the HTTP side marks its header sensitive.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wire")
            .field("addr", &self.addr)
            .field("token", &if self.token.is_empty() { "" } else { "<redacted>" })
            .field("connect_timeout", &self.connect_timeout)
            .field("timeout", &self.timeout)
            .field("connected", &self.live().is_some())
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A duration in whole milliseconds, saturating at `u32::MAX` (the server refuses such values as out
/// of range, as it would over HTTP).
pub(crate) fn millis(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

/// A count, saturating at `u32::MAX` (the server refuses it as out of range).
pub(crate) fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The name of a response's kind, for error messages.
fn response_name(r: &Response) -> &'static str {
    match r {
        Response::Ready { .. } => "READY",
        Response::Published { .. } => "PUBLISHED",
        Response::Records { .. } => "RECORDS",
        Response::Done => "DONE",
        Response::Error { .. } => "ERROR",
    }
}

impl Wire {
    pub fn new(addr: String, token: String, connect_timeout: Duration, timeout: Duration) -> Self {
        Self {
            addr,
            token,
            connect_timeout,
            timeout,
            current: Mutex::new(None),
            attempts: AtomicU64::new(0),
            connecting: tokio::sync::Mutex::new(None),
        }
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    fn error(&self, detail: impl Into<String>) -> Error {
        Error::Wire {
            addr: self.addr.clone(),
            detail: detail.into(),
        }
    }

    /// [`Error::WireProtocol`] about the answer to a `request`.
    pub fn protocol(&self, request: &'static str, message: impl Into<String>) -> Error {
        Error::WireProtocol {
            addr: self.addr.clone(),
            request,
            message: message.into(),
        }
    }

    /// [`Error::WireProtocol`] for an answer of the wrong kind.
    pub fn unexpected(&self, request: &'static str, response: &Response) -> Error {
        self.protocol(request, format!("a {} frame", response_name(response)))
    }

    /// The current connection if it is still open.
    fn live(&self) -> Option<Arc<Conn>> {
        lock(&self.current)
            .as_ref()
            .filter(|c| !c.shared.is_closed())
            .cloned()
    }

    /// The open connection, opened now if there is none.
    async fn connection(&self) -> Result<Arc<Conn>> {
        if let Some(conn) = self.live() {
            return Ok(conn);
        }
        let seen = self.attempts.load(Ordering::Acquire);
        let mut last_failure = self.connecting.lock().await;
        if let Some(conn) = self.live() {
            return Ok(conn);
        }
        // A connect finished while this request waited for the gate, and failed: it was this request's
        // connect too.
        if self.attempts.load(Ordering::Acquire) != seen
            && let Some(e) = last_failure.as_ref()
        {
            return Err(e.clone());
        }
        let outcome = match tokio::time::timeout(self.connect_timeout, Conn::open(self)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(self.error(format!("connecting timed out after {:?}", self.connect_timeout))),
        };
        self.attempts.fetch_add(1, Ordering::AcqRel);
        match outcome {
            Ok(conn) => {
                let conn = Arc::new(conn);
                *last_failure = None;
                *lock(&self.current) = Some(conn.clone());
                Ok(conn)
            }
            Err(e) => {
                *last_failure = Some(e.clone());
                Err(e)
            }
        }
    }

    /// Sends `request` and returns its answer; an ERROR answer becomes [`Error::Api`]. `wait` is added
    /// to the timeout (a long-poll's `max_wait`).
    ///
    /// # Errors
    /// [`Error::Api`], [`Error::Wire`], [`Error::InvalidArgument`] for a frame over the server's
    /// limit.
    pub async fn request(&self, request: &Request, wait: Duration) -> Result<Response> {
        let limit = self.timeout.saturating_add(wait);
        let mut fresh = false;
        loop {
            let conn = self.connection().await?;
            let response = match conn.call(request, limit).await {
                Ok(response) => response,
                // The connection was found closed before this request went on it: nothing was sent,
                // so it is safe to try once more on a new connection.
                Err(Call::NotSent(e)) if fresh => return Err(e),
                Err(Call::NotSent(_)) => {
                    fresh = true;
                    continue;
                }
                Err(Call::Failed(e)) => return Err(e),
            };
            return match response {
                Response::Error {
                    status,
                    code,
                    message,
                    field,
                } => Err(Error::Api(ApiError {
                    status,
                    code,
                    message,
                    field,
                    retry_after: None,
                })),
                other => Ok(other),
            };
        }
    }

    /// Publishes `records` to `topic` in one PUBLISH: each record's partition and offset, in order.
    ///
    /// # Errors
    /// As [`Wire::request`]; [`Error::WireProtocol`] for an answer that is not PUBLISHED with one
    /// offset per record.
    pub async fn publish(&self, topic: &str, records: Vec<PublishRecord>) -> Result<Vec<Produced>> {
        let n = records.len();
        let request = Request::Publish {
            topic: topic.to_string(),
            records,
        };
        match self.request(&request, Duration::ZERO).await? {
            Response::Published { offsets } if offsets.len() == n => Ok(offsets
                .into_iter()
                .map(|(partition, offset)| Produced { partition, offset })
                .collect()),
            Response::Published { offsets } => {
                Err(self.protocol("PUBLISH", format!("{} offsets for {n} records", offsets.len())))
            }
            other => Err(self.unexpected("PUBLISH", &other)),
        }
    }
}

/// Why a call failed.
enum Call {
    /// Nothing was sent: the connection was closed already.
    NotSent(Error),
    /// Sent, or maybe sent, without an answer; or refused before sending for another reason.
    Failed(Error),
}

/// One open connection: the sending side. The reader and writer tasks hold [`Shared`]; dropping the
/// last handle closes the connection and ends them.
#[derive(Debug)]
struct Conn {
    shared: Arc<Shared>,
    frames: mpsc::Sender<Bytes>,
}

/// What the connection's tasks and its handle share.
#[derive(Debug)]
struct Shared {
    addr: String,
    /// Largest frame the server takes (READY's `max_frame`, at most the codec's).
    max_frame: usize,
    state: Mutex<State>,
    /// Turns true when the connection is closed; ends the reader and writer tasks.
    closed: watch::Sender<bool>,
}

#[derive(Debug, Default)]
struct State {
    pending: HashMap<u32, oneshot::Sender<Result<Response>>>,
    next_id: u32,
    /// Why the connection closed, once it did.
    closed: Option<String>,
    /// The last ERROR answer to no pending request: the server's reason when it closes the
    /// connection after a frame it could not decode.
    unsolicited: Option<String>,
}

impl Conn {
    /// Connects, says HELLO, waits for READY and starts the reader and writer tasks.
    async fn open(wire: &Wire) -> Result<Self> {
        let fail = |detail: String| wire.error(detail);
        let mut stream = TcpStream::connect(wire.addr.as_str())
            .await
            .map_err(|e| fail(format!("cannot connect: {e}")))?;
        stream
            .set_nodelay(true)
            .map_err(|e| fail(format!("cannot set TCP_NODELAY: {e}")))?;
        let hello = Request::Hello {
            version: ferry_wire::VERSION,
            token: wire.token.clone(),
            client: CLIENT_NAME.to_string(),
        };
        let mut out = BytesMut::new();
        ferry_wire::encode_request(0, &hello, &mut out);
        stream
            .write_all(&out)
            .await
            .map_err(|e| fail(format!("sending HELLO failed: {e}")))?;
        let mut buf = BytesMut::with_capacity(READ_CHUNK);
        let frame = loop {
            match ferry_wire::split_frame(&mut buf) {
                Ok(Some(frame)) => break frame,
                Ok(None) => {}
                Err(e) => return Err(fail(format!("the answer to HELLO does not decode: {e}"))),
            }
            buf.reserve(READ_CHUNK);
            match stream.read_buf(&mut buf).await {
                Ok(0) => {
                    return Err(fail(
                        "the server closed the connection before answering HELLO".into(),
                    ));
                }
                Ok(_) => {}
                Err(e) => return Err(fail(format!("reading the answer to HELLO failed: {e}"))),
            }
        };
        let (_, response) = ferry_wire::decode_response(frame)
            .map_err(|e| fail(format!("the answer to HELLO does not decode: {e}")))?;
        let (version, server, max_frame) = match response {
            Response::Ready {
                version,
                server,
                max_frame,
            } => (version, server, max_frame),
            Response::Error {
                status,
                code,
                message,
                field,
            } => {
                return Err(Error::Api(ApiError {
                    status,
                    code,
                    message,
                    field,
                    retry_after: None,
                }));
            }
            other => return Err(wire.unexpected("HELLO", &other)),
        };
        if version == 0 || version > ferry_wire::VERSION {
            return Err(wire.protocol(
                "HELLO",
                format!(
                    "the server chose protocol version {version}; this client speaks 1..={}",
                    ferry_wire::VERSION
                ),
            ));
        }
        tracing::debug!(
            addr = wire.addr,
            server,
            version,
            max_frame,
            "wire connection ready"
        );
        let (read, write) = stream.into_split();
        let (closed, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            addr: wire.addr.clone(),
            max_frame: (max_frame as usize).min(ferry_wire::MAX_FRAME),
            state: Mutex::new(State {
                next_id: 1,
                ..State::default()
            }),
            closed,
        });
        let (frames, queued) = mpsc::channel(QUEUED_FRAMES);
        tokio::spawn(read_loop(shared.clone(), read, buf));
        tokio::spawn(write_loop(shared.clone(), write, queued));
        Ok(Self { shared, frames })
    }

    /// Sends `request` and waits up to `limit` for its answer.
    async fn call(&self, request: &Request, limit: Duration) -> Result<Response, Call> {
        let (tx, rx) = oneshot::channel();
        let id = self.shared.register(tx).map_err(Call::NotSent)?;
        let _registered = Registered {
            shared: &self.shared,
            id,
        };
        let mut frame = BytesMut::new();
        ferry_wire::encode_request(id, request, &mut frame);
        let len = frame.len() - 4;
        if len > self.shared.max_frame {
            return Err(Call::Failed(Error::invalid(
                "records",
                format!(
                    "the request is a frame of {len} bytes, over the server's limit of {} bytes",
                    self.shared.max_frame
                ),
            )));
        }
        let exchange = async {
            if self.frames.send(frame.freeze()).await.is_err() {
                // The writer stopped: the connection is closed (or closing) and says why.
                return Err(self.shared.closed_error());
            }
            rx.await.unwrap_or_else(|_| Err(self.shared.closed_error()))
        };
        match tokio::time::timeout(limit, exchange).await {
            Ok(result) => result.map_err(Call::Failed),
            Err(_) => {
                // The server may be stuck, or the peer gone without a reset: a fresh connection is the
                // way back, as an HTTP client drops a connection whose request timed out.
                let detail = format!("no answer within {limit:?}; the connection was closed");
                self.shared.close(detail.clone());
                Err(Call::Failed(self.shared.error(detail)))
            }
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.shared.close("the client dropped the connection".into());
    }
}

/// Takes a request out of the pending map when its call ends, answered or not (timed out, future
/// dropped), so that the map only holds requests someone waits for.
struct Registered<'a> {
    shared: &'a Shared,
    id: u32,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        lock(&self.shared.state).pending.remove(&self.id);
    }
}

impl Shared {
    fn error(&self, detail: impl Into<String>) -> Error {
        Error::Wire {
            addr: self.addr.clone(),
            detail: detail.into(),
        }
    }

    fn is_closed(&self) -> bool {
        *self.closed.borrow()
    }

    fn closed_error(&self) -> Error {
        let detail = lock(&self.state)
            .closed
            .clone()
            .unwrap_or_else(|| "the connection is closed".into());
        self.error(detail)
    }

    /// Puts `tx` in the pending map under a fresh id, unless the connection is closed.
    fn register(&self, tx: oneshot::Sender<Result<Response>>) -> Result<u32> {
        let mut state = lock(&self.state);
        if let Some(detail) = &state.closed {
            return Err(self.error(detail.clone()));
        }
        // Id 0 is HELLO's; after 2^32 requests ids come round again, past any still pending.
        let mut id = state.next_id;
        while id == 0 || state.pending.contains_key(&id) {
            id = id.wrapping_add(1);
        }
        state.next_id = id.wrapping_add(1);
        state.pending.insert(id, tx);
        Ok(id)
    }

    /// Hands an answer to the request waiting for it.
    fn answer(&self, id: u32, response: Response) {
        let mut state = lock(&self.state);
        if let Some(tx) = state.pending.remove(&id) {
            drop(state);
            let _ = tx.send(Ok(response));
            return;
        }
        if let Response::Error { code, message, .. } = &response {
            state.unsolicited = Some(format!("{code}: {message}"));
        }
        tracing::debug!(
            addr = self.addr,
            id,
            kind = response_name(&response),
            "wire answer to no pending request (timed out or dropped); discarded"
        );
    }

    /// Closes the connection once: fails every pending request with [`Error::Wire`] and stops the
    /// reader and writer.
    fn close(&self, detail: String) {
        let pending = {
            let mut state = lock(&self.state);
            if state.closed.is_some() {
                return;
            }
            let detail = match state.unsolicited.take() {
                Some(reason) => format!("{detail} (the server said {reason})"),
                None => detail,
            };
            state.closed = Some(detail);
            std::mem::take(&mut state.pending)
        };
        self.closed.send_replace(true);
        if !pending.is_empty() {
            let error = self.closed_error();
            tracing::warn!(requests = pending.len(), %error, "wire connection closed with requests pending");
            for tx in pending.into_values() {
                let _ = tx.send(Err(error.clone()));
            }
        }
    }
}

/// Reads answers and routes each to its request until the connection closes.
async fn read_loop(shared: Arc<Shared>, mut read: OwnedReadHalf, mut buf: BytesMut) {
    let mut closed = shared.closed.subscribe();
    let detail = 'conn: loop {
        loop {
            let frame = match ferry_wire::split_frame(&mut buf) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(e) => break 'conn format!("the server sent a frame that does not decode: {e}"),
            };
            match ferry_wire::decode_response(frame) {
                Ok((id, response)) => shared.answer(id, response),
                Err(e) => break 'conn format!("the server sent a frame that does not decode: {e}"),
            }
        }
        buf.reserve(READ_CHUNK);
        tokio::select! {
            _ = closed.wait_for(|c| *c) => return,
            read = read.read_buf(&mut buf) => match read {
                Ok(0) => break "the server closed the connection".to_string(),
                Ok(_) => {}
                Err(e) => break format!("reading from the server failed: {e}"),
            },
        }
    };
    shared.close(detail);
}

/// Writes queued frames, as many at once as are queued, until the connection closes.
async fn write_loop(shared: Arc<Shared>, mut write: OwnedWriteHalf, mut queued: mpsc::Receiver<Bytes>) {
    let mut closed = shared.closed.subscribe();
    let mut batch = Vec::with_capacity(FRAMES_PER_WRITE);
    loop {
        tokio::select! {
            biased;
            _ = closed.wait_for(|c| *c) => return,
            n = queued.recv_many(&mut batch, FRAMES_PER_WRITE) => if n == 0 {
                return;
            },
        }
        let mut frames = Frames::new(batch.drain(..));
        let written = tokio::select! {
            _ = closed.wait_for(|c| *c) => return,
            written = write.write_all_buf(&mut frames) => written,
        };
        if let Err(e) = written {
            shared.close(format!("writing to the server failed: {e}"));
            return;
        }
    }
}

/// Frames to write, as a [`Buf`] of few chunks: runs of small frames copied together, large frames
/// as they are, so that one vectored write takes them all.
struct Frames {
    chunks: VecDeque<Bytes>,
    remaining: usize,
}

impl Frames {
    fn new(frames: impl Iterator<Item = Bytes>) -> Self {
        let mut chunks = VecDeque::new();
        let mut small = BytesMut::new();
        let mut remaining = 0;
        for frame in frames {
            remaining += frame.len();
            if frame.len() <= SMALL_FRAME {
                small.extend_from_slice(&frame);
            } else {
                if !small.is_empty() {
                    chunks.push_back(small.split().freeze());
                }
                chunks.push_back(frame);
            }
        }
        if !small.is_empty() {
            chunks.push_back(small.freeze());
        }
        Self { chunks, remaining }
    }
}

impl Buf for Frames {
    fn remaining(&self) -> usize {
        self.remaining
    }

    fn chunk(&self) -> &[u8] {
        self.chunks.front().map_or(&[], |c| &c[..])
    }

    fn advance(&mut self, mut cnt: usize) {
        self.remaining = self.remaining.saturating_sub(cnt);
        while let Some(front) = self.chunks.front_mut() {
            if cnt < front.len() {
                front.advance(cnt);
                return;
            }
            cnt -= front.len();
            self.chunks.pop_front();
        }
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        for (slot, chunk) in dst.iter_mut().zip(&self.chunks) {
            *slot = IoSlice::new(chunk);
            n += 1;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_the_token() {
        let wire = Wire::new(
            "h:1".into(),
            "secret".into(),
            Duration::from_secs(1),
            Duration::from_secs(1),
        );
        let text = format!("{wire:?}");
        assert!(!text.contains("secret") && text.contains("<redacted>"), "{text}");
    }

    #[test]
    fn frames_coalesce_small_ones_and_keep_order() {
        let small = |b: u8| Bytes::from(vec![b; 10]);
        let big = Bytes::from(vec![9u8; SMALL_FRAME + 1]);
        let mut frames = Frames::new([small(1), small(2), big.clone(), small(3)].into_iter());
        assert_eq!(frames.chunks.len(), 3);
        assert_eq!(frames.remaining(), 30 + big.len());
        let mut slices = [IoSlice::new(&[]); 8];
        assert_eq!(frames.chunks_vectored(&mut slices), 3);
        let mut out = Vec::new();
        while frames.has_remaining() {
            let step = frames.chunk().len().min(7);
            out.extend_from_slice(&frames.chunk()[..step]);
            frames.advance(step);
        }
        let mut expected = [vec![1u8; 10], vec![2u8; 10]].concat();
        expected.extend_from_slice(&big);
        expected.extend_from_slice(&[3u8; 10]);
        assert_eq!(out, expected);
        assert!(frames.chunks.is_empty());
    }
}
