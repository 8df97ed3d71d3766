//! The Rust node client over QUIC: the core's node client
//! ([`mediator_core::node::NodeClient`]) over the QUIC wire ([`QuicWire`]):
//! the connection, the hello (attaching or not), a stream per call and per
//! delivery.

use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use mediator_core::async_trait;
use mediator_core::node::{
    self as core_node, Backoff, ClientError, Delivered, Handler, Join, Joined, Lost, Responder,
    Wire, WireEntry, WireReply, WireRequest,
};
use mediator_core::{
    Cipher, Clock, Error, ErrorBody, Fault, KeyRing, Meta, NodeId, NodeKey, Summary, Target,
    TokenMinter,
};
use quinn::{Connection, ConnectionError, RecvStream, SendStream, VarInt};
use tokio::sync::watch;

use crate::frame::{
    answer, close, read_body, read_frame, write_frame, write_head_and_body, Attach, BodyError,
    FrameError, Hello, ReplyHead, RequestHead, DEFAULT_MAX_HEADER, MAX_REPLY_HEADER,
};
use crate::tls::Trust;

pub use mediator_core::node::{DEFAULT_MAX_BODY, DEFAULT_TIMEOUT, DEFAULT_TTL};

/// Configures a [`QuicNodeClient`]; from [`QuicNodeClient::builder`].
///
/// The settings every transport shares are the core's
/// ([`mediator_core::node::NodeClientBuilder`], which each setter here
/// passes on); the mediator's address, how its certificate is checked and
/// the connection's limits are QUIC's.
pub struct QuicNodeClientBuilder {
    core: core_node::NodeClientBuilder,
    addr: SocketAddr,
    /// Other mediators of the same formation, tried in turn.
    also: Vec<SocketAddr>,
    server_name: String,
    trust: Option<Result<Trust, String>>,
    connect_timeout: Duration,
    max_streams: u32,
    idle_timeout: Duration,
    keep_alive: Duration,
}

impl std::fmt::Debug for QuicNodeClientBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuicNodeClientBuilder")
            .field("addr", &self.addr)
            .field("core", &self.core)
            .finish_non_exhaustive()
    }
}

impl QuicNodeClientBuilder {
    fn core(
        mut self,
        change: impl FnOnce(core_node::NodeClientBuilder) -> core_node::NodeClientBuilder,
    ) -> Self {
        self.core = change(self.core);
        self
    }

    /// Another mediator of the same formation (an instance sharing the
    /// store, with the same certificate or one of the [pins](Self::pin)),
    /// tried when the ones before it do not answer: when the connection is
    /// lost and its mediator cannot be reached again, the client dials the
    /// next and attaches there (its lease keeper backs off with jitter when
    /// none answers).
    pub fn also_at(mut self, addr: SocketAddr) -> Self {
        self.also.push(addr);
        self
    }

    /// The node's identity (its token must name it).
    pub fn identity(self, group: impl Into<String>, name: Option<&str>) -> Self {
        self.core(|core| core.identity(group, name))
    }

    /// The node's identity, as a key.
    pub fn node_key(self, key: NodeKey) -> Self {
        self.core(|core| core.node_key(key))
    }

    /// The bearer token sent in every hello.
    pub fn token(self, token: impl Into<String>) -> Self {
        self.core(|core| core.token(token))
    }

    /// Mints a fresh token for the node's identity at every (re)connection,
    /// on the builder's [`clock`](Self::clock), instead of a fixed one;
    /// each lives [`TOKEN_LIFETIME`](mediator_core::node::TOKEN_LIFETIME),
    /// and the listener ends the connection when it expires.
    pub fn token_minter(self, minter: TokenMinter) -> Self {
        self.core(|core| core.token_minter(minter))
    }

    /// Seals with the default AES-256-GCM cipher over this key ring.
    pub fn keys(self, keys: KeyRing) -> Self {
        self.core(|core| core.keys(keys))
    }

    /// Seals with a cipher of one's own.
    pub fn cipher(self, cipher: impl Cipher) -> Self {
        self.core(|core| core.cipher(cipher))
    }

    /// The lease to register with (default [`DEFAULT_TTL`]).
    pub fn ttl(self, ttl: Duration) -> Self {
        self.core(|core| core.ttl(ttl))
    }

    /// Metadata to register with.
    pub fn meta(self, meta: Meta) -> Self {
        self.core(|core| core.meta(meta))
    }

