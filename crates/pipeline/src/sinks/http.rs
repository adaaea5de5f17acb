//! `type = "http"`: each record sent as a JSON body to a webhook; a 2xx answer confirms it.
//!
//! Answers 4xx (except 408 and 429) mean the server will not take this record: dead-lettered at once.
//! 5xx, 408, 429, other answers, timeouts and connection failures are retried.
//!
//! Webhook URLs often carry a secret in their path or query (`/services/T0/B0/XXXX`), and header values
//! read from the environment are tokens: messages and `Debug` show only the URL's scheme, host and port,
//! and never header values.

use std::error::Error as _;

use anyhow::Context;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode, Url};

use crate::bus::BoxFuture;
use crate::component::{BuildContext, Sink};
use crate::config::HttpSinkConfig;
use crate::error::StageError;
use crate::event::Event;

/// Prefix of a header value read from an environment variable: `env:NAME`.
const ENV_PREFIX: &str = "env:";

/// How much of an error answer's body goes into the error message.
const BODY_SNIPPET: usize = 256;

/// Problems of an `http` sink's settings, each with its key.
pub fn validate(c: &HttpSinkConfig) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Err(message) = parse_url(&c.url) {
        out.push(("url".into(), message));
    }
    if let Err(message) = parse_method(&c.method) {
        out.push(("method".into(), message));
    }
    for (name, value) in &c.headers {
        if HeaderName::from_bytes(name.as_bytes()).is_err() {
            out.push(("headers".into(), format!("`{name}` is not a valid header name")));
        }
        match value.strip_prefix(ENV_PREFIX) {
            Some(var) if var.is_empty() || var.contains(['=', '\0']) => out.push((
                "headers".into(),
                format!("`{name}`: `{ENV_PREFIX}` must be followed by an environment variable's name"),
            )),
            Some(_) => {}
            // The value itself is not shown: it may be a token written inline.
            None if HeaderValue::from_str(value).is_err() => {
                out.push((
                    "headers".into(),
                    format!("`{name}`: the value is not a valid header value"),
                ));
            }
            None => {}
        }
    }
    if c.timeout.0.is_zero() {
        out.push(("timeout".into(), "must be longer than 0s".into()));
    }
    out
}

fn parse_url(url: &str) -> Result<Url, String> {
    // The URL is not repeated in the message: it may hold a secret.
    let parsed = Url::parse(url).map_err(|e| format!("not a valid URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!(
            "must be an http:// or https:// URL, got scheme `{}`",
            parsed.scheme()
        ));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err("must name a host".into());
    }
    Ok(parsed)
}

fn parse_method(method: &str) -> Result<Method, String> {
    match method.to_ascii_uppercase().as_str() {
        "POST" => Ok(Method::POST),
        "PUT" => Ok(Method::PUT),
        _ => Err(format!("must be `POST` or `PUT`, got `{method}`")),
    }
}

/// The part of a URL that is safe to show: `https://host:port`.
fn redacted(url: &Url) -> String {
    match url.port() {
        Some(port) => format!("{}://{}:{port}", url.scheme(), url.host_str().unwrap_or_default()),
        None => format!("{}://{}", url.scheme(), url.host_str().unwrap_or_default()),
    }
}

/// Sends each record's value as JSON to a URL.
pub struct HttpSink {
    client: reqwest::Client,
    url: Url,
    method: Method,
    /// `METHOD scheme://host:port`, for messages.
    target: String,
}

