//! Errors of the broker. Each names the field or value it is about, so the HTTP layer can map it to a
//! status and a `field` in exactly one place.

/// Result alias for broker operations.
pub type Result<T, E = BrokerError> = std::result::Result<T, E>;

/// What can go wrong in the broker.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// A name (topic, group) breaks the naming rules.
    #[error("{field} `{value}`: {reason}")]
    InvalidName {
        /// The field holding the name.
        field: &'static str,
        /// The name given (control characters escaped).
        value: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// A setting out of range.
    #[error("{field}: {message}")]
    InvalidConfig {
        /// The setting's key.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// A request value out of range.
    #[error("{field}: {message}")]
    InvalidArgument {
        /// The request field.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// The topic exists already.
    #[error("topic `{0}` already exists")]
    TopicExists(String),
    /// No such topic.
    #[error("topic `{0}` does not exist")]
    TopicNotFound(String),
    /// No such partition.
    #[error("topic `{topic}` has no partition {partition} (it has {partitions})")]
    PartitionNotFound {
        /// The topic.
        topic: String,
        /// The partition asked for.
        partition: u32,
        /// How many the topic has.
        partitions: u32,
    },
    /// No such group on this topic.
    #[error("group `{group}` has no offsets for topic `{topic}`")]
    GroupNotFound {
        /// The group.
        group: String,
        /// The topic.
        topic: String,
    },
    /// An offset below the log start or past its end.
    #[error("offset {offset} of `{topic}` partition {partition} is out of range [{start}, {end}]")]
    OffsetOutOfRange {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// The offset asked for.
        offset: u64,
        /// First offset still stored.
        start: u64,
        /// Next offset to be written.
        end: u64,
    },
    /// A record larger than the topic allows.
    #[error("record of {size} bytes exceeds the topic's max_record_bytes of {max}")]
    RecordTooLarge {
        /// Encoded size of the record.
        size: usize,
        /// The topic's limit.
        max: usize,
    },
    /// The queue group exists with other settings.
    #[error("queue group `{group}` on topic `{topic}` already exists with other settings")]
    QueueExists {
        /// The group.
        group: String,
        /// The topic.
        topic: String,
    },
    /// An ack, nack or extend for a record the queue group has not leased out (never delivered, already
    /// acknowledged, or its lease expired and it was handed to another consumer).
    #[error("record {partition}/{offset} is not leased by queue group `{group}`")]
    NotLeased {
        /// The group.
        group: String,
        /// Partition.
        partition: u32,
        /// Offset.
        offset: u64,
    },
    /// A stream group member the group does not know: it never joined, left, its session expired, or
    /// the broker restarted. It must join again.
    #[error("`{member}` is not a live member of group `{group}` on topic `{topic}`; join again")]
    UnknownMember {
        /// The group.
        group: String,
        /// The topic.
        topic: String,
        /// The member id given.
        member: String,
    },
    /// A member's fetch or commit in a generation that is not the group's current one: the group was
    /// rebalanced since. The member heartbeats to learn its new partitions.
    #[error(
        "generation {generation} of group `{group}` on topic `{topic}` is not the current one ({current}); \
         heartbeat to learn the new assignment"
    )]
    StaleGeneration {
        /// The group.
        group: String,
        /// The topic.
        topic: String,
        /// The generation given.
        generation: u64,
        /// The group's current generation.
        current: u64,
    },
    /// A member's commit for a partition not assigned to it in the current generation.
    #[error(
        "partition {partition} of topic `{topic}` is not assigned to member `{member}` of group `{group}`"
    )]
    NotAssigned {
        /// The group.
        group: String,
        /// The topic.
        topic: String,
        /// The member.
        member: String,
        /// The partition.
        partition: u32,
    },
    /// A fetch, commit or seek of the group as a whole (without a member) while it has live members.
    #[error(
        "group `{group}` on topic `{topic}` has {members} live member(s): fetch and commit as a member, \
         seek when it has none"
    )]
    GroupHasMembers {
        /// The group.
        group: String,
        /// The topic.
        topic: String,
        /// How many live members it has.
        members: usize,
    },
    /// The broker is shutting down.
    #[error("the broker is shutting down")]
    ShuttingDown,
    /// Storage failed; not the caller's fault.
    #[error("storage error: {0}")]
    Storage(#[from] ferry_log::Error),
    /// Metadata could not be read or written; not the caller's fault.
    #[error("metadata error: {0}")]
    Metadata(String),
}
