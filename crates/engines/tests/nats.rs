#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The JetStream engine against a private `nats-server -js`.

use std::future::Future;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferry_broker::engine::{Engine, EngineError, GroupSettings, InRecord, MetaValue, OutRecord};
use ferry_engines::nats::{JetStream, consumer_name, meta_key, stream_name, subject};
use ferry_engines::servers::{NatsServer, require};

const SETTINGS: GroupSettings = GroupSettings {
    visibility: Duration::from_secs(30),
    max_in_flight: 100_000,
    from_end: false,
};

fn record(i: usize) -> OutRecord {
    OutRecord {
        key: Some(format!("key-{i}")),
        headers: vec![
            ("trace".into(), format!("t{i}")),
            ("ferry-error".into(), "line one\nline two \\ end\r".into()),
            ("a-multi".into(), "first".into()),
            ("a-multi".into(), "second".into()),
        ],
        value: Bytes::from(format!("{{\"n\":{i}}}")),
    }
}

async fn engine(nats: &NatsServer) -> JetStream {
    JetStream::connect(&nats.url()).await.unwrap()
}

/// Retries `call` while it fails with a transient error (the client reconnecting), for up to 30 s.
async fn retry<T, F, Fut>(what: &str, mut call: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, EngineError>>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut backoff = Duration::from_millis(20);
    let mut failures = 0;
    loop {
        match call().await {
            Ok(v) => {
                eprintln!("{what}: ok after {failures} transient failures");
                return v;
            }
            Err(e) if e.is_transient() && Instant::now() < deadline => {
                failures += 1;
                eprintln!("{what}: {e}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_millis(500));
            }
            Err(e) => panic!("{what}: {e}"),
        }
    }
}

/// Receives until `n` records came (each receive waits up to 1 s; 20 s in all).
async fn receive_n(js: &JetStream, group: &str, topic: &str, n: usize) -> Vec<InRecord> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut got = Vec::new();
    while got.len() < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} records came",
            got.len()
        );
        got.extend(
            js.receive(group, topic, n - got.len(), Duration::from_secs(1))
                .await
                .unwrap(),
        );
    }
    assert_eq!(got.len(), n);
    got
}

fn ids(records: &[InRecord]) -> Vec<(u32, u64)> {
    records.iter().map(InRecord::id).collect()
}

#[test]
fn names_are_encoded() {
    assert_eq!(stream_name("orders.v1_x-y"), "ferry_orders_dv1_ux-y");
    assert_eq!(stream_name("a_d"), "ferry_a_ud");
    assert_ne!(stream_name("a_d"), stream_name("a.d"));
    assert_eq!(consumer_name("g.1"), "ferry_g_d1");
    assert_eq!(subject("a.b"), "ferry.t.a.b");
}

#[tokio::test(flavor = "multi_thread")]
async fn publish_receive_ack() {
    let Some(nats) = require(NatsServer::start(), "nats-server") else {
        return;
    };
    let js = engine(&nats).await;
    let topic = "orders.v1_x";
    for _ in 0..2 {
        js.ensure_topic(topic).await.unwrap();
        js.ensure_group("g", topic, SETTINGS).await.unwrap();
    }
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    js.publish(topic, (0..10).map(record).collect()).await.unwrap();

    let mut got = receive_n(&js, "g", topic, 10).await;
    got.sort_by_key(|r| r.offset);
    for (i, r) in got.iter().enumerate() {
        assert_eq!(r.partition, 0);
        assert_eq!(r.offset, i as u64 + 1);
        assert_eq!(r.value, record(i).value);
        assert_eq!(r.key.as_deref(), Some(format!("key-{i}").as_str()));
        let mut want = record(i).headers;
        want.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(r.headers, want);
        assert_eq!(r.deliveries, 1);
        assert!(
            (r.timestamp_ms - before).abs() < 60_000,
            "timestamp {}",
            r.timestamp_ms
        );
    }
    js.ack("g", topic, &ids(&got)).await.unwrap();
    let more = js
        .receive("g", topic, 10, Duration::from_millis(100))
        .await
        .unwrap();
    assert!(more.is_empty(), "{more:?}");

    // Finished records, records never received and other partitions are not leased.
    for id in [got[0].id(), (0, 999), (1, 1)] {
        let results = [
            js.ack("g", topic, &[id]).await,
            js.nack("g", topic, &[id], Duration::ZERO).await,
            js.extend("g", topic, &[id], Duration::from_secs(5)).await,
        ];
        for result in results {
            assert_not_leased(result);
        }
    }
}

