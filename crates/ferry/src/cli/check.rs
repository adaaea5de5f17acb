//! `ferry check FILE`: reads a configuration as `ferry up` would, without starting anything, and reports
//! every problem at once, each as `FILE:LINE:COLUMN: key: message` on stderr (exit status 1). A clean
//! file prints its pipelines' stages and topics on stdout.

use std::path::PathBuf;

use clap::Args;

use crate::config::{Config, Problems};

/// Arguments of `ferry check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The configuration file.
    #[arg(value_name = "FILE")]
    file: PathBuf,
}

/// Checks the file.
///
/// # Errors
/// The file cannot be read, or has problems (each printed on stderr first).
pub fn run(args: CheckArgs) -> anyhow::Result<()> {
    match Config::load(&args.file) {
        Ok(config) => {
            print!("{}", config.summary());
            println!(
                "{}: ok ({} topics, {} subscriptions, {} pipelines)",
                args.file.display(),
                config.topics.len(),
                config.subscriptions.len(),
                config.pipelines.len()
            );
            Ok(())
        }
        Err(e) => match e.downcast_ref::<Problems>() {
            Some(p) => {
                for d in &p.diagnostics {
                    eprintln!("{}:{}:{}: {}{}", p.file, d.line, d.column, key(&d.key), d.message);
                }
                anyhow::bail!("{}: {} problem(s)", p.file, p.diagnostics.len())
            }
            None => Err(e),
        },
    }
}

fn key(k: &str) -> String {
    if k.is_empty() {
        String::new()
    } else {
        format!("{k}: ")
    }
}
