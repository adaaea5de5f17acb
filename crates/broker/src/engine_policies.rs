//! What ferry applies itself on engines that cannot (NATS JetStream, RabbitMQ): subscriptions' filter
//! policies (the SNS way, on JSON bodies or headers) and queue groups' dead-lettering after
//! `max_deliveries`, as the embedded broker does.
//!
//! Subscriptions and a queue group's dead-letter settings are stored in the engine's metadata store when
//! it has one (NATS): every process on the engine reads them from there (subscriptions again after
//! [`REFRESH`]), and the first creator's settings win, as an existing group keeps its settings on the
//! embedded engine. On an engine without one (RabbitMQ) a process knows the subscriptions it made
//! (`[subscriptions]` in `ferry.toml`, so every ferry process serving a filtered subscription must
//! read the same file) and applies the dead-letter settings of the groups it made itself.

use std::collections::{BTreeMap, HashMap};
use std::sync::RwLock;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::engine::{
    BoxFuture, Engine, EngineError, GroupSettings, GroupState, InRecord, MetaValue, OutRecord, SharedEngine,
    TopicState,
};
use crate::engine_groups::StreamGroups;
use crate::{
    BrokerError, FilterPolicy, QueueConfig, SubscriptionInfo, SubscriptionKind, SubscriptionSpec,
    validate_name,
};

/// How long a process goes by the subscriptions it read from the engine's metadata store before it
/// reads them again: a subscription made or deleted through another process applies here within this.
pub const REFRESH: Duration = Duration::from_secs(2);

/// The subscriptions of one topic, by name, as stored.
type Subscriptions = BTreeMap<String, SubscriptionSpec>;

/// Per topic, the filters of its stored subscriptions by name, and when they were read.
type SharedFilters = HashMap<String, (Instant, HashMap<String, FilterPolicy>)>;

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

fn subscriptions_key(topic: &str) -> String {
    format!("subscriptions/{topic}")
}

fn unavailable(engine: &'static str, message: impl std::fmt::Display) -> EngineError {
    EngineError::Unavailable {
        engine,
        message: message.to_string(),
    }
}

/// An engine with ferry's filter policies and dead-lettering applied on top.
#[derive(Debug)]
pub struct Policies {
    inner: SharedEngine,
    /// Filters this process was given or made (`[subscriptions]`, the API).
    filters: RwLock<HashMap<Key, FilterPolicy>>,
    /// Per topic, the subscriptions read from the engine's store and when.
    shared: RwLock<SharedFilters>,
    dead_letters: RwLock<HashMap<Key, DeadLetters>>,
    /// Groups with no stored dead-letter settings, and when that was read: asked again after [`REFRESH`].
    without: RwLock<HashMap<Key, Instant>>,
}

impl Policies {
    /// `inner` without filters or dead-letter settings yet.
    pub fn new(inner: SharedEngine) -> Self {
        Self {
            inner,
            filters: RwLock::default(),
            shared: RwLock::default(),
            dead_letters: RwLock::default(),
            without: RwLock::default(),
        }
    }

    /// Records of `group` on `topic` that `policy` refuses are acked unseen from now on (a queue group),
    /// or skipped by its fetches (a stream group: `crate::engine_groups`).
    pub fn set_filter(&self, group: &str, topic: &str, policy: FilterPolicy) {
        if let Ok(mut f) = self.filters.write() {
            f.insert(key(group, topic), policy);
        }
    }

