//! The transactional outbox: events are written in the same SQLite transaction as the change that
//! caused them, and a relay publishes them to ferry afterwards.
//!
//! ```text
//! outbox
//!   seq         INTEGER PRIMARY KEY AUTOINCREMENT   order of commit; the relay publishes in this order
//!   event_id    TEXT NOT NULL UNIQUE                the event's id, also inside `payload`
//!   topic       TEXT NOT NULL                       where it goes
//!   key         TEXT                                the record key (the product id)
//!   event_type  TEXT NOT NULL                       the `type` header
//!   payload     TEXT NOT NULL                       the event, JSON
//!   created_ms  INTEGER NOT NULL                    when it was written
//! ```
//!
//! Invariants:
//! - A change is committed if and only if its event row is (one transaction), so no event is lost
//!   when ferry is down or the process dies after the commit, and none is sent for a change that
//!   rolled back.
//! - A row is deleted only after ferry acknowledged it (durable under the topic's policy). A crash
//!   between the two publishes it again with the same event id: consumers skip the duplicate
//!   (`inbox`). So delivery is at-least-once and the effect exactly-once.
//! - Rows are published in `seq` order, one batch at a time, each awaited before the next, so one
//!   product's events reach its partition in the order they were committed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ferry_client::{Client, ProduceRecord};
use rusqlite::{Connection, Transaction, params};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::db::{Db, DbError, now_ms};
use crate::events::{Event, ID_HEADER, TYPE_HEADER, ensure_topology};
use crate::retry::{Backoff, Outage};

/// The outbox table.
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS outbox (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id   TEXT NOT NULL UNIQUE,
    topic      TEXT NOT NULL,
    key        TEXT,
    event_type TEXT NOT NULL,
    payload    TEXT NOT NULL,
    created_ms INTEGER NOT NULL
);
";

/// Most rows published in one request.
const BATCH: usize = 100;
/// How often the relay looks at the table when nobody woke it (rows written by another process, or a
/// wake-up lost to a crash between commit and notify).
const POLL: Duration = Duration::from_secs(1);

/// Adds `event` for `topic` to the outbox within `tx`, keyed by its product id.
///
/// # Errors
/// SQLite's.
pub fn enqueue(tx: &Transaction<'_>, topic: &str, event: &Event) -> rusqlite::Result<()> {
    let payload =
        serde_json::to_string(event).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
    tx.execute(
        "INSERT INTO outbox (event_id, topic, key, event_type, payload, created_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            event.id(),
            topic,
            event.product_id().to_string(),
            event.kind(),
            payload,
            now_ms()
        ],
    )?;
    Ok(())
}

/// How many events wait in the outbox.
///
/// # Errors
/// SQLite's.
pub fn pending(conn: &Connection) -> rusqlite::Result<u64> {
    let n: i64 = conn.query_row("SELECT COUNT(*) FROM outbox", [], |r| r.get(0))?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// A row read for publishing.
#[derive(Debug)]
struct Row {
    seq: i64,
    event_id: String,
    topic: String,
    key: Option<String>,
    event_type: String,
    payload: String,
}

fn oldest(conn: &Connection, n: usize) -> rusqlite::Result<Vec<Row>> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, event_id, topic, key, event_type, payload FROM outbox ORDER BY seq LIMIT ?1",
    )?;
    let rows = stmt.query_map([i64::try_from(n).unwrap_or(i64::MAX)], |r| {
        Ok(Row {
            seq: r.get(0)?,
            event_id: r.get(1)?,
            topic: r.get(2)?,
            key: r.get(3)?,
            event_type: r.get(4)?,
            payload: r.get(5)?,
        })
    })?;
    rows.collect()
}

fn remove(conn: &mut Connection, seqs: &[i64]) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut stmt = tx.prepare_cached("DELETE FROM outbox WHERE seq = ?1")?;
        for seq in seqs {
            stmt.execute([seq])?;
        }
    }
    tx.commit()
}

fn record(row: &Row) -> Result<ProduceRecord, ferry_client::Error> {
    let mut record = ProduceRecord::json_bytes(row.payload.clone().into_bytes())?
        .header(TYPE_HEADER, row.event_type.as_str())
        .header(ID_HEADER, row.event_id.as_str());
    if let Some(key) = &row.key {
        record = record.key(key.as_str());
    }
    Ok(record)
}

/// Publishes the outbox to ferry until cancelled.
#[derive(Debug, Clone)]
pub struct Relay {
    db: Db,
    client: Client,
    wake: Arc<Notify>,
    published: Arc<AtomicU64>,
}

/// Why a round of the relay stopped.
#[derive(Debug, thiserror::Error)]
enum RelayError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Ferry(#[from] ferry_client::Error),
}

