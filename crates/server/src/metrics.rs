//! The server's metrics, served at `GET /metrics` in the OpenMetrics text format (`prometheus-client`),
//! which Prometheus scrapes natively.
//!
//! ```text
//! ferry_records_in_total{topic}                              counter    records accepted by publishes
//! ferry_bytes_in_total{topic}                                counter    their size (see below)
//! ferry_records_out_total{topic}                             counter    records answered by fetch, group fetch, queue receive
//! ferry_bytes_out_total{topic}                               counter    their size
//! ferry_consumer_lag{group,topic,partition}                  gauge      records after a stream group's committed offset
//! ferry_queue_depth{group,topic}                             gauge      records of a queue group not done yet, leased included
//! ferry_queue_in_flight{group,topic}                         gauge      records of a queue group leased right now
//! ferry_fsync_seconds                                        histogram  fsync latency of the topics' partition logs
//! ferry_http_request_duration_seconds{method,route,status}   histogram  request until its response head
//! ```
//!
//! - A record's size is the size the broker checks against `max_record_bytes`: key, value, header names
//!   and header values, in bytes. Records are counted once the request succeeded (a publish once durable).
//! - Lag and queue gauges are read from the broker at scrape time, so groups that are gone disappear;
//!   lag is reported only for stream groups that committed at least once (before, there is no offset to
//!   measure from).
//! - The fsync histogram is fed by the [`ferry_broker::LogObserver`] of [`Metrics::log_observer`], which
//!   the broker must have been opened with (`ServerOptions::broker_options`); otherwise it stays empty.
//! - Label values are bounded: `topic` and `group` are existing names (counted only after the broker
//!   accepted them), `route` is the matched route template (`/v1/topics/{topic}/records`) or
//!   `unmatched`, `method` one of the standard methods or `other`.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use ferry_broker::{Broker, LogObserver, StoredRecord};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::error::ApiError;
use crate::state::AppState;

/// The content type of the OpenMetrics text format.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TopicLabels {
    topic: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    method: &'static str,
    route: String,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LagLabels {
    group: String,
    topic: String,
    partition: u32,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabels {
    group: String,
    topic: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

#[derive(Debug)]
struct Inner {
    /// Every metric kept between scrapes; the gauges read from the broker are added per scrape.
    registry: Registry,
    records_in: Family<TopicLabels, Counter>,
    bytes_in: Family<TopicLabels, Counter>,
    records_out: Family<TopicLabels, Counter>,
    bytes_out: Family<TopicLabels, Counter>,
    fsync: Histogram,
    http: HistogramFamily<HttpLabels>,
    /// Registries of other parts of the process (pipelines), rendered after ours.
    extra: std::sync::Mutex<Vec<Arc<Registry>>>,
}

/// The metrics of one server. Cheap to clone; every clone is the same set of metrics.
#[derive(Clone)]
pub struct Metrics(Arc<Inner>);

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not the registry: a Debug print of the options would dump every series.
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// 100 µs to about 3.3 s, doubling.
fn fsync_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_1, 2.0, 16))
}

/// 1 ms to about 65 s, doubling: long-polls last up to 60 s.
fn http_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

impl Metrics {
    /// A new, empty set of metrics.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("ferry");
        let records_in = Family::<TopicLabels, Counter>::default();
        let bytes_in = Family::<TopicLabels, Counter>::default();
        let records_out = Family::<TopicLabels, Counter>::default();
        let bytes_out = Family::<TopicLabels, Counter>::default();
        let fsync = fsync_histogram();
        let http: HistogramFamily<HttpLabels> = Family::new_with_constructor(http_histogram);
        registry.register("records_in", "Records accepted by publishes", records_in.clone());
        registry.register(
            "bytes_in",
            "Bytes (key, value, header names and values) of the records accepted by publishes",
            bytes_in.clone(),
        );
        registry.register(
            "records_out",
            "Records answered by fetches, stream group fetches and queue receives",
            records_out.clone(),
        );
        registry.register(
            "bytes_out",
            "Bytes (key, value, header names and values) of the records answered by fetches, stream group \
             fetches and queue receives",
            bytes_out.clone(),
        );
        registry.register_with_unit(
            "fsync",
            "Latency of the fsyncs of the topics' partition logs",
            Unit::Seconds,
            fsync.clone(),
        );
        registry.register_with_unit(
            "http_request_duration",
            "HTTP requests, from arrival to the response head, by method, route template and status",
            Unit::Seconds,
            http.clone(),
        );
        Self(Arc::new(Inner {
            registry,
            records_in,
            bytes_in,
            records_out,
            bytes_out,
            fsync,
            http,
            extra: std::sync::Mutex::new(Vec::new()),
        }))
    }

    /// Serves `registry` at `/metrics` too (the pipelines' per-stage metrics). Its metric names must
    /// not clash with the server's (`ferry_pipeline_*` do not).
    pub fn add_registry(&self, registry: Arc<Registry>) {
        self.0
            .extra
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(registry);
    }

    /// The hook that feeds `ferry_fsync_seconds`: give it to the broker when opening it
    /// (`BrokerOptions::observer`).
    pub fn log_observer(&self) -> Arc<dyn LogObserver> {
        Arc::new(FsyncObserver(self.0.fsync.clone()))
    }

    /// Counts `records` records of `bytes` bytes accepted by a publish to `topic`.
    pub(crate) fn records_in(&self, topic: &str, records: usize, bytes: usize) {
        if records == 0 {
            return;
        }
        let labels = TopicLabels {
            topic: topic.to_string(),
        };
        self.0.records_in.get_or_create(&labels).inc_by(records as u64);
        self.0.bytes_in.get_or_create(&labels).inc_by(bytes as u64);
    }

    /// Counts records answered from `topic` (a fetch, a stream group fetch, a queue receive).
    pub(crate) fn records_out<'a>(&self, topic: &str, records: impl IntoIterator<Item = &'a StoredRecord>) {
        let (count, bytes) = records
            .into_iter()
            .fold((0u64, 0u64), |(n, b), r| (n + 1, b + stored_size(r) as u64));
        if count == 0 {
            return;
        }
        let labels = TopicLabels {
            topic: topic.to_string(),
        };
        self.0.records_out.get_or_create(&labels).inc_by(count);
        self.0.bytes_out.get_or_create(&labels).inc_by(bytes);
    }

    fn observe_http(&self, method: &Method, route: String, status: u16, took: Duration) {
        let labels = HttpLabels {
            method: method_label(method),
            route,
            status,
        };
        self.0.http.get_or_create(&labels).observe(took.as_secs_f64());
    }

    /// The whole exposition: the metrics kept here, then the gauges read from `broker` now.
    fn render(&self, broker: &Broker) -> Result<String, fmt::Error> {
        let mut out = String::new();
        encode_registry(&mut out, &self.0.registry)?;
        encode_registry(&mut out, &group_gauges(broker))?;
        let extra = self
            .0
            .extra
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        for r in &extra {
            encode_registry(&mut out, r)?;
        }
        encode_eof(&mut out)?;
        Ok(out)
    }
}

