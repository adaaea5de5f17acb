//! Settings and descriptions of topics, queue groups and subscriptions, as the API sends and takes them.
//!
//! Settings structs have an `Option` per key: `None` is not sent, so the server's default applies; keys
//! this client does not know yet go in `extra` (and come back there). A key whose own value may be
//! `null` (`retention_ms: null` = keep forever) is an `Option<Option<_>>`: `Some(None)` sends `null`.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

/// `Some(x)` for a present key, `null` included, so that `null` is told apart from a missing key.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// When a topic's appends are acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fsync {
    /// After fsync (the default): nothing acknowledged is lost on a crash.
    Always,
    /// After `write`; fsync at most this long after a write.
    Interval(Duration),
    /// After `write`; flushing is left to the OS.
    Never,
    /// A policy this client does not know, as the server spelled it.
    Other(String),
}

impl fmt::Display for Fsync {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Always => f.write_str("always"),
            Self::Never => f.write_str("never"),
            Self::Interval(d) => write!(f, "interval:{}", d.as_millis()),
            Self::Other(s) => f.write_str(s),
        }
    }
}

impl FromStr for Fsync {
    type Err = std::convert::Infallible;
    /// Never fails: what is not `always`, `never` or `interval:<ms>` is [`Fsync::Other`] (and the server
    /// will say what is wrong with it).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "always" => Self::Always,
            "never" => Self::Never,
            _ => match s.strip_prefix("interval:").and_then(|ms| ms.parse::<u64>().ok()) {
                Some(ms) => Self::Interval(Duration::from_millis(ms)),
                None => Self::Other(s.into()),
            },
        })
    }
}

impl Serialize for Fsync {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Fsync {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(s.parse().unwrap_or(Self::Other(s)))
    }
}

/// A topic's settings (see the server's `TopicConfig` for ranges and defaults).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TopicConfig {
    /// Number of partitions, fixed at creation (server default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitions: Option<u32>,
    /// Durability policy (server default `always`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fsync: Option<Fsync>,
    /// Delete segments older than this; `Some(None)`: keep forever.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub retention_ms: Option<Option<u64>>,
    /// Delete the oldest segments of a partition above this size; `Some(None)`: no limit.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub retention_bytes: Option<Option<u64>>,
    /// Segment size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment_bytes: Option<u64>,
    /// Largest record accepted (key + headers + value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_record_bytes: Option<u32>,
    /// Keys this client does not know, sent and received as they are.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl TopicConfig {
    /// Sets the number of partitions.
    #[must_use]
    pub fn partitions(mut self, n: u32) -> Self {
        self.partitions = Some(n);
        self
    }

    /// Sets the fsync policy.
    #[must_use]
    pub fn fsync(mut self, fsync: Fsync) -> Self {
        self.fsync = Some(fsync);
        self
    }
}

/// The state of one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionInfo {
    /// Partition number.
    pub partition: u32,
    /// First offset still stored.
    pub start_offset: u64,
    /// Offset the next record gets.
    pub next_offset: u64,
    /// Bytes on disk.
    #[serde(default)]
    pub size_bytes: u64,
    /// Segment files.
    #[serde(default)]
    pub segments: u64,
}

/// A topic, its settings (every key filled in) and its partitions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopicInfo {
    /// Name.
    pub name: String,
    /// Settings.
    pub config: TopicConfig,
    /// Partitions.
    pub partitions: Vec<PartitionInfo>,
}

/// A queue group's settings (see the server's `QueueConfig` for ranges and defaults).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct QueueConfig {
    /// How long a received record stays invisible unless acked, nacked or extended (server default 30 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visibility_timeout_ms: Option<u64>,
    /// Deliveries after which an unacknowledged record is dead-lettered (server default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_deliveries: Option<u32>,
    /// Most records leased at once across the group (server default 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_in_flight: Option<u32>,
    /// Records become available this long after they were published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_delay_ms: Option<u64>,
    /// Where dead letters go (server default `<topic>.<group>.dlq`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter_topic: Option<String>,
    /// Keys this client does not know, sent and received as they are.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A queue group's settings and state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueInfo {
    /// Group.
    pub group: String,
    /// Topic.
    pub topic: String,
    /// Settings.
    pub config: QueueConfig,
    /// The dead-letter topic in use.
    pub dead_letter_topic: String,
    /// Records published and not yet done (acked or dead-lettered), leased ones included.
    pub depth: u64,
    /// Records leased right now.
    pub in_flight: u64,
    /// Keys this client does not know.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// How a subscription delivers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubscriptionKind {
    /// A queue group: receive, ack, nack, dead letters.
    #[default]
    Queue,
    /// A stream group: poll and commit offsets.
    Stream,
}

