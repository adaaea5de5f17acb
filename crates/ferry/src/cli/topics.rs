//! `ferry topics ...`: create, list, describe and delete the topics of a ferry server.

use anyhow::Result;
use clap::{Args, Subcommand};
use ferry_client::{Client, Fsync, TopicConfig};
use ferry_log::FsyncPolicy;

use crate::cli::log::parse_fsync;
use crate::cli::remote::{self, ConnectArgs, name_flag, print_json_line};

/// `ferry topics [--url URL] [--token TOKEN] <command>`.
#[derive(Debug, Args)]
pub struct TopicsArgs {
    #[command(flatten)]
    conn: ConnectArgs,

    #[command(subcommand)]
    command: TopicsCommand,
}

/// The subcommands of `ferry topics`.
#[derive(Debug, Subcommand)]
enum TopicsCommand {
    /// Create a topic; prints it as JSON: {"name","config":{...},"partitions":[...]}.
    ///
    /// Settings not given take the server's defaults (1 partition, fsync always, 7 days retention).
    Create(CreateArgs),
    /// Print every topic, one JSON line each.
    List,
    /// Print one topic as JSON: its settings and each partition's offsets and size.
    Describe {
        /// The topic.
        #[arg(value_name = "NAME")]
        name: String,
    },
    /// Delete a topic and all its records. Prints nothing.
    Delete {
        /// The topic.
        #[arg(value_name = "NAME")]
        name: String,
    },
}

/// A retention limit: a number, or `none` for no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Limit(Option<u64>);

fn parse_limit(s: &str) -> Result<Limit, String> {
    if s == "none" {
        return Ok(Limit(None));
    }
    s.parse::<u64>()
        .map(|n| Limit(Some(n)))
        .map_err(|_| format!("expected a number or `none`, got `{s}`"))
}

/// Arguments of `ferry topics create`.
#[derive(Debug, Args)]
struct CreateArgs {
    /// The topic's name.
    #[arg(value_name = "NAME")]
    name: String,

    /// Number of partitions, 1..=1024; fixed once created.
    #[arg(long, value_name = "N")]
    partitions: Option<u32>,

    /// When a publish is acknowledged: `always` (after fsync), `interval:<ms>` (fsync within <ms>) or
    /// `never` (the OS flushes).
    #[arg(long, value_name = "POLICY", value_parser = parse_fsync)]
    fsync: Option<FsyncPolicy>,

    /// Delete segments whose records are older than this; `none`: keep forever.
    #[arg(long, value_name = "MS|none", value_parser = parse_limit)]
    retention_ms: Option<Limit>,

    /// Delete a partition's oldest segments while it is larger than this; `none`: no limit.
    #[arg(long, value_name = "BYTES|none", value_parser = parse_limit)]
    retention_bytes: Option<Limit>,

    /// Start a new segment file at this size, 1024..=1073741824.
    #[arg(long, value_name = "BYTES")]
    segment_bytes: Option<u64>,

    /// Largest record accepted (value, key and headers), up to 8388608.
    #[arg(long, value_name = "BYTES")]
    max_record_bytes: Option<u32>,
}

/// The server's names of the settings, and the flags that set them.
const FLAGS: &[(&str, &str)] = &[
    ("partitions", "--partitions"),
    ("fsync", "--fsync"),
    ("retention_ms", "--retention-ms"),
    ("retention_bytes", "--retention-bytes"),
    ("segment_bytes", "--segment-bytes"),
    ("max_record_bytes", "--max-record-bytes"),
];

/// Runs one `ferry topics` command.
///
/// # Errors
/// The server refused (its message and code, and the flag of a refused setting) or did not answer.
pub fn run(args: TopicsArgs) -> Result<()> {
    remote::run(&args.conn, |client| async move {
        match args.command {
            TopicsCommand::Create(create) => create_topic(&client, create).await,
            TopicsCommand::List => {
                for topic in client.list_topics().await? {
                    print_json_line(&topic)?;
                }
                Ok(())
            }
            TopicsCommand::Describe { name } => print_json_line(&client.describe_topic(&name).await?),
            TopicsCommand::Delete { name } => Ok(client.delete_topic(&name).await?),
        }
    })
}

async fn create_topic(client: &Client, args: CreateArgs) -> Result<()> {
    let config = TopicConfig {
        partitions: args.partitions,
        fsync: args.fsync.map(|f| match f {
            FsyncPolicy::Always => Fsync::Always,
            FsyncPolicy::Never => Fsync::Never,
            FsyncPolicy::Interval(every) => Fsync::Interval(every),
        }),
        retention_ms: args.retention_ms.map(|l| l.0),
        retention_bytes: args.retention_bytes.map(|l| l.0),
        segment_bytes: args.segment_bytes,
        max_record_bytes: args.max_record_bytes,
        ..TopicConfig::default()
    };
    let info = client
        .create_topic(&args.name, &config)
        .await
        .map_err(|e| name_flag(e, FLAGS))?;
    print_json_line(&info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_numbers_or_none() {
        assert_eq!(parse_limit("none"), Ok(Limit(None)));
        assert_eq!(parse_limit("60000"), Ok(Limit(Some(60_000))));
        assert!(parse_limit("-1").unwrap_err().contains("`none`"));
    }
}
