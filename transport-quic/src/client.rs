//! The Rust node client over QUIC.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use mediator_core::node::{
    open_reply, seal_request, Backoff, Delivered, Handler, Responder, TokenSource,
};
use mediator_core::{
    Cipher, Clock, Error, Fault, KeyRing, Meta, NodeId, NodeKey, Summary, SystemClock, Target,
    TokenMinter,
};
use quinn::{Connection, ConnectionError, RecvStream, SendStream, VarInt};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::error::QuicError;
use crate::frame::{
    answer, close, read_frame, write_frame, Attach, FrameError, Hello, ReplyHead, RequestHead,
    DEFAULT_MAX_HEADER, MAX_REPLY_HEADER,
};
use crate::tls::Trust;

/// The default lease an attached node asks for. The listener renews it
/// while the connection lives, so it only bounds how long a node that
/// vanished without closing stays registered if the listener itself dies.
pub const DEFAULT_TTL: Duration = Duration::from_secs(30);

/// The default time a client waits for an answer (and asks the mediator to
/// keep to).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The largest request body a node accepts by default (8 MiB, the
/// mediator's default); 413 `too_large` past it.
pub const DEFAULT_MAX_BODY: usize = 8 * 1024 * 1024;

/// Extra time the client waits beyond its timeout, so the mediator's own
/// 504 (which names the slow node) normally arrives first.
const GRACE: Duration = Duration::from_secs(2);

/// Configures a [`QuicNodeClient`]; from [`QuicNodeClient::builder`].
pub struct QuicNodeClientBuilder {
    addr: SocketAddr,
    server_name: String,
    key: Option<Result<NodeKey, Error>>,
    token: Option<String>,
    minter: Option<TokenMinter>,
    cipher: Option<Arc<dyn Cipher>>,
    ttl: Duration,
    meta: Meta,
    trust: Option<Result<Trust, String>>,
    timeout: Duration,
    connect_timeout: Duration,
    backoff: Backoff,
    clock: Arc<dyn Clock>,
    require_sender: bool,
    max_body: usize,
    max_streams: u32,
    idle_timeout: Duration,
    keep_alive: Duration,
}

