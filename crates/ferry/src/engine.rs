//! Connecting to the engine of `[engine]`: NATS JetStream or RabbitMQ (the embedded broker is opened by
//! `ferry up` itself).

use std::sync::Arc;

use anyhow::Context;
use ferry_broker::engine::{Engine as _, EngineError, SharedEngine};

use crate::config::{Config, EngineConfig};

/// Connects to the engine `config` names; `None` for the embedded one.
///
/// # Errors
/// The engine cannot be reached: the message names `[engine]` and the URL.
pub async fn connect(config: &EngineConfig) -> anyhow::Result<Option<SharedEngine>> {
    Ok(match config {
        EngineConfig::Embedded => None,
        EngineConfig::Nats { url } => Some(Arc::new(
            ferry_engines::nats::JetStream::connect(url)
                .await
                .with_context(|| format!("[engine] nats: cannot connect to {}", redact(url)))?,
        )),
        EngineConfig::Rabbitmq { url } => Some(Arc::new(
            ferry_engines::rabbitmq::RabbitMq::connect(url)
                .await
                .with_context(|| format!("[engine] rabbitmq: cannot connect to {}", redact(url)))?,
        )),
    })
}

/// `engine` with ferry's policies applied on top (`ferry_broker::engine_policies`): the groups of
/// `[subscriptions]` made, their filter policies applied by ferry (engines other than the embedded one
/// cannot filter JSON bodies the SNS way), and queue groups dead-lettered after `max_deliveries`.
///
/// # Errors
/// A stream subscription on an engine without stream groups (RabbitMQ), a bad filter policy, the
/// engine refusing a topic or group.
pub async fn with_subscriptions(engine: SharedEngine, config: &Config) -> anyhow::Result<SharedEngine> {
    let name = config.engine.name();
    let filtered = ferry_broker::engine_policies::Policies::new(engine);
    for (sub, s) in &config.subscriptions {
        let at = || format!("subscriptions.{sub}");
        if s.queue.delivery_delay_ms != 0 {
            anyhow::bail!(
                "{}: queue.delivery_delay_ms is not supported on the {name} engine (docs/engines.md)",
                at()
            );
        }
        filtered.ensure_topic(&s.topic).await.with_context(at)?;
        match filtered.declare(&s.topic, sub, s.spec()).await {
            Err(EngineError::Unsupported { .. }) => anyhow::bail!(
                "{}: kind = \"stream\" needs stream groups, which the {name} engine does not have \
                 (docs/engines.md); use \"queue\"",
                at()
            ),
            Err(EngineError::Broker(ferry_broker::BrokerError::QueueExists { .. })) => anyhow::bail!(
                "{}: the subscription exists on the {name} engine with other settings; delete it \
                 (ferry subscriptions delete) to make it anew",
                at()
            ),
            done => {
                done.with_context(at)?;
            }
        }
    }
    Ok(Arc::new(filtered))
}

/// `url` without its password, for messages and logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                // A lone token is a secret too.
                None => format!("{}***{}", &url[..scheme + 3], &url[at..]),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_not_shown() {
        assert_eq!(
            redact("amqp://guest:secret@127.0.0.1:5672/%2f"),
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
        assert_eq!(redact("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
        assert_eq!(redact("nats://token@host:1"), "nats://***@host:1");
    }
}
