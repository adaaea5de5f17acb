//! Records in and out of the API.
//!
//! In: `{"key": string|null, "headers": {"name": "value"}, "value": <any JSON>, "partition": int,
//! "timestamp": int}`; only `value` is required and unknown keys are refused. The value is stored as the
//! exact bytes of its JSON text (`{"a": 1}` stays `{"a": 1}`, spaces and key order included); the key and
//! header values as their UTF-8 bytes. Header order is kept; a header name given twice is refused.
//!
//! Out: `{"topic","partition","offset","timestamp","key","headers","value"}`, where the value is exactly
//! one of three fields, so that a client always knows which bytes were stored:
//! - `value`: the stored bytes are one JSON document (always so for records published over this API),
//!   sent as that JSON text. Text that happens to be JSON (`42`, `"x"`) comes back as that JSON.
//! - `value_text`: the stored bytes are UTF-8 but not JSON (only other writers than this API store
//!   such values), sent as a JSON string of that text. A stored JSON string `"hi"` is `"value": "hi"`,
//!   the stored text `hi` is `"value_text": "hi"`.
//! - `value_base64`: anything else, in the standard alphabet, padded.
//!
//! And:
//! - `key` is `null`, a string when UTF-8, else `key_base64`. Keys are text on the way in, so a UTF-8
//!   key is sent as the string it is, JSON or not.
//! - `headers` is an object in stored order; a value that is not UTF-8 is `{"base64": "..."}`.

use std::collections::{HashMap, HashSet};
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use ferry_broker::{Header, Produce, StoredRecord};
use serde::de::{self, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use serde_json::value::RawValue;
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::extract::{BodyKind, Object, is_json, parse_json};

/// One record of a publish request.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = PublishRecord)]
pub(crate) struct RecordIn<'a> {
    /// Text; the record goes to partition `fnv1a64(key) % partitions` unless `partition` is given.
    #[serde(default)]
    key: Option<String>,
    /// Header names to text values, kept in the order given; a name at most once. `null`: none.
    #[serde(default)]
    #[schema(value_type = Option<HashMap<String, String>>)]
    headers: HeadersIn,
    /// Any JSON, stored as the exact bytes of its JSON text (spaces and key order included).
    #[serde(borrow)]
    #[schema(value_type = Value)]
    value: &'a RawValue,
    /// The partition, overriding the key: `0..partitions`.
    #[serde(default)]
    partition: Option<u32>,
    /// Milliseconds since the Unix epoch; absent: the time the broker appends it.
    #[serde(default)]
    timestamp: Option<i64>,
}

/// The schema of an NDJSON line of a publish.
pub(crate) type PublishRecordSchema = RecordIn<'static>;

