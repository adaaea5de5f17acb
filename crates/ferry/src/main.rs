//! The `ferry` binary: parses arguments, sets up diagnostics, and hands over to a subcommand in [`cli`].

mod cli;
mod config;
mod engine;

use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// ferry: a durable event broker and pipeline engine in one binary.
///
/// Output goes to stdout (JSON lines where it is data), diagnostics to stderr.
#[derive(Debug, Parser)]
#[command(name = "ferry", version, propagate_version = true)]
struct Cli {
    /// Diagnostics filter for stderr, in `RUST_LOG` syntax (e.g. `info`, `ferry_log=debug`).
    /// Overrides RUST_LOG; without either, warnings and errors are shown.
    #[arg(long, global = true, value_name = "FILTER")]
    log_level: Option<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print ferry's version and the on-disk log format version it writes.
    Version,
    /// Run the broker and its HTTP API (until Ctrl-C or SIGTERM).
    Up(cli::up::UpArgs),
    /// Work with one log (one partition) directly: append, read, inspect.
    #[command(subcommand)]
    Log(cli::log::LogCommand),
    /// Create, list, describe and delete the topics of a ferry server.
    Topics(cli::topics::TopicsArgs),
    /// Publish a record, or one record per line of stdin, to a topic; prints {"partition","offset"}.
    Send(cli::send::SendArgs),
    /// Print a topic's records as JSON lines, directly or as a member of a stream group.
    Consume(cli::consume::ConsumeArgs),
    /// Queue groups: receive records under a lease, ack, nack, create, inspect.
    Queue(cli::queue::QueueArgs),
    /// Subscriptions of a topic: named queue or stream groups with an optional filter policy.
    Subscriptions(cli::subscriptions::SubscriptionsArgs),
    /// Check a configuration file: every problem at once, with line, column and key.
    Check(cli::check::CheckArgs),
    /// Run one stage of a pipeline as its own process against a ferry server.
    Run(cli::run::RunArgs),
    /// Dead letters of pipelines: replay them to the stage that failed.
    Dlq(cli::dlq::DlqArgs),
    /// Send events from a JSON file to an HTTP endpoint at an interval (the seed's propagator).
    Propagate(cli::propagate::PropagateArgs),
    /// Benchmark ferry against NATS JetStream and RabbitMQ side by side (docs/benchmarks.md).
    Bench(Box<cli::bench::BenchArgs>),
}

fn main() -> ExitCode {
    // `.env` in the working directory sets variables that are not set yet (the seeds' configuration
    // style); flags with `env = ...` and `${VAR}` in config files see them.
    if let Err(e) = dotenvy::dotenv()
        && !e.not_found()
    {
        eprintln!("error: .env: {e}");
        return ExitCode::FAILURE;
    }
    let cli = Cli::parse();
    let result = init_tracing(cli.log_level.as_deref()).and_then(|()| match cli.command {
        Command::Version => cli::version(),
        Command::Log(cmd) => cli::log::run(cmd),
        Command::Up(args) => cli::up::run(args),
        Command::Topics(args) => cli::topics::run(args),
        Command::Send(args) => cli::send::run(args),
        Command::Consume(args) => cli::consume::run(args),
        Command::Queue(args) => cli::queue::run(args),
        Command::Subscriptions(args) => cli::subscriptions::run(args),
        Command::Check(args) => cli::check::run(args),
        Command::Run(args) => cli::run::run(args),
        Command::Dlq(args) => cli::dlq::run(args),
        Command::Propagate(args) => cli::propagate::run(args),
        Command::Bench(args) => cli::bench::run(*args),
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // A closed stdout (`ferry log read | head`) is how a reader says "enough", not a failure.
        Err(e) if cli::is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(log_level: Option<&str>) -> anyhow::Result<()> {
    let filter = match log_level {
        Some(level) => EnvFilter::try_new(level).with_context(|| format!("--log-level `{level}`"))?,
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    Ok(())
}
