//! A third transport in one page: nodes that live in the mediator's own
//! process and are reached over in-memory channels, built from the public
//! API of `mediator-core` alone.
//!
//! Both halves of a transport are here:
//!
//! - towards nodes, [`ChannelHub`] is a [`Deliver`] for endpoints of
//!   scheme `chan` (`chan:INBOX`): it hands each request to the inbox of
//!   the node that registered it, and waits for the reply;
//! - towards callers, [`ChannelNode`] is the node's binding: it registers
//!   with `chan:INBOX` and keeps its lease with the core's
//!   [`Lease`] on the mediator's clock, answers
//!   requests with a [`Responder`] (open, handler, seal), and calls other
//!   nodes through the core's request lifecycle ([`Mediator::handle`]),
//!   as HTTP and QUIC do, sealing and opening with the core's node
//!   functions.
//!
//! Nothing in the core knows about channels: the mediator picks the hub by
//! the endpoint's scheme, so channel nodes and HTTP nodes call each other
//! and share broadcasts.
//!
//! ```
//! use bytes::Bytes;
//! use mediator_core::node::Incoming;
//! use mediator_core::*;
//! use mediator_examples::channel::{ChannelHub, ChannelNode};
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Error> {
//! let hub = ChannelHub::default();
//! let mediator = Mediator::builder()
//!     .registry(MemoryRegistry::new())
//!     .authenticator(Authenticator::hs256("a secret of at least 32 bytes!!!"))
//!     .deliver(hub.clone())
//!     .build()?;
//! let keys = KeyRing::new(SealKey::generate());
//! let minter = mediator.minter().expect("HS256 can mint").clone();
//! let token = |key: &NodeKey| minter.mint(&Claims::node(key, Timestamp::now(), Duration::from_secs(60)));
//!
//! let api = NodeKey::named("users", "api")?;
//! let _api = ChannelNode::builder(&hub, &mediator, api.clone(), keys.clone())
//!     .start(&token(&api)?, |request: Incoming| async move {
//!         Ok::<_, Error>(Bytes::from(format!("hello {}", String::from_utf8_lossy(&request.body))))
//!     })
//!     .await?;
//!
//! let me = NodeKey::named("billing", "worker")?;
//! let caller = ChannelNode::builder(&hub, &mediator, me.clone(), keys)
//!     .connect(&token(&me)?)?;
//! let reply = caller.call(Target::One(api), "/greet", b"ada").await?;
//! assert_eq!(reply, "hello ada");
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use mediator_core::inbound::{Answer, Caller, Inbound};
use mediator_core::node::{
    open_reply, seal_request, Action, Backoff, Delivered, Handler, Lease, Responder,
};
use mediator_core::{
    async_trait, Cipher, Credentials, Deliver, DeliverError, Endpoint, Envelope, Error, Identity,
    Mediator, Node, NodeKey, Registration, Reply, RequestContext, Routed, Target,
};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// The endpoint scheme of channel nodes.
pub const SCHEME: &str = "chan";

/// The transport label of the calls channel nodes make.
pub const TRANSPORT: &str = "channel";

/// How many requests may wait in a node's inbox before senders wait too.
const INBOX_DEPTH: usize = 64;

/// One request on its way to a channel node, in the text form the node
/// side of the protocol reads, with where to send the answer.
struct Parcel {
    method: Method,
    path_and_query: String,
    target: String,
    from: Option<String>,
    deadline: String,
    body: Bytes,
    answer: oneshot::Sender<Result<Vec<u8>, Error>>,
}

/// The deliverer of channel nodes: one inbox per node, by name.
///
/// Cheap to clone; clones share the inboxes, so the clone given to the
/// mediator and the one nodes attach to are the same hub.
#[derive(Clone, Default)]
pub struct ChannelHub {
    inboxes: Arc<Mutex<HashMap<String, mpsc::Sender<Parcel>>>>,
}

impl std::fmt::Debug for ChannelHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelHub")
            .field("inboxes", &self.lock().len())
            .finish()
    }
}

impl ChannelHub {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, mpsc::Sender<Parcel>>> {
        // The map is only ever inserted into or removed from whole; a panic
        // elsewhere cannot leave it half-written.
        self.inboxes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn open_inbox(&self, name: &str) -> mpsc::Receiver<Parcel> {
        let (tx, rx) = mpsc::channel(INBOX_DEPTH);
        self.lock().insert(name.to_owned(), tx);
        rx
    }

    fn close_inbox(&self, name: &str) {
        self.lock().remove(name);
    }
}

#[async_trait]
impl Deliver for ChannelHub {
    fn schemes(&self) -> Vec<String> {
        vec![SCHEME.to_owned()]
    }

