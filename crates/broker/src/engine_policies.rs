//! What ferry applies itself on engines that cannot (NATS JetStream, RabbitMQ): subscriptions' filter
//! policies (the SNS way, on JSON bodies or headers) and queue groups' dead-lettering after
//! `max_deliveries`, as the embedded broker does.
//!
//! A filter is known from `[subscriptions]` in `ferry.toml`, so every ferry process that serves a
//! filtered subscription must read the same file. A queue group's dead-letter settings are stored in
//! the engine's metadata store when it has one (NATS: the first creator's settings win, as an existing
//! group keeps its settings on the embedded engine), so every process applies them; on an engine
//! without one (RabbitMQ) a process applies the settings of the groups it created itself.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::engine::{
    BoxFuture, Engine, EngineError, GroupSettings, GroupState, InRecord, MetaValue, OutRecord, SharedEngine,
    TopicState,
};
use crate::{FilterPolicy, Header, QueueConfig};

/// The group that keeps a dead-letter topic's records on an engine where a topic keeps records only for
/// the groups that exist (RabbitMQ); it is the group `ferry dlq replay` reads with.
pub const DEAD_LETTER_GROUP: &str = "ferry-dlq-replay";

/// Where a queue group's records go after too many deliveries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetters {
    /// Deliveries before a record is dead-lettered.
    pub max_deliveries: u32,
    /// The topic dead letters go to.
    pub topic: String,
}

impl DeadLetters {
    /// The settings of `config` for `group` on `topic` (`<topic>.<group>.dlq` unless it names a topic).
    pub fn of(config: &QueueConfig, group: &str, topic: &str) -> Self {
        Self {
            max_deliveries: config.max_deliveries,
            topic: config
                .dead_letter_topic
                .clone()
                .unwrap_or_else(|| format!("{topic}.{group}.dlq")),
        }
    }
}

type Key = (String, String);

fn key(group: &str, topic: &str) -> Key {
    (group.to_owned(), topic.to_owned())
}

fn meta_key(group: &str, topic: &str) -> String {
    format!("queue-groups/{topic}/{group}")
}

/// An engine with ferry's filter policies and dead-lettering applied on top.
#[derive(Debug)]
pub struct Policies {
    inner: SharedEngine,
    filters: RwLock<HashMap<Key, FilterPolicy>>,
    dead_letters: RwLock<HashMap<Key, DeadLetters>>,
}

impl Policies {
    /// `inner` without filters or dead-letter settings yet.
    pub fn new(inner: SharedEngine) -> Self {
        Self {
            inner,
            filters: RwLock::default(),
            dead_letters: RwLock::default(),
        }
    }

    /// Records of `group` on `topic` that `policy` refuses are acked unseen from now on (a queue group),
    /// or skipped by its fetches (a stream group: `crate::engine_groups`).
    pub fn set_filter(&self, group: &str, topic: &str, policy: FilterPolicy) {
        if let Ok(mut f) = self.filters.write() {
            f.insert(key(group, topic), policy);
        }
    }

    fn cached(&self, group: &str, topic: &str) -> Option<DeadLetters> {
        self.dead_letters.read().ok()?.get(&key(group, topic)).cloned()
    }

    fn remember(&self, group: &str, topic: &str, settings: DeadLetters) {
        if let Ok(mut d) = self.dead_letters.write() {
            d.insert(key(group, topic), settings);
        }
    }

    /// The group's dead-letter settings: known here, else stored in the engine, else none (the engine's
    /// own guard of 1000 deliveries applies).
    async fn settings(&self, group: &str, topic: &str) -> Option<DeadLetters> {
        if let Some(d) = self.cached(group, topic) {
            return Some(d);
        }
        match self.inner.meta_get(&meta_key(group, topic)).await {
            Ok(Some(v)) => {
                let d: DeadLetters = serde_json::from_slice(&v.value).ok()?;
                self.remember(group, topic, d.clone());
                Some(d)
            }
            Ok(None) | Err(EngineError::Unsupported { .. }) => None,
            Err(e) => {
                tracing::warn!(%group, %topic, error = %e, "could not read the group's dead-letter settings");
                None
            }
        }
    }

