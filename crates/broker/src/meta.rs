//! Durable metadata: topics and committed group offsets, as events in one ferry log (`<data>/meta`).
//!
//! Every change is one JSON event appended with `fsync = always`; the in-memory state is the fold of the
//! events in log order. An event is applied only in the log's completion callback, which runs in offset
//! order, so memory and disk can never disagree about which of two concurrent commits came last. Opening
//! replays the log.
//!
//! ```text
//! {"op":"topic_created","name":"orders","id":3,"config":{...}}
//! {"op":"topic_deleted","name":"orders"}
//! {"op":"offsets_committed","group":"billing","topic":"orders","offsets":[[0,17],[3,2]]}
//! ```

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::config::{QueueConfig, TopicConfig};
use crate::subscription::{SubscriptionKind, SubscriptionSpec};

/// One metadata change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum MetaEvent {
    TopicCreated {
        name: String,
        id: u64,
        config: TopicConfig,
    },
    TopicDeleted {
        name: String,
    },
    /// `offsets` are `[partition, offset]` pairs (a list, because internally tagged enums cannot read
    /// integer map keys back from JSON).
    OffsetsCommitted {
        group: String,
        topic: String,
        offsets: Vec<(u32, u64)>,
    },
    QueueCreated {
        group: String,
        topic: String,
        config: QueueConfig,
    },
    /// Records handed out by a queue group: `[partition, offset, delivery count]`. Written before the
    /// records are returned, so `max_deliveries` holds across restarts.
    QueueDelivered {
        group: String,
        topic: String,
        deliveries: Vec<(u32, u64, u32)>,
    },
    /// Records a queue group finished (acknowledged or dead-lettered): `[partition, offset]`.
    QueueDone {
        group: String,
        topic: String,
        done: Vec<(u32, u64)>,
    },
    /// `starts_at`: `[partition, offset]` of each partition's end when the subscription was created; it
    /// gets the records from there on (empty in logs written before it existed: from the start).
    SubscriptionCreated {
        topic: String,
        name: String,
        spec: SubscriptionSpec,
        #[serde(default)]
        starts_at: Vec<(u32, u64)>,
    },
    SubscriptionDeleted {
        topic: String,
        name: String,
    },
    /// The whole state; replaces everything before it. Written as the only event of a compacted meta log.
    Snapshot(Snapshot),
}

/// [`MetaState`] in a form JSON can hold (no tuple map keys).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(clippy::type_complexity)] // plain tuples keep the JSON compact; they exist only here
pub(crate) struct Snapshot {
    next_topic_id: u64,
    topics: Vec<(String, u64, TopicConfig)>,
    offsets: Vec<(String, String, Vec<(u32, u64)>)>,
    /// (group, topic, config, [(partition, floor, done, [(offset, deliveries)])]).
    queues: Vec<(
        String,
        String,
        QueueConfig,
        Vec<(u32, u64, Vec<u64>, Vec<(u64, u32)>)>,
    )>,
    #[serde(default)]
    subscriptions: Vec<(String, String, SubscriptionSpec)>,
}

/// What a queue group has durably recorded about one partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct QueuePartition {
    /// Every offset below this is done.
    pub floor: u64,
    /// Done offsets at or above `floor`.
    pub done: BTreeSet<u64>,
    /// Delivered, not yet done: offset -> times delivered.
    pub deliveries: BTreeMap<u64, u32>,
}

impl QueuePartition {
    pub fn finish(&mut self, offset: u64) {
        self.deliveries.remove(&offset);
        if offset < self.floor {
            return;
        }
        self.done.insert(offset);
        while self.done.remove(&self.floor) {
            self.floor += 1;
        }
    }

    /// Forgets everything below `start` (deleted by retention).
    pub fn advance_to(&mut self, start: u64) {
        if start > self.floor {
            self.floor = start;
            self.done = self.done.split_off(&start);
            self.deliveries = self.deliveries.split_off(&start);
            while self.done.remove(&self.floor) {
                self.floor += 1;
            }
        }
    }

    /// Forgets everything at or above `end`: the partition ends there after a crash took records its
    /// bookkeeping had already seen (both flushed in the background), so the offsets the next
    /// records get are new to the group.
    pub fn cut_to(&mut self, end: u64) {
        self.floor = self.floor.min(end);
        self.done.split_off(&end);
        self.deliveries.split_off(&end);
    }

    /// The first offset never handed out.
    pub fn cursor(&self) -> u64 {
        let after = |o: Option<&u64>| o.map_or(0, |o| o + 1);
        self.floor
            .max(after(self.done.last()))
            .max(after(self.deliveries.keys().next_back()))
    }
}

