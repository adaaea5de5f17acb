//! Running pipelines: each stage is a task that reads its input topic as the queue group
//! `<pipeline>.<stage>`, so any number of processes running the same stage share its work.
//!
//! ```text
//! source ──> <p>.<source> ──> processor 1 ──> <p>.<proc1> ──> ... ──> <p>.<procN> ──┬─> sink A
//!                                                                                  └─> sink B
//! ```
//! A `topic` source is read directly (no copy). Each sink reads the last topic as its own group, so
//! every sink gets every record.
//!
//! Delivery is at-least-once. A record is acked only after (processors) every output was published
//! durably, or (sinks) the sink confirmed it. A failure is retried with exponential backoff and jitter
//! while the record's lease is extended; after the last attempt the record goes to `<p>.dlq` with the
//! error in its headers, and is acked. A crash leaves records leased; their leases run out and they
//! are delivered again. A failure of the broker itself (publishing outputs, a dead-letter) is never
//! blamed on a record: the records are given back (nack) and come again.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use rand::Rng;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::bus::{GroupSettings, InRecord, OutRecord, SharedBus};
use crate::component::{Batching, BuildContext, Output, Processor, Sink};
use crate::config::{PipelineConfig, RetryConfig, SourceConfig};
use crate::error::StageError;
use crate::event::{Event, Origin, headers};

/// Records asked for per receive.
const RECEIVE_BATCH: usize = 100;
/// Longest a receive waits for the first record (also how quickly a stage notices cancellation).
const RECEIVE_WAIT: Duration = Duration::from_millis(500);

/// The topic a stage publishes to.
pub fn stage_topic(pipeline: &str, stage: &str) -> String {
    format!("{pipeline}.{stage}")
}

/// The queue group `ferry dlq replay` reads `<pipeline>.dlq` with.
pub const DLQ_REPLAY_GROUP: &str = ferry_broker::engine_policies::DEAD_LETTER_GROUP;

/// The dead-letter topic of a pipeline.
pub fn dlq_topic(pipeline: &str) -> String {
    format!("{pipeline}.dlq")
}

/// What a stage does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StageKind {
    /// The source.
    Source,
    /// Processor number `i`.
    Processor(usize),
    /// Sink number `i`.
    Sink(usize),
}

/// Where a stage reads and writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagePlan {
    /// Stage name.
    pub name: String,
    /// What it is.
    pub kind: StageKind,
    /// Topic read (none for the source).
    pub input: Option<String>,
    /// Queue group it reads as: `<pipeline>.<stage>`.
    pub group: String,
    /// Topic written (the source's and processors'; none for sinks).
    pub output: Option<String>,
}

