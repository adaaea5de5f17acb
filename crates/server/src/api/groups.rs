//! `/v1/groups/{group}/topics/{topic}/...`: stream groups (fetch, commit, offsets and lag, seek) and their
//! members (join, heartbeat, leave).
//!
//! ```text
//! POST   .../members                     {"member_id"?, "session_timeout_ms"?} -> {"member_id","generation","partitions"}
//! POST   .../members/{member}/heartbeat  {"generation"} -> {"member_id","generation","partitions"}
//! DELETE .../members/{member}            204
//! GET    .../records                     ?member_id&generation&max_records&max_bytes&max_wait_ms
//! POST   .../offsets                     {"offsets":[...], "member_id"?, "generation"?} -> 204
//! GET    .../offsets                     {"group","topic","lag","generation","members":[...],"partitions":[...]}
//! ```
//!
//! Membership follows `ferry_broker`'s rules (in memory, sessions ended lazily, sticky assignment,
//! fencing). Without `member_id` and `generation`, fetch and commit act on the group as a whole, which
//! is only taken while it has no live members (409 `group_has_members`). A member answered 409
//! `stale_generation` heartbeats to learn its partitions; one answered 404 `unknown_member` joins again.

use std::ops::RangeInclusive;
use std::time::Duration;

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ferry_broker::{
    BrokerError, FetchLimits, GroupPartition, JoinOptions, MemberInfo, MemberRef, Membership, SeekTo,
};
use serde::{Deserialize, Serialize};

use super::records::fetch_limits;
use crate::error::ApiError;
use crate::extract::{Body, PathParams, Query, parse_json};
use crate::records::RecordsOut;
use crate::state::AppState;

/// Session length of a member that does not ask for one, in milliseconds.
const DEFAULT_SESSION_TIMEOUT_MS: u64 = 10_000;
/// Session lengths a member may ask for, in milliseconds.
const SESSION_TIMEOUT_MS: RangeInclusive<u64> = 1_000..=300_000;

/// `member_id` and `generation` together name a member; one without the other is refused.
fn member(
    member_id: Option<String>,
    generation: Option<u64>,
    refuse: impl Fn(&str, &str) -> ApiError,
) -> Result<Option<MemberRef>, ApiError> {
    match (member_id, generation) {
        (Some(member_id), Some(generation)) => Ok(Some(MemberRef {
            member_id,
            generation,
        })),
        (None, None) => Ok(None),
        (Some(_), None) => Err(refuse("generation", "member_id")),
        (None, Some(_)) => Err(refuse("member_id", "generation")),
    }
}

