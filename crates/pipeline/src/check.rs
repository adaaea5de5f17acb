//! Reading configuration text and reporting every problem at once, each with line, column and key.
//!
//! serde stops at the first error of a value, so the file is first parsed into a spanned TOML tree and
//! each part that can be wrong on its own (a topic, a pipeline's source, each processor, each sink) is
//! deserialized separately: a typo in one stage does not hide a typo in the next. Spans in the tree are
//! offsets into the whole text, so every error points into the file.
//!
//! `${NAME}` and `${NAME:-default}` in the text are replaced by environment variables first (`$${` is
//! a literal `${`); a variable that is unset and has no default is a problem of its line.

use std::collections::BTreeSet;
use std::fmt;
use std::ops::Range;

use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use crate::config::{
    PipelineConfig, ProcessorConfig, RetryConfig, SinkConfig, SourceConfig, Span, Stage, name_problem,
};

/// One problem of a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// 1-based line.
    pub line: usize,
    /// 1-based column (in characters).
    pub column: usize,
    /// The key concerned, dotted: `pipelines.scream.processors[0].stop_words`.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "line {}, column {}: {}", self.line, self.column, self.message)
        } else {
            write!(
                f,
                "line {}, column {}: `{}`: {}",
                self.line, self.column, self.key, self.message
            )
        }
    }
}

/// Collects diagnostics while parts of one text are read.
#[derive(Debug)]
pub struct Checker<'t> {
    text: &'t str,
    diagnostics: Vec<Diagnostic>,
}

impl<'t> Checker<'t> {
    /// A checker of `text` (after interpolation).
    pub fn new(text: &'t str) -> Self {
        Self {
            text,
            diagnostics: Vec::new(),
        }
    }

    /// Line and column of byte offset `at`.
    pub fn position(&self, at: usize) -> (usize, usize) {
        let at = at.min(self.text.len());
        let before = self.text.get(..at).unwrap_or(self.text);
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
        (line, column)
    }

    /// Records a problem of `key` at `span`.
    pub fn report(&mut self, key: impl Into<String>, span: Range<usize>, message: impl Into<String>) {
        let (line, column) = self.position(span.start);
        self.diagnostics.push(Diagnostic {
            line,
            column,
            key: key.into(),
            message: message.into(),
        });
    }

    /// Records problems `(subkey, message)` of the table at `key`: each points at its subkey when the
    /// table has it, else at the table.
    pub fn report_all(&mut self, key: &str, table: &Spanned<DeValue<'_>>, problems: Vec<(String, String)>) {
        for (sub, message) in problems {
            let span = match table.get_ref() {
                DeValue::Table(t) => t
                    .iter()
                    .find(|(k, _)| k.get_ref().as_ref() == sub.as_str())
                    .map_or_else(|| table.span(), |(k, _)| k.span()),
                _ => table.span(),
            };
            self.report(format!("{key}.{sub}"), span, message);
        }
    }

    /// Deserializes `value` as a `T`, or records why it cannot be one.
    pub fn de<T: DeserializeOwned>(&mut self, key: &str, value: &Spanned<DeValue<'_>>) -> Option<T> {
        let mut owned = value.clone();
        owned.get_mut().make_owned();
        match T::deserialize(ValueDeserializer::from(owned)) {
            Ok(v) => Some(v),
            Err(e) => {
                let span = e.span().unwrap_or_else(|| value.span());
                self.report(key, span, e.message().trim().to_owned());
                None
            }
        }
    }

    /// The problems found so far, in file order.
    pub fn into_diagnostics(mut self) -> Vec<Diagnostic> {
        self.diagnostics.sort_by_key(|d| (d.line, d.column));
        self.diagnostics
    }

    /// True when no problem was found yet.
    pub fn is_clean(&self) -> bool {
        self.diagnostics.is_empty()
    }
}

