//! ferry's framed binary client protocol, version 1: the codec (no I/O). `docs/protocol.md` is the
//! specification; this crate is its reference implementation, shared by the server and `ferry-client`.
//!
//! Every frame is `u32 length` (big-endian, the bytes after it), `u8 kind`, `u32 id`, then a body that
//! depends on the kind. The client picks the id of a request; the response to it carries the same id,
//! so requests can be pipelined and answered out of order. Integers are big-endian; a `str` is a
//! `u16` length and UTF-8; `bytes` is a `u32` length and the bytes.
//!
//! Decoding never panics, and a forged count or length cannot make it reserve memory: each is checked
//! against the bytes left in the frame before anything is read or reserved, so what a frame decodes to is
//! at most a small multiple (16x, for a PUBLISH of empty records) of its length. The property tests
//! and fuzz targets (`tests/`, `fuzz/`) hold it to that.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// The protocol version this crate speaks.
pub const VERSION: u16 = 1;

/// Largest frame (the bytes after the length prefix): 16 MiB of records plus room for their framing.
pub const MAX_FRAME: usize = 16 * 1024 * 1024 + 64 * 1024;

/// Bytes of a frame's header after the length prefix: kind and id.
const HEADER: usize = 1 + 4;

/// Frame kinds. Requests are below 0x80, responses at or above it.
pub mod kind {
    /// The first request on a connection.
    pub const HELLO: u8 = 0x01;
    /// Append records to a topic.
    pub const PUBLISH: u8 = 0x02;
    /// Lease records of a queue group.
    pub const RECEIVE: u8 = 0x03;
    /// Acknowledge leased records.
    pub const ACK: u8 = 0x04;
    /// Give leased records back.
    pub const NACK: u8 = 0x05;
    /// Extend leases.
    pub const EXTEND: u8 = 0x06;
    /// The answer to HELLO.
    pub const READY: u8 = 0x81;
    /// The answer to PUBLISH.
    pub const PUBLISHED: u8 = 0x82;
    /// The answer to RECEIVE.
    pub const RECORDS: u8 = 0x83;
    /// The answer to ACK, NACK and EXTEND.
    pub const DONE: u8 = 0x84;
    /// The answer to any request that failed.
    pub const ERROR: u8 = 0xFF;
}

/// A header of a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Name.
    pub key: String,
    /// Value.
    pub value: Bytes,
}

/// A record to publish.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PublishRecord {
    /// With a key, the record goes to partition `fnv1a64(key) % partitions`.
    pub key: Option<Bytes>,
    /// An explicit partition overrides the key.
    pub partition: Option<u32>,
    /// Milliseconds since the Unix epoch; none means when the server appends it.
    pub timestamp: Option<i64>,
    /// Headers, in order.
    pub headers: Vec<Header>,
    /// The payload.
    pub value: Bytes,
}

/// A leased record, as RECEIVE answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Partition.
    pub partition: u32,
    /// Offset in the partition.
    pub offset: u64,
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
    /// How many times it was delivered, this time included.
    pub deliveries: u32,
    /// When the lease ends unless acked, nacked or extended (ms since the epoch).
    pub lease_expires_ms: i64,
    /// Key, if any.
    pub key: Option<Bytes>,
    /// Headers, in order.
    pub headers: Vec<Header>,
    /// The payload.
    pub value: Bytes,
}

