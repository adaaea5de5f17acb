//! Subscriptions: SNS-style fan-out of one topic to several queue and stream groups, with filter policies,
//! surviving a restart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use bytes::Bytes;
use ferry_broker::{
    Broker, BrokerError, FetchLimits, FilterScope, Header, Produce, ReceiveOptions, SubscriptionKind,
    SubscriptionSpec, TopicConfig,
};
use serde_json::json;

fn customer(id: u32, region: &str, kind: &str) -> Produce {
    let body = json!({"customer_id": id, "region": region, "name": format!("c{id}")});
    Produce {
        value: Bytes::from(body.to_string()),
        headers: vec![Header {
            key: "event".into(),
            value: Bytes::copy_from_slice(kind.as_bytes()),
        }],
        ..Produce::default()
    }
}

fn take() -> ReceiveOptions {
    ReceiveOptions {
        max_records: 1000,
        max_wait: Duration::ZERO,
        visibility_timeout: None,
    }
}

fn ids(values: impl Iterator<Item = Bytes>) -> Vec<u64> {
    let mut ids: Vec<u64> = values
        .map(|v| {
            serde_json::from_slice::<serde_json::Value>(&v).unwrap()["customer_id"]
                .as_u64()
                .unwrap()
        })
        .collect();
    ids.sort_unstable();
    ids
}

#[tokio::test]
async fn every_record_reaches_every_matching_subscription() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(dir.path()).unwrap();
    broker
        .create_topic(
            "created-consumer",
            TopicConfig {
                partitions: 2,
                ..TopicConfig::default()
            },
        )
        .await
        .unwrap();
    for name in ["api-orders-created-consumer", "api-payment-created-consumer"] {
        broker
            .create_subscription("created-consumer", name, SubscriptionSpec::default())
            .await
            .unwrap();
    }
    let eu_only = SubscriptionSpec {
        filter_policy: Some(json!({"region": [{"prefix": "eu-"}]})),
        ..SubscriptionSpec::default()
    };
    broker
        .create_subscription("created-consumer", "eu-audit", eu_only.clone())
        .await
        .unwrap();
    let updates = SubscriptionSpec {
        kind: SubscriptionKind::Stream,
        filter_policy: Some(json!({"event": ["updated"]})),
        filter_scope: FilterScope::Headers,
        ..SubscriptionSpec::default()
    };
    broker
        .create_subscription("created-consumer", "updates", updates)
        .await
        .unwrap();
    // Same name, same spec: fine. Same name, other spec: refused. Bad policy: refused, naming the field.
    broker
        .create_subscription("created-consumer", "eu-audit", eu_only)
        .await
        .unwrap();
    assert!(matches!(
        broker
            .create_subscription("created-consumer", "eu-audit", SubscriptionSpec::default())
            .await,
        Err(BrokerError::QueueExists { .. })
    ));
    let bad = SubscriptionSpec {
        filter_policy: Some(json!({"region": "eu"})),
        ..SubscriptionSpec::default()
    };
    assert!(matches!(
        broker.create_subscription("created-consumer", "bad", bad).await,
        Err(BrokerError::InvalidArgument {
            field: "filter_policy",
            ..
        })
    ));
    assert_eq!(broker.list_subscriptions("created-consumer").unwrap().len(), 4);

    let records: Vec<Produce> = (0..20)
        .map(|i| {
            customer(
                i,
                if i % 2 == 0 { "eu-west-1" } else { "us-east-1" },
                if i < 15 { "created" } else { "updated" },
            )
        })
        .collect();
    broker.publish("created-consumer", records).await.unwrap();

    let all: Vec<u64> = (0..20).collect();
    for name in ["api-orders-created-consumer", "api-payment-created-consumer"] {
        let got = broker.receive(name, "created-consumer", take()).await.unwrap();
        assert_eq!(ids(got.iter().map(|l| l.record.value.clone())), all, "{name}");
    }
    let eu = broker
        .receive("eu-audit", "created-consumer", take())
        .await
        .unwrap();
    assert_eq!(
        ids(eu.iter().map(|l| l.record.value.clone())),
        (0..20).step_by(2).collect::<Vec<_>>()
    );
    let acks: Vec<_> = eu.iter().map(|l| (l.record.partition, l.record.offset)).collect();
    broker.ack("eu-audit", "created-consumer", &acks).await.unwrap();
    assert_eq!(
        broker.queue_info("eu-audit", "created-consumer").unwrap().depth,
        0,
        "filtered-out records are done"
    );
    let limits = FetchLimits {
        max_records: 1000,
        ..FetchLimits::default()
    };
    let upd = broker
        .group_fetch("updates", "created-consumer", limits)
        .await
        .unwrap();
    assert_eq!(
        ids(upd.into_iter().map(|r| r.value)),
        (15..20).collect::<Vec<_>>()
    );

    // After a restart the subscriptions and their filters are still there.
    drop(broker);
    let broker = Broker::open(dir.path()).unwrap();
    assert_eq!(broker.list_subscriptions("created-consumer").unwrap().len(), 4);
    broker
        .publish(
            "created-consumer",
            vec![
                customer(100, "eu-central-1", "updated"),
                customer(101, "us-west-2", "created"),
            ],
        )
        .await
        .unwrap();
    let eu = broker
        .receive("eu-audit", "created-consumer", take())
        .await
        .unwrap();
    assert_eq!(ids(eu.iter().map(|l| l.record.value.clone())), [100]);
    let orders = broker
        .receive("api-orders-created-consumer", "created-consumer", take())
        .await
        .unwrap();
    // The 20 unacknowledged records come back after the restart (at-least-once), plus the two new ones.
    assert_eq!(orders.len(), 22);

    broker
        .delete_subscription("created-consumer", "eu-audit")
        .await
        .unwrap();
    assert_eq!(broker.list_subscriptions("created-consumer").unwrap().len(), 3);
    assert!(matches!(
        broker.delete_subscription("created-consumer", "eu-audit").await,
        Err(BrokerError::GroupNotFound { .. })
    ));
}

