//! `ferry queue ...`: queue groups (SQS-like): receive records under a lease, ack or nack them, create a
//! group with settings, look at its depth.

use std::io::{self, BufWriter, Write};
use std::time::Duration;

use anyhow::Result;
use clap::{Args, Subcommand};
use ferry_client::{QueueConfig, QueueConsumer, RecordId};

use crate::cli::json::JsonTopicRecord;
use crate::cli::remote::{self, ConnectArgs, name_flag, print_json_line, write_json_line};

/// `ferry queue [--url URL] [--token TOKEN] <command>`.
#[derive(Debug, Args)]
pub struct QueueArgs {
    #[command(flatten)]
    conn: ConnectArgs,

    #[command(subcommand)]
    command: QueueCommand,
}

/// The queue group a command works on.
#[derive(Debug, Args)]
struct GroupArgs {
    /// The topic.
    #[arg(long, value_name = "TOPIC")]
    topic: String,

    /// The queue group (a subscription of kind `queue` is the group of the same name).
    #[arg(long, value_name = "GROUP")]
    group: String,
}

/// The subcommands of `ferry queue`.
#[derive(Debug, Subcommand)]
enum QueueCommand {
    /// Lease records and print them as JSON lines: each record with "delivery_count" and
    /// "lease_expires_ms" (ms since the epoch).
    ///
    /// Leased records are invisible to other receivers of the group until acked, nacked, or their lease
    /// ends. A group that does not exist yet is created with the server's defaults.
    Receive(ReceiveArgs),
    /// Acknowledge leased records: they are never delivered again. Prints nothing.
    Ack(AckArgs),
    /// Give leased records back: delivered again (counting one more delivery) after --delay-ms.
    /// Prints nothing.
    Nack(NackArgs),
    /// Print the group's settings and state as JSON: {"group","topic","config","dead_letter_topic",
    /// "depth","in_flight"}.
    Info(GroupArgs),
    /// Create the group with settings (or confirm it has them); prints it as `info` does.
    Create(CreateArgs),
}

/// Arguments of `ferry queue receive`.
#[derive(Debug, Args)]
struct ReceiveArgs {
    #[command(flatten)]
    group: GroupArgs,

    /// Most records to receive; stops earlier when none is available.
    #[arg(long, value_name = "N", default_value_t = 10,
        value_parser = clap::value_parser!(u64).range(1..))]
    max: u64,

    /// Wait up to this long for a first record when none is available (at most 60000).
    #[arg(long, value_name = "MS", default_value_t = 0)]
    wait_ms: u64,

    /// Lease the records for this long instead of the group's visibility timeout.
    #[arg(long, value_name = "MS")]
    visibility_ms: Option<u64>,

    /// Acknowledge the records once printed (and flushed): nothing is left to ack or nack.
    #[arg(long)]
    ack: bool,
}

/// A record named `PARTITION:OFFSET`.
fn parse_record_id(s: &str) -> Result<RecordId, String> {
    let parsed = s
        .split_once(':')
        .and_then(|(p, o)| Some((p.parse::<u32>().ok()?, o.parse::<u64>().ok()?)));
    match parsed {
        Some((partition, offset)) => Ok(RecordId { partition, offset }),
        None => Err(format!("expected PARTITION:OFFSET (like `0:42`), got `{s}`")),
    }
}

/// Arguments of `ferry queue ack`.
#[derive(Debug, Args)]
struct AckArgs {
    #[command(flatten)]
    group: GroupArgs,

    /// The records, as printed by `receive` ("partition" and "offset"). All or none are acked: one not
    /// leased right now fails the command and changes nothing.
    #[arg(value_name = "PARTITION:OFFSET", required = true, value_parser = parse_record_id)]
    records: Vec<RecordId>,
}

/// Arguments of `ferry queue nack`.
#[derive(Debug, Args)]
struct NackArgs {
    #[command(flatten)]
    group: GroupArgs,

    /// Deliver the records again only after this long (0: at once).
    #[arg(long, value_name = "MS", default_value_t = 0)]
    delay_ms: u64,

    /// The records, as printed by `receive`. All or none are nacked.
    #[arg(value_name = "PARTITION:OFFSET", required = true, value_parser = parse_record_id)]
    records: Vec<RecordId>,
}

/// A queue group's settings; what is not given takes the server's default.
#[derive(Debug, Clone, Args)]
pub struct QueueSettings {
    /// How long a received record stays leased (invisible to other receivers) [server default: 30000].
    #[arg(long, value_name = "MS")]
    visibility_ms: Option<u64>,

    /// Deliveries after which an unacknowledged record moves to the dead-letter topic [server default: 5].
    #[arg(long, value_name = "N")]
    max_deliveries: Option<u32>,

    /// Most records leased at once across the group's receivers [server default: 1000].
    #[arg(long, value_name = "N")]
    max_in_flight: Option<u32>,

