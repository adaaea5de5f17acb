//! Stream group membership through the broker's public API: live members share a topic's partitions,
//! every change bumps the generation, dead members lose their partitions, and stale members are fenced.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferry_broker::{
    Broker, BrokerError, FetchLimits, JoinOptions, MemberRef, Membership, Produce, SeekTo, StoredRecord,
    TopicConfig,
};

const LONG: Duration = Duration::from_secs(120);

async fn broker_with(dir: &std::path::Path, partitions: u32, per_partition: u64) -> Broker {
    let broker = Broker::open(dir).unwrap();
    let config = TopicConfig {
        partitions,
        ..TopicConfig::default()
    };
    broker.create_topic("t", config).await.unwrap();
    let records = (0..partitions)
        .flat_map(|p| {
            (0..per_partition).map(move |i| Produce {
                partition: Some(p),
                value: Bytes::from(format!("{p}/{i}")),
                ..Produce::default()
            })
        })
        .collect();
    broker.publish("t", records).await.unwrap();
    broker
}

fn all() -> FetchLimits {
    FetchLimits {
        max_records: 10_000,
        max_bytes: 1 << 20,
        max_wait: Duration::ZERO,
    }
}

fn join(broker: &Broker, id: &str, session: Duration) -> Membership {
    let options = JoinOptions {
        member_id: Some(id.into()),
        session_timeout: session,
    };
    broker.join("g", "t", options).unwrap()
}

fn me(m: &Membership) -> MemberRef {
    MemberRef {
        member_id: m.member_id.clone(),
        generation: m.generation,
    }
}

/// Heartbeats every member and checks that their partitions are disjoint, cover `0..n`, and that all
/// see the same generation; returns their memberships.
fn settled(broker: &Broker, members: &[&Membership], n: u32) -> Vec<Membership> {
    let now: Vec<Membership> = members
        .iter()
        .map(|m| broker.heartbeat("g", "t", &m.member_id, m.generation).unwrap())
        .collect();
    let generations: BTreeSet<u64> = now.iter().map(|m| m.generation).collect();
    assert_eq!(generations.len(), 1, "{now:?}");
    let mut all: Vec<u32> = now.iter().flat_map(|m| m.partitions.clone()).collect();
    all.sort_unstable();
    assert_eq!(all, (0..n).collect::<Vec<_>>(), "disjoint and covering: {now:?}");
    now
}

fn at(records: &[StoredRecord]) -> BTreeSet<(u32, u64)> {
    records.iter().map(|r| (r.partition, r.offset)).collect()
}

