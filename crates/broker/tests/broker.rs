//! The embedded broker through its public API: topics, partitioning, fetch with long-poll, stream groups,
//! and what survives a restart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bytes::Bytes;
use ferry_broker::{
    Broker, BrokerError, FetchLimits, Header, Produce, SeekTo, TopicConfig, partition_for_key,
};

fn value(s: &str) -> Produce {
    Produce {
        value: Bytes::copy_from_slice(s.as_bytes()),
        ..Produce::default()
    }
}

fn keyed(k: &str, v: &str) -> Produce {
    Produce {
        key: Some(Bytes::copy_from_slice(k.as_bytes())),
        ..value(v)
    }
}

fn topic(partitions: u32) -> TopicConfig {
    TopicConfig {
        partitions,
        ..TopicConfig::default()
    }
}

fn all() -> FetchLimits {
    FetchLimits {
        max_records: 10_000,
        max_bytes: 1 << 20,
        max_wait: Duration::ZERO,
    }
}

#[tokio::test]
async fn topics_are_created_listed_described_and_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(dir.path()).unwrap();
    let info = broker.create_topic("orders", topic(3)).await.unwrap();
    assert_eq!(info.partitions.len(), 3);
    broker
        .create_topic("audit", TopicConfig::default())
        .await
        .unwrap();
    assert!(matches!(
        broker.create_topic("orders", topic(1)).await,
        Err(BrokerError::TopicExists(_))
    ));
    let names: Vec<_> = broker.list_topics().into_iter().map(|t| t.name).collect();
    assert_eq!(names, ["audit", "orders"]);
    for bad in ["", "a/b", "..", "x y"] {
        assert!(matches!(
            broker.create_topic(bad, topic(1)).await,
            Err(BrokerError::InvalidName { field: "name", .. })
        ));
    }
    assert!(matches!(
        broker.create_topic("zero", topic(0)).await,
        Err(BrokerError::InvalidConfig {
            field: "partitions",
            ..
        })
    ));
    assert!(matches!(
        broker.create_topic("many", topic(1025)).await,
        Err(BrokerError::InvalidConfig {
            field: "partitions",
            ..
        })
    ));

    broker.publish("orders", vec![value("old")]).await.unwrap();
    broker.delete_topic("orders").await.unwrap();
    assert!(matches!(
        broker.describe_topic("orders"),
        Err(BrokerError::TopicNotFound(_))
    ));
    assert!(matches!(
        broker.publish("orders", vec![value("x")]).await,
        Err(BrokerError::TopicNotFound(_))
    ));
    // Re-created, it starts empty: old records never come back, not even after a restart.
    broker.create_topic("orders", topic(3)).await.unwrap();
    let offsets: u64 = broker
        .describe_topic("orders")
        .unwrap()
        .partitions
        .iter()
        .map(|p| p.next_offset)
        .sum();
    assert_eq!(offsets, 0);
    drop(broker);
    let broker = Broker::open(dir.path()).unwrap();
    let info = broker.describe_topic("orders").unwrap();
    assert_eq!(info.partitions.iter().map(|p| p.next_offset).sum::<u64>(), 0);
    assert_eq!(broker.list_topics().len(), 2);
    let dirs = std::fs::read_dir(dir.path().join("topics")).unwrap().count();
    assert_eq!(dirs, 2, "the deleted topic's directory is gone");
}

#[tokio::test]
async fn keys_pick_partitions_and_records_come_back_whole() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(dir.path()).unwrap();
    broker.create_topic("t", topic(4)).await.unwrap();
    let mut records = Vec::new();
    for i in 0..40 {
        let mut r = keyed(&format!("user-{}", i % 5), &format!("v{i}"));
        r.headers = vec![Header {
            key: "i".into(),
            value: Bytes::from(i.to_string()),
        }];
        r.timestamp = Some(1_000 + i);
        records.push(r);
    }
    let produced = broker.publish("t", records.clone()).await.unwrap();
    for (r, p) in records.iter().zip(&produced) {
        assert_eq!(p.partition, partition_for_key(r.key.as_ref().unwrap(), 4));
    }
    // Offsets within a partition are dense and in publish order.
    let mut next: BTreeMap<u32, u64> = BTreeMap::new();
    for p in &produced {
        let n = next.entry(p.partition).or_default();
        assert_eq!(p.offset, *n);
        *n += 1;
    }
    for (r, p) in records.iter().zip(&produced) {
        let got = broker
            .fetch(
                "t",
                p.partition,
                p.offset,
                FetchLimits {
                    max_records: 1,
                    ..all()
                },
            )
            .await
            .unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].partition, got[0].offset), (p.partition, p.offset));
        assert_eq!(got[0].key, r.key);
        assert_eq!(got[0].headers, r.headers);
        assert_eq!(got[0].value, r.value);
        assert_eq!(Some(got[0].timestamp), r.timestamp);
    }

    // Without a key: round-robin over all partitions.
    let produced = broker
        .publish("t", (0..8).map(|i| value(&i.to_string())).collect())
        .await
        .unwrap();
    let used: BTreeSet<u32> = produced.iter().map(|p| p.partition).collect();
    assert_eq!(used.len(), 4);
    // An explicit partition wins; a missing one is refused and nothing is written.
    let before = broker.describe_topic("t").unwrap();
    let explicit = Produce {
        partition: Some(2),
        ..keyed("user-1", "x")
    };
    assert_eq!(broker.publish("t", vec![explicit]).await.unwrap()[0].partition, 2);
    let wrong = vec![
        value("fine"),
        Produce {
            partition: Some(9),
            ..value("x")
        },
    ];
    assert!(matches!(
        broker.publish("t", wrong).await,
        Err(BrokerError::PartitionNotFound {
            partition: 9,
            partitions: 4,
            ..
        })
    ));
    let after = broker.describe_topic("t").unwrap();
    let sum = |t: &ferry_broker::TopicInfo| t.partitions.iter().map(|p| p.next_offset).sum::<u64>();
    assert_eq!(sum(&after), sum(&before) + 1);
}

