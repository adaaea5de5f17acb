//! Criterion benches of the log: append throughput by record size, fsync policy and number of concurrent
//! appenders (one record per append, so group commit is what makes many appenders fast), and sequential
//! read throughput.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ferry_log::{FsyncPolicy, Log, LogConfig};

fn append(c: &mut Criterion) {
    let root = common::bench_root();
    let mut group = c.benchmark_group("append");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for policy in ["always", "interval:10", "never"] {
        for size in [100usize, 1024] {
            for appenders in [1usize, 8, 64] {
                let dir = tempfile::tempdir_in(&root).unwrap();
                let config = LogConfig {
                    fsync: policy.parse::<FsyncPolicy>().unwrap(),
                    ..LogConfig::default()
                };
                let log = Arc::new(Log::open(dir.path(), config).unwrap());
                group.throughput(Throughput::Elements(1));
                let id = BenchmarkId::new(format!("{policy}/{size}B"), format!("{appenders}-appenders"));
                group.bench_function(id, |b| {
                    b.iter_custom(|iters| {
                        let total = iters.max(appenders as u64);
                        let took = common::run_appenders(&log, appenders, total, 1, size);
                        // Per requested iteration, so criterion's element throughput is records/s.
                        took.mul_f64(iters as f64 / common::appended(appenders, total, 1) as f64)
                    });
                });
            }
        }
    }
    group.finish();
}

fn read(c: &mut Criterion) {
    let root = common::bench_root();
    let mut group = c.benchmark_group("read");
    group.sample_size(10).measurement_time(Duration::from_secs(3));
    for size in [100usize, 1024] {
        let dir = tempfile::tempdir_in(&root).unwrap();
        let config = LogConfig {
            fsync: FsyncPolicy::Never,
            ..LogConfig::default()
        };
        let log = Arc::new(Log::open(dir.path(), config).unwrap());
        let total_bytes = 64u64 << 20;
        let records = total_bytes / size as u64;
        common::run_appenders(&log, 4, records, 64, size);
        let count = log.next_offset();
        group.throughput(Throughput::Bytes(count * size as u64));
        group.bench_function(BenchmarkId::new("sequential", format!("{size}B")), |b| {
            b.iter(|| {
                let mut n = 0u64;
                for r in log.reader(0).unwrap() {
                    std::hint::black_box(r.unwrap().value.len());
                    n += 1;
                }
                assert_eq!(n, count);
            });
        });
    }
    group.finish();
}

criterion_group!(benches, append, read);
criterion_main!(benches);
