//! The systems under test.

pub mod embedded;
pub mod nats;
pub mod rabbitmq;
pub mod server;
