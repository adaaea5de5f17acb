//! Publishing (one record, a batch, NDJSON) and fetching back, byte for byte; long-poll.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::TestServer;
use ferry_broker::{Broker, Header, Produce, partition_for_key};
use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

/// A fetched record with its JSON parts kept as the exact text the server sent.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Fetched {
    topic: String,
    partition: u32,
    offset: u64,
    timestamp: i64,
    key: Option<String>,
    headers: Box<RawValue>,
    value: Box<RawValue>,
}

#[derive(Debug, Deserialize)]
struct Records {
    records: Vec<Fetched>,
}

async fn fetch_raw(server: &TestServer, topic: &str, partition: u32, offset: u64) -> Vec<Fetched> {
    let a = server
        .get(&format!(
            "/v1/topics/{topic}/partitions/{partition}/records?offset={offset}"
        ))
        .await;
    assert_eq!(a.status, StatusCode::OK, "{a:?}");
    serde_json::from_str::<Records>(&a.text).unwrap().records
}

#[tokio::test]
async fn records_come_back_byte_for_byte_in_every_body_form() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    server
        .create_topic(json!({"name": "events", "partitions": 2}))
        .await;

    // One record, as a raw body so its exact text is known.
    let value = r#"{"b": [1, 2.50, "x\u00e9"], "a": null, "n": -0.0e5}"#;
    let single = format!(
        r#"{{"key": "user-1", "headers": {{"source": "web", "trace": "abc"}}, "value": {value}, "timestamp": 1700000000000}}"#
    );
    let a = server
        .post_raw("/v1/topics/events/records", Some("application/json"), single)
        .await;
    assert_eq!(a.status, StatusCode::OK, "{a:?}");
    let p = partition_for_key(b"user-1", 2);
    assert_eq!(common::offsets(&a.body), [(u64::from(p), 0)]);

    let got = fetch_raw(&server, "events", p, 0).await;
    assert_eq!(got.len(), 1);
    let r = &got[0];
    assert_eq!((r.topic.as_str(), r.partition, r.offset), ("events", p, 0));
    assert_eq!(r.timestamp, 1_700_000_000_000);
    assert_eq!(r.key.as_deref(), Some("user-1"));
    assert_eq!(r.headers.get(), r#"{"source":"web","trace":"abc"}"#);
    assert_eq!(r.value.get(), value);

    // A batch: offsets in request order, across partitions.
    let batch = r#"[
        {"value": "text", "partition": 0},
        {"value": 42, "partition": 1, "headers": {"z": "1", "a": "2"}},
        {"value": [true, false], "partition": 0, "key": null},
        {"value": {"deep": {"er": [{}]}}, "partition": 1}
    ]"#;
    let a = server
        .post_raw(
            "/v1/topics/events/records",
            Some("application/json; charset=utf-8"),
            batch,
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{a:?}");
    let first0 = u64::from(p == 0);
    let first1 = u64::from(p == 1);
    assert_eq!(
        common::offsets(&a.body),
        [(0, first0), (1, first1), (0, first0 + 1), (1, first1 + 1)]
    );

    // NDJSON, blank lines and CRLF allowed.
    let ndjson =
        "{\"value\":{\"line\":1},\"partition\":1}\r\n\n{\"value\":\"two\",\"partition\":1,\"key\":\"k2\"}\n";
    let a = server
        .post_raw("/v1/topics/events/records", Some("application/x-ndjson"), ndjson)
        .await;
    assert_eq!(a.status, StatusCode::OK, "{a:?}");
    assert_eq!(common::offsets(&a.body), [(1, first1 + 2), (1, first1 + 3)]);

    let p0 = fetch_raw(&server, "events", 0, first0).await;
    let values: Vec<_> = p0.iter().map(|r| r.value.get()).collect();
    assert_eq!(values, [r#""text""#, "[true, false]"]);
    assert!(p0.iter().all(|r| r.key.is_none() && r.headers.get() == "{}"));
    let p1 = fetch_raw(&server, "events", 1, first1).await;
    let values: Vec<_> = p1.iter().map(|r| r.value.get()).collect();
    assert_eq!(
        values,
        ["42", r#"{"deep": {"er": [{}]}}"#, r#"{"line":1}"#, r#""two""#]
    );
    assert_eq!(
        p1[0].headers.get(),
        r#"{"z":"1","a":"2"}"#,
        "header order is kept"
    );
    assert_eq!(p1[3].key.as_deref(), Some("k2"));
    // A record without a timestamp gets the time it was published.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    assert!((now - p1[0].timestamp).abs() < 60_000, "{}", p1[0].timestamp);

    // Limits: max_records, and reading from the middle.
    let a = server
        .get(&format!(
            "/v1/topics/events/partitions/1/records?offset={}&max_records=1",
            first1 + 1
        ))
        .await;
    let records = a.body["records"].as_array().unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["offset"], first1 + 1);
    assert_eq!(records[0]["value"], json!({"deep": {"er": [{}]}}));
    // At the end: nothing, at once.
    let end = server.fetch("events", 1, first1 + 4).await;
    assert!(end.is_empty());

    server.stop().await;
}

#[tokio::test]
async fn values_that_are_not_json_come_back_as_text_or_base64() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(dir.path()).unwrap();
    let server = TestServer::serve(broker.clone()).await;
    server.create_topic(json!({"name": "raw"})).await;
    // Only another producer than this API can store bytes that are not JSON.
    let produce = |value: &'static [u8], key: Option<&'static [u8]>, header: &'static [u8]| Produce {
        key: key.map(Bytes::from_static),
        headers: vec![Header {
            key: "h".into(),
            value: Bytes::from_static(header),
        }],
        value: Bytes::from_static(value),
        ..Produce::default()
    };
    broker
        .publish(
            "raw",
            vec![
                produce(b"plain text", Some(b"k"), b"v"),
                produce(&[0, 0xff, 0x10], Some(&[0xfe]), &[0xff]),
                produce(br#""plain text""#, None, b"v"),
            ],
        )
        .await
        .unwrap();
    let records = server.fetch("raw", 0, 0).await;
    // UTF-8 that is not JSON: `value_text`, never `value`, so it cannot pass for a stored JSON string.
    assert_eq!(records[0]["value_text"], "plain text");
    assert!(records[0].get("value").is_none() && records[0].get("value_base64").is_none());
    assert_eq!(records[0]["key"], "k");
    assert_eq!(records[0]["headers"], json!({"h": "v"}));
    assert_eq!(records[1]["value_base64"], "AP8Q");
    assert_eq!(records[1]["key_base64"], "/g==");
    assert_eq!(records[1]["headers"], json!({"h": {"base64": "/w=="}}));
    assert!(records[1].get("value").is_none() && records[1].get("key").is_none());
    assert!(records[1].get("value_text").is_none());
    // The JSON string of the same text: `value`.
    assert_eq!(records[2]["value"], "plain text");
    assert!(records[2].get("value_text").is_none());
    drop(broker);
    server.stop().await;
}

#[tokio::test]
async fn a_long_poll_is_woken_by_a_publish() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    server.create_topic(json!({"name": "waits"})).await;

    // With nothing to read, a short long-poll ends empty after its wait.
    let started = Instant::now();
    let a = server
        .get("/v1/topics/waits/partitions/0/records?offset=0&max_wait_ms=300")
        .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.body, json!({"records": []}));
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );

    let url = server.url("/v1/topics/waits/partitions/0/records?offset=0&max_wait_ms=30000");
    let client = server.client.clone();
    let started = Instant::now();
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
    // Whether the publish lands before or during the wait, the fetch must return it, not wait 30 s.
    server
        .publish("waits", &json!({"value": {"hello": "poll"}}))
        .await;
    let got = tokio::time::timeout(Duration::from_secs(20), waiting)
        .await
        .expect("woken well before 30 s")
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(got["records"][0]["value"], json!({"hello": "poll"}));
    assert_eq!(got["records"][0]["offset"], 0);

    server.stop().await;
}
