//! Topic settings.

use std::time::Duration;

use ferry_log::{FsyncPolicy, LogConfig};
use serde::{Deserialize, Serialize};

use crate::error::BrokerError;

/// Segments roll after this long at the latest (Kafka's `segment.ms` default).
const DEFAULT_SEGMENT_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

/// Most partitions a topic may have.
pub const MAX_PARTITIONS: u32 = 1024;
/// Largest `max_record_bytes` a topic may set.
pub const MAX_RECORD_BYTES_LIMIT: u32 = 8 * 1024 * 1024;

/// A topic's settings; every key has a default, unknown keys are refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "utoipa", schema(default))]
#[serde(deny_unknown_fields, default)]
pub struct TopicConfig {
    /// Number of partitions, 1..=1024. Fixed at creation.
    #[cfg_attr(feature = "utoipa", schema(minimum = 1, maximum = 1024))]
    pub partitions: u32,
    /// `always` (default), `interval:<ms>` or `never`.
    #[cfg_attr(feature = "utoipa", schema(value_type = String, pattern = "^(always|never|interval:0*[1-9][0-9]*)$"))]
    pub fsync: FsyncPolicy,
    /// Delete segments whose newest record is older than this many milliseconds (`null`: keep forever).
    #[cfg_attr(feature = "utoipa", schema(minimum = 1))]
    pub retention_ms: Option<u64>,
    /// Delete the oldest segments of a partition while it is larger than this (`null`: no limit).
    #[cfg_attr(feature = "utoipa", schema(minimum = 1))]
    pub retention_bytes: Option<u64>,
    /// Roll segments at this size, 1 KiB..=1 GiB.
    #[cfg_attr(feature = "utoipa", schema(minimum = 1024, maximum = 1073741824))]
    pub segment_bytes: u64,
    /// Largest record (key + headers + value, encoded) accepted, up to 8 MiB.
    #[cfg_attr(feature = "utoipa", schema(minimum = 1, maximum = 8388608))]
    pub max_record_bytes: u32,
}

impl Default for TopicConfig {
    fn default() -> Self {
        Self {
            partitions: 1,
            fsync: FsyncPolicy::Always,
            retention_ms: Some(7 * 24 * 3600 * 1000),
            retention_bytes: None,
            segment_bytes: 128 * 1024 * 1024,
            max_record_bytes: 1024 * 1024,
        }
    }
}

impl TopicConfig {
    /// Checks every value; pure.
    ///
    /// # Errors
    /// [`BrokerError::InvalidConfig`] naming the first key out of range.
    pub fn validate(&self) -> Result<(), BrokerError> {
        let bad = |field, message: String| Err(BrokerError::InvalidConfig { field, message });
        if !(1..=MAX_PARTITIONS).contains(&self.partitions) {
            return bad(
                "partitions",
                format!("must be 1..={MAX_PARTITIONS}, got {}", self.partitions),
            );
        }
        if !(1024..=1 << 30).contains(&self.segment_bytes) {
            return bad(
                "segment_bytes",
                format!("must be 1024..=1073741824, got {}", self.segment_bytes),
            );
        }
        if !(1..=MAX_RECORD_BYTES_LIMIT).contains(&self.max_record_bytes) {
            return bad(
                "max_record_bytes",
                format!(
                    "must be 1..={MAX_RECORD_BYTES_LIMIT}, got {}",
                    self.max_record_bytes
                ),
            );
        }
        if self.retention_ms == Some(0) {
            return bad("retention_ms", "must be > 0 (or null to keep forever)".into());
        }
        if self.retention_bytes == Some(0) {
            return bad("retention_bytes", "must be > 0 (or null for no limit)".into());
        }
        Ok(())
    }

    /// The settings of each partition's log.
    pub fn log_config(&self) -> LogConfig {
        LogConfig {
            segment_bytes: self.segment_bytes,
            retention_age: self.retention_ms.map(Duration::from_millis),
            // Retention deletes whole segments, and the active one only once it rolled: roll at least
            // as often as records expire, so nothing outlives `retention_ms` by more than that again.
            segment_age: Some(self.retention_ms.map_or(DEFAULT_SEGMENT_AGE, |ms| {
                Duration::from_millis(ms).min(DEFAULT_SEGMENT_AGE)
            })),
            retention_bytes: self.retention_bytes,
            fsync: self.fsync,
            // A batch holds one publish request's records for one partition: many records.
            max_batch_bytes: ferry_log::MAX_BATCH_LEN,
            ..LogConfig::default()
        }
    }
}

