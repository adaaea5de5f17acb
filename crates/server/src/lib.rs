//! ferry's HTTP API over the embedded broker (axum), under `/v1`.
//!
//! ```text
//! GET    /healthz                                         {"status":"ok"}
//! POST   /v1/topics                                       {"name", ...TopicConfig} -> 201 TopicInfo
//! GET    /v1/topics                                       {"topics":[TopicInfo]}
//! GET    /v1/topics/{topic}                               TopicInfo
//! DELETE /v1/topics/{topic}                               204
//! POST   /v1/topics/{topic}/records                       record | [record] | NDJSON -> {"offsets":[{"partition","offset"}]}
//! GET    /v1/topics/{topic}/partitions/{partition}/records  ?offset=N&max_records&max_bytes&max_wait_ms -> {"records":[...]}
//! GET    /v1/groups/{group}/topics/{topic}/records        ?member_id&generation&max_records&max_bytes&max_wait_ms -> {"records":[...]}
//! POST   /v1/groups/{group}/topics/{topic}/offsets        {"offsets":[{"partition","offset"}],"member_id"?,"generation"?} -> 204
//! GET    /v1/groups/{group}/topics/{topic}/offsets        {"group","topic","lag","generation","members":[...],"partitions":[...]}
//! POST   /v1/groups/{group}/topics/{topic}/seek           {"to": "earliest"|"latest"|{"offset":N}|{"timestamp":MS}, "partition"?}
//! POST   /v1/groups/{group}/topics/{topic}/members        {"member_id"?,"session_timeout_ms"?} -> {"member_id","generation","partitions"}
//! POST   /v1/groups/{group}/topics/{topic}/members/{member}/heartbeat  {"generation"} -> {"member_id","generation","partitions"}
//! DELETE /v1/groups/{group}/topics/{topic}/members/{member}  204
//! PUT    /v1/queues/{group}/topics/{topic}                QueueConfig -> 201 (200 if it existed alike) QueueInfo
//! GET    /v1/queues/{group}/topics/{topic}                {"group","topic","config","dead_letter_topic","depth","in_flight"}
//! POST   /v1/queues/{group}/topics/{topic}/receive        {"max_records"?,"max_wait_ms"?,"visibility_timeout_ms"?} -> {"records":[...]}
//! POST   /v1/queues/{group}/topics/{topic}/ack            {"records":[{"partition","offset"}]} -> 204
//! POST   /v1/queues/{group}/topics/{topic}/nack           {"records":[...],"delay_ms"?} -> 204
//! POST   /v1/queues/{group}/topics/{topic}/extend         {"records":[...],"visibility_timeout_ms"} -> 204
//! POST   /v1/topics/{topic}/subscriptions                 {"name","kind"?,"filter_policy"?,"filter_scope"?,"queue"?} -> 201 (200) SubscriptionInfo
//! GET    /v1/topics/{topic}/subscriptions                 {"subscriptions":[SubscriptionInfo]}
//! DELETE /v1/topics/{topic}/subscriptions/{name}          204
//! GET    /metrics                                         OpenMetrics text; see `metrics.rs`
//! GET    /v1/openapi.json                                 the OpenAPI 3.1 document of these routes; see `openapi.rs`
//! ```
//!
//! This table is checked against the router: `openapi.rs`'s tests fail when a route is missing here or
//! listed here but not routed.
//!
//! With tokens configured ([`ServerOptions::tokens`], `auth.rs`), every route but `/healthz` needs
//! `Authorization: Bearer <token>` (`/metrics` and `/v1/openapi.json` included): 401 `unauthorized`
//! without a valid one, 403 `forbidden` for a read-only token on a method other than GET or HEAD.
//! Without tokens the API is open.
//!
//! Records in and out are described in `records.rs`; errors in `error.rs`; queue groups (leases, acks,
//! dead letters) in `api/queues.rs`; subscriptions and how their filters apply in `api/subscriptions.rs`.
//! The contract, in short:
//! - A publish is answered only once every record is durable under its topic's fsync policy; the
//!   offsets come back in request order.
//! - Every error is `{"error": code, "message", "field"}` with a 4xx status for anything the client can
//!   fix: 400 for what does not parse (JSON, names, parameters), 404 for unknown topics, partitions,
//!   groups, subscriptions and routes, 409 for an existing topic, queue group or subscription and for
//!   settling a record that is not leased, 413 for a record or body too large, 415 for a content
//!   type other than JSON or NDJSON, 422 for values out of range, 503 when shutting down. A 5xx means a
//!   fault of the server.
//! - Shutdown ([`serve`]'s future resolving) stops accepting connections, ends long-polls early with what
//!   they have, lets every request in flight finish (accepted appends complete), then closes the broker.

mod api;
mod auth;
mod error;
mod extract;
mod metrics;
mod openapi;
mod records;
mod state;
mod wire;

use std::future::Future;
use std::io;
use std::sync::Arc;

use axum::Router;
use axum::middleware::from_fn_with_state;
use ferry_broker::{Broker, BrokerOptions};
use tokio::net::TcpListener;

pub use crate::auth::{
    ENV_READ_TOKENS, ENV_READ_TOKENS_FILE, ENV_TOKENS, ENV_TOKENS_FILE, TokenError, Tokens,
};
pub use crate::error::ApiError;
pub use crate::metrics::Metrics;
use crate::state::AppState;

