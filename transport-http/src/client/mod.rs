//! The Rust node client over HTTP.
//!
//! A node is a [`NodeClient`]: built with [`NodeClient::builder`], it either
//! [`start`](NodeClientBuilder::start)s (serves a callback HTTP server where
//! the mediator reaches it, registers, keeps its lease and deregisters on
//! [`shutdown`](NodeClient::shutdown)) or only
//! [`connect`](NodeClientBuilder::connect)s (a sender that is never called).
//! Either way it reaches other nodes through the mediator:
//!
//! - [`call`](NodeClient::call): one node by key (`POST /one/g/n/path`);
//! - [`any`](NodeClient::any): whichever node of a group the mediator picks
//!   (`POST /any/g/path`), and which one answered;
//! - [`broadcast`](NodeClient::broadcast): every node of a group
//!   (`POST /many/g/path`), each node's result and a [`Summary`].
//!
//! Every payload is sealed end to end with the node key ([`KeyRing`]): the
//! mediator sees only opaque bytes, and the additional authenticated data
//! binds sender, target and path (see [`mediator_core::cipher`]). The
//! node's side of that exchange is the core's ([`mediator_core::node`]),
//! whatever the transport; over HTTP it is usable without a `NodeClient` as
//! [`NodeService`] (a hyper service) and [`open_request`].
//!
//! # Example
//!
//! A mediator on a free loopback port, a node that answers and a node that
//! only calls:
//!
//! ```
//! use std::time::Duration;
//!
//! use bytes::Bytes;
//! use mediator_core::{
//!     Authenticator, Claims, Error, KeyRing, Mediator, MemoryRegistry, NodeKey, SealKey, Timestamp,
//! };
//! use mediator_transport_http::client::Incoming;
//! use mediator_transport_http::{HttpDelivery, HttpListener, NodeClient};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let auth = Authenticator::hs256("a secret of at least 32 bytes!!!");
//! let minter = auth.minter().expect("an HS256 authenticator can mint");
//! let mediator = Mediator::builder()
//!     .registry(MemoryRegistry::new())
//!     .authenticator(auth)
//!     .deliver(HttpDelivery::default())
//!     .build()?;
//! let listener = HttpListener::bind("127.0.0.1:0").await?;
//! let url = format!("http://{}", listener.local_addr());
//! tokio::spawn(listener.serve(mediator));
//!
//! // Every node holds the node key; the mediator never does.
//! let keys = KeyRing::new(SealKey::generate());
//!
//! // A node that answers: serves its callback, registers, renews its lease.
//! let api = NodeClient::builder(&url)
//!     .identity("users", Some("api"))
//!     .token_minter(minter.clone())
//!     .keys(keys.clone())
//!     .callback("http://127.0.0.1:0") // port 0: any free port
//!     .start(|request: Incoming| async move {
//!         let caller = request.from.map(|key| key.to_string()).unwrap_or_default();
//!         let name = String::from_utf8_lossy(&request.body).into_owned();
//!         if name.is_empty() {
//!             // The caller gets 400 with this kind and message.
//!             return Err(Error::refused(400, "no_name", "whom should I greet?"));
//!         }
//!         Ok(Bytes::from(format!("hello {name}, from {caller}")))
//!     })
//!     .await?;
//!
//! // A node that only calls, with a token minted for it.
//! let me = NodeKey::named("billing", "worker-1")?;
//! let token = minter.mint(&Claims::node(&me, Timestamp::now(), Duration::from_secs(3600)))?;
//! let worker = NodeClient::builder(&url)
//!     .node_key(me)
//!     .token(token)
//!     .keys(keys)
//!     .connect()
//!     .await?;
//!
//! let reply = worker.call(NodeKey::named("users", "api")?, "/greet", "ada").await?;
//! assert_eq!(reply, "hello ada, from billing/worker-1");
//!
//! let (who, _) = worker.any("users", "/greet", "bob").await?;
//! assert_eq!(who.to_string(), "users/api");
//!
//! let replies = worker.broadcast("users", "/greet", "all").await?;
//! assert_eq!((replies.summary.asked, replies.summary.answered), (1, 1));
//!
//! api.shutdown().await?; // deregisters and stops the callback server
//! # Ok(()) }
//! ```
//!
//! # Receiving requests
//!
//! A started node answers through [`NodeService`], which applies the
//! core's rules ([`mediator_core::node`]) to every request: the
//! `x-mediator-target` header must reach this node (else `421`, kind
//! `misdirected`), `x-mediator-from` must be a node key and, when the node
//! demands one ([`NodeClientBuilder::require_sender`]), be there (`403`,
//! kind `unverified_sender`), the body must open under the AAD of (sender,
//! target, path) (`400`, kind `sealed`), and the handler is cut off at the
//! caller's `x-mediator-deadline` (`504`), with [`DEADLINE_SLACK`] to spare.
//!
//! A [`Handler`] returns the reply payload or a
//! [`mediator_core::Error`]; [`Error::refused`] answers with a status and
//! kind of its choosing. Every refusal and error is a JSON body
//! `{"error", "kind", "fault"}`, the same shape the mediator uses, so the
//! caller sees why. An [`HttpError`] (from calling other nodes inside a
//! handler) converts with `?` and answers 500.
//!
//! # Leases
//!
//! A started node registers with a lease of `ttl` (default 30 s) and keeps
//! it as the core's [`Lease`](mediator_core::node::Lease) says: it renews
//! every third of the lease the mediator granted, shortened at random by
//! up to a fifth; when the mediator answers a renewal with 404 (it
//! restarted with an empty registry, or evicted the node) it registers
//! again at once; when the mediator cannot be reached it retries with
//! exponential backoff and full jitter ([`Backoff`]), so a restarted
//! mediator is not hit by every node in the same millisecond.
//!
//! # Errors
//!
//! Everything returns [`HttpError`]. The mediator's own refusals are
//! [`HttpError::Mediator`] with its status and `kind` (`503`
//! `no_node_available` is not `504` `deadline_passed`); a node's error
//! answer is [`HttpError::Node`]; a mediator that cannot be reached is
//! [`HttpError::Unreachable`].

