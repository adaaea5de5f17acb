//! Reading requests: bodies (content type, size limit), JSON with the path of the failing field, query
//! and path parameters. Every refusal is an [`ApiError`], never axum's plain-text rejections.
//!
//! JSON bodies are objects: every body struct, and every struct inside one, is read through [`Object`]
//! ([`parse_object`]), since serde's derived structs would also take an array of their fields in order.
//! A body that is not JSON is `malformed_json`, one that is JSON of the wrong shape `invalid_field`.

use std::fmt::{self, Write as _};
use std::marker::PhantomData;
use std::ops::RangeInclusive;

use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use bytes::Bytes;
use serde::de::value::MapAccessDeserializer;
use serde::de::{DeserializeOwned, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_path_to_error::Segment;

use crate::BODY_LIMIT;
use crate::error::ApiError;

/// How a body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyKind {
    /// One JSON document (`application/json`, or no content type).
    Json,
    /// Newline-delimited JSON (`application/x-ndjson`).
    Ndjson,
}

/// A request body of at most [`BODY_LIMIT`] bytes, with the framing its content type announced.
#[derive(Debug)]
pub(crate) struct Body {
    pub kind: BodyKind,
    pub bytes: Bytes,
}

const JSON: &str = "application/json";
const NDJSON: &str = "application/x-ndjson";

fn body_kind(headers: &HeaderMap) -> Result<BodyKind, ApiError> {
    let Some(value) = headers.get(CONTENT_TYPE) else {
        // curl and friends without -H: take the body for what every endpoint expects, JSON.
        return Ok(BodyKind::Json);
    };
    let raw = String::from_utf8_lossy(value.as_bytes()).into_owned();
    let essence = raw
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        JSON => Ok(BodyKind::Json),
        NDJSON | "application/ndjson" | "application/jsonl" => Ok(BodyKind::Ndjson),
        _ => Err(ApiError::UnsupportedMediaType {
            content_type: raw,
            expected: "application/json",
        }),
    }
}

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let kind = body_kind(req.headers())?;
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::BodyTooLarge { limit: BODY_LIMIT }
            } else {
                ApiError::UnreadableBody {
                    message: rejection.body_text(),
                }
            }
        })?;
        Ok(Self { kind, bytes })
    }
}

impl Body {
    /// A body that must be a single JSON document.
    pub fn json_only(self) -> Result<Bytes, ApiError> {
        match self.kind {
            BodyKind::Json => Ok(self.bytes),
            BodyKind::Ndjson => Err(ApiError::UnsupportedMediaType {
                content_type: NDJSON.into(),
                expected: "application/json",
            }),
        }
    }
}

/// Path parameters, refused as [`ApiError::InvalidParameter`] when they do not decode.
#[derive(Debug)]
pub(crate) struct PathParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for PathParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(t)) => Ok(Self(t)),
            Err(rejection) => Err(ApiError::InvalidParameter {
                field: "path".into(),
                message: rejection.body_text(),
            }),
        }
    }
}

/// `T` from a JSON object only. serde's derived structs also take an array of their fields in order
/// (`[0, 5]` for `{"partition": 0, "offset": 5}`, `[]` for all defaults), which this API refuses: every
/// JSON body, and every struct inside one, is read through this (an array is 400 `invalid_field` naming
/// where it stands). Transparent otherwise: field paths and messages are `T`'s.
#[derive(Debug)]
pub(crate) struct Object<T>(pub T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = T;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_map(V(PhantomData)).map(Object)
    }
}

/// A body that must be one JSON object.
///
/// # Errors
/// [`ApiError::MalformedJson`], [`ApiError::InvalidField`] (also for an array or any other non-object).
pub(crate) fn parse_object<'de, T: Deserialize<'de>>(bytes: &'de [u8]) -> Result<T, ApiError> {
    parse_json::<Object<T>>(bytes, "").map(|o| o.0)
}

/// A body that must be one JSON object, or empty for `T`'s defaults.
///
/// # Errors
/// As [`parse_object`].
pub(crate) fn parse_object_or_default<'de, T: Deserialize<'de> + Default>(
    bytes: &'de [u8],
) -> Result<T, ApiError> {
    if bytes.is_empty() {
        return Ok(T::default());
    }
    parse_object(bytes)
}

/// Parses one JSON document, naming the failing field with `prefix` in front of its path.
pub(crate) fn parse_json<'de, T: Deserialize<'de>>(bytes: &'de [u8], prefix: &str) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        // A body that is not JSON is malformed, also when serde met a value of the wrong shape before the
        // broken part (`[1` for an object). One that is JSON is not, also when serde_json reports a value
        // of the wrong shape as a syntax error (an array where an enum belongs: "expected value").
        match is_json(bytes) {
            Err(malformed) => malformed,
            Ok(()) => json_error(&e, prefix, !e.inner().is_data()),
        }
    })?;
    // Trailing data after the document is a syntax error, not something to ignore.
    de.end().map_err(|e| ApiError::MalformedJson {
        message: e.to_string(),
    })?;
    Ok(value)
}

