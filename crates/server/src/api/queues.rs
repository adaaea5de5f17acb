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

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::ops::RangeInclusive;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ferry_broker::{Broker, BrokerError, Leased, QueueConfig, QueueInfo, ReceiveOptions};
use serde::de::value::MapAccessDeserializer;
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use tokio::time::Instant;

use super::records::MAX_WAIT_MS;
use crate::error::ApiError;
use crate::extract::{Body, PathParams, parse_json};
use crate::records::RecordOut;
use crate::state::AppState;

/// Most records one receive may lease.
const MAX_RECEIVE: u64 = 1000;
/// Records a receive leases when it does not say.
const DEFAULT_RECEIVE: u64 = 10;
/// Longest lease and longest nack delay: 12 h, the bound of a group's `visibility_timeout_ms` (and SQS's).
const MAX_VISIBILITY_MS: u64 = 12 * 3600 * 1000;
/// As `state::WAIT_SLICE`: a receive waits in slices of this length and checks for shutdown between them.
const WAIT_SLICE: Duration = Duration::from_millis(250);

/// `T` from a JSON object only. serde's derived structs also take an array of their fields in order
/// (`[0, 5]` for `{"partition": 0, "offset": 5}`, `[]` for all defaults), which this API refuses.
#[derive(Debug)]
pub(super) struct Object<T>(pub T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = T;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_map(V(PhantomData)).map(Object)
    }
}

/// A body that must be one JSON object, or empty for `T`'s defaults.
fn parse_body<T: for<'de> Deserialize<'de> + Default>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.is_empty() {
        return Ok(T::default());
    }
    parse_json::<Object<T>>(bytes, "").map(|o| o.0)
}

