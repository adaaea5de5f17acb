//! The configuration model of pipelines: one struct per source, processor and sink, all with
//! `deny_unknown_fields`. Which struct a table is read into is decided by its `type` key in one place
//! ([`SourceConfig::KINDS`], [`ProcessorConfig::KINDS`], [`SinkConfig::KINDS`] and `check.rs`).
//!
//! ```toml
//! [pipelines.scream]
//! retry = { max_attempts = 10, initial_backoff = "200ms", max_backoff = "30s" }  # for every stage
//! source = { type = "http", path = "/send", fields = { user = "string", message = "string" } }
//!
//! [[pipelines.scream.processors]]
//! type = "filter"
//! field = "message"
//! stop_words = ["mango"]
//!
//! [[pipelines.scream.sinks]]
//! type = "stdout"
//! ```
//!
//! Validation here is pure (no files, no network): `validate` methods return every problem with the
//! key it concerns. Building (`build` in the component modules) does I/O.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// A duration written as text: `"250ms"`, `"5s"`, `"1m"`, `"1h 30m"` (humantime syntax).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Span(pub Duration);

impl Span {
    /// `ms` milliseconds.
    pub const fn millis(ms: u64) -> Self {
        Self(Duration::from_millis(ms))
    }

    /// `s` seconds.
    pub const fn secs(s: u64) -> Self {
        Self(Duration::from_secs(s))
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl Serialize for Span {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map(Span).map_err(|e| {
            serde::de::Error::custom(format!(
                "`{text}` is not a duration like \"5s\" or \"250ms\": {e}"
            ))
        })
    }
}

/// Retries of a stage that failed on a record: exponential backoff with jitter, then the dead-letter
/// topic `<pipeline>.dlq`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Attempts in all, the first included (1 = no retry), 1..=1000.
    pub max_attempts: u32,
    /// Wait before the second attempt; doubled for each one after.
    pub initial_backoff: Span,
    /// Longest wait between two attempts.
    pub max_backoff: Span,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_attempts: 10,
            initial_backoff: Span::millis(200),
            max_backoff: Span::secs(30),
        }
    }
}

impl RetryConfig {
    /// Problems, each with its key.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if !(1..=1000).contains(&self.max_attempts) {
            out.push((
                "max_attempts".into(),
                format!("must be 1..=1000, got {}", self.max_attempts),
            ));
        }
        if self.initial_backoff > self.max_backoff {
            out.push((
                "initial_backoff".into(),
                format!(
                    "must not be longer than max_backoff ({} > {})",
                    self.initial_backoff, self.max_backoff
                ),
            ));
        }
        out
    }

    /// The wait before attempt `attempt + 1` (after `attempt` failures, `attempt >= 1`), without jitter.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(30));
        self.initial_backoff
            .0
            .saturating_mul(factor)
            .min(self.max_backoff.0)
    }
}

/// One pipeline: `[pipelines.NAME]`.
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineConfig {
    /// Its name (the table's key).
    pub name: String,
    /// Default retries of its stages.
    pub retry: RetryConfig,
    /// `lease`: how long a stage holds a record it is working on before another process may take it
    /// (the visibility timeout of the stages' queue groups, set when a group is first made; a stage
    /// extends it while it retries). `None`: 30 s.
    pub lease: Option<Span>,
    /// Where records come from.
    pub source: Stage<SourceConfig>,
    /// What happens to them, in order.
    pub processors: Vec<Stage<ProcessorConfig>>,
    /// Where they go; each sink gets every record that leaves the last processor.
    pub sinks: Vec<Stage<SinkConfig>>,
}

/// A source, processor or sink with the keys every stage has.
#[derive(Debug, Clone, PartialEq)]
pub struct Stage<T> {
    /// `name`: unique in its pipeline; default: its `type` (`map`, then `map-2`, ...).
    pub name: String,
    /// `retry`: overrides the pipeline's.
    pub retry: Option<RetryConfig>,
    /// The component's own keys.
    pub component: T,
}

// ---------------------------------------------------------------------------------------------------
// Sources