impl std::fmt::Debug for HttpSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpSink")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl HttpSink {
    /// A sink for `c`: reads `env:` header values from the environment and makes the HTTP client (no
    /// connection is made until the first write).
    ///
    /// # Errors
    /// Invalid settings, or an `env:NAME` header whose variable is unset or not a valid header value.
    pub fn new(c: &HttpSinkConfig, _ctx: &BuildContext) -> anyhow::Result<Self> {
        if let Some((key, message)) = validate(c).into_iter().next() {
            anyhow::bail!("{key}: {message}");
        }
        let url = parse_url(&c.url).map_err(|e| anyhow::anyhow!("url: {e}"))?;
        let method = parse_method(&c.method).map_err(|e| anyhow::anyhow!("method: {e}"))?;
        let mut headers = HeaderMap::new();
        for (name, value) in &c.headers {
            let header = HeaderName::from_bytes(name.as_bytes())
                .with_context(|| format!("headers: `{name}` is not a valid name"))?;
            let value = match value.strip_prefix(ENV_PREFIX) {
                Some(var) => {
                    let secret = match std::env::var(var) {
                        Ok(v) => v,
                        Err(std::env::VarError::NotPresent) => {
                            anyhow::bail!("headers.{name}: environment variable `{var}` is not set")
                        }
                        Err(std::env::VarError::NotUnicode(_)) => {
                            anyhow::bail!("headers.{name}: environment variable `{var}` is not valid UTF-8")
                        }
                    };
                    let mut value = HeaderValue::from_str(&secret).map_err(|_| {
                        anyhow::anyhow!("headers.{name}: the value of environment variable `{var}` is not a valid header value")
                    })?;
                    // Keeps it out of reqwest's Debug output and out of HTTP/2 header compression tables.
                    value.set_sensitive(true);
                    value
                }
                None => HeaderValue::from_str(value)
                    .map_err(|_| anyhow::anyhow!("headers.{name}: the value is not a valid header value"))?,
            };
            headers.insert(header, value);
        }
        let client = reqwest::Client::builder()
            .timeout(c.timeout.0)
            .default_headers(headers)
            .build()
            .context("cannot make the HTTP client")?;
        let target = format!("{method} {}", redacted(&url));
        Ok(Self {
            client,
            url,
            method,
            target,
        })
    }

    async fn send(&self, event: &Event) -> Result<(), StageError> {
        let response = self
            .client
            .request(self.method.clone(), self.url.clone())
            .json(&event.value)
            .send()
            .await
            .map_err(|e| {
                let message = format!("http {}: {}", self.target, describe(e.without_url()));
                StageError::transient(message)
            })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let message = format!(
            "http {}: answered {status}{}",
            self.target,
            snippet(response).await
        );
        if status.is_client_error()
            && status != StatusCode::REQUEST_TIMEOUT
            && status != StatusCode::TOO_MANY_REQUESTS
        {
            Err(StageError::permanent(message))
        } else {
            Err(StageError::transient(message))
        }
    }
}

impl Sink for HttpSink {
    fn write<'a>(&'a self, events: &'a [Event]) -> BoxFuture<'a, Result<(), StageError>> {
        Box::pin(async move {
            for event in events {
                self.send(event).await?;
            }
            Ok(())
        })
    }
}

