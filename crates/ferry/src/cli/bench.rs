//! `ferry bench`: one workload against ferry (embedded, and a server over loopback), NATS JetStream
//! and RabbitMQ, side by side in one run (`ferry_bench`, docs/benchmarks.md).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::{Args, ValueEnum};
use ferry_bench::peer::{Durability, Peer};
use ferry_bench::peers::{embedded::EmbeddedPeer, nats::NatsPeer, rabbitmq::RabbitPeer, server::ServerPeer};
use ferry_bench::report::{self, Report, Row, Unmeasured};
use ferry_bench::run::{Kind, Shape, round};

/// A system to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PeerKind {
    /// ferry's broker in this process.
    Embedded,
    /// A ferry server (`ferry up`) over loopback HTTP.
    Server,
    /// A ferry server (`ferry up`) over the wire protocol on loopback.
    Wire,
    /// NATS JetStream.
    Nats,
    /// RabbitMQ.
    Rabbitmq,
}

/// A durability class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Class {
    /// On disk before the ack.
    OnDisk,
    /// Flushed in the background.
    Background,
}

impl From<Class> for Durability {
    fn from(c: Class) -> Self {
        match c {
            Class::OnDisk => Self::OnDisk,
            Class::Background => Self::Background,
        }
    }
}

/// A workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Workload {
    /// Producers publish as fast as confirms come back.
    Publish,
    /// Consumers read and acknowledge a pre-filled topic (its publish runs first, measured or not).
    Consume,
    /// Publish and consume at once, as fast as they go.
    Both,
    /// Publish and consume at once at `--rate`: end-to-end latency below saturation.
    FixedRate,
}

impl From<Workload> for Kind {
    fn from(w: Workload) -> Self {
        match w {
            Workload::Publish => Self::Publish,
            Workload::Consume => Self::Consume,
            Workload::Both => Self::Both,
            Workload::FixedRate => Self::Paced,
        }
    }
}

/// Arguments of `ferry bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// 1 KiB messages, one producer and one consumer, 2 s per workload, once: under 2 minutes here. Prints
    /// one line per system with ferry's ratio to it.
    #[arg(long)]
    quick: bool,
    /// The systems to measure (default: all four). NATS and RabbitMQ are started as private servers on
    /// free loopback ports unless their URL is given.
    #[arg(long, value_enum, value_delimiter = ',')]
    peers: Vec<PeerKind>,
    /// Durability classes (default: both).
    #[arg(long, value_enum, value_delimiter = ',')]
    durability: Vec<Class>,
    /// Message sizes in bytes (default: 100,1024,16384).
    #[arg(long, value_delimiter = ',')]
    sizes: Vec<usize>,
    /// Producer counts (default: 1,4).
    #[arg(long, value_delimiter = ',')]
    producers: Vec<usize>,
    /// Consumer counts (default: 1,4).
    #[arg(long, value_delimiter = ',')]
    consumers: Vec<usize>,
    /// Seconds each producer publishes, per workload (default 10; 2 with --quick).
    #[arg(long, value_name = "S")]
    seconds: Option<f64>,
    /// Unconfirmed publishes each producer keeps in flight.
    #[arg(long, default_value_t = 256)]
    window: usize,
    /// The workloads to run (default: all four).
    #[arg(long, value_enum, value_delimiter = ',')]
    workloads: Vec<Workload>,
    /// Messages per second (all producers together) of the fixed-rate publish+consume workload, which
    /// compares end-to-end latency below saturation; 0 skips it.
    #[arg(long, value_name = "N", default_value_t = 5000)]
    rate: u64,
    /// Repetitions of every cell; tables show the median and the spread (default 3; 1 with --quick).
    #[arg(long, value_name = "N")]
    repetitions: Option<usize>,
    /// Where ferry's data goes (a real disk; fsync costs what it costs there).
    #[arg(long, value_name = "DIR", default_value = ".")]
    dir: PathBuf,
    /// Write the results as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Write the results as a Markdown table to this file.
    #[arg(long, value_name = "FILE")]
    markdown: Option<PathBuf>,
    /// Write a bar chart of the throughputs as SVG to this file.
    #[arg(long, value_name = "FILE")]
    chart: Option<PathBuf>,
    /// Use this NATS server instead of starting one.
    #[arg(long, value_name = "URL")]
    nats_url: Option<String>,
    /// Use this RabbitMQ server instead of starting one.
    #[arg(long, value_name = "URL")]
    rabbitmq_url: Option<String>,
    /// Use this ferry server instead of starting one.
    #[arg(long, value_name = "URL")]
    server_url: Option<String>,
    /// The wire protocol's address of the server at --server-url (for `--peers wire`).
    #[arg(long, value_name = "ADDR", requires = "server_url")]
    server_wire: Option<String>,
    /// Also measure HTTP ingest: serve this configuration (e.g. examples/scream.toml) with `ferry up`
    /// and send one message per request to its `http` source from many clients at once.
    #[arg(long, value_name = "FILE")]
    ingest: Option<PathBuf>,
    /// The route the ingest requests go to.
    #[arg(long, value_name = "PATH", default_value = "/send", requires = "ingest")]
    ingest_path: String,
    /// The body of every ingest request.
    #[arg(
        long,
        value_name = "JSON",
        default_value = r#"{"user": "bench", "message": "hello from ferry bench"}"#,
        requires = "ingest"
    )]
    ingest_body: String,
    /// Ingest requests in flight at once.
    #[arg(long, value_name = "N", default_value_t = 64, requires = "ingest")]
    ingest_concurrency: usize,
}

