//! A stream consumer polls a group's records over all partitions, commits, seeks and reports lag.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::TestServer;
use ferry_client::{ProduceRecord, SeekTo};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_commit_seek_and_lag() {
    let server = TestServer::start().await;
    server.topic("orders", 2).await;
    let client = &server.client;
    let records: Vec<ProduceRecord> = (0..10)
        .map(|i| {
            ProduceRecord::json(&serde_json::json!({"i": i}))
                .unwrap()
                .partition(i % 2)
                .timestamp(1_000 + i64::from(i))
        })
        .collect();
    let produced = client.publish("orders", &records).await.unwrap();
    assert_eq!(produced.len(), 10);

    let mut consumer = client.stream_consumer("billing", "orders");
    let lag = consumer.lag().await.unwrap();
    assert_eq!(lag.lag, 10, "before any commit everything is lag");
    assert!(lag.partitions.iter().all(|p| p.committed.is_none()));

    let first = consumer.poll(4, Duration::ZERO).await.unwrap();
    assert_eq!(first.len(), 4);
    let rest = consumer.poll(100, Duration::ZERO).await.unwrap();
    assert_eq!(rest.len(), 6);
    let seen: BTreeSet<(u32, u64)> = first
        .iter()
        .chain(&rest)
        .map(|r| (r.partition, r.offset))
        .collect();
    assert_eq!(seen.len(), 10, "each record is handed out once");
    assert!(consumer.poll(100, Duration::ZERO).await.unwrap().is_empty());

    consumer.commit(&first).await.unwrap();
    let lag = consumer.lag().await.unwrap();
    assert_eq!(lag.lag, 6);
    consumer.commit_polled().await.unwrap();
    let lag = consumer.lag().await.unwrap();
    assert_eq!(lag.lag, 0);
    assert_eq!(
        lag.partitions.iter().map(|p| p.committed).collect::<Vec<_>>(),
        [Some(5), Some(5)]
    );

    // A long-poll returns as soon as a record arrives.
    let publisher = client.clone();
    let waiting = tokio::spawn(async move {
        let mut c = publisher.stream_consumer("billing", "orders");
        c.poll(10, Duration::from_secs(30)).await.unwrap()
    });
    let at = client
        .publish("orders", &[ProduceRecord::text("late").partition(1)])
        .await
        .unwrap()[0];
    let got = tokio::time::timeout(Duration::from_secs(20), waiting)
        .await
        .expect("the long-poll ends when the record comes")
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].partition, got[0].offset), (at.partition, at.offset));
    assert_eq!(got[0].value_json::<String>().unwrap(), "late");

    // Back to the start: every record again, and the seek is committed.
    let moved = consumer.seek(SeekTo::Earliest).await.unwrap();
    assert_eq!(moved, [(0, 0), (1, 0)]);
    assert_eq!(consumer.lag().await.unwrap().lag, 11);
    let again = consumer.poll(100, Duration::ZERO).await.unwrap();
    assert_eq!(again.len(), 11);

    assert_eq!(consumer.seek_partition(0, SeekTo::Offset(3)).await.unwrap(), 3);
    let p0: Vec<u64> = consumer
        .poll(100, Duration::ZERO)
        .await
        .unwrap()
        .iter()
        .map(|r| {
            assert_eq!(r.partition, 0);
            r.offset
        })
        .collect();
    assert_eq!(p0, [3, 4]);

    // Partition 1 holds timestamps 1001, 1003, ..., 1009 then "late" (now).
    consumer.seek(SeekTo::Timestamp(1_006)).await.unwrap();
    let from_ts: Vec<(u32, u64)> = consumer
        .poll(100, Duration::ZERO)
        .await
        .unwrap()
        .iter()
        .map(|r| (r.partition, r.offset))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(from_ts, [(0, 3), (0, 4), (1, 3), (1, 4), (1, 5)]);

    consumer.seek(SeekTo::Latest).await.unwrap();
    assert!(consumer.poll(100, Duration::ZERO).await.unwrap().is_empty());
    assert_eq!(consumer.lag().await.unwrap().lag, 0);

    let e = consumer.seek(SeekTo::Offset(99)).await.unwrap_err();
    assert_eq!(e.code(), Some("offset_out_of_range"));
    assert_eq!(e.api().unwrap().field.as_deref(), Some("to.offset"));

    let mut lost = client.stream_consumer("billing", "missing");
    let e = lost.poll(1, Duration::ZERO).await.unwrap_err();
    assert_eq!((e.status(), e.code()), (Some(404), Some("topic_not_found")));
    let e = consumer.poll(0, Duration::ZERO).await.unwrap_err();
    assert_eq!(e.code(), Some("out_of_range"));
    server.stop().await;
}
