//! The `/v1` routes that run on an engine other than the embedded broker (NATS JetStream, RabbitMQ):
//! create a topic, publish, create a queue group, receive, ack, nack, extend. Their handlers call these
//! when [`AppState::engine`] is set; every other `/v1` route answers 501 then (see `engine_gate`).
//!
//! The answers have the embedded engine's shapes, with what an engine cannot say filled in plainly:
//! one partition, `0` for sizes and counts it does not report, and a lease end estimated as now plus
//! the requested visibility (30 s when none was asked for).

use std::time::Duration;

use axum::Json;
use axum::http::StatusCode;
use axum::http::header::LOCATION;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use ferry_broker::engine::{EngineError, GroupSettings, InRecord, OutRecord};
use ferry_broker::{
    Header, PartitionInfo, Produce, Produced, QueueConfig, QueueInfo, StoredRecord, TopicConfig, TopicInfo,
};

use crate::EngineRef;
use crate::error::ApiError;
use crate::state::AppState;

fn failed(error: EngineError) -> ApiError {
    ApiError::Engine { error, field: None }
}

fn field(field: String, message: String) -> ApiError {
    ApiError::InvalidField {
        field: Some(field),
        message,
    }
}

/// `POST /v1/topics`: made unless it exists; 201 either way (engines do not say which).
pub(super) async fn create_topic(
    state: &AppState,
    e: &EngineRef,
    name: String,
    config: TopicConfig,
) -> Result<Response, ApiError> {
    ferry_broker::validate_name("name", &name).map_err(|error| ApiError::Broker { error, field: None })?;
    config
        .validate()
        .map_err(|error| ApiError::Broker { error, field: None })?;
    if config.partitions != 1 {
        return Err(ApiError::Broker {
            error: ferry_broker::BrokerError::InvalidConfig {
                field: "partitions",
                message: format!("the {} engine has one partition per topic", e.name),
            },
            field: None,
        });
    }
    let engine = e.engine.clone();
    let n = name.clone();
    state
        .detached(async move { engine.ensure_topic(&n).await })
        .await?
        .map_err(failed)?;
    let info = TopicInfo {
        name: name.clone(),
        config,
        partitions: vec![PartitionInfo {
            partition: 0,
            start_offset: 0,
            next_offset: 0,
            size_bytes: 0,
            segments: 0,
        }],
    };
    Ok((
        StatusCode::CREATED,
        [(LOCATION, format!("/v1/topics/{name}"))],
        Json(info),
    )
        .into_response())
}

