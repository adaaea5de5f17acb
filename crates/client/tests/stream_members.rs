//! Stream consumers that join a group share its partitions; a rebalance is handled inside poll
//! (heartbeat on a stale generation, rejoin when the session is gone), and the whole-group mode is
//! refused while members are live.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::TestServer;
use ferry_client::{ProduceRecord, Record, SeekTo};

fn partitions(records: &[Record]) -> BTreeSet<u32> {
    records.iter().map(|r| r.partition).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_share_partitions_and_follow_rebalances() {
    let server = TestServer::start().await;
    server.topic("m", 4).await;
    let client = &server.client;
    let records: Vec<ProduceRecord> = (0..40)
        .map(|i| ProduceRecord::json(&i).unwrap().partition(i % 4))
        .collect();
    client.publish("m", &records).await.unwrap();

    let mut a = client.stream_consumer("g", "m");
    let joined = a.join().await.unwrap().clone();
    assert_eq!(joined.partitions, [0, 1, 2, 3]);
    let mut b = client.stream_consumer("g", "m");
    let b_joined = b.join().await.unwrap().clone();
    assert_eq!(b_joined.generation, joined.generation + 1);
    assert_eq!(
        b_joined.partitions,
        [2, 3],
        "sticky: the first member keeps its lowest partitions"
    );

    // `a` still believes in the first generation: a commit there is fenced off.
    let e = a.commit_offsets(&[(0, 1)]).await.unwrap_err();
    assert_eq!((e.status(), e.code()), (Some(409), Some("stale_generation")));

    // Its poll learns the new assignment by itself.
    let got_a = a.poll(100, Duration::ZERO).await.unwrap();
    assert_eq!(a.membership().unwrap().partitions, [0, 1]);
    assert_eq!(a.membership().unwrap().generation, b_joined.generation);
    assert_eq!(got_a.len(), 20);
    assert_eq!(partitions(&got_a), BTreeSet::from([0, 1]));
    let got_b = b.poll(100, Duration::ZERO).await.unwrap();
    assert_eq!(got_b.len(), 20);
    assert_eq!(partitions(&got_b), BTreeSet::from([2, 3]));

    // The whole-group mode is refused while members are live.
    let mut whole = client.stream_consumer("g", "m");
    let e = whole.poll(10, Duration::ZERO).await.unwrap_err();
    assert_eq!((e.status(), e.code()), (Some(409), Some("group_has_members")));
    let e = whole.seek(SeekTo::Earliest).await.unwrap_err();
    assert_eq!(e.code(), Some("group_has_members"));

    // A member commits only its own partitions.
    let e = a.commit(&got_b).await.unwrap_err();
    assert_eq!(e.code(), Some("partition_not_assigned"));
    a.commit(&got_a).await.unwrap();
    b.commit_polled().await.unwrap();
    let lag = b.lag().await.unwrap();
    assert_eq!(lag.lag, 0);
    assert_eq!(lag.members.len(), 2);

    // `a` leaves: `b` gets every partition at its next poll, from the committed offsets.
    a.leave().await.unwrap();
    let more: Vec<ProduceRecord> = (0..4)
        .map(|i| ProduceRecord::json(&i).unwrap().partition(i))
        .collect();
    client.publish("m", &more).await.unwrap();
    let got = b.poll(100, Duration::ZERO).await.unwrap();
    assert_eq!(b.membership().unwrap().partitions, [0, 1, 2, 3]);
    assert_eq!(
        got.iter()
            .map(|r| (r.partition, r.offset))
            .collect::<BTreeSet<_>>(),
        BTreeSet::from([(0, 10), (1, 10), (2, 10), (3, 10)])
    );

    // The server forgets `b` (as after its session ended): its next poll joins again under its id.
    let id = b.membership().unwrap().member_id.clone();
    let url = format!("{}/v1/groups/g/topics/m/members/{id}", server.url);
    let gone = reqwest::Client::new().delete(url).send().await.unwrap();
    assert_eq!(gone.status(), 204);
    let generation = b.membership().unwrap().generation;
    let redelivered = b.poll(100, Duration::ZERO).await.unwrap();
    assert_eq!(b.membership().unwrap().member_id, id);
    assert!(b.membership().unwrap().generation > generation);
    assert_eq!(
        redelivered.iter().map(|r| r.id()).collect::<BTreeSet<_>>(),
        got.iter().map(|r| r.id()).collect::<BTreeSet<_>>(),
        "a new session restarts at the committed offsets: what was not committed comes again"
    );
    b.commit(&redelivered).await.unwrap();
    b.leave().await.unwrap();

    // No live members: the whole-group mode works again.
    assert_eq!(whole.seek(SeekTo::Earliest).await.unwrap().len(), 4);
    assert_eq!(whole.poll(1000, Duration::ZERO).await.unwrap().len(), 44);
    server.stop().await;
}