#[tokio::test]
async fn members_share_the_partitions_and_every_change_bumps_the_generation() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker_with(dir.path(), 4, 0).await;

    // A generated id for a member that brings none.
    let alone = broker.join("g", "t", JoinOptions::default()).unwrap();
    assert!(alone.member_id.starts_with("member-"), "{alone:?}");
    assert_eq!(
        (alone.generation, alone.partitions.clone()),
        (1, vec![0, 1, 2, 3])
    );
    broker.leave("g", "t", &alone.member_id).unwrap();

    let a = join(&broker, "a", LONG);
    let b = join(&broker, "b", LONG);
    assert_eq!(b.generation, a.generation + 1);
    let [a, b]: [Membership; 2] = settled(&broker, &[&a, &b], 4).try_into().unwrap();
    // Range assignment over the ids, in order.
    assert_eq!(
        (a.partitions.clone(), b.partitions.clone()),
        (vec![0, 1], vec![2, 3])
    );

    let c = join(&broker, "c", LONG);
    assert_eq!(c.generation, b.generation + 1);
    let now = settled(&broker, &[&a, &b, &c], 4);
    assert!(now.iter().all(|m| !m.partitions.is_empty()), "{now:?}");
    // Sticky: a and b keep what they had up to their share; only one partition moved to c.
    for (before, after) in [&a, &b].iter().zip(&now) {
        assert!(
            after.partitions.iter().all(|p| before.partitions.contains(p)),
            "{now:?}"
        );
    }

    // b leaves: its partitions go to a and c, in a new generation.
    let generation = now[0].generation;
    broker.leave("g", "t", "b").unwrap();
    let (a, c) = (&now[0], &now[2]);
    let now = settled(&broker, &[a, c], 4);
    assert_eq!(now[0].generation, generation + 1);
    assert!(matches!(
        broker.heartbeat("g", "t", "b", generation),
        Err(BrokerError::UnknownMember { .. })
    ));
    assert!(matches!(
        broker.leave("g", "t", "b"),
        Err(BrokerError::UnknownMember { .. })
    ));
    // A generation the group has not reached is no one's.
    assert!(matches!(
        broker.heartbeat("g", "t", "a", generation + 5),
        Err(BrokerError::StaleGeneration { .. })
    ));

    // The group status lists the members and their partitions (no commit yet: committed is None).
    let status = broker.group_status("g", "t").unwrap();
    assert_eq!(status.generation, now[0].generation);
    let listed: Vec<(String, Vec<u32>)> = status
        .members
        .iter()
        .map(|m| (m.member_id.clone(), m.partitions.clone()))
        .collect();
    assert_eq!(
        listed,
        [
            ("a".to_string(), now[0].partitions.clone()),
            ("c".to_string(), now[1].partitions.clone())
        ]
    );
    assert!(status.partitions.iter().all(|p| p.committed.is_none()));
    assert!(matches!(
        broker.group_status("nobody", "t"),
        Err(BrokerError::GroupNotFound { .. })
    ));

    // Bad input.
    let bad_id = JoinOptions {
        member_id: Some("a/b".into()),
        ..JoinOptions::default()
    };
    assert!(matches!(
        broker.join("g", "t", bad_id),
        Err(BrokerError::InvalidName {
            field: "member_id",
            ..
        })
    ));
    let too_long = JoinOptions {
        session_timeout: Duration::from_secs(301),
        ..JoinOptions::default()
    };
    assert!(matches!(
        broker.join("g", "t", too_long),
        Err(BrokerError::InvalidArgument {
            field: "session_timeout",
            ..
        })
    ));
    assert!(matches!(
        broker.join("g", "nope", JoinOptions::default()),
        Err(BrokerError::TopicNotFound(_))
    ));
}