    async fn deliver(
        &self,
        node: &Node,
        envelope: &Envelope,
        cx: &RequestContext,
    ) -> Result<Reply, DeliverError> {
        let inbox = node.endpoint.rest();
        let Some(sender) = self.lock().get(inbox).cloned() else {
            return Err(DeliverError::unreachable(format!(
                "no node listens at {}",
                node.endpoint
            )));
        };
        let (answer, answered) = oneshot::channel();
        let parcel = Parcel {
            method: envelope.method.clone(),
            path_and_query: envelope.path_and_query.clone(),
            target: envelope.target.to_string(),
            from: envelope.from.as_ref().map(ToString::to_string),
            deadline: cx.deadline.wall().as_millis().to_string(),
            body: envelope.body.clone(),
            answer,
        };
        // A closed inbox took nothing: another node may be tried.
        if sender.send(parcel).await.is_err() {
            return Err(DeliverError::unreachable(format!(
                "{} stopped listening",
                node.endpoint
            )));
        }
        match answered.await {
            Ok(Ok(sealed)) => Ok(Reply::new(StatusCode::OK, sealed)),
            // The node refused or its handler failed: its answer, with the
            // status it chose, as an HTTP node would give it.
            Ok(Err(e)) => {
                let status =
                    StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                let body = serde_json::json!({ "error": e.to_string(), "kind": e.kind() });
                Ok(Reply::new(status, body.to_string()))
            }
            Err(_) => Err(DeliverError::failed("the node went away mid-request")),
        }
    }
}

/// Sets up a [`ChannelNode`].
pub struct ChannelNodeBuilder {
    hub: ChannelHub,
    mediator: Mediator,
    key: NodeKey,
    cipher: Arc<dyn Cipher>,
    ttl: Duration,
    backoff: Backoff,
}

impl std::fmt::Debug for ChannelNodeBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelNodeBuilder")
            .field("key", &self.key)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl ChannelNodeBuilder {
    /// The lease to ask for (default 30 s).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// How re-registration backs off after failures.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// A node that only calls others: nothing is registered.
    pub fn connect(self, token: &str) -> Result<ChannelNode, Error> {
        let identity = self.mediator.authenticate(&Credentials::Bearer(token))?;
        Ok(ChannelNode {
            mediator: self.mediator,
            hub: self.hub,
            key: self.key,
            cipher: self.cipher,
            identity,
            inbox: None,
            tasks: Vec::new(),
        })
    }

    /// A node that registers with an inbox, answers requests with
    /// `handler`, and keeps its lease until [`ChannelNode::stop`].
    ///
    /// Returns once the first registration succeeded, or with its error.
    pub async fn start(self, token: &str, handler: impl Handler) -> Result<ChannelNode, Error> {
        let (ttl, backoff) = (self.ttl, self.backoff);
        let mut node = self.connect(token)?;
        let inbox = format!("{}.{}", node.key.group(), node.key.name().unwrap_or(""));
        let endpoint = Endpoint::custom(SCHEME, &inbox)?;
        let parcels = node.hub.open_inbox(&inbox);
        let responder = Responder::shared(
            node.key.clone(),
            Arc::clone(&node.cipher),
            Arc::new(handler),
        );
        node.tasks.push(tokio::spawn(answer(
            parcels,
            responder,
            node.mediator.clone(),
        )));
        let registration = Registration::new(node.key.clone(), endpoint, ttl);
        let mut lease = Lease::new(ttl, backoff);
        let clock = Arc::clone(node.mediator.clock());
        let first = node
            .mediator
            .register(&node.identity, registration.clone())
            .await;
        let now = clock.now();
        match first {
            Ok(stored) => lease.registered(now, stored.lease_until),
            Err(e) => {
                node.hub.close_inbox(&inbox);
                return Err(e);
            }
        }
        node.tasks.push(tokio::spawn(keep_lease(
            node.mediator.clone(),
            node.identity.clone(),
            registration,
            lease,
        )));
        node.inbox = Some(inbox);
        Ok(node)
    }
}

/// Answers each parcel of an inbox on its own task.
async fn answer(mut parcels: mpsc::Receiver<Parcel>, responder: Responder, mediator: Mediator) {
    while let Some(parcel) = parcels.recv().await {
        let (responder, mediator) = (responder.clone(), mediator.clone());
        tokio::spawn(async move {
            let (path, query) = match parcel.path_and_query.split_once('?') {
                Some((path, query)) => (path, Some(query)),
                None => (parcel.path_and_query.as_str(), None),
            };
            let delivered = Delivered::new(parcel.method.clone(), path, &parcel.body)
                .with_target(parcel.target.as_str())
                .with_from(parcel.from.as_deref())
                .with_deadline(parcel.deadline.as_str())
                .with_query(query);
            let answered = responder.answer(delivered, mediator.clock().now()).await;
            // The caller may have given up; nobody is left to tell.
            let _ = parcel.answer.send(answered);
        });
    }
}

/// Registers, renews and registers again as the core's lease machine says,
/// on the mediator's clock.
async fn keep_lease(
    mediator: Mediator,
    identity: Identity,
    registration: Registration,
    mut lease: Lease,
) {
    let clock = Arc::clone(mediator.clock());
    loop {
        let step = lease.next(clock.now());
        clock.sleep_until(step.at).await;
        let now = clock.now();
        match step.action {
            Action::Register => match mediator.register(&identity, registration.clone()).await {
                Ok(node) => lease.registered(now, node.lease_until),
                Err(e) => {
                    tracing::warn!(node = %registration.key, error = %e, "registration failed; backing off");
                    lease.failed(now);
                }
            },
            Action::Renew => {
                match mediator
                    .renew(&identity, &registration.key, registration.ttl)
                    .await
                {
                    Ok(Some(until)) => lease.renewed(now, until),
                    Ok(None) => lease.forgotten(now),
                    Err(e) => {
                        tracing::warn!(node = %registration.key, error = %e, "renewal failed; backing off");
                        lease.failed(now);
                    }
                }
            }
        }
    }
}

/// A node in the mediator's process: calls others, and, if
/// [started](ChannelNodeBuilder::start), answers them.
pub struct ChannelNode {
    mediator: Mediator,
    hub: ChannelHub,
    key: NodeKey,
    cipher: Arc<dyn Cipher>,
    identity: Identity,
    inbox: Option<String>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for ChannelNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelNode")
            .field("key", &self.key)
            .field("inbox", &self.inbox)
            .finish_non_exhaustive()
    }
}

