//! HTTP ingest: a pipeline's `http` source (`POST /send` of `examples/scream.toml`) under load, one
//! message per request from many concurrent clients, as the seed's users would send them.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::Serialize;

use crate::peers::server::spawn_up;
use crate::run::{Percentiles, histogram, usage};

/// What the load generator measured.
#[derive(Debug, Clone, Serialize)]
pub struct Ingest {
    /// The configuration served.
    pub config: String,
    /// The route.
    pub path: String,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Requests answered 2xx.
    pub requests: u64,
    /// Requests answered otherwise, or failed.
    pub errors: u64,
    /// How long.
    pub seconds: f64,
    /// 2xx answers per second.
    pub requests_per_s: f64,
    /// Request latency, microseconds.
    pub latency_us: Option<Percentiles>,
    /// CPU seconds the server spent.
    pub server_cpu_s: Option<f64>,
    /// The server's peak resident memory, MiB.
    pub server_peak_rss_mib: Option<f64>,
}

/// Serves `config` with `ferry up` (the binary `ferry`, its data in a new directory under `dir`) and
/// sends `POST path` with `body` from `concurrency` clients for `duration`, after a one-second warm-up.
///
/// # Errors
/// The server does not start; every request fails.
pub async fn ingest(
    ferry: &Path,
    config: &Path,
    dir: &Path,
    path: &str,
    body: &str,
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<Ingest> {
    let work = tempfile::Builder::new()
        .prefix("ferry-bench-ingest-")
        .tempdir_in(dir)
        .with_context(|| format!("a directory under {}", dir.display()))?;
    let config = std::fs::canonicalize(config).with_context(|| format!("{}", config.display()))?;
    let (child, listening) = spawn_up(ferry, &config, work.path()).await?;
    let url = listening.url;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()?;
    let target = Arc::new(format!("{url}{path}"));
    let body = Arc::new(body.to_owned());
    let blast = |until: Instant| {
        let mut tasks = Vec::with_capacity(concurrency);
        for _ in 0..concurrency {
            let (client, target, body) = (client.clone(), target.clone(), body.clone());
            tasks.push(tokio::spawn(async move {
                let mut latency = histogram()?;
                let (mut ok, mut errors) = (0u64, 0u64);
                while Instant::now() < until {
                    let sent = Instant::now();
                    let answer = client
                        .post(target.as_str())
                        .header("content-type", "application/json")
                        .body(body.as_str().to_owned())
                        .send()
                        .await;
                    match answer {
                        Ok(r) if r.status().is_success() => {
                            // Read the body so the connection goes back to the pool.
                            let _ = r.bytes().await;
                            ok += 1;
                            let us = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
                            latency.saturating_record(us.max(1));
                        }
                        _ => errors += 1,
                    }
                }
                anyhow::Ok((ok, errors, latency))
            }));
        }
        tasks
    };
    for t in blast(Instant::now() + Duration::from_secs(1)) {
        t.await??;
    }
    let before = usage(child.id());
    let started = Instant::now();
    let (mut requests, mut errors, mut latency) = (0, 0, histogram()?);
    for t in blast(started + duration) {
        let (ok, failed, h) = t.await??;
        requests += ok;
        errors += failed;
        latency.add(&h)?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let after = usage(child.id());
    anyhow::ensure!(requests > 0, "every request to {target} failed ({errors})");
    drop(child);
    Ok(Ingest {
        config: config.display().to_string(),
        path: path.to_owned(),
        concurrency,
        requests,
        errors,
        seconds,
        requests_per_s: requests as f64 / seconds,
        latency_us: Percentiles::of(&latency),
        server_cpu_s: after.0.zip(before.0).map(|(a, b)| a - b),
        server_peak_rss_mib: after.1,
    })
}
