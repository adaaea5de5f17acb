//! The workloads: publish only, consume only (what the publish stored), and both at once with
//! end-to-end latency. Each runs for a time rather than a count, so that one command fits peers whose
//! speeds differ a hundredfold.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use bytes::Bytes;
use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::peer::{Durability, Peer};

/// What a workload does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Producers publish as fast as confirms come back, keeping `window` unconfirmed each.
    Publish,
    /// Consumers read and acknowledge what the publish stored.
    Consume,
    /// Both at once; latency is from send to receipt.
    Both,
    /// Both at once at a fixed rate (`Shape::rate`), well below saturation: latency from the time each
    /// message was due to be sent to its receipt, so a stall counts for every message it held up.
    Paced,
}

impl Kind {
    /// Every workload, in the order a round runs them.
    pub const ALL: [Self; 4] = [Self::Publish, Self::Consume, Self::Both, Self::Paced];

    /// How tables name it.
    pub fn label(self) -> &'static str {
        match self {
            Self::Publish => "publish",
            Self::Consume => "consume",
            Self::Both => "publish+consume",
            Self::Paced => "publish+consume, fixed rate",
        }
    }
}

/// The shape of one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Shape {
    /// Bytes per message.
    pub size: usize,
    /// Producers, each with its own connection.
    pub producers: usize,
    /// Consumers, each with its own connection.
    pub consumers: usize,
    /// Unconfirmed publishes each producer keeps in flight.
    pub window: usize,
    /// How long producers publish.
    #[serde(serialize_with = "millis")]
    pub duration: Duration,
    /// Messages per second of all producers together in the fixed-rate workload; `None` skips it.
    pub rate: Option<u64>,
}

fn millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Latency percentiles, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: u64,
    /// 90th.
    pub p90: u64,
    /// 99th.
    pub p99: u64,
    /// 99.9th.
    pub p999: u64,
    /// Largest.
    pub max: u64,
}

impl Percentiles {
    pub(crate) fn of(h: &Histogram<u64>) -> Option<Self> {
        (!h.is_empty()).then(|| Self {
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        })
    }
}

/// What one workload measured on one peer.
#[derive(Debug, Clone, Serialize)]
pub struct Measured {
    /// The peer.
    pub peer: String,
    /// Its durability class.
    pub durability: Durability,
    /// The workload.
    pub kind: Kind,
    /// Its shape.
    pub shape: Shape,
    /// Messages published and confirmed (publish), or received (consume, both).
    pub messages: u64,
    /// How long it took.
    pub seconds: f64,
    /// Messages per second.
    pub msgs_per_s: f64,
    /// Payload megabytes (10^6) per second.
    pub mb_per_s: f64,
    /// Publish: send to confirm. Both: send to receipt. Consume: none.
    pub latency_us: Option<Percentiles>,
    /// CPU seconds the peer's server spent (user + system), when it runs in a process of its own.
    pub server_cpu_s: Option<f64>,
    /// The server's peak resident memory so far, MiB.
    pub server_peak_rss_mib: Option<f64>,
}

pub(crate) fn histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, 600_000_000, 3).context("a latency histogram")
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Smallest message: the quotes, the stamp and its dash.
pub const MIN_SIZE: usize = 24;

/// Messages of one size: a template made once, stamped per message.
#[derive(Debug, Clone)]
pub struct Payloads {
    template: Vec<u8>,
}

impl Payloads {
    /// Messages of `size` bytes (at least [`MIN_SIZE`]).
    pub fn new(size: usize) -> Self {
        let size = size.max(MIN_SIZE);
        let filler = b"abcdefghijklmnopqrstuvwxyz0123456789";
        let mut template: Vec<u8> = (0..size).map(|i| filler[i % filler.len()]).collect();
        template[0] = b'"';
        template[21] = b'-';
        template[size - 1] = b'"';
        Self { template }
    }

    /// A JSON string that starts with the time it was made (ns since the epoch), so a consumer can tell
    /// how long it took: `"01234567890123456789-xxxx..."`.
    pub fn next(&self) -> Bytes {
        self.stamped(now_ns())
    }

    /// A message that says it was made at `ns` (since the epoch).
    pub fn stamped(&self, ns: u64) -> Bytes {
        let mut v = self.template.clone();
        let stamp = format!("{ns:020}");
        v[1..21].copy_from_slice(&stamp.as_bytes()[..20]);
        Bytes::from(v)
    }
}

