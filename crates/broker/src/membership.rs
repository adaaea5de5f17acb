//! Membership of stream groups (Kafka consumer-group membership): the live members of a group on a topic
//! share its partitions, each partition owned by at most one member at a time.
//!
//! Membership is in memory only, like Kafka's group coordinator state: after a restart the broker knows
//! no members, every call of an old member fails with [`BrokerError::UnknownMember`], and the group is
//! rebuilt by its members joining again. Committed offsets stay durable in the meta log as before, so a
//! rebuilt group continues from them.
//!
//! Rules:
//! - **Generation.** Every change of membership (a join, a rejoin under a live id, a leave, a session
//!   expiry, the topic being re-created) bumps the group's generation by one and reassigns the
//!   partitions. Generations start at 1 with the first join and never repeat for a (group, topic) within
//!   one broker process (the group's record is kept when its last member goes).
//! - **Assignment** is sticky and balanced, and deterministic: members sorted by id get `n / m`
//!   partitions each and the first `n % m` one more (those first that hold the most partitions, ties by
//!   id). Each member keeps the partitions it holds, lowest first, up to its share; the rest go, lowest
//!   first, to the members below their share, in id order. With no previous owners this is Kafka's range
//!   assignment over the sorted ids. Members beyond the number of partitions get none.
//! - **Sessions.** A member is alive while it calls: joining, heartbeats, fetches (every pass of a
//!   long-poll) and commits restart its session. Sessions end lazily, without a background task: every
//!   membership call and every fetch or commit on the group first removes the members whose session
//!   ended (against [`Instant::now`]). A waiting fetch of a member wakes at the earliest session end of
//!   the others (and at half its own session, to stay alive), so a fetch of any other member is enough to
//!   take a dead member's partitions away: that fetch answers [`BrokerError::StaleGeneration`] and its
//!   member heartbeats to learn its new partitions. While nobody calls, a dead member keeps its
//!   partitions on paper; nobody reads them until someone calls. A rebalance wakes the waiting fetches
//!   of the topic, so a waiting member (or whole-group consumer) is told at once.
//! - **Positions.** A partition whose owner changes (between members, or between a member and the group
//!   as a whole when the first member joins or the last one goes) drops its in-memory fetch position, so
//!   the new owner continues from the group's last committed offset:
//!   records fetched but not committed are delivered again (at-least-once). A member rejoining under its
//!   live id is a new session of the same consumer and restarts its partitions at the committed offsets
//!   too. Partitions that stay with their owner keep their positions.
//! - **Fencing**, like Kafka's. A member's fetch needs the current generation
//!   ([`BrokerError::StaleGeneration`] otherwise); one that sees the group rebalanced while it read hands
//!   out nothing and moves no position. A member's commit needs the current generation and must name
//!   only partitions assigned to the member ([`BrokerError::NotAssigned`]). A fetch, commit or seek
//!   without a member is the old whole-group behaviour and is only taken while the group has no live
//!   members ([`BrokerError::GroupHasMembers`]).
//! - **Known window.** A commit is checked, then made durable; a rebalance between the two lets a commit
//!   of the previous owner land after the partition moved. Nothing is skipped by it: the committer had
//!   processed those records, and the new owner started from the commit before it. A later, lower commit
//!   of the new owner then moves the offset back, which only means more records delivered again.
//!
//! ```text
//! (group, topic) -> Group { topic_id, generation,
//!                           members: member_id -> { session_timeout, last_seen, partitions, fetch lock } }
//! ```

use std::collections::BTreeMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::broker::{Broker, GroupKey, GroupPartition, State, Topic, lock};
use crate::error::{BrokerError, Result};
use crate::names::validate_name;

/// Session length of a member that does not ask for one.
pub const DEFAULT_SESSION_TIMEOUT: Duration = Duration::from_secs(10);
/// Shortest session a member may ask for.
pub const MIN_SESSION_TIMEOUT: Duration = Duration::from_millis(1);
/// Longest session a member may ask for.
pub const MAX_SESSION_TIMEOUT: Duration = Duration::from_secs(300);