/// Sources: where a pipeline's records come from.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceConfig {
    /// `type = "http"`.
    Http(HttpSourceConfig),
    /// `type = "topic"`.
    Topic(TopicSourceConfig),
    /// `type = "generate"`.
    Generate(GenerateSourceConfig),
    /// `type = "rabbitmq"`.
    RabbitMq(RabbitMqSourceConfig),
    /// `type = "nats"`.
    Nats(NatsSourceConfig),
}

impl SourceConfig {
    /// Every `type` a source can have.
    pub const KINDS: &'static [&'static str] = &["http", "topic", "generate", "rabbitmq", "nats"];

    /// The `type`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Http(_) => "http",
            Self::Topic(_) => "topic",
            Self::Generate(_) => "generate",
            Self::RabbitMq(_) => "rabbitmq",
            Self::Nats(_) => "nats",
        }
    }

    /// Problems, each with its key.
    pub fn validate(&self) -> Vec<(String, String)> {
        match self {
            Self::Http(c) => c.validate(),
            Self::Topic(c) => c.validate(),
            Self::Generate(c) => c.validate(),
            Self::RabbitMq(c) => c.validate(),
            Self::Nats(c) => c.validate(),
        }
    }
}

/// The type a field of an `http` source must have; `?` at the end: may be missing or null.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct FieldType(pub String);

impl FieldType {
    /// The types there are.
    pub const TYPES: &'static [&'static str] =
        &["string", "number", "integer", "boolean", "object", "array", "any"];

    /// `(type, optional)`.
    pub fn parts(&self) -> (&str, bool) {
        match self.0.strip_suffix('?') {
            Some(t) => (t, true),
            None => (self.0.as_str(), false),
        }
    }
}

/// How an `http` source answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResponseConfig {
    /// Status of a success.
    pub status: u16,
    /// Body of a success; without one, the accepted record as JSON.
    pub body: Option<String>,
    /// Content type of `body` (the echoed JSON is always `application/json`).
    pub content_type: String,
}

impl Default for ResponseConfig {
    fn default() -> Self {
        Self {
            status: 200,
            body: None,
            content_type: "text/plain; charset=utf-8".into(),
        }
    }
}

/// Whose answers an `http` source imitates, byte for byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Compat {
    /// ferry's own: errors as `{"error","message","field","errors"}`.
    #[default]
    None,
    /// A Flask app validating with marshmallow: success echoed as Flask's `jsonify` writes it (sorted
    /// keys, no spaces, a newline), errors as `{"error": "Validation error - {'field': ['Not a valid
    /// string.']}"}`.
    FlaskMarshmallow,
}

/// Unknown fields in an `http` source's body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum UnknownFields {
    /// A field not in `fields` is an error.
    #[default]
    Reject,
    /// Fields not in `fields` are kept as they are.
    Allow,
}

/// `type = "http"`: a route on the server; every JSON body posted to it that passes validation is
/// published, then answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSourceConfig {
    /// The path, e.g. `/send`. Must not be under `/v1/` nor `/metrics` or `/healthz`.
    pub path: String,
    /// Fields the body must have and their types (`string`, `number`, `integer`, `boolean`, `object`,
    /// `array`, `any`; `string?` for an optional one).
    #[serde(default)]
    pub fields: BTreeMap<String, FieldType>,
    /// Fields not in `fields`.
    #[serde(default)]
    pub unknown_fields: UnknownFields,
    /// A JSON Schema the body must satisfy (inline).
    #[serde(default)]
    pub schema: Option<Value>,
    /// A JSON Schema the body must satisfy, from a file.
    #[serde(default)]
    pub schema_file: Option<PathBuf>,
    /// The answer to a request whose record was published.
    #[serde(default)]
    pub response: ResponseConfig,
    /// Whose answers to imitate.
    #[serde(default)]
    pub compat: Compat,
    /// Largest body accepted, in bytes.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// The topic records are published to; default `<pipeline>.<source name>`.
    #[serde(default)]
    pub topic: Option<String>,
}

fn default_max_body_bytes() -> usize {
    1024 * 1024
}

