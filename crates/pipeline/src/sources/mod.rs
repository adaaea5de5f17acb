//! Sources: `http` (a route on the server), `generate` (records made on a timer); `topic` needs no code
//! of its own (the first stage reads the topic).

pub mod generate;
pub mod http;
