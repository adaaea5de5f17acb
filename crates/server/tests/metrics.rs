//! `/metrics` against a real server: record and byte counters, stream-group lag, queue gauges, fsync
//! latency and HTTP durations by route template, in OpenMetrics text.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::TestServer;
use ferry_broker::Broker;
use ferry_server::ServerOptions;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// The exposition, after checking its content type and that every line is well formed.
async fn scrape(server: &TestServer) -> String {
    let resp = server.client.get(server.url("/metrics")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let content_type = resp.headers()["content-type"].to_str().unwrap().to_string();
    assert!(
        content_type.starts_with("application/openmetrics-text; version=1.0.0"),
        "{content_type}"
    );
    let text = resp.text().await.unwrap();
    check_format(&text);
    text
}

/// A small OpenMetrics text check: comment lines of known kinds, samples `name{labels} value` with a
/// valid name and a number, `# EOF` last and only there.
fn check_format(text: &str) {
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.last(), Some(&"# EOF"), "{text}");
    assert!(text.ends_with("# EOF\n"), "{text}");
    for line in &lines[..lines.len() - 1] {
        if let Some(comment) = line.strip_prefix("# ") {
            let (kind, rest) = comment
                .split_once(' ')
                .unwrap_or_else(|| panic!("bad comment: {line}"));
            assert!(["HELP", "TYPE", "UNIT"].contains(&kind), "bad comment: {line}");
            assert!(rest.starts_with("ferry_"), "unprefixed: {line}");
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad sample: {line}"));
        let value = if value == "+Inf" {
            f64::INFINITY
        } else {
            value.parse().unwrap()
        };
        assert!(value >= 0.0, "{line}");
        let name = series.split_once('{').map_or(series, |(name, labels)| {
            assert!(labels.ends_with('}'), "bad labels: {line}");
            name
        });
        assert!(name.starts_with("ferry_"), "{line}");
        assert!(
            name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
            "bad name: {line}"
        );
    }
}

/// The value of the sample whose series (name and labels) is exactly `series`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let (s, v) = line.rsplit_once(' ')?;
        (s == series).then(|| v.parse().unwrap())
    })
}

fn has_line(text: &str, line: &str) -> bool {
    text.lines().any(|l| l == line)
}

#[track_caller]
fn assert_line(text: &str, line: &str) {
    assert!(has_line(text, line), "`{line}` not in\n{text}");
}

/// `n` records of `size` bytes each as the broker counts them (key + value text + header name and value):
/// key `k1` (2), header `h: v` (2), value `1000n` as JSON text (5 digits).
fn records(first: u64, n: u64) -> (Value, usize) {
    let records: Vec<Value> = (first..first + n)
        .map(|i| json!({"key": "k1", "headers": {"h": "v"}, "value": 10_000 + i}))
        .collect();
    (Value::Array(records), 2 + 2 + 5)
}