impl std::fmt::Debug for QuicNodeClientBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuicNodeClientBuilder")
            .field("addr", &self.addr)
            .field("key", &self.key)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl QuicNodeClientBuilder {
    /// The node's identity (its token must name it).
    pub fn identity(mut self, group: impl Into<String>, name: Option<&str>) -> Self {
        self.key = Some(NodeKey::new(group.into(), name));
        self
    }

    /// The node's identity, as a key.
    pub fn node_key(mut self, key: NodeKey) -> Self {
        self.key = Some(Ok(key));
        self
    }

    /// The bearer token sent in every hello.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Mints a fresh token for the node's identity at every (re)connection,
    /// on the builder's [`clock`](Self::clock), instead of a fixed one;
    /// each lives [`TOKEN_LIFETIME`](mediator_core::node::TOKEN_LIFETIME),
    /// and the listener ends the connection when it expires.
    pub fn token_minter(mut self, minter: TokenMinter) -> Self {
        self.minter = Some(minter);
        self
    }

    /// Seals with the default AES-256-GCM cipher over this key ring.
    pub fn keys(self, keys: KeyRing) -> Self {
        self.cipher(keys)
    }

    /// Seals with a cipher of one's own.
    pub fn cipher(mut self, cipher: impl Cipher) -> Self {
        self.cipher = Some(Arc::new(cipher));
        self
    }

    /// The lease to register with (default [`DEFAULT_TTL`]).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Metadata to register with.
    pub fn meta(mut self, meta: Meta) -> Self {
        self.meta = meta;
        self
    }

    /// Trusts exactly the certificate with this SHA-256 fingerprint (hex,
    /// colons allowed), as [`QuicListener::fingerprint`](crate::QuicListener::fingerprint) gives it.
    pub fn pin(mut self, fingerprint: &str) -> Self {
        self.trust = Some(Trust::pin(fingerprint).map_err(|e| e.to_string()));
        self
    }

    /// Trusts these certificates (PEM) as roots; the mediator's certificate
    /// must then name [`server_name`](Self::server_name).
    pub fn root_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.trust = Some(Ok(Trust::Roots(pem.into())));
        self
    }

    /// The name the mediator's certificate is checked against (default
    /// `localhost`; also sent as SNI).
    pub fn server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = name.into();
        self
    }

    /// How long a call waits for its answer (default [`DEFAULT_TIMEOUT`]);
    /// the mediator is asked to keep to it as the request's deadline.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How long a connection and its hello may take (default 5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How reconnections back off (exponential with full jitter).
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// The clock every part of the client reads and waits on (default: the
    /// system clock): backoff, minted tokens, and the deadlines of
    /// requests delivered to the node.
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Refuses requests from callers without a node identity (403).
    pub fn require_sender(mut self, require: bool) -> Self {
        self.require_sender = require;
        self
    }

    /// The largest request body this node accepts (default
    /// [`DEFAULT_MAX_BODY`]).
    pub fn max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }

    /// How many deliveries the mediator may have open to this node at once
    /// (default 64); more wait for one to end.
    pub fn max_streams(mut self, streams: u32) -> Self {
        self.max_streams = streams;
        self
    }

    /// The idle timeout and keep-alive period of the connection (defaults
    /// 30 s and 10 s; the keep-alive must be shorter).
    pub fn idle(mut self, idle_timeout: Duration, keep_alive: Duration) -> Self {
        self.idle_timeout = idle_timeout;
        self.keep_alive = keep_alive;
        self
    }

    /// A client that only calls: connects without attaching. Returns once
    /// the first connection and hello succeeded.
    pub async fn connect(self) -> Result<QuicNodeClient, QuicError> {
        self.run(None).await
    }

    /// Attaches as the node's identity and answers requests with
    /// `handler`; reattaches by itself after the connection is lost.
    /// Returns once the first attachment succeeded, or with its refusal.
    pub async fn start(self, handler: impl Handler) -> Result<QuicNodeClient, QuicError> {
        let key = self.node()?.ok_or_else(|| {
            QuicError::Core(Error::invalid("identity", "an attached node needs one"))
        })?;
        let cipher = self.sealing()?;
        let responder =
            Responder::shared(key, cipher, Arc::new(handler)).require_sender(self.require_sender);
        self.run(Some(responder)).await
    }

    fn node(&self) -> Result<Option<NodeKey>, QuicError> {
        Ok(self.key.clone().transpose()?)
    }

    fn sealing(&self) -> Result<Arc<dyn Cipher>, QuicError> {
        self.cipher
            .clone()
            .ok_or_else(|| QuicError::Core(Error::invalid("keys", "a node needs the node key")))
    }

    async fn run(self, responder: Option<Responder>) -> Result<QuicNodeClient, QuicError> {
        let cipher = self.sealing()?;
        let trust = match self.trust.clone() {
            Some(Ok(trust)) => trust,
            Some(Err(why)) => return Err(QuicError::Tls(why)),
            None => {
                return Err(QuicError::Tls(
                    "no way to check the mediator: set a pin or a root".into(),
                ))
            }
        };
        if self.keep_alive >= self.idle_timeout {
            return Err(QuicError::Core(Error::invalid(
                "keep_alive",
                "must be shorter than the idle timeout",
            )));
        }
        let key = self.node()?;
        let token = match (&self.token, &self.minter, &key) {
            (Some(token), _, _) => TokenSource::fixed(token.clone()),
            (None, Some(minter), Some(key)) => {
                TokenSource::minted(minter.clone(), Some(key.clone()), Arc::clone(&self.clock))
            }
            _ => {
                return Err(QuicError::Core(Error::invalid(
                    "token",
                    "set a token, or an identity and a token minter",
                )))
            }
        };
        let mut config = quinn::ClientConfig::new(Arc::new(trust.quic_config()?));
        config.transport_config(Arc::new(crate::tls::transport(
            self.idle_timeout,
            self.keep_alive,
            self.max_streams,
        )?));
        let local: SocketAddr = if self.addr.is_ipv6() {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        };
        let mut endpoint = quinn::Endpoint::client(local)?;
        endpoint.set_default_client_config(config);
        let attach = match &responder {
            Some(responder) => Some(AttachSpec {
                key: responder.node().clone(),
                meta: self.meta.clone(),
                ttl: self.ttl,
            }),
            None => None,
        };
        let dialer = Dialer {
            endpoint: endpoint.clone(),
            addr: self.addr,
            server_name: self.server_name.clone(),
            token,
            attach,
            connect_timeout: self.connect_timeout,
        };
        let first = dialer.dial().await?;
        let (link, watch) = watch::channel(Link::Up(first.clone()));
        let supervisor = tokio::spawn(supervise(Supervisor {
            dialer,
            link,
            responder,
            backoff: self.backoff,
            clock: Arc::clone(&self.clock),
            max_body: self.max_body,
            first,
        }));
        Ok(QuicNodeClient {
            inner: Arc::new(Inner {
                addr: self.addr,
                key,
                cipher,
                timeout: self.timeout,
                watch,
                supervisor,
                endpoint,
            }),
        })
    }
}

