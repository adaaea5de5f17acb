//! `ferry check`: every example is clean; a broken file gets every problem at once, with line, column and
//! key, and a non-zero exit.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

fn check(file: &std::path::Path) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["check", file.to_str().unwrap()])
        .env_remove("PORT")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn every_example_checks_clean() {
    for name in ["scream.toml", "events.toml", "invoices.toml", "fanout.toml"] {
        let (ok, out, err) = check(&common::example(name));
        assert!(ok, "{name}: {err}");
        assert!(out.contains(": ok ("), "{name}: {out}");
    }
}

#[test]
fn a_broken_file_gets_every_problem_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("broken.toml");
    std::fs::write(
        &file,
        r#"[server]
listen = "127.0.0.1:5555"

[pipelines.p]
source = { type = "http", path = "/send", feilds = { a = "string" } }

[[pipelines.p.processors]]
type = "filter"
field = "message"
stop_words = []

[[pipelines.p.processors]]
type = "route"
routes = [{ topic = "ok", jq = ".a >" }]

[[pipelines.p.sinks]]
type = "emial"
"#,
    )
    .unwrap();
    let (ok, _, err) = check(&file);
    assert!(!ok);
    let f = file.display().to_string();
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with(&f)).collect();
    assert_eq!(lines.len(), 4, "{err}");
    assert!(
        lines[0].starts_with(&format!("{f}:5:")) && lines[0].contains("feilds"),
        "{err}"
    );
    assert!(
        lines[1].starts_with(&format!("{f}:8:")) || lines[1].starts_with(&format!("{f}:10:")),
        "{err}"
    );
    assert!(
        lines[1].contains("stop_words") || lines[1].contains("jq"),
        "{err}"
    );
    assert!(
        lines[2].contains("processors[1]") && lines[2].contains("jq"),
        "{err}"
    );
    assert!(
        lines[3].starts_with(&format!("{f}:17:")) && lines[3].contains("emial"),
        "{err}"
    );
}
