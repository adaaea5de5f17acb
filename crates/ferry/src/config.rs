//! `ferry.toml`: the configuration file of `ferry up`.
//!
//! ```toml
//! [server]
//! listen = "127.0.0.1:5555"     # FERRY_LISTEN, --listen
//! data_dir = "ferry-data"       # FERRY_DATA_DIR, --data-dir
//! tokens_file = "/run/secrets/ferry-tokens"            # FERRY_TOKENS or FERRY_TOKENS_FILE
//! read_tokens_file = "/run/secrets/ferry-read-tokens"  # FERRY_READ_TOKENS or FERRY_READ_TOKENS_FILE
//!
//! [topics.orders]               # created at start-up if missing; every key of a topic is optional
//! partitions = 4
//! fsync = "always"              # always | interval:<ms> | never
//! retention_ms = 604800000
//! ```
//!
//! Unknown keys are errors, reported with the line and column of the key. A flag or its environment
//! variable overrides the file; the file overrides the defaults.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use ferry_broker::TopicConfig;
use serde::Deserialize;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the server listens and keeps its data.
    pub server: ServerConfig,
    /// Topics that must exist, by name.
    pub topics: BTreeMap<String, TopicConfig>,
}

/// `[server]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// HTTP listen address.
    pub listen: SocketAddr,
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
            data_dir: PathBuf::from("ferry-data"),
            tokens_file: None,
            read_tokens_file: None,
        }
    }
}

impl Config {
    /// Reads and parses `path`.
    ///
    /// # Errors
    /// The file cannot be read, or does not parse (the message names the file, line, column and key).
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("config file `{}`", path.display()))?;
        Self::parse(&text).with_context(|| format!("config file `{}`", path.display()))
    }

    /// Parses the text of a configuration file.
    ///
    /// # Errors
    /// What does not parse, with line, column and key.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let config: Self = toml::from_str(text)?;
        for (name, topic) in &config.topics {
            topic
                .validate()
                .map_err(|e| anyhow::anyhow!("[topics.{name}] {e}"))?;
        }
        Ok(config)
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
        assert!(format!("{e:#}").contains("[topics.t] partitions"), "{e:#}");
        let e = Config::parse("[server]\nlisten = \"nowhere\"\n").unwrap_err();
        assert!(format!("{e:#}").contains("line 2"), "{e:#}");
    }
}