#[tokio::test]
async fn metrics_count_records_report_lag_queues_fsync_and_routes() {
    let dir = tempfile::tempdir().unwrap();
    let options = ServerOptions::default();
    let broker = Broker::open_with(dir.path(), options.broker_options()).unwrap();
    let server = TestServer::serve_with(broker, options).await;
    server
        .create_topic(json!({"name": "orders", "partitions": 1, "fsync": "always"}))
        .await;

    // Nothing published yet: no fsync of a topic log (creating the topic fsynced only the metadata).
    let text = scrape(&server).await;
    assert_line(&text, "# TYPE ferry_fsync_seconds histogram");
    assert_line(&text, "ferry_fsync_seconds_count 0");
    assert!(!text.contains(r#"topic="orders""#), "{text}");

    // In: 5 records in one publish.
    let (batch, size) = records(0, 5);
    assert_eq!(server.publish("orders", &batch).await.len(), 5);
    let text = scrape(&server).await;
    assert_line(&text, r#"ferry_records_in_total{topic="orders"} 5"#);
    assert_line(
        &text,
        &format!(r#"ferry_bytes_in_total{{topic="orders"}} {}"#, 5 * size),
    );
    assert!(
        sample(&text, "ferry_fsync_seconds_count").unwrap() >= 1.0,
        "{text}"
    );
    assert!(sample(&text, "ferry_fsync_seconds_sum").unwrap() > 0.0, "{text}");
    assert!(!text.contains("ferry_records_out_total{"), "{text}");

    // Out: a partition fetch, then a stream group fetch, each of all 5.
    assert_eq!(server.fetch("orders", 0, 0).await.len(), 5);
    let text = scrape(&server).await;
    assert_line(&text, r#"ferry_records_out_total{topic="orders"} 5"#);
    assert_line(
        &text,
        &format!(r#"ferry_bytes_out_total{{topic="orders"}} {}"#, 5 * size),
    );
    let a = server.get("/v1/groups/billing/topics/orders/records").await;
    assert_eq!(a.status, StatusCode::OK, "{a:?}");
    assert_eq!(a.body["records"].as_array().unwrap().len(), 5);
    let text = scrape(&server).await;
    assert_line(&text, r#"ferry_records_out_total{topic="orders"} 10"#);
    assert_line(
        &text,
        &format!(r#"ferry_bytes_out_total{{topic="orders"}} {}"#, 10 * size),
    );

    // Lag: none before the group's first commit, then what is left after the committed offset.
    assert!(!text.contains("ferry_consumer_lag{"), "{text}");
    let offsets = "/v1/groups/billing/topics/orders/offsets";
    let a = server
        .post(offsets, &json!({"offsets": [{"partition": 0, "offset": 2}]}))
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{a:?}");
    let text = scrape(&server).await;
    assert_line(&text, "# TYPE ferry_consumer_lag gauge");
    assert_line(
        &text,
        r#"ferry_consumer_lag{group="billing",topic="orders",partition="0"} 3"#,
    );
    let (more, _) = records(5, 2);
    server.publish("orders", &more).await;
    let text = scrape(&server).await;
    assert_line(
        &text,
        r#"ferry_consumer_lag{group="billing",topic="orders",partition="0"} 5"#,
    );
    assert_line(&text, r#"ferry_records_in_total{topic="orders"} 7"#);
    let a = server
        .post(offsets, &json!({"offsets": [{"partition": 0, "offset": 7}]}))
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{a:?}");
    let text = scrape(&server).await;
    assert_line(
        &text,
        r#"ferry_consumer_lag{group="billing",topic="orders",partition="0"} 0"#,
    );

    // A queue receive counts out too, and its group shows depth and in-flight records.
    let a = server
        .post(
            "/v1/queues/workers/topics/orders/receive",
            &json!({"max_records": 3}),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{a:?}");
    assert_eq!(a.body["records"].as_array().unwrap().len(), 3);
    let text = scrape(&server).await;
    assert_line(&text, r#"ferry_records_out_total{topic="orders"} 13"#);
    assert_line(
        &text,
        &format!(r#"ferry_bytes_out_total{{topic="orders"}} {}"#, 13 * size),
    );
    assert_line(&text, r#"ferry_queue_depth{group="workers",topic="orders"} 7"#);
    assert_line(
        &text,
        r#"ferry_queue_in_flight{group="workers",topic="orders"} 3"#,
    );

    // HTTP durations are labelled by route template, never by the raw path.
    let publishes = r#"ferry_http_request_duration_seconds_count{method="POST",route="/v1/topics/{topic}/records",status="200"}"#;
    assert_eq!(sample(&text, publishes), Some(2.0), "{text}");
    let fetches = r#"ferry_http_request_duration_seconds_count{method="GET",route="/v1/topics/{topic}/partitions/{partition}/records",status="200"}"#;
    assert_eq!(sample(&text, fetches), Some(1.0), "{text}");
    assert_line(&text, "# TYPE ferry_http_request_duration_seconds histogram");
    assert_line(&text, "# UNIT ferry_http_request_duration_seconds seconds");
    let bucket = r#"ferry_http_request_duration_seconds_bucket{le="+Inf",method="POST",route="/v1/topics/{topic}/records",status="200"}"#;
    assert_eq!(sample(&text, bucket), Some(2.0), "{text}");
    assert!(
        !text.contains("/v1/topics/orders/"),
        "a raw path leaked into a label:\n{text}"
    );
    // Each scrape is recorded once answered: the 7 before this one.
    let scrapes = r#"ferry_http_request_duration_seconds_count{method="GET",route="/metrics",status="200"}"#;
    assert_eq!(sample(&text, scrapes), Some(7.0), "{text}");

    // Paths that match no route share one label value; a refused request is counted with its status.
    assert_eq!(server.get("/v1/nothing/here").await.status, StatusCode::NOT_FOUND);
    assert_eq!(
        server.get("/v1/topics/missing").await.status,
        StatusCode::NOT_FOUND
    );
    let text = scrape(&server).await;
    let unmatched =
        r#"ferry_http_request_duration_seconds_count{method="GET",route="unmatched",status="404"}"#;
    assert_eq!(sample(&text, unmatched), Some(1.0), "{text}");
    let missing =
        r#"ferry_http_request_duration_seconds_count{method="GET",route="/v1/topics/{topic}",status="404"}"#;
    assert_eq!(sample(&text, missing), Some(1.0), "{text}");
    assert!(!text.contains("nothing"), "{text}");

    server.stop().await;
}

#[tokio::test]
async fn a_topic_with_fsync_never_adds_no_fsync_on_publish() {
    let dir = tempfile::tempdir().unwrap();
    let options = ServerOptions::default();
    let broker = Broker::open_with(dir.path(), options.broker_options()).unwrap();
    let server = TestServer::serve_with(broker, options).await;
    server
        .create_topic(json!({"name": "loose", "partitions": 1, "fsync": "never"}))
        .await;
    let (batch, _) = records(0, 3);
    server.publish("loose", &batch).await;
    let text = scrape(&server).await;
    assert_line(&text, r#"ferry_records_in_total{topic="loose"} 3"#);
    assert_line(&text, "ferry_fsync_seconds_count 0");
    server.stop().await;
}
