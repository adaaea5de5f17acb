//! `GET /v1/openapi.json`: an OpenAPI 3.1 document that parses, whose `$ref`s all resolve, that lists
//! exactly the routes the running server has, and says what the handlers do (spot checks).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;

use common::TestServer;
use ferry_broker::Broker;
use ferry_server::{ServerOptions, Tokens};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

fn document() -> Value {
    serde_json::from_str(&ferry_server::openapi_document()).unwrap()
}

/// `value`, or what its `$ref` points to (`#/components/...`), followed until it is no reference.
fn resolve<'a>(doc: &'a Value, mut value: &'a Value) -> &'a Value {
    while let Some(pointer) = value["$ref"].as_str() {
        let pointer = pointer.strip_prefix('#').expect("a local reference");
        value = doc
            .pointer(pointer)
            .unwrap_or_else(|| panic!("`{pointer}` resolves to nothing"));
    }
    value
}

/// Every `$ref` anywhere in `value`.
fn references<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(r)) = map.get("$ref") {
                out.push(r);
            }
            map.values().for_each(|v| references(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| references(v, out)),
        _ => {}
    }
}

/// The properties of an object schema, through `$ref` and `allOf`.
fn properties(doc: &Value, schema: &Value) -> BTreeSet<String> {
    let schema = resolve(doc, schema);
    let mut out: BTreeSet<String> = schema["properties"]
        .as_object()
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default();
    for part in schema["allOf"].as_array().into_iter().flatten() {
        out.extend(properties(doc, part));
    }
    out
}

#[tokio::test]
async fn the_document_is_served_and_is_valid_openapi_3_1() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let a = server.get("/v1/openapi.json").await;
    assert_eq!(a.status, StatusCode::OK, "{a:?}");
    assert_eq!(a.body, document());
    let doc = a.body;
    let version = doc["openapi"].as_str().unwrap();
    assert!(version.starts_with("3.1."), "{version}");

    // Parses as the typed OpenAPI 3.1 model of `oas3` (a structural check, not a full schema
    // validation), and every reference points at something.
    let spec = oas3::from_json(&a.text).unwrap();
    spec.validate_version().unwrap();
    assert_eq!(spec.operations().count(), 25);
    let mut refs = Vec::new();
    references(&doc, &mut refs);
    assert!(refs.len() > 100, "{}", refs.len());
    for r in refs {
        resolve(&doc, &json!({ "$ref": r }));
    }
    server.stop().await;
}

/// A concrete path for a templated one: unknown names (404 from the handler, never from the router).
fn concrete(path: &str) -> String {
    path.replace("{topic}", "no-such-topic")
        .replace("{group}", "g")
        .replace("{partition}", "0")
        .replace("{member}", "m")
        .replace("{name}", "s")
}

#[tokio::test]
async fn every_documented_route_is_routed_and_nothing_else_on_its_paths() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let doc = document();
    let methods = [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
    ];
    let mut tried = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in &methods {
            let documented = item.get(method.as_str().to_lowercase()).is_some();
            let resp = server
                .client
                .request(method.clone(), server.url(&concrete(path)))
                .send()
                .await
                .unwrap();
            let status = resp.status();
            let body: Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap_or(Value::Null);
            if documented {
                // Whatever the handler says (400, 404 topic_not_found, 200), the router found it.
                assert!(
                    status != StatusCode::METHOD_NOT_ALLOWED
                        && body["error"] != "route_not_found"
                        && body["error"] != "method_not_allowed",
                    "{method} {path} is documented but not routed: {status} {body}"
                );
            } else {
                assert_eq!(
                    (status, &body["error"]),
                    (StatusCode::METHOD_NOT_ALLOWED, &json!("method_not_allowed")),
                    "{method} {path} is routed but not documented"
                );
            }
            tried += 1;
        }
    }
    assert_eq!(tried, 20 * methods.len());
    server.stop().await;
}

#[tokio::test]
async fn the_document_is_behind_the_tokens_when_there_are_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let options = ServerOptions {
        tokens: Tokens::new(["rw-token"], ["ro-token"]).unwrap(),
        ..ServerOptions::default()
    };
    let server = TestServer::serve_with(Broker::open(dir.path()).unwrap(), options).await;
    let a = server.get("/v1/openapi.json").await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{a:?}");
    assert_eq!(a.body["error"], "unauthorized");
    let a = server
        .send(
            server
                .client
                .get(server.url("/v1/openapi.json"))
                .bearer_auth("ro-token"),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{a:?}");
    assert!(a.body["openapi"].as_str().unwrap().starts_with("3.1."));
    server.stop().await;
}