impl HttpSourceConfig {
    /// Problems, each with its key.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if !self.path.starts_with('/') || self.path.len() < 2 || self.path.contains(['{', '}', '*', '?', '#'])
        {
            out.push((
                "path".into(),
                format!(
                    "must start with `/` and be a plain path (no `{{`, `*`, `?`), got `{}`",
                    self.path
                ),
            ));
        }
        if self.path.starts_with("/v1/") || ["/v1", "/metrics", "/healthz"].contains(&self.path.as_str()) {
            out.push(("path".into(), format!("`{}` is ferry's own API", self.path)));
        }
        for (field, ty) in &self.fields {
            if !FieldType::TYPES.contains(&ty.parts().0) {
                out.push((
                    "fields".into(),
                    format!(
                        "`{field}`: unknown type `{}`; one of {} (with `?` for optional)",
                        ty.0,
                        FieldType::TYPES.join(", ")
                    ),
                ));
            }
        }
        if self.schema.is_some() && self.schema_file.is_some() {
            out.push((
                "schema_file".into(),
                "give `schema` or `schema_file`, not both".into(),
            ));
        }
        if let Some(schema) = &self.schema
            && let Err(e) = jsonschema::validator_for(schema)
        {
            out.push(("schema".into(), format!("not a valid JSON Schema: {e}")));
        }
        if !(100..=599).contains(&self.response.status) || (300..400).contains(&self.response.status) {
            out.push((
                "response".into(),
                format!(
                    "status must be a success (2xx) or error code, got {}",
                    self.response.status
                ),
            ));
        }
        if let Some(t) = &self.topic {
            name_problem("topic", t, &mut out);
        }
        out
    }
}

/// `type = "topic"`: the records of an existing topic (read as the queue group of the first stage).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicSourceConfig {
    /// The topic (created if missing).
    pub topic: String,
}

impl TopicSourceConfig {
    /// Problems, each with its key.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        name_problem("topic", &self.topic, &mut out);
        out
    }
}

/// In which order `generate` takes the events of its file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Order {
    /// One at random each time (the propagator's way).
    #[default]
    Random,
    /// In file order, starting over at the end.
    Sequential,
}

/// `type = "generate"`: records made every `interval`, from a file of events or a template.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerateSourceConfig {
    /// A JSON file: an array of events, or one event per line.
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// A record to make, whose string values may call fake-data generators: `"{{uuid}}"`, `"{{name}}"`,
    /// `"{{email}}"`, `"{{int(1,100)}}"`, ... (see the README).
    #[serde(default)]
    pub template: Option<Value>,
    /// Order of the file's events.
    #[serde(default)]
    pub order: Order,
    /// Time between two records.
    #[serde(default = "default_interval")]
    pub interval: Span,
    /// How many records; without it, forever.
    #[serde(default)]
    pub count: Option<u64>,
    /// The topic records are published to; default `<pipeline>.<source name>`.
    #[serde(default)]
    pub topic: Option<String>,
}

fn default_interval() -> Span {
    Span::secs(1)
}

impl GenerateSourceConfig {
    /// Problems, each with its key.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        match (&self.file, &self.template) {
            (Some(_), Some(_)) => out.push(("template".into(), "give `file` or `template`, not both".into())),
            (None, None) => out.push((
                "file".into(),
                "give `file` (events to replay) or `template`".into(),
            )),
            _ => {}
        }
        if let Some(t) = &self.topic {
            name_problem("topic", t, &mut out);
        }
        out
    }
}

/// How a bridge source (`rabbitmq`, `nats`) reads a message body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum BodyFormat {
    /// The body is a JSON value, which becomes the record; a body that is not JSON is refused.
    #[default]
    Json,
    /// The body is UTF-8 text; the record is `{"text": "<body>"}`.
    Text,
}

/// `type = "rabbitmq"`: messages consumed from a RabbitMQ queue (manual acks), each acked once it is
/// published to the source's topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RabbitMqSourceConfig {
    /// `amqp://user:password@host:port/vhost` (or `amqps://`).
    pub url: String,
    /// The queue consumed.
    pub queue: String,
    /// Declare the queue (created if missing); `false`: it must exist (a passive declare checks it).
    #[serde(default = "yes")]
    pub declare: bool,
    /// Declare the queue durable; must match how the queue was declared by whoever made it.
    #[serde(default = "yes")]
    pub durable: bool,
    /// How message bodies are read.
    #[serde(default)]
    pub format: BodyFormat,
    /// Most unacked messages RabbitMQ sends at once (basic.qos), 1 to 65535.
    #[serde(default = "default_prefetch")]
    pub prefetch: u16,
}