    /// Trusts exactly the certificate with this SHA-256 fingerprint (hex,
    /// colons allowed), as [`QuicListener::fingerprint`](crate::QuicListener::fingerprint) gives it;
    /// several, comma-separated, trust any of them: one per mediator of a
    /// formation ([`also_at`](Self::also_at)) that generated its own.
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
    pub fn timeout(self, timeout: Duration) -> Self {
        self.core(|core| core.timeout(timeout))
    }

    /// How long a connection and its hello may take (default 5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How reconnections back off (exponential with full jitter).
    pub fn backoff(self, backoff: Backoff) -> Self {
        self.core(|core| core.backoff(backoff))
    }

    /// The clock every part of the client reads and waits on (default: the
    /// system clock): backoff, minted tokens, and the deadlines of
    /// requests delivered to the node.
    pub fn clock(self, clock: impl Clock) -> Self {
        self.core(|core| core.clock(clock))
    }

    /// Refuses requests from callers without a node identity (403).
    pub fn require_sender(self, require: bool) -> Self {
        self.core(|core| core.require_sender(require))
    }

    /// The largest request body this node accepts (default
    /// [`DEFAULT_MAX_BODY`]).
    pub fn max_body(self, bytes: usize) -> Self {
        self.core(|core| core.max_body(bytes))
    }

    /// How many deliveries the mediator may have open to this node at once
    /// (default 64); more wait for one to end.
    pub fn max_streams(mut self, streams: u32) -> Self {
        self.max_streams = streams;
        self
    }

    /// The idle timeout and keep-alive period of the connection (defaults
    /// 10 s and 3 s; the keep-alive must be shorter). The idle timeout is
    /// how long a mediator that vanished without closing (a killed process,
    /// a lost machine) goes unnoticed before the node attaches elsewhere;
    /// the keep-alive is one small packet per period per node.
    pub fn idle(mut self, idle_timeout: Duration, keep_alive: Duration) -> Self {
        self.idle_timeout = idle_timeout;
        self.keep_alive = keep_alive;
        self
    }

    /// A client that only calls: connects without attaching, and
    /// reconnects by itself after the connection is lost. Returns once the
    /// first connection and hello succeeded.
    pub async fn connect(self) -> Result<QuicNodeClient, ClientError> {
        let wire = self.wire()?;
        let client = self.core.connect(wire).await?;
        Ok(QuicNodeClient { client })
    }

    /// Attaches as the node's identity and answers requests with
    /// `handler`; reattaches by itself after the connection is lost.
    /// Returns once the first attachment succeeded, or with its refusal.
    pub async fn start(self, handler: impl Handler) -> Result<QuicNodeClient, ClientError> {
        let wire = self.wire()?;
        let client = self.core.start(wire, handler).await?;
        Ok(QuicNodeClient { client })
    }

    /// The wire these settings describe: an endpoint ready to dial.
    fn wire(&self) -> Result<QuicWire, ClientError> {
        let trust = match self.trust.clone() {
            Some(Ok(trust)) => trust,
            Some(Err(why)) => return Err(ClientError::Tls(why)),
            None => {
                return Err(ClientError::Tls(
                    "no way to check the mediator: set a pin or a root".into(),
                ))
            }
        };
        if self.keep_alive >= self.idle_timeout {
            return Err(ClientError::Core(Error::invalid(
                "keep_alive",
                "must be shorter than the idle timeout",
            )));
        }
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
        let mut endpoint = crate::socket::endpoint(local, None)?;
        endpoint.set_default_client_config(config);
        let (link, _) = watch::channel(Link::Connecting);
        Ok(QuicWire {
            endpoint,
            addrs: std::iter::once(self.addr)
                .chain(self.also.iter().copied())
                .collect(),
            current: AtomicUsize::new(0),
            server_name: self.server_name.clone(),
            connect_timeout: self.connect_timeout,
            link,
        })
    }
}

/// The state of a client's connection.
#[derive(Clone)]
enum Link {
    Up(Connection),
    Connecting,
    Superseded(String),
}

/// The QUIC transport's [`Wire`]: one connection to the mediator's
/// listener, said hello on (attaching a started node), a stream per call
/// and per delivery. What [`QuicNodeClient`] runs over; built by
/// [`QuicNodeClientBuilder`].
pub struct QuicWire {
    endpoint: quinn::Endpoint,
    /// The mediators of the formation, in the order given.
    addrs: Vec<SocketAddr>,
    /// The one dialled now: the first, until it cannot be reached.
    current: AtomicUsize,
    server_name: String,
    connect_timeout: Duration,
    link: watch::Sender<Link>,
}

