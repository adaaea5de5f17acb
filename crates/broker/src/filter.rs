//! Filter policies in AWS SNS syntax, for subscriptions.
//!
//! A policy is a JSON object. Each key names a field (a header, or a JSON body field; nested objects in
//! the policy reach nested body fields) and lists what it may be; a record matches when every key matches
//! (AND) and, for each key, any listed condition matches (OR). When the field holds an array, any element
//! may match. Conditions:
//!
//! ```text
//! "text" | 42 | true | null     exact string, number, boolean or null
//! {"prefix": "ord-"}            a string starting with the prefix
//! {"suffix": ".png"}            a string ending with the suffix
//! {"equals-ignore-case": "EU"}  a string equal to it ignoring ASCII case
//! {"numeric": [">", 0, "<=", 100]}   numbers in the range (operators: = < <= > >=)
//! {"exists": true|false}        the field is present / absent
//! {"anything-but": ["a", 1]}    anything except these (also a single value, or {"prefix": "x"})
//! ```
//!
//! Headers are strings; a numeric condition on a header parses it as a number.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::BrokerError;

/// Largest filter policy, as JSON (SNS allows 256 KiB; it is stored in the metadata log).
pub const MAX_POLICY_BYTES: usize = 64 * 1024;

/// Where a policy looks: the record's headers, or its value parsed as JSON.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum FilterScope {
    /// The JSON body (SNS `MessageBody`).
    #[default]
    Body,
    /// The headers (SNS `MessageAttributes`).
    Headers,
}

#[derive(Debug, Clone, PartialEq)]
enum Condition {
    Exact(Value),
    Prefix(String),
    Suffix(String),
    EqualsIgnoreCase(String),
    Numeric(Vec<(Op, f64)>),
    Exists(bool),
    AnythingBut(Vec<Condition>),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Eq,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, PartialEq)]
enum Rule {
    /// A field and the conditions any of which it must meet.
    Leaf(Vec<Condition>),
    /// A nested object of rules (body scope).
    Nested(Vec<(String, Rule)>),
}

/// A parsed, validated filter policy.
#[derive(Debug, Clone, PartialEq)]
pub struct FilterPolicy {
    rules: Vec<(String, Rule)>,
    scope: FilterScope,
}

fn invalid(message: String) -> BrokerError {
    BrokerError::InvalidArgument {
        field: "filter_policy",
        message,
    }
}

impl FilterPolicy {
    /// Parses a policy of at most [`MAX_POLICY_BYTES`] of JSON.
    ///
    /// # Errors
    /// [`BrokerError::InvalidArgument`] on field `filter_policy`, saying which key is wrong and why.
    pub fn parse(policy: &Value, scope: FilterScope) -> Result<Self, BrokerError> {
        let Value::Object(map) = policy else {
            return Err(invalid("must be a JSON object".into()));
        };
        let size = serde_json::to_vec(policy).map_or(usize::MAX, |v| v.len());
        if size > MAX_POLICY_BYTES {
            return Err(invalid(format!(
                "is {size} bytes of JSON, more than the {MAX_POLICY_BYTES} a policy may have"
            )));
        }
        let rules = parse_object(map, "", scope)?;
        Ok(Self { rules, scope })
    }

    /// Whether a record with these headers and value passes.
    pub fn matches(&self, headers: &[ferry_log::Header], value: &[u8]) -> bool {
        match self.scope {
            FilterScope::Body => {
                let body: Value = serde_json::from_slice(value).unwrap_or(Value::Null);
                object_matches(&self.rules, &body)
            }
            FilterScope::Headers => self.rules.iter().all(|(key, rule)| {
                let values: Vec<Value> = headers
                    .iter()
                    .filter(|h| &h.key == key)
                    .map(|h| Value::String(String::from_utf8_lossy(&h.value).into_owned()))
                    .collect();
                match rule {
                    Rule::Leaf(conds) => leaf_matches(conds, &values),
                    Rule::Nested(_) => false,
                }
            }),
        }
    }
}

fn parse_object(
    map: &Map<String, Value>,
    path: &str,
    scope: FilterScope,
) -> Result<Vec<(String, Rule)>, BrokerError> {
    if map.is_empty() {
        return Err(invalid(format!("`{path}` has no keys")));
    }
    map.iter()
        .map(|(k, v)| {
            let at = if path.is_empty() {
                k.clone()
            } else {
                format!("{path}.{k}")
            };
            let rule = match v {
                Value::Array(items) => Rule::Leaf(
                    items
                        .iter()
                        .map(|c| parse_condition(c, &at))
                        .collect::<Result<_, _>>()?,
                ),
                Value::Object(inner) if scope == FilterScope::Body => {
                    Rule::Nested(parse_object(inner, &at, scope)?)
                }
                _ => return Err(invalid(format!("`{at}` must be an array of conditions"))),
            };
            Ok((k.clone(), rule))
        })
        .collect()
}

