//! `ferry up`: the broker, its HTTP API and every pipeline of the configuration in one process, until
//! SIGINT or SIGTERM. Without a configuration file it runs the scream example (`examples/scream.toml`):
//! `POST /send`, e-mails into `<data_dir>/outbox` unless `SMTP_HOST` is set.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Args;
use ferry_broker::{Broker, BrokerError, TopicConfig};
use tokio::net::TcpListener;

use ferry_pipeline::SharedBus;
use ferry_pipeline::runtime::{PipelineMetrics, RuntimeOptions};
use ferry_server::{ServerOptions, Tokens};

use crate::cli::remote::Shutdown;
use crate::config::Config;

/// Arguments of `ferry up`.
#[derive(Debug, Args)]
pub struct UpArgs {
    /// Configuration file (TOML): `[server]`, `[topics.NAME]`, `[subscriptions.NAME]`, `[pipelines.NAME]`.
    /// Without one: the scream example (`POST /send`, e-mails to `<data_dir>/outbox`).
    #[arg(long, env = "FERRY_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Data directory, created if missing [default: ferry-data, or `server.data_dir`].
    #[arg(long, env = "FERRY_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// HTTP listen address; port 0 picks a free one [default: 127.0.0.1:5555, or `server.listen`].
    #[arg(long, env = "FERRY_LISTEN", value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Also serve the wire protocol (framed binary over TCP, `docs/protocol.md`) here; port 0 picks a
    /// free one [default: off, or `server.wire_listen`].
    #[arg(long, env = "FERRY_WIRE_LISTEN", value_name = "ADDR")]
    wire_listen: Option<SocketAddr>,
}

/// Runs the server until a signal asks it to stop, then shuts down gracefully: no new connections,
/// requests in flight (accepted appends) finish, the logs are closed.
///
/// Prints one JSON line on stdout once it listens: `{"listening": URL, "data_dir": DIR, "engine",
/// "pipelines": [..]}`, with `"wire": "HOST:PORT"` when the wire protocol is on.
///
/// # Errors
/// A bad configuration, an unusable data directory, an address that cannot be bound.
pub fn run(args: UpArgs) -> anyhow::Result<()> {
    let config = match &args.config {
        Some(path) => Config::load(path)?,
        None => default_config()?,
    };
    let data_dir = args.data_dir.unwrap_or(config.server.data_dir.clone());
    let listen = args.listen.unwrap_or(config.server.listen);
    let wire_listen = args.wire_listen.or(config.server.wire_listen);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("ferry")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let mut options = ServerOptions {
            tokens: tokens(&config).context("bearer tokens")?,
            ..ServerOptions::default()
        };
        let dir = data_dir.clone();
        let broker_options = options.broker_options();
        let broker = tokio::task::spawn_blocking(move || Broker::open_with(&dir, broker_options))
            .await?
            .with_context(|| format!("data directory `{}`", data_dir.display()))?;
        let bus: SharedBus = match crate::engine::connect(&config.engine).await? {
            None => {
                ensure_topics(&broker, &config, args.config.as_deref()).await?;
                ensure_subscriptions(&broker, &config).await?;
                Arc::new(broker.clone())
            }
            Some(engine) => {
                let name = config.engine.name();
                for (topic, settings) in &config.topics {
                    if settings.partitions != 1 {
                        bail!("topics.{topic}: partitions = {}: the {name} engine has one partition per topic", settings.partitions);
                    }
                    if *settings != TopicConfig::default() {
                        tracing::warn!(%topic, engine = name, "only the name of [topics.{topic}] is used on this engine; its other settings are the engine's own");
                    }
                    engine
                        .ensure_topic(topic)
                        .await
                        .with_context(|| format!("topics.{topic}: on the {name} engine"))?;
                }
                let engine = crate::engine::with_subscriptions(engine, &config).await?;
                options.engine = Some(ferry_server::EngineRef {
                    name: name.to_string(),
                    engine: engine.clone(),
                });
                engine
            }
        };
        let metrics = PipelineMetrics::new();
        options.metrics.add_registry(metrics.registry());
        let runtime_options = RuntimeOptions {
            data_dir: data_dir.clone(),
            config_dir: config.dir.clone(),
            groups: Default::default(),
            only: None,
        };
        let running = ferry_pipeline::runtime::start(&config.pipelines, bus, &metrics, &runtime_options)
            .await
            .context("starting the pipelines")?;
        options.routes = Some(running.routes.clone());
        let stages = running.stages.clone();
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("--listen {listen}: cannot listen"))?;
        let addr = listener.local_addr()?;
        let wire = match wire_listen {
            Some(at) => Some(
                TcpListener::bind(at)
                    .await
                    .with_context(|| format!("--wire-listen {at}: cannot listen"))?,
            ),
            None => None,
        };
        let mut line = serde_json::json!({
            "listening": format!("http://{addr}"),
            "data_dir": data_dir.display().to_string(),
            "engine": config.engine.name(),
            "pipelines": config.pipelines.iter().map(|p| p.name.clone()).collect::<Vec<_>>(),
        });
        if let Some(wire) = &wire {
            line["wire"] = wire.local_addr()?.to_string().into();
        }
        println!("{line}");
        tracing::info!(%addr, data_dir = %data_dir.display(), ?stages, "ferry is up");
        let mut signals = Shutdown::listen();
        // Pipelines stop first (their records in flight are acked or given back), then the server.
        let stop = async move {
            signals.recv().await;
            running.stop().await;
        };
        match wire {
            Some(wire) => ferry_server::serve_with_wire(broker, listener, wire, options, stop).await?,
            None => ferry_server::serve_with(broker, listener, options, stop).await?,
        }
        Ok(())
    })
}