/// Parses a JSON value already decoded into a [`serde_json::Value`].
pub(crate) fn from_value<T: DeserializeOwned>(value: serde_json::Value, prefix: &str) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|e| json_error(&e, prefix, false))
}

/// True when `bytes` hold one JSON document; used to tell "not JSON" from "JSON of the wrong shape".
pub(crate) fn is_json(bytes: &[u8]) -> Result<(), ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    IgnoredAny::deserialize(&mut de)
        .and_then(|_| de.end())
        .map_err(|e| ApiError::MalformedJson {
            message: e.to_string(),
        })
}

/// The error of a failed parse. `valid_json`: the parser reported a syntax error, but the document is
/// JSON, so the value at the error's path is of the wrong shape.
fn json_error(e: &serde_path_to_error::Error<serde_json::Error>, prefix: &str, valid_json: bool) -> ApiError {
    let inner = e.inner();
    if !inner.is_data() && !valid_json {
        return ApiError::MalformedJson {
            message: inner.to_string(),
        };
    }
    let mut field = prefix.to_string();
    let dot = |f: &mut String| {
        if !f.is_empty() {
            f.push('.');
        }
    };
    for segment in e.path().iter() {
        match segment {
            Segment::Seq { index } => {
                let _ = write!(field, "[{index}]");
            }
            Segment::Map { key } | Segment::Enum { variant: key } => {
                dot(&mut field);
                field.push_str(key);
            }
            Segment::Unknown => {
                dot(&mut field);
                field.push('?');
            }
        }
    }
    // serde reports a missing key at the object holding it; name the key itself.
    let message = if valid_json {
        format!("a value of the wrong type ({inner})")
    } else {
        inner.to_string()
    };
    for lead in ["missing field `", "unknown field `", "duplicate field `"] {
        let Some(key) = message.strip_prefix(lead).and_then(|rest| rest.split('`').next()) else {
            continue;
        };
        let named = matches!(e.path().iter().next_back(), Some(Segment::Map { key: last }) if last == key);
        if !named {
            dot(&mut field);
            field.push_str(key);
        }
    }
    ApiError::InvalidField {
        field: (!field.is_empty()).then_some(field),
        message,
    }
}

/// Query parameters of one request: only `allowed` names, each at most once.
#[derive(Debug)]
pub(crate) struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    /// Splits and decodes the raw query string.
    ///
    /// # Errors
    /// [`ApiError::InvalidParameter`] for a name not in `allowed` or given twice.
    pub fn parse(raw: Option<&str>, allowed: &[&str]) -> Result<Self, ApiError> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for (name, value) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
            if !allowed.contains(&name.as_ref()) {
                let expected = allowed
                    .iter()
                    .map(|a| format!("`{a}`"))
                    .collect::<Vec<_>>()
                    .join(", ");
                return Err(ApiError::InvalidParameter {
                    field: name.into_owned(),
                    message: format!("unknown query parameter; expected one of {expected}"),
                });
            }
            if pairs.iter().any(|(n, _)| *n == name) {
                return Err(ApiError::InvalidParameter {
                    field: name.into_owned(),
                    message: "given more than once".into(),
                });
            }
            pairs.push((name.into_owned(), value.into_owned()));
        }
        Ok(Self { pairs })
    }

    /// The parameter `name` as a non-negative integer, if present.
    ///
    /// # Errors
    /// [`ApiError::InvalidParameter`] when it is not a decimal integer that fits in a u64.
    pub fn u64(&self, name: &str) -> Result<Option<u64>, ApiError> {
        let Some((_, value)) = self.pairs.iter().find(|(n, _)| n == name) else {
            return Ok(None);
        };
        parse_u64(name, value).map(Some)
    }

    /// The parameter `name`, `default` when absent.
    ///
    /// # Errors
    /// [`ApiError::InvalidParameter`] when it does not parse, [`ApiError::ParameterOutOfRange`] when it is
    /// outside `range`.
    pub fn u64_in(&self, name: &str, range: RangeInclusive<u64>, default: u64) -> Result<u64, ApiError> {
        let value = self.u64(name)?.unwrap_or(default);
        if !range.contains(&value) {
            return Err(ApiError::ParameterOutOfRange {
                field: name.into(),
                message: format!("must be {}..={}, got {value}", range.start(), range.end()),
            });
        }
        Ok(value)
    }
}

