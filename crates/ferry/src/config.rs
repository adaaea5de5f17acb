//! `ferry.toml`: the configuration file of `ferry up`, `ferry run` and `ferry check`.
//!
//! ```toml
//! [server]
//! listen = "127.0.0.1:5555"     # FERRY_LISTEN, --listen
//! wire_listen = "127.0.0.1:5556"  # FERRY_WIRE_LISTEN, --wire-listen: the binary protocol (default off)
//! data_dir = "ferry-data"       # FERRY_DATA_DIR, --data-dir
//! tokens_file = "/run/secrets/ferry-tokens"            # FERRY_TOKENS or FERRY_TOKENS_FILE
//! read_tokens_file = "/run/secrets/ferry-read-tokens"  # FERRY_READ_TOKENS or FERRY_READ_TOKENS_FILE
//!
//! [engine]                      # where records live: embedded (default), or one of
//! nats = { url = "nats://127.0.0.1:4222" }            # NATS JetStream
//! # rabbitmq = { url = "amqp://guest:guest@127.0.0.1:5672/%2f" }
//!
//! [topics.orders]               # created at start-up if missing; every key of a topic is optional
//! partitions = 4
//! fsync = "always"              # always | interval:<ms> | never
//! retention_ms = 604800000
//!
//! [subscriptions.orders-api]    # created at start-up if missing (a queue group behind a filter)
//! topic = "orders"
//! kind = "queue"                # queue | stream
//! filter_policy = { region = ["eu"] }
//! queue = { visibility_timeout_ms = 30000, max_deliveries = 5 }
//!
//! [pipelines.NAME]              # see the pipeline crate and the README's reference
//! ```
//!
//! `${VAR}` and `${VAR:-default}` are replaced by environment variables (and `.env`, read at start) before
//! parsing. Unknown keys are errors. Every problem of the file is reported at once, each with its line,
//! column and key. A flag or its environment variable overrides the file; the file overrides defaults.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use ferry_broker::{FilterScope, QueueConfig, SubscriptionKind, SubscriptionSpec, TopicConfig};
use ferry_pipeline::check::{Checker, Diagnostic};
use ferry_pipeline::config::PipelineConfig;
use serde::Deserialize;
use toml::de::{DeTable, DeValue};

/// The whole file.
#[derive(Debug, Default)]
pub struct Config {
    /// Where the server listens and keeps its data.
    pub server: ServerConfig,
    /// Where records live.
    pub engine: EngineConfig,
    /// Topics that must exist, by name.
    pub topics: BTreeMap<String, TopicConfig>,
    /// Subscriptions that must exist, by name.
    pub subscriptions: BTreeMap<String, SubscriptionConfig>,
    /// Pipelines, in file order.
    pub pipelines: Vec<PipelineConfig>,
    /// The directory of the file: paths in pipelines are relative to it.
    pub dir: PathBuf,
}

/// `[engine]`: the embedded broker (the default), NATS JetStream or RabbitMQ. Written as
/// `engine = "embedded"`, or `[engine]` with one of `nats = { url = ".." }`, `rabbitmq = { url = ".." }`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum EngineConfig {
    /// The log in `server.data_dir`.
    #[default]
    Embedded,
    /// NATS JetStream.
    Nats {
        /// `nats://host:port`.
        url: String,
    },
    /// RabbitMQ.
    Rabbitmq {
        /// `amqp://user:password@host:port/vhost`.
        url: String,
    },
}

impl EngineConfig {
    /// `embedded`, `nats` or `rabbitmq`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Embedded => "embedded",
            Self::Nats { .. } => "nats",
            Self::Rabbitmq { .. } => "rabbitmq",
        }
    }
}

/// `[server]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// HTTP listen address.
    pub listen: SocketAddr,
    /// Where the wire protocol (`docs/protocol.md`) listens; none: it is off.
    pub wire_listen: Option<SocketAddr>,
    /// Data directory (topics, metadata), created if missing.
    pub data_dir: PathBuf,
    /// File of read-write bearer tokens, one per line (tokens themselves never go in this file).
    pub tokens_file: Option<PathBuf>,
    /// File of read-only bearer tokens, one per line.
    pub read_tokens_file: Option<PathBuf>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 5555)),
            wire_listen: None,
            data_dir: PathBuf::from("ferry-data"),
            tokens_file: None,
            read_tokens_file: None,
        }
    }
}