/// Where a subscription's filter policy looks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FilterScope {
    /// The JSON value.
    #[default]
    Body,
    /// The headers.
    Headers,
}

/// What a subscription is.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SubscriptionSpec {
    /// Queue or stream group (server default `queue`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<SubscriptionKind>,
    /// An SNS filter policy; `None` lets every record through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter_policy: Option<Value>,
    /// Where the policy looks (server default `body`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter_scope: Option<FilterScope>,
    /// The queue group's settings (kind `queue`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<QueueConfig>,
    /// Keys this client does not know, sent and received as they are.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A subscription as listed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubscriptionInfo {
    /// Topic.
    pub topic: String,
    /// Name, which is also its group's name.
    pub name: String,
    /// What it is.
    #[serde(flatten)]
    pub spec: SubscriptionSpec,
}

/// A stream group's position on one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupPartition {
    /// Partition.
    pub partition: u32,
    /// The next offset the group will process; `None` before its first commit.
    pub committed: Option<u64>,
    /// First offset still stored.
    pub start_offset: u64,
    /// Offset the next record gets.
    pub next_offset: u64,
    /// Records from the committed offset (or the start) to the end.
    pub lag: u64,
}

/// A stream group's committed offsets and lag on a topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupLag {
    /// Group.
    pub group: String,
    /// Topic.
    pub topic: String,
    /// Sum of the partitions' lag.
    pub lag: u64,
    /// The membership's generation (0 when no member ever joined).
    #[serde(default)]
    pub generation: u64,
    /// Live members and their partitions.
    #[serde(default)]
    pub members: Vec<MemberInfo>,
    /// Per partition.
    pub partitions: Vec<GroupPartition>,
}

/// A live member of a stream group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    /// The member's id.
    pub member_id: String,
    /// Its partitions in the current generation.
    pub partitions: Vec<u32>,
    /// Its session length in milliseconds.
    pub session_timeout_ms: u64,
}

/// Where [`crate::StreamConsumer::seek`] moves a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeekTo {
    /// The first offset still stored.
    Earliest,
    /// The end: only records published from now on.
    Latest,
    /// An exact offset (out of range is an error).
    Offset(u64),
    /// The first record at or after this time (ms since the epoch); the end if none.
    Timestamp(i64),
}

impl Serialize for SeekTo {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        #[serde(rename_all = "lowercase")]
        enum Wire {
            Earliest,
            Latest,
            Offset(u64),
            Timestamp(i64),
        }
        match *self {
            Self::Earliest => Wire::Earliest,
            Self::Latest => Wire::Latest,
            Self::Offset(o) => Wire::Offset(o),
            Self::Timestamp(t) => Wire::Timestamp(t),
        }
        .serialize(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn configs_send_only_what_is_set_and_tell_null_from_missing() {
        let c = TopicConfig::default()
            .partitions(4)
            .fsync(Fsync::Interval(Duration::from_millis(50)));
        assert_eq!(
            serde_json::to_value(&c).unwrap(),
            json!({"partitions": 4, "fsync": "interval:50"})
        );
        let c = TopicConfig {
            retention_ms: Some(None),
            ..TopicConfig::default()
        };
        assert_eq!(serde_json::to_value(&c).unwrap(), json!({"retention_ms": null}));
        let back: TopicConfig = serde_json::from_value(json!({
            "partitions": 1, "fsync": "never", "retention_ms": null, "retention_bytes": 5,
            "segment_bytes": 1024, "max_record_bytes": 10, "new_key": true
        }))
        .unwrap();
        assert_eq!(back.retention_ms, Some(None));
        assert_eq!(back.retention_bytes, Some(Some(5)));
        assert_eq!(back.fsync, Some(Fsync::Never));
        assert_eq!(back.extra.get("new_key"), Some(&json!(true)));
        assert_eq!(
            serde_json::to_value(SeekTo::Offset(3)).unwrap(),
            json!({"offset": 3})
        );
        assert_eq!(serde_json::to_value(SeekTo::Latest).unwrap(), json!("latest"));
    }
}
