//! ferry's HTTP API over the embedded broker (axum), under `/v1`.
//!
//! ```text
//! GET    /healthz                                         {"status":"ok"}
//! POST   /v1/topics                                       {"name", ...TopicConfig} -> 201 TopicInfo
//! GET    /v1/topics                                       {"topics":[TopicInfo]}
//! GET    /v1/topics/{topic}                               TopicInfo
//! DELETE /v1/topics/{topic}                               204
//! POST   /v1/topics/{topic}/records                       record | [record] | NDJSON -> {"offsets":[{"partition","offset"}]}
//! GET    /v1/topics/{topic}/partitions/{p}/records        ?offset=N&max_records&max_bytes&max_wait_ms -> {"records":[...]}
//! GET    /v1/groups/{group}/topics/{topic}/records        ?max_records&max_bytes&max_wait_ms -> {"records":[...]}
//! POST   /v1/groups/{group}/topics/{topic}/offsets        {"offsets":[{"partition","offset"}]} -> 204
//! GET    /v1/groups/{group}/topics/{topic}/offsets        {"group","topic","lag","partitions":[...]}
//! POST   /v1/groups/{group}/topics/{topic}/seek           {"to": "earliest"|"latest"|{"offset":N}|{"timestamp":MS}, "partition"?}
//! ```
//!
//! Records in and out are described in `records.rs`; errors in `error.rs`. The contract, in short:
//! - A publish is answered only once every record is durable under its topic's fsync policy; the
//!   offsets come back in request order.
//! - Every error is `{"error": code, "message", "field"}` with a 4xx status for anything the client can
//!   fix: 400 for what does not parse (JSON, names, parameters), 404 for unknown topics, partitions,
//!   groups and routes, 409 for an existing topic, 413 for a record or body too large, 415 for a content
//!   type other than JSON or NDJSON, 422 for values out of range, 503 when shutting down. A 5xx means a
//!   fault of the server.
//! - Shutdown ([`serve`]'s future resolving) stops accepting connections, ends long-polls early with what
//!   they have, lets every request in flight finish (accepted appends complete), then closes the broker.

mod api;
mod error;
mod extract;
mod records;
mod state;

use std::future::Future;
use std::io;

use axum::Router;
use ferry_broker::Broker;
use tokio::net::TcpListener;

pub use crate::error::ApiError;
use crate::state::AppState;

/// Largest request body accepted, in bytes (16 MiB); larger ones get 413 `body_too_large`.
pub const BODY_LIMIT: usize = 16 * 1024 * 1024;

/// Default listen address of `ferry up`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:5555";

/// The API as a router over `broker`, for embedding in another server or testing with a tower client.
/// Its long-polls never end early: use [`serve`] for a graceful shutdown.
pub fn router(broker: Broker) -> Router {
    let (state, _gone) = AppState::new(broker);
    api::routes(state)
}

/// Serves the API on `listener` until `shutdown` resolves, then shuts down gracefully: stops accepting,
/// ends long-polls early, waits for every request in flight and every broker operation they started,
/// and finally drops `broker` (off the async runtime, since closing its logs joins their writers). The
/// broker's files are closed when this returns, unless the caller kept a clone of it.
///
/// # Errors
/// An I/O error of the listener.
pub async fn serve<F>(broker: Broker, listener: TcpListener, shutdown: F) -> io::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    let (state, mut gone) = AppState::new(broker.clone());
    let token = state.shutdown().clone();
    let tasks = state.tasks().clone();
    let app = api::routes(state);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!("shutting down: no new connections, finishing requests in flight");
            token.cancel();
        })
        .await?;
    // No request is running any more; broker operations they detached may still be.
    tasks.close();
    tasks.wait().await;
    // axum returns as connections finish; the last ones may still be dropping their copy of the state.
    let _ = gone.recv().await;
    tokio::task::spawn_blocking(move || drop(broker))
        .await
        .map_err(io::Error::other)?;
    tracing::info!("shut down");
    Ok(())
}