/// How a member joins a stream group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinOptions {
    /// Join under this id (a new member gets a generated one when `None`). Joining under the id of a
    /// live member is a rejoin: a new session of the same consumer.
    pub member_id: Option<String>,
    /// The member is dropped when it has not called for this long
    /// ([`MIN_SESSION_TIMEOUT`]..=[`MAX_SESSION_TIMEOUT`]).
    pub session_timeout: Duration,
}

impl Default for JoinOptions {
    fn default() -> Self {
        Self {
            member_id: None,
            session_timeout: DEFAULT_SESSION_TIMEOUT,
        }
    }
}

/// A member's view of its group: who it is, which generation, which partitions it owns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct Membership {
    /// The member's id.
    pub member_id: String,
    /// The group's current generation; fetches and commits must name it.
    pub generation: u64,
    /// The partitions assigned to the member in this generation, ascending.
    pub partitions: Vec<u32>,
}

/// Who fetches or commits: a member and the generation it believes current.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberRef {
    /// The member's id.
    pub member_id: String,
    /// The generation of the member's last join or heartbeat answer.
    pub generation: u64,
}

/// A live member as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct MemberInfo {
    /// The member's id.
    pub member_id: String,
    /// Its partitions in the current generation, ascending.
    pub partitions: Vec<u32>,
    /// Its session length in milliseconds.
    pub session_timeout_ms: u64,
}

/// A stream group on one topic: its members and its offsets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupStatus {
    /// The current generation (0 when no member ever joined).
    pub generation: u64,
    /// Live members, by id.
    pub members: Vec<MemberInfo>,
    /// Committed offset and lag per partition.
    pub partitions: Vec<GroupPartition>,
}

/// The membership of one group on one topic.
#[derive(Debug)]
pub(crate) struct Group {
    /// The topic's id when the partitions were last assigned (a re-created topic has a new one).
    topic_id: u64,
    generation: u64,
    /// By id: the order of the assignment.
    members: BTreeMap<String, Member>,
}

#[derive(Debug)]
struct Member {
    session_timeout: Duration,
    last_seen: Instant,
    partitions: Vec<u32>,
    /// Serialises this member's fetches, so two never hand out the same records.
    fetch_lock: Arc<tokio::sync::Mutex<()>>,
}

impl Member {
    fn session_end(&self) -> Instant {
        self.last_seen + self.session_timeout
    }
}

/// One pass of a fetch: what it may read, and under which generation.
#[derive(Debug)]
pub(crate) struct FetchPass {
    /// Partitions to read, ascending.
    pub partitions: Vec<u32>,
    /// The generation the pass started in; [`Broker::advance_positions`] checks it is still current.
    pub generation: u64,
    /// When a waiting fetch must look at the group again (a session ends), if ever.
    pub wake: Option<Instant>,
}

fn key(group: &str, topic: &Topic) -> GroupKey {
    (group.to_string(), topic.name.clone())
}

fn unknown(group: &str, topic: &Topic, member: &str) -> BrokerError {
    BrokerError::UnknownMember {
        group: group.into(),
        topic: topic.name.clone(),
        member: member.into(),
    }
}

fn live_members(state: &State, key: &GroupKey) -> usize {
    state.members.get(key).map_or(0, |g| g.members.len())
}