/// `PUT /v1/queues/{group}/topics/{topic}` with a `QueueConfig`: 201 and the group when created, 200 when
/// it existed with these settings.
pub(super) async fn create(
    State(state): State<AppState>,
    PathParams((group, topic)): PathParams<(String, String)>,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = body.json_only()?;
    let config: QueueConfig = parse_body(&bytes)?;
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
pub(super) async fn describe(
    State(state): State<AppState>,
    PathParams((group, topic)): PathParams<(String, String)>,
) -> Result<Json<QueueInfo>, ApiError> {
    Ok(Json(state.broker().queue_info(&group, &topic)?))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ReceiveBody {
    max_records: Option<u64>,
    max_wait_ms: Option<u64>,
    visibility_timeout_ms: Option<u64>,
}

/// `value` when it lies in `range`, else 422 `out_of_range` naming `field`.
fn in_range(field: &str, value: u64, range: RangeInclusive<u64>) -> Result<u64, ApiError> {
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
#[derive(Serialize)]
struct LeasedOut<'a> {
    #[serde(flatten)]
    record: RecordOut<'a>,
    delivery_count: u32,
    lease_expires_ms: i64,
}

#[derive(Serialize)]
struct Received<'a> {
    records: Vec<LeasedOut<'a>>,
}

/// `POST /v1/queues/{group}/topics/{topic}/receive`: leases records, long-polling up to `max_wait_ms`.
pub(super) async fn receive(
    State(state): State<AppState>,
    PathParams((group, topic)): PathParams<(String, String)>,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = body.json_only()?;
    let body: ReceiveBody = parse_body(&bytes)?;
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
    let options = ReceiveOptions {
        // In range, so the cast cannot truncate.
        max_records: max_records as usize,
        max_wait: Duration::ZERO,
        visibility_timeout: visibility.map(Duration::from_millis),
    };
    let leased = long_poll_receive(
        &state,
        &group,
        &topic,
        options,
        Duration::from_millis(max_wait_ms),
    )
    .await?;
    state
        .metrics()
        .records_out(&topic, leased.iter().map(|l| &l.record));
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

/// Receives until records come, `max_wait` has passed, or the server is shutting down, in slices as
/// [`AppState::long_poll`] does (which is typed for fetched records, not leased ones).
async fn long_poll_receive(
    state: &AppState,
    group: &str,
    topic: &str,
    options: ReceiveOptions,
    max_wait: Duration,
) -> Result<Vec<Leased>, ApiError> {
    let deadline = Instant::now() + max_wait;
    if !max_wait.is_zero() {
        tracing::debug!(max_wait_ms = max_wait.as_millis() as u64, "long-poll started");
    }
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let options = ReceiveOptions {
            max_wait: remaining.min(WAIT_SLICE),
            ..options
        };
        let (broker, group, topic) = (state.broker().clone(), group.to_string(), topic.to_string());
        // Detached: a receive counts deliveries durably, then records the leases; stopped in between, its
        // records would be handed out again at once instead of after their lease.
        let leased = state
            .detached(async move { broker.receive(&group, &topic, options).await })
            .await??;
        if !leased.is_empty() || remaining <= WAIT_SLICE || state.shutdown().is_cancelled() {
            return Ok(leased);
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordRef {
    partition: u32,
    offset: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AckBody {
    records: Vec<Object<RecordRef>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NackBody {
    records: Vec<Object<RecordRef>>,
    #[serde(default)]
    delay_ms: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExtendBody {
    records: Vec<Object<RecordRef>>,
    visibility_timeout_ms: u64,
}

/// `POST .../ack` with `{"records": [{"partition", "offset"}]}`: 204 once durable.
pub(super) async fn ack(
    State(state): State<AppState>,
    PathParams((group, topic)): PathParams<(String, String)>,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let bytes = body.json_only()?;
    let Object(AckBody { records }) = parse_json(&bytes, "")?;
    settle(
        &state,
        group,
        topic,
        records,
        |broker, group, topic, records| async move { broker.ack(&group, &topic, &records).await },
    )
    .await
}

/// `POST .../nack` with `{"records": [...], "delay_ms"?}`: 204; the records are available again after
/// the delay.
pub(super) async fn nack(
    State(state): State<AppState>,
    PathParams((group, topic)): PathParams<(String, String)>,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let bytes = body.json_only()?;
    let Object(NackBody { records, delay_ms }) = parse_json(&bytes, "")?;
    let delay = Duration::from_millis(in_range("delay_ms", delay_ms, 0..=MAX_VISIBILITY_MS)?);
    settle(&state, group, topic, records, move |broker, group, topic, records| async move {
        broker.nack(&group, &topic, &records, delay).await
    })
    .await
}

/// `POST .../extend` with `{"records": [...], "visibility_timeout_ms"}`: 204; the leases now end that
/// long from now.
pub(super) async fn extend(
    State(state): State<AppState>,
    PathParams((group, topic)): PathParams<(String, String)>,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let bytes = body.json_only()?;
    let Object(ExtendBody {
        records,
        visibility_timeout_ms,
    }) = parse_json(&bytes, "")?;
    let visibility = Duration::from_millis(in_range(
        "visibility_timeout_ms",
        visibility_timeout_ms,
        1..=MAX_VISIBILITY_MS,
    )?);
    settle(
        &state,
        group,
        topic,
        records,
        move |broker, group, topic, records| async move {
            broker.extend(&group, &topic, &records, visibility).await
        },
    )
    .await
}

/// Runs an ack, nack or extend of `records` to completion, and names the record the broker refused.
async fn settle<F, Fut>(
    state: &AppState,
    group: String,
    topic: String,
    records: Vec<Object<RecordRef>>,
    op: F,
) -> Result<StatusCode, ApiError>
where
    F: FnOnce(Broker, String, String, Vec<(u32, u64)>) -> Fut,
    Fut: Future<Output = Result<(), BrokerError>> + Send + 'static,
{
    if records.is_empty() {
        return Err(ApiError::ParameterOutOfRange {
            field: "records".into(),
            message: "must not be empty".into(),
        });
    }
    // The broker answers `not_leased` for a group it does not know; 404 says what is wrong.
    state.broker().queue_info(&group, &topic)?;
    let pairs: Vec<(u32, u64)> = records.iter().map(|r| (r.0.partition, r.0.offset)).collect();
    let fut = op(state.broker().clone(), group, topic, pairs.clone());
    match state.detached(fut).await? {
        Ok(()) => Ok(StatusCode::NO_CONTENT),
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
