//! A segment: one `<base_offset>.log` file of batches and its sparse `<base_offset>.index`.
//!
//! ```text
//! <base_offset:020>.log     batches back to back (see `format`), nothing else: no file header, so a
//!                           segment is valid at every batch boundary and recovery is "cut at the first
//!                           batch that does not verify".
//! <base_offset:020>.index   16-byte entries, one per `index_interval_bytes` of batches, always one for the
//!                           first batch:
//!                             u32 relative_offset   base offset of the batch - segment base offset
//!                             u32 position          byte position of the batch in the .log file
//!                             i64 max_ts_before     largest record timestamp in this segment before the batch
//!                                                   (i64::MIN for the first)
//! ```
//!
//! One index file serves both offset and timestamp lookups: all three columns are non-decreasing, so both
//! are binary searches over the same entries, and there is one file to write, sync and recover.
//!
//! Invariants:
//! - Readers never see bytes past `committed_size`, which only moves forward, to a batch boundary, after the
//!   bytes are durable under the log's fsync policy.
//! - The index is a cache of the log: it is written after the log bytes it points to, never synced before
//!   them, and on open it is checked (monotonic, in bounds, last entries pointing at verified batches) and
//!   cut or rebuilt from the log as needed.
//! - A sealed segment (one that is not the last) is fsynced, log and index, before its successor is
//!   created under `fsync = always` and on an explicit `Log::roll`; under the other policies right after,
//!   on the background fsync thread. A machine crash in that window can cut a sealed segment's tail while
//!   its successor kept records: recovery cuts the torn tail and keeps the later segments, and readers
//!   step over the gap of lost offsets.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use crate::error::{Error, Result};
use crate::format::{self, BATCH_HEADER_LEN, BatchFault, BatchHeader};

pub(crate) const INDEX_ENTRY_LEN: u64 = 16;

/// One index entry, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IndexEntry {
    pub relative_offset: u32,
    pub position: u32,
    pub max_ts_before: i64,
}

impl IndexEntry {
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.relative_offset.to_le_bytes());
        out.extend_from_slice(&self.position.to_le_bytes());
        out.extend_from_slice(&self.max_ts_before.to_le_bytes());
    }

    fn decode(b: &[u8; 16]) -> Self {
        let mut r = [0u8; 4];
        let mut p = [0u8; 4];
        let mut t = [0u8; 8];
        r.copy_from_slice(&b[0..4]);
        p.copy_from_slice(&b[4..8]);
        t.copy_from_slice(&b[8..16]);
        Self {
            relative_offset: u32::from_le_bytes(r),
            position: u32::from_le_bytes(p),
            max_ts_before: i64::from_le_bytes(t),
        }
    }
}

/// What recovery did to one segment.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SegmentRecovery {
    /// The segment's base offset.
    pub base_offset: u64,
    /// Index entries dropped because they were invalid.
    pub index_entries_dropped: u64,
    /// True when the index was missing or unusable and rebuilt from the log.
    pub index_rebuilt: bool,
    /// Where the log was cut, how many bytes were removed and why.
    pub cut: Option<Cut>,
}

/// A cut of a segment's tail during recovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cut {
    /// Byte position of the first removed byte.
    pub position: u64,
    /// Bytes removed.
    pub bytes: u64,
    /// The first offset that was expected there.
    pub offset: u64,
    /// Why the batch there was rejected.
    pub reason: String,
}

pub(crate) fn segment_file_name(base: u64, ext: &str) -> String {
    format!("{base:020}.{ext}")
}

/// A segment as shared between the writer and readers.
#[derive(Debug)]
pub(crate) struct Segment {
    pub base_offset: u64,
    pub log_path: PathBuf,
    pub index_path: PathBuf,
    pub log: File,
    pub index: File,
    /// Bytes readers may read.
    pub committed_size: AtomicU64,
    /// Offset after the last record readers may read.
    pub committed_next: AtomicU64,
    /// Index entries readers may use.
    pub index_entries: AtomicU64,
    /// Largest record timestamp in the committed part.
    pub max_timestamp: AtomicI64,
    /// Clock time of the first append to this segment by this process, for age-based rolling (`i64::MIN`
    /// while nothing was appended). Wall-clock time, not record timestamps: a producer replaying old records
    /// must not make every batch roll a segment.
    pub roll_anchor_ms: AtomicI64,
    pub sealed: AtomicBool,
}

/// State recovered from disk that the writer continues from.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tail {
    pub size: u64,
    pub next_offset: u64,
    pub last_index_position: Option<u64>,
    pub max_timestamp: i64,
}

impl Segment {
    /// Creates a new, empty segment.
    pub fn create(dir: &Path, base_offset: u64) -> Result<Self> {
        let log_path = dir.join(segment_file_name(base_offset, "log"));
        let index_path = dir.join(segment_file_name(base_offset, "index"));
        let open = |path: &Path| {
            OpenOptions::new()
                .read(true)
                .append(true)
                .create_new(true)
                .open(path)
                .map_err(Error::io("creating segment file", path))
        };
        let log = open(&log_path)?;
        let index = open(&index_path)?;
        Ok(Self::new(base_offset, log_path, index_path, log, index))
    }