fn default_prefetch() -> u16 {
    100
}

impl RabbitMqSourceConfig {
    /// Problems, each with its key.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        amqp_url_problem("url", &self.url, &mut out);
        amqp_name_problem("queue", &self.queue, false, &mut out);
        if self.prefetch == 0 {
            out.push(("prefetch".into(), "must be 1 to 65535, got 0".into()));
        }
        out
    }
}

/// `type = "nats"`: messages of a core NATS subscription, each published to the source's topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsSourceConfig {
    /// `nats://host:port` (several separated by commas).
    pub url: String,
    /// The subject subscribed to; wildcards `*` (one token) and `>` (the rest) allowed.
    pub subject: String,
    /// A core NATS queue group: processes subscribed with the same group share the messages.
    #[serde(default)]
    pub queue_group: Option<String>,
    /// How message bodies are read.
    #[serde(default)]
    pub format: BodyFormat,
}

impl NatsSourceConfig {
    /// Problems, each with its key.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        nats_url_problem("url", &self.url, &mut out);
        if let Err(e) = nats_subject(&self.subject, true) {
            out.push(("subject".into(), e));
        }
        if let Some(group) = &self.queue_group
            && (group.is_empty() || group.chars().any(char::is_whitespace))
        {
            out.push((
                "queue_group".into(),
                format!("must be a name without spaces, got {group:?}"),
            ));
        }
        out
    }
}

/// Pushes a problem if `url` is not an `amqp://` or `amqps://` URL. The URL is never repeated in the
/// message: it may hold a password.
pub(crate) fn amqp_url_problem(key: &'static str, url: &str, out: &mut Vec<(String, String)>) {
    if url.trim().is_empty() {
        out.push((
            key.into(),
            "must not be empty: `amqp://user:password@host:port/vhost`".into(),
        ));
        return;
    }
    if !(url.starts_with("amqp://") || url.starts_with("amqps://")) {
        out.push((
            key.into(),
            "must be an `amqp://` or `amqps://` URL: `amqp://user:password@host:port/vhost`".into(),
        ));
        return;
    }
    if let Err(e) = url.parse::<lapin::uri::AMQPUri>() {
        let e = if e.contains(url) {
            String::new()
        } else {
            format!(": {e}")
        };
        out.push((key.into(), format!("not a valid AMQP URL{e}")));
    }
}

/// Pushes a problem if `name` cannot be an AMQP queue or exchange name (at most 255 bytes; empty only
/// when `empty_ok`).
pub(crate) fn amqp_name_problem(
    key: &'static str,
    name: &str,
    empty_ok: bool,
    out: &mut Vec<(String, String)>,
) {
    if name.is_empty() && !empty_ok {
        out.push((key.into(), "must not be empty".into()));
    } else if name.len() > 255 {
        out.push((
            key.into(),
            format!("must be at most 255 bytes, got {}", name.len()),
        ));
    }
}

/// Pushes a problem if `url` is not one or more NATS server addresses separated by commas.
pub(crate) fn nats_url_problem(key: &'static str, url: &str, out: &mut Vec<(String, String)>) {
    if url.trim().is_empty() {
        out.push((key.into(), "must not be empty: `nats://host:port`".into()));
        return;
    }
    for part in url.split(',') {
        if let Err(e) = part.trim().parse::<async_nats::ServerAddr>() {
            out.push((key.into(), format!("not a NATS server URL: {e}")));
            return;
        }
    }
}