/// A decimal integer that fits in a u64: digits only (no sign, no spaces), at most u64::MAX.
pub(crate) fn parse_u64(name: &str, value: &str) -> Result<u64, ApiError> {
    let shown: String = value.chars().take(40).flat_map(char::escape_default).collect();
    let bad = |why: &str| ApiError::InvalidParameter {
        field: name.into(),
        message: format!("expected {why}, got `{shown}`"),
    };
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad("a non-negative decimal integer"));
    }
    value
        .parse()
        .map_err(|_| bad("an integer of at most 18446744073709551615"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        a: u32,
        b: Option<String>,
    }

    fn field_of(json: &str, prefix: &str) -> Option<String> {
        match parse_json::<Vec<Inner>>(json.as_bytes(), prefix) {
            Err(ApiError::InvalidField { field, .. }) => field,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn json_errors_name_the_field_path() {
        assert_eq!(
            field_of(r#"[{"a":1},{"a":"x"}]"#, "records").as_deref(),
            Some("records[1].a")
        );
        assert_eq!(
            field_of(r#"[{"a":1},{"b":"x"}]"#, "records").as_deref(),
            Some("records[1].a")
        );
        assert_eq!(field_of(r#"[{"a":1,"c":2}]"#, "").as_deref(), Some("[0].c"));
        assert_eq!(field_of(r#"{"a":1}"#, "").as_deref(), None);
        assert!(matches!(
            parse_json::<Vec<Inner>>(b"[{\"a\":1}] x", ""),
            Err(ApiError::MalformedJson { .. })
        ));
        assert!(matches!(
            parse_json::<Vec<Inner>>(b"[{\"a\":", ""),
            Err(ApiError::MalformedJson { .. })
        ));
    }

    #[test]
    fn bodies_and_the_structs_in_them_are_objects_only() {
        let field = |r: Result<Vec<Object<Inner>>, ApiError>| match r {
            Err(ApiError::InvalidField { field, message }) => {
                assert!(message.contains("a JSON object"), "{message}");
                field
            }
            other => panic!("{other:?}"),
        };
        // serde alone takes `[1, "x"]` for `{"a": 1, "b": "x"}`.
        assert!(serde_json::from_str::<Inner>(r#"[1, "x"]"#).is_ok());
        assert_eq!(
            field(parse_json(br#"[{"a":1},[1,"x"]]"#, "records")).as_deref(),
            Some("records[1]")
        );
        assert!(matches!(
            parse_object::<Inner>(br#"[1, "x"]"#),
            Err(ApiError::InvalidField { field: None, .. })
        ));
        assert_eq!(parse_object::<Inner>(br#"{"a": 1}"#).unwrap().a, 1);
        assert!(matches!(
            parse_object::<Inner>(b"[1"),
            Err(ApiError::MalformedJson { .. })
        ));
        #[derive(Debug, Default, Deserialize)]
        struct Defaults {
            #[serde(default)]
            n: u32,
        }
        assert_eq!(parse_object_or_default::<Defaults>(b"").unwrap().n, 0);
        assert!(parse_object_or_default::<Defaults>(b"[]").is_err());
    }

    #[test]
    fn a_json_document_of_the_wrong_shape_is_not_malformed() {
        #[derive(Debug, Deserialize)]
        #[serde(rename_all = "lowercase")]
        #[allow(dead_code)]
        enum To {
            Earliest,
            Offset(u64),
        }
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct Seek {
            to: To,
        }
        // serde_json reports an array where an enum belongs as a syntax error ("expected value").
        match parse_object::<Seek>(br#"{"to": ["offset", 3]}"#) {
            Err(ApiError::InvalidField { field, .. }) => assert_eq!(field.as_deref(), Some("to")),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse_object::<Seek>(br#"{"to": [}"#),
            Err(ApiError::MalformedJson { .. })
        ));
    }

    #[test]
    fn integers_are_digits_only() {
        assert_eq!(parse_u64("o", "0").unwrap(), 0);
        assert_eq!(parse_u64("o", "18446744073709551615").unwrap(), u64::MAX);
        for bad in ["", "-1", "+1", " 1", "1.0", "abc", "18446744073709551616", "1e3"] {
            assert!(
                matches!(parse_u64("o", bad), Err(ApiError::InvalidParameter { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn query_refuses_unknown_and_repeated_names() {
        let q = Query::parse(Some("offset=3&max_records=2"), &["offset", "max_records"]).unwrap();
        assert_eq!(q.u64("offset").unwrap(), Some(3));
        assert_eq!(q.u64_in("max_records", 1..=10, 5).unwrap(), 2);
        assert!(matches!(
            q.u64_in("max_records", 3..=10, 5),
            Err(ApiError::ParameterOutOfRange { .. })
        ));
        assert!(Query::parse(Some("offest=3"), &["offset"]).is_err());
        assert!(Query::parse(Some("offset=3&offset=4"), &["offset"]).is_err());
    }
}
