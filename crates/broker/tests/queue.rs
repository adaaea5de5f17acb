//! Queue groups: leases, ack, nack with delay, extend, expired leases, max_deliveries and dead letters,
//! the in-flight limit, delayed delivery, and what a restart keeps.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::Bytes;
use ferry_broker::{Broker, BrokerError, FetchLimits, Produce, QueueConfig, ReceiveOptions, TopicConfig};

fn value(s: &str) -> Produce {
    Produce {
        value: Bytes::copy_from_slice(s.as_bytes()),
        ..Produce::default()
    }
}

fn take(n: usize) -> ReceiveOptions {
    ReceiveOptions {
        max_records: n,
        ..ReceiveOptions::default()
    }
}

async fn broker_with(dir: &std::path::Path, partitions: u32, records: usize) -> Broker {
    let broker = Broker::open(dir).unwrap();
    broker
        .create_topic(
            "jobs",
            TopicConfig {
                partitions,
                ..TopicConfig::default()
            },
        )
        .await
        .unwrap();
    broker
        .publish("jobs", (0..records).map(|i| value(&format!("job-{i}"))).collect())
        .await
        .unwrap();
    broker
}

#[tokio::test]
async fn each_record_is_leased_to_one_receiver_until_acked() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker_with(dir.path(), 3, 30).await;
    let a = broker.receive("workers", "jobs", take(20)).await.unwrap();
    let b = broker.receive("workers", "jobs", take(20)).await.unwrap();
    assert_eq!(a.len() + b.len(), 30);
    let ids: BTreeSet<_> = a
        .iter()
        .chain(&b)
        .map(|l| (l.record.partition, l.record.offset))
        .collect();
    assert_eq!(ids.len(), 30, "no record leased twice");
    assert!(a.iter().chain(&b).all(|l| l.deliveries == 1));
    assert!(
        broker
            .receive("workers", "jobs", take(10))
            .await
            .unwrap()
            .is_empty()
    );

    let acks: Vec<_> = ids.iter().copied().collect();
    broker.ack("workers", "jobs", &acks).await.unwrap();
    let info = broker.queue_info("workers", "jobs").unwrap();
    assert_eq!((info.depth, info.in_flight), (0, 0));
    // Acking again is an error that names the record; nothing is delivered again.
    assert!(matches!(
        broker.ack("workers", "jobs", &acks[..1]).await,
        Err(BrokerError::NotLeased { .. })
    ));
    assert!(
        broker
            .receive("workers", "jobs", take(10))
            .await
            .unwrap()
            .is_empty()
    );
    // Another group gets every record too (a queue group per consumer service).
    assert_eq!(
        broker.receive("audit", "jobs", take(100)).await.unwrap().len(),
        30
    );
}

