//! Stream groups on an engine other than the embedded broker: Kafka's consumer groups over an engine that
//! can read a topic by offset and keeps a small durable key-value store with compare-and-set (NATS
//! JetStream: a stream and a KV bucket). The embedded broker's rules hold ([`crate::Broker::join`]):
//! members join, heartbeat and leave; each join or leave, and each session that runs out, starts a new
//! generation; a fetch or commit names the member's generation and is refused in an old one; the group as
//! a whole (no member) fetches and commits only while it has no live members.
//!
//! An engine topic has one partition, so one live member holds it (the earliest to join that is still
//! live: sticky) and the others stand by, taking over when it leaves or its session runs out. The
//! group's state (members, generation, holder, committed offset) is one document in the engine's store,
//! changed only by compare-and-set, so ferry processes serving the same group on one engine agree on it.
//! Where a fetch ended is kept by the process that served it, as the embedded broker keeps it in memory:
//! after a restart, or when the partition moves to another member, the next fetch starts at the committed
//! offset (at-least-once).

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::engine::{Engine, EngineError, InRecord, TopicState};
use crate::{
    BrokerError, FetchLimits, GroupPartition, GroupStatus, JoinOptions, MemberInfo, MemberRef, Membership,
    SeekTo, validate_name,
};

/// Compare-and-set attempts before a change of a group's document gives up (each lost one means another
/// process changed the group meanwhile).
const ATTEMPTS: usize = 64;

/// One member.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Member {
    id: String,
    session_ms: u64,
    expires_ms: i64,
}

/// A group's state on one topic, as stored.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Doc {
    generation: u64,
    /// Live members, in the order they joined.
    members: Vec<Member>,
    /// The member holding partition 0.
    holder: Option<String>,
    /// Goes up whenever the partition changes hands (to or from no one too), a holder rejoins, or the
    /// group is moved by a seek: a fetch position is good only in the epoch it was made in.
    epoch: u64,
    /// [`TopicState::created_ns`] of the topic this state is about: a topic made again starts afresh.
    topic_created: u64,
    /// The next record the group will process; `None` before the first commit.
    committed: Option<u64>,
}

impl Doc {
    /// Drops members whose session ran out; true when any was.
    fn expire(&mut self, now: i64) -> bool {
        let before = self.members.len();
        self.members.retain(|m| m.expires_ms >= now);
        let changed = self.members.len() != before;
        if changed {
            self.generation += 1;
            self.assign();
        }
        changed
    }

    /// Gives partition 0 to the holder if still live, else to the earliest live member.
    fn assign(&mut self) {
        let live = |id: &str| self.members.iter().any(|m| m.id == id);
        if self.holder.as_deref().is_some_and(live) {
            return;
        }
        let holder = self.members.first().map(|m| m.id.clone());
        if holder != self.holder {
            self.holder = holder;
            self.epoch += 1;
        }
    }

    fn membership(&self, member_id: &str) -> Membership {
        Membership {
            member_id: member_id.into(),
            generation: self.generation,
            partitions: self.partitions(member_id),
        }
    }

    fn partitions(&self, member_id: &str) -> Vec<u32> {
        if self.holder.as_deref() == Some(member_id) {
            vec![0]
        } else {
            Vec::new()
        }
    }

    fn renew(&mut self, member_id: &str, now: i64) {
        if let Some(m) = self.members.iter_mut().find(|m| m.id == member_id) {
            m.expires_ms = now + i64::try_from(m.session_ms).unwrap_or(i64::MAX / 2);
        }
    }
}

/// Where a fetch ended, in this process.
#[derive(Debug, Clone)]
struct Position {
    /// The member that fetched (`None`: the group as a whole).
    member: Option<String>,
    /// The group's epoch when it fetched.
    epoch: u64,
    /// The topic's creation time when it fetched.
    topic_created: u64,
    next: u64,
}

type Slot = (String, String);

/// Stream groups over an engine; one per process, shared by every request.
#[derive(Debug, Default)]
pub struct StreamGroups {
    positions: Mutex<HashMap<Slot, Position>>,
    /// Held by a fetch from reading its position to storing the next, and by a seek, per group and topic.
    locks: Mutex<HashMap<Slot, std::sync::Arc<tokio::sync::Mutex<()>>>>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn key(group: &str, topic: &str) -> String {
    // Names hold no `/` (`validate_name`), so the key is unambiguous.
    format!("stream-groups/{topic}/{group}")
}

fn broken(engine: &'static str, message: String) -> EngineError {
    EngineError::Unavailable { engine, message }
}

impl StreamGroups {
    fn positions(&self) -> std::sync::MutexGuard<'_, HashMap<Slot, Position>> {
        self.positions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn lock(&self, group: &str, topic: &str) -> std::sync::Arc<tokio::sync::Mutex<()>> {
        let mut locks = self
            .locks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        locks
            .entry((group.to_owned(), topic.to_owned()))
            .or_default()
            .clone()
    }