fn parse_condition(c: &Value, at: &str) -> Result<Condition, BrokerError> {
    let Value::Object(m) = c else {
        return Ok(Condition::Exact(c.clone()));
    };
    let [(op, arg)] = m.iter().collect::<Vec<_>>()[..] else {
        return Err(invalid(format!(
            "`{at}`: a condition object has exactly one operator"
        )));
    };
    let string = |what: &str| {
        arg.as_str()
            .map(str::to_owned)
            .ok_or_else(|| invalid(format!("`{at}`: `{what}` takes a string")))
    };
    Ok(match op.as_str() {
        "prefix" => Condition::Prefix(string("prefix")?),
        "suffix" => Condition::Suffix(string("suffix")?),
        "equals-ignore-case" => Condition::EqualsIgnoreCase(string("equals-ignore-case")?),
        "exists" => Condition::Exists(
            arg.as_bool()
                .ok_or_else(|| invalid(format!("`{at}`: `exists` takes true or false")))?,
        ),
        "numeric" => {
            let items = arg
                .as_array()
                .ok_or_else(|| invalid(format!("`{at}`: `numeric` takes an array")))?;
            if items.is_empty() || items.len() % 2 != 0 || items.len() > 4 {
                return Err(invalid(format!(
                    "`{at}`: `numeric` takes one or two operator/number pairs"
                )));
            }
            let pairs = items
                .chunks(2)
                .map(|pair| {
                    let op = match pair[0].as_str() {
                        Some("=") => Op::Eq,
                        Some("<") => Op::Lt,
                        Some("<=") => Op::Le,
                        Some(">") => Op::Gt,
                        Some(">=") => Op::Ge,
                        _ => return Err(invalid(format!("`{at}`: numeric operators are = < <= > >="))),
                    };
                    let n = pair[1]
                        .as_f64()
                        .ok_or_else(|| invalid(format!("`{at}`: `numeric` compares with numbers")))?;
                    Ok((op, n))
                })
                .collect::<Result<_, _>>()?;
            Condition::Numeric(pairs)
        }
        "anything-but" => {
            let items = match arg {
                Value::Array(a) => a
                    .iter()
                    .map(|c| parse_condition(c, at))
                    .collect::<Result<_, _>>()?,
                other => vec![parse_condition(other, at)?],
            };
            Condition::AnythingBut(items)
        }
        other => return Err(invalid(format!("`{at}`: unknown operator `{other}`"))),
    })
}

fn object_matches(rules: &[(String, Rule)], body: &Value) -> bool {
    rules.iter().all(|(key, rule)| {
        let field = body.get(key);
        match rule {
            Rule::Nested(inner) => field.is_some_and(|f| object_matches(inner, f)),
            Rule::Leaf(conds) => {
                let values: Vec<Value> = match field {
                    None => Vec::new(),
                    Some(Value::Array(a)) => a.clone(),
                    Some(v) => vec![v.clone()],
                };
                leaf_matches(conds, &values)
            }
        }
    })
}

/// `values` is empty when the field is absent.
fn leaf_matches(conds: &[Condition], values: &[Value]) -> bool {
    conds.iter().any(|c| match c {
        Condition::Exists(want) => values.is_empty() != *want,
        Condition::AnythingBut(not) => {
            !values.is_empty() && values.iter().all(|v| !not.iter().any(|n| cond_matches(n, v)))
        }
        _ => values.iter().any(|v| cond_matches(c, v)),
    })
}

fn as_number(v: &Value) -> Option<f64> {
    v.as_f64()
        .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
}

