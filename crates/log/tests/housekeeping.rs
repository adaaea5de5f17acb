//! Retention keeps up with a log that never goes quiet: housekeeping is not only an idle-time chore.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::mpsc;
use std::time::Duration;

use bytes::Bytes;
use ferry_log::{FsyncPolicy, Log, LogConfig, NewRecord};

#[test]
fn retention_runs_while_appends_never_stop() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_bytes: 4096,
        retention_bytes: Some(16 * 1024),
        retention_age: None,
        fsync: FsyncPolicy::Never,
        housekeeping_interval: Duration::from_millis(1),
        ..LogConfig::default()
    };
    let log = Log::open(dir.path(), config).unwrap();
    // Keep a window of appends queued at all times, so the writer never finds its queue empty.
    const WINDOW: usize = 512;
    const LIMIT: u64 = 500_000;
    let (tx, acks) = mpsc::channel();
    let record = [NewRecord::value(Bytes::from(vec![7u8; 200]))];
    let mut queued = 0u64;
    let mut acked = 0u64;
    while log.start_offset() == 0 && acked < LIMIT {
        while queued - acked < WINDOW as u64 {
            let tx = tx.clone();
            log.append_encoded(log.encode(&record).unwrap(), move |r| {
                let _ = tx.send(r.map(|_| ()));
            });
            queued += 1;
        }
        acks.recv().unwrap().unwrap();
        acked += 1;
    }
    assert!(
        log.start_offset() > 0,
        "{acked} records appended and no segment deleted: retention starved by a busy writer"
    );
}

/// Records where each fsync ran.
struct SyncThreads(std::sync::Mutex<mpsc::Sender<Option<String>>>);

impl ferry_log::LogObserver for SyncThreads {
    fn fsynced(&self, _took: Duration) {
        let name = std::thread::current().name().map(str::to_owned);
        let _ = self.0.lock().unwrap().send(name);
    }
}

/// The interval policy's periodic fsync runs off the writer thread, so appends are not held up while
/// a second's writes reach the disk; and it does run.
#[test]
fn periodic_fsync_runs_off_the_writer_thread() {
    let dir = tempfile::tempdir().unwrap();
    let (tx, synced) = mpsc::channel();
    let options = ferry_log::LogOptions {
        config: LogConfig {
            fsync: FsyncPolicy::Interval(Duration::from_millis(5)),
            ..LogConfig::default()
        },
        clock: std::sync::Arc::new(ferry_log::SystemClock),
        observer: Some(std::sync::Arc::new(SyncThreads(std::sync::Mutex::new(tx)))),
    };
    let log = Log::open_with(dir.path(), options).unwrap();
    let record = [NewRecord::value(Bytes::from_static(b"x"))];
    log.append(&record).unwrap();
    let thread = synced
        .recv_timeout(Duration::from_secs(30))
        .expect("no periodic fsync");
    assert_eq!(thread.as_deref(), Some("ferry-log-sync"));
    // Appends go on after (and while) background syncs.
    for _ in 0..100 {
        log.append(&record).unwrap();
    }
    assert_eq!(log.next_offset(), 101);
    synced
        .recv_timeout(Duration::from_secs(30))
        .expect("no second periodic fsync");
}

/// Under the interval policy a segment that rolls because it is full is synced on the background
/// thread too (a full segment can take long to reach the disk); `flush` waits for that sync, and every
/// record is there after reopening. Under `fsync = always` nothing is synced in the background.
#[test]
fn a_rolled_segment_is_synced_in_the_background_and_flush_waits_for_it() {
    for (fsync, background) in [
        (FsyncPolicy::Interval(Duration::from_secs(3600)), true),
        (FsyncPolicy::Always, false),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let (tx, synced) = mpsc::channel();
        let options = || ferry_log::LogOptions {
            config: LogConfig {
                fsync,
                segment_bytes: 4096,
                ..LogConfig::default()
            },
            clock: std::sync::Arc::new(ferry_log::SystemClock),
            observer: Some(std::sync::Arc::new(SyncThreads(std::sync::Mutex::new(
                tx.clone(),
            )))),
        };
        let log = Log::open_with(dir.path(), options()).unwrap();
        let record = [NewRecord::value(Bytes::from(vec![b'r'; 500]))];
        for _ in 0..40 {
            log.append(&record).unwrap();
        }
        assert!(log.segment_count() > 3, "{fsync}: the appends rolled segments");
        log.flush().unwrap();
        let threads: Vec<Option<String>> = synced.try_iter().collect();
        let in_background = threads
            .iter()
            .filter(|t| t.as_deref() == Some("ferry-log-sync"))
            .count();
        if background {
            // The hour-long interval never came: every background sync was a roll's.
            assert!(in_background >= 3, "{fsync}: {threads:?}");
        } else {
            assert_eq!(in_background, 0, "{fsync}: {threads:?}");
        }
        drop(log);
        let log = Log::open_with(dir.path(), options()).unwrap();
        assert_eq!(log.next_offset(), 40, "{fsync}");
        let back = log.read(0, 1 << 20).unwrap();
        assert_eq!(back.first().map(|r| r.offset), Some(0));
    }
}

