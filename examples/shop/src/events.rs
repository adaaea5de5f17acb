//! The domain events the two services exchange, and the topics and queue groups that carry them.
//!
//! ```text
//!  products ──outbox──> shop.products ──queue group `likes`────> likes
//!  products <────────── shop.likes    <──queue group `products`── likes ──outbox──>
//! ```
//!
//! Every event is one JSON record `{"id": <event id>, "type": <event type>, ...}` whose key is the
//! product id (so one product's events stay in one partition, in order) and whose headers repeat the
//! type (`type`) and id (`event-id`) for filters and tools:
//!
//! ```text
//! {"id":"8c1e…","type":"product_created","product":{"id":1,"title":"Mug","description":"","image":"","version":1}}
//! {"id":"…","type":"product_updated","product":{"id":1,"title":"Tea mug","description":"","image":"","version":2}}
//! {"id":"…","type":"product_deleted","product":{"id":1,"version":3}}
//! {"id":"…","type":"product_liked","product":{"id":1},"user_id":7}
//! ```
//!
//! Product events carry the product's whole state and its `version`, which products raises by one on
//! every change, so a consumer can apply them in any order (a late or redelivered older version is
//! ignored) and a delete is final. Consumers skip event types they do not know (tolerant reader).

use std::time::Duration;

use ferry_client::{Client, QueueConfig, TopicConfig};
use serde::{Deserialize, Serialize};

/// The topic of product events (created, updated, deleted), written by products.
pub const PRODUCTS_TOPIC: &str = "shop.products";
/// The topic of likes, written by likes.
pub const LIKES_TOPIC: &str = "shop.likes";
/// The queue group likes reads [`PRODUCTS_TOPIC`] with.
pub const LIKES_GROUP: &str = "likes";
/// The queue group products reads [`LIKES_TOPIC`] with.
pub const PRODUCTS_GROUP: &str = "products";
/// Header holding the event type.
pub const TYPE_HEADER: &str = "type";
/// Header holding the event id.
pub const ID_HEADER: &str = "event-id";

/// How long a received event stays leased to one consumer: it is applied in milliseconds, so a
/// consumer that crashed holding it is replaced quickly.
pub const VISIBILITY: Duration = Duration::from_secs(5);
/// Deliveries after which ferry moves an event no consumer could apply to the group's dead-letter
/// topic (`shop.products.likes.dlq`, `shop.likes.products.dlq`). A killed consumer's deliveries
/// count too, hence more than ferry's default of 5.
pub const MAX_DELIVERIES: u32 = 20;

/// A new random event id: 128 random bits as 32 lower-case hex digits.
pub fn new_event_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// A product's state as products events carry it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductState {
    /// The product's id, given by products.
    pub id: i64,
    /// Title.
    pub title: String,
    /// Description.
    pub description: String,
    /// Image URL.
    pub image: String,
    /// Raised by one on every change (1 when created).
    pub version: i64,
}

/// The product a delete is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deleted {
    /// The product's id.
    pub id: i64,
    /// One above the last version it had.
    pub version: i64,
}

/// The product a like is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Liked {
    /// The product's id.
    pub id: i64,
}

/// A domain event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// products: a product was created.
    ProductCreated {
        /// Event id.
        id: String,
        /// Its state.
        product: ProductState,
    },
    /// products: a product changed.
    ProductUpdated {
        /// Event id.
        id: String,
        /// Its new state.
        product: ProductState,
    },
    /// products: a product was deleted.
    ProductDeleted {
        /// Event id.
        id: String,
        /// Which one.
        product: Deleted,
    },
    /// likes: a user liked a product (once per user and product).
    ProductLiked {
        /// Event id.
        id: String,
        /// Which product.
        product: Liked,
        /// Who.
        user_id: i64,
    },
}

impl Event {
    /// The event id.
    pub fn id(&self) -> &str {
        match self {
            Self::ProductCreated { id, .. }
            | Self::ProductUpdated { id, .. }
            | Self::ProductDeleted { id, .. }
            | Self::ProductLiked { id, .. } => id,
        }
    }

    /// The `type` field.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::ProductCreated { .. } => "product_created",
            Self::ProductUpdated { .. } => "product_updated",
            Self::ProductDeleted { .. } => "product_deleted",
            Self::ProductLiked { .. } => "product_liked",
        }
    }

    /// The product it is about: the record's key.
    pub fn product_id(&self) -> i64 {
        match self {
            Self::ProductCreated { product, .. } | Self::ProductUpdated { product, .. } => product.id,
            Self::ProductDeleted { product, .. } => product.id,
            Self::ProductLiked { product, .. } => product.id,
        }
    }
}