/// Runs `ferry bench`.
///
/// # Errors
/// A peer failing during a run, a file that cannot be written.
pub fn run(args: BenchArgs) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        // Ctrl-C drops the run, and with it the peers: their servers are stopped, not left behind.
        tokio::select! {
            done = bench(args) => done,
            _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted; the servers it started are stopped"),
        }
    })
}

fn or<T: Clone>(given: &[T], default: &[T]) -> Vec<T> {
    if given.is_empty() {
        default.to_vec()
    } else {
        given.to_vec()
    }
}

async fn start(kind: PeerKind, durability: Durability, args: &BenchArgs) -> Result<Option<Arc<dyn Peer>>> {
    let peer: Arc<dyn Peer> = match kind {
        PeerKind::Embedded => Arc::new(EmbeddedPeer::open(&args.dir, durability)?),
        PeerKind::Server | PeerKind::Wire => {
            let wire = kind == PeerKind::Wire;
            match &args.server_url {
                Some(url) => {
                    let at = match (&args.server_wire, wire) {
                        (Some(at), true) => Some(at.as_str()),
                        (None, true) => anyhow::bail!("--peers wire with --server-url needs --server-wire"),
                        (_, false) => None,
                    };
                    Arc::new(ServerPeer::connect(url, at, durability)?)
                }
                None => {
                    let ferry = std::env::current_exe().context("the path of this ferry binary")?;
                    Arc::new(ServerPeer::start(&ferry, &args.dir, durability, wire).await?)
                }
            }
        }
        PeerKind::Nats => match &args.nats_url {
            Some(url) => Arc::new(NatsPeer::connect(url, durability).await?),
            None => match NatsPeer::start(durability).await? {
                Some(p) => Arc::new(p),
                None => return Ok(None),
            },
        },
        PeerKind::Rabbitmq => match &args.rabbitmq_url {
            Some(url) => Arc::new(RabbitPeer::connect(url, durability).await?),
            None => match RabbitPeer::start(durability).await? {
                Some(p) => Arc::new(p),
                None => return Ok(None),
            },
        },
    };
    Ok(Some(peer))
}

/// How reports name a kind of peer before it is running.
fn label(kind: PeerKind) -> &'static str {
    match kind {
        PeerKind::Embedded => "ferry (embedded)",
        PeerKind::Server => "ferry (server, HTTP)",
        PeerKind::Wire => "ferry (server, wire)",
        PeerKind::Nats => "NATS JetStream",
        PeerKind::Rabbitmq => "RabbitMQ",
    }
}

