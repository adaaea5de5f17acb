//! The wire protocol (`docs/protocol.md`) spoken frame by frame over a raw TCP stream: the handshake and
//! its tokens, pipelined publishes kept in order, queue groups, errors as the HTTP API gives them, bad
//! frames, and a shutdown that answers what is in flight.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use ferry_broker::{Broker, FetchLimits, TopicConfig};
use ferry_server::{ServerOptions, Tokens};
use ferry_wire::{self as wire, PublishRecord, Request, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

struct Server {
    http: String,
    wire: String,
    broker: Broker,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start(options: ServerOptions) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let broker = Broker::open(dir.path()).unwrap();
        broker
            .create_topic("orders", TopicConfig::default())
            .await
            .unwrap();
        let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let wire = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (http_addr, wire_addr) = (http.local_addr().unwrap(), wire.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(ferry_server::serve_with_wire(
            broker.clone(),
            http,
            wire,
            options,
            async move {
                let _ = stopped.await;
            },
        ));
        Self {
            http: format!("http://{http_addr}"),
            wire: wire_addr.to_string(),
            broker,
            stop: Some(stop),
            task: Some(task),
            _dir: dir,
        }
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap().unwrap();
    }
}

/// One connection, frames in and out by hand.
struct Conn {
    stream: TcpStream,
    buf: BytesMut,
}

impl Conn {
    async fn open(addr: &str) -> Self {
        Self {
            stream: TcpStream::connect(addr).await.unwrap(),
            buf: BytesMut::new(),
        }
    }

    /// A connection past HELLO.
    async fn ready(addr: &str, token: &str) -> Self {
        let mut c = Self::open(addr).await;
        c.send(0, &hello(token)).await;
        let (id, answer) = c.recv().await.expect("an answer to HELLO");
        assert_eq!(id, 0);
        assert!(matches!(answer, Response::Ready { version: 1, .. }), "{answer:?}");
        c
    }

    async fn send(&mut self, id: u32, request: &Request) {
        let mut out = BytesMut::new();
        wire::encode_request(id, request, &mut out);
        self.stream.write_all(&out).await.unwrap();
    }

    async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// The next answer, `None` once the server closed the connection.
    async fn recv(&mut self) -> Option<(u32, Response)> {
        loop {
            if let Some(frame) = wire::split_frame(&mut self.buf).unwrap() {
                return Some(wire::decode_response(frame).unwrap());
            }
            if self.stream.read_buf(&mut self.buf).await.unwrap() == 0 {
                return None;
            }
        }
    }

    async fn call(&mut self, id: u32, request: &Request) -> Response {
        self.send(id, request).await;
        let (got, answer) = self.recv().await.expect("an answer");
        assert_eq!(got, id);
        answer
    }
}

fn hello(token: &str) -> Request {
    Request::Hello {
        version: 1,
        token: token.into(),
        client: "test".into(),
    }
}

fn publish(topic: &str, values: &[&str]) -> Request {
    Request::Publish {
        topic: topic.into(),
        records: values
            .iter()
            .map(|v| PublishRecord {
                value: Bytes::copy_from_slice(v.as_bytes()),
                ..PublishRecord::default()
            })
            .collect(),
    }
}

fn error_of(answer: &Response) -> (u16, &str, Option<&str>) {
    match answer {
        Response::Error {
            status, code, field, ..
        } => (*status, code.as_str(), field.as_deref()),
        other => panic!("expected an error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_pipelined_on_one_connection_land_in_order_with_keys_and_headers() {
    let server = Server::start(ServerOptions::default()).await;
    let mut c = Conn::ready(&server.wire, "").await;
    // 200 publishes written before any answer is read; each answered with its own id.
    let mut out = BytesMut::new();
    for i in 0..200u32 {
        let request = Request::Publish {
            topic: "orders".into(),
            records: vec![PublishRecord {
                key: (i == 7).then(|| Bytes::from_static(b"k\xff")),
                headers: vec![wire::Header {
                    key: "n".into(),
                    value: Bytes::from(i.to_string()),
                }],
                value: Bytes::from(format!("record {i}")),
                ..PublishRecord::default()
            }],
        };
        wire::encode_request(1000 + i, &request, &mut out);
    }
    c.send_raw(&out).await;
    let mut offsets = vec![None; 200];
    for _ in 0..200 {
        let (id, answer) = c.recv().await.unwrap();
        let Response::Published { offsets: got } = answer else {
            panic!("{answer:?}")
        };
        offsets[(id - 1000) as usize] = Some(got[0]);
    }
    // Request i landed at offset i: the order they were sent in.
    for (i, at) in offsets.iter().enumerate() {
        assert_eq!(*at, Some((0, i as u64)), "request {i}");
    }
    let stored = server
        .broker
        .fetch("orders", 0, 0, FetchLimits::default())
        .await
        .unwrap();
    assert_eq!(stored.len(), 200);
    assert_eq!(&stored[7].value[..], b"record 7");
    assert_eq!(stored[7].key.as_deref(), Some(&b"k\xff"[..]));
    assert_eq!(stored[7].headers[0].key, "n");
    assert_eq!(&stored[7].headers[0].value[..], b"7");
    drop(c);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_group_receives_acks_and_nacks_and_errors_name_the_field() {
    let server = Server::start(ServerOptions::default()).await;
    let mut c = Conn::ready(&server.wire, "").await;
    let answer = c.call(1, &publish("orders", &["a", "b", "c"])).await;
    assert!(matches!(answer, Response::Published { .. }), "{answer:?}");

    let receive = |max_records| Request::Receive {
        group: "workers".into(),
        topic: "orders".into(),
        max_records,
        max_wait_ms: 1000,
        visibility_ms: 0,
    };
    let Response::Records { records } = c.call(2, &receive(2)).await else {
        panic!()
    };
    assert_eq!(records.len(), 2);
    assert_eq!(&records[0].value[..], b"a");
    assert_eq!(records[0].deliveries, 1);
    assert!(records[0].lease_expires_ms > 0);
    let ack = Request::Ack {
        group: "workers".into(),
        topic: "orders".into(),
        records: vec![(0, records[0].offset)],
    };
    assert_eq!(c.call(3, &ack).await, Response::Done);
    // Acked already: 409 not_leased naming the record, as over HTTP.
    let again = c.call(4, &ack).await;
    assert_eq!(error_of(&again), (409, "not_leased", Some("records[0]")));
    let nack = Request::Nack {
        group: "workers".into(),
        topic: "orders".into(),
        records: vec![(0, records[1].offset)],
        delay_ms: 0,
    };
    assert_eq!(c.call(5, &nack).await, Response::Done);
    let Response::Records { records } = c.call(6, &receive(10)).await else {
        panic!()
    };
    let got: Vec<(&[u8], u32)> = records.iter().map(|r| (&r.value[..], r.deliveries)).collect();
    assert_eq!(got, vec![(&b"b"[..], 2), (&b"c"[..], 1)]);

    // Limits and unknown names are refused as the HTTP API refuses them.
    assert_eq!(
        error_of(&c.call(7, &receive(0)).await),
        (422, "out_of_range", Some("max_records"))
    );
    assert_eq!(
        error_of(&c.call(8, &publish("nowhere", &["x"])).await).1,
        "topic_not_found"
    );
    let to_missing_partition = Request::Publish {
        topic: "orders".into(),
        records: vec![
            PublishRecord::default(),
            PublishRecord {
                partition: Some(9),
                ..PublishRecord::default()
            },
        ],
    };
    assert_eq!(
        error_of(&c.call(9, &to_missing_partition).await),
        (404, "partition_not_found", Some("records[1].partition"))
    );
    // The connection is still good after refusals.
    assert!(matches!(
        c.call(10, &publish("orders", &["d"])).await,
        Response::Published { .. }
    ));
    drop(c);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_checked_at_hello_and_read_only_tokens_cannot_publish() {
    let tokens = Tokens::new(["writer-token"], ["reader-token"]).unwrap();
    let server = Server::start(ServerOptions {
        tokens,
        ..ServerOptions::default()
    })
    .await;
    for (token, code) in [("", "unauthorized"), ("wrong", "unauthorized")] {
        let mut c = Conn::open(&server.wire).await;
        let answer = c.call(0, &hello(token)).await;
        assert_eq!(error_of(&answer).0, 401, "{token:?}: {answer:?}");
        assert_eq!(error_of(&answer).1, code);
        assert!(
            c.recv().await.is_none(),
            "the server closes after a refused HELLO"
        );
    }
    let mut reader = Conn::ready(&server.wire, "reader-token").await;
    assert_eq!(error_of(&reader.call(1, &publish("orders", &["x"])).await).0, 403);
    let mut writer = Conn::ready(&server.wire, "writer-token").await;
    assert!(matches!(
        writer.call(1, &publish("orders", &["x"])).await,
        Response::Published { .. }
    ));
    drop((reader, writer));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_are_answered_bad_frame_and_close_the_connection() {
    let server = Server::start(ServerOptions::default()).await;
    // A request before HELLO.
    let mut c = Conn::open(&server.wire).await;
    assert_eq!(
        error_of(&c.call(3, &publish("orders", &["x"])).await).1,
        "hello_expected"
    );
    assert!(c.recv().await.is_none());
    // A length prefix far over the limit.
    let mut c = Conn::ready(&server.wire, "").await;
    c.send_raw(&u32::MAX.to_be_bytes()).await;
    let (_, answer) = c.recv().await.unwrap();
    assert_eq!(error_of(&answer).1, "bad_frame");
    assert!(c.recv().await.is_none());
    // A PUBLISH whose record count is a lie: answered with its id, then closed.
    let mut c = Conn::ready(&server.wire, "").await;
    let mut out = BytesMut::new();
    wire::encode_request(42, &publish("orders", &["x"]), &mut out);
    let count_at = 4 + 1 + 4 + 2 + "orders".len();
    out[count_at..count_at + 4].copy_from_slice(&1000u32.to_be_bytes());
    c.send_raw(&out).await;
    let (id, answer) = c.recv().await.unwrap();
    assert_eq!((id, error_of(&answer).1), (42, "bad_frame"));
    assert!(c.recv().await.is_none());
    // Nothing was stored by any of them.
    assert_eq!(
        server.broker.describe_topic("orders").unwrap().partitions[0].next_offset,
        0
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_answers_a_waiting_receive_and_closes_the_connection() {
    let server = Server::start(ServerOptions::default()).await;
    let mut c = Conn::ready(&server.wire, "").await;
    let receive = Request::Receive {
        group: "workers".into(),
        topic: "orders".into(),
        max_records: 10,
        max_wait_ms: 60_000,
        visibility_ms: 0,
    };
    // Published and received once before, so the group exists and the receive below waits.
    assert!(matches!(
        c.call(1, &publish("orders", &["a"])).await,
        Response::Published { .. }
    ));
    let Response::Records { records } = c.call(2, &receive).await else {
        panic!()
    };
    assert_eq!(records.len(), 1);
    c.send(3, &receive).await;
    // Requests are read in order: once 4 is answered (whatever the answer), the server holds 3 and it
    // is waiting.
    c.call(4, &publish("elsewhere", &["b"])).await;
    let http = server.http.clone();
    let stopping = tokio::spawn(server.stop());
    // The long-poll ends early with nothing, well before its 60 s, and the connection closes.
    let answer = tokio::time::timeout(Duration::from_secs(30), c.recv())
        .await
        .unwrap();
    assert_eq!(answer, Some((3, Response::Records { records: vec![] })));
    assert!(c.recv().await.is_none());
    stopping.await.unwrap();
    assert!(
        reqwest::get(format!("{http}/healthz")).await.is_err(),
        "the HTTP side stopped too"
    );
}

/// A RECEIVE waiting when its client goes away stops waiting and leases nothing: a record published
/// afterwards goes to the next receiver at once (deliveries 1), not after a visibility timeout spent
/// leased to a dead connection. The client half-closes, so that the server's answer (nothing, long
/// before the 60 s wait) can still be read.
#[tokio::test]
async fn a_receive_whose_client_went_away_stops_waiting_and_leases_nothing() {
    let server = Server::start(ServerOptions::default()).await;
    let mut c = Conn::ready(&server.wire, "").await;
    let receive = Request::Receive {
        group: "workers".into(),
        topic: "orders".into(),
        max_records: 10,
        max_wait_ms: 60_000,
        visibility_ms: 0,
    };
    assert!(matches!(
        c.call(1, &publish("orders", &["a"])).await,
        Response::Published { .. }
    ));
    let Response::Records { records } = c.call(2, &receive).await else {
        panic!()
    };
    assert_eq!(records.len(), 1);
    c.send(3, &receive).await;
    // Requests are read in order: once 4 is answered, the server holds 3 and it is waiting.
    c.call(4, &publish("elsewhere", &["b"])).await;
    c.stream.shutdown().await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(30), c.recv())
        .await
        .expect("the waiting receive was not ended by the client going away");
    assert_eq!(answer, Some((3, Response::Records { records: vec![] })));
    assert!(c.recv().await.is_none());

    let mut d = Conn::ready(&server.wire, "").await;
    assert!(matches!(
        d.call(1, &publish("orders", &["z"])).await,
        Response::Published { .. }
    ));
    let Response::Records { records } = d.call(2, &receive).await else {
        panic!()
    };
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].value.as_ref(), b"z");
    assert_eq!(records[0].deliveries, 1);
    server.stop().await;
}
