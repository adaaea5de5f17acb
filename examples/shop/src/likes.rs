//! The likes service (seed 002's Flask app, port 8005): keeps its own copy of the products from
//! products' events, records who liked what, and emits `product_liked`.
//!
//! ```text
//! products      id INTEGER PRIMARY KEY (products' id), title, description, image,
//!               version INTEGER (the newest applied), deleted INTEGER (1: a tombstone)
//! product_user  (user_id, product_id) PRIMARY KEY: a user likes a product once; created_ms
//! outbox, processed                        (see `outbox` and `inbox`)
//! ```
//!
//! Product events are applied only when their version is newer than the stored one, so redelivered
//! or reordered events cannot roll a product back; a delete leaves a tombstone with the highest
//! version, so a late `product_created` or `product_updated` cannot bring it back. Tombstones are
//! hidden from `GET /api/products` and cannot be liked.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use anyhow::Context;
use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::routing::{get, post};
use ferry_client::Client;
use rusqlite::{Connection, ErrorCode, OptionalExtension, Transaction, params};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::db::{Db, now_ms};
use crate::error::ApiError;
use crate::events::{
    Deleted, Event, LIKES_GROUP, LIKES_TOPIC, Liked, PRODUCTS_TOPIC, ProductState, new_event_id,
};
use crate::inbox::{Consumer, Effect, Stats};
use crate::outbox::{self, Relay};
use crate::web::{self, json_object, path_id};

/// The service's own tables.
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS products (
    id          INTEGER PRIMARY KEY,
    title       TEXT NOT NULL,
    description TEXT NOT NULL,
    image       TEXT NOT NULL,
    version     INTEGER NOT NULL,
    deleted     INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS product_user (
    user_id    INTEGER NOT NULL,
    product_id INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    PRIMARY KEY (user_id, product_id)
);
";

/// How long likes waits for products' `GET /api/user`.
const PRODUCTS_TIMEOUT: Duration = Duration::from_secs(2);

/// How likes runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// HTTP address.
    pub listen: SocketAddr,
    /// SQLite file.
    pub db: PathBuf,
    /// The products service, asked for a random user id (`GET /api/user`).
    pub products_url: String,
}

/// A product as likes shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Product {
    /// Id (products').
    pub id: i64,
    /// Title.
    pub title: String,
    /// Description.
    pub description: String,
    /// Image URL.
    pub image: String,
}

#[derive(Debug, Clone)]
struct AppState {
    db: Db,
    wake: Arc<Notify>,
    stats: Arc<Stats>,
    published: Arc<AtomicU64>,
    http: reqwest::Client,
    products_url: String,
}

/// Runs the service until SIGINT or SIGTERM (ferry from `FERRY_URL`, `FERRY_TOKEN`, `FERRY_WIRE`).
///
/// # Errors
/// The database cannot be opened, the ferry settings are wrong, the address cannot be bound.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let client = Client::from_env().context("ferry client (FERRY_URL, FERRY_TOKEN, FERRY_WIRE)")?;
    let db = crate::open_db(config.db.clone(), &[outbox::SCHEMA, crate::inbox::SCHEMA, SCHEMA]).await?;
    let wake = Arc::new(Notify::new());
    let relay = Relay::new(db.clone(), client.clone(), wake.clone());
    let consumer = Consumer::new(db.clone(), client.clone(), LIKES_GROUP, PRODUCTS_TOPIC, apply);
    let http = reqwest::Client::builder()
        .timeout(PRODUCTS_TIMEOUT)
        .build()
        .context("HTTP client")?;
    let state = AppState {
        db,
        wake,
        stats: consumer.stats(),
        published: relay.published(),
        http,
        products_url: config.products_url.trim_end_matches('/').to_string(),
    };
    web::serve(
        "likes",
        config.listen,
        router(state),
        relay,
        consumer,
        client.url(),
    )
    .await
}

fn router(state: AppState) -> Router {
    web::finish(
        Router::new()
            .route("/api/products", get(list))
            .route("/api/products/{id}/like", post(like))
            .route("/healthz", get(health))
            .with_state(state),
    )
}

/// Applies an event of `shop.products` if it is newer than what is stored.
fn apply(tx: &Transaction<'_>, event: &Event) -> rusqlite::Result<Effect> {
    let changed = match event {
        Event::ProductCreated { product, .. } | Event::ProductUpdated { product, .. } => upsert(tx, product)?,
        Event::ProductDeleted { product, .. } => tombstone(tx, *product)?,
        Event::ProductLiked { .. } => return Ok(Effect::Ignored),
    };
    Ok(if changed { Effect::Applied } else { Effect::Stale })
}

fn upsert(tx: &Transaction<'_>, p: &ProductState) -> rusqlite::Result<bool> {
    let n = tx.execute(
        "INSERT INTO products (id, title, description, image, version, deleted)
         VALUES (?1, ?2, ?3, ?4, ?5, 0)
         ON CONFLICT (id) DO UPDATE SET title = excluded.title, description = excluded.description,
             image = excluded.image, version = excluded.version, deleted = 0
         WHERE excluded.version > products.version",
        params![p.id, p.title, p.description, p.image, p.version],
    )?;
    Ok(n == 1)
}

