//! Client settings: URLs are checked when the client is built, and the bearer token goes with every
//! request (seen by a bare TCP listener standing in for the server).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use ferry_client::{Client, Error};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[test]
fn urls_are_checked_when_built() {
    assert_eq!(
        Client::new("localhost:5555").unwrap().url(),
        "http://localhost:5555"
    );
    assert_eq!(
        Client::new("http://h:1/prefix/").unwrap().url(),
        "http://h:1/prefix"
    );
    for bad in ["https://h:1", "ftp://h", "http://h:1/?q=1", "http://[::1"] {
        assert!(matches!(Client::new(bad), Err(Error::Config(_))), "{bad}");
    }
    let e = Client::builder()
        .url("http://h:1")
        .token("a\nb")
        .build()
        .unwrap_err();
    assert!(matches!(e, Error::Config(_)), "{e:?}");
}

#[tokio::test]
async fn the_token_is_sent_as_a_bearer_header() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = socket.read(&mut buf).await.unwrap();
            assert!(n > 0, "connection closed before the request head");
            head.extend_from_slice(&buf[..n]);
        }
        let body = r#"{"error":"unauthorized","message":"a bearer token is required","field":null}"#;
        let answer = format!(
            "HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        socket.write_all(answer.as_bytes()).await.unwrap();
        String::from_utf8(head).unwrap()
    });
    let client = Client::builder().url(&url).token("s3cret").build().unwrap();
    let e = client.health().await.unwrap_err();
    assert_eq!((e.status(), e.code()), (Some(401), Some("unauthorized")));
    assert_eq!(e.to_string(), "a bearer token is required (401 unauthorized)");
    let head = server.await.unwrap().to_ascii_lowercase();
    assert!(head.starts_with("get /healthz http/1.1\r\n"), "{head}");
    assert!(head.contains("\r\nauthorization: bearer s3cret\r\n"), "{head}");
}
