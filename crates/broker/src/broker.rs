//! The embedded broker: topics of partitioned logs, publishing, fetching, stream-group offsets.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use ferry_log::{FsyncPolicy, Header, Log, LogConfig, LogObserver, LogOptions, NewRecord, SystemClock};
use serde::Serialize;
use tokio::sync::{Notify, oneshot};

use crate::config::TopicConfig;
use crate::error::{BrokerError, Result};
use crate::membership::MemberRef;
use crate::meta::{MetaEvent, MetaState};
use crate::names::validate_name;
use crate::stats::BrokerOptions;

/// A record to publish.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Produce {
    /// With a key, the record goes to partition `fnv1a64(key) % partitions`.
    pub key: Option<Bytes>,
    /// Headers, in order.
    pub headers: Vec<Header>,
    /// The payload.
    pub value: Bytes,
    /// Milliseconds since the Unix epoch; `None` means now.
    pub timestamp: Option<i64>,
    /// An explicit partition overrides the key.
    pub partition: Option<u32>,
}

/// Where a published record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct Produced {
    /// Partition.
    pub partition: u32,
    /// Offset in the partition.
    pub offset: u64,
}

/// A record read back, with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    /// Partition.
    pub partition: u32,
    /// Offset in the partition.
    pub offset: u64,
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
    /// Key, if any.
    pub key: Option<Bytes>,
    /// Headers, in order.
    pub headers: Vec<Header>,
    /// The payload.
    pub value: Bytes,
}

/// How much one fetch may return and how long it may wait for the first record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchLimits {
    /// At most this many records (>= 1).
    pub max_records: usize,
    /// About this many bytes of keys and values (at least one record is returned if any is there).
    pub max_bytes: usize,
    /// Wait up to this long when nothing is there yet (long-poll).
    pub max_wait: Duration,
}

impl Default for FetchLimits {
    fn default() -> Self {
        Self {
            max_records: 500,
            max_bytes: 1024 * 1024,
            max_wait: Duration::ZERO,
        }
    }
}

/// The state of one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct PartitionInfo {
    /// Partition number.
    pub partition: u32,
    /// First offset still stored.
    pub start_offset: u64,
    /// Offset the next record gets.
    pub next_offset: u64,
    /// Bytes on disk.
    pub size_bytes: u64,
    /// Segment files.
    pub segments: usize,
}

/// A topic and its partitions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct TopicInfo {
    /// Name.
    pub name: String,
    /// Settings.
    pub config: TopicConfig,
    /// Per-partition state.
    pub partitions: Vec<PartitionInfo>,
}

/// A stream group's position on one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct GroupPartition {
    /// Partition.
    pub partition: u32,
    /// Committed offset: the next record the group will process; `None` before the first commit.
    pub committed: Option<u64>,
    /// First offset still stored.
    pub start_offset: u64,
    /// Offset the next record gets.
    pub next_offset: u64,
    /// Records between the committed offset (or the start) and the end.
    pub lag: u64,
}

/// Where `seek` moves a stream group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeekTo {
    /// The first offset still stored.
    Earliest,
    /// The end: only records published from now on.
    Latest,
    /// An exact offset (clamped to nothing; out of range is an error).
    Offset(u64),
    /// The first record with a timestamp at or after this (ms since the epoch); the end if none.
    Timestamp(i64),
}

pub(crate) struct Topic {
    pub name: String,
    pub id: u64,
    pub config: TopicConfig,
    pub partitions: Vec<Arc<Log>>,
    /// Woken whenever any partition commits records, and when a queue record becomes available again.
    pub notify: Arc<Notify>,
    pub round_robin: AtomicU32,
}

/// Wakes the topic's waiting fetches on every commit, and passes the log's events on to the observer of
/// [`BrokerOptions`].
struct Wake(Arc<Notify>, Option<Arc<dyn LogObserver>>);

impl LogObserver for Wake {
    fn committed(&self, next_offset: u64) {
        self.0.notify_waiters();
        if let Some(o) = &self.1 {
            o.committed(next_offset);
        }
    }

    fn fsynced(&self, took: Duration) {
        if let Some(o) = &self.1 {
            o.fsynced(took);
        }
    }
}

