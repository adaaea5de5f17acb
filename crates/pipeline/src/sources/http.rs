//! The `http` source: a route that validates each posted JSON body, publishes it, and answers once it
//! is durable in the source's topic. Nothing is published for a body that fails validation.
//!
//! The Content-Type is not checked (the seeds' clients do not always send one). Errors:
//! - `compat = "none"`: 400 `{"error":"invalid_record","message","field","errors":{field:[messages]}}`
//!   (`field` is the first bad one), 400 `invalid_json`, 413 `body_too_large`, 503 `unavailable` when the
//!   record could not be stored.
//! - `compat = "flask_marshmallow"`: what a Flask app validating with marshmallow sends, byte for byte:
//!   `{"error": "Validation error - {'event_payload': ['Not a valid string.']}"}`.

use std::path::Path;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Map, Value};

use crate::bus::SharedBus;
use crate::config::{Compat, HttpSourceConfig, UnknownFields};
use crate::event::Event;
use crate::runtime::{StageMetrics, out_record};

/// A built `http` source.
#[derive(Debug)]
pub struct HttpSource {
    config: HttpSourceConfig,
    topic: String,
    bus: SharedBus,
    schema: Option<jsonschema::Validator>,
    metrics: StageMetrics,
}

impl HttpSource {
    /// Builds the source; reads `schema_file` relative to `config_dir`.
    ///
    /// # Errors
    /// A schema file that cannot be read or is not a JSON Schema.
    pub fn new(
        config: &HttpSourceConfig,
        topic: String,
        bus: SharedBus,
        metrics: StageMetrics,
        config_dir: &Path,
    ) -> anyhow::Result<Arc<Self>> {
        let schema = match (&config.schema, &config.schema_file) {
            (Some(s), _) => Some(s.clone()),
            (None, Some(f)) => {
                let path = config_dir.join(f);
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| anyhow::anyhow!("schema_file `{}`: {e}", path.display()))?;
                Some(
                    serde_json::from_str(&text)
                        .map_err(|e| anyhow::anyhow!("schema_file `{}`: not JSON: {e}", path.display()))?,
                )
            }
            (None, None) => None,
        };
        let schema = schema
            .map(|s| jsonschema::validator_for(&s))
            .transpose()
            .map_err(|e| anyhow::anyhow!("schema: not a valid JSON Schema: {e}"))?;
        Ok(Arc::new(Self {
            config: config.clone(),
            topic,
            bus,
            schema,
            metrics,
        }))
    }

    /// The route, `POST <path>`.
    pub fn router(self: Arc<Self>) -> Router {
        let limit = self.config.max_body_bytes;
        Router::new()
            .route(&self.config.path.clone(), post(accept))
            .layer(DefaultBodyLimit::max(limit))
            .with_state(self)
    }

    /// Field errors of `value`, by field, in the order a marshmallow schema reports them: declared
    /// fields (sorted), then unknown ones.
    fn check(&self, value: &Value) -> Result<(), Vec<(String, Vec<String>)>> {
        let compat = self.config.compat == Compat::FlaskMarshmallow;
        let Some(object) = value.as_object() else {
            let m = if compat {
                "Invalid input type."
            } else {
                "the body must be a JSON object"
            };
            return Err(vec![("_schema".into(), vec![m.into()])]);
        };
        let mut errors: Vec<(String, Vec<String>)> = Vec::new();
        for (field, ty) in &self.config.fields {
            let (ty, optional) = ty.parts();
            let problem = match object.get(field) {
                None if optional => None,
                None => Some(if compat {
                    "Missing data for required field."
                } else {
                    "is required"
                }),
                Some(Value::Null) if optional => None,
                Some(Value::Null) => Some(if compat {
                    "Field may not be null."
                } else {
                    "must not be null"
                }),
                Some(v) => type_problem(ty, v, compat),
            };
            if let Some(p) = problem {
                errors.push((field.clone(), vec![p.to_owned()]));
            }
        }
        if self.config.unknown_fields == UnknownFields::Reject && !self.config.fields.is_empty() {
            for field in object.keys() {
                if !self.config.fields.contains_key(field) {
                    let m = if compat {
                        "Unknown field."
                    } else {
                        "is not a known field"
                    };
                    errors.push((field.clone(), vec![m.to_owned()]));
                }
            }
        }
        if let Some(schema) = &self.schema {
            for e in schema.iter_errors(value) {
                let path = e.instance_path().to_string();
                let field = path.trim_start_matches('/').split('/').next().unwrap_or_default();
                let field = if field.is_empty() {
                    "_schema".to_owned()
                } else {
                    field.to_owned()
                };
                let message = e.to_string();
                match errors.iter_mut().find(|(f, _)| *f == field) {
                    Some((_, ms)) => ms.push(message),
                    None => errors.push((field, vec![message])),
                }
            }
        }
        if errors.is_empty() { Ok(()) } else { Err(errors) }
    }

    fn reject(&self, errors: &[(String, Vec<String>)]) -> Response {
        self.metrics.failed.inc();
        if self.config.compat == Compat::FlaskMarshmallow {
            let dict = python_dict(errors);
            let body = format!(
                "{{\"error\": {}}}",
                python_json_string(&format!("Validation error - {dict}"))
            );
            return (
                StatusCode::BAD_REQUEST,
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/html; charset=utf-8"),
                )],
                body,
            )
                .into_response();
        }
        let message = errors
            .iter()
            .map(|(f, ms)| format!("`{f}` {}", ms.join(", ")))
            .collect::<Vec<_>>()
            .join("; ");
        let map: Map<String, Value> = errors
            .iter()
            .map(|(f, ms)| (f.clone(), Value::from(ms.clone())))
            .collect();
        let body = serde_json::json!({
            "error": "invalid_record",
            "message": message,
            "field": errors.first().map(|(f, _)| f.clone()),
            "errors": map,
        });
        (StatusCode::BAD_REQUEST, axum::Json(body)).into_response()
    }
}

