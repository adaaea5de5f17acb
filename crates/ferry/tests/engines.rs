//! `examples/scream.toml` unchanged on NATS JetStream and on RabbitMQ (`[engine]`): the real binary, a
//! private engine server and a real SMTP server on loopback. The engine is restarted while records are
//! held in the pipeline (the SMTP server is down), and every accepted message still arrives.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Smtp, Up, example, http, mail_body, post, up, wait_for};
use ferry_engines::servers::{NatsServer, RabbitServer, require};

/// scream.toml with `[engine]` added.
fn up_scream_on(dir: &std::path::Path, smtp: &Smtp, engine: &str) -> Up {
    // The SMTP server stays down through an engine restart (RabbitMQ takes seconds): retry for longer
    // than the example's default, so that no message is dead-lettered meanwhile.
    let text = std::fs::read_to_string(example("scream.toml")).unwrap().replace(
        "[pipelines.scream]\n",
        "[pipelines.scream]\nretry = { max_attempts = 1000, max_backoff = \"1s\" }\n",
    );
    assert!(text.contains("max_attempts = 1000"));
    let config = dir.join("scream-engine.toml");
    std::fs::write(&config, format!("[engine]\n{engine}\n\n{text}")).unwrap();
    let port = smtp.port.to_string();
    up(
        dir,
        &["--config", config.to_str().unwrap(), "--listen", "127.0.0.1:0"],
        &[
            ("SMTP_HOST", "127.0.0.1"),
            ("SMTP_PORT", port.as_str()),
            ("SMTP_TLS", "none"),
            ("SMTP_FROM", "ferry@example.com"),
            ("SMTP_TO", "receiver@example.com"),
        ],
    )
}

/// POSTs a message; true when ferry accepted it (200), false when the engine is unavailable (503).
fn send(up: &Up, user: &str, message: &str) -> bool {
    let body = serde_json::json!({"user": user, "message": message}).to_string();
    let r = post(&up.url, "/send", &body);
    match r.status {
        200 => {
            assert_eq!(r.body, "message has been published");
            true
        }
        503 => false,
        s => panic!("unexpected answer {s}: {}", r.body),
    }
}

/// Sends until accepted (the engine may be reconnecting), within 60 s.
fn send_until_accepted(up: &Up, user: &str, message: &str) {
    wait_for("ferry to accept a message", Duration::from_secs(60), || {
        send(up, user, message).then_some(())
    });
}

fn bodies(smtp: &Smtp, n: usize) -> Vec<String> {
    wait_for(&format!("{n} e-mails"), Duration::from_secs(90), || {
        let m = smtp.messages();
        (m.len() >= n).then_some(m)
    })
    .iter()
    .map(|m| mail_body(m))
    .collect()
}

/// The scenario, on an engine whose server `restart` restarts.
fn scream_survives_an_engine_restart(engine: &str, restart: &mut dyn FnMut()) {
    let dir = tempfile::tempdir().unwrap();
    let Some(mut smtp) = Smtp::start(dir.path()) else {
        return;
    };
    let up = up_scream_on(dir.path(), &smtp, engine);
    let name = engine.split_whitespace().next().unwrap();
    assert_eq!(up.line["engine"], name);

    // The /v1 API shows the engine's topics, not the embedded broker's; RabbitMQ cannot list them.
    let r = http(&up.url, "GET", "/v1/topics", None, "");
    if name == "nats" {
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(r.body.contains("\"scream.filter\""), "{}", r.body);
    } else {
        assert_eq!(r.status, 501, "{}", r.body);
        assert!(
            r.body.contains("engine_unsupported") && r.body.contains(name),
            "{}",
            r.body
        );
    }

    send_until_accepted(&up, "alice", "hello world");
    send_until_accepted(&up, "bob", "I like Mango");
    send_until_accepted(&up, "carol", "second message");
    let got = bodies(&smtp, 2);
    assert!(
        got.iter()
            .any(|b| b.contains("From user: alice\n\nMessage: HELLO WORLD")),
        "{got:?}"
    );
    assert!(
        got.iter()
            .any(|b| b.contains("From user: carol\n\nMessage: SECOND MESSAGE")),
        "{got:?}"
    );
    assert!(!got.iter().any(|b| b.contains("MANGO")), "{got:?}");

    // SMTP down: accepted messages wait in the engine. Then the engine restarts under them.
    smtp.stop();
    send_until_accepted(&up, "dave", "before the restart");
    restart();
    send_until_accepted(&up, "erin", "after the restart");
    smtp.restart();
    // At-least-once: a record held when the engine went away may be mailed twice; none is lost.
    let expected = ["Message: BEFORE THE RESTART", "Message: AFTER THE RESTART"];
    let got = wait_for("both messages of the restart", Duration::from_secs(90), || {
        let got: Vec<String> = smtp.messages().iter().map(|m| mail_body(m)).collect();
        expected
            .iter()
            .all(|e| got.iter().any(|b| b.contains(e)))
            .then_some(got)
    });
    let unique = got.iter().collect::<std::collections::BTreeSet<_>>().len();
    eprintln!(
        "{name}: {} e-mails, {} duplicates (at-least-once)",
        got.len(),
        got.len() - unique
    );
    assert!(!got.iter().any(|b| b.contains("MANGO")), "{got:?}");
}

