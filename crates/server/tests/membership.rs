//! Stream group membership over HTTP: members join, share the partitions, fetch and commit their own,
//! are fenced when stale, lose their partitions when silent, and leave.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{Answer, TestServer};
use reqwest::StatusCode;
use serde_json::{Value, json};

const G: &str = "/v1/groups/billing/topics/jobs";

/// (partition, offset) of each record of a fetch answer.
fn seen(a: &Answer) -> BTreeSet<(u64, u64)> {
    assert_eq!(a.status, StatusCode::OK, "{a:?}");
    a.body["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["partition"].as_u64().unwrap(), r["offset"].as_u64().unwrap()))
        .collect()
}

fn refused(a: &Answer, status: StatusCode, error: &str, field: &str) {
    assert_eq!(a.status, status, "{a:?}");
    assert_eq!(
        (a.body["error"].as_str(), a.body["field"].as_str()),
        (Some(error), Some(field)),
        "{a:?}"
    );
    assert!(a.body["message"].as_str().is_some_and(|m| !m.is_empty()), "{a:?}");
}

fn generation(a: &Answer) -> u64 {
    assert_eq!(a.status, StatusCode::OK, "{a:?}");
    a.body["generation"].as_u64().unwrap()
}

fn partitions(a: &Answer) -> Vec<u64> {
    a.body["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn members_share_partitions_are_fenced_expire_and_leave() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    server
        .create_topic(json!({"name": "jobs", "partitions": 4}))
        .await;
    let records: Vec<Value> = (0..12).map(|i| json!({"value": i, "partition": i % 4})).collect();
    server.publish("jobs", &Value::Array(records)).await;

    // a joins alone and gets everything; b joins: a new generation.
    let a = server
        .post(
            &format!("{G}/members"),
            &json!({"member_id": "a", "session_timeout_ms": 1000}),
        )
        .await;
    assert_eq!(
        a.body,
        json!({"member_id": "a", "generation": 1, "partitions": [0, 1, 2, 3]})
    );
    let b = server
        .post(
            &format!("{G}/members"),
            &json!({"member_id": "b", "session_timeout_ms": 60000}),
        )
        .await;
    assert_eq!(
        b.body,
        json!({"member_id": "b", "generation": 2, "partitions": [2, 3]})
    );

    // a's generation is stale until it heartbeats.
    let stale = server.get(&format!("{G}/records?member_id=a&generation=1")).await;
    refused(&stale, StatusCode::CONFLICT, "stale_generation", "generation");
    let a = server
        .post(&format!("{G}/members/a/heartbeat"), &json!({"generation": 1}))
        .await;
    assert_eq!(
        a.body,
        json!({"member_id": "a", "generation": 2, "partitions": [0, 1]})
    );

    // Each reads only its own partitions.
    let got = server
        .get(&format!("{G}/records?member_id=a&generation=2&max_records=100"))
        .await;
    let own = |parts: &[u64]| -> BTreeSet<(u64, u64)> {
        parts.iter().flat_map(|&p| (0..3).map(move |o| (p, o))).collect()
    };
    assert_eq!(seen(&got), own(&[0, 1]));
    let got = server
        .get(&format!("{G}/records?member_id=b&generation=2&max_records=100"))
        .await;
    assert_eq!(seen(&got), own(&[2, 3]));

    // Commits: own partitions, current generation; the group as a whole is off limits.
    let commit = |offsets: Value, member: Value| {
        let mut body = json!({"offsets": offsets});
        if let Value::Object(m) = member {
            body.as_object_mut().unwrap().extend(m);
        }
        body
    };
    let a_commit = json!({"member_id": "a", "generation": 2});
    let ok = server
        .post(
            &format!("{G}/offsets"),
            &commit(
                json!([{"partition": 0, "offset": 2}, {"partition": 1, "offset": 3}]),
                a_commit.clone(),
            ),
        )
        .await;
    assert_eq!(ok.status, StatusCode::NO_CONTENT, "{ok:?}");
    let foreign = server
        .post(
            &format!("{G}/offsets"),
            &commit(
                json!([{"partition": 1, "offset": 3}, {"partition": 2, "offset": 1}]),
                a_commit.clone(),
            ),
        )
        .await;
    refused(
        &foreign,
        StatusCode::CONFLICT,
        "partition_not_assigned",
        "offsets[1].partition",
    );
    let old = server
        .post(
            &format!("{G}/offsets"),
            &commit(
                json!([{"partition": 0, "offset": 3}]),
                json!({"member_id": "a", "generation": 1}),
            ),
        )
        .await;
    refused(&old, StatusCode::CONFLICT, "stale_generation", "generation");
    let whole = server
        .post(
            &format!("{G}/offsets"),
            &json!({"offsets": [{"partition": 0, "offset": 3}]}),
        )
        .await;
    refused(&whole, StatusCode::CONFLICT, "group_has_members", "member_id");
    let whole = server.get(&format!("{G}/records")).await;
    refused(&whole, StatusCode::CONFLICT, "group_has_members", "member_id");
    let seek = server
        .post(&format!("{G}/seek"), &json!({"to": "earliest"}))
        .await;
    refused(&seek, StatusCode::CONFLICT, "group_has_members", "member_id");

    // The offsets endpoint lists the members and their partitions.
    let status = server.get(&format!("{G}/offsets")).await;
    assert_eq!(status.status, StatusCode::OK, "{status:?}");
    assert_eq!(status.body["generation"], 2);
    assert_eq!(
        status.body["members"],
        json!([
            {"member_id": "a", "partitions": [0, 1], "session_timeout_ms": 1000},
            {"member_id": "b", "partitions": [2, 3], "session_timeout_ms": 60000},
        ])
    );
    assert_eq!(status.body["partitions"][0]["committed"], 2);
    assert_eq!(status.body["partitions"][2]["committed"], Value::Null);

    // a goes silent. b's long-poll ends with 409 once a's session is over, well before its 30 s wait.
    let url = server.url(&format!("{G}/records?member_id=b&generation=2&max_wait_ms=30000"));
    let client = server.client.clone();
    let woke = tokio::time::timeout(Duration::from_secs(20), async move {
        let resp = client.get(url).send().await.unwrap();
        (resp.status(), resp.json::<Value>().await.unwrap())
    })
    .await
    .expect("woken by the end of a's session");
    assert_eq!(woke.0, StatusCode::CONFLICT, "{woke:?}");
    assert_eq!(woke.1["error"], "stale_generation");

    // b learns it owns everything, and gets a's partitions again from a's commits.
    let b = server
        .post(&format!("{G}/members/b/heartbeat"), &json!({"generation": 2}))
        .await;
    assert_eq!((generation(&b), partitions(&b)), (3, vec![0, 1, 2, 3]));
    let got = server
        .get(&format!("{G}/records?member_id=b&generation=3&max_records=100"))
        .await;
    assert_eq!(seen(&got), BTreeSet::from([(0, 2)]));

    // a is gone: 404 until it joins again.
    let gone = server
        .post(&format!("{G}/members/a/heartbeat"), &json!({"generation": 2}))
        .await;
    refused(&gone, StatusCode::NOT_FOUND, "unknown_member", "member_id");
    let gone = server.get(&format!("{G}/records?member_id=a&generation=2")).await;
    refused(&gone, StatusCode::NOT_FOUND, "unknown_member", "member_id");

    // b leaves; then the group is the whole-group consumer again, from the committed offsets.
    let left = server.delete(&format!("{G}/members/b")).await;
    assert_eq!(left.status, StatusCode::NO_CONTENT, "{left:?}");
    let again = server.delete(&format!("{G}/members/b")).await;
    refused(&again, StatusCode::NOT_FOUND, "unknown_member", "member_id");
    let got = server.get(&format!("{G}/records?max_records=100")).await;
    assert_eq!(seen(&got).len(), 1 + 3 + 3);
    let status = server.get(&format!("{G}/offsets")).await;
    assert_eq!(
        (status.body["generation"].clone(), status.body["members"].clone()),
        (json!(4), json!([]))
    );

    server.stop().await;
}

#[tokio::test]
async fn membership_requests_are_parsed_strictly() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    server
        .create_topic(json!({"name": "jobs", "partitions": 2}))
        .await;

    // No body: a generated id and the default session.
    let m = server
        .post_raw(&format!("{G}/members"), None, Vec::<u8>::new())
        .await;
    assert_eq!(m.status, StatusCode::OK, "{m:?}");
    let id = m.body["member_id"].as_str().unwrap().to_string();
    assert!(id.starts_with("member-"), "{m:?}");
    let status = server.get(&format!("{G}/offsets")).await;
    assert_eq!(status.body["members"][0]["session_timeout_ms"], 10000);

    for (body, status, error, field) in [
        (
            json!({"session_timeout_ms": 999}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "out_of_range",
            "session_timeout_ms",
        ),
        (
            json!({"session_timeout_ms": 300001}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "out_of_range",
            "session_timeout_ms",
        ),
        (
            json!({"session_timeout_ms": "1000"}),
            StatusCode::BAD_REQUEST,
            "invalid_field",
            "session_timeout_ms",
        ),
        (
            json!({"member": "x"}),
            StatusCode::BAD_REQUEST,
            "invalid_field",
            "member",
        ),
        (
            json!({"member_id": "a/b"}),
            StatusCode::BAD_REQUEST,
            "invalid_name",
            "member_id",
        ),
    ] {
        let a = server.post(&format!("{G}/members"), &body).await;
        refused(&a, status, error, field);
    }
    let a = server
        .post_raw(&format!("{G}/members"), Some("application/json"), "{")
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{a:?}");
    assert_eq!(a.body["error"], "malformed_json");

    let hb = format!("{G}/members/{id}/heartbeat");
    refused(
        &server.post(&hb, &json!({})).await,
        StatusCode::BAD_REQUEST,
        "invalid_field",
        "generation",
    );
    refused(
        &server.post(&hb, &json!({"generation": -1})).await,
        StatusCode::BAD_REQUEST,
        "invalid_field",
        "generation",
    );
    refused(
        &server.post(&hb, &json!({"generation": 1, "extra": true})).await,
        StatusCode::BAD_REQUEST,
        "invalid_field",
        "extra",
    );
    refused(
        &server
            .post(
                &format!("{G}/members/nobody/heartbeat"),
                &json!({"generation": 1}),
            )
            .await,
        StatusCode::NOT_FOUND,
        "unknown_member",
        "member_id",
    );
    refused(
        &server
            .post("/v1/groups/billing/topics/nope/members", &json!({}))
            .await,
        StatusCode::NOT_FOUND,
        "topic_not_found",
        "topic",
    );

    // member_id and generation go together, in the query and in a commit.
    refused(
        &server.get(&format!("{G}/records?member_id={id}")).await,
        StatusCode::BAD_REQUEST,
        "invalid_parameter",
        "generation",
    );
    refused(
        &server.get(&format!("{G}/records?generation=1")).await,
        StatusCode::BAD_REQUEST,
        "invalid_parameter",
        "member_id",
    );
    refused(
        &server
            .get(&format!("{G}/records?member_id={id}&generation=x"))
            .await,
        StatusCode::BAD_REQUEST,
        "invalid_parameter",
        "generation",
    );
    refused(
        &server
            .post(
                &format!("{G}/offsets"),
                &json!({"offsets": [{"partition": 0, "offset": 0}], "member_id": id}),
            )
            .await,
        StatusCode::BAD_REQUEST,
        "invalid_field",
        "generation",
    );
    let ok = server
        .post(
            &format!("{G}/offsets"),
            &json!({"offsets": [{"partition": 0, "offset": 0}], "member_id": id, "generation": 1}),
        )
        .await;
    assert_eq!(ok.status, StatusCode::NO_CONTENT, "{ok:?}");

    server.stop().await;
}
