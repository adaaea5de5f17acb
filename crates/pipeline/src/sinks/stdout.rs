//! `type = "stdout"`: one JSON line per record on standard output.

use std::io::Write;

use crate::bus::BoxFuture;
use crate::component::Sink;
use crate::error::StageError;
use crate::event::Event;

/// Prints each record's value as one line of JSON on standard output.
#[derive(Debug, Default)]
pub struct StdoutSink {}

impl Sink for StdoutSink {
    fn write<'a>(&'a self, events: &'a [Event]) -> BoxFuture<'a, Result<(), StageError>> {
        Box::pin(async move {
            let lines = json_lines(events)?;
            // A reader that stops reading (a full pipe) blocks the write: keep that off the runtime's
            // workers. The lock is taken and released inside the blocking task, never across an await.
            tokio::task::spawn_blocking(move || {
                let mut out = std::io::stdout().lock();
                out.write_all(&lines).and_then(|()| out.flush())
            })
            .await
            .map_err(|e| StageError::transient(format!("stdout: the writing task failed: {e}")))?
            // Not the record's fault (a closed pipe, a full disk behind a redirect): retried.
            .map_err(|e| StageError::transient(format!("stdout: {e}")))
        })
    }
}

/// The records' values, one JSON document and a newline each.
fn json_lines(events: &[Event]) -> Result<Vec<u8>, StageError> {
    let mut out = Vec::new();
    for event in events {
        serde_json::to_writer(&mut out, &event.value)
            .map_err(|e| StageError::permanent(format!("stdout: cannot serialize the record: {e}")))?;
        out.push(b'\n');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn one_compact_line_per_record() {
        let events = [Event::new(json!({"a": 1, "b": "x y"})), Event::new(json!("text"))];
        let lines = json_lines(&events).unwrap();
        assert_eq!(
            String::from_utf8(lines).unwrap(),
            "{\"a\":1,\"b\":\"x y\"}\n\"text\"\n"
        );
    }

    #[tokio::test]
    async fn writes_to_stdout() {
        StdoutSink::default()
            .write(&[Event::new(json!({"ok": true}))])
            .await
            .unwrap();
    }
}