impl std::fmt::Debug for QuicWire {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuicWire")
            .field("mediator", &self.mediator_addr())
            .field("connected", &self.is_connected())
            .finish_non_exhaustive()
    }
}

impl Drop for QuicWire {
    fn drop(&mut self) {
        if let Link::Up(connection) = &*self.link.borrow() {
            connection.close(VarInt::from_u32(close::DONE), b"node stopped");
        }
    }
}

fn reply_error(head: &ReplyHead) -> ErrorBody {
    ErrorBody {
        error: head.message.clone().unwrap_or_default(),
        kind: head.kind.clone().unwrap_or_else(|| "unknown".into()),
        fault: head.fault.as_deref().and_then(Fault::parse),
    }
}

impl QuicWire {
    /// The mediator's address: the one dialled now.
    pub fn mediator_addr(&self) -> SocketAddr {
        self.addrs[self.current.load(Ordering::Relaxed) % self.addrs.len()]
    }

    /// Whether the wire holds a live connection now.
    pub fn is_connected(&self) -> bool {
        matches!(&*self.link.borrow(), Link::Up(_))
    }

    /// Whether a newer attachment under the same name replaced this one
    /// (the client then stays disconnected).
    pub fn is_superseded(&self) -> bool {
        matches!(&*self.link.borrow(), Link::Superseded(_))
    }

    fn unreachable(&self, reason: impl std::fmt::Display) -> ClientError {
        ClientError::Unreachable {
            peer: self.mediator_addr().to_string(),
            reason: reason.to_string(),
        }
    }

