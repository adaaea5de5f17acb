#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The NATS JetStream and RabbitMQ peers against private servers: a round trip of 1000 messages in
//! each durability class a peer supports. Skipped (saying so) when a server is not installed, unless
//! `FERRY_REQUIRE_SERVICES=1`.

use std::time::{Duration, Instant};

use bytes::Bytes;
use ferry_bench::peer::{Confirm, Durability, Peer};
use ferry_bench::peers::nats::NatsPeer;
use ferry_bench::peers::rabbitmq::RabbitPeer;
use ferry_engines::servers::{NatsServer, require};
use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;

const COUNT: usize = 1000;
const IN_FLIGHT: usize = 256;

/// 1 KiB, telling its index.
fn payload(i: usize) -> Bytes {
    let mut v = vec![u8::try_from(i % 251).unwrap(); 1024];
    v[..8].copy_from_slice(&u64::try_from(i).unwrap().to_be_bytes());
    Bytes::from(v)
}

/// Returns the peer, or `None` after saying the test is skipped (failing instead when services are
/// required).
fn started<P>(peer: anyhow::Result<Option<P>>, what: &str) -> Option<P> {
    match peer {
        Ok(Some(peer)) => Some(peer),
        Ok(None) => {
            let _skipped = require::<()>(Ok(None), what);
            None
        }
        Err(e) => panic!("{what} did not start: {e:#}"),
    }
}

/// One producer sends `COUNT` messages with up to `IN_FLIGHT` confirms pending, then one consumer
/// takes them all, in order.
async fn round_trip(peer: &dyn Peer, durability: Durability) {
    eprintln!("{} ({})", peer.name(), durability.label());
    assert_eq!(peer.durability(), durability);
    let pid = peer
        .server_pid()
        .unwrap_or_else(|| panic!("{}: no server PID", peer.name()));
    if cfg!(target_os = "linux") {
        let process = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
        assert!(
            ["nats-server", "beam.smp"].contains(&process.trim()),
            "the server PID is {process}"
        );
    }
    peer.prepare("t").await.unwrap();

    let mut producer = peer.producer("t").await.unwrap();
    let mut confirms: FuturesUnordered<Confirm> = FuturesUnordered::new();
    for i in 0..COUNT {
        if confirms.len() == IN_FLIGHT {
            confirms.next().await.unwrap().unwrap();
        }
        confirms.push(producer.send(payload(i)).await.unwrap());
    }
    while let Some(confirmed) = confirms.next().await {
        confirmed.unwrap();
    }

    let mut consumer = peer.consumer("t").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut received = Vec::with_capacity(COUNT);
    while received.len() < COUNT {
        assert!(
            Instant::now() < deadline,
            "only {} of {COUNT} messages in 60 s",
            received.len()
        );
        let batch = consumer.next(500, Duration::from_secs(1)).await.unwrap();
        assert!(batch.len() <= 500);
        received.extend(batch);
    }
    assert_eq!(received.len(), COUNT);
    for (i, got) in received.iter().enumerate() {
        assert_eq!(*got, payload(i), "message {i}");
    }

    // Acked: nothing more comes, and an empty queue answers after about `wait`.
    let started = Instant::now();
    let more = consumer.next(10, Duration::from_millis(200)).await.unwrap();
    assert!(more.is_empty(), "{} messages again", more.len());
    assert!(started.elapsed() < Duration::from_secs(10));

    // Made empty again.
    peer.prepare("t").await.unwrap();
    let mut consumer = peer.consumer("t").await.unwrap();
    assert!(consumer.next(10, Duration::ZERO).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nats_in_the_background() {
    let Some(peer) = started(NatsPeer::start(Durability::Background).await, "nats-server") else {
        return;
    };
    assert!(peer.name().starts_with("NATS JetStream 2."), "{}", peer.name());
    round_trip(&peer, Durability::Background).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nats_on_disk() {
    let Some(version) = require(NatsServer::installed_version(), "nats-server") else {
        return;
    };
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    let started = NatsPeer::start(Durability::OnDisk).await;
    if (major, minor) < (2, 10) {
        let error = started.expect_err("an old nats-server cannot fsync before acks");
        assert_eq!(
            error.to_string(),
            format!("nats-server {version} cannot fsync before acknowledging (sync_interval needs 2.10+)")
        );
        eprintln!("nats-server {version}: on-disk durability refused, as it should be: {error}");
        return;
    }
    let peer = started.unwrap().unwrap();
    round_trip(&peer, Durability::OnDisk).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rabbitmq_in_the_background() {
    let Some(peer) = started(RabbitPeer::start(Durability::Background).await, "rabbitmq-server") else {
        return;
    };
    // With its version, read from the server.
    let name = peer.name();
    assert!(
        name.strip_prefix("RabbitMQ ")
            .is_some_and(|v| v.starts_with(|c: char| c.is_ascii_digit())),
        "{name}"
    );
    round_trip(&peer, Durability::Background).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rabbitmq_on_disk() {
    let Some(peer) = started(RabbitPeer::start(Durability::OnDisk).await, "rabbitmq-server") else {
        return;
    };
    round_trip(&peer, Durability::OnDisk).await;
}
