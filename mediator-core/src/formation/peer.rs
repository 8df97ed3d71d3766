//! The link between instances: who may forward a call ([`PeerKey`]), how a
//! call reaches a peer ([`PeerLink`]), and the deliverer that sends a call
//! for a node attached elsewhere to the instance holding it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use ring::hmac;

use super::Instance;
use crate::clock::Clock;
use crate::context::RequestContext;
use crate::deliver::Deliver;
use crate::error::{AuthError, DeliverError};
use crate::model::{Envelope, Node, Reply};
use crate::registry::Registry;
use crate::time::Timestamp;

/// How often a call may read the store for an instance the directory does
/// not know.
const LOOKUP_EVERY: Duration = Duration::from_secs(1);

/// How far a peer credential's time may stray from this instance's clock.
const PEER_SKEW: Duration = Duration::from_secs(30);

/// The key instances of one formation prove themselves to each other with,
/// derived from the secret they share (the one node tokens are signed
/// with), so an operator configures nothing more.
///
/// A credential names the instance and the time, and is an HMAC-SHA256 of
/// both under a key derived for this use alone: a node token cannot pass
/// for one, nor one for a node token. It is checked in constant time and
/// holds for 30 seconds either side of the checker's clock.
///
/// ```
/// use mediator_core::formation::PeerKey;
/// use mediator_core::Timestamp;
///
/// let key = PeerKey::from_secret(b"a secret of at least 32 bytes!!!");
/// let now = Timestamp::from_millis(1_700_000_000_000);
/// let credential = key.sign("hub-1", now);
/// assert_eq!(key.verify(&credential, now).unwrap(), "hub-1");
///
/// let other = PeerKey::from_secret(b"another secret of 32 bytes or more");
/// assert!(other.verify(&credential, now).is_err());
/// ```
#[derive(Clone)]
pub struct PeerKey {
    key: hmac::Key,
}

impl std::fmt::Debug for PeerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeerKey(..)")
    }
}

impl PeerKey {
    /// Derives the link key from the formation's shared secret.
    pub fn from_secret(secret: &[u8]) -> Self {
        let root = hmac::Key::new(hmac::HMAC_SHA256, secret);
        let derived = hmac::sign(&root, b"mediator peer link v1");
        PeerKey {
            key: hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref()),
        }
    }

    /// A credential for instance `instance` at `now`.
    pub fn sign(&self, instance: &str, now: Timestamp) -> String {
        let signed = format!("{instance}.{}", now.as_millis());
        let tag = hmac::sign(&self.key, signed.as_bytes());
        format!("{signed}.{}", hex::encode(tag.as_ref()))
    }

    /// The instance a credential names, if it is genuine and current.
    pub fn verify(&self, credential: &str, now: Timestamp) -> Result<String, AuthError> {
        let refused = |why: &str| AuthError::Refused(format!("peer credential {why}"));
        let (signed, tag) = credential
            .rsplit_once('.')
            .ok_or_else(|| refused("is malformed"))?;
        let (instance, millis) = signed
            .rsplit_once('.')
            .ok_or_else(|| refused("is malformed"))?;
        let tag = hex::decode(tag).map_err(|_| refused("is malformed"))?;
        hmac::verify(&self.key, signed.as_bytes(), &tag)
            .map_err(|_| refused("does not match this formation's secret"))?;
        let at: i64 = millis.parse().map_err(|_| refused("is malformed"))?;
        let skew = i64::try_from(PEER_SKEW.as_millis()).unwrap_or(i64::MAX);
        if (at - now.as_millis()).abs() > skew {
            return Err(refused("is too old or from the future"));
        }
        super::check_instance_id(instance).map_err(|_| refused("names no valid instance"))?;
        Ok(instance.to_owned())
    }
}

/// How a call reaches another instance of the formation: implemented by a
/// transport (the HTTP transport's is `HttpPeerLink`).
///
/// The link carries what a delivery carries (the sealed body, the verified
/// sender, the deadline, the request id and trace) plus `credential`,
/// which the receiving instance checks with its [`PeerKey`] before reading
/// anything else. The receiving instance delivers the call only to a node
/// attached to itself: a forwarded call is never forwarded again.
#[async_trait]
pub trait PeerLink: Send + Sync + 'static {
    /// Forwards one call for `node` to `peer`, the instance holding it.
    ///
    /// Fails with [`DeliverError::absent`] when the peer cannot be reached
    /// (nothing was sent), [`DeliverError::failed`] when it broke off.
    async fn forward(
        &self,
        peer: &Instance,
        credential: &str,
        node: &Node,
        envelope: &Envelope,
        cx: &RequestContext,
    ) -> Result<Reply, DeliverError>;
}