/// A publish body in JSON: one record, or an array of records.
#[derive(ToSchema)]
#[serde(untagged)]
#[schema(as = PublishBody)]
#[allow(dead_code, reason = "a schema of the OpenAPI document only")]
pub(crate) enum PublishBodySchema {
    /// One record.
    One(RecordIn<'static>),
    /// Records, published all or nothing.
    Many(Vec<RecordIn<'static>>),
}

/// Headers as a JSON object, in the order given; `null` means none.
#[derive(Debug, Default)]
struct HeadersIn(Vec<(String, String)>);

impl<'de> Deserialize<'de> for HeadersIn {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = HeadersIn;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of string header values")
            }
            fn visit_unit<E: de::Error>(self) -> Result<HeadersIn, E> {
                Ok(HeadersIn::default())
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<HeadersIn, A::Error> {
                let mut seen = HashSet::new();
                let mut out = Vec::new();
                while let Some(name) = map.next_key::<String>()? {
                    let value: String = map.next_value()?;
                    if !seen.insert(name.clone()) {
                        return Err(de::Error::custom(format_args!("duplicate header `{name}`")));
                    }
                    out.push((name, value));
                }
                Ok(HeadersIn(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// `part` as a slice of `whole` when it lies inside it (no copy), else a copy.
fn sub_bytes(whole: &Bytes, part: &[u8]) -> Bytes {
    let start = (part.as_ptr() as usize).wrapping_sub(whole.as_ptr() as usize);
    if start <= whole.len() && part.len() <= whole.len() - start {
        whole.slice(start..start + part.len())
    } else {
        Bytes::copy_from_slice(part)
    }
}

impl RecordIn<'_> {
    fn into_produce(self, body: &Bytes) -> Produce {
        Produce {
            key: self.key.map(Bytes::from),
            headers: self
                .headers
                .0
                .into_iter()
                .map(|(key, v)| Header {
                    key,
                    value: Bytes::from(v),
                })
                .collect(),
            value: sub_bytes(body, self.value.get().as_bytes()),
            timestamp: self.timestamp,
            partition: self.partition,
        }
    }
}

/// The records of a publish body: one JSON object, a JSON array of them, or NDJSON (one object per
/// non-blank line). Fields are named `records[i].<key>` with `i` counting records from 0 in request
/// order, whatever the body's form, as in the response's `offsets`.
///
/// # Errors
/// [`ApiError::MalformedJson`], [`ApiError::InvalidField`].
pub(crate) fn parse_publish(kind: BodyKind, body: &Bytes) -> Result<Vec<Produce>, ApiError> {
    match kind {
        BodyKind::Json => match body.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'[') => {
                let records: Vec<Object<RecordIn<'_>>> = parse_json(body, "records")?;
                Ok(records.into_iter().map(|r| r.0.into_produce(body)).collect())
            }
            Some(b'{') => {
                let Object(record) = parse_json::<Object<RecordIn<'_>>>(body, "records[0]")?;
                Ok(vec![record.into_produce(body)])
            }
            _ => {
                is_json(body)?;
                Err(ApiError::InvalidField {
                    field: None,
                    message: "expected a record object or an array of records".into(),
                })
            }
        },
        BodyKind::Ndjson => {
            let mut out = Vec::new();
            for (n, line) in body.split(|b| *b == b'\n').enumerate() {
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let prefix = format!("records[{}]", out.len());
                let Object(record) =
                    parse_json::<Object<RecordIn<'_>>>(line, &prefix).map_err(|e| at_line(e, n + 1))?;
                out.push(record.into_produce(body));
            }
            Ok(out)
        }
    }
}

fn at_line(e: ApiError, line: usize) -> ApiError {
    match e {
        ApiError::MalformedJson { message } => ApiError::MalformedJson {
            message: format!("line {line}: {message}"),
        },
        ApiError::InvalidField { field, message } => ApiError::InvalidField {
            field,
            message: format!("line {line}: {message}"),
        },
        other => other,
    }
}

/// The size the broker counts against `max_record_bytes`.
pub(crate) fn record_size(r: &Produce) -> usize {
    r.value.len()
        + r.key.as_ref().map_or(0, Bytes::len)
        + r.headers
            .iter()
            .map(|h| h.key.len() + h.value.len())
            .sum::<usize>()
}

/// A stored record as the API renders it.
#[derive(Debug)]
pub(crate) struct RecordOut<'a> {
    pub topic: &'a str,
    pub record: &'a StoredRecord,
}

impl Serialize for RecordOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let r = self.record;
        let mut m = s.serialize_map(Some(7))?;
        m.serialize_entry("topic", self.topic)?;
        m.serialize_entry("partition", &r.partition)?;
        m.serialize_entry("offset", &r.offset)?;
        m.serialize_entry("timestamp", &r.timestamp)?;
        match r.key.as_deref().map(std::str::from_utf8) {
            None => m.serialize_entry("key", &())?,
            Some(Ok(text)) => m.serialize_entry("key", text)?,
            Some(Err(_)) => {
                m.serialize_entry("key_base64", &BASE64.encode(r.key.as_deref().unwrap_or(&[])))?
            }
        }
        m.serialize_entry("headers", &HeadersOut(&r.headers))?;
        if let Ok(json) = serde_json::from_slice::<&RawValue>(&r.value) {
            m.serialize_entry("value", json)?;
        } else if let Ok(text) = std::str::from_utf8(&r.value) {
            m.serialize_entry("value_text", text)?;
        } else {
            m.serialize_entry("value_base64", &BASE64.encode(&r.value))?;
        }
        m.end()
    }
}

struct HeadersOut<'a>(&'a [Header]);

impl Serialize for HeadersOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Base64Value {
            base64: String,
        }
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for h in self.0 {
            match std::str::from_utf8(&h.value) {
                Ok(text) => m.serialize_entry(&h.key, text)?,
                Err(_) => m.serialize_entry(
                    &h.key,
                    &Base64Value {
                        base64: BASE64.encode(&h.value),
                    },
                )?,
            }
        }
        m.end()
    }
}