#[tokio::test]
async fn a_topic_created_again_does_not_inherit_filters_or_leases_of_the_deleted_one() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(dir.path()).unwrap();
    broker.create_topic("t", TopicConfig::default()).await.unwrap();
    let eu_only = SubscriptionSpec {
        filter_policy: Some(json!({"region": [{"prefix": "eu-"}]})),
        ..SubscriptionSpec::default()
    };
    broker.create_subscription("t", "audit", eu_only).await.unwrap();
    broker
        .publish("t", vec![customer(1, "eu-west", "created")])
        .await
        .unwrap();
    let leased = broker.receive("audit", "t", take()).await.unwrap();
    assert_eq!(leased.len(), 1);

    broker.delete_topic("t").await.unwrap();
    broker.create_topic("t", TopicConfig::default()).await.unwrap();
    assert!(broker.list_subscriptions("t").unwrap().is_empty());
    broker
        .publish(
            "t",
            vec![
                customer(2, "us-east", "created"),
                customer(3, "eu-west", "created"),
            ],
        )
        .await
        .unwrap();
    // A plain queue group named like the old subscription: no filter, and the old lease on offset 0
    // does not hide the new record at offset 0.
    let got = broker.receive("audit", "t", take()).await.unwrap();
    assert_eq!(ids(got.iter().map(|l| l.record.value.clone())), vec![2, 3]);
    assert!(got.iter().all(|l| l.deliveries == 1));
}

#[tokio::test]
async fn a_subscription_gets_what_is_published_after_it_exists_even_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(dir.path()).unwrap();
    broker
        .create_topic(
            "t",
            TopicConfig {
                partitions: 2,
                ..TopicConfig::default()
            },
        )
        .await
        .unwrap();
    let before: Vec<Produce> = (0..6).map(|i| customer(i, "eu-west", "created")).collect();
    broker.publish("t", before).await.unwrap();
    broker
        .create_subscription("t", "q", SubscriptionSpec::default())
        .await
        .unwrap();
    let stream = SubscriptionSpec {
        kind: SubscriptionKind::Stream,
        ..SubscriptionSpec::default()
    };
    broker.create_subscription("t", "s", stream).await.unwrap();
    let after: Vec<Produce> = (100..104).map(|i| customer(i, "eu-west", "created")).collect();
    broker.publish("t", after).await.unwrap();

    let expect = vec![100, 101, 102, 103];
    let leased = broker.receive("q", "t", take()).await.unwrap();
    assert_eq!(ids(leased.iter().map(|l| l.record.value.clone())), expect);
    let limits = FetchLimits {
        max_records: 1000,
        max_bytes: 1 << 20,
        max_wait: Duration::ZERO,
    };
    let fetched = broker.group_fetch("s", "t", limits).await.unwrap();
    assert_eq!(ids(fetched.iter().map(|r| r.value.clone())), expect);

    // The starting points are durable: after a restart, still nothing from before the subscriptions.
    drop(broker);
    let broker = Broker::open(dir.path()).unwrap();
    let leased = broker.receive("q", "t", take()).await.unwrap();
    assert_eq!(ids(leased.iter().map(|l| l.record.value.clone())), expect);
    let fetched = broker.group_fetch("s", "t", limits).await.unwrap();
    assert_eq!(ids(fetched.iter().map(|r| r.value.clone())), expect);
}

