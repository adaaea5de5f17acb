//! Scale-out on NATS JetStream: three ferry processes on different ports share one JetStream and one
//! pipeline. Records go in through one (`ferry run` of the `http` source stage) and are worked on by
//! the other two (`ferry up`). While the webhook is down both hold records in their retry loops; one is
//! then killed with SIGKILL, the webhook comes up, and the survivor takes over what the killed one held
//! once its lease runs out. Every record is counted at the webhook: none lost, duplicates reported
//! (at-least-once).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::{Run, Up, free_port, metric, post, run, up, wait_for, webhook};
use ferry_engines::servers::{NatsServer, require};

const RECORDS: usize = 300;

fn config(hook_port: u16) -> String {
    format!(
        r#"
[engine]
nats = {{ url = "${{NATS_URL}}" }}

[pipelines.work]
lease = "2s"
retry = {{ max_attempts = 1000, initial_backoff = "50ms", max_backoff = "500ms" }}
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

/// `ferry run` of the source stage: it only takes records in, on its own port.
fn ingest(file: &std::path::Path, nats_url: &str) -> (Run, String) {
    let run = run(
        file,
        "work",
        "in",
        &[],
        &[("NATS_URL", nats_url), ("WORKER", "ingest")],
    );
    assert_eq!(run.line["engine"], "nats");
    let url = run.line["listening"].as_str().unwrap().to_string();
    (run, url)
}

#[test]
fn three_processes_share_a_pipeline_and_survive_a_sigkill() {
    let Some(nats) = require(NatsServer::start(), "nats-server") else {
        return;
    };
    let hook_port = free_port();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let url = nats.url();
    let file = |i: usize| {
        let f = dirs[i].path().join("work.toml");
        std::fs::write(&f, config(hook_port)).unwrap();
        f
    };
    let worker = |i: usize, name: &str| -> Up {
        let f = file(i);
        up(
            dirs[i].path(),
            &["--config", f.to_str().unwrap(), "--listen", "127.0.0.1:0"],
            &[("NATS_URL", url.as_str()), ("WORKER", name)],
        )
    };
    let mut b = worker(1, "b");
    let c = worker(2, "c");
    let (_a, a_url) = ingest(&file(0), &url);

    // Everything goes in through a, on its own port.
    for n in 0..RECORDS {
        let r = post(&a_url, "/in", &format!(r#"{{"n": {n}}}"#));
        assert_eq!(r.status, 200, "{}", r.body);
    }
    // The webhook is down: b and c each hold records in their sink's retry loop.
    let retries = "ferry_pipeline_retries_total{pipeline=\"work\",stage=\"http\"}";
    for (name, up) in [("b", &b), ("c", &c)] {
        wait_for(
            &format!("{name} to hold records"),
            Duration::from_secs(60),
            || metric(&up.url, retries).filter(|&v| v >= 1.0),
        );
    }
    // b dies holding them, without a chance to give anything back.
    b.child.kill().unwrap();
    b.child.wait().unwrap();
    let got = webhook(hook_port, Duration::ZERO);

    // Only c is left to deliver: what b held comes back to c once b's leases run out.
    let bodies = wait_for(
        &format!("all {RECORDS} records at the webhook"),
        Duration::from_secs(120),
        || {
            let b = got.lock().unwrap().clone();
            let distinct: BTreeSet<u64> = b.iter().map(|v| v["n"].as_u64().unwrap()).collect();
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
        "{RECORDS} records, {} deliveries, {duplicates} duplicates, tagged by {by_worker:?}",
        bodies.len()
    );
    // Both b and c worked on records that came in through a; b's were delivered by c.
    for w in ["b", "c"] {
        assert!(
            by_worker.get(w).is_some_and(|&n| n > 0),
            "{w} did no work: {by_worker:?}"
        );
    }
    assert_eq!(by_worker.keys().cloned().collect::<Vec<_>>(), ["b", "c"]);
    // c delivered everything, including what b held when it died.
    assert!(
        metric(
            &c.url,
            "ferry_pipeline_records_out_total{pipeline=\"work\",stage=\"http\"}"
        )
        .is_some_and(|v| v >= RECORDS as f64)
    );
}
