//! Every error the API answers with, and the one place where each gets its status, code and field.
//!
//! The body is always `{"error": code, "message": text, "field": path | null}`. `code` is stable
//! (clients may match on it); `message` is for people and may change; `field` names what the error is
//! about: a JSON path into the request body (`name`, `records[2].value`, `offsets[0].offset`), a query
//! parameter (`offset`, `max_wait_ms`), a path parameter (`topic`, `partition`, `group`) or a header
//! (`content-type`).

use std::fmt;

use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ferry_broker::BrokerError;
use serde::Serialize;

/// How long a client should wait before retrying after a 503, in seconds.
const RETRY_AFTER_SECS: &str = "1";

/// An error answer of the API.
#[derive(Debug)]
#[non_exhaustive]
pub enum ApiError {
    /// The body is not JSON: a syntax error, a truncated document, trailing data, an empty body.
    MalformedJson {
        /// What the JSON parser said, with line and column.
        message: String,
    },
    /// JSON of the wrong shape: a wrong type, a missing, unknown or duplicate field.
    InvalidField {
        /// JSON path of the field, when there is one.
        field: Option<String>,
        /// What is wrong.
        message: String,
    },
    /// A query or path parameter that does not parse, an unknown or repeated query parameter.
    InvalidParameter {
        /// The parameter.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// A query parameter that parses but is outside its range.
    ParameterOutOfRange {
        /// The parameter.
        field: String,
        /// The range and the value.
        message: String,
    },
    /// A `Content-Type` the endpoint does not take.
    UnsupportedMediaType {
        /// The content type sent.
        content_type: String,
        /// What the endpoint takes.
        expected: &'static str,
    },
    /// The body is larger than the server accepts.
    BodyTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The body could not be read (the client went away, a broken chunked encoding).
    UnreadableBody {
        /// Why.
        message: String,
    },
    /// No route matches the path.
    RouteNotFound {
        /// The method.
        method: Method,
        /// The path.
        path: String,
    },
    /// The path exists but not with this method.
    MethodNotAllowed {
        /// The method.
        method: Method,
        /// The path.
        path: String,
    },
    /// The broker refused or failed; `field` overrides the field the error names by default, when the
    /// handler knows better (`records[3].partition` rather than `partition`).
    Broker {
        /// The broker's error.
        error: BrokerError,
        /// The request field it is about, if the handler knows it.
        field: Option<String>,
    },
    /// Tokens are configured and the request carries no `Authorization: Bearer` token.
    MissingToken,
    /// The bearer token is none of the configured tokens.
    InvalidToken,
    /// A read-only token on a method that may write (anything but GET and HEAD).
    ReadOnlyToken {
        /// The method.
        method: Method,
    },
    /// A subscription of this name exists on the topic with other settings.
    SubscriptionExists {
        /// The topic.
        topic: String,
        /// The subscription.
        name: String,
    },
    /// No subscription of this name on the topic.
    SubscriptionNotFound {
        /// The topic.
        topic: String,
        /// The subscription.
        name: String,
    },
    /// An engine other than the embedded broker refused or failed.
    Engine {
        /// The engine's error.
        error: ferry_broker::engine::EngineError,
        /// The request field it is about, if the handler knows it.
        field: Option<String>,
    },
    /// Something failed that is not the client's fault (a panicked task).
    Internal {
        /// What failed.
        message: String,
    },
}

impl ApiError {
    /// The broker error `error`, about the request field `field`.
    pub fn broker_at(error: BrokerError, field: impl Into<String>) -> Self {
        Self::Broker {
            error,
            field: Some(field.into()),
        }
    }

