//! ferry on engines other than its embedded log: NATS JetStream (`nats`) and RabbitMQ (`rabbitmq`), each
//! an implementation of [`ferry_broker::engine::Engine`]; and `servers`, private NATS and RabbitMQ
//! instances on free loopback ports for tests and benchmarks.

pub mod nats;
pub mod rabbitmq;
pub mod servers;
