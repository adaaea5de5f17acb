//! `ferry dlq replay --pipeline P`: sends the dead letters of a pipeline back to where they failed.
//!
//! Each record of `<P>.dlq` is published to the topic named in its `ferry-topic` header, with its
//! original headers and a `ferry-replay-stage` header naming the stage that failed (only that stage
//! processes it; other readers of the topic skip it), then acked in the queue group `ferry-dlq-replay`.
//! A record that fails again is dead-lettered again. It works on the engine of `--config FILE` when that
//! names one (`[engine]` nats or rabbitmq), else on the ferry server at `--url`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use ferry_pipeline::bus::{GroupSettings, OutRecord, RemoteBus, SharedBus};
use ferry_pipeline::event::headers;

use crate::cli::remote::{self, ConnectArgs};

/// `ferry dlq ...`.
#[derive(Debug, Args)]
pub struct DlqArgs {
    #[command(subcommand)]
    command: DlqCommand,
    #[command(flatten)]
    conn: ConnectArgs,
}

#[derive(Debug, Subcommand)]
enum DlqCommand {
    /// Send the pipeline's dead letters back to the stage that failed; prints {"replayed": N}.
    Replay {
        /// The pipeline.
        #[arg(long, value_name = "P")]
        pipeline: String,
        /// Replay at most this many.
        #[arg(long, value_name = "N")]
        max: Option<u64>,
        /// The configuration file: with `[engine]` nats or rabbitmq, replay on that engine directly.
        #[arg(long, env = "FERRY_CONFIG", value_name = "FILE")]
        config: Option<PathBuf>,
    },
}

// The queue group replays read the dead-letter topic as; every pipeline makes it when it starts.
use ferry_pipeline::runtime::DLQ_REPLAY_GROUP as REPLAY_GROUP;

/// Runs the subcommand.
///
/// # Errors
/// The server or engine refusing or unreachable; a dead letter without a `ferry-topic` header.
pub fn run(args: DlqArgs) -> anyhow::Result<()> {
    let DlqCommand::Replay {
        pipeline,
        max,
        config,
    } = args.command;
    let engine = match &config {
        Some(path) => crate::config::Config::load(path)?.engine,
        None => crate::config::EngineConfig::Embedded,
    };
    remote::run(&args.conn, |client| async move {
        let bus: SharedBus = match crate::engine::connect(&engine).await? {
            Some(engine) => engine,
            None => Arc::new(RemoteBus(client)),
        };
        let replayed = replay(bus.as_ref(), &pipeline, max).await?;
        remote::print_json_line(&serde_json::json!({ "replayed": replayed }))
    })
}

/// Replays up to `max` dead letters of `pipeline` (all there are when `None`); returns how many.
async fn replay(bus: &dyn ferry_pipeline::Bus, pipeline: &str, max: Option<u64>) -> anyhow::Result<u64> {
    let dlq = ferry_pipeline::runtime::dlq_topic(pipeline);
    bus.ensure_group(REPLAY_GROUP, &dlq, GroupSettings::default())
        .await
        .with_context(|| format!("reading `{dlq}`"))?;
    let mut replayed = 0u64;
    loop {
        let want = max.map_or(100, |m| m.saturating_sub(replayed).min(100)) as usize;
        if want == 0 {
            return Ok(replayed);
        }
        let batch = bus
            .receive(REPLAY_GROUP, &dlq, want, Duration::from_millis(500))
            .await
            .with_context(|| format!("reading `{dlq}`"))?;
        if batch.is_empty() {
            return Ok(replayed);
        }
        for d in &batch {
            let header = |name: &str| d.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
            let topic = header(headers::TOPIC).with_context(|| {
                format!(
                    "`{dlq}` record {}/{} has no ferry-topic header",
                    d.partition, d.offset
                )
            })?;
            let stage = header(headers::STAGE).unwrap_or_default();
            let mut out_headers: Vec<(String, String)> = d
                .headers
                .iter()
                .filter(|(k, _)| !headers::is_runtime(k))
                .cloned()
                .collect();
            out_headers.push((headers::REPLAY_STAGE.to_owned(), stage));
            let record = OutRecord {
                key: d.key.clone(),
                headers: out_headers,
                value: d.value.clone(),
            };
            bus.publish(&topic, vec![record])
                .await
                .with_context(|| format!("publishing to `{topic}`"))?;
            bus.ack(REPLAY_GROUP, &dlq, &[d.id()]).await?;
            replayed += 1;
        }
    }
}
