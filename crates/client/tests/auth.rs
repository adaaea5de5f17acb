//! Against a server that requires bearer tokens: the client's token opens the API, a missing or wrong
//! one is 401, a read-only one may read but every send of a producer fails with 403.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::TestServer;
use ferry_client::{Client, ProduceRecord, TopicConfig};
use ferry_server::{ServerOptions, Tokens};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_decides_what_a_client_may_do() {
    let server = TestServer::start_with(ServerOptions {
        tokens: Tokens::new(["rw-token"], ["ro-token"]).unwrap(),
        ..ServerOptions::default()
    })
    .await;
    let with = |token: &str| Client::builder().url(&server.url).token(token).build().unwrap();

    let e = server.client.list_topics().await.unwrap_err();
    let api = e.api().unwrap();
    assert_eq!(
        (api.status, api.code.as_str(), api.field.as_deref()),
        (401, "unauthorized", Some("authorization"))
    );
    assert!(e.to_string().ends_with("(401 unauthorized)"), "{e}");
    let e = with("wrong").list_topics().await.unwrap_err();
    assert_eq!((e.status(), e.code()), (Some(401), Some("unauthorized")));

    let writer = with("rw-token");
    writer.create_topic("t", &TopicConfig::default()).await.unwrap();
    let producer = writer.producer();
    assert_eq!(
        producer
            .send("t", ProduceRecord::text("hello"))
            .await
            .unwrap()
            .offset,
        0
    );

    let reader = with("ro-token");
    assert_eq!(reader.list_topics().await.unwrap().len(), 1);
    let back = reader.fetch("t", 0, 0, 10, Duration::ZERO).await.unwrap();
    assert_eq!(back[0].value_json::<String>().unwrap(), "hello");
    let refused = reader.producer();
    let sends: Vec<_> = (0..3)
        .map(|i| refused.send("t", ProduceRecord::json(&i).unwrap()))
        .collect();
    for d in sends {
        let e = d.await.unwrap_err();
        assert_eq!((e.status(), e.code()), (Some(403), Some("forbidden")));
    }
    server.stop().await;
}
