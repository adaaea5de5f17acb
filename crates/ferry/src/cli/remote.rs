//! What the commands that talk to a ferry server share: where the server is (`--url`, `--token`), the
//! async runtime they run on, how they stop on a signal, and how they print.
//!
//! Every request goes through [`ferry_client`], so an error prints as the client words it: the server's
//! message, status and stable code (`topic `x` does not exist (404 topic_not_found)`), or the request and
//! its transport failure. The CLI adds what only it knows: the flag a value came from, the stdin line.

use std::future::Future;
use std::io::{self, Write};

use anyhow::{Context, Result};
use clap::Args;
use ferry_client::{Client, Error as ClientError};
use serde::Serialize;
use tokio::signal::unix::{Signal, SignalKind, signal};

/// Where the server is. Accepted before or after a subcommand (`ferry topics --url U list`).
#[derive(Debug, Clone, Args)]
pub struct ConnectArgs {
    /// Base URL of the ferry server (`http://host:port`; `host:port` alone means http).
    #[arg(long, global = true, env = "FERRY_URL", value_name = "URL", default_value = ferry_client::DEFAULT_URL,
        help_heading = "Server")]
    pub url: String,

    /// Bearer token sent with every request, for a server that requires one.
    #[arg(
        long,
        global = true,
        env = "FERRY_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true,
        help_heading = "Server"
    )]
    pub token: Option<String>,
}

impl ConnectArgs {
    fn client(&self) -> Result<Client> {
        let mut builder = Client::builder().url(&self.url);
        if let Some(token) = &self.token {
            builder = builder.token(token);
        }
        builder.build().context("--url")
    }
}

/// Runs `command` with a client of the server on a small async runtime.
///
/// # Errors
/// A bad `--url` or token, the runtime not starting, and whatever `command` fails with; when the server
/// did not answer, the error says which server was asked.
pub fn run<F, Fut>(conn: &ConnectArgs, command: F) -> Result<()>
where
    F: FnOnce(Client) -> Fut,
    Fut: Future<Output = Result<()>>,
{
    let client = conn.client()?;
    let url = client.url().to_string();
    // Two workers: the producer's dispatcher and long-polls keep running while a task writes to stdout.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("ferry")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(command(client)).map_err(|e| {
        let unanswered = e.chain().any(|c| {
            matches!(
                c.downcast_ref::<ClientError>(),
                Some(ClientError::Transport { .. })
            )
        });
        if !unanswered {
            return e;
        }
        // A transport error's message already ends with its causes; its source chain would repeat them.
        let mut message = Vec::new();
        for cause in e.chain() {
            message.push(cause.to_string());
            if cause.is::<ClientError>() {
                break;
            }
        }
        anyhow::anyhow!("{}", message.join(": ")).context(format!(
            "no answer from a ferry server at {url} (is `ferry up` running there? set --url or FERRY_URL)"
        ))
    })
}

/// Names the flag a refused value came from: when the server's error is about `field` (or a path
/// inside it, `filter_policy.price`), the flag paired with it is put in front of the message.
pub fn name_flag(e: ClientError, flags: &[(&str, &str)]) -> anyhow::Error {
    let field = e.api().and_then(|a| a.field.as_deref()).unwrap_or_default();
    let flag = flags.iter().find(|(name, _)| {
        field == *name
            || field
                .strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
    });
    match flag {
        Some((_, flag)) => anyhow::Error::new(e).context(flag.to_string()),
        None => e.into(),
    }
}

/// Writes `value` as one line of JSON.
///
/// # Errors
/// Writing failed (as an `io::Error`, so a closed stdout is recognised as one).
pub fn write_json_line(out: &mut impl Write, value: &impl Serialize) -> io::Result<()> {
    serde_json::to_writer(&mut *out, value).map_err(io::Error::from)?;
    out.write_all(b"\n")
}

/// Prints `value` as one line of JSON on stdout.
///
/// # Errors
/// Writing to stdout failed.
pub fn print_json_line(value: &impl Serialize) -> Result<()> {
    let mut out = io::stdout().lock();
    write_json_line(&mut out, value)?;
    out.flush()?;
    Ok(())
}

/// SIGINT (Ctrl-C) and SIGTERM, listened for from its creation on, so that a signal received while a
/// command is busy elsewhere is still seen at its next wait.
#[derive(Debug)]
pub struct Shutdown {
    interrupt: Option<Signal>,
    terminate: Option<Signal>,
}

impl Shutdown {
    /// Starts listening. A signal that cannot be listened for keeps its default action (the process ends).
    pub fn listen() -> Self {
        let listen = |kind: SignalKind, name: &str| match signal(kind) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!("cannot listen for {name}: {e}");
                None
            }
        };
        Self {
            interrupt: listen(SignalKind::interrupt(), "SIGINT"),
            terminate: listen(SignalKind::terminate(), "SIGTERM"),
        }
    }

    /// Resolves when a signal came. Cancel-safe, so it can be one branch of a `select!` in a loop.
    pub async fn recv(&mut self) {
        async fn one(s: &mut Option<Signal>) {
            match s {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            () = one(&mut self.interrupt) => {}
            () = one(&mut self.terminate) => {}
        }
    }
}