/// Checks a NATS subject: tokens separated by `.`, none empty, no whitespace; with `wildcards`, a
/// token may be `*`, and the last one `>`; without, neither may appear.
pub fn nats_subject(subject: &str, wildcards: bool) -> Result<(), String> {
    if subject.is_empty() {
        return Err("must not be empty".into());
    }
    if subject.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{subject:?} has a space or control character"));
    }
    let tokens: Vec<&str> = subject.split('.').collect();
    for (i, token) in tokens.iter().enumerate() {
        if token.is_empty() {
            return Err(format!(
                "`{subject}` has an empty token (a `.` at the start or end, or `..`)"
            ));
        }
        let wild = *token == "*" || *token == ">";
        if wild && !wildcards {
            return Err(format!(
                "`{subject}`: wildcards (`*`, `>`) cannot be published to"
            ));
        }
        if *token == ">" && i + 1 != tokens.len() {
            return Err(format!("`{subject}`: `>` must be the last token"));
        }
        if !wild && (token.contains('*') || token.contains('>')) && wildcards {
            return Err(format!(
                "`{subject}`: `*` and `>` must be whole tokens (`orders.*`, `orders.>`)"
            ));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------------
// Processors

/// Processors: what happens to each record on its way.
#[derive(Debug, Clone, PartialEq)]
pub enum ProcessorConfig {
    /// `type = "filter"`.
    Filter(FilterConfig),
    /// `type = "map"`.
    Map(MapConfig),
    /// `type = "validate"`.
    Validate(ValidateConfig),
    /// `type = "route"`.
    Route(RouteConfig),
}

impl ProcessorConfig {
    /// Every `type` a processor can have.
    pub const KINDS: &'static [&'static str] = &["filter", "map", "validate", "route"];

    /// The `type`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Filter(_) => "filter",
            Self::Map(_) => "map",
            Self::Validate(_) => "validate",
            Self::Route(_) => "route",
        }
    }
}

/// How `stop_words` are matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum MatchMode {
    /// Anywhere in the text (`mango` matches `mangos`).
    #[default]
    Substring,
    /// As a whole word: not preceded or followed by a letter, digit, `_` or `-`.
    Word,
}

/// `type = "filter"`: drops records whose `field` contains one of `stop_words`, or keeps only records for
/// which the jq predicate `jq` is true.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    /// The field searched for stop words (a dotted path: `message`, `payload.text`).
    #[serde(default)]
    pub field: Option<String>,
    /// Records whose field contains any of these are dropped.
    #[serde(default)]
    pub stop_words: Vec<String>,
    /// How stop words match.
    #[serde(default, rename = "match")]
    pub match_mode: MatchMode,
    /// Whether case matters.
    #[serde(default)]
    pub case_sensitive: bool,
    /// A jq predicate; records for which it is not `true` are dropped.
    #[serde(default)]
    pub jq: Option<String>,
}

/// `type = "map"`: changes each record. Applied in this order: `jq`, `rename`, `set`, `delete`,
/// `uppercase`, `lowercase`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MapConfig {
    /// A jq expression whose outputs replace the record (none: the record is dropped; several: one
    /// record each).
    #[serde(default)]
    pub jq: Option<String>,
    /// Fields renamed: `{ old = "new" }` (dotted paths).
    #[serde(default)]
    pub rename: BTreeMap<String, String>,
    /// Fields set to a value: `{ "meta.source" = "ferry" }`.
    #[serde(default)]
    pub set: BTreeMap<String, Value>,
    /// Fields removed.
    #[serde(default)]
    pub delete: Vec<String>,
    /// String fields upper-cased.
    #[serde(default)]
    pub uppercase: Vec<String>,
    /// String fields lower-cased.
    #[serde(default)]
    pub lowercase: Vec<String>,
}

/// `type = "validate"`: records that do not satisfy a JSON Schema go to `invalid_topic` with the errors in
/// the `ferry-validation-errors` header; valid ones go on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidateConfig {
    /// The schema, inline.
    #[serde(default)]
    pub schema: Option<Value>,
    /// The schema, from a file relative to the configuration file's directory.
    #[serde(default)]
    pub schema_file: Option<PathBuf>,
    /// Where invalid records go; default `<pipeline>.invalid`.
    #[serde(default)]
    pub invalid_topic: Option<String>,
}

/// One route of a `route` processor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Where matching records go.
    pub topic: String,
    /// A jq predicate.
    pub jq: String,
}

