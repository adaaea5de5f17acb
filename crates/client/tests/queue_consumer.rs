//! A queue consumer leases records, acks, nacks and extends them; an expired lease delivers a record
//! again with its count raised; subscriptions fan a topic out to filtered queue groups.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::TestServer;
use ferry_client::{ProduceRecord, QueueConfig, SubscriptionKind, SubscriptionSpec};

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receive_ack_nack_extend_and_lease_expiry() {
    let server = TestServer::start().await;
    server.topic("jobs", 2).await;
    let client = &server.client;
    let records: Vec<ProduceRecord> = (0..6)
        .map(|i| {
            ProduceRecord::json(&serde_json::json!({"job": i}))
                .unwrap()
                .key(format!("j{i}"))
        })
        .collect();
    client.publish("jobs", &records).await.unwrap();

    let queue = client.queue_consumer("workers", "jobs");
    let config = QueueConfig {
        visibility_timeout_ms: Some(30_000),
        max_deliveries: Some(5),
        ..QueueConfig::default()
    };
    let info = queue.create(&config).await.unwrap();
    assert_eq!((info.depth, info.in_flight), (6, 0));
    assert_eq!(info.dead_letter_topic, "jobs.workers.dlq");
    assert_eq!(info.config.max_deliveries, Some(5));
    queue.create(&config).await.unwrap();
    let other = QueueConfig {
        max_deliveries: Some(9),
        ..QueueConfig::default()
    };
    let e = client.create_queue("workers", "jobs", &other).await.unwrap_err();
    assert_eq!((e.status(), e.code()), (Some(409), Some("queue_exists")));

    let before = now_ms();
    let got = queue.receive(4, Duration::ZERO, None).await.unwrap();
    assert_eq!(got.len(), 4);
    for d in &got {
        assert_eq!(d.delivery_count, 1);
        assert!(d.lease_expires_ms >= before + 29_000, "{d:?}");
        assert!(d.value_json::<serde_json::Value>().unwrap()["job"].is_number());
    }
    assert_eq!(
        client.describe_queue("workers", "jobs").await.unwrap().in_flight,
        4
    );

    queue.ack(&got[..2]).await.unwrap();
    queue.nack(&got[2..3], Duration::ZERO).await.unwrap();
    queue.extend(&got[3..4], Duration::from_secs(60)).await.unwrap();
    let e = queue.ack(&got[..1]).await.unwrap_err();
    assert_eq!((e.status(), e.code()), (Some(409), Some("not_leased")));
    assert_eq!(e.api().unwrap().field.as_deref(), Some("records[0]"));

    // The two never received and the nacked one; the extended one stays leased.
    let again = queue.receive(10, Duration::ZERO, None).await.unwrap();
    assert_eq!(again.len(), 3);
    let nacked = again
        .iter()
        .find(|d| d.id() == got[2].id())
        .expect("the nacked record comes back");
    assert_eq!(nacked.delivery_count, 2);
    assert!(again.iter().all(|d| d.id() != got[3].id()));
    queue.ack(&again).await.unwrap();

    // A short lease runs out: a long-polling receive gets the record again, its count raised.
    queue.ack(&got[3..4]).await.unwrap();
    client
        .publish("jobs", &[ProduceRecord::text("short")])
        .await
        .unwrap();
    let leased = queue
        .receive(1, Duration::from_secs(10), Some(Duration::from_millis(100)))
        .await
        .unwrap();
    assert_eq!(leased.len(), 1);
    let back = queue.receive(1, Duration::from_secs(20), None).await.unwrap();
    assert_eq!(back.len(), 1, "the expired lease made the record available again");
    assert_eq!((back[0].id(), back[0].delivery_count), (leased[0].id(), 2));
    queue.ack(&back).await.unwrap();
    let info = queue.info().await.unwrap();
    assert_eq!((info.depth, info.in_flight), (0, 0));

    let e = client
        .queue_consumer("nobody", "jobs")
        .ack(&got)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("group_not_found"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_fan_out_to_filtered_queues() {
    let server = TestServer::start().await;
    server.topic("events", 1).await;
    let client = &server.client;
    let spec = SubscriptionSpec {
        filter_policy: Some(serde_json::json!({"type": ["order"]})),
        queue: Some(QueueConfig {
            max_deliveries: Some(3),
            ..QueueConfig::default()
        }),
        ..SubscriptionSpec::default()
    };
    let info = client
        .create_subscription("events", "orders", &spec)
        .await
        .unwrap();
    assert_eq!((info.topic.as_str(), info.name.as_str()), ("events", "orders"));
    assert_eq!(info.spec.kind, Some(SubscriptionKind::Queue));
    assert_eq!(info.spec.queue.as_ref().unwrap().max_deliveries, Some(3));
    let all = SubscriptionSpec {
        kind: Some(SubscriptionKind::Stream),
        ..SubscriptionSpec::default()
    };
    client.create_subscription("events", "audit", &all).await.unwrap();
    let names: Vec<String> = client
        .list_subscriptions("events")
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["audit", "orders"]);

    let bad = SubscriptionSpec {
        filter_policy: Some(serde_json::json!({"price": [{"numeric": [">", "x"]}]})),
        ..SubscriptionSpec::default()
    };
    let e = client
        .create_subscription("events", "bad", &bad)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("invalid_filter_policy"));
    assert_eq!(e.api().unwrap().field.as_deref(), Some("filter_policy.price[0]"));

    let published: Vec<ProduceRecord> = ["order", "refund", "order"]
        .iter()
        .map(|t| ProduceRecord::json(&serde_json::json!({"type": t})).unwrap())
        .collect();
    client.publish("events", &published).await.unwrap();
    let orders = client.queue_consumer("orders", "events");
    let got = orders.receive(10, Duration::ZERO, None).await.unwrap();
    assert_eq!(got.iter().map(|d| d.offset).collect::<Vec<_>>(), [0, 2]);
    orders.ack(&got).await.unwrap();
    let mut audit = client.stream_consumer("audit", "events");
    assert_eq!(audit.poll(10, Duration::ZERO).await.unwrap().len(), 3);

    client.delete_subscription("events", "orders").await.unwrap();
    let e = client.delete_subscription("events", "orders").await.unwrap_err();
    assert_eq!(
        (e.status(), e.code()),
        (Some(404), Some("subscription_not_found"))
    );
    server.stop().await;
}
