//! The stream consumer: a member of a stream group (Kafka consumer group) on one topic.
//!
//! The server keeps the group's fetch position: each [`StreamConsumer::poll`] continues where the
//! group's last poll ended (after a server restart: from the committed offsets), over all partitions.
//! Committing is separate and explicit: commit after processing, and a restart re-delivers what was
//! polled and not committed (at-least-once).
//!
//! Two modes:
//! - **Whole group** (the default, before [`StreamConsumer::join`]): polls and commits act on the group
//!   as a whole, over all partitions; consumers of one group share its position, so two of them never
//!   get the same records from one position. The server refuses this mode (409 `group_has_members`)
//!   while the group has live members.
//! - **Member** (after [`StreamConsumer::join`]): the consumer is a member of the group with a
//!   `member_id` and a generation; the server shares the partitions out among live members and each poll
//!   reads only this member's partitions. When the group rebalances, the next poll is answered 409
//!   `stale_generation`; the consumer then heartbeats to learn its new partitions and polls again, by
//!   itself. If its session ended (404 `unknown_member`: no call for the session timeout, or a server
//!   restart), it joins again under the same id. A partition that changes owner restarts at the
//!   committed offset, so records polled and not committed before a rebalance are delivered again.
//!   A commit refused with 409 (`stale_generation`, `partition_not_assigned`) means those records may
//!   now belong to another member: do not retry it, poll again. Polls and commits keep the session
//!   alive; call [`StreamConsumer::heartbeat`] when processing takes longer than the session timeout
//!   (default 10 s, up to 300 s with [`StreamConsumer::set_session_timeout`]). Dropping a member without
//!   [`StreamConsumer::leave`] leaves its partitions idle until its session ends.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::admin::{GroupLag, GroupPartition, SeekTo};
use crate::error::{Error, Result};
use crate::http::{Verb, path, query, query_value};
use crate::record::{self, AsRecordId, Record, RecordId};
use crate::{Client, DEFAULT_MAX_BYTES};

/// A consumer of one topic in one stream group. Not shared: it remembers what it polled.
#[derive(Debug)]
pub struct StreamConsumer {
    client: Client,
    group: String,
    topic: String,
    max_bytes: usize,
    /// Per partition, the offset after the last record polled (what [`StreamConsumer::commit_polled`]
    /// commits).
    polled: BTreeMap<u32, u64>,
    /// Set by [`StreamConsumer::join`].
    member: Option<Membership>,
    session_timeout: Option<Duration>,
}

/// A member's view of its group, as the server answered its last join or heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    /// The member's id.
    pub member_id: String,
    /// The group's generation.
    pub generation: u64,
    /// The partitions assigned to this member in that generation, ascending.
    pub partitions: Vec<u32>,
}

#[derive(Serialize)]
struct JoinBody<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    member_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    session_timeout_ms: Option<u128>,
}

#[derive(Serialize)]
struct HeartbeatBody {
    generation: u64,
}

/// How often a poll may rejoin or heartbeat after a refusal before it gives up with the refusal.
const REFRESH_ATTEMPTS: usize = 3;

#[derive(Serialize, Deserialize)]
struct PartitionOffset {
    partition: u32,
    offset: u64,
}

#[derive(Serialize)]
struct CommitBody<'a> {
    offsets: &'a [PartitionOffset],
    #[serde(skip_serializing_if = "Option::is_none")]
    member_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    generation: Option<u64>,
}

#[derive(Serialize)]
struct SeekBody {
    to: SeekTo,
    #[serde(skip_serializing_if = "Option::is_none")]
    partition: Option<u32>,
}

#[derive(Deserialize)]
struct SeekAnswer {
    offsets: Vec<PartitionOffset>,
}

impl StreamConsumer {
    pub(crate) fn new(client: Client, group: &str, topic: &str) -> Self {
        Self {
            client,
            group: group.into(),
            topic: topic.into(),
            max_bytes: DEFAULT_MAX_BYTES,
            polled: BTreeMap::new(),
            member: None,
            session_timeout: None,
        }
    }

    /// The membership, once joined.
    pub fn membership(&self) -> Option<&Membership> {
        self.member.as_ref()
    }

    /// The session timeout asked for by later joins (the server's default, 10 s, when not set; the
    /// server takes 1 s..=300 s).
    pub fn set_session_timeout(&mut self, timeout: Duration) {
        self.session_timeout = Some(timeout);
    }

    /// Joins the group as a member (see the module docs); from now on polls read only this member's
    /// partitions. Joining again is a new session under the same id: its partitions restart at the
    /// committed offsets.
    ///
    /// # Errors
    /// [`Error::Api`]: `topic_not_found`, `invalid_name`, `out_of_range` for the session timeout.
    pub async fn join(&mut self) -> Result<&Membership> {
        let body = JoinBody {
            member_id: self.member.as_ref().map(|m| m.member_id.as_str()),
            session_timeout_ms: self.session_timeout.map(|t| t.as_millis()),
        };
        let joined: Membership = self
            .client
            .http
            .send_json(Verb::Post, &self.group_path("/members")?, &body)
            .await?;
        tracing::debug!(group = %self.group, topic = %self.topic, member = %joined.member_id,
            generation = joined.generation, partitions = ?joined.partitions, "joined stream group");
        // A new session starts from the committed offsets on every partition.
        self.polled.clear();
        Ok(self.member.insert(joined))
    }

