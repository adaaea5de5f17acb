//! `/v1/queues/{group}/topics/{topic}/...`: queue groups (SQS-like): create, describe, receive with
//! leases, ack, nack, extend.
//!
//! ```text
//! PUT  .../topics/{topic}           QueueConfig (every key optional; empty body: defaults) -> 201 | 200 QueueInfo
//! GET  .../topics/{topic}           QueueInfo {group, topic, config, dead_letter_topic, depth, in_flight}
//! POST .../topics/{topic}/receive   {"max_records"?, "max_wait_ms"?, "visibility_timeout_ms"?} (empty body: defaults)
//!                                   -> {"records": [record + "delivery_count", "lease_expires_ms"]}
//! POST .../topics/{topic}/ack       {"records": [{"partition", "offset"}]} -> 204
//! POST .../topics/{topic}/nack      {"records": [...], "delay_ms"?} -> 204
//! POST .../topics/{topic}/extend    {"records": [...], "visibility_timeout_ms"} -> 204
//! ```
//!
//! - A receive leases up to `max_records` (1..=1000, default 10) records for `visibility_timeout_ms`
//!   (1..=43200000; default: the group's), waiting up to `max_wait_ms` (0..=60000, default 0) when none is
//!   available. Records are rendered as the fetch routes render them (`records.rs`), plus
//!   `delivery_count` (1 on the first delivery) and `lease_expires_ms` (ms since the epoch). A receive
//!   on a group that does not exist yet creates it with default settings, as the broker does; a `PUT`
//!   first is how to give it other settings.
//! - `ack` finishes records for good; `nack` makes them available again after `delay_ms` (0..=43200000,
//!   default 0: at once); `extend` sets their lease to `visibility_timeout_ms` (1..=43200000) from now.
//!   All three are all-or-nothing: a record the group has not leased right now (never delivered, already
//!   acked, or its lease ran out) is 409 `not_leased` naming `records[i]`, and nothing changes. A group
//!   that does not exist is 404 `group_not_found`.
//! - A record delivered `max_deliveries` times without an ack is moved, on a later receive, to the
//!   dead-letter topic (`dead_letter_topic`, by default `<topic>.<group>.dlq`), readable with the fetch
//!   route; its `ferry-dlq-*` headers say why and where it came from.
//! - `PUT` answers 201 when it created the group and 200 when it existed with the same settings (409
//!   `queue_exists` with others). The broker does not say which happened, so this looks before it
//!   creates: two concurrent `PUT`s of a new group may both get 201.
//! - Delivery is at-least-once: leases live in memory, so after a restart every leased record is
//!   available again; acknowledged records are never delivered again.
//! - A receive runs detached from its request and long-polls in slices (see `state.rs`), so a client that
//!   goes away never leaves a receive half done (its records come back when their lease ends) and a
//!   shutdown never waits for a client's `max_wait_ms`.

use std::ops::RangeInclusive;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ferry_broker::{BrokerError, Leased, QueueConfig, QueueInfo, ReceiveOptions};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;

use super::on_engine::{self, Settle};
use super::records::MAX_WAIT_MS;
use crate::error::ApiError;
use crate::extract::{Body, Object, PathParams, parse_object, parse_object_or_default};
use crate::openapi::GroupPath;
use crate::records::{RecordOut, RecordSchema};
use crate::state::AppState;

/// Most records one receive may lease.
pub(crate) const MAX_RECEIVE: u64 = 1000;
/// Records a receive leases when it does not say.
pub(crate) const DEFAULT_RECEIVE: u64 = 10;
/// Longest lease and longest nack delay: 12 h, the bound of a group's `visibility_timeout_ms` (and SQS's).
pub(crate) const MAX_VISIBILITY_MS: u64 = 12 * 3600 * 1000;