/// The topics and groups of a pipeline.
pub fn plan(p: &PipelineConfig) -> Vec<StagePlan> {
    let source_topic = match &p.source.component {
        SourceConfig::Topic(t) => t.topic.clone(),
        SourceConfig::Http(h) => h
            .topic
            .clone()
            .unwrap_or_else(|| stage_topic(&p.name, &p.source.name)),
        SourceConfig::Generate(g) => g
            .topic
            .clone()
            .unwrap_or_else(|| stage_topic(&p.name, &p.source.name)),
        SourceConfig::RabbitMq(_) | SourceConfig::Nats(_) => stage_topic(&p.name, &p.source.name),
    };
    let mut out = vec![StagePlan {
        name: p.source.name.clone(),
        kind: StageKind::Source,
        input: None,
        group: stage_topic(&p.name, &p.source.name),
        output: Some(source_topic.clone()),
    }];
    let mut last = source_topic;
    for (i, s) in p.processors.iter().enumerate() {
        let output = stage_topic(&p.name, &s.name);
        out.push(StagePlan {
            name: s.name.clone(),
            kind: StageKind::Processor(i),
            input: Some(last.clone()),
            group: stage_topic(&p.name, &s.name),
            output: Some(output.clone()),
        });
        last = output;
    }
    for (i, s) in p.sinks.iter().enumerate() {
        out.push(StagePlan {
            name: s.name.clone(),
            kind: StageKind::Sink(i),
            input: Some(last.clone()),
            group: stage_topic(&p.name, &s.name),
            output: None,
        });
    }
    out
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StageLabels {
    pipeline: String,
    stage: String,
}

/// Per-stage counters and latency, served at `/metrics` as `ferry_pipeline_*`.
#[derive(Debug, Clone)]
pub struct PipelineMetrics {
    registry: Arc<Registry>,
    records_in: Family<StageLabels, Counter>,
    records_out: Family<StageLabels, Counter>,
    filtered: Family<StageLabels, Counter>,
    failed: Family<StageLabels, Counter>,
    retried: Family<StageLabels, Counter>,
    latency: Family<StageLabels, Histogram>,
}

impl Default for PipelineMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl PipelineMetrics {
    /// Fresh metrics in their own registry.
    pub fn new() -> Self {
        let records_in = Family::<StageLabels, Counter>::default();
        let records_out = Family::<StageLabels, Counter>::default();
        let filtered = Family::<StageLabels, Counter>::default();
        let failed = Family::<StageLabels, Counter>::default();
        let retried = Family::<StageLabels, Counter>::default();
        let latency = Family::<StageLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0])
        });
        let mut registry = Registry::with_prefix("ferry_pipeline");
        registry.register(
            "records_in",
            "Records a stage received (or a source accepted)",
            records_in.clone(),
        );
        registry.register(
            "records_out",
            "Records a stage passed on (published, or confirmed by a sink)",
            records_out.clone(),
        );
        registry.register(
            "records_filtered",
            "Records a processor dropped on purpose",
            filtered.clone(),
        );
        registry.register(
            "records_failed",
            "Records dead-lettered after their last attempt (or refused by an http source)",
            failed.clone(),
        );
        registry.register("retries", "Attempts after a failure", retried.clone());
        registry.register(
            "stage_seconds",
            "Time from receiving a record to acking it",
            latency.clone(),
        );
        Self {
            registry: Arc::new(registry),
            records_in,
            records_out,
            filtered,
            failed,
            retried,
            latency,
        }
    }

    /// The registry to serve.
    pub fn registry(&self) -> Arc<Registry> {
        self.registry.clone()
    }

    /// The counters of one stage.
    pub fn stage(&self, pipeline: &str, stage: &str) -> StageMetrics {
        let l = StageLabels {
            pipeline: pipeline.to_owned(),
            stage: stage.to_owned(),
        };
        StageMetrics {
            records_in: self.records_in.get_or_create(&l).clone(),
            records_out: self.records_out.get_or_create(&l).clone(),
            filtered: self.filtered.get_or_create(&l).clone(),
            failed: self.failed.get_or_create(&l).clone(),
            retried: self.retried.get_or_create(&l).clone(),
            latency: self.latency.get_or_create(&l).clone(),
        }
    }
}

/// One stage's counters.
#[derive(Debug, Clone)]
pub struct StageMetrics {
    /// Received.
    pub records_in: Counter,
    /// Passed on.
    pub records_out: Counter,
    /// Dropped on purpose.
    pub filtered: Counter,
    /// Dead-lettered (or refused).
    pub failed: Counter,
    /// Retries.
    pub retried: Counter,
    /// Receive-to-ack time.
    pub latency: Histogram,
}

/// How pipelines run.
#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    /// Data directory: outboxes and archives are relative to it.
    pub data_dir: PathBuf,
    /// Directory of the configuration file: files it names (events, schemas) are relative to it.
    pub config_dir: PathBuf,
    /// Settings of the stages' queue groups.
    pub groups: GroupSettings,
    /// Run only this stage (`ferry run --pipeline P --stage S`); all when `None`.
    pub only: Option<(String, String)>,
}

