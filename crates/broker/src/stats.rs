//! What the broker shows to metrics one layer up: a hook on its topic logs, and the groups to report on.
//!
//! The broker keeps no metrics of its own. [`BrokerOptions::observer`] sees the events of every
//! partition log of every topic (commits, fsync latencies); [`Broker::stream_groups`] and
//! [`Broker::queue_groups`] list what a scrape asks [`Broker::group_offsets`] and [`Broker::queue_info`]
//! about. The metadata log is not observed: its fsyncs are not a topic's write latency.

use std::fmt;
use std::sync::Arc;

use ferry_log::LogObserver;

use crate::broker::{Broker, lock};

/// How a broker is opened, beyond its directory. `BrokerOptions::default()` is what [`Broker::open`]
/// uses.
#[derive(Clone, Default)]
pub struct BrokerOptions {
    /// Told about every partition log of every topic, those created later included. Called on the logs'
    /// writer threads, so it must be cheap and must not block.
    pub observer: Option<Arc<dyn LogObserver>>,
}

impl fmt::Debug for BrokerOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BrokerOptions")
            .field("observer", &self.observer.as_ref().map(|_| "..."))
            .finish()
    }
}

impl Broker {
    /// `(group, topic)` of every stream group that has committed offsets (stream subscriptions
    /// included), sorted. A group that only fetched, never committed, has no lag to report and is not
    /// listed.
    pub fn stream_groups(&self) -> Vec<(String, String)> {
        lock(&self.inner.state).meta.offsets.keys().cloned().collect()
    }

    /// `(group, topic)` of every queue group (queue subscriptions included), sorted.
    pub fn queue_groups(&self) -> Vec<(String, String)> {
        lock(&self.inner.state).meta.queues.keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    use super::*;
    use crate::{Produce, QueueConfig, TopicConfig};

    #[derive(Default)]
    struct Counting {
        fsyncs: AtomicU64,
        commits: AtomicU64,
    }

    impl LogObserver for Counting {
        fn committed(&self, _next_offset: u64) {
            self.commits.fetch_add(1, Ordering::SeqCst);
        }
        fn fsynced(&self, _took: Duration) {
            self.fsyncs.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn observer_sees_topic_logs_and_groups_are_listed() {
        let dir = tempfile::tempdir().unwrap();
        let seen = Arc::new(Counting::default());
        let options = BrokerOptions {
            observer: Some(seen.clone()),
        };
        let broker = Broker::open_with(dir.path(), options).unwrap();
        broker.create_topic("t", TopicConfig::default()).await.unwrap();
        // Creating the topic fsynced the metadata log, which is not observed.
        assert_eq!(seen.fsyncs.load(Ordering::SeqCst), 0);
        let record = Produce {
            value: "v".into(),
            ..Produce::default()
        };
        broker.publish("t", vec![record]).await.unwrap();
        // The default topic config fsyncs every append, and the commit that made it readable is seen too.
        assert_eq!(seen.fsyncs.load(Ordering::SeqCst), 1);
        assert_eq!(seen.commits.load(Ordering::SeqCst), 1);

        assert!(broker.stream_groups().is_empty());
        broker.commit("g2", "t", &[(0, 1)]).await.unwrap();
        broker.commit("g1", "t", &[(0, 0)]).await.unwrap();
        broker
            .create_queue("q", "t", QueueConfig::default())
            .await
            .unwrap();
        let pair = |g: &str| (g.to_string(), "t".to_string());
        assert_eq!(broker.stream_groups(), [pair("g1"), pair("g2")]);
        assert_eq!(broker.queue_groups(), [pair("q")]);
    }
}
