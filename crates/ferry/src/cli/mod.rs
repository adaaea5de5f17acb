//! Subcommands of the `ferry` binary. Each module owns its arguments (clap derive) and a `run` function;
//! `main.rs` only dispatches.

pub mod bench;
pub mod check;
pub mod consume;
pub mod dlq;
pub mod json;
pub mod log;
pub mod propagate;
pub mod queue;
pub mod remote;
pub mod run;
pub mod send;
pub mod subscriptions;
pub mod topics;
pub mod up;

use std::io::{self, Write};

/// `ferry version`: the binary's version and the log format version it writes and reads.
///
/// # Errors
/// Writing to stdout failed.
pub fn version() -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    writeln!(
        out,
        "ferry {} (log format {})",
        env!("CARGO_PKG_VERSION"),
        ferry_log::FORMAT_VERSION
    )?;
    out.flush()?;
    Ok(())
}

/// True when `e` was caused by writing to a closed pipe.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain()
        .filter_map(|c| c.downcast_ref::<io::Error>())
        .any(|io| io.kind() == io::ErrorKind::BrokenPipe)
}

/// A `--header KEY=VALUE` flag: split at the first `=`; KEY must not be empty, VALUE may.
///
/// # Errors
/// No `=`, or an empty KEY, naming what was given.
pub fn parse_header(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("expected KEY=VALUE with a non-empty KEY, got `{s}`")),
    }
}
