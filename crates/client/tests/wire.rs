//! The client over the wire protocol (`ClientBuilder::wire`): the producer and `publish` store exactly
//! what reads back over HTTP; queue groups work over it; error answers are the HTTP API's; pipelined
//! requests get their own answers, in any order; a broken connection fails what is pending on it and
//! the next request reconnects; tokens are checked at HELLO.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use common::TestServer;
use ferry_client::{
    ApiError, Client, Error, ProduceRecord, ProducerConfig, QueueConfig, Record, RecordId, TopicConfig,
};
use ferry_server::{ServerOptions, Tokens};
use ferry_wire::{Request, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

fn api(e: &Error) -> &ApiError {
    e.api().unwrap_or_else(|| panic!("not an API error: {e:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_over_wire_stores_what_http_reads_back_byte_for_byte() {
    let server = TestServer::start_wire().await;
    server.topic("events", 3).await;
    let producer = server
        .client
        .producer_with(ProducerConfig::default().max_batch_records(50));
    let mut sent = Vec::new();
    for n in 0..300usize {
        // Spacing and key order must survive, and non-ASCII keys, header names and values.
        let value = format!(
            "{{\"n\": {n},  \"pad\":\"{}\" , \"é\":[1, 2.50]}}",
            "x".repeat(n % 13)
        );
        let mut record = ProduceRecord::json_bytes(value.clone())
            .unwrap()
            .key(format!("k{}-ü", n % 7))
            .header("n", n.to_string())
            .header("ünï", "v\"\n");
        if n % 10 == 0 {
            record = record.partition(2).timestamp(1_000 + n as i64);
        }
        sent.push((n, value, producer.send("events", record)));
    }
    let mut by_partition: BTreeMap<u32, BTreeMap<u64, (usize, String)>> = BTreeMap::new();
    for (n, value, delivery) in sent {
        let at = delivery.await.unwrap();
        if n % 10 == 0 {
            assert_eq!(at.partition, 2, "an explicit partition wins");
        }
        let previous = by_partition
            .entry(at.partition)
            .or_default()
            .insert(at.offset, (n, value));
        assert!(previous.is_none(), "offset {at:?} given twice");
    }
    let mut partition_of_key = HashMap::new();
    let mut total = 0;
    for (partition, records) in &by_partition {
        let dense: Vec<u64> = (0..records.len() as u64).collect();
        assert_eq!(records.keys().copied().collect::<Vec<_>>(), dense);
        let back = server
            .client
            .fetch("events", *partition, 0, 10_000, Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(back.len(), records.len());
        for r in back {
            let (n, value) = &records[&r.offset];
            assert_eq!(&r.value[..], value.as_bytes(), "record {n}");
            assert_eq!(r.key_str(), Some(format!("k{}-ü", n % 7).as_str()));
            assert_eq!(
                r.headers,
                vec![
                    ("n".to_string(), Bytes::from(n.to_string())),
                    ("ünï".to_string(), Bytes::from_static(b"v\"\n")),
                ]
            );
            if n % 10 == 0 {
                assert_eq!(r.timestamp, 1_000 + *n as i64);
            } else {
                let previous = partition_of_key.insert(n % 7, *partition);
                assert!(
                    previous.is_none_or(|p| p == *partition),
                    "key k{} went to two partitions",
                    n % 7
                );
            }
            total += 1;
        }
    }
    assert_eq!(total, 300);

    // `publish` sends one PUBLISH; the offsets come in request order.
    let records: Vec<ProduceRecord> = (0..3)
        .map(|i| ProduceRecord::json(&i).unwrap().partition(0))
        .collect();
    let at = server.client.publish("events", &records).await.unwrap();
    let first = at[0].offset;
    assert_eq!(
        at,
        (0..3)
            .map(|i| RecordId {
                partition: 0,
                offset: first + i
            })
            .collect::<Vec<_>>()
    );
    let dup = ProduceRecord::text("x").header("h", "1").header("h", "2");
    match server
        .client
        .publish("events", &[ProduceRecord::text("ok"), dup])
        .await
    {
        Err(Error::InvalidArgument { field, .. }) => assert_eq!(field, "records[1].headers"),
        other => panic!("{other:?}"),
    }
    producer.close().await;
    server.stop().await;
}

/// Publishes raw records on a wire connection of its own (what `ProduceRecord` cannot express: bytes
/// that are not UTF-8, values that are not JSON).
async fn raw_publish(addr: &str, topic: &str, records: Vec<ferry_wire::PublishRecord>) {
    let mut peer = Peer {
        stream: TcpStream::connect(addr).await.unwrap(),
        buf: BytesMut::new(),
    };
    let mut out = BytesMut::new();
    let hello = Request::Hello {
        version: ferry_wire::VERSION,
        token: String::new(),
        client: "test".into(),
    };
    ferry_wire::encode_request(0, &hello, &mut out);
    let publish = Request::Publish {
        topic: topic.into(),
        records,
    };
    ferry_wire::encode_request(1, &publish, &mut out);
    peer.stream.write_all(&out).await.unwrap();
    assert!(matches!(peer.response().await, (0, Response::Ready { .. })));
    let (id, answer) = peer.response().await;
    assert_eq!(id, 1);
    assert!(matches!(answer, Response::Published { .. }), "{answer:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn received_records_are_the_stored_bytes_as_http_presents_them() {
    let server = TestServer::start_wire().await;
    server.topic("raw", 1).await;
    let header = |key: &str, value: &'static [u8]| ferry_wire::Header {
        key: key.into(),
        value: Bytes::from_static(value),
    };
    let record = |key: Option<&'static [u8]>, value: &'static [u8]| ferry_wire::PublishRecord {
        key: key.map(Bytes::from_static),
        timestamp: Some(7),
        headers: vec![header("text", b"t\xc3\xa9"), header("bin", b"\xff\x00")],
        value: Bytes::from_static(value),
        ..Default::default()
    };
    raw_publish(
        server.wire.as_deref().unwrap(),
        "raw",
        vec![
            record(Some(b"\xfe"), b"\x00\xff"),
            record(None, b"plain text, not JSON"),
            record(Some(b"k"), br#"{"a": [1, 2.50]}"#),
            record(Some(b""), b"  {\"a\": 1}\n"),
        ],
    )
    .await;
    let http: Vec<Record> = server
        .client
        .fetch("raw", 0, 0, 10, Duration::ZERO)
        .await
        .unwrap();
    let queue = server.client.queue_consumer("readers", "raw");
    let wire = queue.receive(10, Duration::ZERO, None).await.unwrap();
    assert_eq!(wire.len(), 4);
    for (w, h) in wire.iter().zip(&http) {
        assert_eq!(w.delivery_count, 1);
        if w.offset == 3 {
            // The one difference: HTTP sends a JSON value as JSON text, without the whitespace around
            // it; the wire gives the stored bytes.
            assert_eq!(&w.value[..], b"  {\"a\": 1}\n");
            assert_eq!(&h.value[..], b"{\"a\": 1}");
            assert_eq!((&w.key, &w.headers), (&h.key, &h.headers));
        } else {
            assert_eq!(&w.record, h);
        }
    }
    assert_eq!(wire[0].key.as_deref(), Some(&b"\xfe"[..]));
    assert_eq!(&wire[0].value[..], b"\x00\xff");
    assert_eq!(wire[0].header("bin").map(|v| &v[..]), Some(&b"\xff\x00"[..]));
    assert_eq!(wire[0].topic, "raw");
    assert_eq!(wire[0].timestamp, 7);
    assert_eq!(wire[1].key, None);
    assert_eq!(wire[3].key.as_deref(), Some(&b""[..]));
    queue.ack(&wire).await.unwrap();
    server.stop().await;
}

/// `in_flight` of the group once it reaches `want` (the receive ahead runs on its own task).
async fn in_flight_reaches(client: &Client, want: u64) {
    timeout(Duration::from_secs(10), async {
        loop {
            let info = client.describe_queue("workers", "jobs").await.unwrap();
            if info.in_flight == want {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("in_flight never reached {want}"));
}

/// A prefetching receiver leases its next batch before it is asked for it, returns the batches in
/// order, and gives back what it received ahead when closed or dropped. Over the wire and over HTTP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefetch_receives_the_next_batch_ahead_and_gives_it_back_on_close() {
    for server in [TestServer::start_wire().await, TestServer::start().await] {
        server.topic("jobs", 1).await;
        let client = &server.client;
        let records: Vec<ProduceRecord> = (0..7)
            .map(|i| ProduceRecord::json(&serde_json::json!({"job": i})).unwrap())
            .collect();
        client.publish("jobs", &records).await.unwrap();
        let queue = client.queue_consumer("workers", "jobs");
        queue.create(&QueueConfig::default()).await.unwrap();

        let mut ahead = queue.prefetch(2, Duration::from_secs(5), None);
        let first = ahead.next().await.unwrap();
        assert_eq!(first.iter().map(|d| d.offset).collect::<Vec<_>>(), [0, 1]);
        // Offsets 2 and 3 are leased without another call.
        in_flight_reaches(client, 4).await;
        ahead.queue().ack(&first).await.unwrap();
        let second = ahead.next().await.unwrap();
        assert_eq!(second.iter().map(|d| d.offset).collect::<Vec<_>>(), [2, 3]);
        assert!(second.iter().all(|d| d.delivery_count == 1));
        in_flight_reaches(client, 4).await;

        // Closing gives back what was received ahead (4 and 5): the next receiver gets them, once
        // more delivered; offset 6 was never leased.
        ahead.close().await.unwrap();
        let back = queue.receive(10, Duration::ZERO, None).await.unwrap();
        let got: Vec<(u64, u32)> = back.iter().map(|d| (d.offset, d.delivery_count)).collect();
        assert_eq!(got, [(4, 2), (5, 2), (6, 1)]);
        queue.ack(&second).await.unwrap();
        queue.ack(&back).await.unwrap();

        // Dropped with a long-poll in flight: what that long-poll gets comes back too.
        let one = |job: u32| vec![ProduceRecord::json(&serde_json::json!({ "job": job })).unwrap()];
        let mut dropped = queue.prefetch(10, Duration::from_secs(5), None);
        client.publish("jobs", &one(7)).await.unwrap();
        let seven = dropped.next().await.unwrap();
        assert_eq!(seven.iter().map(|d| d.offset).collect::<Vec<_>>(), [7]);
        dropped.queue().ack(&seven).await.unwrap();
        client.publish("jobs", &one(8)).await.unwrap();
        // The long-poll sent ahead leased offset 8 (it is the only receiver); then the drop.
        in_flight_reaches(client, 1).await;
        drop(dropped);
        let again = queue.receive(10, Duration::from_secs(5), None).await.unwrap();
        let got: Vec<(u64, u32)> = again.iter().map(|d| (d.offset, d.delivery_count)).collect();
        assert_eq!(got, [(8, 2)], "{}", server.url);
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_receive_ack_nack_extend_over_wire() {
    let server = TestServer::start_wire().await;
    server.topic("jobs", 2).await;
    let client = &server.client;
    let records: Vec<ProduceRecord> = (0..6)
        .map(|i| {
            ProduceRecord::json(&serde_json::json!({"job": i}))
                .unwrap()
                .key(format!("j{i}"))
        })
        .collect();
    client.publish("jobs", &records).await.unwrap();
    let queue = client.queue_consumer("workers", "jobs");
    let config = QueueConfig {
        visibility_timeout_ms: Some(30_000),
        max_deliveries: Some(5),
        ..QueueConfig::default()
    };
    queue.create(&config).await.unwrap();

    let before = now_ms();
    let got = queue.receive(4, Duration::ZERO, None).await.unwrap();
    assert_eq!(got.len(), 4);
    for d in &got {
        assert_eq!(d.delivery_count, 1);
        assert!(d.lease_expires_ms >= before + 29_000, "{d:?}");
        assert_eq!(d.topic, "jobs");
        assert!(d.value_json::<serde_json::Value>().unwrap()["job"].is_number());
        assert_eq!(d.key_str().unwrap().chars().next(), Some('j'));
    }
    assert_eq!(queue.info().await.unwrap().in_flight, 4);

    queue.ack(&got[..2]).await.unwrap();
    queue.nack(&got[2..3], Duration::ZERO).await.unwrap();
    queue.extend(&got[3..4], Duration::from_secs(60)).await.unwrap();
    let e = queue.ack(&got[..1]).await.unwrap_err();
    let not_leased = api(&e);
    assert_eq!(
        (
            not_leased.status,
            not_leased.code.as_str(),
            not_leased.field.as_deref()
        ),
        (409, "not_leased", Some("records[0]"))
    );
    queue.ack::<RecordId>(&[]).await.unwrap();

    let again = queue.receive(10, Duration::ZERO, None).await.unwrap();
    assert_eq!(again.len(), 3);
    let nacked = again
        .iter()
        .find(|d| d.id() == got[2].id())
        .expect("the nacked record comes back");
    assert_eq!(nacked.delivery_count, 2);
    assert!(
        again.iter().all(|d| d.id() != got[3].id()),
        "the extended lease holds"
    );
    queue.ack(&again).await.unwrap();
    queue.ack(&got[3..4]).await.unwrap();

    // A short lease runs out: a long-polling receive over the wire gets the record again.
    client
        .publish("jobs", &[ProduceRecord::text("short")])
        .await
        .unwrap();
    let leased = queue
        .receive(1, Duration::from_secs(10), Some(Duration::from_millis(100)))
        .await
        .unwrap();
    assert_eq!(leased.len(), 1);
    let back = queue.receive(1, Duration::from_secs(20), None).await.unwrap();
    assert_eq!((back[0].id(), back[0].delivery_count), (leased[0].id(), 2));
    queue.ack(&back).await.unwrap();
    let info = queue.info().await.unwrap();
    assert_eq!((info.depth, info.in_flight), (0, 0));

    // The wire's 0 means "the group's timeout": a zero visibility is refused before sending.
    match queue.receive(1, Duration::ZERO, Some(Duration::ZERO)).await {
        Err(Error::InvalidArgument { field, .. }) => assert_eq!(field, "visibility_timeout_ms"),
        other => panic!("{other:?}"),
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_answers_over_wire_are_the_http_apis() {
    let server = TestServer::start_wire().await;
    server.topic("t", 1).await;
    server
        .client
        .create_topic(
            "small",
            &TopicConfig {
                max_record_bytes: Some(64),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let wire = server.client.clone();
    let http = Client::new(&server.url).unwrap();
    assert_eq!(http.wire_addr(), None);
    assert_eq!(wire.wire_addr(), server.wire.as_deref());

    let e = wire
        .publish("nope", &[ProduceRecord::text("x")])
        .await
        .unwrap_err();
    let nope = api(&e);
    assert_eq!((nope.status, nope.code.as_str()), (404, "topic_not_found"));
    assert!(!e.is_transient());

    let too_large = [ProduceRecord::text("a"), ProduceRecord::text(&"x".repeat(100))];
    let no_partition = [ProduceRecord::text("a").partition(7)];
    let cases: [(&str, &[ProduceRecord]); 3] =
        [("nope", &too_large), ("small", &too_large), ("t", &no_partition)];
    for (topic, records) in cases {
        let over_wire = wire.publish(topic, records).await.unwrap_err();
        let over_http = http.publish(topic, records).await.unwrap_err();
        assert_eq!(api(&over_wire), api(&over_http), "publish to {topic}");
    }
    let e = wire.publish("small", &too_large).await.unwrap_err();
    assert_eq!(
        (api(&e).status, api(&e).code.as_str(), api(&e).field.as_deref()),
        (413, "record_too_large", Some("records[1]"))
    );
    assert_eq!(
        wire.describe_topic("small").await.unwrap().partitions[0].next_offset,
        0,
        "a refused publish stores nothing"
    );

    // The same failing queue requests over both transports.
    wire.publish("t", &[ProduceRecord::text("r")]).await.unwrap();
    let (wq, hq) = (wire.queue_consumer("q", "t"), http.queue_consumer("q", "t"));
    let leased = wq.receive(1, Duration::ZERO, None).await.unwrap();
    wq.ack(&leased).await.unwrap();
    let e = wq.ack(&leased).await.unwrap_err();
    assert_eq!(
        (api(&e).status, api(&e).code.as_str(), api(&e).field.as_deref()),
        (409, "not_leased", Some("records[0]"))
    );
    assert_eq!(api(&e), api(&hq.ack(&leased).await.unwrap_err()));
    assert_eq!(
        api(&wq.nack(&leased, Duration::ZERO).await.unwrap_err()),
        api(&hq.nack(&leased, Duration::ZERO).await.unwrap_err())
    );
    assert_eq!(
        api(&wq.extend(&leased, Duration::from_secs(1)).await.unwrap_err()),
        api(&hq.extend(&leased, Duration::from_secs(1)).await.unwrap_err())
    );
    let e = wq.receive(0, Duration::ZERO, None).await.unwrap_err();
    assert_eq!((api(&e).status, api(&e).code.as_str()), (422, "out_of_range"));
    assert_eq!(
        api(&e),
        api(&hq.receive(0, Duration::ZERO, None).await.unwrap_err())
    );
    let e = wq.receive(1, Duration::from_secs(61), None).await.unwrap_err();
    assert_eq!(
        api(&e),
        api(&hq.receive(1, Duration::from_secs(61), None).await.unwrap_err())
    );
    let (wn, hn) = (wire.queue_consumer("q", "nope"), http.queue_consumer("q", "nope"));
    let e = wn.receive(1, Duration::ZERO, None).await.unwrap_err();
    assert_eq!(api(&e).code, "topic_not_found");
    assert_eq!(
        api(&e),
        api(&hn.receive(1, Duration::ZERO, None).await.unwrap_err())
    );
    let (wg, hg) = (
        wire.queue_consumer("nobody", "t"),
        http.queue_consumer("nobody", "t"),
    );
    let e = wg.ack(&leased).await.unwrap_err();
    assert_eq!(api(&e).code, "group_not_found");
    assert_eq!(api(&e), api(&hg.ack(&leased).await.unwrap_err()));

    // The producer's sends fail with their batch's answer.
    let producer = wire.producer();
    let lost: Vec<_> = (0..5)
        .map(|i| producer.send("nope", ProduceRecord::json(&i).unwrap()))
        .collect();
    for d in lost {
        assert_eq!(api(&d.await.unwrap_err()), nope);
    }
    // An error answer leaves the connection usable.
    assert_eq!(
        wire.publish("t", &[ProduceRecord::text("after")]).await.unwrap()[0].offset,
        1
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pipelined_publishes_get_distinct_offsets() {
    let server = TestServer::start_wire().await;
    server.topic("p", 1).await;
    let mut tasks = Vec::new();
    for t in 0..200u64 {
        let client = server.client.clone();
        tasks.push(tokio::spawn(async move {
            let records: Vec<ProduceRecord> = (0..3)
                .map(|i| ProduceRecord::json(&(t * 3 + i)).unwrap())
                .collect();
            (t, client.publish("p", &records).await.unwrap())
        }));
    }
    let mut owner = BTreeMap::new();
    for task in tasks {
        let (t, at) = task.await.unwrap();
        assert_eq!(at.len(), 3);
        for (i, at) in at.iter().enumerate() {
            assert!(
                owner.insert(at.offset, t * 3 + i as u64).is_none(),
                "offset {at:?} given twice"
            );
        }
        assert!(
            at.windows(2).all(|w| w[1].offset == w[0].offset + 1),
            "one publish is stored contiguously, in order: {at:?}"
        );
    }
    assert_eq!(
        owner.keys().copied().collect::<Vec<_>>(),
        (0..600).collect::<Vec<u64>>()
    );
    let back = server
        .client
        .fetch("p", 0, 0, 1000, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(back.len(), 600);
    for r in back {
        assert_eq!(
            r.value_json::<u64>().unwrap(),
            owner[&r.offset],
            "offset {}",
            r.offset
        );
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_server_fails_requests_and_a_restarted_one_is_reconnected() {
    let mut server = TestServer::start_wire().await;
    server.topic("t", 1).await;
    server.topic("idle", 1).await;
    let client = server.client.clone();
    let producer = client.producer();
    assert_eq!(
        producer
            .send("t", ProduceRecord::text("before"))
            .await
            .unwrap()
            .offset,
        0
    );

    // A long-poll in flight when the server shuts down: answered early (empty) or failed with the wire
    // error, but not left hanging.
    let queue = client.queue_consumer("g", "idle");
    let polling = tokio::spawn({
        let queue = queue.clone();
        async move { queue.receive(1, Duration::from_secs(30), None).await }
    });
    // Whether the RECEIVE reached the server before the pause or not, the outcome asserted below holds:
    // answered empty at shutdown, or failed with the wire error; never left hanging.
    server.pause().await;
    match timeout(Duration::from_secs(10), polling).await {
        Ok(Ok(Ok(records))) => assert!(records.is_empty()),
        Ok(Ok(Err(Error::Wire { .. }))) => {}
        other => panic!("the long-poll neither ended nor failed: {other:?}"),
    }

    // While it is down: every request fails at once with the wire error.
    let e = timeout(
        Duration::from_secs(10),
        client.publish("t", &[ProduceRecord::text("x")]),
    )
    .await
    .expect("does not hang")
    .unwrap_err();
    match &e {
        Error::Wire { addr, detail } => {
            assert_eq!(Some(addr.as_str()), server.wire.as_deref());
            assert!(!detail.is_empty());
        }
        other => panic!("{other:?}"),
    }
    assert!(e.is_transient());
    assert!(
        e.to_string()
            .starts_with(&format!("wire {}: ", server.wire.as_deref().unwrap())),
        "{e}"
    );
    let sends: Vec<_> = (0..3)
        .map(|i| producer.send("t", ProduceRecord::json(&i).unwrap()))
        .collect();
    for d in sends {
        let e = timeout(Duration::from_secs(10), d)
            .await
            .expect("does not hang")
            .unwrap_err();
        assert!(matches!(e, Error::Wire { .. }), "{e:?}");
    }

    // Up again on the same port: the same client, producer and consumer reconnect.
    server.resume().await;
    assert_eq!(
        producer
            .send("t", ProduceRecord::text("after"))
            .await
            .unwrap()
            .offset,
        1
    );
    assert_eq!(
        client
            .publish("t", &[ProduceRecord::text("again")])
            .await
            .unwrap()[0]
            .offset,
        2
    );
    assert!(queue.receive(1, Duration::ZERO, None).await.unwrap().is_empty());
    let back = client.fetch("t", 0, 0, 10, Duration::ZERO).await.unwrap();
    let values: Vec<String> = back.iter().map(|r| r.value_json().unwrap()).collect();
    assert_eq!(values, ["before", "after", "again"]);
    producer.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_checked_at_hello() {
    let server = TestServer::start_wire_with(ServerOptions {
        tokens: Tokens::new(["rw-token"], ["ro-token"]).unwrap(),
        ..ServerOptions::default()
    })
    .await;
    let wire = server.wire.as_deref().unwrap();
    let with = |token: Option<&str>| {
        let builder = Client::builder().url(&server.url).wire(wire);
        match token {
            Some(t) => builder.token(t),
            None => builder,
        }
        .build()
        .unwrap()
    };
    let writer = with(Some("rw-token"));
    writer.create_topic("t", &TopicConfig::default()).await.unwrap();
    assert_eq!(
        writer.publish("t", &[ProduceRecord::text("hi")]).await.unwrap()[0].offset,
        0
    );
    let leased = writer
        .queue_consumer("g", "t")
        .receive(1, Duration::ZERO, None)
        .await
        .unwrap();
    assert_eq!(leased.len(), 1);

    for token in [Some("wrong"), None] {
        let client = with(token);
        let e = client
            .publish("t", &[ProduceRecord::text("no")])
            .await
            .unwrap_err();
        assert_eq!(
            (api(&e).status, api(&e).code.as_str()),
            (401, "unauthorized"),
            "{token:?}"
        );
        let e = client
            .producer()
            .send("t", ProduceRecord::text("no"))
            .await
            .unwrap_err();
        assert_eq!(e.status(), Some(401));
    }
    let reader = with(Some("ro-token"));
    let e = reader
        .publish("t", &[ProduceRecord::text("no")])
        .await
        .unwrap_err();
    assert_eq!((api(&e).status, api(&e).code.as_str()), (403, "forbidden"));
    assert_eq!(
        writer.describe_topic("t").await.unwrap().partitions[0].next_offset,
        1,
        "nothing refused was stored"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_publishes_and_queue_operations_use_the_wire() {
    let server = TestServer::start().await;
    server.topic("t", 1).await;
    // A port that was just free: nothing listens there.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let client = Client::builder().url(&server.url).wire(&dead).build().unwrap();
    assert_eq!(client.list_topics().await.unwrap().len(), 1);
    assert!(
        client
            .fetch("t", 0, 0, 1, Duration::ZERO)
            .await
            .unwrap()
            .is_empty()
    );
    // Concurrent requests share the failed connect.
    let tries: Vec<_> = (0..4)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.publish("t", &[ProduceRecord::text("x")]).await })
        })
        .collect();
    for t in tries {
        let e = t.await.unwrap().unwrap_err();
        assert!(matches!(&e, Error::Wire { addr, .. } if *addr == dead), "{e:?}");
        assert!(e.is_transient());
    }
    let e = client
        .producer()
        .send("t", ProduceRecord::text("x"))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Wire { .. }), "{e:?}");
    let e = client
        .queue_consumer("g", "t")
        .receive(1, Duration::ZERO, None)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Wire { .. }), "{e:?}");
    assert_eq!(
        server.client.describe_topic("t").await.unwrap().partitions[0].next_offset,
        0
    );

    for bad in ["nope", "tcp://127.0.0.1:1", ":5556", "host:port", "host:70000"] {
        let e = Client::builder().wire(bad).build().unwrap_err();
        assert!(matches!(e, Error::Config(_)), "{bad}: {e:?}");
    }
    server.stop().await;
}

/// One end of a wire connection in a test: reads frames and writes frames.
struct Peer {
    stream: TcpStream,
    buf: BytesMut,
}

impl Peer {
    /// Accepts a connection and reads its HELLO.
    async fn accept(listener: &TcpListener) -> (Self, Request) {
        let (stream, _) = timeout(Duration::from_secs(10), listener.accept())
            .await
            .expect("the client connects")
            .unwrap();
        let mut peer = Self {
            stream,
            buf: BytesMut::new(),
        };
        let (id, hello) = peer.request().await.expect("HELLO");
        assert_eq!(id, 0);
        (peer, hello)
    }

    async fn read_frame(&mut self) -> Option<Bytes> {
        loop {
            if let Some(frame) = ferry_wire::split_frame(&mut self.buf).unwrap() {
                return Some(frame);
            }
            self.buf.reserve(4096);
            let n = timeout(Duration::from_secs(10), self.stream.read_buf(&mut self.buf))
                .await
                .expect("the client sends or closes")
                .unwrap_or(0);
            if n == 0 {
                return None;
            }
        }
    }

    /// The next request; `None` once the client closed the connection.
    async fn request(&mut self) -> Option<(u32, Request)> {
        let frame = self.read_frame().await?;
        Some(ferry_wire::decode_request(frame).unwrap())
    }

    async fn response(&mut self) -> (u32, Response) {
        let frame = self.read_frame().await.expect("an answer");
        ferry_wire::decode_response(frame).unwrap()
    }

    async fn send(&mut self, id: u32, response: &Response) {
        let mut out = BytesMut::new();
        ferry_wire::encode_response(id, response, &mut out);
        self.stream.write_all(&out).await.unwrap();
    }

    async fn ready(&mut self, max_frame: usize) {
        let ready = Response::Ready {
            version: 1,
            server: "test".into(),
            max_frame: max_frame as u32,
        };
        self.send(0, &ready).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelining_routing_broken_connections_and_reconnects_against_a_scripted_server() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    // HTTP goes nowhere: nothing here uses it.
    let client = Client::builder()
        .url("http://127.0.0.1:9")
        .wire(&addr)
        .token("secret")
        .build()
        .unwrap();
    let publish = |topic: &'static str, n: usize| {
        let client = client.clone();
        tokio::spawn(async move {
            let records: Vec<ProduceRecord> = (0..n).map(|i| ProduceRecord::json(&i).unwrap()).collect();
            client.publish(topic, &records).await
        })
    };

    // HELLO first, with the token; then two requests in flight at once, answered in reverse order.
    let first = publish("a", 1);
    let (mut peer, hello) = Peer::accept(&listener).await;
    match hello {
        Request::Hello {
            version,
            token,
            client,
        } => {
            assert_eq!((version, token.as_str()), (ferry_wire::VERSION, "secret"));
            assert!(client.starts_with("ferry-client "), "{client}");
        }
        other => panic!("{other:?}"),
    }
    peer.ready(ferry_wire::MAX_FRAME).await;
    let (id1, request) = peer.request().await.unwrap();
    match request {
        Request::Publish { topic, records } => {
            assert_eq!(topic, "a");
            assert_eq!(records.len(), 1);
            assert_eq!(&records[0].value[..], b"0");
        }
        other => panic!("{other:?}"),
    }
    let queue = client.queue_consumer("g", "b");
    let second = tokio::spawn({
        let queue = queue.clone();
        async move { queue.ack(&[(1u32, 5u64)]).await }
    });
    let (id2, request) = peer.request().await.unwrap();
    assert_eq!(
        request,
        Request::Ack {
            group: "g".into(),
            topic: "b".into(),
            records: vec![(1, 5)],
        }
    );
    assert_ne!(id1, id2);
    peer.send(id2, &Response::Done).await;
    second.await.unwrap().unwrap();
    assert!(!first.is_finished());
    peer.send(
        id1,
        &Response::Published {
            offsets: vec![(0, 41)],
        },
    )
    .await;
    assert_eq!(
        first.await.unwrap().unwrap(),
        [RecordId {
            partition: 0,
            offset: 41
        }]
    );

    // A RECEIVE carries its limits; an ERROR answer is the API error, whole.
    let receiving = tokio::spawn({
        let queue = queue.clone();
        async move { queue.receive(7, Duration::from_millis(1500), None).await }
    });
    let (id, request) = peer.request().await.unwrap();
    assert_eq!(
        request,
        Request::Receive {
            group: "g".into(),
            topic: "b".into(),
            max_records: 7,
            max_wait_ms: 1500,
            visibility_ms: 0,
        }
    );
    let error = Response::Error {
        status: 404,
        code: "topic_not_found".into(),
        message: "topic `b` does not exist".into(),
        field: Some("topic".into()),
    };
    peer.send(id, &error).await;
    let e = receiving.await.unwrap().unwrap_err();
    assert_eq!(e.to_string(), "topic `b` does not exist (404 topic_not_found)");
    assert_eq!(api(&e).field.as_deref(), Some("topic"));

    // Answers that do not fit the request are protocol errors; the connection carries on.
    let wrong = publish("a", 1);
    let (id, _) = peer.request().await.unwrap();
    peer.send(id, &Response::Done).await;
    match wrong.await.unwrap().unwrap_err() {
        Error::WireProtocol { request, message, .. } => {
            assert_eq!(request, "PUBLISH");
            assert!(message.contains("DONE"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    let short = publish("a", 2);
    let (id, _) = peer.request().await.unwrap();
    peer.send(
        id,
        &Response::Published {
            offsets: vec![(0, 1)],
        },
    )
    .await;
    assert!(matches!(
        short.await.unwrap().unwrap_err(),
        Error::WireProtocol { .. }
    ));

    // The connection breaks with three requests pending: each fails with the wire error, carrying the
    // server's last word.
    let pending: Vec<_> = (0..3).map(|_| publish("a", 1)).collect();
    for _ in 0..3 {
        peer.request().await.unwrap();
    }
    let bad_frame = Response::Error {
        status: 400,
        code: "bad_frame".into(),
        message: "frame ends inside value".into(),
        field: None,
    };
    peer.send(0, &bad_frame).await;
    drop(peer);
    for p in pending {
        let e = timeout(Duration::from_secs(10), p)
            .await
            .expect("does not hang")
            .unwrap()
            .unwrap_err();
        match &e {
            Error::Wire { addr: a, detail } => {
                assert_eq!(a, &addr);
                assert!(detail.contains("bad_frame"), "{detail}");
            }
            other => panic!("{other:?}"),
        }
    }

    // The next request connects again; this server takes small frames only: a publish over its limit
    // is refused before it is sent, and the connection stays up.
    let next = publish("a", 1);
    let (mut peer, _) = Peer::accept(&listener).await;
    peer.ready(200).await;
    let (id, _) = peer.request().await.unwrap();
    peer.send(
        id,
        &Response::Published {
            offsets: vec![(0, 50)],
        },
    )
    .await;
    assert_eq!(next.await.unwrap().unwrap()[0].offset, 50);
    let big = [ProduceRecord::text(&"x".repeat(500))];
    match client.publish("a", &big).await {
        Err(Error::InvalidArgument { field, message }) => {
            assert_eq!(field, "records");
            assert!(message.contains("200"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    let small = publish("a", 1);
    let (id, request) = peer.request().await.unwrap();
    assert!(matches!(request, Request::Publish { .. }));
    peer.send(
        id,
        &Response::Published {
            offsets: vec![(0, 51)],
        },
    )
    .await;
    assert_eq!(small.await.unwrap().unwrap()[0].offset, 51);

    // A request without an answer past the client's timeout fails and takes the connection down.
    let impatient = Client::builder()
        .url("http://127.0.0.1:9")
        .wire(&addr)
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let waiting = tokio::spawn({
        let impatient = impatient.clone();
        async move { impatient.publish("a", &[ProduceRecord::text("x")]).await }
    });
    let (mut silent, _) = Peer::accept(&listener).await;
    silent.ready(ferry_wire::MAX_FRAME).await;
    silent.request().await.unwrap();
    let e = timeout(Duration::from_secs(10), waiting)
        .await
        .expect("does not hang")
        .unwrap()
        .unwrap_err();
    match &e {
        Error::Wire { detail, .. } => assert!(detail.contains("no answer within"), "{detail}"),
        other => panic!("{other:?}"),
    }
    assert!(
        silent.request().await.is_none(),
        "the client closed the connection"
    );

    // A refused HELLO is the API error.
    let refused = tokio::spawn({
        let impatient = impatient.clone();
        async move { impatient.publish("a", &[ProduceRecord::text("x")]).await }
    });
    let (mut strict, _) = Peer::accept(&listener).await;
    let unauthorized = Response::Error {
        status: 401,
        code: "unauthorized".into(),
        message: "a bearer token is required".into(),
        field: Some("authorization".into()),
    };
    strict.send(0, &unauthorized).await;
    drop(strict);
    let e = refused.await.unwrap().unwrap_err();
    assert_eq!((e.status(), e.code()), (Some(401), Some("unauthorized")));
}