/// A queue group's durable state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct QueueState {
    pub config: QueueConfig,
    pub partitions: BTreeMap<u32, QueuePartition>,
}

/// The metadata as of some point in the meta log.
#[derive(Debug, Default)]
pub(crate) struct MetaState {
    /// Live topics: name -> (id, config).
    pub topics: BTreeMap<String, (u64, TopicConfig)>,
    /// (group, topic) -> partition -> committed offset.
    pub offsets: BTreeMap<(String, String), BTreeMap<u32, u64>>,
    /// (group, topic) -> queue group state.
    pub queues: BTreeMap<(String, String), QueueState>,
    /// (topic, name) -> subscription.
    pub subscriptions: BTreeMap<(String, String), SubscriptionSpec>,
    /// The id the next topic gets (ids are never reused, so a re-created topic gets fresh directories).
    pub next_topic_id: u64,
}

impl MetaState {
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            next_topic_id: self.next_topic_id,
            topics: self
                .topics
                .iter()
                .map(|(n, (id, c))| (n.clone(), *id, c.clone()))
                .collect(),
            offsets: self
                .offsets
                .iter()
                .map(|((g, t), o)| (g.clone(), t.clone(), o.iter().map(|(p, o)| (*p, *o)).collect()))
                .collect(),
            queues: self
                .queues
                .iter()
                .map(|((g, t), q)| {
                    let parts = q
                        .partitions
                        .iter()
                        .map(|(p, s)| {
                            let done = s.done.iter().copied().collect();
                            let deliveries = s.deliveries.iter().map(|(o, c)| (*o, *c)).collect();
                            (*p, s.floor, done, deliveries)
                        })
                        .collect();
                    (g.clone(), t.clone(), q.config.clone(), parts)
                })
                .collect(),
            subscriptions: self
                .subscriptions
                .iter()
                .map(|((t, n), spec)| (t.clone(), n.clone(), spec.clone()))
                .collect(),
        }
    }

    fn restore(snapshot: &Snapshot) -> Self {
        let mut state = MetaState {
            next_topic_id: snapshot.next_topic_id,
            ..MetaState::default()
        };
        for (name, id, config) in &snapshot.topics {
            state.topics.insert(name.clone(), (*id, config.clone()));
        }
        for (group, topic, offsets) in &snapshot.offsets {
            state
                .offsets
                .insert((group.clone(), topic.clone()), offsets.iter().copied().collect());
        }
        for (topic, name, spec) in &snapshot.subscriptions {
            state
                .subscriptions
                .insert((topic.clone(), name.clone()), spec.clone());
        }
        for (group, topic, config, parts) in &snapshot.queues {
            let partitions = parts
                .iter()
                .map(|(p, floor, done, deliveries)| {
                    let part = QueuePartition {
                        floor: *floor,
                        done: done.iter().copied().collect(),
                        deliveries: deliveries.iter().copied().collect(),
                    };
                    (*p, part)
                })
                .collect();
            state.queues.insert(
                (group.clone(), topic.clone()),
                QueueState {
                    config: config.clone(),
                    partitions,
                },
            );
        }
        state
    }

    pub fn apply(&mut self, event: &MetaEvent) {
        match event {
            MetaEvent::Snapshot(snapshot) => *self = Self::restore(snapshot),
            MetaEvent::TopicCreated { name, id, config } => {
                self.topics.insert(name.clone(), (*id, config.clone()));
                self.next_topic_id = self.next_topic_id.max(id + 1);
            }
            MetaEvent::TopicDeleted { name } => {
                self.topics.remove(name);
                self.offsets.retain(|(_, topic), _| topic != name);
                self.queues.retain(|(_, topic), _| topic != name);
                self.subscriptions.retain(|(topic, _), _| topic != name);
            }
            MetaEvent::SubscriptionCreated {
                topic,
                name,
                spec,
                starts_at,
            } => {
                self.subscriptions
                    .insert((topic.clone(), name.clone()), spec.clone());
                let key = (name.clone(), topic.clone());
                match spec.kind {
                    SubscriptionKind::Queue => {
                        if let Some(q) = self.queues.get_mut(&key) {
                            for &(p, o) in starts_at {
                                q.partitions.entry(p).or_default().advance_to(o);
                            }
                        }
                    }
                    SubscriptionKind::Stream => {
                        let committed = self.offsets.entry(key).or_default();
                        for &(p, o) in starts_at {
                            committed.entry(p).or_insert(o);
                        }
                    }
                }
            }
            MetaEvent::SubscriptionDeleted { topic, name } => {
                self.subscriptions.remove(&(topic.clone(), name.clone()));
                self.queues.remove(&(name.clone(), topic.clone()));
                self.offsets.remove(&(name.clone(), topic.clone()));
            }
            MetaEvent::QueueCreated { group, topic, config } => {
                self.queues.insert(
                    (group.clone(), topic.clone()),
                    QueueState {
                        config: config.clone(),
                        partitions: BTreeMap::new(),
                    },
                );
            }
            MetaEvent::QueueDelivered {
                group,
                topic,
                deliveries,
            } => {
                if let Some(q) = self.queues.get_mut(&(group.clone(), topic.clone())) {
                    for &(p, offset, count) in deliveries {
                        let part = q.partitions.entry(p).or_default();
                        if offset >= part.floor && !part.done.contains(&offset) {
                            part.deliveries.insert(offset, count);
                        }
                    }
                }
            }
            MetaEvent::QueueDone { group, topic, done } => {
                if let Some(q) = self.queues.get_mut(&(group.clone(), topic.clone())) {
                    for &(p, offset) in done {
                        q.partitions.entry(p).or_default().finish(offset);
                    }
                }
            }
            MetaEvent::OffsetsCommitted {
                group,
                topic,
                offsets,
            } => {
                self.offsets
                    .entry((group.clone(), topic.clone()))
                    .or_default()
                    .extend(offsets.iter().copied());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subscription_written_before_starts_at_existed_still_reads() {
        let old = r#"{"op":"subscription_created","topic":"t","name":"s","spec":{"kind":"stream","filter_policy":null,"filter_scope":"body","queue":{"visibility_timeout_ms":30000,"max_deliveries":5,"max_in_flight":1000,"delivery_delay_ms":0,"dead_letter_topic":null}}}"#;
        match serde_json::from_str::<MetaEvent>(old).unwrap() {
            MetaEvent::SubscriptionCreated { starts_at, .. } => assert!(starts_at.is_empty()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_event_reads_back_as_written() {
        let events = [
            MetaEvent::TopicCreated {
                name: "t".into(),
                id: 7,
                config: TopicConfig::default(),
            },
            MetaEvent::OffsetsCommitted {
                group: "g".into(),
                topic: "t".into(),
                offsets: vec![(0, 17), (3, 2)],
            },
            MetaEvent::TopicDeleted { name: "t".into() },
        ];
        let mut state = MetaState::default();
        for e in &events {
            let json = serde_json::to_vec(e).unwrap();
            assert_eq!(&serde_json::from_slice::<MetaEvent>(&json).unwrap(), e);
            state.apply(e);
        }
        assert!(state.topics.is_empty() && state.offsets.is_empty());
        assert_eq!(state.next_topic_id, 8);
    }

    #[test]
    fn a_snapshot_restores_the_same_state() {
        let mut state = MetaState::default();
        let events = [
            MetaEvent::TopicCreated {
                name: "t".into(),
                id: 3,
                config: TopicConfig::default(),
            },
            MetaEvent::OffsetsCommitted {
                group: "g".into(),
                topic: "t".into(),
                offsets: vec![(0, 5)],
            },
            MetaEvent::QueueCreated {
                group: "q".into(),
                topic: "t".into(),
                config: QueueConfig::default(),
            },
            MetaEvent::QueueDelivered {
                group: "q".into(),
                topic: "t".into(),
                deliveries: vec![(0, 0, 1), (0, 1, 2), (0, 2, 1)],
            },
            MetaEvent::QueueDone {
                group: "q".into(),
                topic: "t".into(),
                done: vec![(0, 0), (0, 2)],
            },
        ];
        for e in &events {
            state.apply(e);
        }
        let json = serde_json::to_vec(&MetaEvent::Snapshot(state.snapshot())).unwrap();
        let mut restored = MetaState::default();
        restored.apply(&serde_json::from_slice(&json).unwrap());
        assert_eq!(restored.topics, state.topics);
        assert_eq!(restored.offsets, state.offsets);
        assert_eq!(restored.queues, state.queues);
        assert_eq!(restored.next_topic_id, 4);
        let q = &restored.queues[&("q".to_string(), "t".to_string())].partitions[&0];
        assert_eq!((q.floor, q.cursor()), (1, 3));
        assert_eq!(q.deliveries.get(&1), Some(&2));
    }
}
