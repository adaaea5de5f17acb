//! Errors of stages, the bus, and configuration.

use std::fmt;

/// Why a stage could not handle a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageError {
    /// What went wrong, for logs and the `ferry-error` header of a dead letter.
    pub message: String,
    /// Retrying cannot help (a jq error on this record, a value a sink cannot take): the record goes to
    /// the dead-letter topic at once.
    pub permanent: bool,
}

impl StageError {
    /// A failure that may pass (a server down, a timeout): retried with backoff.
    pub fn transient(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            permanent: false,
        }
    }

    /// A failure of this record that will not pass: dead-lettered without retries.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            permanent: true,
        }
    }
}

impl fmt::Display for StageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for StageError {}

pub use ferry_broker::engine::EngineError as BusError;
