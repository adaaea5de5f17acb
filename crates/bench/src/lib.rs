//! `ferry bench`: one workload against ferry (embedded in this process, and a ferry server over
//! loopback), NATS JetStream and RabbitMQ, side by side in one run, in matched durability classes.
//! See docs/benchmarks.md for the method.

pub mod ingest;
pub mod peer;
pub mod peers;
pub mod report;
pub mod run;
