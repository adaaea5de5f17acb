//! `type = "file"`: JSON Lines appended to a file, flushed (and by default fsynced) before records are
//! acked, with optional size-based rotation.
//!
//! Rotation: before a line would take the file past `rotate_bytes`, the file is renamed to `<path>.1`
//! (an older `<path>.1` to `<path>.2`, and so on) and a new one is started. At most [`KEEP_ROTATED`]
//! rotated files are kept: the oldest, `<path>.9`, is deleted. A file never rotates while empty, so a
//! single line longer than `rotate_bytes` gets a file to itself rather than being split or refused.
//!
//! After a failed write the file is cut back to the length it had before the batch, so that a torn line
//! does not break the JSON Lines for readers; the batch is then retried whole (at-least-once: a batch
//! written but not fsynced before a crash may appear twice).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::Mutex;

use crate::bus::BoxFuture;
use crate::component::{Batching, BuildContext, Sink};
use crate::config::FileSinkConfig;
use crate::error::StageError;
use crate::event::Event;

/// Rotated files kept (`<path>.1` ... `<path>.9`); older ones are deleted.
pub const KEEP_ROTATED: u32 = 9;

/// Problems of a `file` sink's settings, each with its key.
pub fn validate(c: &FileSinkConfig) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if c.path.as_os_str().is_empty() {
        out.push(("path".into(), "must not be empty".into()));
    } else if c.path.file_name().is_none() {
        out.push((
            "path".into(),
            format!("`{}` does not name a file", c.path.display()),
        ));
    }
    if c.rotate_bytes == Some(0) {
        out.push(("rotate_bytes".into(), "must be at least 1".into()));
    }
    out
}

/// Appends each record's value as one line of JSON to a file.
#[derive(Debug)]
pub struct FileSink {
    path: PathBuf,
    rotate_bytes: Option<u64>,
    fsync: bool,
    /// The open file, `None` until opened or after a failure (reopened by the next write). Writes take
    /// it with an owned guard into a blocking task, so a write whose future is dropped still holds it
    /// until the blocking task finishes: two batches never interleave in the file.
    file: Arc<Mutex<Option<OpenFile>>>,
}

#[derive(Debug)]
struct OpenFile {
    file: File,
    len: u64,
}

impl FileSink {
    /// Opens (creating it and its directory if missing) `c.path`, relative to the working directory.
    ///
    /// # Errors
    /// Invalid settings, or a file that cannot be created or opened for appending.
    pub fn new(c: &FileSinkConfig, _ctx: &BuildContext) -> anyhow::Result<Self> {
        if let Some((key, message)) = validate(c).into_iter().next() {
            anyhow::bail!("{key}: {message}");
        }
        let open =
            open(&c.path, c.fsync).with_context(|| format!("path: cannot open `{}`", c.path.display()))?;
        Ok(Self {
            path: c.path.clone(),
            rotate_bytes: c.rotate_bytes,
            fsync: c.fsync,
            file: Arc::new(Mutex::new(Some(open))),
        })
    }
}

impl Sink for FileSink {
    fn batching(&self) -> Option<Batching> {
        // One flush and fsync per batch rather than per record.
        Some(Batching {
            max_records: 1000,
            max_bytes: 4 * 1024 * 1024,
            max_age: Duration::ZERO,
        })
    }

    fn write<'a>(&'a self, events: &'a [Event]) -> BoxFuture<'a, Result<(), StageError>> {
        Box::pin(async move {
            let mut lines = Vec::with_capacity(events.len());
            for event in events {
                let mut line = serde_json::to_vec(&event.value)
                    .map_err(|e| StageError::permanent(format!("file: cannot serialize the record: {e}")))?;
                line.push(b'\n');
                lines.push(line);
            }
            let mut guard = Arc::clone(&self.file).lock_owned().await;
            let path = self.path.clone();
            let (rotate_bytes, fsync) = (self.rotate_bytes, self.fsync);
            tokio::task::spawn_blocking(move || {
                let result = append(&mut guard, &path, &lines, rotate_bytes, fsync);
                if result.is_err() {
                    // Whatever state the handle is in, the next write starts from a fresh open.
                    *guard = None;
                }
                result.map_err(|e| StageError::transient(format!("file `{}`: {e}", path.display())))
            })
            .await
            .map_err(|e| StageError::transient(format!("file: the writing task failed: {e}")))?
        })
    }
}

/// Appends `lines`, rotating as needed, then flushes and fsyncs.
fn append(
    slot: &mut Option<OpenFile>,
    path: &Path,
    lines: &[Vec<u8>],
    rotate_bytes: Option<u64>,
    fsync: bool,
) -> io::Result<()> {
    let mut current = match slot.take() {
        Some(open) => open,
        None => open(path, fsync)?,
    };
    let mut chunk = Vec::new();
    for line in lines {
        let line_len = line.len() as u64;
        let pending = current.len + chunk.len() as u64;
        if let Some(limit) = rotate_bytes
            && pending > 0
            && pending + line_len > limit
        {
            write_chunk(&mut current, &chunk, fsync)?;
            chunk.clear();
            drop(current);
            rotate(path, fsync)?;
            current = open(path, fsync)?;
        }
        chunk.extend_from_slice(line);
    }
    write_chunk(&mut current, &chunk, fsync)?;
    *slot = Some(current);
    Ok(())
}