/// `result` is an [`EngineError::NotLeased`] that says so.
#[track_caller]
fn assert_not_leased(result: Result<(), EngineError>) {
    match result {
        Err(e) if e.is_not_leased() => {
            assert!(matches!(e, EngineError::NotLeased { .. }), "{e:?}");
            assert!(e.to_string().contains("not leased"), "{e}");
        }
        other => panic!("expected NotLeased, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn nack_redelivers_and_extend_keeps_the_lease() {
    let Some(nats) = require(NatsServer::start(), "nats-server") else {
        return;
    };
    let js = engine(&nats).await;
    js.ensure_topic("t").await.unwrap();
    let lease = Duration::from_secs(6);
    let short = GroupSettings {
        visibility: lease,
        ..SETTINGS
    };
    js.ensure_group("g", "t", short).await.unwrap();
    js.publish("t", vec![record(0)]).await.unwrap();

    let first = receive_n(&js, "g", "t", 1).await;
    js.nack("g", "t", &ids(&first), Duration::ZERO).await.unwrap();
    let second = receive_n(&js, "g", "t", 1).await;
    assert_eq!(second[0].offset, first[0].offset);
    assert_eq!(second[0].deliveries, 2);

    // A delayed nack: not before the delay (the server gets the nack after `nacked`, so the delay
    // ends after `nacked + delay`: however slow this machine, an earlier redelivery is a bug).
    let delay = Duration::from_millis(800);
    let nacked = Instant::now();
    js.nack("g", "t", &ids(&second), delay).await.unwrap();
    let third = receive_n(&js, "g", "t", 1).await;
    assert!(
        nacked.elapsed() >= delay,
        "redelivered after {:?}",
        nacked.elapsed()
    );
    assert_eq!(third[0].deliveries, 3);

    // Another partition is not leased; a batch with one such id is refused whole and nothing is sent.
    let offset = third[0].offset;
    assert_not_leased(js.extend("g", "t", &[(1, offset)], lease).await);
    assert_not_leased(js.ack("g", "t", &[(0, offset), (1, offset)]).await);

    // An extend well before the lease runs out restarts it: the record comes again no sooner than a
    // whole lease after the extend was sent (without it, about 2 s sooner). A slow machine can only
    // make the redelivery come later, never sooner.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let extended = Instant::now();
    js.extend("g", "t", &ids(&third), lease).await.unwrap();
    let fourth = receive_n(&js, "g", "t", 1).await;
    // 250 ms for the server measuring the lease by the wall clock.
    let after = extended.elapsed();
    assert!(
        after + Duration::from_millis(250) >= lease,
        "redelivered {after:?} after the extend, despite it"
    );
    // Without further extends the lease runs out; the redelivery replaces the lease.
    assert_eq!(fourth[0].offset, offset);
    assert_eq!(fourth[0].deliveries, 4);
    js.ack("g", "t", &ids(&fourth)).await.unwrap();
    assert!(
        js.receive("g", "t", 1, Duration::from_millis(100))
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn groups_each_get_every_record_and_topics_do_not_overlap() {
    let Some(nats) = require(NatsServer::start(), "nats-server") else {
        return;
    };
    let (js, other) = (engine(&nats).await, engine(&nats).await);
    // Two processes creating the same topics and groups at once all succeed.
    for topic in ["a", "r1", "r2", "r3", "r4"] {
        let (a, b) = tokio::join!(js.ensure_topic(topic), other.ensure_topic(topic));
        a.unwrap();
        b.unwrap();
        let (a, b) = tokio::join!(
            js.ensure_group("one", topic, SETTINGS),
            other.ensure_group("one", topic, GroupSettings::default())
        );
        a.unwrap();
        b.unwrap();
    }
    js.ensure_group("two", "a", SETTINGS).await.unwrap();
    js.ensure_topic("a.b").await.unwrap();
    js.ensure_group("one", "a.b", SETTINGS).await.unwrap();

    // More than one publish window in one call.
    js.publish("a", (0..3000).map(record).collect()).await.unwrap();
    js.publish("a.b", vec![record(7)]).await.unwrap();
    for group in ["one", "two"] {
        let got = receive_n(&js, group, "a", 3000).await;
        let mut offsets: Vec<u64> = got.iter().map(|r| r.offset).collect();
        offsets.sort_unstable();
        assert_eq!(offsets, (1..=3000).collect::<Vec<u64>>());
        js.ack(group, "a", &ids(&got)).await.unwrap();
    }
    let ab = receive_n(&js, "one", "a.b", 1).await;
    assert_eq!((ab[0].offset, &ab[0].value), (1, &record(7).value));
    assert!(
        js.receive("one", "a.b", 10, Duration::from_millis(100))
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn max_in_flight_caps_leases() {
    let Some(nats) = require(NatsServer::start(), "nats-server") else {
        return;
    };
    let js = engine(&nats).await;
    js.ensure_topic("t").await.unwrap();
    let settings = GroupSettings {
        max_in_flight: 2,
        from_end: false,
        ..SETTINGS
    };
    js.ensure_group("g", "t", settings).await.unwrap();
    // An existing group keeps its settings.
    js.ensure_group("g", "t", SETTINGS).await.unwrap();
    JetStream::connect(&nats.url())
        .await
        .unwrap()
        .ensure_group("g", "t", SETTINGS)
        .await
        .unwrap();
    js.publish("t", (0..5).map(record).collect()).await.unwrap();
    let first = js.receive("g", "t", 10, Duration::from_secs(1)).await.unwrap();
    assert_eq!(first.len(), 2);
    let started = Instant::now();
    let none = js
        .receive("g", "t", 10, Duration::from_millis(300))
        .await
        .unwrap();
    assert!(none.is_empty(), "{none:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );
    js.ack("g", "t", &ids(&first)).await.unwrap();
    let next = js.receive("g", "t", 10, Duration::from_secs(1)).await.unwrap();
    assert_eq!(next.len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn refusals() {
    let Some(nats) = require(NatsServer::start(), "nats-server") else {
        return;
    };
    let js = engine(&nats).await;
    match js.publish("missing", vec![record(0)]).await {
        Err(EngineError::Refused { message, .. }) => assert!(message.contains("`missing`"), "{message}"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        js.ensure_group("g", "missing", SETTINGS).await,
        Err(EngineError::Refused { .. })
    ));
    js.ensure_topic("t").await.unwrap();
    match js.receive("nope", "t", 1, Duration::ZERO).await {
        Err(EngineError::Refused { message, .. }) => assert!(message.contains("`nope`"), "{message}"),
        other => panic!("{other:?}"),
    }
    let mut reserved = record(0);
    reserved.headers.push(("Nats-Msg-Id".into(), "x".into()));
    assert!(matches!(
        js.publish("t", vec![reserved]).await,
        Err(EngineError::Refused { .. })
    ));
    let mut bad = record(0);
    bad.headers.push(("with space".into(), "x".into()));
    assert!(matches!(
        js.publish("t", vec![bad]).await,
        Err(EngineError::Refused { .. })
    ));
    assert!(matches!(
        js.ensure_topic("a..b").await,
        Err(EngineError::Unsupported { .. })
    ));
    assert!(matches!(
        js.ensure_topic(".a").await,
        Err(EngineError::Unsupported { .. })
    ));
    assert!(matches!(
        js.ensure_topic("a b").await,
        Err(EngineError::Broker(_))
    ));
    // The longest name that fits a stream name: 249 characters, none escaped.
    js.ensure_topic(&"x".repeat(249)).await.unwrap();
    assert!(matches!(
        js.ensure_topic(&"x_".repeat(100)).await,
        Err(EngineError::Unsupported { .. })
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn survives_a_server_restart() {
    let Some(mut nats) = require(NatsServer::start(), "nats-server") else {
        return;
    };
    let js = engine(&nats).await;
    js.ensure_topic("t").await.unwrap();
    js.ensure_group("g", "t", SETTINGS).await.unwrap();
    js.publish("t", (0..5).map(record).collect()).await.unwrap();
    let mut before = receive_n(&js, "g", "t", 5).await;
    before.sort_by_key(|r| r.offset);
    let held = before.split_off(3);
    js.ack("g", "t", &ids(&before)).await.unwrap();

    let held = ids(&held);

    // While the server is down every call fails as transient, promptly.
    nats.stop();
    let started = Instant::now();
    let down = [
        js.publish("t", vec![record(99)]).await.err(),
        js.receive("g", "t", 10, Duration::from_millis(200)).await.err(),
        js.ack("g", "t", &held).await.err(),
        js.ensure_topic("u").await.err(),
    ];
    for e in down {
        eprintln!("while down: {e:?}");
        assert!(e.as_ref().is_some_and(EngineError::is_transient), "{e:?}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );

    nats.restart().unwrap();
    // While the client reconnects, calls fail as transient; then they work again.
    retry("publish", || js.publish("t", (5..8).map(record).collect())).await;
    // Leases taken before the restart can still be acked.
    retry("ack", || js.ack("g", "t", &held)).await;
    let mut after = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while after.len() < 3 && Instant::now() < deadline {
        after.extend(retry("receive", || js.receive("g", "t", 10, Duration::from_secs(1))).await);
    }
    let mut offsets: Vec<u64> = after.iter().map(|r| r.offset).collect();
    offsets.sort_unstable();
    assert_eq!(
        offsets,
        vec![6, 7, 8],
        "records acked before the restart came again"
    );
    js.ack("g", "t", &ids(&after)).await.unwrap();

    // Everything published before the restart is still stored.
    js.ensure_group("late", "t", SETTINGS).await.unwrap();
    let all = receive_n(&js, "late", "t", 8).await;
    let mut offsets: Vec<u64> = all.iter().map(|r| r.offset).collect();
    offsets.sort_unstable();
    assert_eq!(offsets, (1..=8).collect::<Vec<u64>>());
}

#[tokio::test(flavor = "multi_thread")]
async fn credentials_in_the_url_are_not_shown() {
    // Nothing listens on port 1, or the URL does not parse: the error names the URL, redacted.
    for (url, secrets, shown) in [
        (
            "nats://user:s3cret@127.0.0.1:1",
            &["s3cret"][..],
            "nats://user:***@127.0.0.1:1",
        ),
        ("nats://t0ken@127.0.0.1:1", &["t0ken"], "nats://***@127.0.0.1:1"),
        (
            "nats://user:p%40ss@127.0.0.1:1",
            &["p%40ss", "p@ss"],
            "nats://user:***@127.0.0.1:1",
        ),
        (
            "nats://a:pw1@127.0.0.1:1,nats://tok2@127.0.0.1:2",
            &["pw1", "tok2"],
            "nats://a:***@127.0.0.1:1,nats://***@127.0.0.1:2",
        ),
        (
            "nats://user:s3cret@127.0.0.1:notaport",
            &["s3cret"],
            "nats://user:***@127.0.0.1:notaport",
        ),
        ("127.0.0.1:1", &[], "127.0.0.1:1"),
    ] {
        let e = JetStream::connect(url).await.unwrap_err();
        let (display, debug) = (e.to_string(), format!("{e:?}"));
        eprintln!("{url}: {display}");
        for secret in secrets {
            assert!(!display.contains(secret), "{display}");
            assert!(!debug.contains(secret), "{debug}");
        }
        assert!(display.contains(shown), "{display}");
    }

    let Some(mut nats) = require(NatsServer::start(), "nats-server") else {
        return;
    };
    // Without credentials, Debug shows the URL as it is.
    let plain = engine(&nats).await;
    let debug = format!("{plain:?}");
    assert!(debug.contains(&nats.url()), "{debug}");
    assert!(debug.contains("Connected"), "{debug}");

    // A list of URLs: one that answers is enough.
    JetStream::connect(&format!("nats://127.0.0.1:1, {}", nats.url()))
        .await
        .unwrap();

    // A server without authorization takes any credentials.
    let url = nats.url().replacen("nats://", "nats://user:s3cret@", 1);
    let js = JetStream::connect(&url).await.unwrap();
    let debug = format!("{js:?}");
    assert!(
        !debug.contains("s3cret") && debug.contains("nats://user:***@127.0.0.1:"),
        "{debug}"
    );
    js.ensure_topic("t").await.unwrap();

    // While the server is away, calls fail naming the URL, redacted.
    nats.stop();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let e = js.publish("t", vec![record(0)]).await.unwrap_err();
        let (display, debug) = (e.to_string(), format!("{e:?}"));
        assert!(e.is_transient(), "{e:?}");
        assert!(
            !display.contains("s3cret") && !debug.contains("s3cret"),
            "{debug}"
        );
        if display.contains("not connected to nats://user:***@127.0.0.1:") {
            break;
        }
        assert!(Instant::now() < deadline, "{display}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let debug = format!("{js:?}");
    assert!(!debug.contains("s3cret"), "{debug}");
}

/// `record(i)` as it comes back: headers sorted by name.
#[track_caller]
fn assert_is_record(got: &InRecord, i: usize, offset: u64) {
    let want = record(i);
    let mut headers = want.headers;
    headers.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        (got.partition, got.offset, got.deliveries),
        (0, offset, 1),
        "{got:?}"
    );
    assert_eq!(got.key, want.key);
    assert_eq!(got.headers, headers);
    assert_eq!(got.value, want.value);
}

#[tokio::test(flavor = "multi_thread")]
async fn topics_fetch_group_state_and_delete() {
    let Some(nats) = require(NatsServer::start(), "nats-server") else {
        return;
    };
    let js = engine(&nats).await;
    let (full, empty, dotted) = ("full", "empty", "a.b-c_d");
    for topic in [full, empty, dotted] {
        js.ensure_topic(topic).await.unwrap();
    }
    js.ensure_group("g", full, SETTINGS).await.unwrap();
    let published = js.publish_ids(full, (0..5).map(record).collect()).await.unwrap();
    assert_eq!(published, (1..=5).map(|o| (0, o)).collect::<Vec<_>>());
    js.publish(dotted, vec![record(9)]).await.unwrap();

    // Every topic, sorted by name, names recovered exactly (dots, dashes and underscores).
    let topics = js.topics().await.unwrap();
    let names: Vec<&str> = topics.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, vec![dotted, empty, full], "{topics:?}");
    let (t_dotted, t_empty, t_full) = (&topics[0], &topics[1], &topics[2]);
    assert_eq!((t_full.start_offset, t_full.next_offset), (1, 6), "{t_full:?}");
    assert!(t_full.size_bytes > 0, "{t_full:?}");
    assert_eq!(
        (t_empty.start_offset, t_empty.next_offset, t_empty.size_bytes),
        (1, 1, 0)
    );
    assert_eq!((t_dotted.start_offset, t_dotted.next_offset), (1, 2));
    assert_eq!(js.describe_topic(full).await.unwrap().as_ref(), Some(t_full));
    assert_eq!(js.describe_topic(dotted).await.unwrap().as_ref(), Some(t_dotted));
    assert_eq!(js.describe_topic("missing").await.unwrap(), None);

    // Reading by offset: in order, key, headers and value intact, no lease.
    let wait = Duration::from_secs(5);
    let started = Instant::now();
    let first = js.fetch(full, 1, 3, wait).await.unwrap();
    assert_eq!(first.len(), 3, "{first:?}");
    for (i, r) in first.iter().enumerate() {
        assert_is_record(r, i, i as u64 + 1);
    }
    let rest = js.fetch(full, 4, 10, wait).await.unwrap();
    assert_eq!(rest.len(), 2, "{rest:?}");
    for (i, r) in rest.iter().enumerate() {
        assert_is_record(r, i + 3, i as u64 + 4);
    }
    // Records already stored come at once, not after the wait.
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    // Below the first offset: from the first; the same records again (no lease was taken).
    let again = js.fetch(full, 0, 10, Duration::ZERO).await.unwrap();
    assert_eq!(
        again.iter().map(|r| r.offset).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5]
    );
    assert!(js.fetch(full, 1, 0, wait).await.unwrap().is_empty());

    // Past the end: waits `wait`, then nothing.
    let started = Instant::now();
    let none = js.fetch(full, 6, 10, Duration::from_millis(300)).await.unwrap();
    assert!(none.is_empty(), "{none:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );

    // A fetch that waits returns as soon as a record is published.
    let reader = {
        let js = js.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let got = js.fetch(full, 6, 10, wait).await;
            (got, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    js.publish(full, vec![record(5)]).await.unwrap();
    let (got, took) = reader.await.unwrap();
    let got = got.unwrap();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_is_record(&got[0], 5, 6);
    assert!(took < Duration::from_secs(4), "the fetch took {took:?}");

    // A missing topic is refused.
    match js.fetch("missing", 1, 1, Duration::ZERO).await {
        Err(EngineError::Refused { message, .. }) => assert!(message.contains("`missing`"), "{message}"),
        other => panic!("{other:?}"),
    }

    // Each fetch deleted its consumer: only the group's is left.
    let client = async_nats::connect(nats.url()).await.unwrap();
    let stream = async_nats::jetstream::new(client)
        .get_stream(stream_name(full))
        .await
        .unwrap();
    assert_eq!(stream.cached_info().state.consumer_count, 1);

    // Group state: depth counts leased records too.
    assert_eq!(js.group_state("nope", full).await.unwrap(), None);
    assert_eq!(js.group_state("g", "missing").await.unwrap(), None);
    let state = js.group_state("g", full).await.unwrap().unwrap();
    assert_eq!((state.depth, state.in_flight), (6, 0));
    let two = js.receive("g", full, 2, Duration::from_secs(1)).await.unwrap();
    assert_eq!(two.len(), 2);
    let state = js.group_state("g", full).await.unwrap().unwrap();
    assert_eq!((state.depth, state.in_flight), (6, 2));
    js.ack("g", full, &ids(&two)).await.unwrap();
    let state = js.group_state("g", full).await.unwrap().unwrap();
    assert_eq!((state.depth, state.in_flight), (4, 0));

    // Deleting: true, then false; gone from the list; made again, it works from offset 1 again,
    // and so does a group of the same name.
    let held = js.receive("g", full, 1, Duration::from_secs(1)).await.unwrap();
    assert_eq!(held.len(), 1);
    assert!(js.delete_topic(full).await.unwrap());
    assert!(!js.delete_topic(full).await.unwrap());
    assert_eq!(js.describe_topic(full).await.unwrap(), None);
    assert_eq!(js.group_state("g", full).await.unwrap(), None);
    let names: Vec<String> = js.topics().await.unwrap().into_iter().map(|t| t.name).collect();
    assert_eq!(names, vec![dotted.to_owned(), empty.to_owned()]);
    assert_not_leased(js.ack("g", full, &ids(&held)).await);
    js.ensure_topic(full).await.unwrap();
    js.ensure_group("g", full, SETTINGS).await.unwrap();
    assert_eq!(js.publish_ids(full, vec![record(0)]).await.unwrap(), vec![(0, 1)]);
    let got = receive_n(&js, "g", full, 1).await;
    assert_is_record(&got[0], 0, 1);
    js.ack("g", full, &ids(&got)).await.unwrap();
}

#[test]
fn meta_keys_are_valid_and_distinct() {
    let keys = [
        "",
        "=",
        ".",
        "..",
        "a",
        "A",
        "g/x.y/..z",
        "g/x.y/.z",
        "g/x=2Ey",
        "é",
        " ",
        "*",
        ">",
        "a.b",
    ];
    let encoded: Vec<String> = keys.iter().map(|k| meta_key(k)).collect();
    for (k, e) in keys.iter().zip(&encoded) {
        assert!(
            !e.is_empty()
                && !e.starts_with('.')
                && !e.ends_with('.')
                && !e.contains("..")
                && e.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-/_=.".contains(&b)),
            "{k:?} -> {e:?}"
        );
    }
    let mut distinct = encoded.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), keys.len(), "{encoded:?}");
    assert_eq!(meta_key("g/x.y/..z"), "g/x=2Ey/=2E=2Ez");
    assert_eq!(meta_key("a-b_c/D9"), "a-b_c/D9");
}

#[tokio::test(flavor = "multi_thread")]
async fn metadata_store() {
    let Some(nats) = require(NatsServer::start(), "nats-server") else {
        return;
    };
    let js = engine(&nats).await;
    let key = "g/x.y/..z";
    assert_eq!(js.meta_get(key).await.unwrap(), None);
    let v1 = Bytes::from_static(b"{\"v\":1}");
    let rev1 = js.meta_put(key, v1.clone(), None).await.unwrap().unwrap();
    // Exists: a create loses; so does a write naming another revision.
    assert_eq!(
        js.meta_put(key, Bytes::from_static(b"x"), None).await.unwrap(),
        None
    );
    assert_eq!(
        js.meta_put(key, Bytes::from_static(b"x"), Some(rev1 + 100))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        js.meta_get(key).await.unwrap(),
        Some(MetaValue {
            value: v1,
            revision: rev1
        })
    );
    let v2 = Bytes::from_static(b"{\"v\":2}");
    let rev2 = js.meta_put(key, v2.clone(), Some(rev1)).await.unwrap().unwrap();
    assert!(rev2 > rev1);
    assert_eq!(
        js.meta_put(key, Bytes::from_static(b"x"), Some(rev1))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        js.meta_get(key).await.unwrap(),
        Some(MetaValue {
            value: v2.clone(),
            revision: rev2
        })
    );

    // A key that differs only in dots is another key.
    let other = "g/x.y/.z";
    assert_eq!(js.meta_get(other).await.unwrap(), None);
    let rev = js
        .meta_put(other, Bytes::from_static(b"o"), None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(js.meta_get(other).await.unwrap().unwrap().revision, rev);
    assert_eq!(js.meta_get(key).await.unwrap().unwrap().value, v2);

    // Another process sees the same store; the empty key and odd ones work.
    let second = engine(&nats).await;
    assert_eq!(second.meta_get(key).await.unwrap().unwrap().revision, rev2);
    for k in ["", ".", "=2E", "é * >"] {
        let rev = second
            .meta_put(k, Bytes::from(k.to_owned()), None)
            .await
            .unwrap()
            .unwrap();
        let got = js.meta_get(k).await.unwrap().unwrap();
        assert_eq!((got.value, got.revision), (Bytes::from(k.to_owned()), rev));
    }

    // A key deleted (by another client, through the bucket) can be created again.
    let client = async_nats::connect(nats.url()).await.unwrap();
    let kv = async_nats::jetstream::new(client)
        .get_key_value("ferry_meta")
        .await
        .unwrap();
    kv.delete(meta_key(key)).await.unwrap();
    assert_eq!(js.meta_get(key).await.unwrap(), None);
    let rev3 = js
        .meta_put(key, Bytes::from_static(b"3"), None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(js.meta_get(key).await.unwrap().unwrap().revision, rev3);
    kv.purge(meta_key(key)).await.unwrap();
    assert_eq!(js.meta_get(key).await.unwrap(), None);
    assert!(
        js.meta_put(key, Bytes::from_static(b"4"), None)
            .await
            .unwrap()
            .is_some()
    );

    // Concurrent creates: exactly one wins.
    let racers: Vec<_> = (0..8)
        .map(|i| {
            let js = if i % 2 == 0 { js.clone() } else { second.clone() };
            tokio::spawn(async move { js.meta_put("race", Bytes::from(format!("{i}")), None).await })
        })
        .collect();
    let mut won = 0;
    for r in racers {
        won += usize::from(r.await.unwrap().unwrap().is_some());
    }
    assert_eq!(won, 1);
}
