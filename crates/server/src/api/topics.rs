//! `/v1/topics`: create, list, describe, delete.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::LOCATION;
use axum::response::{IntoResponse, Response};
use ferry_broker::{TopicConfig, TopicInfo};
use serde::Serialize;
use serde_json::Value;

use crate::error::ApiError;
use crate::extract::{Body, PathParams, from_value, parse_object};
use crate::openapi::{CreateTopicSchema, TopicPath};
use crate::state::AppState;

/// `POST /v1/topics` with `{"name": ..., <TopicConfig keys>}`: 201 and the topic.
#[utoipa::path(
    post,
    path = "/v1/topics",
    tag = "topics",
    operation_id = "create_topic",
    summary = "Create a topic",
    description = "A name and the topic's settings; every setting has a default, unknown keys are \
                   refused. `partitions` is fixed at creation.",
    request_body = CreateTopicSchema,
    responses(
        (status = 201, description = "Created.", body = TopicInfo,
         headers(("Location" = String, description = "`/v1/topics/{name}`"))),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 409, response = crate::openapi::Conflict),
        (status = 413, response = crate::openapi::PayloadTooLarge),
        (status = 415, response = crate::openapi::UnsupportedMediaType),
        (status = 422, response = crate::openapi::Unprocessable),
        (status = 503, response = crate::openapi::ShuttingDown),
    ),
)]
pub(super) async fn create(State(state): State<AppState>, body: Body) -> Result<Response, ApiError> {
    let bytes = body.json_only()?;
    let mut object: serde_json::Map<String, Value> = parse_object(&bytes)?;
    let name: String = match object.remove("name") {
        Some(name) => from_value(name, "name")?,
        None => {
            return Err(ApiError::InvalidField {
                field: Some("name".into()),
                message: "missing field `name`".into(),
            });
        }
    };
    // Everything but the name is the topic's config, with its defaults and its refusal of unknown keys.
    let config: TopicConfig = from_value(Value::Object(object), "")?;
    if let Some(e) = state.engine() {
        return super::on_engine::create_topic(&state, e, name, config).await;
    }
    let broker = state.broker().clone();
    let n = name.clone();
    let info = state
        .detached(async move { broker.create_topic(&n, config).await })
        .await??;
    Ok((
        StatusCode::CREATED,
        [(LOCATION, format!("/v1/topics/{name}"))],
        Json(info),
    )
        .into_response())
}

#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = TopicList)]
pub(super) struct Topics {
    topics: Vec<TopicInfo>,
}

/// `GET /v1/topics`: every topic, by name.
#[utoipa::path(
    get,
    path = "/v1/topics",
    tag = "topics",
    operation_id = "list_topics",
    summary = "List topics",
    description = "Every topic with its settings and partitions, by name.",
    responses((status = 200, description = "The topics.", body = Topics)),
)]
pub(super) async fn list(State(state): State<AppState>) -> Result<Json<Topics>, ApiError> {
    let topics = match state.engine() {
        Some(e) => super::on_engine::list_topics(&state, e).await?,
        None => state.broker().list_topics(),
    };
    Ok(Json(Topics { topics }))
}

/// `GET /v1/topics/{topic}`.
#[utoipa::path(
    get,
    path = "/v1/topics/{topic}",
    tag = "topics",
    operation_id = "describe_topic",
    summary = "Describe a topic",
    description = "Its settings and, per partition, the first and next offsets and the size on disk.",
    params(TopicPath),
    responses(
        (status = 200, description = "The topic.", body = TopicInfo),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 404, response = crate::openapi::NotFound),
    ),
)]
pub(super) async fn describe(
    State(state): State<AppState>,
    PathParams(topic): PathParams<String>,
) -> Result<Json<TopicInfo>, ApiError> {
    if let Some(e) = state.engine() {
        return Ok(Json(super::on_engine::describe_topic(&state, e, topic).await?));
    }
    Ok(Json(state.broker().describe_topic(&topic)?))
}

/// `DELETE /v1/topics/{topic}`: 204.
#[utoipa::path(
    delete,
    path = "/v1/topics/{topic}",
    tag = "topics",
    operation_id = "delete_topic",
    summary = "Delete a topic",
    description = "Deletes the topic, its records and the groups' offsets on it.",
    params(TopicPath),
    responses(
        (status = 204, description = "Deleted."),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 404, response = crate::openapi::NotFound),
        (status = 503, response = crate::openapi::ShuttingDown),
    ),
)]
pub(super) async fn delete(
    State(state): State<AppState>,
    PathParams(topic): PathParams<String>,
) -> Result<StatusCode, ApiError> {
    if let Some(e) = state.engine() {
        return super::on_engine::delete_topic(&state, e, topic).await;
    }
    let broker = state.broker().clone();
    state
        .detached(async move { broker.delete_topic(&topic).await })
        .await??;
    Ok(StatusCode::NO_CONTENT)
}
