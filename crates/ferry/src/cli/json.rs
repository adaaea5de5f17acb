//! JSON renderings of records, shared by every command that prints them.
//!
//! Records of a log ([`JsonRecord`], `ferry log read`): a byte field `f` (key, header value, value) is
//! printed as `"f": "<text>"` when its bytes are valid UTF-8, and as `"f_hex": "<lower-case hex>"`
//! otherwise, so output stays lossless and readable for the common case (JSON values).
//!
//! Records of a topic ([`JsonTopicRecord`], `ferry consume`, `ferry queue receive`): exactly as the HTTP
//! API renders them, so the CLI and the API can be used interchangeably in scripts.

use std::fmt::Write as _;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ferry_log::{Header, Record};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};
use serde_json::value::RawValue;

/// A stored record as one JSON object:
/// `{"offset":N,"timestamp":MS,"key":null|"k","headers":[{"key":"h","value":"v"}],"value":"..."}`.
#[derive(Debug)]
pub struct JsonRecord<'a>(pub &'a Record);

impl Serialize for JsonRecord<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let r = self.0;
        let mut m = s.serialize_map(Some(5))?;
        m.serialize_entry("offset", &r.offset)?;
        m.serialize_entry("timestamp", &r.timestamp)?;
        match &r.key {
            None => m.serialize_entry("key", &())?,
            Some(key) => bytes_entry(&mut m, "key", key)?,
        }
        m.serialize_entry("headers", &JsonHeaders(&r.headers))?;
        bytes_entry(&mut m, "value", &r.value)?;
        m.end()
    }
}

/// Headers as an array, not an object: header names need not be unique and their order is kept.
struct JsonHeaders<'a>(&'a [Header]);

impl Serialize for JsonHeaders<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for h in self.0 {
            seq.serialize_element(&JsonHeader(h))?;
        }
        seq.end()
    }
}

struct JsonHeader<'a>(&'a Header);

impl Serialize for JsonHeader<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(2))?;
        m.serialize_entry("key", &self.0.key)?;
        bytes_entry(&mut m, "value", &self.0.value)?;
        m.end()
    }
}

fn bytes_entry<M: SerializeMap>(m: &mut M, name: &'static str, bytes: &[u8]) -> Result<(), M::Error> {
    match std::str::from_utf8(bytes) {
        Ok(text) => m.serialize_entry(name, text),
        Err(_) => m.serialize_entry(&format!("{name}_hex"), &hex(bytes)),
    }
}

/// A record read from a ferry server, as the HTTP API renders it:
/// `{"topic","partition","offset","timestamp","key","headers","value"}`, and for a queue delivery
/// `"delivery_count"` and `"lease_expires_ms"` after them.
///
/// - The value is `"value": <JSON>` when the stored bytes are one JSON document (always so for records
///   published over the API), `"value_text": "<text>"` when they are other UTF-8 text, else
///   `"value_base64"`. JSON is printed as it was stored (spaces and key order kept), except that line
///   breaks between its tokens become spaces, so that each record stays on one line.
/// - `key` is `null`, a string, or `key_base64` when not UTF-8.
/// - `headers` is an object in stored order; a value that is not UTF-8 is `{"base64": "..."}`.
#[derive(Debug)]
pub struct JsonTopicRecord<'a> {
    record: &'a ferry_client::Record,
    delivery: Option<(u32, i64)>,
}

impl<'a> JsonTopicRecord<'a> {
    /// A record of a fetch or a stream group's poll.
    pub fn new(record: &'a ferry_client::Record) -> Self {
        Self {
            record,
            delivery: None,
        }
    }

    /// A record leased from a queue group, with its delivery count and the end of its lease.
    pub fn delivery(d: &'a ferry_client::Delivery) -> Self {
        Self {
            record: &d.record,
            delivery: Some((d.delivery_count, d.lease_expires_ms)),
        }
    }
}

impl Serialize for JsonTopicRecord<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let r = self.record;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("topic", &r.topic)?;
        m.serialize_entry("partition", &r.partition)?;
        m.serialize_entry("offset", &r.offset)?;
        m.serialize_entry("timestamp", &r.timestamp)?;
        match r.key.as_deref().map(|k| (k, std::str::from_utf8(k))) {
            None => m.serialize_entry("key", &())?,
            Some((_, Ok(text))) => m.serialize_entry("key", text)?,
            Some((bytes, Err(_))) => m.serialize_entry("key_base64", &BASE64.encode(bytes))?,
        }
        m.serialize_entry("headers", &JsonHeaderMap(&r.headers))?;
        match std::str::from_utf8(&r.value) {
            Ok(text) => match serde_json::from_str::<&RawValue>(text) {
                Ok(json) if !json.get().contains(['\n', '\r']) => m.serialize_entry("value", json)?,
                Ok(json) => {
                    // Outside strings (the only place JSON allows them), line breaks are whitespace.
                    let one_line = json.get().replace(['\n', '\r'], " ");
                    match RawValue::from_string(one_line) {
                        Ok(json) => m.serialize_entry("value", &json)?,
                        Err(_) => m.serialize_entry("value_text", text)?,
                    }
                }
                Err(_) => m.serialize_entry("value_text", text)?,
            },
            Err(_) => m.serialize_entry("value_base64", &BASE64.encode(&r.value))?,
        }
        if let Some((count, lease_expires_ms)) = self.delivery {
            m.serialize_entry("delivery_count", &count)?;
            m.serialize_entry("lease_expires_ms", &lease_expires_ms)?;
        }
        m.end()
    }
}

