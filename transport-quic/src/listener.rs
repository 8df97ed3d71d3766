//! The mediator's side: accepting attachments and callers, and delivering
//! to attached nodes over their connections.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use mediator_core::inbound::{Answer, Caller, Inbound, InboundBody};
use mediator_core::{
    async_trait, Credentials, Deliver, DeliverError, Endpoint, Envelope, Error, Identity, Limits,
    Mediator, Node, NodeId, NodeKey, Registration, Reply, RequestContext, Routed,
};
use quinn::{Connection, ConnectionError, RecvStream, SendStream, VarInt};

use crate::error::QuicError;
use crate::frame::{
    answer, close, read_body, read_frame, write_head_and_body, BodyError, FrameError, Hello,
    ReplyHead, RequestHead, ResultFrame, DEFAULT_MAX_HEADER,
};
use crate::tls::ServerTls;

/// The listener's limits and timeouts.
///
/// ```
/// use std::time::Duration;
/// use mediator_transport_quic::QuicLimits;
/// let mut limits = QuicLimits::default();
/// limits.max_streams = 16;
/// assert!(limits.keep_alive < limits.idle_timeout);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct QuicLimits {
    /// How many connections (attached nodes and callers) may be open at
    /// once; further handshakes are refused. Default 10 000.
    pub max_connections: usize,
    /// How many connections one identity may hold at once: the node key
    /// an attaching connection registers, else the token's subject, else
    /// (an operator's token without one) the token itself. A hello past
    /// it is refused with `429 too_many_connections`; the count drops as
    /// soon as one of the identity's connections closes.
    ///
    /// Default 16. A node needs one connection; a node reconnecting while
    /// its old connection is still open, or a few processes sharing one
    /// token, need a few more. Past that, more connections buy one
    /// identity nothing but a larger share of
    /// [`max_connections`](Self::max_connections) and of the memory each
    /// connection holds, so one leaked or misbehaving token cannot crowd
    /// every other node out.
    pub max_connections_per_identity: usize,
    /// How many request streams one connection may have open at once
    /// (QUIC's stream limit: a node past it waits for one of its own
    /// streams to end, and nobody else does). Default 64.
    pub max_streams: u32,
    /// The largest header frame accepted, in bytes (431
    /// `header_too_large` past it; a hello past it closes the connection).
    /// Default 16 KiB.
    pub max_header: usize,
    /// How long the TLS handshake and the hello may take together before
    /// the connection is dropped. Default 5 s.
    pub handshake_timeout: Duration,
    /// A connection silent for this long is lost (and its node detached).
    /// Default 30 s.
    pub idle_timeout: Duration,
    /// How often the listener pings a quiet connection, shorter than
    /// [`idle_timeout`](Self::idle_timeout) so idle attachments stay up.
    /// Default 10 s (clients ping at the same period).
    pub keep_alive: Duration,
}

impl Default for QuicLimits {
    fn default() -> Self {
        QuicLimits {
            max_connections: 10_000,
            max_connections_per_identity: 16,
            max_streams: 64,
            max_header: DEFAULT_MAX_HEADER,
            handshake_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(30),
            keep_alive: Duration::from_secs(10),
        }
    }
}

/// The live attachments of one listener, shared with its deliverer.
struct Shared {
    /// The instance of the mediator served, set by `serve`.
    instance: OnceLock<String>,
    /// The mediator's body limit, set by `serve`.
    max_body: OnceLock<usize>,
    max_header: usize,
    attached: Mutex<HashMap<NodeKey, Attachment>>,
    /// Open connections past their hello, by identity.
    identities: Mutex<HashMap<String, usize>>,
    /// Keys the digest that stands for a token without a subject, so the
    /// token itself is never kept.
    token_hasher: RandomState,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<NodeKey, Attachment>> {
        // Entries are inserted and removed whole; a panic elsewhere cannot
        // leave the map half-written.
        self.attached.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn max_body(&self) -> usize {
        self.max_body
            .get()
            .copied()
            .unwrap_or_else(|| Limits::default().max_body)
    }

    /// Counts one more connection of `who`, unless it holds `max` already.
    fn take_slot(self: &Arc<Self>, who: String, max: usize) -> Result<IdentitySlot, Error> {
        let mut identities = self
            .identities
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let held = identities.entry(who.clone()).or_default();
        if *held >= max {
            return Err(Error::refused(
                429,
                "too_many_connections",
                format!(
                    "{who} already holds {max} connections to this mediator, the most one \
                     identity may hold; close one before opening another"
                ),
            ));
        }
        *held += 1;
        Ok(IdentitySlot {
            shared: Arc::clone(self),
            who,
        })
    }
}

/// One connection counted against its identity, given back when dropped
/// (the connection closed, or its hello was refused after counting).
struct IdentitySlot {
    shared: Arc<Shared>,
    who: String,
}

impl Drop for IdentitySlot {
    fn drop(&mut self) {
        let mut identities = self
            .shared
            .identities
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(held) = identities.get_mut(&self.who) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                identities.remove(&self.who);
            }
        }
    }
}