struct AttachSpec {
    key: NodeKey,
    meta: Meta,
    ttl: Duration,
}

/// Connects and says hello.
struct Dialer {
    endpoint: quinn::Endpoint,
    addr: SocketAddr,
    server_name: String,
    token: TokenSource,
    attach: Option<AttachSpec>,
    connect_timeout: Duration,
}

impl Dialer {
    fn unreachable(&self, reason: impl std::fmt::Display) -> QuicError {
        QuicError::Unreachable {
            addr: self.addr.to_string(),
            reason: reason.to_string(),
        }
    }

    async fn dial(&self) -> Result<Connection, QuicError> {
        // The hello's token is the connection's credential until it
        // expires, so each connection starts with a whole one.
        let token = self.token.fresh()?;
        let hello = Hello {
            token,
            attach: self.attach.as_ref().map(|a| Attach {
                group: a.key.group().to_owned(),
                name: a.key.name().map(str::to_owned),
                meta: a.meta.clone(),
                ttl_ms: u64::try_from(a.ttl.as_millis()).unwrap_or(u64::MAX),
            }),
        };
        let exchange = async {
            let connecting = self
                .endpoint
                .connect(self.addr, &self.server_name)
                .map_err(|e| self.unreachable(e))?;
            let connection = connecting.await.map_err(|e| self.unreachable(e))?;
            let (mut send, mut recv) = connection
                .open_bi()
                .await
                .map_err(|e| self.unreachable(e))?;
            write_frame(&mut send, &hello)
                .await
                .map_err(|e| self.unreachable(e))?;
            send.finish().map_err(|e| self.unreachable(e))?;
            let head: ReplyHead = read_frame(&mut recv, MAX_REPLY_HEADER)
                .await
                .map_err(|e| self.unreachable(format!("hello not answered: {e}")))?;
            Ok::<_, QuicError>((connection, head))
        };
        let (connection, head) = tokio::time::timeout(self.connect_timeout, exchange)
            .await
            .map_err(|_| {
                self.unreachable(format!("no hello answer within {:?}", self.connect_timeout))
            })??;
        if !head.is_success() {
            connection.close(VarInt::from_u32(close::DONE), b"hello refused");
            return Err(mediator_error(head));
        }
        Ok(connection)
    }
}

fn mediator_error(head: ReplyHead) -> QuicError {
    QuicError::Mediator {
        status: head.status,
        kind: head.kind.unwrap_or_else(|| "unknown".into()),
        fault: head.fault.as_deref().and_then(Fault::parse),
        message: head.message.unwrap_or_default(),
    }
}

/// The state of a client's connection.
#[derive(Clone)]
enum Link {
    Up(Connection),
    Connecting,
    Superseded(String),
}

struct Supervisor {
    dialer: Dialer,
    link: watch::Sender<Link>,
    responder: Option<Responder>,
    backoff: Backoff,
    clock: Arc<dyn Clock>,
    max_body: usize,
    first: Connection,
}

/// Holds the connection: answers deliveries on it, and when it is lost
/// connects again with backoff and jitter; stops for good when a newer
/// attachment under the same name superseded it.
async fn supervise(s: Supervisor) {
    let mut connection = s.first.clone();
    loop {
        s.link.send_replace(Link::Up(connection.clone()));
        let lost = match &s.responder {
            Some(responder) => serve_deliveries(&connection, responder, &s).await,
            None => connection.closed().await,
        };
        if let ConnectionError::ApplicationClosed(closed) = &lost {
            if closed.error_code == VarInt::from_u32(close::SUPERSEDED) {
                let why = String::from_utf8_lossy(&closed.reason).into_owned();
                tracing::warn!(reason = %why, "superseded by a newer attachment; not reconnecting");
                s.link.send_replace(Link::Superseded(why));
                return;
            }
        }
        s.link.send_replace(Link::Connecting);
        tracing::warn!(reason = %lost, "connection to the mediator lost; reconnecting");
        let mut attempt = 0u32;
        connection = loop {
            let wait = s.backoff.delay(attempt);
            s.clock.sleep_until(s.clock.now() + wait).await;
            match s.dialer.dial().await {
                Ok(connection) => {
                    tracing::info!(attempts = attempt + 1, "connected to the mediator again");
                    break connection;
                }
                Err(e) => {
                    tracing::debug!(error = %e, attempt, "reconnecting failed; backing off");
                    attempt = attempt.saturating_add(1);
                }
            }
        };
    }
}

