//! The routes of the API and their handlers, one module per resource.

mod groups;
mod records;
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