/// `[subscriptions.NAME]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionConfig {
    /// The topic subscribed to.
    pub topic: String,
    /// Queue or stream group.
    #[serde(default)]
    pub kind: SubscriptionKind,
    /// SNS filter policy.
    #[serde(default)]
    pub filter_policy: Option<serde_json::Value>,
    /// Whether the policy looks at the body or the headers.
    #[serde(default)]
    pub filter_scope: FilterScope,
    /// Settings of the queue group.
    #[serde(default)]
    pub queue: QueueConfig,
}

impl SubscriptionConfig {
    /// As the broker takes it.
    pub fn spec(&self) -> SubscriptionSpec {
        SubscriptionSpec {
            kind: self.kind,
            filter_policy: self.filter_policy.clone(),
            filter_scope: self.filter_scope,
            queue: self.queue.clone(),
        }
    }
}

/// The problems of a file, printable as one error.
#[derive(Debug)]
pub struct Problems {
    /// The file.
    pub file: String,
    /// Its problems, in file order.
    pub diagnostics: Vec<Diagnostic>,
}

impl std::fmt::Display for Problems {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.diagnostics.len();
        write!(
            f,
            "config file `{}`: {n} problem{}",
            self.file,
            if n == 1 { "" } else { "s" }
        )?;
        for d in &self.diagnostics {
            write!(f, "\n  {}:{d}", self.file)?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

impl Config {
    /// Reads and parses `path`, with `${VAR}`s from the environment.
    ///
    /// # Errors
    /// The file cannot be read, or has problems ([`Problems`]: every one, with line, column and key).
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("config file `{}`: {e}", path.display()))?;
        let mut config =
            Self::parse_env(&text, |n| std::env::var(n).ok()).map_err(|diagnostics| Problems {
                file: path.display().to_string(),
                diagnostics,
            })?;
        config.dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        Ok(config)
    }

    /// Parses the text of a configuration file with variables from the process environment.
    ///
    /// # Errors
    /// Every problem, as one message.
    #[cfg(test)]
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        Self::parse_env(text, |n| std::env::var(n).ok()).map_err(|diagnostics| {
            Problems {
                file: "<text>".into(),
                diagnostics,
            }
            .into()
        })
    }

    /// Parses `text` with `${VAR}`s from `env`.
    ///
    /// # Errors
    /// Every problem of the text, in order.
    pub fn parse_env(text: &str, env: impl Fn(&str) -> Option<String>) -> Result<Self, Vec<Diagnostic>> {
        let text = ferry_pipeline::check::interpolate(text, env)?;
        let mut checker = Checker::new(&text);
        let doc = match DeTable::parse(&text) {
            Ok(d) => d,
            Err(e) => {
                checker.report("", e.span().unwrap_or(0..0), e.message().trim().to_owned());
                return Err(checker.into_diagnostics());
            }
        };
        let mut config = Self::default();
        for (k, v) in doc.get_ref() {
            let key = k.get_ref().as_ref();
            match key {
                "server" => {
                    if let Some(s) = checker.de::<ServerConfig>("server", v) {
                        config.server = s;
                    }
                }
                "engine" => {
                    if let Some(e) = checker.de::<EngineConfig>("engine", v) {
                        config.engine = e;
                    }
                }
                "topics" => {
                    for (name, t) in tables(&mut checker, "topics", v) {
                        let tkey = format!("topics.{name}");
                        if let Some(topic) = checker.de::<TopicConfig>(&tkey, &t) {
                            match topic.validate() {
                                Ok(()) => {
                                    config.topics.insert(name, topic);
                                }
                                Err(e) => checker.report(&tkey, t.span(), e.to_string()),
                            }
                        }
                    }
                }
                "subscriptions" => {
                    for (name, s) in tables(&mut checker, "subscriptions", v) {
                        let skey = format!("subscriptions.{name}");
                        if let Some(sub) = checker.de::<SubscriptionConfig>(&skey, &s) {
                            if let Err(e) = sub.queue.validate() {
                                checker.report(&skey, s.span(), e.to_string());
                            }
                            config.subscriptions.insert(name, sub);
                        }
                    }
                }
                "pipelines" => config.pipelines = ferry_pipeline::check::pipelines(&mut checker, v),
                other => checker.report(
                    other,
                    k.span(),
                    format!(
                        "unknown key `{other}`, expected one of `server`, `engine`, `topics`, `subscriptions`, \
                         `pipelines`"
                    ),
                ),
            }
        }
        if checker.is_clean() {
            Ok(config)
        } else {
            Err(checker.into_diagnostics())
        }
    }

    /// One line per pipeline: its stages and topics (for `ferry check`).
    pub fn summary(&self) -> String {
        let mut out = String::new();
        for p in &self.pipelines {
            let stages: Vec<String> = ferry_pipeline::runtime::plan(p)
                .iter()
                .map(|s| match (&s.input, &s.output) {
                    (None, Some(o)) => format!("{} -> {o}", s.name),
                    (Some(i), Some(o)) => format!("{i} -> {} -> {o}", s.name),
                    (Some(i), None) => format!("{i} -> {}", s.name),
                    (None, None) => s.name.clone(),
                })
                .collect();
            let _ = writeln!(out, "pipeline {}: {}", p.name, stages.join(", "));
        }
        out
    }
}

