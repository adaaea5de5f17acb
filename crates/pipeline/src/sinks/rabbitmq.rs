//! `type = "rabbitmq"`: each record published to a RabbitMQ exchange, confirmed before it is acked.
//!
//! The body is the record's JSON value (`content_type` `application/json`, persistent: delivery mode
//! 2), its headers are AMQP string headers, and its routing key is `routing_key` rendered over the
//! record's fields. Publishing happens on a channel in confirm mode with `mandatory` set: `write` returns
//! `Ok` only once RabbitMQ acked the message, which it does after routing it to at least one queue (and,
//! for a durable queue, storing it). A message RabbitMQ could not route (no queue bound with that key) or
//! nacked, and a lost connection, are transient errors (retried, then dead-lettered); the next write
//! connects again. A missing exchange, or a `queue` declared before with other settings, is permanent.
//!
//! With `queue`, the queue is declared (durable per `durable`) when the sink connects and, when
//! `exchange` is not the default one, bound to it with `routing_key`, so that records are kept for a
//! consumer that starts later. The exchange itself must exist (a passive declare checks it).

use std::time::Duration;

use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::protocol::AMQPSoftError;
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::uri::AMQPUri;
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind};

use crate::bus::BoxFuture;
use crate::component::{BuildContext, Sink};
use crate::config::{RabbitMqSinkConfig, amqp_name_problem, amqp_url_problem};
use crate::error::StageError;
use crate::event::{Event, headers};
use crate::sources::rabbitmq::soft_error;
use crate::template::Template;

/// Longest a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest RabbitMQ may take to confirm a message.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);

/// Problems of a `rabbitmq` sink's settings, each with its key.
pub fn validate(c: &RabbitMqSinkConfig) -> Vec<(String, String)> {
    let mut out = Vec::new();
    amqp_url_problem("url", &c.url, &mut out);
    amqp_name_problem("exchange", &c.exchange, true, &mut out);
    let fixed = match Template::parse(&c.routing_key) {
        Err(e) => {
            out.push(("routing_key".into(), e));
            None
        }
        Ok(t) if t.fields().is_empty() => {
            let key = t.render(&serde_json::Value::Null);
            amqp_name_problem("routing_key", &key, true, &mut out);
            Some(key)
        }
        Ok(_) => None,
    };
    if let Some(queue) = &c.queue {
        amqp_name_problem("queue", queue, false, &mut out);
        match (&fixed, c.exchange.is_empty()) {
            (None, false) => out.push((
                "queue".into(),
                "is bound to `exchange` with `routing_key`, which must then be fixed text (no `{field}`)".into(),
            )),
            (Some(key), true) if key != queue => out.push((
                "routing_key".into(),
                format!(
                    "with the default exchange (`exchange = \"\"`) records go to the queue named by the routing key: \
                     write `routing_key = \"{queue}\"` to fill `queue`"
                ),
            )),
            _ => {}
        }
    }
    out
}

/// An open connection with its confirm-mode channel.
struct Session {
    conn: Connection,
    channel: Channel,
}

/// Publishes each record to a RabbitMQ exchange (see the module documentation).
pub struct RabbitMqSink {
    uri: AMQPUri,
    exchange: ShortString,
    routing_key: Template,
    queue: Option<ShortString>,
    durable: bool,
    /// Connection name: `ferry <pipeline>.<stage>`.
    name: String,
    session: tokio::sync::Mutex<Option<Session>>,
}

impl std::fmt::Debug for RabbitMqSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitMqSink")
            .field("host", &self.uri.authority.host)
            .field("port", &self.uri.authority.port)
            .field("exchange", &self.exchange)
            .field("queue", &self.queue)
            .finish_non_exhaustive()
    }
}