mod lease;
#[cfg(feature = "legacy")]
pub mod legacy;
mod node;
mod serve;
mod transport;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method};
use mediator_core::node::{self as core_node, Lease as CoreLease};
use mediator_core::{
    Cipher, Clock, Error, KeyRing, Meta, NodeId, NodeKey, Summary, SystemClock, Target, TokenMinter,
};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use mediator_core::node::{
    open_reply, seal_reply, seal_request, Backoff, BoxFuture, Handler, Incoming, DEADLINE_SLACK,
};
pub use node::{open_request, NodeService, DEFAULT_MAX_BODY, SEALED_CONTENT_TYPE};

use self::lease::{Keeper, Link};
use self::transport::{catch_error, mediator_error, request, Answer, TokenSource, Transport};
use crate::error::HttpError;
use crate::headers::{X_MEDIATOR_NODE, X_MEDIATOR_SUMMARY, X_MEDIATOR_TIMEOUT_MS};

/// The default lease of a started node.
pub const DEFAULT_TTL: Duration = Duration::from_secs(30);

/// The default time a client waits for an answer (and asks the mediator to
/// keep to with `x-mediator-timeout-ms`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Extra time the client waits beyond its timeout, so the mediator's own
/// 504 (which names the slow node) normally arrives first.
const GRACE: Duration = Duration::from_secs(2);

/// Configures a [`NodeClient`]; from [`NodeClient::builder`].
///
/// Settings are checked when the client is built
/// ([`start`](Self::start), [`connect`](Self::connect)), which fail with
/// the first problem found.
pub struct NodeClientBuilder {
    url: String,
    key: Option<Result<NodeKey, Error>>,
    token: Option<TokenSource>,
    minter: Option<TokenMinter>,
    cipher: Option<Arc<dyn Cipher>>,
    callback: Option<String>,
    listen: Option<SocketAddr>,
    ttl: Duration,
    meta: Meta,
    tls_roots: Vec<Vec<u8>>,
    timeout: Duration,
    connect_timeout: Duration,
    backoff: Backoff,
    clock: Arc<dyn Clock>,
    require_sender: bool,
    max_body: usize,
}

