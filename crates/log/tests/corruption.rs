//! Bad bytes on disk: the last batch of a log truncated at every byte position, and flipped at every byte
//! position; damaged and missing indexes; a corrupt batch in a sealed segment. Reopening never serves a
//! corrupt record and keeps every earlier record.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use ferry_log::{Error, FsyncPolicy, Header, Log, LogConfig, NewRecord, Record};

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 2048,
        index_interval_bytes: 256,
        fsync: FsyncPolicy::Never,
        ..LogConfig::default()
    }
}

fn record(i: usize) -> NewRecord {
    NewRecord {
        timestamp: Some(1_700_000_000_000 + i as i64 * 10),
        key: (!i.is_multiple_of(3)).then(|| Bytes::from(format!("key-{i}"))),
        headers: vec![Header {
            key: "n".into(),
            value: Bytes::from(i.to_string()),
        }],
        value: Bytes::from(format!("value-{i}-{}", "x".repeat(i * 7 % 90))),
    }
}

fn assert_same(got: &Record, want: &NewRecord, offset: u64) {
    assert_eq!(got.offset, offset);
    assert_eq!(Some(got.timestamp), want.timestamp, "timestamp at {offset}");
    assert_eq!(got.key, want.key, "key at {offset}");
    assert_eq!(got.headers, want.headers, "headers at {offset}");
    assert_eq!(got.value, want.value, "value at {offset}");
}

fn read_all(log: &Log) -> Vec<Record> {
    log.reader(log.start_offset())
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

type Snapshot = Vec<(PathBuf, Vec<u8>)>;
type Built = (Snapshot, Vec<NewRecord>, PathBuf, std::ops::Range<u64>);

fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().is_some_and(|n| n != ".lock"))
        .map(|p| {
            let bytes = fs::read(&p).unwrap();
            (PathBuf::from(p.file_name().unwrap()), bytes)
        })
        .collect();
    files.sort();
    files
}

fn restore(files: &[(PathBuf, Vec<u8>)], dir: &Path) {
    if dir.exists() {
        fs::remove_dir_all(dir).unwrap();
    }
    fs::create_dir_all(dir).unwrap();
    for (name, bytes) in files {
        fs::write(dir.join(name), bytes).unwrap();
    }
}

/// A log of several segments whose last batch (three records) is the last bytes of the last segment.
/// Returns the snapshot, the records, the last segment's file name and the byte range of the last batch.
fn build() -> Built {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let records: Vec<NewRecord> = (0..80).map(record).collect();
    let log = Log::open(&dir, config()).unwrap();
    for chunk in records[..77].chunks(2) {
        log.append(chunk).unwrap();
    }
    log.close().unwrap();
    let files = snapshot(&dir);
    let (last_name, last_bytes) = files
        .iter()
        .rev()
        .find(|(n, _)| n.extension().is_some_and(|e| e == "log"))
        .unwrap();
    let start = last_bytes.len() as u64;
    let last_name = last_name.clone();

    let log = Log::open(&dir, config()).unwrap();
    let appended = log.append(&records[77..]).unwrap();
    assert_eq!((appended.base_offset, appended.last_offset), (77, 79));
    log.close().unwrap();
    let end = fs::metadata(dir.join(&last_name)).unwrap().len();
    let files = snapshot(&dir);
    assert!(
        files
            .iter()
            .filter(|(n, _)| n.extension().is_some_and(|e| e == "log"))
            .count()
            > 2,
        "want several segments"
    );
    (files, records, last_name, start..end)
}

/// After damage to the last batch: it is gone, everything before it is intact, and the log takes appends
/// again at the offset where the cut batch was.
fn check_cut_and_continue(dir: &Path, records: &[NewRecord], expect_cut: bool) {
    let log = Log::open(dir, config()).unwrap();
    assert_eq!(
        log.recovery().cut_anything(),
        expect_cut,
        "recovery: {:?}",
        log.recovery()
    );
    assert_eq!(log.next_offset(), 77);
    let all = read_all(&log);
    assert_eq!(all.len(), 77);
    for (i, r) in all.iter().enumerate() {
        assert_same(r, &records[i], i as u64);
    }
    assert!(matches!(log.read(77, 1024), Ok(v) if v.is_empty()));
    let again = log.append(&records[77..78]).unwrap();
    assert_eq!(again.base_offset, 77);
    log.close().unwrap();

    let log = Log::open(dir, config()).unwrap();
    assert!(
        !log.recovery().cut_anything(),
        "a clean reopen cut something: {:?}",
        log.recovery()
    );
    let all = read_all(&log);
    assert_eq!(all.len(), 78);
    assert_same(&all[77], &records[77], 77);
}