/// `type = "route"`: each record goes to the topic of the first route whose predicate is true; records
/// no route matches go to `default`, or on down the pipeline when there is none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// The routes, tried in order.
    pub routes: Vec<Route>,
    /// Where records no route matches go.
    #[serde(default)]
    pub default: Option<String>,
}

// ---------------------------------------------------------------------------------------------------
// Sinks

/// Sinks: where records end up.
#[derive(Debug, Clone, PartialEq)]
pub enum SinkConfig {
    /// `type = "email"`.
    Email(EmailSinkConfig),
    /// `type = "file"`.
    File(FileSinkConfig),
    /// `type = "object_store"`.
    ObjectStore(ObjectStoreSinkConfig),
    /// `type = "http"`.
    Http(HttpSinkConfig),
    /// `type = "topic"`.
    Topic(TopicSinkConfig),
    /// `type = "stdout"`.
    Stdout(StdoutSinkConfig),
    /// `type = "rabbitmq"`.
    RabbitMq(RabbitMqSinkConfig),
    /// `type = "nats"`.
    Nats(NatsSinkConfig),
}

impl SinkConfig {
    /// Every `type` a sink can have.
    pub const KINDS: &'static [&'static str] = &[
        "email",
        "file",
        "object_store",
        "http",
        "topic",
        "stdout",
        "rabbitmq",
        "nats",
    ];

    /// The `type`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Email(_) => "email",
            Self::File(_) => "file",
            Self::ObjectStore(_) => "object_store",
            Self::Http(_) => "http",
            Self::Topic(_) => "topic",
            Self::Stdout(_) => "stdout",
            Self::RabbitMq(_) => "rabbitmq",
            Self::Nats(_) => "nats",
        }
    }
}

/// How the `email` sink secures its SMTP connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS (required); default port 587.
    #[default]
    Starttls,
    /// TLS from the first byte (SMTPS); default port 465.
    Tls,
    /// No encryption (a relay on loopback, a test server); default port 25.
    None,
}

/// `type = "email"`: one e-mail per record over SMTP (lettre); with no `host`, RFC 5322 `.eml` files in
/// `outbox` instead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailSinkConfig {
    /// SMTP server; without one, messages are written to `outbox`.
    #[serde(default)]
    pub host: Option<String>,
    /// SMTP port; default by `tls`: 587, 465 or 25.
    #[serde(default)]
    pub port: Option<u16>,
    /// Connection security.
    #[serde(default)]
    pub tls: SmtpTls,
    /// SMTP user name.
    #[serde(default)]
    pub username: Option<String>,
    /// The environment variable that holds the SMTP password (never the password itself).
    #[serde(default)]
    pub password_env: Option<String>,
    /// A file that holds the SMTP password.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Sender address (`Name <addr>` or `addr`).
    pub from: String,
    /// Recipients.
    pub to: Vec<String>,
    /// Subject template: `{field}` is replaced by the record's field.
    #[serde(default = "default_subject")]
    pub subject: String,
    /// Body template.
    #[serde(default = "default_body")]
    pub body: String,
    /// Directory of `.eml` files when there is no `host`; relative to the data directory.
    #[serde(default = "default_outbox")]
    pub outbox: PathBuf,
    /// Longest an SMTP exchange may take.
    #[serde(default = "default_smtp_timeout")]
    pub timeout: Span,
}

fn default_subject() -> String {
    "ferry".into()
}

fn default_body() -> String {
    "{.}".into()
}

fn default_outbox() -> PathBuf {
    PathBuf::from("outbox")
}

fn default_smtp_timeout() -> Span {
    Span::secs(30)
}

/// `type = "file"`: JSON Lines appended to a file, flushed to disk before records are acked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSinkConfig {
    /// The file (created with its directory if missing); relative to the working directory.
    pub path: PathBuf,
    /// Rotate when the file would pass this size: it is renamed to `<path>.<n>` and a new one started.
    #[serde(default)]
    pub rotate_bytes: Option<u64>,
    /// `fsync` before acking (off: flushed to the OS only).
    #[serde(default = "yes")]
    pub fsync: bool,
}

