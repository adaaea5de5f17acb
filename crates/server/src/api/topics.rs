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
use crate::extract::{Body, PathParams, from_value, parse_json};
use crate::state::AppState;

/// `POST /v1/topics` with `{"name": ..., <TopicConfig keys>}`: 201 and the topic.
pub(super) async fn create(State(state): State<AppState>, body: Body) -> Result<Response, ApiError> {
    let bytes = body.json_only()?;
    let mut object: serde_json::Map<String, Value> = parse_json(&bytes, "")?;
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

#[derive(Serialize)]
pub(super) struct Topics {
    topics: Vec<TopicInfo>,
}

/// `GET /v1/topics`: every topic, by name.
pub(super) async fn list(State(state): State<AppState>) -> Json<Topics> {
    Json(Topics {
        topics: state.broker().list_topics(),
    })
}

/// `GET /v1/topics/{topic}`.
pub(super) async fn describe(
    State(state): State<AppState>,
    PathParams(topic): PathParams<String>,
) -> Result<Json<TopicInfo>, ApiError> {
    Ok(Json(state.broker().describe_topic(&topic)?))
}

/// `DELETE /v1/topics/{topic}`: 204.
pub(super) async fn delete(
    State(state): State<AppState>,
    PathParams(topic): PathParams<String>,
) -> Result<StatusCode, ApiError> {
    let broker = state.broker().clone();
    state
        .detached(async move { broker.delete_topic(&topic).await })
        .await??;
    Ok(StatusCode::NO_CONTENT)
}
