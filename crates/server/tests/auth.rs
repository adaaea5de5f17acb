//! Bearer tokens against a real server: open without tokens; with them, 401 without a valid token, 403
//! for a read-only token that writes, `/healthz` always open; tokens from variables and files.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;

use common::{Answer, TestServer};
use ferry_broker::Broker;
use ferry_server::{ServerOptions, TokenError, Tokens};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// Two read-write tokens (a rotation under way) and one read-only token.
async fn guarded(dir: &std::path::Path) -> TestServer {
    let tokens = Tokens::new(["rw-old-0123456789", "rw-new-0123456789"], ["ro-0123456789"]).unwrap();
    let options = ServerOptions {
        tokens,
        ..ServerOptions::default()
    };
    TestServer::serve_with(Broker::open(dir).unwrap(), options).await
}

/// A request with `Authorization: <auth>` (none when `None`), and its `WWW-Authenticate` header.
async fn call(
    server: &TestServer,
    method: Method,
    path: &str,
    auth: Option<&str>,
    body: Option<Value>,
) -> (Answer, Option<String>) {
    let mut req = server.client.request(method.clone(), server.url(path));
    if let Some(auth) = auth {
        req = req.header("authorization", auth);
    }
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.unwrap();
    let challenge = resp
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_string());
    let status = resp.status();
    let text = resp.text().await.unwrap();
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
    };
    (Answer { status, body, text }, challenge)
}

#[track_caller]
fn assert_refused(answer: &Answer, status: StatusCode, code: &str) {
    assert_eq!(answer.status, status, "{answer:?}");
    assert_eq!(answer.body["error"], code, "{answer:?}");
    assert_eq!(answer.body["field"], "authorization", "{answer:?}");
    assert!(
        answer.body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{answer:?}"
    );
    assert_eq!(answer.body.as_object().unwrap().len(), 3, "{answer:?}");
}

#[tokio::test]
async fn without_tokens_the_api_is_open() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    server.create_topic(json!({"name": "open"})).await;
    server.publish("open", &json!({"value": 1})).await;
    assert_eq!(server.get("/v1/topics").await.status, StatusCode::OK);
    let metrics = server.client.get(server.url("/metrics")).send().await.unwrap();
    assert_eq!(metrics.status(), StatusCode::OK);
    server.stop().await;
}