#[tokio::test]
async fn nack_and_expired_leases_redeliver_then_dead_letter() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker_with(dir.path(), 1, 2).await;
    let config = QueueConfig {
        max_deliveries: 3,
        visibility_timeout_ms: 60_000,
        ..QueueConfig::default()
    };
    let info = broker.create_queue("w", "jobs", config.clone()).await.unwrap();
    assert_eq!(info.dead_letter_topic, "jobs.w.dlq");
    assert!(matches!(
        broker
            .create_queue(
                "w",
                "jobs",
                QueueConfig {
                    max_deliveries: 4,
                    ..config
                }
            )
            .await,
        Err(BrokerError::QueueExists { .. })
    ));

    // Record 0: nacked every time. Record 1: acked on its second delivery.
    for round in 1..=3u32 {
        let got = broker.receive("w", "jobs", take(10)).await.unwrap();
        let offsets: Vec<u64> = got.iter().map(|l| l.record.offset).collect();
        if round <= 2 {
            assert_eq!(offsets, [0, 1], "round {round}");
        } else {
            assert_eq!(offsets, [0], "round {round}");
        }
        assert!(got.iter().all(|l| l.deliveries == round));
        broker.nack("w", "jobs", &[(0, 0)], Duration::ZERO).await.unwrap();
        if round == 1 {
            broker.nack("w", "jobs", &[(0, 1)], Duration::ZERO).await.unwrap();
        } else if round == 2 {
            broker.ack("w", "jobs", &[(0, 1)]).await.unwrap();
        }
    }
    // The fourth attempt would exceed max_deliveries: record 0 goes to the dead-letter topic instead.
    assert!(broker.receive("w", "jobs", take(10)).await.unwrap().is_empty());
    let dead = broker
        .fetch("jobs.w.dlq", 0, 0, FetchLimits::default())
        .await
        .unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].value, Bytes::from_static(b"job-0"));
    let header = |k: &str| {
        let h = dead[0]
            .headers
            .iter()
            .find(|h| h.key == k)
            .unwrap_or_else(|| panic!("no header {k}"));
        String::from_utf8(h.value.to_vec()).unwrap()
    };
    assert_eq!(header("ferry-dlq-topic"), "jobs");
    assert_eq!(header("ferry-dlq-partition"), "0");
    assert_eq!(header("ferry-dlq-offset"), "0");
    assert_eq!(header("ferry-dlq-deliveries"), "3");
    assert!(
        header("ferry-dlq-reason").contains("nack"),
        "{}",
        header("ferry-dlq-reason")
    );
    assert_eq!(broker.queue_info("w", "jobs").unwrap().depth, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_lease_makes_the_record_available_and_extend_keeps_it() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker_with(dir.path(), 1, 2).await;
    let short = ReceiveOptions {
        max_records: 1,
        visibility_timeout: Some(Duration::from_millis(200)),
        ..take(1)
    };
    let first = broker.receive("w", "jobs", short).await.unwrap();
    let second = broker.receive("w", "jobs", short).await.unwrap();
    assert_eq!((first[0].record.offset, second[0].record.offset), (0, 1));
    broker
        .extend("w", "jobs", &[(0, 1)], Duration::from_secs(60))
        .await
        .unwrap();
    // Long-poll until the un-extended lease of record 0 expires: the receive wakes at the lease end.
    let wait = ReceiveOptions {
        max_records: 10,
        max_wait: Duration::from_secs(30),
        visibility_timeout: None,
    };
    // Well before max_wait: a receive that missed the lease's end would only return after 30 s.
    let again = tokio::time::timeout(Duration::from_secs(10), broker.receive("w", "jobs", wait))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!((again[0].record.offset, again[0].deliveries), (0, 2));
    // Record 1's extended lease still holds, so its ack is taken.
    broker.ack("w", "jobs", &[(0, 1)]).await.unwrap();
    broker.ack("w", "jobs", &[(0, 0)]).await.unwrap();
    assert_eq!(broker.queue_info("w", "jobs").unwrap().depth, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nack_with_delay_and_delivery_delay_hold_records_back() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker_with(dir.path(), 1, 1).await;
    let got = broker.receive("w", "jobs", take(1)).await.unwrap();
    broker
        .nack(
            "w",
            "jobs",
            &[(0, got[0].record.offset)],
            Duration::from_millis(300),
        )
        .await
        .unwrap();
    assert!(
        broker.receive("w", "jobs", take(1)).await.unwrap().is_empty(),
        "held back by the delay"
    );
    let wait = ReceiveOptions {
        max_wait: Duration::from_secs(30),
        ..take(1)
    };
    let started = std::time::Instant::now();
    let again = broker.receive("w", "jobs", wait).await.unwrap();
    assert_eq!(again[0].deliveries, 2);
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "came back before its delay"
    );

    let config = QueueConfig {
        delivery_delay_ms: 300,
        ..QueueConfig::default()
    };
    broker.create_queue("late", "jobs", config).await.unwrap();
    broker.publish("jobs", vec![value("fresh")]).await.unwrap();
    // job-0 is old enough; the fresh record is not yet.
    let now = broker.receive("late", "jobs", take(10)).await.unwrap();
    assert_eq!(now.iter().map(|l| l.record.offset).collect::<Vec<_>>(), [0]);
    let later = broker.receive("late", "jobs", wait).await.unwrap();
    assert_eq!(later.iter().map(|l| l.record.offset).collect::<Vec<_>>(), [1]);
}

#[tokio::test]
async fn the_in_flight_limit_applies_backpressure() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker_with(dir.path(), 2, 10).await;
    broker
        .create_queue(
            "w",
            "jobs",
            QueueConfig {
                max_in_flight: 3,
                ..QueueConfig::default()
            },
        )
        .await
        .unwrap();
    let got = broker.receive("w", "jobs", take(10)).await.unwrap();
    assert_eq!(got.len(), 3);
    assert!(broker.receive("w", "jobs", take(10)).await.unwrap().is_empty());
    broker
        .ack("w", "jobs", &[(got[0].record.partition, got[0].record.offset)])
        .await
        .unwrap();
    assert_eq!(broker.receive("w", "jobs", take(10)).await.unwrap().len(), 1);
    assert_eq!(broker.queue_info("w", "jobs").unwrap().in_flight, 3);
}