    /// Publishes `dead` to the dead-letter topic with the headers the embedded broker adds, then acks
    /// them. On failure they are left leased, so they come again when their lease ends.
    async fn dead_letter(&self, group: &str, topic: &str, d: &DeadLetters, dead: Vec<InRecord>) {
        let letters = dead
            .iter()
            .map(|r| {
                let mut headers = r.headers.clone();
                headers.extend([
                    (
                        "ferry-dlq-reason".to_owned(),
                        format!("max_deliveries ({}) reached", d.max_deliveries),
                    ),
                    ("ferry-dlq-topic".to_owned(), topic.to_owned()),
                    ("ferry-dlq-group".to_owned(), group.to_owned()),
                    ("ferry-dlq-partition".to_owned(), r.partition.to_string()),
                    ("ferry-dlq-offset".to_owned(), r.offset.to_string()),
                    ("ferry-dlq-deliveries".to_owned(), (r.deliveries - 1).to_string()),
                ]);
                OutRecord {
                    key: r.key.clone(),
                    headers,
                    value: r.value.clone(),
                }
            })
            .collect();
        let ids: Vec<(u32, u64)> = dead.iter().map(InRecord::id).collect();
        let sent = async {
            self.inner.ensure_topic(&d.topic).await?;
            self.inner
                .ensure_group(DEAD_LETTER_GROUP, &d.topic, GroupSettings::default())
                .await?;
            self.inner.publish(&d.topic, letters).await?;
            self.inner.ack(group, topic, &ids).await
        };
        match sent.await {
            Ok(()) => tracing::warn!(%group, %topic, dead_letter_topic = %d.topic, records = ids.len(),
                "records dead-lettered"),
            Err(e) => tracing::warn!(%group, %topic, dead_letter_topic = %d.topic, error = %e,
                "could not dead-letter records; they come again when their lease ends"),
        }
    }
}

fn headers(r: &InRecord) -> Vec<Header> {
    r.headers
        .iter()
        .map(|(key, value)| Header {
            key: key.clone(),
            value: Bytes::from(value.clone()),
        })
        .collect()
}

impl Engine for Policies {
    fn ensure_topic<'a>(&'a self, topic: &'a str) -> BoxFuture<'a, Result<(), EngineError>> {
        self.inner.ensure_topic(topic)
    }