#[derive(Clone)]
struct Attachment {
    connection: Connection,
}

/// The QUIC listener of a mediator: nodes dial out to it, attach and stay
/// attached; attached nodes and caller-only clients call other nodes
/// through it.
///
/// Cheap to clone; clones share the endpoint. See the [crate
/// documentation](crate) for the protocol and an example.
#[derive(Clone)]
pub struct QuicListener {
    endpoint: quinn::Endpoint,
    fingerprint: String,
    limits: QuicLimits,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for QuicListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuicListener")
            .field("addr", &self.endpoint.local_addr().ok())
            .field("fingerprint", &self.fingerprint)
            .field("attached", &self.shared.lock().len())
            .finish_non_exhaustive()
    }
}

impl QuicListener {
    /// Binds a UDP socket at `addr` with `tls` and the default
    /// [`QuicLimits`]. Must be called within a Tokio runtime.
    pub fn bind(addr: SocketAddr, tls: &ServerTls) -> Result<QuicListener, QuicError> {
        QuicListener::bind_with(addr, tls, QuicLimits::default())
    }

    /// Binds with limits of one's own.
    pub fn bind_with(
        addr: SocketAddr,
        tls: &ServerTls,
        limits: QuicLimits,
    ) -> Result<QuicListener, QuicError> {
        let mut config = quinn::ServerConfig::with_crypto(Arc::new(tls.quic_config()?));
        config.transport_config(Arc::new(crate::tls::transport(
            limits.idle_timeout,
            limits.keep_alive,
            limits.max_streams,
        )?));
        let endpoint = crate::socket::endpoint(addr, Some(config))?;
        let fingerprint = tls.fingerprint();
        tracing::info!(
            addr = %endpoint.local_addr()?,
            %fingerprint,
            "QUIC listener bound; clients pin this SHA-256 certificate fingerprint"
        );
        Ok(QuicListener {
            endpoint,
            fingerprint,
            shared: Arc::new(Shared {
                instance: OnceLock::new(),
                max_body: OnceLock::new(),
                max_header: limits.max_header,
                attached: Mutex::new(HashMap::new()),
                identities: Mutex::new(HashMap::new()),
                token_hasher: RandomState::new(),
            }),
            limits,
        })
    }

    /// The address bound (useful after binding port 0).
    pub fn local_addr(&self) -> Result<SocketAddr, QuicError> {
        Ok(self.endpoint.local_addr()?)
    }

    /// The SHA-256 fingerprint of the certificate served, lowercase hex.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The limits in force.
    pub fn limits(&self) -> &QuicLimits {
        &self.limits
    }

    /// How many nodes are attached to this listener now.
    pub fn attached(&self) -> usize {
        self.shared.lock().len()
    }

