//! The private test servers start, answer on their ports, and restart with their data.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use ferry_engines::servers::{NatsServer, RabbitServer, require};

fn port_of(url: &str) -> u16 {
    url.rsplit(':')
        .next()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn nats_starts_and_restarts() {
    let Some(mut nats) = require(NatsServer::start(), "nats-server") else {
        return;
    };
    let port = port_of(&nats.url());
    std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    nats.restart().unwrap();
    std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
}

#[test]
fn rabbitmq_starts_and_restarts() {
    let Some(mut rabbit) = require(RabbitServer::start(), "rabbitmq-server") else {
        return;
    };
    let port = port_of(&rabbit.url());
    std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    rabbit.restart().unwrap();
    std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
}
