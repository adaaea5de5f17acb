//! SIGKILL and restart: a child process publishes, commits stream-group offsets, and receives and acks
//! queue-group records, printing each thing once the broker confirmed it; the parent kills it with SIGKILL
//! at a random moment, reopens the broker and checks that committed offsets are kept, acknowledged records
//! are never delivered again, leased but unacknowledged ones are delivered again, and subscriptions with
//! their filters survive.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use ferry_broker::{
    Broker, FetchLimits, Produce, QueueConfig, ReceiveOptions, SubscriptionSpec, TopicConfig,
};
use rand::Rng;
use serde_json::json;

const DIR_ENV: &str = "FERRY_KILL_CHILD_DIR";

#[test]
#[ignore = "the child process of broker_state_survives_sigkill; runs until killed"]
fn kill_child() {
    let Ok(dir) = std::env::var(DIR_ENV) else { return };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let broker = Broker::open(&dir).unwrap();
        if broker.describe_topic("t").is_err() {
            broker
                .create_topic(
                    "t",
                    TopicConfig {
                        partitions: 3,
                        ..TopicConfig::default()
                    },
                )
                .await
                .unwrap();
            let even = SubscriptionSpec {
                filter_policy: Some(json!({"even": [true]})),
                ..SubscriptionSpec::default()
            };
            broker.create_subscription("t", "evens", even).await.unwrap();
            // Enough deliveries that the parent's checks never push a record to the dead-letter topic.
            let q = QueueConfig {
                max_deliveries: 1000,
                ..QueueConfig::default()
            };
            broker.create_queue("q", "t", q).await.unwrap();
        }
        println!("ready");
        let mut i: u64 = 0;
        loop {
            let batch: Vec<Produce> = (0..5)
                .map(|k| Produce {
                    value: Bytes::from(json!({"n": i + k, "even": (i + k).is_multiple_of(2)}).to_string()),
                    ..Produce::default()
                })
                .collect();
            i += 5;
            broker.publish("t", batch).await.unwrap();
            let limits = FetchLimits {
                max_records: 7,
                ..FetchLimits::default()
            };
            let fetched = broker.group_fetch("g", "t", limits).await.unwrap();
            let mut next: BTreeMap<u32, u64> = BTreeMap::new();
            for r in &fetched {
                next.insert(r.partition, r.offset + 1);
            }
            let offsets: Vec<(u32, u64)> = next.into_iter().collect();
            if !offsets.is_empty() {
                broker.commit("g", "t", &offsets).await.unwrap();
                for (p, o) in offsets {
                    println!("committed {p} {o}");
                }
            }
            let leased = broker
                .receive(
                    "q",
                    "t",
                    ReceiveOptions {
                        max_records: 4,
                        ..ReceiveOptions::default()
                    },
                )
                .await
                .unwrap();
            for (k, l) in leased.iter().enumerate() {
                let id = (l.record.partition, l.record.offset);
                if k % 2 == 0 {
                    broker.ack("q", "t", &[id]).await.unwrap();
                    println!("acked {} {}", id.0, id.1);
                } else {
                    println!("leased {} {}", id.0, id.1);
                }
            }
        }
    });
}

#[test]
fn broker_state_survives_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand::rng();
    let mut committed: BTreeMap<u32, u64> = BTreeMap::new();
    let mut acked: BTreeSet<(u32, u64)> = BTreeSet::new();
    let mut leased: BTreeSet<(u32, u64)> = BTreeSet::new();
    for round in 0..6 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "kill_child",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(DIR_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let kill_after = rng.random_range(20..300);
        let mut seen = 0;
        let mut killed = false;
        for line in BufReader::new(child.stdout.take().unwrap()).lines() {
            let line = line.unwrap();
            let f: Vec<&str> = line.split(' ').collect();
            let num = |i: usize| -> u64 { f[i].parse().unwrap() };
            match f[0] {
                "committed" => {
                    committed.insert(num(1) as u32, num(2));
                }
                "acked" => {
                    leased.remove(&(num(1) as u32, num(2)));
                    acked.insert((num(1) as u32, num(2)));
                }
                "leased" => {
                    leased.insert((num(1) as u32, num(2)));
                }
                _ => continue,
            }
            seen += 1;
            if !killed && seen >= kill_after {
                child.kill().unwrap();
                killed = true;
            }
        }
        child.wait().unwrap();
        assert!(killed, "round {round}: the child stopped by itself");

        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let broker = Broker::open(dir.path()).unwrap();
            let offsets = broker.group_offsets("g", "t").unwrap();
            for (p, o) in &committed {
                let now = offsets[*p as usize].committed.unwrap();
                assert!(now >= *o, "round {round}: partition {p} committed {o}, now {now}");
            }
            // Receive everything available now: the leased, unacknowledged records must be among it,
            // the acknowledged ones must not. Nack them all so the next child sees the same queue.
            let again = broker
                .receive(
                    "q",
                    "t",
                    ReceiveOptions {
                        max_records: 100_000,
                        max_wait: Duration::ZERO,
                        visibility_timeout: None,
                    },
                )
                .await
                .unwrap();
            let got: BTreeSet<(u32, u64)> = again
                .iter()
                .map(|l| (l.record.partition, l.record.offset))
                .collect();
            let redelivered_acks: Vec<_> = got.intersection(&acked).take(5).collect();
            assert!(
                redelivered_acks.is_empty(),
                "round {round}: acknowledged records delivered again: {redelivered_acks:?}"
            );
            let lost: Vec<_> = leased.difference(&got).take(5).collect();
            assert!(
                lost.is_empty(),
                "round {round}: leased, unacknowledged records not delivered again: {lost:?}"
            );
            let ids: Vec<(u32, u64)> = got.iter().copied().collect();
            if !ids.is_empty() {
                broker.nack("q", "t", &ids, Duration::ZERO).await.unwrap();
            }
            let subs = broker.list_subscriptions("t").unwrap();
            assert_eq!(subs.len(), 1);
            assert!(subs[0].spec.filter_policy.is_some());
            let evens = broker
                .receive(
                    "evens",
                    "t",
                    ReceiveOptions {
                        max_records: 100_000,
                        max_wait: Duration::ZERO,
                        visibility_timeout: None,
                    },
                )
                .await
                .unwrap();
            assert!(!evens.is_empty());
            for l in &evens {
                let v: serde_json::Value = serde_json::from_slice(&l.record.value).unwrap();
                assert_eq!(v["even"], true, "the filter survived");
            }
            let ids: Vec<(u32, u64)> = evens
                .iter()
                .map(|l| (l.record.partition, l.record.offset))
                .collect();
            broker.ack("evens", "t", &ids).await.unwrap();
        });
    }
    assert!(!acked.is_empty() && !committed.is_empty());
}
