//! The routes of the API and their handlers, one module per resource.

mod groups;
mod queues;
mod records;
mod subscriptions;
mod topics;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{Method, Uri};
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::BODY_LIMIT;
use crate::error::ApiError;
use crate::state::AppState;

/// Every route. Bodies larger than [`BODY_LIMIT`] are refused with 413 before any handler parses them.
pub(crate) fn routes(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(health))
        .route("/metrics", get(crate::metrics::scrape))
        .route("/v1/topics", get(topics::list).post(topics::create))
        .route("/v1/topics/{topic}", get(topics::describe).delete(topics::delete))
        .route("/v1/topics/{topic}/records", post(records::publish))
        .route(
            "/v1/topics/{topic}/partitions/{partition}/records",
            get(records::fetch),
        )
        .route("/v1/groups/{group}/topics/{topic}/records", get(groups::fetch))
        .route(
            "/v1/groups/{group}/topics/{topic}/offsets",
            get(groups::offsets).post(groups::commit),
        )
        .route("/v1/groups/{group}/topics/{topic}/seek", post(groups::seek))
        .route("/v1/groups/{group}/topics/{topic}/members", post(groups::join))
        .route(
            "/v1/groups/{group}/topics/{topic}/members/{member}",
            axum::routing::delete(groups::leave),
        )
        .route(
            "/v1/groups/{group}/topics/{topic}/members/{member}/heartbeat",
            post(groups::heartbeat),
        )
        .route(
            "/v1/queues/{group}/topics/{topic}",
            get(queues::describe).put(queues::create),
        )
        .route("/v1/queues/{group}/topics/{topic}/receive", post(queues::receive))
        .route("/v1/queues/{group}/topics/{topic}/ack", post(queues::ack))
        .route("/v1/queues/{group}/topics/{topic}/nack", post(queues::nack))
        .route("/v1/queues/{group}/topics/{topic}/extend", post(queues::extend))
        .route(
            "/v1/topics/{topic}/subscriptions",
            get(subscriptions::list).post(subscriptions::create),
        )
        .route(
            "/v1/topics/{topic}/subscriptions/{name}",
            axum::routing::delete(subscriptions::delete),
        )
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

async fn health() -> axum::Json<Value> {
    axum::Json(json!({"status": "ok"}))
}

async fn route_not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::RouteNotFound {
        method,
        path: uri.path().to_string(),
    }
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::MethodNotAllowed {
        method,
        path: uri.path().to_string(),
    }
}