#[derive(Default)]
pub(crate) struct State {
    pub meta: MetaState,
    pub topics: HashMap<String, Arc<Topic>>,
    /// Leases and delays of queue groups (not durable: after a restart every leased record is available).
    pub queues: HashMap<GroupKey, crate::queue::QueueRuntime>,
    /// Compiled filter policies of subscriptions: (group, topic) -> policy.
    pub filters: HashMap<GroupKey, Arc<crate::filter::FilterPolicy>>,
    /// In-memory fetch positions of stream groups: (group, topic) -> partition -> next offset to fetch.
    pub positions: HashMap<(String, String), BTreeMap<u32, u64>>,
    /// Live members of stream groups (not durable: members join again after a restart).
    pub members: HashMap<GroupKey, crate::membership::Group>,
}

/// (group, topic).
pub(crate) type GroupKey = (String, String);

pub(crate) struct Inner {
    pub dir: PathBuf,
    pub meta_log: Log,
    pub state: Arc<Mutex<State>>,
    /// Serialises topic creation and deletion.
    admin: tokio::sync::Mutex<()>,
    /// Serialises fetches of one stream group on one topic, so two fetches never hand out the same records.
    group_locks: Mutex<HashMap<GroupKey, Arc<tokio::sync::Mutex<()>>>>,
    /// Given to every topic log ([`BrokerOptions::observer`]).
    observer: Option<Arc<dyn LogObserver>>,
}

/// The embedded broker. Cheap to clone; every clone is the same broker.
#[derive(Clone)]
pub struct Broker {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker").field("dir", &self.inner.dir).finish()
    }
}

fn topic_dir(data: &Path, name: &str, id: u64) -> PathBuf {
    data.join("topics").join(format!("{name}.{id}"))
}

fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The partition a key maps to: FNV-1a (64 bit) of the key bytes modulo the partition count. Stable
/// across versions and platforms, so a key keeps its partition.
pub fn partition_for_key(key: &[u8], partitions: u32) -> u32 {
    (fnv1a64(key) % u64::from(partitions)) as u32
}

pub(crate) fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