#[test]
fn scream_on_nats_jetstream() {
    let Some(mut nats) = require(NatsServer::start(), "nats-server") else {
        return;
    };
    let engine = format!("nats = {{ url = \"{}\" }}", nats.url());
    scream_survives_an_engine_restart(&engine, &mut || nats.restart().unwrap());
}

#[test]
fn scream_on_rabbitmq() {
    let Some(mut rabbit) = require(RabbitServer::start(), "rabbitmq-server") else {
        return;
    };
    let engine = format!("rabbitmq = {{ url = \"{}\" }}", rabbit.url());
    scream_survives_an_engine_restart(&engine, &mut || rabbit.restart().unwrap());
}

/// `ferry dlq replay --config FILE` works on the engine the file names: records dead-lettered on NATS
/// while a webhook is down are delivered once it is up.
#[test]
fn dead_letters_replay_on_nats() {
    let Some(nats) = require(NatsServer::start(), "nats-server") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let hook_port = common::free_port();
    let config = dir.path().join("hook.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[engine]
nats = {{ url = "{}" }}

[pipelines.hook]
retry = {{ max_attempts = 2, initial_backoff = "10ms", max_backoff = "20ms" }}
source = {{ type = "http", name = "in", path = "/in", fields = {{ n = "integer" }} }}

[[pipelines.hook.sinks]]
type = "http"
url = "http://127.0.0.1:{hook_port}/hook"
"#,
            nats.url()
        ),
    )
    .unwrap();
    let up = up(
        dir.path(),
        &["--config", config.to_str().unwrap(), "--listen", "127.0.0.1:0"],
        &[],
    );
    for n in 0..5 {
        let r = post(&up.url, "/in", &format!(r#"{{"n": {n}}}"#));
        assert_eq!(r.status, 200, "{}", r.body);
    }
    // Nobody listens on the webhook's port: each record is dead-lettered after two attempts.
    wait_for("5 dead letters", Duration::from_secs(60), || {
        common::metric(
            &up.url,
            "ferry_pipeline_records_failed_total{pipeline=\"hook\",stage=\"http\"}",
        )
        .filter(|&v| v >= 5.0)
    });
    let got = common::webhook(hook_port, Duration::ZERO);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args([
            "dlq",
            "replay",
            "--pipeline",
            "hook",
            "--config",
            config.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8(out.stdout).unwrap().trim(), r#"{"replayed":5}"#);
    let bodies = wait_for("5 webhook calls", Duration::from_secs(60), || {
        let b = got.lock().unwrap().clone();
        (b.len() >= 5).then_some(b)
    });
    let mut ns: Vec<u64> = bodies.iter().map(|b| b["n"].as_u64().unwrap()).collect();
    ns.sort_unstable();
    assert_eq!(ns, vec![0, 1, 2, 3, 4]);
}

/// The `/v1` routes that run on every engine, and the CLI commands on them: topics, publish, queue
/// groups with receive, ack, nack and extend; the others answer 501.
/// The API on an engine; `log`: the engine keeps a log to read by offset (JetStream, not RabbitMQ).
fn api_on(engine_line: &str, log: bool) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("api.toml");
    let queue_sub = format!(
        "[engine]\n{engine_line}\n\n[subscriptions.eu-orders]\ntopic = \"orders\"\nkind = \"queue\"\n\
         filter_policy = {{ region = [\"eu\"] }}\n"
    );
    let stream_sub = "[subscriptions.eu-audit]\ntopic = \"orders\"\nkind = \"stream\"\n\
                      filter_policy = { region = [\"eu\"] }\n";
    if !log {
        // A stream subscription needs stream groups, which this engine has not.
        std::fs::write(&config, format!("{queue_sub}\n{stream_sub}")).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
            .current_dir(dir.path())
            .args([
                "up",
                "--config",
                config.to_str().unwrap(),
                "--listen",
                "127.0.0.1:0",
            ])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{err}");
        assert!(
            err.contains("subscriptions.eu-audit") && err.contains("stream groups"),
            "{err}"
        );
    }
    let both = format!("{queue_sub}\n{stream_sub}");
    std::fs::write(&config, if log { both.as_str() } else { queue_sub.as_str() }).unwrap();
    let up = up(
        dir.path(),
        &["--config", config.to_str().unwrap(), "--listen", "127.0.0.1:0"],
        &[],
    );
    let call = |method: &str, path: &str, body: &str| {
        let r = http(&up.url, method, path, Some("application/json"), body);
        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap_or(serde_json::Value::Null);
        (r.status, v, r.body)
    };
    let (s, v, _) = call("POST", "/v1/topics", r#"{"name": "orders"}"#);
    assert_eq!((s, v["name"].as_str()), (201, Some("orders")));
    let (s, _, b) = call(
        "PUT",
        "/v1/queues/billing/topics/orders",
        r#"{"visibility_timeout_ms": 30000}"#,
    );
    assert_eq!(s, 201, "{b}");
    let (s, v, b) = call(
        "POST",
        "/v1/topics/orders/records",
        r#"[{"key": "alice", "headers": {"type": "created"}, "value": {"id": 1}}, {"value": {"id": 2}}]"#,
    );
    assert_eq!(s, 200, "{b}");
    let published = v["offsets"].as_array().unwrap().clone();
    assert_eq!(published.len(), 2);
    // One partition, and no settings the engine would not apply.
    let (s, v, _) = call("POST", "/v1/topics", r#"{"name": "wide", "partitions": 4}"#);
    assert_eq!((s, v["field"].as_str()), (422, Some("partitions")));
    // What an engine cannot take is named.
    let (s, v, _) = call(
        "POST",
        "/v1/topics/orders/records",
        r#"{"partition": 3, "value": 1}"#,
    );
    assert_eq!((s, v["field"].as_str()), (400, Some("records[0].partition")));

    let receive = || {
        let (s, v, b) = call(
            "POST",
            "/v1/queues/billing/topics/orders/receive",
            r#"{"max_records": 10, "max_wait_ms": 5000}"#,
        );
        assert_eq!(s, 200, "{b}");
        v["records"].as_array().unwrap().clone()
    };
    let mut got = receive();
    if got.len() < 2 {
        got.extend(receive());
    }
    assert_eq!(got.len(), 2, "{got:?}");
    // Each record is received under the offset its publish answered.
    let key = |r: &serde_json::Value| (r["partition"].as_u64(), r["offset"].as_u64());
    let mut received: Vec<_> = got.iter().map(key).collect();
    let mut answered: Vec<_> = published.iter().map(key).collect();
    received.sort_unstable();
    answered.sort_unstable();
    assert_eq!(received, answered);
    let first = got.iter().find(|r| r["value"]["id"] == 1).unwrap();
    let second = got.iter().find(|r| r["value"]["id"] == 2).unwrap();
    assert_eq!(
        (first["key"].as_str(), first["headers"]["type"].as_str()),
        (Some("alice"), Some("created"))
    );
    assert_eq!(first["delivery_count"], 1);
    let id = |r: &serde_json::Value| {
        format!(
            r#"{{"partition": {}, "offset": {}}}"#,
            r["partition"], r["offset"]
        )
    };
    let (s, _, b) = call(
        "POST",
        "/v1/queues/billing/topics/orders/ack",
        &format!(r#"{{"records": [{}]}}"#, id(first)),
    );
    assert_eq!(s, 204, "{b}");
    let (s, v, _) = call(
        "POST",
        "/v1/queues/billing/topics/orders/ack",
        &format!(r#"{{"records": [{}]}}"#, id(first)),
    );
    assert_eq!((s, v["error"].as_str()), (409, Some("not_leased")));
    let (s, _, b) = call(
        "POST",
        "/v1/queues/billing/topics/orders/nack",
        &format!(r#"{{"records": [{}]}}"#, id(second)),
    );
    assert_eq!(s, 204, "{b}");
    let again = receive();
    assert_eq!(again.len(), 1, "{again:?}");
    assert_eq!(
        (
            again[0]["value"]["id"].as_i64(),
            again[0]["delivery_count"].as_i64()
        ),
        (Some(2), Some(2))
    );
    let body = format!(
        r#"{{"records": [{}], "visibility_timeout_ms": 60000}}"#,
        id(&again[0])
    );
    let (s, _, b) = call("POST", "/v1/queues/billing/topics/orders/extend", &body);
    assert_eq!(s, 204, "{b}");
    let (s, _, b) = call(
        "POST",
        "/v1/queues/billing/topics/orders/ack",
        &format!(r#"{{"records": [{}]}}"#, id(&again[0])),
    );
    assert_eq!(s, 204, "{b}");

    // The CLI speaks the same API.
    let ferry = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args(args)
            .args(["--url", &up.url])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    ferry(&["send", "--topic", "orders", r#"{"id": 3}"#]);
    // From stdin too (the topic cannot be described on this engine; the server checks each batch).
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["send", "--topic", "orders", "-", "--url", &up.url])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write as _;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"{\"id\": 4}\n").unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap().lines().count(), 1);
    let mut ids = Vec::new();
    while ids.len() < 2 {
        let args = [
            "queue",
            "receive",
            "--topic",
            "orders",
            "--group",
            "billing",
            "--wait-ms",
            "5000",
            "--ack",
        ];
        let out = ferry(&args);
        let lines: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert!(!lines.is_empty(), "nothing received; got {ids:?} so far");
        ids.extend(lines.iter().map(|v| v["value"]["id"].as_i64().unwrap()));
    }
    ids.sort_unstable();
    assert_eq!(ids, vec![3, 4]);

    // The subscription gets only what its filter policy lets through (ferry filters on these engines).
    let (s, _, b) = call(
        "POST",
        "/v1/topics/orders/records",
        r#"[{"value": {"region": "eu", "n": 1}}, {"value": {"region": "us", "n": 2}}, {"value": {"region": "eu", "n": 3}}]"#,
    );
    assert_eq!(s, 200, "{b}");
    let mut eu = Vec::new();
    for _ in 0..5 {
        let (s, v, b) = call(
            "POST",
            "/v1/queues/eu-orders/topics/orders/receive",
            r#"{"max_records": 10, "max_wait_ms": 1000}"#,
        );
        assert_eq!(s, 200, "{b}");
        eu.extend(
            v["records"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["value"].clone()),
        );
        if eu.len() >= 2 {
            break;
        }
    }
    let mut ns: Vec<i64> = eu.iter().map(|v| v["n"].as_i64().unwrap()).collect();
    ns.sort_unstable();
    assert_eq!(ns, vec![1, 3], "{eu:?}");
    assert!(eu.iter().all(|v| v["region"] == "eu"), "{eu:?}");
    let (s, v, _) = call(
        "POST",
        "/v1/queues/eu-orders/topics/orders/receive",
        r#"{"max_records": 10, "max_wait_ms": 1000}"#,
    );
    assert_eq!(
        (s, v["records"].as_array().map(Vec::len)),
        (200, Some(0)),
        "nothing else passes"
    );

    if log {
        // The stream subscription started at the end of the topic when `ferry up` made it, and its filter
        // lets only the two `eu` records through.
        let (s, v, b) = call(
            "GET",
            "/v1/groups/eu-audit/topics/orders/records?max_wait_ms=2000",
            "",
        );
        assert_eq!(s, 200, "{b}");
        let ns: Vec<i64> = v["records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["value"]["n"].as_i64().unwrap())
            .collect();
        assert_eq!(ns, vec![1, 3], "{b}");
    }
    // A queue group's `max_deliveries` and dead-letter topic, applied by ferry.
    let (s, _, b) = call("POST", "/v1/topics", r#"{"name": "jobs"}"#);
    assert_eq!(s, 201, "{b}");
    let (s, v, b) = call(
        "PUT",
        "/v1/queues/retry/topics/jobs",
        r#"{"delivery_delay_ms": 5}"#,
    );
    assert_eq!((s, v["field"].as_str()), (422, Some("delivery_delay_ms")), "{b}");
    let (s, v, b) = call("PUT", "/v1/queues/retry/topics/jobs", r#"{"max_deliveries": 2}"#);
    assert_eq!(
        (s, v["dead_letter_topic"].as_str()),
        (201, Some("jobs.retry.dlq")),
        "{b}"
    );
    let (s, _, b) = call(
        "POST",
        "/v1/topics/jobs/records",
        r#"{"key": "j1", "value": {"job": 1}}"#,
    );
    assert_eq!(s, 200, "{b}");
    let take = |group: &str, topic: &str, wait: u64| {
        let (s, v, b) = call(
            "POST",
            &format!("/v1/queues/{group}/topics/{topic}/receive"),
            &format!(r#"{{"max_records": 10, "max_wait_ms": {wait}}}"#),
        );
        assert_eq!(s, 200, "{b}");
        v["records"].as_array().unwrap().clone()
    };
    for delivery in 1..=2 {
        let got = take("retry", "jobs", 5000);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0]["delivery_count"], delivery);
        let (s, _, b) = call(
            "POST",
            "/v1/queues/retry/topics/jobs/nack",
            &format!(r#"{{"records": [{}]}}"#, id(&got[0])),
        );
        assert_eq!(s, 204, "{b}");
    }
    assert_eq!(
        take("retry", "jobs", 1000),
        Vec::<serde_json::Value>::new(),
        "dead-lettered"
    );
    let dead = take("ferry-dlq-replay", "jobs.retry.dlq", 5000);
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(
        (
            dead[0]["value"]["job"].as_i64(),
            dead[0]["key"].as_str(),
            dead[0]["headers"]["ferry-dlq-group"].as_str(),
            dead[0]["headers"]["ferry-dlq-deliveries"].as_str()
        ),
        (Some(1), Some("j1"), Some("retry"), Some("2")),
        "{dead:?}"
    );

    if !log {
        // Subscriptions come from ferry.toml on an engine without a store to keep them in.
        let (s, v, _) = call("GET", "/v1/topics/orders/subscriptions", "");
        assert_eq!((s, v["error"].as_str()), (501, Some("engine_unsupported")));
        let (s, v, _) = call("POST", "/v1/topics/orders/subscriptions", r#"{"name": "x"}"#);
        assert_eq!((s, v["error"].as_str()), (501, Some("engine_unsupported")));
    }
    // The queue group counts what it holds: the three records above wait, none is leased.
    let (s, v, b) = call("GET", "/v1/queues/billing/topics/orders", "");
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        (v["depth"].as_u64(), v["in_flight"].as_u64()),
        (Some(3), Some(0)),
        "{b}"
    );
    let (s, v, _) = call("GET", "/v1/queues/nobody/topics/orders", "");
    assert_eq!((s, v["error"].as_str()), (404, Some("group_not_found")));
    let (s, described, b) = call("GET", "/v1/topics/orders", "");
    assert_eq!((s, described["name"].as_str()), (200, Some("orders")), "{b}");
    let (s, v, _) = call("GET", "/v1/topics/nope", "");
    assert_eq!((s, v["error"].as_str()), (404, Some("topic_not_found")));
    let first_offset = published[0]["offset"].as_u64().unwrap();
    let cli_lines = |args: &[&str]| -> Vec<serde_json::Value> {
        ferry(args)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    if log {
        let next = described["partitions"][0]["next_offset"].as_u64().unwrap();
        assert_eq!(next, first_offset + 7, "{b}");
        let (s, v, b) = call("GET", "/v1/topics", "");
        assert_eq!(s, 200, "{b}");
        assert!(
            v["topics"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t["name"] == "orders"),
            "{b}"
        );
        // Reading by offset, as on the embedded engine.
        let path = format!("/v1/topics/orders/partitions/0/records?offset={first_offset}&max_records=2");
        let (s, v, b) = call("GET", &path, "");
        assert_eq!(s, 200, "{b}");
        let ids: Vec<_> = v["records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["value"]["id"].clone())
            .collect();
        assert_eq!(ids, vec![serde_json::json!(1), serde_json::json!(2)], "{b}");
        let (s, v, _) = call("GET", "/v1/topics/orders/partitions/1/records?offset=1", "");
        assert_eq!((s, v["error"].as_str()), (404, Some("partition_not_found")));
        let (s, v, _) = call(
            "GET",
            &format!("/v1/topics/orders/partitions/0/records?offset={}", next + 5),
            "",
        );
        assert_eq!((s, v["field"].as_str()), (422, Some("offset")));
        // `ferry consume` from the start, and as a stream group that commits what it printed.
        assert_eq!(cli_lines(&["consume", "--topic", "orders"]).len(), 7);
        let first = cli_lines(&["consume", "--topic", "orders", "--group", "audit", "--max", "4"]);
        let rest = cli_lines(&["consume", "--topic", "orders", "--group", "audit"]);
        let mut seen: Vec<u64> = first
            .iter()
            .chain(&rest)
            .map(|r| r["offset"].as_u64().unwrap())
            .collect();
        seen.sort_unstable();
        assert_eq!(seen, (first_offset..next).collect::<Vec<_>>(), "each record once");
        let (s, v, b) = call("GET", "/v1/groups/audit/topics/orders/offsets", "");
        assert_eq!(s, 200, "{b}");
        assert_eq!(
            (v["lag"].as_u64(), v["partitions"][0]["committed"].as_u64()),
            (Some(0), Some(next)),
            "{b}"
        );
        // Two members: the partition stays with the first; the second takes it when the first leaves.
        let join = |id: &str| {
            let (s, v, b) = call(
                "POST",
                "/v1/groups/ledger/topics/orders/members",
                &format!(r#"{{"member_id": "{id}", "session_timeout_ms": 300000}}"#),
            );
            assert_eq!(s, 200, "{b}");
            v
        };
        let a = join("a");
        let b_ = join("b");
        assert_eq!(b_["partitions"], serde_json::json!([]));
        let commit = |who: &str, generation: &serde_json::Value| {
            let body = format!(
                r#"{{"offsets": [{{"partition": 0, "offset": {first_offset}}}], "member_id": "{who}", "generation": {generation}}}"#
            );
            call("POST", "/v1/groups/ledger/topics/orders/offsets", &body)
        };
        let (s, v, _) = commit("a", &a["generation"]);
        assert_eq!(
            (s, v["error"].as_str()),
            (409, Some("stale_generation")),
            "b joined since"
        );
        let (s, v, b) = call(
            "POST",
            "/v1/groups/ledger/topics/orders/members/a/heartbeat",
            &format!(r#"{{"generation": {}}}"#, a["generation"]),
        );
        assert_eq!((s, &v["partitions"]), (200, &serde_json::json!([0])), "{b}");
        assert_eq!(commit("a", &v["generation"]).0, 204);
        let (s, v, _) = commit("b", &b_["generation"]);
        assert_eq!((s, v["error"].as_str()), (409, Some("partition_not_assigned")));
        let (s, _, b) = call("DELETE", "/v1/groups/ledger/topics/orders/members/a", "");
        assert_eq!(s, 204, "{b}");
        let (s, v, b) = call(
            "POST",
            "/v1/groups/ledger/topics/orders/members/b/heartbeat",
            &format!(r#"{{"generation": {}}}"#, b_["generation"]),
        );
        assert_eq!((s, &v["partitions"]), (200, &serde_json::json!([0])), "{b}");
        let path = format!(
            "/v1/groups/ledger/topics/orders/records?member_id=b&generation={}&max_records=100",
            v["generation"]
        );
        let (s, v, b) = call("GET", &path, "");
        assert_eq!(s, 200, "{b}");
        assert_eq!(
            v["records"].as_array().unwrap().len(),
            7,
            "b reads from a's commit: {b}"
        );
        // A member that rejoins under its id starts again from the committed offset, not where it was.
        let (s, v, b) = call(
            "POST",
            "/v1/groups/ledger/topics/orders/members",
            r#"{"member_id": "b", "session_timeout_ms": 300000}"#,
        );
        assert_eq!((s, &v["partitions"]), (200, &serde_json::json!([0])), "{b}");
        let path = format!(
            "/v1/groups/ledger/topics/orders/records?member_id=b&generation={}&max_records=100",
            v["generation"]
        );
        let (s, v, b) = call("GET", &path, "");
        assert_eq!((s, v["records"].as_array().map(Vec::len)), (200, Some(7)), "{b}");
        // Another ferry process on the same engine sees the same group: its member stands by.
        let data = dir.path().join("second");
        std::fs::create_dir_all(&data).unwrap();
        let other = common::up(
            &data,
            &["--config", config.to_str().unwrap(), "--listen", "127.0.0.1:0"],
            &[],
        );
        let r = http(
            &other.url,
            "POST",
            "/v1/groups/ledger/topics/orders/members",
            Some("application/json"),
            r#"{"member_id": "c", "session_timeout_ms": 300000}"#,
        );
        let c: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(
            (r.status, &c["partitions"]),
            (200, &serde_json::json!([])),
            "{}",
            r.body
        );
        let r = http(
            &other.url,
            "GET",
            "/v1/groups/ledger/topics/orders/offsets",
            None,
            "",
        );
        let members: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        let ids: Vec<&str> = members["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["member_id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, vec!["b", "c"], "{}", r.body);

        // Subscriptions through the API: kept in the engine, so another process applies their filter.
        let (s, v, b) = call("GET", "/v1/topics/orders/subscriptions", "");
        assert_eq!(s, 200, "{b}");
        let names: Vec<&str> = v["subscriptions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, vec!["eu-audit", "eu-orders"], "from ferry.toml: {b}");
        let big = r#"{"name": "big", "filter_policy": {"n": [{"numeric": [">", 1]}]}}"#;
        let (s, v, b) = call("POST", "/v1/topics/orders/subscriptions", big);
        assert_eq!((s, v["kind"].as_str()), (201, Some("queue")), "{b}");
        assert_eq!(call("POST", "/v1/topics/orders/subscriptions", big).0, 200);
        let (s, v, _) = call(
            "POST",
            "/v1/topics/orders/subscriptions",
            r#"{"name": "big", "filter_policy": {"n": [2]}}"#,
        );
        assert_eq!((s, v["error"].as_str()), (409, Some("subscription_exists")));
        let (s, v, _) = call(
            "POST",
            "/v1/topics/orders/subscriptions",
            r#"{"name": "bad", "filter_policy": {"n": [{"numeric": [">"]}]}}"#,
        );
        assert_eq!((s, v["field"].as_str()), (422, Some("filter_policy.n[0]")));
        let (s, v, _) = call(
            "POST",
            "/v1/topics/orders/subscriptions",
            r#"{"name": "slow", "queue": {"delivery_delay_ms": 10}}"#,
        );
        assert_eq!((s, v["field"].as_str()), (422, Some("queue.delivery_delay_ms")));
        let (s, _, b) = call(
            "POST",
            "/v1/topics/orders/records",
            r#"[{"value": {"n": 1}}, {"value": {"n": 5}}]"#,
        );
        assert_eq!(s, 200, "{b}");
        let mut got = Vec::new();
        for _ in 0..5 {
            let r = http(
                &other.url,
                "POST",
                "/v1/queues/big/topics/orders/receive",
                Some("application/json"),
                r#"{"max_records": 10, "max_wait_ms": 1000}"#,
            );
            let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
            assert_eq!(r.status, 200, "{}", r.body);
            got.extend(
                v["records"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| r["value"]["n"].as_i64().unwrap()),
            );
            if !got.is_empty() {
                break;
            }
        }
        // Only 5: the other process applied the filter (1 is refused), and the subscription started at
        // the end of the topic (the earlier records with `n` 2 and 3 are not its).
        assert_eq!(got, vec![5], "the other process filtered");
        // A seek through one process moves the group for the others too.
        let whole = "/v1/groups/replay/topics/orders/records?max_records=100";
        let count = |url: &str| {
            let r = http(url, "GET", whole, None, "");
            assert_eq!(r.status, 200, "{}", r.body);
            let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
            v["records"].as_array().unwrap().len()
        };
        assert!(count(&up.url) >= 7);
        assert_eq!(count(&up.url), 0, "read to the end");
        let r = http(
            &other.url,
            "POST",
            "/v1/groups/replay/topics/orders/seek",
            Some("application/json"),
            r#"{"to": "earliest"}"#,
        );
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(
            count(&up.url) >= 7,
            "the seek through the other process holds here"
        );
        // A topic deleted and made again starts its groups afresh (JetStream numbers it from 1 again).
        assert_eq!(call("POST", "/v1/topics", r#"{"name": "again"}"#).0, 201);
        let three = r#"[{"value": 1}, {"value": 2}, {"value": 3}]"#;
        assert_eq!(call("POST", "/v1/topics/again/records", three).0, 200);
        let (s, v, b) = call("GET", "/v1/groups/g/topics/again/records", "");
        assert_eq!((s, v["records"].as_array().map(Vec::len)), (200, Some(3)), "{b}");
        let commit = r#"{"offsets": [{"partition": 0, "offset": 4}]}"#;
        assert_eq!(call("POST", "/v1/groups/g/topics/again/offsets", commit).0, 204);
        assert_eq!(call("DELETE", "/v1/topics/again", "").0, 204);
        assert_eq!(call("POST", "/v1/topics", r#"{"name": "again"}"#).0, 201);
        let two = r#"[{"value": 10}, {"value": 20}]"#;
        assert_eq!(call("POST", "/v1/topics/again/records", two).0, 200);
        let (s, v, _) = call("GET", "/v1/groups/g/topics/again/offsets", "");
        assert_eq!((s, v["error"].as_str()), (404, Some("group_not_found")));
        let (s, v, b) = call("GET", "/v1/groups/g/topics/again/records", "");
        assert_eq!(s, 200, "{b}");
        let values: Vec<i64> = v["records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["value"].as_i64().unwrap())
            .collect();
        assert_eq!(values, vec![10, 20], "{b}");

        let (s, _, b) = call("DELETE", "/v1/topics/orders/subscriptions/big", "");
        assert_eq!(s, 204, "{b}");
        let (s, v, _) = call("DELETE", "/v1/topics/orders/subscriptions/big", "");
        assert_eq!((s, v["error"].as_str()), (404, Some("subscription_not_found")));
    } else {
        // RabbitMQ keeps no log: what needs one says so.
        for path in ["/v1/topics", "/v1/topics/orders/partitions/0/records?offset=0"] {
            let (s, v, b) = call("GET", path, "");
            assert_eq!(
                (s, v["error"].as_str()),
                (501, Some("engine_unsupported")),
                "{path}: {b}"
            );
        }
        let (s, v, b) = call("POST", "/v1/groups/audit/topics/orders/members", "{}");
        assert_eq!((s, v["error"].as_str()), (501, Some("engine_unsupported")), "{b}");
    }
    let (s, _, b) = call("DELETE", "/v1/topics/orders", "");
    assert_eq!(s, 204, "{b}");
    let (s, v, _) = call("GET", "/v1/topics/orders", "");
    assert_eq!((s, v["error"].as_str()), (404, Some("topic_not_found")));
    let (s, v, _) = call("DELETE", "/v1/topics/orders", "");
    assert_eq!((s, v["error"].as_str()), (404, Some("topic_not_found")));
}

#[test]
fn the_api_on_nats() {
    let Some(nats) = require(NatsServer::start(), "nats-server") else {
        return;
    };
    api_on(&format!("nats = {{ url = \"{}\" }}", nats.url()), true);
}

#[test]
fn the_api_on_rabbitmq() {
    let Some(rabbit) = require(RabbitServer::start(), "rabbitmq-server") else {
        return;
    };
    api_on(&format!("rabbitmq = {{ url = \"{}\" }}", rabbit.url()), false);
}

/// A `[topics.NAME]` with settings an engine cannot honour stops `ferry up` with a message naming it.
#[test]
fn topics_with_partitions_are_refused_on_nats() {
    let Some(nats) = require(NatsServer::start(), "nats-server") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("wide.toml");
    std::fs::write(
        &config,
        format!(
            "[engine]\nnats = {{ url = \"{}\" }}\n\n[topics.wide]\npartitions = 4\n",
            nats.url()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
        .current_dir(dir.path())
        .args([
            "up",
            "--config",
            config.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("topics.wide") && err.contains("one partition"),
        "{err}"
    );
}

/// `ferry run --url` against a ferry server whose records live in JetStream: the stages reach the engine
/// through the server's API (RemoteBus), the pipeline file knowing nothing of the engine.
#[test]
fn stages_run_against_a_server_on_nats() {
    let Some(nats) = require(NatsServer::start(), "nats-server") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server_config = dir.path().join("server.toml");
    std::fs::write(
        &server_config,
        format!("[engine]\nnats = {{ url = \"{}\" }}\n", nats.url()),
    )
    .unwrap();
    let up = up(
        dir.path(),
        &[
            "--config",
            server_config.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ],
        &[("FERRY_TOKENS", "s3cret")],
    );
    // Bearer tokens guard the API on an engine as on the embedded one.
    let r = http(&up.url, "GET", "/v1/topics", None, "");
    assert_eq!(r.status, 401, "{}", r.body);
    let ferry = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args(args)
            .args(["--url", &up.url])
            .env("FERRY_TOKEN", "s3cret")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let out = dir.path().join("out.jsonl");
    let config = dir.path().join("shout.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[pipelines.shout]
source = {{ type = "topic", topic = "in" }}

[[pipelines.shout.processors]]
type = "map"
uppercase = ["text"]

[[pipelines.shout.sinks]]
type = "file"
path = "{}"
"#,
            out.display()
        ),
    )
    .unwrap();
    let token = [("FERRY_TOKEN", "s3cret")];
    let map = common::run(&config, "shout", "map", &["--url", &up.url], &token);
    let file = common::run(&config, "shout", "file", &["--url", &up.url], &token);
    assert_eq!(
        map.line["engine"], "embedded",
        "the stage does not know the server's engine"
    );
    ferry(&["send", "--topic", "in", r#"{"text": "hello"}"#]);
    ferry(&["send", "--topic", "in", r#"{"text": "world"}"#]);
    let lines = wait_for("two lines written", Duration::from_secs(30), || {
        let text = std::fs::read_to_string(&out).ok()?;
        let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        (lines.len() >= 2).then_some(lines)
    });
    let texts: Vec<&str> = lines.iter().map(|l| l["text"].as_str().unwrap()).collect();
    assert_eq!(texts, vec!["HELLO", "WORLD"]);
    // The topics the stages made are JetStream streams, listed by the server.
    let listed = ferry(&["topics", "list"]);
    assert!(listed.contains("shout.map"), "{listed}");
    drop((map, file));
}
