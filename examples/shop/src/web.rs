//! What both services' HTTP sides share: reading and checking JSON bodies and path ids, the JSON
//! answers for unknown routes and methods, and serving until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::extract::rejection::BytesRejection;
use axum::http::{Method, Uri};
use serde_json::{Map, Value};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::MAX_BODY_BYTES;
use crate::error::ApiError;
use crate::inbox::Consumer;
use crate::outbox::Relay;

/// Longest title, in characters.
pub const MAX_TITLE: usize = 200;
/// Longest description, in characters.
pub const MAX_DESCRIPTION: usize = 10_000;
/// Longest image URL, in characters.
pub const MAX_IMAGE: usize = 2_048;

/// The body as a JSON object; `None` for an empty body.
///
/// # Errors
/// 413 or 400 for a body that cannot be read, 400 `invalid_json` for one that is not JSON, 400
/// `invalid_field` for JSON that is not an object.
pub fn json_object(body: Result<Bytes, BytesRejection>) -> Result<Option<Map<String, Value>>, ApiError> {
    let body = body.map_err(|e| ApiError::from_body(&e))?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(map)) => Ok(Some(map)),
        Ok(_) => Err(ApiError::NotAnObject),
        Err(e) => Err(ApiError::InvalidJson(e.to_string())),
    }
}

/// A product id from the path: a positive integer.
///
/// # Errors
/// 400 `invalid_parameter` naming `id`.
pub fn path_id(raw: &str) -> Result<i64, ApiError> {
    match raw.parse::<i64>() {
        Ok(id) if id > 0 => Ok(id),
        _ => Err(ApiError::InvalidParameter {
            field: "id",
            message: format!("id must be a positive integer, got `{raw}`"),
        }),
    }
}

/// The writable fields of a product, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductInput {
    /// Not empty (after trimming), at most [`MAX_TITLE`] characters.
    pub title: String,
    /// Default empty.
    pub description: String,
    /// Default empty.
    pub image: String,
}

/// Checks the body of `POST /api/products` and `PUT /api/products/{id}` (a PUT replaces the product:
/// a field left out is empty again).
///
/// # Errors
/// 400 naming the first bad field: a missing, empty or non-string `title`, a non-string `description`
/// or `image`, a field that is not one of those; 422 for a value that is too long.
pub fn product_input(body: Option<Map<String, Value>>) -> Result<ProductInput, ApiError> {
    let body = body.ok_or_else(|| ApiError::field("title", "title must be a non-empty string"))?;
    if let Some(unknown) = body
        .keys()
        .find(|k| !["title", "description", "image"].contains(&k.as_str()))
    {
        return Err(ApiError::field(
            unknown.as_str(),
            format!("{unknown} is not a field you can set (title, description, image)"),
        ));
    }
    let text = |name: &str, max: usize| -> Result<String, ApiError> {
        let value = match body.get(name) {
            None => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(_) => return Err(ApiError::field(name, format!("{name} must be a string"))),
        };
        let len = value.chars().count();
        if len > max {
            return Err(ApiError::OutOfRange {
                field: name.into(),
                message: format!("{name} must be at most {max} characters, got {len}"),
            });
        }
        Ok(value)
    };
    let title = match body.get("title") {
        Some(Value::String(s)) if !s.trim().is_empty() => text("title", MAX_TITLE)?,
        _ => return Err(ApiError::field("title", "title must be a non-empty string")),
    };
    Ok(ProductInput {
        title,
        description: text("description", MAX_DESCRIPTION)?,
        image: text("image", MAX_IMAGE)?,
    })
}

/// The `GET /healthz` answer of a service: `{"status": "ok", "service", "outbox_pending", "published",
/// "consumer": {...}}`.
///
/// # Errors
/// The database's.
pub async fn health(
    service: &'static str,
    db: &crate::db::Db,
    published: &std::sync::atomic::AtomicU64,
    stats: &crate::inbox::Stats,
) -> Result<Value, ApiError> {
    let pending = db.run(|c| Ok::<_, ApiError>(crate::outbox::pending(c)?)).await?;
    Ok(serde_json::json!({
        "status": "ok",
        "service": service,
        "outbox_pending": pending,
        "published": published.load(std::sync::atomic::Ordering::Relaxed),
        "consumer": stats.to_json(),
    }))
}

/// A service's routes with JSON answers for unknown routes (404) and methods (405), and the body
/// limit ([`MAX_BODY_BYTES`], 413 past it).
pub fn finish(router: Router) -> Router {
    router
        .fallback(|method: Method, uri: Uri| async move {
            ApiError::RouteNotFound {
                method: method.to_string(),
                path: uri.path().to_string(),
            }
        })
        .method_not_allowed_fallback(|method: Method, uri: Uri| async move {
            ApiError::MethodNotAllowed {
                method: method.to_string(),
                path: uri.path().to_string(),
            }
        })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
}

