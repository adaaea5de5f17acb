//! Graceful shutdown and restart: records and committed offsets survive, long-polls end early, and the
//! broker is closed when `serve` returns.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Events, TestServer, wait_for};
use ferry_broker::{Broker, FetchLimits};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tracing_subscriber::layer::SubscriberExt;

#[tokio::test]
async fn records_and_offsets_survive_a_graceful_restart() {
    let (tx, mut events) = mpsc::unbounded_channel();
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(Events(tx))).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    server
        .create_topic(json!({"name": "ledger", "partitions": 2}))
        .await;
    let batch: Vec<Value> = (0..5)
        .map(|i| json!({"key": format!("k{i}"), "value": {"n": i}, "partition": i % 2}))
        .collect();
    let offsets = server.publish("ledger", &Value::Array(batch)).await;
    let before: Vec<Vec<Value>> = vec![
        server.fetch("ledger", 0, 0).await,
        server.fetch("ledger", 1, 0).await,
    ];
    assert_eq!((before[0].len(), before[1].len()), (3, 2));
    let a = server
        .get("/v1/groups/g/topics/ledger/records?max_records=100")
        .await;
    assert_eq!(a.body["records"].as_array().unwrap().len(), 5);
    let commit =
        json!({"offsets": [{"partition": 0, "offset": before[0].len()}, {"partition": 1, "offset": 1}]});
    assert_eq!(
        server
            .post("/v1/groups/g/topics/ledger/offsets", &commit)
            .await
            .status,
        StatusCode::NO_CONTENT
    );

    // A long-poll in flight does not hold the shutdown up for its 30 s.
    let url = server.url(&format!(
        "/v1/topics/ledger/partitions/0/records?offset={}&max_wait_ms=30000",
        before[0].len()
    ));
    let client = server.client.clone();
    let polling = tokio::spawn(async move { client.get(url).send().await.unwrap() });
    wait_for(&mut events, "long-poll started").await;
    let started = Instant::now();
    server.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "shutdown took {:?}",
        started.elapsed()
    );
    let polled = polling.await.unwrap();
    assert_eq!(polled.status(), StatusCode::OK);
    assert_eq!(polled.json::<Value>().await.unwrap(), json!({"records": []}));

    // `serve` returned, so the broker is closed: it opens again on the same directory, with everything.
    let broker = Broker::open(dir.path()).unwrap();
    let committed = broker.group_offsets("g", "ledger").unwrap();
    assert_eq!(committed[0].committed, Some(before[0].len() as u64));
    assert_eq!(committed[1].committed, Some(1));
    assert_eq!(committed[1].lag, before[1].len() as u64 - 1);
    let records = broker
        .fetch("ledger", 1, 0, FetchLimits::default())
        .await
        .unwrap();
    assert_eq!(records.len(), before[1].len());
    drop(broker);

    // And over HTTP: the same records, byte for byte, and the group goes on from its commit.
    let server = TestServer::start(dir.path()).await;
    assert_eq!(
        vec![
            server.fetch("ledger", 0, 0).await,
            server.fetch("ledger", 1, 0).await
        ],
        before
    );
    let a = server
        .get("/v1/groups/g/topics/ledger/records?max_records=100")
        .await;
    let resumed: Vec<(u64, u64)> = a.body["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["partition"].as_u64().unwrap(), r["offset"].as_u64().unwrap()))
        .collect();
    let expected: Vec<(u64, u64)> = (1..before[1].len() as u64).map(|o| (1, o)).collect();
    assert_eq!(resumed, expected);
    let published: Vec<(u64, u64)> = offsets.into_iter().filter(|(p, _)| *p == 1).collect();
    assert_eq!(published.len(), before[1].len());
    server.stop().await;
}