#[test]
fn truncation_at_every_byte_of_the_last_batch() {
    let (files, records, last, range) = build();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    for cut_at in range.clone() {
        restore(&files, &dir);
        fs::OpenOptions::new()
            .write(true)
            .open(dir.join(&last))
            .unwrap()
            .set_len(cut_at)
            .unwrap();
        check_cut_and_continue(&dir, &records, cut_at > range.start);
    }
}

#[test]
fn a_flipped_byte_anywhere_in_the_last_batch_cuts_it() {
    let (files, records, last, range) = build();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    for pos in range {
        for mask in [0x01u8, 0xff] {
            restore(&files, &dir);
            let path = dir.join(&last);
            let mut bytes = fs::read(&path).unwrap();
            bytes[pos as usize] ^= mask;
            fs::write(&path, bytes).unwrap();
            check_cut_and_continue(&dir, &records, true);
        }
    }
}

#[test]
fn garbage_appended_after_the_last_batch_is_cut() {
    let (files, records, last, _) = build();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    for garbage in [vec![0u8; 1], vec![0u8; 100], vec![0xAB; 39], vec![0xFF; 4096]] {
        restore(&files, &dir);
        let path = dir.join(&last);
        let mut bytes = fs::read(&path).unwrap();
        bytes.extend_from_slice(&garbage);
        fs::write(&path, bytes).unwrap();
        let log = Log::open(&dir, config()).unwrap();
        assert!(log.recovery().cut_anything());
        assert_eq!(log.next_offset(), 80);
        let all = read_all(&log);
        assert_eq!(all.len(), 80);
        for (i, r) in all.iter().enumerate() {
            assert_same(r, &records[i], i as u64);
        }
    }
}

fn check_every_offset_readable(log: &Log, records: &[NewRecord]) {
    for from in 0..records.len() as u64 {
        let got = log.read(from, 1).unwrap();
        assert!(!got.is_empty(), "nothing read from {from}");
        assert_same(&got[0], &records[from as usize], from);
    }
    let ts = records[50].timestamp.unwrap();
    assert_eq!(log.offset_for_timestamp(ts).unwrap(), Some(50));
    assert_eq!(log.offset_for_timestamp(ts - 1).unwrap(), Some(50));
    assert_eq!(log.offset_for_timestamp(i64::MAX).unwrap(), None);
}

#[test]
fn missing_indexes_are_rebuilt() {
    let (files, records, _, _) = build();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    restore(&files, &dir);
    let indexes: Vec<_> = files
        .iter()
        .filter(|(n, _)| n.extension().is_some_and(|e| e == "index"))
        .collect();
    for (name, _) in &indexes {
        fs::remove_file(dir.join(name)).unwrap();
    }
    let log = Log::open(&dir, config()).unwrap();
    assert!(log.recovery().segments.iter().all(|s| s.index_rebuilt));
    assert!(!log.recovery().cut_anything());
    check_every_offset_readable(&log, &records);
    log.close().unwrap();
    // The rebuilt indexes are what the writer would have written.
    for (name, original) in indexes {
        assert_eq!(
            &fs::read(dir.join(name)).unwrap(),
            original,
            "rebuilt {} differs",
            name.display()
        );
    }
}

