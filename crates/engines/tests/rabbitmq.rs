//! The RabbitMQ engine against a private RabbitMQ node: the delivery contract the pipeline runtime
//! relies on, refusals, messages other clients publish, a server restart, and URLs with a password.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use ferry_broker::engine::{Engine, EngineError, GroupSettings, GroupState, InRecord, OutRecord, TopicState};
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
    // g1 still holds the 20 records published between the refusals and record 7; g2 holds nothing.
    let rest = receive_n(&e, "g1", "orders", 21).await;
    assert_eq!(rest.len(), 21);
    e.ack("g1", "orders", &rest.iter().map(InRecord::id).collect::<Vec<_>>())
        .await
        .unwrap();

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

/// Polls `group_state` until it is `want` (every 20 ms, 5 s at most: the counts are read one after
/// the other while RabbitMQ moves records between them), then asserts it is.
async fn state_becomes(e: &RabbitMq, group: &str, topic: &str, want: GroupState) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let state = e.group_state(group, topic).await.unwrap();
        if state == Some(want) || Instant::now() >= deadline {
            assert_eq!(state, Some(want), "group {group} on {topic}");
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Leases end after the group's visibility unless extended: the record is requeued (one delivery
/// more) and its id is no longer leased; a record nacked with a delay is left to its delay.
#[tokio::test(flavor = "multi_thread")]
async fn leases_run_out() {
    let Some(rabbit) = require(RabbitServer::start(), "rabbitmq-server") else {
        return;
    };
    let e = RabbitMq::connect(&rabbit.url()).await.unwrap();
    // Long enough that the calls before it runs out are not raced by it on a loaded machine.
    let visibility = Duration::from_secs(2);
    e.ensure_topic("t").await.unwrap();
    let settings = GroupSettings {
        visibility,
        ..GroupSettings::default()
    };
    e.ensure_group("g", "t", settings).await.unwrap();
    e.ensure_group("slow", "t", GroupSettings::default())
        .await
        .unwrap();
    e.publish("t", (0..3).map(record).collect()).await.unwrap();

    let before = Instant::now();
    let got = receive_n(&e, "g", "t", 3).await;
    assert_eq!(got.len(), 3);
    let [a, b, c] = [got[0].id(), got[1].id(), got[2].id()];
    // `a` is extended past its first lease, `b` left to run out, `c` nacked with a delay longer than
    // the lease.
    e.extend("g", "t", &[a], Duration::from_secs(10)).await.unwrap();
    let delay = Duration::from_secs(4);
    let nacked = Instant::now();
    e.nack("g", "t", &[c], delay).await.unwrap();
    // `b`'s lease runs out: it is requeued and prefetched again; `a` alone is held.
    let one_held = GroupState {
        depth: 2,
        in_flight: 1,
    };
    state_becomes(&e, "g", "t", one_held).await;
    assert!(
        before.elapsed() >= visibility,
        "expired after {:?}",
        before.elapsed()
    );
    for message in [
        not_leased(e.ack("g", "t", &[b]).await),
        not_leased(e.extend("g", "t", &[b], Duration::from_secs(5)).await),
        not_leased(e.nack("g", "t", &[b], Duration::ZERO).await),
        // Nothing changes when one id of a call is not leased.
        not_leased(e.ack("g", "t", &[a, b]).await),
    ] {
        assert!(message.contains("is not leased"), "{message}");
    }
    // `a` outlived its first lease, extended.
    e.ack("g", "t", &[a]).await.unwrap();
    // `b` comes again, with one delivery more.
    let again = receive_n(&e, "g", "t", 1).await;
    assert_eq!(again.len(), 1);
    assert_eq!((again[0].id(), again[0].deliveries), (b, 2));
    assert_eq!(again[0].value, got[1].value);
    e.ack("g", "t", &[b]).await.unwrap();
    // `c` comes back after its delay, requeued once only (not also by the lease timer).
    let third = receive_n(&e, "g", "t", 1).await;
    assert_eq!(third.len(), 1);
    assert!(nacked.elapsed() >= delay, "back after {:?}", nacked.elapsed());
    assert_eq!((third[0].id(), third[0].deliveries), (c, 2));
    e.ack("g", "t", &[c]).await.unwrap();
    let rest = e.receive("g", "t", 10, Duration::from_secs(1)).await.unwrap();
    assert!(rest.is_empty(), "{rest:?}");

    // A lease extended for less than it had left ends earlier: on a group with 30 s leases, a record
    // extended for 200 ms comes again within seconds.
    let first = receive_n(&e, "slow", "t", 3).await;
    assert_eq!(first.len(), 3);
    let ids: Vec<(u32, u64)> = first.iter().map(InRecord::id).collect();
    e.ack("slow", "t", &ids[1..]).await.unwrap();
    let extended = Instant::now();
    e.extend("slow", "t", &ids[..1], Duration::from_millis(200))
        .await
        .unwrap();
    let again = receive_n(&e, "slow", "t", 1).await;
    assert_eq!(again.len(), 1);
    assert!(
        extended.elapsed() < Duration::from_secs(10),
        "{:?}",
        extended.elapsed()
    );
    assert_eq!((again[0].id(), again[0].deliveries), (ids[0], 2));
    e.ack("slow", "t", &ids[..1]).await.unwrap();
}

#[track_caller]
fn unsupported<T: std::fmt::Debug>(r: Result<T, EngineError>) -> String {
    match r {
        Err(EngineError::Unsupported {
            engine: "rabbitmq",
            what,
        }) => what,
        other => panic!("expected Unsupported, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn describe_group_state_and_delete() {
    let Some(rabbit) = require(RabbitServer::start(), "rabbitmq-server") else {
        return;
    };
    let e = RabbitMq::connect(&rabbit.url()).await.unwrap();
    assert_eq!(e.name(), "rabbitmq");
    let topic = "a.b-c_d";
    assert_eq!(e.describe_topic(topic).await.unwrap(), None);
    assert!(!e.delete_topic(topic).await.unwrap());
    e.ensure_topic(topic).await.unwrap();
    // RabbitMQ keeps no log: no offsets, no size.
    let want = TopicState {
        name: topic.to_owned(),
        start_offset: 0,
        next_offset: 0,
        size_bytes: 0,
        created_ns: 0,
    };
    assert_eq!(e.describe_topic(topic).await.unwrap(), Some(want));

    assert_eq!(e.group_state("g", topic).await.unwrap(), None);
    assert_eq!(e.group_state("g", "missing").await.unwrap(), None);
    e.ensure_group("g", topic, GroupSettings::default())
        .await
        .unwrap();
    let empty = GroupState {
        depth: 0,
        in_flight: 0,
    };
    assert_eq!(e.group_state("g", topic).await.unwrap(), Some(empty));
    e.publish(topic, (0..5).map(record).collect()).await.unwrap();
    let all = GroupState {
        depth: 5,
        in_flight: 0,
    };
    assert_eq!(e.group_state("g", topic).await.unwrap(), Some(all));
    // Two received: held by this process. The consumer has prefetched the other three, which
    // RabbitMQ counts as unacked, not ready: the depth counts them as this process's buffer.
    let two = receive_n(&e, "g", topic, 2).await;
    assert_eq!(two.len(), 2);
    let five_two = GroupState {
        depth: 5,
        in_flight: 2,
    };
    state_becomes(&e, "g", topic, five_two).await;
    let ids: Vec<(u32, u64)> = two.iter().map(InRecord::id).collect();
    e.ack("g", topic, &ids).await.unwrap();
    let three = GroupState {
        depth: 3,
        in_flight: 0,
    };
    state_becomes(&e, "g", topic, three).await;
    let rest = receive_n(&e, "g", topic, 3).await;
    assert_eq!(rest.len(), 3);
    let ids: Vec<(u32, u64)> = rest.iter().map(InRecord::id).collect();
    e.ack("g", topic, &ids).await.unwrap();
    assert_eq!(e.group_state("g", topic).await.unwrap(), Some(empty));

    // Deleting: the exchange goes, the group's queue stays (and is bound to nothing any more).
    assert!(e.delete_topic(topic).await.unwrap());
    assert!(!e.delete_topic(topic).await.unwrap());
    assert_eq!(e.describe_topic(topic).await.unwrap(), None);
    let message = refused(e.publish(topic, vec![record(0)]).await);
    assert!(message.contains("does not exist"), "{message}");
    assert_eq!(e.group_state("g", topic).await.unwrap(), Some(empty));
    // Made again, the topic works, with the group's old queue bound again.
    e.ensure_topic(topic).await.unwrap();
    e.ensure_group("g", topic, GroupSettings::default())
        .await
        .unwrap();
    e.publish(topic, vec![record(7)]).await.unwrap();
    let got = receive_n(&e, "g", topic, 1).await;
    assert_eq!(got[0].value, record(7).value);
    e.ack("g", topic, &[got[0].id()]).await.unwrap();

    // No log, no key-value store.
    unsupported(e.topics().await);
    unsupported(e.fetch(topic, 0, 10, Duration::ZERO).await);
    unsupported(e.meta_get("k").await);
    unsupported(e.meta_put("k", Bytes::from_static(b"v"), None).await);
}