/// Brings the group up to date at `now`: drops the members whose session ended, and reassigns a
/// re-created topic's partitions; either bumps the generation.
///
/// # Errors
/// [`BrokerError::TopicNotFound`] when `topic` is older than the one the group is on (it was deleted
/// while the caller held it).
fn refresh(state: &mut State, key: &GroupKey, topic: &Topic, now: Instant) -> Result<()> {
    let Some(group) = state.members.get_mut(key) else {
        return Ok(());
    };
    if topic.id < group.topic_id {
        return Err(BrokerError::TopicNotFound(topic.name.clone()));
    }
    let mut reason = None;
    let mut released = Vec::new();
    if topic.id > group.topic_id {
        group.topic_id = topic.id;
        for m in group.members.values_mut() {
            m.partitions.clear();
        }
        reason = Some("topic re-created");
    }
    let expired: Vec<String> = group
        .members
        .iter()
        .filter(|(_, m)| m.session_end() <= now)
        .map(|(id, _)| id.clone())
        .collect();
    for id in &expired {
        if let Some(m) = group.members.remove(id) {
            released.extend(&m.partitions);
            tracing::info!(group = %key.0, topic = %key.1, member = %id, partitions = ?m.partitions,
                session_timeout_ms = m.session_timeout.as_millis() as u64, "stream group member's session expired");
        }
    }
    if !expired.is_empty() {
        reason = Some("session expired");
    }
    if let Some(reason) = reason {
        rebalance(state, key, topic, &released, reason);
    }
    Ok(())
}

/// Reassigns the partitions among the live members, bumps the generation, and drops the in-memory
/// position of every partition whose owner changed, and of the `released` partitions (those of members
/// already removed, or of a member starting a new session). Wakes the topic's waiting fetches, so the
/// group's waiting members learn of the new generation at once.
fn rebalance(state: &mut State, key: &GroupKey, topic: &Topic, released: &[u32], reason: &str) {
    let n = topic.partitions.len() as u32;
    let State {
        members, positions, ..
    } = state;
    let Some(group) = members.get_mut(key) else {
        return;
    };
    let before = owners(group, n);
    let assigned = {
        let current: Vec<(&str, &[u32])> = group
            .members
            .iter()
            .map(|(id, m)| (id.as_str(), m.partitions.as_slice()))
            .collect();
        assign(n, &current)
    };
    for (m, partitions) in group.members.values_mut().zip(assigned) {
        m.partitions = partitions;
    }
    group.generation += 1;
    let after = owners(group, n);
    if let Some(positions) = positions.get_mut(key) {
        for (p, (b, a)) in before.iter().zip(&after).enumerate() {
            if b != a {
                positions.remove(&(p as u32));
            }
        }
        for p in released {
            positions.remove(p);
        }
    }
    tracing::info!(group = %key.0, topic = %key.1, generation = group.generation,
        members = group.members.len(), reason, "stream group rebalanced");
    topic.notify.notify_waiters();
}

/// The owner of each partition `0..n`.
fn owners(group: &Group, n: u32) -> Vec<Option<String>> {
    let mut owners = vec![None; n as usize];
    for (id, m) in &group.members {
        for &p in &m.partitions {
            if let Some(o) = owners.get_mut(p as usize) {
                *o = Some(id.clone());
            }
        }
    }
    owners
}

/// The sticky, balanced assignment of partitions `0..n` among `members` (sorted by id, with the
/// partitions each holds now); returns each member's partitions, ascending, in the same order.
fn assign(n: u32, members: &[(&str, &[u32])]) -> Vec<Vec<u32>> {
    let m = members.len();
    if m == 0 {
        return Vec::new();
    }
    // What each member holds now, ignoring partitions that no longer exist or that an earlier member
    // already claimed.
    let mut taken = vec![false; n as usize];
    let held: Vec<Vec<u32>> = members
        .iter()
        .map(|(_, parts)| {
            let mut parts: Vec<u32> = parts.iter().copied().filter(|&p| p < n).collect();
            parts.sort_unstable();
            parts.dedup();
            parts.retain(|&p| !std::mem::replace(&mut taken[p as usize], true));
            parts
        })
        .collect();
    let (base, extra) = (n as usize / m, n as usize % m);
    let mut by_held: Vec<usize> = (0..m).collect();
    by_held.sort_by_key(|&i| (std::cmp::Reverse(held[i].len()), i));
    let mut quota = vec![base; m];
    for &i in by_held.iter().take(extra) {
        quota[i] += 1;
    }
    let mut kept = vec![false; n as usize];
    let mut out: Vec<Vec<u32>> = held
        .into_iter()
        .zip(&quota)
        .map(|(mut parts, &q)| {
            parts.truncate(q);
            for &p in &parts {
                kept[p as usize] = true;
            }
            parts
        })
        .collect();
    let mut free = (0..n).filter(|&p| !kept[p as usize]);
    for (parts, &q) in out.iter_mut().zip(&quota) {
        while parts.len() < q {
            match free.next() {
                Some(p) => parts.push(p),
                None => break,
            }
        }
        parts.sort_unstable();
    }
    out
}

