//! The bridges (`rabbitmq` and `nats` sources and sinks) against real servers: private RabbitMQ and NATS
//! servers from `ferry_engines::servers` (scripts/setup installs them; without them the tests are
//! skipped, unless `FERRY_REQUIRE_SERVICES=1`). Pipelines run on the embedded broker through
//! `runtime::start`, as `ferry up` runs them. Nothing waits by sleeping: every wait is for a message or
//! a record, with a deadline.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_nats::jetstream;
use bytes::Bytes;
use ferry_broker::engine::{BoxFuture, GroupSettings, InRecord, OutRecord};
use ferry_engines::servers::{NatsServer, RabbitServer, require};
use ferry_pipeline::check::parse_pipelines;
use ferry_pipeline::config::{RabbitMqSinkConfig, SinkConfig};
use ferry_pipeline::runtime::{PipelineMetrics, Running, RuntimeOptions, start};
use ferry_pipeline::sinks::rabbitmq::RabbitMqSink;
use ferry_pipeline::{BuildContext, Bus, BusError, Event, SharedBus, Sink};
use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, Consumer, ExchangeKind};
use serde_json::{Value, json};

/// How long any one thing may take to arrive.
const DEADLINE: Duration = Duration::from_secs(30);

fn broker(dir: &tempfile::TempDir) -> SharedBus {
    Arc::new(ferry_broker::Broker::open(dir.path().join("data")).unwrap())
}

async fn run(text: &str, bus: SharedBus, dir: &tempfile::TempDir) -> (Running, PipelineMetrics) {
    let pipelines = parse_pipelines(text).unwrap_or_else(|d| panic!("{text}\n{d:#?}"));
    let metrics = PipelineMetrics::new();
    let options = RuntimeOptions {
        data_dir: dir.path().join("data"),
        config_dir: dir.path().to_path_buf(),
        groups: GroupSettings::default(),
        only: None,
    };
    let running = start(&pipelines, bus, &metrics, &options).await.unwrap();
    (running, metrics)
}

/// A bus refusing the records marked `"poison": true` that are published to `topic` (see [`Flaky`]).
fn refusing_poison(inner: &SharedBus, topic: &str) -> SharedBus {
    Arc::new(Flaky {
        inner: inner.clone(),
        topic: topic.into(),
        failures: AtomicUsize::new(0),
        refuse_poison: true,
    })
}

/// The values of the next records of `topic` read by queue group `test` (acked), until `n` that `skip`
/// does not skip arrived, within the deadline.
async fn topic_values(bus: &SharedBus, topic: &str, n: usize, skip: impl Fn(&Value) -> bool) -> Vec<Value> {
    bus.ensure_group("test", topic, GroupSettings::default())
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let mut values = Vec::new();
    while values.len() < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{topic}: {values:?} within {DEADLINE:?}, not {n} records"
        );
        let got = bus
            .receive("test", topic, n, Duration::from_millis(250))
            .await
            .unwrap();
        let ids: Vec<_> = got.iter().map(InRecord::id).collect();
        bus.ack("test", topic, &ids).await.unwrap();
        values.extend(
            got.iter()
                .map(|r| serde_json::from_slice::<Value>(&r.value).unwrap())
                .filter(|v| !skip(v)),
        );
    }
    values
}

// ---------------------------------------------------------------------------------------------------
// RabbitMQ

async fn amqp(url: &str) -> (Connection, Channel) {
    let conn = Connection::connect(url, ConnectionProperties::default())
        .await
        .unwrap();
    let channel = conn.create_channel().await.unwrap();
    (conn, channel)
}

/// Declares `queue` (durable or not, as pika's `queue_declare(queue=..., durable=...)`).
async fn declare(channel: &Channel, queue: &str, durable: bool) {
    let options = QueueDeclareOptions {
        durable,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(queue.into(), options, FieldTable::default())
        .await
        .unwrap();
}

/// Publishes `body` to the default exchange for `queue`, as pika's `basic_publish(exchange='', ...)`.
async fn send(channel: &Channel, queue: &str, body: &[u8], headers: &[(&str, &str)]) {
    let mut table = FieldTable::default();
    for (k, v) in headers {
        table.insert((*k).into(), AMQPValue::LongString((*v).into()));
    }
    channel
        .basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions::default(),
            body,
            BasicProperties::default().with_headers(table),
        )
        .await
        .unwrap()
        .await
        .unwrap();
}

