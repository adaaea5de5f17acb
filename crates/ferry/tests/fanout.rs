//! `examples/fanout.toml` (seed 004): one topic fanned out to two queue subscriptions, and archived by
//! landing date into a local directory or a real S3-compatible server (moto).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{example, free_port, post, records, services_required, up, wait_for};

/// The customer ids of the first `n` records the queue hands out; a receive may return fewer than it
/// was asked for (as SQS's does), so it asks again until it has `n`.
fn receive(url: &str, queue: &str, n: usize) -> Vec<String> {
    let mut got = Vec::new();
    for _ in 0..20 {
        got.extend(receive_once(url, queue, n - got.len()));
        if got.len() >= n {
            break;
        }
    }
    got
}

fn receive_once(url: &str, queue: &str, n: usize) -> Vec<String> {
    let r = post(
        url,
        &format!("/v1/queues/{queue}/topics/created-consumer/receive"),
        &format!(r#"{{"max_records": {n}, "max_wait_ms": 1000}}"#),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    v["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["value"]["customer_id"].as_str().unwrap().to_string())
        .collect()
}

fn today() -> String {
    let out = Command::new("date").args(["-u", "+%Y-%m-%d"]).output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn both_queues_get_every_record_and_the_archive_lands_by_date() {
    let dir = tempfile::tempdir().unwrap();
    let up = up(
        dir.path(),
        &[
            "--config",
            example("fanout.toml").to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ],
        &[
            ("CUSTOMER_INTERVAL", "20ms"),
            ("ARCHIVE_MAX_AGE", "500ms"),
            ("ARCHIVE_URL", ""),
        ],
    );
    let first: Vec<String> = wait_for("5 customers", Duration::from_secs(30), || {
        let r = records(&up.url, "created-consumer");
        (r.len() >= 5).then_some(r)
    })
    .iter()
    .take(5)
    .map(|r| r["value"]["customer_id"].as_str().unwrap().to_string())
    .collect();
    let r = &records(&up.url, "created-consumer")[0]["value"];
    for field in [
        "created_at",
        "updated_at",
        "customer_id",
        "name",
        "region",
        "country",
        "lat",
        "lng",
        "email",
        "phone",
    ] {
        assert!(!r[field].is_null(), "{field} missing in {r}");
    }
    assert_eq!(receive(&up.url, "api-orders-created-consumer", 5), first);
    assert_eq!(receive(&up.url, "api-payment-created-consumer", 5), first);
    let day = dir
        .path()
        .join("ferry-data/archive/messages/created-consumer")
        .join(format!("landing_date={}", today()));
    let archived: BTreeSet<String> =
        wait_for("the first 5 customers archived", Duration::from_secs(30), || {
            let mut ids = BTreeSet::new();
            for e in std::fs::read_dir(&day).ok()?.flatten() {
                let name = e.file_name().to_str().unwrap().to_string();
                // object_store writes `<key>#<n>` and renames it into place: an upload in progress.
                if name.contains('#') {
                    continue;
                }
                assert!(name.ends_with(".jsonl"), "{name}");
                for line in std::fs::read_to_string(e.path()).ok()?.lines() {
                    let v: serde_json::Value = serde_json::from_str(line).unwrap();
                    ids.insert(v["customer_id"].as_str().unwrap().to_string());
                }
            }
            first.iter().all(|id| ids.contains(id)).then_some(ids)
        });
    assert!(archived.len() >= 5);
}

struct Moto(Child);

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_archive_goes_to_s3() {
    let works = Command::new("python3")
        .args(["-m", "moto.server", "--help"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !works {
        assert!(
            !services_required(),
            "moto is not installed and FERRY_REQUIRE_SERVICES=1 (run scripts/setup)"
        );
        eprintln!("skipped: moto (S3-compatible server) is not installed (scripts/setup installs it)");
        return;
    }
    let port = free_port();
    let _moto = Moto(
        Command::new("python3")
            .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let endpoint = format!("http://127.0.0.1:{port}");
    wait_for("moto to accept connections", Duration::from_secs(30), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
    let created = common::http(&endpoint, "PUT", "/archive", None, "");
    assert_eq!(created.status, 200, "creating the bucket: {}", created.body);
    let dir = tempfile::tempdir().unwrap();
    let up = up(
        dir.path(),
        &[
            "--config",
            example("fanout.toml").to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ],
        &[
            ("CUSTOMER_INTERVAL", "20ms"),
            ("ARCHIVE_MAX_AGE", "500ms"),
            ("ARCHIVE_URL", "s3://archive"),
            ("AWS_ENDPOINT_URL", endpoint.as_str()),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_REGION", "us-east-1"),
        ],
    );
    let prefix = format!("messages/created-consumer/landing_date={}/", today());
    // Listing needs no signature on moto; reading an object does (its content is checked through
    // object_store in crates/pipeline/tests/object_store.rs).
    let (key, size) = wait_for("an object in the bucket", Duration::from_secs(60), || {
        let list = common::http(&endpoint, "GET", "/archive?list-type=2", None, "").body;
        let start = list.find(&format!("<Key>{prefix}"))? + 5;
        let end = start + list[start..].find("</Key>")?;
        let size_at = list[end..].find("<Size>")? + end + 6;
        let size_end = size_at + list[size_at..].find("</Size>")?;
        Some((
            list[start..end].to_string(),
            list[size_at..size_end].parse::<u64>().ok()?,
        ))
    });
    assert!(key.ends_with(".jsonl"), "{key}");
    assert!(size > 100, "{key} holds {size} bytes");
    assert!(!records(&up.url, "created-consumer").is_empty());
}