impl Relay {
    /// A relay of `db`'s outbox to `client`; `wake` is notified after each commit that added events.
    pub fn new(db: Db, client: Client, wake: Arc<Notify>) -> Self {
        Self {
            db,
            client,
            wake,
            published: Arc::default(),
        }
    }

    /// Events published since the start.
    pub fn published(&self) -> Arc<AtomicU64> {
        self.published.clone()
    }

    /// Publishes rows in `seq` order and deletes them once ferry acknowledged them; sleeps until woken
    /// (or for a second) when the table is empty. While ferry is unreachable it retries with backoff
    /// and logs once when the outage starts and once when it ends. Returns when `cancel` fires (a batch
    /// in flight is finished first, so it is not published twice needlessly).
    pub async fn run(self, cancel: CancellationToken) {
        let mut backoff = Backoff::default();
        let mut outage = Outage::new("relay");
        let mut topology = false;
        while !cancel.is_cancelled() {
            let round = async {
                if !topology {
                    ensure_topology(&self.client).await?;
                    topology = true;
                }
                self.publish_some().await
            };
            match round.await {
                Ok(0) => {
                    outage.over();
                    backoff.reset();
                    tokio::select! {
                        () = self.wake.notified() => {}
                        () = tokio::time::sleep(POLL) => {}
                        () = cancel.cancelled() => {}
                    }
                }
                Ok(_) => {
                    outage.over();
                    backoff.reset();
                }
                Err(e) => {
                    if matches!(e, RelayError::Ferry(_)) {
                        // Declared again once ferry answers: a restarted ferry on RabbitMQ applies a
                        // group's visibility only if it made the group itself, and topics or groups
                        // may have gone (a new data directory, queues deleted on the engine).
                        topology = false;
                    }
                    outage.failed(&e);
                    tokio::select! {
                        () = tokio::time::sleep(backoff.wait()) => {}
                        () = cancel.cancelled() => {}
                    }
                }
            }
        }
    }

    /// Publishes up to [`BATCH`] rows; how many.
    async fn publish_some(&self) -> Result<usize, RelayError> {
        let rows = self.db.run(|c| Ok::<_, DbError>(oldest(c, BATCH)?)).await?;
        let mut done = 0;
        // Consecutive rows of one topic go in one request; requests go one after the other.
        for chunk in rows.chunk_by(|a, b| a.topic == b.topic) {
            let records = chunk.iter().map(record).collect::<Result<Vec<_>, _>>()?;
            self.client.publish(&chunk[0].topic, &records).await?;
            let seqs: Vec<i64> = chunk.iter().map(|r| r.seq).collect();
            self.db.run(move |c| Ok::<_, DbError>(remove(c, &seqs)?)).await?;
            self.published.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            for row in chunk {
                tracing::debug!(event_id = %row.event_id, event_type = %row.event_type, topic = %row.topic,
                    "event published");
            }
            done += chunk.len();
        }
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{Liked, new_event_id};

    fn liked(product: i64) -> Event {
        Event::ProductLiked {
            id: new_event_id(),
            product: Liked { id: product },
            user_id: 1,
        }
    }

    #[test]
    fn rows_come_out_in_commit_order_and_go_once_removed() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(SCHEMA).unwrap();
        let events: Vec<Event> = (1..=5).map(liked).collect();
        for e in &events {
            let tx = conn.transaction().unwrap();
            enqueue(&tx, "shop.likes", e).unwrap();
            tx.commit().unwrap();
        }
        // A rolled-back change leaves no event.
        {
            let tx = conn.transaction().unwrap();
            enqueue(&tx, "shop.likes", &liked(9)).unwrap();
        }
        assert_eq!(pending(&conn).unwrap(), 5);
        let rows = oldest(&conn, 3).unwrap();
        let ids: Vec<&str> = rows.iter().map(|r| r.event_id.as_str()).collect();
        let want: Vec<&str> = events[..3].iter().map(Event::id).collect();
        assert_eq!(ids, want);
        assert_eq!(rows[0].key.as_deref(), Some("1"));
        assert_eq!(rows[0].event_type, "product_liked");
        let r = record(&rows[0]).unwrap();
        assert_eq!(r.value().as_ref(), rows[0].payload.as_bytes());
        remove(&mut conn, &rows.iter().map(|r| r.seq).collect::<Vec<_>>()).unwrap();
        let rest: Vec<String> = oldest(&conn, 10)
            .unwrap()
            .into_iter()
            .map(|r| r.event_id)
            .collect();
        assert_eq!(rest, [events[3].id(), events[4].id()]);
    }

    #[test]
    fn an_event_id_is_written_once() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(SCHEMA).unwrap();
        let e = liked(1);
        let tx = conn.transaction().unwrap();
        enqueue(&tx, "shop.likes", &e).unwrap();
        assert!(enqueue(&tx, "shop.likes", &e).is_err());
    }
}
