//! Which reads count as hot (a short copy from memory, fine on an async task) and which may go to the
//! disk.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use ferry_log::{FsyncPolicy, HOT_BYTES, Log, LogConfig, NewRecord};

#[test]
fn only_recent_appends_of_this_process_near_the_end_are_hot() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        fsync: FsyncPolicy::Never,
        ..LogConfig::default()
    };
    let value = NewRecord::value(Bytes::from(vec![1u8; 1024]));
    // Twice HOT_BYTES of 1 KiB records, in one segment.
    let n = 2 * HOT_BYTES / 1024;
    let log = Log::open(dir.path(), config.clone()).unwrap();
    for _ in 0..n {
        log.append(std::slice::from_ref(&value)).unwrap();
    }
    assert!(log.is_hot(n - 1), "the last record written is hot");
    assert!(log.is_hot(n - 10));
    assert!(!log.is_hot(0), "a record 2 x HOT_BYTES from the end is not");
    assert!(!log.is_hot(n), "the end itself has nothing to read");
    assert!(!log.is_hot(n + 5));
    drop(log);

    // After a restart nothing read is known to be in memory; what this process appends is.
    let log = Log::open(dir.path(), config).unwrap();
    assert!(!log.is_hot(n - 1), "written before this open");
    log.append(std::slice::from_ref(&value)).unwrap();
    assert!(log.is_hot(n));
    assert_eq!(log.read_records(n - 1, 1, usize::MAX).unwrap().len(), 1);
    assert_eq!(log.read_records(0, 3, usize::MAX).unwrap().len(), 3);
    assert_eq!(log.read_records(0, usize::MAX, 4096).unwrap().len(), 4);
}