/// Replaces `${NAME}` and `${NAME:-default}` with values from `lookup`.
///
/// # Errors
/// Every unset variable without a default and every unclosed `${`, with its position.
pub fn interpolate(text: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, Vec<Diagnostic>> {
    let mut out = String::with_capacity(text.len());
    let mut problems = Vec::new();
    let checker = Checker::new(text);
    let mut rest = text;
    let mut offset = 0;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix("${") {
            out.push_str("${");
            offset += i + 3;
            rest = tail;
            continue;
        }
        let Some(body) = after.strip_prefix('{') else {
            out.push('$');
            offset += i + 1;
            rest = after;
            continue;
        };
        let Some(end) = body.find('}').filter(|&e| !body[..e].contains('\n')) else {
            let (line, column) = checker.position(offset + i);
            problems.push(Diagnostic {
                line,
                column,
                key: String::new(),
                message: "unclosed `${` (write `$${` for a literal `${`)".into(),
            });
            out.push_str(&rest[i..]);
            rest = "";
            break;
        };
        let inner = &body[..end];
        let (name, default) = match inner.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (inner, None),
        };
        match lookup(name)
            .filter(|v| !v.is_empty())
            .or(default.map(str::to_owned))
        {
            Some(v) if v.contains('\n') => {
                let (line, column) = checker.position(offset + i);
                problems.push(Diagnostic {
                    line,
                    column,
                    key: String::new(),
                    message: format!("environment variable `{name}` holds a line break"),
                });
            }
            Some(v) => out.push_str(&v),
            None => {
                let (line, column) = checker.position(offset + i);
                problems.push(Diagnostic {
                    line,
                    column,
                    key: String::new(),
                    message: format!(
                        "environment variable `{name}` is not set (give a default: `${{{name}:-value}}`)"
                    ),
                });
            }
        }
        let consumed = i + 2 + end + 1;
        offset += consumed;
        rest = &rest[consumed..];
    }
    out.push_str(rest);
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

/// Reads the `[pipelines]` table: every pipeline that is free of problems; problems go to `checker`.
pub fn pipelines(checker: &mut Checker<'_>, value: &Spanned<DeValue<'_>>) -> Vec<PipelineConfig> {
    let DeValue::Table(table) = value.get_ref() else {
        checker.report(
            "pipelines",
            value.span(),
            "must be a table of pipelines: [pipelines.NAME]",
        );
        return Vec::new();
    };
    let mut out = Vec::new();
    for (name, body) in table {
        let name = name.get_ref().as_ref();
        let key = format!("pipelines.{name}");
        let mut problems = Vec::new();
        name_problem("name", name, &mut problems);
        for (_, message) in problems {
            checker.report(&key, body.span(), format!("pipeline name: {message}"));
        }
        if let Some(p) = pipeline(checker, &key, name, body) {
            out.push(p);
        }
    }
    out
}

fn pipeline(
    checker: &mut Checker<'_>,
    key: &str,
    name: &str,
    body: &Spanned<DeValue<'_>>,
) -> Option<PipelineConfig> {
    let DeValue::Table(table) = body.get_ref() else {
        checker.report(
            key,
            body.span(),
            "must be a table with `source`, `processors`, `sinks`",
        );
        return None;
    };
    let before = checker.diagnostics.len();
    let mut retry = RetryConfig::default();
    let mut lease = None;
    let mut source = None;
    let mut processors = Vec::new();
    let mut sinks = Vec::new();
    let mut names = BTreeSet::new();
    for (k, v) in table {
        match k.get_ref().as_ref() {
            "retry" => {
                let rkey = format!("{key}.retry");
                if let Some(r) = checker.de::<RetryConfig>(&rkey, v) {
                    let problems = r.validate();
                    checker.report_all(&rkey, v, problems);
                    retry = r;
                }
            }
            "lease" => {
                let lkey = format!("{key}.lease");
                match checker.de::<Span>(&lkey, v) {
                    Some(l) if l.0 < std::time::Duration::from_secs(1) => {
                        checker.report(&lkey, v.span(), "must be at least 1s");
                    }
                    Some(l) => lease = Some(l),
                    None => {}
                }
            }
            "source" => {
                source = stage(
                    checker,
                    &format!("{key}.source"),
                    v,
                    &mut names,
                    ("source", SourceConfig::KINDS, source_of),
                )
            }
            "processors" => {
                for (i, item) in items(checker, &format!("{key}.processors"), v).iter().enumerate() {
                    let skey = format!("{key}.processors[{i}]");
                    if let Some(s) = stage(
                        checker,
                        &skey,
                        item,
                        &mut names,
                        ("processor", ProcessorConfig::KINDS, processor_of),
                    ) {
                        processors.push(s);
                    }
                }
            }
            "sinks" => {
                for (i, item) in items(checker, &format!("{key}.sinks"), v).iter().enumerate() {
                    let skey = format!("{key}.sinks[{i}]");
                    if let Some(s) = stage(
                        checker,
                        &skey,
                        item,
                        &mut names,
                        ("sink", SinkConfig::KINDS, sink_of),
                    ) {
                        sinks.push(s);
                    }
                }
            }
            other => checker.report(
                format!("{key}.{other}"),
                k.span(),
                format!(
                    "unknown key `{other}`, expected one of `source`, `processors`, `sinks`, `retry`, `lease`"
                ),
            ),
        }
    }
    if !table.contains_key("source") {
        checker.report(key, body.span(), "missing `source`");
    }
    let source = source?;
    if checker.diagnostics.len() != before {
        return None;
    }
    Some(PipelineConfig {
        name: name.to_owned(),
        retry,
        lease,
        source,
        processors,
        sinks,
    })
}