/// A fresh member id: `member-` and 16 hex digits, unique within the group. Not a secret.
fn generate_id(group: &Group) -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    loop {
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let id = format!("member-{:016x}", RandomState::new().hash_one(seq));
        if !group.members.contains_key(&id) {
            return id;
        }
    }
}

fn membership(group: &Group, member_id: &str) -> Membership {
    Membership {
        member_id: member_id.into(),
        generation: group.generation,
        partitions: group
            .members
            .get(member_id)
            .map(|m| m.partitions.clone())
            .unwrap_or_default(),
    }
}

impl Broker {
    /// Joins a stream group on a topic as a member: the group's generation is bumped and its partitions
    /// are reassigned among the live members (see the module's rules). Answers with the member's id (a
    /// generated one unless `options.member_id` is given), the new generation and its partitions.
    ///
    /// # Errors
    /// [`BrokerError::InvalidName`] for the group or the `member_id`, [`BrokerError::TopicNotFound`],
    /// [`BrokerError::InvalidArgument`] (`session_timeout`) outside
    /// [`MIN_SESSION_TIMEOUT`]..=[`MAX_SESSION_TIMEOUT`].
    pub fn join(&self, group: &str, topic: &str, options: JoinOptions) -> Result<Membership> {
        validate_name("group", group)?;
        if let Some(id) = &options.member_id {
            validate_name("member_id", id)?;
        }
        let timeout = options.session_timeout;
        if !(MIN_SESSION_TIMEOUT..=MAX_SESSION_TIMEOUT).contains(&timeout) {
            return Err(BrokerError::InvalidArgument {
                field: "session_timeout",
                message: format!(
                    "must be {}..={} ms, got {:?}",
                    MIN_SESSION_TIMEOUT.as_millis(),
                    MAX_SESSION_TIMEOUT.as_millis(),
                    timeout
                ),
            });
        }
        let t = self.topic(topic)?;
        let key = key(group, &t);
        let now = Instant::now();
        let mut state = lock(&self.inner.state);
        refresh(&mut state, &key, &t, now)?;
        let g = state.members.entry(key.clone()).or_insert_with(|| Group {
            topic_id: t.id,
            generation: 0,
            members: BTreeMap::new(),
        });
        let member_id = options.member_id.unwrap_or_else(|| generate_id(g));
        // A rejoin is a new session of the same consumer: it starts again from the committed offsets.
        let rejoined = g.members.remove(&member_id).map(|m| m.partitions);
        g.members.insert(
            member_id.clone(),
            Member {
                session_timeout: timeout,
                last_seen: now,
                partitions: rejoined.clone().unwrap_or_default(),
                fetch_lock: Arc::default(),
            },
        );
        tracing::info!(group, topic = %t.name, member = %member_id, rejoin = rejoined.is_some(),
            session_timeout_ms = timeout.as_millis() as u64, "stream group member joined");
        let released = rejoined.unwrap_or_default();
        rebalance(&mut state, &key, &t, &released, "member joined");
        let g = &state.members[&key];
        Ok(membership(g, &member_id))
    }

