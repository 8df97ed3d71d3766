//! The node client, written once over any transport's [`Wire`].
//!
//! [`NodeClient`] is what a node holds: built by a [`NodeClientBuilder`]
//! over a wire, it seals each call's payload for its target
//! ([`seal_request`](super::seal_request)), has the wire carry it, and
//! opens the reply ([`open_reply`](super::open_reply)); a started node
//! also stays joined (registered, or attached) as its [`Lease`](super::Lease)
//! says, joining again with backoff when the mediator forgot it or the
//! wire lost it. Every failure is one [`ClientError`], whatever the
//! transport.
//!
//! Each transport implements only its [`Wire`]: the HTTP transport's
//! `NodeClient` and the QUIC transport's `QuicNodeClient` are this client
//! over their wires, with their own constructors and settings.

mod builder;
mod keeper;
#[cfg(test)]
mod tests;
mod wire;

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::cipher::Cipher;
use crate::clock::Clock;
use crate::error::Error;
use crate::model::{NodeKey, Target};
use crate::router::Summary;

use super::{open_reply, seal_request, BroadcastReplies, ClientError, NodeReply, TokenSource};

pub use builder::{NodeClientBuilder, DEFAULT_MAX_BODY, DEFAULT_TIMEOUT, DEFAULT_TTL};
pub use wire::{
    read_error_body, Join, Joined, Lost, Member, Renewal, Wire, WireEntry, WireReply, WireRequest,
};

use builder::Checked;
use keeper::Keeper;

/// Extra time a call waits beyond its timeout, so the mediator's own 504
/// (which names the slow node) normally arrives first.
pub const GRACE: Duration = Duration::from_secs(2);

/// A node client over the wire `W`: reaches other nodes through the
/// mediator (one node, any node of a group, every node of a group) and,
/// once [started](NodeClientBuilder::start), answers them.
///
/// Cheap to clone; clones share one wire and one registration. Dropping
/// the last clone stops the lease keeper and, with the wire, whatever it
/// runs (the registration then runs out at the mediator, or its
/// connection closes); [`shutdown`](Self::shutdown) also leaves at once.
///
/// # Example
///
/// A wire of one's own, here one that delivers in memory to a single
/// node, gets the whole client:
///
/// ```
/// use std::sync::Arc;
///
/// use bytes::Bytes;
/// use mediator_core::async_trait;
/// use mediator_core::node::{
///     ClientError, Delivered, Incoming, Join, Joined, NodeClientBuilder, Responder, Wire, WireReply,
///     WireRequest,
/// };
/// use mediator_core::{Error, KeyRing, NodeKey, SealKey, Timestamp};
///
/// /// Hands every request to one node's responder, as a mediator would.
/// struct Loopback {
///     node: Responder,
///     caller: NodeKey,
/// }
///
/// #[async_trait]
/// impl Wire for Loopback {
///     async fn send(&self, request: WireRequest<'_>) -> Result<WireReply, ClientError> {
///         let target = request.target.to_string();
///         let from = self.caller.to_string();
///         let delivered = Delivered::new(request.method.clone(), request.path, &request.body)
///             .with_target(target.as_str())
///             .with_from(from.as_str());
///         let node = self.node.node().to_string();
///         Ok(match self.node.answer(delivered, Timestamp::now()).await {
///             Ok(sealed) => WireReply::Answered { node, status: 200, body: Bytes::from(sealed) },
///             Err(e) => WireReply::Refused { node: Some(node), status: e.status(), error: (&e).into() },
///         })
///     }
///     async fn join(&self, _join: &Join) -> Result<Joined, ClientError> {
///         Ok(Joined::held())
///     }
///     async fn leave(&self, _join: &Join) -> Result<(), ClientError> {
///         Ok(())
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), ClientError> {
/// let keys = KeyRing::new(SealKey::generate());
/// let api = NodeKey::named("users", "api")?;
/// let me = NodeKey::named("billing", "worker-1")?;
/// let node = Responder::new(api.clone(), keys.clone(), |request: Incoming| async move {
///     match request.body.as_ref() {
///         b"" => Err(Error::refused(400, "no_name", "whom should I greet?")),
///         name => Ok(Bytes::from([b"hello ", name].concat())),
///     }
/// });
/// let client = NodeClientBuilder::new()
///     .node_key(me.clone())
///     .token("a token naming billing/worker-1")
///     .keys(keys)
///     .connect(Loopback { node, caller: me })
///     .await?;
///
/// // Sealed for users/api, opened there, answered, sealed back and opened.
/// assert_eq!(client.call(api.clone(), "/greet", "ada").await?, "hello ada");
/// let (who, _) = client.any("users", "/greet", "bob").await?;
/// assert_eq!(who, api);
/// // The node's refusal, as one error type.
/// let refused = client.call(api, "/greet", "").await.unwrap_err();
/// assert_eq!((refused.status(), refused.kind()), (Some(400), Some("no_name")));
/// client.shutdown().await?;
/// # Ok(()) }
/// ```
pub struct NodeClient<W: Wire> {
    inner: Arc<Inner<W>>,
}

impl<W: Wire> Clone for NodeClient<W> {
    fn clone(&self) -> Self {
        NodeClient {
            inner: Arc::clone(&self.inner),
        }
    }
}

struct Inner<W> {
    wire: Arc<W>,
    key: Option<NodeKey>,
    cipher: Arc<dyn Cipher>,
    tokens: Arc<TokenSource>,
    timeout: Duration,
    clock: Arc<dyn Clock>,
    join: Join,
    /// `Some` until [`NodeClient::shutdown`].
    keeping: Mutex<Option<Keeping>>,
}

/// The lease keeper at work.
struct Keeping {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl<W> Drop for Inner<W> {
    fn drop(&mut self) {
        let keeping = self
            .keeping
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(keeping) = keeping {
            keeping.task.abort();
        }
    }
}

impl<W: Wire + fmt::Debug> fmt::Debug for NodeClient<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeClient")
            .field("wire", &self.inner.wire)
            .field("key", &self.inner.key)
            .field("started", &self.inner.join.node.is_some())
            .finish_non_exhaustive()
    }
}

