//! Interop with real clients: seed 000's Python producer (pika: default exchange, queue `messages`, body
//! `user~message`) feeds `examples/scream-rabbitmq.toml` through a `rabbitmq` source; the e-mails arrive
//! at a real SMTP server, and a pika consumer reads the screamed messages a ferry `rabbitmq` sink
//! published.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Smtp, example, have_python_module, mail_body, up, wait_for};
use ferry_engines::servers::{RabbitServer, require};

/// What the seed's api.py does for each message.
const PRODUCER: &str = r#"
import sys, pika
conn = pika.BlockingConnection(pika.URLParameters(sys.argv[1]))
channel = conn.channel()
channel.queue_declare(queue='messages')
for pair in sys.argv[2:]:
    user, message = pair.split('=', 1)
    channel.basic_publish(exchange='', routing_key='messages', body=f"{user}~{message}")
conn.close()
"#;

/// Reads up to N messages from a queue within a deadline, one body per line.
const CONSUMER: &str = r#"
import sys, time, pika
conn = pika.BlockingConnection(pika.URLParameters(sys.argv[1]))
channel = conn.channel()
channel.queue_declare(queue=sys.argv[2], durable=True)
want, deadline = int(sys.argv[3]), time.time() + 60
got = 0
for method, properties, body in channel.consume(sys.argv[2], inactivity_timeout=1):
    if method is not None:
        print(body.decode(), flush=True)
        channel.basic_ack(method.delivery_tag)
        got += 1
    if got >= want or time.time() > deadline:
        break
conn.close()
"#;

fn python(script: &str, args: &[&str]) -> String {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn a_pika_producer_feeds_ferry_and_a_pika_consumer_reads_what_it_published() {
    if !have_python_module("pika", "pika (Python RabbitMQ client)") {
        return;
    }
    let Some(rabbit) = require(RabbitServer::start(), "rabbitmq-server") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let Some(smtp) = Smtp::start(dir.path()) else {
        return;
    };
    let url = rabbit.url();
    let port = smtp.port.to_string();
    let up = up(
        dir.path(),
        &[
            "--config",
            example("scream-rabbitmq.toml").to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ],
        &[
            ("RABBITMQ_URL", url.as_str()),
            ("SMTP_HOST", "127.0.0.1"),
            ("SMTP_PORT", port.as_str()),
            ("SMTP_TLS", "none"),
            ("SMTP_FROM", "ferry@example.com"),
            ("SMTP_TO", "receiver@example.com"),
        ],
    );
    assert_eq!(up.line["pipelines"], serde_json::json!(["scream"]));
    python(
        PRODUCER,
        &[
            &url,
            "alice=hello world",
            "bob=I like mango",
            "carol=tilde ~ inside",
        ],
    );

    let mails = wait_for("2 e-mails", Duration::from_secs(60), || {
        let m: Vec<String> = smtp.messages().iter().map(|m| mail_body(m)).collect();
        (m.len() >= 2).then_some(m)
    });
    assert!(
        mails
            .iter()
            .any(|b| b.contains("From user: alice\n\nMessage: HELLO WORLD")),
        "{mails:?}"
    );
    assert!(
        mails
            .iter()
            .any(|b| b.contains("From user: carol\n\nMessage: TILDE ~ INSIDE")),
        "{mails:?}"
    );
    assert!(!mails.iter().any(|b| b.contains("MANGO")), "{mails:?}");

    let lines = python(CONSUMER, &[&url, "filtered_screamed_out_messages", "2"]);
    let got: Vec<serde_json::Value> = lines.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(got.len(), 2, "{lines}");
    assert!(
        got.contains(&serde_json::json!({"user": "alice", "message": "HELLO WORLD"})),
        "{got:?}"
    );
    assert!(
        got.contains(&serde_json::json!({"user": "carol", "message": "TILDE ~ INSIDE"})),
        "{got:?}"
    );
}
