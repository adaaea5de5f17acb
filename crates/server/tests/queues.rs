//! Queue groups over HTTP: leases, ack, nack, visibility timeouts, extend, dead letters, backpressure,
//! long-poll.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{Answer, Events, TestServer, wait_for};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tracing_subscriber::layer::SubscriberExt;

const Q: &str = "/v1/queues/workers/topics/jobs";

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

/// A received record: (partition, offset, value, delivery_count), after checking the lease fields.
type Got = (u64, u64, Value, u64);

fn got(a: &Answer) -> Vec<Got> {
    assert_eq!(a.status, StatusCode::OK, "{a:?}");
    let now = now_ms();
    let mut out: Vec<Got> = a.body["records"]
        .as_array()
        .unwrap_or_else(|| panic!("no records in {a:?}"))
        .iter()
        .map(|r| {
            assert_eq!(r["topic"], "jobs", "{r}");
            assert!(r["timestamp"].is_i64(), "{r}");
            let expires = r["lease_expires_ms"].as_i64().unwrap();
            assert!(expires > now, "lease ends in the past: {expires} <= {now}");
            (
                r["partition"].as_u64().unwrap(),
                r["offset"].as_u64().unwrap(),
                r["value"].clone(),
                r["delivery_count"].as_u64().unwrap(),
            )
        })
        .collect();
    out.sort_by_key(|(p, o, ..)| (*p, *o));
    out
}

async fn receive(server: &TestServer, group: &str, body: Value) -> Answer {
    server
        .post(&format!("/v1/queues/{group}/topics/jobs/receive"), &body)
        .await
}

fn refs(records: &[Got]) -> Value {
    Value::Array(
        records
            .iter()
            .map(|(p, o, ..)| json!({"partition": p, "offset": o}))
            .collect(),
    )
}

async fn settle(server: &TestServer, verb: &str, body: Value) -> Answer {
    server.post(&format!("{Q}/{verb}"), &body).await
}

fn error(a: &Answer) -> (u16, &str, Option<&str>) {
    (
        a.status.as_u16(),
        a.body["error"].as_str().unwrap_or_default(),
        a.body["field"].as_str(),
    )
}

async fn start() -> (TestServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    server
        .create_topic(json!({"name": "jobs", "partitions": 2}))
        .await;
    (server, dir)
}

async fn publish_jobs(server: &TestServer, n: u64) {
    let records: Vec<Value> = (0..n)
        .map(|i| json!({"value": {"job": i}, "partition": i % 2}))
        .collect();
    server.publish("jobs", &Value::Array(records)).await;
}