    /// Records become available this long after they were published [server default: 0].
    #[arg(long, value_name = "MS")]
    delivery_delay_ms: Option<u64>,

    /// Where dead letters go [server default: <topic>.<group>.dlq].
    #[arg(long, value_name = "TOPIC")]
    dead_letter_topic: Option<String>,
}

impl QueueSettings {
    /// The settings given, or `None` when no flag was.
    pub fn config(&self) -> Option<QueueConfig> {
        let config = QueueConfig {
            visibility_timeout_ms: self.visibility_ms,
            max_deliveries: self.max_deliveries,
            max_in_flight: self.max_in_flight,
            delivery_delay_ms: self.delivery_delay_ms,
            dead_letter_topic: self.dead_letter_topic.clone(),
            ..QueueConfig::default()
        };
        (config != QueueConfig::default()).then_some(config)
    }
}

/// The server's names of the queue settings, and the flags that set them.
pub const QUEUE_FLAGS: &[(&str, &str)] = &[
    ("visibility_timeout_ms", "--visibility-ms"),
    ("max_deliveries", "--max-deliveries"),
    ("max_in_flight", "--max-in-flight"),
    ("delivery_delay_ms", "--delivery-delay-ms"),
    ("dead_letter_topic", "--dead-letter-topic"),
];

/// Arguments of `ferry queue create`.
#[derive(Debug, Args)]
struct CreateArgs {
    #[command(flatten)]
    group: GroupArgs,

    #[command(flatten)]
    settings: QueueSettings,
}

/// Runs one `ferry queue` command.
///
/// # Errors
/// The server refused (an unknown topic or group, a record not leased, a setting out of range, naming
/// its flag) or did not answer.
pub fn run(args: QueueArgs) -> Result<()> {
    remote::run(&args.conn, |client| async move {
        let consumer = |g: &GroupArgs| client.queue_consumer(&g.group, &g.topic);
        match args.command {
            QueueCommand::Receive(r) => receive(&consumer(&r.group), &r).await,
            QueueCommand::Ack(a) => Ok(consumer(&a.group).ack(&a.records).await?),
            QueueCommand::Nack(n) => Ok(consumer(&n.group)
                .nack(&n.records, Duration::from_millis(n.delay_ms))
                .await
                .map_err(|e| name_flag(e, &[("delay_ms", "--delay-ms")]))?),
            QueueCommand::Info(g) => print_json_line(&consumer(&g).info().await?),
            QueueCommand::Create(c) => {
                let config = c.settings.config().unwrap_or_default();
                let info = consumer(&c.group)
                    .create(&config)
                    .await
                    .map_err(|e| name_flag(e, QUEUE_FLAGS))?;
                print_json_line(&info)
            }
        }
    })
}

/// Most records one receive may lease (the server's limit).
const MAX_RECEIVE: u64 = 1000;

/// Receives until `--max` records came or none is available; only the first receive waits.
async fn receive(consumer: &QueueConsumer, args: &ReceiveArgs) -> Result<()> {
    let flags = [
        ("max_wait_ms", "--wait-ms"),
        ("visibility_timeout_ms", "--visibility-ms"),
    ];
    let mut out = BufWriter::new(io::stdout().lock());
    let mut left = args.max;
    let mut wait = Duration::from_millis(args.wait_ms);
    let visibility = args.visibility_ms.map(Duration::from_millis);
    while left > 0 {
        let n = left.min(MAX_RECEIVE) as usize;
        let deliveries = consumer
            .receive(n, wait, visibility)
            .await
            .map_err(|e| name_flag(e, &flags))?;
        if deliveries.is_empty() {
            break;
        }
        for d in &deliveries {
            write_json_line(&mut out, &JsonTopicRecord::delivery(d))?;
        }
        out.flush()?;
        if args.ack {
            consumer.ack(&deliveries).await?;
        }
        left -= deliveries.len() as u64;
        wait = Duration::ZERO;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_partition_colon_offset() {
        assert_eq!(
            parse_record_id("1:42"),
            Ok(RecordId {
                partition: 1,
                offset: 42
            })
        );
        for bad in ["1", "1:", ":2", "a:1", "1:-2", "1:2:3"] {
            assert!(
                parse_record_id(bad).unwrap_err().contains("PARTITION:OFFSET"),
                "{bad}"
            );
        }
    }

    #[test]
    fn settings_are_sent_only_when_given() {
        let none = QueueSettings {
            visibility_ms: None,
            max_deliveries: None,
            max_in_flight: None,
            delivery_delay_ms: None,
            dead_letter_topic: None,
        };
        assert_eq!(none.config(), None);
        let some = QueueSettings {
            max_deliveries: Some(3),
            ..none
        };
        assert_eq!(some.config().and_then(|c| c.max_deliveries), Some(3));
    }
}