impl Broker {
    /// Opens the broker in `dir` (created if missing): replays the metadata, opens every partition
    /// (recovering torn tails), and removes directories of deleted topics.
    ///
    /// # Errors
    /// [`BrokerError::Storage`] or [`BrokerError::Metadata`] when the data directory cannot be used.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(dir, BrokerOptions::default())
    }

    /// [`Broker::open`] with options: an observer of every topic log.
    ///
    /// # Errors
    /// As [`Broker::open`].
    pub fn open_with(dir: impl AsRef<Path>, options: BrokerOptions) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        let meta_config = LogConfig {
            fsync: FsyncPolicy::Always,
            retention_age: None,
            segment_age: None,
            segment_bytes: 64 * 1024 * 1024,
            // One event or snapshot is one batch: let a large snapshot through.
            max_batch_bytes: ferry_log::MAX_BATCH_LEN,
            ..LogConfig::default()
        };
        fs::create_dir_all(&dir).map_err(|e| BrokerError::Metadata(format!("{}: {e}", dir.display())))?;
        finish_meta_swap(&dir)?;
        let mut meta_log = Log::open(dir.join("meta"), meta_config.clone())?;
        let mut meta = replay(&meta_log)?;
        let mut topics = HashMap::new();
        let observer = options.observer.as_ref();
        for (name, (id, config)) in &meta.topics {
            let topic = open_topic(&dir, name, *id, config, observer)?;
            topics.insert(name.clone(), Arc::new(topic));
        }
        let cut = cut_bookkeeping_to_log_ends(&mut meta, &topics);
        if cut || meta_log.next_offset() - meta_log.start_offset() > META_COMPACT_EVENTS {
            // Replaying grows with the number of events: start from one snapshot instead. A cut is
            // written down the same way, before anything new is appended at the offsets it freed.
            drop(meta_log);
            compact_meta(&dir, &meta, &meta_config)?;
            meta_log = Log::open(dir.join("meta"), meta_config)?;
        }
        remove_stray_topic_dirs(&dir, &meta);
        let state = State {
            filters: crate::subscription::compile_filters(&meta.subscriptions),
            meta,
            topics,
            queues: HashMap::new(),
            positions: HashMap::new(),
            members: HashMap::new(),
        };
        Ok(Self {
            inner: Arc::new(Inner {
                dir,
                meta_log,
                state: Arc::new(Mutex::new(state)),
                admin: tokio::sync::Mutex::new(()),
                group_locks: Mutex::new(HashMap::new()),
                observer: options.observer,
            }),
        })
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Appends a metadata event durably (fsync before it completes) and applies it to the in-memory
    /// state in log order.
    pub(crate) async fn commit_meta(&self, event: MetaEvent) -> Result<()> {
        self.commit_meta_as(event, FsyncPolicy::Always).await
    }

    /// [`Broker::commit_meta`] for an event that needs only `policy`: a queue group's deliveries and
    /// acknowledgements, and a stream group's offsets, are as durable as their topic's records
    /// (`Topic::config.fsync`), no more. Under `interval`, an ack does not wait for an fsync of the
    /// metadata log (the topic's own records did not either); a crash may lose the last interval's
    /// bookkeeping, so those records are delivered again (at least once), never lost. The log's order
    /// holds: such an event is on disk no later than any durable event appended after it.
    pub(crate) async fn commit_meta_as(&self, event: MetaEvent, policy: FsyncPolicy) -> Result<()> {
        let value = serde_json::to_vec(&event).map_err(|e| BrokerError::Metadata(e.to_string()))?;
        let batch = self.inner.meta_log.encode(&[NewRecord::value(value)])?;
        let (tx, rx) = oneshot::channel();
        let state = self.inner.state.clone();
        self.inner
            .meta_log
            .append_encoded_as(batch, policy, move |result| {
                if result.is_ok() {
                    lock(&state).meta.apply(&event);
                }
                let _ = tx.send(result);
            });
        rx.await.map_err(|_| BrokerError::ShuttingDown)??;
        Ok(())
    }

    pub(crate) fn topic(&self, name: &str) -> Result<Arc<Topic>> {
        validate_name("topic", name)?;
        lock(&self.inner.state)
            .topics
            .get(name)
            .cloned()
            .ok_or_else(|| BrokerError::TopicNotFound(name.into()))
    }

    /// Creates a topic.
    ///
    /// # Errors
    /// [`BrokerError::InvalidName`], [`BrokerError::InvalidConfig`], [`BrokerError::TopicExists`].
    pub async fn create_topic(&self, name: &str, config: TopicConfig) -> Result<TopicInfo> {
        validate_name("name", name)?;
        config.validate()?;
        let _admin = self.inner.admin.lock().await;
        let id = {
            let state = lock(&self.inner.state);
            if state.topics.contains_key(name) {
                return Err(BrokerError::TopicExists(name.into()));
            }
            state.meta.next_topic_id
        };
        self.commit_meta(MetaEvent::TopicCreated {
            name: name.into(),
            id,
            config: config.clone(),
        })
        .await?;
        let dir = self.inner.dir.clone();
        let (n, c) = (name.to_string(), config);
        let observer = self.inner.observer.clone();
        let topic = tokio::task::spawn_blocking(move || open_topic(&dir, &n, id, &c, observer.as_ref()))
            .await
            .map_err(|e| BrokerError::Metadata(e.to_string()))??;
        let topic = Arc::new(topic);
        lock(&self.inner.state).topics.insert(name.into(), topic.clone());
        tracing::info!(topic = name, partitions = topic.partitions.len(), "topic created");
        Ok(describe(&topic))
    }

    /// Deletes a topic, its records and its groups' offsets.
    ///
    /// # Errors
    /// [`BrokerError::TopicNotFound`].
    pub async fn delete_topic(&self, name: &str) -> Result<()> {
        let _admin = self.inner.admin.lock().await;
        let topic = self.topic(name)?;
        self.commit_meta(MetaEvent::TopicDeleted { name: name.into() })
            .await?;
        {
            let mut state = lock(&self.inner.state);
            state.topics.remove(name);
            // Everything in memory about the topic's groups goes with it, so a topic created again
            // under the name starts clean: no filters of old subscriptions, no leases of old records.
            state.positions.retain(|(_, t), _| t != name);
            state.queues.retain(|(_, t), _| t != name);
            state.filters.retain(|(_, t), _| t != name);
        }
        let dir = topic_dir(&self.inner.dir, &topic.name, topic.id);
        drop(topic);
        // Readers still holding a partition keep their open files; the names go now.
        if let Err(e) = tokio::task::spawn_blocking(move || fs::remove_dir_all(&dir))
            .await
            .unwrap_or(Ok(()))
        {
            tracing::warn!(topic = name, error = %e, "could not remove the deleted topic's files; they go at the next start");
        }
        tracing::info!(topic = name, "topic deleted");
        Ok(())
    }

    /// Every topic, by name.
    pub fn list_topics(&self) -> Vec<TopicInfo> {
        let mut topics: Vec<_> = lock(&self.inner.state).topics.values().cloned().collect();
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        topics.iter().map(|t| describe(t)).collect()
    }

    /// One topic.
    ///
    /// # Errors
    /// [`BrokerError::TopicNotFound`].
    pub fn describe_topic(&self, name: &str) -> Result<TopicInfo> {
        Ok(describe(&*self.topic(name)?))
    }

    /// Publishes records; returns, in the same order, where each landed, once all are durable under the
    /// topic's fsync policy. Records for the same partition are written as one batch.
    ///
    /// # Errors
    /// [`BrokerError::TopicNotFound`], [`BrokerError::PartitionNotFound`], [`BrokerError::RecordTooLarge`],
    /// [`BrokerError::Storage`]. Nothing is written when any record is refused.
    pub async fn publish(&self, topic: &str, records: Vec<Produce>) -> Result<Vec<Produced>> {
        self.publish_enqueue(topic, records)?.await
    }

    /// [`Broker::publish`] in two steps: checks the records and queues them for their partitions' writers
    /// now, in the caller's order; the future it returns waits until all are durable. Two calls on one
    /// partition are appended in the order of the calls, whenever their futures are awaited: what a
    /// connection pipelining publishes needs.
    ///
    /// # Errors
    /// As [`Broker::publish`]; refused records are refused here, storage failures come from the future.
    pub fn publish_enqueue(
        &self,
        topic: &str,
        records: Vec<Produce>,
    ) -> Result<impl Future<Output = Result<Vec<Produced>>> + Send + 'static + use<>> {
        let topic = self.topic(topic)?;
        let total = records.len();
        let n = topic.partitions.len() as u32;
        let max = topic.config.max_record_bytes as usize;
        let mut by_partition: BTreeMap<u32, (Vec<usize>, Vec<NewRecord>)> = BTreeMap::new();
        for (i, r) in records.into_iter().enumerate() {
            let size = r.value.len()
                + r.key.as_ref().map_or(0, Bytes::len)
                + r.headers
                    .iter()
                    .map(|h| h.key.len() + h.value.len())
                    .sum::<usize>();
            if size > max {
                return Err(BrokerError::RecordTooLarge { size, max });
            }
            let partition = match (r.partition, &r.key) {
                (Some(p), _) if p >= n => {
                    return Err(BrokerError::PartitionNotFound {
                        topic: topic.name.clone(),
                        partition: p,
                        partitions: n,
                    });
                }
                (Some(p), _) => p,
                (None, Some(key)) => partition_for_key(key, n),
                (None, None) => topic.round_robin.fetch_add(1, Ordering::Relaxed) % n,
            };
            let entry = by_partition.entry(partition).or_default();
            entry.0.push(i);
            entry.1.push(NewRecord {
                timestamp: r.timestamp,
                key: r.key,
                headers: r.headers,
                value: r.value,
            });
        }
        let mut pending = Vec::with_capacity(by_partition.len());
        for (partition, (indexes, batch)) in by_partition {
            let log = &topic.partitions[partition as usize];
            let encoded = log.encode(&batch)?;
            let (tx, rx) = oneshot::channel();
            log.append_encoded(encoded, move |r| {
                let _ = tx.send(r);
            });
            pending.push((partition, indexes, rx));
        }
        Ok(async move {
            let mut out = vec![
                Produced {
                    partition: 0,
                    offset: 0
                };
                total
            ];
            for (partition, indexes, rx) in pending {
                let appended = rx.await.map_err(|_| BrokerError::ShuttingDown)??;
                for (k, i) in indexes.into_iter().enumerate() {
                    out[i] = Produced {
                        partition,
                        offset: appended.base_offset + k as u64,
                    };
                }
            }
            Ok(out)
        })
    }

    /// Reads records of one partition from `offset`, waiting up to `limits.max_wait` for the first one.
    ///
    /// # Errors
    /// [`BrokerError::TopicNotFound`], [`BrokerError::PartitionNotFound`], [`BrokerError::OffsetOutOfRange`].
    pub async fn fetch(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        limits: FetchLimits,
    ) -> Result<Vec<StoredRecord>> {
        let topic = self.topic(topic)?;
        let log = partition_log(&topic, partition)?;
        let deadline = tokio::time::Instant::now() + limits.max_wait;
        loop {
            let notified = topic.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if log.next_offset() != offset || limits.max_wait.is_zero() {
                break;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                break;
            }
        }
        read_partition(&topic, partition, log, offset, limits).await
    }

    pub(crate) fn group_lock(&self, group: &str, topic: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.inner.group_locks.lock().unwrap_or_else(|e| e.into_inner());
        locks.entry((group.into(), topic.into())).or_default().clone()
    }

    /// Fetches the next records for a stream group as a whole: [`Broker::group_fetch_as`] without a
    /// member.
    ///
    /// # Errors
    /// As [`Broker::group_fetch_as`].
    pub async fn group_fetch(
        &self,
        group: &str,
        topic: &str,
        limits: FetchLimits,
    ) -> Result<Vec<StoredRecord>> {
        self.group_fetch_as(group, topic, None, limits).await
    }

    /// Fetches the next records for a stream group, from where its last fetch ended (after a restart or
    /// a move of the partition to another member: from its committed offsets; before its first commit:
    /// from the earliest record), waiting up to `limits.max_wait` for the first one. Without a `member`
    /// it reads all partitions, which is taken only while the group has no live members; with one, only
    /// the partitions assigned to it in its generation (see [`Broker::join`]). Records are handed out once
    /// per fetch position; commit them with [`Broker::commit_as`] once processed.
    ///
    /// # Errors
    /// [`BrokerError::InvalidName`], [`BrokerError::TopicNotFound`], [`BrokerError::Storage`]; with a
    /// member, [`BrokerError::UnknownMember`] and [`BrokerError::StaleGeneration`] (also when the group
    /// is rebalanced while the fetch waits or reads: what it read is then not handed out); without,
    /// [`BrokerError::GroupHasMembers`].
    pub async fn group_fetch_as(
        &self,
        group: &str,
        topic: &str,
        member: Option<&MemberRef>,
        limits: FetchLimits,
    ) -> Result<Vec<StoredRecord>> {
        validate_name("group", group)?;
        let topic = self.topic(topic)?;
        let fetch_lock = self.fetch_lock(group, &topic, member)?;
        let _guard = fetch_lock.lock().await;
        let filter = self.filter_for(group, &topic.name);
        let deadline = tokio::time::Instant::now() + limits.max_wait;
        loop {
            let notified = topic.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let pass = self.fetch_pass(group, &topic, member)?;
            let positions = self.positions(group, &topic);
            let mut out = Vec::new();
            let mut moved = Vec::new();
            let mut bytes = 0;
            let n = pass.partitions.len();
            let first = topic.round_robin.load(Ordering::Relaxed) as usize % n.max(1);
            for k in 0..n {
                let p = pass.partitions[(first + k) % n];
                let log = &topic.partitions[p as usize];
                let pos = positions[p as usize];
                if pos >= log.next_offset() || out.len() >= limits.max_records || bytes >= limits.max_bytes {
                    continue;
                }
                let part_limits = FetchLimits {
                    max_records: limits.max_records - out.len(),
                    max_bytes: limits.max_bytes - bytes,
                    max_wait: Duration::ZERO,
                };
                let records = match read_partition(&topic, p, log.clone(), pos, part_limits).await {
                    Err(BrokerError::OffsetOutOfRange { start, .. }) if pos < start => {
                        // Retention overtook the group: continue at the oldest record still there.
                        tracing::warn!(group, topic = %topic.name, partition = p, from = pos, to = start,
                            "stream group position was deleted by retention; skipping to the log start");
                        moved.push((p, start));
                        continue;
                    }
                    r => r?,
                };
                if let Some(last) = records.last() {
                    moved.push((p, last.offset + 1));
                }
                let records: Vec<StoredRecord> = match &filter {
                    Some(f) => records
                        .into_iter()
                        .filter(|r| f.matches(&r.headers, &r.value))
                        .collect(),
                    None => records,
                };
                bytes += records
                    .iter()
                    .map(|r| r.value.len() + r.key.as_ref().map_or(0, Bytes::len))
                    .sum::<usize>();
                out.extend(records);
            }
            if !self.advance_positions(group, &topic, member, pass.generation, &moved) {
                // Rebalanced while reading: hand nothing out. The next pass says why (a stale
                // generation), or reads again from the positions the rebalance reset.
                continue;
            }
            if !out.is_empty() {
                return Ok(out);
            }
            if !moved.is_empty() {
                // Records were read and a subscription's filter dropped them all: read on at once
                // rather than wait for a publish, or a backlog would be crossed one pass per wake-up.
                continue;
            }
            if limits.max_wait.is_zero() {
                return Ok(out);
            }
            // Wake at a session's end too, so a dead member's partitions move while others wait.
            let wake = pass.wake.map_or(deadline, |w| w.min(deadline));
            if tokio::time::timeout_at(wake, notified).await.is_err() && wake >= deadline {
                return Ok(out);
            }
        }
    }

    /// The group's fetch position per partition.
    fn positions(&self, group: &str, topic: &Topic) -> Vec<u64> {
        let state = lock(&self.inner.state);
        let key = (group.to_string(), topic.name.clone());
        let positions = state.positions.get(&key);
        let committed = state.meta.offsets.get(&key);
        (0..topic.partitions.len() as u32)
            .map(|p| {
                positions
                    .and_then(|m| m.get(&p))
                    .or_else(|| committed.and_then(|m| m.get(&p)))
                    .copied()
                    .unwrap_or_else(|| topic.partitions[p as usize].start_offset())
            })
            .collect()
    }

    fn set_position(&self, group: &str, topic: &str, partition: u32, offset: u64) {
        lock(&self.inner.state)
            .positions
            .entry((group.into(), topic.into()))
            .or_default()
            .insert(partition, offset);
    }

    /// Commits a stream group's offsets as the group as a whole: [`Broker::commit_as`] without a member.
    ///
    /// # Errors
    /// As [`Broker::commit_as`].
    pub async fn commit(&self, group: &str, topic: &str, offsets: &[(u32, u64)]) -> Result<()> {
        self.commit_as(group, topic, None, offsets).await
    }

    /// Commits a stream group's offsets (the next offset to process, per partition), durably. Without a
    /// `member` only while the group has no live members; with one, only for partitions assigned to it
    /// in the group's current generation (fencing: a member that lost a partition cannot move it).
    ///
    /// # Errors
    /// [`BrokerError::InvalidName`], [`BrokerError::TopicNotFound`], [`BrokerError::PartitionNotFound`],
    /// [`BrokerError::OffsetOutOfRange`] for an offset past the end; with a member,
    /// [`BrokerError::UnknownMember`], [`BrokerError::StaleGeneration`], [`BrokerError::NotAssigned`];
    /// without, [`BrokerError::GroupHasMembers`].
    pub async fn commit_as(
        &self,
        group: &str,
        topic: &str,
        member: Option<&MemberRef>,
        offsets: &[(u32, u64)],
    ) -> Result<()> {
        validate_name("group", group)?;
        let topic = self.topic(topic)?;
        if offsets.is_empty() {
            return Err(BrokerError::InvalidArgument {
                field: "offsets",
                message: "must not be empty".into(),
            });
        }
        let mut map = BTreeMap::new();
        for &(partition, offset) in offsets {
            let log = partition_log(&topic, partition)?;
            let end = log.next_offset();
            if offset > end {
                return Err(BrokerError::OffsetOutOfRange {
                    topic: topic.name.clone(),
                    partition,
                    offset,
                    start: log.start_offset(),
                    end,
                });
            }
            map.insert(partition, offset);
        }
        self.check_commit(group, &topic, member, map.keys().copied())?;
        self.commit_meta_as(
            MetaEvent::OffsetsCommitted {
                group: group.into(),
                topic: topic.name.clone(),
                offsets: map.into_iter().collect(),
            },
            topic.config.fsync,
        )
        .await
    }

    /// Moves a stream group (all partitions, or one) and commits the new offsets. Only while the group
    /// has no live members (as Kafka's offset reset): members would race the move with their commits.
    ///
    /// # Errors
    /// As [`Broker::commit`], so [`BrokerError::GroupHasMembers`] while the group has live members.
    pub async fn seek(
        &self,
        group: &str,
        topic: &str,
        partition: Option<u32>,
        to: SeekTo,
    ) -> Result<Vec<(u32, u64)>> {
        validate_name("group", group)?;
        let t = self.topic(topic)?;
        let parts: Vec<u32> = match partition {
            Some(p) => {
                partition_log(&t, p)?;
                vec![p]
            }
            None => (0..t.partitions.len() as u32).collect(),
        };
        let mut offsets = Vec::with_capacity(parts.len());
        for p in parts {
            let log = t.partitions[p as usize].clone();
            let offset = match to {
                SeekTo::Earliest => log.start_offset(),
                SeekTo::Latest => log.next_offset(),
                SeekTo::Offset(o) => {
                    if o < log.start_offset() || o > log.next_offset() {
                        return Err(BrokerError::OffsetOutOfRange {
                            topic: t.name.clone(),
                            partition: p,
                            offset: o,
                            start: log.start_offset(),
                            end: log.next_offset(),
                        });
                    }
                    o
                }
                SeekTo::Timestamp(ts) => {
                    let l = log.clone();
                    tokio::task::spawn_blocking(move || l.offset_for_timestamp(ts))
                        .await
                        .map_err(|e| BrokerError::Metadata(e.to_string()))??
                        .unwrap_or_else(|| log.next_offset())
                }
            };
            offsets.push((p, offset));
        }
        let group_lock = self.group_lock(group, &t.name);
        let _guard = group_lock.lock().await;
        self.commit(group, topic, &offsets).await?;
        for &(p, o) in &offsets {
            self.set_position(group, &t.name, p, o);
        }
        Ok(offsets)
    }

    /// A stream group's committed offsets and lag per partition.
    ///
    /// # Errors
    /// [`BrokerError::TopicNotFound`], [`BrokerError::GroupNotFound`] when the group never committed on
    /// this topic.
    pub fn group_offsets(&self, group: &str, topic: &str) -> Result<Vec<GroupPartition>> {
        validate_name("group", group)?;
        let t = self.topic(topic)?;
        let committed = lock(&self.inner.state)
            .meta
            .offsets
            .get(&(group.to_string(), t.name.clone()))
            .cloned();
        let Some(committed) = committed else {
            return Err(BrokerError::GroupNotFound {
                group: group.into(),
                topic: t.name.clone(),
            });
        };
        Ok(t.partitions
            .iter()
            .enumerate()
            .map(|(p, log)| {
                let c = committed.get(&(p as u32)).copied();
                let (start, end) = (log.start_offset(), log.next_offset());
                GroupPartition {
                    partition: p as u32,
                    committed: c,
                    start_offset: start,
                    next_offset: end,
                    lag: end - c.unwrap_or(start).clamp(start, end),
                }
            })
            .collect())
    }
}

