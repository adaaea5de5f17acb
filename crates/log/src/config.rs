//! Per-log configuration.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// When appended bytes are forced to stable storage, and so when an append is acknowledged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum FsyncPolicy {
    /// fsync before acknowledging; appends that arrive together share one fsync (group commit).
    #[default]
    Always,
    /// Acknowledge after `write`; fsync at most this long after a write.
    Interval(Duration),
    /// Acknowledge after `write`; leave flushing to the OS (segments are still synced when they roll).
    Never,
}

impl FromStr for FsyncPolicy {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "always" => Ok(Self::Always),
            "never" => Ok(Self::Never),
            _ => {
                let ms = s
                    .strip_prefix("interval:")
                    .and_then(|ms| ms.parse::<u64>().ok())
                    .filter(|ms| *ms > 0);
                ms.map(|ms| Self::Interval(Duration::from_millis(ms)))
                    .ok_or_else(|| {
                        Error::Config(format!(
                            "fsync must be `always`, `never` or `interval:<ms>` with ms > 0, got `{s}`"
                        ))
                    })
            }
        }
    }
}

impl fmt::Display for FsyncPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Always => f.write_str("always"),
            Self::Never => f.write_str("never"),
            Self::Interval(d) => write!(f, "interval:{}", d.as_millis()),
        }
    }
}

impl TryFrom<String> for FsyncPolicy {
    type Error = Error;
    fn try_from(s: String) -> Result<Self, Error> {
        s.parse()
    }
}

impl From<FsyncPolicy> for String {
    fn from(p: FsyncPolicy) -> String {
        p.to_string()
    }
}

/// Settings of one log (one partition). Defaults follow Kafka's where they exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// Roll to a new segment before it would grow past this size (a single larger batch still fits an
    /// empty segment). 1 KiB ..= 1 GiB.
    pub segment_bytes: u64,
    /// Roll a non-empty segment this long after its first append (wall-clock time of the append, not the
    /// record timestamps; a reopened segment counts from the reopen).
    pub segment_age: Option<Duration>,
    /// Delete whole segments whose newest record is older than this.
    pub retention_age: Option<Duration>,
    /// Delete the oldest segments while the log is larger than this.
    pub retention_bytes: Option<u64>,
    /// Durability of appends.
    pub fsync: FsyncPolicy,
    /// Write an index entry after at least this many bytes of batches.
    pub index_interval_bytes: u32,
    /// Largest batch accepted, in bytes (at most [`crate::MAX_BATCH_LEN`]).
    pub max_batch_bytes: usize,
    /// Largest amount of appended bytes the writer gathers into one write (and one fsync).
    pub max_group_bytes: usize,
    /// How often the writer checks age-based rolling and retention (busy or idle).
    pub housekeeping_interval: Duration,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            segment_bytes: 128 * 1024 * 1024,
            segment_age: Some(Duration::from_secs(7 * 24 * 3600)),
            retention_age: Some(Duration::from_secs(7 * 24 * 3600)),
            retention_bytes: None,
            fsync: FsyncPolicy::Always,
            index_interval_bytes: 4096,
            max_batch_bytes: 8 * 1024 * 1024,
            max_group_bytes: 8 * 1024 * 1024,
            housekeeping_interval: Duration::from_secs(30),
        }
    }
}

impl LogConfig {
    /// Checks value ranges; pure.
    ///
    /// # Errors
    /// [`Error::Config`] naming the key and value that are out of range.
    pub fn validate(&self) -> Result<(), Error> {
        if !(1024..=1 << 30).contains(&self.segment_bytes) {
            return Err(Error::Config(format!(
                "segment_bytes must be 1024..=1073741824, got {}",
                self.segment_bytes
            )));
        }
        if self.index_interval_bytes == 0 {
            return Err(Error::Config("index_interval_bytes must be > 0".into()));
        }
        if self.max_batch_bytes == 0 || self.max_batch_bytes > crate::MAX_BATCH_LEN {
            return Err(Error::Config(format!(
                "max_batch_bytes must be 1..={}, got {}",
                crate::MAX_BATCH_LEN,
                self.max_batch_bytes
            )));
        }
        if self.max_group_bytes == 0 {
            return Err(Error::Config("max_group_bytes must be > 0".into()));
        }
        if self.housekeeping_interval.is_zero() {
            return Err(Error::Config("housekeeping_interval must be > 0".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fsync_policy_parses_and_prints() {
        for s in ["always", "never", "interval:250"] {
            assert_eq!(s.parse::<FsyncPolicy>().unwrap().to_string(), s);
        }
        for bad in [
            "",
            "sometimes",
            "interval:",
            "interval:0",
            "interval:-5",
            "interval:1s",
        ] {
            let err = bad.parse::<FsyncPolicy>().unwrap_err().to_string();
            assert!(err.contains("fsync"), "{err}");
        }
    }

    #[test]
    fn defaults_are_valid_and_ranges_are_checked() {
        LogConfig::default().validate().unwrap();
        let bad = LogConfig {
            segment_bytes: 10,
            ..LogConfig::default()
        };
        assert!(bad.validate().unwrap_err().to_string().contains("segment_bytes"));
    }
}