fn cond_matches(c: &Condition, v: &Value) -> bool {
    match c {
        Condition::Exact(Value::Number(n)) => n.as_f64().zip(as_number(v)).is_some_and(|(a, b)| a == b),
        Condition::Exact(want) => want == v,
        Condition::Prefix(p) => v.as_str().is_some_and(|s| s.starts_with(p.as_str())),
        Condition::Suffix(p) => v.as_str().is_some_and(|s| s.ends_with(p.as_str())),
        Condition::EqualsIgnoreCase(p) => v.as_str().is_some_and(|s| s.eq_ignore_ascii_case(p)),
        Condition::Numeric(pairs) => as_number(v).is_some_and(|x| {
            pairs.iter().all(|(op, n)| match op {
                Op::Eq => x == *n,
                Op::Lt => x < *n,
                Op::Le => x <= *n,
                Op::Gt => x > *n,
                Op::Ge => x >= *n,
            })
        }),
        Condition::Exists(_) => true,
        Condition::AnythingBut(not) => !not.iter().any(|n| cond_matches(n, v)),
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use ferry_log::Header;
    use serde_json::json;

    use super::*;

    fn body(policy: Value, record: Value) -> bool {
        FilterPolicy::parse(&policy, FilterScope::Body)
            .unwrap()
            .matches(&[], record.to_string().as_bytes())
    }

    #[test]
    fn exact_prefix_numeric_exists_anything_but_on_the_body() {
        let order = json!({"type": "order", "region": "eu-west", "total": 120.5, "tags": ["a", "vip"],
                           "customer": {"country": "DE", "tier": 2}});
        assert!(body(json!({"type": ["order"]}), order.clone()));
        assert!(!body(json!({"type": ["payment"]}), order.clone()));
        assert!(
            body(json!({"type": ["payment", "order"]}), order.clone()),
            "OR within a key"
        );
        assert!(
            !body(json!({"type": ["order"], "region": ["us"]}), order.clone()),
            "AND across keys"
        );
        assert!(body(json!({"region": [{"prefix": "eu-"}]}), order.clone()));
        assert!(body(json!({"region": [{"suffix": "west"}]}), order.clone()));
        assert!(body(
            json!({"type": [{"equals-ignore-case": "ORDER"}]}),
            order.clone()
        ));
        assert!(body(
            json!({"total": [{"numeric": [">", 100, "<=", 200]}]}),
            order.clone()
        ));
        assert!(!body(json!({"total": [{"numeric": ["<", 100]}]}), order.clone()));
        assert!(body(json!({"total": [120.5]}), order.clone()));
        assert!(body(json!({"tags": ["vip"]}), order.clone()), "any array element");
        assert!(body(json!({"coupon": [{"exists": false}]}), order.clone()));
        assert!(!body(json!({"coupon": [{"exists": true}]}), order.clone()));
        assert!(body(
            json!({"region": [{"anything-but": ["us-east", "ap"]}]}),
            order.clone()
        ));
        assert!(!body(
            json!({"region": [{"anything-but": "eu-west"}]}),
            order.clone()
        ));
        assert!(body(
            json!({"region": [{"anything-but": {"prefix": "us-"}}]}),
            order.clone()
        ));
        assert!(
            !body(json!({"coupon": [{"anything-but": "x"}]}), order.clone()),
            "anything-but needs the field"
        );
        assert!(body(
            json!({"customer": {"country": ["DE"], "tier": [{"numeric": [">=", 2]}]}}),
            order.clone()
        ));
        assert!(!body(json!({"customer": {"country": ["FR"]}}), order.clone()));
        assert!(!body(json!({"type": ["order"]}), json!("not an object")));
    }

    #[test]
    fn headers_scope() {
        let p = FilterPolicy::parse(
            &json!({"event": ["created"], "priority": [{"numeric": [">", 3]}]}),
            FilterScope::Headers,
        )
        .unwrap();
        let h = |k: &str, v: &str| Header {
            key: k.into(),
            value: Bytes::copy_from_slice(v.as_bytes()),
        };
        assert!(p.matches(&[h("event", "created"), h("priority", "5")], b"anything"));
        assert!(!p.matches(&[h("event", "created"), h("priority", "1")], b""));
        assert!(!p.matches(&[h("event", "deleted"), h("priority", "5")], b""));
    }

    #[test]
    fn bad_policies_say_what_is_wrong() {
        for (policy, needle) in [
            (json!([]), "object"),
            (json!({}), "no keys"),
            (json!({"a": "x"}), "`a` must be an array"),
            (json!({"a": [{"prefix": 1}]}), "`prefix` takes a string"),
            (json!({"a": [{"numeric": [">"]}]}), "pairs"),
            (json!({"a": [{"numeric": ["~", 1]}]}), "operators"),
            (json!({"a": [{"wat": 1}]}), "unknown operator `wat`"),
            (
                json!({"a": [{"prefix": "x", "suffix": "y"}]}),
                "exactly one operator",
            ),
        ] {
            let e = FilterPolicy::parse(&policy, FilterScope::Body)
                .unwrap_err()
                .to_string();
            assert!(e.contains(needle), "{policy}: {e}");
        }
    }
}
