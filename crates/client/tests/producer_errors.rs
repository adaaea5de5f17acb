//! A failed batch fails every send in it with the server's error; sends refused on the client fail
//! alone; a closed producer refuses sends; nothing is lost silently.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::TestServer;
use ferry_client::{Client, Error, ProduceRecord, ProducerConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_send_of_a_failed_batch_gets_the_api_error() {
    let server = TestServer::start().await;
    server.topic("real", 1).await;
    let producer = server.client.producer();
    let lost: Vec<_> = (0..20)
        .map(|i| producer.send("nope", ProduceRecord::json(&i).unwrap()))
        .collect();
    let fine = producer.send("real", ProduceRecord::text("ok"));
    for d in lost {
        let e = d.await.unwrap_err();
        let api = e.api().unwrap_or_else(|| panic!("{e:?}"));
        assert_eq!((api.status, api.code.as_str()), (404, "topic_not_found"));
        assert_eq!(api.field.as_deref(), Some("topic"));
        assert_eq!(e.to_string(), "topic `nope` does not exist (404 topic_not_found)");
    }
    assert_eq!(
        fine.await.unwrap().offset,
        0,
        "another topic's batch is not affected"
    );
    producer.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_the_server_refuses_fails_its_whole_batch_and_stores_nothing() {
    let server = TestServer::start().await;
    server
        .client
        .create_topic(
            "small",
            &ferry_client::TopicConfig {
                max_record_bytes: Some(64),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let producer = server.client.producer_with(
        ProducerConfig::default()
            .linger(Duration::from_secs(60))
            .max_batch_records(3),
    );
    let a = producer.send("small", ProduceRecord::text("a"));
    let big = producer.send("small", ProduceRecord::text(&"x".repeat(100)));
    let c = producer.send("small", ProduceRecord::text("c"));
    for d in [a, big, c] {
        let e = d.await.unwrap_err();
        assert_eq!(e.code(), Some("record_too_large"), "{e}");
        assert_eq!(e.api().unwrap().field.as_deref(), Some("records[1]"));
    }
    let info = server.client.describe_topic("small").await.unwrap();
    assert_eq!(
        info.partitions[0].next_offset, 0,
        "nothing of the batch was stored"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_side_refusals_fail_only_their_own_send() {
    let server = TestServer::start().await;
    server.topic("t", 1).await;
    let producer = server.client.producer_with(
        ProducerConfig::default()
            .max_buffered_bytes(100)
            .linger(Duration::from_secs(60)),
    );
    let dup = producer.send("t", ProduceRecord::text("x").header("h", "1").header("h", "2"));
    match dup.await {
        Err(Error::InvalidArgument { field, message }) => {
            assert_eq!(field, "headers");
            assert!(message.contains("`h`"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    let first = producer.send("t", ProduceRecord::text(&"a".repeat(60)));
    let over = producer.send("t", ProduceRecord::text(&"b".repeat(60)));
    assert!(matches!(over.await, Err(Error::BufferFull { limit: 100 })));
    producer.flush().await;
    assert_eq!(first.await.unwrap().offset, 0);
    // Room again once the answer came.
    let again = producer.send("t", ProduceRecord::text(&"c".repeat(60)));
    producer.flush().await;
    assert_eq!(again.await.unwrap().offset, 1);

    let clone = producer.clone();
    producer.close().await;
    assert!(matches!(
        clone.send("t", ProduceRecord::text("late")).await,
        Err(Error::Closed)
    ));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_is_a_transport_error_for_every_send() {
    // A port that was just free: nothing listens there.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let client = Client::new(format!("127.0.0.1:{port}")).unwrap();
    let producer = client.producer();
    let sends: Vec<_> = (0..3)
        .map(|i| producer.send("t", ProduceRecord::json(&i).unwrap()))
        .collect();
    for d in sends {
        let e = d.await.unwrap_err();
        assert!(matches!(e, Error::Transport { .. }), "{e:?}");
        assert!(e.is_transient());
        let text = e.to_string();
        assert!(
            text.starts_with(&format!("POST http://127.0.0.1:{port}/v1/topics/t/records: ")),
            "{text}"
        );
    }
    let e = client.health().await.unwrap_err();
    assert!(matches!(e, Error::Transport { .. }), "{e:?}");
}
