//! `type = "object_store"`: batches of records written as objects of JSON Lines (optionally gzip) to a
//! local directory or an S3 bucket.
//!
//! The runtime closes a batch by age or size and hands it to [`ObjectStoreSink::write`]. A batch becomes
//! one object per UTC date of its records (one per hour, partition or topic too when the key uses
//! `{hour}`, `{partition}` or `{topic}`), so every name in an object's key is true of every record in
//! it; a batch that spans midnight becomes two objects.
//!
//! Keys are made from the records alone (their origins), never from the clock or a counter: a batch
//! delivered again after a crash or a failed write gets the same keys and overwrites the same objects
//! (gzip output is deterministic too), so redelivery does not leave duplicates behind.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use chrono::{DateTime, NaiveDate, Timelike, Utc};
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, PutOptions, PutPayload, RetryConfig};

use crate::bus::BoxFuture;
use crate::component::{Batching, BuildContext, Sink};
use crate::config::ObjectStoreSinkConfig;
use crate::error::StageError;
use crate::event::Event;
use crate::template::Template;

/// The names an object key template may use.
pub const KEY_NAMES: &[&str] = &[
    "date",
    "hour",
    "partition",
    "first_offset",
    "last_offset",
    "topic",
];

/// Longest object key S3 takes, in bytes.
const MAX_KEY_BYTES: usize = 1024;

/// Where objects go, as the `url` key says.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    /// No `url`: `archive` under the data directory.
    DataDir,
    /// `file:///abs/dir`.
    Dir(PathBuf),
    /// `s3://bucket[/prefix]`; the prefix without slashes at either end, empty for none.
    S3 { bucket: String, prefix: String },
}

fn parse_url(url: Option<&str>) -> Result<Target, String> {
    let Some(url) = url else {
        return Ok(Target::DataDir);
    };
    if let Some(rest) = url.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        bucket_problem(bucket)?;
        let prefix = prefix.trim_matches('/');
        if !prefix.is_empty() {
            Path::parse(prefix)
                .map_err(|e| format!("`{url}`: the prefix `{prefix}` is not a valid key: {e}"))?;
        }
        Ok(Target::S3 {
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
        })
    } else if let Some(rest) = url.strip_prefix("file://") {
        // `file://host/dir` names a host, which a local directory cannot honour.
        if !rest.starts_with('/') {
            return Err(format!("`{url}`: give an absolute directory, `file:///abs/dir`"));
        }
        Ok(Target::Dir(PathBuf::from(rest)))
    } else {
        Err(format!(
            "`{url}`: must be `s3://bucket[/prefix]` or `file:///abs/dir`"
        ))
    }
}

/// The S3 bucket naming rules that matter for a URL: 3 to 63 lower-case letters, digits, `.` and `-`,
/// starting and ending with a letter or digit.
fn bucket_problem(bucket: &str) -> Result<(), String> {
    let ok_chars = bucket
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-');
    let ok_ends = bucket.starts_with(|c: char| c.is_ascii_alphanumeric())
        && bucket.ends_with(|c: char| c.is_ascii_alphanumeric());
    if (3..=63).contains(&bucket.len()) && ok_chars && ok_ends {
        Ok(())
    } else {
        Err(format!(
            "`{bucket}` is not a bucket name (3 to 63 lower-case letters, digits, `.` and `-`)"
        ))
    }
}

/// Problems of the settings, each with its key; no I/O.
///
/// Besides the syntax of `url` and `key`, a key must use `{first_offset}` or `{last_offset}`: without
/// one, every batch of a day would be written to the same object, each replacing the one before.
pub fn validate(c: &ObjectStoreSinkConfig) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let target = parse_url(c.url.as_deref());
    if let Err(e) = &target {
        out.push(("url".into(), e.clone()));
    }
    match Template::parse(&c.key) {
        Err(e) => out.push(("key".into(), format!("not a valid template: {e}"))),
        Ok(t) => key_problems(&c.key, &t, &mut out),
    }
    if c.max_bytes < 1 {
        out.push(("max_bytes".into(), "must be at least 1".into()));
    }
    if c.max_age.0.is_zero() {
        out.push(("max_age".into(), "must be longer than 0".into()));
    }
    let s3 = matches!(target, Ok(Target::S3 { .. }));
    if let Some(endpoint) = &c.endpoint {
        if !s3 {
            out.push(("endpoint".into(), "only used with an `s3://` url".into()));
        } else if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            out.push((
                "endpoint".into(),
                format!("`{endpoint}`: must start with `http://` or `https://`"),
            ));
        }
    }
    if let Some(region) = &c.region {
        if !s3 {
            out.push(("region".into(), "only used with an `s3://` url".into()));
        } else if region.trim().is_empty() {
            out.push(("region".into(), "must not be empty".into()));
        }
    }
    out
}

