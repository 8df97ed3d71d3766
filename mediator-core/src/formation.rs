//! What several mediator instances on one store share: who the instances
//! are, and the feed of changes each follows.
//!
//! A *formation* is every mediator instance that shares one store. Each
//! instance announces itself in the store ([`Instance`]: its id, the
//! address its peers reach it at, a lease it renews) and follows the
//! store's feed of [`Change`]s from the position it last read, so a node
//! registered at one instance is routable at every other without a full
//! reload of the store. The [`Registry`](crate::Registry) methods behind
//! both have defaults, so a store that keeps neither still serves a single
//! instance.

use std::time::Duration;

mod peer;

pub(crate) use peer::Forward;
pub use peer::{PeerKey, PeerLink};

use crate::error::{Error, Result};
use crate::model::{Node, NodeId, NodeKey};
use crate::time::Timestamp;

/// One mediator instance of a formation, as the store holds it.
///
/// ```
/// use mediator_core::formation::Instance;
/// use mediator_core::Timestamp;
/// use std::time::Duration;
///
/// let now = Timestamp::from_millis(1_000);
/// let hub = Instance::new("hub-1", "http://10.0.0.1:8080", now, Duration::from_secs(6)).unwrap();
/// assert!(!hub.is_expired(now + Duration::from_secs(5)));
/// assert!(hub.is_expired(now + Duration::from_secs(6)));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// The instance's id: what nodes attached to it record
    /// (`attached:ID`).
    pub id: String,
    /// Where its peers reach it (the base URL of its HTTP API), or empty
    /// when it takes no forwarded calls.
    pub peer: String,
    /// When it first announced itself.
    pub started: Timestamp,
    /// When it last renewed its lease.
    pub heartbeat: Timestamp,
    /// When its lease runs out, unless renewed; then its attached nodes
    /// are detached everywhere.
    pub lease_until: Timestamp,
}

impl Instance {
    /// An instance announcing itself at `now` with a lease of `ttl`;
    /// fails when `id` is not a valid [instance id](check_instance_id).
    pub fn new(
        id: impl Into<String>,
        peer: impl Into<String>,
        now: Timestamp,
        ttl: Duration,
    ) -> Result<Self> {
        let id = id.into();
        check_instance_id(&id)?;
        Ok(Instance {
            id,
            peer: peer.into(),
            started: now,
            heartbeat: now,
            lease_until: now + ttl,
        })
    }

    /// Whether the lease has run out at `now` (a lease ending exactly at
    /// `now` has).
    pub fn is_expired(&self, now: Timestamp) -> bool {
        self.lease_until <= now
    }
}

/// Checks an instance id: 1 to 64 of `A-Z a-z 0-9 _ - .`, so it can be
/// written into an [`Endpoint::attached`](crate::Endpoint::attached)
/// endpoint, a header and a log line as it is.
///
/// ```
/// use mediator_core::formation::check_instance_id;
/// assert!(check_instance_id("hub-1.eu").is_ok());
/// assert!(check_instance_id("hub 1").is_err());
/// assert!(check_instance_id("").is_err());
/// ```
pub fn check_instance_id(id: &str) -> Result<()> {
    let valid = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if valid {
        Ok(())
    } else {
        Err(Error::invalid(
            "instance",
            "an instance id is 1 to 64 of A-Z, a-z, 0-9, '_', '-' and '.'",
        ))
    }
}

/// An instance whose lease ran out, removed from the store with the nodes
/// that were attached to it ([`Registry::expire_instances`](crate::Registry::expire_instances)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetiredInstance {
    /// The instance's id.
    pub id: String,
    /// The nodes that were attached to it, now detached.
    pub detached: Vec<NodeKey>,
}

/// One entry of the store's feed of changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Where it stands in the feed: every change has a higher position
    /// than the ones before it.
    pub position: u64,
    /// What changed.
    pub kind: ChangeKind,
}

/// What a [`Change`] did to one registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeKind {
    /// The node was registered, registered again or renewed; this is the
    /// node as stored. A store may give the node as it is when the feed is
    /// read rather than as the change left it: a follower that applies
    /// every change in order ends at the store's state either way.
    Put(Node),
    /// The registration `id` of `key` was removed: by a caller, by an
    /// eviction, or with the instance it was attached to.
    Removed {
        /// The registration's id (the key may have registered again since).
        id: NodeId,
        /// The node's key.
        key: NodeKey,
    },
}

/// One read of the feed ([`Registry::changes`](crate::Registry::changes)).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChangePage {
    /// The changes after the position asked from, oldest first. A store
    /// that gives nodes as they are when the feed is read gives a node
    /// that is gone since as [`ChangeKind::Removed`].
    pub changes: Vec<Change>,
    /// The position to read from next: the last change's, or the position
    /// asked from when there was none.
    pub next: u64,
    /// Changes after the position asked from were compacted away: the
    /// follower missed them and must reload the whole store.
    pub gap: bool,
}

/// How long a feed entry is kept before compaction by default: a follower
/// that falls further behind than this reloads the store.
pub const FEED_RETENTION: Duration = Duration::from_secs(10 * 60);
