//! Text templates over a record's fields: `{user}`, `{payload.text}`, `{.}` (the whole record as JSON);
//! `{{` and `}}` are literal braces. A string field is inserted as it is, anything else as JSON; a
//! missing field as the empty string.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Field(Vec<String>),
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

impl Template {
    /// Parses `text`.
    ///
    /// # Errors
    /// An unclosed `{`, an empty `{}`, or a lone `}`, naming the position.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut chars = text.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            match c {
                '{' if chars.peek().map(|&(_, c)| c) == Some('{') => {
                    chars.next();
                    lit.push('{');
                }
                '}' if chars.peek().map(|&(_, c)| c) == Some('}') => {
                    chars.next();
                    lit.push('}');
                }
                '{' => {
                    let rest = &text[i + 1..];
                    let end = rest
                        .find('}')
                        .ok_or_else(|| format!("unclosed `{{` at character {i}"))?;
                    let name = rest[..end].trim();
                    if name.is_empty() {
                        return Err(format!("empty `{{}}` at character {i}"));
                    }
                    for _ in 0..rest[..end].chars().count() + 1 {
                        chars.next();
                    }
                    if !lit.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut lit)));
                    }
                    let path = if name == "." {
                        Vec::new()
                    } else {
                        name.trim_start_matches('.')
                            .split('.')
                            .map(str::to_owned)
                            .collect()
                    };
                    parts.push(Part::Field(path));
                }
                '}' => return Err(format!("lone `}}` at character {i} (write `}}}}` for a brace)")),
                c => lit.push(c),
            }
        }
        if !lit.is_empty() {
            parts.push(Part::Text(lit));
        }
        Ok(Self { parts })
    }

    /// The field paths the template refers to (dotted), `.` for the whole record.
    pub fn fields(&self) -> Vec<String> {
        self.parts
            .iter()
            .filter_map(|p| match p {
                Part::Field(path) if path.is_empty() => Some(".".to_owned()),
                Part::Field(path) => Some(path.join(".")),
                Part::Text(_) => None,
            })
            .collect()
    }

    /// The text for `record`.
    pub fn render(&self, record: &Value) -> String {
        self.render_with(record, |_| None)
    }

    /// The text for `record`, where `extra` may supply values of names first (`date`, `first_offset`).
    pub fn render_with(&self, record: &Value, extra: impl Fn(&str) -> Option<String>) -> String {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Field(path) => {
                    if let Some(v) = extra(&path.join(".")) {
                        out.push_str(&v);
                        continue;
                    }
                    match lookup(record, path) {
                        Some(Value::String(s)) => out.push_str(s),
                        Some(v) => out.push_str(&v.to_string()),
                        None => {}
                    }
                }
            }
        }
        out
    }
}

/// The value at a dotted path (`a.b.0` indexes arrays too); the record itself for an empty path.
pub fn lookup<'v, S: AsRef<str>>(record: &'v Value, path: &[S]) -> Option<&'v Value> {
    let mut v = record;
    for key in path {
        let key = key.as_ref();
        v = match v {
            Value::Object(m) => m.get(key)?,
            Value::Array(a) => a.get(key.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_fields_paths_and_braces() {
        let t = Template::parse("From user: {user}\n\nMessage: {message} {{x}} {a.b} {n} {missing}").unwrap();
        let v = json!({"user": "ann", "message": "HI", "a": {"b": "deep"}, "n": 3});
        assert_eq!(t.render(&v), "From user: ann\n\nMessage: HI {x} deep 3 ");
        assert_eq!(
            Template::parse("{.}").unwrap().render(&json!({"a":1})),
            r#"{"a":1}"#
        );
        assert_eq!(t.fields(), vec!["user", "message", "a.b", "n", "missing"]);
    }

    #[test]
    fn bad_templates_are_named() {
        assert!(Template::parse("a {user").unwrap_err().contains("unclosed"));
        assert!(Template::parse("a {} b").unwrap_err().contains("empty"));
        assert!(Template::parse("a } b").unwrap_err().contains("lone"));
    }

    #[test]
    fn extra_names_come_first() {
        let t = Template::parse("d={date}/{first_offset}.jsonl").unwrap();
        let s = t.render_with(&json!({}), |n| match n {
            "date" => Some("2026-11-23".into()),
            "first_offset" => Some("7".into()),
            _ => None,
        });
        assert_eq!(s, "d=2026-11-23/7.jsonl");
    }
}
