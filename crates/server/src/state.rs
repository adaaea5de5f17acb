//! What every handler shares: the broker, the metrics, the shutdown signal, and the tasks that must
//! finish before the broker may close.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use ferry_broker::Broker;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::error::ApiError;
use crate::metrics::Metrics;

/// A long-poll waits in slices of this length and checks for shutdown between them, so a shutdown never
/// waits for a client's `max_wait_ms`. A publish still wakes a waiting fetch at once: each slice is a
/// broker long-poll of its own.
const WAIT_SLICE: Duration = Duration::from_millis(250);

#[derive(Debug)]
struct Inner {
    broker: Broker,
    /// The engine records live in when it is not the embedded broker.
    engine: Option<crate::EngineRef>,
    /// Stream groups on `engine`.
    stream_groups: ferry_broker::engine_groups::StreamGroups,
    /// Queue groups on `engine` known to exist, so that a receive does not ask the engine each time.
    queues_seen: std::sync::Mutex<std::collections::HashSet<(String, String)>>,
    metrics: Metrics,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    /// Dropped with the last clone of the state; `serve` waits for that before closing the broker.
    _alive: mpsc::Sender<()>,
}

/// Shared by every handler. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct AppState(Arc<Inner>);

impl AppState {
    /// The state and the receiver that sees it gone (`recv()` returns `None` once every clone dropped).
    pub fn new(
        broker: Broker,
        metrics: Metrics,
        engine: Option<crate::EngineRef>,
    ) -> (Self, mpsc::Receiver<()>) {
        let (alive, gone) = mpsc::channel(1);
        let inner = Inner {
            broker,
            engine,
            stream_groups: ferry_broker::engine_groups::StreamGroups::default(),
            queues_seen: std::sync::Mutex::default(),
            metrics,
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            _alive: alive,
        };
        (Self(Arc::new(inner)), gone)
    }

    pub fn broker(&self) -> &Broker {
        &self.0.broker
    }

    /// The engine records live in, when it is not the embedded broker: the handlers that run on any
    /// engine use it instead of [`Self::broker`].
    pub fn engine(&self) -> Option<&crate::EngineRef> {
        self.0.engine.as_ref()
    }

    /// Queue groups on [`Self::engine`] this process knows exist, by `(group, topic)`.
    pub fn queues_seen(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<(String, String)>> {
        self.0
            .queues_seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Stream groups on [`Self::engine`].
    pub fn stream_groups(&self) -> &ferry_broker::engine_groups::StreamGroups {
        &self.0.stream_groups
    }

    /// Where handlers count records in and out: `records_in`, `records_out`.
    pub fn metrics(&self) -> &Metrics {
        &self.0.metrics
    }

    pub fn shutdown(&self) -> &CancellationToken {
        &self.0.shutdown
    }

    pub fn tasks(&self) -> &TaskTracker {
        &self.0.tasks
    }

    /// Runs `op` to completion even if the request is dropped (a client that goes away must not leave a
    /// topic creation or a stream group's fetch half done), tracked so that shutdown waits for it.
    ///
    /// # Errors
    /// [`ApiError::Internal`] if the task panicked.
    pub async fn detached<T, F>(&self, op: F) -> Result<T, ApiError>
    where
        F: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        self.0.tasks.spawn(op).await.map_err(|e| ApiError::Internal {
            message: format!("broker task failed: {e}"),
        })
    }

    /// Long-polls with `fetch(wait)` until it returns something (records, leased records), `max_wait`
    /// has passed, or the server is shutting down (then the answer is whatever the last slice found,
    /// possibly nothing). Each call gets at most one slice to wait.
    pub async fn long_poll<T, F, Fut>(&self, max_wait: Duration, mut fetch: F) -> Result<Vec<T>, ApiError>
    where
        F: FnMut(Duration) -> Fut,
        Fut: Future<Output = Result<Vec<T>, ApiError>>,
    {
        let deadline = Instant::now() + max_wait;
        if !max_wait.is_zero() {
            tracing::debug!(max_wait_ms = max_wait.as_millis() as u64, "long-poll started");
        }
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let records = fetch(remaining.min(WAIT_SLICE)).await?;
            if !records.is_empty() || remaining <= WAIT_SLICE || self.0.shutdown.is_cancelled() {
                return Ok(records);
            }
        }
    }
}
