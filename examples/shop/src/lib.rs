//! Seed 002 on ferry: two microservices, **products** and **likes**, each owning its SQLite database
//! and kept in sync by domain events through ferry.
//!
//! ```text
//!          POST/PUT/DELETE /api/products           POST /api/products/{id}/like
//!                   │                                        │
//!   ┌───────────────▼──────────────┐        ┌────────────────▼─────────────┐
//!   │ products  (products.sqlite3) │        │ likes  (likes.sqlite3)       │
//!   │ change + outbox row: one tx  │        │ like + outbox row: one tx    │
//!   │ relay ──► shop.products ─────┼───────►│ consumer (group `likes`)     │
//!   │ consumer (group `products`) ◄┼────────┼── shop.likes ◄── relay       │
//!   └──────────────────────────────┘        └──────────────────────────────┘
//! ```
//!
//! Done the way it should be: each event is written in the same transaction as the change that caused
//! it ([`outbox`]), carries an id, and is applied once by its consumer ([`inbox`]), so a crash or a
//! ferry restart between the two neither loses nor doubles an event. Product events carry the whole
//! state and a version, so likes tolerates redelivery in any order ([`likes`]).
//!
//! Only the ferry client's HTTP API (or wire protocol) is used, so the services run unchanged on the
//! embedded engine, NATS JetStream and RabbitMQ.

pub mod db;
pub mod error;
pub mod events;
pub mod inbox;
pub mod likes;
pub mod outbox;
pub mod products;
pub mod retry;
pub mod web;

use std::path::PathBuf;

use anyhow::Context;

/// Largest request body, in bytes (a larger one is 413).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Opens a service's database with its schema parts, off the async runtime.
///
/// # Errors
/// The file cannot be opened or the schema not applied.
pub async fn open_db(path: PathBuf, schema: &[&str]) -> anyhow::Result<db::Db> {
    let schema = schema.concat();
    let shown = path.display().to_string();
    tokio::task::spawn_blocking(move || db::Db::open(&path, &schema))
        .await
        .context("opening the database")?
        .with_context(|| format!("--db {shown}"))
}
