//! `ferry log ...`: the storage engine ([`ferry_log`]) used directly on one log directory (one partition),
//! until the broker puts topics on top of it.
//!
//! A log directory is locked while a command has it open, so `read` and `info` fail with "locked" while an
//! `append` runs on the same directory. Opening a log recovers it (cuts a torn tail, rebuilds indexes), so
//! `info` reports what its own open repaired. These commands never apply retention: deleting old data is a
//! topic setting of the broker, not a side effect of looking at a log.

use std::io::{self, BufRead, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use clap::{Args, Subcommand};
use ferry_log::{Appended, FsyncPolicy, Header, Log, LogConfig, NewRecord, Recovery};
use serde::Serialize;

use crate::cli::json::JsonRecord;

/// `ferry log <command>`.
#[derive(Debug, Subcommand)]
pub enum LogCommand {
    /// Append records; prints `{"offset":N}` on stdout for each record once it is durable under --fsync.
    Append(AppendArgs),
    /// Print records as JSON lines: {"offset","timestamp","key","headers","value"}.
    ///
    /// Byte fields that are not valid UTF-8 are printed as `<field>_hex` (e.g. "value_hex") instead.
    Read(ReadArgs),
    /// Print a log's offsets, segments and size, and what opening it recovered, as JSON.
    Info(InfoArgs),
}

/// Arguments of `ferry log append`.
#[derive(Debug, Args)]
pub struct AppendArgs {
    /// Log directory; created if missing.
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,

    /// When an append counts as done: `always` (after fsync; appends in flight share one fsync),
    /// `interval:<ms>` (after write, fsync within <ms>) or `never` (after write). The log is synced when
    /// the command exits in every case.
    #[arg(long, value_name = "POLICY", default_value = "always", value_parser = parse_fsync)]
    fsync: FsyncPolicy,

    /// Key of every record appended by this command.
    #[arg(long, value_name = "KEY")]
    key: Option<String>,

    /// A header of every record appended by this command; repeat for more (names may repeat).
    #[arg(long = "header", value_name = "KEY=VALUE", value_parser = parse_header)]
    headers: Vec<Header>,

    /// Start a new segment before one would grow past this many bytes (1024..=1073741824).
    #[arg(long, value_name = "BYTES", default_value_t = LogConfig::default().segment_bytes,
        value_parser = clap::value_parser!(u64).range(1024..=1 << 30))]
    segment_bytes: u64,

    /// The record's value. `-` or nothing: one record per line of stdin, without its trailing `\n`.
    #[arg(value_name = "VALUE")]
    value: Option<String>,
}

/// Where `ferry log read` starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    Earliest,
    Offset(u64),
}

/// Arguments of `ferry log read`.
#[derive(Debug, Args)]
pub struct ReadArgs {
    /// Log directory; must exist.
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,

    /// First offset to print, or `earliest` (the default) for the oldest record still stored.
    #[arg(long, value_name = "OFFSET|earliest", value_parser = parse_from, conflicts_with = "from_time")]
    from: Option<Start>,

    /// Start at the first record whose timestamp (ms since the Unix epoch) is at least MS.
    #[arg(long, value_name = "MS")]
    from_time: Option<i64>,

    /// Print at most N records.
    #[arg(long, value_name = "N")]
    max: Option<usize>,
}

/// Arguments of `ferry log info`.
#[derive(Debug, Args)]
pub struct InfoArgs {
    /// Log directory; must exist.
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
}

/// Runs one `ferry log` command.
///
/// # Errors
/// Bad arguments (naming the flag), I/O and log errors (naming the directory or file).
pub fn run(cmd: LogCommand) -> Result<()> {
    match cmd {
        LogCommand::Append(args) => append(args),
        LogCommand::Read(args) => read(args),
        LogCommand::Info(args) => info(args),
    }
}

/// An `--fsync` flag, refused with the log crate's own message.
pub(crate) fn parse_fsync(s: &str) -> Result<FsyncPolicy, String> {
    s.parse::<FsyncPolicy>().map_err(|e| match e {
        ferry_log::Error::Config(msg) => msg,
        other => other.to_string(),
    })
}

fn parse_header(s: &str) -> Result<Header, String> {
    let (key, value) = super::parse_header(s)?;
    Ok(Header {
        key,
        value: Bytes::from(value),
    })
}

fn parse_from(s: &str) -> Result<Start, String> {
    if s == "earliest" {
        return Ok(Start::Earliest);
    }
    s.parse::<u64>()
        .map(Start::Offset)
        .map_err(|_| format!("expected an offset or `earliest`, got `{s}`"))
}

fn open(dir: &Path, config: LogConfig) -> Result<Log> {
    Log::open(dir, config).with_context(|| format!("--dir `{}`", dir.display()))
}