/// `PUT /v1/queues/{group}/topics/{topic}` with a `QueueConfig`: 201 and the group when created, 200 when
/// it existed with these settings.
#[utoipa::path(
    put,
    path = "/v1/queues/{group}/topics/{topic}",
    tag = "queue groups",
    operation_id = "queue_create",
    summary = "Create a queue group",
    description = "With these settings; every key has a default, an empty body takes them all. 201 when \
                   created, 200 when it existed with the same settings, 409 `queue_exists` with others. \
                   A receive on a group that does not exist creates it with the defaults.",
    params(GroupPath),
    request_body(content = Option<QueueConfig>, description = "Optional: an empty body takes every default."),
    responses(
        (status = 201, description = "Created.", body = QueueInfo),
        (status = 200, description = "It existed with these settings.", body = QueueInfo),
        crate::openapi::JsonBodyErrors,
    ),
)]
pub(super) async fn create(
    State(state): State<AppState>,
    PathParams((group, topic)): PathParams<(String, String)>,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = body.json_only()?;
    let config: QueueConfig = parse_object_or_default(&bytes)?;
    if let Some(e) = state.engine() {
        return on_engine::create_queue(&state, e, group, topic, config).await;
    }
    // The broker answers alike whether it created the group or found it; only a look first tells.
    let existed = state.broker().queue_info(&group, &topic).is_ok();
    let broker = state.broker().clone();
    let info = state
        .detached(async move { broker.create_queue(&group, &topic, config).await })
        .await??;
    let status = if existed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(info)).into_response())
}

/// `GET /v1/queues/{group}/topics/{topic}`: settings, depth and in-flight count.
#[utoipa::path(
    get,
    path = "/v1/queues/{group}/topics/{topic}",
    tag = "queue groups",
    operation_id = "queue_describe",
    summary = "Describe a queue group",
    description = "Its settings, its dead-letter topic, its depth (records not yet done) and how many \
                   records are leased now.",
    params(GroupPath),
    responses(
        (status = 200, description = "The group.", body = QueueInfo),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 404, response = crate::openapi::NotFound),
    ),
)]
pub(super) async fn describe(
    State(state): State<AppState>,
    PathParams((group, topic)): PathParams<(String, String)>,
) -> Result<Json<QueueInfo>, ApiError> {
    if let Some(e) = state.engine() {
        return Ok(Json(super::on_engine::queue_info(&state, e, group, topic).await?));
    }
    Ok(Json(state.broker().queue_info(&group, &topic)?))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
#[schema(as = ReceiveRequest)]
struct ReceiveBody {
    /// Most records to lease.
    #[schema(minimum = 1, maximum = 1000, default = 10)]
    max_records: Option<u64>,
    /// How long to wait for a record when none is available (long-poll), in milliseconds.
    #[schema(minimum = 0, maximum = 60000, default = 0)]
    max_wait_ms: Option<u64>,
    /// How long the records stay leased, in milliseconds; absent: the group's `visibility_timeout_ms`.
    #[schema(minimum = 1, maximum = 43200000)]
    visibility_timeout_ms: Option<u64>,
}

/// `value` when it lies in `range`, else 422 `out_of_range` naming `field`.
pub(crate) fn in_range(field: &str, value: u64, range: RangeInclusive<u64>) -> Result<u64, ApiError> {
    if range.contains(&value) {
        Ok(value)
    } else {
        Err(ApiError::ParameterOutOfRange {
            field: field.into(),
            message: format!("must be {}..={}, got {value}", range.start(), range.end()),
        })
    }
}

/// A leased record as the API renders it: the record, then its lease.
#[derive(Serialize, ToSchema)]
#[schema(as = LeasedRecord)]
struct LeasedOut<'a> {
    #[serde(flatten)]
    #[schema(value_type = RecordSchema)]
    record: RecordOut<'a>,
    /// How many times the record was delivered, this time included: 1 on the first delivery.
    delivery_count: u32,
    /// When the lease ends unless acked, nacked or extended, in milliseconds since the epoch.
    lease_expires_ms: i64,
}

