//! `ferry run --config FILE --pipeline P --stage S --url URL`: one stage of a pipeline as its own
//! process, against a ferry server (or, with `[engine]` nats or rabbitmq in the file, against that
//! engine directly; `--url` is then not used). Processes running the same stage read its input as one queue group
//! and share the work; a process that dies leaves its records leased until their leases run out, then
//! another takes them. An `http` source stage serves its route on `--listen`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use ferry_pipeline::runtime::{PipelineMetrics, RuntimeOptions};
use ferry_pipeline::{RemoteBus, SharedBus};
use tokio::net::TcpListener;

use crate::cli::remote::{ConnectArgs, Shutdown};
use crate::config::Config;

/// Arguments of `ferry run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The configuration file holding the pipeline.
    #[arg(long, env = "FERRY_CONFIG", value_name = "FILE")]
    config: PathBuf,
    /// The pipeline.
    #[arg(long, value_name = "P")]
    pipeline: String,
    /// The stage: the source's, a processor's or a sink's name.
    #[arg(long, value_name = "S")]
    stage: String,
    /// Where an `http` source stage listens (port 0 picks a free one).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Directory that relative outbox and archive paths are resolved against.
    #[arg(long, env = "FERRY_DATA_DIR", value_name = "DIR", default_value = ".")]
    data_dir: PathBuf,
    #[command(flatten)]
    conn: ConnectArgs,
}

/// Runs the stage until SIGINT or SIGTERM.
///
/// Prints one JSON line on stdout once running: `{"pipeline","stage","url"}` (and `"listening"` for an
/// `http` source).
///
/// # Errors
/// A bad configuration, an unknown pipeline or stage, the server refusing to create topics.
pub fn run(args: RunArgs) -> anyhow::Result<()> {
    let config = Config::load(&args.config)?;
    let mut builder = ferry_client::Client::builder().url(&args.conn.url);
    if let Some(t) = &args.conn.token {
        builder = builder.token(t);
    }
    let client = builder.build().context("--url")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("ferry")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        // With `[engine]` nats or rabbitmq the stage talks to the engine itself; else to a ferry server.
        let bus: SharedBus = match crate::engine::connect(&config.engine).await? {
            Some(engine) => engine,
            None => Arc::new(RemoteBus(client)),
        };
        let metrics = PipelineMetrics::new();
        let options = RuntimeOptions {
            data_dir: args.data_dir.clone(),
            config_dir: config.dir.clone(),
            groups: Default::default(),
            only: Some((args.pipeline.clone(), args.stage.clone())),
        };
        let running = ferry_pipeline::runtime::start(&config.pipelines, bus, &metrics, &options)
            .await
            .with_context(|| format!("starting stage `{}` of pipeline `{}`", args.stage, args.pipeline))?;
        let mut line = serde_json::json!({
            "pipeline": args.pipeline,
            "stage": args.stage,
            "engine": config.engine.name(),
        });
        if config.engine == crate::config::EngineConfig::Embedded {
            line["url"] = args.conn.url.clone().into();
        }
        let mut signals = Shutdown::listen();
        let is_source = config
            .pipelines
            .iter()
            .any(|p| p.name == args.pipeline && p.source.name == args.stage);
        if is_source && running.stages.is_empty() {
            anyhow::bail!(
                "--stage {}: a `topic` source has no process of its own",
                args.stage
            );
        }
        let server = if is_source {
            let listener = TcpListener::bind(args.listen)
                .await
                .with_context(|| format!("--listen {}: cannot listen", args.listen))?;
            line["listening"] = format!("http://{}", listener.local_addr()?).into();
            let routes = running.routes.clone();
            let token = running.cancel_token();
            Some(tokio::spawn(async move {
                axum::serve(listener, routes)
                    .with_graceful_shutdown(async move { token.cancelled().await })
                    .await
            }))
        } else {
            None
        };
        println!("{line}");
        signals.recv().await;
        running.stop().await;
        if let Some(s) = server {
            s.await??;
        }
        Ok(())
    })
}
