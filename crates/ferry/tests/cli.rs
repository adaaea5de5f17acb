//! Black-box tests of the `ferry` binary: the real executable, real files, stdin and stdout.

// Helpers outside `#[test]` functions panic on unexpected output on purpose, like the tests themselves.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use assert_cmd::Command;
use assert_cmd::cargo::cargo_bin_cmd;
use serde_json::Value;

fn ferry() -> Command {
    let mut cmd = cargo_bin_cmd!("ferry");
    cmd.env_remove("RUST_LOG");
    cmd
}

fn stdout_of(cmd: &mut Command) -> String {
    let out = cmd.assert().success().get_output().clone();
    String::from_utf8(out.stdout).unwrap()
}

/// Runs a command that must fail and returns its stderr; stdout must stay empty.
fn failure_of(cmd: &mut Command) -> String {
    let out = cmd.assert().failure().get_output().clone();
    assert!(
        out.stdout.is_empty(),
        "stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stderr).unwrap()
}

fn json_lines(s: &str) -> Vec<Value> {
    s.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// The bytes of a field printed as `<name>` (UTF-8) or `<name>_hex`.
fn bytes_field(obj: &Value, name: &str) -> Vec<u8> {
    if let Some(s) = obj.get(name).and_then(Value::as_str) {
        return s.as_bytes().to_vec();
    }
    let hex = obj[format!("{name}_hex")]
        .as_str()
        .unwrap_or_else(|| panic!("no {name} in {obj}"));
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

fn read_all(dir: &Path) -> Vec<Value> {
    json_lines(&stdout_of(ferry().args(["log", "read", "--dir"]).arg(dir)))
}

fn append_stdin(dir: &Path, input: &[u8]) -> Vec<Value> {
    json_lines(&stdout_of(
        ferry()
            .args(["log", "append", "--dir"])
            .arg(dir)
            .write_stdin(input),
    ))
}

#[test]
fn version_prints_the_binary_and_log_format_versions() {
    let out = stdout_of(ferry().arg("version"));
    assert_eq!(
        out,
        format!(
            "ferry {} (log format {})\n",
            env!("CARGO_PKG_VERSION"),
            ferry_log::FORMAT_VERSION
        )
    );
}

#[test]
fn help_lists_the_commands() {
    let out = stdout_of(ferry().arg("--help"));
    for word in ["Usage: ferry", "version", "log", "--log-level"] {
        assert!(out.contains(word), "`{word}` missing from:\n{out}");
    }
    let out = stdout_of(ferry().args(["log", "--help"]));
    for word in ["append", "read", "info"] {
        assert!(out.contains(word), "`{word}` missing from:\n{out}");
    }
}

#[test]
fn stdin_lines_read_back_byte_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let lines: Vec<&[u8]> = vec![
        b"hello",
        b"",
        br#"{"id":1,"text":"caf\u00e9"}"#,
        "ünïcödé ✓".as_bytes(),
        b"carriage return kept\r",
        b"not utf-8: \xff\xfe\x00",
        b"last line without newline",
    ];
    let input = lines.join(&b"\n"[..]);

    let acks = append_stdin(&dir, &input);
    let offsets: Vec<u64> = acks.iter().map(|a| a["offset"].as_u64().unwrap()).collect();
    assert_eq!(offsets, (0..lines.len() as u64).collect::<Vec<_>>());

    let records = read_all(&dir);
    assert_eq!(records.len(), lines.len());
    for (i, (record, line)) in records.iter().zip(&lines).enumerate() {
        assert_eq!(record["offset"], i as u64);
        assert!(record["timestamp"].as_i64().unwrap() > 0);
        assert_eq!(record["key"], Value::Null);
        assert_eq!(record["headers"], serde_json::json!([]));
        assert_eq!(bytes_field(record, "value"), *line, "record {i}");
    }
    assert!(records[5].get("value").is_none() && records[5].get("value_hex").is_some());

    // A second append continues the offsets.
    let acks = append_stdin(&dir, b"more\n");
    assert_eq!(acks, vec![serde_json::json!({"offset": lines.len()})]);
}

#[test]
fn value_argument_key_and_headers_are_stored() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let out = stdout_of(
        ferry()
            .args(["log", "append", "--dir"])
            .arg(dir)
            .args([
                "--key",
                "user-7",
                "--header",
                "trace=a=b",
                "--header",
                "trace=c",
                "--fsync",
                "interval:5",
            ])
            .arg(r#"{"n":1}"#),
    );
    assert_eq!(out, "{\"offset\":0}\n");
    let records = read_all(dir);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["key"], "user-7");
    assert_eq!(
        records[0]["headers"],
        serde_json::json!([{"key": "trace", "value": "a=b"}, {"key": "trace", "value": "c"}])
    );
    assert_eq!(records[0]["value"], r#"{"n":1}"#);
}

#[test]
fn read_starts_at_from_and_stops_at_max() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    append_stdin(dir, b"r0\nr1\nr2\nr3\nr4\n");
    let out = stdout_of(
        ferry()
            .args(["log", "read", "--dir"])
            .arg(dir)
            .args(["--from", "2", "--max", "2"]),
    );
    let values: Vec<String> = json_lines(&out)
        .iter()
        .map(|r| r["value"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(values, ["r2", "r3"]);

    // The end of the log is a valid place to start, and holds nothing yet.
    let out = stdout_of(
        ferry()
            .args(["log", "read", "--dir"])
            .arg(dir)
            .args(["--from", "5"]),
    );
    assert_eq!(out, "");

    // Every record was appended after time 0.
    let out =
        stdout_of(
            ferry()
                .args(["log", "read", "--dir"])
                .arg(dir)
                .args(["--from-time", "0", "--max", "1"]),
        );
    assert_eq!(json_lines(&out)[0]["value"], "r0");
    let out = stdout_of(
        ferry()
            .args(["log", "read", "--dir"])
            .arg(dir)
            .args(["--from-time", &i64::MAX.to_string()]),
    );
    assert_eq!(out, "");
}

#[test]
fn bad_fsync_value_is_rejected_naming_the_flag() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let err =
        failure_of(
            ferry()
                .args(["log", "append", "--dir"])
                .arg(&dir)
                .args(["--fsync", "sometimes", "x"]),
        );
    assert!(err.contains("--fsync"), "{err}");
    assert!(err.contains("`always`, `never` or `interval:<ms>`"), "{err}");
    assert!(err.contains("sometimes"), "{err}");
    assert!(!dir.exists(), "a rejected command must not create the log");

    let err =
        failure_of(
            ferry()
                .args(["log", "append", "--dir"])
                .arg(&dir)
                .args(["--fsync", "interval:0", "x"]),
        );
    assert!(err.contains("--fsync") && err.contains("ms > 0"), "{err}");
}

#[test]
fn bad_arguments_name_their_flag() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let err = failure_of(
        ferry()
            .args(["log", "append", "--dir"])
            .arg(dir)
            .args(["--header", "novalue", "x"]),
    );
    assert!(err.contains("--header") && err.contains("KEY=VALUE"), "{err}");

    let missing = dir.join("missing");
    let err = failure_of(ferry().args(["log", "read", "--dir"]).arg(&missing));
    assert!(err.contains("--dir") && err.contains("missing"), "{err}");
    assert!(!missing.exists(), "read must not create a log");

    let err = failure_of(ferry().args(["log", "info", "--dir"]).arg(dir));
    assert!(
        err.contains("--dir") && err.contains("not a ferry log directory"),
        "{err}"
    );

    append_stdin(dir, b"only\n");
    let err = failure_of(
        ferry()
            .args(["log", "read", "--dir"])
            .arg(dir)
            .args(["--from", "9"]),
    );
    assert!(err.contains("--from") && err.contains("out of range"), "{err}");

    let err = failure_of(
        ferry()
            .args(["log", "read", "--dir"])
            .arg(dir)
            .args(["--from", "latest"]),
    );
    assert!(err.contains("--from") && err.contains("earliest"), "{err}");
}

#[test]
fn info_reports_offsets_and_the_torn_tail_it_cut() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    append_stdin(dir, b"one\ntwo\nthree\n");

    let info: Value =
        serde_json::from_str(&stdout_of(ferry().args(["log", "info", "--dir"]).arg(dir))).unwrap();
    assert_eq!(info["format_version"], u64::from(ferry_log::FORMAT_VERSION));
    assert_eq!(
        (info["start_offset"].as_u64(), info["next_offset"].as_u64()),
        (Some(0), Some(3))
    );
    assert_eq!(info["segments"], 1);
    assert_eq!(info["recovery"]["segments_cut"], 0);
    let size = info["size_bytes"].as_u64().unwrap();

    // Tear the last batch as a crash in the middle of a write would.
    let segment = dir.join(format!("{:020}.log", 0));
    let file = std::fs::OpenOptions::new().write(true).open(&segment).unwrap();
    file.set_len(size - 3).unwrap();
    drop(file);

    let info: Value =
        serde_json::from_str(&stdout_of(ferry().args(["log", "info", "--dir"]).arg(dir))).unwrap();
    assert_eq!(info["next_offset"], 2);
    assert_eq!(info["recovery"]["segments_cut"], 1);
    let cut = &info["recovery"]["segments"][0]["cut"];
    assert_eq!(cut["offset"], 2);
    assert!(cut["bytes"].as_u64().unwrap() > 0);

    let values: Vec<Value> = read_all(dir).iter().map(|r| r["value"].clone()).collect();
    assert_eq!(values, ["one", "two"]);
}