#[derive(Serialize, ToSchema)]
#[schema(as = ReceivedRecords)]
struct Received<'a> {
    /// The leased records; maybe none.
    records: Vec<LeasedOut<'a>>,
}

/// `POST /v1/queues/{group}/topics/{topic}/receive`: leases records, long-polling up to `max_wait_ms`.
#[utoipa::path(
    post,
    path = "/v1/queues/{group}/topics/{topic}/receive",
    tag = "queue groups",
    operation_id = "queue_receive",
    summary = "Receive records with a lease",
    description = "Leases up to `max_records` available records for `visibility_timeout_ms`, waiting up \
                   to `max_wait_ms` when none is available; an empty body takes the defaults. A record \
                   not acked before its lease ends is delivered again; one delivered `max_deliveries` \
                   times goes to the dead-letter topic. Creates the group with default settings if it \
                   does not exist.",
    params(GroupPath),
    request_body(content = Option<ReceiveBody>, description = "Optional: an empty body takes every default."),
    responses(
        (status = 200, description = "The leased records (maybe none).", body = Received<'static>),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 404, response = crate::openapi::NotFound),
        (status = 413, response = crate::openapi::PayloadTooLarge),
        (status = 415, response = crate::openapi::UnsupportedMediaType),
        (status = 422, response = crate::openapi::Unprocessable),
        (status = 503, response = crate::openapi::ShuttingDown),
    ),
)]
pub(super) async fn receive(
    State(state): State<AppState>,
    PathParams((group, topic)): PathParams<(String, String)>,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = body.json_only()?;
    let body: ReceiveBody = parse_object_or_default(&bytes)?;
    let max_records = in_range(
        "max_records",
        body.max_records.unwrap_or(DEFAULT_RECEIVE),
        1..=MAX_RECEIVE,
    )?;
    let max_wait_ms = in_range("max_wait_ms", body.max_wait_ms.unwrap_or(0), 0..=MAX_WAIT_MS)?;
    let visibility = body
        .visibility_timeout_ms
        .map(|v| in_range("visibility_timeout_ms", v, 1..=MAX_VISIBILITY_MS))
        .transpose()?;
    // Cancelled when this handler is dropped, which hyper does when the client goes away.
    let gone = CancellationToken::new();
    let _gone_on_drop = gone.clone().drop_guard();
    let leased = receive_records(
        &state,
        group,
        topic.clone(),
        max_records as usize,
        Duration::from_millis(max_wait_ms),
        visibility.map(Duration::from_millis),
        &gone,
    )
    .await?;
    let records = leased
        .iter()
        .map(|l| LeasedOut {
            record: RecordOut {
                topic: &topic,
                record: &l.record,
            },
            delivery_count: l.deliveries,
            lease_expires_ms: l.lease_expires_ms,
        })
        .collect();
    Ok(Json(Received { records }).into_response())
}