pub(crate) fn partition_log(topic: &Topic, partition: u32) -> Result<Arc<Log>> {
    topic
        .partitions
        .get(partition as usize)
        .cloned()
        .ok_or_else(|| BrokerError::PartitionNotFound {
            topic: topic.name.clone(),
            partition,
            partitions: topic.partitions.len() as u32,
        })
}

pub(crate) async fn read_partition(
    topic: &Topic,
    partition: u32,
    log: Arc<Log>,
    offset: u64,
    limits: FetchLimits,
) -> Result<Vec<StoredRecord>> {
    let (max_records, max_bytes) = (limits.max_records.max(1), limits.max_bytes);
    // A caught-up reader's records were just written and are a short copy from the page cache: read
    // them here, without the two thread hops of a blocking task (end-to-end latency). Anything else may
    // wait for the disk, on a blocking thread.
    let read = if log.is_hot(offset) {
        log.read_records(offset, max_records, max_bytes)
    } else {
        tokio::task::spawn_blocking(move || log.read_records(offset, max_records, max_bytes))
            .await
            .map_err(|e| BrokerError::Metadata(e.to_string()))?
    };
    let records = match read {
        Ok(r) => r,
        Err(ferry_log::Error::OffsetOutOfRange { offset, start, end }) => {
            return Err(BrokerError::OffsetOutOfRange {
                topic: topic.name.clone(),
                partition,
                offset,
                start,
                end,
            });
        }
        Err(e) => return Err(e.into()),
    };
    Ok(records
        .into_iter()
        .map(|r| StoredRecord {
            partition,
            offset: r.offset,
            timestamp: r.timestamp,
            key: r.key,
            headers: r.headers,
            value: r.value,
        })
        .collect())
}

