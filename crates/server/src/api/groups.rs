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
use utoipa::{IntoParams, ToSchema};

use super::on_engine::Member;
use super::records::fetch_limits;
use crate::error::ApiError;
use crate::extract::{Body, Object, PathParams, Query, parse_object, parse_object_or_default};
use crate::openapi::{GroupPath, MemberPath};
use crate::records::{RecordsOut, RecordsSchema};
use crate::state::AppState;

/// The query parameters of a group fetch.
pub(super) const GROUP_FETCH_PARAMS: &[&str] = &[
    "max_records",
    "max_bytes",
    "max_wait_ms",
    "member_id",
    "generation",
];

/// The query of `GET /v1/groups/{group}/topics/{topic}/records`, for the OpenAPI document (the handler
/// reads [`GROUP_FETCH_PARAMS`] with `Query`).
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code, reason = "parameters of the OpenAPI document only")]
pub(super) struct GroupFetchQuery {
    /// The member fetching, with `generation`; without both, the fetch is the group's as a whole (taken
    /// only while it has no live members).
    #[param(min_length = 1, max_length = 249, pattern = "^[A-Za-z0-9._-]+$")]
    member_id: Option<String>,
    /// The generation of the member's last join or heartbeat answer; required with `member_id`.
    generation: Option<u64>,
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

/// Session length of a member that does not ask for one, in milliseconds.
pub(super) const DEFAULT_SESSION_TIMEOUT_MS: u64 = 10_000;
/// Session lengths a member may ask for, in milliseconds.
pub(super) const SESSION_TIMEOUT_MS: RangeInclusive<u64> = 1_000..=300_000;

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
#[utoipa::path(
    get,
    path = "/v1/groups/{group}/topics/{topic}/records",
    tag = "stream groups",
    operation_id = "group_fetch",
    summary = "Fetch a stream group's next records",
    description = "From where the group's last fetch ended (after a restart or a rebalance: from the \
                   committed offsets; before any commit: from the earliest record), on the member's \
                   partitions, or on all without a member. Waits up to `max_wait_ms` when there is none \
                   yet. Commit what was processed with `POST .../offsets`. A subscription's filter drops \
                   the records that do not match, so an answer may hold fewer than `max_records`, or none.",
    params(GroupPath, GroupFetchQuery),
    responses(
        (status = 200, description = "The records (maybe none).", body = RecordsSchema),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 404, response = crate::openapi::NotFound),
        (status = 409, response = crate::openapi::Conflict),
        (status = 422, response = crate::openapi::Unprocessable),
        (status = 503, response = crate::openapi::ShuttingDown),
    ),
)]
pub(super) async fn fetch(
    State(state): State<AppState>,
    PathParams((group, topic)): PathParams<(String, String)>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let q = Query::parse(query.as_deref(), GROUP_FETCH_PARAMS)?;
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
    if let Some(e) = state.engine() {
        let records = super::on_engine::group_fetch(&state, e, group, topic.clone(), member, limits).await?;
        state.metrics().records_out(&topic, &records);
        return Ok(Json(RecordsOut {
            topic: &topic,
            records: &records,
        })
        .into_response());
    }
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

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = CommitRequest)]
struct CommitBody {
    /// At least one; each partition's offset is the next record the group will process.
    #[schema(value_type = Vec<PartitionOffset>, min_items = 1)]
    offsets: Vec<Object<PartitionOffset>>,
    /// The committing member, with `generation`; without both, the commit is the group's as a whole.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 249, pattern = "^[A-Za-z0-9._-]+$")]
    member_id: Option<String>,
    /// The generation of the member's last join or heartbeat answer; required with `member_id`.
    #[serde(default)]
    generation: Option<u64>,
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct PartitionOffset {
    /// The partition.
    partition: u32,
    /// The offset: of a commit, the next record to process, in `start_offset..=next_offset`.
    offset: u64,
}

/// `POST .../offsets` with `{"offsets": [{"partition": P, "offset": O}], "member_id"?, "generation"?}`:
/// 204 once durable. The offset is the next record the group will process. A member commits only its
/// own partitions, in the current generation.
#[utoipa::path(
    post,
    path = "/v1/groups/{group}/topics/{topic}/offsets",
    tag = "stream groups",
    operation_id = "group_commit",
    summary = "Commit a stream group's offsets",
    description = "Durable before the answer. The offset is the next record the group will process. A \
                   member commits only its own partitions, in the current generation; without a member, \
                   only while the group has no live members.",
    params(GroupPath),
    request_body = CommitBody,
    responses(
        (status = 204, description = "Committed."),
        crate::openapi::JsonBodyErrors,
    ),
)]
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
    } = parse_object(&bytes)?;
    let member = member(member_id, generation, |field, with| ApiError::InvalidField {
        field: Some(field.into()),
        message: format!("required with `{with}`"),
    })?;
    let pairs: Vec<(u32, u64)> = offsets.iter().map(|o| (o.0.partition, o.0.offset)).collect();
    if let Some(e) = state.engine() {
        super::on_engine::group_commit(&state, e, group, topic, member, pairs).await?;
        return Ok(StatusCode::NO_CONTENT);
    }
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