    /// Status, stable code and field. The only place where an error gets its status.
    pub(crate) fn parts(&self) -> (StatusCode, &'static str, Option<String>) {
        use StatusCode as S;
        match self {
            Self::MalformedJson { .. } => (S::BAD_REQUEST, "malformed_json", None),
            Self::InvalidField { field, .. } => (S::BAD_REQUEST, "invalid_field", field.clone()),
            Self::InvalidParameter { field, .. } => {
                (S::BAD_REQUEST, "invalid_parameter", Some(field.clone()))
            }
            Self::ParameterOutOfRange { field, .. } => {
                (S::UNPROCESSABLE_ENTITY, "out_of_range", Some(field.clone()))
            }
            Self::UnsupportedMediaType { .. } => (
                S::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                Some("content-type".into()),
            ),
            Self::BodyTooLarge { .. } => (S::PAYLOAD_TOO_LARGE, "body_too_large", None),
            Self::UnreadableBody { .. } => (S::BAD_REQUEST, "unreadable_body", None),
            Self::RouteNotFound { .. } => (S::NOT_FOUND, "route_not_found", None),
            Self::MethodNotAllowed { .. } => (S::METHOD_NOT_ALLOWED, "method_not_allowed", None),
            Self::SubscriptionExists { .. } => (S::CONFLICT, "subscription_exists", Some("name".into())),
            Self::SubscriptionNotFound { .. } => {
                (S::NOT_FOUND, "subscription_not_found", Some("name".into()))
            }
            Self::Internal { .. } => (S::INTERNAL_SERVER_ERROR, "internal", None),
            Self::MissingToken | Self::InvalidToken => {
                (S::UNAUTHORIZED, "unauthorized", Some("authorization".into()))
            }
            Self::ReadOnlyToken { .. } => (S::FORBIDDEN, "forbidden", Some("authorization".into())),
            Self::Engine { error, field } => {
                use ferry_broker::engine::EngineError as E;
                let (status, code, default_field) = match error {
                    E::Broker(e) => broker_parts(e),
                    E::Unavailable { .. } => (S::SERVICE_UNAVAILABLE, "engine_unavailable", None),
                    E::Refused { .. } => (S::UNPROCESSABLE_ENTITY, "engine_refused", None),
                    E::Failed { .. } => (S::BAD_GATEWAY, "engine_failed", None),
                    E::NotLeased { .. } => (S::CONFLICT, "not_leased", None),
                    E::Unsupported { .. } => (S::NOT_IMPLEMENTED, "engine_unsupported", None),
                };
                (
                    status,
                    code,
                    field.clone().or_else(|| default_field.map(Into::into)),
                )
            }
            Self::Broker { error, field } => {
                let (status, code, default_field) = broker_parts(error);
                (
                    status,
                    code,
                    field.clone().or_else(|| default_field.map(Into::into)),
                )
            }
        }
    }

