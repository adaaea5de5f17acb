//! The wire protocol (`docs/protocol.md`, codec in `ferry-wire`) over TCP: publish and queue groups for
//! clients that want less than HTTP and JSON per request.
//!
//! Each connection starts with HELLO (version and token, checked as the HTTP API checks bearer tokens)
//! and then carries pipelined requests. Requests run concurrently and are answered as they finish, each
//! answer with its request's id; up to [`MAX_IN_FLIGHT`] per connection, after which the connection is
//! not read until one finishes (backpressure through TCP). PUBLISHes of one connection are appended in
//! the order they arrived: on the embedded broker each is queued for the partition writers as it is
//! read, and only the wait for durability runs concurrently; on another engine they run one at a time.
//! Each request does what the HTTP route of the same name does, through the same functions, so limits,
//! errors (status, code, field) and metrics agree.
//!
//! A frame that does not decode gets an ERROR `bad_frame` and the connection is closed once the
//! requests in flight are answered. On shutdown a connection stops reading, answers what is in flight
//! (long-polls end early, as on HTTP) and closes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use ferry_broker::{Header, Leased, Produce, ReceiveOptions};
use ferry_wire::{self as wire, DecodeError, Request, Response};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::on_engine::Settle;
use crate::api::queues::{self, MAX_RECEIVE, MAX_VISIBILITY_MS, in_range};
use crate::api::records::{self, MAX_WAIT_MS};
use crate::auth::{Access, Tokens};
use crate::error::ApiError;
use crate::state::AppState;

/// Requests of one connection handled at once.
pub(crate) const MAX_IN_FLIGHT: usize = 256;

