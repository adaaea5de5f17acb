//! The record batch: ferry's unit of writing, checksumming and reading.
//!
//! A batch is what one append call produced. It is encoded (and checksummed) by the caller's thread, so the
//! partition's single writer thread only patches in the base offset and writes bytes; that is why the base
//! offset sits outside the checksum, as in Kafka's v2 batches. A corrupt base offset is still caught: the
//! log checks that every batch starts exactly where the previous one ended.
//!
//! ```text
//! batch (all integers little-endian)
//! +--------+--------+-------------------------------------------------------------------------+
//! | offset | size   | field                                                                   |
//! +--------+--------+-------------------------------------------------------------------------+
//! |      0 |      4 | length: u32, bytes after this field (36 + records)                      |
//! |      4 |      8 | base_offset: u64, offset of the first record                            |
//! |     12 |      4 | crc32c: u32, CRC32C (Castagnoli) of bytes [16, 4 + length)               |
//! |     16 |      1 | version: u8 = 1                                                         |
//! |     17 |      1 | flags: u8 = 0 (reserved: compression)                                   |
//! |     18 |      2 | reserved: u16 = 0                                                       |
//! |     20 |      4 | record_count: u32, >= 1                                                 |
//! |     24 |      8 | first_timestamp: i64, ms since the Unix epoch, of the first record      |
//! |     32 |      8 | last_timestamp: i64, the largest timestamp of any record in the batch   |
//! |     40 |      - | records, back to back                                                   |
//! +--------+--------+-------------------------------------------------------------------------+
//!
//! record (varint = unsigned LEB128, zigzag = signed LEB128 with zigzag mapping)
//!   varint  body_length        bytes after this varint, so a reader can skip a record unparsed
//!   zigzag  timestamp_delta    timestamp - first_timestamp
//!   varint  key_length + 1     0 means "no key"; then the key bytes
//!   varint  header_count       then per header: varint key_length, key (UTF-8),
//!                                                varint value_length, value
//!   varint  value_length       then the value bytes
//! ```
//!
//! Offsets of records are implicit: record `i` of a batch has offset `base_offset + i`.

use bytes::{Buf, Bytes};

use crate::error::{Error, Result};

/// Size of the fixed batch header, in bytes.
pub const BATCH_HEADER_LEN: usize = 40;
/// The batch format version this build writes and reads.
pub const FORMAT_VERSION: u8 = 1;
/// Hard upper bound on one batch's encoded size. A length field above it is treated as corruption, so a
/// damaged length can never make a reader allocate gigabytes.
pub const MAX_BATCH_LEN: usize = 64 * 1024 * 1024;

const CRC_START: usize = 16;

/// A record to append. Values are bytes; JSON by convention one layer up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewRecord {
    /// Milliseconds since the Unix epoch; `None` means "now" at encoding time.
    pub timestamp: Option<i64>,
    /// Optional key (partitioning and compaction one layer up).
    pub key: Option<Bytes>,
    /// Headers, in order; keys need not be unique.
    pub headers: Vec<Header>,
    /// The payload.
    pub value: Bytes,
}

impl NewRecord {
    /// A record with only a value.
    pub fn value(value: impl Into<Bytes>) -> Self {
        Self {
            value: value.into(),
            ..Self::default()
        }
    }
}

/// One record header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Header name.
    pub key: String,
    /// Header value.
    pub value: Bytes,
}

/// A record as stored in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Position in the partition, dense and increasing.
    pub offset: u64,
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
    /// Optional key.
    pub key: Option<Bytes>,
    /// Headers, in the order they were appended.
    pub headers: Vec<Header>,
    /// The payload.
    pub value: Bytes,
}

/// A batch encoded by the appending thread, waiting for the writer to give it a base offset.
#[derive(Debug)]
pub struct EncodedBatch {
    pub(crate) bytes: Vec<u8>,
    pub(crate) record_count: u32,
    pub(crate) last_timestamp: i64,
}