/// Leases up to `max_records` of the group on the broker or the engine, long-polling up to `max_wait`;
/// the limits are checked by the caller. Shared by `POST .../receive` and the wire protocol's RECEIVE.
/// Once `gone` is cancelled (the client went away) the long-poll stops: on the embedded broker it
/// stops waiting and leases nothing more, so no record is leased to a receiver that cannot get it; on
/// an engine no further slice starts (the one under way, up to 250 ms, may still lease).
pub(crate) async fn receive_records(
    state: &AppState,
    group: String,
    topic: String,
    max_records: usize,
    max_wait: Duration,
    visibility: Option<Duration>,
    gone: &CancellationToken,
) -> Result<Vec<Leased>, ApiError> {
    if let Some(e) = state.engine() {
        let receive = on_engine::receive(state, e, group, topic.clone(), max_records, max_wait, visibility);
        let got = tokio::select! {
            got = receive => got?,
            // No further slice starts; the engine's receive under way is not told (it may still
            // lease what comes within its slice, which then comes back after its lease).
            () = gone.cancelled() => Vec::new(),
        };
        state.metrics().records_out(&topic, got.iter().map(|r| &r.record));
        return Ok(got
            .into_iter()
            .map(|r| Leased {
                record: r.record,
                deliveries: r.deliveries,
                lease_expires_ms: r.lease_expires_ms,
            })
            .collect());
    }
    let options = ReceiveOptions {
        max_records,
        max_wait: Duration::ZERO,
        visibility_timeout: visibility,
    };
    let poll = state.long_poll(max_wait, |max_wait| {
        let (state, broker) = (state.clone(), state.broker().clone());
        let (group, topic) = (group.clone(), topic.clone());
        let options = ReceiveOptions { max_wait, ..options };
        let gone = gone.clone();
        // Detached: a receive counts deliveries durably, then records the leases; stopped in between,
        // its records would be handed out again at once instead of after their lease. It stops
        // waiting by itself once the client is gone.
        async move {
            Ok(state
                .detached(async move {
                    broker
                        .receive_until(&group, &topic, options, gone.cancelled_owned())
                        .await
                })
                .await??)
        }
    });
    let leased = tokio::select! {
        leased = poll => leased?,
        // The slice under way has stopped waiting (or is finishing a pass whose records nobody will
        // get now; they come back after their lease): no further slice.
        () = gone.cancelled() => Vec::new(),
    };
    state
        .metrics()
        .records_out(&topic, leased.iter().map(|l| &l.record));
    Ok(leased)
}

/// A leased record, by where it is.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct RecordRef {
    /// The partition.
    partition: u32,
    /// The offset in the partition.
    offset: u64,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = AckRequest)]
struct AckBody {
    /// Records the group has leased now; at least one.
    #[schema(value_type = Vec<RecordRef>, min_items = 1)]
    records: Vec<Object<RecordRef>>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = NackRequest)]
struct NackBody {
    /// Records the group has leased now; at least one.
    #[schema(value_type = Vec<RecordRef>, min_items = 1)]
    records: Vec<Object<RecordRef>>,
    /// The records are available again this long from now, in milliseconds.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 43200000, default = 0)]
    delay_ms: u64,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ExtendRequest)]
struct ExtendBody {
    /// Records the group has leased now; at least one.
    #[schema(value_type = Vec<RecordRef>, min_items = 1)]
    records: Vec<Object<RecordRef>>,
    /// The leases end this long from now, in milliseconds.
    #[schema(minimum = 1, maximum = 43200000)]
    visibility_timeout_ms: u64,
}

/// `POST .../ack` with `{"records": [{"partition", "offset"}]}`: 204 once durable.
#[utoipa::path(
    post,
    path = "/v1/queues/{group}/topics/{topic}/ack",
    tag = "queue groups",
    operation_id = "queue_ack",
    summary = "Acknowledge leased records",
    description = "The records are done for good: never delivered again. All or nothing: a record the \
                   group has not leased now (never delivered, already acked, or its lease ran out) is \
                   409 `not_leased` naming `records[i]`, and nothing changes.",
    params(GroupPath),
    request_body = AckBody,
    responses(
        (status = 204, description = "Done."),
        crate::openapi::JsonBodyErrors,
    ),
)]
pub(super) async fn ack(
    State(state): State<AppState>,
    PathParams((group, topic)): PathParams<(String, String)>,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let bytes = body.json_only()?;
    let AckBody { records } = parse_object(&bytes)?;
    settle(&state, group, topic, pairs(&records), Settle::Ack).await?;
    Ok(StatusCode::NO_CONTENT)
}

fn pairs(records: &[Object<RecordRef>]) -> Vec<(u32, u64)> {
    records.iter().map(|r| (r.0.partition, r.0.offset)).collect()
}