async fn bench(args: BenchArgs) -> Result<()> {
    let quick = args.quick;
    let peers = or(
        &args.peers,
        &[
            PeerKind::Embedded,
            PeerKind::Server,
            PeerKind::Wire,
            PeerKind::Nats,
            PeerKind::Rabbitmq,
        ],
    );
    let classes = or(&args.durability, &[Class::Background, Class::OnDisk]);
    let sizes = or(&args.sizes, if quick { &[1024] } else { &[100, 1024, 16384] });
    let producers = or(&args.producers, if quick { &[1] } else { &[1, 4] });
    let consumers = or(&args.consumers, if quick { &[1] } else { &[1, 4] });
    let seconds = args.seconds.unwrap_or(if quick { 2.0 } else { 10.0 });
    let kinds: Vec<Kind> = if args.workloads.is_empty() {
        Kind::ALL.to_vec()
    } else {
        args.workloads.iter().map(|&w| w.into()).collect()
    };
    anyhow::ensure!(
        args.rate > 0 || kinds.iter().any(|&k| k != Kind::Paced),
        "--rate 0 skips the fixed-rate workload, and --workloads asks for nothing else"
    );
    let repetitions = args.repetitions.unwrap_or(if quick { 1 } else { 3 }).max(1);
    anyhow::ensure!(
        seconds.is_finite() && seconds > 0.0 && seconds <= 3600.0,
        "--seconds must be more than 0 and at most 3600"
    );
    anyhow::ensure!(args.window > 0, "--window must be at least 1");
    anyhow::ensure!(producers.iter().all(|&n| n > 0), "--producers must be at least 1");
    anyhow::ensure!(consumers.iter().all(|&n| n > 0), "--consumers must be at least 1");
    anyhow::ensure!(
        sizes
            .iter()
            .all(|&n| (ferry_bench::run::MIN_SIZE..=16 * 1024 * 1024).contains(&n)),
        "--sizes must be {}..=16777216 bytes",
        ferry_bench::run::MIN_SIZE
    );

    let mut rows = Vec::new();
    let mut unmeasured = Vec::new();
    let steps =
        classes.len() * peers.len() * sizes.len() * producers.len() * consumers.len() * (repetitions + 1);
    // Drawn on stderr when it is a terminal; hidden otherwise (CI, pipes).
    let progress = indicatif::ProgressBar::new(steps as u64);
    progress.set_style(
        indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")?
            .progress_chars("=> "),
    );
    for class in &classes {
        let durability = Durability::from(*class);
        for kind in &peers {
            let peer = match start(*kind, durability, &args).await {
                Ok(Some(p)) => p,
                Ok(None) => {
                    let reason = format!("{} is not installed (scripts/setup installs it)", label(*kind));
                    progress.println(format!("skipped: {reason}"));
                    progress.inc((steps / classes.len() / peers.len()) as u64);
                    unmeasured.push(Unmeasured {
                        peer: label(*kind).into(),
                        durability,
                        reason,
                    });
                    continue;
                }
                Err(e) => {
                    progress.println(format!(
                        "not measured: {}, {}: {e:#}",
                        label(*kind),
                        durability.label()
                    ));
                    progress.inc((steps / classes.len() / peers.len()) as u64);
                    unmeasured.push(Unmeasured {
                        peer: label(*kind).into(),
                        durability,
                        reason: format!("{e:#}"),
                    });
                    continue;
                }
            };
            // A cell that fails is said so; the peer is not measured further in this class, and the run
            // goes on with the others.
            'cells: for &size in &sizes {
                for &p in &producers {
                    for &c in &consumers {
                        let shape = Shape {
                            size,
                            producers: p,
                            consumers: c,
                            window: args.window,
                            duration: Duration::from_secs_f64(seconds),
                            rate: (args.rate > 0).then_some(args.rate),
                        };
                        let cell = async {
                            // A short warm-up that is not measured.
                            let warm = Shape {
                                duration: Duration::from_secs_f64((seconds / 10.0).min(1.0)),
                                rate: None,
                                ..shape
                            };
                            progress.set_message(format!("{}, {}: warm-up", peer.name(), durability.label()));
                            round(
                                &peer,
                                "ferry-bench-warmup",
                                warm,
                                &[Kind::Publish, Kind::Consume, Kind::Both],
                            )
                            .await?;
                            progress.inc(1);
                            let mut reps: [Vec<_>; Kind::ALL.len()] = Default::default();
                            for rep in 0..repetitions {
                                progress.set_message(format!(
                                    "{}, {}: {size} B, {p}p/{c}c, repetition {}/{repetitions}",
                                    peer.name(),
                                    durability.label(),
                                    rep + 1
                                ));
                                let name = format!("ferry-bench-{size}-{p}-{c}-{rep}");
                                for m in round(&peer, &name, shape, &kinds).await? {
                                    let i = Kind::ALL.iter().position(|&k| k == m.kind).unwrap_or(0);
                                    reps[i].push(m);
                                }
                                progress.inc(1);
                            }
                            anyhow::Ok(reps)
                        };
                        match cell.await {
                            Ok(reps) => rows.extend(reps.into_iter().filter_map(Row::of)),
                            Err(e) => {
                                let reason = format!("{size} B, {p}p/{c}c: {e:#}");
                                progress.println(format!(
                                    "not measured: {}, {}: {reason}",
                                    peer.name(),
                                    durability.label()
                                ));
                                unmeasured.push(Unmeasured {
                                    peer: peer.name(),
                                    durability,
                                    reason,
                                });
                                break 'cells;
                            }
                        }
                    }
                }
            }
            // Stopping a server blocks for seconds (RabbitMQ's stop command): not on a runtime thread.
            tokio::task::spawn_blocking(move || drop(peer)).await?;
        }
    }
    let ingest = match &args.ingest {
        Some(config) => {
            progress.set_message(format!("HTTP ingest: {}", config.display()));
            let ferry = std::env::current_exe().context("the path of this ferry binary")?;
            let got = ferry_bench::ingest::ingest(
                &ferry,
                config,
                &args.dir,
                &args.ingest_path,
                &args.ingest_body,
                args.ingest_concurrency,
                Duration::from_secs_f64(seconds),
            )
            .await
            .with_context(|| format!("--ingest {}", config.display()))?;
            Some(got)
        }
        None => None,
    };
    progress.finish_and_clear();
    report::order(&mut rows);
    let ferries = ["ferry (server, wire)", "ferry (server, HTTP)", "ferry (embedded)"];
    let ratios: Vec<_> = ferries.iter().flat_map(|f| report::ratios(&rows, f)).collect();
    let table = report::markdown(&rows);
    println!("{table}");
    // One line per system, class and shape: ferry (the server, as the others are servers) over it.
    let summary: Vec<String> = ferries.iter().flat_map(|f| report::summary(&rows, f)).collect();
    for line in &summary {
        println!("{line}");
    }
    if let Some(i) = &ingest {
        let ms = |f: fn(&ferry_bench::run::Percentiles) -> u64| {
            i.latency_us
                .as_ref()
                .map_or("-".to_string(), |p| format!("{:.2}", f(p) as f64 / 1000.0))
        };
        println!(
            "HTTP ingest, {} POST {} from {} clients: {:.0} requests/s, p50 {} ms, p99 {} ms, max {} ms, {} errors",
            i.config,
            i.path,
            i.concurrency,
            i.requests_per_s,
            ms(|p| p.p50),
            ms(|p| p.p99),
            ms(|p| p.max),
            i.errors
        );
    }
    for u in &unmeasured {
        println!(
            "not measured: {} ({}): {}",
            u.peer,
            u.durability.label(),
            u.reason
        );
    }
    let report = Report {
        when: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        machine: machine(),
        rows,
        unmeasured,
        ratios,
        summary,
        ingest,
    };
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("--json {}", path.display()))?;
    }
    if let Some(path) = &args.chart {
        std::fs::write(path, report::svg(&report.rows))
            .with_context(|| format!("--chart {}", path.display()))?;
    }
    if let Some(path) = &args.markdown {
        std::fs::write(path, table).with_context(|| format!("--markdown {}", path.display()))?;
    }
    Ok(())
}

/// CPUs and kernel, for the report.
fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_default();
    format!("{cpus} CPUs ({model}), Linux {}", kernel.trim())
}