impl<W: Wire> NodeClient<W> {
    /// Joins once and spawns the keeper.
    async fn launch(checked: Checked, wire: W, join: Join) -> Result<NodeClient<W>, ClientError> {
        let wire = Arc::new(wire);
        let mut lease = checked.lease();
        let sent = checked.clock.now();
        let joined = wire.join(&join).await?;
        lease.registered(sent, sent + joined.lease.unwrap_or(checked.ttl));
        if let Some(member) = &join.node {
            tracing::info!(node = %member.key, "node joined");
        }
        let (stop, stopped) = watch::channel(false);
        let keeper = Keeper {
            wire: Arc::clone(&wire),
            join: join.clone(),
            clock: Arc::clone(&checked.clock),
        };
        let task = tokio::spawn(keeper.run(lease, joined.lease.is_none(), stopped));
        Ok(NodeClient {
            inner: Arc::new(Inner {
                wire,
                key: checked.key,
                cipher: checked.cipher,
                tokens: checked.tokens,
                timeout: checked.timeout,
                clock: checked.clock,
                join,
                keeping: Mutex::new(Some(Keeping { stop, task })),
            }),
        })
    }

    /// This node's key, if it has an identity.
    pub fn key(&self) -> Option<&NodeKey> {
        self.inner.key.as_ref()
    }

    /// The wire the client talks over.
    pub fn wire(&self) -> &W {
        &self.inner.wire
    }

    /// The clock the client reads.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }

    /// How long a call waits for its answer.
    pub fn timeout(&self) -> Duration {
        self.inner.timeout
    }

