//! The routes of the API and their handlers, one module per resource.

mod groups;
pub(crate) mod on_engine;
pub(crate) mod queues;
pub(crate) mod records;
mod subscriptions;
mod topics;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{Method, Uri};
use axum::response::Response;
use serde::Serialize;
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::BODY_LIMIT;
use crate::error::ApiError;
use crate::openapi::ApiDoc;
use crate::state::AppState;

/// Every route, each with its entry in the OpenAPI document. `routes!` routes a handler on the method and
/// path of its `#[utoipa::path]` annotation, so the document and the router cannot disagree; keep one
/// path per `routes!` (it routes every handler of one call on every path of that call).
pub(crate) fn api() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(health))
        .routes(routes!(metrics))
        .routes(routes!(crate::openapi::serve))
        .routes(routes!(topics::list, topics::create))
        .routes(routes!(topics::describe, topics::delete))
        .routes(routes!(records::publish))
        .routes(routes!(records::fetch))
        .routes(routes!(groups::fetch))
        .routes(routes!(groups::offsets, groups::commit))
        .routes(routes!(groups::seek))
        .routes(routes!(groups::join))
        .routes(routes!(groups::leave))
        .routes(routes!(groups::heartbeat))
        .routes(routes!(queues::describe, queues::create))
        .routes(routes!(queues::receive))
        .routes(routes!(queues::ack))
        .routes(routes!(queues::nack))
        .routes(routes!(queues::extend))
        .routes(routes!(subscriptions::list, subscriptions::create))
        .routes(routes!(subscriptions::delete))
}

/// Every route. Bodies larger than [`BODY_LIMIT`] are refused with 413 before any handler parses them.
pub(crate) fn routes(state: AppState) -> Router {
    let (router, _document) = api().split_for_parts();
    router
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct Health {
    /// Always `ok`.
    #[schema(example = "ok")]
    status: &'static str,
}

/// `GET /healthz`.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "server",
    operation_id = "health",
    summary = "Liveness",
    description = "Answers 200 while the server accepts requests. Never needs a token.",
    responses((status = 200, description = "The server is up.", body = Health)),
)]
async fn health() -> axum::Json<Health> {
    axum::Json(Health { status: "ok" })
}