#[tokio::test]
async fn members_fetch_their_own_partitions_and_stale_or_foreign_requests_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker_with(dir.path(), 4, 3).await;
    let a1 = join(&broker, "a", LONG);
    let b = join(&broker, "b", LONG);

    // a's generation is stale now: its fetch and commit are refused until it heartbeats.
    assert!(matches!(
        broker.group_fetch_as("g", "t", Some(&me(&a1)), all()).await,
        Err(BrokerError::StaleGeneration {
            generation: 1,
            current: 2,
            ..
        })
    ));
    assert!(matches!(
        broker.commit_as("g", "t", Some(&me(&a1)), &[(0, 1)]).await,
        Err(BrokerError::StaleGeneration { .. })
    ));
    let a = broker.heartbeat("g", "t", "a", a1.generation).unwrap();
    assert_eq!(a.generation, b.generation);

    let got_a = broker
        .group_fetch_as("g", "t", Some(&me(&a)), all())
        .await
        .unwrap();
    let got_b = broker
        .group_fetch_as("g", "t", Some(&me(&b)), all())
        .await
        .unwrap();
    let expect = |m: &Membership| -> BTreeSet<(u32, u64)> {
        m.partitions
            .iter()
            .flat_map(|&p| (0..3).map(move |o| (p, o)))
            .collect()
    };
    assert_eq!(at(&got_a), expect(&a));
    assert_eq!(at(&got_b), expect(&b));
    // Handed out once per member position.
    assert!(
        broker
            .group_fetch_as("g", "t", Some(&me(&a)), all())
            .await
            .unwrap()
            .is_empty()
    );

    // Commits: own partitions only.
    let (pa, pb) = (a.partitions[0], b.partitions[0]);
    broker
        .commit_as("g", "t", Some(&me(&a)), &[(pa, 2)])
        .await
        .unwrap();
    assert!(matches!(
        broker.commit_as("g", "t", Some(&me(&a)), &[(pa, 3), (pb, 3)]).await,
        Err(BrokerError::NotAssigned { partition, .. }) if partition == pb
    ));
    assert_eq!(
        broker.group_offsets("g", "t").unwrap()[pa as usize].committed,
        Some(2)
    );
    assert_eq!(
        broker.group_offsets("g", "t").unwrap()[pb as usize].committed,
        None
    );
    let ghost = MemberRef {
        member_id: "ghost".into(),
        generation: a.generation,
    };
    assert!(matches!(
        broker.group_fetch_as("g", "t", Some(&ghost), all()).await,
        Err(BrokerError::UnknownMember { .. })
    ));
    assert!(matches!(
        broker.commit_as("g", "t", Some(&ghost), &[(pa, 3)]).await,
        Err(BrokerError::UnknownMember { .. })
    ));

    // The group as a whole is off limits while it has members.
    assert!(matches!(
        broker.group_fetch("g", "t", all()).await,
        Err(BrokerError::GroupHasMembers { members: 2, .. })
    ));
    assert!(matches!(
        broker.commit("g", "t", &[(pa, 3)]).await,
        Err(BrokerError::GroupHasMembers { .. })
    ));
    assert!(matches!(
        broker.seek("g", "t", None, SeekTo::Earliest).await,
        Err(BrokerError::GroupHasMembers { .. })
    ));

    // Once all left, it is the old whole-group fetch again, from the committed offsets: every partition
    // changed owner, so what was fetched but not committed comes again.
    broker.leave("g", "t", "a").unwrap();
    broker.leave("g", "t", "b").unwrap();
    let got = broker.group_fetch("g", "t", all()).await.unwrap();
    let mut expected: BTreeSet<(u32, u64)> = (0..4).flat_map(|p| (0..3).map(move |o| (p, o))).collect();
    expected.remove(&(pa, 0));
    expected.remove(&(pa, 1));
    assert_eq!(at(&got), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_member_loses_its_partitions_and_the_new_owner_continues_from_the_commit() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker_with(dir.path(), 4, 5).await;
    let session = Duration::from_secs(1);
    let a = join(&broker, "a", session);
    let b = join(&broker, "b", LONG);
    let [a, b]: [Membership; 2] = settled(&broker, &[&a, &b], 4).try_into().unwrap();

    // a reads its partitions and commits 2 records of each; b reads everything of its own.
    let got = broker
        .group_fetch_as("g", "t", Some(&me(&a)), all())
        .await
        .unwrap();
    assert_eq!(got.len(), 10);
    let commits: Vec<(u32, u64)> = a.partitions.iter().map(|&p| (p, 2)).collect();
    // a's last call (the commit) keeps it alive from some time after this.
    let a_done = Instant::now();
    broker.commit_as("g", "t", Some(&me(&a)), &commits).await.unwrap();
    assert_eq!(
        broker
            .group_fetch_as("g", "t", Some(&me(&b)), all())
            .await
            .unwrap()
            .len(),
        10
    );

    // a goes silent. b's long-poll wakes when a's session ends, well before its own 30 s wait, and
    // tells b that the group moved on.
    let wait = FetchLimits {
        max_wait: Duration::from_secs(30),
        ..all()
    };
    let woke = tokio::time::timeout(
        Duration::from_secs(20),
        broker.group_fetch_as("g", "t", Some(&me(&b)), wait),
    )
    .await
    .expect("woken by the end of a's session, not by the end of the wait");
    assert!(
        matches!(woke, Err(BrokerError::StaleGeneration { .. })),
        "{woke:?}"
    );
    assert!(
        a_done.elapsed() >= session,
        "a's session ended no sooner than its timeout"
    );

    // b learns it owns everything now, and gets a's partitions from a's last commit: the three records
    // a fetched but never committed come again; b's own records do not.
    let b2 = broker.heartbeat("g", "t", "b", b.generation).unwrap();
    assert_eq!(b2.generation, b.generation + 1);
    assert_eq!(b2.partitions, [0, 1, 2, 3]);
    let again = broker
        .group_fetch_as("g", "t", Some(&me(&b2)), all())
        .await
        .unwrap();
    let expected: BTreeSet<(u32, u64)> = a
        .partitions
        .iter()
        .flat_map(|&p| (2..5).map(move |o| (p, o)))
        .collect();
    assert_eq!(at(&again), expected);

    // a is gone: it must join again, and its old generation commits nothing.
    assert!(matches!(
        broker.heartbeat("g", "t", "a", a.generation),
        Err(BrokerError::UnknownMember { .. })
    ));
    assert!(matches!(
        broker.commit_as("g", "t", Some(&me(&a)), &commits).await,
        Err(BrokerError::UnknownMember { .. })
    ));
    let back = join(&broker, "a", LONG);
    assert_eq!(back.generation, b2.generation + 1);
}