    /// The deliverer for endpoints of scheme `attached`: give it to the
    /// mediator ([`Mediator::add_deliver`] or the builder's `deliver`).
    pub fn delivery(&self) -> AttachedDelivery {
        AttachedDelivery {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Closes every connection (nodes are detached) and stops accepting;
    /// [`serve`](Self::serve) then returns.
    pub fn close(&self) {
        self.endpoint
            .close(VarInt::from_u32(close::SHUTDOWN), b"mediator shutting down");
    }

    /// [`close`](Self::close)s, then waits until every connection's close
    /// was sent (at most a few round trips), so that the UDP port is free
    /// to bind again once the last clone of the listener is dropped.
    pub async fn shutdown(&self) {
        self.close();
        self.endpoint.wait_idle().await;
    }

    /// Accepts connections for `mediator` until [`close`](Self::close).
    ///
    /// The listener serves one mediator: serving a second one (another
    /// instance id) is refused with [`Error::Config`].
    pub async fn serve(&self, mediator: Mediator) -> Result<(), QuicError> {
        let instance = self
            .shared
            .instance
            .get_or_init(|| mediator.instance_id().to_owned());
        if instance != mediator.instance_id() {
            return Err(Error::Config(format!(
                "this QUIC listener already serves mediator instance {instance}"
            ))
            .into());
        }
        let _ = self.shared.max_body.set(mediator.limits().max_body);
        while let Some(incoming) = self.endpoint.accept().await {
            if self.endpoint.open_connections() >= self.limits.max_connections {
                tracing::warn!(
                    remote = %incoming.remote_address(),
                    max = self.limits.max_connections,
                    "QUIC connection refused: too many connections"
                );
                incoming.refuse();
                continue;
            }
            let cx = ConnCx {
                mediator: mediator.clone(),
                shared: Arc::clone(&self.shared),
                limits: self.limits.clone(),
            };
            tokio::spawn(cx.run(incoming));
        }
        Ok(())
    }
}

/// What one connection's tasks need.
#[derive(Clone)]
struct ConnCx {
    mediator: Mediator,
    shared: Arc<Shared>,
    limits: QuicLimits,
}

/// Who is on a connection, once its hello was accepted.
struct Session {
    identity: Identity,
    /// The key attached, with its registration, for attaching connections.
    attached: Option<(Registration, NodeId)>,
    /// The connection's place in its identity's count, held while it
    /// lives.
    _slot: IdentitySlot,
}

/// The transport label of the calls counted in the mediator's
/// [`TransportStats`](mediator_core::request_log::TransportStats).
const TRANSPORT: &str = "quic";

/// The answer to a call stream whose header or body did not arrive within
/// the mediator's deadline.
fn read_timeout(what: &str, deadline: Duration) -> Error {
    Error::refused(
        408,
        "timeout",
        format!(
            "request {what} not received within {} ms",
            deadline.as_millis()
        ),
    )
}

impl ConnCx {
    async fn run(self, incoming: quinn::Incoming) {
        let remote = incoming.remote_address();
        let setup = tokio::time::timeout(self.limits.handshake_timeout, async {
            let connection = incoming.await.map_err(|e| e.to_string())?;
            let (send, mut recv) = connection.accept_bi().await.map_err(|e| e.to_string())?;
            let hello = read_frame::<Hello>(&mut recv, self.limits.max_header).await;
            Ok::<_, String>((connection, send, hello))
        })
        .await;
        let (connection, mut send, hello) = match setup {
            Ok(Ok(parts)) => parts,
            Ok(Err(why)) => {
                tracing::debug!(%remote, reason = %why, "QUIC handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%remote, "QUIC handshake or hello timed out");
                return;
            }
        };
        let hello = match hello {
            Ok(hello) => hello,
            Err(e) => {
                tracing::debug!(%remote, error = %e, "bad hello; closing");
                let refusal = Error::invalid("hello", e.to_string());
                self.refuse(&connection, &mut send, &refusal, close::PROTOCOL)
                    .await;
                return;
            }
        };
        let session = match self.welcome(&connection, remote, hello).await {
            Ok((session, head)) => {
                if answer(&mut send, &head, Bytes::new()).await.is_err() {
                    connection.close(VarInt::from_u32(close::DONE), b"hello not answered");
                }
                session
            }
            Err(e) => {
                tracing::info!(%remote, error = %e, "QUIC hello refused");
                self.refuse(&connection, &mut send, &e, close::REFUSED)
                    .await;
                return;
            }
        };
        drop(send);
        let renewer = session.attached.as_ref().map(|(registration, _)| {
            tokio::spawn(keep_registered(
                self.mediator.clone(),
                session.identity.clone(),
                registration.clone(),
            ))
        });
        let clock = Arc::clone(self.mediator.clock());
        let expires = session.identity.expires;
        let lost = loop {
            tokio::select! {
                accepted = connection.accept_bi() => match accepted {
                    Ok((send, recv)) => {
                        let cx = self.clone();
                        let identity = session.identity.clone();
                        tokio::spawn(async move { cx.call(identity, remote, send, recv).await });
                    }
                    Err(e) => break e,
                },
                // The hello's token is the connection's only credential:
                // once it has expired, nothing on the connection may act
                // in its name any more, so the connection ends and the
                // client says hello again with a fresh one.
                () = clock.sleep_until(expires) => {
                    tracing::info!(%remote, "the token of the hello expired; closing the connection");
                    connection.close(
                        VarInt::from_u32(close::TOKEN_EXPIRED),
                        b"token expired; reconnect with a fresh token",
                    );
                    break connection.closed().await;
                }
            }
        };
        if let Some(renewer) = renewer {
            renewer.abort();
        }
        if let Some((registration, id)) = session.attached {
            self.detach(&connection, &session.identity, &registration.key, id, &lost)
                .await;
        }
    }

    /// Answers a refused hello and closes the connection once the peer
    /// read it (or after a second).
    async fn refuse(&self, connection: &Connection, send: &mut SendStream, e: &Error, code: u32) {
        let _ = answer(send, &ReplyHead::error(e), Bytes::new()).await;
        let _ = tokio::time::timeout(Duration::from_secs(1), connection.closed()).await;
        connection.close(VarInt::from_u32(code), e.kind().as_bytes());
    }

    /// Authenticates a hello and, for an attaching node, registers it.
    ///
    /// A token without `sub` (the original's kind, accepted only when the
    /// authenticator allows it) is refused here: its holder is unproven,
    /// and over QUIC it could attach as any node and supersede the real
    /// one. The option is for the original's HTTP children only.
    async fn welcome(
        &self,
        connection: &Connection,
        remote: SocketAddr,
        hello: Hello,
    ) -> Result<(Session, ReplyHead), Error> {
        let identity = self
            .mediator
            .authenticate(&Credentials::Bearer(&hello.token))?;
        if !identity.verified {
            tracing::warn!(
                %remote,
                "QUIC hello refused: the token has no sub, so it proves no identity; \
                 such tokens are accepted for HTTP registration only"
            );
            return Err(Error::Forbidden(
                "a token without sub names no node: it is accepted for HTTP registration only, \
                 never over QUIC; use a token minted for the node"
                    .into(),
            ));
        }
        let key = match &hello.attach {
            Some(attach) => Some(NodeKey::new(attach.group.clone(), attach.name.clone())?),
            None => None,
        };
        // Counted before registering, so that a refused attachment never
        // supersedes the connection it would have replaced.
        let who = match (&key, &identity.key) {
            (Some(key), _) | (None, Some(key)) => key.to_string(),
            (None, None) => format!(
                "token {:016x}",
                self.shared.token_hasher.hash_one(&hello.token)
            ),
        };
        let slot = self
            .shared
            .take_slot(who, self.limits.max_connections_per_identity)?;
        let (Some(attach), Some(key)) = (hello.attach, key) else {
            let head = ReplyHead {
                instance: Some(self.mediator.instance_id().to_owned()),
                ..ReplyHead::ok()
            };
            return Ok((
                Session {
                    identity,
                    attached: None,
                    _slot: slot,
                },
                head,
            ));
        };
        let registration = Registration::new(
            key.clone(),
            Endpoint::attached(self.mediator.instance_id())?,
            Duration::from_millis(attach.ttl_ms),
        )
        .with_meta(attach.meta);
        let node = self
            .mediator
            .register(&identity, registration.clone())
            .await?;
        let older = {
            let mut attached = self.shared.lock();
            let older = attached.insert(
                key.clone(),
                Attachment {
                    connection: connection.clone(),
                },
            );
            self.mediator
                .transport_stats()
                .set_attached(TRANSPORT, attached.len());
            older
        };
        if let Some(older) = older {
            if older.connection.stable_id() != connection.stable_id() {
                tracing::info!(node = %key, "a newer attachment replaces the older connection");
                older.connection.close(
                    VarInt::from_u32(close::SUPERSEDED),
                    format!("superseded by a newer attachment of {key}").as_bytes(),
                );
            }
        }
        tracing::info!(node = %key, remote = %connection.remote_address(), "attached over QUIC");
        let head = ReplyHead {
            node: Some(key.to_string()),
            lease_until_ms: Some(node.lease_until.as_millis()),
            instance: Some(self.mediator.instance_id().to_owned()),
            ..ReplyHead::ok()
        };
        Ok((
            Session {
                identity,
                attached: Some((registration, node.id)),
                _slot: slot,
            },
            head,
        ))
    }

    /// Detaches a node whose connection is gone, if its registration is
    /// still this connection's.
    async fn detach(
        &self,
        connection: &Connection,
        identity: &Identity,
        key: &NodeKey,
        id: NodeId,
        why: &ConnectionError,
    ) {
        let ours = {
            let mut attached = self.shared.lock();
            let ours = attached
                .get(key)
                .is_some_and(|a| a.connection.stable_id() == connection.stable_id());
            if ours {
                attached.remove(key);
                self.mediator
                    .transport_stats()
                    .set_attached(TRANSPORT, attached.len());
            }
            ours
        };
        if !ours {
            tracing::info!(node = %key, reason = %why, "superseded connection closed");
            return;
        }
        let still = self.mediator.routes().get(key).is_some_and(|node| {
            node.id == id && node.endpoint.attached_instance() == Some(self.mediator.instance_id())
        });
        if still {
            if let Err(e) = self.mediator.remove_key(identity, key).await {
                tracing::warn!(node = %key, error = %e, "detaching failed; the lease will run out");
                return;
            }
        }
        tracing::info!(node = %key, reason = %why, "detached: connection lost");
    }

    /// Answers one call stream: reads its header frame, then hands the
    /// call to the core ([`Mediator::handle`]), which checks it, reads its
    /// body from the stream, routes and records it; frames the answer.
    ///
    /// The header frame and the whole body must arrive within the
    /// mediator's [`Limits::deadline`] from the stream's opening, or the
    /// call is answered `408 timeout` and the stream stopped, as HTTP
    /// answers a body that does not come.
    async fn call(
        self,
        identity: Identity,
        remote: SocketAddr,
        mut send: SendStream,
        mut recv: RecvStream,
    ) {
        let arrived = tokio::time::Instant::now();
        let deadline = self.mediator.limits().deadline;
        let read = tokio::time::timeout_at(
            arrived + deadline,
            read_frame::<RequestHead>(&mut recv, self.limits.max_header),
        )
        .await;
        let head = match read {
            Ok(Ok(head)) => Ok(head),
            // Nothing was asked: nothing to answer.
            Ok(Err(FrameError::Closed(_))) => return,
            Ok(Err(FrameError::TooLarge(len))) => Err(Error::refused(
                431,
                "header_too_large",
                format!(
                    "header frame of {len} bytes; the limit is {}",
                    self.limits.max_header
                ),
            )),
            Ok(Err(e @ FrameError::Malformed(_))) => Err(Error::invalid("header", e.to_string())),
            Err(_) => Err(read_timeout("header", deadline)),
        };
        let caller = Caller::Authenticated(identity);
        let inbound = match head {
            Ok(head) => {
                let mut inbound = Inbound::new(TRANSPORT, caller, head.target, QuicBody(&mut recv))
                    .ids(head.request_id, head.traceparent)
                    .timeout(head.timeout_ms.map(Duration::from_millis));
                match Method::from_bytes(head.method.as_bytes()) {
                    Ok(method) => inbound = inbound.method(method),
                    Err(_) => {
                        inbound = inbound
                            .method(unknown_method())
                            .malformed(Error::invalid("method", "not an HTTP method"));
                    }
                }
                // Held to what an HTTP caller's request line can carry, so
                // that the path reaches an HTTP node as it was sent.
                let path_ok = head
                    .path
                    .parse::<http::uri::PathAndQuery>()
                    .is_ok_and(|p| p.as_str().starts_with('/'));
                if !path_ok {
                    inbound = inbound.malformed(Error::invalid(
                        "path",
                        "must start with / and be a URI path",
                    ));
                }
                inbound.path(head.path)
            }
            // A header that could not be read is refused by the core, so
            // that it is counted and recorded as any other refusal.
            Err(e) => Inbound::new(TRANSPORT, caller, String::new(), QuicBody(&mut recv))
                .method(unknown_method())
                .path(String::new())
                .malformed(e),
        };
        let inbound = inbound.remote(Some(remote)).arrived(arrived);
        let (reply, body) = self
            .mediator
            .handle(inbound, |answer: Answer<'_>| {
                let (reply, body) = match answer.outcome {
                    Ok(routed) => framed(routed),
                    Err(e) => (ReplyHead::error(&e), Bytes::new()),
                };
                let reply = ReplyHead {
                    request_id: answer.trace.request_id.clone(),
                    ..reply
                };
                let status = reply.status;
                ((reply, body), status)
            })
            .await;
        if reply.status >= 400 && reply.results.is_empty() {
            // Whatever the caller still sends is not wanted.
            let _ = recv.stop(VarInt::from_u32(0));
        }
        if let Err(why) = answer(&mut send, &reply, body).await {
            tracing::debug!(reason = %why, "the caller went away before the answer");
        }
    }
}

/// The method a call's record shows when its header gave none.
fn unknown_method() -> Method {
    // `-` is a token character, so a valid method name.
    Method::from_bytes(b"-").unwrap_or_default()
}

/// A call's body as the core reads it: the rest of its stream.
struct QuicBody<'a>(&'a mut RecvStream);

impl InboundBody for QuicBody<'_> {
    async fn next_chunk(&mut self) -> Option<Result<Bytes, String>> {
        match self.0.read_chunk(usize::MAX, true).await {
            Ok(chunk) => chunk.map(|chunk| Ok(chunk.bytes)),
            Err(e) => Some(Err(format!("not received whole: {e}"))),
        }
    }
}