// The schema of what `RecordOut` writes; its doc comments are the document's descriptions.
/// A stored record: the value is exactly one of `value` (the stored bytes are JSON), `value_text`
/// (UTF-8 that is not JSON) and `value_base64` (anything else); the key is `key` (text, or `null` for
/// none) or `key_base64`.
#[derive(ToSchema)]
#[schema(as = Record)]
#[allow(
    dead_code,
    reason = "a schema of the OpenAPI document only: `RecordOut` serializes by hand"
)]
pub(crate) struct RecordSchema {
    /// The topic.
    topic: String,
    /// The partition.
    partition: u32,
    /// The offset in the partition.
    offset: u64,
    /// Milliseconds since the Unix epoch.
    timestamp: i64,
    /// The key as text; `null` for a record without a key. Absent when the key is not UTF-8.
    #[schema(required = false)]
    key: Option<String>,
    /// The key's bytes in base64 (standard alphabet, padded), instead of `key`, when not UTF-8.
    #[schema(required = false)]
    key_base64: String,
    /// Headers in stored order: a text value, or `{"base64": ...}` for one that is not UTF-8.
    headers: HashMap<String, HeaderValueSchema>,
    /// The value, when the stored bytes are one JSON document: that JSON, as it was published.
    #[schema(required = false)]
    value: Value,
    /// The value, when the stored bytes are UTF-8 but not JSON (written by other producers than the
    /// API): that text.
    #[schema(required = false)]
    value_text: String,
    /// The value, when the stored bytes are not UTF-8: base64 (standard alphabet, padded).
    #[schema(required = false)]
    value_base64: String,
}

/// A header value: text, or its bytes in base64 when they are not UTF-8.
#[derive(ToSchema)]
#[serde(untagged)]
#[schema(as = HeaderValue)]
#[allow(dead_code, reason = "a schema of the OpenAPI document only")]
pub(crate) enum HeaderValueSchema {
    /// UTF-8 text.
    Text(String),
    /// Bytes that are not UTF-8.
    Bytes {
        /// Standard alphabet, padded.
        base64: String,
    },
}

// The schema of what `RecordsOut` writes.
/// The answer of every fetch.
#[derive(ToSchema)]
#[schema(as = Records)]
#[allow(
    dead_code,
    reason = "a schema of the OpenAPI document only: `RecordsOut` serializes by hand"
)]
pub(crate) struct RecordsSchema {
    /// In offset order per partition; maybe none.
    records: Vec<RecordSchema>,
}

/// `{"records": [...]}`, the answer of every fetch.
#[derive(Debug)]
pub(crate) struct RecordsOut<'a> {
    pub topic: &'a str,
    pub records: &'a [StoredRecord],
}