async fn serve_deliveries(
    connection: &Connection,
    responder: &Responder,
    s: &Supervisor,
) -> ConnectionError {
    loop {
        match connection.accept_bi().await {
            Ok((send, recv)) => {
                tokio::spawn(answer_delivery(
                    send,
                    recv,
                    responder.clone(),
                    Arc::clone(&s.clock),
                    s.max_body,
                ));
            }
            Err(e) => return e,
        }
    }
}

/// Answers one request the mediator delivered: reads it, lets the
/// responder open it, run the handler and seal the reply.
async fn answer_delivery(
    mut send: SendStream,
    mut recv: RecvStream,
    responder: Responder,
    clock: Arc<dyn Clock>,
    max_body: usize,
) {
    let head: RequestHead = match read_frame(&mut recv, DEFAULT_MAX_HEADER).await {
        Ok(head) => head,
        Err(FrameError::Closed(_)) => return,
        Err(e) => {
            let _ = recv.stop(VarInt::from_u32(0));
            let e = Error::invalid("header", e.to_string());
            let _ = answer(&mut send, &ReplyHead::error(&e), &[]).await;
            return;
        }
    };
    let body = match recv.read_to_end(max_body).await {
        Ok(body) => body,
        Err(quinn::ReadToEndError::TooLong) => {
            let _ = recv.stop(VarInt::from_u32(0));
            let e = Error::TooLarge { limit: max_body };
            let _ = answer(&mut send, &ReplyHead::error(&e), &[]).await;
            return;
        }
        Err(_) => return,
    };
    let answered = match Method::from_bytes(head.method.as_bytes()) {
        Ok(method) => {
            let (path, query) = match head.path.split_once('?') {
                Some((path, query)) => (path, Some(query)),
                None => (head.path.as_str(), None),
            };
            let deadline = head.deadline_ms.map(|ms| ms.to_string());
            let delivered = Delivered::new(method, path, &body)
                .with_target(head.target.as_str())
                .with_from(head.from.as_deref())
                .with_deadline(deadline.as_deref())
                .with_query(query);
            responder.answer(delivered, clock.now()).await
        }
        Err(_) => Err(Error::invalid("method", "not an HTTP method")),
    };
    let sent = match answered {
        Ok(sealed) => answer(&mut send, &ReplyHead::ok(), &sealed).await,
        Err(e) => answer(&mut send, &ReplyHead::error(&e), &[]).await,
    };
    if let Err(why) = sent {
        tracing::debug!(reason = %why, "the mediator went away before the answer");
    }
}

struct Inner {
    addr: SocketAddr,
    key: Option<NodeKey>,
    cipher: Arc<dyn Cipher>,
    timeout: Duration,
    watch: watch::Receiver<Link>,
    supervisor: JoinHandle<()>,
    endpoint: quinn::Endpoint,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.supervisor.abort();
        if let Link::Up(connection) = &*self.watch.borrow() {
            connection.close(VarInt::from_u32(close::DONE), b"node stopped");
        }
    }
}

/// A node over QUIC: calls other nodes through the mediator and, once
/// [started](QuicNodeClientBuilder::start), stays attached and answers
/// them.
///
/// Cheap to clone; clones share one connection. Dropping the last clone
/// closes the connection, which detaches the node at once.
#[derive(Clone)]
pub struct QuicNodeClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for QuicNodeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuicNodeClient")
            .field("mediator", &self.inner.addr)
            .field("key", &self.inner.key)
            .field("connected", &self.is_connected())
            .finish_non_exhaustive()
    }
}

/// One node's part of a [`QuicNodeClient::broadcast`]: its opened reply,
/// or [`QuicError::Node`] when the node refused, [`QuicError::Mediator`]
/// when the mediator got no answer from it (failed, unreachable, timed out).
pub type NodeReply = mediator_core::node::NodeReply<QuicError>;

/// Every node's result of a [`QuicNodeClient::broadcast`], and the summary.
pub type BroadcastReplies = mediator_core::node::BroadcastReplies<QuicError>;

