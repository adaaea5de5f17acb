//! Topic lifecycle over HTTP: create, list, describe, delete, and the answers around them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::TestServer;
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn topics_are_created_listed_described_and_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;

    let resp = server
        .client
        .post(server.url("/v1/topics"))
        .json(&json!({"name": "orders", "partitions": 3, "fsync": "never", "retention_ms": null}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(resp.headers()["location"], "/v1/topics/orders");
    let orders: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(orders["name"], "orders");
    assert_eq!(orders["config"]["partitions"], 3);
    assert_eq!(orders["config"]["fsync"], "never");
    assert_eq!(orders["config"]["retention_ms"], serde_json::Value::Null);
    assert_eq!(orders["partitions"].as_array().unwrap().len(), 3);
    assert_eq!(orders["partitions"][2]["next_offset"], 0);

    // Defaults for every key not given.
    let audit = server.create_topic(json!({"name": "audit"})).await;
    assert_eq!(audit["config"]["partitions"], 1);
    assert_eq!(audit["config"]["fsync"], "always");
    assert_eq!(audit["config"]["max_record_bytes"], 1024 * 1024);

    let again = server.post("/v1/topics", &json!({"name": "orders"})).await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert_eq!(again.body["error"], "topic_exists");
    assert_eq!(again.body["field"], "name");

    let list = server.get("/v1/topics").await;
    assert_eq!(list.status, StatusCode::OK);
    let names: Vec<_> = list.body["topics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["audit", "orders"]);

    let described = server.get("/v1/topics/orders").await;
    assert_eq!(described.status, StatusCode::OK);
    assert_eq!(described.body, orders);

    let deleted = server.delete("/v1/topics/orders").await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert!(deleted.text.is_empty());
    let gone = server.get("/v1/topics/orders").await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    assert_eq!(gone.body["error"], "topic_not_found");
    assert_eq!(gone.body["field"], "topic");
    assert_eq!(
        server.delete("/v1/topics/orders").await.status,
        StatusCode::NOT_FOUND
    );
    let list = server.get("/v1/topics").await;
    assert_eq!(list.body["topics"].as_array().unwrap().len(), 1);

    // A deleted name can be used again, and starts empty.
    let reborn = server
        .create_topic(json!({"name": "orders", "partitions": 1}))
        .await;
    assert_eq!(reborn["partitions"].as_array().unwrap().len(), 1);

    server.stop().await;
}