impl Serialize for RecordsOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct List<'a>(&'a RecordsOut<'a>);
        impl Serialize for List<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_seq(self.0.records.iter().map(|record| RecordOut {
                    topic: self.0.topic,
                    record,
                }))
            }
        }
        let mut m = s.serialize_map(Some(1))?;
        m.serialize_entry("records", &List(self))?;
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(json: &str) -> Result<Vec<Produce>, ApiError> {
        parse_publish(BodyKind::Json, &Bytes::from(json.to_string()))
    }

    #[test]
    fn values_keep_their_exact_json_text_and_headers_their_order() {
        let body = Bytes::from_static(
            br#"{"key":"k","headers":{"z":"1","a":"2"},"value": {"b": [1, 2.50], "a":null} }"#,
        );
        let r = parse_publish(BodyKind::Json, &body).unwrap();
        assert_eq!(&r[0].value[..], br#"{"b": [1, 2.50], "a":null}"#);
        assert_eq!(r[0].key.as_deref(), Some(&b"k"[..]));
        let names: Vec<_> = r[0].headers.iter().map(|h| h.key.as_str()).collect();
        assert_eq!(names, ["z", "a"]);
    }

    #[test]
    fn bad_records_name_their_field() {
        let field = |json: &str| match one(json) {
            Err(ApiError::InvalidField { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(field(r#"{"key":"k"}"#).as_deref(), Some("records[0].value"));
        assert_eq!(
            field(r#"[{"value":1},{"value":1,"kye":2}]"#).as_deref(),
            Some("records[1].kye")
        );
        assert_eq!(
            field(r#"{"value":1,"headers":{"a":1}}"#).as_deref(),
            Some("records[0].headers.a")
        );
        assert_eq!(
            field(r#"{"value":1,"headers":{"a":"1","a":"2"}}"#).as_deref(),
            Some("records[0].headers")
        );
        assert_eq!(field("5"), None);
        assert!(matches!(one("nope"), Err(ApiError::MalformedJson { .. })));
        assert!(matches!(one(""), Err(ApiError::MalformedJson { .. })));
    }

    #[test]
    fn ndjson_counts_records_not_lines() {
        let body = Bytes::from_static(
            b"{\"value\":1}\n\n  \r\n{\"value\":\"x\"}\r\n{\"value\":true,\"partition\":-1}\n",
        );
        match parse_publish(BodyKind::Ndjson, &body) {
            Err(ApiError::InvalidField { field, message }) => {
                assert_eq!(field.as_deref(), Some("records[2].partition"));
                assert!(message.starts_with("line 5:"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_record_schema_has_the_fields_rendering_produces() {
        let schema = serde_json::to_value(<RecordSchema as utoipa::PartialSchema>::schema()).unwrap();
        let properties: HashSet<&str> = schema["properties"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let required: HashSet<&str> = schema["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap())
            .collect();
        let mut seen = HashSet::new();
        let forms: [(&'static [u8], Option<&'static [u8]>); 4] = [
            (br#"{"a": 1}"#, Some(b"k")),
            (b"text", None),
            (&[0xff], Some(&[0xfe])),
            (b"null", None),
        ];
        for (value, key) in forms {
            let stored = StoredRecord {
                partition: 0,
                offset: 0,
                timestamp: 0,
                key: key.map(Bytes::from_static),
                headers: vec![],
                value: Bytes::from_static(value),
            };
            let rendered = serde_json::to_value(RecordOut {
                topic: "t",
                record: &stored,
            })
            .unwrap();
            let keys: HashSet<String> = rendered.as_object().unwrap().keys().cloned().collect();
            for r in &required {
                assert!(keys.contains(*r), "`{r}` is required but missing from {rendered}");
            }
            let values = ["value", "value_text", "value_base64"];
            assert_eq!(
                values.iter().filter(|v| keys.contains(**v)).count(),
                1,
                "{rendered}"
            );
            seen.extend(keys);
        }
        let seen: HashSet<&str> = seen.iter().map(String::as_str).collect();
        assert_eq!(seen, properties);
    }

    #[test]
    fn rendering_falls_back_to_value_text_then_value_base64() {
        let record = |value: &'static [u8], key: Option<&'static [u8]>| StoredRecord {
            partition: 0,
            offset: 1,
            timestamp: 2,
            key: key.map(Bytes::from_static),
            headers: vec![
                Header {
                    key: "t".into(),
                    value: Bytes::from_static(b"x"),
                },
                Header {
                    key: "b".into(),
                    value: Bytes::from_static(&[0xff]),
                },
            ],
            value: Bytes::from_static(value),
        };
        let render = |r: &StoredRecord| {
            serde_json::to_string(&RecordOut {
                topic: "t",
                record: r,
            })
            .unwrap()
        };
        assert_eq!(
            render(&record(br#"{"a": 1}"#, Some(b"k"))),
            r#"{"topic":"t","partition":0,"offset":1,"timestamp":2,"key":"k","headers":{"t":"x","b":{"base64":"/w=="}},"value":{"a": 1}}"#
        );
        assert!(
            render(&record(b"hello", None))
                .ends_with(r#""key":null,"headers":{"t":"x","b":{"base64":"/w=="}},"value_text":"hello"}"#)
        );
        // A stored JSON string and the same text stored bare are told apart.
        assert!(render(&record(br#""hello""#, None)).ends_with(r#""value":"hello"}"#));
        assert!(render(&record(b"42", None)).ends_with(r#""value":42}"#));
        assert!(render(&record(b"4 2", None)).ends_with(r#""value_text":"4 2"}"#));
        assert!(render(&record(&[0, 0xff], Some(&[0xfe]))).contains(r#""key_base64":"/g==","#));
        assert!(render(&record(&[0, 0xff], None)).ends_with(r#""value_base64":"AP8="}"#));
    }
}