/// Settings for commands that only look: nothing rolls, nothing is deleted while they run.
fn read_only_config() -> LogConfig {
    LogConfig {
        segment_age: None,
        retention_age: None,
        retention_bytes: None,
        housekeeping_interval: Duration::from_secs(24 * 3600),
        ..LogConfig::default()
    }
}

/// Refuses directories that hold no log, so a typo in `--dir` does not create a new, empty log.
fn existing_log_dir(dir: &Path) -> Result<()> {
    let entries = std::fs::read_dir(dir).with_context(|| format!("--dir `{}`", dir.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("--dir `{}`", dir.display()))?;
        if entry.file_name().to_string_lossy().ends_with(".log") {
            return Ok(());
        }
    }
    bail!(
        "--dir `{}`: not a ferry log directory (it holds no `.log` segment files)",
        dir.display()
    )
}

fn append(args: AppendArgs) -> Result<()> {
    let config = LogConfig {
        fsync: args.fsync,
        segment_bytes: args.segment_bytes,
        retention_age: None,
        retention_bytes: None,
        ..LogConfig::default()
    };
    let template = NewRecord {
        timestamp: None,
        key: args.key.map(Bytes::from),
        headers: args.headers,
        value: Bytes::new(),
    };
    let log = open(&args.dir, config)?;
    match args.value.as_deref() {
        Some(value) if value != "-" => {
            let record = NewRecord {
                value: Bytes::copy_from_slice(value.as_bytes()),
                ..template
            };
            let appended = log
                .append(std::slice::from_ref(&record))
                .context("appending VALUE")?;
            let mut out = io::stdout().lock();
            print_offset(&mut out, &appended)?;
            out.flush()?;
            log.close().context("closing the log")
        }
        _ => append_lines(log, &template),
    }
}

/// The outcome of appending one stdin line, with its line number.
type Ack = (u64, ferry_log::Result<Appended>);

fn print_offset(out: &mut impl Write, appended: &Appended) -> io::Result<()> {
    writeln!(out, "{{\"offset\":{}}}", appended.base_offset)
}

/// Appends each stdin line as its own batch without waiting for the previous one, so lines that arrive
/// while an fsync runs share the next fsync (group commit). A printer thread prints offsets as the
/// completions arrive, which is in input order: the writer completes batches in the order it got them.
fn append_lines(log: Log, template: &NewRecord) -> Result<()> {
    let (tx, rx) = mpsc::channel::<Ack>();
    let stop = Arc::new(AtomicBool::new(false));
    let printer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let result = print_offsets(&rx);
            if result.is_err() {
                stop.store(true, Ordering::Release);
            }
            result
        })
    };

    let fed = feed_lines(&log, template, &tx, &stop);

    drop(tx);
    // Closing waits for every queued append to complete, which drops the last senders and ends the printer.
    let closed = log.close().context("closing the log");
    let printed = printer
        .join()
        .map_err(|_| anyhow!("the offset printer panicked"))?;
    printed.and(fed).and(closed)
}

/// Queues one append per stdin line until stdin ends or `stop` is set.
fn feed_lines(log: &Log, template: &NewRecord, tx: &Sender<Ack>, stop: &AtomicBool) -> Result<()> {
    let mut input = io::stdin().lock();
    let mut line = Vec::new();
    let mut line_no = 0u64;
    while !stop.load(Ordering::Acquire) {
        line.clear();
        if input.read_until(b'\n', &mut line).context("reading stdin")? == 0 {
            break;
        }
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        line_no += 1;
        let record = NewRecord {
            value: Bytes::copy_from_slice(&line),
            ..template.clone()
        };
        let batch = log
            .encode(std::slice::from_ref(&record))
            .with_context(|| format!("stdin line {line_no}"))?;
        // Checked here, not only by the writer, so no line after a rejected one is appended.
        let max = log.config().max_batch_bytes;
        if batch.len() > max {
            bail!(
                "stdin line {line_no}: {} bytes encoded exceed the maximum batch size of {max} bytes",
                batch.len()
            );
        }
        let tx = tx.clone();
        log.append_encoded(batch, move |result| {
            let _ = tx.send((line_no, result));
        });
    }
    Ok(())
}

fn print_offsets(rx: &Receiver<Ack>) -> Result<()> {
    let mut out = BufWriter::new(io::stdout().lock());
    loop {
        let (line_no, result) = match rx.try_recv() {
            Ok(msg) => msg,
            Err(TryRecvError::Empty) => {
                // Nothing waiting: show what we have before blocking, so offsets appear as records land.
                out.flush()?;
                match rx.recv() {
                    Ok(msg) => msg,
                    Err(_) => break,
                }
            }
            Err(TryRecvError::Disconnected) => break,
        };
        match result {
            Ok(appended) => print_offset(&mut out, &appended)?,
            Err(e) => {
                out.flush()?;
                return Err(anyhow::Error::new(e).context(format!("appending stdin line {line_no}")));
            }
        }
    }
    out.flush()?;
    Ok(())
}