/// One message of `size` bytes; see [`Payloads::next`].
pub fn payload(size: usize) -> Bytes {
    Payloads::new(size).next()
}

/// When `payload` was made, ns since the epoch.
pub fn stamp(payload: &[u8]) -> Option<u64> {
    std::str::from_utf8(payload.get(1..21)?).ok()?.parse().ok()
}

/// CPU seconds and peak RSS (MiB) of process `pid`, from /proc.
pub(crate) fn usage(pid: Option<u32>) -> (Option<f64>, Option<f64>) {
    let Some(pid) = pid else {
        return (None, None);
    };
    let cpu = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // Fields after the command name, which is in parentheses and may hold spaces.
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            let (utime, stime): (u64, u64) = (f.get(11)?.parse().ok()?, f.get(12)?.parse().ok()?);
            // Linux reports clock ticks of 1/100 s (USER_HZ) on every architecture it runs on here.
            Some((utime + stime) as f64 / 100.0)
        });
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
            let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kb / 1024.0)
        });
    (cpu, rss)
}

struct Tally {
    count: u64,
    latency: Histogram<u64>,
}

/// Publishes for `shape.duration` with every producer; returns how many were confirmed, their
/// send-to-confirm latencies and the time from the first send to the last confirm.
///
/// With `rate`, the producers together send that many messages per second, each message due at its
/// slot in the schedule: its stamp and its latency count from when it was due when it went late (a
/// producer held up by a slow confirm is charged for it: no coordinated omission), from when it went
/// when early. Messages still due but unsent when the time is up are not sent, and not counted.
async fn publish(
    peer: &Arc<dyn Peer>,
    name: &str,
    shape: Shape,
    rate: Option<u64>,
) -> anyhow::Result<(Tally, Duration)> {
    let mut producers = Vec::with_capacity(shape.producers);
    for _ in 0..shape.producers {
        producers.push(peer.producer(name).await?);
    }
    let started = Instant::now();
    let started_ns = now_ns();
    let deadline = started + shape.duration;
    // Each producer's gap between two sends.
    let gap = rate.map(|r| Duration::from_secs_f64(shape.producers as f64 / r.max(1) as f64));
    let mut tasks = Vec::new();
    for (n, mut p) in producers.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally {
                count: 0,
                latency: histogram()?,
            };
            let payloads = Payloads::new(shape.size);
            let mut inflight = FuturesUnordered::new();
            let settle = |done: Option<anyhow::Result<Duration>>, tally: &mut Tally| -> anyhow::Result<()> {
                if let Some(done) = done {
                    let took = done?;
                    tally.count += 1;
                    let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX).max(1);
                    tally.latency.saturating_record(us);
                }
                Ok(())
            };
            // Paced producers start spread over one gap, not all at once.
            let mut due = gap.map(|g| started + g.mul_f64(n as f64 / shape.producers as f64));
            while Instant::now() < deadline {
                let (sent, payload) = match (&mut due, gap) {
                    (Some(at), Some(g)) => {
                        let this = *at;
                        *at += g;
                        if this >= deadline {
                            break;
                        }
                        // Tokio's timer ticks in milliseconds, and a sleep ends on the tick after its
                        // instant: sleep to the tick before, and send up to 1 ms early rather than
                        // charge every message up to 1 ms of the bench's own lateness.
                        if let Some(early) = this.checked_sub(Duration::from_millis(1))
                            && early > Instant::now()
                        {
                            tokio::time::sleep_until(early.into()).await;
                        }
                        // Latency counts from when it went (if early) or was due (if late).
                        let from = this.min(Instant::now());
                        let ns = started_ns
                            + u64::try_from(from.saturating_duration_since(started).as_nanos()).unwrap_or(0);
                        (from, payloads.stamped(ns))
                    }
                    _ => (Instant::now(), payloads.next()),
                };
                let confirm = p.send(payload).await?;
                inflight.push(async move { confirm.await.map(|()| sent.elapsed()) });
                while inflight.len() >= shape.window {
                    settle(inflight.next().await, &mut tally)?;
                }
            }
            while let Some(done) = inflight.next().await {
                settle(Some(done), &mut tally)?;
            }
            anyhow::Ok(tally)
        }));
    }
    let mut total = Tally {
        count: 0,
        latency: histogram()?,
    };
    for t in tasks {
        let tally = t.await??;
        total.count += tally.count;
        total.latency.add(&tally.latency)?;
    }
    Ok((total, started.elapsed()))
}

