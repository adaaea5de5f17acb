//! Subscriptions (SNS fan-out): named queue or stream groups on a topic, each with an optional filter
//! policy. Every record published after a subscription was created reaches it if its policy matches
//! (records already in the topic do not, as with SNS); records that do not match are skipped for that
//! subscription (counted as done, never delivered).

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::broker::{Broker, lock};
use crate::config::QueueConfig;
use crate::error::{BrokerError, Result};
use crate::filter::{FilterPolicy, FilterScope};
use crate::meta::MetaEvent;
use crate::names::validate_name;

/// How a subscription delivers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum SubscriptionKind {
    /// A queue group: receive, ack, nack, dead letters (SQS behind SNS).
    #[default]
    Queue,
    /// A stream group: fetch and commit offsets.
    Stream,
}

/// What a subscription is.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "utoipa", schema(default))]
#[serde(deny_unknown_fields, default)]
pub struct SubscriptionSpec {
    /// Queue or stream group.
    pub kind: SubscriptionKind,
    /// SNS filter policy; `null` lets every record through.
    pub filter_policy: Option<Value>,
    /// Whether the policy looks at the JSON body or the headers.
    pub filter_scope: FilterScope,
    /// Settings of the queue group (kind `queue` only).
    pub queue: QueueConfig,
}

impl Eq for SubscriptionSpec {}

/// A subscription as listed.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct SubscriptionInfo {
    /// Topic.
    pub topic: String,
    /// Name, which is also the group's name.
    pub name: String,
    /// What it is.
    #[serde(flatten)]
    pub spec: SubscriptionSpec,
}

impl Broker {
    /// Creates a subscription; creating it again with the same spec is a no-op.
    ///
    /// # Errors
    /// [`BrokerError::InvalidName`], [`BrokerError::InvalidArgument`] for a bad `filter_policy`,
    /// [`BrokerError::InvalidConfig`], [`BrokerError::TopicNotFound`], [`BrokerError::QueueExists`] when
    /// the name is taken with another spec.
    pub async fn create_subscription(
        &self,
        topic: &str,
        name: &str,
        spec: SubscriptionSpec,
    ) -> Result<SubscriptionInfo> {
        validate_name("name", name)?;
        let t = self.topic(topic)?;
        let filter = spec
            .filter_policy
            .as_ref()
            .map(|p| FilterPolicy::parse(p, spec.filter_scope))
            .transpose()?;
        let key = (t.name.clone(), name.to_string());
        let existing = lock(&self.inner.state).meta.subscriptions.get(&key).cloned();
        match existing {
            Some(s) if s == spec => {}
            Some(_) => {
                return Err(BrokerError::QueueExists {
                    group: name.into(),
                    topic: t.name.clone(),
                });
            }
            None => {
                // Like SNS, a subscription gets what is published once it exists, not the topic's past;
                // but a queue group of that name that exists already keeps its backlog.
                let queue_existed = lock(&self.inner.state)
                    .meta
                    .queues
                    .contains_key(&(name.to_string(), t.name.clone()));
                if spec.kind == SubscriptionKind::Queue {
                    self.create_queue(name, &t.name, spec.queue.clone()).await?;
                }
                let starts_at = if spec.kind == SubscriptionKind::Queue && queue_existed {
                    Vec::new()
                } else {
                    t.partitions
                        .iter()
                        .enumerate()
                        .map(|(p, log)| (p as u32, log.next_offset()))
                        .collect()
                };
                self.commit_meta(MetaEvent::SubscriptionCreated {
                    topic: t.name.clone(),
                    name: name.into(),
                    spec: spec.clone(),
                    starts_at,
                })
                .await?;
            }
        }
        let mut state = lock(&self.inner.state);
        match filter {
            Some(f) => state
                .filters
                .insert((name.to_string(), t.name.clone()), Arc::new(f)),
            None => state.filters.remove(&(name.to_string(), t.name.clone())),
        };
        Ok(SubscriptionInfo {
            topic: t.name.clone(),
            name: name.into(),
            spec,
        })
    }

    /// The subscriptions of a topic, by name.
    ///
    /// # Errors
    /// [`BrokerError::TopicNotFound`].
    pub fn list_subscriptions(&self, topic: &str) -> Result<Vec<SubscriptionInfo>> {
        let t = self.topic(topic)?;
        let state = lock(&self.inner.state);
        Ok(state
            .meta
            .subscriptions
            .iter()
            .filter(|((topic, _), _)| *topic == t.name)
            .map(|((topic, name), spec)| SubscriptionInfo {
                topic: topic.clone(),
                name: name.clone(),
                spec: spec.clone(),
            })
            .collect())
    }

    /// Deletes a subscription and its group's state.
    ///
    /// # Errors
    /// [`BrokerError::TopicNotFound`], [`BrokerError::GroupNotFound`] when there is no such subscription.
    pub async fn delete_subscription(&self, topic: &str, name: &str) -> Result<()> {
        validate_name("name", name)?;
        let t = self.topic(topic)?;
        if !lock(&self.inner.state)
            .meta
            .subscriptions
            .contains_key(&(t.name.clone(), name.to_string()))
        {
            return Err(BrokerError::GroupNotFound {
                group: name.into(),
                topic: t.name.clone(),
            });
        }
        self.commit_meta(MetaEvent::SubscriptionDeleted {
            topic: t.name.clone(),
            name: name.into(),
        })
        .await?;
        let mut state = lock(&self.inner.state);
        let key = (name.to_string(), t.name.clone());
        state.filters.remove(&key);
        state.queues.remove(&key);
        state.positions.remove(&key);
        Ok(())
    }

    /// The filter of the subscription named `group` on `topic`, if it has one.
    pub(crate) fn filter_for(&self, group: &str, topic: &str) -> Option<Arc<FilterPolicy>> {
        lock(&self.inner.state)
            .filters
            .get(&(group.to_string(), topic.to_string()))
            .cloned()
    }
}

/// Compiles the filters of stored subscriptions (their policies were validated when created).
pub(crate) fn compile_filters(
    subscriptions: &std::collections::BTreeMap<(String, String), SubscriptionSpec>,
) -> std::collections::HashMap<(String, String), Arc<FilterPolicy>> {
    subscriptions
        .iter()
        .filter_map(|((topic, name), spec)| {
            let policy = spec.filter_policy.as_ref()?;
            match FilterPolicy::parse(policy, spec.filter_scope) {
                Ok(f) => Some(((name.clone(), topic.clone()), Arc::new(f))),
                Err(e) => {
                    tracing::error!(topic, subscription = name, error = %e, "stored filter policy no longer parses; the subscription gets every record");
                    None
                }
            }
        })
        .collect()
}
