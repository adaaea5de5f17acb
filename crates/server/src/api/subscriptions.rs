//! `/v1/topics/{topic}/subscriptions`: SNS-like fan-out of a topic to named queue or stream groups, each
//! with an optional filter policy.
//!
//! ```text
//! POST   /v1/topics/{topic}/subscriptions          {"name", "kind"?, "filter_policy"?, "filter_scope"?, "queue"?}
//!                                                  -> 201 | 200 SubscriptionInfo
//! GET    /v1/topics/{topic}/subscriptions          {"subscriptions": [SubscriptionInfo]}
//! DELETE /v1/topics/{topic}/subscriptions/{name}   204
//! ```
//!
//! SubscriptionInfo is `{"topic", "name", "kind", "filter_policy", "filter_scope", "queue"}`, `queue` (the
//! group's `QueueConfig`) for kind `queue` only. In a request `kind` is `queue` (default) or `stream`,
//! `filter_scope` is `body` (default) or `headers`, `filter_policy` is an SNS policy (see the broker's
//! `filter.rs`; `null` or absent lets every record through) and `queue` may only be given for kind `queue`.
//!
//! How a subscription named `S` on topic `T` is consumed, and how its filter applies:
//! - Kind `queue`: through `/v1/queues/S/topics/T/...` (receive, ack, nack, extend). A receive tests each
//!   record it reaches for the first time against the policy; one that does not match is marked done for
//!   `S` (durably) without being delivered, so it is never received and never dead-lettered. Until a
//!   receive has passed them, such records still count in the group's `depth`.
//! - Kind `stream`: through the stream-group routes `/v1/groups/S/topics/T/...`. A fetch reads records
//!   from the group's position and drops those that do not match from its answer; the position moves past
//!   them, but the committed offsets are whatever the client commits, so the group's `lag` counts
//!   non-matching records until the client commits an offset past them. A fetch may return fewer records
//!   than `max_records`, or none, although later records exist.
//! - The broker keys a filter by group name and topic, not by kind: it applies to every group named `S`
//!   on `T`, also through the other kind's routes.
//! - A new subscription starts at the end of `T` when it is created: it gets what is published after it
//!   exists, as with SNS.
//! - Deleting a subscription deletes its group's progress (queue state or committed offsets); records,
//!   and a dead-letter topic it filled, stay.
//! - Creating answers 201 when it created the subscription, 200 when one with the same name and the same
//!   settings existed, 409 `subscription_exists` when the name is taken with other settings (and 409
//!   `queue_exists` naming `name` when a queue group of that name, not a subscription, exists on the topic
//!   with other settings). The broker does not say whether it created, so this looks before: two
//!   concurrent creations of a new subscription may both get 201.
//! - A policy the broker refuses is 422 `invalid_filter_policy` with `field` pointing into it
//!   (`filter_policy.price`, `filter_policy.customer.tier[1]` for the second condition of a nested key).

use std::fmt::Write as _;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ferry_broker::engine::EngineError;
use ferry_broker::{
    BrokerError, FilterPolicy, FilterScope, QueueConfig, SubscriptionInfo, SubscriptionKind, SubscriptionSpec,
};
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::extract::{Body, Object, PathParams, from_value, parse_object};
use crate::openapi::{CreateSubscriptionSchema, SubscriptionPath, TopicPath};
use crate::state::AppState;

/// A subscription as the API renders it.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Subscription)]
struct SubscriptionOut {
    /// The topic.
    topic: String,
    /// The subscription, which is also its group's name.
    name: String,
    /// `queue`: consumed through `/v1/queues/{name}/topics/{topic}/...`; `stream`: through
    /// `/v1/groups/{name}/topics/{topic}/...`.
    kind: SubscriptionKind,
    /// The SNS filter policy; `null` lets every record through.
    filter_policy: Option<Value>,
    /// Whether the policy looks at the JSON value or at the headers.
    filter_scope: FilterScope,
    /// Only for kind `queue`: a stream group has no queue settings.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = QueueConfig, required = false)]
    queue: Option<QueueConfig>,
}

impl From<SubscriptionInfo> for SubscriptionOut {
    fn from(info: SubscriptionInfo) -> Self {
        let SubscriptionSpec {
            kind,
            filter_policy,
            filter_scope,
            queue,
        } = info.spec;
        Self {
            topic: info.topic,
            name: info.name,
            kind,
            filter_policy,
            filter_scope,
            queue: (kind == SubscriptionKind::Queue).then_some(queue),
        }
    }
}

