//! Sources: `http` (a route on the server), `generate` (records made on a timer), and the bridges
//! `rabbitmq` (a RabbitMQ queue) and `nats` (a core NATS subscription); `topic` needs no code of its own
//! (the first stage reads the topic).

pub mod generate;
pub mod http;
pub mod nats;
pub mod rabbitmq;

use std::time::Duration;

use serde_json::{Value, json};

use crate::bus::SharedBus;
use crate::config::BodyFormat;
use crate::runtime::StageMetrics;

/// What a bridge source (`rabbitmq`, `nats`) runs with: where it publishes and what it counts.
#[derive(Clone)]
pub struct BridgeContext {
    /// The pipeline's name.
    pub pipeline: String,
    /// The source stage's name.
    pub stage: String,
    /// The topic records are published to.
    pub topic: String,
    /// The broker the pipeline runs on.
    pub bus: SharedBus,
    /// The stage's counters.
    pub metrics: StageMetrics,
}

impl std::fmt::Debug for BridgeContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BridgeContext")
            .field("pipeline", &self.pipeline)
            .field("stage", &self.stage)
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

/// The record of a message body: the JSON value (`json`), or `{"text": body}` (`text`).
///
/// # Errors
/// Why the body cannot be read that way (not JSON, not UTF-8), for the log.
pub fn decode_body(format: BodyFormat, body: &[u8]) -> Result<Value, String> {
    match format {
        BodyFormat::Json => {
            serde_json::from_slice(body).map_err(|e| format!("the body is not JSON ({e}): {}", snippet(body)))
        }
        BodyFormat::Text => match std::str::from_utf8(body) {
            Ok(text) => Ok(json!({ "text": text })),
            Err(e) => Err(format!("the body is not UTF-8 text: {e}")),
        },
    }
}

/// The start of a body, for a log line.
fn snippet(body: &[u8]) -> String {
    const MAX: usize = 80;
    let text = String::from_utf8_lossy(&body[..body.len().min(MAX)]);
    if body.len() > MAX {
        format!("{text:?}...")
    } else {
        format!("{text:?}")
    }
}

/// Exponential backoff of a bridge: 200 ms, doubled after each failure, at most 10 s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Backoff {
    next: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(200);
    const MAX: Duration = Duration::from_secs(10);

    pub(crate) const fn new() -> Self {
        Self { next: Self::FIRST }
    }

    /// The wait after one more failure.
    pub(crate) fn fail(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        wait
    }

    /// Back to the first wait after a success.
    pub(crate) fn reset(&mut self) {
        self.next = Self::FIRST;
    }
}

/// Sleeps `wait` unless `cancel` comes first; false when cancelled.
pub(crate) async fn pause(cancel: &tokio_util::sync::CancellationToken, wait: Duration) -> bool {
    tokio::select! {
        () = cancel.cancelled() => false,
        () = tokio::time::sleep(wait) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_read_by_format() {
        assert_eq!(
            decode_body(BodyFormat::Json, br#"{"a": 1}"#).unwrap(),
            json!({"a": 1})
        );
        let e = decode_body(BodyFormat::Json, b"alice~hi").unwrap_err();
        assert!(e.contains("not JSON") && e.contains("alice~hi"), "{e}");
        assert_eq!(
            decode_body(BodyFormat::Text, "alice~hi ~ there é".as_bytes()).unwrap(),
            json!({"text": "alice~hi ~ there é"})
        );
        assert!(decode_body(BodyFormat::Text, &[0xff, 0xfe]).is_err());
    }

    #[test]
    fn backoff_doubles_to_ten_seconds_and_resets() {
        let mut b = Backoff::new();
        let waits: Vec<u128> = (0..8).map(|_| b.fail().as_millis()).collect();
        assert_eq!(waits, [200, 400, 800, 1600, 3200, 6400, 10_000, 10_000]);
        b.reset();
        assert_eq!(b.fail(), Duration::from_millis(200));
    }
}