    /// The live connection, waiting for one at most `within`.
    async fn connection(&self, within: Duration) -> Result<Connection, ClientError> {
        let mut watch = self.link.subscribe();
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

    /// Waits until the wire holds a live connection, at most `within`.
    pub async fn wait_connected(&self, within: Duration) -> Result<(), ClientError> {
        self.connection(within).await.map(drop)
    }

    /// Connects and says hello, attaching `join`'s node if it has one: at
    /// the current mediator and, while one cannot be reached, at the next
    /// of the formation, each once; the one that answered stays current.
    async fn dial(&self, join: &Join) -> Result<Connection, ClientError> {
        let first = self.current.load(Ordering::Relaxed);
        let mut failed = None;
        for step in 0..self.addrs.len() {
            let at = (first + step) % self.addrs.len();
            self.current.store(at, Ordering::Relaxed);
            match self.dial_current(join).await {
                Err(e @ ClientError::Unreachable { .. }) => {
                    if self.addrs.len() > 1 {
                        tracing::warn!(mediator = %self.addrs[at], error = %e, "mediator unreachable; trying the next of the formation");
                    }
                    failed = Some(e);
                }
                answered => return answered,
            }
        }
        self.current.store(first, Ordering::Relaxed);
        Err(failed.unwrap_or_else(|| self.unreachable("no mediator address")))
    }

    /// [`dial`](Self::dial) at the current mediator only.
    async fn dial_current(&self, join: &Join) -> Result<Connection, ClientError> {
        // The hello's token is the connection's credential until it
        // expires, so each connection starts with a whole one.
        let token = join.tokens.fresh()?;
        let hello = Hello {
            token,
            attach: join.node.as_ref().map(|member| Attach {
                group: member.key.group().to_owned(),
                name: member.key.name().map(str::to_owned),
                meta: member.meta.clone(),
                ttl_ms: u64::try_from(member.ttl.as_millis()).unwrap_or(u64::MAX),
            }),
        };
        let exchange = async {
            let connecting = self
                .endpoint
                .connect(self.mediator_addr(), &self.server_name)
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
            Ok::<_, ClientError>((connection, head))
        };
        let (connection, head) = tokio::time::timeout(self.connect_timeout, exchange)
            .await
            .map_err(|_| {
                self.unreachable(format!("no hello answer within {:?}", self.connect_timeout))
            })??;
        if !head.is_success() {
            connection.close(VarInt::from_u32(close::DONE), b"hello refused");
            return Err(ClientError::refused(None, head.status, reply_error(&head)));
        }
        Ok(connection)
    }

    fn read_broadcast(head: ReplyHead, body: &Bytes) -> Result<WireReply, ClientError> {
        let mut offset = 0usize;
        let mut entries = Vec::with_capacity(head.results.len());
        for entry in head.results {
            let end = offset
                .checked_add(entry.len)
                .filter(|end| *end <= body.len())
                .ok_or_else(|| {
                    ClientError::Protocol("broadcast bodies shorter than said".into())
                })?;
            let part = body.slice(offset..end);
            offset = end;
            let error = || ErrorBody {
                error: entry.message.clone().unwrap_or_default(),
                kind: entry.kind.clone().unwrap_or_else(|| "unknown".into()),
                fault: entry.fault.as_deref().and_then(Fault::parse),
            };
            let reply = if entry.answered && (200..300).contains(&entry.status) {
                WireReply::Answered {
                    node: entry.node.clone(),
                    status: entry.status,
                    body: part,
                }
            } else {
                WireReply::Refused {
                    node: entry.answered.then(|| entry.node.clone()),
                    status: entry.status,
                    error: error(),
                }
            };
            entries.push(WireEntry {
                node: entry.node,
                id: entry.id.map(NodeId),
                reply,
            });
        }
        Ok(WireReply::Broadcast {
            entries,
            summary: head.summary.map(Summary::from),
        })
    }
}

#[async_trait]
impl Wire for QuicWire {
    async fn send(&self, request: WireRequest<'_>) -> Result<WireReply, ClientError> {
        let connection = self.connection(request.timeout).await?;
        let head = RequestHead {
            method: request.method.to_string(),
            path: request.path.to_owned(),
            target: request.target.to_string(),
            timeout_ms: Some(u64::try_from(request.timeout.as_millis()).unwrap_or(u64::MAX)),
            ..RequestHead::default()
        };
        let (mut send, mut recv) = connection
            .open_bi()
            .await
            .map_err(|e| self.unreachable(e))?;
        // A refusal (413) stops the stream before the body is through;
        // the answer still comes, so a failed write is not the end.
        let wrote = async {
            write_head_and_body(&mut send, &head, request.body.clone()).await?;
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
        let body = read_body(&mut recv, usize::MAX)
            .await
            .map_err(|e| self.unreachable(format!("the answer broke off: {e}")))?;
        if let Target::All(_) = request.target {
            if !reply.is_success() {
                return Ok(WireReply::Refused {
                    node: None,
                    status: reply.status,
                    error: reply_error(&reply),
                });
            }
            return QuicWire::read_broadcast(reply, &body);
        }
        Ok(match reply.node.clone() {
            Some(node) if reply.is_success() => WireReply::Answered {
                node,
                status: reply.status,
                body,
            },
            node => WireReply::Refused {
                node,
                status: reply.status,
                error: reply_error(&reply),
            },
        })
    }

    async fn join(&self, join: &Join) -> Result<Joined, ClientError> {
        let connection = self.dial(join).await?;
        if let Some(member) = &join.node {
            tokio::spawn(serve_deliveries(
                connection.clone(),
                member.responder.clone(),
                Arc::clone(&member.clock),
                member.max_body,
            ));
        }
        self.link.send_replace(Link::Up(connection));
        // The listener renews the lease while the connection lives.
        Ok(Joined::held())
    }

    async fn lost(&self) -> Lost {
        let link = self.link.borrow().clone();
        let connection = match link {
            Link::Up(connection) => connection,
            Link::Superseded(why) => return Lost::Superseded(why),
            Link::Connecting => return Lost::Dropped("not connected".into()),
        };
        let lost = connection.closed().await;
        if let ConnectionError::ApplicationClosed(closed) = &lost {
            if closed.error_code == VarInt::from_u32(close::SUPERSEDED) {
                let why = String::from_utf8_lossy(&closed.reason).into_owned();
                self.link.send_replace(Link::Superseded(why.clone()));
                return Lost::Superseded(why);
            }
        }
        if matches!(lost, ConnectionError::TimedOut | ConnectionError::Reset)
            && self.addrs.len() > 1
        {
            // The mediator went silent or forgot the connection: it is
            // likely gone, so the next of the formation is dialled first.
            self.current.fetch_add(1, Ordering::Relaxed);
        }
        self.link.send_replace(Link::Connecting);
        Lost::Dropped(lost.to_string())
    }

    async fn leave(&self, _join: &Join) -> Result<(), ClientError> {
        // Closing the connection detaches the node at once.
        let link = self.link.send_replace(Link::Connecting);
        if let Link::Up(connection) = link {
            connection.close(VarInt::from_u32(close::DONE), b"node stopped");
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), self.endpoint.wait_idle()).await;
        Ok(())
    }
}

/// Answers every delivery on `connection` until it ends.
async fn serve_deliveries(
    connection: Connection,
    responder: Responder,
    clock: Arc<dyn Clock>,
    max_body: usize,
) {
    while let Ok((send, recv)) = connection.accept_bi().await {
        tokio::spawn(answer_delivery(
            send,
            recv,
            responder.clone(),
            Arc::clone(&clock),
            max_body,
        ));
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
            let _ = answer(&mut send, &ReplyHead::error(&e), Bytes::new()).await;
            return;
        }
    };
    let body = match read_body(&mut recv, max_body).await {
        Ok(body) => body,
        Err(BodyError::TooLong) => {
            let _ = recv.stop(VarInt::from_u32(0));
            let e = Error::TooLarge { limit: max_body };
            let _ = answer(&mut send, &ReplyHead::error(&e), Bytes::new()).await;
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
        Ok(sealed) => answer(&mut send, &ReplyHead::ok(), sealed).await,
        Err(e) => answer(&mut send, &ReplyHead::error(&e), Bytes::new()).await,
    };
    if let Err(why) = sent {
        tracing::debug!(reason = %why, "the mediator went away before the answer");
    }
}

/// A node over QUIC: calls other nodes through the mediator and, once
/// [started](QuicNodeClientBuilder::start), stays attached and answers
/// them.
///
/// It is the core's [`NodeClient`](mediator_core::node::NodeClient) over
/// the QUIC wire, which it dereferences to: `call`, `any`, `broadcast` and
/// `key` are the core's, and fail with its [`ClientError`].
///
/// Cheap to clone; clones share one connection. Dropping the last clone
/// closes the connection, which detaches the node at once.
#[derive(Clone)]
pub struct QuicNodeClient {
    client: core_node::NodeClient<QuicWire>,
}

impl std::fmt::Debug for QuicNodeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuicNodeClient")
            .field("mediator", &self.wire().mediator_addr())
            .field("key", &self.key())
            .field("connected", &self.is_connected())
            .finish_non_exhaustive()
    }
}

