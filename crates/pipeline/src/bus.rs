//! The engine a pipeline runs on ([`Bus`] is `ferry_broker::engine::Engine`): the embedded broker in the
//! same process (`ferry up`), NATS JetStream or RabbitMQ (`ferry-engines`), or a ferry server over HTTP
//! (`ferry run --url`, [`RemoteBus`] here). Stages only publish, receive under a lease, ack, nack and
//! extend, so all give the same delivery contract: a record is done when acked; a lease that runs out (a
//! crashed stage) makes it available again.

use std::time::Duration;

pub use ferry_broker::engine::{
    BoxFuture, Engine as Bus, EngineError as BusError, GroupSettings, InRecord, OutRecord,
    SharedEngine as SharedBus,
};
use ferry_client::{Client, ProduceRecord};

/// A ferry server's error as an engine error: transient when trying again may help.
pub fn remote(e: ferry_client::Error) -> BusError {
    let (engine, message) = ("ferry server", e.to_string());
    // What the server says about the records themselves; anything else (a token, a missing topic) is not
    // the records' fault, so a source must not give them up for it.
    const REFUSED: &[&str] = &[
        "engine_refused",
        "record_too_large",
        "body_too_large",
        "invalid_field",
        "invalid_config",
    ];
    if e.code() == Some("not_leased") {
        BusError::NotLeased { engine, message }
    } else if e.is_transient() {
        BusError::Unavailable { engine, message }
    } else if e.code().is_some_and(|c| REFUSED.contains(&c)) {
        BusError::Refused { engine, message }
    } else {
        BusError::Failed { engine, message }
    }
}

/// A ferry server, over its HTTP API.
#[derive(Debug, Clone)]
pub struct RemoteBus(pub Client);

impl Bus for RemoteBus {
    fn name(&self) -> &'static str {
        "ferry server"
    }

    fn ensure_topic<'a>(&'a self, topic: &'a str) -> BoxFuture<'a, Result<(), BusError>> {
        Box::pin(async move {
            match self
                .0
                .create_topic(topic, &ferry_client::TopicConfig::default())
                .await
            {
                Ok(_) => Ok(()),
                Err(e) if e.code() == Some("topic_exists") => Ok(()),
                Err(e) => Err(remote(e)),
            }
        })
    }

    fn ensure_group<'a>(
        &'a self,
        group: &'a str,
        topic: &'a str,
        settings: GroupSettings,
    ) -> BoxFuture<'a, Result<(), BusError>> {
        Box::pin(async move {
            let config = ferry_client::QueueConfig {
                visibility_timeout_ms: Some(settings.visibility.as_millis().try_into().unwrap_or(u64::MAX)),
                max_deliveries: Some(ferry_broker::engine::GUARD_DELIVERIES),
                max_in_flight: Some(settings.max_in_flight),
                ..ferry_client::QueueConfig::default()
            };
            match self.0.create_queue(group, topic, &config).await {
                Ok(_) => Ok(()),
                Err(e) if e.code() == Some("queue_exists") => Ok(()),
                Err(e) => Err(remote(e)),
            }
        })
    }

    fn publish_ids<'a>(
        &'a self,
        topic: &'a str,
        records: Vec<OutRecord>,
    ) -> BoxFuture<'a, Result<Vec<(u32, u64)>, BusError>> {
        Box::pin(async move {
            if records.is_empty() {
                return Ok(Vec::new());
            }
            let mut out = Vec::with_capacity(records.len());
            for r in records {
                let mut p = ProduceRecord::json_bytes(r.value).map_err(remote)?;
                if let Some(k) = r.key {
                    p = p.key(k);
                }
                for (k, v) in r.headers {
                    p = p.header(k, v);
                }
                out.push(p);
            }
            let produced = self.0.publish(topic, &out).await.map_err(remote)?;
            Ok(produced.into_iter().map(|p| (p.partition, p.offset)).collect())
        })
    }

    fn receive<'a>(
        &'a self,
        group: &'a str,
        topic: &'a str,
        max: usize,
        wait: Duration,
    ) -> BoxFuture<'a, Result<Vec<InRecord>, BusError>> {
        Box::pin(async move {
            let got = self
                .0
                .queue_consumer(group, topic)
                .receive(max, wait, None)
                .await
                .map_err(remote)?;
            Ok(got
                .into_iter()
                .map(|d| InRecord {
                    partition: d.record.partition,
                    offset: d.record.offset,
                    timestamp_ms: d.record.timestamp,
                    key: d
                        .record
                        .key
                        .as_ref()
                        .and_then(|k| String::from_utf8(k.to_vec()).ok()),
                    headers: d
                        .record
                        .headers
                        .iter()
                        .filter_map(|(k, v)| String::from_utf8(v.to_vec()).ok().map(|v| (k.clone(), v)))
                        .collect(),
                    value: d.record.value.clone(),
                    deliveries: d.delivery_count,
                })
                .collect())
        })
    }

    fn ack<'a>(
        &'a self,
        group: &'a str,
        topic: &'a str,
        ids: &'a [(u32, u64)],
    ) -> BoxFuture<'a, Result<(), BusError>> {
        Box::pin(async move { self.0.queue_consumer(group, topic).ack(ids).await.map_err(remote) })
    }

    fn nack<'a>(
        &'a self,
        group: &'a str,
        topic: &'a str,
        ids: &'a [(u32, u64)],
        delay: Duration,
    ) -> BoxFuture<'a, Result<(), BusError>> {
        Box::pin(async move {
            self.0
                .queue_consumer(group, topic)
                .nack(ids, delay)
                .await
                .map_err(remote)
        })
    }

    fn extend<'a>(
        &'a self,
        group: &'a str,
        topic: &'a str,
        ids: &'a [(u32, u64)],
        visibility: Duration,
    ) -> BoxFuture<'a, Result<(), BusError>> {
        Box::pin(async move {
            self.0
                .queue_consumer(group, topic)
                .extend(ids, visibility)
                .await
                .map_err(remote)
        })
    }
}