/// Pipelines started by [`start`].
#[derive(Debug)]
pub struct Running {
    tasks: JoinSet<()>,
    cancel: CancellationToken,
    /// Routes of the `http` sources, to be served (merged into the API server by `ferry up`).
    pub routes: axum::Router,
    /// Stages started, as `pipeline.stage`.
    pub stages: Vec<String>,
}

impl Running {
    /// Stops every stage: no new receives; records in flight finish their current attempt and are
    /// acked, or given back. Waits for the tasks.
    pub async fn stop(mut self) {
        self.cancel.cancel();
        while self.tasks.join_next().await.is_some() {}
    }

    /// A token cancelled when [`Running::stop`] runs.
    pub fn cancel_token(&self) -> CancellationToken {
        self.cancel.clone()
    }
}

/// Builds and starts `pipelines` on `bus`: creates their topics and groups, then one task per stage.
///
/// # Errors
/// A component that cannot be built (a file, a secret), a stage in `options.only` that does not exist,
/// the broker refusing to create topics.
pub async fn start(
    pipelines: &[PipelineConfig],
    bus: SharedBus,
    metrics: &PipelineMetrics,
    options: &RuntimeOptions,
) -> anyhow::Result<Running> {
    let cancel = CancellationToken::new();
    let mut tasks = JoinSet::new();
    let mut routes = axum::Router::new();
    let mut started = Vec::new();
    if let Some((p, s)) = &options.only {
        let found = pipelines
            .iter()
            .find(|x| &x.name == p)
            .ok_or_else(|| anyhow::anyhow!("--pipeline {p}: no such pipeline in the configuration"))?;
        if !plan(found).iter().any(|st| &st.name == s) {
            let names: Vec<_> = plan(found).into_iter().map(|st| st.name).collect();
            anyhow::bail!("--stage {s}: pipeline `{p}` has stages {}", names.join(", "));
        }
    }
    // Every topic and queue group of a pipeline exists before any of its stages runs, whichever stage
    // this process runs: on an engine that keeps nothing for a group that does not exist yet
    // (RabbitMQ), a record published before its reader's group would be lost. The same for the group
    // `ferry dlq replay` reads dead letters with.
    for p in pipelines {
        if options.only.as_ref().is_some_and(|(op, _)| op != &p.name) {
            continue;
        }
        let dlq = dlq_topic(&p.name);
        bus.ensure_topic(&dlq).await?;
        bus.ensure_group(DLQ_REPLAY_GROUP, &dlq, GroupSettings::default())
            .await?;
        for st in plan(p) {
            if let Some(out) = &st.output {
                bus.ensure_topic(out).await?;
            }
            if let Some(input) = &st.input {
                bus.ensure_topic(input).await?;
                bus.ensure_group(&st.group, input, group_settings(p, options))
                    .await?;
            }
        }
    }
    for p in pipelines {
        let stages = plan(p);
        let groups = group_settings(p, options);
        for st in &stages {
            if let Some((op, os)) = &options.only
                && (op != &p.name || os != &st.name)
            {
                continue;
            }
            let ctx = BuildContext {
                pipeline: p.name.clone(),
                stage: st.name.clone(),
                data_dir: options.data_dir.clone(),
                config_dir: options.config_dir.clone(),
                bus: bus.clone(),
            };
            let m = metrics.stage(&p.name, &st.name);
            let worker = Worker {
                bus: bus.clone(),
                pipeline: p.name.clone(),
                stage: st.clone(),
                retry: retry_of(p, &st.kind),
                metrics: m.clone(),
                cancel: cancel.clone(),
                visibility: groups.visibility,
            };
            match st.kind {
                StageKind::Source => match &p.source.component {
                    SourceConfig::Topic(_) => continue,
                    SourceConfig::Http(h) => {
                        let topic = st.output.clone().unwrap_or_default();
                        let source = crate::sources::http::HttpSource::new(
                            h,
                            topic,
                            bus.clone(),
                            m,
                            &options.config_dir,
                        )?;
                        routes = routes.merge(source.router());
                    }
                    SourceConfig::Generate(g) => {
                        let generator = crate::sources::generate::Generator::new(g, &options.config_dir)?;
                        let interval = g.interval.0;
                        let count = g.count;
                        tasks.spawn(worker.generate(generator, interval, count));
                    }
                    SourceConfig::RabbitMq(c) => {
                        let source = crate::sources::rabbitmq::RabbitMqSource::new(c, bridge(&ctx, st, m))?;
                        tasks.spawn(source.run(cancel.clone()));
                    }
                    SourceConfig::Nats(c) => {
                        let source = crate::sources::nats::NatsSource::new(c, bridge(&ctx, st, m))?;
                        tasks.spawn(source.run(cancel.clone()));
                    }
                },
                StageKind::Processor(i) => {
                    let processor = crate::processors::build(&p.processors[i].component, &ctx)?;
                    for t in processor.topics() {
                        bus.ensure_topic(&t).await?;
                    }
                    tasks.spawn(worker.process(processor));
                }
                StageKind::Sink(i) => {
                    let sink = crate::sinks::build(&p.sinks[i].component, &ctx)?;
                    tasks.spawn(worker.sink(sink));
                }
            }
            started.push(format!("{}.{}", p.name, st.name));
        }
    }
    Ok(Running {
        tasks,
        cancel,
        routes,
        stages: started,
    })
}

