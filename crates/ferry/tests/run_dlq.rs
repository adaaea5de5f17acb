//! `ferry run` (stages as their own processes against a ferry server) and `ferry dlq replay`: a webhook
//! that is down sends records to `<pipeline>.dlq` after their retries; once it is up, a replay delivers
//! every one of them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Run, free_port, post, records, run, up, wait_for, webhook};

/// `ferry run` of one stage; `WORKER` is set to `worker` so a record shows which process mapped it.
fn run_stage(config: &std::path::Path, stage: &str, url: &str, worker: &str) -> Run {
    run(config, "hook", stage, &["--url", url], &[("WORKER", worker)])
}

#[test]
fn stages_as_processes_dead_letters_and_a_replay() {
    let dir = tempfile::tempdir().unwrap();
    let server_config = dir.path().join("server.toml");
    std::fs::write(&server_config, "[topics.in]\n").unwrap();
    let server = up(
        dir.path(),
        &[
            "--config",
            server_config.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ],
        &[],
    );
    let hook_port = free_port();
    let config = dir.path().join("hook.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[pipelines.hook]
retry = {{ max_attempts = 2, initial_backoff = "10ms", max_backoff = "20ms" }}
source = {{ type = "topic", topic = "in" }}

[[pipelines.hook.processors]]
type = "map"
uppercase = ["text"]
set = {{ worker = "${{WORKER}}" }}

[[pipelines.hook.sinks]]
type = "http"
url = "http://127.0.0.1:{hook_port}/hook"
"#
        ),
    )
    .unwrap();
    // Two processes share the map stage (one queue group); one runs the sink.
    let _map_a = run_stage(&config, "map", &server.url, "a");
    let _map_b = run_stage(&config, "map", &server.url, "b");
    let _sink = run_stage(&config, "http", &server.url, "sink");
    for i in 0..20 {
        let r = post(
            &server.url,
            "/v1/topics/in/records",
            &format!(r#"{{"value": {{"n": {i}, "text": "note {i}"}}}}"#),
        );
        assert_eq!(r.status, 200, "{}", r.body);
    }
    // Nobody listens on the webhook's port: each record fails twice, then is dead-lettered.
    let dead = wait_for("20 dead letters", Duration::from_secs(60), || {
        let d = records(&server.url, "hook.dlq");
        (d.len() >= 20).then_some(d)
    });
    assert_eq!(dead.len(), 20);
    let headers = &dead[0]["headers"];
    let header = |name: &str| headers[name].as_str().map(str::to_string);
    assert_eq!(header("ferry-stage").as_deref(), Some("http"));
    assert_eq!(header("ferry-topic").as_deref(), Some("hook.map"));
    assert_eq!(header("ferry-attempts").as_deref(), Some("2"));
    assert!(header("ferry-error").is_some_and(|e| !e.is_empty()));
    assert!(
        dead.iter()
            .all(|d| d["value"]["text"].as_str().unwrap().starts_with("NOTE "))
    );
    // The two map processes shared the work: each mapped some of the records.
    let by = |w: &str| dead.iter().filter(|d| d["value"]["worker"] == w).count();
    assert!(
        by("a") > 0 && by("b") > 0,
        "a mapped {}, b mapped {}",
        by("a"),
        by("b")
    );
    assert_eq!(by("a") + by("b"), 20);

    // The webhook comes up; a replay sends every dead letter back to the sink.
    let got = webhook(hook_port, Duration::ZERO);
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["dlq", "replay", "--pipeline", "hook", "--url", &server.url])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        r#"{"replayed":20}"#
    );
    let bodies = wait_for("20 webhook calls", Duration::from_secs(60), || {
        let b = got.lock().unwrap().clone();
        (b.len() >= 20).then_some(b)
    });
    let mut ns: Vec<i64> = bodies.iter().map(|b| b["n"].as_i64().unwrap()).collect();
    ns.sort_unstable();
    assert_eq!(ns, (0..20).collect::<Vec<_>>());
    assert!(
        bodies
            .iter()
            .all(|b| b["text"].as_str().unwrap().starts_with("NOTE "))
    );
}
