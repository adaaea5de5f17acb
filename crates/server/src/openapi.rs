//! The OpenAPI 3.1 document of the API, generated from the code and served at `GET /v1/openapi.json`.
//!
//! It cannot drift from the router: `api::routes` routes only handlers annotated with `#[utoipa::path]`,
//! through `utoipa_axum`'s `routes!`, which takes each route's method and path from that annotation, the
//! same annotation that is the route's entry in the document. A handler without one does not compile into
//! the route table. What the annotations do not say is added here, once, as the middleware does it
//! ([`finish`]): the bearer scheme, 401 on every route but `/healthz`, 403 on every route that a read-only
//! token may not use (any method but GET and HEAD).
//!
//! Decisions:
//! - Security is `[{"bearer": []}, {}]`: a token is needed only when the server has tokens configured
//!   (`auth.rs`); without, the API is open. `/healthz` is `[{}]`, always open.
//! - `/v1/openapi.json` is behind the tokens like every other route (when tokens are configured): the
//!   document lists every route, and an anonymous client of a server with tokens learns nothing, not
//!   even which routes exist. Use `ferry_server::openapi_document()` to get the document without a
//!   server.
//! - Errors: each operation lists the statuses it can answer besides 401/403, each a shared response
//!   (`components/responses`) whose body is the one error body, `{"error", "message", "field"}`, and whose
//!   description lists the codes of that status. Any route may also answer 500 `internal` (a fault of the
//!   server, not listed per route), and a path or method no route has is 404 `route_not_found` or 405
//!   `method_not_allowed`.
//! - Value ranges are in the schemas (`minimum`/`maximum`, name patterns). They are literals in the
//!   attributes (utoipa takes no constants there); the tests compare them with the constants the
//!   handlers and the broker check.

use std::borrow::Cow;
use std::sync::OnceLock;

use axum::http::HeaderValue;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use ferry_broker::{MAX_NAME_LEN, SubscriptionSpec, TopicConfig};
use serde::Deserialize;
use utoipa::openapi::path::Operation;
use utoipa::openapi::schema::{ObjectBuilder, Schema, SchemaType, Type};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{OpenApi as Document, Ref, RefOr, Required};
use utoipa::{IntoParams, OpenApi, PartialSchema, ToResponse, ToSchema};

use crate::error::ErrorBody;

/// Pattern of topic, group, subscription and member names (`ferry_broker::validate_name`), which also
/// refuses `.` and `..`.
pub(crate) const NAME_PATTERN: &str = "^[A-Za-z0-9._-]+$";

/// The parts of the document that are no route's: info, tags, the shared error responses.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "ferry",
        description = "ferry's HTTP API: topics and partitions, publish and fetch, stream groups with \
                       members, queue groups with leases, and subscriptions. Every error is \
                       `{\"error\": code, \"message\": text, \"field\": path | null}`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    tags(
        (name = "topics", description = "Topics and their partitions."),
        (name = "records", description = "Publish to a topic; fetch from one partition."),
        (name = "stream groups", description = "Kafka-like consumer groups: fetch, commit, seek, members."),
        (name = "queue groups", description = "SQS-like groups: receive with leases, ack, nack, extend."),
        (name = "subscriptions", description = "SNS-like fan-out of a topic to groups, with filters."),
        (name = "server", description = "Health, metrics, this document."),
    ),
    components(
        schemas(ErrorBody),
        responses(
            BadRequest,
            Unauthorized,
            Forbidden,
            NotFound,
            Conflict,
            PayloadTooLarge,
            UnsupportedMediaType,
            Unprocessable,
            ShuttingDown
        )
    )
)]
pub(crate) struct ApiDoc;

