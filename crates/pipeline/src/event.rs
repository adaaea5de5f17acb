//! What flows through a pipeline: a JSON value with headers, and where it was read from.

use serde_json::Value;

/// Headers set by the runtime on dead letters and replays; stages strip them from what they emit.
pub mod headers {
    /// Why the record was dead-lettered (the last error).
    pub const ERROR: &str = "ferry-error";
    /// The pipeline whose stage failed.
    pub const PIPELINE: &str = "ferry-pipeline";
    /// The stage that failed.
    pub const STAGE: &str = "ferry-stage";
    /// The topic the stage read the record from (where `ferry dlq replay` sends it back).
    pub const TOPIC: &str = "ferry-topic";
    /// Partition it was read from.
    pub const PARTITION: &str = "ferry-partition";
    /// Offset it was read from.
    pub const OFFSET: &str = "ferry-offset";
    /// Attempts made before it was dead-lettered.
    pub const ATTEMPTS: &str = "ferry-attempts";
    /// On a replayed record: the only stage that processes it; every other reader of the topic skips it.
    pub const REPLAY_STAGE: &str = "ferry-replay-stage";
    /// On a record that failed validation: the errors, as a JSON array of strings.
    pub const VALIDATION_ERRORS: &str = "ferry-validation-errors";

    /// True for the runtime's own headers, which are not passed on to the next stage.
    pub fn is_runtime(name: &str) -> bool {
        [
            ERROR,
            PIPELINE,
            STAGE,
            TOPIC,
            PARTITION,
            OFFSET,
            ATTEMPTS,
            REPLAY_STAGE,
        ]
        .contains(&name)
    }
}

/// Where a record was read from; `None` for records a source made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: u32,
    /// Offset.
    pub offset: u64,
    /// When it was published, ms since the Unix epoch.
    pub timestamp_ms: i64,
}

/// One record in a pipeline.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The record's value: JSON. A value that was not JSON but UTF-8 text is a JSON string.
    pub value: Value,
    /// Headers, in order (UTF-8; others are dropped when read).
    pub headers: Vec<(String, String)>,
    /// Key, if any (UTF-8).
    pub key: Option<String>,
    /// Where it was read from.
    pub origin: Option<Origin>,
}

impl Event {
    /// An event made by a source: no headers, no key, no origin.
    pub fn new(value: Value) -> Self {
        Self {
            value,
            headers: Vec::new(),
            key: None,
            origin: None,
        }
    }

    /// The first header called `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Sets header `name`, replacing every earlier one of that name.
    pub fn set_header(&mut self, name: &str, value: impl Into<String>) {
        self.headers.retain(|(k, _)| k != name);
        self.headers.push((name.to_owned(), value.into()));
    }

    /// The size it takes as a stored record, about: the JSON value plus headers and key.
    pub fn approx_bytes(&self) -> usize {
        // Serializing a Value to a counting sink cannot fail.
        let value = serde_json::to_vec(&self.value).map_or(0, |v| v.len());
        value
            + self.key.as_ref().map_or(0, String::len)
            + self.headers.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>()
    }
}
