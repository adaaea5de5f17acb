//! A shutdown that begins while a publish is arriving lets it finish: the client gets its offsets and
//! the record is on disk when `serve` returns.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Events, TestServer, wait_for};
use ferry_broker::{Broker, FetchLimits};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tracing_subscriber::layer::SubscriberExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_half_sent_when_shutdown_begins_is_finished_and_durable() {
    let (tx, mut events) = mpsc::unbounded_channel();
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(Events(tx))).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    server.create_topic(json!({"name": "ledger"})).await;

    // Headers and half of the body go out; the server has begun the request.
    let body = json!([{"key": "late", "value": {"n": 1}}, {"value": {"n": 2}}]).to_string();
    let (first, rest) = body.as_bytes().split_at(body.len() / 2);
    let addr = server.url.strip_prefix("http://").unwrap().to_string();
    let mut conn = TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /v1/topics/ledger/records HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.write_all(first).await.unwrap();
    // The earlier requests (health, topic creation) announced themselves too: wait for this one.
    wait_for(&mut events, "request started /v1/topics/{topic}/records").await;

    // Shutdown begins; only then does the rest of the body arrive.
    let stopping = tokio::spawn(server.stop());
    wait_for(
        &mut events,
        "shutting down: no new connections, finishing requests in flight",
    )
    .await;
    conn.write_all(rest).await.unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&answer).contains("\"offsets\"") {
        let n = conn.read(&mut buf).await.unwrap();
        assert!(n > 0, "connection closed: {}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&buf[..n]);
    }
    let answer = String::from_utf8(answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let json: Value = serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(json["offsets"].as_array().unwrap().len(), 2, "{answer}");
    drop(conn);
    stopping.await.unwrap();

    // `serve` returned and closed the broker: both records are there on reopening.
    let broker = tokio::task::spawn_blocking({
        let dir = dir.path().to_path_buf();
        move || Broker::open(dir).unwrap()
    })
    .await
    .unwrap();
    let records = broker
        .fetch("ledger", 0, 0, FetchLimits::default())
        .await
        .unwrap();
    assert_eq!(records.len(), 2);
    assert_eq!(records[0].key.as_deref(), Some(&b"late"[..]));
}