#[tokio::test]
async fn with_tokens_every_route_but_healthz_needs_one() {
    let dir = tempfile::tempdir().unwrap();
    // `serve_with` checks that /healthz answers without a token before returning.
    let server = guarded(dir.path()).await;

    // No token, another scheme, a malformed header: 401 and the bearer challenge.
    for auth in [
        None,
        Some("Basic cnctb2xkLTAxMjM0NTY3ODk6"),
        Some("Bearer"),
        Some("rw-old-0123456789"),
    ] {
        let (a, challenge) = call(&server, Method::GET, "/v1/topics", auth, None).await;
        assert_refused(&a, StatusCode::UNAUTHORIZED, "unauthorized");
        assert_eq!(challenge.as_deref(), Some("Bearer"), "{auth:?}");
    }
    // A token that is not configured, or only a part or an extension of one: 401 invalid_token.
    for token in [
        "wrong",
        "rw-old-012345678",
        "rw-old-01234567890",
        "RW-OLD-0123456789",
    ] {
        let auth = format!("Bearer {token}");
        let (a, challenge) = call(&server, Method::GET, "/v1/topics", Some(&auth), None).await;
        assert_refused(&a, StatusCode::UNAUTHORIZED, "unauthorized");
        assert_eq!(challenge.as_deref(), Some(r#"Bearer error="invalid_token""#));
        assert!(!a.text.contains(token), "the token is echoed: {}", a.text);
    }
    // Metrics and unknown routes are guarded too: an anonymous client does not learn what exists.
    for path in ["/metrics", "/v1/nothing/here", "/v1/topics/open/records"] {
        let (a, _) = call(&server, Method::GET, path, None, None).await;
        assert_refused(&a, StatusCode::UNAUTHORIZED, "unauthorized");
    }
    let (a, challenge) = call(&server, Method::GET, "/healthz", Some("Bearer wrong"), None).await;
    assert_eq!((a.status, challenge), (StatusCode::OK, None), "{a:?}");

    // Read-write tokens, old and new alike, may do anything; the scheme is case-insensitive.
    let topic = json!({"name": "orders", "partitions": 1});
    let (a, _) = call(
        &server,
        Method::POST,
        "/v1/topics",
        Some("Bearer rw-old-0123456789"),
        Some(topic),
    )
    .await;
    assert_eq!(a.status, StatusCode::CREATED, "{a:?}");
    let record = json!({"value": {"n": 1}});
    let path = "/v1/topics/orders/records";
    let (a, _) = call(
        &server,
        Method::POST,
        path,
        Some("bearer rw-new-0123456789"),
        Some(record),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{a:?}");

    // A read-only token reads (GET and HEAD) ...
    const RO: &str = "Bearer ro-0123456789";
    let ro = Some(RO);
    let fetch = "/v1/topics/orders/partitions/0/records?offset=0";
    let (a, _) = call(&server, Method::GET, fetch, ro, None).await;
    assert_eq!(a.status, StatusCode::OK, "{a:?}");
    assert_eq!(a.body["records"][0]["value"], json!({"n": 1}));
    let (a, _) = call(&server, Method::HEAD, "/v1/topics", ro, None).await;
    assert_eq!(a.status, StatusCode::OK, "{a:?}");
    let metrics = server
        .client
        .get(server.url("/metrics"))
        .header("authorization", RO);
    assert_eq!(metrics.send().await.unwrap().status(), StatusCode::OK);

    // ... and is refused every write with 403, before anything happens.
    let writes = [
        (Method::POST, "/v1/topics", json!({"name": "sneaky"})),
        (Method::POST, path, json!({"value": 2})),
        (Method::DELETE, "/v1/topics/orders", Value::Null),
        (
            Method::POST,
            "/v1/groups/g/topics/orders/offsets",
            json!({"offsets": [{"partition": 0, "offset": 1}]}),
        ),
    ];
    for (method, path, body) in writes {
        let body = (!body.is_null()).then_some(body);
        let (a, challenge) = call(&server, method.clone(), path, ro, body).await;
        assert_refused(&a, StatusCode::FORBIDDEN, "forbidden");
        assert!(
            a.body["message"].as_str().unwrap().contains(method.as_str()),
            "{a:?}"
        );
        assert_eq!(challenge.as_deref(), Some(r#"Bearer error="insufficient_scope""#));
    }
    let (a, _) = call(&server, Method::GET, "/v1/topics", ro, None).await;
    let names: Vec<&str> = a.body["topics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["orders"]);
    let (a, _) = call(&server, Method::GET, fetch, ro, None).await;
    assert_eq!(a.body["records"].as_array().unwrap().len(), 1, "{a:?}");

    // A valid token on an unknown route gets the usual 404.
    let (a, _) = call(&server, Method::GET, "/v1/nothing/here", ro, None).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND, "{a:?}");
    server.stop().await;
}

fn vars(pairs: &[(&str, &str)]) -> impl FnMut(&str) -> Option<String> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |name| map.get(name).cloned()
}

#[test]
fn tokens_come_from_variables_or_files() {
    // Nothing set, or set to the empty string: no tokens, the API is open.
    assert!(!Tokens::from_vars(vars(&[])).unwrap().is_enabled());
    assert!(
        !Tokens::from_vars(vars(&[("FERRY_TOKENS", "")]))
            .unwrap()
            .is_enabled()
    );

    // Comma-separated, spaces and empty entries ignored.
    let t = Tokens::from_vars(vars(&[
        ("FERRY_TOKENS", " a1 , b2,,"),
        ("FERRY_READ_TOKENS", "r1"),
    ]))
    .unwrap();
    assert!(t.is_enabled());
    assert_eq!((t.read_write_count(), t.read_only_count()), (2, 1));

    // Files: one token per line, blank lines and CRLF endings ignored.
    let dir = tempfile::tempdir().unwrap();
    let rw = dir.path().join("rw");
    std::fs::write(&rw, "tok-1\r\n\n  tok-2  \n").unwrap();
    let ro = dir.path().join("ro");
    std::fs::write(&ro, "read-1\n").unwrap();
    let t = Tokens::from_vars(vars(&[
        ("FERRY_TOKENS_FILE", rw.to_str().unwrap()),
        ("FERRY_READ_TOKENS_FILE", ro.to_str().unwrap()),
    ]))
    .unwrap();
    assert_eq!((t.read_write_count(), t.read_only_count()), (2, 1));
    // Debug shows counts, never tokens.
    assert_eq!(format!("{t:?}"), "Tokens { read_write: 2, read_only: 1 }");

    // Mistakes are errors, never an open API; messages say where, never what.
    let err = |pairs: &[(&str, &str)]| Tokens::from_vars(vars(pairs)).unwrap_err();
    let both = err(&[("FERRY_TOKENS", "a"), ("FERRY_TOKENS_FILE", rw.to_str().unwrap())]);
    assert!(matches!(both, TokenError::Conflict { .. }), "{both}");
    assert_eq!(
        both.to_string(),
        "set FERRY_TOKENS or FERRY_TOKENS_FILE, not both"
    );
    let empty = err(&[("FERRY_READ_TOKENS", " , ")]);
    assert_eq!(empty.to_string(), "FERRY_READ_TOKENS is set but holds no token");
    let blank = dir.path().join("blank");
    std::fs::write(&blank, "\n \n").unwrap();
    let e = err(&[("FERRY_TOKENS_FILE", blank.to_str().unwrap())]);
    assert!(matches!(e, TokenError::Empty { .. }), "{e}");
    let e = err(&[("FERRY_TOKENS_FILE", dir.path().join("missing").to_str().unwrap())]);
    assert!(matches!(e, TokenError::ReadFile { .. }), "{e}");
    let e = err(&[("FERRY_TOKENS", "good,has space-secret")]);
    assert_eq!(
        e.to_string(),
        "FERRY_TOKENS entry 2: a token must be visible ASCII without spaces (`!` to `~`)"
    );
    let quoted = dir.path().join("quoted");
    std::fs::write(&quoted, "ok\n\"tab\tsecret\"\n").unwrap();
    let e = err(&[("FERRY_READ_TOKENS_FILE", quoted.to_str().unwrap())]);
    assert!(e.to_string().contains("line 2"), "{e}");
    assert!(!e.to_string().contains("secret"), "{e}");
}