fn yes() -> bool {
    true
}

/// `type = "object_store"`: records batched into objects (JSON Lines, optionally gzip) in a local
/// directory or an S3 bucket; a batch is closed by age or size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectStoreSinkConfig {
    /// Where objects go: `s3://bucket[/prefix]`, or `file:///abs/dir`; default a local directory,
    /// `archive` under the data directory. S3 credentials, region and endpoint come from the
    /// environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT_URL`).
    #[serde(default)]
    pub url: Option<String>,
    /// Object key template: `{date}` (`YYYY-MM-DD`, UTC, of the batch's first record), `{hour}`,
    /// `{partition}`, `{first_offset}`, `{last_offset}`, `{topic}`; `.gz` is appended with `gzip`.
    #[serde(default = "default_key")]
    pub key: String,
    /// A batch is written this long after its first record arrived.
    #[serde(default = "default_max_age")]
    pub max_age: Span,
    /// ... or once it holds this many bytes.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
    /// Compress objects with gzip.
    #[serde(default)]
    pub gzip: bool,
    /// S3 endpoint (an S3-compatible server); overrides `AWS_ENDPOINT_URL`.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// S3 region; overrides `AWS_REGION`.
    #[serde(default)]
    pub region: Option<String>,
}

fn default_key() -> String {
    "landing_date={date}/{first_offset}.jsonl".into()
}

fn default_max_age() -> Span {
    Span::secs(60)
}

fn default_max_bytes() -> u64 {
    5 * 1024 * 1024
}

/// `type = "http"`: each record POSTed as JSON to a webhook; a 2xx answer confirms it, anything else is
/// retried.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSinkConfig {
    /// The URL.
    pub url: String,
    /// `POST` or `PUT`.
    #[serde(default = "default_method")]
    pub method: String,
    /// Extra headers; a value `env:NAME` is read from the environment variable NAME.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Longest a request may take.
    #[serde(default = "default_http_timeout")]
    pub timeout: Span,
}

fn default_method() -> String {
    "POST".into()
}

fn default_http_timeout() -> Span {
    Span::secs(10)
}

/// `type = "topic"`: records published to a topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicSinkConfig {
    /// The topic (created if missing).
    pub topic: String,
    /// Key template (`{customer_id}`); none: no key.
    #[serde(default)]
    pub key: Option<String>,
}

/// `type = "stdout"`: one JSON line per record on standard output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct StdoutSinkConfig {}

/// `type = "rabbitmq"`: each record published to a RabbitMQ exchange as JSON, confirmed by RabbitMQ
/// (publisher confirms) before it is acked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RabbitMqSinkConfig {
    /// `amqp://user:password@host:port/vhost` (or `amqps://`).
    pub url: String,
    /// The exchange published to; `""` is the default exchange, which routes to the queue named by the
    /// routing key. Must exist.
    #[serde(default)]
    pub exchange: String,
    /// Routing key template over the record's fields (`orders.{region}`).
    pub routing_key: String,
    /// A queue to declare (and, with a named `exchange`, bind with `routing_key`) before publishing,
    /// so that records are kept for a consumer that starts later.
    #[serde(default)]
    pub queue: Option<String>,
    /// Declare `queue` durable.
    #[serde(default = "yes")]
    pub durable: bool,
}

/// `type = "nats"`: each record published to a NATS subject as JSON: core NATS (flushed) or JetStream
/// (stored, acknowledged).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsSinkConfig {
    /// `nats://host:port` (several separated by commas).
    pub url: String,
    /// Subject template over the record's fields (`orders.{region}`); no wildcards.
    pub subject: String,
    /// Publish to JetStream and wait for its acknowledgement (a stream must capture the subject);
    /// `false`: core NATS, flushed to the server.
    #[serde(default)]
    pub jetstream: bool,
}

/// Pushes a problem if `value` is not a valid topic name.
pub(crate) fn name_problem(key: &'static str, value: &str, out: &mut Vec<(String, String)>) {
    if let Err(e) = ferry_broker::validate_name(key, value) {
        out.push((key.into(), e.to_string()));
    }
}