/// A published record as the engine takes it: keys and header values as UTF-8 text, one partition,
/// the engine's own timestamps.
fn out_record(engine: &str, i: usize, r: Produce) -> Result<OutRecord, ApiError> {
    if r.partition.is_some_and(|p| p != 0) {
        return Err(field(
            format!("records[{i}].partition"),
            format!("the {engine} engine has one partition per topic: 0"),
        ));
    }
    if r.timestamp.is_some() {
        return Err(field(
            format!("records[{i}].timestamp"),
            format!("the {engine} engine stamps records itself"),
        ));
    }
    let text = |b: Bytes, at: String| {
        String::from_utf8(b.to_vec())
            .map_err(|_| field(at, format!("must be UTF-8 text on the {engine} engine")))
    };
    let key = r.key.map(|k| text(k, format!("records[{i}].key"))).transpose()?;
    let headers = r
        .headers
        .into_iter()
        .map(|h| {
            let at = format!("records[{i}].headers.{}", h.key);
            text(h.value, at).map(|v| (h.key, v))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(OutRecord {
        key,
        headers,
        value: r.value,
    })
}

/// `POST /v1/topics/{topic}/records`: every record durable in the engine before the answer.
pub(super) async fn publish(
    state: &AppState,
    e: &EngineRef,
    topic: String,
    records: Vec<Produce>,
    bytes: usize,
) -> Result<Vec<Produced>, ApiError> {
    let count = records.len();
    let records = records
        .into_iter()
        .enumerate()
        .map(|(i, r)| out_record(&e.name, i, r))
        .collect::<Result<Vec<_>, _>>()?;
    let (engine, metrics) = (e.engine.clone(), state.metrics().clone());
    state
        .detached(async move {
            let ids = engine.publish_ids(&topic, records).await;
            if ids.is_ok() {
                metrics.records_in(&topic, count, bytes);
            }
            ids
        })
        .await?
        .map(|ids| {
            ids.into_iter()
                .map(|(partition, offset)| Produced { partition, offset })
                .collect()
        })
        .map_err(failed)
}

/// `PUT /v1/queues/{group}/topics/{topic}`: made unless it exists (an existing group keeps its
/// settings); 201 either way. Of the settings, the engines use `visibility_timeout_ms` and
/// `max_in_flight`.
pub(super) async fn create_queue(
    state: &AppState,
    e: &EngineRef,
    group: String,
    topic: String,
    config: QueueConfig,
) -> Result<Response, ApiError> {
    config
        .validate()
        .map_err(|error| ApiError::Broker { error, field: None })?;
    let settings = GroupSettings {
        visibility: Duration::from_millis(config.visibility_timeout_ms),
        max_in_flight: config.max_in_flight,
    };
    let engine = e.engine.clone();
    let (g, t) = (group.clone(), topic.clone());
    state
        .detached(async move { engine.ensure_group(&g, &t, settings).await })
        .await?
        .map_err(failed)?;
    let info = QueueInfo {
        dead_letter_topic: config.dead_letter_topic.clone().unwrap_or_default(),
        group,
        topic,
        config,
        depth: 0,
        in_flight: 0,
    };
    Ok((StatusCode::CREATED, Json(info)).into_response())
}

/// A received record as the API shows it, with its delivery count and estimated lease end.
pub(super) struct Received {
    pub record: StoredRecord,
    pub deliveries: u32,
    pub lease_expires_ms: i64,
}

fn stored(r: InRecord) -> StoredRecord {
    StoredRecord {
        partition: r.partition,
        offset: r.offset,
        timestamp: r.timestamp_ms,
        key: r.key.map(Bytes::from),
        headers: r
            .headers
            .into_iter()
            .map(|(key, value)| Header {
                key,
                value: Bytes::from(value),
            })
            .collect(),
        value: r.value,
    }
}

/// `POST .../receive`: up to `max` records, long-polling up to `max_wait`.
pub(super) async fn receive(
    state: &AppState,
    e: &EngineRef,
    group: String,
    topic: String,
    max: usize,
    max_wait: Duration,
    visibility: Option<Duration>,
) -> Result<Vec<Received>, ApiError> {
    // As on the embedded engine, a receive on a group that does not exist makes it with the defaults.
    let engine = e.engine.clone();
    let (g, t) = (group.clone(), topic.clone());
    state
        .detached(async move { engine.ensure_group(&g, &t, GroupSettings::default()).await })
        .await?
        .map_err(failed)?;
    let got = state
        .long_poll(max_wait, |wait| {
            let (state, engine) = (state.clone(), e.engine.clone());
            let (group, topic) = (group.clone(), topic.clone());
            async move {
                state
                    .detached(async move { engine.receive(&group, &topic, max, wait).await })
                    .await?
                    .map_err(failed)
            }
        })
        .await?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let lease = visibility.unwrap_or(Duration::from_secs(30)).as_millis() as i64;
    Ok(got
        .into_iter()
        .map(|r| Received {
            deliveries: r.deliveries,
            record: stored(r),
            lease_expires_ms: now + lease,
        })
        .collect())
}

/// What `settle` does to the records.
#[derive(Debug, Clone, Copy)]
pub(super) enum Settle {
    Ack,
    Nack(Duration),
    Extend(Duration),
}

/// `POST .../ack`, `.../nack`, `.../extend`: 204, or 409 `not_leased` when this process does not hold
/// one of the records (engines hold leases per process).
pub(super) async fn settle(
    state: &AppState,
    e: &EngineRef,
    group: String,
    topic: String,
    ids: Vec<(u32, u64)>,
    how: Settle,
) -> Result<StatusCode, ApiError> {
    let engine = e.engine.clone();
    state
        .detached(async move {
            match how {
                Settle::Ack => engine.ack(&group, &topic, &ids).await,
                Settle::Nack(delay) => engine.nack(&group, &topic, &ids, delay).await,
                Settle::Extend(visibility) => engine.extend(&group, &topic, &ids, visibility).await,
            }
        })
        .await?
        .map_err(|error| ApiError::Engine {
            field: error.is_not_leased().then(|| "records".to_string()),
            error,
        })?;
    Ok(StatusCode::NO_CONTENT)
}