async fn consume(channel: &Channel, queue: &str) -> Consumer {
    channel
        .basic_consume(
            queue.into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap()
}

/// The next delivery of `consumer`, acked, within the deadline.
async fn next(consumer: &mut Consumer, what: &str) -> Delivery {
    let d = tokio::time::timeout(DEADLINE, consumer.next())
        .await
        .unwrap_or_else(|_| panic!("nothing arrived in {what} within {DEADLINE:?}"))
        .unwrap_or_else(|| panic!("{what}: the consumer ended"))
        .unwrap();
    d.acker.ack(BasicAckOptions::default()).await.unwrap();
    d
}

fn body(d: &Delivery) -> Value {
    serde_json::from_slice(&d.data).unwrap()
}

fn header(d: &Delivery, name: &str) -> Option<String> {
    d.properties
        .headers()
        .as_ref()?
        .inner()
        .get(name)
        .and_then(|v| match v {
            AMQPValue::LongString(s) => Some(String::from_utf8(s.as_bytes().to_vec()).unwrap()),
            _ => None,
        })
}

/// The seed's system: a Python producer declares `messages` with pika (not durable) and publishes
/// `user~message` text; ferry reads it as text, splits it with jq and publishes `{user, message}` to
/// another queue. A second pipeline reads JSON and rejects a body that is not JSON without stopping.
#[tokio::test(flavor = "multi_thread")]
async fn rabbitmq_queue_to_rabbitmq_queue_with_text_json_and_rejects() {
    let Some(rabbit) = require(RabbitServer::start(), "rabbitmq-server") else {
        return;
    };
    let url = rabbit.url();
    let (_conn, ch) = amqp(&url).await;
    // As pika's `channel.queue_declare(queue='messages')`: not durable.
    declare(&ch, "messages", false).await;
    // Published before ferry runs: the queue keeps them.
    send(&ch, "messages", b"alice~hello ~ there~again", &[("trace", "t-1")]).await;
    // The queues consumers read (declared as the sinks and sources will declare them).
    declare(&ch, "chat-out", true).await;
    declare(&ch, "json-in", true).await;
    declare(&ch, "json-out", true).await;
    let mut chat_out = consume(&ch, "chat-out").await;
    let mut json_out = consume(&ch, "json-out").await;

    let text = r#"
[pipelines.chat]
source = { type = "rabbitmq", name = "in", url = "URL", queue = "messages", durable = false, format = "text" }

[[pipelines.chat.processors]]
type = "map"
jq = '.text | split("~") | {user: .[0], message: (.[1:] | join("~"))}'

[[pipelines.chat.sinks]]
type = "rabbitmq"
name = "out"
url = "URL"
routing_key = "chat-out"
queue = "chat-out"

[pipelines.strict]
source = { type = "rabbitmq", name = "in", url = "URL", queue = "json-in", prefetch = 10 }

[[pipelines.strict.sinks]]
type = "rabbitmq"
name = "out"
url = "URL"
exchange = "amq.direct"
routing_key = "strict"
queue = "json-out"
"#
    .replace("URL", &url);
    let dir = tempfile::tempdir().unwrap();
    let (running, metrics) = run(&text, broker(&dir), &dir).await;

    let d = next(&mut chat_out, "chat-out").await;
    assert_eq!(
        body(&d),
        json!({"user": "alice", "message": "hello ~ there~again"})
    );
    assert_eq!(
        d.properties.content_type().as_ref().map(|c| c.as_str()),
        Some("application/json")
    );
    assert_eq!(*d.properties.delivery_mode(), Some(2));
    assert_eq!(
        header(&d, "trace").as_deref(),
        Some("t-1"),
        "AMQP string headers travel"
    );

    // One body that is not JSON between two that are: rejected, and the next one goes on.
    send(&ch, "json-in", b"alice~not json", &[]).await;
    send(&ch, "json-in", br#"{"n": 2}"#, &[]).await;
    send(&ch, "json-in", br#"{"n": 3}"#, &[]).await;
    assert_eq!(body(&next(&mut json_out, "json-out").await), json!({"n": 2}));
    assert_eq!(body(&next(&mut json_out, "json-out").await), json!({"n": 3}));
    let source = metrics.stage("strict", "in");
    assert_eq!(source.failed.get(), 1, "the body that is not JSON is counted");
    assert_eq!(source.records_in.get(), 3);
    assert_eq!(source.records_out.get(), 2);
    // Rejected without requeue, the others acked: nothing is left in the queue.
    let left = ch
        .queue_declare(
            "json-in".into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    assert_eq!(left.message_count(), 0);

    running.stop().await;
}

/// A message the engine refuses (as JetStream refuses a `Nats-*` header) between two it takes: the source
/// publishes them one at a time, rejects that one without requeue (RabbitMQ dead-letters it to the
/// queue's dead-letter exchange) and the others reach the topic, in order.
#[tokio::test(flavor = "multi_thread")]
async fn rabbitmq_source_rejects_a_message_the_engine_refuses() {
    let Some(rabbit) = require(RabbitServer::start(), "rabbitmq-server") else {
        return;
    };
    let url = rabbit.url();
    let (_conn, ch) = amqp(&url).await;
    ch.exchange_declare(
        "poison-dlx".into(),
        ExchangeKind::Fanout,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    declare(&ch, "poison-dead", true).await;
    ch.queue_bind(
        "poison-dead".into(),
        "poison-dlx".into(),
        "".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let mut args = FieldTable::default();
    args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString("poison-dlx".into()),
    );
    let options = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    ch.queue_declare("poison-in".into(), options, args).await.unwrap();
    // Queued before ferry runs: most likely delivered to the source at once, as one batch.
    send(&ch, "poison-in", br#"{"n": "ok-1"}"#, &[]).await;
    send(&ch, "poison-in", br#"{"n": "poison", "poison": true}"#, &[]).await;
    send(&ch, "poison-in", br#"{"n": "ok-2"}"#, &[]).await;
    let mut dead = consume(&ch, "poison-dead").await;

    // `declare = false`: the queue's dead-letter argument is not the source's to repeat.
    let text = r#"
[pipelines.poison]
source = { type = "rabbitmq", name = "in", url = "URL", queue = "poison-in", declare = false }
sinks = [{ type = "topic", topic = "poison-out" }]
"#
    .replace("URL", &url);
    let dir = tempfile::tempdir().unwrap();
    let embedded = broker(&dir);
    let (running, metrics) = run(&text, refusing_poison(&embedded, "poison.in"), &dir).await;

    // The poison came between the two: had it been published, it would be the second record.
    assert_eq!(
        topic_values(&embedded, "poison.in", 2, |_| false).await,
        [json!({"n": "ok-1"}), json!({"n": "ok-2"})]
    );
    let d = next(&mut dead, "poison-dead").await;
    assert_eq!(body(&d), json!({"n": "poison", "poison": true}));
    assert_eq!(
        header(&d, "x-first-death-reason").as_deref(),
        Some("rejected"),
        "rejected without requeue"
    );
    let source = metrics.stage("poison", "in");
    assert_eq!(source.failed.get(), 1, "the refused message is counted");
    assert_eq!(source.records_in.get(), 3, "nothing was delivered again");

    running.stop().await;
}

/// A broker whose first `failures` publishes to `topic` fail, as an engine that is briefly unavailable;
/// with `refuse_poison`, it also refuses every publish to `topic` holding a record whose value has
/// `"poison": true`, as an engine refuses a record it cannot take (too large, a header it reserves).
#[derive(Debug)]
struct Flaky {
    inner: SharedBus,
    topic: String,
    failures: AtomicUsize,
    refuse_poison: bool,
}

fn poisoned(record: &OutRecord) -> bool {
    serde_json::from_slice::<Value>(&record.value).is_ok_and(|v| v["poison"] == json!(true))
}

impl Bus for Flaky {
    fn ensure_topic<'a>(&'a self, topic: &'a str) -> BoxFuture<'a, Result<(), BusError>> {
        self.inner.ensure_topic(topic)
    }

    fn ensure_group<'a>(
        &'a self,
        group: &'a str,
        topic: &'a str,
        settings: GroupSettings,
    ) -> BoxFuture<'a, Result<(), BusError>> {
        self.inner.ensure_group(group, topic, settings)
    }

    fn publish_ids<'a>(
        &'a self,
        topic: &'a str,
        records: Vec<OutRecord>,
    ) -> BoxFuture<'a, Result<Vec<(u32, u64)>, BusError>> {
        if topic == self.topic
            && self
                .failures
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        {
            return Box::pin(async {
                Err(BusError::Unavailable {
                    engine: "flaky",
                    message: "down for a moment".into(),
                })
            });
        }
        if topic == self.topic && self.refuse_poison && records.iter().any(poisoned) {
            return Box::pin(async {
                Err(BusError::Refused {
                    engine: "flaky",
                    message: "a record holds poison".into(),
                })
            });
        }
        self.inner.publish_ids(topic, records)
    }

    fn receive<'a>(
        &'a self,
        group: &'a str,
        topic: &'a str,
        max: usize,
        wait: Duration,
    ) -> BoxFuture<'a, Result<Vec<InRecord>, BusError>> {
        self.inner.receive(group, topic, max, wait)
    }

    fn ack<'a>(
        &'a self,
        group: &'a str,
        topic: &'a str,
        ids: &'a [(u32, u64)],
    ) -> BoxFuture<'a, Result<(), BusError>> {
        self.inner.ack(group, topic, ids)
    }

    fn nack<'a>(
        &'a self,
        group: &'a str,
        topic: &'a str,
        ids: &'a [(u32, u64)],
        delay: Duration,
    ) -> BoxFuture<'a, Result<(), BusError>> {
        self.inner.nack(group, topic, ids, delay)
    }

    fn extend<'a>(
        &'a self,
        group: &'a str,
        topic: &'a str,
        ids: &'a [(u32, u64)],
        visibility: Duration,
    ) -> BoxFuture<'a, Result<(), BusError>> {
        self.inner.extend(group, topic, ids, visibility)
    }
}