fn tombstone(tx: &Transaction<'_>, d: Deleted) -> rusqlite::Result<bool> {
    let n = tx.execute(
        "INSERT INTO products (id, title, description, image, version, deleted)
         VALUES (?1, '', '', '', ?2, 1)
         ON CONFLICT (id) DO UPDATE SET version = excluded.version, deleted = 1
         WHERE excluded.version > products.version",
        params![d.id, d.version],
    )?;
    Ok(n == 1)
}

/// Whether `id` is a product that exists and is not deleted.
fn live(conn: &Connection, id: i64) -> rusqlite::Result<bool> {
    Ok(conn
        .query_row(
            "SELECT 1 FROM products WHERE id = ?1 AND deleted = 0",
            [id],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

fn all(conn: &Connection) -> rusqlite::Result<Vec<Product>> {
    let mut stmt = conn
        .prepare_cached("SELECT id, title, description, image FROM products WHERE deleted = 0 ORDER BY id")?;
    stmt.query_map([], |r| {
        Ok(Product {
            id: r.get(0)?,
            title: r.get(1)?,
            description: r.get(2)?,
            image: r.get(3)?,
        })
    })?
    .collect()
}

/// Records that `user_id` likes `product` and adds `product_liked`, in one transaction.
fn record_like(conn: &mut Connection, product: i64, user_id: i64) -> Result<(), ApiError> {
    let tx = conn.transaction()?;
    // Checked again inside the transaction: the product may have been deleted since the first look.
    if !live(&tx, product)? {
        return Err(ApiError::ProductNotFound(product));
    }
    let inserted = tx.execute(
        "INSERT INTO product_user (user_id, product_id, created_ms) VALUES (?1, ?2, ?3)",
        params![user_id, product, now_ms()],
    );
    match inserted {
        Err(rusqlite::Error::SqliteFailure(e, _)) if e.code == ErrorCode::ConstraintViolation => {
            return Err(ApiError::AlreadyLiked);
        }
        other => {
            other?;
        }
    }
    let event = Event::ProductLiked {
        id: new_event_id(),
        product: Liked { id: product },
        user_id,
    };
    outbox::enqueue(&tx, LIKES_TOPIC, &event)?;
    tx.commit()?;
    Ok(())
}

/// `GET /api/products`: the products likes knows, without deleted ones.
async fn list(State(s): State<AppState>) -> Result<Json<Vec<Product>>, ApiError> {
    Ok(Json(s.db.run(|c| Ok::<_, ApiError>(all(c)?)).await?))
}

/// The user of a like: `{"user_id": N}` from the body, if given.
fn body_user(body: Option<serde_json::Map<String, Value>>) -> Result<Option<i64>, ApiError> {
    let Some(body) = body else {
        return Ok(None);
    };
    if let Some(unknown) = body.keys().find(|k| k.as_str() != "user_id") {
        return Err(ApiError::field(
            unknown.as_str(),
            format!("{unknown} is not a field of a like (user_id)"),
        ));
    }
    match body.get("user_id") {
        None => Ok(None),
        Some(v) => match v.as_i64() {
            Some(id) if id > 0 => Ok(Some(id)),
            _ => Err(ApiError::field("user_id", "user_id must be a positive integer")),
        },
    }
}

/// Asks products for a random user id, as the seed does (there are no sessions).
async fn products_user(s: &AppState) -> Result<i64, ApiError> {
    #[derive(Deserialize)]
    struct User {
        id: i64,
    }
    let unavailable = |message: String| ApiError::Unavailable {
        service: "products",
        message,
    };
    let url = format!("{}/api/user", s.products_url);
    let answer = s
        .http
        .get(&url)
        .send()
        .await
        .map_err(|e| unavailable(format!("GET {url}: {e}")))?;
    let status = answer.status();
    if !status.is_success() {
        return Err(unavailable(format!("GET {url} answered {status}")));
    }
    let user: User = answer
        .json()
        .await
        .map_err(|e| unavailable(format!("GET {url}: {e}")))?;
    Ok(user.id)
}

/// `POST /api/products/{id}/like`, optionally `{"user_id": N}` (else a random user from products):
/// 200 `{"message": "success"}`, 400 the second time for the same user, 404 for an unknown product,
/// 503 when products cannot say who the user is.
async fn like(
    State(s): State<AppState>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let product = path_id(&id)?;
    let given = body_user(json_object(body)?)?;
    if !s.db.run(move |c| Ok::<_, ApiError>(live(c, product)?)).await? {
        return Err(ApiError::ProductNotFound(product));
    }
    let user_id = match given {
        Some(user) => user,
        None => products_user(&s).await?,
    };
    s.db.run(move |c| record_like(c, product, user_id)).await?;
    s.wake.notify_one();
    Ok(Json(json!({"message": "success"})))
}

/// `GET /healthz`: `{"status": "ok", "outbox_pending", "published", "consumer": {...}}`.
async fn health(State(s): State<AppState>) -> Result<Json<Value>, ApiError> {
    Ok(Json(web::health("likes", &s.db, &s.published, &s.stats).await?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inbox::{Outcome, process};

    fn conn() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(&[outbox::SCHEMA, crate::inbox::SCHEMA, SCHEMA].concat())
            .unwrap();
        conn
    }

    fn state(id: i64, title: &str, version: i64) -> ProductState {
        ProductState {
            id,
            title: title.into(),
            description: String::new(),
            image: String::new(),
            version,
        }
    }

    fn send(c: &mut Connection, e: &Event) -> Outcome {
        process(c, &serde_json::to_vec(e).unwrap(), apply).unwrap()
    }

    fn created(p: ProductState) -> Event {
        Event::ProductCreated {
            id: new_event_id(),
            product: p,
        }
    }

    fn updated(p: ProductState) -> Event {
        Event::ProductUpdated {
            id: new_event_id(),
            product: p,
        }
    }

    fn deleted(id: i64, version: i64) -> Event {
        Event::ProductDeleted {
            id: new_event_id(),
            product: Deleted { id, version },
        }
    }

    fn titles(c: &Connection) -> Vec<(i64, String)> {
        all(c).unwrap().into_iter().map(|p| (p.id, p.title)).collect()
    }

    #[test]
    fn events_in_order_build_the_copy() {
        let mut c = conn();
        assert_eq!(
            send(&mut c, &created(state(1, "a", 1))),
            Outcome::Done(Effect::Applied)
        );
        assert_eq!(
            send(&mut c, &updated(state(1, "b", 2))),
            Outcome::Done(Effect::Applied)
        );
        assert_eq!(
            send(&mut c, &created(state(2, "x", 1))),
            Outcome::Done(Effect::Applied)
        );
        assert_eq!(titles(&c), [(1, "b".into()), (2, "x".into())]);
        assert_eq!(send(&mut c, &deleted(2, 2)), Outcome::Done(Effect::Applied));
        assert_eq!(titles(&c), [(1, "b".into())]);
    }

    #[test]
    fn older_versions_arriving_late_change_nothing() {
        let mut c = conn();
        let v1 = created(state(1, "a", 1));
        let v2 = updated(state(1, "b", 2));
        let v3 = updated(state(1, "c", 3));
        // v3 first (v1 and v2 redelivered after it), then v2 and v1.
        assert_eq!(send(&mut c, &v3), Outcome::Done(Effect::Applied));
        assert_eq!(send(&mut c, &v2), Outcome::Done(Effect::Stale));
        assert_eq!(send(&mut c, &v1), Outcome::Done(Effect::Stale));
        assert_eq!(send(&mut c, &v3), Outcome::Duplicate);
        assert_eq!(titles(&c), [(1, "c".into())]);
    }

    #[test]
    fn a_delete_is_final_even_before_the_create_arrives() {
        let mut c = conn();
        // The delete overtakes the create and the update.
        assert_eq!(send(&mut c, &deleted(7, 3)), Outcome::Done(Effect::Applied));
        assert_eq!(
            send(&mut c, &created(state(7, "a", 1))),
            Outcome::Done(Effect::Stale)
        );
        assert_eq!(
            send(&mut c, &updated(state(7, "b", 2))),
            Outcome::Done(Effect::Stale)
        );
        assert!(titles(&c).is_empty());
        assert!(matches!(
            record_like(&mut c, 7, 1),
            Err(ApiError::ProductNotFound(7))
        ));
    }

    #[test]
    fn a_user_likes_a_product_once_and_each_like_writes_one_event() {
        let mut c = conn();
        send(&mut c, &created(state(1, "a", 1)));
        record_like(&mut c, 1, 5).unwrap();
        assert!(matches!(record_like(&mut c, 1, 5), Err(ApiError::AlreadyLiked)));
        record_like(&mut c, 1, 6).unwrap();
        assert!(matches!(
            record_like(&mut c, 2, 5),
            Err(ApiError::ProductNotFound(2))
        ));
        assert_eq!(outbox::pending(&c).unwrap(), 2);
        let likes: i64 = c
            .query_row("SELECT COUNT(*) FROM product_user", [], |r| r.get(0))
            .unwrap();
        assert_eq!(likes, 2);
    }

    #[test]
    fn like_bodies_may_name_the_user() {
        let body = |v: Value| body_user(v.as_object().cloned());
        assert_eq!(body_user(None).unwrap(), None);
        assert_eq!(body(json!({})).unwrap(), None);
        assert_eq!(body(json!({"user_id": 4})).unwrap(), Some(4));
        for bad in [json!({"user_id": 0}), json!({"user_id": "4"}), json!({"user": 4})] {
            assert!(matches!(body(bad), Err(ApiError::InvalidField { .. })));
        }
    }
}
