//! Records in ([`ProduceRecord`]) and out ([`Record`]), and how they map to the API's JSON.
//!
//! # Publishing
//! The API stores a record's value as the exact bytes of the JSON text it was sent as (`{"a": 1}` stays
//! `{"a": 1}`, spaces and key order included), so a value is always one JSON document:
//! - [`ProduceRecord::json`] / [`ProduceRecord::from_value`]: a Rust value serialized by `serde_json`.
//! - [`ProduceRecord::json_bytes`]: JSON text you already have, stored byte for byte (the whitespace
//!   around the document is dropped, as JSON ignores it); refused unless it is one UTF-8 JSON document.
//! - [`ProduceRecord::text`]: a string, sent and stored as a JSON string: `hello` is stored as
//!   `"hello"` (with the quotes) and reads back with `value_json::<String>() == "hello"`.
//!
//! Arbitrary bytes cannot be published over the API; encode them (base64 in a JSON string) yourself.
//! Keys and header values are UTF-8 strings on the way in, stored as their bytes.
//!
//! # Reading
//! [`Record::value`] holds the stored bytes: a `value` field is taken verbatim as the JSON text the server
//! sent (which is the stored bytes for every record published over the API), a `value_text` field (a
//! stored value that is UTF-8 but not JSON, which only other writers than the API produce) is that text,
//! and a `value_base64` field is decoded. Keys (`key` / `key_base64`) and headers (a string or
//! `{"base64": ...}`) likewise.
//!
//! # Over the wire protocol
//! With [`crate::ClientBuilder::wire`], records travel as bytes: a published key and header values as
//! their UTF-8 bytes, the value as its JSON text, exactly as the API stores them from JSON; a received
//! record holds the stored bytes as they are. So a record reads the same over both transports, with
//! one exception: a stored value that is one JSON document with whitespace around it (only other
//! writers than the HTTP API store such values) comes over HTTP without that whitespace, and over the
//! wire with it.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use serde::de::{self, DeserializeOwned, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;

use crate::error::{Error, Result};

/// Where a record is: partition and offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RecordId {
    /// Partition.
    pub partition: u32,
    /// Offset in the partition.
    pub offset: u64,
}

/// Where a published record landed, once the server acknowledged it (durable under the topic's fsync
/// policy).
pub type Produced = RecordId;

/// Anything that names a record: [`Record`], [`crate::Delivery`], [`RecordId`], `(partition, offset)`.
pub trait AsRecordId {
    /// Partition and offset.
    fn record_id(&self) -> RecordId;
}

impl AsRecordId for RecordId {
    fn record_id(&self) -> RecordId {
        *self
    }
}

impl AsRecordId for (u32, u64) {
    fn record_id(&self) -> RecordId {
        RecordId {
            partition: self.0,
            offset: self.1,
        }
    }
}

impl AsRecordId for Record {
    fn record_id(&self) -> RecordId {
        self.id()
    }
}

impl<T: AsRecordId + ?Sized> AsRecordId for &T {
    fn record_id(&self) -> RecordId {
        (**self).record_id()
    }
}

/// A record read from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: u32,
    /// Offset in the partition.
    pub offset: u64,
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
    /// Key, if any.
    pub key: Option<Bytes>,
    /// Headers, in stored order.
    pub headers: Vec<(String, Bytes)>,
    /// The stored value (see the module docs).
    pub value: Bytes,
}

impl Record {
    /// Partition and offset.
    pub fn id(&self) -> RecordId {
        RecordId {
            partition: self.partition,
            offset: self.offset,
        }
    }

    /// The value parsed as JSON into `T` (`serde_json::Value` for any JSON).
    ///
    /// # Errors
    /// The value is not JSON of that shape.
    pub fn value_json<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.value)
    }

    /// The value as UTF-8 text (for a JSON value: its JSON text), if it is UTF-8.
    pub fn value_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.value).ok()
    }

    /// The key as UTF-8 text, if there is a key and it is UTF-8.
    pub fn key_str(&self) -> Option<&str> {
        self.key.as_deref().and_then(|k| std::str::from_utf8(k).ok())
    }

    /// The value of the first header named `name`.
    pub fn header(&self, name: &str) -> Option<&Bytes> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }
}

/// A record to publish: a JSON value, and optionally a key, headers, a partition and a timestamp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProduceRecord {
    key: Option<String>,
    headers: Vec<(String, String)>,
    value: Bytes,
    partition: Option<u32>,
    timestamp: Option<i64>,
}