    /// Keeps a member alive and tells it the group's current generation and its partitions in it. A
    /// member whose fetch or commit was refused with [`BrokerError::StaleGeneration`] calls this to learn
    /// its new assignment; any generation up to the current one is accepted.
    ///
    /// # Errors
    /// [`BrokerError::InvalidName`], [`BrokerError::TopicNotFound`], [`BrokerError::UnknownMember`] when
    /// the member left, its session expired or the broker restarted (it must join again),
    /// [`BrokerError::StaleGeneration`] for a generation the group has not reached.
    pub fn heartbeat(
        &self,
        group: &str,
        topic: &str,
        member_id: &str,
        generation: u64,
    ) -> Result<Membership> {
        validate_name("group", group)?;
        validate_name("member_id", member_id)?;
        let t = self.topic(topic)?;
        let key = key(group, &t);
        let now = Instant::now();
        let mut state = lock(&self.inner.state);
        refresh(&mut state, &key, &t, now)?;
        let g = state
            .members
            .get_mut(&key)
            .ok_or_else(|| unknown(group, &t, member_id))?;
        let current = g.generation;
        let m = g
            .members
            .get_mut(member_id)
            .ok_or_else(|| unknown(group, &t, member_id))?;
        m.last_seen = now;
        if generation > current {
            return Err(BrokerError::StaleGeneration {
                group: group.into(),
                topic: t.name.clone(),
                generation,
                current,
            });
        }
        Ok(membership(g, member_id))
    }

    /// Leaves a stream group: the member's partitions go to the others (a new generation).
    ///
    /// # Errors
    /// [`BrokerError::InvalidName`], [`BrokerError::TopicNotFound`], [`BrokerError::UnknownMember`] when
    /// the member is not live (never joined, left, expired).
    pub fn leave(&self, group: &str, topic: &str, member_id: &str) -> Result<()> {
        validate_name("group", group)?;
        validate_name("member_id", member_id)?;
        let t = self.topic(topic)?;
        let key = key(group, &t);
        let mut state = lock(&self.inner.state);
        refresh(&mut state, &key, &t, Instant::now())?;
        let removed = state
            .members
            .get_mut(&key)
            .and_then(|g| g.members.remove(member_id))
            .ok_or_else(|| unknown(group, &t, member_id))?;
        tracing::info!(group, topic = %t.name, member = member_id, partitions = ?removed.partitions,
            "stream group member left");
        rebalance(&mut state, &key, &t, &removed.partitions, "member left");
        Ok(())
    }

    /// A stream group's live members with their partitions, its generation, and its committed offsets
    /// and lag per partition (`committed: None` everywhere for a group with members that never
    /// committed).
    ///
    /// # Errors
    /// [`BrokerError::InvalidName`], [`BrokerError::TopicNotFound`], [`BrokerError::GroupNotFound`] when
    /// the group has neither live members nor committed offsets on this topic.
    pub fn group_status(&self, group: &str, topic: &str) -> Result<GroupStatus> {
        validate_name("group", group)?;
        let t = self.topic(topic)?;
        let key = key(group, &t);
        let (generation, members) = {
            let mut state = lock(&self.inner.state);
            refresh(&mut state, &key, &t, Instant::now())?;
            match state.members.get(&key) {
                None => (0, Vec::new()),
                Some(g) => (
                    g.generation,
                    g.members
                        .iter()
                        .map(|(id, m)| MemberInfo {
                            member_id: id.clone(),
                            partitions: m.partitions.clone(),
                            session_timeout_ms: m.session_timeout.as_millis() as u64,
                        })
                        .collect(),
                ),
            }
        };
        let partitions = match self.group_offsets(group, topic) {
            Ok(p) => p,
            Err(BrokerError::GroupNotFound { .. }) if !members.is_empty() => t
                .partitions
                .iter()
                .enumerate()
                .map(|(p, log)| {
                    let (start, end) = (log.start_offset(), log.next_offset());
                    GroupPartition {
                        partition: p as u32,
                        committed: None,
                        start_offset: start,
                        next_offset: end,
                        lag: end - start,
                    }
                })
                .collect(),
            Err(e) => return Err(e),
        };
        Ok(GroupStatus {
            generation,
            members,
            partitions,
        })
    }