#[tokio::test]
async fn after_a_restart_acked_records_stay_acked_and_leased_ones_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker_with(dir.path(), 2, 6).await;
    let got = broker.receive("w", "jobs", take(6)).await.unwrap();
    assert_eq!(got.len(), 6);
    let (acked, leased) = got.split_at(4);
    let acks: Vec<_> = acked
        .iter()
        .map(|l| (l.record.partition, l.record.offset))
        .collect();
    broker.ack("w", "jobs", &acks).await.unwrap();
    drop(broker);

    let broker = Broker::open(dir.path()).unwrap();
    let again = broker.receive("w", "jobs", take(10)).await.unwrap();
    let want: BTreeSet<_> = leased
        .iter()
        .map(|l| (l.record.partition, l.record.offset))
        .collect();
    let got: BTreeSet<_> = again
        .iter()
        .map(|l| (l.record.partition, l.record.offset))
        .collect();
    assert_eq!(got, want, "exactly the unacknowledged records come back");
    assert!(
        again.iter().all(|l| l.deliveries == 2),
        "delivery counts survive the restart"
    );
    assert_eq!(broker.queue_info("w", "jobs").unwrap().depth, 2);
}

/// Under `fsync = interval` a topic's records and the groups' bookkeeping reach the disk
/// independently, so a machine crash can leave a queue group (or a stream group's committed offset)
/// past the end of its partition. On opening, that bookkeeping is cut back to the end, and written
/// down: the records published at those offsets afterwards are delivered, not taken for done, also
/// after a second restart.
#[tokio::test]
async fn bookkeeping_past_a_partition_lost_in_a_crash_is_cut_back() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(dir.path()).unwrap();
    let config = TopicConfig {
        fsync: ferry_broker::FsyncPolicy::Interval(Duration::from_millis(50)),
        ..TopicConfig::default()
    };
    broker.create_topic("jobs", config).await.unwrap();
    broker
        .publish("jobs", (0..3).map(|i| value(&format!("job-{i}"))).collect())
        .await
        .unwrap();
    let segment = std::fs::read_dir(dir.path().join("topics"))
        .unwrap()
        .map(|e| e.unwrap().path().join("0").join("00000000000000000000.log"))
        .next()
        .unwrap();
    let kept = std::fs::metadata(&segment).unwrap().len();
    broker
        .publish("jobs", (3..6).map(|i| value(&format!("job-{i}"))).collect())
        .await
        .unwrap();
    let got = broker.receive("w", "jobs", take(6)).await.unwrap();
    assert_eq!(got.len(), 6);
    let ids: Vec<_> = got
        .iter()
        .map(|l| (l.record.partition, l.record.offset))
        .collect();
    broker.ack("w", "jobs", &ids).await.unwrap();
    broker.commit("s", "jobs", &[(0, 6)]).await.unwrap();
    drop(broker);

    // The crash: the topic's last three records never reached the disk; the metadata did.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap()
        .set_len(kept)
        .unwrap();
    let broker = Broker::open(dir.path()).unwrap();
    assert_eq!(
        broker.describe_topic("jobs").unwrap().partitions[0].next_offset,
        3
    );
    assert_eq!(broker.queue_info("w", "jobs").unwrap().depth, 0);
    assert_eq!(broker.group_offsets("s", "jobs").unwrap()[0].committed, Some(3));
    broker
        .publish("jobs", vec![value("new-3"), value("new-4")])
        .await
        .unwrap();
    drop(broker);

    let broker = Broker::open(dir.path()).unwrap();
    let again = broker.receive("w", "jobs", take(10)).await.unwrap();
    let values: Vec<_> = again.iter().map(|l| l.record.value.clone()).collect();
    assert_eq!(values, vec![Bytes::from("new-3"), Bytes::from("new-4")]);
    assert!(again.iter().all(|l| l.deliveries == 1));
    assert_eq!(broker.group_offsets("s", "jobs").unwrap()[0].committed, Some(3));
}

/// `receive_until` stops waiting once its receiver is gone and leases nothing then: a record published
/// afterwards goes to the next receiver with its first delivery; a receiver already gone gets nothing
/// even when records are there.
#[tokio::test]
async fn a_receive_whose_receiver_is_gone_stops_waiting_and_leases_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker_with(dir.path(), 1, 1).await;
    let first = broker.receive("w", "jobs", take(10)).await.unwrap();
    broker
        .ack(
            "w",
            "jobs",
            &[(first[0].record.partition, first[0].record.offset)],
        )
        .await
        .unwrap();
    let options = ReceiveOptions {
        max_records: 10,
        max_wait: Duration::from_secs(60),
        visibility_timeout: None,
    };
    let (gone_tx, gone) = tokio::sync::oneshot::channel::<()>();
    let waiting = {
        let broker = broker.clone();
        tokio::spawn(async move {
            broker
                .receive_until("w", "jobs", options, async move {
                    let _ = gone.await;
                })
                .await
        })
    };
    gone_tx.send(()).unwrap();
    let got = tokio::time::timeout(Duration::from_secs(30), waiting)
        .await
        .expect("the receive went on waiting after its receiver was gone")
        .unwrap()
        .unwrap();
    assert!(got.is_empty());

    broker.publish("jobs", vec![value("z")]).await.unwrap();
    let gone_already = broker
        .receive_until("w", "jobs", options, std::future::ready(()))
        .await
        .unwrap();
    assert!(
        gone_already.is_empty(),
        "a receiver already gone was leased {gone_already:?}"
    );
    let got = broker.receive("w", "jobs", take(10)).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].record.value, Bytes::from("z"));
    assert_eq!(got[0].deliveries, 1);
}