/// `GET .../records?member_id=&generation=&max_records=&max_bytes=&max_wait_ms=`: the group's next
/// records, from the member's partitions or (without a member) from all.
pub(super) async fn fetch(
    State(state): State<AppState>,
    PathParams((group, topic)): PathParams<(String, String)>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let q = Query::parse(
        query.as_deref(),
        &[
            "max_records",
            "max_bytes",
            "max_wait_ms",
            "member_id",
            "generation",
        ],
    )?;
    let limits = fetch_limits(&q)?;
    // `Query` checked the names; it reads only integers, so the id is taken from the raw query here.
    let member_id = form_urlencoded::parse(query.as_deref().unwrap_or_default().as_bytes())
        .find(|(name, _)| name == "member_id")
        .map(|(_, value)| value.into_owned());
    let member = member(member_id, q.u64("generation")?, |field, with| {
        ApiError::InvalidParameter {
            field: field.into(),
            message: format!("required with `{with}`"),
        }
    })?;
    let records = state
        .long_poll(limits.max_wait, |max_wait| {
            let (state, broker) = (state.clone(), state.broker().clone());
            let (group, topic, member) = (group.clone(), topic.clone(), member.clone());
            // Detached: a group fetch moves the group's position, so it must not stop half way.
            async move {
                let limits = FetchLimits { max_wait, ..limits };
                Ok(state
                    .detached(async move {
                        broker
                            .group_fetch_as(&group, &topic, member.as_ref(), limits)
                            .await
                    })
                    .await??)
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CommitBody {
    offsets: Vec<PartitionOffset>,
    #[serde(default)]
    member_id: Option<String>,
    #[serde(default)]
    generation: Option<u64>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct PartitionOffset {
    partition: u32,
    offset: u64,
}

/// `POST .../offsets` with `{"offsets": [{"partition": P, "offset": O}], "member_id"?, "generation"?}`:
/// 204 once durable. The offset is the next record the group will process. A member commits only its
/// own partitions, in the current generation.
pub(super) async fn commit(
    State(state): State<AppState>,
    PathParams((group, topic)): PathParams<(String, String)>,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let bytes = body.json_only()?;
    let CommitBody {
        offsets,
        member_id,
        generation,
    } = parse_json(&bytes, "")?;
    let member = member(member_id, generation, |field, with| ApiError::InvalidField {
        field: Some(field.into()),
        message: format!("required with `{with}`"),
    })?;
    let pairs: Vec<(u32, u64)> = offsets.iter().map(|o| (o.partition, o.offset)).collect();
    let broker = state.broker().clone();
    let committed = pairs.clone();
    match state
        .detached(async move {
            broker
                .commit_as(&group, &topic, member.as_ref(), &committed)
                .await
        })
        .await?
    {
        Ok(()) => Ok(StatusCode::NO_CONTENT),
        Err(error) => {
            let at = |want: &dyn Fn(&(u32, u64)) -> bool, key: &str| {
                pairs.iter().position(want).map(|i| format!("offsets[{i}].{key}"))
            };
            let field = match &error {
                BrokerError::PartitionNotFound { partition, .. }
                | BrokerError::NotAssigned { partition, .. } => at(&|(p, _)| p == partition, "partition"),
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
    /// The membership's generation (0 when no member ever joined).
    generation: u64,
    /// Live members and their partitions, by id.
    members: Vec<MemberInfo>,
    partitions: Vec<GroupPartition>,
}

/// `GET .../offsets`: live members with their partitions, committed offset and lag per partition; 404 if
/// the group has no live member and never committed here.
pub(super) async fn offsets(
    State(state): State<AppState>,
    PathParams((group, topic)): PathParams<(String, String)>,
) -> Result<Json<GroupOffsets>, ApiError> {
    let status = state.broker().group_status(&group, &topic)?;
    let lag = status.partitions.iter().map(|p| p.lag).sum();
    Ok(Json(GroupOffsets {
        group,
        topic,
        lag,
        generation: status.generation,
        members: status.members,
        partitions: status.partitions,
    }))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct JoinBody {
    #[serde(default)]
    member_id: Option<String>,
    #[serde(default)]
    session_timeout_ms: Option<u64>,
}

/// `POST .../members` with `{"member_id"?, "session_timeout_ms"?}` (an empty body is `{}`): joins the
/// group; answers with the member's id, the new generation and its partitions.
pub(super) async fn join(
    State(state): State<AppState>,
    PathParams((group, topic)): PathParams<(String, String)>,
    body: Body,
) -> Result<Json<Membership>, ApiError> {
    let bytes = body.json_only()?;
    let JoinBody {
        member_id,
        session_timeout_ms,
    } = if bytes.is_empty() {
        JoinBody::default()
    } else {
        parse_json(&bytes, "")?
    };
    let ms = session_timeout_ms.unwrap_or(DEFAULT_SESSION_TIMEOUT_MS);
    if !SESSION_TIMEOUT_MS.contains(&ms) {
        return Err(ApiError::ParameterOutOfRange {
            field: "session_timeout_ms".into(),
            message: format!(
                "must be {}..={}, got {ms}",
                SESSION_TIMEOUT_MS.start(),
                SESSION_TIMEOUT_MS.end()
            ),
        });
    }
    let options = JoinOptions {
        member_id,
        session_timeout: Duration::from_millis(ms),
    };
    Ok(Json(state.broker().join(&group, &topic, options)?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HeartbeatBody {
    generation: u64,
}

/// `POST .../members/{member}/heartbeat` with `{"generation": G}`: keeps the member alive and answers
/// with the current generation and the member's partitions in it.
pub(super) async fn heartbeat(
    State(state): State<AppState>,
    PathParams((group, topic, member)): PathParams<(String, String, String)>,
    body: Body,
) -> Result<Json<Membership>, ApiError> {
    let bytes = body.json_only()?;
    let HeartbeatBody { generation } = parse_json(&bytes, "")?;
    Ok(Json(
        state.broker().heartbeat(&group, &topic, &member, generation)?,
    ))
}

/// `DELETE .../members/{member}`: the member leaves; its partitions go to the others. 204.
pub(super) async fn leave(
    State(state): State<AppState>,
    PathParams((group, topic, member)): PathParams<(String, String, String)>,
) -> Result<StatusCode, ApiError> {
    state.broker().leave(&group, &topic, &member)?;
    Ok(StatusCode::NO_CONTENT)
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