impl ProduceRecord {
    fn with_value(value: Bytes) -> Self {
        Self {
            key: None,
            headers: Vec::new(),
            value,
            partition: None,
            timestamp: None,
        }
    }

    /// `value` serialized as JSON.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if `serde_json` cannot serialize it (a map with non-string keys).
    pub fn json<T: Serialize + ?Sized>(value: &T) -> Result<Self> {
        serde_json::to_vec(value)
            .map(|v| Self::with_value(v.into()))
            .map_err(|e| Error::invalid("value", e.to_string()))
    }

    /// A JSON value.
    pub fn from_value(value: &serde_json::Value) -> Self {
        Self::with_value(value.to_string().into())
    }

    /// JSON text stored byte for byte (without the whitespace around the document).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] unless `json` is one JSON document in UTF-8.
    pub fn json_bytes(json: impl Into<Bytes>) -> Result<Self> {
        let json: Bytes = json.into();
        let start = json.iter().position(|b| !is_ws(*b)).unwrap_or(json.len());
        let end = json.iter().rposition(|b| !is_ws(*b)).map_or(start, |i| i + 1);
        let json = json.slice(start..end);
        if std::str::from_utf8(&json).is_err() {
            return Err(Error::invalid("value", "not UTF-8, so not JSON text"));
        }
        serde_json::from_slice::<IgnoredAny>(&json)
            .map_err(|e| Error::invalid("value", format!("not one JSON document: {e}")))?;
        Ok(Self::with_value(json))
    }

    /// A string, stored as a JSON string (with its quotes).
    pub fn text(text: &str) -> Self {
        // Serializing a str cannot fail.
        Self::with_value(serde_json::Value::from(text).to_string().into())
    }

    /// Sets the key: records with the same key go to the same partition.
    #[must_use]
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Adds a header (order is kept; a name may appear once).
    #[must_use]
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sends the record to this partition, whatever its key.
    #[must_use]
    pub fn partition(mut self, partition: u32) -> Self {
        self.partition = Some(partition);
        self
    }

    /// Sets the timestamp (ms since the Unix epoch) instead of the server's clock.
    #[must_use]
    pub fn timestamp(mut self, ms: i64) -> Self {
        self.timestamp = Some(ms);
        self
    }

    /// The JSON text that will be stored as the value.
    pub fn value(&self) -> &Bytes {
        &self.value
    }

    /// The record as one JSON object of a publish body.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a header name given twice (the server would refuse the whole
    /// request).
    pub(crate) fn encode(&self) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(self.value.len() + 32);
        out.extend_from_slice(b"{\"value\":");
        out.extend_from_slice(&self.value);
        if let Some(key) = &self.key {
            out.extend_from_slice(b",\"key\":");
            push_str(&mut out, key);
        }
        if !self.headers.is_empty() {
            check_headers(&self.headers)?;
            out.extend_from_slice(b",\"headers\":{");
            for (i, (name, value)) in self.headers.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                push_str(&mut out, name);
                out.push(b':');
                push_str(&mut out, value);
            }
            out.push(b'}');
        }
        if let Some(p) = self.partition {
            out.extend_from_slice(format!(",\"partition\":{p}").as_bytes());
        }
        if let Some(ts) = self.timestamp {
            out.extend_from_slice(format!(",\"timestamp\":{ts}").as_bytes());
        }
        out.push(b'}');
        Ok(out)
    }
}

impl ProduceRecord {
    /// The record as one record of a wire PUBLISH: key and header values as their UTF-8 bytes, the
    /// value as the JSON text's bytes (no copy of the value).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a header name given twice, as [`ProduceRecord::encode`].
    pub(crate) fn into_wire(self) -> Result<ferry_wire::PublishRecord> {
        check_headers(&self.headers)?;
        Ok(ferry_wire::PublishRecord {
            key: self.key.map(Bytes::from),
            partition: self.partition,
            timestamp: self.timestamp,
            headers: self
                .headers
                .into_iter()
                .map(|(key, value)| ferry_wire::Header {
                    key,
                    value: Bytes::from(value),
                })
                .collect(),
            value: self.value,
        })
    }
}