/// A queue group's settings (SQS-like); every key has a default, unknown keys are refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "utoipa", schema(default))]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// How long a received record stays invisible to other receivers unless acked, nacked or extended.
    #[cfg_attr(feature = "utoipa", schema(minimum = 1, maximum = 43200000))]
    pub visibility_timeout_ms: u64,
    /// Deliveries after which an unacknowledged record goes to the dead-letter topic, 1..=1000.
    #[cfg_attr(feature = "utoipa", schema(minimum = 1, maximum = 1000))]
    pub max_deliveries: u32,
    /// Most records leased at once across the group's consumers (backpressure), 1..=100000.
    #[cfg_attr(feature = "utoipa", schema(minimum = 1, maximum = 100000))]
    pub max_in_flight: u32,
    /// Records become available this long after they were published (SQS `DelaySeconds`).
    #[cfg_attr(feature = "utoipa", schema(maximum = 1209600000))]
    pub delivery_delay_ms: u64,
    /// Where dead letters go; `null` means `<topic>.<group>.dlq` (created on demand, one partition).
    #[cfg_attr(
        feature = "utoipa",
        schema(min_length = 1, max_length = 249, pattern = "^[A-Za-z0-9._-]+$")
    )]
    pub dead_letter_topic: Option<String>,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            visibility_timeout_ms: 30_000,
            max_deliveries: 5,
            max_in_flight: 1000,
            delivery_delay_ms: 0,
            dead_letter_topic: None,
        }
    }
}

impl QueueConfig {
    /// Checks every value; pure.
    ///
    /// # Errors
    /// [`BrokerError::InvalidConfig`] naming the first key out of range.
    pub fn validate(&self) -> Result<(), BrokerError> {
        let bad = |field, message: String| Err(BrokerError::InvalidConfig { field, message });
        const DAY_MS: u64 = 24 * 3600 * 1000;
        if !(1..=12 * 3600 * 1000).contains(&self.visibility_timeout_ms) {
            return bad(
                "visibility_timeout_ms",
                format!("must be 1..=43200000 (12 h), got {}", self.visibility_timeout_ms),
            );
        }
        if !(1..=1000).contains(&self.max_deliveries) {
            return bad(
                "max_deliveries",
                format!("must be 1..=1000, got {}", self.max_deliveries),
            );
        }
        if !(1..=100_000).contains(&self.max_in_flight) {
            return bad(
                "max_in_flight",
                format!("must be 1..=100000, got {}", self.max_in_flight),
            );
        }
        if self.delivery_delay_ms > 14 * DAY_MS {
            return bad(
                "delivery_delay_ms",
                format!("must be at most 14 days, got {}", self.delivery_delay_ms),
            );
        }
        if let Some(t) = &self.dead_letter_topic {
            crate::names::validate_name("dead_letter_topic", t)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_unknown_keys_are_refused() {
        TopicConfig::default().validate().unwrap();
        let c: TopicConfig = serde_json::from_str(r#"{"partitions": 4, "fsync": "interval:50"}"#).unwrap();
        assert_eq!(c.partitions, 4);
        assert!(serde_json::from_str::<TopicConfig>(r#"{"partitons": 4}"#).is_err());
        let e = TopicConfig {
            partitions: 0,
            ..TopicConfig::default()
        }
        .validate()
        .unwrap_err();
        assert!(matches!(
            e,
            BrokerError::InvalidConfig {
                field: "partitions",
                ..
            }
        ));
    }

    #[test]
    fn segments_roll_at_least_as_often_as_records_expire() {
        let short = TopicConfig {
            retention_ms: Some(60_000),
            ..TopicConfig::default()
        };
        assert_eq!(short.log_config().segment_age, Some(Duration::from_secs(60)));
        let forever = TopicConfig {
            retention_ms: None,
            ..TopicConfig::default()
        };
        assert_eq!(forever.log_config().segment_age, Some(DEFAULT_SEGMENT_AGE));
        assert_eq!(
            TopicConfig::default().log_config().segment_age,
            Some(DEFAULT_SEGMENT_AGE)
        );
    }
}