impl EncodedBatch {
    /// Encodes `records` as one batch; records without a timestamp get `now_ms`.
    ///
    /// # Errors
    /// [`Error::EmptyBatch`] for no records, [`Error::BatchTooLarge`] past [`MAX_BATCH_LEN`].
    pub fn encode(records: &[NewRecord], now_ms: i64) -> Result<Self> {
        let Some(first) = records.first() else {
            return Err(Error::EmptyBatch);
        };
        let first_timestamp = first.timestamp.unwrap_or(now_ms);
        let mut last_timestamp = first_timestamp;
        let estimate: usize = records
            .iter()
            .map(|r| {
                r.value.len()
                    + r.key.as_ref().map_or(0, Bytes::len)
                    + r.headers
                        .iter()
                        .map(|h| h.key.len() + h.value.len() + 4)
                        .sum::<usize>()
                    + 16
            })
            .sum();
        let mut bytes = Vec::with_capacity(BATCH_HEADER_LEN + estimate);
        bytes.resize(BATCH_HEADER_LEN, 0);
        let mut body = Vec::with_capacity(64);
        for record in records {
            let ts = record.timestamp.unwrap_or(now_ms);
            last_timestamp = last_timestamp.max(ts);
            body.clear();
            put_zigzag(&mut body, ts.wrapping_sub(first_timestamp));
            match &record.key {
                None => put_varint(&mut body, 0),
                Some(k) => {
                    put_varint(&mut body, k.len() as u64 + 1);
                    body.extend_from_slice(k);
                }
            }
            put_varint(&mut body, record.headers.len() as u64);
            for h in &record.headers {
                put_varint(&mut body, h.key.len() as u64);
                body.extend_from_slice(h.key.as_bytes());
                put_varint(&mut body, h.value.len() as u64);
                body.extend_from_slice(&h.value);
            }
            put_varint(&mut body, record.value.len() as u64);
            put_varint(&mut bytes, (body.len() + record.value.len()) as u64);
            bytes.extend_from_slice(&body);
            bytes.extend_from_slice(&record.value);
            if bytes.len() > MAX_BATCH_LEN {
                return Err(Error::BatchTooLarge {
                    size: bytes.len(),
                    max: MAX_BATCH_LEN,
                });
            }
        }
        let record_count = u32::try_from(records.len()).map_err(|_| Error::BatchTooLarge {
            size: records.len(),
            max: u32::MAX as usize,
        })?;
        let length = (bytes.len() - 4) as u32;
        bytes[0..4].copy_from_slice(&length.to_le_bytes());
        bytes[16] = FORMAT_VERSION;
        bytes[20..24].copy_from_slice(&record_count.to_le_bytes());
        bytes[24..32].copy_from_slice(&first_timestamp.to_le_bytes());
        bytes[32..40].copy_from_slice(&last_timestamp.to_le_bytes());
        let crc = crc32c::crc32c(&bytes[CRC_START..]);
        bytes[12..16].copy_from_slice(&crc.to_le_bytes());
        Ok(Self {
            bytes,
            record_count,
            last_timestamp,
        })
    }

    /// Encoded size in bytes, header included.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Never true: a batch holds at least one record.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Number of records in the batch.
    pub fn record_count(&self) -> u32 {
        self.record_count
    }

    pub(crate) fn set_base_offset(&mut self, base: u64) {
        self.bytes[4..12].copy_from_slice(&base.to_le_bytes());
    }
}

/// The fixed header of a batch read back from disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BatchHeader {
    /// Total size on disk, header included.
    pub total_len: usize,
    pub base_offset: u64,
    pub crc: u32,
    pub record_count: u32,
    pub first_timestamp: i64,
    pub last_timestamp: i64,
}

impl BatchHeader {
    pub fn next_offset(&self) -> u64 {
        self.base_offset + u64::from(self.record_count)
    }
}

/// Why bytes are not a valid batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BatchFault {
    /// Fewer bytes than the header or the length field announce: a torn write.
    Truncated,
    /// The header fields are impossible (length, version, count).
    BadHeader,
    /// The checksum does not match.
    BadCrc,
    /// The records do not parse although the checksum matched (a bug or a crafted file).
    BadRecords,
}

impl std::fmt::Display for BatchFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Truncated => "truncated batch",
            Self::BadHeader => "invalid batch header",
            Self::BadCrc => "checksum mismatch",
            Self::BadRecords => "unparseable records",
        })
    }
}

/// Parses a batch header from the first [`BATCH_HEADER_LEN`] bytes of `buf`, checking only what the header
/// itself can tell (not the checksum).
pub(crate) fn parse_header(buf: &[u8]) -> std::result::Result<BatchHeader, BatchFault> {
    if buf.len() < BATCH_HEADER_LEN {
        return Err(BatchFault::Truncated);
    }
    let length = u32::from_le_bytes(arr(&buf[0..4])) as usize;
    let total_len = length + 4;
    if !(BATCH_HEADER_LEN..=MAX_BATCH_LEN).contains(&total_len) {
        return Err(BatchFault::BadHeader);
    }
    let record_count = u32::from_le_bytes(arr(&buf[20..24]));
    if buf[16] != FORMAT_VERSION || record_count == 0 {
        return Err(BatchFault::BadHeader);
    }
    Ok(BatchHeader {
        total_len,
        base_offset: u64::from_le_bytes(arr(&buf[4..12])),
        crc: u32::from_le_bytes(arr(&buf[12..16])),
        record_count,
        first_timestamp: i64::from_le_bytes(arr(&buf[24..32])),
        last_timestamp: i64::from_le_bytes(arr(&buf[32..40])),
    })
}

/// Checks a whole batch (`buf` holds exactly `header.total_len` bytes) and returns its header.
pub(crate) fn verify_batch(buf: &[u8]) -> std::result::Result<BatchHeader, BatchFault> {
    let header = parse_header(buf)?;
    if buf.len() < header.total_len {
        return Err(BatchFault::Truncated);
    }
    if crc32c::crc32c(&buf[CRC_START..header.total_len]) != header.crc {
        return Err(BatchFault::BadCrc);
    }
    Ok(header)
}