/// What a bridge source (`rabbitmq`, `nats`) needs to run.
fn bridge(ctx: &BuildContext, st: &StagePlan, metrics: StageMetrics) -> crate::sources::BridgeContext {
    crate::sources::BridgeContext {
        pipeline: ctx.pipeline.clone(),
        stage: ctx.stage.clone(),
        topic: st.output.clone().unwrap_or_default(),
        bus: ctx.bus.clone(),
        metrics,
    }
}

/// The settings of a pipeline's queue groups: its `lease` as the visibility timeout.
fn group_settings(p: &PipelineConfig, options: &RuntimeOptions) -> GroupSettings {
    GroupSettings {
        visibility: p.lease.map_or(options.groups.visibility, |l| l.0),
        ..options.groups
    }
}

fn retry_of(p: &PipelineConfig, kind: &StageKind) -> RetryConfig {
    let own = match kind {
        StageKind::Source => p.source.retry.clone(),
        StageKind::Processor(i) => p.processors[*i].retry.clone(),
        StageKind::Sink(i) => p.sinks[*i].retry.clone(),
    };
    own.unwrap_or_else(|| p.retry.clone())
}

/// The value of a stored record as JSON: JSON text as it is, other UTF-8 text as a string.
fn decode(r: &InRecord, topic: &str) -> Result<Event, StageError> {
    let value = match serde_json::from_slice(&r.value) {
        Ok(v) => v,
        Err(_) => match std::str::from_utf8(&r.value) {
            Ok(s) => serde_json::Value::String(s.to_owned()),
            Err(_) => {
                return Err(StageError::permanent(
                    "the record's value is neither JSON nor UTF-8 text",
                ));
            }
        },
    };
    Ok(Event {
        value,
        headers: r.headers.clone(),
        key: r.key.clone(),
        origin: Some(Origin {
            topic: topic.to_owned(),
            partition: r.partition,
            offset: r.offset,
            timestamp_ms: r.timestamp_ms,
        }),
    })
}

/// The record to publish for `event` on its way on: runtime headers are not passed on.
pub fn out_record(event: &Event) -> OutRecord {
    OutRecord {
        key: event.key.clone(),
        headers: event
            .headers
            .iter()
            .filter(|(k, _)| !headers::is_runtime(k))
            .cloned()
            .collect(),
        value: Bytes::from(event.value.to_string()),
    }
}

/// Leased records a worker holds, and when their leases were last renewed.
struct Held {
    ids: Vec<(u32, u64)>,
    renewed: Instant,
}

struct Worker {
    bus: SharedBus,
    pipeline: String,
    stage: StagePlan,
    retry: RetryConfig,
    metrics: StageMetrics,
    cancel: CancellationToken,
    visibility: Duration,
}