fn long_poll(max_records: usize, max_wait: Duration) -> ReceiveOptions {
    ReceiveOptions {
        max_records,
        max_wait,
        visibility_timeout: None,
    }
}

/// A broker with an empty one-partition topic `jobs` and its queue group `w`.
async fn empty_queue(dir: &std::path::Path) -> Broker {
    let broker = broker_with(dir, 1, 0).await;
    broker
        .create_queue("w", "jobs", QueueConfig::default())
        .await
        .unwrap();
    broker
}

/// Long-polling receivers of one group take turns watching the topic: records published one at a
/// time, each only after the one before was received, all reach a receiver at once (none waits for a
/// long-poll to run out: that would be a lost wake-up), once each, and every receiver gets its share.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_polling_receivers_share_single_records_without_waiting_out_their_polls() {
    let dir = tempfile::tempdir().unwrap();
    let broker = empty_queue(dir.path()).await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let receivers: Vec<_> = (0..4)
        .map(|who| {
            let (broker, tx) = (broker.clone(), tx.clone());
            tokio::spawn(async move {
                loop {
                    let got = broker
                        .receive("w", "jobs", long_poll(1, Duration::from_secs(60)))
                        .await
                        .unwrap();
                    for d in got {
                        broker
                            .ack("w", "jobs", &[(d.record.partition, d.record.offset)])
                            .await
                            .unwrap();
                        tx.send((d.record.offset, who)).unwrap();
                    }
                }
            })
        })
        .collect();
    let mut offsets = BTreeSet::new();
    let mut per_receiver = [0; 4];
    tokio::time::timeout(Duration::from_secs(30), async {
        for i in 0..200 {
            broker
                .publish("jobs", vec![value(&format!("r{i}"))])
                .await
                .unwrap();
            let (offset, who) = rx.recv().await.unwrap();
            assert!(offsets.insert(offset), "offset {offset} delivered twice");
            per_receiver[who] += 1;
        }
    })
    .await
    .expect("a record waited for a long-poll to run out");
    for r in receivers {
        r.abort();
    }
    assert_eq!(offsets, (0..200).collect::<BTreeSet<u64>>());
    assert!(per_receiver.iter().all(|&n| n > 0), "{per_receiver:?}");
}

/// A receiver waiting for its turn still returns at its own deadline, and the receiver watching gets
/// what is published; a watcher that is dropped gives the turn up.
#[tokio::test]
async fn a_receiver_waiting_for_its_turn_keeps_its_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let broker = empty_queue(dir.path()).await;
    let mut watching = Box::pin(broker.receive("w", "jobs", long_poll(10, Duration::from_secs(60))));
    // One poll: it finds nothing, takes the turn and waits on the topic.
    assert!(tokio::time::timeout(Duration::ZERO, &mut watching).await.is_err());
    let short = tokio::time::timeout(
        Duration::from_secs(20),
        broker.receive("w", "jobs", long_poll(10, Duration::from_millis(50))),
    )
    .await
    .expect("a receiver waiting for the turn outlived its max_wait");
    assert!(short.unwrap().is_empty());

    broker.publish("jobs", vec![value("a")]).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(20), &mut watching)
        .await
        .expect("the watching receiver was not woken")
        .unwrap();
    assert_eq!(got.len(), 1);

    // Dropped while it watches: the next receiver takes the turn and is woken by the next record.
    let mut dropped = Box::pin(broker.receive("w", "jobs", long_poll(10, Duration::from_secs(60))));
    assert!(tokio::time::timeout(Duration::ZERO, &mut dropped).await.is_err());
    drop(dropped);
    let mut next = Box::pin(broker.receive("w", "jobs", long_poll(10, Duration::from_secs(60))));
    assert!(tokio::time::timeout(Duration::ZERO, &mut next).await.is_err());
    broker.publish("jobs", vec![value("b")]).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(20), &mut next)
        .await
        .expect("the turn of a dropped receiver was never given up")
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].record.value, Bytes::from("b"));
}