/// The error answers of an operation that takes a JSON body and changes state: every status a client can
/// cause, shared so that each such operation lists them once.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code, reason = "responses of the OpenAPI document only")]
pub(crate) enum JsonBodyErrors {
    #[response(status = 400)]
    BadRequest(#[ref_response] BadRequest),
    #[response(status = 404)]
    NotFound(#[ref_response] NotFound),
    #[response(status = 409)]
    Conflict(#[ref_response] Conflict),
    #[response(status = 413)]
    PayloadTooLarge(#[ref_response] PayloadTooLarge),
    #[response(status = 415)]
    UnsupportedMediaType(#[ref_response] UnsupportedMediaType),
    #[response(status = 422)]
    Unprocessable(#[ref_response] Unprocessable),
    #[response(status = 503)]
    ShuttingDown(#[ref_response] ShuttingDown),
}

/// Something did not parse: `malformed_json` (not JSON, truncated, trailing data, empty), `invalid_field`
/// (JSON of the wrong shape: a wrong type, a missing, unknown or duplicate key, an array where an object
/// belongs; `field` is its path), `invalid_parameter` (a query or path parameter), `invalid_name` (a
/// topic, group, subscription or member name), `unreadable_body`.
#[derive(ToResponse)]
#[allow(dead_code, reason = "a response of the OpenAPI document only")]
pub(crate) struct BadRequest(ErrorBody);

/// `unauthorized`: tokens are configured and the request has no `Authorization: Bearer` token, or one
/// that is not configured. Comes with `WWW-Authenticate`.
#[derive(ToResponse)]
#[allow(dead_code, reason = "a response of the OpenAPI document only")]
pub(crate) struct Unauthorized(ErrorBody);

/// `forbidden`: a read-only token on a method other than GET or HEAD. Comes with `WWW-Authenticate`.
#[derive(ToResponse)]
#[allow(dead_code, reason = "a response of the OpenAPI document only")]
pub(crate) struct Forbidden(ErrorBody);

/// `topic_not_found`, `partition_not_found`, `group_not_found`, `unknown_member` (the member left, its
/// session expired or the server restarted: join again), `subscription_not_found`.
#[derive(ToResponse)]
#[allow(dead_code, reason = "a response of the OpenAPI document only")]
pub(crate) struct NotFound(ErrorBody);

/// `topic_exists`, `queue_exists`, `subscription_exists` (the name is taken with other settings),
/// `not_leased` (the group has not leased that record now), `stale_generation` (heartbeat to learn the
/// current one), `partition_not_assigned`, `group_has_members` (act as a member, with `member_id` and
/// `generation`).
#[derive(ToResponse)]
#[allow(dead_code, reason = "a response of the OpenAPI document only")]
pub(crate) struct Conflict(ErrorBody);

/// `body_too_large` (over 16 MiB), `record_too_large` (over the topic's `max_record_bytes`; `field` is
/// `records[i]`).
#[derive(ToResponse)]
#[allow(dead_code, reason = "a response of the OpenAPI document only")]
pub(crate) struct PayloadTooLarge(ErrorBody);

/// `unsupported_media_type`: a `Content-Type` other than `application/json` (or, where the operation
/// takes it, `application/x-ndjson`).
#[derive(ToResponse)]
#[allow(dead_code, reason = "a response of the OpenAPI document only")]
pub(crate) struct UnsupportedMediaType(ErrorBody);

/// A value that parses but is out of range: `out_of_range` (a parameter or body key; the message gives
/// the range), `invalid_config` (a topic or queue setting), `invalid_filter_policy` (`field` points into
/// the policy), `offset_out_of_range`.
#[derive(ToResponse)]
#[allow(dead_code, reason = "a response of the OpenAPI document only")]
pub(crate) struct Unprocessable(ErrorBody);

/// `shutting_down`: the server is stopping; retry after `Retry-After` seconds (on another instance, or
/// once it is back).
#[derive(ToResponse)]
#[response(headers(("Retry-After" = u32, description = "Seconds to wait before retrying.")))]
#[allow(dead_code, reason = "a response of the OpenAPI document only")]
pub(crate) struct ShuttingDown(ErrorBody);

/// The path of `/v1/topics/{topic}/...`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code, reason = "parameters of the OpenAPI document only")]
pub(crate) struct TopicPath {
    /// The topic: 1..=249 characters of `[A-Za-z0-9._-]`, not `.` or `..`.
    #[param(min_length = 1, max_length = 249, pattern = "^[A-Za-z0-9._-]+$")]
    topic: String,
}

/// The path of `/v1/topics/{topic}/partitions/{partition}/...`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code, reason = "parameters of the OpenAPI document only")]
pub(crate) struct PartitionPath {
    /// The topic: 1..=249 characters of `[A-Za-z0-9._-]`, not `.` or `..`.
    #[param(min_length = 1, max_length = 249, pattern = "^[A-Za-z0-9._-]+$")]
    topic: String,
    /// The partition, from 0.
    partition: u32,
}

/// The path of `/v1/groups/{group}/topics/{topic}/...` and `/v1/queues/{group}/topics/{topic}/...`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code, reason = "parameters of the OpenAPI document only")]
pub(crate) struct GroupPath {
    /// The group: 1..=249 characters of `[A-Za-z0-9._-]`, not `.` or `..`.
    #[param(min_length = 1, max_length = 249, pattern = "^[A-Za-z0-9._-]+$")]
    group: String,
    /// The topic: 1..=249 characters of `[A-Za-z0-9._-]`, not `.` or `..`.
    #[param(min_length = 1, max_length = 249, pattern = "^[A-Za-z0-9._-]+$")]
    topic: String,
}

/// The path of `/v1/groups/{group}/topics/{topic}/members/{member}...`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code, reason = "parameters of the OpenAPI document only")]
pub(crate) struct MemberPath {
    /// The group: 1..=249 characters of `[A-Za-z0-9._-]`, not `.` or `..`.
    #[param(min_length = 1, max_length = 249, pattern = "^[A-Za-z0-9._-]+$")]
    group: String,
    /// The topic: 1..=249 characters of `[A-Za-z0-9._-]`, not `.` or `..`.
    #[param(min_length = 1, max_length = 249, pattern = "^[A-Za-z0-9._-]+$")]
    topic: String,
    /// The member's id, as its join answered it: a name like the group's.
    #[param(min_length = 1, max_length = 249, pattern = "^[A-Za-z0-9._-]+$")]
    member: String,
}

/// The path of `/v1/topics/{topic}/subscriptions/{name}`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code, reason = "parameters of the OpenAPI document only")]
pub(crate) struct SubscriptionPath {
    /// The topic: 1..=249 characters of `[A-Za-z0-9._-]`, not `.` or `..`.
    #[param(min_length = 1, max_length = 249, pattern = "^[A-Za-z0-9._-]+$")]
    topic: String,
    /// The subscription, which is also its group's name.
    #[param(min_length = 1, max_length = 249, pattern = "^[A-Za-z0-9._-]+$")]
    name: String,
}

/// `T`'s object schema with a required `name` first. Not `#[serde(flatten)]`: utoipa renders that as
/// `allOf`, and `T`'s `additionalProperties: false` (`deny_unknown_fields`) would then refuse `name`.
fn named<T: ToSchema>(description: &str, name: &str) -> RefOr<Schema> {
    let mut schema = T::schema();
    if let RefOr::T(Schema::Object(object)) = &mut schema {
        let name_schema = ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(name))
            .min_length(Some(1))
            .max_length(Some(MAX_NAME_LEN))
            .pattern(Some(NAME_PATTERN))
            .build();
        let rest = std::mem::take(&mut object.properties);
        object.properties.insert("name".into(), name_schema.into());
        object.properties.extend(rest);
        object.required.insert(0, "name".into());
        object.description = Some(description.into());
    }
    schema
}

/// `POST /v1/topics`: a name and the topic's settings ([`TopicConfig`]), every setting optional.
pub(crate) struct CreateTopicSchema;

impl PartialSchema for CreateTopicSchema {
    fn schema() -> RefOr<Schema> {
        named::<TopicConfig>(
            "A name and the topic's settings; every setting has a default, unknown keys are refused.",
            "The topic: 1..=249 characters of `[A-Za-z0-9._-]`, not `.` or `..`.",
        )
    }
}

impl ToSchema for CreateTopicSchema {
    fn name() -> Cow<'static, str> {
        "CreateTopic".into()
    }

    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        TopicConfig::schemas(schemas);
    }
}

/// `POST /v1/topics/{topic}/subscriptions`: a name and what the subscription is ([`SubscriptionSpec`]).
pub(crate) struct CreateSubscriptionSchema;

impl PartialSchema for CreateSubscriptionSchema {
    fn schema() -> RefOr<Schema> {
        named::<SubscriptionSpec>(
            "A name and what the subscription is; every other key has a default, unknown keys are \
             refused. `queue` (the group's settings) may only be given for kind `queue`; \
             `filter_policy` is an SNS filter policy (`null` or absent: every record).",
            "The subscription, which is also its group's name: 1..=249 characters of `[A-Za-z0-9._-]`, \
             not `.` or `..`.",
        )
    }
}

impl ToSchema for CreateSubscriptionSchema {
    fn name() -> Cow<'static, str> {
        "CreateSubscription".into()
    }

    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        SubscriptionSpec::schemas(schemas);
    }
}

/// The document of the routes `routes` builds, finished: the security scheme and the authentication
/// answers that the middleware adds to every route.
pub(crate) fn document() -> Document {
    let mut doc = crate::api::api().into_openapi();
    finish(&mut doc);
    doc
}

/// Adds what the middleware does to every route: the bearer scheme, optional (open without tokens),
/// and its 401 and 403 answers. `/healthz` is exempt, as in `auth::require`.
fn finish(doc: &mut Document) {
    let components = doc.components.get_or_insert_with(Default::default);
    let mut bearer = Http::new(HttpAuthScheme::Bearer);
    bearer.description = Some(
        "A read-write or read-only token (`FERRY_TOKENS`, `FERRY_READ_TOKENS`). Needed only when the \
         server has tokens configured; without, the API is open. A read-only token may only GET or HEAD."
            .into(),
    );
    components.add_security_scheme("bearer", SecurityScheme::Http(bearer));
    let optional_bearer = vec![
        SecurityRequirement::new("bearer", Vec::<String>::new()),
        SecurityRequirement::default(),
    ];
    doc.security = Some(optional_bearer);
    for (path, item) in &mut doc.paths.paths {
        let operations: [(&mut Option<Operation>, bool); 8] = [
            (&mut item.get, true),
            (&mut item.head, true),
            (&mut item.put, false),
            (&mut item.post, false),
            (&mut item.delete, false),
            (&mut item.patch, false),
            (&mut item.options, false),
            (&mut item.trace, false),
        ];
        for (operation, reads) in operations {
            let Some(operation) = operation else { continue };
            if path == "/healthz" {
                operation.security = Some(vec![SecurityRequirement::default()]);
                continue;
            }
            if let Some(body) = &mut operation.request_body
                && body.required != Some(Required::True)
            {
                // An optional body is an empty one (taking the defaults), not JSON `null`: drop the
                // `null` of utoipa's `oneOf [null, T]` for `Option<T>`.
                for content in body.content.values_mut() {
                    let unwrapped = match &content.schema {
                        Some(RefOr::T(Schema::OneOf(one_of))) => match &one_of.items[..] {
                            [a, b] if is_null(a) => Some(b.clone()),
                            [a, b] if is_null(b) => Some(a.clone()),
                            _ => None,
                        },
                        _ => None,
                    };
                    if let Some(schema) = unwrapped {
                        content.schema = Some(schema);
                    }
                }
            }
            let responses = &mut operation.responses.responses;
            responses.insert("401".into(), RefOr::Ref(Ref::from_response_name("Unauthorized")));
            if !reads {
                responses.insert("403".into(), RefOr::Ref(Ref::from_response_name("Forbidden")));
            }
        }
    }
}

fn is_null(schema: &RefOr<Schema>) -> bool {
    matches!(schema, RefOr::T(Schema::Object(o)) if o.schema_type == SchemaType::Type(Type::Null))
}

/// The document as served: compact JSON, built once.
fn document_json() -> Bytes {
    static JSON: OnceLock<Bytes> = OnceLock::new();
    JSON.get_or_init(|| {
        // Serializing plain data (strings, maps, numbers) cannot fail.
        Bytes::from(serde_json::to_vec(&document()).unwrap_or_default())
    })
    .clone()
}

/// `GET /v1/openapi.json`.
#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    tag = "server",
    operation_id = "openapi",
    summary = "This OpenAPI 3.1 document",
    description = "The document of every route, generated from the code. Behind the bearer tokens like \
                   every other route when tokens are configured.",
    responses((status = 200, description = "The OpenAPI document.", content_type = "application/json",
               body = Object)),
)]
pub(crate) async fn serve() -> Response {
    (
        [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        document_json(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// `(METHOD, path)` of every operation of the document.
    fn operations(doc: &serde_json::Value) -> BTreeSet<(String, String)> {
        let mut out = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                out.insert((method.to_uppercase(), path.clone()));
            }
        }
        out
    }

    /// The route table of `lib.rs`'s documentation: `METHOD /path` at the start of its lines.
    fn route_table() -> BTreeSet<(String, String)> {
        let methods = ["GET", "POST", "PUT", "DELETE", "PATCH"];
        include_str!("lib.rs")
            .lines()
            .filter_map(|line| line.strip_prefix("//! "))
            .filter_map(|line| {
                let mut words = line.split_whitespace();
                let method = words.next()?;
                let path = words.next()?;
                (methods.contains(&method) && path.starts_with('/'))
                    .then(|| (method.to_string(), path.to_string()))
            })
            .collect()
    }

    #[test]
    fn the_route_table_of_the_docs_is_the_document() {
        let doc = serde_json::to_value(document()).unwrap();
        let documented = operations(&doc);
        let table = route_table();
        assert!(documented.len() >= 25, "{documented:?}");
        let missing: Vec<_> = documented.difference(&table).collect();
        let extra: Vec<_> = table.difference(&documented).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "lib.rs's route table lacks {missing:?} and has {extra:?} that no route has"
        );
    }

    /// Each `minimum`/`maximum` of `schema`'s integer properties is the bound `accepts` enforces: the
    /// bound itself is taken, one past it refused.
    fn bounds_are_enforced(schema: &serde_json::Value, accepts: impl Fn(&str, u64) -> bool) -> usize {
        let mut checked = 0;
        for (key, property) in schema["properties"].as_object().unwrap() {
            if let Some(max) = property["maximum"].as_u64() {
                assert!(accepts(key, max), "{key} = {max} (the maximum) is refused");
                assert!(!accepts(key, max + 1), "{key} = {} is accepted", max + 1);
                checked += 1;
            }
            if let Some(min) = property["minimum"].as_u64().filter(|min| *min > 0) {
                assert!(accepts(key, min), "{key} = {min} (the minimum) is refused");
                assert!(!accepts(key, min - 1), "{key} = {} is accepted", min - 1);
                checked += 1;
            }
        }
        checked
    }

    #[test]
    fn the_ranges_of_the_settings_are_the_brokers() {
        let doc = serde_json::to_value(document()).unwrap();
        let schemas = &doc["components"]["schemas"];
        let topic = |key: &str, n: u64| {
            serde_json::from_value::<TopicConfig>(serde_json::json!({ key: n }))
                .is_ok_and(|c| c.validate().is_ok())
        };
        assert_eq!(bounds_are_enforced(&schemas["TopicConfig"], topic), 8);
        let queue = |key: &str, n: u64| {
            serde_json::from_value::<ferry_broker::QueueConfig>(serde_json::json!({ key: n }))
                .is_ok_and(|c| c.validate().is_ok())
        };
        assert_eq!(bounds_are_enforced(&schemas["QueueConfig"], queue), 7);
        let partitions = &schemas["TopicConfig"]["properties"]["partitions"];
        assert_eq!(partitions["minimum"], 1);
        assert_eq!(partitions["maximum"], ferry_broker::MAX_PARTITIONS);
        assert_eq!(
            schemas["TopicConfig"]["properties"]["max_record_bytes"]["maximum"],
            ferry_broker::MAX_RECORD_BYTES_LIMIT
        );
        // The request bodies that add a name keep refusing unknown keys, and know `name`.
        for (schema, key) in [("CreateTopic", "partitions"), ("CreateSubscription", "kind")] {
            assert_eq!(schemas[schema]["additionalProperties"], false, "{schema}");
            assert_eq!(schemas[schema]["required"][0], "name", "{schema}");
            assert!(schemas[schema]["properties"][key].is_object(), "{schema}");
        }
    }

    #[test]
    fn every_name_is_described_by_the_brokers_rules() {
        let doc = serde_json::to_value(document()).unwrap();
        let mut names = 0;
        let mut check = |schema: &serde_json::Value, what: &str| {
            assert_eq!(schema["maxLength"], MAX_NAME_LEN, "{what}");
            assert_eq!(schema["minLength"], 1, "{what}");
            assert_eq!(schema["pattern"], NAME_PATTERN, "{what}");
            names += 1;
        };
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                for p in op["parameters"].as_array().into_iter().flatten() {
                    if p["in"] == "path" && p["name"] != "partition" || p["name"] == "member_id" {
                        check(&p["schema"], &format!("{method} {path} {}", p["name"]));
                    }
                }
            }
        }
        let schemas = &doc["components"]["schemas"];
        check(&schemas["CreateTopic"]["properties"]["name"], "CreateTopic.name");
        check(
            &schemas["CreateSubscription"]["properties"]["name"],
            "CreateSubscription.name",
        );
        check(
            &schemas["JoinRequest"]["properties"]["member_id"],
            "JoinRequest.member_id",
        );
        check(
            &schemas["CommitRequest"]["properties"]["member_id"],
            "CommitRequest.member_id",
        );
        check(
            &schemas["QueueConfig"]["properties"]["dead_letter_topic"],
            "QueueConfig.dead_letter_topic",
        );
        assert!(names >= 40, "{names}");
        // The pattern is the broker's rule, less its refusal of `.` and `..` (said in the descriptions).
        let matches = |name: &str| {
            !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        };
        assert_eq!(NAME_PATTERN, "^[A-Za-z0-9._-]+$");
        for name in ["a", "orders.v2_x-1", "a b", "a/b", "ü", "", "."] {
            let broker = ferry_broker::validate_name("name", name).is_ok();
            assert_eq!(broker, matches(name) && name != "." && name != "..", "{name}");
        }
    }

    #[test]
    fn operation_ids_are_unique_and_every_operation_is_described() {
        let doc = serde_json::to_value(document()).unwrap();
        let mut ids = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let id = op["operationId"].as_str().unwrap().to_string();
                assert!(ids.insert(id.clone()), "operationId `{id}` twice");
                assert!(
                    op["summary"].as_str().is_some_and(|s| !s.is_empty()),
                    "{method} {path} has no summary"
                );
                assert!(
                    op["tags"].as_array().is_some_and(|t| !t.is_empty()),
                    "{method} {path}"
                );
                let responses = op["responses"].as_object().unwrap();
                assert!(
                    responses.keys().any(|s| s.starts_with('2')),
                    "{method} {path} has no success response"
                );
                if path != "/healthz" {
                    assert!(responses.contains_key("401"), "{method} {path}");
                }
                assert_eq!(
                    responses.contains_key("403"),
                    method != "get" && method != "head",
                    "{method} {path}"
                );
            }
        }
    }
}
