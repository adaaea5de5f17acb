//! The idempotent consumer: events received from a queue group are applied once each, however often
//! ferry delivers them.
//!
//! ```text
//! processed
//!   event_id      TEXT PRIMARY KEY     an event applied (or deliberately skipped) by this service
//!   event_type    TEXT NOT NULL
//!   processed_ms  INTEGER NOT NULL
//! ```
//!
//! Invariants:
//! - Recording an event's id in `processed` and applying it happen in one transaction: either both
//!   are committed or neither. An event whose id is already there is a duplicate (a relay that
//!   published again after a crash, a redelivery after a lost ack or an expired lease) and is acked
//!   without being applied again.
//! - An event is acked only after its transaction committed. A crash before the ack means a
//!   redelivery, which the first rule makes harmless (at-least-once delivery, exactly-once effect).
//! - A record that is not an event is given back (nack) and never applied; after
//!   [`crate::events::MAX_DELIVERIES`] deliveries ferry moves it to the group's dead-letter topic, with
//!   the reason in its headers. Nothing is dropped silently. An event of a type this service does not
//!   know is acked and counted (a newer producer), as is one the service has no use for.
//!
//! `processed` grows by one row per event; pruning rows older than the topic's retention (ferry
//! cannot deliver older records again) is left out of this example.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ferry_client::{Client, Delivery, RecordId};
use rusqlite::{Connection, Transaction, params};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::db::{Db, DbError, now_ms};
use crate::events::{Event, Parsed, ensure_topology, parse};
use crate::retry::{Backoff, Outage};

/// The `processed` table.
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS processed (
    event_id     TEXT PRIMARY KEY,
    event_type   TEXT NOT NULL,
    processed_ms INTEGER NOT NULL
);
";

/// Most records one receive leases.
const RECEIVE_MAX: usize = 64;
/// Longest a receive waits for the first record (a long poll).
const RECEIVE_WAIT: Duration = Duration::from_secs(5);
/// How long an event whose transaction failed waits before it is delivered again.
const RETRY_DELAY: Duration = Duration::from_secs(1);

/// What a service's handler did with an event, within the consumer's transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Changed the service's state.
    Applied,
    /// Older than what the service has (a late or reordered event): nothing to change.
    Stale,
    /// Not for this service, or about something it does not have (a like of a deleted product).
    Ignored,
}

/// A service's handler: applies one event within `tx`.
pub type Apply = fn(&Transaction<'_>, &Event) -> rusqlite::Result<Effect>;

/// What became of one received record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The handler ran and its transaction committed.
    Done(Effect),
    /// Its id was processed before: skipped.
    Duplicate,
    /// An event type this service does not know: skipped.
    Unknown,
}

