//! Queue groups (SQS, RabbitMQ queues, Kafka share groups) over a topic's partitions.
//!
//! A receiver leases records for a visibility timeout; `ack` finishes a record, `nack` (optionally with a
//! delay) or an expired lease makes it available again. Each delivery is counted durably before the
//! record is handed out; a record delivered `max_deliveries` times without an ack goes to the dead-letter
//! topic with headers naming why and where it came from.
//!
//! Durable per partition (in the meta log): a floor below which everything is done, the done offsets
//! above it, and the delivery count of every delivered, unfinished record. In memory only: leases, nack
//! delays and the last failure of each record. After a restart every leased record is available again
//! (at-least-once); acknowledged records are never delivered again.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use ferry_log::Header;
use serde::Serialize;
use tokio::time::Instant;

use crate::broker::{Broker, StoredRecord, Topic, lock, partition_log, read_partition};
use crate::config::{QueueConfig, TopicConfig};
use crate::error::{BrokerError, Result};
use crate::meta::{MetaEvent, QueuePartition};
use crate::names::validate_name;
use crate::{FetchLimits, Produce};

/// Records a filter may skip in one pass of a receive: they are recorded as done in one meta event,
/// which must stay well under a batch's size limit (about 14 bytes each).
const MAX_SKIPPED_PER_PASS: usize = 65_536;

/// Records read at once while looking for new records to hand out.
const SCAN_CHUNK_RECORDS: usize = 1024;

/// Bytes of values a receive reads at once: one read (one blocking task when the records are not hot)
/// for a whole receive of 1000 records up to 8 KiB.
const SCAN_CHUNK_BYTES: usize = 8 << 20;

/// Options of one receive call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceiveOptions {
    /// At most this many records.
    pub max_records: usize,
    /// Wait up to this long when nothing is available (long-poll).
    pub max_wait: Duration,
    /// Lease length for this call; the group's `visibility_timeout_ms` when `None`.
    pub visibility_timeout: Option<Duration>,
}

impl Default for ReceiveOptions {
    fn default() -> Self {
        Self {
            max_records: 10,
            max_wait: Duration::ZERO,
            visibility_timeout: None,
        }
    }
}

/// A record leased to a receiver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leased {
    /// The record.
    pub record: StoredRecord,
    /// How many times it has been delivered, this time included.
    pub deliveries: u32,
    /// When the lease ends (ms since the epoch) unless acked, nacked or extended.
    pub lease_expires_ms: i64,
}

/// A queue group's settings and state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct QueueInfo {
    /// Group name.
    pub group: String,
    /// Topic.
    pub topic: String,
    /// Settings.
    pub config: QueueConfig,
    /// The dead-letter topic in use.
    pub dead_letter_topic: String,
    /// Records published and not yet done (acked or dead-lettered), leased ones included.
    pub depth: u64,
    /// Records leased right now.
    pub in_flight: u64,
}

/// Leases and delays of one queue group, per partition.
#[derive(Debug, Default)]
pub(crate) struct QueueRuntime {
    partitions: BTreeMap<u32, PartitionRuntime>,
}

#[derive(Debug, Default)]
struct PartitionRuntime {
    /// offset -> lease deadline.
    leases: BTreeMap<u64, Instant>,
    /// offset -> not before (after a nack with delay).
    delayed: BTreeMap<u64, Instant>,
    /// offset -> why its last delivery failed.
    failure: HashMap<u64, &'static str>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn dead_letter_topic(config: &QueueConfig, group: &str, topic: &str) -> String {
    config
        .dead_letter_topic
        .clone()
        .unwrap_or_else(|| format!("{topic}.{group}.dlq"))
}

fn queue_key(group: &str, topic: &str) -> (String, String) {
    (group.to_string(), topic.to_string())
}