impl Worker {
    fn input(&self) -> &str {
        self.stage.input.as_deref().unwrap_or_default()
    }

    /// Sleeps `d` unless cancelled first; renews the leases of `held` on the way. False if cancelled.
    async fn pause(&self, d: Duration, held: &mut Held) -> bool {
        let end = Instant::now() + d;
        loop {
            self.renew(held).await;
            let now = Instant::now();
            if now >= end {
                return true;
            }
            let step = (end - now).min(self.visibility / 3);
            tokio::select! {
                () = self.cancel.cancelled() => return false,
                () = tokio::time::sleep(step) => {}
            }
        }
    }

    /// Renews leases once a third of their time has passed.
    async fn renew(&self, held: &mut Held) {
        if held.ids.is_empty() || held.renewed.elapsed() < self.visibility / 3 {
            return;
        }
        if let Err(e) = self
            .bus
            .extend(&self.stage.group, self.input(), &held.ids, self.visibility)
            .await
        {
            tracing::warn!(pipeline = %self.pipeline, stage = %self.stage.name, error = %e, "could not renew leases");
        }
        held.renewed = Instant::now();
    }

    /// The wait after `attempt` failures, with jitter: uniformly in [backoff/2, backoff].
    fn backoff(&self, attempt: u32) -> Duration {
        let full = self.retry.backoff(attempt);
        let half = full / 2;
        half + full.saturating_sub(half).mul_f64(rand::rng().random::<f64>())
    }

