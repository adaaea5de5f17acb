//! `examples/events.toml` (seed 001) end to end: the seed's answers byte for byte, the events file, the
//! `.env` keys, and `ferry propagate` feeding it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{example, free_port, http, post, up, wait_for};

fn lines(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn answers_byte_for_byte_and_writes_only_valid_events() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port().to_string();
    let target = dir.path().join("out/events.json");
    let up = up(
        dir.path(),
        &["--config", example("events.toml").to_str().unwrap()],
        &[
            ("PORT", port.as_str()),
            ("TARGET_FILE_LOCATION", target.to_str().unwrap()),
        ],
    );
    assert_eq!(up.url, format!("http://127.0.0.1:{port}"));

    // Content-Type is not required.
    let r = http(
        &up.url,
        "POST",
        "/event",
        None,
        r#"{"event_type": "message", "event_payload": "hello"}"#,
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        r.body,
        "{\"event_payload\":\"hello\",\"event_type\":\"message\"}\n"
    );

    let bad = [
        (
            r#"{"event_type": 123, "event_payload": {}}"#,
            r#"{"error": "Validation error - {'event_payload': ['Not a valid string.'], 'event_type': ['Not a valid string.']}"}"#,
        ),
        (
            r#"{"event_type": "message", "event_payload": 5}"#,
            r#"{"error": "Validation error - {'event_payload': ['Not a valid string.']}"}"#,
        ),
        (
            r#"{"event_type": "message"}"#,
            r#"{"error": "Validation error - {'event_payload': ['Missing data for required field.']}"}"#,
        ),
        (
            r#"{"event_type": null, "event_payload": "x"}"#,
            r#"{"error": "Validation error - {'event_type': ['Field may not be null.']}"}"#,
        ),
        (
            r#"{"event_type": "a", "event_payload": "b", "extra": 1}"#,
            r#"{"error": "Validation error - {'extra': ['Unknown field.']}"}"#,
        ),
    ];
    for (body, answer) in bad {
        let r = post(&up.url, "/event", body);
        assert_eq!((r.status, r.body.as_str()), (400, answer), "{body}");
    }
    let r = post(
        &up.url,
        "/event",
        r#"{"event_type": "user_left", "event_payload": "Thomas"}"#,
    );
    assert_eq!(r.status, 200);
    let got = wait_for("two events in the file", Duration::from_secs(30), || {
        let l = lines(&target);
        (l.len() >= 2).then_some(l)
    });
    assert_eq!(
        got,
        vec![
            serde_json::json!({"event_type": "message", "event_payload": "hello"}),
            serde_json::json!({"event_type": "user_left", "event_payload": "Thomas"}),
        ]
    );
}

#[test]
fn the_env_file_and_the_propagator_drive_it() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // The seed's .env style: quoted values, spaces around `=`.
    std::fs::write(
        dir.path().join(".env"),
        format!(
            "PORT = '{port}'\nTARGET_FILE_LOCATION = 'seen.json'\nWAIT_SECONDS = '0.01'\nENDPOINT = 'http://127.0.0.1:{port}/event'\nINPUT_FILE_LOCATION = '{}'\n",
            example("events.json").display()
        ),
    )
    .unwrap();
    let up = up(
        dir.path(),
        &["--config", example("events.toml").to_str().unwrap()],
        &[],
    );
    assert_eq!(up.url, format!("http://127.0.0.1:{port}"));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
        .current_dir(dir.path())
        .args(["propagate", "--order", "sequential", "--count", "11"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.contains("{\"event_payload\":\"no, thanks\",\"event_type\":\"message\"}\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains(r#"{"error": "Validation error - {'event_payload': ['Not a valid string.'], 'event_type': ['Not a valid string.']}"}"#),
        "{stdout}"
    );
    // Ten of the eleven events are valid; they land in the file named by .env, in order.
    let target = dir.path().join("seen.json");
    let got = wait_for("ten events in the file", Duration::from_secs(30), || {
        let l = lines(&target);
        (l.len() >= 10).then_some(l)
    });
    assert_eq!(got.len(), 10);
    assert_eq!(
        got[0],
        serde_json::json!({"event_type": "message", "event_payload": "hello"})
    );
    assert_eq!(
        got[9],
        serde_json::json!({"event_type": "user_left", "event_payload": "Thomas"})
    );
}

#[test]
fn without_compat_the_errors_are_fertys_own() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(example("events.toml")).unwrap();
    let own = text.replace(", compat = \"flask_marshmallow\"", ", max_body_bytes = 64");
    assert_ne!(own, text);
    let config = dir.path().join("events.toml");
    std::fs::write(&config, own).unwrap();
    let port = free_port().to_string();
    let up = up(
        dir.path(),
        &["--config", config.to_str().unwrap()],
        &[("PORT", port.as_str())],
    );
    let r = post(&up.url, "/event", r#"{"event_type": 1}"#);
    assert_eq!(r.status, 400);
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["error"], "invalid_record");
    assert_eq!(v["field"], "event_payload");
    assert_eq!(v["errors"]["event_payload"][0], "is required");
    assert_eq!(v["errors"]["event_type"][0], "must be a string");
    let r = post(&up.url, "/event", r#"{"event_type": "m", "event_payload": "p"}"#);
    assert_eq!(r.status, 200);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&r.body).unwrap(),
        serde_json::json!({"event_type": "m", "event_payload": "p"})
    );
    // Over max_body_bytes: a JSON error, like every other one, and nothing written.
    let big = format!(r#"{{"event_type": "m", "event_payload": "{}"}}"#, "x".repeat(100));
    let r = post(&up.url, "/event", &big);
    assert_eq!(r.status, 413);
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["error"], "body_too_large");
    assert!(v["message"].as_str().unwrap().contains("64"), "{v}");
}