/// `POST /v1/topics/{topic}/subscriptions`: 201 and the subscription when created, 200 when it existed.
#[utoipa::path(
    post,
    path = "/v1/topics/{topic}/subscriptions",
    tag = "subscriptions",
    operation_id = "subscription_create",
    summary = "Subscribe a group to a topic",
    description = "A queue group (default) or a stream group named after the subscription, which sees \
                   only the records its filter policy matches, from the oldest record still stored. 201 \
                   when created, 200 when it existed with the same settings, 409 `subscription_exists` \
                   with others. A policy the broker refuses is 422 `invalid_filter_policy` with `field` \
                   pointing into it.",
    params(TopicPath),
    request_body = CreateSubscriptionSchema,
    responses(
        (status = 201, description = "Created.", body = SubscriptionOut),
        (status = 200, description = "It existed with these settings.", body = SubscriptionOut),
        crate::openapi::JsonBodyErrors,
    ),
)]
pub(super) async fn create(
    State(state): State<AppState>,
    PathParams(topic): PathParams<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = body.json_only()?;
    let mut object: Map<String, Value> = parse_object(&bytes)?;
    let name: String = match object.remove("name") {
        Some(name) => from_value(name, "name")?,
        None => {
            return Err(ApiError::InvalidField {
                field: Some("name".into()),
                message: "missing field `name`".into(),
            });
        }
    };
    // Parsed apart: it must be an object (serde would take an array of its fields in order), and a stream
    // subscription must not have one.
    let queue = object
        .remove("queue")
        .map(|q| from_value::<Object<QueueConfig>>(q, "queue"))
        .transpose()?;
    // Everything else is the broker's spec, with its defaults and its refusal of unknown keys.
    let mut spec: SubscriptionSpec = from_value(Value::Object(object), "")?;
    match queue {
        Some(_) if spec.kind != SubscriptionKind::Queue => {
            return Err(ApiError::InvalidField {
                field: Some("queue".into()),
                message: "only a subscription of kind `queue` has queue settings".into(),
            });
        }
        Some(Object(queue)) => spec.queue = queue,
        None => {}
    }
    let (policy, scope) = (spec.filter_policy.clone(), spec.filter_scope);
    if let Some(e) = state.engine() {
        let engine = e.engine.clone();
        let (t, n, sp) = (topic.clone(), name.clone(), spec.clone());
        let created = state
            .detached(async move { engine.create_subscription(&t, &n, sp).await })
            .await?;
        return match created {
            Ok(created) => {
                let status = if created {
                    StatusCode::CREATED
                } else {
                    StatusCode::OK
                };
                let info = SubscriptionInfo { topic, name, spec };
                Ok((status, Json(SubscriptionOut::from(info))).into_response())
            }
            // Only a subscription of that name with other settings is `QueueExists` on an engine.
            Err(EngineError::Broker(error)) => Err(create_error(error, true, topic, name, policy, scope)),
            Err(error) => Err(ApiError::Engine { error, field: None }),
        };
    }
    // The broker answers alike whether it created the subscription or found it; only a look first tells.
    let existed = state
        .broker()
        .list_subscriptions(&topic)
        .is_ok_and(|subs| subs.iter().any(|s| s.name == name));
    let broker = state.broker().clone();
    let (t, n) = (topic.clone(), name.clone());
    match state
        .detached(async move { broker.create_subscription(&t, &n, spec).await })
        .await?
    {
        Ok(info) => {
            let status = if existed {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            };
            Ok((status, Json(SubscriptionOut::from(info))).into_response())
        }
        Err(error) => Err(create_error(error, existed, topic, name, policy, scope)),
    }
}

/// A refused creation, with the field it is about.
fn create_error(
    error: BrokerError,
    existed: bool,
    topic: String,
    name: String,
    policy: Option<Value>,
    scope: FilterScope,
) -> ApiError {
    match error {
        BrokerError::QueueExists { .. } if existed => ApiError::SubscriptionExists { topic, name },
        error @ BrokerError::QueueExists { .. } => ApiError::broker_at(error, "name"),
        error @ BrokerError::InvalidArgument {
            field: "filter_policy",
            ..
        } => {
            let field = policy.map_or_else(|| "filter_policy".into(), |p| locate(&p, scope));
            ApiError::broker_at(error, field)
        }
        // Only the queue settings are validated as config here; they sit under `queue`.
        error @ BrokerError::InvalidConfig { field, .. } => {
            ApiError::broker_at(error, format!("queue.{field}"))
        }
        error @ BrokerError::InvalidName {
            field: "dead_letter_topic",
            ..
        } => ApiError::broker_at(error, "queue.dead_letter_topic"),
        error => error.into(),
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(as = SubscriptionList)]
pub(super) struct Subscriptions {
    /// By name.
    subscriptions: Vec<SubscriptionOut>,
}

/// `GET /v1/topics/{topic}/subscriptions`: the topic's subscriptions, by name.
#[utoipa::path(
    get,
    path = "/v1/topics/{topic}/subscriptions",
    tag = "subscriptions",
    operation_id = "subscription_list",
    summary = "List a topic's subscriptions",
    description = "Every subscription of the topic with its kind, filter and (kind `queue`) queue \
                   settings, by name.",
    params(TopicPath),
    responses(
        (status = 200, description = "The subscriptions, by name.", body = Subscriptions),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 404, response = crate::openapi::NotFound),
    ),
)]
pub(super) async fn list(
    State(state): State<AppState>,
    PathParams(topic): PathParams<String>,
) -> Result<Json<Subscriptions>, ApiError> {
    if let Some(e) = state.engine() {
        let engine = e.engine.clone();
        let listed = state
            .detached(async move { engine.list_subscriptions(&topic).await })
            .await?
            .map_err(|error| ApiError::Engine { error, field: None })?;
        let subscriptions = listed.into_iter().map(SubscriptionOut::from).collect();
        return Ok(Json(Subscriptions { subscriptions }));
    }
    let subscriptions = state
        .broker()
        .list_subscriptions(&topic)?
        .into_iter()
        .map(SubscriptionOut::from)
        .collect();
    Ok(Json(Subscriptions { subscriptions }))
}