    async fn topic(engine: &dyn Engine, topic: &str) -> Result<TopicState, EngineError> {
        engine
            .describe_topic(topic)
            .await?
            .ok_or_else(|| BrokerError::TopicNotFound(topic.into()).into())
    }

    /// The group's state for the topic made at `created` (a fresh one when it was about an older topic of
    /// that name), and its revision.
    async fn load(
        engine: &dyn Engine,
        group: &str,
        topic: &str,
        created: u64,
    ) -> Result<(Doc, Option<u64>), EngineError> {
        let fresh = Doc {
            topic_created: created,
            ..Doc::default()
        };
        match engine.meta_get(&key(group, topic)).await? {
            None => Ok((fresh, None)),
            Some(v) => {
                let doc: Doc = serde_json::from_slice(&v.value).map_err(|e| {
                    broken(
                        engine.name(),
                        format!("the state of group `{group}` on topic `{topic}` is unreadable: {e}"),
                    )
                })?;
                if doc.topic_created == created {
                    Ok((doc, Some(v.revision)))
                } else {
                    Ok((fresh, Some(v.revision)))
                }
            }
        }
    }

    /// Applies `change` to the group's document (its sessions expired first) and stores it by
    /// compare-and-set, again from a fresh read when another process came first. `change` answers
    /// what to return and whether the document must be written (an expiry is written anyway).
    async fn update<R>(
        engine: &dyn Engine,
        group: &str,
        state: &TopicState,
        mut change: impl FnMut(&mut Doc, i64) -> Result<(R, bool), EngineError>,
    ) -> Result<(R, Doc), EngineError> {
        let topic = state.name.as_str();
        for _ in 0..ATTEMPTS {
            let (mut doc, revision) = Self::load(engine, group, topic, state.created_ns).await?;
            let now = now_ms();
            let expired = doc.expire(now);
            let (out, write) = change(&mut doc, now)?;
            if !(write || expired) {
                return Ok((out, doc));
            }
            let value =
                Bytes::from(serde_json::to_vec(&doc).map_err(|e| broken(engine.name(), e.to_string()))?);
            if engine
                .meta_put(&key(group, topic), value, revision)
                .await?
                .is_some()
            {
                return Ok((out, doc));
            }
        }
        Err(broken(
            engine.name(),
            format!(
                "group `{group}` on topic `{topic}` changed {ATTEMPTS} times while this change was tried"
            ),
        ))
    }

    fn check_member(doc: &Doc, group: &str, topic: &str, member: &MemberRef) -> Result<(), EngineError> {
        if !doc.members.iter().any(|m| m.id == member.member_id) {
            return Err(BrokerError::UnknownMember {
                group: group.into(),
                topic: topic.into(),
                member: member.member_id.clone(),
            }
            .into());
        }
        if member.generation != doc.generation {
            return Err(BrokerError::StaleGeneration {
                group: group.into(),
                topic: topic.into(),
                generation: member.generation,
                current: doc.generation,
            }
            .into());
        }
        Ok(())
    }

    fn check_no_members(doc: &Doc, group: &str, topic: &str) -> Result<(), EngineError> {
        if doc.members.is_empty() {
            Ok(())
        } else {
            Err(BrokerError::GroupHasMembers {
                group: group.into(),
                topic: topic.into(),
                members: doc.members.len(),
            }
            .into())
        }
    }