    fn new(base_offset: u64, log_path: PathBuf, index_path: PathBuf, log: File, index: File) -> Self {
        Self {
            base_offset,
            log_path,
            index_path,
            log,
            index,
            committed_size: AtomicU64::new(0),
            committed_next: AtomicU64::new(base_offset),
            index_entries: AtomicU64::new(0),
            max_timestamp: AtomicI64::new(i64::MIN),
            roll_anchor_ms: AtomicI64::new(i64::MIN),
            sealed: AtomicBool::new(false),
        }
    }

    /// Opens an existing segment, checking its index and scanning its tail: a batch that does not verify,
    /// and everything after it, is cut off.
    pub fn open(dir: &Path, base_offset: u64, index_interval: u32) -> Result<(Self, Tail, SegmentRecovery)> {
        let log_path = dir.join(segment_file_name(base_offset, "log"));
        let index_path = dir.join(segment_file_name(base_offset, "index"));
        let log = OpenOptions::new()
            .read(true)
            .append(true)
            .open(&log_path)
            .map_err(Error::io("opening segment", &log_path))?;
        let index_existed = index_path.exists();
        let index = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&index_path)
            .map_err(Error::io("opening index", &index_path))?;
        let log_len = log
            .metadata()
            .map_err(Error::io("reading size of", &log_path))?
            .len();
        let seg = Self::new(base_offset, log_path, index_path, log, index);
        let mut report = SegmentRecovery {
            base_offset,
            index_entries_dropped: 0,
            index_rebuilt: !index_existed,
            cut: None,
        };

        // 1. The longest prefix of the index that is monotonic and in bounds.
        let index_len = seg
            .index
            .metadata()
            .map_err(Error::io("reading size of", &seg.index_path))?
            .len();
        let stored = index_len / INDEX_ENTRY_LEN;
        let mut valid = 0u64;
        let mut last: Option<IndexEntry> = None;
        {
            let mut reader = BufReader::with_capacity(64 * 1024, &seg.index);
            let mut buf = [0u8; 16];
            while valid < stored {
                reader
                    .read_exact(&mut buf)
                    .map_err(Error::io("reading index", &seg.index_path))?;
                let e = IndexEntry::decode(&buf);
                let ok = match last {
                    None => e.relative_offset == 0 && e.position == 0 && e.max_ts_before == i64::MIN,
                    Some(p) => {
                        e.relative_offset > p.relative_offset
                            && e.position > p.position
                            && e.max_ts_before >= p.max_ts_before
                    }
                } && u64::from(e.position) < log_len;
                if !ok {
                    break;
                }
                last = Some(e);
                valid += 1;
            }
        }
        // 2. The last entries must point at batches that verify and carry the offset they claim.
        let mut checked = 0;
        while valid > 0 {
            let e = seg.entry(valid - 1)?;
            let expected = base_offset + u64::from(e.relative_offset);
            match seg.read_verified(u64::from(e.position), log_len)? {
                Ok((h, _)) if h.base_offset == expected => break,
                _ => {
                    valid -= 1;
                    checked += 1;
                    if checked >= 8 {
                        valid = 0;
                    }
                }
            }
        }
        report.index_entries_dropped = stored - valid;
        if valid == 0 && log_len > 0 {
            report.index_rebuilt = true;
        }
        if valid * INDEX_ENTRY_LEN != index_len {
            seg.index
                .set_len(valid * INDEX_ENTRY_LEN)
                .map_err(Error::io("truncating index", &seg.index_path))?;
        }

