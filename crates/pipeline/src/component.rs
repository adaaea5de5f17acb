//! The traits every processor and sink implements, and what building one gets to see.
//!
//! The ack contract: the runtime acks a record upstream only after every output of a processor was
//! published durably, or after a sink's `write` returned `Ok` for it. A sink must therefore return `Ok`
//! only once what it wrote is confirmed (an SMTP server's 250, a file fsynced, an object stored, a 2xx).
//! Records may come again after a crash (at-least-once): sinks that can, write idempotently (the email
//! outbox names files by the record's origin, for one).

use std::fmt::Debug;
use std::path::PathBuf;
use std::time::Duration;

use crate::bus::{BoxFuture, SharedBus};
use crate::error::StageError;
use crate::event::Event;

/// What a component may use while it is built.
#[derive(Clone)]
pub struct BuildContext {
    /// The pipeline's name.
    pub pipeline: String,
    /// The stage's name.
    pub stage: String,
    /// The data directory: relative paths of outboxes and archives are resolved against it.
    pub data_dir: PathBuf,
    /// The config file's directory: files a config names (schemas, event files) are read relative to it.
    pub config_dir: PathBuf,
    /// The broker (for sinks that publish).
    pub bus: SharedBus,
}

impl std::fmt::Debug for BuildContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuildContext")
            .field("pipeline", &self.pipeline)
            .field("stage", &self.stage)
            .field("data_dir", &self.data_dir)
            .field("config_dir", &self.config_dir)
            .finish_non_exhaustive()
    }
}

/// Where one output of a processor goes.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// On to the next stage.
    Next(Event),
    /// To another topic (a route, invalid records), leaving the pipeline.
    To {
        /// The topic.
        topic: String,
        /// The record.
        event: Event,
    },
}

/// A processor: a pure function of one record (no I/O), run by the runtime between two topics.
pub trait Processor: Send + Sync + Debug {
    /// What becomes of `event`: nothing (filtered), one or more records on, or records to other topics.
    ///
    /// # Errors
    /// A [`StageError`]; permanent ones (a jq error on this record) go to the dead-letter topic at once.
    fn process(&self, event: Event) -> Result<Vec<Output>, StageError>;

    /// Topics this processor publishes to besides the next stage (created before it runs).
    fn topics(&self) -> Vec<String> {
        Vec::new()
    }
}

/// How a batching sink wants its records grouped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batching {
    /// Write once this many records are held...
    pub max_records: usize,
    /// ... or this many bytes (about; [`Event::approx_bytes`])...
    pub max_bytes: usize,
    /// ... or this long after the first record of the batch arrived.
    pub max_age: Duration,
}

/// A sink: where records leave the pipeline.
pub trait Sink: Send + Sync + Debug {
    /// `None`: [`Sink::write`] gets one record at a time (each retried and dead-lettered on its own).
    /// `Some`: it gets batches grouped this way.
    fn batching(&self) -> Option<Batching> {
        None
    }

    /// Writes `events`; `Ok` only once they are confirmed (see the module docs).
    ///
    /// # Errors
    /// A [`StageError`]: transient ones are retried with backoff, then the records are dead-lettered.
    fn write<'a>(&'a self, events: &'a [Event]) -> BoxFuture<'a, Result<(), StageError>>;
}
