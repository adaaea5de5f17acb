//! Publishing to a topic and fetching from one partition.

use std::time::Duration;

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use ferry_broker::{BrokerError, FetchLimits, Produced};
use serde::Serialize;

use crate::error::ApiError;
use crate::extract::{Body, PathParams, Query, parse_u64};
use crate::records::{RecordsOut, parse_publish, record_size};
use crate::state::AppState;

/// Most records one fetch may ask for.
pub(super) const MAX_RECORDS: u64 = 10_000;
/// Most bytes one fetch may ask for.
pub(super) const MAX_BYTES: u64 = 16 * 1024 * 1024;
/// Longest long-poll.
pub(super) const MAX_WAIT_MS: u64 = 60_000;

/// `max_records` (1..=10000, default 500), `max_bytes` (1..=16 MiB, default 1 MiB), `max_wait_ms`
/// (0..=60000, default 0).
pub(super) fn fetch_limits(q: &Query) -> Result<FetchLimits, ApiError> {
    let default = FetchLimits::default();
    let max_records = q.u64_in("max_records", 1..=MAX_RECORDS, default.max_records as u64)?;
    let max_bytes = q.u64_in("max_bytes", 1..=MAX_BYTES, default.max_bytes as u64)?;
    let max_wait_ms = q.u64_in("max_wait_ms", 0..=MAX_WAIT_MS, 0)?;
    Ok(FetchLimits {
        // In range, so the casts cannot truncate.
        max_records: max_records as usize,
        max_bytes: max_bytes as usize,
        max_wait: Duration::from_millis(max_wait_ms),
    })
}

#[derive(Serialize)]
pub(super) struct Offsets {
    offsets: Vec<Produced>,
}

/// `POST /v1/topics/{topic}/records`: one record, a JSON array, or NDJSON. Answers with each record's
/// partition and offset, in request order, once all are durable.
pub(super) async fn publish(
    State(state): State<AppState>,
    PathParams(topic): PathParams<String>,
    body: Body,
) -> Result<Json<Offsets>, ApiError> {
    let records = parse_publish(body.kind, &body.bytes)?;
    // Kept to say which record the broker refused: it names a partition or a size, not an index.
    let shapes: Vec<(Option<u32>, usize)> = records.iter().map(|r| (r.partition, record_size(r))).collect();
    let (broker, metrics) = (state.broker().clone(), state.metrics().clone());
    let (count, bytes) = (shapes.len(), shapes.iter().map(|(_, size)| size).sum());
    match state
        .detached(async move {
            let published = broker.publish(&topic, records).await;
            // Counted here, not in the handler: a client that went away does not undo a publish.
            if published.is_ok() {
                metrics.records_in(&topic, count, bytes);
            }
            published
        })
        .await?
    {
        Ok(offsets) => Ok(Json(Offsets { offsets })),
        Err(error) => Err(locate(error, &shapes)),
    }
}

fn locate(error: BrokerError, shapes: &[(Option<u32>, usize)]) -> ApiError {
    let index = match &error {
        BrokerError::PartitionNotFound { partition, .. } => shapes
            .iter()
            .position(|(p, _)| *p == Some(*partition))
            .map(|i| format!("records[{i}].partition")),
        BrokerError::RecordTooLarge { max, .. } => shapes
            .iter()
            .position(|(_, size)| size > max)
            .map(|i| format!("records[{i}]")),
        _ => None,
    };
    ApiError::Broker { error, field: index }
}

/// `GET /v1/topics/{topic}/partitions/{partition}/records?offset=N&max_records=&max_bytes=&max_wait_ms=`.
pub(super) async fn fetch(
    State(state): State<AppState>,
    PathParams((topic, partition)): PathParams<(String, String)>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let partition = parse_partition(&partition)?;
    let q = Query::parse(
        query.as_deref(),
        &["offset", "max_records", "max_bytes", "max_wait_ms"],
    )?;
    let offset = q.u64("offset")?.ok_or_else(|| ApiError::InvalidParameter {
        field: "offset".into(),
        message: "required: the offset to read from".into(),
    })?;
    let limits = fetch_limits(&q)?;
    let broker = state.broker();
    let records = state
        .long_poll(limits.max_wait, |max_wait| {
            let (broker, topic) = (broker.clone(), topic.clone());
            // Reading is side-effect free, so this need not be detached.
            async move {
                Ok(broker
                    .fetch(&topic, partition, offset, FetchLimits { max_wait, ..limits })
                    .await?)
            }
        })
        .await?;
    state.metrics().records_out(&topic, &records);
    Ok(Json(RecordsOut {
        topic: &topic,
        records: &records,
    })
    .into_response())
}

fn parse_partition(value: &str) -> Result<u32, ApiError> {
    let p = parse_u64("partition", value)?;
    u32::try_from(p).map_err(|_| ApiError::InvalidParameter {
        field: "partition".into(),
        message: format!("expected an integer of at most {}, got {p}", u32::MAX),
    })
}