#[test]
fn small_segments_roll() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let line = "x".repeat(300);
    let input: String = (0..20).map(|_| format!("{line}\n")).collect();
    stdout_of(
        ferry()
            .args(["log", "append", "--segment-bytes", "1024", "--dir"])
            .arg(dir)
            .write_stdin(input),
    );
    let info: Value =
        serde_json::from_str(&stdout_of(ferry().args(["log", "info", "--dir"]).arg(dir))).unwrap();
    assert_eq!(info["next_offset"], 20);
    assert!(info["segments"].as_u64().unwrap() >= 5, "{info}");
    assert_eq!(read_all(dir).len(), 20);
}

#[test]
fn an_oversized_line_stops_the_append_at_that_line() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut input = b"first\n".to_vec();
    input.extend(std::iter::repeat_n(b'x', 9 << 20));
    input.extend(b"\nthird\n");
    let out = ferry()
        .args(["log", "append", "--dir"])
        .arg(dir)
        .write_stdin(input)
        .assert()
        .failure();
    let out = out.get_output();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "{\"offset\":0}\n");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("stdin line 2") && err.contains("maximum batch size"),
        "{err}"
    );
    let values: Vec<Value> = read_all(dir).iter().map(|r| r["value"].clone()).collect();
    assert_eq!(values, ["first"]);
}
