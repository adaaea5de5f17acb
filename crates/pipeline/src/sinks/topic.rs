//! `type = "topic"`: records published to a topic of the broker the pipeline runs on.

use tokio::sync::OnceCell;

use crate::bus::{BoxFuture, OutRecord, SharedBus};
use crate::component::{BuildContext, Sink};
use crate::config::{TopicSinkConfig, name_problem};
use crate::error::{BusError, StageError};
use crate::event::Event;
use crate::template::Template;

/// Problems of a `topic` sink's settings, each with its key.
pub fn validate(c: &TopicSinkConfig) -> Vec<(String, String)> {
    let mut out = Vec::new();
    name_problem("topic", &c.topic, &mut out);
    if let Some(key) = &c.key
        && let Err(e) = Template::parse(key)
    {
        out.push(("key".into(), format!("not a valid template: {e}")));
    }
    out
}

/// Publishes each record's value to a topic, with its headers (the runtime's own stripped) and a key
/// made from the key template.
pub struct TopicSink {
    bus: SharedBus,
    topic: String,
    key: Option<Template>,
    /// Set once the topic is known to exist. Created on the first write rather than at build time, so
    /// that building does not touch the broker; a failure leaves it unset and the next write tries again.
    ensured: OnceCell<()>,
}

impl std::fmt::Debug for TopicSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TopicSink")
            .field("topic", &self.topic)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl TopicSink {
    /// A sink publishing to `c.topic` on `ctx.bus`.
    ///
    /// # Errors
    /// An invalid topic name or key template.
    pub fn new(c: &TopicSinkConfig, ctx: &BuildContext) -> anyhow::Result<Self> {
        if let Some((key, message)) = validate(c).into_iter().next() {
            anyhow::bail!("{key}: {message}");
        }
        let key = c
            .key
            .as_deref()
            .map(Template::parse)
            .transpose()
            .map_err(|e| anyhow::anyhow!("key: not a valid template: {e}"))?;
        Ok(Self {
            bus: ctx.bus.clone(),
            topic: c.topic.clone(),
            key,
            ensured: OnceCell::new(),
        })
    }

    /// The record as every stage publishes it (`runtime::out_record`), with this sink's key.
    fn record(&self, event: &Event) -> Result<OutRecord, StageError> {
        let mut record = crate::runtime::out_record(event);
        // A key field that is missing renders as "": no key rather than one key shared by all such records.
        record.key = self
            .key
            .as_ref()
            .map(|t| t.render(&event.value))
            .filter(|k| !k.is_empty());
        Ok(record)
    }

    fn bus_error(&self, what: &str, e: &BusError) -> StageError {
        let message = format!("topic {}: {what}: {e}", self.topic);
        if e.is_transient() {
            StageError::transient(message)
        } else {
            StageError::permanent(message)
        }
    }
}

