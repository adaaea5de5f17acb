//! `type = "validate"`: records that satisfy a JSON Schema go on; the others go to the invalid topic
//! with their errors in the `ferry-validation-errors` header.

use anyhow::{Context, anyhow, bail};
use serde_json::Value;

use crate::component::{BuildContext, Output, Processor};
use crate::config::{ValidateConfig, name_problem};
use crate::error::StageError;
use crate::event::{Event, headers};

/// Problems of a `validate`'s settings, each with its key: exactly one of `schema` and `schema_file`, an
/// inline schema that compiles, a valid `invalid_topic`. The file is not read here (no I/O).
pub fn validate(c: &ValidateConfig) -> Vec<(String, String)> {
    let mut out = Vec::new();
    match (&c.schema, &c.schema_file) {
        (Some(_), Some(_)) => out.push((
            "schema_file".into(),
            "give `schema` or `schema_file`, not both".into(),
        )),
        (None, None) => out.push((
            "schema".into(),
            "give a `schema` (inline) or a `schema_file`".into(),
        )),
        (Some(schema), None) => {
            if let Err(e) = jsonschema::validator_for(schema) {
                out.push(("schema".into(), format!("not a valid JSON Schema: {e}")));
            }
        }
        (None, Some(_)) => {}
    }
    if let Some(topic) = &c.invalid_topic {
        name_problem("invalid_topic", topic, &mut out);
    }
    out
}

/// The `validate` processor.
#[derive(Debug)]
pub struct Validate {
    validator: jsonschema::Validator,
    invalid_topic: String,
}

impl Validate {
    /// Builds a validator: reads and compiles the schema; invalid records go to `invalid_topic`, by
    /// default `<pipeline>.invalid`.
    ///
    /// # Errors
    /// Settings [`validate`] finds a problem with, a schema file that cannot be read or is not a JSON
    /// Schema, an invalid default topic.
    pub fn new(c: &ValidateConfig, ctx: &BuildContext) -> anyhow::Result<Self> {
        let problems = validate(c);
        if !problems.is_empty() {
            let list: Vec<String> = problems.iter().map(|(k, m)| format!("{k}: {m}")).collect();
            bail!("{}", list.join("; "));
        }
        let validator = match (&c.schema, &c.schema_file) {
            (Some(schema), _) => jsonschema::validator_for(schema)
                .map_err(|e| anyhow!("schema: not a valid JSON Schema: {e}"))?,
            (None, Some(path)) => {
                let path = &ctx.config_dir.join(path);
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("schema_file: cannot read `{}`", path.display()))?;
                let schema: Value = serde_json::from_str(&text)
                    .with_context(|| format!("schema_file: `{}` is not JSON", path.display()))?;
                jsonschema::validator_for(&schema).map_err(|e| {
                    anyhow!(
                        "schema_file: `{}` is not a valid JSON Schema: {e}",
                        path.display()
                    )
                })?
            }
            // `validate` above rejects a config with neither.
            (None, None) => bail!("schema: give a `schema` or a `schema_file`"),
        };
        let invalid_topic = match &c.invalid_topic {
            Some(t) => t.clone(),
            None => {
                let topic = format!("{}.invalid", ctx.pipeline);
                let mut problems = Vec::new();
                name_problem("invalid_topic", &topic, &mut problems);
                if let Some((key, message)) = problems.first() {
                    bail!("{key}: the default `{topic}` is not a valid topic name ({message}); set one");
                }
                topic
            }
        };
        Ok(Self {
            validator,
            invalid_topic,
        })
    }
}

impl Processor for Validate {
    fn process(&self, mut event: Event) -> Result<Vec<Output>, StageError> {
        let errors: Vec<String> = self
            .validator
            .iter_errors(&event.value)
            .map(|e| {
                // The root's pointer is empty: shown as `/` so that every error starts with a path.
                let path = e.instance_path().as_str();
                let path = if path.is_empty() { "/" } else { path };
                format!("{path}: {e}")
            })
            .collect();
        if errors.is_empty() {
            return Ok(vec![Output::Next(event)]);
        }
        let list = Value::from(errors).to_string();
        event.set_header(headers::VALIDATION_ERRORS, list);
        Ok(vec![Output::To {
            topic: self.invalid_topic.clone(),
            event,
        }])
    }