impl RabbitMqSink {
    /// A sink for `c` (no connection is made until the first write).
    ///
    /// # Errors
    /// Invalid settings, naming the key.
    pub fn new(c: &RabbitMqSinkConfig, ctx: &BuildContext) -> anyhow::Result<Self> {
        if let Some((key, message)) = validate(c).into_iter().next() {
            anyhow::bail!("{key}: {message}");
        }
        let uri: AMQPUri = c
            .url
            .parse()
            .map_err(|_| anyhow::anyhow!("url: not a valid AMQP URL"))?;
        let routing_key = Template::parse(&c.routing_key).map_err(|e| anyhow::anyhow!("routing_key: {e}"))?;
        let exchange =
            ShortString::try_new(c.exchange.clone()).map_err(|e| anyhow::anyhow!("exchange: {e}"))?;
        let queue = c
            .queue
            .clone()
            .map(ShortString::try_new)
            .transpose()
            .map_err(|e| anyhow::anyhow!("queue: {e}"))?;
        Ok(Self {
            uri,
            exchange,
            routing_key,
            queue,
            durable: c.durable,
            name: format!("ferry {}.{}", ctx.pipeline, ctx.stage),
            session: tokio::sync::Mutex::new(None),
        })
    }

    /// `rabbitmq host:port/vhost`, for messages (never the password).
    fn server(&self) -> String {
        format!(
            "rabbitmq {}:{}/{}",
            self.uri.authority.host, self.uri.authority.port, self.uri.vhost
        )
    }

    /// The connection and channel made when missing or broken, with the exchange checked and the queue
    /// declared and bound.
    async fn open(&self) -> Result<Session, StageError> {
        let props = ConnectionProperties::default().with_connection_name(self.name.as_str().into());
        let conn =
            match tokio::time::timeout(CONNECT_TIMEOUT, Connection::connect_uri(self.uri.clone(), props))
                .await
            {
                Ok(Ok(conn)) => conn,
                Ok(Err(e)) => {
                    return Err(StageError::transient(format!(
                        "{}: cannot connect: {e}",
                        self.server()
                    )));
                }
                Err(_) => {
                    return Err(StageError::transient(format!(
                        "{}: cannot connect: no answer in {CONNECT_TIMEOUT:?}",
                        self.server()
                    )));
                }
            };
        match self.prepare(&conn).await {
            Ok(channel) => Ok(Session { conn, channel }),
            Err(e) => {
                close(&conn).await;
                Err(e)
            }
        }
    }