/// The bytes `record` takes in a PUBLISH frame: what the producer counts against its batch and buffer
/// limits on the wire path.
pub(crate) fn wire_len(record: &ferry_wire::PublishRecord) -> usize {
    1 + record.key.as_ref().map_or(0, |k| 4 + k.len())
        + record.partition.map_or(0, |_| 4)
        + record.timestamp.map_or(0, |_| 8)
        + 2
        + record
            .headers
            .iter()
            .map(|h| 2 + h.key.len() + 4 + h.value.len())
            .sum::<usize>()
        + 4
        + record.value.len()
}

/// The server refuses a request with a header name given twice; refusing it here fails one record
/// instead of its whole batch.
fn check_headers(headers: &[(String, String)]) -> Result<()> {
    let mut seen = HashSet::new();
    for (name, _) in headers {
        if !seen.insert(name.as_str()) {
            return Err(Error::invalid(
                "headers",
                format!("header `{name}` is given twice"),
            ));
        }
    }
    Ok(())
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

fn push_str(out: &mut Vec<u8>, s: &str) {
    // Writing a str to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// A record as the server sends it; borrowed from the response body where it can be.
#[derive(Deserialize)]
pub(crate) struct RecordWire<'a> {
    #[serde(borrow)]
    topic: Cow<'a, str>,
    partition: u32,
    offset: u64,
    timestamp: i64,
    #[serde(default, borrow)]
    key: Option<Cow<'a, str>>,
    #[serde(default)]
    key_base64: Option<String>,
    #[serde(default)]
    headers: HeadersWire,
    #[serde(default, borrow, deserialize_with = "raw_some")]
    value: Option<&'a RawValue>,
    #[serde(default)]
    value_text: Option<String>,
    #[serde(default)]
    value_base64: Option<String>,
    /// Queue receives only.
    #[serde(default)]
    pub delivery_count: Option<u32>,
    /// Queue receives only.
    #[serde(default)]
    pub lease_expires_ms: Option<i64>,
}

/// `Option<&RawValue>` would turn a JSON `null` value into `None`; a stored `null` is a value.
fn raw_some<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

#[derive(Default)]
struct HeadersWire(Vec<(String, Bytes)>);

impl<'de> Deserialize<'de> for HeadersWire {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Value {
            Text(String),
            Base64 { base64: String },
        }
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = HeadersWire;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of header values")
            }
            fn visit_unit<E: de::Error>(self) -> Result<HeadersWire, E> {
                Ok(HeadersWire::default())
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<HeadersWire, A::Error> {
                let mut out = Vec::new();
                while let Some(name) = map.next_key::<String>()? {
                    let value = match map.next_value::<Value>()? {
                        Value::Text(t) => Bytes::from(t),
                        Value::Base64 { base64 } => Bytes::from(
                            BASE64
                                .decode(base64)
                                .map_err(|e| de::Error::custom(format_args!("header `{name}`: {e}")))?,
                        ),
                    };
                    out.push((name, value));
                }
                Ok(HeadersWire(out))
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

impl RecordWire<'_> {
    /// The record, its values sliced out of `body` (the buffer this was parsed from) without copying.
    pub fn into_record(self, body: &Bytes) -> Result<Record, String> {
        let value = match (self.value, self.value_text, self.value_base64) {
            (Some(raw), _, _) => sub_bytes(body, raw.get().as_bytes()),
            (None, Some(text), _) => Bytes::from(text),
            (None, None, Some(b64)) => {
                Bytes::from(BASE64.decode(b64).map_err(|e| format!("value_base64: {e}"))?)
            }
            (None, None, None) => {
                return Err("a record without `value`, `value_text` or `value_base64`".into());
            }
        };
        let key = match (self.key, self.key_base64) {
            (Some(Cow::Borrowed(k)), _) => Some(sub_bytes(body, k.as_bytes())),
            (Some(Cow::Owned(k)), _) => Some(Bytes::from(k)),
            (None, Some(b64)) => Some(Bytes::from(
                BASE64.decode(b64).map_err(|e| format!("key_base64: {e}"))?,
            )),
            (None, None) => None,
        };
        Ok(Record {
            topic: self.topic.into_owned(),
            partition: self.partition,
            offset: self.offset,
            timestamp: self.timestamp,
            key,
            headers: self.headers.0,
            value,
        })
    }
}

#[derive(Deserialize)]
struct RecordsWire<'a> {
    #[serde(borrow)]
    records: Vec<RecordWire<'a>>,
}

/// A record of a fetch or receive answer, with the lease fields of a receive.
#[derive(Debug)]
pub(crate) struct Parsed {
    pub record: Record,
    pub delivery_count: Option<u32>,
    pub lease_expires_ms: Option<i64>,
}

/// Parses `{"records": [...]}`; each record's extra queue fields come along.
pub(crate) fn parse_records(body: &Bytes) -> Result<Vec<Parsed>, String> {
    let wire: RecordsWire<'_> = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    wire.records
        .into_iter()
        .map(|w| {
            let (delivery_count, lease_expires_ms) = (w.delivery_count, w.lease_expires_ms);
            w.into_record(body).map(|record| Parsed {
                record,
                delivery_count,
                lease_expires_ms,
            })
        })
        .collect()
}

/// Parses `{"records": [...]}` of a fetch.
pub(crate) fn parse_fetched(body: &Bytes) -> Result<Vec<Record>, String> {
    parse_records(body).map(|records| records.into_iter().map(|p| p.record).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(json: &'static str) -> Record {
        let body = Bytes::from_static(json.as_bytes());
        parse_fetched(&body).unwrap().remove(0)
    }

    #[test]
    fn values_come_back_as_the_exact_bytes() {
        let r = one(
            r#"{"records":[{"topic":"t","partition":1,"offset":2,"timestamp":3,"key":"k\u00e9","headers":{"z":"1","a":{"base64":"/w=="}},"value":{"b": [1, 2.50], "a":null}}]}"#,
        );
        assert_eq!(&r.value[..], br#"{"b": [1, 2.50], "a":null}"#);
        assert_eq!(r.key_str(), Some("ké"));
        assert_eq!(
            r.headers,
            vec![
                ("z".to_string(), Bytes::from_static(b"1")),
                ("a".to_string(), Bytes::from_static(&[0xff])),
            ]
        );
        assert_eq!((r.partition, r.offset, r.timestamp), (1, 2, 3));
        let null = one(
            r#"{"records":[{"topic":"t","partition":0,"offset":0,"timestamp":0,"key":null,"headers":{},"value":null}]}"#,
        );
        assert_eq!(&null.value[..], b"null");
        assert_eq!(null.key, None);
        let bin = one(
            r#"{"records":[{"topic":"t","partition":0,"offset":0,"timestamp":0,"key_base64":"/g==","headers":{},"value_base64":"AP8="}]}"#,
        );
        assert_eq!(&bin.value[..], &[0, 0xff]);
        assert_eq!(bin.key.as_deref(), Some(&[0xfe][..]));
        let text = one(
            r#"{"records":[{"topic":"t","partition":0,"offset":0,"timestamp":0,"key":null,"headers":{},"value":"a\"b"}]}"#,
        );
        assert_eq!(&text.value[..], br#""a\"b""#);
        assert_eq!(text.value_json::<String>().unwrap(), "a\"b");
        // Stored text that is not JSON comes back as that text, without quotes.
        let bare = one(
            r#"{"records":[{"topic":"t","partition":0,"offset":0,"timestamp":0,"key":null,"headers":{},"value_text":"a\"b \u00e9"}]}"#,
        );
        assert_eq!(&bare.value[..], "a\"b é".as_bytes());
        assert_eq!(bare.value_str(), Some("a\"b é"));
        assert!(bare.value_json::<serde_json::Value>().is_err());
    }

    #[test]
    fn produce_records_encode_as_the_api_takes_them() {
        let r = ProduceRecord::json_bytes(&b"  {\"a\": 1}\n"[..])
            .unwrap()
            .key("k\"")
            .header("h", "v")
            .partition(2)
            .timestamp(5);
        assert_eq!(&r.value()[..], b"{\"a\": 1}");
        assert_eq!(
            String::from_utf8(r.encode().unwrap()).unwrap(),
            r#"{"value":{"a": 1},"key":"k\"","headers":{"h":"v"},"partition":2,"timestamp":5}"#
        );
        assert_eq!(&ProduceRecord::text("hi").value()[..], b"\"hi\"");
        assert!(ProduceRecord::json_bytes(&b"{} {}"[..]).is_err());
        assert!(ProduceRecord::json_bytes(&b"hello"[..]).is_err());
        assert!(ProduceRecord::json_bytes(&b"\"\xff\""[..]).is_err());
        let dup = ProduceRecord::text("x").header("a", "1").header("a", "2");
        assert!(matches!(dup.encode(), Err(Error::InvalidArgument { .. })));
    }
}