    /// Keeps the member's session alive and learns the group's current generation and this member's
    /// partitions in it.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] before [`StreamConsumer::join`]; [`Error::Api`] `unknown_member` (404)
    /// when the session ended (join again).
    pub async fn heartbeat(&mut self) -> Result<&Membership> {
        let Some(member) = &self.member else {
            return Err(Error::invalid("member_id", "not a member: join first"));
        };
        let url = path(&[
            "/v1/groups/",
            &self.group,
            "/topics/",
            &self.topic,
            "/members/",
            &member.member_id,
            "/heartbeat",
        ])?;
        let now: Membership = self
            .client
            .http
            .send_json(
                Verb::Post,
                &url,
                &HeartbeatBody {
                    generation: member.generation,
                },
            )
            .await?;
        if now.generation != member.generation {
            tracing::debug!(group = %self.group, topic = %self.topic, member = %now.member_id,
                generation = now.generation, partitions = ?now.partitions, "stream group rebalanced");
        }
        // Partitions that moved away are no longer this member's to commit.
        self.polled.retain(|p, _| now.partitions.contains(p));
        Ok(self.member.insert(now))
    }

    /// Leaves the group: its partitions go to the other members at once.
    ///
    /// # Errors
    /// [`Error::Api`] `unknown_member` when the session had ended already (nothing to leave).
    pub async fn leave(self) -> Result<()> {
        let Some(member) = &self.member else {
            return Ok(());
        };
        let url = path(&[
            "/v1/groups/",
            &self.group,
            "/topics/",
            &self.topic,
            "/members/",
            &member.member_id,
        ])?;
        self.client.http.send_empty::<()>(Verb::Delete, &url, None).await
    }

    /// After a refusal of the membership: heartbeat (stale generation) or join again (session over).
    /// False if `error` is no such refusal.
    async fn refresh(&mut self, error: &Error) -> Result<bool> {
        match error.code() {
            Some("stale_generation") => match self.heartbeat().await {
                Ok(_) => Ok(true),
                Err(e) if e.code() == Some("unknown_member") => self.join().await.map(|_| true),
                Err(e) => Err(e),
            },
            Some("unknown_member") => self.join().await.map(|_| true),
            _ => Ok(false),
        }
    }

    /// The group.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// About how many bytes of keys and values one poll may return (default 1 MiB; at least one record
    /// comes back if any is there).
    pub fn set_max_bytes(&mut self, max_bytes: usize) {
        self.max_bytes = max_bytes;
    }

    fn group_path(&self, tail: &str) -> Result<String> {
        path(&["/v1/groups/", &self.group, "/topics/", &self.topic, tail])
    }

    /// The group's next records, up to `max_records` (1..=10000), waiting up to `max_wait` (at most
    /// 60 s) for the first one; empty if none came. Polled records are not committed. As a member, only
    /// from this member's partitions; a rebalance or an ended session is handled here (heartbeat or
    /// join, then poll again, up to 3 times).
    ///
    /// Not cancel-safe: the group's fetch position is kept by the server and moves when the server
    /// answers, even if the answer never reaches this consumer (a dropped future, a lost connection).
    /// Records of such a poll are skipped by the next poll; commit only records you received, and after
    /// an error or a cancelled poll `seek` to the committed offsets (or leave and join again as a member,
    /// which restarts from them) to get them again.
    ///
    /// # Errors
    /// [`Error::Api`]: `topic_not_found`, `invalid_name` for the group, `out_of_range` for a limit,
    /// `group_has_members` (409) without [`StreamConsumer::join`] while the group has live members.
    pub async fn poll(&mut self, max_records: usize, max_wait: Duration) -> Result<Vec<Record>> {
        let mut attempt = 0;
        loop {
            match self.poll_once(max_records, max_wait).await {
                Err(e) if self.member.is_some() && attempt < REFRESH_ATTEMPTS => {
                    attempt += 1;
                    if !self.refresh(&e).await? {
                        return Err(e);
                    }
                }
                other => return other,
            }
        }
    }

    async fn poll_once(&mut self, max_records: usize, max_wait: Duration) -> Result<Vec<Record>> {
        let mut params = vec![
            ("max_records", max_records.to_string()),
            ("max_bytes", self.max_bytes.to_string()),
            ("max_wait_ms", max_wait.as_millis().to_string()),
        ];
        if let Some(m) = &self.member {
            params.push(("member_id", query_value(&m.member_id)));
            params.push(("generation", m.generation.to_string()));
        }
        let url = self.group_path("/records")? + &query(&params);
        let answer = self.client.http.send(Verb::Get, &url, None, max_wait).await?;
        let records = record::parse_fetched(&answer.body).map_err(|m| answer.protocol(m))?;
        for r in &records {
            let next = self.polled.entry(r.partition).or_insert(0);
            *next = (*next).max(r.offset + 1);
        }
        Ok(records)
    }

