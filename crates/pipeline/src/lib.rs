//! ferry's pipeline engine: pipelines declared in TOML (one source, a chain of processors, sinks), run
//! over durable topics `<pipeline>.<stage>` with at-least-once delivery.
//!
//! - `config.rs`: the model; `check.rs`: reading a file and reporting every problem at once.
//! - `component.rs`: the [`Processor`] and [`Sink`] traits and the ack contract.
//! - `processors/`, `sinks/`, `sources/`: the components; `check.rs` picks a stage's struct by its `type`,
//!   `processors/mod.rs` and `sinks/mod.rs` validate and build them.
//! - `runtime.rs`: stages as tasks: receive under a lease, process, publish or write, ack; retries with
//!   backoff and jitter, then `<pipeline>.dlq`.
//! - `bus.rs`: the broker the stages run on (embedded or a ferry server over HTTP).

pub mod bus;
pub mod check;
pub mod component;
pub mod config;
pub mod error;
pub mod event;
pub mod jq;
pub mod processors;
pub mod runtime;
pub mod sinks;
pub mod sources;
pub mod template;

pub use crate::bus::{Bus, RemoteBus, SharedBus};
pub use crate::component::{Batching, BuildContext, Output, Processor, Sink};
pub use crate::error::{BusError, StageError};
pub use crate::event::Event;