/// How long a new connection has to send its HELLO.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts connections until shutdown, then waits for every connection to finish.
pub(crate) async fn serve(listener: TcpListener, state: AppState, tokens: Arc<Tokens>) {
    let connections = TaskTracker::new();
    loop {
        tokio::select! {
            () = state.shutdown().cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    connections.spawn(connection(stream, peer, state.clone(), tokens.clone()));
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning on the error.
                    tracing::warn!(error = %e, "wire protocol: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}

/// Sends answers to the connection's writer task.
#[derive(Clone)]
struct Answers(mpsc::UnboundedSender<Bytes>);

impl Answers {
    fn send(&self, id: u32, response: &Response) {
        let mut out = BytesMut::new();
        wire::encode_response(id, response, &mut out);
        // The writer is gone only when the client is: nobody is left to answer.
        let _ = self.0.send(out.freeze());
    }

    fn error(&self, id: u32, error: &ApiError) {
        let (status, code, field) = error.parts();
        let message = error.to_string();
        if status.is_server_error() {
            tracing::error!(status = status.as_u16(), error = code, %message, "wire request failed");
        } else {
            tracing::debug!(status = status.as_u16(), error = code, field, %message, "wire request refused");
        }
        self.send(
            id,
            &Response::Error {
                status: status.as_u16(),
                code: code.to_owned(),
                message,
                field,
            },
        );
    }

    /// An error of the protocol itself (400): a bad frame, no HELLO, an unknown version.
    fn protocol(&self, id: u32, code: &str, message: String) {
        tracing::debug!(error = code, %message, "wire protocol error");
        self.send(
            id,
            &Response::Error {
                status: 400,
                code: code.to_owned(),
                message,
                field: None,
            },
        );
    }
}

async fn connection(stream: TcpStream, peer: SocketAddr, state: AppState, tokens: Arc<Tokens>) {
    // Answers are small and latency matters more than packets: the writer coalesces them itself.
    let _ = stream.set_nodelay(true);
    let (mut rd, wr) = stream.into_split();
    let (tx, rx) = mpsc::unbounded_channel();
    let answers = Answers(tx);
    let writer = tokio::spawn(write_frames(wr, rx));
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let access = tokio::select! {
        () = state.shutdown().cancelled() => None,
        hello = tokio::time::timeout(HELLO_TIMEOUT, hello(&mut rd, &mut buf, &answers, &tokens)) => {
            hello.ok().flatten()
        }
    };
    if let Some(access) = access {
        tracing::debug!(%peer, "wire connection open");
        requests(&mut rd, &mut buf, &answers, &state, access).await;
        tracing::debug!(%peer, "wire connection closed");
    }
    drop(answers);
    let _ = writer.await;
}

/// The handshake: `Some(access)` once READY is sent.
async fn hello(
    rd: &mut OwnedReadHalf,
    buf: &mut BytesMut,
    answers: &Answers,
    tokens: &Tokens,
) -> Option<Option<Access>> {
    let frame = match read_frame(rd, buf).await {
        Ok(Some(frame)) => frame,
        Ok(None) => return None,
        Err(e) => {
            answers.protocol(0, "bad_frame", e.to_string());
            return None;
        }
    };
    let id = frame_id(&frame);
    let request = match wire::decode_request(frame) {
        Ok((_, request)) => request,
        Err(e) => {
            answers.protocol(id, "bad_frame", e.to_string());
            return None;
        }
    };
    let Request::Hello { version, token, .. } = request else {
        answers.protocol(
            id,
            "hello_expected",
            "the first frame of a connection must be HELLO".into(),
        );
        return None;
    };
    if version == 0 {
        answers.protocol(
            id,
            "unsupported_version",
            format!(
                "version 0 does not exist; this server speaks 1..={}",
                wire::VERSION
            ),
        );
        return None;
    }
    match tokens.access_token(token.as_bytes()) {
        Ok(access) => {
            answers.send(
                id,
                &Response::Ready {
                    version: version.min(wire::VERSION),
                    server: format!("ferry {}", env!("CARGO_PKG_VERSION")),
                    max_frame: wire::MAX_FRAME as u32,
                },
            );
            Some(access)
        }
        Err(e) => {
            answers.error(id, &e);
            None
        }
    }
}

/// Reads and dispatches requests until the client closes, a frame is bad, or the server shuts down;
/// returns once every request it started is answered.
async fn requests(
    rd: &mut OwnedReadHalf,
    buf: &mut BytesMut,
    answers: &Answers,
    state: &AppState,
    access: Option<Access>,
) {
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    // Cancelled once the connection is done with (closed, broken, or the server stopping): its
    // waiting RECEIVEs then stop waiting and lease nothing more.
    let gone = CancellationToken::new();
    // On an engine, the PUBLISHes of this connection run one at a time, in order.
    let publish_order = Arc::new(tokio::sync::Mutex::new(()));
    loop {
        let frame = tokio::select! {
            () = state.shutdown().cancelled() => break,
            frame = read_frame(rd, buf) => frame,
        };
        let frame = match frame {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(e) => {
                answers.protocol(0, "bad_frame", e.to_string());
                break;
            }
        };
        let id = frame_id(&frame);
        let request = match wire::decode_request(frame) {
            Ok((_, request)) => request,
            Err(e) => {
                answers.protocol(id, "bad_frame", e.to_string());
                break;
            }
        };
        if access == Some(Access::ReadOnly) {
            answers.error(
                id,
                &ApiError::ReadOnlyToken {
                    method: axum::http::Method::POST,
                },
            );
            continue;
        }
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            break;
        };
        let (state, answers) = (state.clone(), answers.clone());
        match request {
            Request::Hello { .. } => {
                answers.protocol(id, "unexpected_hello", "HELLO comes once, first".into());
            }
            Request::Publish { topic, records } => {
                let records: Vec<Produce> = records.into_iter().map(produce).collect();
                if state.engine().is_none() {
                    publish_in_order(id, &state, &answers, topic, records, permit);
                } else {
                    let turn = publish_order.clone().lock_owned().await;
                    tokio::spawn(async move {
                        match records::publish_records(&state, topic, records).await {
                            Ok(offsets) => answers.send(id, &published(&offsets)),
                            Err(e) => answers.error(id, &e),
                        }
                        drop((turn, permit));
                    });
                }
            }
            Request::Receive {
                group,
                topic,
                max_records,
                max_wait_ms,
                visibility_ms,
            } => {
                let gone = gone.clone();
                tokio::spawn(async move {
                    let leased = receive(
                        &state,
                        group,
                        topic,
                        max_records,
                        max_wait_ms,
                        visibility_ms,
                        &gone,
                    );
                    match leased.await {
                        Ok(leased) => answers.send(
                            id,
                            &Response::Records {
                                records: leased.into_iter().map(delivery).collect(),
                            },
                        ),
                        Err(e) => answers.error(id, &e),
                    }
                    drop(permit);
                });
            }
            Request::Ack {
                group,
                topic,
                records,
            } => settle(id, state, answers, group, topic, records, Ok(Settle::Ack), permit),
            Request::Nack {
                group,
                topic,
                records,
                delay_ms,
            } => {
                let how = in_range("delay_ms", u64::from(delay_ms), 0..=MAX_VISIBILITY_MS)
                    .map(|ms| Settle::Nack(Duration::from_millis(ms)));
                settle(id, state, answers, group, topic, records, how, permit);
            }
            Request::Extend {
                group,
                topic,
                records,
                visibility_ms,
            } => {
                let how = in_range(
                    "visibility_timeout_ms",
                    u64::from(visibility_ms),
                    1..=MAX_VISIBILITY_MS,
                )
                .map(|ms| Settle::Extend(Duration::from_millis(ms)));
                settle(id, state, answers, group, topic, records, how, permit);
            }
        }
    }
    gone.cancel();
    // Every request in flight holds a permit: all of them back means all are answered.
    let _ = in_flight.acquire_many(MAX_IN_FLIGHT as u32).await;
}

/// The id of a frame that may not decode, so that its `bad_frame` answer can name it; 0 if it is too
/// short to have one.
fn frame_id(frame: &[u8]) -> u32 {
    frame
        .get(1..5)
        .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// On the embedded broker: queues the records for their partitions now (so that pipelined publishes
/// keep their order) and answers once they are durable.
fn publish_in_order(
    id: u32,
    state: &AppState,
    answers: &Answers,
    topic: String,
    records: Vec<Produce>,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    let shapes: Vec<(Option<u32>, usize)> = records
        .iter()
        .map(|r| (r.partition, crate::records::record_size(r)))
        .collect();
    let (count, bytes) = (shapes.len(), shapes.iter().map(|(_, size)| size).sum());
    match state.broker().publish_enqueue(&topic, records) {
        Err(error) => {
            answers.error(id, &records::locate(error, &shapes));
            drop(permit);
        }
        Ok(durable) => {
            let (answers, metrics) = (answers.clone(), state.metrics().clone());
            // Tracked: shutdown closes the broker only once this answer is known.
            state.tasks().spawn(async move {
                match durable.await {
                    Ok(offsets) => {
                        metrics.records_in(&topic, count, bytes);
                        answers.send(id, &published(&offsets));
                    }
                    Err(error) => answers.error(id, &records::locate(error, &shapes)),
                }
                drop(permit);
            });
        }
    }
}

async fn receive(
    state: &AppState,
    group: String,
    topic: String,
    max_records: u32,
    max_wait_ms: u32,
    visibility_ms: u32,
    gone: &CancellationToken,
) -> Result<Vec<Leased>, ApiError> {
    let max_records = in_range("max_records", u64::from(max_records), 1..=MAX_RECEIVE)?;
    let max_wait_ms = in_range("max_wait_ms", u64::from(max_wait_ms), 0..=MAX_WAIT_MS)?;
    let visibility = match visibility_ms {
        0 => None,
        ms => Some(Duration::from_millis(in_range(
            "visibility_timeout_ms",
            u64::from(ms),
            1..=MAX_VISIBILITY_MS,
        )?)),
    };
    if state.engine().is_none() {
        // On the embedded broker the receive runs right in this task: it belongs to the connection and
        // is never dropped mid-way (which `receive_records` guards against with a detached task and
        // slices), and `gone` ends its wait when the connection ends or the server stops. One task
        // hop less between a record's arrival and its answer.
        let options = ReceiveOptions {
            max_records: max_records as usize,
            max_wait: Duration::from_millis(max_wait_ms),
            visibility_timeout: visibility,
        };
        let leased = state
            .broker()
            .receive_until(&group, &topic, options, gone.clone().cancelled_owned())
            .await?;
        state
            .metrics()
            .records_out(&topic, leased.iter().map(|l| &l.record));
        return Ok(leased);
    }
    queues::receive_records(
        state,
        group,
        topic,
        // In range, so the cast cannot truncate.
        max_records as usize,
        Duration::from_millis(max_wait_ms),
        visibility,
        gone,
    )
    .await
}

#[allow(clippy::too_many_arguments, reason = "one request's parts")]
fn settle(
    id: u32,
    state: AppState,
    answers: Answers,
    group: String,
    topic: String,
    records: Vec<(u32, u64)>,
    how: Result<Settle, ApiError>,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    tokio::spawn(async move {
        let done = match how {
            Ok(how) => queues::settle(&state, group, topic, records, how).await,
            Err(e) => Err(e),
        };
        match done {
            Ok(()) => answers.send(id, &Response::Done),
            Err(e) => answers.error(id, &e),
        }
        drop(permit);
    });
}

fn produce(r: wire::PublishRecord) -> Produce {
    Produce {
        key: r.key,
        headers: r
            .headers
            .into_iter()
            .map(|h| Header {
                key: h.key,
                value: h.value,
            })
            .collect(),
        value: r.value,
        timestamp: r.timestamp,
        partition: r.partition,
    }
}

fn published(offsets: &[ferry_broker::Produced]) -> Response {
    Response::Published {
        offsets: offsets.iter().map(|p| (p.partition, p.offset)).collect(),
    }
}

fn delivery(l: Leased) -> wire::Delivery {
    let r = l.record;
    wire::Delivery {
        partition: r.partition,
        offset: r.offset,
        timestamp: r.timestamp,
        deliveries: l.deliveries,
        lease_expires_ms: l.lease_expires_ms,
        key: r.key,
        headers: r
            .headers
            .into_iter()
            .map(|h| wire::Header {
                key: h.key,
                value: h.value,
            })
            .collect(),
        value: r.value,
    }
}

/// A frame could not be read.
#[derive(Debug, thiserror::Error)]
enum ReadError {
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("connection closed inside a frame")]
    Truncated,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// The next whole frame (after its length prefix), `None` at a clean end of the stream. Cancel-safe:
/// what was read stays in `buf`.
async fn read_frame(rd: &mut OwnedReadHalf, buf: &mut BytesMut) -> Result<Option<Bytes>, ReadError> {
    loop {
        if let Some(frame) = wire::split_frame(buf)? {
            return Ok(Some(frame));
        }
        if buf.capacity() - buf.len() < 16 * 1024 {
            buf.reserve(64 * 1024);
        }
        if rd.read_buf(buf).await? == 0 {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(ReadError::Truncated)
            };
        }
    }
}

/// Writes answers as they come, many per write when they come together; ends when every sender is
/// gone (then closes the write side) or the client stops reading.
async fn write_frames(mut wr: OwnedWriteHalf, mut rx: mpsc::UnboundedReceiver<Bytes>) {
    let mut out = BytesMut::with_capacity(64 * 1024);
    while let Some(frame) = rx.recv().await {
        out.extend_from_slice(&frame);
        while out.len() < 1024 * 1024
            && let Ok(more) = rx.try_recv()
        {
            out.extend_from_slice(&more);
        }
        if wr.write_all(&out).await.is_err() {
            return;
        }
        out.clear();
    }
    let _ = wr.shutdown().await;
}
