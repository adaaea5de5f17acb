//! The broker commands (`topics`, `send`, `consume`, `queue`, `subscriptions`) as a user runs them: the
//! real `ferry` binary against a real `ferry up` on a free port, over HTTP. Every wait is on output of a
//! process (a line, an exit), never on time.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, ChildStderr, ChildStdout, Command as StdCommand, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use assert_cmd::Command;
use assert_cmd::cargo::cargo_bin_cmd;
use serde_json::{Value, json};

/// A running `ferry up` over a temporary data directory; stopped with SIGTERM when dropped.
struct Server {
    child: Child,
    url: String,
    dir: tempfile::TempDir,
}

fn ferry() -> Command {
    let mut cmd = cargo_bin_cmd!("ferry");
    cmd.env_remove("RUST_LOG")
        .env_remove("FERRY_URL")
        .env_remove("FERRY_TOKEN");
    cmd
}

fn json_lines(s: &str) -> Vec<Value> {
    s.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Each line of `source`, as it comes, on a channel (so a test can wait for a line without blocking on
/// one pipe while another fills up).
fn lines_of(source: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(source).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// Waits for the first line containing `text`; panics with what came when the process ended first.
fn wait_for_line(lines: &mpsc::Receiver<String>, text: &str) -> String {
    let mut seen = Vec::new();
    loop {
        match lines.recv_timeout(Duration::from_secs(60)) {
            Ok(line) if line.contains(text) => return line,
            Ok(line) => seen.push(line),
            Err(e) => panic!("no line with `{text}` ({e}); got: {seen:#?}"),
        }
    }
}

impl Server {
    fn start() -> Self {
        Self::start_with(&[])
    }

    /// A server with these environment variables (and none of the caller's `FERRY_*` settings).
    fn start_with(env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let log = std::fs::File::create(dir.path().join("up.log")).unwrap();
        // An empty configuration: the broker alone, without the scream pipeline `ferry up` runs by default.
        let config = dir.path().join("ferry.toml");
        std::fs::write(&config, "").unwrap();
        let mut child = StdCommand::new(env!("CARGO_BIN_EXE_ferry"))
            .args(["up", "--listen", "127.0.0.1:0", "--config"])
            .arg(&config)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .env_remove("FERRY_CONFIG")
            .env_remove("FERRY_TOKENS")
            .env_remove("FERRY_TOKENS_FILE")
            .env_remove("FERRY_READ_TOKENS")
            .env_remove("FERRY_READ_TOKENS_FILE")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            // A file, not a pipe: nobody reads the server's diagnostics while it runs.
            .stderr(log)
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        if line.is_empty() {
            let _ = child.wait();
            let err = std::fs::read_to_string(dir.path().join("up.log")).unwrap();
            panic!("ferry up printed nothing: {err}");
        }
        let v: Value = serde_json::from_str(&line).unwrap();
        Self {
            child,
            url: v["listening"].as_str().unwrap().to_string(),
            dir,
        }
    }

    /// `ferry <args[0]> --url URL <args[1..]>`.
    fn ferry(&self, args: &[&str]) -> Command {
        let mut cmd = ferry();
        cmd.arg(args[0]).args(["--url", &self.url]).args(&args[1..]);
        cmd
    }

    /// Stdout of a command that must succeed.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.ferry(args).assert().success().get_output().clone();
        String::from_utf8(out.stdout).unwrap()
    }

    /// Stdout of a command that must succeed, fed `input` on stdin.
    fn ok_with_stdin(&self, args: &[&str], input: impl Into<Vec<u8>>) -> String {
        let out = self
            .ferry(args)
            .write_stdin(input.into())
            .assert()
            .success()
            .get_output()
            .clone();
        String::from_utf8(out.stdout).unwrap()
    }

    /// Stderr of a command that must fail and print nothing on stdout.
    fn fails(&self, args: &[&str]) -> String {
        failure_of(&mut self.ferry(args))
    }

    /// A long-running command, its stdout and stderr as line channels.
    fn spawn(&self, args: &[&str]) -> Running {
        let mut child = StdCommand::new(env!("CARGO_BIN_EXE_ferry"))
            .arg(args[0])
            .args(["--url", &self.url])
            .args(&args[1..])
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        Running {
            child,
            stdout: Some(stdout),
            stderr: Some(stderr),
        }
    }

    fn topic(&self, name: &str, partitions: u32) {
        let p = partitions.to_string();
        self.ok(&["topics", "create", name, "--partitions", &p, "--fsync", "never"]);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = StdCommand::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

fn failure_of(cmd: &mut Command) -> String {
    let out = cmd.assert().failure().get_output().clone();
    assert!(
        out.stdout.is_empty(),
        "stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stderr).unwrap()
}

struct Running {
    child: Child,
    stdout: Option<ChildStdout>,
    stderr: Option<ChildStderr>,
}

impl Running {
    fn signal(&self, sig: &str) {
        assert!(
            StdCommand::new("kill")
                .args([sig, &self.child.id().to_string()])
                .status()
                .unwrap()
                .success()
        );
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `1\n2\n...n\n`.
fn numbers(n: u64) -> String {
    (1..=n).map(|i| format!("{i}\n")).collect()
}

/// (partition, offset) of each record line.
fn ids(records: &[Value]) -> Vec<(u64, u64)> {
    records
        .iter()
        .map(|r| (r["partition"].as_u64().unwrap(), r["offset"].as_u64().unwrap()))
        .collect()
}

#[test]
fn topics_are_created_listed_described_and_deleted() {
    let server = Server::start();
    let created = json_lines(&server.ok(&[
        "topics",
        "create",
        "orders",
        "--partitions",
        "3",
        "--fsync",
        "interval:50",
        "--retention-ms",
        "none",
        "--retention-bytes",
        "1000000",
        "--segment-bytes",
        "1048576",
        "--max-record-bytes",
        "1000",
    ]));
    assert_eq!(created.len(), 1);
    let orders = &created[0];
    assert_eq!(orders["name"], "orders");
    assert_eq!(
        orders["config"],
        json!({"partitions": 3, "fsync": "interval:50", "retention_ms": null, "retention_bytes": 1000000,
               "segment_bytes": 1048576, "max_record_bytes": 1000})
    );
    assert_eq!(orders["partitions"].as_array().unwrap().len(), 3);
    let audit = &json_lines(&server.ok(&["topics", "create", "audit"]))[0];
    assert_eq!(audit["config"]["partitions"], 1);
    assert_eq!(audit["config"]["fsync"], "always");

    let listed = json_lines(&server.ok(&["topics", "list"]));
    let names: BTreeSet<&str> = listed.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, BTreeSet::from(["audit", "orders"]));
    let described = json_lines(&server.ok(&["topics", "describe", "orders"]));
    assert_eq!(described, created);

    // --url after the subcommand, and FERRY_URL instead of --url.
    let out = ferry()
        .args(["topics", "describe", "audit", "--url", &server.url])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    assert_eq!(json_lines(&String::from_utf8(out).unwrap())[0]["name"], "audit");
    let out = ferry()
        .env("FERRY_URL", &server.url)
        .args(["topics", "list"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    assert_eq!(json_lines(&String::from_utf8(out).unwrap()).len(), 2);

    let err = server.fails(&["topics", "create", "orders"]);
    assert!(err.contains("topic_exists"), "{err}");
    let err = server.fails(&["topics", "create", "bad", "--partitions", "0"]);
    assert!(err.starts_with("error: --partitions: "), "{err}");
    assert!(err.contains("invalid_config"), "{err}");
    let err = server.fails(&["topics", "create", "bad", "--fsync", "sometimes"]);
    assert!(err.contains("--fsync") && err.contains("interval:<ms>"), "{err}");

    assert_eq!(server.ok(&["topics", "delete", "audit"]), "");
    assert_eq!(json_lines(&server.ok(&["topics", "list"])).len(), 1);
    let err = server.fails(&["topics", "describe", "audit"]);
    assert!(err.contains("topic_not_found"), "{err}");
}

#[test]
fn a_sent_record_is_consumed_back_exactly() {
    let server = Server::start();
    server.topic("t", 1);
    let value = r#"{"n": 1, "s": "é", "list": [1, 2.50]}"#;
    let out = server.ok(&[
        "send",
        "--topic",
        "t",
        "--key",
        "user-1",
        "--header",
        "trace=abc",
        "--header",
        "kind=a=b",
        value,
    ]);
    assert_eq!(out, "{\"partition\":0,\"offset\":0}\n");
    assert_eq!(
        server.ok(&["send", "--topic", "t", "hello"]),
        "{\"partition\":0,\"offset\":1}\n"
    );
    server.ok(&["send", "--topic", "t", "--raw", "42"]);
    server.ok(&["send", "--topic", "t", "42"]);
    server.ok(&["send", "--topic", "t", "--partition", "0", "-5"]);

    let out = server.ok(&["consume", "--topic", "t", "--from", "earliest"]);
    let records = json_lines(&out);
    assert_eq!(records.len(), 5, "{out}");
    let first = out.lines().next().unwrap();
    let timestamp = records[0]["timestamp"].as_i64().unwrap();
    assert!(timestamp > 0);
    // Exactly the record sent: the value's JSON text as it was written, spaces and key order included.
    assert_eq!(
        first,
        format!(
            r#"{{"topic":"t","partition":0,"offset":0,"timestamp":{timestamp},"key":"user-1","headers":{{"trace":"abc","kind":"a=b"}},"value":{value}}}"#
        )
    );
    assert_eq!(records[1]["value"], "hello");
    assert_eq!(records[1]["key"], Value::Null);
    assert_eq!(records[1]["headers"], json!({}));
    assert_eq!(records[2]["value"], "42");
    assert_eq!(records[3]["value"], 42);
    assert_eq!(records[4]["value"], -5);

    let some = json_lines(&server.ok(&["consume", "--topic", "t", "--from", "2", "--max", "2"]));
    assert_eq!(ids(&some), [(0, 2), (0, 3)]);
    assert_eq!(server.ok(&["consume", "--topic", "t", "--from", "latest"]), "");
    let one = json_lines(&server.ok(&["consume", "--topic", "t", "--partition", "0", "--max", "1"]));
    assert_eq!(ids(&one), [(0, 0)]);
}

#[test]
fn stdin_lines_are_sent_in_order_and_read_back() {
    let server = Server::start();
    server.topic("t", 1);
    let acks = json_lines(&server.ok_with_stdin(&["send", "--topic", "t", "-"], numbers(1000)));
    let expected: Vec<Value> = (0..1000).map(|o| json!({"partition": 0, "offset": o})).collect();
    assert_eq!(acks, expected);

    let records = json_lines(&server.ok(&["consume", "--topic", "t", "--max", "1000"]));
    let values: Vec<u64> = records.iter().map(|r| r["value"].as_u64().unwrap()).collect();
    assert_eq!(values, (1..=1000).collect::<Vec<_>>());
    let ten = json_lines(&server.ok(&["consume", "--topic", "t", "--max", "10"]));
    assert_eq!(ten.len(), 10);

    // Spread over partitions by key: each line's offset is printed, in input order.
    server.topic("spread", 4);
    let acks =
        json_lines(&server.ok_with_stdin(&["send", "--topic", "spread", "--key", "k", "-"], numbers(50)));
    assert_eq!(acks.len(), 50);
    assert!(acks.iter().all(|a| a["partition"] == acks[0]["partition"]));
    let offsets: Vec<u64> = acks.iter().map(|a| a["offset"].as_u64().unwrap()).collect();
    assert_eq!(offsets, (0..50).collect::<Vec<_>>());
}

#[test]
fn a_failing_stdin_line_is_named_and_the_lines_before_it_stay_printed() {
    let server = Server::start();
    server.ok(&["topics", "create", "small", "--max-record-bytes", "100"]);
    let input = format!("a\nb\n{}\nd\n", "x".repeat(200));
    let out = server
        .ferry(&["send", "--topic", "small", "-"])
        .write_stdin(input)
        .assert()
        .failure()
        .get_output()
        .clone();
    let acks = json_lines(&String::from_utf8(out.stdout).unwrap());
    assert_eq!(
        acks,
        [
            json!({"partition": 0, "offset": 0}),
            json!({"partition": 0, "offset": 1})
        ]
    );
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("stdin line 3"), "{err}");
    assert!(err.contains("max_record_bytes 100"), "{err}");
    let stored = json_lines(&server.ok(&["consume", "--topic", "small"]));
    assert_eq!(stored.len(), 2);

    let out = server
        .ferry(&["send", "--topic", "small", "-"])
        .write_stdin(&b"ok\n\xff\xfe\n"[..])
        .assert()
        .failure()
        .get_output()
        .clone();
    assert_eq!(json_lines(&String::from_utf8(out.stdout).unwrap()).len(), 1);
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("stdin line 2") && err.contains("UTF-8"), "{err}");
}

#[test]
fn follow_reads_every_partition_until_max() {
    let server = Server::start();
    server.topic("t", 2);
    let mut run = server.spawn(&["consume", "--topic", "t", "--follow", "--max", "4"]);
    server.ok_with_stdin(&["send", "--topic", "t", "--partition", "0", "-"], numbers(2));
    server.ok_with_stdin(&["send", "--topic", "t", "--partition", "1", "-"], numbers(3));
    let mut out = String::new();
    run.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    assert!(run.child.wait().unwrap().success());
    let records = json_lines(&out);
    assert_eq!(records.len(), 4, "{out}");
    // Each partition in order; both partitions read.
    for p in [0, 1] {
        let offsets: Vec<u64> = ids(&records)
            .into_iter()
            .filter(|(q, _)| *q == p)
            .map(|(_, o)| o)
            .collect();
        assert!(
            !offsets.is_empty() && offsets.windows(2).all(|w| w[0] + 1 == w[1]),
            "{out}"
        );
    }
    let err = server.fails(&["send", "--topic", "t", "--partition", "2", "x"]);
    assert!(
        err.starts_with("error: --partition: ") && err.contains("partition_not_found"),
        "{err}"
    );
}

#[test]
fn stream_group_runs_continue_after_each_others_commit() {
    let server = Server::start();
    server.topic("t", 2);
    server.ok_with_stdin(&["send", "--topic", "t", "--partition", "0", "-"], numbers(6));
    server.ok_with_stdin(&["send", "--topic", "t", "--partition", "1", "-"], numbers(4));

    let first = json_lines(&server.ok(&["consume", "--topic", "t", "--group", "g", "--max", "4"]));
    assert_eq!(first.len(), 4);
    let second = json_lines(&server.ok(&["consume", "--topic", "t", "--group", "g", "--max", "100"]));
    assert_eq!(second.len(), 6);
    let (a, b): (BTreeSet<_>, BTreeSet<_>) = (
        ids(&first).into_iter().collect(),
        ids(&second).into_iter().collect(),
    );
    assert!(a.is_disjoint(&b), "{a:?} {b:?}");
    let all: BTreeSet<(u64, u64)> = (0..6).map(|o| (0, o)).chain((0..4).map(|o| (1, o))).collect();
    assert_eq!(&a | &b, all);
    assert_eq!(server.ok(&["consume", "--topic", "t", "--group", "g"]), "");

    // --from moves the group (it has no members now) before reading.
    let again = json_lines(&server.ok(&["consume", "--topic", "t", "--group", "g", "--from", "earliest"]));
    assert_eq!(again.len(), 10);
    let err = server.fails(&["consume", "--topic", "t", "--group", "g", "--partition", "0"]);
    assert!(err.contains("--partition"), "{err}");
}

#[test]
fn group_members_share_partitions_and_leave_on_sigint() {
    let server = Server::start();
    server.topic("t", 2);
    let member = [
        "consume",
        "--topic",
        "t",
        "--group",
        "m",
        "--follow",
        "--log-level",
        "info",
    ];
    let mut a = server.spawn(&member);
    let a_err = lines_of(a.stderr.take().unwrap());
    wait_for_line(&a_err, "joined the stream group");
    let mut b = server.spawn(&member);
    let b_err = lines_of(b.stderr.take().unwrap());
    wait_for_line(&b_err, "joined the stream group");

    // While members are live, the group cannot be moved.
    let err = server.fails(&["consume", "--topic", "t", "--group", "m", "--from", "earliest"]);
    assert!(
        err.contains("--from earliest") && err.contains("group_has_members"),
        "{err}"
    );

    server.ok_with_stdin(&["send", "--topic", "t", "--partition", "0", "-"], numbers(10));
    server.ok_with_stdin(&["send", "--topic", "t", "--partition", "1", "-"], numbers(10));
    let (tx, rx) = mpsc::channel();
    for (name, out) in [("a", a.stdout.take().unwrap()), ("b", b.stdout.take().unwrap())] {
        let tx = tx.clone();
        let lines = lines_of(out);
        thread::spawn(move || {
            for line in lines {
                if tx.send((name, line)).is_err() {
                    return;
                }
            }
        });
    }
    let mut got: Vec<(&str, Value)> = Vec::new();
    while got.len() < 20 {
        let (name, line) = rx.recv_timeout(Duration::from_secs(60)).unwrap();
        got.push((name, serde_json::from_str(&line).unwrap()));
    }
    let partitions_of = |who: &str| -> BTreeSet<u64> {
        got.iter()
            .filter(|(n, _)| *n == who)
            .map(|(_, r)| r["partition"].as_u64().unwrap())
            .collect()
    };
    let (pa, pb) = (partitions_of("a"), partitions_of("b"));
    assert_eq!(pa.len(), 1, "{got:?}");
    assert_eq!(pb.len(), 1, "{got:?}");
    assert!(pa.is_disjoint(&pb));
    let all: BTreeSet<(u64, u64)> = got
        .iter()
        .map(|(_, r)| (r["partition"].as_u64().unwrap(), r["offset"].as_u64().unwrap()))
        .collect();
    assert_eq!(all.len(), 20);

    for (p, err) in [(&mut a, &a_err), (&mut b, &b_err)] {
        p.signal("-INT");
        assert!(p.child.wait().unwrap().success());
        let rest: Vec<String> = err.iter().collect();
        assert!(!rest.iter().any(|l| l.contains("error")), "{rest:?}");
    }
    // Both left: the group can be moved again, and everything was committed.
    assert_eq!(
        server.ok(&["consume", "--topic", "t", "--group", "m", "--from", "latest"]),
        ""
    );
}

#[test]
fn a_closed_stdout_ends_consume_quietly_and_leaves_the_group() {
    let server = Server::start();
    server.topic("t", 1);
    server.ok_with_stdin(&["send", "--topic", "t", "-"], numbers(5000));
    for args in [
        &["consume", "--topic", "t"][..],
        &["consume", "--topic", "t", "--group", "p"][..],
    ] {
        let mut run = server.spawn(args);
        let mut first = String::new();
        BufReader::new(run.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        // Reader dropped: the pipe is closed with thousands of records still to write.
        assert!(first.contains("\"offset\":0"), "{first}");
        let status = run.child.wait().unwrap();
        let mut err = String::new();
        run.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        assert!(status.success(), "{args:?}: {err}");
        assert_eq!(err, "", "{args:?}");
    }
    // The group member left: the group can be moved.
    server.ok(&[
        "consume", "--topic", "t", "--group", "p", "--from", "earliest", "--max", "1",
    ]);
}

#[test]
fn queues_receive_ack_nack_and_report_depth() {
    let server = Server::start();
    server.topic("q", 1);
    server.ok_with_stdin(&["send", "--topic", "q", "-"], "a\nb\nc\n");
    let created = json_lines(&server.ok(&[
        "queue",
        "create",
        "--topic",
        "q",
        "--group",
        "w",
        "--max-deliveries",
        "3",
        "--visibility-ms",
        "60000",
    ]));
    assert_eq!(created[0]["config"]["max_deliveries"], 3);
    assert_eq!(created[0]["dead_letter_topic"], "q.w.dlq");

    let got = json_lines(&server.ok(&["queue", "receive", "--topic", "q", "--group", "w", "--max", "2"]));
    assert_eq!(ids(&got), [(0, 0), (0, 1)]);
    assert_eq!(got[0]["value"], "a");
    assert_eq!(got[0]["topic"], "q");
    assert_eq!(got[0]["delivery_count"], 1);
    assert!(got[0]["lease_expires_ms"].as_i64().unwrap() > 0);
    let info = &json_lines(&server.ok(&["queue", "info", "--topic", "q", "--group", "w"]))[0];
    assert_eq!(
        (info["depth"].as_u64(), info["in_flight"].as_u64()),
        (Some(3), Some(2))
    );

    assert_eq!(
        server.ok(&["queue", "ack", "--topic", "q", "--group", "w", "0:0"]),
        ""
    );
    assert_eq!(
        server.ok(&[
            "queue",
            "nack",
            "--topic",
            "q",
            "--group",
            "w",
            "--delay-ms",
            "0",
            "0:1"
        ]),
        ""
    );
    let err = server.fails(&["queue", "ack", "--topic", "q", "--group", "w", "0:0"]);
    assert!(err.contains("not_leased"), "{err}");
    let info = &json_lines(&server.ok(&["queue", "info", "--topic", "q", "--group", "w"]))[0];
    assert_eq!(
        (info["depth"].as_u64(), info["in_flight"].as_u64()),
        (Some(2), Some(0))
    );

    let got = json_lines(&server.ok(&["queue", "receive", "--topic", "q", "--group", "w", "--ack"]));
    let counts: BTreeSet<(u64, u64)> = got
        .iter()
        .map(|d| {
            (
                d["offset"].as_u64().unwrap(),
                d["delivery_count"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(counts, BTreeSet::from([(1, 2), (2, 1)]));
    let info = &json_lines(&server.ok(&["queue", "info", "--topic", "q", "--group", "w"]))[0];
    assert_eq!(
        (info["depth"].as_u64(), info["in_flight"].as_u64()),
        (Some(0), Some(0))
    );
    assert_eq!(
        server.ok(&["queue", "receive", "--topic", "q", "--group", "w"]),
        ""
    );

    let err = server.fails(&["queue", "ack", "--topic", "q", "--group", "w", "x"]);
    assert!(err.contains("PARTITION:OFFSET"), "{err}");
    let err = server.fails(&[
        "queue",
        "create",
        "--topic",
        "q",
        "--group",
        "v",
        "--max-deliveries",
        "0",
    ]);
    assert!(err.starts_with("error: --max-deliveries: "), "{err}");
    let err = server.fails(&["queue", "info", "--topic", "q", "--group", "nobody"]);
    assert!(err.contains("group_not_found"), "{err}");
}

#[test]
fn a_subscription_filter_delivers_only_matching_records() {
    let server = Server::start();
    server.topic("s", 2);
    let created = json_lines(&server.ok(&[
        "subscriptions",
        "create",
        "--topic",
        "s",
        "orders",
        "--filter-policy",
        r#"{"type": ["order"]}"#,
        "--max-deliveries",
        "2",
    ]));
    assert_eq!(created[0]["name"], "orders");
    assert_eq!(created[0]["kind"], "queue");
    assert_eq!(created[0]["filter_policy"], json!({"type": ["order"]}));
    assert_eq!(created[0]["queue"]["max_deliveries"], 2);
    let policy = server.dir.path().join("eu.json");
    std::fs::write(&policy, r#"{"region": ["eu"]}"#).unwrap();
    server.ok(&[
        "subscriptions",
        "create",
        "--topic",
        "s",
        "eu",
        "--kind",
        "stream",
        "--filter-policy-file",
        policy.to_str().unwrap(),
        "--filter-scope",
        "headers",
    ]);
    let listed = json_lines(&server.ok(&["subscriptions", "list", "--topic", "s"]));
    let names: BTreeSet<&str> = listed.iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, BTreeSet::from(["eu", "orders"]));

    server.ok_with_stdin(
        &["send", "--topic", "s", "-"],
        "{\"type\":\"order\",\"n\":1}\n{\"type\":\"refund\",\"n\":2}\n{\"type\":\"order\",\"n\":3}\n",
    );
    server.ok(&[
        "send",
        "--topic",
        "s",
        "--header",
        "region=eu",
        r#"{"type":"refund","n":4}"#,
    ]);
    // Many records the stream subscription drops, so that its group's polls come back empty for a while.
    server.ok_with_stdin(
        &["send", "--topic", "s", "--header", "region=us", "-"],
        numbers(3000),
    );
    server.ok(&["send", "--topic", "s", "--header", "region=eu", r#"{"n":5}"#]);

    let got = json_lines(&server.ok(&[
        "queue", "receive", "--topic", "s", "--group", "orders", "--max", "100",
    ]));
    let ns: BTreeSet<u64> = got.iter().map(|d| d["value"]["n"].as_u64().unwrap()).collect();
    assert_eq!(ns, BTreeSet::from([1, 3]));
    let got = json_lines(&server.ok(&["consume", "--topic", "s", "--group", "eu"]));
    let ns: Vec<u64> = got.iter().map(|r| r["value"]["n"].as_u64().unwrap()).collect();
    assert_eq!(ns, [4, 5]);

    let err = server.fails(&[
        "subscriptions",
        "create",
        "--topic",
        "s",
        "x",
        "--filter-policy",
        "{",
    ]);
    assert!(err.contains("--filter-policy"), "{err}");
    let err = server.fails(&[
        "subscriptions",
        "create",
        "--topic",
        "s",
        "x",
        "--filter-policy",
        r#"{"n": [{"numeric": ["<"]}]}"#,
    ]);
    assert!(err.starts_with("error: --filter-policy: "), "{err}");
    assert!(err.contains("invalid_filter_policy"), "{err}");

    assert_eq!(
        server.ok(&["subscriptions", "delete", "--topic", "s", "orders"]),
        ""
    );
    assert_eq!(
        json_lines(&server.ok(&["subscriptions", "list", "--topic", "s"])).len(),
        1
    );
}

#[test]
fn errors_name_the_server_code_the_flag_or_the_unreachable_server() {
    let server = Server::start();
    server.topic("t", 1);
    server.ok(&["send", "--topic", "t", "x"]);
    for args in [
        &["topics", "describe", "nope"][..],
        &["send", "--topic", "nope", "x"][..],
        &["send", "--topic", "nope", "-"][..],
        &["consume", "--topic", "nope"][..],
        &["consume", "--topic", "nope", "--group", "g"][..],
        &["queue", "receive", "--topic", "nope", "--group", "g"][..],
        &["subscriptions", "list", "--topic", "nope"][..],
    ] {
        let err = server.fails(args);
        assert!(
            err.starts_with("error: ") && err.contains("topic_not_found"),
            "{args:?}: {err}"
        );
    }

    let err = server.fails(&["send", "--topic", "t", "--header", "novalue", "x"]);
    assert!(err.contains("--header") && err.contains("KEY=VALUE"), "{err}");
    let err = server.fails(&["send", "--topic", "t", "--header", "a=1", "--header", "a=2", "x"]);
    assert!(err.contains("--header `a` is given twice"), "{err}");
    let err = server.fails(&["consume", "--topic", "t", "--from", "soon"]);
    assert!(
        err.contains("--from") && err.contains("`earliest`, `latest` or an offset"),
        "{err}"
    );
    let err = server.fails(&["consume", "--topic", "t", "--from", "99"]);
    assert!(err.contains("--from 99: out of range for partition 0"), "{err}");
    let err = server.fails(&["consume", "--topic", "t", "--partition", "3"]);
    assert!(err.contains("--partition 3"), "{err}");
    let err = server.fails(&["send", "--topic", "t", "--partition", "3", "-"]);
    assert!(err.contains("--partition 3"), "{err}");
    let err = server.fails(&["send", "--topic", "t"]);
    assert!(err.contains("VALUE"), "{err}");

    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    for args in [
        &["topics", "list"][..],
        &["send", "--topic", "t", "x"][..],
        &["consume", "--topic", "t", "--follow"][..],
    ] {
        let err = failure_of(ferry().arg(args[0]).args(["--url", &url]).args(&args[1..]));
        assert!(
            err.contains(&format!("no answer from a ferry server at {url}")),
            "{err}"
        );
        assert!(err.contains("is `ferry up` running there?"), "{err}");
    }
    let err = failure_of(ferry().args(["topics", "list", "--url", "ftp://x"]));
    assert!(err.contains("--url") && err.contains("ftp"), "{err}");
}

#[test]
fn a_token_is_sent_from_the_flag_or_the_environment() {
    let server = Server::start_with(&[("FERRY_TOKENS", "s3cret-token")]);
    let err = server.fails(&["topics", "list"]);
    assert!(err.contains("unauthorized"), "{err}");
    let err = server.fails(&["topics", "list", "--token", "wrong"]);
    assert!(err.contains("unauthorized") && !err.contains("wrong"), "{err}");
    server.ok(&["topics", "create", "t", "--token", "s3cret-token"]);
    let out = server
        .ferry(&["send", "--topic", "t", "x"])
        .env("FERRY_TOKEN", "s3cret-token")
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "{\"partition\":0,\"offset\":0}\n"
    );
    // The help shows where a token comes from, never the token.
    let help = ferry()
        .args(["send", "--help"])
        .env("FERRY_TOKEN", "s3cret-token")
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let help = String::from_utf8(help).unwrap();
    assert!(help.contains("FERRY_TOKEN") && !help.contains("s3cret"), "{help}");
}

#[test]
fn help_lists_the_broker_commands() {
    let out = ferry()
        .arg("--help")
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let out = String::from_utf8(out).unwrap();
    for word in ["topics", "send", "consume", "queue", "subscriptions"] {
        assert!(out.contains(word), "`{word}` missing from:\n{out}");
    }
    let out = ferry()
        .args(["consume", "--help"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let out = String::from_utf8(out).unwrap();
    assert!(out.contains("no members"), "{out}");
    assert!(out.contains("FERRY_URL"), "{out}");
}
