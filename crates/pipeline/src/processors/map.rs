//! `type = "map"`: changes each record, in this order: `jq` (its outputs replace the record), `rename`,
//! `set`, `delete`, `uppercase`, `lowercase`. Fields are dotted paths (`payload.text`, `items.0`).

use anyhow::bail;
use serde_json::Value;

use crate::component::{Output, Processor};
use crate::config::MapConfig;
use crate::error::StageError;
use crate::event::Event;
use crate::jq::{self, Jq};

/// Splits a dotted path (`payload.text`) into its keys.
///
/// # Errors
/// An empty path or an empty key (`a..b`, `.a`).
pub(crate) fn split_path(path: &str) -> Result<Vec<String>, String> {
    if path.is_empty() {
        return Err("empty field path".into());
    }
    let keys: Vec<String> = path.split('.').map(str::to_owned).collect();
    if keys.iter().any(String::is_empty) {
        return Err(format!("`{path}` has an empty key (write fields as `a.b.c`)"));
    }
    Ok(keys)
}

/// Problems of a `map`'s settings, each with its key: a jq program that does not compile, field paths
/// that are not dotted paths.
pub fn validate(c: &MapConfig) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Some(program) = &c.jq
        && let Err(e) = jq::compile(program)
    {
        out.push(("jq".into(), e));
    }
    let mut check = |key: &str, path: &str| {
        if let Err(e) = split_path(path) {
            out.push((key.to_owned(), e));
        }
    };
    for (from, to) in &c.rename {
        check("rename", from);
        check("rename", to);
    }
    for path in c.set.keys() {
        check("set", path);
    }
    for (key, paths) in [
        ("delete", &c.delete),
        ("uppercase", &c.uppercase),
        ("lowercase", &c.lowercase),
    ] {
        for path in paths {
            check(key, path);
        }
    }
    out
}

/// A field path with its text, for messages.
#[derive(Debug)]
struct Path {
    text: String,
    keys: Vec<String>,
}

impl Path {
    fn new(text: &str) -> anyhow::Result<Self> {
        match split_path(text) {
            Ok(keys) => Ok(Self {
                text: text.to_owned(),
                keys,
            }),
            Err(e) => bail!("{e}"),
        }
    }
}

/// The `map` processor.
#[derive(Debug)]
pub struct Map {
    jq: Option<Jq>,
    rename: Vec<(Path, Path)>,
    set: Vec<(Path, Value)>,
    delete: Vec<Path>,
    uppercase: Vec<Path>,
    lowercase: Vec<Path>,
}

impl Map {
    /// Builds a map from its settings.
    ///
    /// # Errors
    /// Settings [`validate`] finds a problem with.
    pub fn new(c: &MapConfig) -> anyhow::Result<Self> {
        let problems = validate(c);
        if !problems.is_empty() {
            let list: Vec<String> = problems.iter().map(|(k, m)| format!("{k}: {m}")).collect();
            bail!("{}", list.join("; "));
        }
        let paths = |list: &[String]| {
            list.iter()
                .map(|p| Path::new(p))
                .collect::<anyhow::Result<Vec<_>>>()
        };
        Ok(Self {
            jq: match &c.jq {
                Some(program) => Some(jq::compile(program).map_err(|e| anyhow::anyhow!("jq: {e}"))?),
                None => None,
            },
            rename: c
                .rename
                .iter()
                .map(|(from, to)| Ok((Path::new(from)?, Path::new(to)?)))
                .collect::<anyhow::Result<_>>()?,
            set: c
                .set
                .iter()
                .map(|(path, v)| Ok((Path::new(path)?, v.clone())))
                .collect::<anyhow::Result<_>>()?,
            delete: paths(&c.delete)?,
            uppercase: paths(&c.uppercase)?,
            lowercase: paths(&c.lowercase)?,
        })
    }

