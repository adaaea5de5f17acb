//! The partition log: a directory of segments, one writer thread, any number of readers.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{IoSlice, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::config::{FsyncPolicy, LogConfig};
use crate::error::{Error, Result};
use crate::format::{EncodedBatch, NewRecord};
use crate::reader::LogReader;
use crate::segment::{IndexEntry, Segment, SegmentRecovery, Tail, needs_index_entry, relative};

/// Where time comes from: record timestamps, segment age and retention.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64)
    }
}

/// A clock that moves only when told to (tests and simulations).
#[derive(Debug, Default)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    /// A clock showing `ms`.
    pub fn new(ms: i64) -> Self {
        Self(AtomicI64::new(ms))
    }
    /// Moves the clock forward by `ms`.
    pub fn advance(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Hooks for metrics one layer up; called on the writer thread (and `fsynced` of the interval policy's
/// periodic fsync on the background fsync thread), so keep them cheap.
pub trait LogObserver: Send + Sync + 'static {
    /// Records up to `next_offset` (exclusive) became readable.
    fn committed(&self, _next_offset: u64) {}
    /// An fsync of `bytes` appended bytes took `took`.
    fn fsynced(&self, _took: Duration) {}
}

/// How a log is opened: its config plus the process-level pieces.
#[derive(Clone)]
pub struct LogOptions {
    /// Log settings.
    pub config: LogConfig,
    /// Time source.
    pub clock: Arc<dyn Clock>,
    /// Optional metrics hook.
    pub observer: Option<Arc<dyn LogObserver>>,
}

impl fmt::Debug for LogOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogOptions")
            .field("config", &self.config)
            .field("clock", &self.clock)
            .finish()
    }
}

impl From<LogConfig> for LogOptions {
    fn from(config: LogConfig) -> Self {
        Self {
            config,
            clock: Arc::new(SystemClock),
            observer: None,
        }
    }
}

/// Offsets given to an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Offset of the first record.
    pub base_offset: u64,
    /// Offset of the last record.
    pub last_offset: u64,
}

/// What opening the log found and repaired.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// One entry per segment.
    pub segments: Vec<SegmentRecovery>,
}

impl Recovery {
    /// True when any segment was cut.
    pub fn cut_anything(&self) -> bool {
        self.segments.iter().any(|s| s.cut.is_some())
    }
}

/// What a housekeeping pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Housekeeping {
    /// The active segment was rolled because of its age.
    pub rolled: bool,
    /// Segments deleted by retention.
    pub deleted_segments: usize,
    /// Bytes deleted by retention.
    pub deleted_bytes: u64,
}

type Completion = Box<dyn FnOnce(Result<Appended>) + Send>;

enum Command {
    /// A batch, the policy it is appended under, and its completion.
    Append(EncodedBatch, FsyncPolicy, Completion),
    Roll(SyncSender<Result<()>>),
    Housekeep(SyncSender<Result<Housekeeping>>),
    Flush(SyncSender<Result<()>>),
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub dir: PathBuf,
    pub config: LogConfig,
    /// Sorted by base offset; the last is the active segment.
    pub segments: RwLock<Vec<Arc<Segment>>>,
    pub start_offset: AtomicU64,
    pub next_offset: AtomicU64,
    /// The end of the log when it was opened: what lies past it was written by this process.
    pub opened_at: u64,
    poisoned: AtomicBool,
    pub clock: Arc<dyn Clock>,
}

impl Shared {
    pub fn segments(&self) -> Vec<Arc<Segment>> {
        self.segments.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The segment holding `offset`, if any is left.
    pub fn segment_for(&self, offset: u64) -> Option<Arc<Segment>> {
        let segs = self.segments.read().unwrap_or_else(|e| e.into_inner());
        let i = segs.partition_point(|s| s.base_offset <= offset);
        i.checked_sub(1).map(|i| segs[i].clone())
    }

    /// The first segment after the one based at `base`.
    pub fn segment_after(&self, base: u64) -> Option<Arc<Segment>> {
        let segs = self.segments.read().unwrap_or_else(|e| e.into_inner());
        let i = segs.partition_point(|s| s.base_offset <= base);
        segs.get(i).cloned()
    }
}

/// One partition's log. Cheap to share behind an `Arc`; all methods take `&self`.
pub struct Log {
    shared: Arc<Shared>,
    tx: Option<SyncSender<Command>>,
    writer: Option<JoinHandle<()>>,
    recovery: Recovery,
    _lock: File,
}

impl fmt::Debug for Log {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Log")
            .field("dir", &self.shared.dir)
            .field("start_offset", &self.start_offset())
            .field("next_offset", &self.next_offset())
            .finish()
    }
}

impl Log {
    /// Opens (creating if needed) the log in `dir` with `config` and the system clock.
    ///
    /// # Errors
    /// See [`Log::open_with`].
    pub fn open(dir: impl AsRef<Path>, config: LogConfig) -> Result<Self> {
        Self::open_with(dir, config.into())
    }