impl Deref for QuicNodeClient {
    type Target = core_node::NodeClient<QuicWire>;

    fn deref(&self) -> &Self::Target {
        &self.client
    }
}

impl From<QuicNodeClient> for core_node::NodeClient<QuicWire> {
    fn from(client: QuicNodeClient) -> Self {
        client.client
    }
}

/// One node's part of a [`QuicNodeClient`]'s broadcast: its opened reply,
/// or [`ClientError::Node`] when the node refused, [`ClientError::Mediator`]
/// when the mediator got no answer from it (failed, unreachable, timed out).
pub type NodeReply = core_node::NodeReply;

/// Every node's result of a [`QuicNodeClient`]'s broadcast, and the summary.
pub type BroadcastReplies = core_node::BroadcastReplies;

impl QuicNodeClient {
    /// Starts configuring a node that talks to the mediator's QUIC
    /// listener at `addr`.
    pub fn builder(addr: SocketAddr) -> QuicNodeClientBuilder {
        QuicNodeClientBuilder {
            core: core_node::NodeClientBuilder::new(),
            addr,
            also: Vec::new(),
            server_name: "localhost".into(),
            trust: None,
            connect_timeout: Duration::from_secs(5),
            max_streams: 64,
            // A node notices a mediator that went silent within 10 s and
            // attaches at the next of its formation.
            idle_timeout: Duration::from_secs(10),
            keep_alive: Duration::from_secs(3),
        }
    }

    /// Whether the client holds a live connection now.
    pub fn is_connected(&self) -> bool {
        self.wire().is_connected()
    }

    /// Whether a newer attachment under the same name replaced this one
    /// (the client then stays disconnected).
    pub fn is_superseded(&self) -> bool {
        self.wire().is_superseded()
    }

    /// Waits until the client holds a live connection, at most `within`.
    pub async fn wait_connected(&self, within: Duration) -> Result<(), ClientError> {
        self.wire().wait_connected(within).await
    }

    /// Closes the connection (the mediator detaches the node at once) and
    /// waits briefly for the close to be sent.
    pub async fn shutdown(self) {
        // Leaving over QUIC is closing the connection, which cannot fail.
        let _ = self.client.shutdown().await;
    }
}