/// reqwest's message and its causes (its own is terse: "error sending request").
fn describe(e: reqwest::Error) -> String {
    let mut out = if e.is_timeout() {
        "timed out".to_owned()
    } else {
        e.to_string()
    };
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

/// `": <start of the body>"` of an error answer, or nothing; reads at most about [`BODY_SNIPPET`] bytes.
async fn snippet(mut response: reqwest::Response) -> String {
    let mut body = Vec::new();
    while body.len() < BODY_SNIPPET {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    let text = String::from_utf8_lossy(&body[..body.len().min(BODY_SNIPPET)]);
    let text = text.trim();
    if text.is_empty() {
        String::new()
    } else {
        format!(": {text}")
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use axum::Json;
    use axum::extract::{Path as UrlPath, State};
    use axum::http::HeaderMap as AxumHeaders;
    use axum::routing::{post, put};
    use serde_json::{Value, json};

    use super::*;
    use crate::config::Span;
    use crate::sinks::topic::tests::context;

    #[derive(Default)]
    struct Hook {
        requests: AtomicUsize,
        /// Bodies received, with the `x-path` header.
        bodies: Mutex<Vec<(Value, Option<String>)>>,
    }

    /// A webhook on 127.0.0.1: `/flaky` answers 500 to the first request and 200 after; `/status/N`
    /// answers N. Returns its base URL.
    async fn serve(hook: Arc<Hook>) -> String {
        async fn flaky(
            State(hook): State<Arc<Hook>>,
            headers: AxumHeaders,
            Json(body): Json<Value>,
        ) -> StatusCode {
            let path = headers
                .get("x-path")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            hook.bodies.lock().unwrap().push((body, path));
            if hook.requests.fetch_add(1, Ordering::SeqCst) == 0 {
                StatusCode::INTERNAL_SERVER_ERROR
            } else {
                StatusCode::OK
            }
        }
        async fn status(UrlPath(code): UrlPath<u16>) -> (StatusCode, &'static str) {
            (StatusCode::from_u16(code).unwrap(), "nope")
        }
        let app = axum::Router::new()
            .route("/flaky", post(flaky))
            .route("/status/{code}", put(status))
            .with_state(hook);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        format!("http://{addr}")
    }

    fn config(url: String, method: &str, headers: &[(&str, &str)]) -> HttpSinkConfig {
        HttpSinkConfig {
            url,
            method: method.into(),
            headers: headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<BTreeMap<_, _>>(),
            timeout: Span::secs(5),
        }
    }

    #[test]
    fn validation_names_keys() {
        assert!(
            validate(&config(
                "https://example.com/hook".into(),
                "post",
                &[("x-token", "env:TOKEN")]
            ))
            .is_empty()
        );
        let mut bad = config(
            "ftp://example.com".into(),
            "GET",
            &[("bad header", "v"), ("x-a", "env:")],
        );
        bad.timeout = Span::secs(0);
        let problems = validate(&bad);
        let keys: Vec<&str> = problems.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            ["url", "method", "headers", "headers", "timeout"],
            "{problems:?}"
        );
        assert_eq!(validate(&config("not a url".into(), "PUT", &[]))[0].0, "url");
    }

    #[test]
    fn unset_env_header_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let (ctx, _) = context(dir.path());
        let c = config(
            "http://127.0.0.1:9/".into(),
            "POST",
            &[("x-token", "env:FERRY_TEST_SURELY_UNSET_7Q")],
        );
        let err = HttpSink::new(&c, &ctx).unwrap_err().to_string();
        assert!(
            err.contains("FERRY_TEST_SURELY_UNSET_7Q") && err.contains("x-token"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn server_error_is_transient_then_delivered() {
        let hook = Arc::new(Hook::default());
        let base = serve(hook.clone()).await;
        let dir = tempfile::tempdir().unwrap();
        let (ctx, _) = context(dir.path());
        // PATH is set in any environment tests run in; it stands for a token read from the environment.
        let path = std::env::var("PATH").ok();
        let headers: Vec<(&str, &str)> = if path.is_some() {
            vec![("x-path", "env:PATH")]
        } else {
            vec![]
        };
        let sink = HttpSink::new(
            &config(format!("{base}/flaky?token=s3cret"), "POST", &headers),
            &ctx,
        )
        .unwrap();
        assert!(!format!("{sink:?}").contains("s3cret"));
        let event = Event::new(json!({"user": "ann", "n": 1}));

        let err = sink.write(std::slice::from_ref(&event)).await.unwrap_err();
        assert!(!err.permanent, "{err}");
        assert!(
            err.message.contains("500") && !err.message.contains("s3cret"),
            "{err}"
        );
        sink.write(std::slice::from_ref(&event)).await.unwrap();

        let bodies = hook.bodies.lock().unwrap();
        assert_eq!(bodies.len(), 2);
        assert_eq!(bodies[1], (json!({"user": "ann", "n": 1}), path));
    }

    #[tokio::test]
    async fn client_errors_are_permanent_except_timeouts_and_throttling() {
        let base = serve(Arc::new(Hook::default())).await;
        let dir = tempfile::tempdir().unwrap();
        let (ctx, _) = context(dir.path());
        let event = [Event::new(json!(1))];
        for (code, permanent) in [(400, true), (404, true), (408, false), (429, false), (503, false)] {
            let sink = HttpSink::new(&config(format!("{base}/status/{code}"), "PUT", &[]), &ctx).unwrap();
            let err = sink.write(&event).await.unwrap_err();
            assert_eq!(err.permanent, permanent, "{code}: {err}");
            assert!(
                err.message.contains(&code.to_string()) && err.message.contains("nope"),
                "{err}"
            );
        }
        sink_ok(&base, &ctx).await;
    }

    async fn sink_ok(base: &str, ctx: &BuildContext) {
        let sink = HttpSink::new(&config(format!("{base}/status/204"), "PUT", &[]), ctx).unwrap();
        sink.write(&[Event::new(json!(1))]).await.unwrap();
    }

    #[tokio::test]
    async fn connection_refused_is_transient() {
        // A port that was free a moment ago: nothing listens on it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        let (ctx, _) = context(dir.path());
        let sink = HttpSink::new(&config(format!("http://127.0.0.1:{port}/x"), "POST", &[]), &ctx).unwrap();
        let err = sink.write(&[Event::new(json!(1))]).await.unwrap_err();
        assert!(!err.permanent, "{err}");
    }
}
