//! The RabbitMQ engine against a private RabbitMQ node: the delivery contract the pipeline runtime
//! relies on, refusals, messages other clients publish, a server restart, and URLs with a password.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use ferry_broker::engine::{Engine, EngineError, GroupSettings, InRecord, OutRecord};
use ferry_engines::rabbitmq::RabbitMq;
use ferry_engines::servers::{RabbitServer, require};
use tokio::time::Instant;

fn record(i: usize) -> OutRecord {
    OutRecord {
        key: Some(format!("k{i}")),
        headers: vec![("a".into(), format!("1-{i}")), ("b".into(), "two".into())],
        value: Bytes::from(format!("{{\"n\":{i}}}")),
    }
}

/// Receives until `n` records came (or 30 s passed), retrying transient failures.
async fn receive_n(e: &RabbitMq, group: &str, topic: &str, n: usize) -> Vec<InRecord> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut got = Vec::new();
    while got.len() < n && Instant::now() < deadline {
        match e
            .receive(group, topic, n - got.len(), Duration::from_secs(1))
            .await
        {
            Ok(records) => got.extend(records),
            Err(err) if err.is_transient() => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(err) => panic!("receive failed: {err}"),
        }
    }
    got.sort_by_key(|r| r.value.clone());
    got
}

/// Retries `call` every 100 ms while it fails transiently (60 s at most); returns the first outcome
/// that is not `Unavailable`.
async fn retry<T, F, Fut>(mut call: F) -> Result<T, EngineError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, EngineError>>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match call().await {
            Err(e) if e.is_transient() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => return other,
        }
    }
}

#[track_caller]
fn refused(r: Result<(), EngineError>) -> String {
    match r {
        Err(EngineError::Refused {
            engine: "rabbitmq",
            message,
        }) => message,
        other => panic!("expected Refused, got {other:?}"),
    }
}