impl QuicNodeClient {
    /// Starts configuring a node that talks to the mediator's QUIC
    /// listener at `addr`.
    pub fn builder(addr: SocketAddr) -> QuicNodeClientBuilder {
        QuicNodeClientBuilder {
            addr,
            server_name: "localhost".into(),
            key: None,
            token: None,
            minter: None,
            cipher: None,
            ttl: DEFAULT_TTL,
            meta: Meta::new(),
            trust: None,
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: Duration::from_secs(5),
            backoff: Backoff::default(),
            clock: Arc::new(SystemClock),
            require_sender: false,
            max_body: DEFAULT_MAX_BODY,
            max_streams: 64,
            idle_timeout: Duration::from_secs(30),
            keep_alive: Duration::from_secs(10),
        }
    }

    /// This node's key, if it has an identity.
    pub fn key(&self) -> Option<&NodeKey> {
        self.inner.key.as_ref()
    }

    /// Whether the client holds a live connection now.
    pub fn is_connected(&self) -> bool {
        matches!(&*self.inner.watch.borrow(), Link::Up(_))
    }

    /// Whether a newer attachment under the same name replaced this one
    /// (the client then stays disconnected).
    pub fn is_superseded(&self) -> bool {
        matches!(&*self.inner.watch.borrow(), Link::Superseded(_))
    }

    /// Waits until the client holds a live connection, at most `within`.
    pub async fn wait_connected(&self, within: Duration) -> Result<(), QuicError> {
        self.connection(within).await.map(drop)
    }

    /// Sends `body` to node `target` at `path` and returns its opened reply.
    pub async fn call(
        &self,
        target: NodeKey,
        path: &str,
        body: impl Into<Bytes>,
    ) -> Result<Bytes, QuicError> {
        let (_, reply) = self.unicast(Target::One(target), path, body.into()).await?;
        Ok(reply)
    }

    /// Sends `body` to any one node of `group` (the mediator picks the least
    /// busy healthy one) and returns which node answered and its reply.
    pub async fn any(
        &self,
        group: &str,
        path: &str,
        body: impl Into<Bytes>,
    ) -> Result<(NodeKey, Bytes), QuicError> {
        self.unicast(Target::any(group)?, path, body.into()).await
    }

    /// Sends `body` to every node of `group` and returns each node's
    /// result with the mediator's summary.
    ///
    /// Fails as a whole only when the mediator refuses the broadcast (no
    /// such group, bad token, ...); a node that fails is an `Err` entry.
    pub async fn broadcast(
        &self,
        group: &str,
        path: &str,
        body: impl Into<Bytes>,
    ) -> Result<BroadcastReplies, QuicError> {
        let target = Target::all(group)?;
        let bare = bare_path(path)?;
        let (head, body) = self.exchange(&target, path, body.into()).await?;
        if !head.is_success() {
            return Err(mediator_error(head));
        }
        let mut offset = 0usize;
        let mut replies = Vec::with_capacity(head.results.len());
        for entry in head.results {
            let node: NodeKey = entry
                .node
                .parse()
                .map_err(|e| QuicError::Protocol(format!("broadcast entry's node: {e}")))?;
            let end = offset
                .checked_add(entry.len)
                .filter(|end| *end <= body.len())
                .ok_or_else(|| QuicError::Protocol("broadcast bodies shorter than said".into()))?;
            let part = body.slice(offset..end);
            offset = end;
            let result = if entry.answered && (200..300).contains(&entry.status) {
                self.open(&node, bare, &part)
            } else if entry.answered {
                Err(QuicError::Node {
                    node: entry.node,
                    status: entry.status,
                    kind: entry.kind.unwrap_or_else(|| "unknown".into()),
                    message: entry.message.unwrap_or_default(),
                })
            } else {
                Err(QuicError::Mediator {
                    status: entry.status,
                    kind: entry.kind.unwrap_or_else(|| "unknown".into()),
                    fault: entry.fault.as_deref().and_then(Fault::parse),
                    message: entry.message.unwrap_or_default(),
                })
            };
            replies.push(NodeReply {
                node,
                id: entry.id.map(NodeId),
                result,
            });
        }
        let summary = head.summary.map(Summary::from).unwrap_or_default();
        Ok(BroadcastReplies { replies, summary })
    }