    /// Joins `group` on `topic` (see [`crate::Broker::join`]).
    pub async fn join(
        &self,
        engine: &dyn Engine,
        group: &str,
        topic: &str,
        options: JoinOptions,
    ) -> Result<Membership, EngineError> {
        validate_name("group", group)?;
        if let Some(id) = &options.member_id {
            validate_name("member_id", id)?;
        }
        let state = Self::topic(engine, topic).await?;
        let session_ms = u64::try_from(options.session_timeout.as_millis()).unwrap_or(u64::MAX);
        let (membership, _) = Self::update(engine, group, &state, |doc, now| {
            let id = options.member_id.clone().unwrap_or_else(|| generate_id(doc));
            // A rejoin is a new session of the consumer: it starts again from the committed offset.
            if doc.holder.as_deref() == Some(id.as_str()) {
                doc.epoch += 1;
            }
            doc.members.retain(|m| m.id != id);
            doc.members.push(Member {
                id: id.clone(),
                session_ms,
                expires_ms: 0,
            });
            doc.renew(&id, now);
            doc.generation += 1;
            doc.assign();
            Ok((doc.membership(&id), true))
        })
        .await?;
        tracing::info!(group, topic, member = %membership.member_id, generation = membership.generation,
            partitions = ?membership.partitions, "stream group member joined");
        Ok(membership)
    }

    /// Keeps `member` alive; answers with the current generation and its partitions. Any generation up
    /// to the current one is accepted.
    pub async fn heartbeat(
        &self,
        engine: &dyn Engine,
        group: &str,
        topic: &str,
        member_id: &str,
        generation: u64,
    ) -> Result<Membership, EngineError> {
        validate_name("group", group)?;
        validate_name("member_id", member_id)?;
        let state = Self::topic(engine, topic).await?;
        let (membership, _) = Self::update(engine, group, &state, |doc, now| {
            if !doc.members.iter().any(|m| m.id == member_id) {
                return Err(unknown(group, topic, member_id));
            }
            if generation > doc.generation {
                return Err(stale(group, topic, generation, doc.generation));
            }
            doc.renew(member_id, now);
            Ok((doc.membership(member_id), true))
        })
        .await?;
        Ok(membership)
    }

    /// `member` leaves; its partition goes to the next member in a new generation.
    pub async fn leave(
        &self,
        engine: &dyn Engine,
        group: &str,
        topic: &str,
        member_id: &str,
    ) -> Result<(), EngineError> {
        validate_name("group", group)?;
        validate_name("member_id", member_id)?;
        let state = Self::topic(engine, topic).await?;
        Self::update(engine, group, &state, |doc, _| {
            if !doc.members.iter().any(|m| m.id == member_id) {
                return Err(unknown(group, topic, member_id));
            }
            doc.members.retain(|m| m.id != member_id);
            doc.generation += 1;
            doc.assign();
            Ok(((), true))
        })
        .await?;
        Ok(())
    }

    /// The group's next records from where its last fetch in this process ended (else from the committed
    /// offset, else from the earliest record), within `limits`. A member that holds no partition gets
    /// none, after `max_wait`.
    pub async fn fetch(
        &self,
        engine: &dyn Engine,
        group: &str,
        topic: &str,
        member: Option<&MemberRef>,
        limits: FetchLimits,
    ) -> Result<Vec<InRecord>, EngineError> {
        let FetchLimits {
            max_records: max,
            max_bytes,
            max_wait: wait,
        } = limits;
        validate_name("group", group)?;
        let state = Self::topic(engine, topic).await?;
        let (holds, doc) = Self::update(engine, group, &state, |doc, now| match member {
            Some(m) => {
                Self::check_member(doc, group, topic, m)?;
                // A fetch keeps the member alive; written only once a third of its session has passed.
                let due = doc.members.iter().any(|x| {
                    x.id == m.member_id
                        && x.expires_ms - now < i64::try_from(x.session_ms * 2 / 3).unwrap_or(i64::MAX)
                });
                doc.renew(&m.member_id, now);
                Ok((doc.holder.as_deref() == Some(m.member_id.as_str()), due))
            }
            None => Self::check_no_members(doc, group, topic).map(|()| (true, false)),
        })
        .await?;
        if !holds {
            tokio::time::sleep(wait).await;
            return Ok(Vec::new());
        }
        // One fetch of the group at a time in this process, so that two never read from one position.
        let lock = self.lock(group, topic);
        let _guard = lock.lock().await;
        let who = member.map(|m| m.member_id.clone());
        let epoch = doc.epoch;
        let slot = (group.to_owned(), topic.to_owned());
        let remembered = self
            .positions()
            .get(&slot)
            .filter(|p| p.member == who && p.epoch == epoch && p.topic_created == state.created_ns)
            .map(|p| p.next);
        let from = remembered
            .or(doc.committed)
            .unwrap_or(state.start_offset)
            .max(state.start_offset);
        let mut records = engine.fetch(topic, from, max, wait).await?;
        crate::engine::truncate_to_bytes(&mut records, max_bytes);
        let Some(next) = records.last().map(|r| r.offset + 1) else {
            return Ok(records);
        };
        // The group may have moved on while the fetch waited: then these records are not handed out.
        let (mut now, _) = Self::load(engine, group, topic, state.created_ns).await?;
        now.expire(now_ms());
        match member {
            Some(m) => {
                Self::check_member(&now, group, topic, m)?;
                if now.holder.as_deref() != Some(m.member_id.as_str()) || now.epoch != epoch {
                    return Err(stale(group, topic, m.generation, now.generation));
                }
            }
            None => {
                Self::check_no_members(&now, group, topic)?;
                if now.epoch != epoch {
                    // Moved by a seek meanwhile: the next fetch starts where it put the group.
                    return Ok(Vec::new());
                }
            }
        }
        self.positions().insert(
            slot,
            Position {
                member: who,
                epoch,
                topic_created: state.created_ns,
                next,
            },
        );
        // A subscription's filter drops what it refuses; the position moves past it all the same.
        if let Some(policy) = engine.filter(group, topic).await {
            records.retain(|r| policy.matches(&r.broker_headers(), &r.value));
        }
        Ok(records)
    }