#[test]
fn damaged_indexes_are_cut_or_rebuilt_and_reads_stay_correct() {
    let (files, records, _, _) = build();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let index_names: Vec<_> = files
        .iter()
        .filter(|(n, _)| n.extension().is_some_and(|e| e == "index"))
        .map(|(n, _)| n.clone())
        .collect();
    type Damage = fn(&mut Vec<u8>);
    let damages: [(&str, Damage); 5] = [
        ("garbage", |b| b.iter_mut().for_each(|x| *x = 0x5A)),
        ("torn entry", |b| b.truncate(b.len().saturating_sub(5))),
        ("last position moved", |b| {
            let n = b.len();
            if n >= 16 {
                b[n - 12] = b[n - 12].wrapping_add(3);
            }
        }),
        ("first entry zeroed offset only", |b| {
            if b.len() >= 32 {
                b[16..20].copy_from_slice(&0u32.to_le_bytes());
            }
        }),
        ("trailing zeros", |b| b.extend_from_slice(&[0u8; 64])),
    ];
    for (what, damage) in damages {
        restore(&files, &dir);
        for name in &index_names {
            let path = dir.join(name);
            let mut bytes = fs::read(&path).unwrap();
            damage(&mut bytes);
            fs::write(&path, bytes).unwrap();
        }
        let log = Log::open(&dir, config()).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(!log.recovery().cut_anything(), "{what}: the log itself was fine");
        check_every_offset_readable(&log, &records);
    }
}

#[test]
fn a_corrupt_batch_in_a_sealed_segment_is_never_served() {
    let (files, records, _, _) = build();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    restore(&files, &dir);
    let first = &files
        .iter()
        .find(|(n, _)| n.extension().is_some_and(|e| e == "log"))
        .unwrap()
        .0;
    let path = dir.join(first);
    let mut bytes = fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x10;
    fs::write(&path, bytes).unwrap();

    let log = Log::open(&dir, config()).unwrap();
    let mut served = 0;
    let mut failed = false;
    for r in log.reader(0).unwrap() {
        match r {
            Ok(r) => {
                assert_same(&r, &records[served], served as u64);
                served += 1;
            }
            Err(Error::Corrupt { .. }) => {
                failed = true;
                break;
            }
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert!(failed, "the corrupt batch was not reported");
    assert!(served > 0 && served < records.len(), "served {served}");
}

#[test]
fn a_second_open_of_the_same_directory_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let log = Log::open(tmp.path(), config()).unwrap();
    assert!(matches!(
        Log::open(tmp.path(), config()),
        Err(Error::Locked { .. })
    ));
    drop(log);
    Log::open(tmp.path(), config()).unwrap();
}

/// A machine crash right after a roll under the interval policy, before the background fsync of the
/// sealed segment: its last batch is lost while its successor's records reached the disk. Reopening
/// cuts the torn tail and keeps the later segments: the lost offsets are a gap that readers step over,
/// every other record reads back intact, and appends go on after the last one.
#[test]
fn a_torn_tail_of_a_sealed_segment_leaves_a_gap_readers_step_over() {
    let (files, records, _, _) = build();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    restore(&files, &dir);
    let first = files
        .iter()
        .find(|(n, _)| n.extension().is_some_and(|e| e == "log"))
        .unwrap();
    // Segments are named by their base offset.
    let second_base: u64 = files
        .iter()
        .filter(|(n, _)| n.extension().is_some_and(|e| e == "log"))
        .nth(1)
        .map(|(n, _)| n.file_stem().unwrap().to_str().unwrap().parse().unwrap())
        .unwrap();
    // The first segment without its last batch: the longest truncation that loses a record.
    let mut cut_at = None;
    for len in (0..first.1.len()).rev() {
        fs::write(dir.join(&first.0), &first.1[..len]).unwrap();
        let log = Log::open(&dir, config()).unwrap();
        let kept = log
            .reader(0)
            .unwrap()
            .take_while(|r| r.as_ref().is_ok_and(|r| r.offset < second_base));
        let kept = kept.count() as u64;
        drop(log);
        restore(&files, &dir);
        if kept < second_base {
            cut_at = Some((len, kept));
            break;
        }
    }
    let (len, kept) = cut_at.expect("some truncation of the first segment loses its last batch");
    fs::write(dir.join(&first.0), &first.1[..len]).unwrap();

    let log = Log::open(&dir, config()).unwrap();
    let back = read_all(&log);
    let offsets: Vec<u64> = back.iter().map(|r| r.offset).collect();
    let want: Vec<u64> = (0..kept).chain(second_base..80).collect();
    assert_eq!(
        offsets, want,
        "the records before the cut and from the next segment on"
    );
    for r in &back {
        assert_same(r, &records[r.offset as usize], r.offset);
    }
    assert_eq!(log.append(&[record(80)]).unwrap().base_offset, 80);
}