/// On a log with `fsync = always`, a batch appended as `interval` completes once written, without an
/// fsync, and reaches the disk in the background within its interval, or with the next `always`
/// append, whose fsync covers it; one appended as `never` waits for the next fsync of the log.
/// Completions keep the append order whatever the mix, and everything is there after reopening.
#[test]
fn appends_can_relax_an_always_log_and_keep_its_order() {
    let dir = tempfile::tempdir().unwrap();
    let (tx, synced) = mpsc::channel();
    let options = || ferry_log::LogOptions {
        config: LogConfig {
            fsync: FsyncPolicy::Always,
            ..LogConfig::default()
        },
        clock: std::sync::Arc::new(ferry_log::SystemClock),
        observer: Some(std::sync::Arc::new(SyncThreads(std::sync::Mutex::new(
            tx.clone(),
        )))),
    };
    let log = Log::open_with(dir.path(), options()).unwrap();
    let append_as = |policy: FsyncPolicy| {
        let (tx, rx) = mpsc::channel();
        let batch = log.encode(&[NewRecord::value(Bytes::from_static(b"x"))]).unwrap();
        log.append_encoded_as(batch, policy, move |r| {
            let _ = tx.send(r);
        });
        rx.recv().unwrap().unwrap()
    };
    // An observer hears of an fsync before the batches it covered complete.
    append_as(FsyncPolicy::Interval(Duration::from_secs(3600)));
    assert_eq!(
        synced.try_recv().ok(),
        None,
        "an interval append waited for an fsync"
    );
    append_as(FsyncPolicy::Never);
    assert_eq!(synced.try_recv().ok(), None, "a never append waited for an fsync");
    append_as(FsyncPolicy::Always);
    assert_eq!(
        synced.try_recv().ok(),
        Some(Some("ferry-log-writer".to_string())),
        "an always append is synced before it completes"
    );
    // Due within 5 ms: synced on the background thread, with no other append to carry it.
    append_as(FsyncPolicy::Interval(Duration::from_millis(5)));
    let thread = synced
        .recv_timeout(Duration::from_secs(30))
        .expect("the relaxed append was never synced");
    assert_eq!(thread.as_deref(), Some("ferry-log-sync"));
    // A `never` append is synced by a flush.
    append_as(FsyncPolicy::Never);
    assert_eq!(synced.try_recv().ok(), None);
    log.flush().unwrap();
    assert_eq!(synced.try_recv().ok(), Some(Some("ferry-log-writer".to_string())));

    // Completions in append order, whatever each append's policy.
    let (done_tx, done) = mpsc::channel();
    let policies = [
        FsyncPolicy::Always,
        FsyncPolicy::Interval(Duration::from_millis(1)),
        FsyncPolicy::Never,
        FsyncPolicy::Interval(Duration::from_secs(3600)),
    ];
    for i in 0..400 {
        let done_tx = done_tx.clone();
        let batch = log.encode(&[NewRecord::value(Bytes::from_static(b"y"))]).unwrap();
        log.append_encoded_as(batch, policies[i % policies.len()], move |r| {
            let _ = done_tx.send(r.map(|a| a.base_offset));
        });
    }
    drop(done_tx);
    let offsets: Vec<u64> = done.iter().map(|r| r.unwrap()).collect();
    assert_eq!(offsets, (5..405).collect::<Vec<u64>>());
    drop(log);
    let log = Log::open_with(dir.path(), options()).unwrap();
    assert_eq!(log.next_offset(), 405);
}
