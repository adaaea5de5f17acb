//! Publishing to a topic and fetching from one partition.

use std::time::Duration;

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use ferry_broker::{BrokerError, FetchLimits, Produced};
use serde::{Deserialize, Serialize};
use utoipa::IntoParams;

use crate::error::ApiError;
use crate::extract::{Body, PathParams, Query, parse_u64};
use crate::openapi::{PartitionPath, TopicPath};
use crate::records::{
    PublishBodySchema, PublishRecordSchema, RecordsOut, RecordsSchema, parse_publish, record_size,
};
use crate::state::AppState;

/// Most records one fetch may ask for.
pub(super) const MAX_RECORDS: u64 = 10_000;
/// Most bytes one fetch may ask for.
pub(super) const MAX_BYTES: u64 = 16 * 1024 * 1024;
/// Longest long-poll.
pub(crate) const MAX_WAIT_MS: u64 = 60_000;

/// The query parameters of a partition fetch.
pub(super) const FETCH_PARAMS: &[&str] = &["offset", "max_records", "max_bytes", "max_wait_ms"];

/// The query of `GET /v1/topics/{topic}/partitions/{partition}/records`, for the OpenAPI document (the
/// handler reads [`FETCH_PARAMS`] with `Query`, which refuses unknown and repeated names).
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code, reason = "parameters of the OpenAPI document only")]
pub(super) struct FetchQuery {
    /// The offset to read from, in the partition's `start_offset..=next_offset` (see the topic's
    /// description); outside it is 422 `offset_out_of_range`. At `next_offset` the fetch waits up to
    /// `max_wait_ms` for a record.
    offset: u64,
    /// Most records to return.
    #[param(minimum = 1, maximum = 10000, default = 500)]
    max_records: Option<u64>,
    /// About this many bytes of keys and values at most (at least one record is returned if any is there).
    #[param(minimum = 1, maximum = 16777216, default = 1048576)]
    max_bytes: Option<u64>,
    /// How long to wait for a first record when none is there (long-poll), in milliseconds.
    #[param(minimum = 0, maximum = 60000, default = 0)]
    max_wait_ms: Option<u64>,
}

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

#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Published)]
pub(super) struct Offsets {
    /// Where each record landed, in request order.
    offsets: Vec<Produced>,
}

/// `POST /v1/topics/{topic}/records`: one record, a JSON array, or NDJSON. Answers with each record's
/// partition and offset, in request order, once all are durable.
#[utoipa::path(
    post,
    path = "/v1/topics/{topic}/records",
    tag = "records",
    operation_id = "publish",
    summary = "Publish records",
    description = "One record (a JSON object), several (a JSON array of them), or NDJSON (one record \
                   object per line; blank lines are skipped; `application/ndjson` and \
                   `application/jsonl` are taken too). A record goes to its `partition`, else to \
                   `fnv1a64(key) % partitions`, else round-robin. All or nothing: the answer comes once \
                   every record is durable under the topic's fsync policy, with each record's partition \
                   and offset in request order; a refused record (`field`: `records[i]...`, counting \
                   records from 0 whatever the form) writes nothing.",
    params(TopicPath),
    request_body(
        description = "One record, an array of records, or NDJSON records.",
        content(
            (PublishBodySchema = "application/json"),
            (PublishRecordSchema = "application/x-ndjson"),
        ),
    ),
    responses(
        (status = 200, description = "Every record is durable.", body = Offsets),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 404, response = crate::openapi::NotFound),
        (status = 413, response = crate::openapi::PayloadTooLarge),
        (status = 415, response = crate::openapi::UnsupportedMediaType),
        (status = 503, response = crate::openapi::ShuttingDown),
    ),
)]
pub(super) async fn publish(
    State(state): State<AppState>,
    PathParams(topic): PathParams<String>,
    body: Body,
) -> Result<Json<Offsets>, ApiError> {
    let records = parse_publish(body.kind, &body.bytes)?;
    let offsets = publish_records(&state, topic, records).await?;
    Ok(Json(Offsets { offsets }))
}

/// Appends `records` to `topic` on the broker or the engine, all or nothing; where each landed once all
/// are durable. Shared by `POST .../records` and the wire protocol's PUBLISH.
pub(crate) async fn publish_records(
    state: &AppState,
    topic: String,
    records: Vec<ferry_broker::Produce>,
) -> Result<Vec<Produced>, ApiError> {
    // Kept to say which record the broker refused: it names a partition or a size, not an index.
    let shapes: Vec<(Option<u32>, usize)> = records.iter().map(|r| (r.partition, record_size(r))).collect();
    let (count, bytes) = (shapes.len(), shapes.iter().map(|(_, size)| size).sum());
    if let Some(e) = state.engine() {
        return super::on_engine::publish(state, e, topic, records, bytes).await;
    }
    let (broker, metrics) = (state.broker().clone(), state.metrics().clone());
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
        Ok(offsets) => Ok(offsets),
        Err(error) => Err(locate(error, &shapes)),
    }
}

pub(crate) fn locate(error: BrokerError, shapes: &[(Option<u32>, usize)]) -> ApiError {
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
#[utoipa::path(
    get,
    path = "/v1/topics/{topic}/partitions/{partition}/records",
    tag = "records",
    operation_id = "fetch",
    summary = "Fetch from one partition",
    description = "Records from `offset` on, in offset order, within the limits; waits up to \
                   `max_wait_ms` when there is none yet (an empty list when none came).",
    params(PartitionPath, FetchQuery),
    responses(
        (status = 200, description = "The records (maybe none).", body = RecordsSchema),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 404, response = crate::openapi::NotFound),
        (status = 422, response = crate::openapi::Unprocessable),
    ),
)]
pub(super) async fn fetch(
    State(state): State<AppState>,
    PathParams((topic, partition)): PathParams<(String, String)>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let partition = parse_partition(&partition)?;
    let q = Query::parse(query.as_deref(), FETCH_PARAMS)?;
    let offset = q.u64("offset")?.ok_or_else(|| ApiError::InvalidParameter {
        field: "offset".into(),
        message: "required: the offset to read from".into(),
    })?;
    let limits = fetch_limits(&q)?;
    if let Some(e) = state.engine() {
        let records = super::on_engine::fetch(&state, e, topic.clone(), partition, offset, limits).await?;
        state.metrics().records_out(&topic, &records);
        return Ok(Json(RecordsOut {
            topic: &topic,
            records: &records,
        })
        .into_response());
    }
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
