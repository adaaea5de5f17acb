//! `/v1/groups/{group}/topics/{topic}/...`: stream groups (fetch, commit, offsets and lag, seek).

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ferry_broker::{BrokerError, FetchLimits, GroupPartition, SeekTo};
use serde::{Deserialize, Serialize};

use super::records::fetch_limits;
use crate::error::ApiError;
use crate::extract::{Body, PathParams, Query, parse_json};
use crate::records::RecordsOut;
use crate::state::AppState;

/// `GET .../records?max_records=&max_bytes=&max_wait_ms=`: the group's next records over all partitions.
pub(super) async fn fetch(
    State(state): State<AppState>,
    PathParams((group, topic)): PathParams<(String, String)>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let q = Query::parse(query.as_deref(), &["max_records", "max_bytes", "max_wait_ms"])?;
    let limits = fetch_limits(&q)?;
    let records = state
        .long_poll(limits.max_wait, |max_wait| {
            let (state, broker) = (state.clone(), state.broker().clone());
            let (group, topic) = (group.clone(), topic.clone());
            // Detached: a group fetch moves the group's position, so it must not stop half way.
            async move {
                let limits = FetchLimits { max_wait, ..limits };
                Ok(state
                    .detached(async move { broker.group_fetch(&group, &topic, limits).await })
                    .await??)
            }
        })
        .await?;
    Ok(Json(RecordsOut {
        topic: &topic,
        records: &records,
    })
    .into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CommitBody {
    offsets: Vec<PartitionOffset>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct PartitionOffset {
    partition: u32,
    offset: u64,
}

/// `POST .../offsets` with `{"offsets": [{"partition": P, "offset": O}]}`: 204 once durable. The offset
/// is the next record the group will process.
pub(super) async fn commit(
    State(state): State<AppState>,
    PathParams((group, topic)): PathParams<(String, String)>,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let bytes = body.json_only()?;
    let CommitBody { offsets } = parse_json(&bytes, "")?;
    let pairs: Vec<(u32, u64)> = offsets.iter().map(|o| (o.partition, o.offset)).collect();
    let broker = state.broker().clone();
    let committed = pairs.clone();
    match state
        .detached(async move { broker.commit(&group, &topic, &committed).await })
        .await?
    {
        Ok(()) => Ok(StatusCode::NO_CONTENT),
        Err(error) => {
            let at = |want: &dyn Fn(&(u32, u64)) -> bool, key: &str| {
                pairs.iter().position(want).map(|i| format!("offsets[{i}].{key}"))
            };
            let field = match &error {
                BrokerError::PartitionNotFound { partition, .. } => at(&|(p, _)| p == partition, "partition"),
                BrokerError::OffsetOutOfRange {
                    partition, offset, ..
                } => at(&|(p, o)| p == partition && o == offset, "offset"),
                _ => None,
            };
            Err(ApiError::Broker { error, field })
        }
    }
}

#[derive(Serialize)]
pub(super) struct GroupOffsets {
    group: String,
    topic: String,
    /// Sum of the partitions' lag.
    lag: u64,
    partitions: Vec<GroupPartition>,
}

/// `GET .../offsets`: committed offset and lag per partition; 404 if the group never committed here.
pub(super) async fn offsets(
    State(state): State<AppState>,
    PathParams((group, topic)): PathParams<(String, String)>,
) -> Result<Json<GroupOffsets>, ApiError> {
    let partitions = state.broker().group_offsets(&group, &topic)?;
    let lag = partitions.iter().map(|p| p.lag).sum();
    Ok(Json(GroupOffsets {
        group,
        topic,
        lag,
        partitions,
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SeekBody {
    to: SeekTarget,
    #[serde(default)]
    partition: Option<u32>,
}

/// `"earliest"`, `"latest"`, `{"offset": N}` or `{"timestamp": MS}`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
enum SeekTarget {
    Earliest,
    Latest,
    Offset(u64),
    Timestamp(i64),
}

#[derive(Serialize)]
pub(super) struct Seeked {
    offsets: Vec<PartitionOffset>,
}

/// `POST .../seek` with `{"to": ..., "partition": P?}`: moves the group (one partition or all) and commits
/// the new offsets; answers with them.
pub(super) async fn seek(
    State(state): State<AppState>,
    PathParams((group, topic)): PathParams<(String, String)>,
    body: Body,
) -> Result<Json<Seeked>, ApiError> {
    let bytes = body.json_only()?;
    let SeekBody { to, partition } = parse_json(&bytes, "")?;
    let to = match to {
        SeekTarget::Earliest => SeekTo::Earliest,
        SeekTarget::Latest => SeekTo::Latest,
        SeekTarget::Offset(o) => SeekTo::Offset(o),
        SeekTarget::Timestamp(ts) => SeekTo::Timestamp(ts),
    };
    let broker = state.broker().clone();
    match state
        .detached(async move { broker.seek(&group, &topic, partition, to).await })
        .await?
    {
        Ok(offsets) => Ok(Json(Seeked {
            offsets: offsets
                .into_iter()
                .map(|(partition, offset)| PartitionOffset { partition, offset })
                .collect(),
        })),
        Err(error @ BrokerError::OffsetOutOfRange { .. }) => Err(ApiError::broker_at(error, "to.offset")),
        Err(error) => Err(error.into()),
    }
}