#[tokio::test]
async fn a_queue_group_keeps_its_backlog_when_a_subscription_takes_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(dir.path()).unwrap();
    broker.create_topic("t", TopicConfig::default()).await.unwrap();
    broker
        .create_queue("big", "t", ferry_broker::QueueConfig::default())
        .await
        .unwrap();
    let before: Vec<Produce> = (0..5).map(|i| customer(i, "eu-west", "created")).collect();
    broker.publish("t", before).await.unwrap();
    broker
        .create_subscription("t", "big", SubscriptionSpec::default())
        .await
        .unwrap();
    let leased = broker.receive("big", "t", take()).await.unwrap();
    assert_eq!(
        ids(leased.iter().map(|l| l.record.value.clone())),
        vec![0, 1, 2, 3, 4]
    );
}

/// `n` records that no `region: eu-*` policy matches, then one that does (id 1_000_000).
async fn backlog_then_match(broker: &Broker, n: u32) {
    for chunk in (0..n).collect::<Vec<_>>().chunks(10_000) {
        let records = chunk.iter().map(|&i| customer(i, "us-east", "created")).collect();
        broker.publish("t", records).await.unwrap();
    }
    broker
        .publish("t", vec![customer(1_000_000, "eu-west", "created")])
        .await
        .unwrap();
}

#[tokio::test]
async fn a_filtered_stream_subscription_reads_through_a_backlog_in_one_fetch() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(dir.path()).unwrap();
    broker.create_topic("t", TopicConfig::default()).await.unwrap();
    let eu = SubscriptionSpec {
        kind: SubscriptionKind::Stream,
        filter_policy: Some(json!({"region": [{"prefix": "eu-"}]})),
        ..SubscriptionSpec::default()
    };
    broker.create_subscription("t", "eu", eu).await.unwrap();
    backlog_then_match(&broker, 5_000).await;
    // Ten records per pass, no waiting: the fetch must read on through 500 passes of filtered records.
    let limits = FetchLimits {
        max_records: 10,
        max_bytes: 1 << 20,
        max_wait: Duration::ZERO,
    };
    let got = broker.group_fetch("eu", "t", limits).await.unwrap();
    assert_eq!(ids(got.iter().map(|r| r.value.clone())), vec![1_000_000]);
}

#[tokio::test]
async fn a_filtered_queue_subscription_goes_on_past_the_per_pass_cap_of_skipped_records() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(dir.path()).unwrap();
    broker.create_topic("t", TopicConfig::default()).await.unwrap();
    let eu = SubscriptionSpec {
        filter_policy: Some(json!({"region": [{"prefix": "eu-"}]})),
        ..SubscriptionSpec::default()
    };
    broker.create_subscription("t", "eu", eu).await.unwrap();
    backlog_then_match(&broker, 70_000).await;
    let got = broker.receive("eu", "t", take()).await.unwrap();
    assert_eq!(ids(got.iter().map(|l| l.record.value.clone())), vec![1_000_000]);
    assert_eq!(broker.queue_info("eu", "t").unwrap().depth, 1);
}

#[tokio::test]
async fn a_filter_policy_larger_than_64_kib_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(dir.path()).unwrap();
    broker.create_topic("t", TopicConfig::default()).await.unwrap();
    let values: Vec<String> = (0..10_000).map(|i| format!("region-{i}")).collect();
    let spec = SubscriptionSpec {
        filter_policy: Some(json!({ "region": values })),
        ..SubscriptionSpec::default()
    };
    let e = broker.create_subscription("t", "huge", spec).await.unwrap_err();
    assert!(
        matches!(&e, BrokerError::InvalidArgument { field: "filter_policy", message } if message.contains("65536")),
        "{e:?}"
    );
    assert!(broker.list_subscriptions("t").unwrap().is_empty());
}
