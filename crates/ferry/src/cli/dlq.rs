//! `ferry dlq replay --pipeline P`: sends the dead letters of a pipeline back to where they failed.
//!
//! Each record of `<P>.dlq` is published to the topic named in its `ferry-topic` header, with its
//! original headers and a `ferry-replay-stage` header naming the stage that failed (only that stage
//! processes it; other readers of the topic skip it), then acked in the queue group `ferry-dlq-replay`.
//! A record that fails again is dead-lettered again.

use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use ferry_client::ProduceRecord;

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
    },
}

/// The queue group replays read the dead-letter topic as.
pub const REPLAY_GROUP: &str = "ferry-dlq-replay";

/// Runs the subcommand.
///
/// # Errors
/// The server refusing or unreachable; a dead letter without a `ferry-topic` header.
pub fn run(args: DlqArgs) -> anyhow::Result<()> {
    let DlqCommand::Replay { pipeline, max } = args.command;
    remote::run(&args.conn, |client| async move {
        let dlq = ferry_pipeline::runtime::dlq_topic(&pipeline);
        let consumer = client.queue_consumer(REPLAY_GROUP, &dlq);
        let mut replayed = 0u64;
        loop {
            let want = max.map_or(100, |m| m.saturating_sub(replayed).min(100)) as usize;
            if want == 0 {
                break;
            }
            let batch = consumer
                .receive(want, Duration::from_millis(500), None)
                .await
                .with_context(|| format!("reading `{dlq}`"))?;
            if batch.is_empty() {
                break;
            }
            for d in &batch {
                let header = |name: &str| {
                    d.header(name)
                        .and_then(|v| std::str::from_utf8(v).ok())
                        .map(str::to_owned)
                };
                let topic = header(ferry_pipeline::event::headers::TOPIC).with_context(|| {
                    format!(
                        "`{dlq}` record {}/{} has no ferry-topic header",
                        d.partition, d.offset
                    )
                })?;
                let stage = header(ferry_pipeline::event::headers::STAGE).unwrap_or_default();
                let mut record = ProduceRecord::json_bytes(d.value.clone())
                    .or_else(|_| std::str::from_utf8(&d.value).map(ProduceRecord::text))
                    .map_err(|_| anyhow::anyhow!("record {}/{}: not UTF-8", d.partition, d.offset))?;
                if let Some(k) = d.key.as_ref().and_then(|k| std::str::from_utf8(k).ok()) {
                    record = record.key(k);
                }
                for (k, v) in &d.headers {
                    if ferry_pipeline::event::headers::is_runtime(k) {
                        continue;
                    }
                    if let Ok(v) = std::str::from_utf8(v) {
                        record = record.header(k.clone(), v);
                    }
                }
                record = record.header(ferry_pipeline::event::headers::REPLAY_STAGE, stage);
                client
                    .publish(&topic, std::slice::from_ref(&record))
                    .await
                    .with_context(|| format!("publishing to `{topic}`"))?;
                consumer.ack(std::slice::from_ref(d)).await?;
                replayed += 1;
            }
        }
        remote::print_json_line(&serde_json::json!({ "replayed": replayed }))
    })
}
