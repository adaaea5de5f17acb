//! ferry's storage engine: a durable, segmented, append-only log for one partition.
//!
//! Synchronous code with no network and no async runtime: one writer thread per log does all writing,
//! any number of threads read. The layers above (the broker) give each partition one [`Log`].
//!
//! ```text
//! <dir>/
//!   .lock                                   flock held while the log is open
//!   00000000000000000000.log                segment: record batches back to back (see `format`)
//!   00000000000000000000.index              sparse offset + timestamp index (see `segment`)
//!   00000000000000004711.log                the next segment starts at the offset after the last one
//!   00000000000000004711.index
//! ```
//!
//! Invariants:
//! - Offsets are dense within a segment and increase across segments.
//! - An append is acknowledged only once its bytes are durable under the [`FsyncPolicy`]: after `fdatasync`
//!   for `always`; after `write` for `interval:<ms>` (synced within that interval) and `never`.
//! - Appends that arrive together are written by one vectored `write` and made durable by one fsync
//!   (group commit); each append stays its own batch with its own checksum.
//! - Readers see only acknowledged records, never a torn or corrupt one: every batch is verified (CRC32C,
//!   expected base offset) before its records are returned.
//! - On open, each segment's tail is scanned from its last index entry; the first batch that does not
//!   verify is cut off with everything after it, and logged. Missing or damaged indexes are rebuilt.
//! - Segments roll by size and age; retention deletes whole segments, oldest first, by age or total size.

mod buffers;
mod config;
mod error;
mod format;
mod log;
mod reader;
mod segment;

pub use crate::config::{FsyncPolicy, LogConfig};
pub use crate::error::{Error, Result};
pub use crate::format::{
    BATCH_HEADER_LEN, EncodedBatch, FORMAT_VERSION, Header, MAX_BATCH_LEN, NewRecord, Record,
};
pub use crate::log::{
    Appended, Clock, HOT_BYTES, Housekeeping, Log, LogObserver, LogOptions, ManualClock, Recovery,
    SystemClock,
};
pub use crate::reader::LogReader;
pub use crate::segment::{Cut, SegmentRecovery};