#[derive(Serialize, ToSchema)]
pub(super) struct GroupOffsets {
    /// The group.
    group: String,
    /// The topic.
    topic: String,
    /// Sum of the partitions' lag.
    lag: u64,
    /// The membership's generation (0 when no member ever joined).
    generation: u64,
    /// Live members and their partitions, by id.
    members: Vec<MemberInfo>,
    /// Committed offset and lag per partition.
    partitions: Vec<GroupPartition>,
}

/// `GET .../offsets`: live members with their partitions, committed offset and lag per partition; 404 if
/// the group has no live member and never committed here.
#[utoipa::path(
    get,
    path = "/v1/groups/{group}/topics/{topic}/offsets",
    tag = "stream groups",
    operation_id = "group_offsets",
    summary = "A stream group's offsets, lag and members",
    description = "Live members with their partitions, and per partition the committed offset and the \
                   lag. 404 `group_not_found` when the group has no live member and never committed on \
                   the topic.",
    params(GroupPath),
    responses(
        (status = 200, description = "The group on the topic.", body = GroupOffsets),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 404, response = crate::openapi::NotFound),
    ),
)]
pub(super) async fn offsets(
    State(state): State<AppState>,
    PathParams((group, topic)): PathParams<(String, String)>,
) -> Result<Json<GroupOffsets>, ApiError> {
    let status = match state.engine() {
        Some(e) => super::on_engine::group_status(&state, e, group.clone(), topic.clone()).await?,
        None => state.broker().group_status(&group, &topic)?,
    };
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

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = JoinRequest)]
struct JoinBody {
    /// The member's id, to rejoin as the same member; absent: the group makes one up.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 249, pattern = "^[A-Za-z0-9._-]+$")]
    member_id: Option<String>,
    /// How long the member stays alive without a heartbeat, fetch or commit, in milliseconds.
    #[serde(default)]
    #[schema(minimum = 1000, maximum = 300000, default = 10000)]
    session_timeout_ms: Option<u64>,
}

/// `POST .../members` with `{"member_id"?, "session_timeout_ms"?}` (an empty body is `{}`): joins the
/// group; answers with the member's id, the new generation and its partitions.
#[utoipa::path(
    post,
    path = "/v1/groups/{group}/topics/{topic}/members",
    tag = "stream groups",
    operation_id = "group_join",
    summary = "Join a stream group",
    description = "Starts a new generation and shares the topic's partitions among the live members \
                   (sticky). An empty body takes the defaults. Answers with the member's id, the new \
                   generation and the member's partitions; fetch and commit with both.",
    params(GroupPath),
    request_body(content = Option<JoinBody>, description = "Optional: an empty body joins with a new id and the default session."),
    responses(
        (status = 200, description = "Joined.", body = Membership),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 404, response = crate::openapi::NotFound),
        (status = 413, response = crate::openapi::PayloadTooLarge),
        (status = 415, response = crate::openapi::UnsupportedMediaType),
        (status = 422, response = crate::openapi::Unprocessable),
    ),
)]
pub(super) async fn join(
    State(state): State<AppState>,
    PathParams((group, topic)): PathParams<(String, String)>,
    body: Body,
) -> Result<Json<Membership>, ApiError> {
    let bytes = body.json_only()?;
    let JoinBody {
        member_id,
        session_timeout_ms,
    } = parse_object_or_default(&bytes)?;
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
    if let Some(e) = state.engine() {
        let joined = super::on_engine::membership(&state, e, group, topic, Member::Join(options)).await?;
        return joined.map(Json).ok_or_else(|| ApiError::Internal {
            message: "a join answered no membership".into(),
        });
    }
    Ok(Json(state.broker().join(&group, &topic, options)?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = HeartbeatRequest)]
struct HeartbeatBody {
    /// The generation of the member's last join or heartbeat answer.
    generation: u64,
}

/// `POST .../members/{member}/heartbeat` with `{"generation": G}`: keeps the member alive and answers
/// with the current generation and the member's partitions in it.
#[utoipa::path(
    post,
    path = "/v1/groups/{group}/topics/{topic}/members/{member}/heartbeat",
    tag = "stream groups",
    operation_id = "group_heartbeat",
    summary = "Keep a member alive",
    description = "Answers with the current generation and the member's partitions in it: how a member \
                   answered 409 `stale_generation` learns its new assignment. 404 `unknown_member`: \
                   join again.",
    params(MemberPath),
    request_body = HeartbeatBody,
    responses(
        (status = 200, description = "The member's current assignment.", body = Membership),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 404, response = crate::openapi::NotFound),
        (status = 409, response = crate::openapi::Conflict),
        (status = 413, response = crate::openapi::PayloadTooLarge),
        (status = 415, response = crate::openapi::UnsupportedMediaType),
    ),
)]
pub(super) async fn heartbeat(
    State(state): State<AppState>,
    PathParams((group, topic, member)): PathParams<(String, String, String)>,
    body: Body,
) -> Result<Json<Membership>, ApiError> {
    let bytes = body.json_only()?;
    let HeartbeatBody { generation } = parse_object(&bytes)?;
    if let Some(e) = state.engine() {
        let call = Member::Heartbeat {
            member_id: member,
            generation,
        };
        let beat = super::on_engine::membership(&state, e, group, topic, call).await?;
        return beat.map(Json).ok_or_else(|| ApiError::Internal {
            message: "a heartbeat answered no membership".into(),
        });
    }
    Ok(Json(
        state.broker().heartbeat(&group, &topic, &member, generation)?,
    ))
}

