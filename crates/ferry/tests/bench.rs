//! `ferry bench` end to end: every peer it knows, tiny runs, the report's shape and sanity. Figures are
//! not asserted (benchmarks measure, tests check).

mod common;

use std::process::Command;

#[test]
fn bench_measures_every_peer_and_writes_its_report() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench.json");
    let markdown = dir.path().join("bench.md");
    let mut out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args([
            "bench",
            "--quick",
            "--seconds",
            "0.4",
            "--durability",
            "background,on-disk",
            "--dir",
        ])
        .arg(dir.path())
        .arg("--json")
        .arg(&json)
        .arg("--markdown")
        .arg(&markdown)
        .arg("--chart")
        .arg(dir.path().join("bench.svg"))
        .arg("--ingest")
        .arg(common::example("scream.toml"))
        .args(["--ingest-concurrency", "8", "--rate", "1000"])
        .stdout(std::fs::File::create(dir.path().join("stdout")).unwrap())
        .stderr(std::fs::File::create(dir.path().join("stderr")).unwrap())
        .spawn()
        .unwrap();
    // A hung peer must fail the test, not hang CI: a deadline far past the ~1 minute it takes.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(600);
    let status = loop {
        if let Some(status) = out.try_wait().unwrap() {
            break Some(status);
        }
        if std::time::Instant::now() > deadline {
            out.kill().unwrap();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    let stdout = std::fs::read_to_string(dir.path().join("stdout")).unwrap();
    let stderr = std::fs::read_to_string(dir.path().join("stderr")).unwrap();
    let status = status.unwrap_or_else(|| panic!("ferry bench ran for 10 minutes: {stdout}\n{stderr}"));
    assert!(status.success(), "{stdout}\n{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let rows = report["rows"].as_array().unwrap();
    let unmeasured = report["unmeasured"].as_array().unwrap();
    // A server that is not installed is skipped, and said so; CI requires every one.
    let installed = |peer: &str| {
        let missing = unmeasured
            .iter()
            .any(|u| u["peer"] == peer && u["reason"].as_str().unwrap().contains("not installed"));
        assert!(
            !(missing && common::services_required()),
            "{peer} is not installed: {unmeasured:?}"
        );
        if missing {
            println!("SKIPPED: {peer} is not installed (scripts/setup installs it)");
        }
        !missing
    };
    let (nats, rabbit) = (installed("NATS JetStream"), installed("RabbitMQ"));
    let cells = |peer: &str, class: &str| {
        rows.iter()
            .filter(|r| r["median"]["peer"].as_str().unwrap().starts_with(peer))
            .filter(|r| r["median"]["durability"] == class)
            .count()
    };
    for class in ["background", "on_disk"] {
        assert_eq!(cells("ferry (embedded)", class), 4, "{class}");
        assert_eq!(cells("ferry (server, HTTP)", class), 4, "{class}");
        assert_eq!(cells("ferry (server, wire)", class), 4, "{class}");
        if rabbit {
            assert_eq!(cells("RabbitMQ", class), 4, "{class}: {stdout}");
        }
    }
    if nats {
        assert_eq!(cells("NATS JetStream", "background"), 4, "{stdout}");
        // nats-server before 2.10 cannot fsync before acknowledging: said, not measured.
        if cells("NATS JetStream", "on_disk") == 0 {
            assert!(
                unmeasured.iter().any(|u| u["durability"] == "on_disk"
                    && u["reason"].as_str().unwrap().contains("sync_interval")),
                "{unmeasured:?}"
            );
        }
    }
    for r in rows {
        let m = &r["median"];
        assert!(m["messages"].as_u64().unwrap() > 0, "{m}");
        if m["kind"] == "paced" {
            // 1000 messages/s for 0.4 s: the schedule has 400 slots, and no more are sent.
            assert!(m["messages"].as_u64().unwrap() <= 400, "{m}");
            assert_eq!(m["shape"]["rate"], 1000, "{m}");
        }
        assert!(m["msgs_per_s"].as_f64().unwrap() > 0.0, "{m}");
        if m["kind"] != "consume" {
            let l = &m["latency_us"];
            assert!(l["p50"].as_u64().unwrap() <= l["p99"].as_u64().unwrap(), "{m}");
            assert!(l["p99"].as_u64().unwrap() <= l["max"].as_u64().unwrap(), "{m}");
        }
    }
    // One ratio line per other system and workload, ferry's server against it.
    let ratios = report["ratios"].as_array().unwrap();
    if nats {
        assert!(
            ["HTTP", "wire"].iter().all(|way| ratios.iter().any(|l| l
                .as_str()
                .unwrap()
                .starts_with(&format!("ferry (server, {way}) / NATS JetStream")))),
            "{ratios:?}"
        );
    }
    // And one line per system and class with all four workloads.
    if nats {
        let summary = report["summary"].as_array().unwrap();
        let line = summary
            .iter()
            .map(|l| l.as_str().unwrap())
            .find(|l| l.starts_with("ferry (server, HTTP) / NATS JetStream"))
            .unwrap_or_else(|| panic!("{summary:?}"));
        for part in ["publish ", "consume ", "publish+consume ", "p99 at 1.0k/s "] {
            assert!(line.contains(part), "{line}");
        }
        assert!(stdout.contains(line), "{stdout}");
    }
    // HTTP ingest: the seed's POST /send under load, every request answered 2xx.
    let ingest = &report["ingest"];
    assert!(ingest["requests"].as_u64().unwrap() > 0, "{ingest}");
    assert_eq!(ingest["errors"], 0, "{ingest}");
    assert!(stdout.contains("HTTP ingest,"), "{stdout}");
    assert!(stdout.contains("| durability | workload |"), "{stdout}");
    assert!(
        std::fs::read_to_string(&markdown)
            .unwrap()
            .contains("ferry (embedded)")
    );
    let chart = std::fs::read_to_string(dir.path().join("bench.svg")).unwrap();
    assert!(
        chart.starts_with("<svg") && chart.trim_end().ends_with("</svg>"),
        "{chart}"
    );
    assert_eq!(
        chart.matches(" msgs/s</title>").count(),
        rows.len(),
        "one bar per cell"
    );
}

/// `--workloads` runs the workloads named and reports only those; asking for nothing runnable is a
/// clear error naming the flags.
#[test]
fn bench_runs_only_the_workloads_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench.json");
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args([
            "bench",
            "--quick",
            "--peers",
            "embedded",
            "--durability",
            "background",
            "--seconds",
            "0.3",
            "--rate",
            "1000",
            "--workloads",
            "consume,fixed-rate",
            "--dir",
        ])
        .arg(dir.path())
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let mut kinds: Vec<&str> = report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["median"]["kind"].as_str().unwrap())
        .collect();
    kinds.sort_unstable();
    assert_eq!(kinds, ["consume", "paced"]);

    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args([
            "bench",
            "--peers",
            "embedded",
            "--rate",
            "0",
            "--workloads",
            "fixed-rate",
        ])
        .arg("--dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--rate 0") && stderr.contains("--workloads"),
        "{stderr}"
    );
}