    /// Everything but `jq`, on one record.
    fn apply(&self, value: &mut Value) -> Result<(), StageError> {
        for (from, to) in &self.rename {
            // A field that is not there has nothing to move.
            if let Some(v) = remove(value, &from.keys) {
                set(value, &to.keys, v).map_err(|e| {
                    StageError::permanent(format!(
                        "map: cannot rename `{}` to `{}`: {e}",
                        from.text, to.text
                    ))
                })?;
            }
        }
        for (path, v) in &self.set {
            set(value, &path.keys, v.clone())
                .map_err(|e| StageError::permanent(format!("map: cannot set `{}`: {e}", path.text)))?;
        }
        for path in &self.delete {
            remove(value, &path.keys);
        }
        for (paths, change) in [
            (&self.uppercase, str::to_uppercase as fn(&str) -> String),
            (&self.lowercase, str::to_lowercase),
        ] {
            for path in paths {
                // Only text has a case; anything else is left as it is.
                if let Some(Value::String(s)) = get_mut(value, &path.keys) {
                    *s = change(s);
                }
            }
        }
        Ok(())
    }
}

impl Processor for Map {
    fn process(&self, event: Event) -> Result<Vec<Output>, StageError> {
        let Event {
            value,
            headers,
            key,
            origin,
        } = event;
        let values = match &self.jq {
            Some(jq) => jq
                .run(&value)
                .map_err(|e| StageError::permanent(format!("map jq `{}`: {e}", jq.program())))?,
            None => vec![value],
        };
        let mut out = Vec::with_capacity(values.len());
        for mut value in values {
            self.apply(&mut value)?;
            // Each output is the same record changed: it keeps the input's headers, key and origin.
            out.push(Output::Next(Event {
                value,
                headers: headers.clone(),
                key: key.clone(),
                origin: origin.clone(),
            }));
        }
        Ok(out)
    }
}

