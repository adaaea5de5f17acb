//! Writing frames to a TCP connection from many tasks (feature `io`; used by the client and the
//! server).
//!
//! A [`FrameWriter`] writes a frame straight from the task that has it when nothing else is being
//! written: a request or an answer goes out without waking another task, one task hop less on every
//! exchange (end-to-end latency on a busy machine is mostly such hops). When the socket cannot take it
//! all at once (its send buffer is full), a write is already under way, or the frame is over 256 KiB
//! (the rest of it, so that a sender holds the writer's lock only briefly), the frame is queued and the
//! flusher task ([`FrameWriter::flush`], spawned by the owner) writes everything queued at that moment
//! in one vectored write, in order: runs of small frames copied together, large frames (and the rest
//! of a frame the socket took in part) as they are, never copied. Frames are never interleaved: a
//! frame goes out whole, after every frame queued before it.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::sync::{Mutex, MutexGuard, PoisonError};

use bytes::{Buf, Bytes, BytesMut};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::Notify;

/// Queued bytes past which [`FrameWriter::send`] waits for the flusher (backpressure when the peer
/// reads slower than frames come).
pub const QUEUE_LIMIT: usize = 4 * 1024 * 1024;

/// Bytes a sender writes itself, holding the writer's lock; the rest of a larger frame goes to the
/// flusher.
const DIRECT_WRITE: usize = 256 * 1024;

/// Queued frames up to this size are copied together; larger ones are queued as they are.
const SMALL_FRAME: usize = 8 * 1024;

/// Slices in one vectored write (Linux takes 1024; Tokio passes them on).
const SLICES_PER_WRITE: usize = 64;

/// The write side of a connection, shared by the tasks that send frames on it.
#[derive(Debug)]
pub struct FrameWriter {
    stream: OwnedWriteHalf,
    outbox: Mutex<Outbox>,
    /// Wakes the flusher: something was queued, or the writer was closed.
    queued: Notify,
    /// Wakes senders waiting for room.
    room: Notify,
}

#[derive(Debug, Default)]
struct Outbox {
    /// Bytes waiting for the flusher, in order (the first may be the rest of a frame written in part):
    /// large frames as they are, runs of small ones copied together.
    chunks: VecDeque<Bytes>,
    /// Small frames queued after the last of `chunks`, copied together.
    tail: BytesMut,
    /// Bytes in `chunks` and `tail`.
    queued: usize,
    /// The flusher owns the socket: it is writing, or has bytes to write. Senders queue behind it.
    flushing: bool,
    /// No more frames: the flusher writes what is queued and ends.
    closed: bool,
    /// Why the connection cannot be written to any more.
    failed: Option<io::ErrorKind>,
}

/// A frame could not be sent: the connection is closed or broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the connection cannot be written to ({0})")]
pub struct Closed(pub io::ErrorKind);

impl FrameWriter {
    /// A writer on `stream`. Spawn [`FrameWriter::flush`] on it (one flusher per writer).
    pub fn new(stream: OwnedWriteHalf) -> Self {
        Self {
            stream,
            outbox: Mutex::new(Outbox::default()),
            queued: Notify::new(),
            room: Notify::new(),
        }
    }