/// Sends each call for a node attached to another instance to that
/// instance, over the [`PeerLink`], if the instance is live.
pub(crate) struct Forward {
    own: String,
    key: PeerKey,
    link: Arc<dyn PeerLink>,
    registry: Arc<dyn Registry>,
    clock: Arc<dyn Clock>,
    /// The instances as last read from the store, by id.
    directory: ArcSwap<BTreeMap<String, Instance>>,
    /// When a call last read the store for an instance the directory did
    /// not know: at most once a second, so calls for a node whose instance
    /// is nowhere never each cost a store read.
    looked_up: std::sync::Mutex<Option<std::time::Instant>>,
}

impl Forward {
    pub(crate) fn new(
        own: String,
        key: PeerKey,
        link: Arc<dyn PeerLink>,
        registry: Arc<dyn Registry>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Forward {
            own,
            key,
            link,
            registry,
            clock,
            directory: ArcSwap::default(),
            looked_up: std::sync::Mutex::new(None),
        }
    }

    /// Whether a call for `node` is this deliverer's: the node is attached
    /// to another instance.
    pub(crate) fn takes(&self, node: &Node) -> bool {
        node.endpoint
            .attached_instance()
            .is_some_and(|instance| instance != self.own)
    }

    /// Replaces the directory with the instances the store holds now.
    pub(crate) fn learn(&self, instances: Vec<Instance>) {
        let directory = instances.into_iter().map(|i| (i.id.clone(), i)).collect();
        self.directory.store(Arc::new(directory));
    }

    async fn peer(&self, id: &str) -> Option<Instance> {
        if let Some(instance) = self.directory.load().get(id) {
            return Some(instance.clone());
        }
        // An instance newer than the last heartbeat's read: look again
        // rather than refuse a node that attached to it just now, but not
        // more than once a second.
        {
            let Ok(mut last) = self.looked_up.lock() else {
                return None;
            };
            let now = std::time::Instant::now();
            if last.is_some_and(|at| now.duration_since(at) < LOOKUP_EVERY) {
                return None;
            }
            *last = Some(now);
        }
        match self.registry.instances().await {
            Ok(instances) => {
                self.learn(instances);
                self.directory.load().get(id).cloned()
            }
            Err(e) => {
                tracing::warn!(error = %e, "reading the formation's instances failed");
                None
            }
        }
    }
}

#[async_trait]
impl Deliver for Forward {
    /// None: the router hands it the calls it [takes](Forward::takes),
    /// whatever their scheme's own deliverer.
    fn schemes(&self) -> Vec<String> {
        Vec::new()
    }

    async fn deliver(
        &self,
        node: &Node,
        envelope: &Envelope,
        cx: &RequestContext,
    ) -> Result<Reply, DeliverError> {
        let Some(id) = node.endpoint.attached_instance() else {
            return Err(DeliverError::unreachable("the node is not attached"));
        };
        if let Some(from) = &cx.forwarded_by {
            return Err(DeliverError::absent(format!(
                "attached to instance {id}, not to this one; instance {from} forwarded the call \
                 here and a forwarded call is not forwarded again"
            )));
        }
        let now = self.clock.now();
        let peer = match self.peer(id).await {
            Some(peer) if peer.is_expired(now) => {
                return Err(DeliverError::absent(format!(
                    "attached to instance {id}, whose lease ran out"
                )))
            }
            Some(peer) if peer.peer.is_empty() => {
                return Err(DeliverError::absent(format!(
                    "attached to instance {id}, which takes no forwarded calls (no peer address)"
                )))
            }
            Some(peer) => peer,
            None => {
                return Err(DeliverError::absent(format!(
                    "attached to instance {id}, which is not in the formation"
                )))
            }
        };
        let credential = self.key.sign(&self.own, now);
        self.link
            .forward(&peer, &credential, node, envelope, cx)
            .await
    }
}
