//! Figures of the client over HTTP against an in-process server, printed as a Markdown table:
//! 1. publish throughput through the [`Producer`] (4 concurrent senders, 512 sends outstanding each,
//!    default batching: linger 5 ms, up to 1000 records or 1 MiB per request, 5 requests in flight),
//!    100 B and 1 KiB values, for a fixed time;
//! 2. consume throughput through a [`StreamConsumer`] reading that topic from the start (pages of up to
//!    10000 records / 16 MiB, a commit after each page);
//! 3. end-to-end latency at a fixed rate: send time -> seen by a long-polling stream consumer, HdrHistogram
//!    percentiles.
//!
//! Each with `fsync = always` (the default: a record is acknowledged after fsync) and `fsync = never`.
//! The server runs on its own multi-thread runtime (2 workers) in this process, the client on another
//! (2 workers), over 127.0.0.1. `FERRY_BENCH_DIR` picks the disk (default: the system's temp dir);
//! `FERRY_BENCH_SECS` the length of each publish and latency run (default 3).
//!
//! `cargo bench -p ferry-client --bench http`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferry_broker::Broker;
use ferry_client::{Client, DeliveryFuture, Fsync, ProduceRecord, ProducerConfig, TopicConfig};
use hdrhistogram::Histogram;
use tokio::net::TcpListener;
use tokio::runtime::Runtime;
use tokio::sync::oneshot;

const SENDERS: usize = 4;
const WINDOW: usize = 512;
const PARTITIONS: u32 = 4;
const LATENCY_RATE: u64 = 1000;

struct Row {
    measure: String,
    fsync: &'static str,
    value: &'static str,
    records: u64,
    per_sec: f64,
    mb_per_sec: f64,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    max_ms: Option<f64>,
}

fn runtime(name: &str) -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(name)
        .enable_all()
        .build()
        .unwrap()
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // test discovery: nothing to list
    }
    let secs: u64 = std::env::var("FERRY_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let root = std::env::var_os("FERRY_BENCH_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
    let dir = tempfile::tempdir_in(&root).unwrap();

    // The server: its own runtime, as in `ferry up`.
    let server_rt = runtime("ferry-server");
    let listener = server_rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let broker = Broker::open(dir.path()).unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let served = server_rt.spawn(ferry_server::serve(broker, listener, async move {
        let _ = stopped.await;
    }));

    let client_rt = runtime("ferry-client");
    let rows = client_rt.block_on(async {
        let client = Client::new(&url).unwrap();
        client.health().await.unwrap();
        let mut rows = Vec::new();
        for (fsync, fsync_name) in [(Fsync::Always, "always"), (Fsync::Never, "never")] {
            for (size, size_name) in [(100usize, "100 B"), (1024, "1 KiB")] {
                let topic = format!("tp-{fsync_name}-{size}");
                create(&client, &topic, PARTITIONS, fsync.clone()).await;
                let (n, took) = publish(&client, &topic, size, Duration::from_secs(secs)).await;
                rows.push(Row {
                    measure: format!("publish: Producer, {SENDERS} senders"),
                    fsync: fsync_name,
                    value: size_name,
                    records: n,
                    per_sec: n as f64 / took.as_secs_f64(),
                    mb_per_sec: (n * size as u64) as f64 / 1e6 / took.as_secs_f64(),
                    p50_ms: None,
                    p99_ms: None,
                    max_ms: None,
                });
                let (n, took) = consume(&client, &topic, n).await;
                rows.push(Row {
                    measure: "consume: StreamConsumer, pre-filled topic".into(),
                    fsync: fsync_name,
                    value: size_name,
                    records: n,
                    per_sec: n as f64 / took.as_secs_f64(),
                    mb_per_sec: (n * size as u64) as f64 / 1e6 / took.as_secs_f64(),
                    p50_ms: None,
                    p99_ms: None,
                    max_ms: None,
                });
            }
            for (linger, (size, size_name)) in [Duration::from_millis(5), Duration::ZERO]
                .into_iter()
                .flat_map(|l| [(100usize, "100 B"), (1024, "1 KiB")].map(|s| (l, s)))
            {
                let topic = format!("lat-{fsync_name}-{}-{size}", linger.as_millis());
                create(&client, &topic, 1, fsync.clone()).await;
                let h = latency(&client, &topic, size, linger, Duration::from_secs(secs)).await;
                let ms = |us: u64| us as f64 / 1000.0;
                rows.push(Row {
                    measure: format!(
                        "end-to-end latency at {LATENCY_RATE} rec/s, linger {} ms",
                        linger.as_millis()
                    ),
                    fsync: fsync_name,
                    value: size_name,
                    records: h.len(),
                    per_sec: LATENCY_RATE as f64,
                    mb_per_sec: (LATENCY_RATE * size as u64) as f64 / 1e6,
                    p50_ms: Some(ms(h.value_at_quantile(0.50))),
                    p99_ms: Some(ms(h.value_at_quantile(0.99))),
                    max_ms: Some(ms(h.max())),
                });
            }
        }
        rows
    });

    let _ = stop.send(());
    server_rt.block_on(served).unwrap().unwrap();

    println!(
        "ferry-client over HTTP/1.1 on 127.0.0.1, server in-process; {} cores; data in {}; {secs} s per \
         publish and latency run; MB/s counts value bytes (10^6 B); fsync=always acknowledges after fsync",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        root.display()
    );
    println!();
    println!("| measure | fsync | value | records | records/s | MB/s | p50 | p99 | max |");
    println!("|---|---|---|---:|---:|---:|---:|---:|---:|");
    let ms = |v: Option<f64>| v.map_or_else(|| "–".to_string(), |v| format!("{v:.2} ms"));
    for r in rows {
        println!(
            "| {} | {} | {} | {} | {:.0} | {:.1} | {} | {} | {} |",
            r.measure,
            r.fsync,
            r.value,
            r.records,
            r.per_sec,
            r.mb_per_sec,
            ms(r.p50_ms),
            ms(r.p99_ms),
            ms(r.max_ms)
        );
    }
}