/// The bearer tokens: the environment (`FERRY_TOKENS`, `FERRY_READ_TOKENS` or their `_FILE` variants),
/// else the files named in `[server]`. None anywhere: the API is open.
fn tokens(config: &Config) -> anyhow::Result<Tokens> {
    // A variable that is set but not UTF-8 is an error, never "unset" (that would leave the API open).
    for name in [
        "FERRY_TOKENS",
        "FERRY_READ_TOKENS",
        "FERRY_TOKENS_FILE",
        "FERRY_READ_TOKENS_FILE",
    ] {
        if let Some(v) = std::env::var_os(name)
            && v.to_str().is_none()
        {
            bail!("{name} is not valid UTF-8");
        }
    }
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let file = |path: &Option<PathBuf>| path.as_ref().map(|p| p.display().to_string());
    let rw_in_env = env("FERRY_TOKENS").is_some() || env("FERRY_TOKENS_FILE").is_some();
    let ro_in_env = env("FERRY_READ_TOKENS").is_some() || env("FERRY_READ_TOKENS_FILE").is_some();
    Ok(Tokens::from_vars(|name| match name {
        "FERRY_TOKENS_FILE" if !rw_in_env => file(&config.server.tokens_file),
        "FERRY_READ_TOKENS_FILE" if !ro_in_env => file(&config.server.read_tokens_file),
        _ => env(name),
    })?)
}

/// The configuration of `ferry up` without `--config`: the scream example, built in.
fn default_config() -> anyhow::Result<Config> {
    let text = include_str!("../../../../examples/scream.toml");
    let mut config = Config::parse_env(text, |n| std::env::var(n).ok()).map_err(|diagnostics| {
        crate::config::Problems {
            file: "examples/scream.toml (built in)".into(),
            diagnostics,
        }
    })?;
    config.dir = PathBuf::from(".");
    Ok(config)
}

/// Creates the configured subscriptions that do not exist.
async fn ensure_subscriptions(broker: &Broker, config: &Config) -> anyhow::Result<()> {
    for (name, sub) in &config.subscriptions {
        if let Err(BrokerError::TopicNotFound(_)) = broker.describe_topic(&sub.topic) {
            broker
                .create_topic(&sub.topic, TopicConfig::default())
                .await
                .with_context(|| format!("[subscriptions.{name}] topic `{}`", sub.topic))?;
        }
        broker
            .create_subscription(&sub.topic, name, sub.spec())
            .await
            .with_context(|| format!("[subscriptions.{name}]"))?;
    }
    Ok(())
}

/// Creates the configured topics that do not exist; an existing one must have the configured settings.
async fn ensure_topics(
    broker: &Broker,
    config: &Config,
    file: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    let file = file.map_or_else(String::new, |f| format!("config file `{}`: ", f.display()));
    for (name, wanted) in &config.topics {
        match broker.describe_topic(name) {
            Ok(info) if info.config == *wanted => {}
            Ok(info) => bail!(
                "{file}[topics.{name}] differs from the existing topic `{name}`: it has {}, the file says {}",
                settings(&info.config),
                settings(wanted)
            ),
            Err(BrokerError::TopicNotFound(_)) => {
                broker
                    .create_topic(name, wanted.clone())
                    .await
                    .with_context(|| format!("{file}[topics.{name}]"))?;
            }
            Err(e) => return Err(e).with_context(|| format!("{file}[topics.{name}]")),
        }
    }
    Ok(())
}

fn settings(config: &TopicConfig) -> String {
    serde_json::to_string(config).unwrap_or_default()
}