#[track_caller]
fn not_leased(r: Result<(), EngineError>) -> String {
    match r {
        Err(EngineError::NotLeased {
            engine: "rabbitmq",
            message,
        }) => message,
        other => panic!("expected NotLeased, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn delivery_contract() {
    let Some(rabbit) = require(RabbitServer::start(), "rabbitmq-server") else {
        return;
    };
    let e = RabbitMq::connect(&rabbit.url()).await.unwrap();
    let settings = GroupSettings::default();
    for _ in 0..2 {
        e.ensure_topic("orders").await.unwrap();
        e.ensure_group("g1", "orders", settings).await.unwrap();
        e.ensure_group("g2", "orders", settings).await.unwrap();
    }

    // Publish 10; each group gets all of them, with key, headers and one delivery.
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    e.publish("orders", (0..10).map(record).collect()).await.unwrap();
    e.publish("orders", Vec::new()).await.unwrap();
    for group in ["g1", "g2"] {
        let got = receive_n(&e, group, "orders", 10).await;
        assert_eq!(got.len(), 10, "{group}");
        let mut offsets: Vec<u64> = got.iter().map(|r| r.offset).collect();
        offsets.sort_unstable();
        offsets.dedup();
        assert_eq!(offsets.len(), 10, "ids are unique");
        for (i, r) in got.iter().enumerate() {
            let want = record(i);
            assert_eq!((r.partition, r.deliveries), (0, 1));
            assert_eq!(r.value, want.value);
            assert_eq!(r.key, want.key);
            assert_eq!(r.headers, want.headers);
            assert!(
                r.timestamp_ms >= before - 1000 && r.timestamp_ms < before + 60_000,
                "{r:?}"
            );
        }
        let ids: Vec<(u32, u64)> = got.iter().map(InRecord::id).collect();
        e.extend(group, "orders", &ids, Duration::from_secs(30))
            .await
            .unwrap();
        e.ack(group, "orders", &ids).await.unwrap();
        // Acked: nothing more, and acking again fails: not leased.
        let rest = e
            .receive(group, "orders", 10, Duration::from_millis(300))
            .await
            .unwrap();
        assert!(rest.is_empty(), "{rest:?}");
        not_leased(e.ack(group, "orders", &ids[..1]).await);
    }

    // Nack at once: back with deliveries = 2; nack with a delay: not back before it.
    e.publish("orders", vec![record(42)]).await.unwrap();
    let first = receive_n(&e, "g1", "orders", 1).await;
    e.ack("g2", "orders", &[receive_n(&e, "g2", "orders", 1).await[0].id()])
        .await
        .unwrap();
    e.nack("g1", "orders", &[first[0].id()], Duration::ZERO)
        .await
        .unwrap();
    let again = receive_n(&e, "g1", "orders", 1).await;
    assert_eq!(again.len(), 1);
    assert_eq!((again[0].offset, again[0].deliveries), (first[0].offset, 2));
    assert_eq!(again[0].value, first[0].value);
    let delay = Duration::from_millis(1500);
    let nacked = Instant::now();
    e.nack("g1", "orders", &[again[0].id()], delay).await.unwrap();
    not_leased(e.ack("g1", "orders", &[again[0].id()]).await);
    let third = receive_n(&e, "g1", "orders", 1).await;
    assert!(nacked.elapsed() >= delay, "back after {:?}", nacked.elapsed());
    assert_eq!((third[0].offset, third[0].deliveries), (first[0].offset, 3));
    e.ack("g1", "orders", &[third[0].id()]).await.unwrap();

    // Concurrent publishers and receivers: every record once, none lost.
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..4 {
        let e = e.clone();
        tasks.spawn(async move {
            for i in 0..5 {
                let batch = (0..10).map(|j| record(1000 + t * 100 + i * 10 + j)).collect();
                e.publish("orders", batch).await.unwrap();
            }
        });
    }
    let mut receivers = tokio::task::JoinSet::new();
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs(30);
    for _ in 0..3 {
        let (e, count) = (e.clone(), count.clone());
        receivers.spawn(async move {
            let mut got = Vec::new();
            while count.load(std::sync::atomic::Ordering::SeqCst) < 200 && Instant::now() < deadline {
                let records = e
                    .receive("g1", "orders", 7, Duration::from_millis(200))
                    .await
                    .unwrap();
                count.fetch_add(records.len(), std::sync::atomic::Ordering::SeqCst);
                let ids: Vec<(u32, u64)> = records.iter().map(InRecord::id).collect();
                e.ack("g1", "orders", &ids).await.unwrap();
                got.extend(records.into_iter().map(|r| r.value));
            }
            got
        });
    }
    tasks.join_all().await;
    let mut values: Vec<Bytes> = receivers.join_all().await.into_iter().flatten().collect();
    values.sort();
    let mut want: Vec<Bytes> = (0..4)
        .flat_map(|t| (0..50).map(move |i| record(1000 + t * 100 + i).value))
        .collect();
    want.sort();
    assert_eq!(values, want);
    let started = Instant::now();
    assert!(
        e.receive("g1", "orders", 10, Duration::from_millis(400))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(started.elapsed() >= Duration::from_millis(400));
    for r in receive_n(&e, "g2", "orders", 200).await {
        e.ack("g2", "orders", &[r.id()]).await.unwrap();
    }

    // Refusals: unknown ids, a topic or group never ensured, bad names; the engine works afterwards.
    let err = e.ack("g1", "orders", &[(0, 42)]).await.unwrap_err();
    assert!(err.is_not_leased() && !err.is_transient(), "{err:?}");
    let message = not_leased(Err(err));
    assert!(
        message.contains("record 0/42 of group g1 is not leased"),
        "{message}"
    );
    not_leased(e.extend("g1", "orders", &[(0, 42)], Duration::from_secs(1)).await);
    not_leased(e.nack("g1", "orders", &[(3, 42)], Duration::ZERO).await);
    let message = refused(e.publish("nowhere", vec![record(0)]).await);
    assert!(message.contains("nowhere"), "{message}");
    for i in 0..60 {
        refused(e.publish("nowhere", (0..1 + i % 7).map(record).collect()).await);
        if i % 3 == 0 {
            e.publish("orders", vec![record(i)]).await.unwrap();
        }
    }
    for r in receive_n(&e, "g2", "orders", 20).await {
        e.ack("g2", "orders", &[r.id()]).await.unwrap();
    }
    refused(e.ensure_group("g1", "nowhere", settings).await);
    refused(e.ensure_topic("bad/name").await);
    let r = e.receive("never", "orders", 1, Duration::from_millis(100)).await;
    assert!(matches!(r, Err(EngineError::Refused { .. })), "{r:?}");
    e.publish("orders", vec![record(7)]).await.unwrap();
    let got = receive_n(&e, "g2", "orders", 1).await;
    assert_eq!(got[0].value, record(7).value);
    e.ack("g2", "orders", &[got[0].id()]).await.unwrap();
    for group in ["g1", "g2"] {
        let rest = e
            .receive(group, "orders", 100, Duration::from_millis(300))
            .await
            .unwrap();
        e.ack(
            group,
            "orders",
            &rest.iter().map(InRecord::id).collect::<Vec<_>>(),
        )
        .await
        .unwrap();
    }

    // A topic without groups keeps nothing, so a publish to it is refused, not dropped; with a group
    // it is kept.
    e.ensure_topic("lonely").await.unwrap();
    for batch in [vec![record(1)], (0..3).map(record).collect()] {
        let err = e.publish("lonely", batch).await.unwrap_err();
        assert!(!err.is_transient(), "{err:?}");
        let message = refused(Err(err));
        assert!(
            message.contains("topic `lonely` has no queue group to keep"),
            "{message}"
        );
    }
    e.ensure_group("g", "lonely", settings).await.unwrap();
    e.publish("lonely", vec![record(5)]).await.unwrap();
    let got = receive_n(&e, "g", "lonely", 1).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].value, record(5).value);
    e.ack("g", "lonely", &[got[0].id()]).await.unwrap();

    // Messages another client published: their `message_id` is not a ferry id (both say "1"), so
    // each gets an offset of its own, outside ferry's ids.
    let conn = lapin::Connection::connect(&rabbit.url(), lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let channel = conn.create_channel().await.unwrap();
    channel
        .confirm_select(lapin::options::ConfirmSelectOptions::default())
        .await
        .unwrap();
    for i in [501, 502] {
        let props = lapin::BasicProperties::default().with_message_id("1".into());
        let confirm = channel
            .basic_publish(
                "ferry.orders".into(),
                "".into(),
                lapin::options::BasicPublishOptions::default(),
                &record(i).value,
                props,
            )
            .await
            .unwrap();
        assert!(confirm.await.unwrap().is_ack());
    }
    for group in ["g1", "g2"] {
        let got = receive_n(&e, group, "orders", 2).await;
        let values: Vec<Bytes> = got.iter().map(|r| r.value.clone()).collect();
        assert_eq!(values, vec![record(501).value, record(502).value], "{group}");
        assert_ne!(got[0].offset, got[1].offset, "{got:?}");
        assert!(got.iter().all(|r| r.offset >= 1 << 63), "{got:?}");
        assert!(got.iter().all(|r| r.deliveries == 1), "{got:?}");
        let ids: Vec<(u32, u64)> = got.iter().map(InRecord::id).collect();
        e.ack(group, "orders", &ids).await.unwrap();
        not_leased(e.ack(group, "orders", &ids).await);
    }
    conn.close(0, "done".into()).await.unwrap();

    // A wrong password is not shown in the error.
    let url = rabbit.url().replace("guest:guest@", "guest:wr0ngpass@");
    let err = RabbitMq::connect(&url).await.unwrap_err();
    for shown in [err.to_string(), format!("{err:?}")] {
        assert!(!shown.contains("wr0ngpass"), "{shown}");
    }
}

/// Neither an error nor the engine's `Debug` shows the URL's password.
#[tokio::test]
async fn passwords_are_not_shown() {
    // Nothing listens on port 1.
    let err = RabbitMq::connect("amqp://user:s3cret@127.0.0.1:1/%2f")
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    for shown in [err.to_string(), format!("{err:?}")] {
        assert!(!shown.contains("s3cret"), "{shown}");
    }
    // Malformed: amq-protocol-uri's own errors quote the URL.
    for url in [
        "amqp://user:s3cret@[bad",
        "amqp:user:s3cret@host",
        "amqp://user:s3cret@host:99999999/",
    ] {
        let err = RabbitMq::connect(url).await.unwrap_err();
        let message = refused(Err(err));
        assert_eq!(message, "the URL is not a valid amqp:// URL", "{url}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn survives_a_restart() {
    let Some(mut rabbit) = require(RabbitServer::start(), "rabbitmq-server") else {
        return;
    };
    let e = RabbitMq::connect(&rabbit.url()).await.unwrap();
    e.ensure_topic("t").await.unwrap();
    e.ensure_group("g", "t", GroupSettings::default()).await.unwrap();
    e.publish("t", (0..5).map(record).collect()).await.unwrap();
    let leased = receive_n(&e, "g", "t", 2).await;
    assert_eq!(leased.len(), 2);

    rabbit.stop();
    let r = e.publish("t", vec![record(9)]).await;
    assert!(
        matches!(
            r,
            Err(EngineError::Unavailable {
                engine: "rabbitmq",
                ..
            })
        ),
        "{r:?}"
    );
    let r = e.receive("g", "t", 10, Duration::from_millis(100)).await;
    assert!(matches!(r, Err(EngineError::Unavailable { .. })), "{r:?}");
    rabbit.restart().unwrap();

    // Calls fail transiently until the engine has reconnected, then work.
    let r = retry(|| e.publish("t", vec![record(5)])).await;
    r.unwrap();
    // Records held on the old connection are void.
    let old = [leased[0].id()];
    let r = retry(|| e.ack("g", "t", &old)).await;
    not_leased(r);
    // Everything confirmed before the restart and not acked comes again.
    let got = receive_n(&e, "g", "t", 6).await;
    let values: Vec<Bytes> = got.iter().map(|r| r.value.clone()).collect();
    let want: Vec<Bytes> = (0..6).map(|i| record(i).value).collect();
    assert_eq!(values, want);
    for r in &got {
        let was_leased = leased.iter().any(|l| l.offset == r.offset);
        assert!(r.deliveries > u32::from(was_leased), "{r:?}");
    }
    let ids: Vec<(u32, u64)> = got.iter().map(InRecord::id).collect();
    e.ack("g", "t", &ids).await.unwrap();
    let rest = e.receive("g", "t", 10, Duration::from_millis(300)).await.unwrap();
    assert!(rest.is_empty(), "{rest:?}");
}
