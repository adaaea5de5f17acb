//! Connecting to the engine of `[engine]`: NATS JetStream or RabbitMQ (the embedded broker is opened by
//! `ferry up` itself).

use std::sync::Arc;

use anyhow::Context;
use ferry_broker::engine::SharedEngine;

use crate::config::EngineConfig;

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