async fn create(client: &Client, topic: &str, partitions: u32, fsync: Fsync) {
    client
        .create_topic(topic, &TopicConfig::default().partitions(partitions).fsync(fsync))
        .await
        .unwrap();
}

/// A JSON string value whose JSON text is exactly `size` bytes.
fn value(size: usize) -> ProduceRecord {
    let text = format!("\"{}\"", "x".repeat(size - 2));
    ProduceRecord::json_bytes(Bytes::from(text)).unwrap()
}

/// Publishes for `run`, with [`SENDERS`] tasks each keeping [`WINDOW`] sends outstanding; the records
/// acknowledged and the time until the last answer.
async fn publish(client: &Client, topic: &str, size: usize, run: Duration) -> (u64, Duration) {
    let producer = client.producer_with(ProducerConfig::default());
    let record = value(size);
    let started = Instant::now();
    let deadline = started + run;
    let mut tasks = Vec::new();
    for _ in 0..SENDERS {
        let (producer, record, topic) = (producer.clone(), record.clone(), topic.to_string());
        tasks.push(tokio::spawn(async move {
            let mut window: VecDeque<DeliveryFuture> = VecDeque::with_capacity(WINDOW);
            let mut acked = 0u64;
            while Instant::now() < deadline {
                if window.len() >= WINDOW {
                    window.pop_front().unwrap().await.unwrap();
                    acked += 1;
                }
                window.push_back(producer.enqueue(&topic, record.clone()).await);
            }
            for d in window {
                d.await.unwrap();
                acked += 1;
            }
            acked
        }));
    }
    let mut n = 0;
    for t in tasks {
        n += t.await.unwrap();
    }
    let took = started.elapsed();
    producer.close().await;
    (n, took)
}

/// Reads `n` records of `topic` from the start in a new stream group, committing after each page.
async fn consume(client: &Client, topic: &str, n: u64) -> (u64, Duration) {
    let mut consumer = client.stream_consumer(&format!("read-{topic}"), topic);
    consumer.set_max_bytes(16 * 1024 * 1024);
    let started = Instant::now();
    let mut seen = 0u64;
    while seen < n {
        let page = consumer.poll(10_000, Duration::from_secs(1)).await.unwrap();
        assert!(!page.is_empty(), "{seen} of {n} records read, then nothing");
        seen += page.len() as u64;
        consumer.commit(&page).await.unwrap();
    }
    (seen, started.elapsed())
}

/// Sends [`LATENCY_RATE`] records of `size` bytes a second for `run` through a producer with `linger`, each carrying
/// its send time; a long-polling stream consumer records send -> receive in microseconds.
async fn latency(
    client: &Client,
    topic: &str,
    size: usize,
    linger: Duration,
    run: Duration,
) -> Histogram<u64> {
    let base = Instant::now();
    let total = LATENCY_RATE * run.as_secs();
    let mut consumer = client.stream_consumer("latency", topic);
    // The consumer is polling before the first send.
    let reader = tokio::spawn(async move {
        let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
        while h.len() < total {
            for r in consumer.poll(1000, Duration::from_secs(5)).await.unwrap() {
                let now = base.elapsed().as_micros() as u64;
                let sent = r.value_json::<serde_json::Value>().unwrap()["t"]
                    .as_u64()
                    .unwrap();
                h.record(now.saturating_sub(sent).max(1)).unwrap();
            }
        }
        h
    });
    let producer = client.producer_with(ProducerConfig::default().linger(linger));
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / LATENCY_RATE));
    let mut sends = Vec::with_capacity(total as usize);
    for _ in 0..total {
        tick.tick().await;
        let t = base.elapsed().as_micros() as u64;
        // Padded to a value of `size` bytes.
        let head = format!(r#"{{"t":{t},"p":""#);
        let pad = "x".repeat(size - head.len() - 2);
        let record = ProduceRecord::json_bytes(format!(r#"{head}{pad}"}}"#)).unwrap();
        sends.push(producer.send(topic, record));
    }
    for s in sends {
        s.await.unwrap();
    }
    producer.close().await;
    reader.await.unwrap()
}
