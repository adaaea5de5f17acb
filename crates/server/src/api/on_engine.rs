//! The `/v1` routes on an engine other than the embedded broker (NATS JetStream, RabbitMQ): their
//! handlers call these when [`AppState::engine`] is set. What an engine cannot do answers 501
//! `engine_unsupported` (the subscription routes always do: see `engine_gate`); stream groups are
//! `ferry_broker::engine_groups` over the engine's log and metadata store.
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
use ferry_broker::engine::{EngineError, InRecord, OutRecord};
use ferry_broker::engine_policies::DeadLetters;
use ferry_broker::{
    BrokerError, FetchLimits, GroupStatus, Header, JoinOptions, MemberRef, Membership, PartitionInfo,
    Produce, Produced, QueueConfig, QueueInfo, SeekTo, StoredRecord, TopicConfig, TopicInfo,
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
/// settings); 201 either way. The engines use `visibility_timeout_ms` and `max_in_flight`; ferry applies
/// `max_deliveries` and `dead_letter_topic` (at 1000, the engines' own guard stops first: see
/// docs/engines.md); `delivery_delay_ms` is refused.
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
    let refuse = |field: &'static str, message: String| ApiError::Broker {
        error: BrokerError::InvalidConfig { field, message },
        field: None,
    };
    if config.delivery_delay_ms != 0 {
        return Err(refuse(
            "delivery_delay_ms",
            format!("is not supported on the {} engine", e.name),
        ));
    }
    let dead = DeadLetters::of(&config, &group, &topic);
    ferry_broker::validate_name("dead_letter_topic", &dead.topic)
        .map_err(|error| ApiError::Broker { error, field: None })?;
    let engine = e.engine.clone();
    let (g, t, c) = (group.clone(), topic.clone(), config.clone());
    state
        .detached(async move { engine.ensure_queue(&g, &t, &c).await })
        .await?
        .map_err(failed)?;
    let info = QueueInfo {
        dead_letter_topic: dead.topic,
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
    // As on the embedded engine, a receive on a group that does not exist makes it with the defaults; an
    // existing one keeps its settings.
    let slot = (group.clone(), topic.clone());
    if !state.queues_seen().contains(&slot) {
        let engine = e.engine.clone();
        let (g, t) = slot.clone();
        state
            .detached(async move {
                match engine.group_state(&g, &t).await {
                    Ok(Some(_)) => Ok(()),
                    Ok(None) | Err(EngineError::Unsupported { .. }) => {
                        engine.ensure_queue(&g, &t, &QueueConfig::default()).await
                    }
                    Err(e) => Err(e),
                }
            })
            .await?
            .map_err(failed)?;
        state.queues_seen().insert(slot);
    }
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
pub(crate) enum Settle {
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

/// A topic as the API shows it: the engine's offsets and size, one partition, default settings (engines
/// do not keep ferry's).
fn topic_info(t: ferry_broker::engine::TopicState) -> TopicInfo {
    TopicInfo {
        name: t.name,
        config: TopicConfig::default(),
        partitions: vec![PartitionInfo {
            partition: 0,
            start_offset: t.start_offset,
            next_offset: t.next_offset,
            size_bytes: t.size_bytes,
            segments: 0,
        }],
    }
}

fn not_found(topic: &str) -> ApiError {
    ApiError::Broker {
        error: BrokerError::TopicNotFound(topic.into()),
        field: None,
    }
}

/// `GET /v1/topics`.
pub(super) async fn list_topics(state: &AppState, e: &EngineRef) -> Result<Vec<TopicInfo>, ApiError> {
    let engine = e.engine.clone();
    let topics = state
        .detached(async move { engine.topics().await })
        .await?
        .map_err(failed)?;
    Ok(topics.into_iter().map(topic_info).collect())
}

/// `GET /v1/topics/{topic}`: 404 when the engine has no such topic.
pub(super) async fn describe_topic(
    state: &AppState,
    e: &EngineRef,
    topic: String,
) -> Result<TopicInfo, ApiError> {
    ferry_broker::validate_name("topic", &topic).map_err(|error| ApiError::Broker { error, field: None })?;
    let engine = e.engine.clone();
    let t = topic.clone();
    state
        .detached(async move { engine.describe_topic(&t).await })
        .await?
        .map_err(failed)?
        .map(topic_info)
        .ok_or_else(|| not_found(&topic))
}

/// `DELETE /v1/topics/{topic}`: 204, or 404 when the engine has no such topic.
pub(super) async fn delete_topic(
    state: &AppState,
    e: &EngineRef,
    topic: String,
) -> Result<StatusCode, ApiError> {
    ferry_broker::validate_name("topic", &topic).map_err(|error| ApiError::Broker { error, field: None })?;
    let engine = e.engine.clone();
    let t = topic.clone();
    let deleted = state
        .detached(async move { engine.delete_topic(&t).await })
        .await?
        .map_err(failed)?;
    state.queues_seen().retain(|(_, t)| *t != topic);
    if deleted {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(not_found(&topic))
    }
}

/// `GET /v1/topics/{topic}/partitions/{partition}/records`: partition 0 from `offset` on, within
/// `start_offset..=next_offset` as on the embedded engine.
pub(super) async fn fetch(
    state: &AppState,
    e: &EngineRef,
    topic: String,
    partition: u32,
    offset: u64,
    limits: FetchLimits,
) -> Result<Vec<StoredRecord>, ApiError> {
    let t = describe_topic(state, e, topic.clone()).await?;
    if partition != 0 {
        return Err(ApiError::Broker {
            error: BrokerError::PartitionNotFound {
                topic,
                partition,
                partitions: 1,
            },
            field: None,
        });
    }
    let (start, end) = (t.partitions[0].start_offset, t.partitions[0].next_offset);
    // An engine that keeps no log (RabbitMQ) reports 0 and 0, and says itself that it cannot read.
    if end > 0 && (offset < start || offset > end) {
        return Err(ApiError::broker_at(
            BrokerError::OffsetOutOfRange {
                topic,
                partition,
                offset,
                start,
                end,
            },
            "offset",
        ));
    }
    state
        .long_poll(limits.max_wait, |wait| {
            let engine = e.engine.clone();
            let topic = topic.clone();
            async move {
                let mut got = engine
                    .fetch(&topic, offset, limits.max_records, wait)
                    .await
                    .map_err(failed)?;
                ferry_broker::engine::truncate_to_bytes(&mut got, limits.max_bytes);
                Ok(got.into_iter().map(stored).collect())
            }
        })
        .await
}

/// `GET /v1/queues/{group}/topics/{topic}`: the engine's counts; the settings are the defaults (engines
/// keep their own: see docs/engines.md).
pub(super) async fn queue_info(
    state: &AppState,
    e: &EngineRef,
    group: String,
    topic: String,
) -> Result<QueueInfo, ApiError> {
    ferry_broker::validate_name("group", &group).map_err(|error| ApiError::Broker { error, field: None })?;
    describe_topic(state, e, topic.clone()).await?;
    let engine = e.engine.clone();
    let (g, t) = (group.clone(), topic.clone());
    let got = state
        .detached(async move { engine.group_state(&g, &t).await })
        .await?
        .map_err(failed)?;
    let Some(s) = got else {
        return Err(ApiError::Broker {
            error: BrokerError::GroupNotFound { group, topic },
            field: None,
        });
    };
    let config = QueueConfig::default();
    Ok(QueueInfo {
        dead_letter_topic: String::new(),
        group,
        topic,
        config,
        depth: s.depth,
        in_flight: s.in_flight,
    })
}

/// `GET /v1/groups/{group}/topics/{topic}/records`.
pub(super) async fn group_fetch(
    state: &AppState,
    e: &EngineRef,
    group: String,
    topic: String,
    member: Option<MemberRef>,
    limits: FetchLimits,
) -> Result<Vec<StoredRecord>, ApiError> {
    state
        .long_poll(limits.max_wait, |max_wait| {
            let (state, engine) = (state.clone(), e.engine.clone());
            let (group, topic, member) = (group.clone(), topic.clone(), member.clone());
            // Detached: a group fetch moves the group's position, so it must not stop half way.
            async move {
                let limits = FetchLimits { max_wait, ..limits };
                let groups = state.clone();
                let got = state
                    .detached(async move {
                        groups
                            .stream_groups()
                            .fetch(engine.as_ref(), &group, &topic, member.as_ref(), limits)
                            .await
                    })
                    .await?
                    .map_err(failed)?;
                Ok(got.into_iter().map(stored).collect())
            }
        })
        .await
}

/// `POST .../offsets`: the errors name `offsets[i]` as on the embedded engine.
pub(super) async fn group_commit(
    state: &AppState,
    e: &EngineRef,
    group: String,
    topic: String,
    member: Option<MemberRef>,
    offsets: Vec<(u32, u64)>,
) -> Result<(), ApiError> {
    let (groups, engine, pairs) = (state.clone(), e.engine.clone(), offsets.clone());
    let done = state
        .detached(async move {
            groups
                .stream_groups()
                .commit(engine.as_ref(), &group, &topic, member.as_ref(), &pairs)
                .await
        })
        .await?;
    done.map_err(|error| {
        let at = |want: &dyn Fn(&(u32, u64)) -> bool, key: &str| {
            offsets
                .iter()
                .position(want)
                .map(|i| format!("offsets[{i}].{key}"))
        };
        let field = match &error {
            EngineError::Broker(
                BrokerError::PartitionNotFound { partition, .. } | BrokerError::NotAssigned { partition, .. },
            ) => at(&|(p, _)| p == partition, "partition"),
            EngineError::Broker(BrokerError::OffsetOutOfRange {
                partition, offset, ..
            }) => at(&|(p, o)| p == partition && o == offset, "offset"),
            _ => None,
        };
        ApiError::Engine { error, field }
    })
}

/// `GET .../offsets`.
pub(super) async fn group_status(
    state: &AppState,
    e: &EngineRef,
    group: String,
    topic: String,
) -> Result<GroupStatus, ApiError> {
    let (groups, engine) = (state.clone(), e.engine.clone());
    state
        .detached(async move {
            groups
                .stream_groups()
                .status(engine.as_ref(), &group, &topic)
                .await
        })
        .await?
        .map_err(failed)
}

/// What a membership call does.
pub(super) enum Member {
    Join(JoinOptions),
    Heartbeat { member_id: String, generation: u64 },
    Leave { member_id: String },
}

/// `POST .../members`, `POST .../members/{member}/heartbeat`, `DELETE .../members/{member}`: the
/// membership after the call (`None` after a leave).
pub(super) async fn membership(
    state: &AppState,
    e: &EngineRef,
    group: String,
    topic: String,
    call: Member,
) -> Result<Option<Membership>, ApiError> {
    let (groups, engine) = (state.clone(), e.engine.clone());
    state
        .detached(async move {
            let (g, engine) = (groups.stream_groups(), engine.as_ref());
            match call {
                Member::Join(options) => g.join(engine, &group, &topic, options).await.map(Some),
                Member::Heartbeat {
                    member_id,
                    generation,
                } => g
                    .heartbeat(engine, &group, &topic, &member_id, generation)
                    .await
                    .map(Some),
                Member::Leave { member_id } => {
                    g.leave(engine, &group, &topic, &member_id).await.map(|()| None)
                }
            }
        })
        .await?
        .map_err(failed)
}

/// `POST .../seek`.
pub(super) async fn group_seek(
    state: &AppState,
    e: &EngineRef,
    group: String,
    topic: String,
    partition: Option<u32>,
    to: SeekTo,
) -> Result<Vec<(u32, u64)>, ApiError> {
    let (groups, engine) = (state.clone(), e.engine.clone());
    state
        .detached(async move {
            groups
                .stream_groups()
                .seek(engine.as_ref(), &group, &topic, partition, to)
                .await
        })
        .await?
        .map_err(|error| {
            let field = matches!(error, EngineError::Broker(BrokerError::OffsetOutOfRange { .. }))
                .then(|| "to.offset".to_string());
            ApiError::Engine { error, field }
        })
}