/// The answer head and body of a routed call: the node's reply (its body
/// only when it succeeded), or the broadcast's entries, with their bodies
/// one after another.
fn framed(routed: Routed) -> (ReplyHead, Bytes) {
    match routed {
        Routed::One { node, reply } => {
            let mut head = node_reply_head(reply.status, &reply.body);
            head.node = Some(node.to_string());
            let body = if head.is_success() {
                reply.body
            } else {
                Bytes::new()
            };
            (head, body)
        }
        Routed::Many(broadcast) => {
            let mut bodies = Vec::new();
            let results = broadcast
                .results
                .into_iter()
                .map(|result| {
                    let mut entry = ResultFrame {
                        node: result.node.to_string(),
                        id: Some(result.id.0),
                        ..ResultFrame::default()
                    };
                    match result.outcome {
                        Ok(reply) => {
                            let head = node_reply_head(reply.status, &reply.body);
                            entry.status = head.status;
                            entry.answered = true;
                            if head.is_success() {
                                entry.len = reply.body.len();
                                bodies.extend_from_slice(&reply.body);
                            } else {
                                entry.kind = head.kind;
                                entry.message = head.message;
                                entry.fault = head.fault;
                            }
                        }
                        Err(e) => {
                            entry.status = e.status();
                            entry.kind = Some(e.kind().to_owned());
                            entry.fault = Some(e.fault().to_string());
                            entry.message = Some(e.to_string());
                        }
                    }
                    entry
                })
                .collect();
            let head = ReplyHead {
                summary: Some(broadcast.summary.into()),
                results,
                ..ReplyHead::ok()
            };
            (head, Bytes::from(bodies))
        }
        other => {
            let e = Error::Config(format!("unexpected routing result {other:?}"));
            (ReplyHead::error(&e), Bytes::new())
        }
    }
}