fn items<'i>(
    checker: &mut Checker<'_>,
    key: &str,
    value: &Spanned<DeValue<'i>>,
) -> Vec<Spanned<DeValue<'i>>> {
    match value.get_ref() {
        DeValue::Array(a) => a.iter().cloned().collect(),
        _ => {
            checker.report(key, value.span(), "must be an array of tables: [[...]]");
            Vec::new()
        }
    }
}

type Reader<T> = fn(&mut Checker<'_>, &str, &str, &Spanned<DeValue<'_>>) -> Option<T>;

/// Reads one stage: the common keys (`type`, `name`, `retry`) here, the rest by the component.
fn stage<T>(
    checker: &mut Checker<'_>,
    key: &str,
    value: &Spanned<DeValue<'_>>,
    names: &mut BTreeSet<String>,
    (what, kinds, read): (&str, &[&str], Reader<T>),
) -> Option<Stage<T>> {
    let DeValue::Table(table) = value.get_ref() else {
        checker.report(key, value.span(), "must be a table with a `type`");
        return None;
    };
    let Some(kind) = table.get("type") else {
        checker.report(key, value.span(), "missing `type`");
        return None;
    };
    let Some(kind_name) = kind.get_ref().as_str().map(str::to_owned) else {
        checker.report(format!("{key}.type"), kind.span(), "must be a string");
        return None;
    };
    if !kinds.contains(&kind_name.as_str()) {
        checker.report(
            format!("{key}.type"),
            kind.span(),
            format!(
                "unknown {what} type `{kind_name}`, expected one of {}",
                kinds.join(", ")
            ),
        );
        return None;
    }
    let mut name = None;
    let mut retry = None;
    let mut rest = DeTable::new();
    for (k, v) in table {
        match k.get_ref().as_ref() {
            "type" => {}
            "name" => match v.get_ref().as_str() {
                Some(n) => {
                    let mut problems = Vec::new();
                    name_problem("name", n, &mut problems);
                    if n.contains('.') {
                        problems.push(("name".into(), "must not contain `.`".into()));
                    }
                    for (_, m) in problems {
                        checker.report(format!("{key}.name"), v.span(), m);
                    }
                    name = Some(n.to_owned());
                }
                None => checker.report(format!("{key}.name"), v.span(), "must be a string"),
            },
            "retry" => {
                let rkey = format!("{key}.retry");
                if let Some(r) = checker.de::<RetryConfig>(&rkey, v) {
                    let problems = r.validate();
                    checker.report_all(&rkey, v, problems);
                    retry = Some(r);
                }
            }
            _ => {
                rest.insert(k.clone(), v.clone());
            }
        }
    }
    let rest = Spanned::new(value.span(), DeValue::Table(rest));
    let component = read(checker, key, &kind_name, &rest);
    let name = name.unwrap_or_else(|| {
        let mut n = kind_name.clone();
        let mut i = 2;
        while names.contains(&n) {
            n = format!("{kind_name}-{i}");
            i += 1;
        }
        n
    });
    if !names.insert(name.clone()) {
        checker.report(
            format!("{key}.name"),
            value.span(),
            format!("stage name `{name}` is used twice in this pipeline"),
        );
    }
    Some(Stage {
        name,
        retry,
        component: component?,
    })
}

fn unknown_kind(
    checker: &mut Checker<'_>,
    key: &str,
    value: &Spanned<DeValue<'_>>,
    what: &str,
    kind: &str,
    kinds: &[&str],
) {
    checker.report(
        format!("{key}.type"),
        value.span(),
        format!(
            "unknown {what} type `{kind}`, expected one of {}",
            kinds.join(", ")
        ),
    );
}