    fn topics(&self) -> Vec<String> {
        vec![self.invalid_topic.clone()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::RemoteBus;
    use serde_json::json;
    use std::sync::Arc;

    fn ctx() -> BuildContext {
        BuildContext {
            pipeline: "orders".into(),
            stage: "validate".into(),
            data_dir: std::env::temp_dir(),
            config_dir: std::path::PathBuf::from("."),
            // Never used: building a validator does not touch the broker.
            bus: Arc::new(RemoteBus(
                ferry_client::Client::new("http://127.0.0.1:9").unwrap(),
            )),
        }
    }

    fn schema() -> Value {
        json!({
            "type": "object",
            "required": ["id", "amount"],
            "properties": {
                "id": {"type": "string"},
                "amount": {"type": "number", "minimum": 0}
            }
        })
    }

    fn inline(invalid_topic: Option<&str>) -> ValidateConfig {
        ValidateConfig {
            schema: Some(schema()),
            schema_file: None,
            invalid_topic: invalid_topic.map(str::to_owned),
        }
    }

    #[test]
    fn valid_records_go_on() {
        let v = Validate::new(&inline(None), &ctx()).unwrap();
        let e = Event::new(json!({"id": "a", "amount": 3}));
        assert_eq!(v.process(e.clone()).unwrap(), vec![Output::Next(e)]);
    }

    #[test]
    fn invalid_records_go_to_the_invalid_topic_with_their_errors() {
        let v = Validate::new(&inline(None), &ctx()).unwrap();
        assert_eq!(v.topics(), vec!["orders.invalid".to_owned()]);
        let mut e = Event::new(json!({"id": "a", "amount": -3}));
        e.set_header("keep", "me");
        let out = v.process(e).unwrap();
        let [Output::To { topic, event }] = out.as_slice() else {
            panic!("{out:?}")
        };
        assert_eq!(topic, "orders.invalid");
        assert_eq!(event.value, json!({"id": "a", "amount": -3}));
        assert_eq!(event.header("keep"), Some("me"));
        let errors: Vec<String> =
            serde_json::from_str(event.header(headers::VALIDATION_ERRORS).unwrap()).unwrap();
        assert_eq!(
            errors,
            vec!["/amount: -3 is less than the minimum of 0".to_owned()]
        );

        let out = v.process(Event::new(json!({"id": 5}))).unwrap();
        let [Output::To { event, .. }] = out.as_slice() else {
            panic!("{out:?}")
        };
        let errors: Vec<String> =
            serde_json::from_str(event.header(headers::VALIDATION_ERRORS).unwrap()).unwrap();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with("/: ") && e.contains("amount")),
            "{errors:?}"
        );
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with("/id: ") && e.contains("string")),
            "{errors:?}"
        );
    }

    #[test]
    fn invalid_topic_can_be_set() {
        let v = Validate::new(&inline(Some("rejects")), &ctx()).unwrap();
        assert_eq!(v.topics(), vec!["rejects".to_owned()]);
        let out = v.process(Event::new(json!({}))).unwrap();
        assert!(matches!(&out[..], [Output::To { topic, .. }] if topic == "rejects"));
    }

    #[test]
    fn schema_from_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("schema.json");
        std::fs::write(&path, schema().to_string()).unwrap();
        let c = ValidateConfig {
            schema: None,
            schema_file: Some(path.clone()),
            invalid_topic: None,
        };
        let v = Validate::new(&c, &ctx()).unwrap();
        assert!(matches!(
            &v.process(Event::new(json!({"id": "x", "amount": 1}))).unwrap()[..],
            [Output::Next(_)]
        ));

        std::fs::write(&path, "{ not json").unwrap();
        let e = Validate::new(&c, &ctx()).unwrap_err().to_string();
        assert!(e.contains("not JSON"), "{e}");
        std::fs::write(&path, r#"{"type": "nope"}"#).unwrap();
        let e = Validate::new(&c, &ctx()).unwrap_err().to_string();
        assert!(e.contains("not a valid JSON Schema"), "{e}");
        let missing = ValidateConfig {
            schema_file: Some(dir.path().join("missing.json")),
            ..c
        };
        let e = Validate::new(&missing, &ctx()).unwrap_err().to_string();
        assert!(e.contains("cannot read"), "{e}");
    }

    #[test]
    fn validation() {
        assert!(validate(&inline(None)).is_empty());
        let both = ValidateConfig {
            schema_file: Some("s.json".into()),
            ..inline(None)
        };
        assert_eq!(validate(&both)[0].0, "schema_file");
        let neither = ValidateConfig {
            schema: None,
            ..inline(None)
        };
        assert_eq!(validate(&neither)[0].0, "schema");
        let bad = ValidateConfig {
            schema: Some(json!({"type": 12})),
            ..inline(None)
        };
        assert_eq!(validate(&bad)[0].0, "schema");
        assert_eq!(validate(&inline(Some("bad topic!")))[0].0, "invalid_topic");
        assert!(Validate::new(&bad, &ctx()).is_err());
        // A file is only read when building.
        let file = ValidateConfig {
            schema: None,
            schema_file: Some("/no/such/file.json".into()),
            invalid_topic: None,
        };
        assert!(validate(&file).is_empty());
    }
}
