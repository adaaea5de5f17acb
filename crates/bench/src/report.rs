//! Tables, JSON and ratio lines of a benchmark run.

use std::fmt::Write as _;

use serde::Serialize;

use crate::peer::Durability;
use crate::run::{Kind, Measured, Shape};

/// One cell of the results: a workload on a peer, the median of its repetitions.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// The repetition with the median throughput.
    pub median: Measured,
    /// Lowest throughput of the repetitions, messages per second.
    pub min_msgs_per_s: f64,
    /// Highest.
    pub max_msgs_per_s: f64,
    /// Repetitions.
    pub repetitions: usize,
}

impl Row {
    /// The median of `reps` (one workload on one peer), `None` when there are none.
    pub fn of(mut reps: Vec<Measured>) -> Option<Self> {
        reps.sort_by(|a, b| a.msgs_per_s.total_cmp(&b.msgs_per_s));
        let min = reps.first()?.msgs_per_s;
        let max = reps.last()?.msgs_per_s;
        let n = reps.len();
        let median = reps.swap_remove(n / 2);
        Some(Self {
            median,
            min_msgs_per_s: min,
            max_msgs_per_s: max,
            repetitions: n,
        })
    }

    fn same_cell(&self, other: &Self) -> bool {
        let (a, b) = (&self.median, &other.median);
        a.kind == b.kind && a.durability == b.durability && a.shape == b.shape
    }
}

fn si(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.2}M", x / 1e6)
    } else if x >= 1e3 {
        format!("{:.1}k", x / 1e3)
    } else {
        format!("{x:.0}")
    }
}

fn size(bytes: usize) -> String {
    if bytes >= 1024 && bytes.is_multiple_of(1024) {
        format!("{} KiB", bytes / 1024)
    } else {
        format!("{bytes} B")
    }
}

fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}

/// `rows` as a Markdown table, one line per cell, peers of a cell together.
pub fn markdown(rows: &[Row]) -> String {
    let mut out = String::from(
        "| durability | workload | size | prod/cons | peer | msgs/s (min-max) | MB/s | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | server CPU (cores) | server RSS, peak so far (MiB) |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let m = &r.median;
        let l = m.latency_us;
        let lat = |f: fn(&crate::run::Percentiles) -> u64| l.as_ref().map_or("-".into(), |p| ms(f(p)));
        let _ = writeln!(
            out,
            "| {} | {} | {} | {}/{} | {} | {} ({}-{}) | {:.1} | {} | {} | {} | {} | {} | {} | {} |",
            m.durability.label(),
            m.kind.label(),
            size(m.shape.size),
            m.shape.producers,
            m.shape.consumers,
            m.peer,
            si(m.msgs_per_s),
            si(r.min_msgs_per_s),
            si(r.max_msgs_per_s),
            m.mb_per_s,
            lat(|p| p.p50),
            lat(|p| p.p90),
            lat(|p| p.p99),
            lat(|p| p.p999),
            lat(|p| p.max),
            m.server_cpu_s
                .map_or("-".into(), |c| format!("{:.2}", c / m.seconds)),
            m.server_peak_rss_mib.map_or("-".into(), |r| format!("{r:.0}")),
        );
    }
    out
}

/// One line per peer and cell: ferry's throughput over the peer's (and p99 where both have one).
/// `ferry` names the peer the others are compared with.
pub fn ratios(rows: &[Row], ferry: &str) -> Vec<String> {
    let mut lines = Vec::new();
    for f in rows.iter().filter(|r| r.median.peer == ferry) {
        // Against the other systems only: ferry's own two ways in are both in the table.
        for other in rows
            .iter()
            .filter(|r| !r.median.peer.starts_with("ferry") && r.same_cell(f))
        {
            let (a, b) = (&f.median, &other.median);
            let mut line = format!(
                "{} / {}: {:.2}x msgs/s ({} vs {}), {} {} {}, {}",
                a.peer,
                b.peer,
                a.msgs_per_s / b.msgs_per_s.max(1e-9),
                si(a.msgs_per_s),
                si(b.msgs_per_s),
                a.kind.label(),
                size(a.shape.size),
                shape_label(a.shape),
                a.durability.label()
            );
            if let (Some(pa), Some(pb)) = (a.latency_us, b.latency_us) {
                let _ = write!(line, "; p99 {} ms vs {} ms", ms(pa.p99), ms(pb.p99));
            }
            lines.push(line);
        }
    }
    lines
}

/// One line per other system, durability class and shape: ferry's throughput over the system's in each
/// workload. `ferry` names the peer the others are compared with. (No latencies: they are measured at
/// saturation with a fixed window, where they follow from throughput.)
pub fn summary(rows: &[Row], ferry: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut seen: Vec<(String, Durability, Shape)> = Vec::new();
    for other in rows.iter().filter(|r| !r.median.peer.starts_with("ferry")) {
        let o = &other.median;
        let key = (o.peer.clone(), o.durability, o.shape);
        if seen.contains(&key) {
            continue;
        }
        seen.push(key);
        let mut parts = Vec::new();
        for kind in [Kind::Publish, Kind::Consume, Kind::Both] {
            let cell = |peer: &str| {
                rows.iter().map(|r| &r.median).find(|m| {
                    m.peer == peer && m.kind == kind && m.durability == o.durability && m.shape == o.shape
                })
            };
            if let (Some(f), Some(x)) = (cell(ferry), cell(&o.peer)) {
                parts.push(format!(
                    "{} {:.2}x",
                    kind.label(),
                    f.msgs_per_s / x.msgs_per_s.max(1e-9)
                ));
            }
        }
        if parts.is_empty() {
            continue;
        }
        lines.push(format!(
            "{ferry} / {}, {}, {} {}: {}",
            o.peer,
            o.durability.label(),
            size(o.shape.size),
            shape_label(o.shape),
            parts.join(", ")
        ));
    }
    lines
}

fn shape_label(s: Shape) -> String {
    format!("{}p/{}c", s.producers, s.consumers)
}

/// Durability classes a peer could not be measured in, and why: part of every report.
#[derive(Debug, Clone, Serialize)]
pub struct Unmeasured {
    /// The peer.
    pub peer: String,
    /// The class.
    pub durability: Durability,
    /// Why.
    pub reason: String,
}

/// The whole run, as JSON.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// When, RFC 3339.
    pub when: String,
    /// The machine: CPUs and kernel.
    pub machine: String,
    /// The cells.
    pub rows: Vec<Row>,
    /// What could not be measured.
    pub unmeasured: Vec<Unmeasured>,
    /// The ratio lines, one per workload.
    pub ratios: Vec<String>,
    /// The ratio lines, one per system, class and shape.
    pub summary: Vec<String>,
    /// HTTP ingest, when measured.
    pub ingest: Option<crate::ingest::Ingest>,
}

/// `kind`'s rows first, for tables that read top-down.
pub fn order(rows: &mut [Row]) {
    let rank = |k: Kind| match k {
        Kind::Publish => 0,
        Kind::Consume => 1,
        Kind::Both => 2,
    };
    rows.sort_by(|a, b| {
        let (a, b) = (&a.median, &b.median);
        (
            a.durability as u8,
            a.shape.size,
            a.shape.producers,
            a.shape.consumers,
            rank(a.kind),
        )
            .cmp(&(
                b.durability as u8,
                b.shape.size,
                b.shape.producers,
                b.shape.consumers,
                rank(b.kind),
            ))
    });
}