    /// Opens (creating if needed) the log in `dir`, recovering from an unclean shutdown: torn or corrupt
    /// tails are cut (and logged), damaged indexes rebuilt.
    ///
    /// # Errors
    /// [`Error::Config`] for an invalid config, [`Error::Locked`] when the directory is in use,
    /// [`Error::Io`] when the files cannot be read or repaired.
    pub fn open_with(dir: impl AsRef<Path>, options: LogOptions) -> Result<Self> {
        let LogOptions {
            config,
            clock,
            observer,
        } = options;
        config.validate()?;
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir).map_err(Error::io("creating log directory", &dir))?;
        let lock_path = dir.join(".lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(Error::io("opening lock file", &lock_path))?;
        lock.try_lock().map_err(|_| Error::Locked { path: dir.clone() })?;

        let mut bases = Vec::new();
        for entry in fs::read_dir(&dir).map_err(Error::io("listing log directory", &dir))? {
            let entry = entry.map_err(Error::io("listing log directory", &dir))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if let Some(base) = name.strip_suffix(".log").and_then(|b| b.parse::<u64>().ok()) {
                bases.push(base);
            }
        }
        bases.sort_unstable();

        let mut segments = Vec::with_capacity(bases.len().max(1));
        let mut recovery = Recovery::default();
        let mut tail: Option<Tail> = None;
        for (i, &base) in bases.iter().enumerate() {
            let (seg, seg_tail, report) = Segment::open(&dir, base, config.index_interval_bytes)?;
            if let Some(cut) = &report.cut {
                if i + 1 == bases.len() {
                    tracing::warn!(dir = %dir.display(), segment = base, position = cut.position, bytes = cut.bytes,
                        offset = cut.offset, reason = %cut.reason, "cut torn or corrupt tail of the log");
                } else {
                    tracing::error!(dir = %dir.display(), segment = base, position = cut.position, bytes = cut.bytes,
                        offset = cut.offset, reason = %cut.reason,
                        "cut corrupt tail of a sealed segment: records from this offset to the next segment are lost");
                }
            }
            if report.index_rebuilt || report.index_entries_dropped > 0 {
                tracing::warn!(dir = %dir.display(), segment = base, dropped = report.index_entries_dropped,
                    rebuilt = report.index_rebuilt, "repaired segment index");
            }
            if let Some(prev) = &tail
                && base < prev.next_offset
            {
                return Err(Error::Corrupt {
                    path: seg.log_path.clone(),
                    position: 0,
                    reason: format!(
                        "segment starts at {base} but the previous one ends at {}",
                        prev.next_offset
                    ),
                });
            }
            if i + 1 < bases.len() {
                seg.sealed.store(true, Ordering::Relaxed);
            }
            recovery.segments.push(report);
            tail = Some(seg_tail);
            segments.push(Arc::new(seg));
        }
        let tail = match tail {
            Some(t) => t,
            None => {
                segments.push(Arc::new(Segment::create(&dir, 0)?));
                sync_dir(&dir)?;
                Tail {
                    size: 0,
                    next_offset: 0,
                    last_index_position: None,
                    max_timestamp: i64::MIN,
                }
            }
        };
        let start = segments[0].base_offset;
        let active = segments[segments.len() - 1].clone();
        if tail.size > 0 {
            // The age of a reopened segment counts from now: its creation time is not recorded.
            active.roll_anchor_ms.store(clock.now_ms(), Ordering::Relaxed);
        }
        let shared = Arc::new(Shared {
            dir,
            config,
            segments: RwLock::new(segments),
            start_offset: AtomicU64::new(start),
            next_offset: AtomicU64::new(tail.next_offset),
            opened_at: tail.next_offset,
            poisoned: AtomicBool::new(false),
            clock,
        });
        let (tx, rx) = mpsc::sync_channel(4096);
        let (completer, completions) = mpsc::channel::<Vec<(Completion, Result<Appended>)>>();
        let queued_completions = Arc::new(AtomicUsize::new(0));
        let queued = queued_completions.clone();
        let completion_thread = std::thread::Builder::new()
            .name("ferry-log-acks".into())
            .spawn(move || {
                for group in completions {
                    group.into_iter().for_each(|(done, result)| done(result));
                    queued.fetch_sub(1, Ordering::AcqRel);
                }
            })
            .map_err(Error::io("spawning completion thread", &shared.dir))?;
        let writer = Writer {
            shared: shared.clone(),
            observer,
            active,
            size: tail.size,
            next_offset: tail.next_offset,
            last_index_position: tail.last_index_position,
            max_ts: tail.max_timestamp,
            pending: Vec::new(),
            pending_bytes: 0,
            completer,
            queued_completions,
            pending_index: Vec::new(),
            pending_index_entries: 0,
            unsynced: false,
            unsynced_bytes: 0,
            last_sync: Instant::now(),
            syncing: Arc::new(AtomicBool::new(false)),
            sync_group: false,
            relaxed_due: None,
            relaxed_every: Duration::ZERO,
            synced_in_background: false,
        };
        let handle = std::thread::Builder::new()
            .name("ferry-log-writer".into())
            .spawn(move || {
                writer.run(rx);
                let _ = completion_thread.join();
            })
            .map_err(Error::io("spawning writer thread", &shared.dir))?;
        Ok(Self {
            shared,
            tx: Some(tx),
            writer: Some(handle),
            recovery,
            _lock: lock,
        })
    }

