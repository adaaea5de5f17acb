//! Processors, registered here: [`validate`] (pure) and [`build`] dispatch on the config's variant.

pub mod filter;
pub mod map;
pub mod route;
pub mod validate;

use crate::component::{BuildContext, Processor};
use crate::config::ProcessorConfig;

/// Problems of a processor's settings, each with its key; no I/O (jq programs and inline schemas are
/// compiled to find their errors).
pub fn validate(config: &ProcessorConfig) -> Vec<(String, String)> {
    match config {
        ProcessorConfig::Filter(c) => filter::validate(c),
        ProcessorConfig::Map(c) => map::validate(c),
        ProcessorConfig::Validate(c) => validate::validate(c),
        ProcessorConfig::Route(c) => route::validate(c),
    }
}

/// Builds a processor (may read a schema file).
///
/// # Errors
/// What could not be set up, naming the key.
pub fn build(config: &ProcessorConfig, ctx: &BuildContext) -> anyhow::Result<Box<dyn Processor>> {
    Ok(match config {
        ProcessorConfig::Filter(c) => Box::new(filter::Filter::new(c)?),
        ProcessorConfig::Map(c) => Box::new(map::Map::new(c)?),
        ProcessorConfig::Validate(c) => Box::new(validate::Validate::new(c, ctx)?),
        ProcessorConfig::Route(c) => Box::new(route::RouteProcessor::new(c)?),
    })
}
