//! Subscriptions over HTTP: two filtered subscriptions on one topic (a queue on a body field, a stream
//! on a header) each get exactly their records; list, re-create, conflict, delete, bad policies.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Answer, TestServer};
use reqwest::StatusCode;
use serde_json::{Value, json};

const SUBS: &str = "/v1/topics/orders/subscriptions";

fn error(a: &Answer) -> (u16, &str, Option<&str>) {
    (
        a.status.as_u16(),
        a.body["error"].as_str().unwrap_or_default(),
        a.body["field"].as_str(),
    )
}

/// The `id` of each record's value, sorted.
fn ids(a: &Answer) -> Vec<u64> {
    assert_eq!(a.status, StatusCode::OK, "{a:?}");
    let mut ids: Vec<u64> = a.body["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["value"]["id"].as_u64().unwrap())
        .collect();
    ids.sort_unstable();
    ids
}

#[tokio::test]
async fn each_subscription_gets_exactly_the_records_its_policy_matches() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    server
        .create_topic(json!({"name": "orders", "partitions": 2}))
        .await;

    // A queue subscription on a numeric range of a nested body field.
    let big = json!({
        "name": "big-orders",
        "filter_policy": {"order": {"total": [{"numeric": [">=", 100, "<", 1000]}]}},
        "queue": {"max_deliveries": 3},
    });
    let a = server.post(SUBS, &big).await;
    assert_eq!(a.status, StatusCode::CREATED, "{a:?}");
    assert_eq!(a.body["topic"], "orders");
    assert_eq!(a.body["name"], "big-orders");
    assert_eq!(a.body["kind"], "queue");
    assert_eq!(a.body["filter_scope"], "body");
    assert_eq!(a.body["filter_policy"], big["filter_policy"]);
    assert_eq!(a.body["queue"]["max_deliveries"], 3);
    // The same again is fine; the name with other settings is not.
    let a = server.post(SUBS, &big).await;
    assert_eq!(a.status, StatusCode::OK, "{a:?}");
    let a = server
        .post(SUBS, &json!({"name": "big-orders", "kind": "stream"}))
        .await;
    assert_eq!(error(&a), (409, "subscription_exists", Some("name")), "{a:?}");
    // Its queue group exists with its settings.
    let a = server.get("/v1/queues/big-orders/topics/orders").await;
    assert_eq!(a.status, StatusCode::OK, "{a:?}");
    assert_eq!(a.body["config"]["max_deliveries"], 3);

    // A stream subscription on a header prefix.
    let eu = json!({
        "name": "eu",
        "kind": "stream",
        "filter_policy": {"region": [{"prefix": "eu-"}]},
        "filter_scope": "headers",
    });
    let a = server.post(SUBS, &eu).await;
    assert_eq!(a.status, StatusCode::CREATED, "{a:?}");
    assert_eq!(
        a.body,
        json!({"topic": "orders", "name": "eu", "kind": "stream",
               "filter_policy": {"region": [{"prefix": "eu-"}]}, "filter_scope": "headers"}),
        "a stream subscription has no queue settings"
    );

    // A mix: totals below, at the bounds of, inside and above the range, or elsewhere in the body; regions
    // in and out of the EU, in another case, missing, or in the body only.
    let totals = [5.0, 100.0, 250.5, 999.99, 1000.0, 40.0, 120.0, 2000.0];
    let regions = [
        Some("eu-west"),
        Some("us-east"),
        Some("eu-central"),
        None,
        Some("eu-west"),
        Some("ap-south"),
        Some("EU-north"),
        Some("eu-"),
    ];
    let mut records: Vec<Value> = totals
        .iter()
        .zip(regions)
        .enumerate()
        .map(|(i, (total, region))| {
            let headers = region.map_or(json!({}), |r| json!({"region": r}));
            json!({"headers": headers, "value": {"id": i, "order": {"total": total}}})
        })
        .collect();
    records.push(json!({"value": {"id": 8, "region": "eu-west", "order": {}}}));
    records.push(json!({"value": {"id": 9, "total": 500}}));
    server.publish("orders", &Value::Array(records)).await;

    // The queue subscription: totals in [100, 1000).
    let a = server
        .post(
            "/v1/queues/big-orders/topics/orders/receive",
            &json!({"max_records": 100}),
        )
        .await;
    assert_eq!(ids(&a), [1, 2, 3, 6]);
    // Non-matching records are done for the group without a delivery: nothing is left once these are acked.
    let acks: Vec<Value> = a.body["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| json!({"partition": r["partition"], "offset": r["offset"]}))
        .collect();
    let a = server
        .post(
            "/v1/queues/big-orders/topics/orders/ack",
            &json!({"records": acks}),
        )
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{a:?}");
    let a = server.get("/v1/queues/big-orders/topics/orders").await;
    assert_eq!((&a.body["depth"], &a.body["in_flight"]), (&json!(0), &json!(0)));

    // The stream subscription: a region header starting with `eu-` (case matters).
    let a = server
        .get("/v1/groups/eu/topics/orders/records?max_records=100")
        .await;
    assert_eq!(ids(&a), [0, 2, 4, 7]);
    let a = server.get("/v1/groups/eu/topics/orders/records").await;
    assert_eq!(ids(&a), Vec::<u64>::new());

    // Listed by name.
    let a = server.get(SUBS).await;
    assert_eq!(a.status, StatusCode::OK, "{a:?}");
    let names: Vec<&str> = a.body["subscriptions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["big-orders", "eu"]);

    // Deleted: gone from the list, its queue group gone, a second delete is 404.
    let a = server.delete(&format!("{SUBS}/big-orders")).await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{a:?}");
    let a = server.get(SUBS).await;
    assert_eq!(a.body["subscriptions"].as_array().unwrap().len(), 1);
    assert_eq!(a.body["subscriptions"][0]["name"], "eu");
    let a = server.get("/v1/queues/big-orders/topics/orders").await;
    assert_eq!(error(&a), (404, "group_not_found", Some("group")), "{a:?}");
    let a = server.delete(&format!("{SUBS}/big-orders")).await;
    assert_eq!(error(&a), (404, "subscription_not_found", Some("name")), "{a:?}");

    // Bad policies: 422 naming the key, down to the condition; nothing is created.
    for (policy, scope, field) in [
        (json!({"price": "cheap"}), "body", "filter_policy.price"),
        (
            json!({"region": ["eu", {"prefix": 5}]}),
            "headers",
            "filter_policy.region[1]",
        ),
        (
            json!({"order": {"total": [{"numeric": ["~", 1]}]}}),
            "body",
            "filter_policy.order.total[0]",
        ),
        (json!({"region": {"x": ["y"]}}), "headers", "filter_policy.region"),
        (json!({}), "body", "filter_policy"),
        (json!(["region"]), "body", "filter_policy"),
    ] {
        let a = server
            .post(
                SUBS,
                &json!({"name": "bad", "filter_policy": policy, "filter_scope": scope}),
            )
            .await;
        assert_eq!(
            error(&a),
            (422, "invalid_filter_policy", Some(field)),
            "{policy}: {a:?}"
        );
        assert!(
            a.body["message"].as_str().unwrap().contains("filter_policy"),
            "{a:?}"
        );
    }
    let a = server.get(SUBS).await;
    assert_eq!(a.body["subscriptions"].as_array().unwrap().len(), 1);

    server.stop().await;
}