/// `DELETE /v1/topics/{topic}/subscriptions/{name}`: 204; the group's progress goes with it.
#[utoipa::path(
    delete,
    path = "/v1/topics/{topic}/subscriptions/{name}",
    tag = "subscriptions",
    operation_id = "subscription_delete",
    summary = "Delete a subscription",
    description = "The group's progress (queue state or committed offsets) goes with it; records, and a \
                   dead-letter topic it filled, stay.",
    params(SubscriptionPath),
    responses(
        (status = 204, description = "Deleted."),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 404, response = crate::openapi::NotFound),
        (status = 503, response = crate::openapi::ShuttingDown),
    ),
)]
pub(super) async fn delete(
    State(state): State<AppState>,
    PathParams((topic, name)): PathParams<(String, String)>,
) -> Result<StatusCode, ApiError> {
    if let Some(e) = state.engine() {
        let engine = e.engine.clone();
        let (t, n) = (topic.clone(), name.clone());
        let deleted = state
            .detached(async move { engine.delete_subscription(&t, &n).await })
            .await?
            .map_err(|error| ApiError::Engine { error, field: None })?;
        return if deleted {
            Ok(StatusCode::NO_CONTENT)
        } else {
            Err(ApiError::SubscriptionNotFound { topic, name })
        };
    }
    let broker = state.broker().clone();
    let (t, n) = (topic.clone(), name.clone());
    match state
        .detached(async move { broker.delete_subscription(&t, &n).await })
        .await?
    {
        Ok(()) => Ok(StatusCode::NO_CONTENT),
        // The broker says "no such group" for a subscription it does not have.
        Err(BrokerError::GroupNotFound { .. }) => Err(ApiError::SubscriptionNotFound { topic, name }),
        Err(error) => Err(error.into()),
    }
}

/// Where in `policy` the broker's refusal lies, as a field path (`filter_policy.price`,
/// `filter_policy.customer.tier[1]`). The broker's error names only `filter_policy` (its message quotes
/// the key, for people), so this parses smaller and smaller parts of the policy until it finds the
/// smallest that fails: each key of a policy is checked on its own, and so is each of its conditions.
fn locate(policy: &Value, scope: FilterScope) -> String {
    let fails = |candidate: Value| FilterPolicy::parse(&candidate, scope).is_err();
    let mut field = String::from("filter_policy");
    let Value::Object(top) = policy else {
        return field;
    };
    let mut map = top;
    let mut parents: Vec<&str> = Vec::new();
    loop {
        let Some((key, value)) = map.iter().find(|(k, v)| fails(nest(&parents, k, (*v).clone()))) else {
            return field;
        };
        field.push('.');
        field.push_str(key);
        match value {
            Value::Array(conditions) => {
                let bad = conditions
                    .iter()
                    .position(|c| fails(nest(&parents, key, Value::Array(vec![c.clone()]))));
                if let Some(i) = bad {
                    let _ = write!(field, "[{i}]");
                }
                return field;
            }
            Value::Object(inner) if scope == FilterScope::Body && !inner.is_empty() => {
                parents.push(key);
                map = inner;
            }
            _ => return field,
        }
    }
}

/// The policy `{parents[0]: {parents[1]: ... {key: value}}}`.
fn nest(parents: &[&str], key: &str, value: Value) -> Value {
    let one = |k: &str, v: Value| Value::Object(Map::from_iter([(k.to_string(), v)]));
    parents.iter().rev().fold(one(key, value), |v, k| one(k, v))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn policy_errors_are_located_down_to_the_condition() {
        let body = |p: Value| locate(&p, FilterScope::Body);
        assert_eq!(body(json!([])), "filter_policy");
        assert_eq!(body(json!({})), "filter_policy");
        assert_eq!(body(json!({"a": ["x"], "price": 5})), "filter_policy.price");
        assert_eq!(
            body(json!({"a": ["x"], "price": [1, {"numeric": [">", "cheap"]}]})),
            "filter_policy.price[1]"
        );
        assert_eq!(
            body(json!({"customer": {"country": ["DE"], "tier": [{"numeric": [">="]}]}})),
            "filter_policy.customer.tier[0]"
        );
        assert_eq!(body(json!({"customer": {}})), "filter_policy.customer");
        assert_eq!(
            body(json!({"a": [{"anything-but": [{"wat": 1}]}]})),
            "filter_policy.a[0]"
        );
        // Headers are flat: a nested object is itself the mistake.
        assert_eq!(
            locate(&json!({"event": {"x": ["y"]}}), FilterScope::Headers),
            "filter_policy.event"
        );
    }
}