    /// Makes `group` a stream subscription's group: unless it has state already, it starts at the end of
    /// `topic`, so that it gets the records published from now on (as on the embedded engine).
    pub async fn subscribe(&self, engine: &dyn Engine, group: &str, topic: &str) -> Result<(), EngineError> {
        validate_name("group", group)?;
        let state = Self::topic(engine, topic).await?;
        Self::update(engine, group, &state, |doc, _| {
            let fresh = doc.committed.is_none() && doc.members.is_empty() && doc.generation == 0;
            if fresh {
                doc.committed = Some(state.next_offset);
            }
            Ok(((), fresh))
        })
        .await?;
        Ok(())
    }

    /// Commits `offsets` (partition 0 only: the next record the group will process).
    pub async fn commit(
        &self,
        engine: &dyn Engine,
        group: &str,
        topic: &str,
        member: Option<&MemberRef>,
        offsets: &[(u32, u64)],
    ) -> Result<(), EngineError> {
        validate_name("group", group)?;
        let state = Self::topic(engine, topic).await?;
        let Some(&(_, offset)) = offsets.last() else {
            return Err(BrokerError::InvalidArgument {
                field: "offsets",
                message: "must not be empty".into(),
            }
            .into());
        };
        for &(partition, offset) in offsets {
            // Below the first record still stored is fine (retention may have passed it); past the end not.
            check_offset(&state, partition, offset.max(state.start_offset))?;
        }
        Self::update(engine, group, &state, |doc, now| {
            match member {
                Some(m) => {
                    Self::check_member(doc, group, topic, m)?;
                    if doc.holder.as_deref() != Some(m.member_id.as_str()) {
                        return Err(BrokerError::NotAssigned {
                            group: group.into(),
                            topic: topic.into(),
                            member: m.member_id.clone(),
                            partition: 0,
                        }
                        .into());
                    }
                    doc.renew(&m.member_id, now);
                }
                None => Self::check_no_members(doc, group, topic)?,
            }
            doc.committed = Some(offset);
            Ok(((), true))
        })
        .await?;
        Ok(())
    }

    /// The group's generation, live members and committed offset with its lag; `GroupNotFound` when it
    /// has neither members nor a commit.
    pub async fn status(
        &self,
        engine: &dyn Engine,
        group: &str,
        topic: &str,
    ) -> Result<GroupStatus, EngineError> {
        validate_name("group", group)?;
        let state = Self::topic(engine, topic).await?;
        let (mut doc, _) = Self::load(engine, group, topic, state.created_ns).await?;
        doc.expire(now_ms());
        if doc.members.is_empty() && doc.committed.is_none() {
            return Err(BrokerError::GroupNotFound {
                group: group.into(),
                topic: topic.into(),
            }
            .into());
        }
        let from = doc
            .committed
            .unwrap_or(state.start_offset)
            .max(state.start_offset);
        Ok(GroupStatus {
            generation: doc.generation,
            members: doc
                .members
                .iter()
                .map(|m| MemberInfo {
                    member_id: m.id.clone(),
                    partitions: doc.partitions(&m.id),
                    session_timeout_ms: m.session_ms,
                })
                .collect(),
            partitions: vec![GroupPartition {
                partition: 0,
                committed: doc.committed,
                start_offset: state.start_offset,
                next_offset: state.next_offset,
                lag: state.next_offset.saturating_sub(from),
            }],
        })
    }