    /// What opening found and repaired.
    pub fn recovery(&self) -> &Recovery {
        &self.recovery
    }

    /// The log's directory.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// The log's settings.
    pub fn config(&self) -> &LogConfig {
        &self.shared.config
    }

    /// First offset still stored.
    pub fn start_offset(&self) -> u64 {
        self.shared.start_offset.load(Ordering::Acquire)
    }

    /// Offset the next record will get; everything below it (and at or above `start_offset`) is readable.
    pub fn next_offset(&self) -> u64 {
        self.shared.next_offset.load(Ordering::Acquire)
    }

    /// Whether a read from `offset` is a short copy from memory: the record was appended by this process
    /// (so its bytes went through the page cache), to the active segment, within about [`HOT_BYTES`]
    /// of its end. Such a read may run right on an async task; others, which may go to the disk, belong on a
    /// blocking thread. A caught-up consumer reads hot; one catching up does not.
    pub fn is_hot(&self, offset: u64) -> bool {
        if offset < self.shared.opened_at || offset >= self.next_offset() {
            return false;
        }
        let segments = self.shared.segments.read().unwrap_or_else(|e| e.into_inner());
        let Some(active) = segments.last().filter(|s| s.base_offset <= offset) else {
            return false;
        };
        // The bytes from `offset` to the end, estimated from the segment's mean record size: no index
        // lookup (the read does one).
        let records = (self.next_offset() - active.base_offset).max(1);
        let from_end = (self.next_offset() - offset).saturating_mul(active.size() / records);
        from_end <= HOT_BYTES
    }

    /// Number of segment files.
    pub fn segment_count(&self) -> usize {
        self.shared
            .segments
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// Committed bytes over all segments.
    pub fn size_bytes(&self) -> u64 {
        self.shared.segments().iter().map(|s| s.size()).sum()
    }

    /// Appends `records` as one batch and blocks until it is durable under the fsync policy.
    ///
    /// # Errors
    /// [`Error::EmptyBatch`], [`Error::BatchTooLarge`], [`Error::Poisoned`] after an earlier I/O failure,
    /// [`Error::Closed`], or the I/O error that failed this append.
    pub fn append(&self, records: &[NewRecord]) -> Result<Appended> {
        let batch = EncodedBatch::encode(records, self.shared.clock.now_ms())?;
        let (tx, rx) = mpsc::sync_channel(1);
        self.append_encoded(batch, move |r| {
            let _ = tx.send(r);
        });
        rx.recv().map_err(|_| Error::Closed)?
    }

    /// Encodes `records` with this log's clock, on the calling thread.
    ///
    /// # Errors
    /// As [`EncodedBatch::encode`].
    pub fn encode(&self, records: &[NewRecord]) -> Result<EncodedBatch> {
        EncodedBatch::encode(records, self.shared.clock.now_ms())
    }

    /// Queues an encoded batch and returns at once; `done` runs once the batch is durable under the fsync
    /// policy (or failed), on the log's completion thread, or on its writer thread when the batch needed no
    /// fsync (completions run in append order either way). `done` must not block, nor wait for an append to
    /// any log.
    pub fn append_encoded(&self, batch: EncodedBatch, done: impl FnOnce(Result<Appended>) + Send + 'static) {
        self.append_encoded_as(batch, self.shared.config.fsync, done);
    }

    /// [`Log::append_encoded`] for a batch that needs less than the log's policy: on a log with
    /// `fsync = always`, a batch appended as [`FsyncPolicy::Interval`] completes once written and is
    /// synced in the background within that interval (or by any later `always` append, whose fsync
    /// covers everything before it), and one appended as [`FsyncPolicy::Never`] completes once written
    /// and is synced by the next fsync of the log. The log's order is kept: completions run in append
    /// order, and a crash can lose only a suffix of such batches. A policy stronger than the log's has no
    /// effect (an append can relax its log's policy, not tighten it).
    ///
    /// This lets one log hold records of different durability: ferry's metadata log keeps a queue
    /// group's deliveries and acknowledgements exactly as durable as the topic they belong to.
    pub fn append_encoded_as(
        &self,
        batch: EncodedBatch,
        policy: FsyncPolicy,
        done: impl FnOnce(Result<Appended>) + Send + 'static,
    ) {
        if batch.len() > self.shared.config.max_batch_bytes {
            return done(Err(Error::BatchTooLarge {
                size: batch.len(),
                max: self.shared.config.max_batch_bytes,
            }));
        }
        if self.shared.poisoned.load(Ordering::Acquire) {
            return done(Err(Error::Poisoned {
                path: self.shared.dir.clone(),
            }));
        }
        let Some(tx) = &self.tx else {
            return done(Err(Error::Closed));
        };
        if let Err(mpsc::SendError(Command::Append(_, _, done))) =
            tx.send(Command::Append(batch, policy, Box::new(done)))
        {
            done(Err(Error::Closed));
        }
    }

    fn control<T>(&self, make: impl FnOnce(SyncSender<Result<T>>) -> Command) -> Result<T> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.tx
            .as_ref()
            .ok_or(Error::Closed)?
            .send(make(tx))
            .map_err(|_| Error::Closed)?;
        rx.recv().map_err(|_| Error::Closed)?
    }