/// What a client asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// The first frame of a connection: the highest version the client speaks, and its token (empty
    /// for none).
    Hello {
        /// Highest protocol version the client speaks.
        version: u16,
        /// Bearer token; empty when the server has none configured.
        token: String,
        /// Free text naming the client, for the server's logs.
        client: String,
    },
    /// Appends `records` to `topic`, all or nothing; answered once durable.
    Publish {
        /// Topic.
        topic: String,
        /// At least one.
        records: Vec<PublishRecord>,
    },
    /// Leases up to `max_records` of a queue group, waiting up to `max_wait_ms` for a first one.
    Receive {
        /// Queue group.
        group: String,
        /// Topic.
        topic: String,
        /// Most records (1..=1000, as the HTTP API).
        max_records: u32,
        /// Long-poll (0..=60000 ms).
        max_wait_ms: u32,
        /// Lease length; 0 takes the group's.
        visibility_ms: u32,
    },
    /// Acknowledges leased records.
    Ack {
        /// Queue group.
        group: String,
        /// Topic.
        topic: String,
        /// `(partition, offset)` of each; at least one.
        records: Vec<(u32, u64)>,
    },
    /// Gives leased records back, available again after `delay_ms`.
    Nack {
        /// Queue group.
        group: String,
        /// Topic.
        topic: String,
        /// `(partition, offset)` of each; at least one.
        records: Vec<(u32, u64)>,
        /// Delay before they are available again.
        delay_ms: u32,
    },
    /// Extends leases to `visibility_ms` from now.
    Extend {
        /// Queue group.
        group: String,
        /// Topic.
        topic: String,
        /// `(partition, offset)` of each; at least one.
        records: Vec<(u32, u64)>,
        /// New lease length.
        visibility_ms: u32,
    },
}

impl Request {
    /// The frame kind.
    pub fn kind(&self) -> u8 {
        match self {
            Self::Hello { .. } => kind::HELLO,
            Self::Publish { .. } => kind::PUBLISH,
            Self::Receive { .. } => kind::RECEIVE,
            Self::Ack { .. } => kind::ACK,
            Self::Nack { .. } => kind::NACK,
            Self::Extend { .. } => kind::EXTEND,
        }
    }
}

/// What the server answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// HELLO accepted: the version both speak from now on.
    Ready {
        /// The version in use: the lower of the client's and the server's.
        version: u16,
        /// Free text naming the server.
        server: String,
        /// Largest frame the server takes.
        max_frame: u32,
    },
    /// Where each published record landed, in request order.
    Published {
        /// `(partition, offset)`.
        offsets: Vec<(u32, u64)>,
    },
    /// Leased records; maybe none.
    Records {
        /// The records.
        records: Vec<Delivery>,
    },
    /// An ACK, NACK or EXTEND is done.
    Done,
    /// The request failed; nothing of it was done. Status and codes are the HTTP API's.
    Error {
        /// The HTTP API's status for the same error (4xx: the request can be fixed; 5xx: a fault of
        /// the server).
        status: u16,
        /// Machine-readable code (`topic_not_found`, `not_leased`, ...).
        code: String,
        /// For people.
        message: String,
        /// The field at fault, if one is (`records[3].partition`).
        field: Option<String>,
    },
}

impl Response {
    /// The frame kind.
    pub fn kind(&self) -> u8 {
        match self {
            Self::Ready { .. } => kind::READY,
            Self::Published { .. } => kind::PUBLISHED,
            Self::Records { .. } => kind::RECORDS,
            Self::Done => kind::DONE,
            Self::Error { .. } => kind::ERROR,
        }
    }
}

/// A frame that cannot be decoded. The connection cannot be trusted after one: the server answers
/// `bad_frame` and closes it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The length prefix is out of range.
    #[error("frame length {len} is out of range ({min}..={max})", min = HEADER, max = MAX_FRAME)]
    Length {
        /// The length the prefix gave.
        len: usize,
    },
    /// The frame ended inside a field.
    #[error("frame ends inside {field}")]
    Truncated {
        /// Which field.
        field: &'static str,
    },
    /// A string is not UTF-8.
    #[error("{field} is not UTF-8")]
    Utf8 {
        /// Which field.
        field: &'static str,
    },
    /// Bytes left over after the body.
    #[error("{count} bytes after the body of a frame of kind {kind:#04x}")]
    Trailing {
        /// Frame kind.
        kind: u8,
        /// How many.
        count: usize,
    },
    /// A kind this version does not know (in the direction it was read).
    #[error("unknown frame kind {0:#04x}")]
    Kind(u8),
    /// A flags byte with bits this version does not define.
    #[error("unknown flags {flags:#04x} in {field}")]
    Flags {
        /// Which field.
        field: &'static str,
        /// The byte.
        flags: u8,
    },
}