fn describe(topic: &Topic) -> TopicInfo {
    TopicInfo {
        name: topic.name.clone(),
        config: topic.config.clone(),
        partitions: topic
            .partitions
            .iter()
            .enumerate()
            .map(|(p, log)| PartitionInfo {
                partition: p as u32,
                start_offset: log.start_offset(),
                next_offset: log.next_offset(),
                size_bytes: log.size_bytes(),
                segments: log.segment_count(),
            })
            .collect(),
    }
}

fn open_topic(
    data: &Path,
    name: &str,
    id: u64,
    config: &TopicConfig,
    observer: Option<&Arc<dyn LogObserver>>,
) -> Result<Topic> {
    let dir = topic_dir(data, name, id);
    let notify = Arc::new(Notify::new());
    let partitions = (0..config.partitions)
        .map(|p| {
            let options = LogOptions {
                config: config.log_config(),
                clock: Arc::new(SystemClock),
                observer: Some(Arc::new(Wake(notify.clone(), observer.cloned()))),
            };
            Log::open_with(dir.join(p.to_string()), options).map(Arc::new)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Topic {
        name: name.into(),
        id,
        config: config.clone(),
        partitions,
        notify,
        round_robin: AtomicU32::new(0),
    })
}

/// Meta logs with more events than this are compacted into one snapshot when the broker opens.
const META_COMPACT_EVENTS: u64 = 10_000;

/// Groups' positions past the end of their partition (a crash took records their bookkeeping had seen:
/// with `fsync = interval` the topic and the metadata are flushed independently) are cut back to the
/// end, so the records published next are delivered, not taken for done. True when anything was cut.
fn cut_bookkeeping_to_log_ends(meta: &mut MetaState, topics: &HashMap<String, Arc<Topic>>) -> bool {
    let mut cut = false;
    let end = |topic: &str, partition: u32| {
        topics
            .get(topic)
            .and_then(|t| t.partitions.get(partition as usize))
            .map(|log| log.next_offset())
    };
    for ((group, topic), queue) in &mut meta.queues {
        for (&partition, part) in &mut queue.partitions {
            if let Some(end) = end(topic, partition)
                && part.cursor() > end
            {
                tracing::warn!(
                    group,
                    topic,
                    partition,
                    end,
                    "queue group was past the partition's end (records lost in a crash); cut back"
                );
                part.cut_to(end);
                cut = true;
            }
        }
    }
    for ((group, topic), offsets) in &mut meta.offsets {
        for (&partition, offset) in offsets.iter_mut() {
            if let Some(end) = end(topic, partition)
                && *offset > end
            {
                tracing::warn!(
                    group,
                    topic,
                    partition,
                    end,
                    committed = *offset,
                    "committed offset was past the partition's end (records lost in a crash); cut back"
                );
                *offset = end;
                cut = true;
            }
        }
    }
    cut
}

fn replay(meta_log: &Log) -> Result<MetaState> {
    let mut meta = MetaState::default();
    for record in meta_log.reader(meta_log.start_offset())? {
        let record = record?;
        let event: MetaEvent = serde_json::from_slice(&record.value)
            .map_err(|e| BrokerError::Metadata(format!("meta record {}: {e}", record.offset)))?;
        meta.apply(&event);
    }
    Ok(meta)
}

fn meta_io(what: &'static str) -> impl Fn(std::io::Error) -> BrokerError {
    move |e| BrokerError::Metadata(format!("{what}: {e}"))
}

/// Writes the state as one snapshot into `meta.new`, then swaps it in for `meta` by renames, so that a
/// crash at any point leaves one complete meta log (see [`finish_meta_swap`]).
fn compact_meta(dir: &Path, meta: &MetaState, config: &LogConfig) -> Result<()> {
    let new = dir.join("meta.new");
    if new.exists() {
        fs::remove_dir_all(&new).map_err(meta_io("removing meta.new"))?;
    }
    let value = serde_json::to_vec(&MetaEvent::Snapshot(meta.snapshot()))
        .map_err(|e| BrokerError::Metadata(e.to_string()))?;
    let log = Log::open(&new, config.clone())?;
    log.append(&[NewRecord::value(value)])?;
    log.close()?;
    fs::rename(dir.join("meta"), dir.join("meta.old")).map_err(meta_io("renaming meta"))?;
    fs::rename(&new, dir.join("meta")).map_err(meta_io("renaming meta.new"))?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(meta_io("syncing the data directory"))?;
    fs::remove_dir_all(dir.join("meta.old")).map_err(meta_io("removing meta.old"))?;
    tracing::info!(dir = %dir.display(), "compacted the metadata log into a snapshot");
    Ok(())
}

/// Completes or rolls back a compaction that a crash interrupted.
fn finish_meta_swap(dir: &Path) -> Result<()> {
    let (meta, new, old) = (dir.join("meta"), dir.join("meta.new"), dir.join("meta.old"));
    if !meta.exists() && new.exists() {
        // Crashed between the two renames: meta.new is complete (it was closed before the first).
        fs::rename(&new, &meta).map_err(meta_io("renaming meta.new"))?;
    }
    for leftover in [new, old] {
        if leftover.exists() {
            fs::remove_dir_all(&leftover).map_err(meta_io("removing an interrupted compaction"))?;
        }
    }
    Ok(())
}

/// Directories of topics that were deleted (or whose creation never committed) are removed at start.
fn remove_stray_topic_dirs(data: &Path, meta: &MetaState) {
    let Ok(entries) = fs::read_dir(data.join("topics")) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let live = meta.topics.iter().any(|(t, (id, _))| name == format!("{t}.{id}"));
        if !live {
            match fs::remove_dir_all(entry.path()) {
                Ok(()) => tracing::info!(dir = %entry.path().display(), "removed files of a deleted topic"),
                Err(e) => {
                    tracing::warn!(dir = %entry.path().display(), error = %e, "could not remove a deleted topic's files")
                }
            }
        }
    }
}