/// Largest request body accepted, in bytes (16 MiB); larger ones get 413 `body_too_large`.
pub const BODY_LIMIT: usize = 16 * 1024 * 1024;

/// Default listen address of `ferry up`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:5555";

/// The OpenAPI 3.1 document of the API, as `GET /v1/openapi.json` serves it, pretty-printed: for
/// writing it to a file or serving it elsewhere without a running server. Generated from the route
/// table, so it lists every route there is.
pub fn openapi_document() -> String {
    // Serializing plain data (strings, maps, numbers) cannot fail.
    serde_json::to_string_pretty(&openapi::document()).unwrap_or_default()
}

/// How a server runs, beyond its broker and listener. `ServerOptions::default()`: no tokens (the API is
/// open) and a fresh set of metrics.
#[derive(Debug, Clone, Default)]
pub struct ServerOptions {
    /// The bearer tokens requests need; none: the API is open. See [`Tokens::from_env`].
    pub tokens: Tokens,
    /// The metrics served at `/metrics`.
    pub metrics: Metrics,
    /// More routes served beside the API (pipelines' `http` sources), behind the same tokens and
    /// metrics; they must not overlap the API's paths.
    pub routes: Option<Router>,
    /// The engine the records live in when it is not the embedded broker (`nats`, `rabbitmq`). Then
    /// the `/v1` routes use it; the subscription routes, and what the engine cannot do, answer 501
    /// `engine_unsupported` instead of showing the embedded broker's state. `/healthz`, `/metrics` and
    /// `routes` work as ever.
    pub engine: Option<EngineRef>,
}

/// An engine other than the embedded broker, and its name.
#[derive(Debug, Clone)]
pub struct EngineRef {
    /// `nats`, `rabbitmq`.
    pub name: String,
    /// The engine.
    pub engine: ferry_broker::engine::SharedEngine,
}

impl ServerOptions {
    /// The options to open the broker with ([`Broker::open_with`]) so that `/metrics` reports the
    /// topics' fsync latency.
    pub fn broker_options(&self) -> BrokerOptions {
        BrokerOptions {
            observer: Some(self.metrics.log_observer()),
        }
    }
}

/// The routes wrapped in the middleware. Layered on the finished router, so that no route added to
/// `api::routes` can miss authentication; `Router::layer` wraps each route, so the metrics middleware
/// sees the matched route template.
fn app(state: AppState, tokens: Tokens, extra: Option<Router>) -> Router {
    let metrics = state.metrics().clone();
    let mut router = api::routes(state);
    if let Some(extra) = extra {
        router = extra.merge(router);
    }
    router
        .layer(from_fn_with_state(Arc::new(tokens), auth::require))
        .layer(from_fn_with_state(metrics, metrics::track))
}

/// The API as a router over `broker`, for embedding in another server or testing with a tower client.
/// Its long-polls never end early: use [`serve`] for a graceful shutdown.
pub fn router(broker: Broker) -> Router {
    router_with(broker, ServerOptions::default())
}

/// [`router`] with options: tokens and metrics.
pub fn router_with(broker: Broker, options: ServerOptions) -> Router {
    let (state, _gone) = AppState::new(broker, options.metrics, options.engine.clone());
    app(state, options.tokens, options.routes)
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
    serve_with(broker, listener, ServerOptions::default(), shutdown).await
}

/// [`serve`] with options: tokens and metrics.
///
/// # Errors
/// An I/O error of the listener.
pub async fn serve_with<F>(
    broker: Broker,
    listener: TcpListener,
    options: ServerOptions,
    shutdown: F,
) -> io::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    serve_listeners(broker, listener, None, options, shutdown).await
}

/// [`serve_with`], and the wire protocol (`docs/protocol.md`) on `wire`: publish and queue groups over
/// framed binary TCP, behind the same tokens, on the same broker or engine; shut down with the HTTP API.
///
/// # Errors
/// An I/O error of the listener.
pub async fn serve_with_wire<F>(
    broker: Broker,
    listener: TcpListener,
    wire: TcpListener,
    options: ServerOptions,
    shutdown: F,
) -> io::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    serve_listeners(broker, listener, Some(wire), options, shutdown).await
}

async fn serve_listeners<F>(
    broker: Broker,
    listener: TcpListener,
    wire: Option<TcpListener>,
    options: ServerOptions,
    shutdown: F,
) -> io::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    if options.tokens.is_enabled() {
        tracing::info!(
            read_write = options.tokens.read_write_count(),
            read_only = options.tokens.read_only_count(),
            "bearer tokens required"
        );
    }
    let (state, mut gone) = AppState::new(broker.clone(), options.metrics, options.engine.clone());
    let token = state.shutdown().clone();
    let tasks = state.tasks().clone();
    let wire =
        wire.map(|wire| tokio::spawn(wire::serve(wire, state.clone(), Arc::new(options.tokens.clone()))));
    let app = app(state, options.tokens, options.routes);
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!("shutting down: no new connections, finishing requests in flight");
            token.cancel();
        })
        .await;
    if let Some(wire) = wire {
        // It stops with the same token; a panic in it is the only error, and its connections are gone.
        if let Err(e) = wire.await {
            tracing::error!(error = %e, "the wire protocol's listener failed");
        }
    }
    served?;
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