#[tokio::test]
async fn receive_leases_ack_finishes_nack_gives_back() {
    let (server, _dir) = start().await;

    // Created, then found with the same settings, then refused with others.
    let a = server.put(Q, &json!({"visibility_timeout_ms": 60000})).await;
    assert_eq!(a.status, StatusCode::CREATED, "{a:?}");
    assert_eq!(
        (
            &a.body["group"],
            &a.body["topic"],
            &a.body["dead_letter_topic"],
            &a.body["depth"],
            &a.body["in_flight"]
        ),
        (
            &json!("workers"),
            &json!("jobs"),
            &json!("jobs.workers.dlq"),
            &json!(0),
            &json!(0)
        )
    );
    assert_eq!(a.body["config"]["visibility_timeout_ms"], 60000);
    assert_eq!(a.body["config"]["max_deliveries"], 5);
    let a = server.put(Q, &json!({"visibility_timeout_ms": 60000})).await;
    assert_eq!(a.status, StatusCode::OK, "{a:?}");
    let a = server.put(Q, &json!({"visibility_timeout_ms": 1000})).await;
    assert_eq!(error(&a), (409, "queue_exists", Some("group")), "{a:?}");

    publish_jobs(&server, 4).await;
    let a = server.get(Q).await;
    assert_eq!((&a.body["depth"], &a.body["in_flight"]), (&json!(4), &json!(0)));

    // Three leased at once, each delivered for the first time.
    let first = got(&receive(&server, "workers", json!({"max_records": 3})).await);
    assert_eq!(first.len(), 3);
    assert!(first.iter().all(|(.., count)| *count == 1), "{first:?}");
    let a = server.get(Q).await;
    assert_eq!((&a.body["depth"], &a.body["in_flight"]), (&json!(4), &json!(3)));

    // A second receive gets only the one not leased; a third nothing.
    let second = got(&receive(&server, "workers", json!({})).await);
    assert_eq!(second.len(), 1);
    let mut all: Vec<_> = first
        .iter()
        .chain(&second)
        .map(|(p, o, v, _)| (*p, *o, v.clone()))
        .collect();
    all.sort_by_key(|(p, o, _)| (*p, *o));
    let mut expected: Vec<_> = (0..4u64).map(|i| (i % 2, i / 2, json!({"job": i}))).collect();
    expected.sort_by_key(|(p, o, _)| (*p, *o));
    assert_eq!(all, expected, "each record once");
    // An empty body is allowed too.
    let a = server
        .post_raw(&format!("{Q}/receive"), Some("application/json"), "")
        .await;
    assert_eq!(got(&a), []);

    // Settling is all-or-nothing: one record not leased refuses the batch and names it.
    let a = settle(
        &server,
        "ack",
        json!({"records": [refs(&first[..1])[0], {"partition": 1, "offset": 77}]}),
    )
    .await;
    assert_eq!(error(&a), (409, "not_leased", Some("records[1]")), "{a:?}");
    assert_eq!(server.get(Q).await.body["in_flight"], 4);

    // Ack the first: 204, and acking it again is refused, naming it.
    let a = settle(&server, "ack", json!({"records": refs(&first[..1])})).await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{a:?}");
    let a = settle(&server, "ack", json!({"records": refs(&first[..1])})).await;
    assert_eq!(error(&a), (409, "not_leased", Some("records[0]")), "{a:?}");
    let a = server.get(Q).await;
    assert_eq!((&a.body["depth"], &a.body["in_flight"]), (&json!(3), &json!(3)));

    // Nack without delay: available at once, delivered a second time.
    let a = settle(
        &server,
        "nack",
        json!({"records": refs(&first[1..2]), "delay_ms": 0}),
    )
    .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{a:?}");
    let again = got(&receive(&server, "workers", json!({"max_records": 10})).await);
    assert_eq!(
        again,
        [(first[1].0, first[1].1, first[1].2.clone(), 2)],
        "only the nacked record, once more"
    );

    // Nack with a delay: not available before it ends (a receive that waits less gets nothing).
    let a = settle(
        &server,
        "nack",
        json!({"records": refs(&again), "delay_ms": 60000}),
    )
    .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{a:?}");
    assert_eq!(
        got(&receive(&server, "workers", json!({"max_wait_ms": 300})).await),
        []
    );

    // Ack everything still leased; the acked records never come back, and the queue is empty but for
    // the delayed one.
    let rest: Vec<Got> = first[2..].iter().chain(&second).cloned().collect();
    let a = settle(&server, "ack", json!({"records": refs(&rest)})).await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{a:?}");
    let a = server.get(Q).await;
    assert_eq!((&a.body["depth"], &a.body["in_flight"]), (&json!(1), &json!(0)));
    assert_eq!(got(&receive(&server, "workers", json!({})).await), []);

    // Another queue group on the same topic has its own state, and is created by its first receive.
    let other = got(&receive(&server, "audit", json!({"max_records": 100})).await);
    assert_eq!(other.len(), 4);
    let a = server.get("/v1/queues/audit/topics/jobs").await;
    assert_eq!(a.status, StatusCode::OK, "{a:?}");
    assert_eq!(a.body["config"]["visibility_timeout_ms"], 30000);

    server.stop().await;
}

#[tokio::test]
async fn leases_expire_unless_extended() {
    let (server, _dir) = start().await;
    publish_jobs(&server, 2).await;

    // Two records, each leased for 300 ms.
    let one = json!({"max_records": 1, "visibility_timeout_ms": 300});
    let a = got(&receive(&server, "workers", one.clone()).await);
    let b = got(&receive(&server, "workers", one).await);
    assert_eq!((a.len(), b.len()), (1, 1));
    assert_ne!(a, b);

    // Extend b's lease to a minute; a's runs out, and a waiting receive gets a again, b not.
    let e = settle(
        &server,
        "extend",
        json!({"records": refs(&b), "visibility_timeout_ms": 60000}),
    )
    .await;
    assert_eq!(e.status, StatusCode::NO_CONTENT, "{e:?}");
    let back = got(&receive(
        &server,
        "workers",
        json!({"max_wait_ms": 10000, "max_records": 10}),
    )
    .await);
    assert_eq!(back, [(a[0].0, a[0].1, a[0].2.clone(), 2)]);

    // Well past b's first lease, b is still leased: a receive waiting a second gets nothing, and an ack
    // of b is accepted.
    assert_eq!(
        got(&receive(&server, "workers", json!({"max_wait_ms": 1000})).await),
        []
    );
    let e = settle(&server, "ack", json!({"records": refs(&b)})).await;
    assert_eq!(e.status, StatusCode::NO_CONTENT, "{e:?}");

    // Extend of a record whose lease ran out is refused: a's second lease is the group default (30 s),
    // so ack it, and then extending it names it.
    let e = settle(&server, "ack", json!({"records": refs(&back)})).await;
    assert_eq!(e.status, StatusCode::NO_CONTENT, "{e:?}");
    let e = settle(
        &server,
        "extend",
        json!({"records": refs(&back), "visibility_timeout_ms": 1000}),
    )
    .await;
    assert_eq!(error(&e), (409, "not_leased", Some("records[0]")), "{e:?}");
    let a = server.get(Q).await;
    assert_eq!((&a.body["depth"], &a.body["in_flight"]), (&json!(0), &json!(0)));

    server.stop().await;
}

