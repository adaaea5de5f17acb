//! The products service (seed 002's Django app, port 8000): owns the products and the users, emits
//! `product_created`, `product_updated` and `product_deleted`, and counts likes from `product_liked`.
//!
//! ```text
//! products  id INTEGER PRIMARY KEY AUTOINCREMENT (never reused), title, description, image,
//!           likes INTEGER (raised once per product_liked event), version INTEGER (1, +1 per change)
//! users     id INTEGER PRIMARY KEY, name   (seeded with 10 users)
//! outbox, processed                        (see `outbox` and `inbox`)
//! ```
//!
//! Every change and its event are one transaction; a deleted product's row is gone, and its delete
//! event carries the version after its last one, so that consumers can tell it is the latest.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use anyhow::Context;
use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use ferry_client::Client;
use rusqlite::{Connection, OptionalExtension, Row, Transaction, params};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::db::Db;
use crate::error::ApiError;
use crate::events::{
    Deleted, Event, LIKES_TOPIC, PRODUCTS_GROUP, PRODUCTS_TOPIC, ProductState, new_event_id,
};
use crate::inbox::{Consumer, Effect, Stats};
use crate::outbox::{self, Relay};
use crate::web::{self, ProductInput, json_object, path_id, product_input};

/// The service's own tables.
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS products (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    title       TEXT NOT NULL,
    description TEXT NOT NULL,
    image       TEXT NOT NULL,
    likes       INTEGER NOT NULL DEFAULT 0,
    version     INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE IF NOT EXISTS users (
    id   INTEGER PRIMARY KEY,
    name TEXT NOT NULL
);
INSERT OR IGNORE INTO users (id, name) VALUES
    (1, 'ada'), (2, 'brian'), (3, 'claude'), (4, 'dennis'), (5, 'edsger'),
    (6, 'frances'), (7, 'grace'), (8, 'hedy'), (9, 'ken'), (10, 'linus');
";

/// How products runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// HTTP address.
    pub listen: SocketAddr,
    /// SQLite file.
    pub db: PathBuf,
}

/// A product as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Product {
    /// Id.
    pub id: i64,
    /// Title.
    pub title: String,
    /// Description.
    pub description: String,
    /// Image URL.
    pub image: String,
    /// Likes counted from `product_liked` events.
    pub likes: i64,
}

impl Product {
    /// The product as the API shows it: its state and its likes.
    fn of(state: ProductState, likes: i64) -> Self {
        Self {
            id: state.id,
            title: state.title,
            description: state.description,
            image: state.image,
            likes,
        }
    }
}

#[derive(Debug, Clone)]
struct AppState {
    db: Db,
    wake: Arc<Notify>,
    stats: Arc<Stats>,
    published: Arc<AtomicU64>,
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
    let consumer = Consumer::new(db.clone(), client.clone(), PRODUCTS_GROUP, LIKES_TOPIC, apply);
    let state = AppState {
        db,
        wake,
        stats: consumer.stats(),
        published: relay.published(),
    };
    web::serve(
        "products",
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
            .route("/api/products", get(list).post(create))
            .route("/api/products/{id}", get(show).put(update).delete(remove))
            .route("/api/user", get(random_user))
            .route("/healthz", get(health))
            .with_state(state),
    )
}

/// Applies an event of `shop.likes`: a like raises the product's count by one.
fn apply(tx: &Transaction<'_>, event: &Event) -> rusqlite::Result<Effect> {
    match event {
        Event::ProductLiked { product, .. } => {
            let n = tx.execute(
                "UPDATE products SET likes = likes + 1 WHERE id = ?1",
                [product.id],
            )?;
            if n == 0 {
                tracing::info!(
                    product = product.id,
                    "a like of a product deleted meanwhile; nothing to count"
                );
                return Ok(Effect::Ignored);
            }
            Ok(Effect::Applied)
        }
        _ => Ok(Effect::Ignored),
    }
}

fn product(r: &Row<'_>) -> rusqlite::Result<Product> {
    Ok(Product {
        id: r.get(0)?,
        title: r.get(1)?,
        description: r.get(2)?,
        image: r.get(3)?,
        likes: r.get(4)?,
    })
}

