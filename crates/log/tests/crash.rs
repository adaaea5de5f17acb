//! Crash test: a child process appends with `fsync = always` from several threads and prints every offset
//! it was acknowledged; the parent kills it with SIGKILL after a random number of acknowledgements (or
//! before the first, during recovery), reopens the log, and checks that every acknowledged record is there,
//! byte-identical, and that everything the log serves is a record some child wrote.
//!
//! `FERRY_CRASH_KILLS` sets the number of kills (default 50).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

use bytes::Bytes;
use ferry_log::{FsyncPolicy, Header, Log, LogConfig, NewRecord, Record};
use rand::Rng;

const CHILD_DIR_ENV: &str = "FERRY_CRASH_CHILD_DIR";
const CHILD_RUN_ENV: &str = "FERRY_CRASH_CHILD_RUN";
const THREADS: u64 = 4;

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 64 * 1024,
        index_interval_bytes: 1024,
        fsync: FsyncPolicy::Always,
        ..LogConfig::default()
    }
}

/// The records of append number `seq` of thread `thread` in child run `run`: a pure function, so the parent
/// can check bytes without being told them.
fn batch(run: u64, thread: u64, seq: u64) -> Vec<NewRecord> {
    let n = 1 + (run + thread + seq) % 3;
    (0..n)
        .map(|i| {
            let id = format!("{run}/{thread}/{seq}/{i}");
            let len = ((run * 7919 + thread * 104_729 + seq * 31 + i * 17) % 700) as usize;
            let mut value = format!("{id}:").into_bytes();
            value.extend((0..len).map(|j| b'a' + ((j as u64 + seq) % 26) as u8));
            NewRecord {
                timestamp: None,
                key: (seq % 2 == 1).then(|| Bytes::from(format!("k{thread}"))),
                headers: vec![Header {
                    key: "id".into(),
                    value: Bytes::from(id),
                }],
                value: Bytes::from(value),
            }
        })
        .collect()
}

fn id_of(record: &Record) -> (u64, u64, u64, u64) {
    let id = std::str::from_utf8(&record.headers[0].value).unwrap();
    let parts: Vec<u64> = id.split('/').map(|p| p.parse().unwrap()).collect();
    (parts[0], parts[1], parts[2], parts[3])
}

fn assert_is(record: &Record, want: &NewRecord) {
    assert_eq!(record.key, want.key, "key of offset {}", record.offset);
    assert_eq!(
        record.headers, want.headers,
        "headers of offset {}",
        record.offset
    );
    assert_eq!(record.value, want.value, "value of offset {}", record.offset);
}

/// The child: runs when the parent starts this test binary with the environment set, until it is killed.
#[test]
#[ignore = "the child process of crash_kill_loop; runs until killed"]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_DIR_ENV) else {
        return;
    };
    let run: u64 = std::env::var(CHILD_RUN_ENV).unwrap().parse().unwrap();
    let log = Arc::new(Log::open(&dir, config()).unwrap());
    println!("open");
    let threads: Vec<_> = (0..THREADS)
        .map(|thread| {
            let log = log.clone();
            std::thread::spawn(move || {
                for seq in 0.. {
                    let appended = log.append(&batch(run, thread, seq)).unwrap();
                    println!(
                        "ack {} {} {run} {thread} {seq}",
                        appended.base_offset, appended.last_offset
                    );
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

fn run_child(dir: &Path, run: u64, acks_before_kill: usize) -> Vec<(u64, u64, u64, u64, u64)> {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "crash_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR_ENV, dir)
        .env(CHILD_RUN_ENV, run.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut acks = Vec::new();
    let mut killed = false;
    if acks_before_kill == 0 {
        child.kill().unwrap();
        killed = true;
    }
    // Keep reading after the kill: every line the child printed before it died is an acknowledgement.
    for line in lines.by_ref() {
        let line = line.unwrap();
        let Some(rest) = line.strip_prefix("ack ") else {
            continue;
        };
        let f: Vec<u64> = rest.split(' ').map(|x| x.parse().unwrap()).collect();
        acks.push((f[0], f[1], f[2], f[3], f[4]));
        if !killed && acks.len() >= acks_before_kill {
            child.kill().unwrap();
            killed = true;
        }
    }
    let status = child.wait().unwrap();
    assert!(killed, "child exited by itself: {status}");
    acks
}

#[test]
fn crash_kill_loop() {
    let kills: u64 = std::env::var("FERRY_CRASH_KILLS")
        .ok()
        .and_then(|k| k.parse().ok())
        .unwrap_or(50);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let mut rng = rand::rng();
    // offset -> (run, thread, seq, index in batch) of every acknowledged record so far.
    let mut acked: BTreeMap<u64, (u64, u64, u64, u64)> = BTreeMap::new();
    let mut cuts = 0;
    for run in 0..kills {
        let acks_before_kill = if rng.random_bool(0.1) {
            0
        } else {
            rng.random_range(1..400)
        };
        for (base, last, r, thread, seq) in run_child(&dir, run, acks_before_kill) {
            assert_eq!(r, run);
            for (i, offset) in (base..=last).enumerate() {
                let previous = acked.insert(offset, (run, thread, seq, i as u64));
                assert!(
                    previous.is_none(),
                    "offset {offset} acknowledged twice: {previous:?} and run {run}"
                );
            }
        }

        let log = Log::open(&dir, config()).unwrap();
        if log.recovery().cut_anything() {
            cuts += 1;
        }
        let records: Vec<Record> = log.reader(0).unwrap().collect::<Result<_, _>>().unwrap();
        assert_eq!(
            records.len() as u64,
            log.next_offset(),
            "offsets are dense from 0"
        );
        let mut expected = acked.iter().peekable();
        for (i, r) in records.iter().enumerate() {
            assert_eq!(r.offset, i as u64);
            let (run, thread, seq, idx) = id_of(r);
            assert_is(r, &batch(run, thread, seq)[idx as usize]);
            if let Some(&(&offset, &id)) = expected.peek()
                && offset == r.offset
            {
                assert_eq!(
                    (run, thread, seq, idx),
                    id,
                    "acknowledged record at {offset} replaced"
                );
                expected.next();
            }
        }
        let missing: Vec<_> = expected.map(|(o, _)| *o).take(10).collect();
        assert!(
            missing.is_empty(),
            "run {run}: acknowledged offsets lost after SIGKILL: {missing:?}..."
        );
        // Appending after recovery continues at the end (a later run's acks must not collide).
        drop(log);
    }
    assert!(
        acked.len() as u64 > kills,
        "too few acknowledgements to mean anything: {}",
        acked.len()
    );
    eprintln!(
        "{kills} kills, {} acknowledged records verified, {cuts} recoveries cut a torn tail",
        acked.len()
    );
}