#[tokio::test]
async fn max_deliveries_moves_a_record_to_the_dead_letter_topic() {
    let (server, _dir) = start().await;
    let a = server.put(Q, &json!({"max_deliveries": 2})).await;
    assert_eq!(a.status, StatusCode::CREATED, "{a:?}");
    server
        .publish(
            "jobs",
            &json!({"key": "k1", "headers": {"trace": "t-1"}, "value": {"job": "poison"}, "partition": 1}),
        )
        .await;

    for delivery in 1..=2 {
        let r = got(&receive(&server, "workers", json!({})).await);
        assert_eq!(r, [(1, 0, json!({"job": "poison"}), delivery)]);
        let a = settle(&server, "nack", json!({"records": refs(&r)})).await;
        assert_eq!(a.status, StatusCode::NO_CONTENT, "{a:?}");
    }
    // Delivered twice without an ack: the next receive moves it to the dead-letter topic instead.
    assert_eq!(got(&receive(&server, "workers", json!({})).await), []);
    let a = server.get(Q).await;
    assert_eq!((&a.body["depth"], &a.body["in_flight"]), (&json!(0), &json!(0)));

    let dead = server.fetch("jobs.workers.dlq", 0, 0).await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    let d = &dead[0];
    assert_eq!(
        (&d["key"], &d["value"]),
        (&json!("k1"), &json!({"job": "poison"}))
    );
    let h = &d["headers"];
    assert_eq!(h["trace"], "t-1", "the record's own headers are kept: {h}");
    let reason = h["ferry-dlq-reason"].as_str().unwrap();
    assert!(
        reason.contains("max_deliveries (2)") && reason.contains("nack"),
        "{reason}"
    );
    assert_eq!(
        (
            &h["ferry-dlq-topic"],
            &h["ferry-dlq-group"],
            &h["ferry-dlq-partition"],
            &h["ferry-dlq-offset"],
            &h["ferry-dlq-deliveries"]
        ),
        (
            &json!("jobs"),
            &json!("workers"),
            &json!("1"),
            &json!("0"),
            &json!("2")
        )
    );
    server.stop().await;
}

#[tokio::test]
async fn max_in_flight_limits_a_receive() {
    let (server, _dir) = start().await;
    let a = server.put(Q, &json!({"max_in_flight": 2})).await;
    assert_eq!(a.status, StatusCode::CREATED, "{a:?}");
    publish_jobs(&server, 5).await;

    let first = got(&receive(&server, "workers", json!({"max_records": 10})).await);
    assert_eq!(first.len(), 2);
    assert_eq!(
        got(&receive(&server, "workers", json!({"max_records": 10})).await),
        []
    );
    let a = server.get(Q).await;
    assert_eq!((&a.body["depth"], &a.body["in_flight"]), (&json!(5), &json!(2)));

    let a = settle(&server, "ack", json!({"records": refs(&first[..1])})).await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{a:?}");
    let next = got(&receive(&server, "workers", json!({"max_records": 10})).await);
    assert_eq!(next.len(), 1);
    assert!(!first.contains(&next[0]));
    server.stop().await;
}

/// A receive waiting for `max_wait_ms`, spawned; its answer as JSON.
fn spawn_receive(server: &TestServer, max_wait_ms: u64) -> tokio::task::JoinHandle<(StatusCode, Value)> {
    let req = server
        .client
        .post(server.url(&format!("{Q}/receive")))
        .json(&json!({"max_wait_ms": max_wait_ms}));
    tokio::spawn(async move {
        let resp = req.send().await.unwrap();
        (resp.status(), resp.json::<Value>().await.unwrap())
    })
}

#[tokio::test]
async fn a_waiting_receive_is_woken_by_a_publish_and_ended_by_shutdown() {
    // A current-thread runtime: the server's tasks run on this thread, so a thread-local subscriber sees
    // their events.
    let (tx, mut events) = mpsc::unbounded_channel();
    let _guard = tracing::subscriber::set_default(tracing_subscriber::registry().with(Events(tx)));
    let (server, _dir) = start().await;
    let a = server.put(Q, &json!({})).await;
    assert_eq!(a.status, StatusCode::CREATED, "{a:?}");

    let waiting = spawn_receive(&server, 30_000);
    wait_for(&mut events, "long-poll started").await;
    server
        .publish("jobs", &json!({"value": "late", "partition": 1}))
        .await;
    let (status, body) = tokio::time::timeout(Duration::from_secs(20), waiting)
        .await
        .expect("woken well before 30 s")
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    let records = body["records"].as_array().unwrap();
    assert_eq!(records.len(), 1, "{body}");
    assert_eq!(
        (&records[0]["value"], &records[0]["delivery_count"]),
        (&json!("late"), &json!(1))
    );

    // A shutdown does not wait for a receive's max_wait_ms: it ends with what it has (nothing).
    let waiting = spawn_receive(&server, 60_000);
    wait_for(&mut events, "long-poll started").await;
    tokio::time::timeout(Duration::from_secs(20), server.stop())
        .await
        .expect("shut down well before the receive's 60 s");
    let (status, body) = waiting.await.unwrap();
    assert_eq!((status, body), (StatusCode::OK, json!({"records": []})));
}