    /// The lock that serialises fetches of one consumer: the whole group's without a member, the
    /// member's own with one.
    ///
    /// # Errors
    /// [`BrokerError::UnknownMember`].
    pub(crate) fn fetch_lock(
        &self,
        group: &str,
        topic: &Topic,
        member: Option<&MemberRef>,
    ) -> Result<Arc<tokio::sync::Mutex<()>>> {
        let Some(member) = member else {
            return Ok(self.group_lock(group, &topic.name));
        };
        validate_name("member_id", &member.member_id)?;
        let key = key(group, topic);
        let mut state = lock(&self.inner.state);
        refresh(&mut state, &key, topic, Instant::now())?;
        state
            .members
            .get(&key)
            .and_then(|g| g.members.get(&member.member_id))
            .map(|m| m.fetch_lock.clone())
            .ok_or_else(|| unknown(group, topic, &member.member_id))
    }

    /// Starts one pass of a fetch: checks who fetches, keeps a member alive, and says which partitions
    /// it may read.
    ///
    /// # Errors
    /// [`BrokerError::UnknownMember`], [`BrokerError::StaleGeneration`]; without a member,
    /// [`BrokerError::GroupHasMembers`].
    pub(crate) fn fetch_pass(
        &self,
        group: &str,
        topic: &Topic,
        member: Option<&MemberRef>,
    ) -> Result<FetchPass> {
        let key = key(group, topic);
        let now = Instant::now();
        let mut state = lock(&self.inner.state);
        refresh(&mut state, &key, topic, now)?;
        let Some(member) = member else {
            let members = live_members(&state, &key);
            if members > 0 {
                return Err(BrokerError::GroupHasMembers {
                    group: group.into(),
                    topic: topic.name.clone(),
                    members,
                });
            }
            return Ok(FetchPass {
                partitions: (0..topic.partitions.len() as u32).collect(),
                generation: state.members.get(&key).map_or(0, |g| g.generation),
                wake: None,
            });
        };
        let g = state
            .members
            .get_mut(&key)
            .ok_or_else(|| unknown(group, topic, &member.member_id))?;
        let current = g.generation;
        let me = g
            .members
            .get_mut(&member.member_id)
            .ok_or_else(|| unknown(group, topic, &member.member_id))?;
        me.last_seen = now;
        if member.generation != current {
            return Err(BrokerError::StaleGeneration {
                group: group.into(),
                topic: topic.name.clone(),
                generation: member.generation,
                current,
            });
        }
        let own = now + me.session_timeout / 2;
        let partitions = me.partitions.clone();
        let others = g
            .members
            .iter()
            .filter(|(id, _)| **id != member.member_id)
            .map(|(_, m)| m.session_end());
        Ok(FetchPass {
            partitions,
            generation: current,
            wake: others.chain([own]).min(),
        })
    }

    /// Ends a pass of a fetch: moves the group's positions to `moved` if the group was not rebalanced
    /// since the pass began (and, without a member, still has none). Returns false, moving nothing,
    /// otherwise: the records read must not be handed out.
    pub(crate) fn advance_positions(
        &self,
        group: &str,
        topic: &Topic,
        member: Option<&MemberRef>,
        generation: u64,
        moved: &[(u32, u64)],
    ) -> bool {
        let key = key(group, topic);
        let mut state = lock(&self.inner.state);
        let current = match (state.members.get(&key), member) {
            (None, None) => generation == 0,
            (None, Some(_)) => false,
            (Some(g), None) => g.generation == generation && g.members.is_empty(),
            (Some(g), Some(m)) => g.generation == generation && g.members.contains_key(&m.member_id),
        };
        if !current {
            return false;
        }
        if !moved.is_empty() {
            let positions = state.positions.entry(key).or_default();
            positions.extend(moved.iter().copied());
        }
        true
    }

