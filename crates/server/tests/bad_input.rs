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
const MEMBERS: &str = "/v1/groups/g/topics/good/members";
const HEARTBEAT: &str = "/v1/groups/g/topics/good/members/m/heartbeat";

const QUEUE: &str = "/v1/queues/q/topics/good";
const RECEIVE: &str = "/v1/queues/q/topics/good/receive";
const ACK: &str = "/v1/queues/q/topics/good/ack";
const NACK: &str = "/v1/queues/q/topics/good/nack";
const EXTEND: &str = "/v1/queues/q/topics/good/extend";
const SUBS: &str = "/v1/topics/good/subscriptions";

fn put(what: &'static str, path: impl Into<String>, body: impl Into<Vec<u8>>) -> Case {
    post(what, path, body).method(Method::PUT)
}

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
        // Queue groups: settings.
        put("queue settings truncated", QUEUE, r#"{"max_deliveries":"#).expect(400, "malformed_json", None),
        put("queue settings not an object", QUEUE, "[]").expect(400, "invalid_field", None),
        put("misspelt queue key", QUEUE, r#"{"max_delivery": 3}"#).expect(
            400,
            "invalid_field",
            Some("max_delivery"),
        ),
        put("queue key of the wrong type", QUEUE, r#"{"max_deliveries": "3"}"#).expect(
            400,
            "invalid_field",
            Some("max_deliveries"),
        ),
        put(
            "negative visibility timeout",
            QUEUE,
            r#"{"visibility_timeout_ms": -1}"#,
        )
        .expect(400, "invalid_field", Some("visibility_timeout_ms")),
        put("zero max_deliveries", QUEUE, r#"{"max_deliveries": 0}"#).expect(
            422,
            "invalid_config",
            Some("max_deliveries"),
        ),
        put("max_in_flight too large", QUEUE, r#"{"max_in_flight": 1000000}"#).expect(
            422,
            "invalid_config",
            Some("max_in_flight"),
        ),
        put(
            "bad dead-letter topic name",
            QUEUE,
            r#"{"dead_letter_topic": "a/b"}"#,
        )
        .expect(400, "invalid_name", Some("dead_letter_topic")),
        put(
            "queue group with other settings",
            QUEUE,
            r#"{"max_deliveries": 9}"#,
        )
        .expect(409, "queue_exists", Some("group")),
        put(
            "queue group on an unknown topic",
            "/v1/queues/q/topics/nope",
            "{}",
        )
        .expect(404, "topic_not_found", Some("topic")),
        put(
            "queue group name with a space",
            "/v1/queues/a%20b/topics/good",
            "{}",
        )
        .expect(400, "invalid_name", Some("group")),
        put("queue settings as NDJSON", QUEUE, "{}")
            .content_type(NDJSON)
            .expect(415, "unsupported_media_type", Some("content-type")),
        get("unknown queue group", "/v1/queues/nope/topics/good").expect(
            404,
            "group_not_found",
            Some("group"),
        ),
        get("queue group of an unknown topic", "/v1/queues/q/topics/nope").expect(
            404,
            "topic_not_found",
            Some("topic"),
        ),
        // Queue groups: receive.
        post("receive, truncated", RECEIVE, r#"{"max_records":"#).expect(400, "malformed_json", None),
        post("receive, not an object", RECEIVE, "[]").expect(400, "invalid_field", None),
        post("receive of zero records", RECEIVE, r#"{"max_records": 0}"#).expect(
            422,
            "out_of_range",
            Some("max_records"),
        ),
        post("receive of 100000 records", RECEIVE, r#"{"max_records": 100000}"#).expect(
            422,
            "out_of_range",
            Some("max_records"),
        ),
        post("receive of -1 records", RECEIVE, r#"{"max_records": -1}"#).expect(
            400,
            "invalid_field",
            Some("max_records"),
        ),
        post(
            "receive, max_records a string",
            RECEIVE,
            r#"{"max_records": "10"}"#,
        )
        .expect(400, "invalid_field", Some("max_records")),
        post("receive, wait too long", RECEIVE, r#"{"max_wait_ms": 3600000}"#).expect(
            422,
            "out_of_range",
            Some("max_wait_ms"),
        ),
        post(
            "receive, zero visibility timeout",
            RECEIVE,
            r#"{"visibility_timeout_ms": 0}"#,
        )
        .expect(422, "out_of_range", Some("visibility_timeout_ms")),
        post("receive, misspelt key", RECEIVE, r#"{"max_record": 5}"#).expect(
            400,
            "invalid_field",
            Some("max_record"),
        ),
        post(
            "receive from an unknown topic",
            "/v1/queues/q/topics/nope/receive",
            "{}",
        )
        .expect(404, "topic_not_found", Some("topic")),
        post(
            "receive with a bad group name",
            "/v1/queues/a%2Fb/topics/good/receive",
            "{}",
        )
        .expect(400, "invalid_name", Some("group")),
        // Queue groups: ack, nack, extend.
        post("ack without records", ACK, "{}").expect(400, "invalid_field", Some("records")),
        post("ack of nothing", ACK, r#"{"records": []}"#).expect(422, "out_of_range", Some("records")),
        post(
            "ack of a negative offset",
            ACK,
            r#"{"records": [{"partition": 0, "offset": -1}]}"#,
        )
        .expect(400, "invalid_field", Some("records[0].offset")),
        post(
            "ack without an offset",
            ACK,
            r#"{"records": [{"partition": 0, "offset": 0}, {"partition": 0}]}"#,
        )
        .expect(400, "invalid_field", Some("records[1].offset")),
        post(
            "ack with an unknown key",
            ACK,
            r#"{"records": [{"partition": 0, "offset": 0, "lease": 1}]}"#,
        )
        .expect(400, "invalid_field", Some("records[0].lease")),
        post("ack of a record as an array", ACK, r#"{"records": [[0, 0]]}"#).expect(
            400,
            "invalid_field",
            Some("records[0]"),
        ),
        post(
            "ack body as an array",
            ACK,
            r#"[[{"partition": 0, "offset": 0}]]"#,
        )
        .expect(400, "invalid_field", None),
        post(
            "ack of a record not leased",
            ACK,
            r#"{"records": [{"partition": 0, "offset": 0}]}"#,
        )
        .expect(409, "not_leased", Some("records[0]")),
        post(
            "ack on an unknown partition",
            ACK,
            r#"{"records": [{"partition": 9, "offset": 0}]}"#,
        )
        .expect(404, "partition_not_found", Some("records[0].partition")),
        post(
            "ack for an unknown group",
            "/v1/queues/nope/topics/good/ack",
            r#"{"records": [{"partition": 0, "offset": 0}]}"#,
        )
        .expect(404, "group_not_found", Some("group")),
        post(
            "nack with a negative delay",
            NACK,
            r#"{"records": [{"partition": 0, "offset": 0}], "delay_ms": -5}"#,
        )
        .expect(400, "invalid_field", Some("delay_ms")),
        post(
            "nack with a delay of years",
            NACK,
            r#"{"records": [{"partition": 0, "offset": 0}], "delay_ms": 100000000000}"#,
        )
        .expect(422, "out_of_range", Some("delay_ms")),
        post(
            "nack of a record not leased",
            NACK,
            r#"{"records": [{"partition": 1, "offset": 0}]}"#,
        )
        .expect(409, "not_leased", Some("records[0]")),
        post(
            "extend without a timeout",
            EXTEND,
            r#"{"records": [{"partition": 0, "offset": 0}]}"#,
        )
        .expect(400, "invalid_field", Some("visibility_timeout_ms")),
        post(
            "extend by zero",
            EXTEND,
            r#"{"records": [{"partition": 0, "offset": 0}], "visibility_timeout_ms": 0}"#,
        )
        .expect(422, "out_of_range", Some("visibility_timeout_ms")),
        post(
            "extend of a record not leased",
            EXTEND,
            r#"{"records": [{"partition": 0, "offset": 3}], "visibility_timeout_ms": 1000}"#,
        )
        .expect(409, "not_leased", Some("records[0]")),
        // Subscriptions.
        post("subscription, truncated", SUBS, r#"{"name":"#).expect(400, "malformed_json", None),
        post("subscription without a name", SUBS, r#"{"kind": "queue"}"#).expect(
            400,
            "invalid_field",
            Some("name"),
        ),
        post("subscription name of the wrong type", SUBS, r#"{"name": 7}"#).expect(
            400,
            "invalid_field",
            Some("name"),
        ),
        post("subscription name with a space", SUBS, r#"{"name": "a b"}"#).expect(
            400,
            "invalid_name",
            Some("name"),
        ),
        post(
            "misspelt subscription key",
            SUBS,
            r#"{"name": "s2", "filtr_policy": {"a": ["b"]}}"#,
        )
        .expect(400, "invalid_field", Some("filtr_policy")),
        post("unknown kind", SUBS, r#"{"name": "s2", "kind": "topic"}"#).expect(
            400,
            "invalid_field",
            Some("kind"),
        ),
        post("unknown scope", SUBS, r#"{"name": "s2", "filter_scope": "key"}"#).expect(
            400,
            "invalid_field",
            Some("filter_scope"),
        ),
        post(
            "misspelt queue key in a subscription",
            SUBS,
            r#"{"name": "s2", "queue": {"max_deliveris": 1}}"#,
        )
        .expect(400, "invalid_field", Some("queue.max_deliveris")),
        post(
            "subscription queue settings as an array",
            SUBS,
            r#"{"name": "s2", "queue": [1000]}"#,
        )
        .expect(400, "invalid_field", Some("queue")),
        post(
            "negative max_in_flight in a subscription",
            SUBS,
            r#"{"name": "s2", "queue": {"max_in_flight": -1}}"#,
        )
        .expect(400, "invalid_field", Some("queue.max_in_flight")),
        post(
            "zero max_in_flight in a subscription",
            SUBS,
            r#"{"name": "s2", "queue": {"max_in_flight": 0}}"#,
        )
        .expect(422, "invalid_config", Some("queue.max_in_flight")),
        post(
            "queue settings for a stream subscription",
            SUBS,
            r#"{"name": "s2", "kind": "stream", "queue": {}}"#,
        )
        .expect(400, "invalid_field", Some("queue")),
        post(
            "filter policy with a bare value",
            SUBS,
            r#"{"name": "s2", "filter_policy": {"price": "cheap"}}"#,
        )
        .expect(422, "invalid_filter_policy", Some("filter_policy.price")),
        post(
            "filter policy with a bad nested condition",
            SUBS,
            r#"{"name": "s2", "filter_policy": {"order": {"total": [1, {"numeric": [">"]}]}}}"#,
        )
        .expect(422, "invalid_filter_policy", Some("filter_policy.order.total[1]")),
        post(
            "filter policy not an object",
            SUBS,
            r#"{"name": "s2", "filter_policy": "price > 5"}"#,
        )
        .expect(422, "invalid_filter_policy", Some("filter_policy")),
        post(
            "subscription on an unknown topic",
            "/v1/topics/nope/subscriptions",
            r#"{"name": "s2"}"#,
        )
        .expect(404, "topic_not_found", Some("topic")),
        post(
            "subscription name taken with other settings",
            SUBS,
            r#"{"name": "sub", "kind": "queue"}"#,
        )
        .expect(409, "subscription_exists", Some("name")),
        post(
            "subscription named as a queue group with other settings",
            SUBS,
            r#"{"name": "q", "queue": {"max_deliveries": 9}}"#,
        )
        .expect(409, "queue_exists", Some("name")),
        get(
            "subscriptions of an unknown topic",
            "/v1/topics/nope/subscriptions",
        )
        .expect(404, "topic_not_found", Some("topic")),
        get("delete an unknown subscription", format!("{SUBS}/nope"))
            .method(Method::DELETE)
            .expect(404, "subscription_not_found", Some("name")),
        get("delete a subscription with a bad name", format!("{SUBS}/a%20b"))
            .method(Method::DELETE)
            .expect(400, "invalid_name", Some("name")),
        get("get one subscription", format!("{SUBS}/sub")).expect(405, "method_not_allowed", None),
        // A JSON array where an object belongs: serde would read it as the struct's fields in order.
        post("publish of a record as an array", RECORDS, r#"[[null, null, 1]]"#).expect(
            400,
            "invalid_field",
            Some("records[0]"),
        ),
        post(
            "publish of an NDJSON record as an array",
            RECORDS,
            "{\"value\":1}\n[null, null, 1]\n",
        )
        .content_type(NDJSON)
        .expect(400, "invalid_field", Some("records[1]")),
        post(
            "commit of an offset as an array",
            COMMIT,
            r#"{"offsets": [[0, 3]]}"#,
        )
        .expect(400, "invalid_field", Some("offsets[0]")),
        post(
            "commit body as an array",
            COMMIT,
            r#"[[{"partition": 0, "offset": 0}]]"#,
        )
        .expect(400, "invalid_field", None),
        post("seek body as an array", SEEK, r#"["earliest"]"#).expect(400, "invalid_field", None),
        post("seek target as an array", SEEK, r#"{"to": ["offset", 3]}"#).expect(
            400,
            "invalid_field",
            Some("to"),
        ),
        post("join body as an array", MEMBERS, r#"["m1", 10000]"#).expect(400, "invalid_field", None),
        post("join body as an empty array", MEMBERS, "[]").expect(400, "invalid_field", None),
        post("heartbeat body as an array", HEARTBEAT, "[1]").expect(400, "invalid_field", None),
        post("topic body as an empty array", "/v1/topics", "[]").expect(400, "invalid_field", None),
        post("subscription body as an array", SUBS, r#"["s2", "queue"]"#).expect(400, "invalid_field", None),
        put("queue settings as an array of values", QUEUE, "[30000, 5]").expect(400, "invalid_field", None),
        post("receive body as an array of values", RECEIVE, "[10]").expect(400, "invalid_field", None),
        post("nack of a record as an array", NACK, r#"{"records": [[0, 0]]}"#).expect(
            400,
            "invalid_field",
            Some("records[0]"),
        ),
        post(
            "nack body as an array",
            NACK,
            r#"[[{"partition": 0, "offset": 0}], 0]"#,
        )
        .expect(400, "invalid_field", None),
        post(
            "extend of a record as an array",
            EXTEND,
            r#"{"records": [[0, 0]], "visibility_timeout_ms": 1000}"#,
        )
        .expect(400, "invalid_field", Some("records[0]")),
        post(
            "extend body as an array",
            EXTEND,
            r#"[[{"partition": 0, "offset": 0}], 1000]"#,
        )
        .expect(400, "invalid_field", None),
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
    // A queue group and a stream subscription on `good`, for the queue and subscription cases.
    let a = server.put(QUEUE, &json!({})).await;
    assert_eq!(a.status, StatusCode::CREATED, "{a:?}");
    let a = server.post(SUBS, &json!({"name": "sub", "kind": "stream"})).await;
    assert_eq!(a.status, StatusCode::CREATED, "{a:?}");
    let before = everything(&server).await;
    assert_eq!(before.iter().map(Vec::len).sum::<usize>(), 12);

    let mut failures = Vec::new();
    for case in matrix() {
        let mut req = server.client.request(case.method.clone(), server.url(&case.path));
        if let Some(ct) = case.content_type {
            req = req.header("content-type", ct);
        }
        if matches!(case.method, Method::POST | Method::PUT) {
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
    // Nothing was leased, acknowledged or dead-lettered: the queue group still has every record of `good`,
    // each for its first delivery, and the subscriptions are as they were.
    let a = server.post(RECEIVE, &json!({"max_records": 1000})).await;
    assert_eq!(a.status, StatusCode::OK, "{a:?}");
    let received = a.body["records"].as_array().unwrap();
    assert_eq!(received.len(), 11, "{a:?}");
    assert!(received.iter().all(|r| r["delivery_count"] == 1), "{a:?}");
    let a = server.get(SUBS).await;
    assert_eq!(
        a.body,
        json!({"subscriptions": [{"topic": "good", "name": "sub", "kind": "stream",
                                  "filter_policy": null, "filter_scope": "body"}]})
    );
    assert_eq!(
        server.get("/v1/topics").await.body["topics"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    server.stop().await;
}