fn type_problem(ty: &str, v: &Value, compat: bool) -> Option<&'static str> {
    let ok = match ty {
        "string" => v.is_string(),
        "number" => v.is_number(),
        "integer" => v.is_i64() || v.is_u64(),
        "boolean" => v.is_boolean(),
        "object" => v.is_object(),
        "array" => v.is_array(),
        _ => true,
    };
    if ok {
        return None;
    }
    Some(match (ty, compat) {
        ("string", true) => "Not a valid string.",
        ("number", true) => "Not a valid number.",
        ("integer", true) => "Not a valid integer.",
        ("boolean", true) => "Not a valid boolean.",
        ("object", true) => "Not a valid mapping type.",
        ("array", true) => "Not a valid list.",
        ("string", false) => "must be a string",
        ("number", false) => "must be a number",
        ("integer", false) => "must be an integer",
        ("boolean", false) => "must be a boolean",
        ("object", false) => "must be an object",
        _ => "must be an array",
    })
}

async fn accept(
    State(src): State<Arc<HttpSource>>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    src.metrics.records_in.inc();
    let body = match body {
        Ok(body) => body,
        Err(rejection) => {
            src.metrics.failed.inc();
            let status = rejection.status();
            let (error, message) = if status == StatusCode::PAYLOAD_TOO_LARGE {
                let limit = src.config.max_body_bytes;
                (
                    "body_too_large",
                    format!("the body is larger than max_body_bytes ({limit} bytes)"),
                )
            } else {
                ("invalid_body", rejection.body_text())
            };
            let body = serde_json::json!({ "error": error, "message": message, "field": null });
            return (status, axum::Json(body)).into_response();
        }
    };
    let compat = src.config.compat == Compat::FlaskMarshmallow;
    let value: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) if compat => {
            let _ = e;
            return src.reject(&[("_schema".into(), vec!["Invalid input type.".into()])]);
        }
        Err(e) => {
            src.metrics.failed.inc();
            let body = serde_json::json!({
                "error": "invalid_json",
                "message": format!("the body is not JSON: {e}"),
                "field": null,
            });
            return (StatusCode::BAD_REQUEST, axum::Json(body)).into_response();
        }
    };
    if let Err(errors) = src.check(&value) {
        return src.reject(&errors);
    }
    let event = Event::new(value);
    if let Err(e) = src.bus.publish(&src.topic, vec![out_record(&event)]).await {
        tracing::warn!(topic = %src.topic, error = %e, "http source could not store a record");
        let body = serde_json::json!({
            "error": "unavailable",
            "message": format!("the record could not be stored: {e}"),
            "field": null,
        });
        return (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response();
    }
    src.metrics.records_out.inc();
    let status = StatusCode::from_u16(src.config.response.status).unwrap_or(StatusCode::OK);
    match &src.config.response.body {
        Some(text) => {
            let ct = HeaderValue::from_str(&src.config.response.content_type)
                .unwrap_or(HeaderValue::from_static("text/plain; charset=utf-8"));
            (status, [(header::CONTENT_TYPE, ct)], text.clone()).into_response()
        }
        None if compat => (
            status,
            [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))],
            format!("{}\n", flask_json(&event.value)),
        )
            .into_response(),
        None => (status, axum::Json(event.value)).into_response(),
    }
}

/// JSON as Flask's `jsonify` writes it: keys sorted, no spaces, non-ASCII escaped (`ensure_ascii`).
pub fn flask_json(v: &Value) -> String {
    let mut out = String::new();
    write_flask(v, &mut out);
    out
}

fn write_flask(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<_> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&python_json_string(k));
                out.push(':');
                if let Some(v) = m.get(*k) {
                    write_flask(v, out);
                }
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, v) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_flask(v, out);
            }
            out.push(']');
        }
        Value::String(s) => out.push_str(&python_json_string(s)),
        other => out.push_str(&other.to_string()),
    }
}

/// A JSON string as Python's `json.dumps` writes it with `ensure_ascii=True`.
pub fn python_json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (c as u32) > 0x7e => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Python's `repr` of a str.
fn python_repr(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::new();
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// Python's `repr` of a `dict[str, list[str]]`.
fn python_dict(errors: &[(String, Vec<String>)]) -> String {
    let items: Vec<String> = errors
        .iter()
        .map(|(f, ms)| {
            let list: Vec<String> = ms.iter().map(|m| python_repr(m)).collect();
            format!("{}: [{}]", python_repr(f), list.join(", "))
        })
        .collect();
    format!("{{{}}}", items.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn flask_formats_match_python() {
        assert_eq!(
            flask_json(&json!({"event_type": "message", "event_payload": "no, thanks"})),
            r#"{"event_payload":"no, thanks","event_type":"message"}"#
        );
        assert_eq!(python_json_string("é\"x"), r#""\u00e9\"x""#);
        assert_eq!(python_json_string("😀"), r#""\ud83d\ude00""#);
        let d = python_dict(&[
            ("event_payload".into(), vec!["Not a valid string.".into()]),
            (
                "event_type".into(),
                vec!["Missing data for required field.".into()],
            ),
        ]);
        assert_eq!(
            d,
            "{'event_payload': ['Not a valid string.'], 'event_type': ['Missing data for required field.']}"
        );
        assert_eq!(python_repr("it's"), "\"it's\"");
    }
}
