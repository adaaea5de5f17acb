//! `ferry subscriptions ...`: SNS-like fan-out of a topic to named queue or stream groups, each with an
//! optional filter policy.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use ferry_client::{Client, FilterScope, SubscriptionKind, SubscriptionSpec};
use serde_json::Value;

use crate::cli::queue::{QUEUE_FLAGS, QueueSettings};
use crate::cli::remote::{self, ConnectArgs, name_flag, print_json_line};

/// `ferry subscriptions [--url URL] [--token TOKEN] <command>`.
#[derive(Debug, Args)]
pub struct SubscriptionsArgs {
    #[command(flatten)]
    conn: ConnectArgs,

    #[command(subcommand)]
    command: SubscriptionsCommand,
}

/// The subcommands of `ferry subscriptions`.
#[derive(Debug, Subcommand)]
enum SubscriptionsCommand {
    /// Create a subscription (or confirm one with the same settings); prints it as JSON.
    ///
    /// A subscription NAME is consumed as the group NAME: kind `queue` with `ferry queue receive --group
    /// NAME`, kind `stream` with `ferry consume --group NAME`. It starts at the oldest record of the
    /// topic. Records its filter policy does not match are never delivered to it.
    Create(CreateArgs),
    /// Print the topic's subscriptions, one JSON line each.
    List {
        /// The topic.
        #[arg(long, value_name = "TOPIC")]
        topic: String,
    },
    /// Delete a subscription and its group's progress (records stay). Prints nothing.
    Delete {
        /// The topic.
        #[arg(long, value_name = "TOPIC")]
        topic: String,
        /// The subscription.
        #[arg(value_name = "NAME")]
        name: String,
    },
}

/// `--kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Kind {
    /// A queue group: receive, ack, nack, dead letters.
    Queue,
    /// A stream group: read in order, commit offsets.
    Stream,
}

/// `--filter-scope`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scope {
    /// The record's value, parsed as JSON.
    Body,
    /// The record's headers.
    Headers,
}

fn parse_policy(s: &str) -> Result<Value, String> {
    serde_json::from_str(s).map_err(|e| format!("not JSON: {e}"))
}

/// Arguments of `ferry subscriptions create`.
#[derive(Debug, Args)]
struct CreateArgs {
    /// The topic.
    #[arg(long, value_name = "TOPIC")]
    topic: String,

    /// The subscription's name, which is also its group's name.
    #[arg(value_name = "NAME")]
    name: String,

    /// How it is consumed [server default: queue].
    #[arg(long, value_enum)]
    kind: Option<Kind>,

    /// An AWS SNS filter policy, e.g. '{"type": ["order"], "total": [{"numeric": [">", 100]}]}'; without
    /// one, every record is delivered.
    #[arg(long, value_name = "JSON", value_parser = parse_policy, conflicts_with = "filter_policy_file")]
    filter_policy: Option<Value>,

    /// The filter policy, read from a file.
    #[arg(long, value_name = "FILE")]
    filter_policy_file: Option<PathBuf>,

    /// Where the filter policy looks [server default: body].
    #[arg(long, value_enum, value_name = "SCOPE")]
    filter_scope: Option<Scope>,

    /// Settings of the subscription's queue group (kind `queue` only).
    #[command(flatten)]
    queue: QueueSettings,
}

/// Runs one `ferry subscriptions` command.
///
/// # Errors
/// A filter policy that is not JSON or a file that cannot be read (naming the flag), the server refusing
/// (an unknown topic, a policy it does not take, naming the flag) or not answering.
pub fn run(args: SubscriptionsArgs) -> Result<()> {
    remote::run(&args.conn, |client| async move {
        match args.command {
            SubscriptionsCommand::Create(create) => create_subscription(&client, create).await,
            SubscriptionsCommand::List { topic } => {
                for s in client.list_subscriptions(&topic).await? {
                    print_json_line(&s)?;
                }
                Ok(())
            }
            SubscriptionsCommand::Delete { topic, name } => {
                Ok(client.delete_subscription(&topic, &name).await?)
            }
        }
    })
}

async fn create_subscription(client: &Client, args: CreateArgs) -> Result<()> {
    let (policy, policy_flag) = match &args.filter_policy_file {
        Some(file) => {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("--filter-policy-file `{}`", file.display()))?;
            let policy = serde_json::from_str::<Value>(&text)
                .with_context(|| format!("--filter-policy-file `{}`: not JSON", file.display()))?;
            (Some(policy), "--filter-policy-file")
        }
        None => (args.filter_policy.clone(), "--filter-policy"),
    };
    let queue = args.queue.config();
    if queue.is_some() && args.kind == Some(Kind::Stream) {
        bail!("queue settings (--visibility-ms, --max-deliveries, ...) apply to --kind queue only");
    }
    let spec = SubscriptionSpec {
        kind: args.kind.map(|k| match k {
            Kind::Queue => SubscriptionKind::Queue,
            Kind::Stream => SubscriptionKind::Stream,
        }),
        filter_policy: policy,
        filter_scope: args.filter_scope.map(|s| match s {
            Scope::Body => FilterScope::Body,
            Scope::Headers => FilterScope::Headers,
        }),
        queue,
        ..SubscriptionSpec::default()
    };
    // The server names a queue setting of a subscription `queue.<key>`.
    let queue_fields: Vec<(String, &str)> = QUEUE_FLAGS
        .iter()
        .map(|(field, flag)| (format!("queue.{field}"), *flag))
        .collect();
    let mut flags = vec![("filter_policy", policy_flag)];
    flags.extend(queue_fields.iter().map(|(field, flag)| (field.as_str(), *flag)));
    let info = client
        .create_subscription(&args.topic, &args.name, &spec)
        .await
        .map_err(|e| name_flag(e, &flags))?;
    print_json_line(&info)
}