/// `POST .../nack` with `{"records": [...], "delay_ms"?}`: 204; the records are available again after
/// the delay.
#[utoipa::path(
    post,
    path = "/v1/queues/{group}/topics/{topic}/nack",
    tag = "queue groups",
    operation_id = "queue_nack",
    summary = "Give leased records back",
    description = "The records are available again after `delay_ms` (at once by default). All or \
                   nothing, as ack.",
    params(GroupPath),
    request_body = NackBody,
    responses(
        (status = 204, description = "Done."),
        crate::openapi::JsonBodyErrors,
    ),
)]
pub(super) async fn nack(
    State(state): State<AppState>,
    PathParams((group, topic)): PathParams<(String, String)>,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let bytes = body.json_only()?;
    let NackBody { records, delay_ms } = parse_object(&bytes)?;
    let delay = Duration::from_millis(in_range("delay_ms", delay_ms, 0..=MAX_VISIBILITY_MS)?);
    settle(&state, group, topic, pairs(&records), Settle::Nack(delay)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST .../extend` with `{"records": [...], "visibility_timeout_ms"}`: 204; the leases now end that
/// long from now.
#[utoipa::path(
    post,
    path = "/v1/queues/{group}/topics/{topic}/extend",
    tag = "queue groups",
    operation_id = "queue_extend",
    summary = "Extend leases",
    description = "The records' leases now end `visibility_timeout_ms` from now. All or nothing, as ack.",
    params(GroupPath),
    request_body = ExtendBody,
    responses(
        (status = 204, description = "Done."),
        crate::openapi::JsonBodyErrors,
    ),
)]
pub(super) async fn extend(
    State(state): State<AppState>,
    PathParams((group, topic)): PathParams<(String, String)>,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let bytes = body.json_only()?;
    let ExtendBody {
        records,
        visibility_timeout_ms,
    } = parse_object(&bytes)?;
    let visibility = Duration::from_millis(in_range(
        "visibility_timeout_ms",
        visibility_timeout_ms,
        1..=MAX_VISIBILITY_MS,
    )?);
    settle(&state, group, topic, pairs(&records), Settle::Extend(visibility)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Runs an ack, nack or extend of `pairs` (`(partition, offset)`) to completion on the broker or the
/// engine, all or nothing, and names the record refused. Shared by the HTTP routes and the wire
/// protocol's ACK, NACK and EXTEND.
pub(crate) async fn settle(
    state: &AppState,
    group: String,
    topic: String,
    pairs: Vec<(u32, u64)>,
    how: Settle,
) -> Result<(), ApiError> {
    if pairs.is_empty() {
        return Err(ApiError::ParameterOutOfRange {
            field: "records".into(),
            message: "must not be empty".into(),
        });
    }
    if let Some(e) = state.engine() {
        return on_engine::settle(state, e, group, topic, pairs, how)
            .await
            .map(|_| ());
    }
    // The broker answers `not_leased` for a group it does not know; 404 says what is wrong.
    state.broker().queue_info(&group, &topic)?;
    let (broker, records) = (state.broker().clone(), pairs.clone());
    let fut = async move {
        match how {
            Settle::Ack => broker.ack(&group, &topic, &records).await,
            Settle::Nack(delay) => broker.nack(&group, &topic, &records, delay).await,
            Settle::Extend(visibility) => broker.extend(&group, &topic, &records, visibility).await,
        }
    };
    match state.detached(fut).await? {
        Ok(()) => Ok(()),
        Err(error) => {
            let at = |want: &dyn Fn(&(u32, u64)) -> bool, key: &str| {
                pairs.iter().position(want).map(|i| format!("records[{i}]{key}"))
            };
            let field = match &error {
                BrokerError::NotLeased {
                    partition, offset, ..
                } => at(&|(p, o)| p == partition && o == offset, ""),
                BrokerError::PartitionNotFound { partition, .. } => {
                    at(&|(p, _)| p == partition, ".partition")
                }
                _ => None,
            };
            Err(ApiError::Broker { error, field })
        }
    }
}