/// What a consumer makes of a record's value.
#[derive(Debug)]
pub enum Parsed {
    /// An event it knows.
    Event(Event),
    /// A well-formed event of a type it does not know: skipped.
    Unknown {
        /// Its id.
        id: String,
        /// Its type.
        kind: String,
    },
}

/// The fields every event has.
#[derive(Deserialize)]
struct Envelope {
    id: String,
    #[serde(rename = "type")]
    kind: String,
}

const KNOWN: [&str; 4] = [
    "product_created",
    "product_updated",
    "product_deleted",
    "product_liked",
];

/// Parses a record's value.
///
/// # Errors
/// The value is not an event: not JSON, no string `id` or `type`, or a known type with a wrong shape.
pub fn parse(value: &[u8]) -> Result<Parsed, serde_json::Error> {
    let envelope: Envelope = serde_json::from_slice(value)?;
    if KNOWN.contains(&envelope.kind.as_str()) {
        serde_json::from_slice(value).map(Parsed::Event)
    } else {
        Ok(Parsed::Unknown {
            id: envelope.id,
            kind: envelope.kind,
        })
    }
}

/// The settings both queue groups get.
pub fn queue_config() -> QueueConfig {
    QueueConfig {
        visibility_timeout_ms: Some(u64::try_from(VISIBILITY.as_millis()).unwrap_or(u64::MAX)),
        max_deliveries: Some(MAX_DELIVERIES),
        ..QueueConfig::default()
    }
}

/// Creates both topics and both queue groups unless they exist. Each service does it for the whole
/// system before it publishes or consumes (and again after ferry was unreachable), so that no event is
/// published before the group that reads it exists: on RabbitMQ an exchange keeps nothing for a queue
/// made later. A group that exists with other settings keeps them (logged).
///
/// # Errors
/// Ferry is unreachable or refuses.
pub async fn ensure_topology(client: &Client) -> Result<(), ferry_client::Error> {
    for topic in [PRODUCTS_TOPIC, LIKES_TOPIC] {
        match client.create_topic(topic, &TopicConfig::default()).await {
            Ok(_) => {}
            Err(e) if e.code() == Some("topic_exists") => {}
            Err(e) => return Err(e),
        }
    }
    let config = queue_config();
    for (group, topic) in [(LIKES_GROUP, PRODUCTS_TOPIC), (PRODUCTS_GROUP, LIKES_TOPIC)] {
        match client.create_queue(group, topic, &config).await {
            Ok(_) => {}
            Err(e) if e.code() == Some("queue_exists") => {
                tracing::warn!(group, topic, error = %e,
                    "the queue group exists with other settings; keeping them");
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_have_the_documented_shape() {
        let e = Event::ProductCreated {
            id: "e1".into(),
            product: ProductState {
                id: 1,
                title: "t".into(),
                description: "d".into(),
                image: "i".into(),
                version: 1,
            },
        };
        assert_eq!(
            serde_json::to_value(&e).unwrap(),
            json!({"id": "e1", "type": "product_created",
                   "product": {"id": 1, "title": "t", "description": "d", "image": "i", "version": 1}})
        );
        let liked = Event::ProductLiked {
            id: "e2".into(),
            product: Liked { id: 4 },
            user_id: 7,
        };
        assert_eq!(
            serde_json::to_value(&liked).unwrap(),
            json!({"id": "e2", "type": "product_liked", "product": {"id": 4}, "user_id": 7})
        );
        assert_eq!(liked.kind(), "product_liked");
        assert_eq!(liked.product_id(), 4);
        let text = serde_json::to_vec(&liked).unwrap();
        assert!(matches!(parse(&text).unwrap(), Parsed::Event(back) if back == liked));
    }

    #[test]
    fn unknown_types_are_told_from_malformed_events() {
        let unknown = parse(br#"{"id":"e3","type":"product_archived","product":{"id":1}}"#).unwrap();
        assert!(
            matches!(&unknown, Parsed::Unknown { id, kind } if id == "e3" && kind == "product_archived"),
            "{unknown:?}"
        );
        assert!(parse(br#"{"id":"e4","type":"product_liked","product":{"id":"x"}}"#).is_err());
        assert!(parse(br#"{"type":"product_liked"}"#).is_err());
        assert!(parse(b"not json").is_err());
        // Fields added by a newer producer are ignored.
        let newer = parse(br#"{"id":"e5","type":"product_liked","product":{"id":2},"user_id":1,"x":0}"#);
        assert!(matches!(
            newer.unwrap(),
            Parsed::Event(Event::ProductLiked { user_id: 1, .. })
        ));
    }

    #[test]
    fn event_ids_are_128_random_bits() {
        let (a, b) = (new_event_id(), new_event_id());
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