/// The one place a source's `type` picks its struct.
fn source_of(
    checker: &mut Checker<'_>,
    key: &str,
    kind: &str,
    value: &Spanned<DeValue<'_>>,
) -> Option<SourceConfig> {
    let config = match kind {
        "http" => SourceConfig::Http(checker.de(key, value)?),
        "topic" => SourceConfig::Topic(checker.de(key, value)?),
        "generate" => SourceConfig::Generate(checker.de(key, value)?),
        "rabbitmq" => SourceConfig::RabbitMq(checker.de(key, value)?),
        "nats" => SourceConfig::Nats(checker.de(key, value)?),
        other => {
            unknown_kind(checker, key, value, "source", other, SourceConfig::KINDS);
            return None;
        }
    };
    let mut problems = config.validate();
    if let SourceConfig::Generate(g) = &config
        && let Some(t) = &g.template
    {
        problems.extend(crate::sources::generate::validate_template(t));
    }
    let clean = problems.is_empty();
    checker.report_all(key, value, problems);
    clean.then_some(config)
}

/// The one place a processor's `type` picks its struct.
fn processor_of(
    checker: &mut Checker<'_>,
    key: &str,
    kind: &str,
    value: &Spanned<DeValue<'_>>,
) -> Option<ProcessorConfig> {
    let config = match kind {
        "filter" => ProcessorConfig::Filter(checker.de(key, value)?),
        "map" => ProcessorConfig::Map(checker.de(key, value)?),
        "validate" => ProcessorConfig::Validate(checker.de(key, value)?),
        "route" => ProcessorConfig::Route(checker.de(key, value)?),
        other => {
            unknown_kind(checker, key, value, "processor", other, ProcessorConfig::KINDS);
            return None;
        }
    };
    let problems = crate::processors::validate(&config);
    let clean = problems.is_empty();
    checker.report_all(key, value, problems);
    clean.then_some(config)
}

/// The one place a sink's `type` picks its struct.
fn sink_of(
    checker: &mut Checker<'_>,
    key: &str,
    kind: &str,
    value: &Spanned<DeValue<'_>>,
) -> Option<SinkConfig> {
    let config = match kind {
        "email" => SinkConfig::Email(normalize_email(checker.de(key, value)?)),
        "file" => SinkConfig::File(checker.de(key, value)?),
        "object_store" => {
            let mut c: crate::config::ObjectStoreSinkConfig = checker.de(key, value)?;
            // `url = "${ARCHIVE_URL:-}"` with the variable unset: the local default.
            c.url = c.url.filter(|u| !u.trim().is_empty());
            SinkConfig::ObjectStore(c)
        }
        "http" => SinkConfig::Http(checker.de(key, value)?),
        "topic" => SinkConfig::Topic(checker.de(key, value)?),
        "stdout" => SinkConfig::Stdout(checker.de(key, value)?),
        "rabbitmq" => SinkConfig::RabbitMq(checker.de(key, value)?),
        "nats" => SinkConfig::Nats(checker.de(key, value)?),
        other => {
            unknown_kind(checker, key, value, "sink", other, SinkConfig::KINDS);
            return None;
        }
    };
    let problems = crate::sinks::validate(&config);
    let clean = problems.is_empty();
    checker.report_all(key, value, problems);
    clean.then_some(config)
}

/// An empty `host` or `username` (`"${SMTP_HOST:-}"` with the variable unset) means none; a password
/// is only looked for when there is a user name, so one file serves with and without an SMTP server.
fn normalize_email(mut c: crate::config::EmailSinkConfig) -> crate::config::EmailSinkConfig {
    c.host = c.host.filter(|h| !h.trim().is_empty());
    c.username = c.username.filter(|u| !u.trim().is_empty());
    if c.username.is_none() {
        c.password_env = None;
        c.password_file = None;
    }
    c
}