impl std::fmt::Debug for NodeClientBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeClientBuilder")
            .field("url", &self.url)
            .field("key", &self.key)
            .field("callback", &self.callback)
            .field("listen", &self.listen)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl NodeClientBuilder {
    /// Who this node is: its group and, optionally, its name (`None` is the
    /// group's unnamed node). Required to [`start`](Self::start); a
    /// sender that only [`connect`](Self::connect)s may leave it out when
    /// its token names no node.
    pub fn identity(mut self, group: impl Into<String>, name: Option<&str>) -> Self {
        self.key = Some(NodeKey::new(group, name));
        self
    }

    /// Who this node is, as a key.
    pub fn node_key(mut self, key: NodeKey) -> Self {
        self.key = Some(Ok(key));
        self
    }

    /// The bearer token to present to the mediator, minted for this node.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(TokenSource::Fixed(token.into()));
        self.minter = None;
        self
    }

    /// Mints this node's tokens itself (15-minute tokens naming the node,
    /// replaced a minute before they expire) instead of a fixed one.
    pub fn token_minter(mut self, minter: TokenMinter) -> Self {
        self.minter = Some(minter);
        self.token = None;
        self
    }

    /// The node key ring that seals and opens payloads (required).
    pub fn keys(self, keys: KeyRing) -> Self {
        self.cipher(keys)
    }

    /// Any [`Cipher`] in place of a [`KeyRing`].
    pub fn cipher(mut self, cipher: impl Cipher) -> Self {
        self.cipher = Some(Arc::new(cipher));
        self
    }

    /// Where the mediator reaches this node, such as
    /// `http://10.0.0.5:9000`. Unless [`listen`](Self::listen) says
    /// otherwise, the callback server binds this URL's host and port; port
    /// `0` binds a free port and the URL registered carries the real one.
    pub fn callback(mut self, url: impl Into<String>) -> Self {
        self.callback = Some(url.into());
        self
    }

    /// The address the callback server binds (for a node behind NAT or a
    /// proxy, whose callback URL is not its own address). Without a
    /// [`callback`](Self::callback), the URL registered is
    /// `http://<bound address>`.
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = Some(addr);
        self
    }

    /// The lease asked for (default [`DEFAULT_TTL`], 30 s; at least 1 s).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Metadata registered with the node (version, zone, ...).
    pub fn meta(mut self, meta: Meta) -> Self {
        self.meta = meta;
        self
    }

    /// Trusts the certificate authority in `pem` for an `https://`
    /// mediator. Once any is given, only the authorities given are trusted
    /// (not the public web roots).
    pub fn tls_root(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls_roots.push(pem.into());
        self
    }

    /// How long a call waits for its answer (default [`DEFAULT_TIMEOUT`]);
    /// sent to the mediator as `x-mediator-timeout-ms` so it gives up at
    /// the same time and tells which node was slow.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How long to wait for a TCP connection to the mediator (default 2 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The backoff between registration attempts while the mediator cannot
    /// be reached (default 200 ms doubling up to 10 s, full jitter).
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// The clock the lease keeper reads and waits on (default: the system
    /// clock). With a [`ManualClock`](mediator_core::ManualClock) a test
    /// moves the node's renewals and retries forward without waiting.
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Refuses (403) requests from callers whose token names no node
    /// (default: accepted, with [`Incoming::from`] `None`).
    pub fn require_sender(mut self, require: bool) -> Self {
        self.require_sender = require;
        self
    }

    /// The largest request body the callback server reads (default
    /// [`DEFAULT_MAX_BODY`]).
    pub fn max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }

    /// The identity, checked.
    fn checked_key(&mut self) -> Result<Option<NodeKey>, HttpError> {
        match self.key.take() {
            None => Ok(None),
            Some(Ok(key)) => Ok(Some(key)),
            Some(Err(e)) => Err(e.into()),
        }
    }

    fn link(&mut self, key: Option<&NodeKey>) -> Result<Link, HttpError> {
        let base = transport::base_url(&self.url)?;
        let tokens = match (self.token.take(), self.minter.take()) {
            (Some(fixed), _) => fixed,
            (None, Some(minter)) => TokenSource::minted(minter, key.cloned()),
            (None, None) => {
                return Err(config("a node needs .token(..) or .token_minter(..)"));
            }
        };
        if self.timeout.is_zero() || self.connect_timeout.is_zero() {
            return Err(config("timeouts must be above zero"));
        }
        // A zero first wait would retry a lost mediator in a tight loop.
        if self.backoff.initial.is_zero() || self.backoff.max < self.backoff.initial {
            return Err(config("backoff needs 0 < initial <= max"));
        }
        let tls = if self.tls_roots.is_empty() {
            None
        } else {
            Some(transport::tls_config(&self.tls_roots)?)
        };
        Ok(Link {
            base,
            transport: Transport::new(tls, self.connect_timeout)?,
            tokens,
            timeout: self.timeout,
        })
    }

    /// Builds a sender-only client: no callback server, no registration.
    ///
    /// Without an [`identity`](Self::identity) its requests are sealed as
    /// from no node, which is what the mediator vouches for when the token
    /// names none.
    pub async fn connect(mut self) -> Result<NodeClient, HttpError> {
        let key = self.checked_key()?;
        let cipher = self
            .cipher
            .take()
            .ok_or_else(|| config("a node needs .keys(..) to seal payloads"))?;
        let link = self.link(key.as_ref())?;
        Ok(NodeClient {
            inner: Arc::new(Inner {
                link: Arc::new(link),
                key,
                cipher,
                callback: None,
                local_addr: None,
                running: Mutex::new(None),
            }),
        })
    }

    /// Starts the node: serves `handler` at the callback URL, registers,
    /// and keeps the registration alive until [`NodeClient::shutdown`].
    ///
    /// Fails if the first registration fails (bad token, wrong identity,
    /// mediator down), after stopping the callback server again.
    pub async fn start(mut self, handler: impl Handler) -> Result<NodeClient, HttpError> {
        let key = self
            .checked_key()?
            .ok_or_else(|| config("a started node needs .identity(..)"))?;
        let cipher = self
            .cipher
            .take()
            .ok_or_else(|| config("a node needs .keys(..) to seal payloads"))?;
        let service = NodeService::from_parts(key.clone(), Arc::clone(&cipher), Arc::new(handler))
            .require_sender(self.require_sender)
            .max_body(self.max_body);
        self.launch(key, cipher, service).await
    }

    /// Binds, serves `service`, registers and spawns the lease keeper.
    async fn launch<S>(
        mut self,
        key: NodeKey,
        cipher: Arc<dyn Cipher>,
        service: S,
    ) -> Result<NodeClient, HttpError>
    where
        S: hyper::service::Service<
                http::Request<hyper::body::Incoming>,
                Response = http::Response<http_body_util::Full<Bytes>>,
                Error = std::convert::Infallible,
            > + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        if self.ttl < Duration::from_secs(1) {
            return Err(config("the lease (ttl) must be at least 1 s"));
        }
        let link = Arc::new(self.link(Some(&key))?);
        let (listener, callback) = bind(self.callback.as_deref(), self.listen).await?;
        let local_addr = listener.local_addr()?;
        let (stop_tx, stop_rx) = watch::channel(false);
        let server = serve::spawn(listener, service, stop_rx.clone());
        let lease = Keeper {
            link: Arc::clone(&link),
            key: key.clone(),
            url: callback.clone(),
            ttl: self.ttl,
            meta: std::mem::take(&mut self.meta),
            clock: Arc::clone(&self.clock),
        };
        let mut state = CoreLease::new(self.ttl, self.backoff);
        let sent = self.clock.now();
        match lease.register().await {
            Ok(granted) => state.registered(sent, sent + granted),
            Err(error) => {
                let _ = stop_tx.send(true);
                let _ = server.await;
                return Err(error);
            }
        }
        tracing::info!(node = %key, callback = %callback, mediator = %link.base, "node registered");
        let keeper = tokio::spawn(lease.clone().run(state, stop_rx));
        Ok(NodeClient {
            inner: Arc::new(Inner {
                link,
                key: Some(key),
                cipher,
                callback: Some(callback),
                local_addr: Some(local_addr),
                running: Mutex::new(Some(Running {
                    stop: stop_tx,
                    keeper,
                    server,
                    lease,
                })),
            }),
        })
    }
}