impl Broker {
    /// Creates a queue group on a topic; creating it again with the same settings is a no-op.
    ///
    /// # Errors
    /// [`BrokerError::InvalidName`], [`BrokerError::InvalidConfig`], [`BrokerError::TopicNotFound`],
    /// [`BrokerError::QueueExists`] with other settings.
    pub async fn create_queue(&self, group: &str, topic: &str, config: QueueConfig) -> Result<QueueInfo> {
        validate_name("group", group)?;
        config.validate()?;
        let t = self.topic(topic)?;
        let dlq = dead_letter_topic(&config, group, &t.name);
        validate_name("dead_letter_topic", &dlq)?;
        let lock_ = self.group_lock(&format!("queue:{group}"), &t.name);
        let _guard = lock_.lock().await;
        let existing = lock(&self.inner.state)
            .meta
            .queues
            .get(&queue_key(group, &t.name))
            .map(|q| q.config.clone());
        match existing {
            Some(c) if c == config => {}
            Some(_) => {
                return Err(BrokerError::QueueExists {
                    group: group.into(),
                    topic: t.name.clone(),
                });
            }
            None => {
                self.commit_meta(MetaEvent::QueueCreated {
                    group: group.into(),
                    topic: t.name.clone(),
                    config,
                })
                .await?;
            }
        }
        self.queue_info(group, topic)
    }

    /// A queue group's settings, depth and in-flight count.
    ///
    /// # Errors
    /// [`BrokerError::TopicNotFound`], [`BrokerError::GroupNotFound`].
    pub fn queue_info(&self, group: &str, topic: &str) -> Result<QueueInfo> {
        validate_name("group", group)?;
        let t = self.topic(topic)?;
        let state = lock(&self.inner.state);
        let key = queue_key(group, &t.name);
        let q = state
            .meta
            .queues
            .get(&key)
            .ok_or_else(|| BrokerError::GroupNotFound {
                group: group.into(),
                topic: t.name.clone(),
            })?;
        let now = Instant::now();
        let mut depth = 0;
        for (p, log) in t.partitions.iter().enumerate() {
            let mut part = q.partitions.get(&(p as u32)).cloned().unwrap_or_default();
            part.advance_to(log.start_offset());
            depth += log.next_offset().saturating_sub(part.floor) - part.done.len() as u64;
        }
        let in_flight = state.queues.get(&key).map_or(0, |r| {
            r.partitions
                .values()
                .map(|p| p.leases.values().filter(|d| **d > now).count() as u64)
                .sum()
        });
        Ok(QueueInfo {
            group: group.into(),
            topic: t.name.clone(),
            dead_letter_topic: dead_letter_topic(&q.config, group, &t.name),
            config: q.config.clone(),
            depth,
            in_flight,
        })
    }

    /// Leases up to `max_records` available records (redeliveries first, then new ones), waiting up to
    /// `max_wait` when none is available. Creates the queue group with default settings on first use.
    ///
    /// # Errors
    /// [`BrokerError::InvalidName`], [`BrokerError::TopicNotFound`], [`BrokerError::Storage`].
    pub async fn receive(&self, group: &str, topic: &str, options: ReceiveOptions) -> Result<Vec<Leased>> {
        self.receive_until(group, topic, options, std::future::pending())
            .await
    }