#[tokio::test]
async fn a_rejoining_member_restarts_from_the_committed_offsets_and_a_restart_forgets_members() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker_with(dir.path(), 2, 4).await;
    let a = join(&broker, "a", LONG);
    assert_eq!(
        broker
            .group_fetch_as("g", "t", Some(&me(&a)), all())
            .await
            .unwrap()
            .len(),
        8
    );
    broker
        .commit_as("g", "t", Some(&me(&a)), &[(0, 1), (1, 3)])
        .await
        .unwrap();
    // The same id joins again (a restarted consumer): a new generation, same partitions, and the
    // records after the commits come again.
    let a2 = join(&broker, "a", LONG);
    assert_eq!(
        (a2.generation, a2.partitions.clone()),
        (a.generation + 1, vec![0, 1])
    );
    let got = broker
        .group_fetch_as("g", "t", Some(&me(&a2)), all())
        .await
        .unwrap();
    assert_eq!(at(&got), BTreeSet::from([(0, 1), (0, 2), (0, 3), (1, 3)]));

    drop(broker);
    let broker = Broker::open(dir.path()).unwrap();
    // Members are not durable; offsets are.
    assert!(matches!(
        broker.heartbeat("g", "t", "a", a2.generation),
        Err(BrokerError::UnknownMember { .. })
    ));
    let a3 = join(&broker, "a", LONG);
    assert_eq!(a3.generation, 1);
    let got = broker
        .group_fetch_as("g", "t", Some(&me(&a3)), all())
        .await
        .unwrap();
    assert_eq!(at(&got), BTreeSet::from([(0, 1), (0, 2), (0, 3), (1, 3)]));

    // The topic is deleted and created again with 3 partitions: the live member's next call sees a new
    // generation with the new topic's partitions.
    broker.delete_topic("t").await.unwrap();
    let config = TopicConfig {
        partitions: 3,
        ..TopicConfig::default()
    };
    broker.create_topic("t", config).await.unwrap();
    assert!(matches!(
        broker.group_fetch_as("g", "t", Some(&me(&a3)), all()).await,
        Err(BrokerError::StaleGeneration { .. })
    ));
    let a4 = broker.heartbeat("g", "t", "a", a3.generation).unwrap();
    assert_eq!((a4.generation, a4.partitions), (a3.generation + 1, vec![0, 1, 2]));
}

// Current-thread runtime: the spawned fetch runs only when this task yields, so after one yield it has
// read nothing (there is nothing) and is waiting, before the join.
#[tokio::test]
async fn a_rebalance_ends_the_waits_of_the_members_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker_with(dir.path(), 2, 0).await;
    let a = join(&broker, "a", LONG);
    let waiting = {
        let (broker, a) = (broker.clone(), me(&a));
        tokio::spawn(async move {
            let wait = FetchLimits {
                max_wait: Duration::from_secs(60),
                ..all()
            };
            broker.group_fetch_as("g", "t", Some(&a), wait).await
        })
    };
    tokio::task::yield_now().await;
    assert!(!waiting.is_finished(), "a's fetch waits for records");
    join(&broker, "b", LONG);
    // Without the wake-up, a's fetch would wait for 30 s (half its session) before it looked again.
    let woke = tokio::time::timeout(Duration::from_secs(20), waiting)
        .await
        .expect("woken by the join")
        .unwrap();
    assert!(
        matches!(woke, Err(BrokerError::StaleGeneration { .. })),
        "{woke:?}"
    );
}