fn config(message: &str) -> HttpError {
    HttpError::Core(Error::Config(message.to_owned()))
}

/// Binds the callback server and works out the URL to register.
async fn bind(
    callback: Option<&str>,
    listen: Option<SocketAddr>,
) -> Result<(TcpListener, String), HttpError> {
    let parsed = match callback {
        Some(url) => {
            let uri: http::Uri = url.trim_end_matches('/').parse().map_err(|e| {
                HttpError::Core(Error::invalid("callback", format!("{url:?} ({e})")))
            })?;
            let host = uri
                .host()
                .filter(|h| !h.is_empty())
                .ok_or_else(|| Error::invalid("callback", "must name a host"))?
                .to_owned();
            let scheme = uri.scheme_str().unwrap_or("");
            let default_port = match scheme {
                "http" => 80,
                "https" => 443,
                _ => {
                    return Err(
                        Error::invalid("callback", "must start with http:// or https://").into(),
                    )
                }
            };
            if scheme == "https" && listen.is_none() {
                return Err(config(
                    "the callback server speaks plain HTTP: an https:// callback (TLS ended by a proxy) needs .listen(addr)",
                ));
            }
            Some((uri.clone(), host, uri.port_u16().unwrap_or(default_port)))
        }
        None => None,
    };
    let listener = match (listen, &parsed) {
        (Some(addr), _) => TcpListener::bind(addr).await?,
        (None, Some((_, host, port))) => {
            // IPv6 literals come bracketed out of a URI.
            let host = host.trim_start_matches('[').trim_end_matches(']');
            TcpListener::bind((host, *port)).await?
        }
        (None, None) => {
            return Err(config(
                "a started node needs .callback(url) or .listen(addr)",
            ))
        }
    };
    let bound = listener.local_addr()?;
    let url = match parsed {
        Some((uri, host, port)) => {
            let scheme = uri.scheme_str().unwrap_or("http");
            let port = if port == 0 { bound.port() } else { port };
            let path = uri.path().trim_end_matches('/');
            format!("{scheme}://{host}:{port}{path}")
        }
        None => {
            if bound.ip().is_unspecified() {
                return Err(config(
                    "listening on an unspecified address: give .callback(url) so the mediator knows where to call",
                ));
            }
            format!("http://{bound}")
        }
    };
    Ok((listener, url))
}