    fn outbox(&self) -> MutexGuard<'_, Outbox> {
        self.outbox.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends one whole frame (length prefix included), without waiting: written now if the socket is
    /// free and takes it, otherwise queued for the flusher, whatever the queue's length (answers of a
    /// server, bounded by its requests in flight). A success means written or queued, not received.
    ///
    /// # Errors
    /// [`Closed`] once the writer is closed or a write failed.
    pub fn send_now(&self, frame: Bytes) -> Result<(), Closed> {
        let mut outbox = self.outbox();
        if let Some(kind) = outbox.failed {
            return Err(Closed(kind));
        }
        if outbox.closed {
            return Err(Closed(io::ErrorKind::NotConnected));
        }
        if outbox.flushing {
            outbox.queue(frame);
            return Ok(());
        }
        // Nothing queued and nobody writing: this task writes, up to DIRECT_WRITE bytes. The lock is held
        // across the write so that no other frame can go between; `try_write` never blocks, and the
        // cap keeps the copy into the socket short for senders waiting on the lock.
        let mut written = 0;
        let direct = frame.len().min(DIRECT_WRITE);
        while written < direct {
            match self.stream.try_write(&frame[written..direct]) {
                Ok(0) => return Err(outbox.fail(io::ErrorKind::WriteZero)),
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    let kind = outbox.fail(e.kind());
                    drop(outbox);
                    // The flusher may be waiting for work: it ends now.
                    self.queued.notify_one();
                    return Err(kind);
                }
            }
        }
        if written < frame.len() {
            // The socket is full, or the frame is large: the flusher writes the rest, off the lock.
            outbox.queue(frame.slice(written..));
            outbox.flushing = true;
            drop(outbox);
            self.queued.notify_one();
        }
        Ok(())
    }

    /// [`FrameWriter::send_now`], first waiting while more than [`QUEUE_LIMIT`] bytes are queued.
    ///
    /// # Errors
    /// As [`FrameWriter::send_now`].
    pub async fn send(&self, frame: Bytes) -> Result<(), Closed> {
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            {
                let outbox = self.outbox();
                if outbox.queued <= QUEUE_LIMIT || outbox.failed.is_some() || outbox.closed {
                    break;
                }
            }
            room.await;
        }
        self.send_now(frame)
    }

    /// No more frames: the flusher writes what is queued, shuts the write side down (the peer reads
    /// the end of the stream) and ends. Later sends fail.
    pub fn close(&self) {
        self.outbox().closed = true;
        self.queued.notify_one();
        self.room.notify_waiters();
    }

    /// Drops what is queued and shuts the write side down now: the connection is given up. Later sends
    /// fail; a running flusher ends.
    pub fn abort(&self) {
        let mut outbox = self.outbox();
        outbox.closed = true;
        outbox.fail(io::ErrorKind::NotConnected);
        drop(outbox);
        self.shutdown();
        self.queued.notify_one();
        self.room.notify_waiters();
    }

    /// Shuts the write side down (Tokio does that only through `&mut` or on drop, and this half is
    /// shared). Failing means the socket is gone already.
    fn shutdown(&self) {
        let stream: &tokio::net::TcpStream = self.stream.as_ref();
        let _ = socket2::SockRef::from(stream).shutdown(std::net::Shutdown::Write);
    }

    /// Whether a write failed.
    pub fn failed(&self) -> Option<io::ErrorKind> {
        self.outbox().failed
    }

    /// The flusher: writes queued frames until the writer is closed (then what is queued first) or a
    /// write fails. Run it in a task of its own.
    ///
    /// # Errors
    /// The write that failed.
    pub async fn flush(&self) -> io::Result<()> {
        loop {
            let taken = {
                let mut outbox = self.outbox();
                if let Some(kind) = outbox.failed {
                    return Err(kind.into());
                }
                if outbox.queued == 0 {
                    outbox.flushing = false;
                    if outbox.closed {
                        drop(outbox);
                        self.shutdown();
                        return Ok(());
                    }
                    None
                } else {
                    outbox.flushing = true;
                    Some(outbox.take())
                }
            };
            self.room.notify_waiters();
            let Some(mut chunks) = taken else {
                self.queued.notified().await;
                continue;
            };
            while !chunks.is_empty() {
                self.stream
                    .writable()
                    .await
                    .inspect_err(|e| self.fail(e.kind()))?;
                let slices: Vec<IoSlice<'_>> = chunks
                    .iter()
                    .take(SLICES_PER_WRITE)
                    .map(|c| IoSlice::new(c))
                    .collect();
                let written = self.stream.try_write_vectored(&slices);
                drop(slices);
                match written {
                    Ok(0) => {
                        self.fail(io::ErrorKind::WriteZero);
                        return Err(io::ErrorKind::WriteZero.into());
                    }
                    Ok(mut n) => {
                        while n > 0
                            && let Some(front) = chunks.front_mut()
                        {
                            if n < front.len() {
                                front.advance(n);
                                break;
                            }
                            n -= front.len();
                            chunks.pop_front();
                        }
                    }
                    Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {}
                    Err(e) => {
                        self.fail(e.kind());
                        return Err(e);
                    }
                }
            }
        }
    }

    fn fail(&self, kind: io::ErrorKind) {
        self.outbox().fail(kind);
        self.room.notify_waiters();
    }
}

impl Outbox {
    fn queue(&mut self, frame: Bytes) {
        self.queued += frame.len();
        if frame.len() <= SMALL_FRAME {
            self.tail.extend_from_slice(&frame);
        } else {
            if !self.tail.is_empty() {
                self.chunks.push_back(self.tail.split().freeze());
            }
            self.chunks.push_back(frame);
        }
    }

    /// Everything queued, in order.
    fn take(&mut self) -> VecDeque<Bytes> {
        if !self.tail.is_empty() {
            self.chunks.push_back(self.tail.split().freeze());
        }
        self.queued = 0;
        std::mem::take(&mut self.chunks)
    }