/// Parses a text holding only `[pipelines.NAME]` tables (tests, embedding).
///
/// # Errors
/// Every problem, in file order.
pub fn parse_pipelines(text: &str) -> Result<Vec<PipelineConfig>, Vec<Diagnostic>> {
    let mut checker = Checker::new(text);
    let doc = match DeTable::parse(text) {
        Ok(d) => d,
        Err(e) => {
            checker.report("", e.span().unwrap_or(0..0), e.message().trim().to_owned());
            return Err(checker.into_diagnostics());
        }
    };
    let mut out = Vec::new();
    for (k, v) in doc.get_ref() {
        if k.get_ref() == "pipelines" {
            out = pipelines(&mut checker, v);
        } else {
            checker.report(
                k.get_ref().as_ref(),
                k.span(),
                "unknown key, expected `pipelines`",
            );
        }
    }
    if checker.is_clean() {
        Ok(out)
    } else {
        Err(checker.into_diagnostics())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpolation_uses_values_defaults_and_reports_unset() {
        let env = |n: &str| (n == "PORT").then(|| "4444".to_owned());
        assert_eq!(
            interpolate("a = \"${PORT}\"\nb = \"${NOPE:-x}\" $${LIT} $5", env).unwrap(),
            "a = \"4444\"\nb = \"x\" ${LIT} $5"
        );
        let e = interpolate("x = 1\ny = \"${MISSING}\"\n", env).unwrap_err();
        assert_eq!((e[0].line, e[0].column), (2, 6));
        assert!(e[0].message.contains("MISSING"));
    }

    #[test]
    fn every_problem_is_reported_with_line_and_key() {
        let text = r#"
[pipelines.p]
source = { type = "http", path = "/send", nope = 1 }

[[pipelines.p.processors]]
type = "filter"
field = "message"
stop_wrds = ["x"]

[[pipelines.p.processors]]
type = "teleport"

[[pipelines.p.sinks]]
type = "stdout"
colour = "red"
"#;
        let d = parse_pipelines(text).unwrap_err();
        let lines: Vec<_> = d.iter().map(|d| (d.line, d.key.as_str())).collect();
        assert_eq!(
            lines,
            vec![
                (3, "pipelines.p.source"),
                (8, "pipelines.p.processors[0]"),
                (11, "pipelines.p.processors[1].type"),
                (15, "pipelines.p.sinks[0]"),
            ],
            "{d:#?}"
        );
        assert!(d[0].message.contains("nope"), "{}", d[0]);
        assert!(d[1].message.contains("stop_wrds"), "{}", d[1]);
        assert!(d[2].message.contains("teleport"), "{}", d[2]);
        assert!(d[3].message.contains("colour"), "{}", d[3]);
        assert_eq!(d[0].column, 43, "{}", d[0]);
    }

    #[test]
    fn stage_names_default_to_their_type_and_must_be_unique() {
        let text = r#"
[pipelines.p]
source = { type = "topic", topic = "in" }
[[pipelines.p.processors]]
type = "map"
uppercase = ["a"]
[[pipelines.p.processors]]
type = "map"
lowercase = ["a"]
[[pipelines.p.sinks]]
type = "stdout"
name = "map"
"#;
        let d = parse_pipelines(text).unwrap_err();
        assert_eq!(d.len(), 1, "{d:#?}");
        assert!(d[0].message.contains("`map` is used twice"), "{}", d[0]);
        let ok = parse_pipelines(&text.replace("name = \"map\"", "")).unwrap();
        let names: Vec<_> = ok[0].processors.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["map", "map-2"]);
        assert_eq!(ok[0].sinks[0].name, "stdout");
    }

    /// The messages of `text`'s problems, each with its key.
    fn problems(text: &str) -> Vec<(String, String)> {
        parse_pipelines(text)
            .unwrap_err()
            .into_iter()
            .map(|d| (d.key, d.message))
            .collect()
    }

    fn has(problems: &[(String, String)], key: &str, text: &str) {
        assert!(
            problems.iter().any(|(k, m)| k == key && m.contains(text)),
            "no problem of `{key}` with `{text}` in {problems:#?}"
        );
    }

    #[test]
    fn bridges_read_with_their_defaults() {
        let text = r#"
[pipelines.p]
source = { type = "rabbitmq", url = "amqp://guest:guest@127.0.0.1:5672/%2f", queue = "messages" }
[[pipelines.p.sinks]]
type = "rabbitmq"
url = "amqps://rabbit.example.com"
routing_key = "orders.{region}"
[[pipelines.p.sinks]]
type = "nats"
url = "nats://127.0.0.1:4222,nats://127.0.0.1:4223"
subject = "orders.{region}"

[pipelines.q]
source = { type = "nats", url = "127.0.0.1:4222", subject = "orders.*.>", queue_group = "ferry", format = "text" }
"#;
        let p = parse_pipelines(text).unwrap();
        let SourceConfig::RabbitMq(r) = &p[0].source.component else {
            panic!("{:?}", p[0].source)
        };
        assert!(r.declare && r.durable);
        assert_eq!((r.format, r.prefetch), (crate::config::BodyFormat::Json, 100));
        let SinkConfig::RabbitMq(rs) = &p[0].sinks[0].component else {
            panic!("{:?}", p[0].sinks)
        };
        assert_eq!(
            (rs.exchange.as_str(), rs.queue.as_deref(), rs.durable),
            ("", None, true)
        );
        let SinkConfig::Nats(ns) = &p[0].sinks[1].component else {
            panic!("{:?}", p[0].sinks)
        };
        assert!(!ns.jetstream);
        assert_eq!(
            (p[0].sinks[0].name.as_str(), p[0].sinks[1].name.as_str()),
            ("rabbitmq", "nats")
        );
        let SourceConfig::Nats(n) = &p[1].source.component else {
            panic!("{:?}", p[1].source)
        };
        assert_eq!(n.queue_group.as_deref(), Some("ferry"));
        assert_eq!(n.format, crate::config::BodyFormat::Text);
        assert_eq!(
            crate::runtime::plan(&p[1])[0].output.as_deref(),
            Some("q.nats"),
            "a bridge publishes to <pipeline>.<stage>"
        );
    }

    #[test]
    fn bridges_missing_keys_are_reported() {
        let text = r#"
[pipelines.a]
source = { type = "rabbitmq", queue = "messages" }
[pipelines.b]
source = { type = "rabbitmq", url = "amqp://127.0.0.1" }
[pipelines.c]
source = { type = "nats", url = "nats://127.0.0.1:4222" }
[pipelines.d]
source = { type = "topic", topic = "in" }
sinks = [
  { type = "rabbitmq", url = "amqp://127.0.0.1" },
  { type = "nats", url = "nats://127.0.0.1:4222" },
  { type = "nats", subject = "x" },
]
"#;
        let p = problems(text);
        has(&p, "pipelines.a.source", "missing field `url`");
        has(&p, "pipelines.b.source", "missing field `queue`");
        has(&p, "pipelines.c.source", "missing field `subject`");
        has(&p, "pipelines.d.sinks[0]", "missing field `routing_key`");
        has(&p, "pipelines.d.sinks[1]", "missing field `subject`");
        has(&p, "pipelines.d.sinks[2]", "missing field `url`");
        assert_eq!(p.len(), 6, "{p:#?}");
    }

    #[test]
    fn bridges_bad_values_are_reported() {
        let text = r#"
[pipelines.a]
source = { type = "rabbitmq", url = "http://user:s3cret@host", queue = "", prefetch = 0, durabel = true }
[pipelines.b]
source = { type = "rabbitmq", url = "amqp://user:s3cret@host", queue = "q", prefetch = 0, format = "xml" }
[pipelines.c]
source = { type = "nats", url = "nats://127.0.0.1:4222", subject = "orders..x", queue_group = "a b" }
[pipelines.d]
source = { type = "topic", topic = "in" }
sinks = [
  { type = "rabbitmq", url = "", routing_key = "{oops" },
  { type = "rabbitmq", url = "amqp://h", exchange = "amq.topic", routing_key = "orders.{region}", queue = "orders" },
  { type = "rabbitmq", url = "amqp://h", routing_key = "orderz", queue = "orders" },
  { type = "nats", url = "nats://127.0.0.1:4222", subject = "orders.>" },
  { type = "nats", url = "nats://127.0.0.1:4222", subject = "orders.{region}", jetstream = "yes" },
]
"#;
        let p = problems(text);
        has(&p, "pipelines.a.source", "durabel");
        has(&p, "pipelines.b.source", "xml");
        has(&p, "pipelines.c.source.subject", "empty token");
        has(&p, "pipelines.c.source.queue_group", "without spaces");
        has(&p, "pipelines.d.sinks[0].url", "must not be empty");
        has(&p, "pipelines.d.sinks[0].routing_key", "unclosed");
        has(&p, "pipelines.d.sinks[1].queue", "fixed text");
        has(&p, "pipelines.d.sinks[2].routing_key", "routing_key = \"orders\"");
        has(&p, "pipelines.d.sinks[3].subject", "wildcards");
        has(&p, "pipelines.d.sinks[4]", "expected a boolean");
        assert!(p.iter().all(|(_, m)| !m.contains("s3cret")), "{p:#?}");

        // Checked once serde has read the table: the URL scheme, an empty queue, a prefetch of 0.
        let text = r#"
[pipelines.a]
source = { type = "rabbitmq", url = "http://user:s3cret@host", queue = "", prefetch = 0 }
"#;
        let p = problems(text);
        has(&p, "pipelines.a.source.url", "amqp://");
        has(&p, "pipelines.a.source.queue", "must not be empty");
        has(&p, "pipelines.a.source.prefetch", "1 to 65535");
        assert!(p.iter().all(|(_, m)| !m.contains("s3cret")), "{p:#?}");
    }
}