    /// The `WWW-Authenticate` challenge of an authentication error (RFC 6750, section 3).
    fn challenge(&self) -> Option<&'static str> {
        match self {
            Self::MissingToken => Some("Bearer"),
            Self::InvalidToken => Some(r#"Bearer error="invalid_token""#),
            Self::ReadOnlyToken { .. } => Some(r#"Bearer error="insufficient_scope""#),
            _ => None,
        }
    }
}

fn broker_parts(error: &BrokerError) -> (StatusCode, &'static str, Option<&'static str>) {
    use StatusCode as S;
    match error {
        BrokerError::InvalidName { field, .. } => (S::BAD_REQUEST, "invalid_name", Some(field)),
        BrokerError::InvalidConfig { field, .. } => (S::UNPROCESSABLE_ENTITY, "invalid_config", Some(field)),
        BrokerError::InvalidArgument {
            field: "filter_policy",
            ..
        } => (
            S::UNPROCESSABLE_ENTITY,
            "invalid_filter_policy",
            Some("filter_policy"),
        ),
        BrokerError::InvalidArgument { field, .. } => (S::UNPROCESSABLE_ENTITY, "out_of_range", Some(field)),
        BrokerError::TopicExists(_) => (S::CONFLICT, "topic_exists", Some("name")),
        BrokerError::TopicNotFound(_) => (S::NOT_FOUND, "topic_not_found", Some("topic")),
        BrokerError::PartitionNotFound { .. } => (S::NOT_FOUND, "partition_not_found", Some("partition")),
        BrokerError::GroupNotFound { .. } => (S::NOT_FOUND, "group_not_found", Some("group")),
        BrokerError::OffsetOutOfRange { .. } => {
            (S::UNPROCESSABLE_ENTITY, "offset_out_of_range", Some("offset"))
        }
        BrokerError::RecordTooLarge { .. } => (S::PAYLOAD_TOO_LARGE, "record_too_large", None),
        BrokerError::QueueExists { .. } => (S::CONFLICT, "queue_exists", Some("group")),
        // The handler names the record (`records[i]`).
        BrokerError::NotLeased { .. } => (S::CONFLICT, "not_leased", None),
        BrokerError::UnknownMember { .. } => (S::NOT_FOUND, "unknown_member", Some("member_id")),
        BrokerError::StaleGeneration { .. } => (S::CONFLICT, "stale_generation", Some("generation")),
        // The handler names the offset (`offsets[i].partition`).
        BrokerError::NotAssigned { .. } => (S::CONFLICT, "partition_not_assigned", Some("partition")),
        BrokerError::GroupHasMembers { .. } => (S::CONFLICT, "group_has_members", Some("member_id")),
        BrokerError::ShuttingDown => (S::SERVICE_UNAVAILABLE, "shutting_down", None),
        // Storage, metadata and whatever the broker adds later: not the client's fault.
        _ => (S::INTERNAL_SERVER_ERROR, "internal", None),
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MalformedJson { message } => write!(f, "malformed JSON: {message}"),
            Self::InvalidField {
                field: Some(field),
                message,
            } => write!(f, "{field}: {message}"),
            Self::InvalidField { field: None, message } => f.write_str(message),
            Self::InvalidParameter { field, message } | Self::ParameterOutOfRange { field, message } => {
                write!(f, "{field}: {message}")
            }
            Self::UnsupportedMediaType {
                content_type,
                expected,
            } => {
                write!(
                    f,
                    "content-type `{content_type}` is not supported here; send {expected}"
                )
            }
            Self::BodyTooLarge { limit } => write!(f, "the request body exceeds the limit of {limit} bytes"),
            Self::UnreadableBody { message } => write!(f, "could not read the request body: {message}"),
            Self::RouteNotFound { method, path } => write!(f, "no route for {method} {path}"),
            Self::MethodNotAllowed { method, path } => write!(f, "{path} does not take {method}"),
            Self::Broker { error, .. } => error.fmt(f),
            Self::Engine { error, .. } => error.fmt(f),
            Self::SubscriptionExists { topic, name } => write!(
                f,
                "subscription `{name}` of topic `{topic}` already exists with other settings"
            ),
            Self::SubscriptionNotFound { topic, name } => {
                write!(f, "topic `{topic}` has no subscription `{name}`")
            }
            Self::Internal { message } => write!(f, "internal error: {message}"),
            // Never the token itself: these messages are logged.
            Self::MissingToken => {
                f.write_str("this server requires an `Authorization: Bearer <token>` header")
            }
            Self::InvalidToken => f.write_str("the bearer token is not valid"),
            Self::ReadOnlyToken { method } => {
                write!(
                    f,
                    "a read-only token may only GET or HEAD, not {method}; use a read-write token"
                )
            }
        }
    }
}

impl From<BrokerError> for ApiError {
    fn from(error: BrokerError) -> Self {
        Self::Broker { error, field: None }
    }
}

/// The body of every error answer.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Error)]
pub(crate) struct ErrorBody {
    /// A stable code, for clients to match on: `topic_not_found`, `invalid_field`, ... (each response
    /// lists those of its status).
    #[schema(example = "invalid_field")]
    error: &'static str,
    /// What is wrong, for people; may change between versions.
    #[schema(example = "offsets[0].offset: invalid value: integer `-1`, expected u64")]
    message: String,
    /// What the error is about: a JSON path into the request body (`records[2].value`,
    /// `offsets[0].offset`), a query or path parameter (`max_wait_ms`, `topic`), or a header
    /// (`content-type`, `authorization`); `null` when it is about the request as a whole.
    #[schema(example = "offsets[0].offset", required = true)]
    field: Option<String>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, field) = self.parts();
        let message = self.to_string();
        let challenge = self.challenge();
        if status.is_server_error() {
            tracing::error!(status = status.as_u16(), error = code, %message, "request failed");
        } else {
            tracing::debug!(status = status.as_u16(), error = code, field, %message, "request refused");
        }
        let mut response = (
            status,
            axum::Json(ErrorBody {
                error: code,
                message,
                field,
            }),
        )
            .into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECS));
        }
        if let Some(challenge) = challenge {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_errors_map_to_client_statuses_with_their_field() {
        let cases = [
            (
                BrokerError::InvalidName {
                    field: "name",
                    value: String::new(),
                    reason: "empty",
                },
                400,
                Some("name"),
            ),
            (BrokerError::TopicExists("t".into()), 409, Some("name")),
            (BrokerError::TopicNotFound("t".into()), 404, Some("topic")),
            (BrokerError::RecordTooLarge { size: 2, max: 1 }, 413, None),
            (BrokerError::ShuttingDown, 503, None),
            (
                BrokerError::QueueExists {
                    group: "g".into(),
                    topic: "t".into(),
                },
                409,
                Some("group"),
            ),
            (
                BrokerError::NotLeased {
                    group: "g".into(),
                    partition: 0,
                    offset: 1,
                },
                409,
                None,
            ),
            (
                BrokerError::InvalidArgument {
                    field: "filter_policy",
                    message: "x".into(),
                },
                422,
                Some("filter_policy"),
            ),
            (
                BrokerError::UnknownMember {
                    group: "g".into(),
                    topic: "t".into(),
                    member: "m".into(),
                },
                404,
                Some("member_id"),
            ),
            (
                BrokerError::StaleGeneration {
                    group: "g".into(),
                    topic: "t".into(),
                    generation: 1,
                    current: 2,
                },
                409,
                Some("generation"),
            ),
            (
                BrokerError::GroupHasMembers {
                    group: "g".into(),
                    topic: "t".into(),
                    members: 1,
                },
                409,
                Some("member_id"),
            ),
            (BrokerError::Metadata("x".into()), 500, None),
        ];
        for (error, status, field) in cases {
            let (s, _, f) = ApiError::from(error).parts();
            assert_eq!((s.as_u16(), f.as_deref()), (status, field));
        }
        let e = ApiError::broker_at(BrokerError::TopicNotFound("t".into()), "x");
        assert_eq!(e.parts().2.as_deref(), Some("x"));
    }
}