    async fn prepare(&self, conn: &Connection) -> Result<Channel, StageError> {
        let channel = conn.create_channel().await.map_err(|e| self.error(&e))?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| self.error(&e))?;
        if !self.exchange.as_str().is_empty() {
            let passive = ExchangeDeclareOptions {
                passive: true,
                ..ExchangeDeclareOptions::default()
            };
            channel
                .exchange_declare(
                    self.exchange.clone(),
                    ExchangeKind::Direct,
                    passive,
                    FieldTable::default(),
                )
                .await
                .map_err(|e| self.error(&e))?;
        }
        if let Some(queue) = &self.queue {
            let options = QueueDeclareOptions {
                durable: self.durable,
                ..QueueDeclareOptions::default()
            };
            channel
                .queue_declare(queue.clone(), options, FieldTable::default())
                .await
                .map_err(|e| self.queue_error(queue, &e))?;
            if !self.exchange.as_str().is_empty() {
                let key = self.routing_key.render(&serde_json::Value::Null);
                let key = ShortString::try_new(key)
                    .map_err(|e| StageError::permanent(format!("routing_key: {e}")))?;
                channel
                    .queue_bind(
                        queue.clone(),
                        self.exchange.clone(),
                        key,
                        QueueBindOptions::default(),
                        FieldTable::default(),
                    )
                    .await
                    .map_err(|e| self.error(&e))?;
            }
        }
        Ok(channel)
    }

    /// A lapin error as a stage error: a missing exchange or a refusal is permanent, the rest (a lost
    /// connection, a timeout) transient.
    fn error(&self, e: &lapin::Error) -> StageError {
        let server = self.server();
        match soft_error(e) {
            Some(AMQPSoftError::NOTFOUND) => StageError::permanent(format!(
                "{server}: exchange `{}` does not exist ({e}): declare it, or leave `exchange` out for the default exchange",
                self.exchange
            )),
            Some(AMQPSoftError::ACCESSREFUSED) => StageError::permanent(format!("{server}: {e}")),
            _ => StageError::transient(format!("{server}: {e}")),
        }
    }

    fn queue_error(&self, queue: &ShortString, e: &lapin::Error) -> StageError {
        match soft_error(e) {
            Some(AMQPSoftError::PRECONDITIONFAILED) => StageError::permanent(format!(
                "{}: queue `{queue}` exists with other settings ({e}): set `durable = {}` to match how it was declared",
                self.server(),
                !self.durable
            )),
            _ => self.error(e),
        }
    }

    /// Publishes one record and waits for RabbitMQ's confirm.
    async fn publish(&self, channel: &Channel, event: &Event) -> Result<(), PublishError> {
        let key = self.routing_key.render(&event.value);
        let key = ShortString::try_new(key)
            .map_err(|e| PublishError::Record(StageError::permanent(format!("routing_key: {e}"))))?;
        let mut table = FieldTable::default();
        for (name, value) in &event.headers {
            if headers::is_runtime(name) {
                continue;
            }
            let name = ShortString::try_new(name.clone())
                .map_err(|e| PublishError::Record(StageError::permanent(format!("header name: {e}"))))?;
            table.insert(name, AMQPValue::LongString(value.as_str().into()));
        }
        let props = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_delivery_mode(2)
            .with_headers(table);
        let body = event.value.to_string();
        let options = BasicPublishOptions {
            mandatory: true,
            ..BasicPublishOptions::default()
        };
        let confirm = channel
            .basic_publish(
                self.exchange.clone(),
                key.clone(),
                options,
                body.as_bytes(),
                props,
            )
            .await
            .map_err(|e| PublishError::Channel(self.error(&e)))?;
        let confirmation = match tokio::time::timeout(CONFIRM_TIMEOUT, confirm).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err(PublishError::Channel(self.error(&e))),
            Err(_) => {
                return Err(PublishError::Channel(StageError::transient(format!(
                    "{}: no publisher confirm in {CONFIRM_TIMEOUT:?}",
                    self.server()
                ))));
            }
        };
        let exchange = if self.exchange.as_str().is_empty() {
            "the default exchange".to_owned()
        } else {
            format!("exchange `{}`", self.exchange)
        };
        match confirmation {
            Confirmation::Ack(None) => Ok(()),
            Confirmation::Ack(Some(returned)) | Confirmation::Nack(Some(returned)) => {
                Err(PublishError::Record(StageError::transient(format!(
                    "{}: {exchange} could not route the record with routing key `{key}` ({} {}): no queue is bound \
                     for it (set `queue` to declare one)",
                    self.server(),
                    returned.reply_code,
                    returned.reply_text
                ))))
            }
            Confirmation::Nack(None) => Err(PublishError::Record(StageError::transient(format!(
                "{}: RabbitMQ nacked the record",
                self.server()
            )))),
            Confirmation::NotRequested => Err(PublishError::Channel(StageError::transient(format!(
                "{}: the channel is not in confirm mode",
                self.server()
            )))),
        }
    }
}

/// Closes a connection that is no longer wanted (it may be broken already: not waiting long).
async fn close(conn: &Connection) {
    let _ = tokio::time::timeout(
        Duration::from_secs(2),
        conn.close(200, "ferry sink reconnecting".into()),
    )
    .await;
}

/// Why a publish failed.
enum PublishError {
    /// This record (the channel is still good).
    Record(StageError),
    /// The channel or connection (a new one is made on the next write).
    Channel(StageError),
}

impl Sink for RabbitMqSink {
    fn write<'a>(&'a self, events: &'a [Event]) -> BoxFuture<'a, Result<(), StageError>> {
        Box::pin(async move {
            let mut session = self.session.lock().await;
            let broken = session
                .as_ref()
                .is_some_and(|s| !(s.conn.status().connected() && s.channel.status().connected()));
            if broken && let Some(old) = session.take() {
                close(&old.conn).await;
            }
            if session.is_none() {
                *session = Some(self.open().await?);
            }
            let Some(s) = session.as_ref() else {
                return Err(StageError::transient("no rabbitmq connection"));
            };
            for event in events {
                match self.publish(&s.channel, event).await {
                    Ok(()) => {}
                    Err(PublishError::Record(e)) => return Err(e),
                    Err(PublishError::Channel(e)) => {
                        if let Some(old) = session.take() {
                            close(&old.conn).await;
                        }
                        return Err(e);
                    }
                }
            }
            Ok(())
        })
    }
}