fn read(args: ReadArgs) -> Result<()> {
    existing_log_dir(&args.dir)?;
    let log = open(&args.dir, read_only_config())?;
    let from = match (args.from, args.from_time) {
        (_, Some(ms)) => match log
            .offset_for_timestamp(ms)
            .with_context(|| format!("--from-time {ms}"))?
        {
            Some(offset) => offset,
            None => return log.close().context("closing the log"),
        },
        (Some(Start::Offset(offset)), None) => offset,
        (Some(Start::Earliest) | None, None) => log.start_offset(),
    };
    let reader = log.reader(from).with_context(|| format!("--from {from}"))?;
    let mut out = BufWriter::new(io::stdout().lock());
    for record in reader.take(args.max.unwrap_or(usize::MAX)) {
        let record = record.context("reading the log")?;
        // As an io::Error, so a closed stdout is recognised as one (see `is_broken_pipe`).
        serde_json::to_writer(&mut out, &JsonRecord(&record)).map_err(io::Error::from)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    log.close().context("closing the log")
}

#[derive(Debug, Serialize)]
struct Info {
    dir: String,
    format_version: u8,
    start_offset: u64,
    next_offset: u64,
    records: u64,
    segments: usize,
    size_bytes: u64,
    recovery: RecoveryInfo,
}

/// What opening the log repaired; `segments` lists only the segments where something was done.
#[derive(Debug, Serialize)]
struct RecoveryInfo {
    segments_cut: usize,
    indexes_repaired: usize,
    segments: Vec<SegmentRepair>,
}

#[derive(Debug, Serialize)]
struct SegmentRepair {
    base_offset: u64,
    index_rebuilt: bool,
    index_entries_dropped: u64,
    cut: Option<CutInfo>,
}

#[derive(Debug, Serialize)]
struct CutInfo {
    position: u64,
    bytes: u64,
    offset: u64,
    reason: String,
}

impl RecoveryInfo {
    fn new(recovery: &Recovery) -> Self {
        let segments: Vec<SegmentRepair> = recovery
            .segments
            .iter()
            .filter(|s| s.cut.is_some() || s.index_rebuilt || s.index_entries_dropped > 0)
            .map(|s| SegmentRepair {
                base_offset: s.base_offset,
                index_rebuilt: s.index_rebuilt,
                index_entries_dropped: s.index_entries_dropped,
                cut: s.cut.as_ref().map(|c| CutInfo {
                    position: c.position,
                    bytes: c.bytes,
                    offset: c.offset,
                    reason: c.reason.clone(),
                }),
            })
            .collect();
        Self {
            segments_cut: segments.iter().filter(|s| s.cut.is_some()).count(),
            indexes_repaired: segments
                .iter()
                .filter(|s| s.index_rebuilt || s.index_entries_dropped > 0)
                .count(),
            segments,
        }
    }
}

fn info(args: InfoArgs) -> Result<()> {
    existing_log_dir(&args.dir)?;
    let log = open(&args.dir, read_only_config())?;
    let info = Info {
        dir: args.dir.display().to_string(),
        format_version: ferry_log::FORMAT_VERSION,
        start_offset: log.start_offset(),
        next_offset: log.next_offset(),
        records: log.next_offset() - log.start_offset(),
        segments: log.segment_count(),
        size_bytes: log.size_bytes(),
        recovery: RecoveryInfo::new(log.recovery()),
    };
    let mut out = io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, &info).map_err(io::Error::from)?;
    out.write_all(b"\n")?;
    out.flush()?;
    log.close().context("closing the log")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_split_at_the_first_equals_sign() {
        let h = parse_header("trace=a=b").unwrap();
        assert_eq!((h.key.as_str(), &h.value[..]), ("trace", &b"a=b"[..]));
        let h = parse_header("empty=").unwrap();
        assert_eq!((h.key.as_str(), &h.value[..]), ("empty", &b""[..]));
        assert!(parse_header("novalue").unwrap_err().contains("KEY=VALUE"));
        assert!(parse_header("=v").unwrap_err().contains("KEY=VALUE"));
    }

    #[test]
    fn from_is_an_offset_or_earliest() {
        assert_eq!(parse_from("earliest"), Ok(Start::Earliest));
        assert_eq!(parse_from("42"), Ok(Start::Offset(42)));
        assert!(parse_from("latest").unwrap_err().contains("`latest`"));
        assert!(parse_from("-1").is_err());
    }

    #[test]
    fn fsync_errors_carry_the_log_crate_message() {
        assert_eq!(
            parse_fsync("interval:5"),
            Ok(FsyncPolicy::Interval(Duration::from_millis(5)))
        );
        let err = parse_fsync("sometimes").unwrap_err();
        assert!(
            err.contains("interval:<ms>") && err.contains("`sometimes`"),
            "{err}"
        );
    }
}
