//! A service's own SQLite database, used from async code without blocking the runtime.
//!
//! Invariants:
//! - One connection per process, behind a mutex, used only on Tokio's blocking pool
//!   ([`Db::run`]): SQLite serialises writers anyway, and one connection makes every transaction of
//!   the service strictly ordered. The lock is never held across an `.await`.
//! - WAL journal with `synchronous = FULL`: a committed transaction (a change and its outbox row) is
//!   durable before the HTTP answer goes out, on a process crash and on power loss alike; readers of
//!   the file (the tests, `sqlite3`) do not block the writer.
//! - The schema is created with `IF NOT EXISTS` when the file is opened, so a restart finds its data.

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rusqlite::Connection;

/// Why a database call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DbError {
    /// SQLite refused or failed.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// Opening the file failed.
    #[error("database `{path}`: {source}")]
    Open {
        /// The file.
        path: String,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },
    /// The blocking task running the call panicked or was cancelled.
    #[error("database task failed: {0}")]
    Task(String),
}

/// A service's database. Cheap to clone; clones share the connection.
#[derive(Debug, Clone)]
pub struct Db {
    conn: Arc<Mutex<Connection>>,
}

/// How long a statement waits for a lock held by another connection (a reader of the file) before it
/// fails with `SQLITE_BUSY`.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

impl Db {
    /// Opens (creating if missing) the database at `path` and applies `schema`, SQL statements that
    /// must be idempotent (`CREATE TABLE IF NOT EXISTS`, `INSERT OR IGNORE`).
    ///
    /// # Errors
    /// [`DbError::Open`] when the file cannot be opened or the schema not applied.
    pub fn open(path: &Path, schema: &str) -> Result<Self, DbError> {
        let open = || -> rusqlite::Result<Connection> {
            let conn = Connection::open(path)?;
            conn.busy_timeout(BUSY_TIMEOUT)?;
            // `journal_mode` answers with the mode set; a file that cannot be WAL stays as it was.
            let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
            if !mode.eq_ignore_ascii_case("wal") {
                tracing::warn!(path = %path.display(), %mode, "the database is not in WAL mode");
            }
            conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")?;
            conn.execute_batch(schema)?;
            Ok(conn)
        };
        let conn = open().map_err(|source| DbError::Open {
            path: path.display().to_string(),
            source,
        })?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Runs `f` with the connection on the blocking pool and returns what it returns.
    ///
    /// # Errors
    /// What `f` returns, and [`DbError::Task`] (converted into `E`) if the task panicked.
    pub async fn run<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut Connection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
    {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            // A panic inside a transaction rolled it back when the transaction was dropped, so the
            // connection is consistent even when the mutex is poisoned.
            let mut conn = conn.lock().unwrap_or_else(PoisonError::into_inner);
            f(&mut conn)
        })
        .await
        .map_err(|e| E::from(DbError::Task(e.to_string())))?
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
