//! Requests to the server and their answers: URLs, the bearer token, timeouts, and turning error answers
//! into [`ApiError`]s in exactly one place.

use std::fmt::Write as _;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::error::{ApiError, Error, Result};

/// The HTTP methods the API uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verb {
    Get,
    Post,
    Put,
    Delete,
}

impl Verb {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Post => "POST",
            Self::Put => "PUT",
            Self::Delete => "DELETE",
        }
    }

    fn method(self) -> reqwest::Method {
        match self {
            Self::Get => reqwest::Method::GET,
            Self::Post => reqwest::Method::POST,
            Self::Put => reqwest::Method::PUT,
            Self::Delete => reqwest::Method::DELETE,
        }
    }
}

/// The connection to one server. Shared by every handle of a [`crate::Client`].
#[derive(Debug)]
pub(crate) struct Http {
    client: reqwest::Client,
    /// `http://host:port` plus any path prefix, without a trailing `/`.
    base: String,
    /// Limit of a request that does not long-poll; long-polls get their wait on top.
    timeout: Duration,
}

/// A successful answer.
#[derive(Debug)]
pub(crate) struct Answer {
    pub status: u16,
    pub body: Bytes,
    pub url: String,
    pub method: &'static str,
}

impl Answer {
    /// The body as JSON of type `T`.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_slice(&self.body).map_err(|e| self.protocol(format!("{e}")))
    }

    pub fn protocol(&self, message: String) -> Error {
        Error::Protocol {
            method: self.method,
            url: self.url.clone(),
            status: self.status,
            message,
        }
    }
}

#[derive(Deserialize)]
struct ErrorBody {
    error: String,
    message: String,
    #[serde(default)]
    field: Option<String>,
}

impl Http {
    pub fn new(client: reqwest::Client, base: String, timeout: Duration) -> Self {
        Self {
            client,
            base,
            timeout,
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends `body` (JSON, when given) and returns the answer if its status is 2xx; an error answer
    /// becomes [`Error::Api`]. `wait` is added to the timeout (a long-poll's `max_wait`).
    pub async fn send(&self, verb: Verb, path: &str, body: Option<Bytes>, wait: Duration) -> Result<Answer> {
        let url = format!("{}{path}", self.base);
        let mut req = self
            .client
            .request(verb.method(), &url)
            .timeout(self.timeout + wait);
        if let Some(body) = body {
            req = req
                .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
                .body(body);
        }
        let method = verb.as_str();
        let resp = req.send().await.map_err(|e| Error::transport(method, &url, e))?;
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = resp
            .bytes()
            .await
            .map_err(|e| Error::transport(method, &url, e))?;
        if status.is_success() {
            return Ok(Answer {
                status: status.as_u16(),
                body,
                url,
                method,
            });
        }
        let error = match serde_json::from_slice::<ErrorBody>(&body) {
            Ok(b) => ApiError {
                status: status.as_u16(),
                code: b.error,
                message: b.message,
                field: b.field,
                retry_after,
            },
            // Not ferry's error body: a proxy, or a server of another kind at this address.
            Err(_) => {
                let text = String::from_utf8_lossy(&body);
                let text = text.trim();
                let message = if text.is_empty() {
                    format!("{method} {url}: {}", status.canonical_reason().unwrap_or("error"))
                } else {
                    let cut: String = text.chars().take(200).collect();
                    format!("{method} {url}: {cut}")
                };
                ApiError {
                    status: status.as_u16(),
                    code: format!("http_{}", status.as_u16()),
                    message,
                    field: None,
                    retry_after,
                }
            }
        };
        Err(Error::Api(error))
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.send(Verb::Get, path, None, Duration::ZERO).await?.json()
    }

    pub async fn send_json<B: serde::Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        verb: Verb,
        path: &str,
        body: &B,
    ) -> Result<T> {
        let body = to_body(body)?;
        self.send(verb, path, Some(body), Duration::ZERO).await?.json()
    }

    /// Sends a JSON body and expects an empty answer (204).
    pub async fn send_empty<B: serde::Serialize + ?Sized>(
        &self,
        verb: Verb,
        path: &str,
        body: Option<&B>,
    ) -> Result<()> {
        let body = body.map(to_body).transpose()?;
        self.send(verb, path, body, Duration::ZERO).await?;
        Ok(())
    }
}

fn to_body<B: serde::Serialize + ?Sized>(body: &B) -> Result<Bytes> {
    serde_json::to_vec(body)
        .map(Bytes::from)
        .map_err(|e| Error::invalid("body", e.to_string()))
}

/// A path from literal parts and names; each name is checked and percent-encoded as one path segment.
/// `path(&["/v1/topics/", topic, "/records"])` alternates literals (even indexes) and names (odd).
pub(crate) fn path(parts: &[&str]) -> Result<String> {
    let mut out = String::new();
    for (i, part) in parts.iter().enumerate() {
        if i % 2 == 0 {
            out.push_str(part);
        } else {
            segment(&mut out, part)?;
        }
    }
    Ok(out)
}

fn segment(out: &mut String, name: &str) -> Result<()> {
    // URL parsers resolve `.` and `..` (encoded or not) as dot segments: such a request would reach
    // another route. The server refuses these names anyway.
    if name.is_empty() || name == "." || name == ".." {
        return Err(Error::invalid(
            "name",
            format!("`{name}` cannot be a topic, group or subscription name"),
        ));
    }
    encode(out, name);
    Ok(())
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn encode(out: &mut String, text: &str) {
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
}

/// `?k=v&...` from pairs whose values need no encoding (numbers, names checked by [`segment`]).
pub(crate) fn query(pairs: &[(&str, String)]) -> String {
    let mut out = String::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        out.push(if i == 0 { '?' } else { '&' });
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
    out
}

/// Percent-encodes a query value.
pub(crate) fn query_value(value: &str) -> String {
    let mut out = String::new();
    encode(&mut out, value);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_encoded_as_one_segment() {
        assert_eq!(
            path(&["/v1/topics/", "a b/c", "/records"]).unwrap(),
            "/v1/topics/a%20b%2Fc/records"
        );
        assert_eq!(
            path(&["/v1/topics/", "orders.v2_x-1"]).unwrap(),
            "/v1/topics/orders.v2_x-1"
        );
        for bad in ["", ".", ".."] {
            assert!(matches!(
                path(&["/v1/topics/", bad]),
                Err(Error::InvalidArgument { .. })
            ));
        }
    }
}