impl Sink for TopicSink {
    fn write<'a>(&'a self, events: &'a [Event]) -> BoxFuture<'a, Result<(), StageError>> {
        Box::pin(async move {
            let records = events
                .iter()
                .map(|e| self.record(e))
                .collect::<Result<Vec<_>, _>>()?;
            self.ensured
                .get_or_try_init(|| self.bus.ensure_topic(&self.topic))
                .await
                .map_err(|e| self.bus_error("cannot create the topic", &e))?;
            self.bus
                .publish(&self.topic, records)
                .await
                .map_err(|e| self.bus_error("cannot publish", &e))
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::path::Path;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::bus::{Bus, GroupSettings, InRecord};
    use crate::event::Origin;

    /// A bus that remembers what was published; other sinks' tests use it for their build context.
    #[derive(Debug, Default)]
    pub(crate) struct RecordingBus {
        pub(crate) ensured: Mutex<Vec<String>>,
        pub(crate) published: Mutex<Vec<(String, OutRecord)>>,
        /// Make publishes fail: [`FAIL_TRANSIENT`] or [`FAIL_PERMANENT`]; 0: they succeed.
        pub(crate) fail_publish: std::sync::atomic::AtomicU8,
    }

    pub(crate) const FAIL_TRANSIENT: u8 = 1;
    pub(crate) const FAIL_PERMANENT: u8 = 2;

    /// A build context over a [`RecordingBus`].
    pub(crate) fn context(data_dir: &Path) -> (BuildContext, Arc<RecordingBus>) {
        let bus = Arc::new(RecordingBus::default());
        let ctx = BuildContext {
            pipeline: "p".into(),
            stage: "s".into(),
            data_dir: data_dir.to_path_buf(),
            config_dir: std::path::PathBuf::from("."),
            bus: bus.clone(),
        };
        (ctx, bus)
    }

    /// The error of a ferry server that cannot be reached: a real connection refused.
    async fn unreachable() -> BusError {
        let url = "http://127.0.0.1:1/";
        match reqwest::get(url).await {
            Err(e) => crate::bus::remote(ferry_client::Error::Transport {
                method: "POST",
                url: url.into(),
                detail: "connection refused".into(),
                source: Arc::new(e),
            }),
            Ok(r) => panic!("something answered on port 1: {}", r.status()),
        }
    }

    impl Bus for RecordingBus {
        fn ensure_topic<'a>(&'a self, topic: &'a str) -> BoxFuture<'a, Result<(), BusError>> {
            self.ensured.lock().unwrap().push(topic.to_owned());
            Box::pin(async { Ok(()) })
        }
        fn ensure_group<'a>(
            &'a self,
            _: &'a str,
            _: &'a str,
            _: GroupSettings,
        ) -> BoxFuture<'a, Result<(), BusError>> {
            Box::pin(async { Ok(()) })
        }
        fn publish_ids<'a>(
            &'a self,
            topic: &'a str,
            records: Vec<OutRecord>,
        ) -> BoxFuture<'a, Result<Vec<(u32, u64)>, BusError>> {
            Box::pin(async move {
                match self.fail_publish.load(std::sync::atomic::Ordering::SeqCst) {
                    FAIL_TRANSIENT => return Err(unreachable().await),
                    FAIL_PERMANENT => {
                        return Err(BusError::Broker(ferry_broker::BrokerError::InvalidConfig {
                            field: "partitions",
                            message: "refused".into(),
                        }));
                    }
                    _ => {}
                }
                let mut published = self.published.lock().unwrap();
                let first = published.len() as u64;
                let ids = (first..first + records.len() as u64).map(|o| (0, o)).collect();
                published.extend(records.into_iter().map(|r| (topic.to_owned(), r)));
                Ok(ids)
            })
        }
        fn receive<'a>(
            &'a self,
            _: &'a str,
            _: &'a str,
            _: usize,
            _: Duration,
        ) -> BoxFuture<'a, Result<Vec<InRecord>, BusError>> {
            Box::pin(async { Ok(Vec::new()) })
        }
        fn ack<'a>(
            &'a self,
            _: &'a str,
            _: &'a str,
            _: &'a [(u32, u64)],
        ) -> BoxFuture<'a, Result<(), BusError>> {
            Box::pin(async { Ok(()) })
        }
        fn nack<'a>(
            &'a self,
            _: &'a str,
            _: &'a str,
            _: &'a [(u32, u64)],
            _: Duration,
        ) -> BoxFuture<'a, Result<(), BusError>> {
            Box::pin(async { Ok(()) })
        }
        fn extend<'a>(
            &'a self,
            _: &'a str,
            _: &'a str,
            _: &'a [(u32, u64)],
            _: Duration,
        ) -> BoxFuture<'a, Result<(), BusError>> {
            Box::pin(async { Ok(()) })
        }
    }

    fn config(topic: &str, key: Option<&str>) -> TopicSinkConfig {
        TopicSinkConfig {
            topic: topic.into(),
            key: key.map(Into::into),
        }
    }

    #[test]
    fn validation_names_keys() {
        assert!(validate(&config("out", Some("{customer_id}"))).is_empty());
        let problems = validate(&config("bad topic!", Some("{unclosed")));
        let keys: Vec<&str> = problems.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["topic", "key"], "{problems:?}");
    }

    #[tokio::test]
    async fn publishes_values_keys_and_non_runtime_headers() {
        let dir = tempfile::tempdir().unwrap();
        let (ctx, bus) = context(dir.path());
        let sink = TopicSink::new(&config("out", Some("{customer}")), &ctx).unwrap();
        assert!(
            bus.ensured.lock().unwrap().is_empty(),
            "building must not touch the broker"
        );

        let mut event = Event::new(json!({"customer": "c-7", "n": 1}));
        event.set_header("trace", "abc");
        event.set_header(crate::event::headers::ERROR, "old failure");
        event.set_header(crate::event::headers::OFFSET, "12");
        event.origin = Some(Origin {
            topic: "in".into(),
            partition: 0,
            offset: 12,
            timestamp_ms: 0,
        });
        sink.write(&[event]).await.unwrap();
        sink.write(&[Event::new(json!({"n": 2}))]).await.unwrap();

        assert_eq!(*bus.ensured.lock().unwrap(), ["out"], "the topic is ensured once");
        let published = bus.published.lock().unwrap();
        assert_eq!(published.len(), 2);
        let (topic, first) = &published[0];
        assert_eq!(topic, "out");
        assert_eq!(first.key.as_deref(), Some("c-7"));
        assert_eq!(first.headers, [("trace".to_owned(), "abc".to_owned())]);
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&first.value).unwrap(),
            json!({"customer": "c-7", "n": 1})
        );
        assert_eq!(published[1].1.key, None, "a missing key field gives no key");
    }

    #[tokio::test]
    async fn bus_errors_keep_their_kind() {
        let dir = tempfile::tempdir().unwrap();
        let (ctx, bus) = context(dir.path());
        let sink = TopicSink::new(&config("out", None), &ctx).unwrap();
        bus.fail_publish
            .store(FAIL_TRANSIENT, std::sync::atomic::Ordering::SeqCst);
        let err = sink.write(&[Event::new(json!(1))]).await.unwrap_err();
        assert!(!err.permanent, "{err}");
        bus.fail_publish
            .store(FAIL_PERMANENT, std::sync::atomic::Ordering::SeqCst);
        let err = sink.write(&[Event::new(json!(1))]).await.unwrap_err();
        assert!(err.permanent, "{err}");
        assert!(err.message.contains("topic out"), "{err}");
    }
}