        // 3. Scan from the last good entry to the end of the file, indexing as the writer would.
        let (mut position, mut next, mut max_ts, mut last_index_position) = if valid > 0 {
            let e = seg.entry(valid - 1)?;
            (
                u64::from(e.position),
                base_offset + u64::from(e.relative_offset),
                e.max_ts_before,
                Some(u64::from(e.position)),
            )
        } else {
            (0, base_offset, i64::MIN, None)
        };
        let mut new_entries = Vec::new();
        while position < log_len {
            let (header, fault) = match seg.read_verified(position, log_len)? {
                Ok((h, _)) if h.base_offset == next => (Some(h), None),
                Ok((h, _)) => (
                    None,
                    Some(format!("base offset {} where {next} was expected", h.base_offset)),
                ),
                Err(fault) => (None, Some(fault.to_string())),
            };
            let Some(header) = header else {
                let reason = fault.unwrap_or_default();
                seg.log
                    .set_len(position)
                    .map_err(Error::io("truncating segment", &seg.log_path))?;
                seg.log
                    .sync_all()
                    .map_err(Error::io("syncing segment", &seg.log_path))?;
                report.cut = Some(Cut {
                    position,
                    bytes: log_len - position,
                    offset: next,
                    reason,
                });
                break;
            };
            if needs_index_entry(position, last_index_position, index_interval) {
                IndexEntry {
                    relative_offset: relative(base_offset, next)?,
                    position: position as u32,
                    max_ts_before: max_ts,
                }
                .encode(&mut new_entries);
                last_index_position = Some(position);
                valid += 1;
            }
            max_ts = max_ts.max(header.last_timestamp);
            next = header.next_offset();
            position += header.total_len as u64;
        }
        if !new_entries.is_empty() {
            use std::io::Write;
            (&seg.index)
                .write_all(&new_entries)
                .map_err(Error::io("writing index", &seg.index_path))?;
        }
        seg.committed_size.store(position, Ordering::Release);
        seg.committed_next.store(next, Ordering::Release);
        seg.index_entries.store(valid, Ordering::Release);
        seg.max_timestamp.store(max_ts, Ordering::Release);
        let tail = Tail {
            size: position,
            next_offset: next,
            last_index_position,
            max_timestamp: max_ts,
        };
        Ok((seg, tail, report))
    }

    /// Reads index entry `i` (which must be below the stored count).
    pub fn entry(&self, i: u64) -> Result<IndexEntry> {
        let mut buf = [0u8; 16];
        self.index
            .read_exact_at(&mut buf, i * INDEX_ENTRY_LEN)
            .map_err(Error::io("reading index", &self.index_path))?;
        Ok(IndexEntry::decode(&buf))
    }

    /// The last usable entry satisfying `pred` over a prefix of the index (`pred` must be true on a prefix),
    /// or the implicit entry for the first batch.
    fn last_entry_where(&self, pred: impl Fn(&IndexEntry) -> bool) -> Result<IndexEntry> {
        let (mut lo, mut hi) = (0u64, self.index_entries.load(Ordering::Acquire));
        let mut best = IndexEntry {
            relative_offset: 0,
            position: 0,
            max_ts_before: i64::MIN,
        };
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let e = self.entry(mid)?;
            if pred(&e) {
                best = e;
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Ok(best)
    }

    /// Position and base offset of the indexed batch at or before `offset`.
    pub fn lookup_offset(&self, offset: u64) -> Result<(u64, u64)> {
        let rel = offset.saturating_sub(self.base_offset);
        let e = self.last_entry_where(|e| u64::from(e.relative_offset) <= rel)?;
        Ok((
            u64::from(e.position),
            self.base_offset + u64::from(e.relative_offset),
        ))
    }

    /// Position and base offset of a batch before which no record has a timestamp `>= ts`.
    pub fn lookup_timestamp(&self, ts: i64) -> Result<(u64, u64)> {
        let e = self.last_entry_where(|e| e.max_ts_before < ts)?;
        Ok((
            u64::from(e.position),
            self.base_offset + u64::from(e.relative_offset),
        ))
    }

    /// Reads and verifies the batch at `position`, which must end at or before `limit`.
    fn read_verified(
        &self,
        position: u64,
        limit: u64,
    ) -> Result<std::result::Result<(BatchHeader, Vec<u8>), BatchFault>> {
        if limit - position < BATCH_HEADER_LEN as u64 {
            return Ok(Err(BatchFault::Truncated));
        }
        let mut head = [0u8; BATCH_HEADER_LEN];
        self.log
            .read_exact_at(&mut head, position)
            .map_err(Error::io("reading segment", &self.log_path))?;
        let header = match format::parse_header(&head) {
            Ok(h) => h,
            Err(f) => return Ok(Err(f)),
        };
        if position + header.total_len as u64 > limit {
            return Ok(Err(BatchFault::Truncated));
        }
        let mut buf = vec![0u8; header.total_len];
        self.log
            .read_exact_at(&mut buf, position)
            .map_err(Error::io("reading segment", &self.log_path))?;
        Ok(format::verify_batch(&buf).map(|h| (h, buf)))
    }

    pub fn corrupt(&self, position: u64, reason: String) -> Error {
        Error::Corrupt {
            path: self.log_path.clone(),
            position,
            reason,
        }
    }

    /// Syncs the index file (the log file is synced by the writer as its policy says).
    pub fn sync_index(&self) -> Result<()> {
        self.index
            .sync_data()
            .map_err(Error::io("syncing index", &self.index_path))
    }

    pub fn size(&self) -> u64 {
        self.committed_size.load(Ordering::Acquire)
    }
}

pub(crate) fn needs_index_entry(position: u64, last_index_position: Option<u64>, interval: u32) -> bool {
    match last_index_position {
        None => true,
        Some(last) => position - last >= u64::from(interval),
    }
}

pub(crate) fn relative(base: u64, offset: u64) -> Result<u32> {
    u32::try_from(offset - base)
        .map_err(|_| Error::Config(format!("offset {offset} too far from segment base {base}")))
}