    /// Seals the active segment (if it holds anything) and starts a new one.
    ///
    /// # Errors
    /// I/O errors while syncing or creating files.
    pub fn roll(&self) -> Result<()> {
        self.control(Command::Roll)
    }

    /// Rolls the active segment if it is older than `segment_age`, then applies retention. The writer also
    /// does this by itself every `housekeeping_interval`.
    ///
    /// # Errors
    /// I/O errors while rolling or deleting.
    pub fn housekeep(&self) -> Result<Housekeeping> {
        self.control(Command::Housekeep)
    }

    /// Forces everything appended so far to stable storage, whatever the policy.
    ///
    /// # Errors
    /// I/O errors of fsync.
    pub fn flush(&self) -> Result<()> {
        self.control(Command::Flush)
    }

    /// A reader positioned at `offset`.
    ///
    /// # Errors
    /// [`Error::OffsetOutOfRange`] below the start or past the end.
    pub fn reader(&self, offset: u64) -> Result<LogReader> {
        LogReader::new(self.shared.clone(), offset, 256 * 1024)
    }

    /// Reads records from `offset` until about `max_bytes` of values are collected (at least one record if
    /// any is there), stopping at the end of the log.
    ///
    /// # Errors
    /// [`Error::OffsetOutOfRange`], [`Error::Corrupt`], [`Error::Io`].
    pub fn read(&self, offset: u64, max_bytes: usize) -> Result<Vec<crate::Record>> {
        self.read_records(offset, usize::MAX, max_bytes)
    }