    fn ensure_group<'a>(
        &'a self,
        group: &'a str,
        topic: &'a str,
        settings: GroupSettings,
    ) -> BoxFuture<'a, Result<(), EngineError>> {
        self.inner.ensure_group(group, topic, settings)
    }

    fn ensure_queue<'a>(
        &'a self,
        group: &'a str,
        topic: &'a str,
        config: &'a QueueConfig,
    ) -> BoxFuture<'a, Result<(), EngineError>> {
        Box::pin(async move {
            self.inner.ensure_queue(group, topic, config).await?;
            let wanted = DeadLetters::of(config, group, topic);
            let value = Bytes::from(serde_json::to_vec(&wanted).map_err(|e| EngineError::Unavailable {
                engine: self.inner.name(),
                message: e.to_string(),
            })?);
            match self.inner.meta_put(&meta_key(group, topic), value, None).await {
                Ok(Some(_)) => self.remember(group, topic, wanted),
                // Made before: its first settings stay.
                Ok(None) => {
                    if let Some(MetaValue { value, .. }) =
                        self.inner.meta_get(&meta_key(group, topic)).await?
                        && let Ok(d) = serde_json::from_slice(&value)
                    {
                        self.remember(group, topic, d);
                    }
                }
                Err(EngineError::Unsupported { .. }) => {
                    if self.cached(group, topic).is_none() {
                        self.remember(group, topic, wanted);
                    }
                }
                Err(e) => return Err(e),
            }
            Ok(())
        })
    }

    fn publish_ids<'a>(
        &'a self,
        topic: &'a str,
        records: Vec<OutRecord>,
    ) -> BoxFuture<'a, Result<Vec<(u32, u64)>, EngineError>> {
        self.inner.publish_ids(topic, records)
    }

    fn receive<'a>(
        &'a self,
        group: &'a str,
        topic: &'a str,
        max: usize,
        wait: Duration,
    ) -> BoxFuture<'a, Result<Vec<InRecord>, EngineError>> {
        Box::pin(async move {
            let mut got = self.inner.receive(group, topic, max, wait).await?;
            if let Some(d) = self.settings(group, topic).await {
                let (dead, live): (Vec<InRecord>, Vec<InRecord>) =
                    got.into_iter().partition(|r| r.deliveries > d.max_deliveries);
                if !dead.is_empty() {
                    self.dead_letter(group, topic, &d, dead).await;
                }
                got = live;
            }
            let Some(policy) = self.filter(group, topic) else {
                return Ok(got);
            };
            let (keep, skip): (Vec<InRecord>, Vec<InRecord>) = got
                .into_iter()
                .partition(|r| policy.matches(&headers(r), &r.value));
            if !skip.is_empty() {
                let ids: Vec<(u32, u64)> = skip.iter().map(InRecord::id).collect();
                // Not fatal: the records come again and are filtered again; `keep` is held by now.
                if let Err(e) = self.inner.ack(group, topic, &ids).await {
                    tracing::warn!(%group, %topic, error = %e, "could not ack records the filter policy skips");
                }
            }
            Ok(keep)
        })
    }

    fn ack<'a>(
        &'a self,
        group: &'a str,
        topic: &'a str,
        ids: &'a [(u32, u64)],
    ) -> BoxFuture<'a, Result<(), EngineError>> {
        self.inner.ack(group, topic, ids)
    }

    fn nack<'a>(
        &'a self,
        group: &'a str,
        topic: &'a str,
        ids: &'a [(u32, u64)],
        delay: Duration,
    ) -> BoxFuture<'a, Result<(), EngineError>> {
        self.inner.nack(group, topic, ids, delay)
    }

    fn extend<'a>(
        &'a self,
        group: &'a str,
        topic: &'a str,
        ids: &'a [(u32, u64)],
        visibility: Duration,
    ) -> BoxFuture<'a, Result<(), EngineError>> {
        self.inner.extend(group, topic, ids, visibility)
    }

    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn topics(&self) -> BoxFuture<'_, Result<Vec<TopicState>, EngineError>> {
        self.inner.topics()
    }

    fn describe_topic<'a>(
        &'a self,
        topic: &'a str,
    ) -> BoxFuture<'a, Result<Option<TopicState>, EngineError>> {
        self.inner.describe_topic(topic)
    }

    fn delete_topic<'a>(&'a self, topic: &'a str) -> BoxFuture<'a, Result<bool, EngineError>> {
        self.inner.delete_topic(topic)
    }

    fn fetch<'a>(
        &'a self,
        topic: &'a str,
        offset: u64,
        max: usize,
        wait: Duration,
    ) -> BoxFuture<'a, Result<Vec<InRecord>, EngineError>> {
        self.inner.fetch(topic, offset, max, wait)
    }

    fn group_state<'a>(
        &'a self,
        group: &'a str,
        topic: &'a str,
    ) -> BoxFuture<'a, Result<Option<GroupState>, EngineError>> {
        self.inner.group_state(group, topic)
    }

    fn filter(&self, group: &str, topic: &str) -> Option<FilterPolicy> {
        self.filters.read().ok()?.get(&key(group, topic)).cloned()
    }

    fn meta_get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<MetaValue>, EngineError>> {
        self.inner.meta_get(key)
    }

    fn meta_put<'a>(
        &'a self,
        key: &'a str,
        value: Bytes,
        revision: Option<u64>,
    ) -> BoxFuture<'a, Result<Option<u64>, EngineError>> {
        self.inner.meta_put(key, value, revision)
    }
}