fn sink(url: &str, extra: &str, bus: &SharedBus, dir: &tempfile::TempDir) -> RabbitMqSink {
    let text = format!(
        "[pipelines.s]\nsource = {{ type = \"topic\", topic = \"in\" }}\nsinks = [{{ type = \"rabbitmq\", url = \"{url}\", {extra} }}]\n"
    );
    let p = parse_pipelines(&text).unwrap_or_else(|d| panic!("{text}\n{d:#?}"));
    let SinkConfig::RabbitMq(c) = &p[0].sinks[0].component else {
        panic!("{p:?}")
    };
    let c: RabbitMqSinkConfig = c.clone();
    let ctx = BuildContext {
        pipeline: "s".into(),
        stage: "rabbitmq".into(),
        data_dir: dir.path().to_path_buf(),
        config_dir: dir.path().to_path_buf(),
        bus: bus.clone(),
    };
    RabbitMqSink::new(&c, &ctx).unwrap()
}

/// The sink's errors (a missing exchange is permanent, an unroutable record transient), a queue bound to
/// a named exchange, and the source's recoveries: a queue that does not exist yet (`declare = false`),
/// a broker publish that fails (the message is requeued and comes again), and a RabbitMQ restart.
#[tokio::test(flavor = "multi_thread")]
async fn rabbitmq_sink_errors_and_source_recoveries() {
    let Some(mut rabbit) = require(RabbitServer::start(), "rabbitmq-server") else {
        return;
    };
    let url = rabbit.url();
    let dir = tempfile::tempdir().unwrap();
    let embedded = broker(&dir);
    let (conn, ch) = amqp(&url).await;

    // The sink on its own.
    let record = Event {
        headers: vec![
            ("source".into(), "test".into()),
            ("ferry-error".into(), "runtime header".into()),
        ],
        ..Event::new(json!({"id": 1, "kind": "created"}))
    };
    let missing = sink(
        &url,
        r#"exchange = "no-such-exchange", routing_key = "x""#,
        &embedded,
        &dir,
    );
    let e = missing.write(std::slice::from_ref(&record)).await.unwrap_err();
    assert!(
        e.permanent && e.message.contains("no-such-exchange") && e.message.contains("does not exist"),
        "{e:?}"
    );
    let unroutable = sink(&url, r#"routing_key = "nowhere""#, &embedded, &dir);
    let e = unroutable.write(std::slice::from_ref(&record)).await.unwrap_err();
    assert!(
        !e.permanent && e.message.contains("could not route") && e.message.contains("nowhere"),
        "{e:?}"
    );
    let bound = sink(
        &url,
        r#"exchange = "amq.topic", routing_key = "events.created", queue = "events", durable = false"#,
        &embedded,
        &dir,
    );
    bound.write(std::slice::from_ref(&record)).await.unwrap();
    bound.write(std::slice::from_ref(&record)).await.unwrap();
    let mut events = consume(&ch, "events").await;
    for _ in 0..2 {
        let d = next(&mut events, "events").await;
        assert_eq!(body(&d), json!({"id": 1, "kind": "created"}));
        assert_eq!(header(&d, "source").as_deref(), Some("test"));
        assert_eq!(
            header(&d, "ferry-error"),
            None,
            "the runtime's headers stay inside"
        );
    }

    // The sources: `late-in` does not exist when the pipeline starts; the first publish of `flaky`
    // to its topic fails.
    declare(&ch, "flaky-in", true).await;
    declare(&ch, "out", true).await;
    let text = r#"
[pipelines.late]
source = { type = "rabbitmq", name = "in", url = "URL", queue = "late-in", declare = false }
sinks = [{ type = "rabbitmq", name = "out", url = "URL", routing_key = "out" }]

[pipelines.flaky]
source = { type = "rabbitmq", name = "in", url = "URL", queue = "flaky-in" }
sinks = [{ type = "rabbitmq", name = "out", url = "URL", routing_key = "out" }]
"#
    .replace("URL", &url);
    let bus: SharedBus = Arc::new(Flaky {
        inner: embedded.clone(),
        topic: "flaky.in".into(),
        failures: AtomicUsize::new(1),
        refuse_poison: false,
    });
    let (running, metrics) = run(&text, bus, &dir).await;
    let mut out = consume(&ch, "out").await;

    send(&ch, "flaky-in", br#"{"from": "flaky"}"#, &[]).await;
    assert_eq!(body(&next(&mut out, "out").await), json!({"from": "flaky"}));
    assert_eq!(metrics.stage("flaky", "in").records_out.get(), 1);
    assert_eq!(
        metrics.stage("flaky", "in").records_in.get(),
        2,
        "requeued after the failed publish, then delivered again"
    );

    declare(&ch, "late-in", true).await;
    send(&ch, "late-in", br#"{"from": "late"}"#, &[]).await;
    assert_eq!(body(&next(&mut out, "out").await), json!({"from": "late"}));

    // RabbitMQ restarts: the source consumes again, the sink publishes again (durable queues and
    // persistent messages survive).
    drop(out);
    drop(ch);
    drop(conn);
    tokio::task::block_in_place(|| rabbit.restart()).unwrap();
    let (_conn, ch) = amqp(&url).await;
    let mut out = consume(&ch, "out").await;
    send(&ch, "flaky-in", br#"{"from": "after the restart"}"#, &[]).await;
    assert_eq!(
        body(&next(&mut out, "out").await),
        json!({"from": "after the restart"})
    );

    running.stop().await;
}

// ---------------------------------------------------------------------------------------------------
// NATS

/// The next message of `sub` within `wait`, if any.
async fn next_message(sub: &mut async_nats::Subscriber, wait: Duration) -> Option<async_nats::Message> {
    tokio::time::timeout(wait, sub.next()).await.ok().flatten()
}

/// Core NATS keeps nothing for a subscriber that is not there yet: probe until the source's
/// subscription carries a message through to `out`.
async fn until_subscribed(client: &async_nats::Client, out: &mut async_nats::Subscriber) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        client
            .publish("in.probe", Bytes::from_static(br#"{"kind":"probe"}"#))
            .await
            .unwrap();
        if next_message(out, Duration::from_millis(250)).await.is_some() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the nats source did not subscribe within {DEADLINE:?}"
        );
    }
}

/// A NATS subject through a pipeline to another subject (core NATS both ways): the subject template,
/// headers, and a body that is not JSON dropped without stopping the ones after it.
#[tokio::test(flavor = "multi_thread")]
async fn nats_subject_to_nats_subject() {
    let Some(nats) = require(NatsServer::start(), "nats-server") else {
        return;
    };
    let url = nats.url();
    let client = async_nats::connect(&url).await.unwrap();
    let mut out = client.subscribe("out.>").await.unwrap();
    client.flush().await.unwrap();

    let text = r#"
[pipelines.bridge]
source = { type = "nats", name = "in", url = "URL", subject = "in.>", queue_group = "ferry" }

[[pipelines.bridge.sinks]]
type = "nats"
name = "out"
url = "URL"
subject = "out.{kind}"
"#
    .replace("URL", &url);
    let dir = tempfile::tempdir().unwrap();
    let (running, metrics) = run(&text, broker(&dir), &dir).await;
    until_subscribed(&client, &mut out).await;

    let mut headers = async_nats::HeaderMap::new();
    headers.insert("trace", "t-2");
    client
        .publish_with_headers(
            "in.orders.eu",
            headers,
            Bytes::from_static(br#"{"kind":"order","id":7}"#),
        )
        .await
        .unwrap();
    client
        .publish("in.x", Bytes::from_static(b"not json"))
        .await
        .unwrap();
    client
        .publish("in.orders.us", Bytes::from_static(br#"{"kind":"order","id":8}"#))
        .await
        .unwrap();
    client.flush().await.unwrap();

    let mut got = Vec::new();
    while got.len() < 2 {
        let m = next_message(&mut out, DEADLINE)
            .await
            .expect("the orders arrive on out.order");
        if m.subject.as_str() == "out.probe" {
            continue;
        }
        assert_eq!(m.subject.as_str(), "out.order");
        let v: Value = serde_json::from_slice(&m.payload).unwrap();
        let trace = m
            .headers
            .as_ref()
            .and_then(|h| h.get("trace"))
            .map(|v| v.as_str().to_owned());
        got.push((v, trace));
    }
    assert_eq!(
        got,
        [
            (json!({"kind": "order", "id": 7}), Some("t-2".to_owned())),
            (json!({"kind": "order", "id": 8}), None),
        ]
    );
    assert_eq!(
        metrics.stage("bridge", "in").failed.get(),
        1,
        "the body that is not JSON"
    );
    running.stop().await;
}

/// A message the engine refuses between two it takes: the source publishes them one at a time, drops
/// that one and the others reach the topic, in order.
#[tokio::test(flavor = "multi_thread")]
async fn nats_source_drops_a_message_the_engine_refuses() {
    let Some(nats) = require(NatsServer::start(), "nats-server") else {
        return;
    };
    let url = nats.url();
    let client = async_nats::connect(&url).await.unwrap();
    let text = r#"
[pipelines.poison]
source = { type = "nats", name = "in", url = "URL", subject = "in.>" }
sinks = [{ type = "topic", topic = "poison-out" }]
"#
    .replace("URL", &url);
    let dir = tempfile::tempdir().unwrap();
    let embedded = broker(&dir);
    let (running, metrics) = run(&text, refusing_poison(&embedded, "poison.in"), &dir).await;

    // Core NATS keeps nothing for a subscriber that is not there yet: probe until one reaches the topic.
    let probe = |v: &Value| v["kind"] == json!("probe");
    embedded
        .ensure_group("test", "poison.in", GroupSettings::default())
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        client
            .publish("in.probe", Bytes::from_static(br#"{"kind":"probe"}"#))
            .await
            .unwrap();
        client.flush().await.unwrap();
        let got = embedded
            .receive("test", "poison.in", 10, Duration::from_millis(250))
            .await
            .unwrap();
        if !got.is_empty() {
            let ids: Vec<_> = got.iter().map(InRecord::id).collect();
            embedded.ack("test", "poison.in", &ids).await.unwrap();
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the nats source did not subscribe within {DEADLINE:?}"
        );
    }

    for body in [
        &br#"{"n": "ok-1"}"#[..],
        br#"{"n": "poison", "poison": true}"#,
        br#"{"n": "ok-2"}"#,
    ] {
        client
            .publish("in.orders", Bytes::from_static(body))
            .await
            .unwrap();
    }
    client.flush().await.unwrap();

    // The poison came between the two: had it been published, it would be the second record.
    assert_eq!(
        topic_values(&embedded, "poison.in", 2, probe).await,
        [json!({"n": "ok-1"}), json!({"n": "ok-2"})]
    );
    assert_eq!(
        metrics.stage("poison", "in").failed.get(),
        1,
        "the refused message is counted"
    );
    running.stop().await;
}

/// A `jetstream = true` sink: records are stored in the stream that captures their subject; a record
/// whose subject no stream captures goes to the dead-letter topic at once.
#[tokio::test(flavor = "multi_thread")]
async fn nats_jetstream_sink_stores_records() {
    let Some(nats) = require(NatsServer::start(), "nats-server") else {
        return;
    };
    let url = nats.url();
    let client = async_nats::connect(&url).await.unwrap();
    let js = jetstream::new(client.clone());
    let stream = js
        .create_stream(jetstream::stream::Config {
            name: "ORDERS".into(),
            subjects: vec!["orders.>".into()],
            ..Default::default()
        })
        .await
        .unwrap();

    let text = r#"
[pipelines.store]
source = { type = "topic", topic = "orders-in" }

[[pipelines.store.sinks]]
type = "nats"
url = "URL"
subject = "{dest}.{id}"
jetstream = true
"#
    .replace("URL", &url);
    let dir = tempfile::tempdir().unwrap();
    let bus = broker(&dir);
    let (running, _metrics) = run(&text, bus.clone(), &dir).await;
    let record = |v: Value, headers: Vec<(String, String)>| OutRecord {
        key: None,
        headers,
        value: Bytes::from(v.to_string()),
    };
    bus.publish(
        "orders-in",
        vec![
            record(
                json!({"dest": "orders", "id": 1}),
                vec![("trace".into(), "t-3".into())],
            ),
            record(json!({"dest": "nowhere", "id": 2}), vec![]),
        ],
    )
    .await
    .unwrap();

    let consumer = stream
        .create_consumer(jetstream::consumer::pull::Config::default())
        .await
        .unwrap();
    let mut messages = consumer.messages().await.unwrap();
    let m = tokio::time::timeout(DEADLINE, messages.next())
        .await
        .expect("the record is stored in ORDERS")
        .unwrap()
        .unwrap();
    assert_eq!(m.subject.as_str(), "orders.1");
    assert_eq!(
        serde_json::from_slice::<Value>(&m.payload).unwrap(),
        json!({"dest": "orders", "id": 1})
    );
    assert_eq!(
        m.headers
            .as_ref()
            .and_then(|h| h.get("trace"))
            .map(|v| v.as_str()),
        Some("t-3")
    );

    // The record no stream captures: dead-lettered after one attempt, saying why.
    bus.ensure_group("test", "store.dlq", GroupSettings::default())
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let dead = loop {
        let got = bus
            .receive("test", "store.dlq", 10, Duration::from_millis(500))
            .await
            .unwrap();
        if let Some(r) = got.into_iter().next() {
            break r;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "nothing in store.dlq within {DEADLINE:?}"
        );
    };
    let h = |name: &str| {
        dead.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    assert!(
        h("ferry-error").contains("no stream captures subject `nowhere.2`"),
        "{:?}",
        dead.headers
    );
    assert_eq!(h("ferry-attempts"), "1");
    running.stop().await;
}
