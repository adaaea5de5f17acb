//! Sequential reading: seek once through the index, then read forward in chunks.
//!
//! A reader holds at most one chunk (default 256 KiB, or one batch if a batch is larger) plus the records
//! decoded from it, whatever the size of the log: memory does not grow with the log.

use std::collections::VecDeque;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::format::{self, BATCH_HEADER_LEN, Record};
use crate::log::Shared;
use crate::segment::Segment;

/// Iterates over records from an offset to the current end of the log.
///
/// `next()` returns `None` at the end of what is committed; calling it again later returns records appended
/// since. After an error it returns `None`.
pub struct LogReader {
    shared: Arc<Shared>,
    segment: Arc<Segment>,
    /// File position of `chunk[0]`.
    chunk_position: u64,
    chunk: Bytes,
    /// Offset of the next record to return.
    next_offset: u64,
    /// Base offset the batch at `chunk_position` must have, when known.
    expected_base: Option<u64>,
    /// The first batch came from an index lookup and is re-read from the segment start if it disagrees.
    from_index: bool,
    chunk_size: usize,
    decoded: VecDeque<Record>,
    failed: bool,
}

impl std::fmt::Debug for LogReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogReader")
            .field("segment", &self.segment.base_offset)
            .field("position", &self.chunk_position)
            .field("next_offset", &self.next_offset)
            .finish()
    }
}

impl LogReader {
    pub(crate) fn new(shared: Arc<Shared>, offset: u64, chunk_size: usize) -> Result<Self> {
        let start = shared.start_offset.load(Ordering::Acquire);
        let end = shared.next_offset.load(Ordering::Acquire);
        let out_of_range = || Error::OffsetOutOfRange { offset, start, end };
        if offset < start || offset > end {
            return Err(out_of_range());
        }
        let segment = shared.segment_for(offset).ok_or_else(out_of_range)?;
        let (position, base) = segment.lookup_offset(offset)?;
        Ok(Self {
            shared,
            segment,
            chunk_position: position,
            chunk: Bytes::new(),
            next_offset: offset,
            expected_base: Some(base),
            from_index: position > 0,
            chunk_size: chunk_size.max(BATCH_HEADER_LEN),
            decoded: VecDeque::new(),
            failed: false,
        })
    }

    /// Offset of the next record this reader will return.
    pub fn position(&self) -> u64 {
        self.decoded.front().map_or(self.next_offset, |r| r.offset)
    }

    /// Makes `chunk` hold at least `n` bytes from `chunk_position`, reading at most up to `limit`.
    fn fill(&mut self, n: usize, limit: u64) -> Result<bool> {
        if self.chunk.len() >= n {
            return Ok(true);
        }
        let available = limit.saturating_sub(self.chunk_position);
        if (available as usize) < n {
            return Ok(false);
        }
        let want = (available as usize).min(self.chunk_size.max(n));
        let mut buffer = crate::buffers::POOL.take(want);
        let buf = buffer.as_mut_slice();
        let have = self.chunk.len();
        buf[..have].copy_from_slice(&self.chunk);
        self.segment
            .log
            .read_exact_at(&mut buf[have..], self.chunk_position + have as u64)
            .map_err(Error::io("reading segment", &self.segment.log_path))?;
        self.chunk = buffer.freeze();
        Ok(true)
    }

    /// Decodes the next batch into `decoded`; `Ok(false)` at the end of what is committed.
    fn next_batch(&mut self) -> Result<bool> {
        loop {
            let limit = self.segment.committed_size.load(Ordering::Acquire);
            if !self.fill(BATCH_HEADER_LEN, limit)? {
                if limit > self.chunk_position {
                    return Err(self
                        .segment
                        .corrupt(self.chunk_position, "batch runs past the segment end".into()));
                }
                // End of this segment: move on if a later one exists. The size is read again after seeing
                // the successor, because the writer finalises a segment before it publishes the next.
                let Some(next) = self.shared.segment_after(self.segment.base_offset) else {
                    return Ok(false);
                };
                if self.segment.committed_size.load(Ordering::Acquire) > self.chunk_position {
                    continue;
                }
                // Retention deleted what lies between this reader and the next segment: say so, as Kafka
                // does, rather than skip records without a word.
                let start = self.shared.start_offset.load(Ordering::Acquire);
                if next.base_offset > self.next_offset && self.next_offset < start {
                    let end = self.shared.next_offset.load(Ordering::Acquire);
                    return Err(Error::OffsetOutOfRange {
                        offset: self.next_offset,
                        start,
                        end,
                    });
                }
                self.segment = next;
                self.chunk_position = 0;
                self.chunk = Bytes::new();
                self.expected_base = Some(self.segment.base_offset);
                self.from_index = false;
                continue;
            }
            let header = format::parse_header(&self.chunk)
                .map_err(|f| self.segment.corrupt(self.chunk_position, f.to_string()));
            let header = match header {
                Ok(h) => h,
                Err(e) if self.from_index => {
                    self.restart_from_segment_start(&e);
                    continue;
                }
                Err(e) => return Err(e),
            };
            if self.chunk_position + header.total_len as u64 > limit || !self.fill(header.total_len, limit)? {
                return Err(self
                    .segment
                    .corrupt(self.chunk_position, "batch runs past the committed end".into()));
            }
            let verified = format::verify_batch(&self.chunk[..header.total_len])
                .map_err(|f| self.segment.corrupt(self.chunk_position, f.to_string()))
                .and_then(|h| match self.expected_base {
                    Some(b) if b != h.base_offset => Err(self.segment.corrupt(
                        self.chunk_position,
                        format!("batch has base offset {} where {b} was expected", h.base_offset),
                    )),
                    _ => Ok(h),
                });
            let header = match verified {
                Ok(h) => h,
                Err(e) if self.from_index => {
                    self.restart_from_segment_start(&e);
                    continue;
                }
                Err(e) => return Err(e),
            };
            self.from_index = false;
            let batch = self.chunk.split_to(header.total_len);
            self.chunk_position += header.total_len as u64;
            self.expected_base = Some(header.next_offset());
            if header.next_offset() <= self.next_offset {
                continue;
            }
            format::decode_records(batch, &header, self.next_offset, &mut self.decoded).map_err(|f| {
                self.segment
                    .corrupt(self.chunk_position - header.total_len as u64, f.to_string())
            })?;
            self.next_offset = header.next_offset();
            return Ok(true);
        }
    }

    /// The index pointed somewhere that does not hold the batch it promised: scan the segment instead.
    fn restart_from_segment_start(&mut self, why: &Error) {
        tracing::warn!(segment = %self.segment.log_path.display(), error = %why,
            "index entry disagrees with the log; scanning the segment from its start");
        self.from_index = false;
        self.chunk_position = 0;
        self.chunk = Bytes::new();
        self.expected_base = Some(self.segment.base_offset);
    }
}

impl Iterator for LogReader {
    type Item = Result<Record>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        loop {
            if let Some(r) = self.decoded.pop_front() {
                return Some(Ok(r));
            }
            match self.next_batch() {
                Ok(true) => {}
                Ok(false) => return None,
                Err(e) => {
                    self.failed = true;
                    return Some(Err(e));
                }
            }
        }
    }
}