    /// Checks that `member` may commit `partitions` (and keeps it alive).
    ///
    /// # Errors
    /// [`BrokerError::UnknownMember`], [`BrokerError::StaleGeneration`], [`BrokerError::NotAssigned`];
    /// without a member, [`BrokerError::GroupHasMembers`].
    pub(crate) fn check_commit(
        &self,
        group: &str,
        topic: &Topic,
        member: Option<&MemberRef>,
        partitions: impl IntoIterator<Item = u32>,
    ) -> Result<()> {
        let pass = self.fetch_pass(group, topic, member)?;
        let Some(member) = member else {
            return Ok(());
        };
        match partitions
            .into_iter()
            .find(|p| pass.partitions.binary_search(p).is_err())
        {
            None => Ok(()),
            Some(partition) => Err(BrokerError::NotAssigned {
                group: group.into(),
                topic: topic.name.clone(),
                member: member.member_id.clone(),
                partition,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(n: u32, members: &[(&str, &[u32])]) -> Vec<Vec<u32>> {
        let out = assign(n, members);
        let mut all: Vec<u32> = out.iter().flatten().copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..n).collect::<Vec<_>>(), "disjoint and covering: {out:?}");
        let (min, max) = (
            out.iter().map(Vec::len).min().unwrap_or(0),
            out.iter().map(Vec::len).max().unwrap_or(0),
        );
        assert!(max - min <= 1, "balanced: {out:?}");
        out
    }

    #[test]
    fn a_fresh_group_gets_ranges_in_id_order() {
        assert_eq!(run(4, &[("a", &[]), ("b", &[])]), [vec![0, 1], vec![2, 3]]);
        assert_eq!(
            run(5, &[("a", &[]), ("b", &[]), ("c", &[])]),
            [vec![0, 1], vec![2, 3], vec![4]]
        );
        assert_eq!(
            run(2, &[("a", &[]), ("b", &[]), ("c", &[])]),
            [vec![0], vec![1], vec![]]
        );
        assert!(assign(3, &[]).is_empty());
    }

    #[test]
    fn owners_keep_what_they_can() {
        // A third member joins: only one partition moves.
        assert_eq!(
            run(4, &[("a", &[]), ("b", &[0, 1]), ("c", &[2, 3])]),
            [vec![3], vec![0, 1], vec![2]]
        );
        // A member leaves: the others keep theirs and share its partitions.
        assert_eq!(run(4, &[("a", &[0]), ("c", &[3])]), [vec![0, 1], vec![2, 3]]);
        // Partitions that no longer exist, or that two members claim, are not kept twice.
        assert_eq!(run(2, &[("a", &[1, 5]), ("b", &[1])]), [vec![1], vec![0]]);
    }

    #[test]
    fn every_sequence_of_changes_stays_balanced_and_covering() {
        for n in 1..=9u32 {
            let mut members: Vec<(String, Vec<u32>)> = Vec::new();
            // Join five, then leave from the middle, checking each step; ids sort out of join order.
            for step in 0..9 {
                if step < 5 {
                    members.push((format!("m{}", (step * 3) % 5), Vec::new()));
                    members.sort();
                } else {
                    members.remove(members.len() / 2);
                }
                let view: Vec<(&str, &[u32])> = members
                    .iter()
                    .map(|(id, p)| (id.as_str(), p.as_slice()))
                    .collect();
                let before: Vec<Vec<u32>> = members.iter().map(|(_, p)| p.clone()).collect();
                let out = run(n, &view);
                // Sticky: nobody loses a partition while it is below its share.
                for (b, a) in before.iter().zip(&out) {
                    let lost = b.iter().filter(|p| !a.contains(p)).count();
                    assert!(lost == 0 || a.len() <= b.len(), "n={n}: {before:?} -> {out:?}");
                }
                for ((_, p), a) in members.iter_mut().zip(out) {
                    *p = a;
                }
            }
        }
    }
}
