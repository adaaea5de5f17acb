//! `ferry-shop products|likes`: seed 002's two microservices on ferry. The binary only parses
//! arguments and runs the library's service.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// The products and likes microservices of seed 002, each with its own SQLite database, kept in sync
/// through ferry. Ferry is found through FERRY_URL (default http://127.0.0.1:5555), FERRY_TOKEN and
/// FERRY_WIRE.
#[derive(Debug, Parser)]
#[command(name = "ferry-shop", version)]
struct Cli {
    /// What goes to stderr: error, warn, info, debug, trace (RUST_LOG, when set, wins).
    #[arg(long, global = true, default_value = "info", value_name = "LEVEL")]
    log_level: String,
    #[command(subcommand)]
    service: Service,
}

#[derive(Debug, Subcommand)]
enum Service {
    /// Products: `GET/POST /api/products`, `GET/PUT/DELETE /api/products/{id}`, `GET /api/user`.
    Products {
        /// HTTP address; port 0 picks a free one (printed on the first line).
        #[arg(long, default_value = "127.0.0.1:8000", value_name = "ADDR")]
        listen: SocketAddr,
        /// The service's SQLite database, created if missing.
        #[arg(long, default_value = "products.sqlite3", value_name = "FILE")]
        db: PathBuf,
    },
    /// Likes: `GET /api/products`, `POST /api/products/{id}/like`.
    Likes {
        /// HTTP address; port 0 picks a free one (printed on the first line).
        #[arg(long, default_value = "127.0.0.1:8005", value_name = "ADDR")]
        listen: SocketAddr,
        /// The service's SQLite database, created if missing.
        #[arg(long, default_value = "likes.sqlite3", value_name = "FILE")]
        db: PathBuf,
        /// The products service, asked for a random user when a like names none.
        #[arg(long, default_value = "http://127.0.0.1:8000", value_name = "URL")]
        products_url: String,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.is_empty() => EnvFilter::new(v),
        _ => EnvFilter::new(&cli.log_level),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        match cli.service {
            Service::Products { listen, db } => {
                ferry_shop::products::run(ferry_shop::products::Config { listen, db }).await
            }
            Service::Likes {
                listen,
                db,
                products_url,
            } => {
                ferry_shop::likes::run(ferry_shop::likes::Config {
                    listen,
                    db,
                    products_url,
                })
                .await
            }
        }
    })
}
