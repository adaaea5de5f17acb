//! The figures of docs/benchmarks.md, measured side by side in one run:
//! 1. the disk's raw sequential write speed (1 MiB writes, one fdatasync at the end) and `fsync = never`
//!    append throughput on the same disk, as a ratio;
//! 2. `fsync = always` records/s with 64 concurrent appenders vs 1 (group commit);
//! 3. peak RSS of a separate process reading through a 2 GiB log.
//!
//! `cargo bench -p ferry-log --bench figures` prints a Markdown table. `FERRY_BENCH_DIR` picks the disk;
//! `FERRY_BENCH_READ_GIB` the size of the read test (default 2).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_log::{FsyncPolicy, Log, LogConfig};

const MIB: f64 = 1024.0 * 1024.0;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--read-rss") {
        return read_rss(Path::new(&args[i + 1]));
    }
    if args.iter().any(|a| a == "--list") {
        return; // `cargo bench -- --list` and test discovery: nothing to list
    }
    let root = common::bench_root();
    println!("| figure | value |");
    println!("|---|---|");

    // 1. Raw disk speed vs fsync=never appends, same disk, same amount, both ending in one fdatasync.
    let bytes: u64 = 512 << 20;
    let raw = raw_write(&root.join("raw.bin"), bytes);
    let raw_mbs = bytes as f64 / MIB / raw.as_secs_f64();
    println!(
        "| raw sequential write, 1 MiB writes + fdatasync ({} MiB) | {raw_mbs:.0} MB/s |",
        bytes >> 20
    );
    for (size, batch) in [(1024usize, 64usize), (1024, 1), (100, 1)] {
        let dir = tempfile::tempdir_in(&root).unwrap();
        let log = Arc::new(
            Log::open(
                dir.path(),
                LogConfig {
                    fsync: FsyncPolicy::Never,
                    ..LogConfig::default()
                },
            )
            .unwrap(),
        );
        let records = bytes / size as u64;
        let started = Instant::now();
        let _ = common::run_appenders(&log, 8, records, batch, size);
        log.flush().unwrap();
        let took = started.elapsed();
        let n = log.next_offset();
        let payload_mbs = (n * size as u64) as f64 / MIB / took.as_secs_f64();
        let disk_mbs = log.size_bytes() as f64 / MIB / took.as_secs_f64();
        println!(
            "| fsync=never append, {size} B records, {batch} per append, 8 appenders | {payload_mbs:.0} MB/s payload, \
             {disk_mbs:.0} MB/s on disk = **{:.2}x raw**, {:.0} records/s |",
            disk_mbs / raw_mbs,
            n as f64 / took.as_secs_f64()
        );
    }

    // 2. Group commit: fsync=always, one 100 B record per append.
    let mut rates = Vec::new();
    for appenders in [1usize, 8, 64] {
        let dir = tempfile::tempdir_in(&root).unwrap();
        let log = Arc::new(Log::open(dir.path(), LogConfig::default()).unwrap());
        let rate = rate_for(Duration::from_secs(3), |total| {
            let took = common::run_appenders(&log, appenders, total, 1, 100);
            (common::appended(appenders, total, 1), took)
        });
        println!(
            "| fsync=always, 100 B records, 1 per append, {appenders} appenders | {rate:.0} records/s |"
        );
        rates.push(rate);
    }
    println!(
        "| fsync=always group commit, blocking threads: 64 appenders / 1 appender | **{:.1}x** |",
        rates[2] / rates[0]
    );
    let mut inflight_rates = Vec::new();
    for inflight in [1usize, 64] {
        let dir = tempfile::tempdir_in(&root).unwrap();
        let log = Arc::new(Log::open(dir.path(), LogConfig::default()).unwrap());
        let rate = rate_for(Duration::from_secs(3), |total| {
            (total, common::run_inflight(&log, inflight, total, 100))
        });
        println!(
            "| fsync=always, 100 B records, {inflight} appends in flight (callback API) | {rate:.0} records/s |"
        );
        inflight_rates.push(rate);
    }
    println!(
        "| fsync=always group commit, callback API: 64 in flight / 1 in flight | **{:.1}x** |",
        inflight_rates[1] / inflight_rates[0]
    );

    // 3. Peak RSS of a reader process over a large log.
    let gib: u64 = std::env::var("FERRY_BENCH_READ_GIB")
        .ok()
        .and_then(|g| g.parse().ok())
        .unwrap_or(2);
    let dir = tempfile::tempdir_in(&root).unwrap();
    {
        let log = Arc::new(
            Log::open(
                dir.path(),
                LogConfig {
                    fsync: FsyncPolicy::Never,
                    ..LogConfig::default()
                },
            )
            .unwrap(),
        );
        common::run_appenders(&log, 4, (gib << 30) / 1024, 256, 1024);
        log.flush().unwrap();
        println!(
            "| log written for the read test | {:.2} GiB in {} segments |",
            log.size_bytes() as f64 / (1u64 << 30) as f64,
            log.segment_count()
        );
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .arg("--read-rss")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "reader failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    print!("{}", String::from_utf8_lossy(&out.stdout));
    let _ = std::fs::remove_file(root.join("raw.bin"));
}

/// Runs `f` with growing totals until one run takes at least `min`; returns records/s of that run.
fn rate_for(min: Duration, mut f: impl FnMut(u64) -> (u64, Duration)) -> f64 {
    let mut total = 64;
    loop {
        let (n, took) = f(total);
        if took >= min {
            return n as f64 / took.as_secs_f64();
        }
        let per = took.as_secs_f64() / n as f64;
        total = ((min.as_secs_f64() * 1.2 / per.max(1e-9)) as u64).max(total * 2);
    }
}

fn raw_write(path: &Path, bytes: u64) -> Duration {
    let block = vec![0x5Au8; 1 << 20];
    let mut file = File::create(path).unwrap();
    let started = Instant::now();
    for _ in 0..bytes >> 20 {
        file.write_all(&block).unwrap();
    }
    file.sync_data().unwrap();
    let took = started.elapsed();
    drop(file);
    std::fs::remove_file(path).unwrap();
    took
}

/// The child: reads the whole log once, prints throughput and its own peak RSS (VmHWM).
fn read_rss(dir: &Path) {
    let log = Log::open(
        dir,
        LogConfig {
            fsync: FsyncPolicy::Never,
            ..LogConfig::default()
        },
    )
    .unwrap();
    let started = Instant::now();
    let mut bytes = 0u64;
    let mut count = 0u64;
    for r in log.reader(0).unwrap() {
        let r = r.unwrap();
        bytes += r.value.len() as u64;
        count += 1;
    }
    let took = started.elapsed();
    assert_eq!(count, log.next_offset());
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .unwrap_or("VmHWM: ?")
        .split_whitespace()
        .nth(1)
        .unwrap_or("?");
    let hwm_mb = hwm.parse::<f64>().map_or(f64::NAN, |kb| kb / 1024.0);
    println!(
        "| sequential read of {:.2} GiB ({count} records of 1 KiB), separate process | {:.0} MB/s, peak RSS **{hwm_mb:.1} MB** |",
        bytes as f64 / (1u64 << 30) as f64,
        bytes as f64 / MIB / took.as_secs_f64()
    );
}
