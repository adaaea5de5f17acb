//! Every error the two services answer with, and the one place where each gets its status and code.
//!
//! The body is ferry's: `{"error": code, "message": text, "field": name | null}`, where `code` is
//! stable, `message` is for people and `field` names what is wrong (a body field such as `title`, or
//! the path parameter `id`).

use axum::Json;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::db::DbError;

/// An error answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// The body is not JSON.
    #[error("the body is not JSON: {0}")]
    InvalidJson(String),
    /// The body is JSON but not an object.
    #[error("the body must be a JSON object")]
    NotAnObject,
    /// A field is missing, of the wrong type or empty, or not a field of the resource.
    #[error("{message}")]
    InvalidField {
        /// The field.
        field: String,
        /// What is wrong, naming the field.
        message: String,
    },
    /// A field's value is out of its range (too long).
    #[error("{message}")]
    OutOfRange {
        /// The field.
        field: String,
        /// The range and the value's size.
        message: String,
    },
    /// A path parameter that does not parse.
    #[error("{message}")]
    InvalidParameter {
        /// The parameter.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The body is larger than the service accepts.
    #[error("the body is larger than {limit} bytes")]
    BodyTooLarge {
        /// The limit.
        limit: usize,
    },
    /// The body could not be read.
    #[error("the body could not be read: {0}")]
    UnreadableBody(String),
    /// No such product (or, in likes, a deleted one).
    #[error("product {0} does not exist")]
    ProductNotFound(i64),
    /// The user liked this product before (seed 002's answer, word for word).
    #[error("You already liked this product")]
    AlreadyLiked,
    /// No such route.
    #[error("no route {method} {path}")]
    RouteNotFound {
        /// The method.
        method: String,
        /// The path.
        path: String,
    },
    /// The route exists with another method.
    #[error("{method} is not allowed on {path}")]
    MethodNotAllowed {
        /// The method.
        method: String,
        /// The path.
        path: String,
    },
    /// Another service this request needs (products, for a random user) is unreachable or failed.
    #[error("{service} is unavailable: {message}")]
    Unavailable {
        /// Which service.
        service: &'static str,
        /// What happened.
        message: String,
    },
    /// The database failed: a fault of this service.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// A field error.
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::InvalidField {
            field: field.into(),
            message: message.into(),
        }
    }

    /// Status, code and field.
    fn parts(&self) -> (StatusCode, &'static str, Option<String>) {
        use StatusCode as S;
        match self {
            Self::InvalidJson(_) => (S::BAD_REQUEST, "invalid_json", None),
            Self::NotAnObject => (S::BAD_REQUEST, "invalid_field", None),
            Self::InvalidField { field, .. } => (S::BAD_REQUEST, "invalid_field", Some(field.clone())),
            Self::OutOfRange { field, .. } => (S::UNPROCESSABLE_ENTITY, "out_of_range", Some(field.clone())),
            Self::InvalidParameter { field, .. } => {
                (S::BAD_REQUEST, "invalid_parameter", Some((*field).into()))
            }
            Self::BodyTooLarge { .. } => (S::PAYLOAD_TOO_LARGE, "body_too_large", None),
            Self::UnreadableBody(_) => (S::BAD_REQUEST, "unreadable_body", None),
            Self::ProductNotFound(_) => (S::NOT_FOUND, "product_not_found", Some("id".into())),
            Self::AlreadyLiked => (S::BAD_REQUEST, "already_liked", None),
            Self::RouteNotFound { .. } => (S::NOT_FOUND, "route_not_found", None),
            Self::MethodNotAllowed { .. } => (S::METHOD_NOT_ALLOWED, "method_not_allowed", None),
            Self::Unavailable { .. } => (S::SERVICE_UNAVAILABLE, "unavailable", None),
            Self::Internal(_) => (S::INTERNAL_SERVER_ERROR, "internal", None),
        }
    }

    /// The error of a body the extractor could not read.
    pub fn from_body(rejection: &BytesRejection) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Self::BodyTooLarge {
                limit: crate::MAX_BODY_BYTES,
            }
        } else {
            Self::UnreadableBody(rejection.body_text())
        }
    }
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        Self::Internal(e.to_string())
    }
}

impl From<rusqlite::Error> for ApiError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Internal(format!("sqlite: {e}"))
    }
}

/// The error body, in ferry's order.
#[derive(Serialize)]
struct ErrorBody {
    error: &'static str,
    message: String,
    field: Option<String>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, field) = self.parts();
        if status.is_server_error() {
            tracing::error!(error = %self, "request failed");
        }
        let body = ErrorBody {
            error: code,
            message: self.to_string(),
            field,
        };
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_has_its_status_code_and_field() {
        let (s, code, field) = ApiError::field("title", "title must be a non-empty string").parts();
        assert_eq!(
            (s.as_u16(), code, field.as_deref()),
            (400, "invalid_field", Some("title"))
        );
        let (s, code, _) = ApiError::AlreadyLiked.parts();
        assert_eq!((s.as_u16(), code), (400, "already_liked"));
        assert_eq!(
            ApiError::AlreadyLiked.to_string(),
            "You already liked this product"
        );
        let (s, code, field) = ApiError::ProductNotFound(3).parts();
        assert_eq!(
            (s.as_u16(), code, field.as_deref()),
            (404, "product_not_found", Some("id"))
        );
        let r = ApiError::Unavailable {
            service: "products",
            message: "connection refused".into(),
        }
        .into_response();
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()[header::RETRY_AFTER], "1");
    }
}
