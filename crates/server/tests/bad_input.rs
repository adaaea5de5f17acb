//! The bad-input matrix: every kind of malformed or out-of-range request gets its exact 4xx status, a
//! JSON error naming the field, and changes nothing: every record accepted before is still there after.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::TestServer;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const JSON: Option<&str> = Some("application/json");
const NDJSON: Option<&str> = Some("application/x-ndjson");

struct Case {
    what: &'static str,
    method: Method,
    path: String,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    status: u16,
    error: &'static str,
    field: Option<&'static str>,
}

fn get(what: &'static str, path: impl Into<String>) -> Case {
    Case {
        what,
        method: Method::GET,
        path: path.into(),
        content_type: None,
        body: Vec::new(),
        status: 0,
        error: "",
        field: None,
    }
}

fn post(what: &'static str, path: impl Into<String>, body: impl Into<Vec<u8>>) -> Case {
    Case {
        method: Method::POST,
        content_type: JSON,
        body: body.into(),
        ..get(what, path)
    }
}

impl Case {
    fn content_type(self, content_type: Option<&'static str>) -> Self {
        Self { content_type, ..self }
    }
    fn method(self, method: Method) -> Self {
        Self { method, ..self }
    }
    fn expect(self, status: u16, error: &'static str, field: Option<&'static str>) -> Self {
        Self {
            status,
            error,
            field,
            ..self
        }
    }
}

const RECORDS: &str = "/v1/topics/good/records";
const COMMIT: &str = "/v1/groups/g/topics/good/offsets";
const SEEK: &str = "/v1/groups/g/topics/good/seek";

fn fetch(query: &str) -> String {
    format!("/v1/topics/good/partitions/0/records?{query}")
}