fn arr<const N: usize>(s: &[u8]) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(s);
    a
}

/// Decodes the records of a verified batch, skipping those below `from_offset`.
pub(crate) fn decode_records(
    batch: Bytes,
    header: &BatchHeader,
    from_offset: u64,
    out: &mut impl Extend<Record>,
) -> std::result::Result<(), BatchFault> {
    let mut buf = batch.slice(BATCH_HEADER_LEN..header.total_len);
    for i in 0..u64::from(header.record_count) {
        let len = get_varint(&mut buf).ok_or(BatchFault::BadRecords)? as usize;
        if len > buf.len() {
            return Err(BatchFault::BadRecords);
        }
        let mut body = buf.split_to(len);
        let offset = header.base_offset + i;
        if offset < from_offset {
            continue;
        }
        let record =
            decode_record(&mut body, offset, header.first_timestamp).ok_or(BatchFault::BadRecords)?;
        out.extend(std::iter::once(record));
    }
    if buf.has_remaining() {
        return Err(BatchFault::BadRecords);
    }
    Ok(())
}

fn decode_record(body: &mut Bytes, offset: u64, first_timestamp: i64) -> Option<Record> {
    let timestamp = first_timestamp.wrapping_add(get_zigzag(body)?);
    let key = match get_varint(body)? {
        0 => None,
        n => Some(take(body, n as usize - 1)?),
    };
    let header_count = get_varint(body)?;
    let mut headers = Vec::with_capacity(header_count.min(64) as usize);
    for _ in 0..header_count {
        let klen = get_varint(body)? as usize;
        let key = String::from_utf8(take(body, klen)?.to_vec()).ok()?;
        let vlen = get_varint(body)? as usize;
        headers.push(Header {
            key,
            value: take(body, vlen)?,
        });
    }
    let vlen = get_varint(body)? as usize;
    let value = take(body, vlen)?;
    if body.has_remaining() {
        return None;
    }
    Some(Record {
        offset,
        timestamp,
        key,
        headers,
        value,
    })
}

fn take(buf: &mut Bytes, n: usize) -> Option<Bytes> {
    (n <= buf.len()).then(|| buf.split_to(n))
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_zigzag(out: &mut Vec<u8>, v: i64) {
    put_varint(out, ((v << 1) ^ (v >> 63)) as u64);
}

fn get_varint(buf: &mut Bytes) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        if !buf.has_remaining() {
            return None;
        }
        let b = buf.get_u8();
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

fn get_zigzag(buf: &mut Bytes) -> Option<i64> {
    let v = get_varint(buf)?;
    Some(((v >> 1) as i64) ^ -((v & 1) as i64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(key: Option<&str>, value: &str, ts: Option<i64>) -> NewRecord {
        NewRecord {
            timestamp: ts,
            key: key.map(|k| Bytes::copy_from_slice(k.as_bytes())),
            headers: vec![Header {
                key: "h".into(),
                value: Bytes::from_static(b"v"),
            }],
            value: Bytes::copy_from_slice(value.as_bytes()),
        }
    }

    #[test]
    fn round_trip_with_keys_headers_and_timestamps() {
        let records = vec![
            rec(Some("k1"), "one", Some(1000)),
            rec(None, "", None),
            rec(Some(""), "three", Some(900)),
        ];
        let mut batch = EncodedBatch::encode(&records, 5000).unwrap();
        batch.set_base_offset(42);
        let header = verify_batch(&batch.bytes).unwrap();
        assert_eq!(header.base_offset, 42);
        assert_eq!(header.record_count, 3);
        assert_eq!(header.first_timestamp, 1000);
        assert_eq!(header.last_timestamp, 5000);
        let mut out = Vec::new();
        decode_records(Bytes::from(batch.bytes), &header, 43, &mut out).unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].offset, 43);
        assert_eq!(out[0].timestamp, 5000);
        assert_eq!(out[0].key, None);
        assert_eq!(out[1].key.as_deref(), Some(&b""[..]));
        assert_eq!(out[1].timestamp, 900);
        assert_eq!(out[1].value, Bytes::from_static(b"three"));
        assert_eq!(out[1].headers[0].key, "h");
    }

    #[test]
    fn every_single_byte_flip_is_detected() {
        let batch = EncodedBatch::encode(&[rec(Some("k"), "value", Some(7))], 0).unwrap();
        for i in 0..batch.bytes.len() {
            if (4..12).contains(&i) {
                continue; // the base offset is checked by continuity, not by the checksum
            }
            let mut b = batch.bytes.clone();
            b[i] ^= 0x01;
            assert!(verify_batch(&b).is_err(), "flip at byte {i} went unnoticed");
        }
    }

    #[test]
    fn empty_batch_is_refused() {
        assert!(matches!(EncodedBatch::encode(&[], 0), Err(Error::EmptyBatch)));
    }
}