/// Checks the length prefix at the start of `buf`: `Ok(None)` while fewer than four bytes are there,
/// else the length of the frame after the prefix.
///
/// # Errors
/// [`DecodeError::Length`] when it is below the header or above [`MAX_FRAME`].
pub fn frame_length(buf: &[u8]) -> Result<Option<usize>, DecodeError> {
    let Some(prefix) = buf.get(..4) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
    check_length(len).map(Some)
}

/// `len` if it is a valid frame length.
///
/// # Errors
/// [`DecodeError::Length`] when it is below the header or above [`MAX_FRAME`].
pub fn check_length(len: usize) -> Result<usize, DecodeError> {
    if (HEADER..=MAX_FRAME).contains(&len) {
        Ok(len)
    } else {
        Err(DecodeError::Length { len })
    }
}

// ---- encoding ----

/// Appends the frame of request `id` to `out`, length prefix included.
pub fn encode_request(id: u32, request: &Request, out: &mut BytesMut) {
    let start = begin(out, request.kind(), id);
    match request {
        Request::Hello {
            version,
            token,
            client,
        } => {
            out.put_u16(*version);
            put_str(out, token);
            put_str(out, client);
        }
        Request::Publish { topic, records } => {
            // The whole frame's room at once: a large batch is not copied as the buffer grows.
            out.reserve(
                2 + topic.len()
                    + 4
                    + records
                        .iter()
                        .map(|r| 13 + record_len(r.key.as_deref(), &r.headers, &r.value))
                        .sum::<usize>(),
            );
            put_str(out, topic);
            put_len(out, records.len());
            for r in records {
                let flags = u8::from(r.key.is_some())
                    | u8::from(r.partition.is_some()) << 1
                    | u8::from(r.timestamp.is_some()) << 2;
                out.put_u8(flags);
                if let Some(key) = &r.key {
                    put_bytes(out, key);
                }
                if let Some(p) = r.partition {
                    out.put_u32(p);
                }
                if let Some(ts) = r.timestamp {
                    out.put_i64(ts);
                }
                put_headers(out, &r.headers);
                put_bytes(out, &r.value);
            }
        }
        Request::Receive {
            group,
            topic,
            max_records,
            max_wait_ms,
            visibility_ms,
        } => {
            put_str(out, group);
            put_str(out, topic);
            out.put_u32(*max_records);
            out.put_u32(*max_wait_ms);
            out.put_u32(*visibility_ms);
        }
        Request::Ack {
            group,
            topic,
            records,
        } => put_settle(out, group, topic, records),
        Request::Nack {
            group,
            topic,
            records,
            delay_ms,
        } => {
            put_settle(out, group, topic, records);
            out.put_u32(*delay_ms);
        }
        Request::Extend {
            group,
            topic,
            records,
            visibility_ms,
        } => {
            put_settle(out, group, topic, records);
            out.put_u32(*visibility_ms);
        }
    }
    finish(out, start);
}

