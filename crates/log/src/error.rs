//! Errors of the log.

use std::path::PathBuf;

/// Result alias for log operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O call failed; `context` says what the log was doing.
    #[error("{context} `{}`: {source}", path.display())]
    Io {
        /// What the log was doing.
        context: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// An append with no records.
    #[error("a batch needs at least one record")]
    EmptyBatch,
    /// A batch larger than the configured or format maximum.
    #[error("batch of {size} bytes exceeds the maximum of {max} bytes")]
    BatchTooLarge {
        /// Encoded size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// A read below the log start or past its end.
    #[error("offset {offset} is out of range [{start}, {end}]")]
    OffsetOutOfRange {
        /// The offset asked for.
        offset: u64,
        /// The first offset still stored.
        start: u64,
        /// The next offset to be written.
        end: u64,
    },
    /// Stored bytes failed verification while reading; the record is not served.
    #[error("corrupt batch in `{}` at byte {position}: {reason}", path.display())]
    Corrupt {
        /// Segment file.
        path: PathBuf,
        /// Byte position of the batch.
        position: u64,
        /// What was wrong.
        reason: String,
    },
    /// Another process (or another `Log` in this one) holds the directory.
    #[error("log directory `{}` is locked by another user", path.display())]
    Locked {
        /// The directory.
        path: PathBuf,
    },
    /// An invalid configuration value.
    #[error("invalid log config: {0}")]
    Config(String),
    /// An earlier fsync or write failed in a way that leaves the file's durable state unknown; the log
    /// refuses further appends until it is reopened (and recovered).
    #[error("log `{}` stopped accepting appends after an I/O failure; reopen it", path.display())]
    Poisoned {
        /// The log directory.
        path: PathBuf,
    },
    /// The log was closed.
    #[error("log is closed")]
    Closed,
}

impl Error {
    pub(crate) fn io(
        context: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io {
            context,
            path,
            source,
        }
    }
}