    /// Closes the connection (the mediator detaches the node at once) and
    /// waits briefly for the close to be sent.
    pub async fn shutdown(self) {
        self.inner.supervisor.abort();
        let link = self.inner.watch.borrow().clone();
        if let Link::Up(connection) = link {
            connection.close(VarInt::from_u32(close::DONE), b"node stopped");
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), self.inner.endpoint.wait_idle()).await;
    }

    async fn unicast(
        &self,
        target: Target,
        path: &str,
        body: Bytes,
    ) -> Result<(NodeKey, Bytes), QuicError> {
        let bare = bare_path(path)?;
        let (head, body) = self.exchange(&target, path, body).await?;
        let Some(node) = head.node.clone() else {
            return Err(mediator_error(head));
        };
        let key: NodeKey = node
            .parse()
            .map_err(|e| QuicError::Protocol(format!("answering node: {e}")))?;
        if !head.is_success() {
            return Err(QuicError::Node {
                node,
                status: head.status,
                kind: head.kind.unwrap_or_else(|| "unknown".into()),
                message: head.message.unwrap_or_default(),
            });
        }
        let opened = self.open(&key, bare, &body)?;
        Ok((key, opened))
    }

    fn open(&self, replier: &NodeKey, path: &str, sealed: &[u8]) -> Result<Bytes, QuicError> {
        let plain = open_reply(
            self.inner.cipher.as_ref(),
            replier,
            self.inner.key.as_ref(),
            path,
            sealed,
        )?;
        Ok(Bytes::from(plain))
    }

    fn unreachable(&self, reason: impl std::fmt::Display) -> QuicError {
        QuicError::Unreachable {
            addr: self.inner.addr.to_string(),
            reason: reason.to_string(),
        }
    }

    async fn connection(&self, within: Duration) -> Result<Connection, QuicError> {
        let mut watch = self.inner.watch.clone();
        let wait = async {
            loop {
                match &*watch.borrow_and_update() {
                    Link::Up(connection) => return Ok(connection.clone()),
                    Link::Superseded(why) => {
                        return Err(self.unreachable(format!("not connected: {why}")))
                    }
                    Link::Connecting => {}
                }
                if watch.changed().await.is_err() {
                    return Err(self.unreachable("the client stopped"));
                }
            }
        };
        tokio::time::timeout(within, wait)
            .await
            .map_err(|_| self.unreachable(format!("not connected within {within:?}")))?
    }

    /// Seals and sends one request, returns the answer's head and body.
    async fn exchange(
        &self,
        target: &Target,
        path: &str,
        body: Bytes,
    ) -> Result<(ReplyHead, Bytes), QuicError> {
        let bare = bare_path(path)?;
        let sealed = seal_request(
            self.inner.cipher.as_ref(),
            self.inner.key.as_ref(),
            target,
            bare,
            &body,
        )?;
        let timeout = self.inner.timeout;
        let connection = self.connection(timeout).await?;
        let head = RequestHead {
            method: Method::POST.to_string(),
            path: path.to_owned(),
            target: target.to_string(),
            timeout_ms: Some(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX)),
            ..RequestHead::default()
        };
        let whole = async {
            let (mut send, mut recv) = connection
                .open_bi()
                .await
                .map_err(|e| self.unreachable(e))?;
            // A refusal (413) stops the stream before the body is through;
            // the answer still comes, so a failed write is not the end.
            let wrote = async {
                write_frame(&mut send, &head).await?;
                send.write_all(&sealed).await.map_err(|e| e.to_string())?;
                send.finish().map_err(|e| e.to_string())
            }
            .await;
            let reply: ReplyHead = match read_frame(&mut recv, MAX_REPLY_HEADER).await {
                Ok(reply) => reply,
                Err(e) => {
                    let why = wrote.err().map(|w| format!("{e} (sending: {w})"));
                    return Err(self.unreachable(why.unwrap_or_else(|| e.to_string())));
                }
            };
            let body = recv
                .read_to_end(usize::MAX)
                .await
                .map_err(|e| self.unreachable(format!("the answer broke off: {e}")))?;
            Ok((reply, Bytes::from(body)))
        };
        tokio::time::timeout(timeout + GRACE, whole)
            .await
            .map_err(|_| QuicError::Timeout {
                after: timeout + GRACE,
            })?
    }
}

/// The path without its query (what the seal binds); it must start with
/// `/`.
fn bare_path(path: &str) -> Result<&str, QuicError> {
    if !path.starts_with('/') {
        return Err(Error::invalid("path", "must start with /").into());
    }
    Ok(path.split('?').next().unwrap_or(path))
}