/// Why a record could not be processed.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The value is not an event: it goes back to ferry, and to the dead-letter topic in the end.
    #[error("not an event: {0}")]
    Malformed(#[from] serde_json::Error),
    /// The transaction failed: delivered again later.
    #[error("sqlite: {0}")]
    Db(#[from] rusqlite::Error),
}

/// Applies the record `value` once: records its event id and runs `apply` in one transaction, unless
/// the id was processed before.
///
/// # Errors
/// [`ProcessError::Malformed`] for a value that is not an event, [`ProcessError::Db`] when the
/// transaction fails (nothing of it is kept).
pub fn process(conn: &mut Connection, value: &[u8], apply: Apply) -> Result<Outcome, ProcessError> {
    let event = match parse(value)? {
        Parsed::Event(event) => event,
        Parsed::Unknown { id, kind } => {
            tracing::warn!(event_id = %id, event_type = %kind,
                "skipped an event of a type this service does not know");
            return Ok(Outcome::Unknown);
        }
    };
    let tx = conn.transaction()?;
    let fresh = tx.execute(
        "INSERT OR IGNORE INTO processed (event_id, event_type, processed_ms) VALUES (?1, ?2, ?3)",
        params![event.id(), event.kind(), now_ms()],
    )? == 1;
    if !fresh {
        return Ok(Outcome::Duplicate);
    }
    let effect = apply(&tx, &event)?;
    tx.commit()?;
    tracing::debug!(event_id = %event.id(), event_type = event.kind(), ?effect, "event processed");
    Ok(Outcome::Done(effect))
}

/// Counters of a consumer since the process started, shown by `GET /healthz`.
#[derive(Debug, Default)]
pub struct Stats {
    applied: AtomicU64,
    stale: AtomicU64,
    ignored: AtomicU64,
    duplicates: AtomicU64,
    unknown: AtomicU64,
    rejected: AtomicU64,
    retried: AtomicU64,
}

impl Stats {
    fn count(&self, outcome: Outcome) {
        let counter = match outcome {
            Outcome::Done(Effect::Applied) => &self.applied,
            Outcome::Done(Effect::Stale) => &self.stale,
            Outcome::Done(Effect::Ignored) => &self.ignored,
            Outcome::Duplicate => &self.duplicates,
            Outcome::Unknown => &self.unknown,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// `{"applied", "stale", "ignored", "duplicates", "unknown", "rejected", "retried"}`.
    pub fn to_json(&self) -> Value {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        serde_json::json!({
            "applied": get(&self.applied),
            "stale": get(&self.stale),
            "ignored": get(&self.ignored),
            "duplicates": get(&self.duplicates),
            "unknown": get(&self.unknown),
            "rejected": get(&self.rejected),
            "retried": get(&self.retried),
        })
    }
}

/// Receives one queue group's records and applies them until cancelled.
#[derive(Debug, Clone)]
pub struct Consumer {
    db: Db,
    client: Client,
    group: &'static str,
    topic: &'static str,
    apply: Apply,
    stats: Arc<Stats>,
}

impl Consumer {
    /// A consumer of `topic` in queue group `group`, applying events with `apply`.
    pub fn new(db: Db, client: Client, group: &'static str, topic: &'static str, apply: Apply) -> Self {
        Self {
            db,
            client,
            group,
            topic,
            apply,
            stats: Arc::default(),
        }
    }

    /// Its counters.
    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// Receives, applies and acks until `cancel` fires. While ferry is unreachable it retries with
    /// backoff, logging once. A receive in progress when cancelled is abandoned: what it leased comes
    /// back after the group's visibility timeout.
    pub async fn run(self, cancel: CancellationToken) {
        let queue = self.client.queue_consumer(self.group, self.topic);
        let mut backoff = Backoff::default();
        let mut outage = Outage::new("consumer");
        let mut topology = false;
        while !cancel.is_cancelled() {
            let received = async {
                if !topology {
                    ensure_topology(&self.client).await?;
                    topology = true;
                    // Ferry answers again: say so now rather than after a long poll.
                    outage.over();
                }
                queue.receive(RECEIVE_MAX, RECEIVE_WAIT, None).await
            };
            let received = tokio::select! {
                r = received => r,
                () = cancel.cancelled() => break,
            };
            let deliveries = match received {
                Ok(d) => d,
                Err(e) => {
                    // Declared again once ferry answers (see `Relay::run`).
                    topology = false;
                    outage.failed(&e);
                    tokio::select! {
                        () = tokio::time::sleep(backoff.wait()) => {}
                        () = cancel.cancelled() => {}
                    }
                    continue;
                }
            };
            outage.over();
            backoff.reset();
            if !deliveries.is_empty() {
                self.handle(&queue, deliveries).await;
            }
        }
    }

    /// Applies a batch, then acks what was processed and nacks the rest.
    async fn handle(&self, queue: &ferry_client::QueueConsumer, deliveries: Vec<Delivery>) {
        let apply = self.apply;
        let ids: Vec<RecordId> = deliveries.iter().map(|d| d.record.id()).collect();
        let results = self
            .db
            .run(move |conn| {
                Ok::<_, DbError>(
                    deliveries
                        .iter()
                        .map(|d| {
                            (
                                d.record.id(),
                                d.delivery_count,
                                process(conn, &d.record.value, apply),
                            )
                        })
                        .collect::<Vec<_>>(),
                )
            })
            .await;
        let results = match results {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "applying events failed; giving them back");
                self.stats.retried.fetch_add(ids.len() as u64, Ordering::Relaxed);
                self.settle_nack(queue, &ids, RETRY_DELAY).await;
                return;
            }
        };
        let (mut done, mut bad, mut retry) = (Vec::new(), Vec::new(), Vec::new());
        for (id, deliveries, result) in results {
            match result {
                Ok(outcome) => {
                    self.stats.count(outcome);
                    done.push(id);
                }
                Err(ProcessError::Malformed(e)) => {
                    tracing::error!(topic = self.topic, partition = id.partition, offset = id.offset,
                        deliveries, error = %e,
                        "a record is not an event; giving it back (dead-lettered by ferry after {} deliveries)",
                        crate::events::MAX_DELIVERIES);
                    self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                    bad.push(id);
                }
                Err(ProcessError::Db(e)) => {
                    tracing::warn!(topic = self.topic, partition = id.partition, offset = id.offset, error = %e,
                        "applying an event failed; it will be delivered again");
                    self.stats.retried.fetch_add(1, Ordering::Relaxed);
                    retry.push(id);
                }
            }
        }
        self.settle_ack(queue, &done).await;
        self.settle_nack(queue, &bad, Duration::ZERO).await;
        self.settle_nack(queue, &retry, RETRY_DELAY).await;
    }

    async fn settle_ack(&self, queue: &ferry_client::QueueConsumer, ids: &[RecordId]) {
        match queue.ack(ids).await {
            Ok(()) => {}
            // One lease that ran out refuses the whole batch: ack the others one by one.
            Err(e) if e.code() == Some("not_leased") && ids.len() > 1 => {
                for id in ids {
                    if let Err(e) = queue.ack(std::slice::from_ref(id)).await {
                        not_acked(self.topic, *id, &e);
                    }
                }
            }
            Err(e) => {
                for id in ids {
                    not_acked(self.topic, *id, &e);
                }
            }
        }
    }

    async fn settle_nack(&self, queue: &ferry_client::QueueConsumer, ids: &[RecordId], delay: Duration) {
        if let Err(e) = queue.nack(ids, delay).await {
            tracing::debug!(topic = self.topic, error = %e, records = ids.len(),
                "nack failed; the records come back when their leases run out");
        }
    }
}

/// An ack that did not reach ferry: harmless, the event comes again and is skipped as a duplicate.
fn not_acked(topic: &str, id: RecordId, e: &ferry_client::Error) {
    tracing::debug!(topic, partition = id.partition, offset = id.offset, error = %e,
        "ack failed (ferry restarted or the lease ran out); the event comes again and is skipped as a duplicate");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{Liked, new_event_id};

    fn counting(tx: &Transaction<'_>, event: &Event) -> rusqlite::Result<Effect> {
        tx.execute("UPDATE counter SET n = n + 1", [])?;
        Ok(if matches!(event, Event::ProductLiked { .. }) {
            Effect::Applied
        } else {
            Effect::Ignored
        })
    }

    fn failing(tx: &Transaction<'_>, _: &Event) -> rusqlite::Result<Effect> {
        tx.execute("UPDATE counter SET n = n + 1", [])?;
        tx.execute("INSERT INTO no_such_table VALUES (1)", [])?;
        Ok(Effect::Applied)
    }

    fn db() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(SCHEMA).unwrap();
        conn.execute_batch("CREATE TABLE counter (n INTEGER); INSERT INTO counter VALUES (0);")
            .unwrap();
        conn
    }

    fn n(conn: &Connection) -> i64 {
        conn.query_row("SELECT n FROM counter", [], |r| r.get(0)).unwrap()
    }

    #[test]
    fn an_event_delivered_twice_is_applied_once() {
        let mut conn = db();
        let event = Event::ProductLiked {
            id: new_event_id(),
            product: Liked { id: 1 },
            user_id: 2,
        };
        let value = serde_json::to_vec(&event).unwrap();
        assert_eq!(
            process(&mut conn, &value, counting).unwrap(),
            Outcome::Done(Effect::Applied)
        );
        assert_eq!(process(&mut conn, &value, counting).unwrap(), Outcome::Duplicate);
        assert_eq!(n(&conn), 1);
    }

    #[test]
    fn a_failed_transaction_keeps_neither_the_change_nor_the_id() {
        let mut conn = db();
        let value = serde_json::to_vec(&Event::ProductLiked {
            id: new_event_id(),
            product: Liked { id: 1 },
            user_id: 2,
        })
        .unwrap();
        assert!(matches!(
            process(&mut conn, &value, failing),
            Err(ProcessError::Db(_))
        ));
        assert_eq!(n(&conn), 0);
        // Delivered again, it is applied: the failure did not mark it processed.
        assert_eq!(
            process(&mut conn, &value, counting).unwrap(),
            Outcome::Done(Effect::Applied)
        );
        assert_eq!(n(&conn), 1);
    }

    #[test]
    fn records_that_are_not_events_are_refused_and_unknown_types_skipped() {
        let mut conn = db();
        assert!(matches!(
            process(&mut conn, b"{\"hello\": 1}", counting),
            Err(ProcessError::Malformed(_))
        ));
        assert_eq!(
            process(&mut conn, br#"{"id":"x","type":"product_archived"}"#, counting).unwrap(),
            Outcome::Unknown
        );
        assert_eq!(n(&conn), 0);
        let stats = Stats::default();
        stats.count(Outcome::Duplicate);
        stats.count(Outcome::Done(Effect::Stale));
        assert_eq!(stats.to_json()["duplicates"], 1);
        assert_eq!(stats.to_json()["stale"], 1);
        assert_eq!(stats.to_json()["applied"], 0);
    }
}
