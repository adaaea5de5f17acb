//! Sinks, registered here: [`validate`] (pure) and [`build`] dispatch on the config's variant.

pub mod email;
pub mod file;
pub mod http;
pub mod nats;
pub mod object_store;
pub mod rabbitmq;
pub mod stdout;
pub mod topic;

use crate::component::{BuildContext, Sink};
use crate::config::SinkConfig;

/// Problems of a sink's settings, each with its key; no I/O.
pub fn validate(config: &SinkConfig) -> Vec<(String, String)> {
    match config {
        SinkConfig::Email(c) => email::validate(c),
        SinkConfig::File(c) => file::validate(c),
        SinkConfig::ObjectStore(c) => object_store::validate(c),
        SinkConfig::Http(c) => http::validate(c),
        SinkConfig::Topic(c) => topic::validate(c),
        SinkConfig::Stdout(_) => Vec::new(),
        SinkConfig::RabbitMq(c) => rabbitmq::validate(c),
        SinkConfig::Nats(c) => nats::validate(c),
    }
}

/// Builds a sink (may open files, read secrets, make clients; does not connect to servers).
///
/// # Errors
/// What could not be set up, naming the key.
pub fn build(config: &SinkConfig, ctx: &BuildContext) -> anyhow::Result<Box<dyn Sink>> {
    Ok(match config {
        SinkConfig::Email(c) => Box::new(email::EmailSink::new(c, ctx)?),
        SinkConfig::File(c) => Box::new(file::FileSink::new(c, ctx)?),
        SinkConfig::ObjectStore(c) => Box::new(object_store::ObjectStoreSink::new(c, ctx)?),
        SinkConfig::Http(c) => Box::new(http::HttpSink::new(c, ctx)?),
        SinkConfig::Topic(c) => Box::new(topic::TopicSink::new(c, ctx)?),
        SinkConfig::Stdout(_) => Box::new(stdout::StdoutSink::default()),
        SinkConfig::RabbitMq(c) => Box::new(rabbitmq::RabbitMqSink::new(c, ctx)?),
        SinkConfig::Nats(c) => Box::new(nats::NatsSink::new(c, ctx)?),
    })
}