#[tokio::test]
async fn oversized_records_and_bad_offsets_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(dir.path()).unwrap();
    broker
        .create_topic(
            "small",
            TopicConfig {
                max_record_bytes: 100,
                ..TopicConfig::default()
            },
        )
        .await
        .unwrap();
    broker
        .publish("small", vec![value(&"x".repeat(100))])
        .await
        .unwrap();
    assert!(matches!(
        broker.publish("small", vec![value(&"x".repeat(101))]).await,
        Err(BrokerError::RecordTooLarge { size: 101, max: 100 })
    ));
    assert!(matches!(
        broker.fetch("small", 0, 2, all()).await,
        Err(BrokerError::OffsetOutOfRange {
            offset: 2,
            start: 0,
            end: 1,
            ..
        })
    ));
    assert!(broker.fetch("small", 0, 1, all()).await.unwrap().is_empty());
    assert!(matches!(
        broker.fetch("small", 1, 0, all()).await,
        Err(BrokerError::PartitionNotFound { .. })
    ));
    assert!(matches!(
        broker.fetch("nope", 0, 0, all()).await,
        Err(BrokerError::TopicNotFound(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_fetch_is_woken_by_a_publish() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(dir.path()).unwrap();
    broker.create_topic("t", topic(1)).await.unwrap();
    let waiting = {
        let broker = broker.clone();
        tokio::spawn(async move {
            let limits = FetchLimits {
                max_wait: Duration::from_secs(30),
                ..all()
            };
            broker.fetch("t", 0, 0, limits).await.unwrap()
        })
    };
    let group = {
        let broker = broker.clone();
        tokio::spawn(async move {
            let limits = FetchLimits {
                max_wait: Duration::from_secs(30),
                ..all()
            };
            broker.group_fetch("g", "t", limits).await.unwrap()
        })
    };
    broker.publish("t", vec![value("hello")]).await.unwrap();
    // Both return the record well before their 30 s wait would end; a missed wake-up would make the
    // test time out instead.
    let got = tokio::time::timeout(Duration::from_secs(20), waiting)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got[0].value, Bytes::from_static(b"hello"));
    let got = tokio::time::timeout(Duration::from_secs(20), group)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got[0].value, Bytes::from_static(b"hello"));
    // A wait with nothing arriving ends empty at its deadline.
    let limits = FetchLimits {
        max_wait: Duration::from_millis(50),
        ..all()
    };
    assert!(broker.fetch("t", 0, 1, limits).await.unwrap().is_empty());
}

#[tokio::test]
async fn stream_groups_resume_from_committed_offsets_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(dir.path()).unwrap();
    broker.create_topic("t", topic(3)).await.unwrap();
    broker
        .publish(
            "t",
            (0..30)
                .map(|i| keyed(&format!("k{i}"), &format!("v{i}")))
                .collect(),
        )
        .await
        .unwrap();

    // Two groups read independently; each sees every record exactly once per pass.
    for g in ["a", "b"] {
        let got = broker.group_fetch(g, "t", all()).await.unwrap();
        assert_eq!(got.len(), 30);
        assert!(broker.group_fetch(g, "t", all()).await.unwrap().is_empty());
    }
    // Group a commits everything; group b commits nothing.
    let ends: Vec<(u32, u64)> = broker
        .describe_topic("t")
        .unwrap()
        .partitions
        .iter()
        .map(|p| (p.partition, p.next_offset))
        .collect();
    broker.commit("a", "t", &ends).await.unwrap();
    let lag: u64 = broker
        .group_offsets("a", "t")
        .unwrap()
        .iter()
        .map(|p| p.lag)
        .sum();
    assert_eq!(lag, 0);
    assert!(matches!(
        broker.group_offsets("b", "t"),
        Err(BrokerError::GroupNotFound { .. })
    ));
    assert!(matches!(
        broker.commit("a", "t", &[(0, 1_000)]).await,
        Err(BrokerError::OffsetOutOfRange { offset: 1_000, .. })
    ));

    drop(broker);
    let broker = Broker::open(dir.path()).unwrap();
    // Committed offsets survive: a sees nothing old; b (never committed) gets everything again.
    assert!(broker.group_fetch("a", "t", all()).await.unwrap().is_empty());
    assert_eq!(broker.group_fetch("b", "t", all()).await.unwrap().len(), 30);
    broker.publish("t", vec![value("new")]).await.unwrap();
    let got = broker.group_fetch("a", "t", all()).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].value, Bytes::from_static(b"new"));
    let lag: u64 = broker
        .group_offsets("a", "t")
        .unwrap()
        .iter()
        .map(|p| p.lag)
        .sum();
    assert_eq!(lag, 1, "fetched but not committed is still lag");
}

