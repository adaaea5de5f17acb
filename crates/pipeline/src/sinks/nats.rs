//! `type = "nats"`: each record published to a NATS subject as its JSON value, with its headers as NATS
//! headers and the subject rendered from `subject` over the record's fields.
//!
//! - Core NATS (`jetstream = false`): the records are published, then the connection is flushed;
//!   `write` returns `Ok` once the server has received them. Core NATS keeps nothing: subscribers that
//!   are not connected at that moment never see the record (at-most-once past the server).
//! - JetStream (`jetstream = true`): each record is published to JetStream and `write` returns `Ok`
//!   once the stream that captures the subject acknowledged storing it (a `PubAck`), so a consumer
//!   that starts later finds it. A subject that no stream captures is a permanent error (dead-lettered
//!   at once): create the stream, then replay.
//!
//! A subject that is not valid once rendered (empty, a space, an empty token, a wildcard), an invalid
//! header, or a record larger than the server's `max_payload` is permanent; a connection that is down
//! (the client reconnects by itself) or a timeout is transient.

use std::time::Duration;

use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use async_nats::{Client, HeaderMap, HeaderName, HeaderValue, jetstream};
use bytes::Bytes;
use tokio::sync::OnceCell;

use crate::bus::BoxFuture;
use crate::component::{BuildContext, Sink};
use crate::config::{NatsSinkConfig, nats_subject, nats_url_problem};
use crate::error::StageError;
use crate::event::{Event, headers};
use crate::template::Template;

/// Longest a flush (core NATS) may take.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// Problems of a `nats` sink's settings, each with its key.
pub fn validate(c: &NatsSinkConfig) -> Vec<(String, String)> {
    let mut out = Vec::new();
    nats_url_problem("url", &c.url, &mut out);
    match Template::parse(&c.subject) {
        Err(e) => out.push(("subject".into(), e)),
        Ok(t) if t.fields().is_empty() => {
            if let Err(e) = nats_subject(&t.render(&serde_json::Value::Null), false) {
                out.push(("subject".into(), e));
            }
        }
        Ok(_) => {
            if c.subject.chars().any(char::is_whitespace) {
                out.push(("subject".into(), format!("{:?} has a space", c.subject)));
            }
        }
    }
    out
}

/// A connection, with its JetStream context.
struct Link {
    client: Client,
    js: jetstream::Context,
}

/// Publishes each record to a NATS subject (see the module documentation).
pub struct NatsSink {
    url: String,
    subject: Template,
    jetstream: bool,
    /// Connection name: `pipeline.stage`.
    name: String,
    link: OnceCell<Link>,
}

impl std::fmt::Debug for NatsSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsSink")
            .field("subject", &self.subject)
            .field("jetstream", &self.jetstream)
            .finish_non_exhaustive()
    }
}

impl NatsSink {
    /// A sink for `c` (no connection is made until the first write).
    ///
    /// # Errors
    /// Invalid settings, naming the key.
    pub fn new(c: &NatsSinkConfig, ctx: &BuildContext) -> anyhow::Result<Self> {
        if let Some((key, message)) = validate(c).into_iter().next() {
            anyhow::bail!("{key}: {message}");
        }
        let subject = Template::parse(&c.subject).map_err(|e| anyhow::anyhow!("subject: {e}"))?;
        Ok(Self {
            url: c.url.clone(),
            subject,
            jetstream: c.jetstream,
            name: format!("{}.{}", ctx.pipeline, ctx.stage),
            link: OnceCell::new(),
        })
    }

    /// The connection; made on first use (the client reconnects by itself after that).
    async fn link(&self) -> Result<&Link, StageError> {
        self.link
            .get_or_try_init(|| async {
                let client = crate::sources::nats::connect(&self.url, &self.name)
                    .await
                    .map_err(StageError::transient)?;
                Ok(Link {
                    js: jetstream::new(client.clone()),
                    client,
                })
            })
            .await
    }