/// Serves `router` on `listen` and runs `relay` and `consumer` beside it until SIGINT or SIGTERM, then
/// stops taking connections, lets requests in flight finish and stops both loops.
///
/// Prints one JSON line on stdout once it listens:
/// `{"service": NAME, "listening": "http://ADDR", "ferry": URL}`.
///
/// # Errors
/// The address cannot be bound; serving fails.
pub async fn serve(
    name: &'static str,
    listen: SocketAddr,
    router: Router,
    relay: Relay,
    consumer: Consumer,
    ferry_url: &str,
) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("--listen {listen}: cannot listen"))?;
    let addr = listener.local_addr()?;
    let cancel = CancellationToken::new();
    let relay = tokio::spawn(relay.run(cancel.clone()));
    let consumer = tokio::spawn(consumer.run(cancel.clone()));
    let ferry_url = redact(ferry_url);
    let line = serde_json::json!({
        "service": name,
        "listening": format!("http://{addr}"),
        "ferry": ferry_url,
    });
    println!("{line}");
    tracing::info!(service = name, %addr, ferry = %ferry_url, "listening");
    axum::serve(listener, router)
        .with_graceful_shutdown(signal())
        .await
        .context("serving HTTP")?;
    cancel.cancel();
    // The relay finishes a batch in flight; neither loop waits on ferry for long.
    let stopped = tokio::time::timeout(Duration::from_secs(10), async {
        let _ = relay.await;
        let _ = consumer.await;
    })
    .await;
    if stopped.is_err() {
        tracing::warn!(
            service = name,
            "the relay or the consumer did not stop within 10 s"
        );
    }
    tracing::info!(service = name, "stopped");
    Ok(())
}

/// `url` without the password or token of a `user:password@` part, for output and logs.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}***{}", &url[..scheme + 3], &url[at..]),
        _ => url.to_string(),
    }
}

/// Resolves at the first SIGINT (Ctrl-C) or SIGTERM.
async fn signal() {
    let interrupt = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
    tracing::info!("stopping");
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn input(v: Value) -> Result<ProductInput, ApiError> {
        product_input(v.as_object().cloned())
    }

    fn field_of(e: &ApiError) -> &str {
        match e {
            ApiError::InvalidField { field, .. } | ApiError::OutOfRange { field, .. } => field,
            other => panic!("not a field error: {other:?}"),
        }
    }

    #[test]
    fn product_bodies_are_checked_field_by_field() {
        let ok = input(json!({"title": "Mug", "image": "http://x/mug.png"})).unwrap();
        assert_eq!(ok.title, "Mug");
        assert_eq!(ok.description, "");
        for (body, field) in [
            (json!({}), "title"),
            (json!({"title": ""}), "title"),
            (json!({"title": "  "}), "title"),
            (json!({"title": 3}), "title"),
            (json!({"title": "a", "description": null}), "description"),
            (json!({"title": "a", "image": 1}), "image"),
            (json!({"title": "a", "likes": 5}), "likes"),
            (json!({"title": "x".repeat(MAX_TITLE + 1)}), "title"),
        ] {
            let e = input(body.clone()).unwrap_err();
            assert_eq!(field_of(&e), field, "{body}: {e}");
        }
        let e = product_input(None).unwrap_err();
        assert_eq!(e.to_string(), "title must be a non-empty string");
    }

    #[test]
    fn urls_are_shown_without_credentials() {
        assert_eq!(redact("http://127.0.0.1:5555"), "http://127.0.0.1:5555");
        assert_eq!(redact("http://user:secret@host:1/x"), "http://***@host:1/x");
    }

    #[test]
    fn bodies_and_ids_that_do_not_parse_are_400() {
        assert!(json_object(Ok(Bytes::from_static(b" \n"))).unwrap().is_none());
        assert!(matches!(
            json_object(Ok(Bytes::from_static(b"{"))),
            Err(ApiError::InvalidJson(_))
        ));
        assert!(matches!(
            json_object(Ok(Bytes::from_static(b"[1]"))),
            Err(ApiError::NotAnObject)
        ));
        assert_eq!(path_id("12").unwrap(), 12);
        for bad in ["0", "-1", "x", "1.5", ""] {
            assert!(matches!(
                path_id(bad),
                Err(ApiError::InvalidParameter { field: "id", .. })
            ));
        }
    }
}
