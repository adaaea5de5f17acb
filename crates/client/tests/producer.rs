//! The producer batches concurrent sends, and every send resolves to its own dense, unique offset whose
//! record reads back byte for byte.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use common::TestServer;
use ferry_client::{DeliveryFuture, ProduceRecord, ProducerConfig};
use tokio::time::timeout;

/// Whether the delivery is still pending, after polling it once.
async fn pending(d: &mut DeliveryFuture) -> bool {
    std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *d).poll(cx).is_pending())).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_sends_get_dense_unique_offsets_and_read_back_identical() {
    let server = TestServer::start().await;
    server.topic("events", 3).await;
    let producer = server.client.producer();
    // Four tasks send 250 records each at the same time; values vary in spacing and key order, which
    // must survive byte for byte.
    let mut tasks = Vec::new();
    for t in 0..4 {
        let producer = producer.clone();
        tasks.push(tokio::spawn(async move {
            let mut sent = Vec::new();
            for i in 0..250 {
                let n = t * 250 + i;
                let value = format!(
                    "{{\"n\": {n},  \"pad\":\"{}\" , \"a\":[1, 2.50]}}",
                    "x".repeat(n % 40)
                );
                let record = ProduceRecord::json_bytes(value.clone())
                    .unwrap()
                    .key(format!("k{}", n % 7))
                    .header("n", n.to_string())
                    .header("task", t.to_string());
                sent.push((n, value, producer.send("events", record)));
            }
            let mut acked = Vec::new();
            for (n, value, delivery) in sent {
                acked.push((n, value, delivery.await.unwrap()));
            }
            acked
        }));
    }
    let mut acked = Vec::new();
    for task in tasks {
        acked.extend(task.await.unwrap());
    }
    assert_eq!(acked.len(), 1000);

    let mut by_partition: BTreeMap<u32, BTreeMap<u64, (usize, String)>> = BTreeMap::new();
    for (n, value, at) in acked {
        let previous = by_partition
            .entry(at.partition)
            .or_default()
            .insert(at.offset, (n, value));
        assert!(previous.is_none(), "offset {at:?} given twice");
    }
    for (partition, records) in &by_partition {
        let offsets: Vec<u64> = records.keys().copied().collect();
        let dense: Vec<u64> = (0..records.len() as u64).collect();
        assert_eq!(offsets, dense, "partition {partition}");
        let back = server
            .client
            .fetch("events", *partition, 0, 10_000, Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(back.len(), records.len());
        for r in back {
            let (n, value) = &records[&r.offset];
            assert_eq!(r.value, value.as_bytes(), "record {n}");
            assert_eq!(r.key_str(), Some(format!("k{}", n % 7).as_str()));
            assert_eq!(r.header("n").map(|v| &v[..]), Some(n.to_string().as_bytes()));
            assert_eq!(r.headers[1].0, "task");
            assert_eq!(r.value_json::<serde_json::Value>().unwrap()["n"], *n);
            assert_eq!(r.topic, "events");
        }
    }
    producer.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_batch_goes_without_waiting_for_the_linger() {
    let server = TestServer::start().await;
    server.topic("t", 1).await;
    // A linger far longer than the test's time limit: only a full batch can complete in time.
    let producer = server.client.producer_with(
        ProducerConfig::default()
            .linger(Duration::from_secs(60))
            .max_batch_records(3),
    );
    let a = producer.send("t", ProduceRecord::text("a"));
    let b = producer.send("t", ProduceRecord::text("b"));
    let c = producer.send("t", ProduceRecord::text("c"));
    let (a, b, c) = timeout(Duration::from_secs(20), async { tokio::join!(a, b, c) })
        .await
        .expect("a full batch is sent at once");
    let offsets: Vec<u64> = [a, b, c].into_iter().map(|r| r.unwrap().offset).collect();
    assert_eq!(offsets, [0, 1, 2], "order within a batch is kept");

    // A fourth record waits for its linger, or for a flush.
    let mut d = producer.send("t", ProduceRecord::text("d"));
    assert!(pending(&mut d).await, "a lone record waits for the linger");
    producer.flush().await;
    // A zero timeout polls the delivery once: it must be resolved already.
    let at = timeout(Duration::ZERO, d)
        .await
        .expect("flush returns once every earlier send has its answer");
    assert_eq!(at.unwrap().offset, 3);

    let back = server.client.fetch("t", 0, 0, 10, Duration::ZERO).await.unwrap();
    let texts: Vec<String> = back.iter().map(|r| r.value_json().unwrap()).collect();
    assert_eq!(texts, ["a", "b", "c", "d"]);
    assert_eq!(&back[0].value[..], b"\"a\"", "text is stored as a JSON string");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_request_in_flight_keeps_the_send_order_of_a_partition() {
    let server = TestServer::start().await;
    server.topic("ordered", 2).await;
    let producer = server.client.producer_with(
        ProducerConfig::default()
            .max_in_flight(1)
            .max_batch_records(7)
            .linger(Duration::from_millis(1)),
    );
    let sends: Vec<_> = (0..200)
        .map(|i| producer.send("ordered", ProduceRecord::json(&i).unwrap().key("same")))
        .collect();
    let mut last = None;
    for d in sends {
        let at = d.await.unwrap();
        if let Some(prev) = last {
            assert_eq!(at.offset, prev + 1, "offsets follow the send order");
        }
        last = Some(at.offset);
    }
    // Dropping the last handle closes the producer; nothing was left to send.
    drop(producer);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_producer_still_sends_what_it_buffered() {
    let server = TestServer::start().await;
    server.topic("t", 1).await;
    let producer = server
        .client
        .producer_with(ProducerConfig::default().linger(Duration::from_secs(60)));
    let d = producer.send("t", ProduceRecord::text("last words"));
    drop(producer);
    let at = timeout(Duration::from_secs(20), d)
        .await
        .expect("closing sends at once, without the linger")
        .unwrap();
    assert_eq!(at.offset, 0);
    server.stop().await;
}

/// How many `POST .../records` the server answered 200, from its metrics.
async fn publish_requests(url: &str) -> u64 {
    let text = reqwest::get(format!("{url}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find(|l| {
            l.starts_with("ferry_http_request_duration_seconds_count{")
                && l.contains("method=\"POST\"")
                && l.contains("route=\"/v1/topics/{topic}/records\"")
                && l.contains("status=\"200\"")
        })
        .and_then(|l| l.rsplit(' ').next())
        .map_or(0, |n| n.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_linger_records_wait_for_a_request_slot_in_one_growing_batch() {
    let server = TestServer::start().await;
    server.topic("t", 1).await;
    // Linger 0 and one request at a time: the first record goes at once, and every record sent while
    // a request is out joins the one open batch instead of becoming a request of its own.
    let producer = server
        .client
        .producer_with(ProducerConfig::default().linger(Duration::ZERO).max_in_flight(1));
    let mut sends = Vec::new();
    for i in 0..1000 {
        sends.push(producer.send("t", ProduceRecord::json(&i).unwrap()));
        // Gives the dispatcher every chance to send a batch per record.
        tokio::task::yield_now().await;
    }
    let mut offsets = Vec::new();
    for d in sends {
        offsets.push(d.await.unwrap().offset);
    }
    assert_eq!(offsets, (0..1000).collect::<Vec<u64>>());
    let requests = publish_requests(&server.url).await;
    assert!(
        (1..200).contains(&requests),
        "1000 records took {requests} requests"
    );
    server.stop().await;
}