/// A started node's background work.
struct Running {
    stop: watch::Sender<bool>,
    keeper: JoinHandle<()>,
    server: JoinHandle<()>,
    lease: Keeper,
}

struct Inner {
    link: Arc<Link>,
    key: Option<NodeKey>,
    cipher: Arc<dyn Cipher>,
    callback: Option<String>,
    local_addr: Option<SocketAddr>,
    /// `Some` while a started node runs; dropping it (with the last clone
    /// of the client) stops the server and the lease keeper without
    /// deregistering.
    running: Mutex<Option<Running>>,
}

/// A node: reaches other nodes through the mediator and, once
/// [started](NodeClientBuilder::start), answers them.
///
/// Cheap to clone; clones share one connection pool and one registration.
/// Dropping the last clone stops the callback server and the lease keeper
/// (the lease then runs out at the mediator); [`shutdown`](Self::shutdown)
/// also deregisters at once.
#[derive(Clone)]
pub struct NodeClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for NodeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeClient")
            .field("mediator", &self.inner.link.base)
            .field("key", &self.inner.key)
            .field("callback", &self.inner.callback)
            .finish_non_exhaustive()
    }
}

/// One node's part of a [`NodeClient::broadcast`].
#[derive(Debug)]
pub struct NodeReply {
    /// The node.
    pub node: NodeKey,
    /// Its registration id, when the mediator said.
    pub id: Option<NodeId>,
    /// Its opened reply, or why there is none.
    pub result: Result<Bytes, HttpError>,
}

