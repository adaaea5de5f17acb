//! `ferry up` as a user runs it: the real binary, a config file, a signal to stop it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};

use serde_json::Value;

struct Up {
    child: Child,
    url: String,
}

fn up(args: &[&str]) -> Up {
    up_with_env(args, &[])
}

fn up_with_env(args: &[&str], env: &[(&str, &str)]) -> Up {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .envs(env.iter().copied())
        .arg("up")
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    if line.is_empty() {
        let mut err = String::new();
        child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        panic!("ferry up printed nothing: {err}");
    }
    let v: Value = serde_json::from_str(&line).unwrap();
    Up {
        child,
        url: v["listening"].as_str().unwrap().to_string(),
    }
}

/// One HTTP/1.1 request, answered with (status, body).
fn http(url: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    http_as(url, None, method, path, body)
}

fn http_as(url: &str, token: Option<&str>, method: &str, path: &str, body: &str) -> (u16, String) {
    let addr = url.strip_prefix("http://").unwrap();
    let mut s = TcpStream::connect(addr).unwrap();
    let auth = token.map_or(String::new(), |t| format!("authorization: Bearer {t}\r\n"));
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\n{auth}content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let status = resp[9..12].parse().unwrap();
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

fn stop(mut up: Up) -> (bool, String) {
    let pid = up.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = up.child.wait().unwrap();
    let mut err = String::new();
    up.child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    (status.success(), err)
}

#[test]
fn up_creates_configured_topics_serves_them_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ferry.toml");
    std::fs::write(&config, "[topics.orders]\npartitions = 3\n").unwrap();
    let data = dir.path().join("data");
    let args = [
        "--config",
        config.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ];

    let server = up(&args);
    let (status, body) = http(&server.url, "GET", "/v1/topics/orders", "");
    assert_eq!(status, 200, "{body}");
    let topic: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(topic["partitions"].as_array().unwrap().len(), 3, "{body}");
    let (status, body) = http(
        &server.url,
        "POST",
        "/v1/topics/orders/records",
        r#"{"key":"k","value":{"n":1}}"#,
    );
    assert_eq!(status, 200, "{body}");
    let (ok, err) = stop(server);
    assert!(ok, "ferry up did not exit cleanly on SIGTERM: {err}");

    // Restarted with the same file: the topic and its record are still there.
    let server = up(&args);
    let (status, body) = http(&server.url, "GET", "/v1/topics/orders", "");
    assert_eq!(status, 200, "{body}");
    let topic: Value = serde_json::from_str(&body).unwrap();
    let records: u64 = topic["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["next_offset"].as_u64().unwrap())
        .sum();
    assert_eq!(records, 1, "{body}");
    let (ok, err) = stop(server);
    assert!(ok, "{err}");

    // A file that contradicts the existing topic is refused, naming the table.
    std::fs::write(&config, "[topics.orders]\npartitions = 5\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["up", "--listen", "127.0.0.1:0"])
        .args(args)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("[topics.orders] differs"), "{err}");
}

#[test]
fn up_refuses_a_bad_config_naming_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ferry.toml");
    std::fs::write(&config, "[server]\nlisten = \"127.0.0.1:0\"\nlisten_port = 1\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["up", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ferry.toml"), "{err}");
    assert!(err.contains("line 3"), "{err}");
    assert!(err.contains("listen_port"), "{err}");
}

#[test]
fn up_takes_tokens_from_the_config_file_and_the_environment_and_reports_fsync_latency() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, "writer-secret-1\n").unwrap();
    let config = dir.path().join("ferry.toml");
    std::fs::write(
        &config,
        format!("[server]\ntokens_file = \"{}\"\n\n[topics.t]\n", tokens.display()),
    )
    .unwrap();
    let data = dir.path().join("data");
    let args = [
        "--config",
        config.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ];
    let env = [("FERRY_READ_TOKENS", "reader-secret-2"), ("RUST_LOG", "debug")];
    let server = up_with_env(&args, &env);

    assert_eq!(http(&server.url, "GET", "/v1/topics", "").0, 401);
    assert_eq!(
        http_as(&server.url, Some("wrong"), "GET", "/v1/topics", "").0,
        401
    );
    assert_eq!(
        http_as(&server.url, Some("reader-secret-2"), "GET", "/v1/topics", "").0,
        200
    );
    let publish = r#"{"value":1}"#;
    let (status, body) = http_as(
        &server.url,
        Some("reader-secret-2"),
        "POST",
        "/v1/topics/t/records",
        publish,
    );
    assert_eq!(status, 403, "{body}");
    let (status, body) = http_as(
        &server.url,
        Some("writer-secret-1"),
        "POST",
        "/v1/topics/t/records",
        publish,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(http(&server.url, "GET", "/healthz", "").0, 200);

    // The broker was opened with the server's observer: the publish's fsync is in the histogram.
    let (status, metrics) = http_as(&server.url, Some("reader-secret-2"), "GET", "/metrics", "");
    assert_eq!(status, 200);
    let count: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("ferry_fsync_seconds_count "))
        .unwrap_or_else(|| panic!("no fsync histogram in {metrics}"))
        .trim()
        .parse()
        .unwrap();
    assert!(count > 0, "{metrics}");
    let (ok, err) = stop(server);
    assert!(ok, "{err}");
    assert!(!err.contains("secret"), "a token was logged: {err}");
}

#[test]
fn every_publish_answered_before_a_sigkill_is_there_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let args = ["--data-dir", data.to_str().unwrap()];
    let mut server = up(&args);
    let (status, body) = http(
        &server.url,
        "POST",
        "/v1/topics",
        r#"{"name":"t","partitions":2}"#,
    );
    assert_eq!(status, 201, "{body}");
    let mut acknowledged = Vec::new();
    for i in 0..200 {
        let record = format!(r#"{{"key":"k{i}","value":{{"n":{i}}}}}"#);
        let (status, body) = http(&server.url, "POST", "/v1/topics/t/records", &record);
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        let at = &v["offsets"][0];
        acknowledged.push((
            at["partition"].as_u64().unwrap(),
            at["offset"].as_u64().unwrap(),
            i,
        ));
    }
    server.child.kill().unwrap(); // SIGKILL: no graceful shutdown, no final flush
    server.child.wait().unwrap();

    let server = up(&args);
    for (partition, offset, n) in acknowledged {
        let path = format!("/v1/topics/t/partitions/{partition}/records?offset={offset}&max_records=1");
        let (status, body) = http(&server.url, "GET", &path, "");
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            v["records"][0]["value"]["n"], n,
            "record {n} at {partition}:{offset}: {body}"
        );
        assert_eq!(v["records"][0]["key"], format!("k{n}"), "{body}");
    }
    let (ok, err) = stop(server);
    assert!(ok, "{err}");
}
