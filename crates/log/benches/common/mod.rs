//! Shared by the criterion benches and the figures run.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferry_log::{Log, NewRecord};

/// Where bench logs live: `FERRY_BENCH_DIR`, else cargo's target tmp dir (a real disk, unlike a tmpfs /tmp).
pub fn bench_root() -> PathBuf {
    let root = std::env::var_os("FERRY_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ferry-bench"));
    std::fs::create_dir_all(&root).unwrap();
    root
}

pub fn record(size: usize) -> NewRecord {
    NewRecord::value(Bytes::from(vec![b'x'; size]))
}

/// `appenders` threads append `total` records in batches of `batch` records; returns the wall time until
/// the last append was acknowledged.
pub fn run_appenders(log: &Arc<Log>, appenders: usize, total: u64, batch: usize, size: usize) -> Duration {
    let records: Arc<Vec<NewRecord>> = Arc::new((0..batch).map(|_| record(size)).collect());
    let per_thread = total.div_ceil(appenders as u64 * batch as u64);
    let barrier = Arc::new(std::sync::Barrier::new(appenders + 1));
    let threads: Vec<_> = (0..appenders)
        .map(|_| {
            let (log, records, barrier) = (log.clone(), records.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                for _ in 0..per_thread {
                    log.append(&records).unwrap();
                }
            })
        })
        .collect();
    barrier.wait();
    let started = Instant::now();
    for t in threads {
        t.join().unwrap();
    }
    started.elapsed()
}

/// Records actually appended by [`run_appenders`] for a requested total.
pub fn appended(appenders: usize, total: u64, batch: usize) -> u64 {
    total.div_ceil(appenders as u64 * batch as u64) * appenders as u64 * batch as u64
}

/// `inflight` logical appenders, each with one append outstanding at a time, driven by completion callbacks
/// through [`Log::append_encoded`] the way an async server uses the log (no thread per appender). Appends
/// `total` records of `size` bytes, one per append; returns the wall time.
pub fn run_inflight(log: &Arc<Log>, inflight: usize, total: u64, size: usize) -> Duration {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Condvar, Mutex};

    struct State {
        log: Arc<Log>,
        record: NewRecord,
        issued: AtomicU64,
        total: u64,
        done: Mutex<u64>,
        all_done: Condvar,
    }
    fn submit(state: Arc<State>) {
        if state.issued.fetch_add(1, Ordering::Relaxed) >= state.total {
            return;
        }
        let batch = state.log.encode(std::slice::from_ref(&state.record)).unwrap();
        let log = state.log.clone();
        log.append_encoded(batch, move |r| {
            r.unwrap();
            {
                let mut done = state.done.lock().unwrap();
                *done += 1;
                if *done == state.total {
                    state.all_done.notify_all();
                }
            }
            submit(state);
        });
    }
    let state = Arc::new(State {
        log: log.clone(),
        record: record(size),
        issued: AtomicU64::new(0),
        total,
        done: Mutex::new(0),
        all_done: Condvar::new(),
    });
    let started = Instant::now();
    for _ in 0..inflight {
        submit(state.clone());
    }
    let mut done = state.done.lock().unwrap();
    while *done < total {
        done = state.all_done.wait(done).unwrap();
    }
    started.elapsed()
}