    /// Sends `body` to node `target` at `path` and returns its opened reply.
    ///
    /// `path` may carry a query, which the seal does not cover; a missing
    /// leading `/` is added.
    pub async fn call(
        &self,
        target: NodeKey,
        path: &str,
        body: impl Into<Bytes>,
    ) -> Result<Bytes, ClientError> {
        let (_, reply) = self.unicast(Target::One(target), path, body.into()).await?;
        Ok(reply)
    }

    /// Sends `body` to any one node of `group` (the mediator picks the
    /// least busy healthy one) and returns which node answered and its
    /// reply.
    pub async fn any(
        &self,
        group: &str,
        path: &str,
        body: impl Into<Bytes>,
    ) -> Result<(NodeKey, Bytes), ClientError> {
        self.unicast(Target::any(group)?, path, body.into()).await
    }

    /// Sends `body` to every node of `group` and returns each node's
    /// result with the mediator's summary (counted from the entries when
    /// the mediator sent none).
    ///
    /// Fails as a whole only when the mediator refuses the broadcast (no
    /// such group, bad token, ...); a node that fails is an `Err` entry:
    /// [`ClientError::Node`] when it refused,
    /// [`ClientError::Mediator`] when the mediator got no answer from it.
    pub async fn broadcast(
        &self,
        group: &str,
        path: &str,
        body: impl Into<Bytes>,
    ) -> Result<BroadcastReplies, ClientError> {
        let target = Target::all(group)?;
        let (path, bare) = checked_path(path)?;
        match self.exchange(&target, &path, &bare, body.into()).await? {
            WireReply::Broadcast { entries, summary } => {
                let replies: Vec<NodeReply> = entries
                    .into_iter()
                    .map(|entry| self.broadcast_entry(entry, &bare))
                    .collect::<Result<_, _>>()?;
                let summary = summary.unwrap_or_else(|| count(&replies));
                Ok(BroadcastReplies { replies, summary })
            }
            WireReply::Refused { status, error, .. } => {
                Err(ClientError::refused(None, status, error))
            }
            WireReply::Answered { node, .. } => Err(ClientError::Protocol(format!(
                "asked {target}, but only {node} answered"
            ))),
        }
    }

    /// Stops the lease keeper, leaves (deregisters, stops accepting
    /// deliveries, closes connections) and returns once that is done. A
    /// second call does nothing.
    ///
    /// The wire stops accepting even when deregistering fails; the error
    /// is returned then (the lease runs out at the mediator anyway).
    pub async fn shutdown(&self) -> Result<(), ClientError> {
        let keeping = self
            .inner
            .keeping
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let Some(keeping) = keeping else {
            return Ok(());
        };
        let _ = keeping.stop.send(true);
        // Wait for the keeper so no join of its lands after the leave.
        let _ = keeping.task.await;
        self.inner.wire.leave(&self.inner.join).await?;
        if let Some(member) = &self.inner.join.node {
            tracing::info!(node = %member.key, "node left");
        }
        Ok(())
    }

    fn broadcast_entry(&self, entry: WireEntry, bare: &str) -> Result<NodeReply, ClientError> {
        let node: NodeKey = entry.node.parse().map_err(|e| {
            ClientError::Protocol(format!("broadcast entry's node {:?}: {e}", entry.node))
        })?;
        let result = match entry.reply {
            WireReply::Answered { status, body, .. } if is_success(status) => {
                self.open(&node, bare, &body)
            }
            WireReply::Answered { node, status, body } => Err(ClientError::refused(
                Some(node),
                status,
                read_error_body(&body),
            )),
            WireReply::Refused {
                node,
                status,
                error,
            } => Err(ClientError::refused(node, status, error)),
            WireReply::Broadcast { .. } => {
                return Err(ClientError::Protocol(
                    "a broadcast entry is itself a broadcast".into(),
                ))
            }
        };
        Ok(NodeReply {
            node,
            id: entry.id,
            result,
        })
    }