/// How long consumers wait for a missing message once the producers stopped.
const PATIENCE: Duration = Duration::from_secs(10);

/// Consumes `expected` messages with every consumer (once `producing` is false); returns how many,
/// their send-to-receipt latencies, when the consumers started, and when the last message came.
async fn consume(
    peer: &Arc<dyn Peer>,
    name: &str,
    consumers: usize,
    expected: Arc<AtomicU64>,
    producing: Arc<AtomicBool>,
) -> anyhow::Result<(Tally, Instant, Instant)> {
    let mut cs = Vec::with_capacity(consumers);
    for _ in 0..consumers {
        cs.push(peer.consumer(name).await?);
    }
    let received = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for mut c in cs {
        let (received, expected, producing) = (received.clone(), expected.clone(), producing.clone());
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally {
                count: 0,
                latency: histogram()?,
            };
            let mut last = Instant::now();
            let mut stopped: Option<Instant> = None;
            loop {
                let done = received.load(Ordering::Acquire);
                if !producing.load(Ordering::Acquire) {
                    if done >= expected.load(Ordering::Acquire) {
                        break;
                    }
                    let since = *stopped.get_or_insert_with(Instant::now);
                    // Nothing more for a while after the producers stopped: some messages are missing.
                    anyhow::ensure!(
                        last.max(since).elapsed() < PATIENCE,
                        "received {} of {} messages, then nothing for {PATIENCE:?}",
                        received.load(Ordering::Acquire),
                        expected.load(Ordering::Acquire)
                    );
                }
                let got = c.next(1000, Duration::from_millis(200)).await?;
                if got.is_empty() {
                    continue;
                }
                last = Instant::now();
                let now = now_ns();
                for m in &got {
                    if let Some(sent) = stamp(m) {
                        tally
                            .latency
                            .saturating_record((now.saturating_sub(sent) / 1000).max(1));
                    }
                }
                tally.count += got.len() as u64;
                received.fetch_add(got.len() as u64, Ordering::AcqRel);
            }
            c.finish().await?;
            let last = (tally.count > 0).then_some(last);
            anyhow::Ok((tally, last))
        }));
    }
    let mut total = Tally {
        count: 0,
        latency: histogram()?,
    };
    // The time runs to the last message received, not to when the consumers noticed they were done.
    let mut last = started;
    for t in tasks {
        let (tally, at) = t.await??;
        total.count += tally.count;
        total.latency.add(&tally.latency)?;
        last = last.max(at.unwrap_or(started));
    }
    Ok((total, started, last))
}

fn measured(
    peer: &Arc<dyn Peer>,
    kind: Kind,
    shape: Shape,
    tally: &Tally,
    took: Duration,
    before: (Option<f64>, Option<f64>),
) -> Measured {
    let seconds = took.as_secs_f64().max(1e-9);
    let after = usage(peer.server_pid());
    Measured {
        peer: peer.name(),
        durability: peer.durability(),
        kind,
        shape,
        messages: tally.count,
        seconds,
        msgs_per_s: tally.count as f64 / seconds,
        mb_per_s: (tally.count as f64 * shape.size as f64) / seconds / 1e6,
        latency_us: if kind == Kind::Consume {
            None
        } else {
            Percentiles::of(&tally.latency)
        },
        server_cpu_s: after.0.zip(before.0).map(|(a, b)| a - b),
        server_peak_rss_mib: after.1,
    }
}

/// `phase` with a limit: a peer that stops answering (a RabbitMQ memory alarm holding confirms) fails
/// the cell instead of hanging the run.
async fn limited<T>(
    what: &str,
    limit: Duration,
    phase: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    tokio::time::timeout(limit, phase)
        .await
        .map_err(|_| anyhow::anyhow!("{what} took more than {limit:?}"))?
}

/// Writes the machine's dirty pages back (`sync`) before a measured phase, so that no system pays for
/// the writeback of what the one before it wrote: a saturating run leaves up to gigabytes in the page
/// cache, and their writeback competes for the two CPUs and the disk with whatever runs next (the
/// fixed-rate phase after ferry's saturating publish+consume, not after JetStream's slower one). Best
/// effort: without `sync` on the PATH the phase starts anyway.
async fn settle() {
    match tokio::process::Command::new("sync").status().await {
        Ok(status) if status.success() => {}
        other => tracing::debug!(?other, "sync before a phase failed"),
    }
}