impl Drop for ChannelNode {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        if let Some(inbox) = &self.inbox {
            self.hub.close_inbox(inbox);
        }
    }
}

impl ChannelNode {
    /// Starts setting up node `key` of `mediator`, reached through `hub`,
    /// sealing with `cipher`.
    pub fn builder(
        hub: &ChannelHub,
        mediator: &Mediator,
        key: NodeKey,
        cipher: impl Cipher,
    ) -> ChannelNodeBuilder {
        ChannelNodeBuilder {
            hub: hub.clone(),
            mediator: mediator.clone(),
            key,
            cipher: Arc::new(cipher),
            ttl: Duration::from_secs(30),
            backoff: Backoff::default(),
        }
    }

    /// Who this node is.
    pub fn key(&self) -> &NodeKey {
        &self.key
    }

    /// Sends `body`, sealed, to one node (`Target::One`) or any node of a
    /// group (`Target::Any`), and opens its reply. A refusal or failure of
    /// the node comes back as [`Error::Refused`] with its status.
    pub async fn call(&self, target: Target, path: &str, body: &[u8]) -> Result<Bytes, Error> {
        if matches!(target, Target::All(_)) {
            return Err(Error::invalid("target", "use broadcast for a whole group"));
        }
        match self.send(target, path, body).await? {
            Routed::One { node, reply } => self.open(&node, path, reply),
            other => Err(Error::refused(
                502,
                "unexpected",
                format!("one reply expected, got {other:?}"),
            )),
        }
    }

    /// Sends `body`, sealed, to every node of `group`; each node's opened
    /// reply or error, in registration order.
    pub async fn broadcast(
        &self,
        group: &str,
        path: &str,
        body: &[u8],
    ) -> Result<Vec<(NodeKey, Result<Bytes, Error>)>, Error> {
        match self.send(Target::all(group)?, path, body).await? {
            Routed::Many(broadcast) => Ok(broadcast
                .results
                .into_iter()
                .map(|r| {
                    let opened = r.outcome.and_then(|reply| self.open(&r.node, path, reply));
                    (r.node, opened)
                })
                .collect()),
            other => Err(Error::refused(
                502,
                "unexpected",
                format!("a broadcast expected, got {other:?}"),
            )),
        }
    }

    /// Stops answering and renewing, then deregisters.
    pub async fn stop(self) -> Result<(), Error> {
        // Stopped first, so a renewal cannot register the node again after
        // it was removed.
        for task in &self.tasks {
            task.abort();
        }
        if self.inbox.is_some() {
            self.mediator.remove_key(&self.identity, &self.key).await?;
        }
        Ok(())
    }

    /// Hands the call to the core's request lifecycle, as every transport
    /// does: the channel only frames (here, hands back the outcome).
    async fn send(&self, target: Target, path: &str, body: &[u8]) -> Result<Routed, Error> {
        let sealed = seal_request(self.cipher.as_ref(), Some(&self.key), &target, path, body)?;
        let caller = Caller::Authenticated(self.identity.clone());
        let call =
            Inbound::new(TRANSPORT, caller, target.to_string(), Bytes::from(sealed)).path(path);
        self.mediator
            .handle(call, |answer: Answer<'_>| {
                let status = match &answer.outcome {
                    Ok(Routed::One { reply, .. }) => reply.status.as_u16(),
                    Ok(_) => 200,
                    Err(e) => e.status(),
                };
                (answer.outcome, status)
            })
            .await
    }

    fn open(&self, replier: &NodeKey, path: &str, reply: Reply) -> Result<Bytes, Error> {
        if !reply.status.is_success() {
            return Err(Error::refused(
                reply.status.as_u16(),
                "node_refused",
                String::from_utf8_lossy(&reply.body).into_owned(),
            ));
        }
        let plain = open_reply(
            self.cipher.as_ref(),
            replier,
            Some(&self.key),
            path,
            &reply.body,
        )?;
        Ok(Bytes::from(plain))
    }
}