/// The JSON type of `v`, for messages.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The value at `path`, if there is one (array elements by index).
fn get_mut<'v>(value: &'v mut Value, path: &[String]) -> Option<&'v mut Value> {
    let mut v = value;
    for key in path {
        v = match v {
            Value::Object(m) => m.get_mut(key)?,
            Value::Array(a) => a.get_mut(key.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(v)
}

/// Takes the value at `path` out of `value`; `None` if there is none.
fn remove(value: &mut Value, path: &[String]) -> Option<Value> {
    let (last, parent) = path.split_last()?;
    match get_mut(value, parent)? {
        Value::Object(m) => m.remove(last),
        Value::Array(a) => {
            let i = last.parse::<usize>().ok().filter(|&i| i < a.len())?;
            Some(a.remove(i))
        }
        _ => None,
    }
}

/// Puts `new` at `path` in `value`, making objects of missing or null fields on the way.
///
/// # Errors
/// A field on the way that is neither an object nor null (nor an array indexed in range): changing its
/// type would lose data.
fn set(value: &mut Value, path: &[String], new: Value) -> Result<(), String> {
    let mut v = value;
    for (depth, key) in path.iter().enumerate() {
        if v.is_null() {
            *v = Value::Object(serde_json::Map::new());
        }
        let at = || {
            if depth == 0 {
                "the record".to_owned()
            } else {
                format!("`{}`", path[..depth].join("."))
            }
        };
        v = match v {
            Value::Object(m) => m.entry(key.clone()).or_insert(Value::Null),
            Value::Array(a) => {
                let len = a.len();
                match key.parse::<usize>().ok().and_then(|i| a.get_mut(i)) {
                    Some(item) => item,
                    None => return Err(format!("{} is an array of {len}, with no index `{key}`", at())),
                }
            }
            other => return Err(format!("{} is {}, not an object", at(), kind(other))),
        };
    }
    *v = new;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Origin;
    use serde_json::json;

    fn config() -> MapConfig {
        MapConfig {
            jq: None,
            rename: Default::default(),
            set: Default::default(),
            delete: Vec::new(),
            uppercase: Vec::new(),
            lowercase: Vec::new(),
        }
    }

    fn values(m: &Map, value: Value) -> Vec<Value> {
        m.process(Event::new(value))
            .unwrap()
            .into_iter()
            .map(|o| match o {
                Output::Next(e) => e.value,
                other => panic!("unexpected {other:?}"),
            })
            .collect()
    }

    #[test]
    fn rename_set_delete_case() {
        let mut c = config();
        c.rename.insert("user".into(), "meta.author".into());
        c.rename.insert("missing".into(), "never".into());
        c.set.insert("meta.source".into(), json!("ferry"));
        c.set.insert("n".into(), json!({"x": [1]}));
        c.delete = vec!["secret".into(), "deep.gone".into(), "nothing.here".into()];
        c.uppercase = vec!["message".into(), "count".into(), "absent".into()];
        c.lowercase = vec!["deep.Shout".into()];
        let m = Map::new(&c).unwrap();
        let out = values(
            &m,
            json!({"user": "ann", "message": "hi there", "secret": 1, "count": 2,
                   "deep": {"gone": true, "Shout": "LOUD"}}),
        );
        assert_eq!(
            out,
            vec![json!({
                "message": "HI THERE", "count": 2,
                "meta": {"author": "ann", "source": "ferry"},
                "n": {"x": [1]},
                "deep": {"Shout": "loud"},
            })]
        );
    }

    #[test]
    fn order_is_jq_rename_set_delete_upper_lower() {
        let mut c = config();
        c.jq = Some("{a: .x, b: .y}".into());
        c.rename.insert("a".into(), "c".into());
        // `set` sees the renamed field: it overwrites `c`.
        c.set.insert("c".into(), json!("set"));
        // `delete` runs after `set`.
        c.set.insert("d".into(), json!("tmp"));
        c.delete = vec!["d".into()];
        // Both apply: upper then lower.
        c.uppercase = vec!["b".into()];
        c.lowercase = vec!["b".into()];
        let m = Map::new(&c).unwrap();
        assert_eq!(
            values(&m, json!({"x": 1, "y": "MiXeD"})),
            vec![json!({"c": "set", "b": "mixed"})]
        );
    }

    #[test]
    fn jq_outputs_replace_the_record() {
        let mut c = config();
        c.jq = Some(".items[] | {id: .}".into());
        c.set.insert("kind".into(), json!("item"));
        let m = Map::new(&c).unwrap();
        let mut e = Event::new(json!({"items": [1, 2]}));
        e.key = Some("k".into());
        e.set_header("h", "v");
        e.origin = Some(Origin {
            topic: "t".into(),
            partition: 1,
            offset: 7,
            timestamp_ms: 0,
        });
        let out = m.process(e.clone()).unwrap();
        assert_eq!(out.len(), 2);
        for (o, id) in out.into_iter().zip([1, 2]) {
            let Output::Next(got) = o else { panic!("{o:?}") };
            assert_eq!(got.value, json!({"id": id, "kind": "item"}));
            assert_eq!(
                (&got.headers, &got.key, &got.origin),
                (&e.headers, &e.key, &e.origin)
            );
        }
        // No output: the record is dropped.
        assert!(m.process(Event::new(json!({"items": []}))).unwrap().is_empty());
    }

    #[test]
    fn jq_errors_are_permanent() {
        let mut c = config();
        c.jq = Some(r#"error("boom")"#.into());
        let e = Map::new(&c).unwrap().process(Event::new(json!({}))).unwrap_err();
        assert!(e.permanent);
        assert!(e.message.contains("boom"), "{}", e.message);
    }

    #[test]
    fn set_through_non_objects_is_an_error() {
        let mut c = config();
        c.set.insert("a.b".into(), json!(1));
        let m = Map::new(&c).unwrap();
        assert_eq!(values(&m, json!({"a": null})), vec![json!({"a": {"b": 1}})]);
        let e = m.process(Event::new(json!({"a": 5}))).unwrap_err();
        assert!(e.permanent);
        assert!(e.message.contains("`a` is a number"), "{}", e.message);
        let e = m.process(Event::new(json!("text"))).unwrap_err();
        assert!(e.message.contains("the record is a string"), "{}", e.message);
    }

    #[test]
    fn array_indexes() {
        let mut c = config();
        c.set.insert("xs.1".into(), json!("two"));
        c.uppercase = vec!["xs.0".into()];
        c.delete = vec!["ys.0".into()];
        let m = Map::new(&c).unwrap();
        assert_eq!(
            values(&m, json!({"xs": ["a", 2], "ys": [1, 2]})),
            vec![json!({"xs": ["A", "two"], "ys": [2]})]
        );
        assert!(m.process(Event::new(json!({"xs": []}))).is_err());
    }

    #[test]
    fn validation() {
        assert!(validate(&config()).is_empty());
        let mut c = config();
        c.jq = Some("{".into());
        c.rename.insert("a".into(), "b..c".into());
        c.uppercase = vec![String::new()];
        let problems = validate(&c);
        let keys: Vec<&str> = problems.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, vec!["jq", "rename", "uppercase"]);
        assert!(Map::new(&c).is_err());
    }
}
