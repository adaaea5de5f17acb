//! `examples/scream.toml` (seed 000) end to end: the real binary, a real SMTP server on loopback.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Smtp, Up, example, mail_body, metric, post, up, wait_for};

fn up_scream(dir: &std::path::Path, smtp: &Smtp) -> Up {
    let port = smtp.port.to_string();
    up(
        dir,
        &[
            "--config",
            example("scream.toml").to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ],
        &[
            ("SMTP_HOST", "127.0.0.1"),
            ("SMTP_PORT", port.as_str()),
            ("SMTP_TLS", "none"),
            ("SMTP_FROM", "ferry@example.com"),
            ("SMTP_TO", "receiver@example.com"),
        ],
    )
}

fn send(up: &Up, user: &str, message: &str) {
    let r = post(
        &up.url,
        "/send",
        &serde_json::json!({"user": user, "message": message}).to_string(),
    );
    assert_eq!((r.status, r.body.as_str()), (200, "message has been published"));
}

/// Waits until `n` messages arrived and returns their bodies.
fn bodies(smtp: &Smtp, n: usize) -> Vec<String> {
    wait_for(&format!("{n} e-mails"), Duration::from_secs(60), || {
        let m = smtp.messages();
        (m.len() >= n).then_some(m)
    })
    .iter()
    .map(|m| {
        assert!(m.contains("Subject: Event-Driven System"), "{m}");
        mail_body(m)
    })
    .collect()
}

#[test]
fn messages_are_filtered_screamed_and_mailed() {
    let dir = tempfile::tempdir().unwrap();
    let Some(smtp) = Smtp::start(dir.path()) else {
        return;
    };
    let up = up_scream(dir.path(), &smtp);
    send(&up, "alice", "hello world");
    let got = bodies(&smtp, 1);
    assert!(
        got[0].contains("From user: alice\n\nMessage: HELLO WORLD"),
        "{got:?}"
    );
    // A stop word stops the message; the next one behind it proves it was processed and dropped.
    send(&up, "bob", "I like Mango");
    send(&up, "carol", "second message");
    let got = bodies(&smtp, 2);
    assert_eq!(smtp.messages().len(), 2);
    assert!(
        got.iter().any(|b| b.contains("Message: SECOND MESSAGE")),
        "{got:?}"
    );
    assert!(!got.iter().any(|b| b.contains("MANGO")), "{got:?}");
    assert_eq!(
        metric(
            &up.url,
            "ferry_pipeline_records_filtered_total{pipeline=\"scream\",stage=\"filter\"}"
        ),
        Some(1.0)
    );
}

#[test]
fn a_message_accepted_while_smtp_is_down_arrives_when_it_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mut smtp) = Smtp::start(dir.path()) else {
        return;
    };
    let up = up_scream(dir.path(), &smtp);
    smtp.stop();
    send(&up, "dave", "sent while the mail server is down");
    // The sink failed and is retrying with backoff: the record is held, not lost.
    wait_for("the email sink to retry", Duration::from_secs(30), || {
        metric(
            &up.url,
            "ferry_pipeline_retries_total{pipeline=\"scream\",stage=\"email\"}",
        )
        .filter(|&v| v >= 1.0)
    });
    assert!(smtp.messages().is_empty());
    smtp.restart();
    let got = bodies(&smtp, 1);
    assert!(
        got[0].contains("Message: SENT WHILE THE MAIL SERVER IS DOWN"),
        "{got:?}"
    );
    assert_eq!(
        metric(
            &up.url,
            "ferry_pipeline_records_failed_total{pipeline=\"scream\",stage=\"email\"}"
        ),
        Some(0.0)
    );
}

#[test]
fn ferry_up_without_a_config_runs_scream_into_the_outbox() {
    let dir = tempfile::tempdir().unwrap();
    let up = up(dir.path(), &["--listen", "127.0.0.1:0"], &[("SMTP_HOST", "")]);
    assert_eq!(up.line["pipelines"], serde_json::json!(["scream"]));
    send(&up, "alias", "type your message here");
    let outbox = dir.path().join("ferry-data/outbox");
    let eml = wait_for("an .eml file in the outbox", Duration::from_secs(30), || {
        let e = std::fs::read_dir(&outbox)
            .ok()?
            .flatten()
            .find(|e| e.path().extension().is_some_and(|x| x == "eml"))?;
        std::fs::read_to_string(e.path()).ok()
    });
    assert!(eml.contains("Subject: Event-Driven System"), "{eml}");
    assert!(
        mail_body(&eml).contains("From user: alias\n\nMessage: TYPE YOUR MESSAGE HERE"),
        "{eml}"
    );
}
