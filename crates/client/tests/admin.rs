//! Topics are created, listed, described and deleted through the client; the server's errors arrive with
//! their status, code, message and field.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::TestServer;
use ferry_client::{Fsync, TopicConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_and_their_errors() {
    let server = TestServer::start().await;
    let client = &server.client;
    let config = TopicConfig {
        retention_ms: Some(None),
        ..TopicConfig::default()
            .partitions(3)
            .fsync(Fsync::Interval(Duration::from_millis(50)))
    };
    let info = client.create_topic("orders", &config).await.unwrap();
    assert_eq!(info.name, "orders");
    assert_eq!(info.partitions.len(), 3);
    assert_eq!(info.config.partitions, Some(3));
    assert_eq!(
        info.config.fsync,
        Some(Fsync::Interval(Duration::from_millis(50)))
    );
    assert_eq!(
        info.config.retention_ms,
        Some(None),
        "null (keep forever) is told from missing"
    );
    assert!(
        info.config.segment_bytes.is_some(),
        "the server fills in its defaults"
    );

    client
        .create_topic("audit", &TopicConfig::default())
        .await
        .unwrap();
    let names: Vec<String> = client
        .list_topics()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, ["audit", "orders"]);
    assert_eq!(client.describe_topic("orders").await.unwrap(), info);

    let e = client
        .create_topic("orders", &TopicConfig::default())
        .await
        .unwrap_err();
    let api = e.api().unwrap();
    assert_eq!(
        (api.status, api.code.as_str(), api.field.as_deref()),
        (409, "topic_exists", Some("name"))
    );
    assert_eq!(e.to_string(), "topic `orders` already exists (409 topic_exists)");

    let e = client
        .create_topic("zero", &TopicConfig::default().partitions(0))
        .await
        .unwrap_err();
    let api = e.api().unwrap();
    assert_eq!(
        (api.status, api.code.as_str(), api.field.as_deref()),
        (422, "invalid_config", Some("partitions"))
    );

    let mut typo = TopicConfig::default();
    typo.extra.insert("partitons".into(), 4.into());
    let e = client.create_topic("typo", &typo).await.unwrap_err();
    assert_eq!(e.code(), Some("invalid_field"));
    assert_eq!(e.api().unwrap().field.as_deref(), Some("partitons"));

    let e = client
        .create_topic("a b", &TopicConfig::default())
        .await
        .unwrap_err();
    assert_eq!((e.status(), e.code()), (Some(400), Some("invalid_name")));

    // A name that is not a path segment is encoded, so it reaches the topic route, not another one.
    let e = client.describe_topic("a/b").await.unwrap_err();
    assert_eq!((e.status(), e.code()), (Some(400), Some("invalid_name")), "{e}");
    assert!(client.describe_topic("..").await.is_err());

    client.delete_topic("audit").await.unwrap();
    let e = client.delete_topic("audit").await.unwrap_err();
    assert_eq!(e.code(), Some("topic_not_found"));
    assert_eq!(client.list_topics().await.unwrap().len(), 1);
    server.stop().await;
}