/// Appends the frame of the response to request `id` to `out`, length prefix included.
pub fn encode_response(id: u32, response: &Response, out: &mut BytesMut) {
    let start = begin(out, response.kind(), id);
    match response {
        Response::Ready {
            version,
            server,
            max_frame,
        } => {
            out.put_u16(*version);
            put_str(out, server);
            out.put_u32(*max_frame);
        }
        Response::Published { offsets } => put_pairs(out, offsets),
        Response::Records { records } => {
            out.reserve(
                4 + records
                    .iter()
                    .map(|r| 33 + record_len(r.key.as_deref(), &r.headers, &r.value))
                    .sum::<usize>(),
            );
            put_len(out, records.len());
            for r in records {
                out.put_u32(r.partition);
                out.put_u64(r.offset);
                out.put_i64(r.timestamp);
                out.put_u32(r.deliveries);
                out.put_i64(r.lease_expires_ms);
                out.put_u8(u8::from(r.key.is_some()));
                if let Some(key) = &r.key {
                    put_bytes(out, key);
                }
                put_headers(out, &r.headers);
                put_bytes(out, &r.value);
            }
        }
        Response::Done => {}
        Response::Error {
            status,
            code,
            message,
            field,
        } => {
            out.put_u16(*status);
            put_str(out, code);
            put_str(out, message);
            put_str(out, field.as_deref().unwrap_or(""));
        }
    }
    finish(out, start);
}

fn begin(out: &mut BytesMut, kind: u8, id: u32) -> usize {
    let start = out.len();
    out.put_u32(0);
    out.put_u8(kind);
    out.put_u32(id);
    start
}

fn finish(out: &mut BytesMut, start: usize) {
    let len = out.len() - start - 4;
    // A frame over u32::MAX cannot be sent; the length then fails `check_length` on the other side.
    let len = u32::try_from(len).unwrap_or(u32::MAX);
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
}

/// Strings longer than `u16::MAX` bytes are cut at a character boundary: names are far shorter, and
/// messages are for people.
fn put_str(out: &mut BytesMut, s: &str) {
    let mut end = s.len().min(usize::from(u16::MAX));
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    out.put_u16(end as u16);
    out.put_slice(&s.as_bytes()[..end]);
}

fn put_len(out: &mut BytesMut, n: usize) {
    out.put_u32(u32::try_from(n).unwrap_or(u32::MAX));
}

fn put_bytes(out: &mut BytesMut, b: &[u8]) {
    put_len(out, b.len());
    out.put_slice(b);
}

/// The encoded length of a record's key, headers and value after its fixed fields (room to reserve;
/// at least what the encoders write).
fn record_len(key: Option<&[u8]>, headers: &[Header], value: &[u8]) -> usize {
    key.map_or(0, |k| 4 + k.len())
        + 2
        + headers
            .iter()
            .map(|h| 2 + h.key.len() + 4 + h.value.len())
            .sum::<usize>()
        + 4
        + value.len()
}

fn put_headers(out: &mut BytesMut, headers: &[Header]) {
    out.put_u16(u16::try_from(headers.len()).unwrap_or(u16::MAX));
    for h in headers.iter().take(usize::from(u16::MAX)) {
        put_str(out, &h.key);
        put_bytes(out, &h.value);
    }
}

fn put_pairs(out: &mut BytesMut, pairs: &[(u32, u64)]) {
    put_len(out, pairs.len());
    for (p, o) in pairs {
        out.put_u32(*p);
        out.put_u64(*o);
    }
}

fn put_settle(out: &mut BytesMut, group: &str, topic: &str, records: &[(u32, u64)]) {
    put_str(out, group);
    put_str(out, topic);
    put_pairs(out, records);
}

// ---- decoding ----

/// Reads fields off a frame, checking each length against what is left.
struct Reader {
    buf: Bytes,
}

impl Reader {
    fn need(&self, n: usize, field: &'static str) -> Result<(), DecodeError> {
        if self.buf.remaining() < n {
            Err(DecodeError::Truncated { field })
        } else {
            Ok(())
        }
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        self.need(1, field)?;
        Ok(self.buf.get_u8())
    }

    fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        self.need(2, field)?;
        Ok(self.buf.get_u16())
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        self.need(4, field)?;
        Ok(self.buf.get_u32())
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        self.need(8, field)?;
        Ok(self.buf.get_u64())
    }

    fn i64(&mut self, field: &'static str) -> Result<i64, DecodeError> {
        self.need(8, field)?;
        Ok(self.buf.get_i64())
    }

    fn bytes(&mut self, field: &'static str) -> Result<Bytes, DecodeError> {
        let len = self.u32(field)? as usize;
        self.need(len, field)?;
        Ok(self.buf.split_to(len))
    }

    fn str(&mut self, field: &'static str) -> Result<String, DecodeError> {
        let len = usize::from(self.u16(field)?);
        self.need(len, field)?;
        let raw = self.buf.split_to(len);
        String::from_utf8(raw.to_vec()).map_err(|_| DecodeError::Utf8 { field })
    }

    /// A count of items each at least `min_size` bytes long: never more than what is left could hold,
    /// so a forged count cannot make the decoder allocate more than the frame.
    fn count(&mut self, min_size: usize, field: &'static str) -> Result<usize, DecodeError> {
        let n = self.u32(field)? as usize;
        if n.saturating_mul(min_size) > self.buf.remaining() {
            return Err(DecodeError::Truncated { field });
        }
        Ok(n)
    }

    fn headers(&mut self) -> Result<Vec<Header>, DecodeError> {
        let n = usize::from(self.u16("headers")?);
        // A header is at least 6 bytes (an empty name and an empty value).
        if n.saturating_mul(6) > self.buf.remaining() {
            return Err(DecodeError::Truncated { field: "headers" });
        }
        let mut headers = Vec::with_capacity(n);
        for _ in 0..n {
            let key = self.str("header name")?;
            let value = self.bytes("header value")?;
            headers.push(Header { key, value });
        }
        Ok(headers)
    }

    fn pairs(&mut self) -> Result<Vec<(u32, u64)>, DecodeError> {
        let n = self.count(12, "records")?;
        let mut pairs = Vec::with_capacity(n);
        for _ in 0..n {
            pairs.push((self.u32("partition")?, self.u64("offset")?));
        }
        Ok(pairs)
    }

    fn end(self, kind: u8) -> Result<(), DecodeError> {
        match self.buf.remaining() {
            0 => Ok(()),
            count => Err(DecodeError::Trailing { kind, count }),
        }
    }
}

/// Splits a frame (the bytes after its length prefix) into kind, id and body.
fn open(frame: Bytes) -> Result<(u8, u32, Reader), DecodeError> {
    check_length(frame.len())?;
    let mut r = Reader { buf: frame };
    let kind = r.u8("kind")?;
    let id = r.u32("id")?;
    Ok((kind, id, r))
}

/// Decodes a request frame (the bytes after its length prefix): its id and the request. Keys, values
/// and header values share `frame`'s memory.
///
/// # Errors
/// A frame that does not follow the protocol.
pub fn decode_request(frame: Bytes) -> Result<(u32, Request), DecodeError> {
    let (kind, id, mut r) = open(frame)?;
    let request = match kind {
        kind::HELLO => Request::Hello {
            version: r.u16("version")?,
            token: r.str("token")?,
            client: r.str("client")?,
        },
        kind::PUBLISH => {
            let topic = r.str("topic")?;
            // A record is at least 7 bytes: flags, no headers, an empty value.
            let n = r.count(7, "records")?;
            let mut records = Vec::with_capacity(n);
            for _ in 0..n {
                let flags = r.u8("record flags")?;
                if flags & !0b111 != 0 {
                    return Err(DecodeError::Flags {
                        field: "record flags",
                        flags,
                    });
                }
                let key = if flags & 1 != 0 {
                    Some(r.bytes("key")?)
                } else {
                    None
                };
                let partition = if flags & 2 != 0 {
                    Some(r.u32("partition")?)
                } else {
                    None
                };
                let timestamp = if flags & 4 != 0 {
                    Some(r.i64("timestamp")?)
                } else {
                    None
                };
                let headers = r.headers()?;
                let value = r.bytes("value")?;
                records.push(PublishRecord {
                    key,
                    partition,
                    timestamp,
                    headers,
                    value,
                });
            }
            Request::Publish { topic, records }
        }
        kind::RECEIVE => Request::Receive {
            group: r.str("group")?,
            topic: r.str("topic")?,
            max_records: r.u32("max_records")?,
            max_wait_ms: r.u32("max_wait_ms")?,
            visibility_ms: r.u32("visibility_ms")?,
        },
        kind::ACK => Request::Ack {
            group: r.str("group")?,
            topic: r.str("topic")?,
            records: r.pairs()?,
        },
        kind::NACK => Request::Nack {
            group: r.str("group")?,
            topic: r.str("topic")?,
            records: r.pairs()?,
            delay_ms: r.u32("delay_ms")?,
        },
        kind::EXTEND => Request::Extend {
            group: r.str("group")?,
            topic: r.str("topic")?,
            records: r.pairs()?,
            visibility_ms: r.u32("visibility_ms")?,
        },
        other => return Err(DecodeError::Kind(other)),
    };
    r.end(kind)?;
    Ok((id, request))
}