    async fn receive(&self) -> Option<Vec<InRecord>> {
        let mut failures = 0u32;
        loop {
            let got = tokio::select! {
                () = self.cancel.cancelled() => return None,
                r = self.bus.receive(&self.stage.group, self.input(), RECEIVE_BATCH, RECEIVE_WAIT) => r,
            };
            match got {
                Ok(records) => return Some(records),
                Err(e) => {
                    failures += 1;
                    tracing::warn!(pipeline = %self.pipeline, stage = %self.stage.name, error = %e, "receive failed; retrying");
                    let wait = self.backoff(failures.min(8));
                    tokio::select! {
                        () = self.cancel.cancelled() => return None,
                        () = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
    }

    /// Retries a broker call (never the record's fault) until it succeeds or the stage stops.
    async fn persist<F, Fut>(&self, what: &str, held: &mut Held, mut call: F) -> bool
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<(), crate::error::BusError>>,
    {
        let mut attempt = 0;
        loop {
            match call().await {
                Ok(()) => return true,
                Err(e) => {
                    attempt += 1;
                    tracing::warn!(pipeline = %self.pipeline, stage = %self.stage.name, error = %e, attempt, "{what} failed; retrying");
                    if !self.pause(self.backoff(attempt.min(8)), held).await {
                        return false;
                    }
                }
            }
        }
    }

    async fn ack(&self, held: &mut Held, ids: &[(u32, u64)]) {
        if ids.is_empty() {
            return;
        }
        let lost = std::sync::Mutex::new(None);
        let ok = self
            .persist("ack", held, || async {
                match self.bus.ack(&self.stage.group, self.input(), ids).await {
                    // The lease ran out or its connection was lost: the records come again, and
                    // retrying this ack cannot succeed.
                    Err(e) if e.is_not_leased() => {
                        if let Ok(mut l) = lost.lock() {
                            *l = Some(e);
                        }
                        Ok(())
                    }
                    other => other,
                }
            })
            .await;
        if let Some(e) = lost.into_inner().ok().flatten() {
            tracing::warn!(pipeline = %self.pipeline, stage = %self.stage.name, error = %e, "ack refused: the records will be delivered again (at-least-once)");
        } else if !ok {
            tracing::info!(pipeline = %self.pipeline, stage = %self.stage.name, "stopped before an ack: the records will come again");
        }
        held.ids.retain(|id| !ids.contains(id));
    }

    /// Publishes dead letters to `<pipeline>.dlq` (retrying until it works or the stage stops) and counts
    /// them as failed; false when the stage stopped first.
    async fn send_dead(&self, held: &mut Held, dead: Vec<OutRecord>) -> bool {
        let (dlq, count) = (dlq_topic(&self.pipeline), dead.len() as u64);
        if !self
            .persist("dead-letter", held, || self.bus.publish(&dlq, dead.clone()))
            .await
        {
            return false;
        }
        self.metrics.failed.inc_by(count);
        true
    }

    /// The dead letter for `event` (or the raw record when it did not decode).
    fn dead_letter(&self, record: &InRecord, error: &StageError, attempts: u32) -> OutRecord {
        let mut headers: Vec<(String, String)> = record
            .headers
            .iter()
            .filter(|(k, _)| !headers::is_runtime(k))
            .cloned()
            .collect();
        headers.extend([
            (headers::ERROR.to_owned(), error.message.clone()),
            (headers::PIPELINE.to_owned(), self.pipeline.clone()),
            (headers::STAGE.to_owned(), self.stage.name.clone()),
            (headers::TOPIC.to_owned(), self.input().to_owned()),
            (headers::PARTITION.to_owned(), record.partition.to_string()),
            (headers::OFFSET.to_owned(), record.offset.to_string()),
            (headers::ATTEMPTS.to_owned(), attempts.to_string()),
        ]);
        OutRecord {
            key: record.key.clone(),
            headers,
            value: record.value.clone(),
        }
    }

    /// True when a replayed record is meant for another stage reading the same topic.
    fn not_mine(&self, r: &InRecord) -> bool {
        r.headers
            .iter()
            .any(|(k, v)| k == headers::REPLAY_STAGE && v != &self.stage.name)
    }

    async fn generate(
        self,
        mut generator: crate::sources::generate::Generator,
        interval: Duration,
        count: Option<u64>,
    ) {
        let topic = self.stage.output.clone().unwrap_or_default();
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut made = 0u64;
        let mut held = Held {
            ids: Vec::new(),
            renewed: Instant::now(),
        };
        while count.is_none_or(|c| made < c) {
            tokio::select! {
                () = self.cancel.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let event = Event::new(generator.next_event());
            self.metrics.records_in.inc();
            let record = out_record(&event);
            let ok = self
                .persist("publish", &mut held, || {
                    self.bus.publish(&topic, vec![record.clone()])
                })
                .await;
            if !ok {
                return;
            }
            self.metrics.records_out.inc();
            made += 1;
        }
        tracing::info!(pipeline = %self.pipeline, stage = %self.stage.name, made, "generator done");
    }

    async fn process(self, processor: Box<dyn Processor>) {
        let next_topic = self.stage.output.clone().unwrap_or_default();
        while let Some(batch) = self.receive().await {
            if batch.is_empty() {
                continue;
            }
            let started = Instant::now();
            let mut held = Held {
                ids: batch.iter().map(InRecord::id).collect(),
                renewed: Instant::now(),
            };
            let mut outputs: BTreeMap<String, Vec<OutRecord>> = BTreeMap::new();
            let mut dead = Vec::new();
            let mut out_count = 0u64;
            for r in &batch {
                self.metrics.records_in.inc();
                if self.not_mine(r) {
                    // Acked with the batch: a replay meant for another reader of this topic.
                    continue;
                }
                let result = decode(r, self.input()).map_err(|e| (e, 1)).and_then(|mut e| {
                    e.headers.retain(|(k, _)| k != headers::REPLAY_STAGE);
                    self.run_processor(processor.as_ref(), &e)
                });
                match result {
                    Ok((outs, attempts)) => {
                        if attempts > 1 {
                            self.metrics.retried.inc_by(u64::from(attempts - 1));
                        }
                        if outs.is_empty() {
                            self.metrics.filtered.inc();
                        }
                        for o in outs {
                            let (topic, event) = match o {
                                Output::Next(e) => (next_topic.clone(), e),
                                Output::To { topic, event } => (topic, event),
                            };
                            out_count += 1;
                            outputs.entry(topic).or_default().push(out_record(&event));
                        }
                    }
                    Err((e, attempts)) => {
                        tracing::warn!(pipeline = %self.pipeline, stage = %self.stage.name, offset = r.offset, error = %e, "dead-lettering a record");
                        dead.push(self.dead_letter(r, &e, attempts));
                    }
                }
            }
            let dead_count = dead.len() as u64;
            if !dead.is_empty() {
                outputs.entry(dlq_topic(&self.pipeline)).or_default().extend(dead);
            }
            let mut published = true;
            for (topic, records) in outputs {
                published = self
                    .persist("publish", &mut held, || self.bus.publish(&topic, records.clone()))
                    .await;
                if !published {
                    break;
                }
            }
            if !published {
                // Stopping with outputs unpublished: the records come again after their leases.
                return;
            }
            let ids: Vec<_> = batch.iter().map(InRecord::id).collect();
            self.ack(&mut held, &ids).await;
            self.metrics.records_out.inc_by(out_count);
            self.metrics.failed.inc_by(dead_count);
            let per = started.elapsed().as_secs_f64() / batch.len() as f64;
            for _ in &batch {
                self.metrics.latency.observe(per);
            }
        }
    }

    /// Runs a processor; a pure function gains nothing from waiting, so only transient errors (none of
    /// the built-in processors has any) are retried, at once.
    fn run_processor(&self, p: &dyn Processor, e: &Event) -> Result<(Vec<Output>, u32), (StageError, u32)> {
        let mut attempt = 1;
        loop {
            match p.process(e.clone()) {
                Ok(outs) => return Ok((outs, attempt)),
                Err(err) if err.permanent || attempt >= self.retry.max_attempts => {
                    return Err((err, attempt));
                }
                Err(_) => attempt += 1,
            }
        }
    }

    /// Writes with retries; `Err` after the last attempt.
    async fn write_with_retries(
        &self,
        sink: &dyn Sink,
        events: &[Event],
        held: &mut Held,
    ) -> Result<(), (StageError, u32)> {
        let mut attempt = 1;
        loop {
            match sink.write(events).await {
                Ok(()) => return Ok(()),
                Err(e) if e.permanent || attempt >= self.retry.max_attempts => return Err((e, attempt)),
                Err(e) => {
                    tracing::warn!(pipeline = %self.pipeline, stage = %self.stage.name, attempt, error = %e, "sink failed; retrying");
                    self.metrics.retried.inc();
                    if !self.pause(self.backoff(attempt), held).await {
                        return Err((StageError::transient("stopped while retrying"), attempt));
                    }
                    attempt += 1;
                }
            }
        }
    }

    async fn sink(self, sink: Box<dyn Sink>) {
        match sink.batching() {
            None => self.sink_each(sink).await,
            Some(b) => self.sink_batches(sink, b).await,
        }
    }

    async fn sink_each(self, sink: Box<dyn Sink>) {
        while let Some(batch) = self.receive().await {
            let mut held = Held {
                ids: batch.iter().map(InRecord::id).collect(),
                renewed: Instant::now(),
            };
            for r in &batch {
                if self.cancel.is_cancelled() {
                    // Give the rest back at once rather than leave it leased.
                    let rest = held.ids.clone();
                    let _ = self
                        .bus
                        .nack(&self.stage.group, self.input(), &rest, Duration::ZERO)
                        .await;
                    return;
                }
                let started = Instant::now();
                self.metrics.records_in.inc();
                if self.not_mine(r) {
                    self.ack(&mut held, &[r.id()]).await;
                    continue;
                }
                let outcome = match decode(r, self.input()) {
                    Ok(e) => {
                        self.write_with_retries(sink.as_ref(), std::slice::from_ref(&e), &mut held)
                            .await
                    }
                    Err(e) => Err((e, 1)),
                };
                match outcome {
                    Ok(()) => {
                        self.metrics.records_out.inc();
                    }
                    Err((e, _)) if self.cancel.is_cancelled() && !e.permanent => {
                        let rest = held.ids.clone();
                        let _ = self
                            .bus
                            .nack(&self.stage.group, self.input(), &rest, Duration::ZERO)
                            .await;
                        return;
                    }
                    Err((e, attempts)) => {
                        tracing::warn!(pipeline = %self.pipeline, stage = %self.stage.name, offset = r.offset, error = %e, "dead-lettering a record");
                        let dead = vec![self.dead_letter(r, &e, attempts)];
                        if !self.send_dead(&mut held, dead).await {
                            return;
                        }
                    }
                }
                self.ack(&mut held, &[r.id()]).await;
                self.metrics.latency.observe(started.elapsed().as_secs_f64());
            }
        }
    }

    async fn sink_batches(self, sink: Box<dyn Sink>, b: Batching) {
        let mut pending: Vec<(InRecord, Event)> = Vec::new();
        let mut bytes = 0usize;
        let mut opened: Option<Instant> = None;
        let mut held = Held {
            ids: Vec::new(),
            renewed: Instant::now(),
        };
        loop {
            let due = opened.is_some_and(|t| t.elapsed() >= b.max_age)
                || pending.len() >= b.max_records
                || bytes >= b.max_bytes;
            if due && !pending.is_empty() {
                if !self.flush(sink.as_ref(), &mut pending, &mut held).await {
                    return;
                }
                bytes = 0;
                opened = None;
                continue;
            }
            self.renew(&mut held).await;
            let Some(batch) = self.receive().await else {
                // Stopping: what is pending is given back, to be written by whoever runs next.
                let ids: Vec<_> = pending.iter().map(|(r, _)| r.id()).collect();
                let _ = self
                    .bus
                    .nack(&self.stage.group, self.input(), &ids, Duration::ZERO)
                    .await;
                return;
            };
            for r in batch {
                self.metrics.records_in.inc();
                held.ids.push(r.id());
                if self.not_mine(&r) {
                    self.ack(&mut held, &[r.id()]).await;
                    continue;
                }
                match decode(&r, self.input()) {
                    Ok(e) => {
                        bytes += e.approx_bytes();
                        opened.get_or_insert_with(Instant::now);
                        pending.push((r, e));
                    }
                    Err(e) => {
                        if !self.send_dead(&mut held, vec![self.dead_letter(&r, &e, 1)]).await {
                            return;
                        }
                        self.ack(&mut held, &[r.id()]).await;
                    }
                }
            }
            if b.max_age.is_zero() && !pending.is_empty() {
                opened = Some(Instant::now() - Duration::from_secs(1));
            }
        }
    }

    /// Writes a closed batch; dead-letters it after the last attempt; acks it. False if stopped.
    async fn flush(&self, sink: &dyn Sink, pending: &mut Vec<(InRecord, Event)>, held: &mut Held) -> bool {
        let started = Instant::now();
        let events: Vec<Event> = pending.iter().map(|(_, e)| e.clone()).collect();
        let ids: Vec<_> = pending.iter().map(|(r, _)| r.id()).collect();
        match self.write_with_retries(sink, &events, held).await {
            Ok(()) => {
                self.metrics.records_out.inc_by(events.len() as u64);
            }
            Err((_, _)) if self.cancel.is_cancelled() => {
                let _ = self
                    .bus
                    .nack(&self.stage.group, self.input(), &ids, Duration::ZERO)
                    .await;
                return false;
            }
            Err((e, attempts)) => {
                let dead: Vec<_> = pending
                    .iter()
                    .map(|(r, _)| self.dead_letter(r, &e, attempts))
                    .collect();
                if !self.send_dead(held, dead).await {
                    return false;
                }
            }
        }
        self.ack(held, &ids).await;
        let per = started.elapsed().as_secs_f64();
        for _ in &ids {
            self.metrics.latency.observe(per);
        }
        pending.clear();
        true
    }
}