/// The size the broker counts against `max_record_bytes`, as `records::record_size` does for a publish.
fn stored_size(r: &StoredRecord) -> usize {
    r.value.len()
        + r.key.as_ref().map_or(0, Bytes::len)
        + r.headers
            .iter()
            .map(|h| h.key.len() + h.value.len())
            .sum::<usize>()
}

/// A client picks the method: anything unusual is `other`, so it cannot make up label values.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Gauges hold an `i64`; no count of records comes near its end.
fn gauge_value(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Lag of every stream group, depth and in-flight count of every queue group, as of now. A group whose
/// topic went away between listing and asking is left out.
fn group_gauges(broker: &Broker) -> Registry {
    let lag = Family::<LagLabels, Gauge>::default();
    for (group, topic) in broker.stream_groups() {
        let Ok(partitions) = broker.group_offsets(&group, &topic) else {
            continue;
        };
        for p in partitions {
            let labels = LagLabels {
                group: group.clone(),
                topic: topic.clone(),
                partition: p.partition,
            };
            lag.get_or_create(&labels).set(gauge_value(p.lag));
        }
    }
    let depth = Family::<QueueLabels, Gauge>::default();
    let in_flight = Family::<QueueLabels, Gauge>::default();
    for (group, topic) in broker.queue_groups() {
        let Ok(info) = broker.queue_info(&group, &topic) else {
            continue;
        };
        let labels = QueueLabels { group, topic };
        depth.get_or_create(&labels).set(gauge_value(info.depth));
        in_flight.get_or_create(&labels).set(gauge_value(info.in_flight));
    }
    let mut registry = Registry::with_prefix("ferry");
    registry.register(
        "consumer_lag",
        "Records after the committed offset of a stream group, per partition",
        lag,
    );
    registry.register(
        "queue_depth",
        "Records of a queue group not done yet (neither acknowledged nor dead-lettered), leased ones included",
        depth,
    );
    registry.register(
        "queue_in_flight",
        "Records of a queue group leased right now",
        in_flight,
    );
    registry
}

/// Feeds `ferry_fsync_seconds`; runs on the logs' writer threads.
#[derive(Debug)]
struct FsyncObserver(Histogram);

impl LogObserver for FsyncObserver {
    fn fsynced(&self, took: Duration) {
        self.0.observe(took.as_secs_f64());
    }
}

/// `GET /metrics`.
pub(crate) async fn scrape(State(state): State<AppState>) -> Response {
    match state.metrics().render(state.broker()) {
        Ok(body) => ([(CONTENT_TYPE, HeaderValue::from_static(OPENMETRICS))], body).into_response(),
        Err(e) => ApiError::Internal {
            message: format!("encoding the metrics failed: {e}"),
        }
        .into_response(),
    }
}

/// The middleware behind `ferry_http_request_duration_seconds`. Layered per route (`Router::layer`), so
/// it sees the matched route template.
pub(crate) async fn track(State(metrics): State<Metrics>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |m| m.as_str().to_string());
    tracing::debug!(%method, %route, "request started");
    let response = next.run(req).await;
    metrics.observe_http(&method, route, response.status().as_u16(), started.elapsed());
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_count_key_value_and_headers() {
        let r = StoredRecord {
            partition: 0,
            offset: 0,
            timestamp: 0,
            key: Some(Bytes::from_static(b"kk")),
            headers: vec![ferry_broker::Header {
                key: "h".into(),
                value: Bytes::from_static(b"vvv"),
            }],
            value: Bytes::from_static(b"12345"),
        };
        assert_eq!(stored_size(&r), 2 + 1 + 3 + 5);
        let m = Metrics::new();
        m.records_out("t", [&r, &r]);
        m.records_in("t", 3, 30);
        let text = {
            let mut out = String::new();
            encode_registry(&mut out, &m.0.registry).unwrap();
            out
        };
        for line in [
            r#"ferry_records_out_total{topic="t"} 2"#,
            r#"ferry_bytes_out_total{topic="t"} 22"#,
            r#"ferry_records_in_total{topic="t"} 3"#,
            r#"ferry_bytes_in_total{topic="t"} 30"#,
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
        }
    }

    #[test]
    fn unusual_methods_share_one_label() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::from_bytes(b"BREW").unwrap()), "other");
    }
}
