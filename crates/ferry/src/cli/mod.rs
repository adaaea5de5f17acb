//! Subcommands of the `ferry` binary. Each module owns its arguments (clap derive) and a `run` function;
//! `main.rs` only dispatches.

pub mod json;
pub mod log;
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