    /// Sends to one node (`One` or `Any`) and opens the reply.
    async fn unicast(
        &self,
        target: Target,
        path: &str,
        body: Bytes,
    ) -> Result<(NodeKey, Bytes), ClientError> {
        let (path, bare) = checked_path(path)?;
        let (node, status, body, error) = match self.exchange(&target, &path, &bare, body).await? {
            WireReply::Answered { node, status, body } => (node, status, body, None),
            WireReply::Refused {
                node: Some(node),
                status,
                error,
            } => (node, status, Bytes::new(), Some(error)),
            WireReply::Refused {
                node: None,
                status,
                error,
            } => return Err(ClientError::refused(None, status, error)),
            WireReply::Broadcast { .. } => {
                return Err(ClientError::Protocol(format!(
                    "asked {target}, but the answer is a broadcast's"
                )))
            }
        };
        let replier: NodeKey = node.parse().map_err(|e| {
            ClientError::Protocol(format!(
                "the answering node {node:?} is not a node key: {e}"
            ))
        })?;
        // The seal would catch a reply from another node too; saying so
        // plainly makes a misrouting mediator easier to diagnose.
        if !target.addresses(&replier) {
            return Err(ClientError::Protocol(format!(
                "asked {target}, but the mediator says {replier} answered"
            )));
        }
        if let Some(error) = error {
            return Err(ClientError::refused(Some(node), status, error));
        }
        if !is_success(status) {
            return Err(ClientError::refused(
                Some(node),
                status,
                read_error_body(&body),
            ));
        }
        let opened = self.open(&replier, &bare, &body)?;
        Ok((replier, opened))
    }

    /// Seals `body` for `target` at `bare` and has the wire carry it to
    /// `path`, within the client's timeout (and [`GRACE`]).
    async fn exchange(
        &self,
        target: &Target,
        path: &str,
        bare: &str,
        body: Bytes,
    ) -> Result<WireReply, ClientError> {
        let inner = &self.inner;
        let sealed = seal_request(
            inner.cipher.as_ref(),
            inner.key.as_ref(),
            target,
            bare,
            &body,
        )?;
        let timeout = inner.timeout;
        let request = WireRequest {
            target,
            method: &Method::POST,
            path,
            body: Bytes::from(sealed),
            timeout,
            deadline: inner.clock.now() + timeout,
            tokens: &inner.tokens,
        };
        // The wait bounds real I/O, so it runs on the runtime's timer.
        let limit = timeout + GRACE;
        match tokio::time::timeout(limit, inner.wire.send(request)).await {
            Ok(reply) => reply,
            Err(_) => Err(ClientError::Timeout {
                peer: None,
                after: limit,
            }),
        }
    }

    fn open(&self, replier: &NodeKey, bare: &str, sealed: &[u8]) -> Result<Bytes, ClientError> {
        let plain = open_reply(
            self.inner.cipher.as_ref(),
            replier,
            self.inner.key.as_ref(),
            bare,
            sealed,
        )?;
        Ok(Bytes::from(plain))
    }
}

fn is_success(status: u16) -> bool {
    (200..300).contains(&status)
}

/// The path as sent (leading `/`, query kept) and its bare form (no
/// query), which the seal binds.
fn checked_path(path: &str) -> Result<(String, String), ClientError> {
    let path = if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    };
    if path.contains('#') || path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(
            Error::invalid("path", "must not contain '#', spaces or control characters").into(),
        );
    }
    let bare = path.split('?').next().unwrap_or(&path).to_owned();
    Ok((path, bare))
}

/// A summary counted from the entries, for mediators that send none.
fn count(replies: &[NodeReply]) -> Summary {
    let mut summary = Summary {
        asked: replies.len(),
        ..Summary::default()
    };
    for reply in replies {
        match &reply.result {
            Err(ClientError::Mediator { kind, .. }) if kind == "deadline_passed" => {
                summary.timed_out += 1;
            }
            Err(ClientError::Mediator { .. }) => summary.failed += 1,
            // A node that answered, even with an error status or a payload
            // that does not open, did answer.
            _ => summary.answered += 1,
        }
    }
    summary
}