/// `DELETE .../members/{member}`: the member leaves; its partitions go to the others. 204.
#[utoipa::path(
    delete,
    path = "/v1/groups/{group}/topics/{topic}/members/{member}",
    tag = "stream groups",
    operation_id = "group_leave",
    summary = "Leave a stream group",
    description = "The member's partitions go to the others, in a new generation.",
    params(MemberPath),
    responses(
        (status = 204, description = "Left."),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 404, response = crate::openapi::NotFound),
    ),
)]
pub(super) async fn leave(
    State(state): State<AppState>,
    PathParams((group, topic, member)): PathParams<(String, String, String)>,
) -> Result<StatusCode, ApiError> {
    if let Some(e) = state.engine() {
        let call = Member::Leave { member_id: member };
        super::on_engine::membership(&state, e, group, topic, call).await?;
        return Ok(StatusCode::NO_CONTENT);
    }
    state.broker().leave(&group, &topic, &member)?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = SeekRequest)]
struct SeekBody {
    /// Where to move the group.
    to: SeekTarget,
    /// Only this partition; absent: every partition.
    #[serde(default)]
    partition: Option<u32>,
}

/// `"earliest"`, `"latest"`, `{"offset": N}` or `{"timestamp": MS}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
enum SeekTarget {
    /// The oldest record still stored.
    Earliest,
    /// The end: only records published from now on.
    Latest,
    /// This offset, in `start_offset..=next_offset`.
    Offset(u64),
    /// The first record with a timestamp at or after this one (ms since the epoch); the end when none is.
    Timestamp(i64),
}

#[derive(Serialize, ToSchema)]
#[schema(as = SeekResult)]
pub(super) struct Seeked {
    /// The committed offset of each partition moved.
    offsets: Vec<PartitionOffset>,
}

/// `POST .../seek` with `{"to": ..., "partition": P?}`: moves the group (one partition or all) and commits
/// the new offsets; answers with them.
#[utoipa::path(
    post,
    path = "/v1/groups/{group}/topics/{topic}/seek",
    tag = "stream groups",
    operation_id = "group_seek",
    summary = "Move a stream group",
    description = "Moves the group on one partition or all, and commits the new offsets; answers with \
                   them. Only while the group has no live members (409 `group_has_members`), as \
                   Kafka's offset reset.",
    params(GroupPath),
    request_body = SeekBody,
    responses(
        (status = 200, description = "Moved and committed.", body = Seeked),
        crate::openapi::JsonBodyErrors,
    ),
)]
pub(super) async fn seek(
    State(state): State<AppState>,
    PathParams((group, topic)): PathParams<(String, String)>,
    body: Body,
) -> Result<Json<Seeked>, ApiError> {
    let bytes = body.json_only()?;
    let SeekBody { to, partition } = parse_object(&bytes)?;
    let to = match to {
        SeekTarget::Earliest => SeekTo::Earliest,
        SeekTarget::Latest => SeekTo::Latest,
        SeekTarget::Offset(o) => SeekTo::Offset(o),
        SeekTarget::Timestamp(ts) => SeekTo::Timestamp(ts),
    };
    if let Some(e) = state.engine() {
        let offsets = super::on_engine::group_seek(&state, e, group, topic, partition, to).await?;
        return Ok(Json(Seeked {
            offsets: offsets
                .into_iter()
                .map(|(partition, offset)| PartitionOffset { partition, offset })
                .collect(),
        }));
    }
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
