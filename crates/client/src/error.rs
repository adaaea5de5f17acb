//! The client's one error type.
//!
//! Every message can be printed as it is by a CLI: it says what failed and, for API errors, the server's
//! own message followed by the status and the stable code (`topic `x` does not exist (404
//! topic_not_found)`).

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Result alias of the client.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error answer of the server: its status and the body `{"error", "message", "field"}`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ApiError {
    /// HTTP status (4xx: the request can be fixed; 5xx: a fault of the server).
    pub status: u16,
    /// Stable code to match on (`topic_not_found`, `invalid_field`, ...). For an error answer that is not
    /// ferry's JSON body (a proxy in between), `http_<status>`.
    pub code: String,
    /// For people; may change between versions.
    pub message: String,
    /// What the error is about: a JSON path into the request (`records[2].value`), a query or path
    /// parameter (`max_wait_ms`, `topic`) or a header.
    pub field: Option<String>,
    /// The server's `Retry-After`, sent with 503.
    pub retry_after: Option<Duration>,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({} {})", self.message, self.status, self.code)
    }
}

impl StdError for ApiError {}

/// What can go wrong. Cheap to clone, so that one failed batch can fail each of its sends with it.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server refused the request or failed it.
    #[error(transparent)]
    Api(ApiError),
    /// The HTTP request did not get an answer: connection refused or reset, a timeout. For a publish,
    /// the records may or may not have been stored. (Over the wire protocol: [`Error::Wire`].)
    #[error("{method} {url}: {detail}")]
    Transport {
        /// The request's method.
        method: &'static str,
        /// The request's URL.
        url: String,
        /// The cause, innermost reason last.
        detail: String,
        /// The HTTP client's error.
        #[source]
        source: Arc<reqwest::Error>,
    },
    /// The server answered something this client does not understand (a body that is not the expected
    /// JSON, a wrong number of offsets).
    #[error("{method} {url}: unexpected answer (HTTP {status}): {message}")]
    Protocol {
        /// The request's method.
        method: &'static str,
        /// The request's URL.
        url: String,
        /// The status of the answer.
        status: u16,
        /// What was wrong with it.
        message: String,
    },
    /// A request over the wire protocol ([`crate::ClientBuilder::wire`]) got no answer: the connection
    /// could not be opened, or it broke, was closed by the server (shutting down, or after a frame it
    /// could not decode) or went without an answer past the timeout while the request was pending. For
    /// a publish, the records may or may not have been stored. Every request pending on the connection
    /// fails with this error; the next request opens a new connection.
    #[error("wire {addr}: {detail}")]
    Wire {
        /// The wire address, `host:port`.
        addr: String,
        /// What happened.
        detail: String,
    },
    /// The server answered a wire request with something this client does not understand: a response
    /// of another kind than the request's, a wrong number of offsets, a protocol version it does not
    /// speak.
    #[error("wire {addr}: unexpected answer to {request}: {message}")]
    WireProtocol {
        /// The wire address, `host:port`.
        addr: String,
        /// The request's kind (`PUBLISH`, `RECEIVE`, ...).
        request: &'static str,
        /// What was wrong with the answer.
        message: String,
    },
    /// The client's settings are wrong: a URL that does not parse, a token that cannot be a header.
    #[error("{0}")]
    Config(String),
    /// An argument the client refuses before sending anything (a record value that is not JSON, a
    /// header name given twice, a name that cannot be a path segment).
    #[error("{field}: {message}")]
    InvalidArgument {
        /// The argument.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// The producer's buffer holds `limit` bytes of unsent records already; the record was not sent.
    #[error("the producer's buffer is full ({limit} bytes of records waiting); the record was not sent")]
    BufferFull {
        /// `max_buffered_bytes` of the producer.
        limit: usize,
    },
    /// The producer was closed before this send; the record was not sent.
    #[error("the producer is closed; the record was not sent")]
    Closed,
    /// The producer's task stopped (its runtime shut down) before the server answered; the record may or
    /// may not have been stored.
    #[error("the producer stopped before the server acknowledged the record; it may or may not be stored")]
    Abandoned,
    /// A receive sent ahead by a [`crate::Prefetch`] was stopped by its runtime shutting down before it
    /// was answered; what it leased is available again once those leases run out.
    #[error("the receive sent ahead stopped before it was answered (its runtime shut down)")]
    ReceiveStopped,
}

impl Error {
    /// The server's error answer, if this is one.
    pub fn api(&self) -> Option<&ApiError> {
        match self {
            Self::Api(e) => Some(e),
            _ => None,
        }
    }

    /// The server's stable error code (`topic_not_found`), if this is an API error.
    pub fn code(&self) -> Option<&str> {
        self.api().map(|e| e.code.as_str())
    }

    /// The HTTP status, if the server answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Api(e) => Some(e.status),
            Self::Protocol { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether the same request may succeed later unchanged: transport failures (HTTP or wire), 503 and
    /// other 5xx. Whether retrying a publish is safe is the caller's call: it may store the records
    /// twice.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Transport { .. } | Self::Wire { .. } => true,
            Self::Api(e) => e.status >= 500,
            _ => false,
        }
    }

    pub(crate) fn transport(method: &'static str, url: &str, source: reqwest::Error) -> Self {
        // reqwest's own message is terse ("error sending request"); the reason is at the end of its chain.
        let mut detail = if source.is_timeout() {
            "timed out".to_string()
        } else {
            "request failed".to_string()
        };
        let mut cause: Option<&dyn StdError> = StdError::source(&source);
        while let Some(c) = cause {
            let text = c.to_string();
            if !detail.ends_with(&text) {
                detail.push_str(": ");
                detail.push_str(&text);
            }
            cause = c.source();
        }
        Self::Transport {
            method,
            url: url.to_string(),
            detail,
            source: Arc::new(source),
        }
    }

    pub(crate) fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::InvalidArgument {
            field: field.into(),
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_errors_print_message_status_and_code() {
        let e = Error::Api(ApiError {
            status: 404,
            code: "topic_not_found".into(),
            message: "topic `x` does not exist".into(),
            field: Some("topic".into()),
            retry_after: None,
        });
        assert_eq!(e.to_string(), "topic `x` does not exist (404 topic_not_found)");
        assert_eq!(e.code(), Some("topic_not_found"));
        assert_eq!(e.status(), Some(404));
        assert!(!e.is_transient());
    }
}