/// The answer head for a node's reply: its status, and for a refusal the
/// kind and message of its JSON error body (`{"error", "kind"}`) or the
/// body as text.
fn node_reply_head(status: StatusCode, body: &[u8]) -> ReplyHead {
    if status.is_success() {
        return ReplyHead {
            status: status.as_u16(),
            ..ReplyHead::default()
        };
    }
    let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let field = |name: &str| {
        parsed
            .as_ref()
            .and_then(|v| v.get(name))
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned)
    };
    ReplyHead {
        status: status.as_u16(),
        kind: Some(field("kind").unwrap_or_else(|| "node_refused".to_owned())),
        fault: Some(
            if status.is_server_error() {
                "node"
            } else {
                "caller"
            }
            .to_owned(),
        ),
        message: Some(field("error").unwrap_or_else(|| String::from_utf8_lossy(body).into_owned())),
        ..ReplyHead::default()
    }
}

/// Keeps an attached node's lease while its connection lives: the
/// connection is the proof of life, so the listener renews every third of
/// the ttl and registers again if the registration was lost.
///
/// It waits on the mediator's clock, as every other lease does, so a
/// manual clock drives it in tests and leases never disagree about time.
async fn keep_registered(mediator: Mediator, identity: Identity, registration: Registration) {
    let every = (registration.ttl / 3).max(Duration::from_millis(100));
    let clock = Arc::clone(mediator.clock());
    loop {
        clock.sleep_until(clock.now() + every).await;
        match mediator
            .renew(&identity, &registration.key, registration.ttl)
            .await
        {
            Ok(Some(_)) => {
                tracing::debug!(node = %registration.key, "attached node's lease renewed");
            }
            Ok(None) => {
                if let Err(e) = mediator.register(&identity, registration.clone()).await {
                    tracing::warn!(node = %registration.key, error = %e, "registering an attached node again failed");
                }
            }
            Err(e) => {
                tracing::warn!(node = %registration.key, error = %e, "renewing an attached node's lease failed");
            }
        }
    }
}

