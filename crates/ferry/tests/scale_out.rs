//! Scale-out on NATS JetStream: three `ferry up` processes on different ports share one JetStream and
//! one pipeline. Records posted to one process are worked on by all three; one is killed with SIGKILL
//! mid-stream, and the others take over the records it held once their lease runs out. Every record is
//! counted at the webhook: none lost, duplicates reported (at-least-once).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Up, free_port, post, up, wait_for, webhook};
use ferry_engines::servers::{NatsServer, require};

const RECORDS: usize = 300;

fn config(hook_port: u16) -> String {
    format!(
        r#"
[engine]
nats = {{ url = "${{NATS_URL}}" }}

[pipelines.work]
lease = "2s"
source = {{ type = "http", name = "in", path = "/in", fields = {{ n = "integer" }} }}

[[pipelines.work.processors]]
name = "tag"
type = "map"
set = {{ worker = "${{WORKER}}" }}

[[pipelines.work.sinks]]
type = "http"
url = "http://127.0.0.1:{hook_port}/hook"
"#
    )
}

#[test]
fn three_processes_share_a_pipeline_and_survive_a_sigkill() {
    let Some(nats) = require(NatsServer::start(), "nats-server") else {
        return;
    };
    let hook_port = free_port();
    // Each call takes 5 ms, one at a time: records pile up in the stages, so the killed process holds
    // some when it dies.
    let got = webhook(hook_port, Duration::from_millis(5));
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let url = nats.url();
    let start = |i: usize, worker: &str| -> Up {
        let file = dirs[i].path().join("work.toml");
        std::fs::write(&file, config(hook_port)).unwrap();
        up(
            dirs[i].path(),
            &["--config", file.to_str().unwrap(), "--listen", "127.0.0.1:0"],
            &[("NATS_URL", url.as_str()), ("WORKER", worker)],
        )
    };
    let a = start(0, "a");
    let mut b = start(1, "b");
    let _c = start(2, "c");
    assert_eq!(a.line["engine"], "nats");

    // Everything goes in through process a.
    for n in 0..RECORDS {
        if n == RECORDS / 3 {
            // Mid-stream, b dies without a chance to ack or give anything back.
            wait_for(
                "b to have delivered some records",
                Duration::from_secs(60),
                || {
                    got.lock()
                        .unwrap()
                        .iter()
                        .any(|v| v["worker"] == "b")
                        .then_some(())
                },
            );
            b.child.kill().unwrap();
            b.child.wait().unwrap();
        }
        let r = post(&a.url, "/in", &format!(r#"{{"n": {n}}}"#));
        assert_eq!(r.status, 200, "{}", r.body);
    }

    let bodies = wait_for(
        &format!("all {RECORDS} records at the webhook"),
        Duration::from_secs(120),
        || {
            let b = got.lock().unwrap().clone();
            let distinct: std::collections::BTreeSet<u64> =
                b.iter().map(|v| v["n"].as_u64().unwrap()).collect();
            (distinct.len() == RECORDS).then_some(b)
        },
    );
    let mut by_worker: BTreeMap<String, usize> = BTreeMap::new();
    for v in &bodies {
        *by_worker
            .entry(v["worker"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    let duplicates = bodies.len() - RECORDS;
    eprintln!(
        "{RECORDS} records, {} deliveries, {duplicates} duplicates, by worker {by_worker:?}",
        bodies.len()
    );
    // All three processes worked on records that came in through a.
    for w in ["a", "b", "c"] {
        assert!(
            by_worker.get(w).is_some_and(|&n| n > 0),
            "{w} did no work: {by_worker:?}"
        );
    }
    // Records posted after the kill were all worked on by a and c.
    let late_by_b = bodies
        .iter()
        .filter(|v| v["n"].as_u64().unwrap() >= (RECORDS / 3) as u64 && v["worker"] == "b")
        .count();
    assert_eq!(late_by_b, 0);
}