    /// [`Broker::receive`] for a receiver that may go away: once `gone` completes, the receive stops
    /// waiting and returns what it has, nothing (a pass that is leasing records finishes first, so
    /// none is left half-delivered). A server passes its client's disconnection here, so that a
    /// long-poll whose client is gone does not lease records nobody will get, which would then be
    /// invisible for their visibility timeout.
    ///
    /// # Errors
    /// As [`Broker::receive`].
    pub async fn receive_until(
        &self,
        group: &str,
        topic: &str,
        options: ReceiveOptions,
        gone: impl Future<Output = ()>,
    ) -> Result<Vec<Leased>> {
        tokio::pin!(gone);
        validate_name("group", group)?;
        let t = self.topic(topic)?;
        if !lock(&self.inner.state)
            .meta
            .queues
            .contains_key(&queue_key(group, &t.name))
        {
            self.create_queue(group, topic, QueueConfig::default()).await?;
        }
        let lock_ = self.group_lock(&format!("queue:{group}"), &t.name);
        // One waiting receiver per group at a time watches the topic (it holds the group's turn); the
        // others wait for the turn, in order. A commit then wakes one receiver of the group, not all of
        // them to find one record between them; the one woken passes the turn on as it returns. The next
        // one looks again at once if anything was committed or given back since its last look (what the
        // first left), else it waits.
        let turn = self.group_lock(&format!("queue-turn:{group}"), &t.name);
        let mut my_turn = None;
        let deadline = Instant::now() + options.max_wait;
        loop {
            let notified = t.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let already_gone =
                std::future::poll_fn(|cx| std::task::Poll::Ready(gone.as_mut().poll(cx).is_ready())).await;
            if already_gone {
                return Ok(Vec::new());
            }
            let (leased, next_wake, more) = {
                let _guard = lock_.lock().await;
                self.receive_once(group, &t, options).await?
            };
            if leased.is_empty() && more {
                // The pass stopped at its cap of skipped records: go on from where it stopped.
                continue;
            }
            if !leased.is_empty() || Instant::now() >= deadline {
                return Ok(leased);
            }
            if my_turn.is_none() {
                tokio::select! {
                    got = turn.clone().lock_owned() => my_turn = Some(got),
                    () = tokio::time::sleep_until(deadline) => {}
                    () = gone.as_mut() => return Ok(Vec::new()),
                }
                if my_turn.is_none() {
                    // Its deadline: one last look.
                    continue;
                }
                // With the turn it waits on `notified`, enabled before the pass: a commit since then
                // (while it waited for the turn) has woken it already, and it looks again at once.
            }
            let wake = next_wake.map_or(deadline, |w| w.min(deadline));
            tokio::select! {
                _ = tokio::time::timeout_at(wake, notified) => {}
                () = gone.as_mut() => return Ok(Vec::new()),
            }
        }
    }

