//! Tables, JSON and ratio lines of a benchmark run.

use std::fmt::Write as _;

use serde::Serialize;

use crate::peer::Durability;
use crate::run::{Kind, Measured, Shape};

/// One cell of the results: a workload on a peer, the median of its repetitions.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// The repetition with the median throughput (at a fixed rate: with the median p99).
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
        // At a fixed rate the throughput is the rate: the median is the repetition with the median p99.
        if reps.first()?.kind == Kind::Paced {
            reps.sort_by_key(|m| m.latency_us.map_or(u64::MAX, |l| l.p99));
        } else {
            reps.sort_by(|a, b| a.msgs_per_s.total_cmp(&b.msgs_per_s));
        }
        let min = reps.iter().map(|m| m.msgs_per_s).min_by(f64::total_cmp)?;
        let max = reps.iter().map(|m| m.msgs_per_s).max_by(f64::total_cmp)?;
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
/// saturating workload (their latencies follow from throughput there, so they are left out), and the
/// end-to-end p99 of both at the fixed rate, where the latencies are what differs.
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
        for kind in [Kind::Publish, Kind::Consume, Kind::Both, Kind::Paced] {
            let cell = |peer: &str| {
                rows.iter().map(|r| &r.median).find(|m| {
                    m.peer == peer && m.kind == kind && m.durability == o.durability && m.shape == o.shape
                })
            };
            if kind == Kind::Paced {
                if let (Some(f), Some(x)) = (cell(ferry), cell(&o.peer))
                    && let (Some(fl), Some(xl), Some(rate)) = (f.latency_us, x.latency_us, o.shape.rate)
                {
                    parts.push(format!(
                        "p99 at {}/s {} ms vs {} ms",
                        si(rate as f64),
                        ms(fl.p99),
                        ms(xl.p99)
                    ));
                }
            } else if let (Some(f), Some(x)) = (cell(ferry), cell(&o.peer)) {
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
        Kind::Paced => 3,
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

/// Escapes text for SVG.
fn xml(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A bar chart of `rows` as SVG: one group per durability class, workload and shape, one bar per peer
/// (messages per second, the median; a whisker for the spread), each group scaled to its own tallest bar
/// so that the ratios read at a glance. Written by hand: a few rectangles and labels need no plotting
/// library and no fonts.
pub fn svg(rows: &[Row]) -> String {
    const COLOURS: [&str; 6] = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"];
    let mut peers: Vec<&str> = Vec::new();
    for r in rows {
        if !peers.contains(&r.median.peer.as_str()) {
            peers.push(&r.median.peer);
        }
    }
    let mut groups: Vec<Vec<&Row>> = Vec::new();
    for r in rows {
        match groups.iter_mut().find(|g| g[0].same_cell(r)) {
            Some(g) => g.push(r),
            None => groups.push(vec![r]),
        }
    }
    let (bar, gap, height, top, left) = (22.0, 28.0, 160.0, 40.0, 20.0);
    let group_width = |g: &Vec<&Row>| g.len() as f64 * bar + gap;
    let width = left * 2.0 + groups.iter().map(group_width).sum::<f64>();
    let legend = 20.0 * peers.len() as f64;
    let total_height = top + height + 70.0 + legend;
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" height=\"{total_height:.0}\" \
         font-family=\"sans-serif\" font-size=\"11\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{left}\" y=\"20\" font-size=\"14\">ferry bench: messages/s, median of the repetitions \
         (whisker: min-max); each group scaled to its fastest</text>\n"
    );
    let mut x = left;
    for g in &groups {
        let most = g.iter().map(|r| r.max_msgs_per_s).fold(1.0, f64::max);
        for (i, r) in g.iter().enumerate() {
            let m = &r.median;
            let colour = COLOURS[peers.iter().position(|p| *p == m.peer).unwrap_or(0) % COLOURS.len()];
            let h = m.msgs_per_s / most * height;
            let bx = x + i as f64 * bar;
            let _ = writeln!(
                out,
                "<rect x=\"{bx:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{h:.1}\" fill=\"{colour}\">\
                 <title>{}: {:.0} msgs/s</title></rect>",
                top + height - h,
                bar - 2.0,
                xml(&m.peer),
                m.msgs_per_s
            );
            let (lo, hi) = (r.min_msgs_per_s / most * height, r.max_msgs_per_s / most * height);
            let cx = bx + (bar - 2.0) / 2.0;
            let _ = writeln!(
                out,
                "<line x1=\"{cx:.1}\" x2=\"{cx:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"black\"/>",
                top + height - lo,
                top + height - hi
            );
            let _ = writeln!(
                out,
                "<text x=\"{cx:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"9\">{}</text>",
                top + height - h - 4.0,
                si(m.msgs_per_s)
            );
        }
        let m = &g[0].median;
        let cx = x + g.len() as f64 * bar / 2.0;
        for (k, line) in [
            m.kind.label().to_string(),
            format!("{} {}", size(m.shape.size), shape_label(m.shape)),
            m.durability.label().to_string(),
        ]
        .iter()
        .enumerate()
        {
            let _ = writeln!(
                out,
                "<text x=\"{cx:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
                top + height + 16.0 + 13.0 * k as f64,
                xml(line)
            );
        }
        x += group_width(g);
    }
    for (i, p) in peers.iter().enumerate() {
        let y = top + height + 62.0 + 20.0 * i as f64;
        let _ = writeln!(
            out,
            "<rect x=\"{left}\" y=\"{:.1}\" width=\"12\" height=\"12\" fill=\"{}\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            y - 10.0,
            COLOURS[i % COLOURS.len()],
            left + 18.0,
            y,
            xml(p)
        );
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::{Measured, Shape};

    fn row(peer: &str, msgs: f64) -> Row {
        Row {
            median: Measured {
                peer: peer.into(),
                durability: Durability::Background,
                kind: Kind::Publish,
                shape: Shape {
                    size: 1024,
                    producers: 1,
                    consumers: 1,
                    window: 256,
                    duration: std::time::Duration::from_secs(1),
                    rate: None,
                },
                messages: 10,
                seconds: 1.0,
                msgs_per_s: msgs,
                mb_per_s: 0.0,
                latency_us: None,
                server_cpu_s: None,
                server_peak_rss_mib: None,
            },
            min_msgs_per_s: msgs * 0.9,
            max_msgs_per_s: msgs * 1.1,
            repetitions: 3,
        }
    }

    #[test]
    fn the_chart_has_a_bar_per_peer_scaled_to_the_fastest_and_escapes_names() {
        let chart = svg(&[row("ferry <a&b>", 200.0), row("NATS", 100.0)]);
        assert!(chart.starts_with("<svg"));
        assert!(chart.contains("ferry &lt;a&amp;b&gt;: 200 msgs/s"), "{chart}");
        assert!(chart.contains("NATS: 100 msgs/s"), "{chart}");
        // The fastest bar's whisker top is 1.1x it: heights 200/220 and 100/220 of 160 px.
        assert!(chart.contains("height=\"145.5\""), "{chart}");
        assert!(chart.contains("height=\"72.7\""), "{chart}");
    }
}