fn all(conn: &Connection) -> rusqlite::Result<Vec<Product>> {
    let mut stmt =
        conn.prepare_cached("SELECT id, title, description, image, likes FROM products ORDER BY id")?;
    stmt.query_map([], product)?.collect()
}

fn one(conn: &Connection, id: i64) -> rusqlite::Result<Option<Product>> {
    conn.query_row(
        "SELECT id, title, description, image, likes FROM products WHERE id = ?1",
        [id],
        product,
    )
    .optional()
}

/// Inserts a product and its `product_created` event.
fn insert(conn: &mut Connection, input: ProductInput) -> Result<Product, ApiError> {
    let tx = conn.transaction()?;
    tx.execute(
        "INSERT INTO products (title, description, image, likes, version) VALUES (?1, ?2, ?3, 0, 1)",
        params![input.title, input.description, input.image],
    )?;
    let id = tx.last_insert_rowid();
    let state = ProductState {
        id,
        title: input.title,
        description: input.description,
        image: input.image,
        version: 1,
    };
    let event = Event::ProductCreated {
        id: new_event_id(),
        product: state.clone(),
    };
    outbox::enqueue(&tx, PRODUCTS_TOPIC, &event)?;
    tx.commit()?;
    Ok(Product::of(state, 0))
}

/// Replaces a product's fields, raises its version and adds `product_updated`.
fn replace(conn: &mut Connection, id: i64, input: ProductInput) -> Result<Product, ApiError> {
    let tx = conn.transaction()?;
    let changed: Option<(i64, i64)> = tx
        .query_row(
            "UPDATE products SET title = ?2, description = ?3, image = ?4, version = version + 1
             WHERE id = ?1 RETURNING likes, version",
            params![id, input.title, input.description, input.image],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let Some((likes, version)) = changed else {
        return Err(ApiError::ProductNotFound(id));
    };
    let state = ProductState {
        id,
        title: input.title,
        description: input.description,
        image: input.image,
        version,
    };
    outbox::enqueue(
        &tx,
        PRODUCTS_TOPIC,
        &Event::ProductUpdated {
            id: new_event_id(),
            product: state.clone(),
        },
    )?;
    tx.commit()?;
    Ok(Product::of(state, likes))
}

/// Deletes a product and adds `product_deleted` with the version after its last.
fn delete(conn: &mut Connection, id: i64) -> Result<(), ApiError> {
    let tx = conn.transaction()?;
    let version: Option<i64> = tx
        .query_row(
            "DELETE FROM products WHERE id = ?1 RETURNING version",
            [id],
            |r| r.get(0),
        )
        .optional()?;
    let Some(version) = version else {
        return Err(ApiError::ProductNotFound(id));
    };
    let event = Event::ProductDeleted {
        id: new_event_id(),
        product: Deleted {
            id,
            version: version + 1,
        },
    };
    outbox::enqueue(&tx, PRODUCTS_TOPIC, &event)?;
    tx.commit()?;
    Ok(())
}

/// `GET /api/products`: every product with its likes.
async fn list(State(s): State<AppState>) -> Result<Json<Vec<Product>>, ApiError> {
    Ok(Json(s.db.run(|c| Ok::<_, ApiError>(all(c)?)).await?))
}

/// `POST /api/products` `{"title", "description"?, "image"?}`: 201 with the product.
async fn create(
    State(s): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Product>), ApiError> {
    let input = product_input(json_object(body)?)?;
    let product = s.db.run(move |c| insert(c, input)).await?;
    s.wake.notify_one();
    Ok((StatusCode::CREATED, Json(product)))
}

/// `GET /api/products/{id}`.
async fn show(State(s): State<AppState>, Path(id): Path<String>) -> Result<Json<Product>, ApiError> {
    let id = path_id(&id)?;
    let found = s.db.run(move |c| Ok::<_, ApiError>(one(c, id)?)).await?;
    found.map(Json).ok_or(ApiError::ProductNotFound(id))
}

/// `PUT /api/products/{id}` `{"title", "description"?, "image"?}`: 202 with the product.
async fn update(
    State(s): State<AppState>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Product>), ApiError> {
    let id = path_id(&id)?;
    let input = product_input(json_object(body)?)?;
    let product = s.db.run(move |c| replace(c, id, input)).await?;
    s.wake.notify_one();
    Ok((StatusCode::ACCEPTED, Json(product)))
}

/// `DELETE /api/products/{id}`: 204.
async fn remove(State(s): State<AppState>, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    let id = path_id(&id)?;
    s.db.run(move |c| delete(c, id)).await?;
    s.wake.notify_one();
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/user`: `{"id": N}`, a random user (there are no sessions, as in the seed).
async fn random_user(State(s): State<AppState>) -> Result<Json<Value>, ApiError> {
    let id: Option<i64> =
        s.db.run(|c| {
            Ok::<_, ApiError>(
                c.query_row("SELECT id FROM users ORDER BY RANDOM() LIMIT 1", [], |r| r.get(0))
                    .optional()?,
            )
        })
        .await?;
    let id = id.ok_or_else(|| ApiError::Internal("the users table is empty".into()))?;
    Ok(Json(json!({"id": id})))
}

/// `GET /healthz`: `{"status": "ok", "outbox_pending", "published", "consumer": {...}}`.
async fn health(State(s): State<AppState>) -> Result<Json<Value>, ApiError> {
    Ok(Json(
        web::health("products", &s.db, &s.published, &s.stats).await?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Liked;
    use crate::inbox::{Outcome, process};

    fn conn() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(&[outbox::SCHEMA, crate::inbox::SCHEMA, SCHEMA].concat())
            .unwrap();
        conn
    }

    fn input(title: &str) -> ProductInput {
        ProductInput {
            title: title.into(),
            description: "d".into(),
            image: "i".into(),
        }
    }

    fn events(conn: &Connection) -> Vec<Value> {
        let mut stmt = conn.prepare("SELECT payload FROM outbox ORDER BY seq").unwrap();
        stmt.query_map([], |r| r.get::<_, String>(0))
            .unwrap()
            .map(|p| serde_json::from_str(&p.unwrap()).unwrap())
            .collect()
    }

    #[test]
    fn each_change_writes_its_event_with_the_next_version() {
        let mut c = conn();
        let p = insert(&mut c, input("a")).unwrap();
        replace(&mut c, p.id, input("b")).unwrap();
        delete(&mut c, p.id).unwrap();
        let e = events(&c);
        let kinds: Vec<&str> = e.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["product_created", "product_updated", "product_deleted"]);
        let versions: Vec<i64> = e
            .iter()
            .map(|e| e["product"]["version"].as_i64().unwrap())
            .collect();
        assert_eq!(versions, [1, 2, 3]);
        assert_eq!(e[1]["product"]["title"], "b");
        assert!(one(&c, p.id).unwrap().is_none());
        // Unknown products are 404 and write nothing.
        assert!(matches!(
            replace(&mut c, 99, input("x")),
            Err(ApiError::ProductNotFound(99))
        ));
        assert!(matches!(delete(&mut c, p.id), Err(ApiError::ProductNotFound(_))));
        assert_eq!(events(&c).len(), 3);
        // Ids are never reused.
        assert!(insert(&mut c, input("c")).unwrap().id > p.id);
    }

    #[test]
    fn a_like_counts_once_however_often_it_comes() {
        let mut c = conn();
        let p = insert(&mut c, input("a")).unwrap();
        let like = serde_json::to_vec(&Event::ProductLiked {
            id: new_event_id(),
            product: Liked { id: p.id },
            user_id: 3,
        })
        .unwrap();
        assert_eq!(
            process(&mut c, &like, apply).unwrap(),
            Outcome::Done(Effect::Applied)
        );
        assert_eq!(process(&mut c, &like, apply).unwrap(), Outcome::Duplicate);
        assert_eq!(one(&c, p.id).unwrap().unwrap().likes, 1);
        let gone = serde_json::to_vec(&Event::ProductLiked {
            id: new_event_id(),
            product: Liked { id: 999 },
            user_id: 3,
        })
        .unwrap();
        assert_eq!(
            process(&mut c, &gone, apply).unwrap(),
            Outcome::Done(Effect::Ignored)
        );
    }

    #[test]
    fn users_are_seeded_once() {
        let c = conn();
        c.execute_batch(SCHEMA).unwrap();
        let n: i64 = c
            .query_row("SELECT COUNT(*) FROM users", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 10);
    }
}
