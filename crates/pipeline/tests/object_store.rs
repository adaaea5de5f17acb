//! The `object_store` sink against a real S3-compatible server: a private moto_server on a free loopback
//! port (scripts/setup installs it). Without moto the test is skipped, unless `FERRY_REQUIRE_SERVICES=1`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Read;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use ferry_pipeline::config::ObjectStoreSinkConfig;
use ferry_pipeline::event::Origin;
use ferry_pipeline::sinks::object_store::ObjectStoreSink;
use ferry_pipeline::{BuildContext, Event, Sink};
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use serde_json::json;

const BUCKET: &str = "ferry-archive";

/// A running moto_server, killed (by its PID) when dropped.
struct Moto {
    child: Child,
    port: u16,
    log: std::path::PathBuf,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Moto {
    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// How to start moto here: `moto_server`, else `python3 -m moto.server`; `None` when neither works.
fn moto_command() -> Option<Command> {
    // Checked by running it: a pyenv shim exists even when the active Python has no moto.
    let works = |program: &str, args: &[&str]| {
        Command::new(program)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if works("moto_server", &["--help"]) {
        Some(Command::new("moto_server"))
    } else if works("python3", &["-m", "moto.server", "--help"]) {
        let mut c = Command::new("python3");
        c.args(["-m", "moto.server"]);
        Some(c)
    } else {
        None
    }
}

fn free_port() -> u16 {
    // The port is free once the listener is dropped; another process could take it before moto binds,
    // which shows as moto exiting, reported with its log.
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn start_moto(mut command: Command, dir: &std::path::Path) -> Moto {
    let port = free_port();
    let log = dir.join("moto.log");
    let child = command
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut moto = Moto { child, port, log };
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = moto.child.try_wait().unwrap() {
            panic!(
                "moto_server exited ({status}) before answering:\n{}",
                moto.log_text()
            );
        }
        if http.get(moto.endpoint()).send().await.is_ok() {
            return moto;
        }
        assert!(
            Instant::now() < deadline,
            "moto_server did not answer on port {port} within 30 s:\n{}",
            moto.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn ms(d: u32, h: u32) -> i64 {
    NaiveDate::from_ymd_opt(2026, 11, d)
        .unwrap()
        .and_hms_opt(h, 30, 0)
        .unwrap()
        .and_utc()
        .timestamp_millis()
}

fn event(offset: u64, timestamp_ms: i64) -> Event {
    Event {
        value: json!({"id": offset, "message": format!("created {offset}")}),
        headers: Vec::new(),
        key: None,
        origin: Some(Origin {
            topic: "messages.created".into(),
            partition: 0,
            offset,
            timestamp_ms,
        }),
    }
}

fn ids(jsonl: &[u8]) -> Vec<u64> {
    std::str::from_utf8(jsonl)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["id"]
                .as_u64()
                .unwrap()
        })
        .collect()
}

async fn list(store: &dyn ObjectStore, prefix: &str) -> (Vec<String>, Vec<String>) {
    let listed = store
        .list_with_delimiter(Some(&Path::from(prefix)))
        .await
        .unwrap();
    let mut dirs: Vec<_> = listed.common_prefixes.iter().map(ToString::to_string).collect();
    let mut objects: Vec<_> = listed.objects.iter().map(|o| o.location.to_string()).collect();
    dirs.sort();
    objects.sort();
    (dirs, objects)
}

async fn get(store: &dyn ObjectStore, key: &str) -> Vec<u8> {
    store
        .get(&Path::from(key))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .to_vec()
}

#[test]
#[allow(unsafe_code)]
fn batches_are_archived_to_s3() {
    let Some(command) = moto_command() else {
        assert!(
            std::env::var("FERRY_REQUIRE_SERVICES").as_deref() != Ok("1"),
            "moto_server is not installed and FERRY_REQUIRE_SERVICES=1: run scripts/setup"
        );
        eprintln!("skipped: moto_server not installed (scripts/setup installs it)");
        return;
    };
    // The sink reads credentials from the environment only (the config has no keys for them). SAFETY:
    // set before this test starts any thread (the runtime is built below), and this binary has no
    // other test that could read the environment meanwhile.
    unsafe {
        std::env::set_var("AWS_ACCESS_KEY_ID", "test");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "test");
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run(command));
}

async fn run(command: Command) {
    let dir = tempfile::tempdir().unwrap();
    let moto = start_moto(command, dir.path()).await;

    // object_store cannot create buckets; moto takes an unsigned request.
    let created = reqwest::Client::new()
        .put(format!("{}/{BUCKET}", moto.endpoint()))
        .send()
        .await
        .unwrap();
    assert!(
        created.status().is_success(),
        "creating the bucket: {}",
        created.status()
    );

    let ctx = BuildContext {
        pipeline: "messages".into(),
        stage: "archive".into(),
        data_dir: dir.path().to_path_buf(),
        config_dir: std::path::PathBuf::from("."),
        bus: Arc::new(ferry_broker::Broker::open(dir.path().join("broker")).unwrap()),
    };
    let config = |url: &str, gzip: bool| -> ObjectStoreSinkConfig {
        toml::from_str(&format!(
            "url = {url:?}\nkey = \"landing_date={{date}}/{{first_offset}}.jsonl\"\ngzip = {gzip}\n\
             endpoint = {:?}\nregion = \"us-east-1\"",
            moto.endpoint()
        ))
        .unwrap()
    };

    // A batch across midnight: three records on the 23rd, one on the 24th. Written twice, as after a
    // redelivery: the same two objects, not four.
    let sink = ObjectStoreSink::new(
        &config(&format!("s3://{BUCKET}/messages/created-consumer"), false),
        &ctx,
    )
    .unwrap();
    let batch = [
        event(40, ms(23, 23)),
        event(41, ms(23, 23)),
        event(42, ms(23, 23)),
        event(43, ms(24, 0)),
    ];
    sink.write(&batch).await.unwrap();
    sink.write(&batch).await.unwrap();

    let reader = AmazonS3Builder::new()
        .with_bucket_name(BUCKET)
        .with_endpoint(moto.endpoint())
        .with_allow_http(true)
        .with_region("us-east-1")
        .with_access_key_id("test")
        .with_secret_access_key("test")
        .build()
        .unwrap();
    let (dirs, objects) = list(&reader, "messages/created-consumer").await;
    assert_eq!(
        dirs,
        [
            "messages/created-consumer/landing_date=2026-11-23",
            "messages/created-consumer/landing_date=2026-11-24"
        ]
    );
    assert!(objects.is_empty(), "{objects:?}");
    let (_, day1) = list(&reader, "messages/created-consumer/landing_date=2026-11-23").await;
    assert_eq!(
        day1,
        ["messages/created-consumer/landing_date=2026-11-23/40.jsonl"]
    );
    let (_, day2) = list(&reader, "messages/created-consumer/landing_date=2026-11-24").await;
    assert_eq!(
        day2,
        ["messages/created-consumer/landing_date=2026-11-24/43.jsonl"]
    );
    assert_eq!(ids(&get(&reader, &day1[0]).await), [40, 41, 42]);
    assert_eq!(ids(&get(&reader, &day2[0]).await), [43]);
    let first = get(&reader, &day1[0]).await;
    assert_eq!(
        std::str::from_utf8(&first).unwrap().lines().next(),
        Some(r#"{"id":40,"message":"created 40"}"#)
    );

    // Gzip: the key gets `.gz`, the body decompresses to the same lines.
    let gz = ObjectStoreSink::new(&config(&format!("s3://{BUCKET}/gz"), true), &ctx).unwrap();
    gz.write(&batch[..2]).await.unwrap();
    let body = get(&reader, "gz/landing_date=2026-11-23/40.jsonl.gz").await;
    let mut text = Vec::new();
    flate2::read::GzDecoder::new(&body[..])
        .read_to_end(&mut text)
        .unwrap();
    assert_eq!(ids(&text), [40, 41]);

    // The server gone: a transient error (retried by the runtime), not a dead letter.
    drop(moto);
    let err = sink.write(&batch).await.unwrap_err();
    assert!(!err.permanent, "{err}");
}