    /// The subscriptions of `topic` in the engine's store with their revision; `None` without a store.
    async fn stored(&self, topic: &str) -> Result<Option<(Subscriptions, Option<u64>)>, EngineError> {
        match self.inner.meta_get(&subscriptions_key(topic)).await {
            Ok(Some(v)) => {
                let subs = serde_json::from_slice(&v.value).map_err(|e| {
                    unavailable(
                        self.inner.name(),
                        format!("the subscriptions of topic `{topic}` are unreadable: {e}"),
                    )
                })?;
                Ok(Some((subs, Some(v.revision))))
            }
            Ok(None) => Ok(Some((Subscriptions::new(), None))),
            Err(EngineError::Unsupported { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Changes the stored subscriptions of `topic` by compare-and-set; `None` without a store.
    async fn change_stored<R>(
        &self,
        topic: &str,
        mut change: impl FnMut(&mut Subscriptions) -> Result<(R, bool), EngineError>,
    ) -> Result<Option<R>, EngineError> {
        for _ in 0..64 {
            let Some((mut subs, revision)) = self.stored(topic).await? else {
                return Ok(None);
            };
            let (out, write) = change(&mut subs)?;
            if !write {
                return Ok(Some(out));
            }
            let value = serde_json::to_vec(&subs).map_err(|e| unavailable(self.inner.name(), e))?;
            let key = subscriptions_key(topic);
            if self.inner.meta_put(&key, value.into(), revision).await?.is_some() {
                self.shared.write().map(|mut s| s.remove(topic)).ok();
                return Ok(Some(out));
            }
        }
        Err(unavailable(
            self.inner.name(),
            format!("the subscriptions of topic `{topic}` kept changing while this change was tried"),
        ))
    }

    /// The filters of `topic`'s stored subscriptions, read again after [`REFRESH`].
    async fn shared_filter(&self, group: &str, topic: &str) -> Option<FilterPolicy> {
        let fresh = |s: &SharedFilters| {
            s.get(topic)
                .filter(|(at, _)| at.elapsed() < REFRESH)
                .map(|(_, f)| f.get(group).cloned())
        };
        if let Some(found) = self.shared.read().ok().as_deref().and_then(fresh) {
            return found;
        }
        let filters: HashMap<String, FilterPolicy> = match self.stored(topic).await {
            Ok(Some((subs, _))) => subs
                .into_iter()
                .filter_map(|(name, spec)| {
                    let policy = spec.filter_policy.as_ref()?;
                    FilterPolicy::parse(policy, spec.filter_scope)
                        .ok()
                        .map(|p| (name, p))
                })
                .collect(),
            Ok(None) => HashMap::new(),
            Err(e) => {
                tracing::warn!(%topic, error = %e, "could not read the topic's subscriptions");
                return None;
            }
        };
        let found = filters.get(group).cloned();
        if let Ok(mut s) = self.shared.write() {
            s.insert(topic.to_owned(), (Instant::now(), filters));
        }
        found
    }

    /// Declares subscription `name` on `topic` as `[subscriptions]` in `ferry.toml` does: its group made,
    /// its filter applied in this process, and stored for every process where the engine has a store.
    /// `false` when it existed with the same settings.
    ///
    /// # Errors
    /// A bad name, policy or queue setting, a missing topic, the name taken with other settings
    /// (`QueueExists`), the engine failing.
    pub async fn declare(
        &self,
        topic: &str,
        name: &str,
        spec: SubscriptionSpec,
    ) -> Result<bool, EngineError> {
        self.create(topic, name, spec, false).await
    }

    /// [`Self::declare`]; with `shared`, only on an engine with a store (a subscription made through the
    /// API must outlive this process).
    async fn create(
        &self,
        topic: &str,
        name: &str,
        spec: SubscriptionSpec,
        shared: bool,
    ) -> Result<bool, EngineError> {
        validate_name("name", name)?;
        let policy = spec
            .filter_policy
            .as_ref()
            .map(|p| FilterPolicy::parse(p, spec.filter_scope))
            .transpose()?;
        if spec.kind == SubscriptionKind::Queue {
            spec.queue.validate()?;
            validate_name(
                "dead_letter_topic",
                &DeadLetters::of(&spec.queue, name, topic).topic,
            )?;
            let refuse = |field: &'static str, message: String| BrokerError::InvalidConfig { field, message };
            let name = self.inner.name();
            if spec.queue.delivery_delay_ms != 0 {
                return Err(refuse(
                    "delivery_delay_ms",
                    format!("is not supported on the {name} engine"),
                )
                .into());
            }
        }
        if self.inner.describe_topic(topic).await?.is_none() {
            return Err(BrokerError::TopicNotFound(topic.into()).into());
        }
        let existing = match self.stored(topic).await? {
            Some((subs, _)) => subs.get(name).cloned(),
            None if shared => {
                return Err(EngineError::Unsupported {
                    engine: self.inner.name(),
                    what: "subscriptions made through the API (declare them in [subscriptions] of \
                           ferry.toml)"
                        .into(),
                });
            }
            None => None,
        };
        match existing {
            Some(s) if s == spec => return Ok(false),
            Some(_) => {
                return Err(BrokerError::QueueExists {
                    group: name.into(),
                    topic: topic.into(),
                }
                .into());
            }
            None => {}
        }
        // The group first, so that a stored subscription always has one.
        match spec.kind {
            SubscriptionKind::Queue => self.queue_group(name, topic, &spec.queue, true).await?,
            SubscriptionKind::Stream => StreamGroups::default().subscribe(self, name, topic).await?,
        }
        let created = self
            .change_stored(topic, |subs| match subs.get(name) {
                Some(s) if *s == spec => Ok((false, false)),
                Some(_) => Err(BrokerError::QueueExists {
                    group: name.into(),
                    topic: topic.into(),
                }
                .into()),
                None => {
                    subs.insert(name.to_owned(), spec.clone());
                    Ok((true, true))
                }
            })
            .await?
            .unwrap_or(true);
        if let Some(policy) = policy {
            self.set_filter(name, topic, policy);
        }
        Ok(created)
    }

    /// Makes queue group `group` on `topic` with `config` (starting at the end of the topic with
    /// `from_end`), and keeps its dead-letter settings.
    async fn queue_group(
        &self,
        group: &str,
        topic: &str,
        config: &QueueConfig,
        from_end: bool,
    ) -> Result<(), EngineError> {
        let settings = GroupSettings {
            visibility: Duration::from_millis(config.visibility_timeout_ms),
            max_in_flight: config.max_in_flight,
            from_end,
        };
        self.inner.ensure_group(group, topic, settings).await?;
        let wanted = DeadLetters::of(config, group, topic);
        let value = Bytes::from(serde_json::to_vec(&wanted).map_err(|e| EngineError::Unavailable {
            engine: self.inner.name(),
            message: e.to_string(),
        })?);
        match self.inner.meta_put(&meta_key(group, topic), value, None).await {
            Ok(Some(_)) => self.remember(group, topic, wanted),
            // Made before: its first settings stay.
            Ok(None) => {
                if let Some(MetaValue { value, .. }) = self.inner.meta_get(&meta_key(group, topic)).await?
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
        let k = key(group, topic);
        let known_without = |w: &HashMap<Key, Instant>| w.get(&k).is_some_and(|at| at.elapsed() < REFRESH);
        if self.without.read().ok().as_deref().is_some_and(known_without) {
            return None;
        }
        match self.inner.meta_get(&meta_key(group, topic)).await {
            Ok(Some(v)) => {
                let d: DeadLetters = serde_json::from_slice(&v.value).ok()?;
                self.remember(group, topic, d.clone());
                Some(d)
            }
            Ok(None) | Err(EngineError::Unsupported { .. }) => {
                if let Ok(mut w) = self.without.write() {
                    w.insert(k, Instant::now());
                }
                None
            }
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
        Box::pin(self.queue_group(group, topic, config, false))
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
            let Some(policy) = self.filter(group, topic).await else {
                return Ok(got);
            };
            let (keep, skip): (Vec<InRecord>, Vec<InRecord>) = got
                .into_iter()
                .partition(|r| policy.matches(&r.broker_headers(), &r.value));
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
        Box::pin(async move {
            let deleted = self.inner.delete_topic(topic).await?;
            // What this process knows of the topic's groups goes with it (stream groups notice a topic
            // made again by its creation time; stored dead-letter settings stay for a group made again).
            let mine = |k: &Key| k.1 != topic;
            if let Ok(mut d) = self.dead_letters.write() {
                d.retain(|k, _| mine(k));
            }
            if let Ok(mut w) = self.without.write() {
                w.retain(|k, _| mine(k));
            }
            if let Ok(mut s) = self.shared.write() {
                s.remove(topic);
            }
            Ok(deleted)
        })
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

    fn filter<'a>(&'a self, group: &'a str, topic: &'a str) -> BoxFuture<'a, Option<FilterPolicy>> {
        Box::pin(async move {
            if let Some(shared) = self.shared_filter(group, topic).await {
                return Some(shared);
            }
            self.filters.read().ok()?.get(&key(group, topic)).cloned()
        })
    }

    fn create_subscription<'a>(
        &'a self,
        topic: &'a str,
        name: &'a str,
        spec: SubscriptionSpec,
    ) -> BoxFuture<'a, Result<bool, EngineError>> {
        Box::pin(self.create(topic, name, spec, true))
    }

    fn list_subscriptions<'a>(
        &'a self,
        topic: &'a str,
    ) -> BoxFuture<'a, Result<Vec<SubscriptionInfo>, EngineError>> {
        Box::pin(async move {
            if self.inner.describe_topic(topic).await?.is_none() {
                return Err(BrokerError::TopicNotFound(topic.into()).into());
            }
            let Some((subs, _)) = self.stored(topic).await? else {
                return Err(EngineError::Unsupported {
                    engine: self.inner.name(),
                    what: "listing subscriptions (they are declared in ferry.toml)".into(),
                });
            };
            Ok(subs
                .into_iter()
                .map(|(name, spec)| SubscriptionInfo {
                    topic: topic.to_owned(),
                    name,
                    spec,
                })
                .collect())
        })
    }

    fn delete_subscription<'a>(
        &'a self,
        topic: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<bool, EngineError>> {
        Box::pin(async move {
            if self.inner.describe_topic(topic).await?.is_none() {
                return Err(BrokerError::TopicNotFound(topic.into()).into());
            }
            let deleted = self
                .change_stored(topic, |subs| {
                    let had = subs.remove(name).is_some();
                    Ok((had, had))
                })
                .await?;
            let Some(deleted) = deleted else {
                return Err(EngineError::Unsupported {
                    engine: self.inner.name(),
                    what: "deleting subscriptions (they are declared in ferry.toml)".into(),
                });
            };
            if let Ok(mut f) = self.filters.write() {
                f.remove(&key(name, topic));
            }
            Ok(deleted)
        })
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