/// Writes `chunk` at the end of the file and makes it durable; on failure, cuts the file back so no torn
/// line is left.
fn write_chunk(open: &mut OpenFile, chunk: &[u8], fsync: bool) -> io::Result<()> {
    if chunk.is_empty() {
        return Ok(());
    }
    let written = open
        .file
        .write_all(chunk)
        .and_then(|()| open.file.flush())
        .and_then(|()| if fsync { open.file.sync_data() } else { Ok(()) });
    match written {
        Ok(()) => {
            open.len += chunk.len() as u64;
            Ok(())
        }
        Err(e) => {
            // Best effort: the original error is the one worth reporting.
            let _ = open.file.set_len(open.len);
            Err(e)
        }
    }
}

/// Opens `path` for appending, creating it and its directory; with `fsync`, a new file's directory entry
/// is made durable too (an fsynced file that vanishes with its name after a crash is no better).
fn open(path: &Path, fsync: bool) -> io::Result<OpenFile> {
    let dir = parent(path);
    std::fs::create_dir_all(dir)?;
    let existed = path.exists();
    let file = OpenOptions::new().create(true).append(true).open(path)?;
    let len = file.metadata()?.len();
    if fsync && !existed {
        sync_dir(dir)?;
    }
    Ok(OpenFile { file, len })
}

/// `path` -> `path.1`, shifting older ones up and dropping the one past [`KEEP_ROTATED`].
fn rotate(path: &Path, fsync: bool) -> io::Result<()> {
    let numbered = |n: u32| {
        let mut name = path.as_os_str().to_owned();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    };
    match std::fs::remove_file(numbered(KEEP_ROTATED)) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    for n in (1..KEEP_ROTATED).rev() {
        match std::fs::rename(numbered(n), numbered(n + 1)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    std::fs::rename(path, numbered(1))?;
    if fsync {
        sync_dir(parent(path))?;
    }
    Ok(())
}

/// The directory `path` is in (`.` for a bare file name).
fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Makes renames and new entries in `dir` durable (the `email` sink's outbox uses it too).
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    // Directories cannot be opened as files elsewhere; their entries are durable with the file's metadata.
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::sinks::topic::tests::context;

    fn config(path: PathBuf, rotate_bytes: Option<u64>) -> FileSinkConfig {
        FileSinkConfig {
            path,
            rotate_bytes,
            fsync: true,
        }
    }

    fn read_lines(path: &Path) -> Vec<Value> {
        let text = std::fs::read_to_string(path).unwrap();
        assert!(text.is_empty() || text.ends_with('\n'), "{text:?}");
        text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    #[test]
    fn validation_names_keys() {
        assert!(validate(&config("out.jsonl".into(), Some(1))).is_empty());
        let problems = validate(&config(PathBuf::new(), Some(0)));
        let keys: Vec<&str> = problems.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["path", "rotate_bytes"], "{problems:?}");
    }

    #[tokio::test]
    async fn appends_json_lines_across_writes_and_sinks() {
        let dir = tempfile::tempdir().unwrap();
        let (ctx, _) = context(dir.path());
        let path = dir.path().join("deep/er/out.jsonl");
        let sink = FileSink::new(&config(path.clone(), None), &ctx).unwrap();
        assert!(sink.batching().is_some());
        sink.write(&[Event::new(json!({"n": 1, "s": "a\nb"})), Event::new(json!("x"))])
            .await
            .unwrap();
        sink.write(&[Event::new(json!({"n": 3}))]).await.unwrap();
        drop(sink);
        // A restarted pipeline appends to what is there.
        let sink = FileSink::new(&config(path.clone(), None), &ctx).unwrap();
        sink.write(&[Event::new(json!([4]))]).await.unwrap();
        assert_eq!(
            read_lines(&path),
            [
                json!({"n": 1, "s": "a\nb"}),
                json!("x"),
                json!({"n": 3}),
                json!([4])
            ]
        );
    }

    #[tokio::test]
    async fn rotates_before_passing_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let (ctx, _) = context(dir.path());
        let path = dir.path().join("out.jsonl");
        // Each line `{"n":N}\n` is 8 bytes: two fit in 20 bytes, a third would pass it.
        let sink = FileSink::new(&config(path.clone(), Some(20)), &ctx).unwrap();
        let events: Vec<Event> = (0..5).map(|n| Event::new(json!({"n": n}))).collect();
        sink.write(&events[..3]).await.unwrap();
        sink.write(&events[3..]).await.unwrap();
        let rotated = |n: u32| PathBuf::from(format!("{}.{n}", path.display()));
        assert_eq!(read_lines(&rotated(2)), [json!({"n": 0}), json!({"n": 1})]);
        assert_eq!(read_lines(&rotated(1)), [json!({"n": 2}), json!({"n": 3})]);
        assert_eq!(read_lines(&path), [json!({"n": 4})]);
        assert!(!rotated(3).exists());
    }

    #[tokio::test]
    async fn keeps_at_most_nine_rotated_files_and_never_splits_a_line() {
        let dir = tempfile::tempdir().unwrap();
        let (ctx, _) = context(dir.path());
        let path = dir.path().join("out.jsonl");
        // Every line is longer than the limit: each one gets a file of its own.
        let sink = FileSink::new(&config(path.clone(), Some(1)), &ctx).unwrap();
        let events: Vec<Event> = (0..12).map(|n| Event::new(json!({"n": n}))).collect();
        sink.write(&events).await.unwrap();
        let rotated = |n: u32| PathBuf::from(format!("{}.{n}", path.display()));
        assert_eq!(read_lines(&path), [json!({"n": 11})]);
        for n in 1..=KEEP_ROTATED {
            assert_eq!(read_lines(&rotated(n)), [json!({"n": 11 - n})]);
        }
        assert!(!rotated(KEEP_ROTATED + 1).exists());
    }
}