#[tokio::test]
async fn seek_moves_a_group_to_earliest_latest_an_offset_or_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(dir.path()).unwrap();
    broker.create_topic("t", topic(1)).await.unwrap();
    let records: Vec<Produce> = (0..10)
        .map(|i| Produce {
            timestamp: Some(10_000 + i * 100),
            ..value(&format!("v{i}"))
        })
        .collect();
    broker.publish("t", records).await.unwrap();

    assert_eq!(
        broker.seek("g", "t", None, SeekTo::Offset(4)).await.unwrap(),
        [(0, 4)]
    );
    let got = broker.group_fetch("g", "t", all()).await.unwrap();
    assert_eq!(got.first().map(|r| r.offset), Some(4));
    assert_eq!(
        broker
            .seek("g", "t", Some(0), SeekTo::Timestamp(10_650))
            .await
            .unwrap(),
        [(0, 7)]
    );
    assert_eq!(broker.group_fetch("g", "t", all()).await.unwrap().len(), 3);
    assert_eq!(
        broker.seek("g", "t", None, SeekTo::Earliest).await.unwrap(),
        [(0, 0)]
    );
    assert_eq!(broker.group_fetch("g", "t", all()).await.unwrap().len(), 10);
    assert_eq!(
        broker.seek("g", "t", None, SeekTo::Latest).await.unwrap(),
        [(0, 10)]
    );
    assert!(broker.group_fetch("g", "t", all()).await.unwrap().is_empty());
    assert_eq!(
        broker
            .seek("g", "t", None, SeekTo::Timestamp(99_999))
            .await
            .unwrap(),
        [(0, 10)]
    );
    assert!(matches!(
        broker.seek("g", "t", None, SeekTo::Offset(11)).await,
        Err(BrokerError::OffsetOutOfRange { offset: 11, .. })
    ));
    // A seek is a commit: it survives a restart.
    broker.seek("g", "t", None, SeekTo::Offset(3)).await.unwrap();
    drop(broker);
    let broker = Broker::open(dir.path()).unwrap();
    assert_eq!(broker.group_offsets("g", "t").unwrap()[0].committed, Some(3));
    assert_eq!(broker.group_fetch("g", "t", all()).await.unwrap().len(), 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_metadata_log_is_compacted_into_a_snapshot_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(dir.path()).unwrap();
    broker.create_topic("t", topic(2)).await.unwrap();
    broker
        .publish("t", (0..100).map(|i| keyed(&format!("k{i}"), "v")).collect())
        .await
        .unwrap();
    let ends: Vec<(u32, u64)> = broker
        .describe_topic("t")
        .unwrap()
        .partitions
        .iter()
        .map(|p| (p.partition, p.next_offset))
        .collect();
    // More than 10,000 metadata events, 64 at a time so they share fsyncs.
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let broker = broker.clone();
            tokio::spawn(async move {
                for j in 0..160u64 {
                    broker
                        .commit(&format!("g{i}"), "t", &[(0, j % 10)])
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    broker.commit("final", "t", &ends).await.unwrap();
    let got = broker
        .receive(
            "q",
            "t",
            ferry_broker::ReceiveOptions {
                max_records: 5,
                ..Default::default()
            },
        )
        .await;
    let leased = got.unwrap();
    broker
        .ack("q", "t", &[(leased[0].record.partition, leased[0].record.offset)])
        .await
        .unwrap();
    drop(broker);

    let meta_before = dir_size(&dir.path().join("meta"));
    let broker = Broker::open(dir.path()).unwrap();
    let meta_after = dir_size(&dir.path().join("meta"));
    assert!(
        meta_after * 20 < meta_before,
        "meta log {meta_before} -> {meta_after} bytes"
    );
    for i in 0..64 {
        assert_eq!(
            broker.group_offsets(&format!("g{i}"), "t").unwrap()[0].committed,
            Some(9)
        );
    }
    let lag: u64 = broker
        .group_offsets("final", "t")
        .unwrap()
        .iter()
        .map(|p| p.lag)
        .sum();
    assert_eq!(lag, 0);
    assert_eq!(broker.queue_info("q", "t").unwrap().depth, 99);
    drop(broker);

    // A compaction interrupted between its two renames is completed on the next open.
    std::fs::rename(dir.path().join("meta"), dir.path().join("meta.new")).unwrap();
    let broker = Broker::open(dir.path()).unwrap();
    assert_eq!(broker.group_offsets("g0", "t").unwrap()[0].committed, Some(9));
    assert!(!dir.path().join("meta.new").exists());
}

fn dir_size(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum()
}