#[test]
fn publish_takes_one_record_an_array_or_ndjson() {
    let doc = document();
    let body = &doc["paths"]["/v1/topics/{topic}/records"]["post"]["requestBody"];
    assert_eq!(body["required"], true);
    let content = body["content"].as_object().unwrap();
    let types: BTreeSet<&str> = content.keys().map(String::as_str).collect();
    assert_eq!(
        types,
        BTreeSet::from(["application/json", "application/x-ndjson"])
    );
    let record = json!({"$ref": "#/components/schemas/PublishRecord"});
    // JSON: one record or an array of them.
    let json = resolve(&doc, &content["application/json"]["schema"]);
    let forms = json["oneOf"].as_array().unwrap();
    assert_eq!(forms.len(), 2, "{json}");
    assert_eq!(forms[0]["$ref"], record["$ref"]);
    assert_eq!(forms[1]["type"], "array");
    assert_eq!(forms[1]["items"]["$ref"], record["$ref"]);
    // NDJSON: a record per line.
    assert_eq!(content["application/x-ndjson"]["schema"]["$ref"], record["$ref"]);
    let record = resolve(&doc, &record);
    assert_eq!(record["required"], json!(["value"]));
    assert_eq!(record["additionalProperties"], false);
    assert_eq!(
        properties(&doc, record),
        BTreeSet::from(["key", "headers", "value", "partition", "timestamp"].map(String::from))
    );
}

#[test]
fn received_records_have_their_lease_and_every_form_of_value() {
    let doc = document();
    let ok = &doc["paths"]["/v1/queues/{group}/topics/{topic}/receive"]["post"]["responses"]["200"];
    let received = resolve(&doc, &ok["content"]["application/json"]["schema"]);
    let leased = &received["properties"]["records"]["items"];
    let fields = properties(&doc, leased);
    for field in [
        "delivery_count",
        "lease_expires_ms",
        "partition",
        "offset",
        "key",
        "key_base64",
        "value",
        "value_text",
        "value_base64",
    ] {
        assert!(fields.contains(field), "{field} is not in {fields:?}");
    }
    // A fetch answers records without a lease.
    let ok = &doc["paths"]["/v1/topics/{topic}/partitions/{partition}/records"]["get"]["responses"]["200"];
    let records = resolve(&doc, &ok["content"]["application/json"]["schema"]);
    let fields = properties(&doc, &records["properties"]["records"]["items"]);
    assert!(
        fields.contains("value_text") && !fields.contains("delivery_count"),
        "{fields:?}"
    );
}

#[test]
fn settings_carry_their_ranges() {
    let doc = document();
    let body = &doc["paths"]["/v1/topics"]["post"]["requestBody"]["content"]["application/json"];
    let create = resolve(&doc, &body["schema"]);
    let partitions = &create["properties"]["partitions"];
    assert_eq!(
        (&partitions["minimum"], &partitions["maximum"]),
        (&json!(1), &json!(1024))
    );
    assert_eq!(partitions["default"], 1);
    let queue = &doc["components"]["schemas"]["QueueConfig"]["properties"]["max_deliveries"];
    assert_eq!((&queue["minimum"], &queue["maximum"]), (&json!(1), &json!(1000)));
    let fetch = &doc["paths"]["/v1/topics/{topic}/partitions/{partition}/records"]["get"];
    let wait = fetch["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "max_wait_ms")
        .unwrap();
    assert_eq!(wait["in"], "query");
    assert_eq!(wait["schema"]["maximum"], 60_000);
    let offset = fetch["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "offset")
        .unwrap();
    assert_eq!(offset["required"], true);
}

#[test]
fn errors_have_one_body_and_the_statuses_the_api_answers() {
    let doc = document();
    let error = &doc["components"]["schemas"]["Error"];
    assert_eq!(error["required"], json!(["error", "message", "field"]));
    let mut statuses = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            for (status, response) in op["responses"].as_object().unwrap() {
                statuses.insert(status.clone());
                if status.starts_with('4') || status.starts_with('5') {
                    let response = resolve(&doc, response);
                    assert_eq!(
                        response["content"]["application/json"]["schema"]["$ref"],
                        "#/components/schemas/Error",
                        "{method} {path} {status}"
                    );
                    assert!(response["description"].as_str().unwrap().len() > 20);
                }
            }
        }
    }
    let expected = [
        "200", "201", "204", "400", "401", "403", "404", "409", "413", "415", "422", "503",
    ];
    assert_eq!(statuses, BTreeSet::from(expected.map(String::from)));
    let shutting_down = &doc["components"]["responses"]["ShuttingDown"];
    assert!(shutting_down["headers"]["Retry-After"].is_object());
    // The token is optional for the API as a whole, and never asked of /healthz.
    assert_eq!(doc["security"], json!([{"bearer": []}, {}]));
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    assert_eq!(doc["paths"]["/healthz"]["get"]["security"], json!([{}]));
    assert!(doc["paths"]["/healthz"]["get"]["responses"]["401"].is_null());
    assert!(doc["paths"]["/v1/openapi.json"]["get"]["responses"]["401"].is_object());
}