/// Every node's result of a [`NodeClient::broadcast`], and the summary.
#[derive(Debug)]
pub struct BroadcastReplies {
    /// One entry per node asked, in the mediator's (registration id) order.
    pub replies: Vec<NodeReply>,
    /// How many nodes were asked, answered, failed and timed out, from the
    /// mediator's `x-mediator-summary` header (counted from the entries when
    /// the header is missing).
    pub summary: Summary,
}

impl BroadcastReplies {
    /// The replies that succeeded, by node.
    pub fn successes(&self) -> impl Iterator<Item = (&NodeKey, &Bytes)> {
        self.replies
            .iter()
            .filter_map(|r| r.result.as_ref().ok().map(|body| (&r.node, body)))
    }
}

impl NodeClient {
    /// Starts configuring a node that talks to the mediator at
    /// `mediator_url` (`http://` or `https://`, optionally with a path
    /// prefix).
    pub fn builder(mediator_url: impl Into<String>) -> NodeClientBuilder {
        NodeClientBuilder {
            url: mediator_url.into(),
            key: None,
            token: None,
            minter: None,
            cipher: None,
            callback: None,
            listen: None,
            ttl: DEFAULT_TTL,
            meta: Meta::new(),
            tls_roots: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: Duration::from_secs(2),
            backoff: Backoff::default(),
            clock: Arc::new(SystemClock),
            require_sender: false,
            max_body: DEFAULT_MAX_BODY,
        }
    }

    /// This node's key, if it has an identity.
    pub fn key(&self) -> Option<&NodeKey> {
        self.inner.key.as_ref()
    }

    /// The mediator's base URL.
    pub fn mediator_url(&self) -> &str {
        &self.inner.link.base
    }

    /// The URL registered for the mediator to call this node back at
    /// (`None` for a sender-only client).
    pub fn callback_url(&self) -> Option<&str> {
        self.inner.callback.as_deref()
    }