/// `GET /metrics`: see `metrics.rs`.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "server",
    operation_id = "metrics",
    summary = "Metrics in the OpenMetrics text format",
    description = "Counters and histograms of records, bytes, requests and fsyncs, per topic and route;                    see the `ferry_` metric families.",
    responses((status = 200, description = "OpenMetrics text.",
               content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8", body = String)),
)]
async fn metrics(state: State<AppState>) -> Response {
    crate::metrics::scrape(state).await
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use ferry_broker::FetchLimits;
    use serde_json::Value;

    /// `(minimum, maximum, default)` of a schema, as integers.
    fn range(schema: &Value) -> (Option<u64>, Option<u64>, Option<u64>) {
        (
            schema["minimum"].as_u64(),
            schema["maximum"].as_u64(),
            schema["default"].as_u64(),
        )
    }

    /// `routes!` is what keeps the router and the document together; a route added with
    /// `OpenApiRouter::route`, `Router::route`, `nest` or `merge` would be in neither the document nor
    /// `tests/openapi.rs`'s walk of it. axum cannot list a router's routes, so this reads the source.
    #[test]
    fn routes_are_added_only_through_routes_macro() {
        let source = include_str!("mod.rs");
        let body = |signature: &str| {
            let start = source.find(signature).unwrap();
            let end = start + source[start..].find("\n}\n").unwrap();
            &source[start..end]
        };
        let api = body("pub(crate) fn api()");
        let calls: Vec<&str> = api
            .lines()
            .map(str::trim)
            .filter(|line| line.starts_with('.'))
            .collect();
        assert!(calls.len() >= 20, "{calls:?}");
        for call in calls {
            assert!(
                call.starts_with(".routes(routes!("),
                "`{call}` adds a route without routes!"
            );
        }
        let routes = body("pub(crate) fn routes(");
        for forbidden in [".route(", ".route_service(", ".nest", ".merge("] {
            assert!(!routes.contains(forbidden), "routes() calls {forbidden}");
        }
    }

    /// On an engine other than the embedded one the handlers must not show the embedded broker's state:
    /// every handler that reads `state.broker()` first branches on `state.engine()`. Read from the source.
    #[test]
    fn every_handler_that_uses_the_broker_branches_on_the_engine() {
        let files = [
            include_str!("topics.rs"),
            include_str!("records.rs"),
            include_str!("groups.rs"),
            include_str!("queues.rs"),
            include_str!("subscriptions.rs"),
        ];
        let mut handlers = 0;
        for source in files {
            for (i, _) in source.match_indices("pub(super) async fn ") {
                let rest = &source[i + 1..];
                let body = &rest[..rest.find("\npub(super) async fn ").unwrap_or(rest.len())];
                handlers += 1;
                if let Some(broker) = body.find("broker()") {
                    let engine = body.find("engine()");
                    assert!(
                        engine.is_some_and(|e| e < broker),
                        "{} reads the broker without branching on the engine first",
                        &body[..body.find('(').unwrap_or(40)]
                    );
                }
            }
        }
        assert!(handlers >= 20, "{handlers}");
    }

    #[test]
    fn query_parameters_are_the_ones_the_handlers_read_with_their_ranges() {
        let doc = serde_json::to_value(crate::openapi::document()).unwrap();
        let limits = FetchLimits::default();
        let fetch = [
            (
                "/v1/topics/{topic}/partitions/{partition}/records",
                super::records::FETCH_PARAMS,
            ),
            (
                "/v1/groups/{group}/topics/{topic}/records",
                super::groups::GROUP_FETCH_PARAMS,
            ),
        ];
        for (path, read) in fetch {
            let params: Vec<&Value> = doc["paths"][path]["get"]["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|p| p["in"] == "query")
                .collect();
            let names: BTreeSet<&str> = params.iter().map(|p| p["name"].as_str().unwrap()).collect();
            assert_eq!(names, read.iter().copied().collect(), "{path}");
            let schema = |name: &str| &params.iter().find(|p| p["name"] == name).unwrap()["schema"];
            assert_eq!(
                range(schema("max_records")),
                (
                    Some(1),
                    Some(super::records::MAX_RECORDS),
                    Some(limits.max_records as u64)
                ),
                "{path}"
            );
            assert_eq!(
                range(schema("max_bytes")),
                (
                    Some(1),
                    Some(super::records::MAX_BYTES),
                    Some(limits.max_bytes as u64)
                ),
                "{path}"
            );
            assert_eq!(
                range(schema("max_wait_ms")),
                (Some(0), Some(super::records::MAX_WAIT_MS), Some(0)),
                "{path}"
            );
        }
    }

    #[test]
    fn body_ranges_are_the_ones_the_handlers_check() {
        let doc = serde_json::to_value(crate::openapi::document()).unwrap();
        let property =
            |schema: &str, key: &str| range(&doc["components"]["schemas"][schema]["properties"][key]);
        let visibility = super::queues::MAX_VISIBILITY_MS;
        assert_eq!(
            property("ReceiveRequest", "max_records"),
            (
                Some(1),
                Some(super::queues::MAX_RECEIVE),
                Some(super::queues::DEFAULT_RECEIVE)
            )
        );
        assert_eq!(
            property("ReceiveRequest", "max_wait_ms"),
            (Some(0), Some(super::records::MAX_WAIT_MS), Some(0))
        );
        assert_eq!(
            property("ReceiveRequest", "visibility_timeout_ms"),
            (Some(1), Some(visibility), None)
        );
        assert_eq!(
            property("NackRequest", "delay_ms"),
            (Some(0), Some(visibility), Some(0))
        );
        assert_eq!(
            property("ExtendRequest", "visibility_timeout_ms"),
            (Some(1), Some(visibility), None)
        );
        let sessions = super::groups::SESSION_TIMEOUT_MS;
        assert_eq!(
            property("JoinRequest", "session_timeout_ms"),
            (
                Some(*sessions.start()),
                Some(*sessions.end()),
                Some(super::groups::DEFAULT_SESSION_TIMEOUT_MS)
            )
        );
    }
}