    fn fail(&mut self, kind: io::ErrorKind) -> Closed {
        let kind = *self.failed.get_or_insert(kind);
        self.chunks.clear();
        self.tail.clear();
        self.queued = 0;
        Closed(kind)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    async fn pair() -> (Arc<FrameWriter>, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let (_, write) = client.into_split();
        (Arc::new(FrameWriter::new(write)), server)
    }

    /// Frames from many tasks, large enough to fill the socket's buffers while nobody reads, arrive
    /// whole and each task's in its order; then close ends the flusher and the stream.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn frames_from_many_tasks_arrive_whole_and_in_order() {
        let (writer, mut server) = pair().await;
        let flusher = tokio::spawn({
            let w = writer.clone();
            async move { w.flush().await }
        });
        let frame = |task: u8, seq: u32, len: usize| {
            let mut f = Vec::with_capacity(len + 9);
            f.extend_from_slice(&((len + 5) as u32).to_be_bytes());
            f.push(task);
            f.extend_from_slice(&seq.to_be_bytes());
            f.resize(len + 9, task);
            f
        };
        let mut senders = Vec::new();
        for task in 0..4u8 {
            let w = writer.clone();
            senders.push(tokio::spawn(async move {
                for seq in 0..200u32 {
                    let len = if seq % 7 == 0 { 200_000 } else { 100 + seq as usize };
                    w.send(frame(task, seq, len).into()).await.unwrap();
                }
            }));
        }
        let reader = tokio::spawn(async move {
            let mut next = [0u32; 4];
            let mut frames = 0;
            let mut len = [0u8; 4];
            while server.read_exact(&mut len).await.is_ok() {
                let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
                server.read_exact(&mut body).await.unwrap();
                let task = body[0];
                let seq = u32::from_be_bytes([body[1], body[2], body[3], body[4]]);
                assert_eq!(seq, next[task as usize], "task {task}'s frames out of order");
                assert!(
                    body[5..].iter().all(|&b| b == task),
                    "a frame interleaved with another"
                );
                next[task as usize] += 1;
                frames += 1;
            }
            frames
        });
        for s in senders {
            s.await.unwrap();
        }
        writer.close();
        flusher.await.unwrap().unwrap();
        assert!(
            writer.send_now(Bytes::from_static(b"late")).is_err(),
            "a closed writer takes no frames"
        );
        drop(writer);
        assert_eq!(reader.await.unwrap(), 800);
    }

    /// Queued frames come back in order: small ones copied together, large ones (and the rest of a
    /// frame written in part) as they are, without a copy.
    #[test]
    fn the_queue_keeps_order_and_copies_only_small_frames() {
        let mut outbox = Outbox::default();
        let small = |b: u8| Bytes::from(vec![b; 10]);
        let big = Bytes::from(vec![9u8; SMALL_FRAME + 1]);
        let rest = Bytes::from(vec![8u8; 2 * SMALL_FRAME]).slice(100..);
        for frame in [rest.clone(), small(1), small(2), big.clone(), small(3)] {
            outbox.queue(frame);
        }
        assert_eq!(outbox.queued, rest.len() + 30 + big.len());
        let chunks = outbox.take();
        assert_eq!(chunks.len(), 4);
        assert_eq!(chunks[0].as_ptr(), rest.as_ptr(), "a large frame is not copied");
        assert_eq!(chunks[2].as_ptr(), big.as_ptr());
        let all: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
        let mut expected = rest.to_vec();
        expected.extend_from_slice(&[1u8; 10]);
        expected.extend_from_slice(&[2u8; 10]);
        expected.extend_from_slice(&big);
        expected.extend_from_slice(&[3u8; 10]);
        assert_eq!(all, expected);
        assert_eq!(outbox.queued, 0);
        assert!(outbox.take().is_empty());
    }

    /// Closing shuts the write side down once the queue is written, and aborting at once, while
    /// handles on the writer are still held: the peer reads the end of the stream either way.
    #[tokio::test]
    async fn close_and_abort_end_the_stream_while_handles_remain() {
        for abort in [false, true] {
            let (writer, mut server) = pair().await;
            let flusher = tokio::spawn({
                let w = writer.clone();
                async move { w.flush().await }
            });
            writer.send(Bytes::from_static(b"\0\0\0\x01x")).await.unwrap();
            if abort {
                writer.abort();
            } else {
                writer.close();
            }
            let mut got = Vec::new();
            tokio::time::timeout(std::time::Duration::from_secs(10), server.read_to_end(&mut got))
                .await
                .expect("the peer sees the end of the stream")
                .unwrap();
            assert_eq!(got, b"\0\0\0\x01x", "abort {abort}");
            assert!(writer.send_now(Bytes::from_static(b"more")).is_err());
            let _ = flusher.await.unwrap();
        }
    }

    /// A peer that went away fails the sends and ends the flusher with the error.
    #[tokio::test]
    async fn a_broken_connection_fails_sends_and_the_flusher() {
        let (writer, server) = pair().await;
        drop(server);
        let flusher = tokio::spawn({
            let w = writer.clone();
            async move { w.flush().await }
        });
        let big = Bytes::from(vec![0u8; 1 << 20]);
        let mut failed = false;
        for _ in 0..1000 {
            if writer.send(big.clone()).await.is_err() {
                failed = true;
                break;
            }
        }
        assert!(failed, "sends to a closed peer kept succeeding");
        assert!(flusher.await.unwrap().is_err());
        assert!(writer.failed().is_some());
    }
}
