//! Stream groups over HTTP: fetch, commit, offsets and lag, seek, long-poll.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::TestServer;
use reqwest::StatusCode;
use serde_json::{Value, json};

const G: &str = "/v1/groups/billing/topics/jobs";

/// (partition, offset, value) of each record of a fetch answer.
fn seen(body: &Value) -> Vec<(u64, u64, Value)> {
    body["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            assert_eq!(r["topic"], "jobs");
            (
                r["partition"].as_u64().unwrap(),
                r["offset"].as_u64().unwrap(),
                r["value"].clone(),
            )
        })
        .collect()
}

fn sorted(mut v: Vec<(u64, u64, Value)>) -> Vec<(u64, u64, Value)> {
    v.sort_by_key(|(p, o, _)| (*p, *o));
    v
}

#[tokio::test]
async fn a_stream_group_fetches_commits_reports_lag_and_seeks() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    server
        .create_topic(json!({"name": "jobs", "partitions": 2}))
        .await;
    let records: Vec<Value> = (0..6)
        .map(|i| json!({"value": {"job": i}, "partition": i % 2, "timestamp": 1_000 * (i / 2 + 1)}))
        .collect();
    server.publish("jobs", &Value::Array(records)).await;

    // Before any commit the group is unknown to the offsets endpoint, and starts at the earliest record.
    let a = server.get(&format!("{G}/offsets")).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert_eq!(
        (a.body["error"].as_str(), a.body["field"].as_str()),
        (Some("group_not_found"), Some("group"))
    );

    let a = server.get(&format!("{G}/records?max_records=100")).await;
    assert_eq!(a.status, StatusCode::OK, "{a:?}");
    let expected: Vec<_> = (0..6u64).map(|i| (i % 2, i / 2, json!({"job": i}))).collect();
    assert_eq!(sorted(seen(&a.body)), sorted(expected));
    // Handed out once: the next fetch has nothing.
    let a = server.get(&format!("{G}/records")).await;
    assert_eq!(seen(&a.body), []);

    let a = server
        .post(
            &format!("{G}/offsets"),
            &json!({"offsets": [{"partition": 0, "offset": 3}, {"partition": 1, "offset": 1}]}),
        )
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{a:?}");
    let a = server.get(&format!("{G}/offsets")).await;
    assert_eq!(a.status, StatusCode::OK, "{a:?}");
    assert_eq!(
        a.body,
        json!({"group": "billing", "topic": "jobs", "lag": 2, "generation": 0, "members": [], "partitions": [
            {"partition": 0, "committed": 3, "start_offset": 0, "next_offset": 3, "lag": 0},
            {"partition": 1, "committed": 1, "start_offset": 0, "next_offset": 3, "lag": 2},
        ]})
    );

    // Seek one partition back to the start: it is read again, and committed there.
    let a = server
        .post(&format!("{G}/seek"), &json!({"to": "earliest", "partition": 1}))
        .await;
    assert_eq!(a.status, StatusCode::OK, "{a:?}");
    assert_eq!(common::offsets(&a.body), [(1, 0)]);
    let a = server.get(&format!("{G}/records?max_records=100")).await;
    assert_eq!(
        seen(&a.body),
        (0..3u64)
            .map(|o| (1, o, json!({"job": 2 * o + 1})))
            .collect::<Vec<_>>()
    );

    // By timestamp: the first record at or after 2000 in partition 0 is offset 1.
    let a = server
        .post(
            &format!("{G}/seek"),
            &json!({"to": {"timestamp": 2000}, "partition": 0}),
        )
        .await;
    assert_eq!(common::offsets(&a.body), [(0, 1)]);
    let a = server.get(&format!("{G}/records?max_records=1")).await;
    assert_eq!(seen(&a.body), [(0, 1, json!({"job": 2}))]);

    // To an exact offset on every partition, then to the end.
    let a = server
        .post(&format!("{G}/seek"), &json!({"to": {"offset": 2}}))
        .await;
    assert_eq!(common::offsets(&a.body), [(0, 2), (1, 2)]);
    let a = server.get(&format!("{G}/records")).await;
    assert_eq!(
        sorted(seen(&a.body)),
        [(0, 2, json!({"job": 4})), (1, 2, json!({"job": 5}))]
    );
    let a = server.post(&format!("{G}/seek"), &json!({"to": "latest"})).await;
    assert_eq!(common::offsets(&a.body), [(0, 3), (1, 3)]);
    let a = server.get(&format!("{G}/offsets")).await;
    assert_eq!(a.body["lag"], 0);

    // A waiting group fetch is woken by a publish.
    let url = server.url(&format!("{G}/records?max_wait_ms=30000"));
    let client = server.client.clone();
    let waiting = tokio::spawn(async move {
        client
            .get(url)
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    });
    server
        .publish("jobs", &json!({"value": "late", "partition": 1}))
        .await;
    let got = tokio::time::timeout(Duration::from_secs(20), waiting)
        .await
        .expect("woken well before 30 s")
        .unwrap();
    assert_eq!(seen(&got), [(1, 3, json!("late"))]);

    // Another group has its own positions.
    let a = server
        .get("/v1/groups/audit/topics/jobs/records?max_records=100")
        .await;
    assert_eq!(seen(&a.body).len(), 7);

    server.stop().await;
}