/// Headers of a topic's record as an object, like the API: names are unique in records it stored.
struct JsonHeaderMap<'a>(&'a [(String, bytes::Bytes)]);

impl Serialize for JsonHeaderMap<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Base64Value {
            base64: String,
        }
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (name, value) in self.0 {
            match std::str::from_utf8(value) {
                Ok(text) => m.serialize_entry(name, text)?,
                Err(_) => m.serialize_entry(
                    name,
                    &Base64Value {
                        base64: BASE64.encode(value),
                    },
                )?,
            }
        }
        m.end()
    }
}

/// Lower-case hex, two digits per byte.
pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn render(r: &Record) -> String {
        serde_json::to_string(&JsonRecord(r)).unwrap()
    }

    #[test]
    fn utf8_fields_are_strings_in_a_fixed_order() {
        let r = Record {
            offset: 7,
            timestamp: 1_700_000_000_000,
            key: Some(Bytes::from_static(b"user-1")),
            headers: vec![
                Header {
                    key: "a".into(),
                    value: Bytes::from_static(b"1"),
                },
                Header {
                    key: "a".into(),
                    value: Bytes::from_static(b"2"),
                },
            ],
            value: Bytes::from(r#"{"x":"é"}"#),
        };
        assert_eq!(
            render(&r),
            r#"{"offset":7,"timestamp":1700000000000,"key":"user-1","headers":[{"key":"a","value":"1"},{"key":"a","value":"2"}],"value":"{\"x\":\"é\"}"}"#
        );
    }

    #[test]
    fn non_utf8_fields_are_hex_and_no_key_is_null() {
        let r = Record {
            offset: 0,
            timestamp: -1,
            key: None,
            headers: vec![Header {
                key: "h".into(),
                value: Bytes::from_static(&[0xff]),
            }],
            value: Bytes::from_static(&[0x00, 0xc3, 0x28, 0x7f]),
        };
        assert_eq!(
            render(&r),
            r#"{"offset":0,"timestamp":-1,"key":null,"headers":[{"key":"h","value_hex":"ff"}],"value_hex":"00c3287f"}"#
        );
    }

    fn topic_record(key: Option<&'static [u8]>, value: &'static [u8]) -> ferry_client::Record {
        ferry_client::Record {
            topic: "t".into(),
            partition: 1,
            offset: 2,
            timestamp: 3,
            key: key.map(Bytes::from_static),
            headers: vec![
                ("z".into(), Bytes::from_static(b"1")),
                ("b".into(), Bytes::from_static(&[0xff])),
            ],
            value: Bytes::from_static(value),
        }
    }

    fn render_topic(r: &ferry_client::Record) -> String {
        serde_json::to_string(&JsonTopicRecord::new(r)).unwrap()
    }

    #[test]
    fn topic_records_render_as_the_api_does() {
        assert_eq!(
            render_topic(&topic_record(Some(b"k"), br#"{"b": [1, 2.50], "a":null}"#)),
            r#"{"topic":"t","partition":1,"offset":2,"timestamp":3,"key":"k","headers":{"z":"1","b":{"base64":"/w=="}},"value":{"b": [1, 2.50], "a":null}}"#
        );
        let text = render_topic(&topic_record(None, b"plain text"));
        assert!(text.contains(r#""key":null,"#), "{text}");
        assert!(text.ends_with(r#""value_text":"plain text"}"#), "{text}");
        let binary = render_topic(&topic_record(Some(&[0xfe]), &[0, 0xff]));
        assert!(binary.contains(r#""key_base64":"/g==","#), "{binary}");
        assert!(binary.ends_with(r#""value_base64":"AP8="}"#), "{binary}");
    }

    #[test]
    fn multi_line_json_values_stay_on_one_line() {
        let out = render_topic(&topic_record(None, b"{\r\n  \"a\": \"x\\ny\",\n  \"b\": 1\n}"));
        assert!(!out.contains('\n') && !out.contains('\r'), "{out}");
        assert!(out.ends_with(r#""value":{    "a": "x\ny",   "b": 1 }}"#), "{out}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["value"]["a"], "x\ny");
    }

    #[test]
    fn deliveries_add_their_count_and_lease() {
        let d = ferry_client::Delivery {
            record: topic_record(None, b"1"),
            delivery_count: 2,
            lease_expires_ms: 99,
        };
        let out = serde_json::to_string(&JsonTopicRecord::delivery(&d)).unwrap();
        assert!(
            out.ends_with(r#""value":1,"delivery_count":2,"lease_expires_ms":99}"#),
            "{out}"
        );
    }
}