/// The sub-tables of `[name]`, each with its name.
fn tables<'i>(
    checker: &mut Checker<'_>,
    name: &str,
    v: &toml::Spanned<DeValue<'i>>,
) -> Vec<(String, toml::Spanned<DeValue<'i>>)> {
    match v.get_ref() {
        DeValue::Table(t) => t
            .iter()
            .map(|(k, v)| (k.get_ref().to_string(), v.clone()))
            .collect(),
        _ => {
            checker.report(name, v.span(), format!("must be a table: [{name}.NAME]"));
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_topics() {
        let c = Config::parse("[topics.orders]\npartitions = 4\nfsync = \"interval:100\"\n").unwrap();
        assert_eq!(c.server.listen.port(), 5555);
        assert_eq!(c.server.data_dir, PathBuf::from("ferry-data"));
        assert_eq!(c.topics["orders"].partitions, 4);
        assert_eq!(c.topics["orders"].fsync.to_string(), "interval:100");
    }

    #[test]
    fn unknown_keys_are_named_with_their_line() {
        let e = Config::parse("[server]\nlisten = \"127.0.0.1:1\"\nport = 3\n").unwrap_err();
        let msg = format!("{e:#}");
        assert!(msg.contains("line 3"), "{msg}");
        assert!(msg.contains("port"), "{msg}");
        let e = Config::parse("[topics.t]\npartitions = 0\n").unwrap_err();
        assert!(format!("{e:#}").contains("`topics.t`: partitions"), "{e:#}");
        let e = Config::parse("[server]\nlisten = \"nowhere\"\n").unwrap_err();
        assert!(format!("{e:#}").contains("line 2"), "{e:#}");
    }

    #[test]
    fn every_problem_of_the_file_at_once() {
        let text = "[server]\nlistn = \"x\"\n[topics.a]\npartitions = 0\n[subscriptions.s]\ntopic = \"a\"\nkind = \"fanout\"\n[pipelines.p]\nsource = { type = \"nope\" }\n";
        let d = Config::parse_env(text, |_| None).unwrap_err();
        let lines: Vec<usize> = d.iter().map(|d| d.line).collect();
        assert_eq!(lines, [2, 3, 7, 9], "{d:#?}");
    }

    #[test]
    fn variables_are_interpolated() {
        let c = Config::parse_env("[server]\nlisten = \"127.0.0.1:${PORT:-4444}\"\n", |_| None).unwrap();
        assert_eq!(c.server.listen.port(), 4444);
        let c = Config::parse_env("[server]\nlisten = \"127.0.0.1:${PORT:-4444}\"\n", |n| {
            (n == "PORT").then(|| "5000".into())
        })
        .unwrap();
        assert_eq!(c.server.listen.port(), 5000);
    }

    #[test]
    fn the_engine_is_embedded_unless_named() {
        assert_eq!(Config::parse("").unwrap().engine, EngineConfig::Embedded);
        assert_eq!(
            Config::parse("engine = \"embedded\"\n").unwrap().engine,
            EngineConfig::Embedded
        );
        let c = Config::parse("[engine]\nnats = { url = \"nats://127.0.0.1:4222\" }\n").unwrap();
        assert_eq!(
            c.engine,
            EngineConfig::Nats {
                url: "nats://127.0.0.1:4222".into()
            }
        );
        let c = Config::parse("[engine]\nrabbitmq = { url = \"amqp://h/%2f\" }\n").unwrap();
        assert_eq!(c.engine.name(), "rabbitmq");
        let e = Config::parse("[engine]\nkafka = { url = \"k\" }\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("line 2") && e.contains("engine") && e.contains("kafka"),
            "{e}"
        );
        let e = Config::parse("[engine]\nnats = { url = \"n\", user = \"u\" }\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("user"), "{e}");
    }
}
