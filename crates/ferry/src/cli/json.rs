//! JSON renderings of records, shared by every command that prints them.
//!
//! A byte field `f` (key, header value, value) is printed as `"f": "<text>"` when its bytes are valid
//! UTF-8, and as `"f_hex": "<lower-case hex>"` otherwise, so output stays lossless without a base64
//! dependency and stays readable for the common case (JSON values).

use std::fmt::Write as _;

use ferry_log::{Header, Record};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};

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
}