fn matrix() -> Vec<Case> {
    let long = "x".repeat(250);
    let max_bytes = 64;
    let too_big = format!(r#"{{"value": "{}"}}"#, "y".repeat(max_bytes));
    let body_over_limit = vec![b' '; ferry_server::BODY_LIMIT + 1];
    vec![
        // Publish bodies: syntax.
        post("truncated JSON", RECORDS, r#"{"value":"#).expect(400, "malformed_json", None),
        post("trailing garbage", RECORDS, r#"{"value":1} x"#).expect(400, "malformed_json", None),
        post("empty body", RECORDS, "").expect(400, "malformed_json", None),
        post("not JSON at all", RECORDS, "value=1").expect(400, "malformed_json", None),
        post(
            "NDJSON with a broken line",
            RECORDS,
            "{\"value\":1}\n{\"value\":\n",
        )
        .content_type(NDJSON)
        .expect(400, "malformed_json", None),
        // Publish bodies: shape.
        post("a JSON string body", RECORDS, r#""hello""#).expect(400, "invalid_field", None),
        post("key of the wrong type", RECORDS, r#"{"key": 5, "value": 1}"#).expect(
            400,
            "invalid_field",
            Some("records[0].key"),
        ),
        post(
            "timestamp of the wrong type in a batch",
            RECORDS,
            r#"[{"value":1},{"value":2},{"value":3,"timestamp":"now"}]"#,
        )
        .expect(400, "invalid_field", Some("records[2].timestamp")),
        post(
            "header value not a string",
            RECORDS,
            r#"{"value": 1, "headers": {"h": 1}}"#,
        )
        .expect(400, "invalid_field", Some("records[0].headers.h")),
        post(
            "headers not an object",
            RECORDS,
            r#"{"value": 1, "headers": ["h"]}"#,
        )
        .expect(400, "invalid_field", Some("records[0].headers")),
        post(
            "duplicate header",
            RECORDS,
            r#"{"value": 1, "headers": {"h": "1", "h": "2"}}"#,
        )
        .expect(400, "invalid_field", Some("records[0].headers")),
        post("missing value", RECORDS, r#"{"key": "k"}"#).expect(
            400,
            "invalid_field",
            Some("records[0].value"),
        ),
        post(
            "missing value in a batch",
            RECORDS,
            r#"[{"value":1},{"value":2},{"key":"k"}]"#,
        )
        .expect(400, "invalid_field", Some("records[2].value")),
        post("unknown field", RECORDS, r#"{"value": 1, "vaule": 2}"#).expect(
            400,
            "invalid_field",
            Some("records[0].vaule"),
        ),
        post("negative partition", RECORDS, r#"{"value": 1, "partition": -1}"#).expect(
            400,
            "invalid_field",
            Some("records[0].partition"),
        ),
        post(
            "NDJSON record of the wrong shape",
            RECORDS,
            "{\"value\":1}\n\n{\"value\":2,\"partition\":\"x\"}\n",
        )
        .content_type(NDJSON)
        .expect(400, "invalid_field", Some("records[1].partition")),
        // Publish: values the broker refuses; nothing of the request is written.
        post("unknown partition", RECORDS, r#"{"value": 1, "partition": 9}"#).expect(
            404,
            "partition_not_found",
            Some("records[0].partition"),
        ),
        post(
            "unknown partition in a batch",
            RECORDS,
            r#"[{"value":1,"partition":0},{"value":2,"partition":5}]"#,
        )
        .expect(404, "partition_not_found", Some("records[1].partition")),
        post("oversized record", "/v1/topics/small/records", too_big.clone()).expect(
            413,
            "record_too_large",
            Some("records[0]"),
        ),
        post(
            "oversized record in a batch",
            "/v1/topics/small/records",
            format!(r#"[{{"value":1}},{too_big}]"#),
        )
        .expect(413, "record_too_large", Some("records[1]")),
        post("oversized body", RECORDS, body_over_limit).expect(413, "body_too_large", None),
        post("unknown topic", "/v1/topics/nope/records", r#"{"value": 1}"#).expect(
            404,
            "topic_not_found",
            Some("topic"),
        ),
        post("text/plain", RECORDS, r#"{"value": 1}"#)
            .content_type(Some("text/plain"))
            .expect(415, "unsupported_media_type", Some("content-type")),
        post("form-encoded", RECORDS, "value=1")
            .content_type(Some("application/x-www-form-urlencoded"))
            .expect(415, "unsupported_media_type", Some("content-type")),
        // Topic names, in bodies and in paths.
        post("topic without a name", "/v1/topics", r#"{"partitions": 1}"#).expect(
            400,
            "invalid_field",
            Some("name"),
        ),
        post("name of the wrong type", "/v1/topics", r#"{"name": 5}"#).expect(
            400,
            "invalid_field",
            Some("name"),
        ),
        post("empty name", "/v1/topics", r#"{"name": ""}"#).expect(400, "invalid_name", Some("name")),
        post("name too long", "/v1/topics", format!(r#"{{"name": "{long}"}}"#)).expect(
            400,
            "invalid_name",
            Some("name"),
        ),
        post("name with a slash", "/v1/topics", r#"{"name": "a/b"}"#).expect(
            400,
            "invalid_name",
            Some("name"),
        ),
        post(
            "name with a control character",
            "/v1/topics",
            r#"{"name": "a\u0001b"}"#,
        )
        .expect(400, "invalid_name", Some("name")),
        post("name `..`", "/v1/topics", r#"{"name": ".."}"#).expect(400, "invalid_name", Some("name")),
        get("path name with %2F", "/v1/topics/a%2Fb").expect(400, "invalid_name", Some("topic")),
        post(
            "publish to a path name with %2F",
            "/v1/topics/a%2Fb/records",
            r#"{"value": 1}"#,
        )
        .expect(400, "invalid_name", Some("topic")),
        get("path name with a control character", "/v1/topics/a%01b").expect(
            400,
            "invalid_name",
            Some("topic"),
        ),
        get("path name with a space", "/v1/topics/a%20b").expect(400, "invalid_name", Some("topic")),
        get("path name too long", format!("/v1/topics/{long}")).expect(400, "invalid_name", Some("topic")),
        get("path name not UTF-8", "/v1/topics/a%FFb").expect(400, "invalid_parameter", Some("path")),
        get("unknown topic", "/v1/topics/nope").expect(404, "topic_not_found", Some("topic")),
        get("delete unknown topic", "/v1/topics/nope")
            .method(Method::DELETE)
            .expect(404, "topic_not_found", Some("topic")),
        // Topic config.
        post(
            "zero partitions",
            "/v1/topics",
            r#"{"name": "t", "partitions": 0}"#,
        )
        .expect(422, "invalid_config", Some("partitions")),
        post(
            "5000 partitions",
            "/v1/topics",
            r#"{"name": "t", "partitions": 5000}"#,
        )
        .expect(422, "invalid_config", Some("partitions")),
        post(
            "negative partitions",
            "/v1/topics",
            r#"{"name": "t", "partitions": -1}"#,
        )
        .expect(400, "invalid_field", Some("partitions")),
        post(
            "partitions as a string",
            "/v1/topics",
            r#"{"name": "t", "partitions": "3"}"#,
        )
        .expect(400, "invalid_field", Some("partitions")),
        post(
            "misspelt config key",
            "/v1/topics",
            r#"{"name": "t", "partitons": 3}"#,
        )
        .expect(400, "invalid_field", Some("partitons")),
        post(
            "unknown fsync policy",
            "/v1/topics",
            r#"{"name": "t", "fsync": "sometimes"}"#,
        )
        .expect(400, "invalid_field", Some("fsync")),
        post(
            "max_record_bytes over the limit",
            "/v1/topics",
            r#"{"name": "t", "max_record_bytes": 1000000000}"#,
        )
        .expect(422, "invalid_config", Some("max_record_bytes")),
        post("topic body not an object", "/v1/topics", r#"["good"]"#).expect(400, "invalid_field", None),
        post("existing topic", "/v1/topics", r#"{"name": "good"}"#).expect(409, "topic_exists", Some("name")),
        post("topic as NDJSON", "/v1/topics", r#"{"name": "t"}"#)
            .content_type(NDJSON)
            .expect(415, "unsupported_media_type", Some("content-type")),
        // Fetch parameters.
        get("missing offset", fetch("")).expect(400, "invalid_parameter", Some("offset")),
        get("negative offset", fetch("offset=-1")).expect(400, "invalid_parameter", Some("offset")),
        get("huge offset", fetch("offset=99999999999999999999999")).expect(
            400,
            "invalid_parameter",
            Some("offset"),
        ),
        get("non-numeric offset", fetch("offset=abc")).expect(400, "invalid_parameter", Some("offset")),
        get("fractional offset", fetch("offset=1.5")).expect(400, "invalid_parameter", Some("offset")),
        get("offset past the end", fetch("offset=1000")).expect(422, "offset_out_of_range", Some("offset")),
        get("largest offset", fetch("offset=18446744073709551615")).expect(
            422,
            "offset_out_of_range",
            Some("offset"),
        ),
        get("zero max_records", fetch("offset=0&max_records=0")).expect(
            422,
            "out_of_range",
            Some("max_records"),
        ),
        get("max_wait_ms too long", fetch("offset=0&max_wait_ms=3600000")).expect(
            422,
            "out_of_range",
            Some("max_wait_ms"),
        ),
        get("max_bytes not a number", fetch("offset=0&max_bytes=lots")).expect(
            400,
            "invalid_parameter",
            Some("max_bytes"),
        ),
        get("unknown parameter", fetch("offset=0&from=earliest")).expect(
            400,
            "invalid_parameter",
            Some("from"),
        ),
        get("repeated parameter", fetch("offset=0&offset=1")).expect(
            400,
            "invalid_parameter",
            Some("offset"),
        ),
        get(
            "non-numeric partition",
            "/v1/topics/good/partitions/x/records?offset=0",
        )
        .expect(400, "invalid_parameter", Some("partition")),
        get(
            "huge partition",
            "/v1/topics/good/partitions/99999999999/records?offset=0",
        )
        .expect(400, "invalid_parameter", Some("partition")),
        get(
            "unknown partition",
            "/v1/topics/good/partitions/7/records?offset=0",
        )
        .expect(404, "partition_not_found", Some("partition")),
        get(
            "fetch from an unknown topic",
            "/v1/topics/nope/partitions/0/records?offset=0",
        )
        .expect(404, "topic_not_found", Some("topic")),
        // Stream groups.
        get("offsets of an unknown group", COMMIT).expect(404, "group_not_found", Some("group")),
        get("group name with a space", "/v1/groups/a%20b/topics/good/offsets").expect(
            400,
            "invalid_name",
            Some("group"),
        ),
        get(
            "group fetch from an unknown topic",
            "/v1/groups/g/topics/nope/records",
        )
        .expect(404, "topic_not_found", Some("topic")),
        get(
            "group fetch with a bad max_records",
            "/v1/groups/g/topics/good/records?max_records=ten",
        )
        .expect(400, "invalid_parameter", Some("max_records")),
        post("commit without offsets", COMMIT, "{}").expect(400, "invalid_field", Some("offsets")),
        post("commit of nothing", COMMIT, r#"{"offsets": []}"#).expect(422, "out_of_range", Some("offsets")),
        post(
            "commit of a negative offset",
            COMMIT,
            r#"{"offsets": [{"partition": 0, "offset": -1}]}"#,
        )
        .expect(400, "invalid_field", Some("offsets[0].offset")),
        post(
            "commit with an unknown key",
            COMMIT,
            r#"{"offsets": [{"partition": 0, "offset": 0, "x": 1}]}"#,
        )
        .expect(400, "invalid_field", Some("offsets[0].x")),
        post(
            "commit to an unknown partition",
            COMMIT,
            r#"{"offsets": [{"partition": 9, "offset": 0}]}"#,
        )
        .expect(404, "partition_not_found", Some("offsets[0].partition")),
        post(
            "commit past the end",
            COMMIT,
            r#"{"offsets": [{"partition": 0, "offset": 0}, {"partition": 1, "offset": 999}]}"#,
        )
        .expect(422, "offset_out_of_range", Some("offsets[1].offset")),
        post(
            "commit with a bad group name",
            "/v1/groups/a%2Fb/topics/good/offsets",
            r#"{"offsets": [{"partition": 0, "offset": 0}]}"#,
        )
        .expect(400, "invalid_name", Some("group")),
        post("seek without a target", SEEK, "{}").expect(400, "invalid_field", Some("to")),
        post("seek to nowhere", SEEK, r#"{"to": "middle"}"#).expect(400, "invalid_field", Some("to")),
        post("seek to a negative offset", SEEK, r#"{"to": {"offset": -3}}"#).expect(
            400,
            "invalid_field",
            Some("to.offset"),
        ),
        post("seek past the end", SEEK, r#"{"to": {"offset": 999}}"#).expect(
            422,
            "offset_out_of_range",
            Some("to.offset"),
        ),
        post(
            "seek on an unknown partition",
            SEEK,
            r#"{"to": "earliest", "partition": 8}"#,
        )
        .expect(404, "partition_not_found", Some("partition")),
        // Routes.
        get("unknown route", "/v1/nope").expect(404, "route_not_found", None),
        post(
            "publish to an empty topic name",
            "/v1/topics//records",
            r#"{"value": 1}"#,
        )
        .expect(400, "invalid_name", Some("topic")),
        get("wrong method on a route", "/v1/topics/good/records").expect(405, "method_not_allowed", None),
        get("wrong method", "/v1/topics")
            .method(Method::PUT)
            .expect(405, "method_not_allowed", None),
    ]
}

async fn everything(server: &TestServer) -> Vec<Vec<Value>> {
    vec![
        server.fetch("good", 0, 0).await,
        server.fetch("good", 1, 0).await,
        server.fetch("small", 0, 0).await,
    ]
}

#[tokio::test]
async fn bad_input_gets_the_right_4xx_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    server
        .create_topic(json!({"name": "good", "partitions": 2}))
        .await;
    server
        .create_topic(json!({"name": "small", "max_record_bytes": 64}))
        .await;
    let batch: Vec<Value> = (0..10)
        .map(|i| json!({"key": format!("k{i}"), "headers": {"n": i.to_string()}, "value": {"i": i}}))
        .collect();
    server.publish("good", &Value::Array(batch)).await;
    server
        .publish("good", &json!({"value": "p1", "partition": 1}))
        .await;
    server.publish("small", &json!({"value": "tiny"})).await;
    let before = everything(&server).await;
    assert_eq!(before.iter().map(Vec::len).sum::<usize>(), 12);

    let mut failures = Vec::new();
    for case in matrix() {
        let mut req = server.client.request(case.method.clone(), server.url(&case.path));
        if let Some(ct) = case.content_type {
            req = req.header("content-type", ct);
        }
        if case.method == Method::POST {
            req = req.body(case.body);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let content_type = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string());
        let text = resp.text().await.unwrap();
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let ok = status == StatusCode::from_u16(case.status).unwrap()
            && content_type.as_deref() == Some("application/json")
            && body["error"] == case.error
            && body["message"].as_str().is_some_and(|m| !m.is_empty())
            && body["field"] == case.field.map_or(Value::Null, Value::from)
            && body.as_object().is_some_and(|o| o.len() == 3);
        if !ok {
            failures.push(format!(
                "{} ({} {}): expected {} {} {:?}, got {status} {content_type:?} {text}",
                case.what, case.method, case.path, case.status, case.error, case.field
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of the matrix failed:\n{}",
        failures.len(),
        failures.join("\n")
    );

    // Nothing was written, nothing was lost, and the server still serves.
    assert_eq!(everything(&server).await, before);
    assert_eq!(
        server.get("/v1/topics").await.body["topics"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    server.stop().await;
}