    /// The subject, headers and body of `event`.
    fn message(&self, event: &Event) -> Result<(String, HeaderMap, Bytes), StageError> {
        let subject = self.subject.render(&event.value);
        nats_subject(&subject, false)
            .map_err(|e| StageError::permanent(format!("nats: the record's subject is not valid: {e}")))?;
        let mut map = HeaderMap::new();
        for (name, value) in &event.headers {
            if headers::is_runtime(name) {
                continue;
            }
            let header = name.parse::<HeaderName>().map_err(|e| {
                StageError::permanent(format!(
                    "nats: header name `{}` is not valid: {e}",
                    name.escape_default()
                ))
            })?;
            let value = value.parse::<HeaderValue>().map_err(|e| {
                StageError::permanent(format!("nats: the value of header `{name}` is not valid: {e}"))
            })?;
            map.append(header, value);
        }
        Ok((subject, map, Bytes::from(event.value.to_string())))
    }

    async fn core(&self, client: &Client, events: &[Event]) -> Result<(), StageError> {
        for event in events {
            let (subject, headers, body) = self.message(event)?;
            let sent = if headers.is_empty() {
                client.publish(subject.clone(), body).await
            } else {
                client.publish_with_headers(subject.clone(), headers, body).await
            };
            sent.map_err(|e| {
                let message = format!("nats: publishing to `{subject}`: {e}");
                match e.kind() {
                    async_nats::client::PublishErrorKind::MaxPayloadExceeded
                    | async_nats::client::PublishErrorKind::InvalidSubject => StageError::permanent(message),
                    _ => StageError::transient(message),
                }
            })?;
        }
        match tokio::time::timeout(FLUSH_TIMEOUT, client.flush()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(StageError::transient(format!("nats: flushing: {e}"))),
            Err(_) => Err(StageError::transient(format!(
                "nats: the server did not take the records in {FLUSH_TIMEOUT:?}"
            ))),
        }
    }

    async fn jetstream(&self, js: &jetstream::Context, events: &[Event]) -> Result<(), StageError> {
        for event in events {
            let (subject, headers, body) = self.message(event)?;
            let ack = js
                .publish_with_headers(subject.clone(), headers, body)
                .await
                .map_err(|e| publish_error(&subject, &e))?;
            ack.await.map_err(|e| publish_error(&subject, &e))?;
        }
        Ok(())
    }
}

/// A JetStream publish error as a stage error.
fn publish_error(subject: &str, e: &PublishError) -> StageError {
    let message = format!("nats: publishing to `{subject}` on JetStream: {e}");
    match e.kind() {
        PublishErrorKind::StreamNotFound => StageError::permanent(format!(
            "nats: no stream captures subject `{subject}` (or JetStream is not enabled): create a stream for it, \
             or set `jetstream = false`"
        )),
        PublishErrorKind::TimedOut | PublishErrorKind::BrokenPipe | PublishErrorKind::MaxAckPending => {
            StageError::transient(message)
        }
        PublishErrorKind::MaxPayloadExceeded
        | PublishErrorKind::WrongLastMessageId
        | PublishErrorKind::WrongLastSequence => StageError::permanent(message),
        _ => match std::error::Error::source(e).and_then(|s| s.downcast_ref::<jetstream::Error>()) {
            // JetStream's own answer: 5xx (not ready, busy) may pass; the rest (a full stream that
            // discards new messages, ...) will not.
            Some(api) if api.code() < 500 => StageError::permanent(message),
            _ => StageError::transient(message),
        },
    }
}

impl Sink for NatsSink {
    fn write<'a>(&'a self, events: &'a [Event]) -> BoxFuture<'a, Result<(), StageError>> {
        Box::pin(async move {
            let link = self.link().await?;
            let state = link.client.connection_state();
            if state != async_nats::connection::State::Connected {
                return Err(StageError::transient(format!(
                    "nats: not connected ({state}); the client is reconnecting"
                )));
            }
            if self.jetstream {
                self.jetstream(&link.js, events).await
            } else {
                self.core(&link.client, events).await
            }
        })
    }
}