    /// The address the callback server is bound to (`None` for a
    /// sender-only client).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.inner.local_addr
    }

    /// Sends `body` to node `target` at `path` and returns its opened reply.
    pub async fn call(
        &self,
        target: NodeKey,
        path: &str,
        body: impl Into<Bytes>,
    ) -> Result<Bytes, HttpError> {
        let route = format!(
            "/one/{}/{}",
            target.group(),
            target.name().unwrap_or_default()
        );
        let target = Target::One(target);
        let (_, reply) = self.unicast(&route, &target, path, body.into()).await?;
        Ok(reply)
    }

    /// Sends `body` to any one node of `group` (the mediator picks the least
    /// busy healthy one) and returns which node answered and its reply.
    pub async fn any(
        &self,
        group: &str,
        path: &str,
        body: impl Into<Bytes>,
    ) -> Result<(NodeKey, Bytes), HttpError> {
        let target = Target::any(group)?;
        let route = format!("/any/{group}");
        self.unicast(&route, &target, path, body.into()).await
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
    ) -> Result<BroadcastReplies, HttpError> {
        let target = Target::all(group)?;
        let route = format!("/many/{group}");
        let (path, bare) = checked_path(path)?;
        let answer = self
            .send(&route, &target, &path, &bare, body.into())
            .await?;
        if !answer.status.is_success() {
            return Err(mediator_error(answer.status, &answer.body));
        }
        let entries: Vec<serde_json::Value> = serde_json::from_slice(&answer.body)
            .map_err(|e| HttpError::Protocol(format!("/many answered a non-array: {e}")))?;
        let replies: Vec<NodeReply> = entries
            .iter()
            .map(|entry| self.broadcast_entry(entry, &bare))
            .collect::<Result<_, _>>()?;
        let summary = match answer.headers.get(X_MEDIATOR_SUMMARY) {
            Some(value) => parse_summary(value)?,
            None => count(&replies),
        };
        Ok(BroadcastReplies { replies, summary })
    }

    fn broadcast_entry(
        &self,
        entry: &serde_json::Value,
        path: &str,
    ) -> Result<NodeReply, HttpError> {
        let node: NodeKey = entry
            .get("node")
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| HttpError::Protocol(format!("/many entry names no node: {entry}")))?
            .parse()
            .map_err(|e| HttpError::Protocol(format!("/many entry's node: {e}")))?;
        let id = entry
            .get("id")
            .and_then(serde_json::Value::as_u64)
            .map(NodeId);
        let status = entry
            .get("status")
            .and_then(serde_json::Value::as_u64)
            .and_then(|s| u16::try_from(s).ok());
        let body = if let Some(catch) = entry.get("catch") {
            let (kind, fault, message) = catch_error(catch);
            // The mediator's account of why this node has no reply.
            let error = HttpError::Mediator {
                status: status.unwrap_or(match kind.as_str() {
                    "deadline_passed" => 504,
                    "no_node_available" | "store" => 503,
                    _ => 502,
                }),
                kind,
                fault,
                message,
            };
            return Ok(NodeReply {
                node,
                id,
                result: Err(error),
            });
        } else if let Some(encoded) = entry.get("then_base64") {
            use base64::Engine;
            let text = encoded.as_str().ok_or_else(|| {
                HttpError::Protocol("/many entry's then_base64 is not a string".into())
            })?;
            Bytes::from(
                base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .map_err(|e| HttpError::Protocol(format!("/many entry's then_base64: {e}")))?,
            )
        } else if let Some(value) = entry.get("then") {
            Bytes::from(value.to_string())
        } else {
            return Err(HttpError::Protocol(format!(
                "/many entry has neither then nor catch: {entry}"
            )));
        };
        let status = status.unwrap_or(200);
        let result = if (200..300).contains(&status) {
            core_node::open_reply(
                self.inner.cipher.as_ref(),
                &node,
                self.inner.key.as_ref(),
                path,
                &body,
            )
            .map(Bytes::from)
            .map_err(HttpError::from)
        } else {
            Err(HttpError::Node {
                node: node.to_string(),
                status,
                message: transport::error_message(&body),
            })
        };
        Ok(NodeReply { node, id, result })
    }

    /// Sends to one node (`/one` or `/any`) and opens the reply.
    async fn unicast(
        &self,
        route: &str,
        target: &Target,
        path: &str,
        body: Bytes,
    ) -> Result<(NodeKey, Bytes), HttpError> {
        let (path, bare) = checked_path(path)?;
        let answer = self.send(route, target, &path, &bare, body).await?;
        let replier = match answer.headers.get(X_MEDIATOR_NODE) {
            None if answer.status.is_success() => {
                return Err(HttpError::Protocol(format!(
                    "the mediator's answer has no {X_MEDIATOR_NODE} header"
                )))
            }
            None => return Err(mediator_error(answer.status, &answer.body)),
            Some(value) => value
                .to_str()
                .ok()
                .and_then(|text| text.parse::<NodeKey>().ok())
                .ok_or_else(|| {
                    HttpError::Protocol(format!("{X_MEDIATOR_NODE} is not a node key: {value:?}"))
                })?,
        };
        // The seal would catch a reply from another node too; saying so
        // plainly makes a misrouting mediator easier to diagnose.
        if !target.addresses(&replier) {
            return Err(HttpError::Protocol(format!(
                "asked {target}, but the mediator says {replier} answered"
            )));
        }
        if !answer.status.is_success() {
            return Err(HttpError::Node {
                node: replier.to_string(),
                status: answer.status.as_u16(),
                message: transport::error_message(&answer.body),
            });
        }
        let reply = core_node::open_reply(
            self.inner.cipher.as_ref(),
            &replier,
            self.inner.key.as_ref(),
            &bare,
            &answer.body,
        )?;
        Ok((replier, Bytes::from(reply)))
    }

    /// Seals `body` for `target` and POSTs it to `route` + `path`.
    async fn send(
        &self,
        route: &str,
        target: &Target,
        path: &str,
        bare: &str,
        body: Bytes,
    ) -> Result<Answer, HttpError> {
        let inner = &self.inner;
        let sealed = core_node::seal_request(
            inner.cipher.as_ref(),
            inner.key.as_ref(),
            target,
            bare,
            &body,
        )?;
        let url = format!("{}{route}{path}", inner.link.base);
        let token = inner.link.tokens.token()?;
        let mut req = request(
            Method::POST,
            &url,
            &token,
            SEALED_CONTENT_TYPE,
            Bytes::from(sealed),
        )?;
        let millis = u64::try_from(inner.link.timeout.as_millis()).unwrap_or(u64::MAX);
        req.headers_mut()
            .insert(X_MEDIATOR_TIMEOUT_MS, HeaderValue::from(millis));
        inner
            .link
            .transport
            .send(req, inner.link.timeout + GRACE)
            .await
    }

    /// Stops the lease keeper, deregisters, and stops the callback server
    /// (requests in flight get a few seconds to finish). A sender-only
    /// client has nothing to stop.
    ///
    /// The server stops even when deregistering fails; the error is
    /// returned then (the lease will run out at the mediator anyway).
    pub async fn shutdown(self) -> Result<(), HttpError> {
        let running = self
            .inner
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let Some(running) = running else {
            return Ok(());
        };
        let _ = running.stop.send(true);
        // Wait for the keeper so no registration of its lands after the
        // removal below.
        let _ = running.keeper.await;
        let removed = running.lease.remove().await;
        let _ = running.server.await;
        match removed {
            Ok(n) => {
                tracing::info!(node = %running.lease.key, removed = n, "node deregistered");
                Ok(())
            }
            Err(error) => Err(error),
        }
    }
}