/// Delivers to nodes attached to one [`QuicListener`] (endpoint scheme
/// `attached`), one bidirectional stream per request on the node's
/// connection.
///
/// A node attached to another mediator instance, or whose connection is
/// gone, is unreachable (nothing was sent, so an any-of-group request
/// moves on); a connection lost once the stream was opened fails the
/// delivery (502).
#[derive(Clone)]
pub struct AttachedDelivery {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for AttachedDelivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttachedDelivery")
            .field("instance", &self.shared.instance.get())
            .field("attached", &self.shared.lock().len())
            .finish()
    }
}

#[async_trait]
impl Deliver for AttachedDelivery {
    fn schemes(&self) -> Vec<String> {
        vec![mediator_core::model::ATTACHED_SCHEME.to_owned()]
    }

    async fn deliver(
        &self,
        node: &Node,
        envelope: &Envelope,
        cx: &RequestContext,
    ) -> Result<Reply, DeliverError> {
        let own = self.shared.instance.get().map(String::as_str);
        let Some(instance) = node.endpoint.attached_instance() else {
            return Err(DeliverError::unreachable(format!(
                "{} is not an attached endpoint",
                node.endpoint
            )));
        };
        if own != Some(instance) {
            return Err(DeliverError::unreachable(format!(
                "node {} is attached to mediator instance {instance}, not to this one ({})",
                node.key,
                own.unwrap_or("not serving")
            )));
        }
        let connection = self
            .shared
            .lock()
            .get(&node.key)
            .map(|a| a.connection.clone());
        let Some(connection) = connection else {
            return Err(DeliverError::unreachable(format!(
                "node {} has no live QUIC connection to this instance",
                node.key
            )));
        };
        let (mut send, mut recv) = connection.open_bi().await.map_err(|e| {
            DeliverError::unreachable(format!("no stream to node {}", node.key)).with_source(e)
        })?;
        let head = RequestHead {
            method: envelope.method.to_string(),
            path: envelope.path_and_query.clone(),
            target: envelope.target.to_string(),
            from: envelope.from.as_ref().map(ToString::to_string),
            deadline_ms: Some(cx.deadline.wall().as_millis()),
            timeout_ms: None,
            request_id: cx.trace.request_id.clone(),
            traceparent: cx.trace.traceparent.clone(),
        };
        let sent = async {
            write_head_and_body(&mut send, &head, envelope.body.clone()).await?;
            send.finish().map_err(|e| e.to_string())
        };
        if let Err(why) = sent.await {
            return Err(DeliverError::failed(format!(
                "sending to node {} broke off: {why}",
                node.key
            )));
        }
        let reply: ReplyHead = read_frame(&mut recv, self.shared.max_header)
            .await
            .map_err(|e| DeliverError::failed(format!("no answer from node {}: {e}", node.key)))?;
        let body = read_body(&mut recv, self.shared.max_body())
            .await
            .map_err(|e| match e {
                BodyError::TooLong => {
                    DeliverError::failed(format!("reply of node {} too large", node.key))
                }
                BodyError::Broken(e) => {
                    DeliverError::failed(format!("the reply of node {} broke off: {e}", node.key))
                }
            })?;
        let status = StatusCode::from_u16(reply.status).map_err(|_| {
            DeliverError::failed(format!(
                "node {} answered status {}",
                node.key, reply.status
            ))
        })?;
        if status.is_success() {
            return Ok(Reply::new(status, body));
        }
        let error = serde_json::json!({
            "error": reply.message.unwrap_or_default(),
            "kind": reply.kind.unwrap_or_else(|| "node_refused".into()),
            "fault": reply.fault.unwrap_or_else(|| if status.is_server_error() { "node" } else { "caller" }.into()),
        });
        Ok(Reply::new(status, error.to_string()))
    }
}