    async fn receive_once(
        &self,
        group: &str,
        t: &Arc<Topic>,
        options: ReceiveOptions,
    ) -> Result<(Vec<Leased>, Option<Instant>, bool)> {
        let key = queue_key(group, &t.name);
        let now = Instant::now();
        let wall = now_ms();
        let mut next_wake: Option<Instant> = None;
        let mut wake_at = |w: Instant| next_wake = Some(next_wake.map_or(w, |n| n.min(w)));

        // Snapshot the durable state, expire leases, and pick what to hand out.
        let (config, parts) = {
            let mut state = lock(&self.inner.state);
            let q = state
                .meta
                .queues
                .get(&key)
                .ok_or_else(|| BrokerError::GroupNotFound {
                    group: group.into(),
                    topic: t.name.clone(),
                })?;
            let config = q.config.clone();
            let parts: Vec<QueuePartition> = (0..t.partitions.len() as u32)
                .map(|p| {
                    let mut part = q.partitions.get(&p).cloned().unwrap_or_default();
                    part.advance_to(t.partitions[p as usize].start_offset());
                    part
                })
                .collect();
            let runtime = state.queues.entry(key.clone()).or_default();
            for rt in runtime.partitions.values_mut() {
                let expired: Vec<u64> = rt
                    .leases
                    .iter()
                    .filter(|(_, d)| **d <= now)
                    .map(|(o, _)| *o)
                    .collect();
                for o in expired {
                    rt.leases.remove(&o);
                    rt.failure.insert(o, "visibility_timeout");
                }
            }
            (config, parts)
        };
        let in_flight: usize = {
            let state = lock(&self.inner.state);
            state
                .queues
                .get(&key)
                .map_or(0, |r| r.partitions.values().map(|p| p.leases.len()).sum())
        };
        let budget = options
            .max_records
            .min((config.max_in_flight as usize).saturating_sub(in_flight));
        let visibility = options
            .visibility_timeout
            .unwrap_or(Duration::from_millis(config.visibility_timeout_ms));

        let filter = self.filter_for(group, &t.name);
        let mut skipped: Vec<(u32, u64)> = Vec::new();
        let mut chosen: Vec<(StoredRecord, u32)> = Vec::new();
        let mut dead: Vec<(StoredRecord, u32, &'static str)> = Vec::new();
        let n = t.partitions.len();
        let first = t.round_robin.load(std::sync::atomic::Ordering::Relaxed) as usize % n;
        for k in 0..n {
            if chosen.len() >= budget {
                break;
            }
            let p = ((first + k) % n) as u32;
            let part = &parts[p as usize];
            let log = partition_log(t, p)?;
            // Redeliveries: delivered before, not leased, not held back.
            let redeliver: Vec<(u64, u32, &'static str)> = {
                let state = lock(&self.inner.state);
                let rt = state.queues.get(&key).and_then(|r| r.partitions.get(&p));
                part.deliveries
                    .iter()
                    .filter(|(o, _)| !rt.is_some_and(|rt| rt.leases.contains_key(o)))
                    .filter(|(o, _)| match rt.and_then(|rt| rt.delayed.get(o)) {
                        Some(until) if *until > now => {
                            wake_at(*until);
                            false
                        }
                        _ => true,
                    })
                    .map(|(o, c)| {
                        (
                            *o,
                            *c,
                            rt.and_then(|rt| rt.failure.get(o).copied()).unwrap_or("restart"),
                        )
                    })
                    .collect()
            };
            for (offset, count, why) in redeliver {
                if chosen.len() >= budget {
                    break;
                }
                let limits = FetchLimits {
                    max_records: 1,
                    max_bytes: 1,
                    max_wait: Duration::ZERO,
                };
                let Some(record) = read_partition(t, p, log.clone(), offset, limits)
                    .await?
                    .into_iter()
                    .next()
                else {
                    continue;
                };
                if count >= config.max_deliveries {
                    dead.push((record, count, why));
                } else {
                    chosen.push((record, count + 1));
                }
            }
            // New records, from the first never handed out. Read in chunks, not `budget` at a time: a
            // filter may reject most of them, and a receive of one record must not cost one read per
            // record it skips.
            let mut cursor = part.cursor();
            while chosen.len() < budget && cursor < log.next_offset() && skipped.len() < MAX_SKIPPED_PER_PASS
            {
                // Without a filter every record read is taken: read just what the budget has room for.
                let limits = FetchLimits {
                    max_records: if filter.is_some() {
                        SCAN_CHUNK_RECORDS
                    } else {
                        (budget - chosen.len()).min(SCAN_CHUNK_RECORDS)
                    },
                    max_bytes: SCAN_CHUNK_BYTES,
                    max_wait: Duration::ZERO,
                };
                let records = read_partition(t, p, log.clone(), cursor, limits).await?;
                if records.is_empty() {
                    break;
                }
                let mut held_back = false;
                for r in records {
                    if chosen.len() >= budget || skipped.len() >= MAX_SKIPPED_PER_PASS {
                        break;
                    }
                    let available_ms = r.timestamp.saturating_add(config.delivery_delay_ms as i64);
                    if available_ms > wall {
                        wake_at(now + Duration::from_millis((available_ms - wall) as u64));
                        held_back = true;
                        break;
                    }
                    cursor = r.offset + 1;
                    if filter.as_ref().is_some_and(|f| !f.matches(&r.headers, &r.value)) {
                        skipped.push((r.partition, r.offset));
                        continue;
                    }
                    chosen.push((r, 1));
                }
                if held_back {
                    break;
                }
            }
        }
        {
            // A lease that ends makes its record available again: wake a waiting receiver then.
            let state = lock(&self.inner.state);
            if let Some(d) = state
                .queues
                .get(&key)
                .and_then(|r| r.partitions.values().flat_map(|p| p.leases.values()).min())
            {
                wake_at(*d);
            }
        }

        if !dead.is_empty() {
            self.dead_letter(group, t, &config, &dead).await?;
        }
        let capped = skipped.len() >= MAX_SKIPPED_PER_PASS;
        if !skipped.is_empty() {
            // Records the subscription's filter rejects are done for this group without a delivery.
            self.commit_meta_as(
                MetaEvent::QueueDone {
                    group: group.into(),
                    topic: t.name.clone(),
                    done: skipped,
                },
                t.config.fsync,
            )
            .await?;
        }
        if chosen.is_empty() {
            return Ok((Vec::new(), next_wake, capped));
        }
        let deliveries = chosen.iter().map(|(r, c)| (r.partition, r.offset, *c)).collect();
        self.commit_meta_as(
            MetaEvent::QueueDelivered {
                group: group.into(),
                topic: t.name.clone(),
                deliveries,
            },
            t.config.fsync,
        )
        .await?;
        let expires = Instant::now() + visibility;
        let expires_ms = now_ms() + visibility.as_millis() as i64;
        let mut state = lock(&self.inner.state);
        let runtime = state.queues.entry(key).or_default();
        let out = chosen
            .into_iter()
            .map(|(record, deliveries)| {
                let rt = runtime.partitions.entry(record.partition).or_default();
                rt.leases.insert(record.offset, expires);
                rt.delayed.remove(&record.offset);
                rt.failure.remove(&record.offset);
                Leased {
                    record,
                    deliveries,
                    lease_expires_ms: expires_ms,
                }
            })
            .collect();
        Ok((out, next_wake, capped))
    }

    /// Publishes dead letters to the group's dead-letter topic, then marks them done.
    async fn dead_letter(
        &self,
        group: &str,
        t: &Topic,
        config: &QueueConfig,
        dead: &[(StoredRecord, u32, &'static str)],
    ) -> Result<()> {
        let dlq = dead_letter_topic(config, group, &t.name);
        if self.topic(&dlq).is_err() {
            match self.create_topic(&dlq, TopicConfig::default()).await {
                Ok(_) | Err(BrokerError::TopicExists(_)) => {}
                Err(e) => return Err(e),
            }
        }
        let letters = dead
            .iter()
            .map(|(r, count, why)| {
                let mut headers = r.headers.clone();
                let mut add = |k: &str, v: String| {
                    headers.push(Header {
                        key: k.into(),
                        value: Bytes::from(v),
                    })
                };
                add(
                    "ferry-dlq-reason",
                    format!(
                        "max_deliveries ({}) reached; last failure: {why}",
                        config.max_deliveries
                    ),
                );
                add("ferry-dlq-topic", t.name.clone());
                add("ferry-dlq-group", group.to_string());
                add("ferry-dlq-partition", r.partition.to_string());
                add("ferry-dlq-offset", r.offset.to_string());
                add("ferry-dlq-deliveries", count.to_string());
                Produce {
                    key: r.key.clone(),
                    headers,
                    value: r.value.clone(),
                    timestamp: None,
                    partition: None,
                }
            })
            .collect();
        self.publish(&dlq, letters).await?;
        let done = dead.iter().map(|(r, ..)| (r.partition, r.offset)).collect();
        self.commit_meta_as(
            MetaEvent::QueueDone {
                group: group.into(),
                topic: t.name.clone(),
                done,
            },
            t.config.fsync,
        )
        .await?;
        tracing::warn!(group, topic = %t.name, dead_letter_topic = %dlq, records = dead.len(), "records dead-lettered");
        Ok(())
    }

    /// Checks that every record is currently leased by the group.
    fn check_leased(&self, group: &str, t: &Topic, records: &[(u32, u64)]) -> Result<()> {
        let now = Instant::now();
        let state = lock(&self.inner.state);
        let rt = state.queues.get(&queue_key(group, &t.name));
        for &(p, o) in records {
            partition_log(t, p)?;
            let leased = rt
                .and_then(|r| r.partitions.get(&p))
                .and_then(|r| r.leases.get(&o))
                .is_some_and(|d| *d > now);
            if !leased {
                return Err(BrokerError::NotLeased {
                    group: group.into(),
                    partition: p,
                    offset: o,
                });
            }
        }
        Ok(())
    }

    /// Finishes leased records: they are never delivered again.
    ///
    /// # Errors
    /// [`BrokerError::NotLeased`] (nothing is acknowledged then), [`BrokerError::TopicNotFound`].
    pub async fn ack(&self, group: &str, topic: &str, records: &[(u32, u64)]) -> Result<()> {
        let (t, _guard) = self.lock_leased(group, topic, records).await?;
        self.commit_meta_as(
            MetaEvent::QueueDone {
                group: group.into(),
                topic: t.name.clone(),
                done: records.to_vec(),
            },
            t.config.fsync,
        )
        .await?;
        let mut state = lock(&self.inner.state);
        if let Some(rt) = state.queues.get_mut(&queue_key(group, &t.name)) {
            for &(p, o) in records {
                if let Some(r) = rt.partitions.get_mut(&p) {
                    r.leases.remove(&o);
                    r.failure.remove(&o);
                }
            }
        }
        Ok(())
    }

    /// The topic and the group's lock, held, once every record is checked to be leased now: how ack,
    /// nack and extend begin.
    async fn lock_leased(
        &self,
        group: &str,
        topic: &str,
        records: &[(u32, u64)],
    ) -> Result<(Arc<Topic>, tokio::sync::OwnedMutexGuard<()>)> {
        validate_name("group", group)?;
        let t = self.topic(topic)?;
        let guard = self
            .group_lock(&format!("queue:{group}"), &t.name)
            .lock_owned()
            .await;
        self.check_leased(group, &t, records)?;
        Ok((t, guard))
    }

    /// Gives leased records back: available again after `delay` (at once for zero).
    ///
    /// # Errors
    /// [`BrokerError::NotLeased`] (nothing changes then), [`BrokerError::TopicNotFound`].
    pub async fn nack(
        &self,
        group: &str,
        topic: &str,
        records: &[(u32, u64)],
        delay: Duration,
    ) -> Result<()> {
        let (t, _guard) = self.lock_leased(group, topic, records).await?;
        {
            let until = Instant::now() + delay;
            let mut state = lock(&self.inner.state);
            let rt = state.queues.entry(queue_key(group, &t.name)).or_default();
            for &(p, o) in records {
                let r = rt.partitions.entry(p).or_default();
                r.leases.remove(&o);
                r.failure.insert(o, "nack");
                if !delay.is_zero() {
                    r.delayed.insert(o, until);
                }
            }
        }
        t.notify.notify_waiters();
        Ok(())
    }

    /// Extends the leases of records to `visibility` from now.
    ///
    /// # Errors
    /// [`BrokerError::NotLeased`] (nothing changes then), [`BrokerError::TopicNotFound`].
    pub async fn extend(
        &self,
        group: &str,
        topic: &str,
        records: &[(u32, u64)],
        visibility: Duration,
    ) -> Result<()> {
        let (t, _guard) = self.lock_leased(group, topic, records).await?;
        let until = Instant::now() + visibility;
        let mut state = lock(&self.inner.state);
        let rt = state.queues.entry(queue_key(group, &t.name)).or_default();
        for &(p, o) in records {
            rt.partitions.entry(p).or_default().leases.insert(o, until);
        }
        Ok(())
    }
}