/// Runs the `kinds` asked for, in this order: publish only, then consume only of what it stored (a
/// consume runs the publish that fills its topic, measured or not), then both at once, then (with
/// `shape.rate`) both at once at that fixed rate, each on a fresh destination removed afterwards;
/// returns the measurements in that order.
///
/// # Errors
/// The peer failing, or messages missing.
pub async fn round(
    peer: &Arc<dyn Peer>,
    name: &str,
    shape: Shape,
    kinds: &[Kind],
) -> anyhow::Result<Vec<Measured>> {
    let limit = shape.duration * 4 + Duration::from_secs(60);
    let mut all = Vec::new();
    if kinds.contains(&Kind::Publish) || kinds.contains(&Kind::Consume) {
        // Publish only, then consume what it stored.
        peer.prepare(name).await?;
        settle().await;
        let before = usage(peer.server_pid());
        let (published, took) = limited("publishing", limit, publish(peer, name, shape, None)).await?;
        if kinds.contains(&Kind::Publish) {
            all.push(measured(peer, Kind::Publish, shape, &published, took, before));
        }
        if kinds.contains(&Kind::Consume) {
            settle().await;
            let before = usage(peer.server_pid());
            let expected = Arc::new(AtomicU64::new(published.count));
            let producing = Arc::new(AtomicBool::new(false));
            let consuming = consume(peer, name, shape.consumers, expected, producing);
            let (consumed, started, last) = limited("consuming", limit, consuming).await?;
            anyhow::ensure!(
                consumed.count >= published.count,
                "{}: consumed {} of {} messages",
                peer.name(),
                consumed.count,
                published.count
            );
            all.push(measured(
                peer,
                Kind::Consume,
                shape,
                &consumed,
                last - started,
                before,
            ));
        }
        peer.remove(name).await?;
    }
    if kinds.contains(&Kind::Both) {
        all.push(both(peer, &format!("{name}-both"), shape, None).await?);
    }
    if let Some(rate) = shape.rate.filter(|_| kinds.contains(&Kind::Paced)) {
        all.push(both(peer, &format!("{name}-paced"), shape, Some(rate)).await?);
    }
    Ok(all)
}

/// Publish and consume at once (at `rate` if given): consumers start first and read until every
/// confirmed message came; the time runs from the first publish to the last receipt.
async fn both(peer: &Arc<dyn Peer>, name: &str, shape: Shape, rate: Option<u64>) -> anyhow::Result<Measured> {
    let limit = shape.duration * 4 + Duration::from_secs(60);
    peer.prepare(name).await?;
    settle().await;
    let before = usage(peer.server_pid());
    let expected = Arc::new(AtomicU64::new(u64::MAX));
    let producing = Arc::new(AtomicBool::new(true));
    let reader = {
        let (peer, name) = (peer.clone(), name.to_owned());
        let (expected, producing) = (expected.clone(), producing.clone());
        tokio::spawn(async move { consume(&peer, &name, shape.consumers, expected, producing).await })
    };
    let publish_started = Instant::now();
    let published = limited("publishing", limit, publish(peer, name, shape, rate)).await;
    let count = published.as_ref().map_or(0, |(t, _)| t.count);
    expected.store(count, Ordering::Release);
    producing.store(false, Ordering::Release);
    let (consumed, _, last) = limited("consuming", limit, async { reader.await? }).await?;
    published?;
    let took = last.saturating_duration_since(publish_started);
    let kind = if rate.is_some() { Kind::Paced } else { Kind::Both };
    let m = measured(peer, kind, shape, &consumed, took, before);
    peer.remove(name).await?;
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_are_json_strings_of_the_size_asked_that_tell_when_they_were_made() {
        for size in [32, 100, 1024, 16 * 1024] {
            let before = now_ns();
            let p = payload(size);
            assert_eq!(p.len(), size);
            let v: serde_json::Value = serde_json::from_slice(&p).unwrap();
            assert!(v.is_string());
            let at = stamp(&p).unwrap();
            assert!(at >= before && at <= now_ns());
        }
    }
}