/// The path as sent (leading `/`, query kept) and its bare form (no query),
/// which the seal binds.
fn checked_path(path: &str) -> Result<(String, String), HttpError> {
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

/// Parses `asked=4; answered=2; failed=1; timed_out=1`.
fn parse_summary(value: &HeaderValue) -> Result<Summary, HttpError> {
    let text = value
        .to_str()
        .map_err(|_| HttpError::Protocol(format!("{X_MEDIATOR_SUMMARY} is not ASCII")))?;
    let mut summary = Summary::default();
    for part in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, number) = part
            .split_once('=')
            .ok_or_else(|| HttpError::Protocol(format!("{X_MEDIATOR_SUMMARY}: {part:?}")))?;
        let number: usize = number
            .trim()
            .parse()
            .map_err(|_| HttpError::Protocol(format!("{X_MEDIATOR_SUMMARY}: {part:?}")))?;
        match name.trim() {
            "asked" => summary.asked = number,
            "answered" => summary.answered = number,
            "failed" => summary.failed = number,
            "timed_out" => summary.timed_out = number,
            // Later versions may add counts; they do not change these.
            _ => {}
        }
    }
    Ok(summary)
}

/// A summary counted from the entries, for mediators that send none.
fn count(replies: &[NodeReply]) -> Summary {
    let mut summary = Summary {
        asked: replies.len(),
        ..Summary::default()
    };
    for reply in replies {
        match &reply.result {
            Err(HttpError::Mediator { kind, .. }) if kind == "deadline_passed" => {
                summary.timed_out += 1;
            }
            Err(HttpError::Mediator { .. }) => summary.failed += 1,
            // A node that answered, even with an error status or a payload
            // that does not open, did answer.
            _ => summary.answered += 1,
        }
    }
    summary
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_parse() {
        let v = HeaderValue::from_static("asked=4; answered=2; failed=1; timed_out=1");
        assert_eq!(
            parse_summary(&v).expect("parses"),
            Summary {
                asked: 4,
                answered: 2,
                failed: 1,
                timed_out: 1
            }
        );
        assert!(parse_summary(&HeaderValue::from_static("asked=x")).is_err());
        assert!(parse_summary(&HeaderValue::from_static("asked")).is_err());
        let extra = HeaderValue::from_static("asked=1;answered=1;failed=0;timed_out=0;later=3");
        assert_eq!(parse_summary(&extra).expect("parses").answered, 1);
    }

    #[test]
    fn paths_are_checked() {
        assert_eq!(
            checked_path("echo?x=1").expect("ok"),
            ("/echo?x=1".to_owned(), "/echo".to_owned())
        );
        assert_eq!(
            checked_path("/").expect("ok"),
            ("/".to_owned(), "/".to_owned())
        );
        assert!(checked_path("/a b").is_err());
        assert!(checked_path("/a#b").is_err());
    }
}