/// Decodes a response frame (the bytes after its length prefix): the id of the request it answers and
/// the response.
///
/// # Errors
/// A frame that does not follow the protocol.
pub fn decode_response(frame: Bytes) -> Result<(u32, Response), DecodeError> {
    let (kind, id, mut r) = open(frame)?;
    let response = match kind {
        kind::READY => Response::Ready {
            version: r.u16("version")?,
            server: r.str("server")?,
            max_frame: r.u32("max_frame")?,
        },
        kind::PUBLISHED => Response::Published { offsets: r.pairs()? },
        kind::RECORDS => {
            // A record is at least 39 bytes: the fixed fields, flags, no headers, an empty value.
            let n = r.count(39, "records")?;
            let mut records = Vec::with_capacity(n);
            for _ in 0..n {
                let partition = r.u32("partition")?;
                let offset = r.u64("offset")?;
                let timestamp = r.i64("timestamp")?;
                let deliveries = r.u32("deliveries")?;
                let lease_expires_ms = r.i64("lease_expires_ms")?;
                let flags = r.u8("record flags")?;
                if flags & !1 != 0 {
                    return Err(DecodeError::Flags {
                        field: "record flags",
                        flags,
                    });
                }
                let key = if flags & 1 != 0 {
                    Some(r.bytes("key")?)
                } else {
                    None
                };
                let headers = r.headers()?;
                let value = r.bytes("value")?;
                records.push(Delivery {
                    partition,
                    offset,
                    timestamp,
                    deliveries,
                    lease_expires_ms,
                    key,
                    headers,
                    value,
                });
            }
            Response::Records { records }
        }
        kind::DONE => Response::Done,
        kind::ERROR => {
            let status = r.u16("status")?;
            let code = r.str("code")?;
            let message = r.str("message")?;
            let field = r.str("field")?;
            Response::Error {
                status,
                code,
                message,
                field: (!field.is_empty()).then_some(field),
            }
        }
        other => return Err(DecodeError::Kind(other)),
    };
    r.end(kind)?;
    Ok((id, response))
}

/// Splits one whole frame off the front of `buf` (length prefix included) if it is all there: the
/// bytes after the prefix.
///
/// # Errors
/// A length prefix out of range.
pub fn split_frame(buf: &mut BytesMut) -> Result<Option<Bytes>, DecodeError> {
    let Some(len) = frame_length(buf)? else {
        return Ok(None);
    };
    if buf.len() < 4 + len {
        // Room for what is missing, but not all of a claimed 16 MiB before it arrives.
        buf.reserve((4 + len - buf.len()).min(1024 * 1024));
        return Ok(None);
    }
    buf.advance(4);
    Ok(Some(buf.split_to(len).freeze()))
}