    /// Commits, per partition, the offset after the highest of `records`: the group resumes after them.
    /// Nothing is sent when `records` is empty.
    ///
    /// # Errors
    /// [`Error::Api`]: `topic_not_found`, `partition_not_found`, `offset_out_of_range`.
    pub async fn commit<R: AsRecordId>(&mut self, records: &[R]) -> Result<()> {
        let mut next: BTreeMap<u32, u64> = BTreeMap::new();
        for r in records {
            let RecordId { partition, offset } = r.record_id();
            let e = next.entry(partition).or_insert(0);
            *e = (*e).max(offset + 1);
        }
        let offsets: Vec<(u32, u64)> = next.into_iter().collect();
        self.commit_offsets(&offsets).await
    }

    /// Commits everything polled so far by this consumer.
    ///
    /// # Errors
    /// As [`StreamConsumer::commit`].
    pub async fn commit_polled(&mut self) -> Result<()> {
        let offsets: Vec<(u32, u64)> = self.polled.iter().map(|(p, o)| (*p, *o)).collect();
        self.commit_offsets(&offsets).await
    }

    /// Commits `(partition, next offset to process)` pairs as they are (an offset may move back). Nothing
    /// is sent when `offsets` is empty. A member commits in its current generation, only its partitions.
    ///
    /// # Errors
    /// As [`StreamConsumer::commit`].
    pub async fn commit_offsets(&self, offsets: &[(u32, u64)]) -> Result<()> {
        if offsets.is_empty() {
            return Ok(());
        }
        let offsets: Vec<PartitionOffset> = offsets
            .iter()
            .map(|&(partition, offset)| PartitionOffset { partition, offset })
            .collect();
        self.client
            .http
            .send_empty(
                Verb::Post,
                &self.group_path("/offsets")?,
                Some(&CommitBody {
                    offsets: &offsets,
                    member_id: self.member.as_ref().map(|m| m.member_id.as_str()),
                    generation: self.member.as_ref().map(|m| m.generation),
                }),
            )
            .await
    }

    /// Moves the group on every partition and commits the new offsets; the next poll starts there.
    /// Answers with `(partition, offset)` per partition. The server takes a seek only while the group has
    /// no live members.
    ///
    /// # Errors
    /// [`Error::Api`]: `topic_not_found`, `offset_out_of_range` (field `to.offset`),
    /// `group_has_members` (409).
    pub async fn seek(&mut self, to: SeekTo) -> Result<Vec<(u32, u64)>> {
        self.seek_inner(to, None).await
    }

    /// As [`StreamConsumer::seek`], for one partition.
    ///
    /// # Errors
    /// As [`StreamConsumer::seek`], and `partition_not_found`.
    pub async fn seek_partition(&mut self, partition: u32, to: SeekTo) -> Result<u64> {
        let moved = self.seek_inner(to, Some(partition)).await?;
        moved
            .into_iter()
            .find(|(p, _)| *p == partition)
            .map(|(_, o)| o)
            .ok_or_else(|| Error::Protocol {
                method: "POST",
                url: format!(
                    "{}{}",
                    self.client.url(),
                    self.group_path("/seek").unwrap_or_default()
                ),
                status: 200,
                message: format!("the answer does not name partition {partition}"),
            })
    }

    async fn seek_inner(&mut self, to: SeekTo, partition: Option<u32>) -> Result<Vec<(u32, u64)>> {
        let answer: SeekAnswer = self
            .client
            .http
            .send_json(
                Verb::Post,
                &self.group_path("/seek")?,
                &SeekBody { to, partition },
            )
            .await?;
        let moved: Vec<(u32, u64)> = answer
            .offsets
            .into_iter()
            .map(|o| (o.partition, o.offset))
            .collect();
        for (p, o) in &moved {
            self.polled.insert(*p, *o);
        }
        Ok(moved)
    }

    /// The group's committed offsets and lag per partition. Before the group's first commit, every
    /// record still stored counts as lag (`committed` is `None`).
    ///
    /// # Errors
    /// [`Error::Api`] `topic_not_found`.
    pub async fn lag(&self) -> Result<GroupLag> {
        match self
            .client
            .http
            .get::<GroupLag>(&self.group_path("/offsets")?)
            .await
        {
            Err(e) if e.code() == Some("group_not_found") => {
                let topic = self.client.describe_topic(&self.topic).await?;
                let partitions: Vec<GroupPartition> = topic
                    .partitions
                    .iter()
                    .map(|p| GroupPartition {
                        partition: p.partition,
                        committed: None,
                        start_offset: p.start_offset,
                        next_offset: p.next_offset,
                        lag: p.next_offset.saturating_sub(p.start_offset),
                    })
                    .collect();
                Ok(GroupLag {
                    group: self.group.clone(),
                    topic: self.topic.clone(),
                    lag: partitions.iter().map(|p| p.lag).sum(),
                    generation: 0,
                    members: Vec::new(),
                    partitions,
                })
            }
            other => other,
        }
    }
}