    /// Moves the group (no live members) and commits the new offset. Seeking by timestamp is not
    /// supported on engines.
    pub async fn seek(
        &self,
        engine: &dyn Engine,
        group: &str,
        topic: &str,
        partition: Option<u32>,
        to: SeekTo,
    ) -> Result<Vec<(u32, u64)>, EngineError> {
        validate_name("group", group)?;
        let state = Self::topic(engine, topic).await?;
        if let Some(p) = partition {
            check_offset(&state, p, state.start_offset)?;
        }
        let offset = match to {
            SeekTo::Earliest => state.start_offset,
            SeekTo::Latest => state.next_offset,
            SeekTo::Offset(o) => {
                check_offset(&state, 0, o)?;
                o
            }
            SeekTo::Timestamp(_) => {
                return Err(EngineError::Unsupported {
                    engine: engine.name(),
                    what: "seeking a stream group by timestamp".into(),
                });
            }
        };
        // A fetch of the group in this process finishes first; one in another sees the new epoch.
        let lock = self.lock(group, topic);
        let _guard = lock.lock().await;
        Self::update(engine, group, &state, |doc, _| {
            Self::check_no_members(doc, group, topic)?;
            doc.committed = Some(offset);
            doc.epoch += 1;
            Ok(((), true))
        })
        .await?;
        self.positions().remove(&(group.to_owned(), topic.to_owned()));
        Ok(vec![(0, offset)])
    }
}

fn unknown(group: &str, topic: &str, member: &str) -> EngineError {
    BrokerError::UnknownMember {
        group: group.into(),
        topic: topic.into(),
        member: member.into(),
    }
    .into()
}

fn stale(group: &str, topic: &str, generation: u64, current: u64) -> EngineError {
    BrokerError::StaleGeneration {
        group: group.into(),
        topic: topic.into(),
        generation,
        current,
    }
    .into()
}

fn check_offset(state: &TopicState, partition: u32, offset: u64) -> Result<(), EngineError> {
    if partition != 0 {
        return Err(BrokerError::PartitionNotFound {
            topic: state.name.clone(),
            partition,
            partitions: 1,
        }
        .into());
    }
    if offset < state.start_offset || offset > state.next_offset {
        return Err(BrokerError::OffsetOutOfRange {
            topic: state.name.clone(),
            partition,
            offset,
            start: state.start_offset,
            end: state.next_offset,
        }
        .into());
    }
    Ok(())
}

fn generate_id(doc: &Doc) -> String {
    loop {
        let id = format!(
            "member-{:016x}",
            std::collections::hash_map::RandomState::new().hash_one(now_ms())
        );
        if !doc.members.iter().any(|m| m.id == id) {
            return id;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, expires_ms: i64) -> Member {
        Member {
            id: id.into(),
            session_ms: 10_000,
            expires_ms,
        }
    }

    #[test]
    fn the_partition_stays_with_its_holder_and_moves_when_its_session_ends() {
        let mut doc = Doc {
            generation: 1,
            members: vec![member("a", 100), member("b", 300)],
            ..Doc::default()
        };
        doc.assign();
        assert_eq!(doc.holder.as_deref(), Some("a"));
        assert_eq!(doc.partitions("a"), vec![0]);
        assert!(doc.partitions("b").is_empty());
        assert!(!doc.expire(50), "nobody expired");
        assert_eq!((doc.generation, doc.holder.as_deref()), (1, Some("a")));
        assert!(doc.expire(200), "a expired");
        assert_eq!(doc.generation, 2);
        assert_eq!(doc.holder.as_deref(), Some("b"));
        assert_eq!(doc.epoch, 2, "the partition moved");
        assert!(doc.expire(400));
        assert_eq!((doc.holder.as_deref(), doc.generation), (None, 3));
    }

    #[test]
    fn a_new_member_does_not_take_the_partition_from_a_live_holder() {
        let mut doc = Doc::default();
        doc.members.push(member("a", 1000));
        doc.generation = 1;
        doc.assign();
        let epoch = doc.epoch;
        doc.members.push(member("b", 1000));
        doc.generation = 2;
        doc.assign();
        assert_eq!((doc.holder.as_deref(), doc.epoch), (Some("a"), epoch));
    }
}