fn key_problems(text: &str, template: &Template, out: &mut Vec<(String, String)>) {
    let fields = template.fields();
    let unknown: Vec<_> = fields
        .iter()
        .filter(|f| !KEY_NAMES.contains(&f.as_str()))
        .collect();
    for f in &unknown {
        out.push((
            "key".into(),
            format!(
                "`{{{f}}}` is not a name the key may use; it may use {}",
                KEY_NAMES
                    .iter()
                    .map(|n| format!("{{{n}}}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    if !fields.iter().any(|f| f == "first_offset" || f == "last_offset") {
        out.push((
            "key".into(),
            "must use `{first_offset}` or `{last_offset}`: otherwise every batch of a day goes to the same \
             object, replacing the one before"
                .into(),
        ));
    }
    if unknown.is_empty() {
        // The literal parts must make a valid key whatever the values (a `//`, a `..` segment).
        let sample = template.render_with(&serde_json::Value::Null, |name| {
            Some(
                match name {
                    "date" => "2026-11-23",
                    "hour" => "00",
                    "topic" => "topic",
                    _ => "0",
                }
                .to_owned(),
            )
        });
        match Path::parse(&sample) {
            Err(e) => out.push((
                "key".into(),
                format!("`{text}` does not make a valid object key: {e}"),
            )),
            Ok(p) if p.as_ref().is_empty() => {
                out.push(("key".into(), format!("`{text}` makes an empty object key")));
            }
            Ok(_) => {}
        }
    }
}

/// Writes each batch as objects of JSON Lines (see the module docs).
///
/// Key names: `{date}` (`YYYY-MM-DD`) and `{hour}` (`HH`) in UTC of the object's first record's origin
/// timestamp (of the write's start for records without an origin); `{partition}`, `{first_offset}`,
/// `{last_offset}` and `{topic}` of the origins of its first and last record, in plain decimal (not
/// zero-padded: `7`, not `00000007`); `0` for records without an origin, and the pipeline's name for
/// `{topic}`.
#[derive(Debug)]
pub struct ObjectStoreSink {
    store: Arc<dyn ObjectStore>,
    /// Put before every key (the URL's path), without slashes at either end; empty for none.
    prefix: String,
    /// Where objects go, for messages.
    place: String,
    key: Template,
    by_hour: bool,
    by_partition: bool,
    by_topic: bool,
    gzip: bool,
    batching: Batching,
    /// `{topic}` of records without an origin.
    default_topic: String,
}

impl ObjectStoreSink {
    /// Makes the store client (and the local directory); does not connect to S3.
    ///
    /// # Errors
    /// A setting [`validate`] rejects, a directory that cannot be created, an S3 client that cannot be
    /// configured; each naming its key.
    pub fn new(c: &ObjectStoreSinkConfig, ctx: &BuildContext) -> anyhow::Result<Self> {
        if let Some((key, problem)) = validate(c).into_iter().next() {
            bail!("{key}: {problem}");
        }
        let key = Template::parse(&c.key).map_err(|e| anyhow!("key: {e}"))?;
        let target = parse_url(c.url.as_deref()).map_err(|e| anyhow!("url: {e}"))?;
        let (store, prefix, place): (Arc<dyn ObjectStore>, String, String) = match target {
            Target::DataDir => {
                let dir = ctx.data_dir.join("archive");
                let place = dir.display().to_string();
                (local(&dir)?, String::new(), place)
            }
            Target::Dir(dir) => {
                let place = dir.display().to_string();
                (local(&dir)?, String::new(), place)
            }
            Target::S3 { bucket, prefix } => {
                let place = match prefix.as_str() {
                    "" => format!("s3://{bucket}"),
                    p => format!("s3://{bucket}/{p}"),
                };
                (s3(c, &bucket)?, prefix, place)
            }
        };
        let fields = key.fields();
        let uses = |name: &str| fields.iter().any(|f| f == name);
        Ok(Self {
            store,
            prefix,
            place,
            by_hour: uses("hour"),
            by_partition: uses("partition"),
            by_topic: uses("topic"),
            key,
            gzip: c.gzip,
            batching: Batching {
                // Batches are closed by size and age only.
                max_records: 1_000_000,
                max_bytes: usize::try_from(c.max_bytes).unwrap_or(usize::MAX),
                max_age: c.max_age.0,
            },
            default_topic: ctx.pipeline.clone(),
        })
    }

    /// The objects `events` make: `(key, body)`, keys with the prefix. `now` stands for the origin
    /// timestamp of records without one.
    fn objects(&self, events: &[Event], now: DateTime<Utc>) -> Result<Vec<(Path, Vec<u8>)>, StageError> {
        // A BTreeMap so that objects are written in a stable order (by date first).
        let mut groups: BTreeMap<GroupKey, Vec<&Event>> = BTreeMap::new();
        for event in events {
            let time = origin_time(event, now);
            let group = GroupKey {
                date: time.date_naive(),
                hour: self.by_hour.then(|| time.hour()),
                partition: self
                    .by_partition
                    .then(|| event.origin.as_ref().map_or(0, |o| o.partition)),
                topic: self.by_topic.then(|| self.topic_of(event).to_owned()),
            };
            groups.entry(group).or_default().push(event);
        }
        let mut out = Vec::with_capacity(groups.len());
        for group in groups.into_values() {
            let (Some(first), Some(last)) = (group.first(), group.last()) else {
                continue;
            };
            let key = self.key_for(first, last, now)?;
            let mut body = Vec::new();
            for event in &group {
                serde_json::to_writer(&mut body, &event.value).map_err(|e| {
                    StageError::permanent(format!("object_store: cannot serialize the record: {e}"))
                })?;
                body.push(b'\n');
            }
            out.push((key, body));
        }
        Ok(out)
    }

    /// The full key of an object whose first and last records are these.
    fn key_for(&self, first: &Event, last: &Event, now: DateTime<Utc>) -> Result<Path, StageError> {
        let time = origin_time(first, now);
        let offset = |e: &Event| e.origin.as_ref().map_or(0, |o| o.offset).to_string();
        let rendered = self.key.render_with(&serde_json::Value::Null, |name| {
            Some(match name {
                "date" => time.format("%Y-%m-%d").to_string(),
                "hour" => time.format("%H").to_string(),
                "partition" => first.origin.as_ref().map_or(0, |o| o.partition).to_string(),
                "first_offset" => offset(first),
                "last_offset" => offset(last),
                "topic" => self.topic_of(first).to_owned(),
                // Validation admits no other name.
                _ => return None,
            })
        });
        let mut full = match self.prefix.as_str() {
            "" => rendered,
            p => format!("{p}/{rendered}"),
        };
        if self.gzip {
            full.push_str(".gz");
        }
        // The same records would make the same bad key again: retrying cannot help.
        if full.len() > MAX_KEY_BYTES {
            return Err(StageError::permanent(format!(
                "object_store: the key `{full}` is longer than {MAX_KEY_BYTES} bytes"
            )));
        }
        Path::parse(&full).map_err(|e| {
            StageError::permanent(format!("object_store: `{full}` is not a valid object key: {e}"))
        })
    }

    fn topic_of<'e>(&'e self, event: &'e Event) -> &'e str {
        event
            .origin
            .as_ref()
            .map_or(self.default_topic.as_str(), |o| o.topic.as_str())
    }

    async fn put(&self, key: &Path, body: Vec<u8>) -> Result<(), StageError> {
        let body = if self.gzip {
            // Compressing a few MiB takes tens of milliseconds: keep it off the runtime's workers.
            tokio::task::spawn_blocking(move || gzip(&body))
                .await
                .map_err(|e| {
                    StageError::transient(format!("object_store: the compressing task failed: {e}"))
                })?
                .map_err(|e| StageError::transient(format!("object_store: cannot compress: {e}")))?
        } else {
            body
        };
        self.store
            .put_opts(key, PutPayload::from(body), PutOptions::default())
            .await
            .map(|_| ())
            .map_err(|e| put_error(e, key, &self.place))
    }
}

/// What objects are split by: every name of the key that a group has one value of.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct GroupKey {
    date: NaiveDate,
    hour: Option<u32>,
    partition: Option<u32>,
    topic: Option<String>,
}

/// When a record was published (UTC); `now` for one without an origin.
fn origin_time(event: &Event, now: DateTime<Utc>) -> DateTime<Utc> {
    match &event.origin {
        // Out of chrono's range (±262,000 years) only for a corrupt timestamp: the epoch keeps the key
        // stable on redelivery where `now` would not.
        Some(o) => DateTime::from_timestamp_millis(o.timestamp_ms).unwrap_or(DateTime::UNIX_EPOCH),
        None => now,
    }
}

fn gzip(body: &[u8]) -> std::io::Result<Vec<u8>> {
    use std::io::Write;
    // flate2's header has no name and mtime 0: the same records compress to the same bytes, so a
    // rewritten object is identical to the first.
    let mut encoder =
        flate2::write::GzEncoder::new(Vec::with_capacity(body.len() / 4), flate2::Compression::default());
    encoder.write_all(body)?;
    encoder.finish()
}

fn put_error(e: object_store::Error, key: &Path, place: &str) -> StageError {
    let message = format!("object_store: writing `{key}` to {place}: {e}");
    // Only what the same request can never do is permanent; a missing bucket, denied credentials or an
    // unreachable server may be fixed while the runtime retries.
    if matches!(
        e,
        object_store::Error::InvalidPath { .. }
            | object_store::Error::NotSupported { .. }
            | object_store::Error::NotImplemented { .. }
    ) {
        StageError::permanent(message)
    } else {
        StageError::transient(message)
    }
}

/// A local directory (created if missing) as a store; files are fsynced before a put returns, as the
/// ack contract wants.
fn local(dir: &std::path::Path) -> anyhow::Result<Arc<dyn ObjectStore>> {
    std::fs::create_dir_all(dir).with_context(|| format!("url: cannot create {}", dir.display()))?;
    let store = LocalFileSystem::new_with_prefix(dir)
        .with_context(|| format!("url: cannot use {}", dir.display()))?
        .with_fsync(true);
    Ok(Arc::new(store))
}

/// An S3 client: settings from the environment (`AWS_*`), then the config's `endpoint` and `region`.
fn s3(c: &ObjectStoreSinkConfig, bucket: &str) -> anyhow::Result<Arc<dyn ObjectStore>> {
    let mut builder = AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        // object_store retries a failed request for up to 3 minutes by default; keep its own retries
        // short so that the stage's `retry` settings (backoff, then dead letters) are what counts.
        .with_retry(RetryConfig {
            max_retries: 2,
            retry_timeout: Duration::from_secs(30),
            ..RetryConfig::default()
        });
    if let Some(endpoint) = &c.endpoint {
        // `AWS_ENDPOINT_URL_S3` would win over a plain endpoint: the config is more specific than the
        // environment, so it sets both.
        builder = builder
            .with_endpoint(endpoint)
            .with_config(AmazonS3ConfigKey::S3Endpoint, endpoint);
    }
    if let Some(region) = &c.region {
        builder = builder.with_region(region);
    }
    let endpoint = builder
        .get_config_value(&AmazonS3ConfigKey::S3Endpoint)
        .or_else(|| builder.get_config_value(&AmazonS3ConfigKey::Endpoint));
    // A plain-HTTP endpoint (a local S3-compatible server) is a deliberate choice: allow it rather than
    // fail on the first write.
    if endpoint.is_some_and(|e| e.starts_with("http://")) {
        builder = builder.with_allow_http(true);
    }
    let store = builder
        .build()
        .with_context(|| format!("url: cannot configure the S3 client for bucket `{bucket}`"))?;
    Ok(Arc::new(store))
}

impl Sink for ObjectStoreSink {
    fn batching(&self) -> Option<Batching> {
        Some(self.batching)
    }

    fn write<'a>(&'a self, events: &'a [Event]) -> BoxFuture<'a, Result<(), StageError>> {
        Box::pin(async move {
            // If a later object fails, the whole batch comes again; the objects already written are then
            // overwritten with the same bytes under the same keys.
            for (key, body) in self.objects(events, Utc::now())? {
                self.put(&key, body).await?;
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use chrono::NaiveDate;
    use serde_json::json;

    use super::*;
    use crate::event::Origin;

    fn config(extra: &str) -> ObjectStoreSinkConfig {
        toml::from_str(extra).unwrap()
    }

    fn ctx(data_dir: &std::path::Path) -> BuildContext {
        let broker = ferry_broker::Broker::open(data_dir.join("broker")).unwrap();
        BuildContext {
            pipeline: "messages".into(),
            stage: "archive".into(),
            data_dir: data_dir.to_path_buf(),
            config_dir: std::path::PathBuf::from("."),
            bus: Arc::new(broker),
        }
    }

    fn ms(y: i32, m: u32, d: u32, h: u32, min: u32) -> i64 {
        NaiveDate::from_ymd_opt(y, m, d)
            .unwrap()
            .and_hms_opt(h, min, 0)
            .unwrap()
            .and_utc()
            .timestamp_millis()
    }

    fn event(offset: u64, timestamp_ms: i64) -> Event {
        Event {
            value: json!({"id": offset, "text": "hello"}),
            headers: Vec::new(),
            key: None,
            origin: Some(Origin {
                topic: "messages.created".into(),
                partition: 0,
                offset,
                timestamp_ms,
            }),
        }
    }

    fn lines(bytes: &[u8]) -> Vec<serde_json::Value> {
        std::str::from_utf8(bytes)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[tokio::test]
    async fn a_batch_lands_in_the_data_dir_as_json_lines() {
        let dir = tempfile::tempdir().unwrap();
        let sink = ObjectStoreSink::new(&config(""), &ctx(dir.path())).unwrap();
        let t = ms(2026, 11, 23, 10, 0);
        let batch = [event(40, t), event(41, t + 1000), event(42, t + 2000)];
        sink.write(&batch).await.unwrap();

        let file = dir.path().join("archive/landing_date=2026-11-23/40.jsonl");
        let got = lines(&std::fs::read(&file).unwrap());
        assert_eq!(got.len(), 3);
        assert_eq!(got[0], json!({"id": 40, "text": "hello"}));
        assert_eq!(got[2]["id"], 42);

        // Redelivered: the same object, rewritten; nothing else appears.
        sink.write(&batch).await.unwrap();
        let names: Vec<_> = std::fs::read_dir(file.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["40.jsonl"]);
        assert_eq!(lines(&std::fs::read(&file).unwrap()).len(), 3);
    }

    #[tokio::test]
    async fn gzip_objects_decompress_to_the_lines() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}", dir.path().join("out").display());
        let c = config(&format!(
            "url = {url:?}\ngzip = true\nkey = \"{{topic}}/{{date}}/{{hour}}/{{first_offset}}-{{last_offset}}.jsonl\""
        ));
        let sink = ObjectStoreSink::new(&c, &ctx(dir.path())).unwrap();
        let t = ms(2026, 11, 23, 7, 5);
        sink.write(&[event(5, t), event(6, t), event(9, t)])
            .await
            .unwrap();

        let file = dir.path().join("out/messages.created/2026-11-23/07/5-9.jsonl.gz");
        let mut text = Vec::new();
        flate2::read::GzDecoder::new(std::fs::File::open(&file).unwrap())
            .read_to_end(&mut text)
            .unwrap();
        let got = lines(&text);
        assert_eq!(
            got.iter().map(|v| v["id"].as_u64().unwrap()).collect::<Vec<_>>(),
            [5, 6, 9]
        );
    }

    #[tokio::test]
    async fn a_batch_across_midnight_makes_two_objects() {
        let dir = tempfile::tempdir().unwrap();
        let sink = ObjectStoreSink::new(&config(""), &ctx(dir.path())).unwrap();
        let before = ms(2026, 11, 23, 23, 59);
        let after = ms(2026, 11, 24, 0, 1);
        sink.write(&[event(1, before), event(2, before), event(3, after)])
            .await
            .unwrap();

        let day1 = lines(&std::fs::read(dir.path().join("archive/landing_date=2026-11-23/1.jsonl")).unwrap());
        let day2 = lines(&std::fs::read(dir.path().join("archive/landing_date=2026-11-24/3.jsonl")).unwrap());
        assert_eq!(day1.len(), 2);
        assert_eq!(day2.len(), 1);
        assert_eq!(day2[0]["id"], 3);
    }

    #[test]
    fn records_without_origin_use_now_and_offset_zero() {
        let dir = tempfile::tempdir().unwrap();
        let sink = ObjectStoreSink::new(
            &config("key = \"{topic}/{date}/{first_offset}.jsonl\""),
            &ctx(dir.path()),
        )
        .unwrap();
        let now = DateTime::from_timestamp_millis(ms(2026, 1, 2, 3, 4)).unwrap();
        let objects = sink.objects(&[Event::new(json!(1))], now).unwrap();
        assert_eq!(objects.len(), 1);
        assert_eq!(objects[0].0.as_ref(), "messages/2026-01-02/0.jsonl");
    }

    #[test]
    fn s3_urls_prefix_keys_and_do_not_connect() {
        let dir = tempfile::tempdir().unwrap();
        let c = config(
            "url = \"s3://ferry-archive/messages/created-consumer/\"\nendpoint = \"http://127.0.0.1:9\"\nregion = \"eu-west-1\"",
        );
        let sink = ObjectStoreSink::new(&c, &ctx(dir.path())).unwrap();
        let t = ms(2026, 11, 23, 10, 0);
        let objects = sink.objects(&[event(7, t)], Utc::now()).unwrap();
        assert_eq!(
            objects[0].0.as_ref(),
            "messages/created-consumer/landing_date=2026-11-23/7.jsonl"
        );
        assert_eq!(sink.batching().unwrap().max_bytes, 5 * 1024 * 1024);
    }

    #[test]
    fn validation_names_the_keys() {
        let keys =
            |extra: &str| -> Vec<String> { validate(&config(extra)).into_iter().map(|(k, _)| k).collect() };
        assert!(keys("").is_empty());
        assert!(
            keys("url = \"s3://bucket/a/b\"\nendpoint = \"http://localhost:9000\"\nregion = \"x\"")
                .is_empty()
        );
        assert!(keys("url = \"file:///var/archive\"").is_empty());
        assert_eq!(keys("url = \"gs://bucket\""), ["url"]);
        assert_eq!(keys("url = \"file://relative/dir\""), ["url"]);
        assert_eq!(keys("url = \"s3://\""), ["url"]);
        assert_eq!(keys("url = \"s3://Bad_Bucket/x\""), ["url"]);
        assert_eq!(keys("url = \"s3://bucket/a//b\""), ["url"]);
        assert_eq!(keys("key = \"{user}/{first_offset}\""), ["key"]);
        assert_eq!(keys("key = \"{date}/{first_offset\""), ["key"]);
        assert_eq!(keys("key = \"{date}.jsonl\""), ["key"]);
        assert_eq!(keys("key = \"{date}//{first_offset}\""), ["key"]);
        assert_eq!(keys("max_bytes = 0"), ["max_bytes"]);
        assert_eq!(keys("max_age = \"0s\""), ["max_age"]);
        assert_eq!(keys("endpoint = \"http://x\""), ["endpoint"]);
        assert_eq!(
            keys("url = \"s3://bucket\"\nendpoint = \"localhost:9000\""),
            ["endpoint"]
        );
        let (_, message) = &validate(&config("key = \"{user}/{first_offset}\""))[0];
        assert!(
            message.contains("{user}") && message.contains("{date}"),
            "{message}"
        );

        let dir = tempfile::tempdir().unwrap();
        let err = ObjectStoreSink::new(&config("max_bytes = 0"), &ctx(dir.path())).unwrap_err();
        assert!(err.to_string().starts_with("max_bytes:"), "{err}");
    }
}