    /// [`Log::read`] that also stops at `max_records` records (at least one): a reader that wants a few
    /// small records does not decode a megabyte of them.
    ///
    /// # Errors
    /// As [`Log::read`].
    pub fn read_records(
        &self,
        offset: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<crate::Record>> {
        let mut reader = LogReader::new(self.shared.clone(), offset, max_bytes.clamp(4096, 1 << 20))?;
        let mut out = Vec::new();
        let mut bytes = 0;
        // `out.is_empty()`: at least one record, as documented, even when a limit is 0.
        while out.is_empty() || (bytes < max_bytes && out.len() < max_records) {
            match reader.next() {
                Some(r) => {
                    let r = r?;
                    bytes += r.value.len() + r.key.as_ref().map_or(0, |k| k.len());
                    out.push(r);
                }
                None => break,
            }
        }
        Ok(out)
    }

    /// The first offset whose record has a timestamp `>= ts`, or `None` when no record has.
    ///
    /// # Errors
    /// [`Error::Corrupt`], [`Error::Io`].
    pub fn offset_for_timestamp(&self, ts: i64) -> Result<Option<u64>> {
        let segments = self.shared.segments();
        let Some(seg) = segments
            .iter()
            .find(|s| s.max_timestamp.load(Ordering::Acquire) >= ts)
        else {
            return Ok(None);
        };
        let (_, from) = seg.lookup_timestamp(ts)?;
        let from = from.max(self.start_offset());
        let mut reader = match LogReader::new(self.shared.clone(), from, 64 * 1024) {
            Ok(r) => r,
            Err(Error::OffsetOutOfRange { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        for r in reader.by_ref() {
            let r = r?;
            if r.timestamp >= ts {
                return Ok(Some(r.offset));
            }
        }
        Ok(None)
    }

    /// Stops the writer after it finished every queued append, and syncs everything.
    ///
    /// # Errors
    /// The final sync's I/O error.
    pub fn close(mut self) -> Result<()> {
        let result = self.flush();
        self.shutdown();
        result
    }

    fn shutdown(&mut self) {
        self.tx = None;
        if let Some(handle) = self.writer.take() {
            let _ = handle.join();
        }
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(Error::io("syncing directory", dir))
}

/// The single writer of a log, on its own thread.
struct Writer {
    shared: Arc<Shared>,
    observer: Option<Arc<dyn LogObserver>>,
    active: Arc<Segment>,
    /// Bytes written to the active segment, including the pending ones once written.
    size: u64,
    /// Offset the next batch gets.
    next_offset: u64,
    last_index_position: Option<u64>,
    /// Largest timestamp in the active segment so far.
    max_ts: i64,
    /// Batches given offsets but not yet written, with their completions.
    pending: Vec<(EncodedBatch, Completion, Appended)>,
    pending_bytes: u64,
    completer: mpsc::Sender<Vec<(Completion, Result<Appended>)>>,
    /// Groups sent to the completion thread and not yet completed there.
    queued_completions: Arc<AtomicUsize>,
    pending_index: Vec<u8>,
    pending_index_entries: u64,
    unsynced: bool,
    /// Bytes written since the last fsync was started.
    unsynced_bytes: u64,
    last_sync: Instant,
    /// True while a background fsync of this log is running.
    syncing: Arc<AtomicBool>,
    /// Whether the group being staged must be synced before it completes: a log with `fsync = always`
    /// got an append under that policy.
    sync_group: bool,
    /// When the earliest written but unsynced batch appended as [`FsyncPolicy::Interval`] to a log with
    /// `fsync = always` must be on disk (see [`Log::append_encoded_as`]), and that interval.
    relaxed_due: Option<Instant>,
    relaxed_every: Duration,
    /// Whether this log ever queued a background fsync (flush and close then wait for them).
    synced_in_background: bool,
}

/// Under the interval policy, a background fsync also starts once this much was written since the last
/// one (and none is running), not only when the interval is over: many small fsyncs instead of one large
/// one a second. A large one holds the disk for tens of milliseconds, and on ext4 every other fsync in
/// the meantime (the metadata log's, another partition's) waits behind it.
const BACKGROUND_SYNC_BYTES: u64 = 1 << 20;

/// How close to the end of the active segment a read must start to count as hot ([`Log::is_hot`]).
pub const HOT_BYTES: u64 = 256 * 1024;

/// A background fsync: runs on the process's one `ferry-log-sync` thread.
type SyncJob = Box<dyn FnOnce() + Send>;

/// Queues `job` on the process's background fsync thread (started on first use); runs it here if that
/// thread cannot be had.
fn sync_in_background(job: SyncJob) {
    static SYNCER: std::sync::OnceLock<Option<std::sync::Mutex<mpsc::Sender<SyncJob>>>> =
        std::sync::OnceLock::new();
    let syncer = SYNCER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SyncJob>();
        std::thread::Builder::new()
            .name("ferry-log-sync".into())
            .spawn(move || rx.into_iter().for_each(|job| job()))
            .ok()
            .map(|_| std::sync::Mutex::new(tx))
    });
    let job = match syncer {
        Some(tx) => match tx.lock().unwrap_or_else(|e| e.into_inner()).send(job) {
            Ok(()) => return,
            Err(mpsc::SendError(job)) => job,
        },
        None => job,
    };
    job();
}

impl Writer {
    fn run(mut self, rx: Receiver<Command>) {
        let mut next_housekeeping = Instant::now() + self.shared.config.housekeeping_interval;
        loop {
            let mut deadline = next_housekeeping;
            if let Some((due, every)) = self.sync_due() {
                // While the last background fsync still runs, look again a little later rather than spin.
                let due = if self.syncing.load(Ordering::Acquire) {
                    Instant::now() + (every / 10).max(Duration::from_millis(1))
                } else {
                    due
                };
                deadline = deadline.min(due);
            }
            let first = match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(cmd) => cmd,
                Err(RecvTimeoutError::Timeout) => {
                    self.housekeep_if_due(&mut next_housekeeping);
                    self.sync_if_due();
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let mut group_bytes = 0;
            let mut cmd = Some(first);
            while let Some(c) = cmd.take() {
                match c {
                    Command::Append(batch, policy, done) => {
                        group_bytes += batch.len();
                        self.stage(batch, policy, done);
                    }
                    Command::Roll(reply) => {
                        let r = self.roll(true);
                        let _ = reply.send(r);
                    }
                    Command::Housekeep(reply) => {
                        let r = self.housekeep();
                        let _ = reply.send(r);
                    }
                    Command::Flush(reply) => {
                        let r = self
                            .write_pending(true)
                            .and_then(|()| self.await_background_syncs());
                        let _ = reply.send(r);
                    }
                }
                if group_bytes < self.shared.config.max_group_bytes {
                    cmd = rx.try_recv().ok();
                }
            }
            let sync = std::mem::take(&mut self.sync_group);
            if let Err(e) = self.write_pending(sync) {
                tracing::error!(dir = %self.shared.dir.display(), error = %e, "log append failed");
            }
            self.sync_if_due();
            // Also here, not only when the queue is idle: a log that never goes quiet still gets
            // its segments rolled by age and its retention applied.
            self.housekeep_if_due(&mut next_housekeeping);
        }
        if let Err(e) = self.write_pending(true) {
            tracing::error!(dir = %self.shared.dir.display(), error = %e, "final log sync failed");
        }
        if let Err(e) = self.await_background_syncs() {
            tracing::error!(dir = %self.shared.dir.display(), error = %e, "the log closed poisoned: a write or an fsync failed");
        }
    }

    /// Waits until the background fsyncs queued so far (those of this log among them) are done: the
    /// thread runs its jobs in order, so a marker queued now runs after them.
    /// A failed one has poisoned the log: that is the error.
    fn await_background_syncs(&self) -> Result<()> {
        if self.synced_in_background {
            let (tx, rx) = mpsc::sync_channel::<()>(1);
            sync_in_background(Box::new(move || {
                let _ = tx.send(());
            }));
            // An error means the marker was dropped unrun, which only a panicking sync thread does.
            let _ = rx.recv();
        }
        if self.shared.poisoned.load(Ordering::Acquire) {
            return Err(Error::Poisoned {
                path: self.shared.dir.clone(),
            });
        }
        Ok(())
    }

    fn housekeep_if_due(&mut self, next: &mut Instant) {
        let now = Instant::now();
        if now >= *next {
            *next = now + self.shared.config.housekeeping_interval;
            if let Err(e) = self.housekeep() {
                tracing::error!(dir = %self.shared.dir.display(), error = %e, "log housekeeping failed");
            }
        }
    }

    /// When the next background fsync is due, and the interval it is due by: the interval policy's,
    /// or that of the earliest unsynced batch appended as [`FsyncPolicy::Interval`] to a log with
    /// `fsync = always`. `None` when nothing written waits for one.
    fn sync_due(&self) -> Option<(Instant, Duration)> {
        if !self.unsynced {
            return None;
        }
        let periodic = match self.shared.config.fsync {
            FsyncPolicy::Interval(every) => Some((self.last_sync + every, every)),
            _ => None,
        };
        let relaxed = self.relaxed_due.map(|due| (due, self.relaxed_every));
        match (periodic, relaxed) {
            (Some(a), Some(b)) => Some(if b.0 < a.0 { b } else { a }),
            (a, b) => a.or(b),
        }
    }

    /// The periodic fsync (interval policy, or batches appended as interval to an `always` log), off
    /// this thread: appends go on while the disk catches up (an fsync of a second's writes can take
    /// hundreds of milliseconds). Due when the interval is over or [`BACKGROUND_SYNC_BYTES`] were
    /// written since the last. A failed one poisons the log, as a failed write does. One at a time per
    /// log; an explicit flush and closing sync here, in line, and wait for the background ones.
    fn sync_if_due(&mut self) {
        let Some((due, _)) = self.sync_due() else {
            return;
        };
        let due = Instant::now() >= due || self.unsynced_bytes >= BACKGROUND_SYNC_BYTES;
        if !due || self.syncing.load(Ordering::Acquire) {
            return;
        }
        if let Err(e) = self.write_pending(false) {
            tracing::error!(dir = %self.shared.dir.display(), error = %e, "log append failed");
            return;
        }
        self.unsynced = false;
        self.unsynced_bytes = 0;
        self.relaxed_due = None;
        self.last_sync = Instant::now();
        self.syncing.store(true, Ordering::Release);
        let (segment, syncing) = (self.active.clone(), self.syncing.clone());
        self.fsync_in_background(
            "periodic fsync",
            move || {
                segment
                    .log
                    .sync_data()
                    .map_err(Error::io("syncing segment", &segment.log_path))
            },
            move || syncing.store(false, Ordering::Release),
        );
    }

    /// Runs `sync` on the background fsync thread, then `after`: its time goes to the observer, and a
    /// failure poisons the log (what reached the disk is then unknown), as a failed write does.
    fn fsync_in_background(
        &mut self,
        what: &'static str,
        sync: impl FnOnce() -> Result<()> + Send + 'static,
        after: impl FnOnce() + Send + 'static,
    ) {
        self.synced_in_background = true;
        let (shared, observer) = (self.shared.clone(), self.observer.clone());
        sync_in_background(Box::new(move || {
            let started = Instant::now();
            match sync() {
                Ok(()) => {
                    if let Some(o) = &observer {
                        o.fsynced(started.elapsed());
                    }
                }
                Err(e) => {
                    shared.poisoned.store(true, Ordering::Release);
                    tracing::error!(dir = %shared.dir.display(), error = %e, "{what} failed; refusing appends until reopened");
                }
            }
            after();
        }));
    }

    /// Gives a batch its offsets and queues it; rolls first if it would not fit the active segment.
    /// `policy` is what the batch needs (see [`Log::append_encoded_as`]).
    fn stage(&mut self, mut batch: EncodedBatch, policy: FsyncPolicy, done: Completion) {
        if self.shared.poisoned.load(Ordering::Acquire) {
            return done(Err(Error::Poisoned {
                path: self.shared.dir.clone(),
            }));
        }
        if self.shared.config.fsync == FsyncPolicy::Always {
            match policy {
                FsyncPolicy::Always => self.sync_group = true,
                FsyncPolicy::Interval(every) => {
                    let due = Instant::now() + every;
                    if self.relaxed_due.is_none_or(|d| due < d) {
                        self.relaxed_due = Some(due);
                        self.relaxed_every = every;
                    }
                }
                FsyncPolicy::Never => {}
            }
        }
        let cfg = self.shared.clone();
        let cfg = &cfg.config;
        let position = self.size + self.pending_bytes;
        let too_big = position > 0 && position + batch.len() as u64 > cfg.segment_bytes;
        let too_many = self.next_offset + u64::from(batch.record_count()) - self.active.base_offset
            > u64::from(u32::MAX);
        let too_old = position > 0 && self.segment_too_old();
        if (too_big || too_many || too_old)
            && let Err(e) = self.roll(false)
        {
            return done(Err(e));
        }
        let position = self.size + self.pending_bytes;
        let base = self.next_offset;
        if needs_index_entry(position, self.last_index_position, cfg.index_interval_bytes) {
            let Ok(rel) = relative(self.active.base_offset, base) else {
                return done(Err(Error::Config("relative offset overflow".into())));
            };
            IndexEntry {
                relative_offset: rel,
                position: position as u32,
                max_ts_before: self.max_ts,
            }
            .encode(&mut self.pending_index);
            self.pending_index_entries += 1;
            self.last_index_position = Some(position);
        }
        if position == 0 {
            self.active
                .roll_anchor_ms
                .store(self.shared.clock.now_ms(), Ordering::Relaxed);
        }
        batch.set_base_offset(base);
        self.max_ts = self.max_ts.max(batch.last_timestamp);
        self.next_offset = base + u64::from(batch.record_count());
        let appended = Appended {
            base_offset: base,
            last_offset: self.next_offset - 1,
        };
        self.pending_bytes += batch.len() as u64;
        self.pending.push((batch, done, appended));
    }

    fn segment_too_old(&self) -> bool {
        let first = self.active.roll_anchor_ms.load(Ordering::Relaxed);
        match self.shared.config.segment_age {
            Some(age) if first != i64::MIN => self.shared.clock.now_ms() - first >= age.as_millis() as i64,
            _ => false,
        }
    }

    /// Writes the pending batches with one vectored write, syncs if asked, publishes them to readers, and
    /// completes them. Any I/O failure poisons the log: what reached the disk is then unknown until recovery.
    fn write_pending(&mut self, sync: bool) -> Result<()> {
        let result = self.try_write_pending(sync);
        let pending = std::mem::take(&mut self.pending);
        self.pending_bytes = 0;
        let done: Vec<(Completion, Result<Appended>)> = match &result {
            Ok(()) => pending
                .into_iter()
                .map(|(_, done, appended)| (done, Ok(appended)))
                .collect(),
            Err(e) => {
                self.shared.poisoned.store(true, Ordering::Release);
                tracing::error!(dir = %self.shared.dir.display(), error = %e, "log write failed; refusing appends until reopened");
                let dir = &self.shared.dir;
                pending
                    .into_iter()
                    .map(|(_, done, _)| (done, Err(Error::Poisoned { path: dir.clone() })))
                    .collect()
            }
        };
        if !done.is_empty() {
            if !sync && self.queued_completions.load(Ordering::Acquire) == 0 {
                // Nothing was synced, so there is no fsync to overlap with waking the appenders, and no
                // earlier group waits on the completion thread: complete here, in order, and save
                // the appenders a thread hop.
                done.into_iter().for_each(|(f, r)| f(r));
            } else {
                // Waking the appenders is left to the completion thread, so the writer can start on
                // the next group (and its fsync) while they are being woken.
                self.queued_completions.fetch_add(1, Ordering::AcqRel);
                if let Err(mpsc::SendError(done)) = self.completer.send(done) {
                    self.queued_completions.fetch_sub(1, Ordering::AcqRel);
                    done.into_iter().for_each(|(f, r)| f(r));
                }
            }
        }
        result
    }

    fn try_write_pending(&mut self, sync: bool) -> Result<()> {
        if self.shared.poisoned.load(Ordering::Acquire) {
            return Err(Error::Poisoned {
                path: self.shared.dir.clone(),
            });
        }
        if !self.pending.is_empty() {
            let mut slices: Vec<IoSlice<'_>> = self
                .pending
                .iter()
                .map(|(b, ..)| IoSlice::new(&b.bytes))
                .collect();
            let mut slices = &mut slices[..];
            let mut file = &self.active.log;
            let mut written = 0u64;
            while !slices.is_empty() {
                match file.write_vectored(slices) {
                    Ok(0) => {
                        return Err(Error::Io {
                            context: "appending to segment",
                            path: self.active.log_path.clone(),
                            source: std::io::ErrorKind::WriteZero.into(),
                        });
                    }
                    Ok(n) => {
                        written += n as u64;
                        IoSlice::advance_slices(&mut slices, n);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        return Err(Error::Io {
                            context: "appending to segment",
                            path: self.active.log_path.clone(),
                            source: e,
                        });
                    }
                }
            }
            self.size += written;
            self.unsynced = true;
            self.unsynced_bytes += written;
            if !self.pending_index.is_empty() {
                (&self.active.index)
                    .write_all(&self.pending_index)
                    .map_err(Error::io("writing index", &self.active.index_path))?;
                self.pending_index.clear();
            }
        }
        if sync && self.unsynced {
            let started = Instant::now();
            self.active
                .log
                .sync_data()
                .map_err(Error::io("syncing segment", &self.active.log_path))?;
            self.unsynced = false;
            self.unsynced_bytes = 0;
            self.relaxed_due = None;
            self.last_sync = Instant::now();
            if let Some(o) = &self.observer {
                o.fsynced(started.elapsed());
            }
        }
        if !self.pending.is_empty() {
            self.publish();
        }
        Ok(())
    }

    /// Makes everything written so far visible to readers.
    fn publish(&mut self) {
        let seg = &self.active;
        seg.max_timestamp.store(self.max_ts, Ordering::Release);
        seg.index_entries
            .fetch_add(self.pending_index_entries, Ordering::AcqRel);
        self.pending_index_entries = 0;
        seg.committed_next.store(self.next_offset, Ordering::Release);
        seg.committed_size.store(self.size, Ordering::Release);
        self.shared.next_offset.store(self.next_offset, Ordering::Release);
        if let Some(o) = &self.observer {
            o.committed(self.next_offset);
        }
    }

    /// Seals the active segment and starts the next. With `fsync = always`, or when asked (`Log::roll`),
    /// the sealed segment, its index and the directory are synced here; otherwise on the background
    /// fsync thread (as Kafka flushes a rolled segment asynchronously): a roll of a full 128 MiB segment
    /// would otherwise hold up appends for as long as that segment takes to reach the disk. A machine
    /// crash before that sync may cut the sealed segment's tail while the next segment kept records:
    /// recovery then cuts the torn tail and keeps the later segments, leaving a gap of lost offsets that
    /// readers step over (the interval policy allows losing what was not yet synced).
    fn roll(&mut self, sync_inline: bool) -> Result<()> {
        let sync_inline = sync_inline || self.shared.config.fsync == FsyncPolicy::Always;
        self.write_pending(sync_inline)?;
        if self.size == 0 {
            return Ok(());
        }
        if sync_inline {
            self.active.sync_index()?;
        }
        let next = Segment::create(&self.shared.dir, self.next_offset)?;
        if sync_inline {
            sync_dir(&self.shared.dir)?;
        } else {
            let (sealed, dir) = (self.active.clone(), self.shared.dir.clone());
            self.fsync_in_background(
                "fsync of a rolled segment",
                move || {
                    sealed
                        .log
                        .sync_data()
                        .map_err(Error::io("syncing segment", &sealed.log_path))
                        .and_then(|()| sealed.sync_index())
                        .and_then(|()| sync_dir(&dir))
                },
                || {},
            );
            // The new segment starts with nothing unsynced; the sealed one's data is the job's.
            self.unsynced = false;
            self.unsynced_bytes = 0;
            self.last_sync = Instant::now();
        }
        self.active.sealed.store(true, Ordering::Release);
        let next = Arc::new(next);
        self.shared
            .segments
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(next.clone());
        self.active = next;
        self.size = 0;
        self.last_index_position = None;
        self.max_ts = i64::MIN;
        Ok(())
    }

    fn housekeep(&mut self) -> Result<Housekeeping> {
        self.write_pending(self.shared.config.fsync == FsyncPolicy::Always)?;
        let mut report = Housekeeping::default();
        if self.size > 0 && self.segment_too_old() {
            self.roll(false)?;
            report.rolled = true;
        }
        let cfg = &self.shared.config;
        let now = self.shared.clock.now_ms();
        let segments = self.shared.segments();
        let mut total: u64 = segments.iter().map(|s| s.size()).sum();
        let mut doomed = Vec::new();
        // Only a prefix of sealed segments is ever deleted, so the log stays one contiguous range.
        for seg in &segments[..segments.len() - 1] {
            let expired = cfg.retention_age.is_some_and(|age| {
                now.saturating_sub(seg.max_timestamp.load(Ordering::Acquire)) > age.as_millis() as i64
            });
            let oversized = cfg.retention_bytes.is_some_and(|max| total > max);
            if !(expired || oversized) {
                break;
            }
            total -= seg.size();
            doomed.push(seg.clone());
        }
        if doomed.is_empty() {
            return Ok(report);
        }
        {
            let mut segs = self.shared.segments.write().unwrap_or_else(|e| e.into_inner());
            segs.drain(..doomed.len());
            self.shared
                .start_offset
                .store(segs[0].base_offset, Ordering::Release);
        }
        for seg in doomed {
            // Readers holding the segment keep reading the unlinked file until they let go of it.
            fs::remove_file(&seg.log_path).map_err(Error::io("deleting segment", &seg.log_path))?;
            fs::remove_file(&seg.index_path).map_err(Error::io("deleting index", &seg.index_path))?;
            report.deleted_segments += 1;
            report.deleted_bytes += seg.size();
            tracing::info!(dir = %self.shared.dir.display(), segment = seg.base_offset, bytes = seg.size(), "retention deleted segment");
        }
        sync_dir(&self.shared.dir)?;
        Ok(report)
    }
}
