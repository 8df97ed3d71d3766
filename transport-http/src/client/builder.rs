//! Configuring a node and bringing it up: [`NodeClientBuilder`], its
//! settings and defaults, and the two ways to finish it, a started node
//! (callback server, registration, lease keeper) or a sender-only one.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use mediator_core::node::{Backoff, Handler, Lease as CoreLease, TokenSource};
use mediator_core::{Cipher, Clock, Error, KeyRing, Meta, NodeKey, SystemClock, TokenMinter};
use tokio::net::TcpListener;
use tokio::sync::watch;
use url::Host;

use super::calls::{Inner, NodeClient, Running};
use super::lease::{Keeper, Link};
use super::node::{NodeService, DEFAULT_MAX_BODY};
use super::serve;
use super::transport::{self, Transport};
use crate::error::HttpError;

/// The default lease of a started node.
pub const DEFAULT_TTL: Duration = Duration::from_secs(30);

/// The default time a client waits for an answer (and asks the mediator to
/// keep to with `x-mediator-timeout-ms`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

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
    /// Required of a native node; a legacy one (`start_legacy`) may go
    /// without, hence visible to that module.
    pub(super) cipher: Option<Arc<dyn Cipher>>,
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
    /// Bounds the legacy service's bodies too.
    pub(super) max_body: usize,
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

// The entry point is NodeClient's, but the defaults it sets belong with
// the settings they are defaults of.
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
        self.token = Some(TokenSource::fixed(token));
        self.minter = None;
        self
    }

    /// Mints this node's tokens itself, on the builder's
    /// [`clock`](Self::clock), instead of a fixed one: tokens naming the
    /// node that live [`TOKEN_LIFETIME`](mediator_core::node::TOKEN_LIFETIME),
    /// replaced [`REMINT_MARGIN`](mediator_core::node::REMINT_MARGIN) before
    /// they expire.
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

    /// The clock every part of the client reads and waits on (default: the
    /// system clock): the lease keeper, minted tokens, and the deadlines of
    /// requests delivered to the node. With a [`ManualClock`](mediator_core::ManualClock) a test
    /// moves the node's renewals and retries forward without waiting.
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Refuses (403) requests from callers whose token names no node
    /// (default: accepted, with [`Incoming::from`] `None`).
    ///
    /// [`Incoming::from`]: mediator_core::node::Incoming::from
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

    /// The identity a started node registers under; it cannot go without.
    pub(super) fn started_key(&mut self) -> Result<NodeKey, HttpError> {
        self.checked_key()?
            .ok_or_else(|| config("a started node needs .identity(..)"))
    }

    /// The node key, which every native node needs to seal payloads.
    fn sealing(&mut self) -> Result<Arc<dyn Cipher>, HttpError> {
        self.cipher
            .take()
            .ok_or_else(|| config("a node needs .keys(..) to seal payloads"))
    }

    /// How to reach the mediator, once the settings for it are checked.
    fn link(&mut self, key: Option<&NodeKey>) -> Result<Link, HttpError> {
        let base = transport::base_url(&self.url)?;
        let tokens = match (self.token.take(), self.minter.take()) {
            (Some(fixed), _) => fixed,
            (None, Some(minter)) => {
                TokenSource::minted(minter, key.cloned(), Arc::clone(&self.clock))
            }
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
        let cipher = self.sealing()?;
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
        let key = self.started_key()?;
        let cipher = self.sealing()?;
        let service = NodeService::from_parts(key.clone(), Arc::clone(&cipher), Arc::new(handler))
            .require_sender(self.require_sender)
            .max_body(self.max_body)
            .shared_clock(Arc::clone(&self.clock));
        self.launch(key, cipher, service).await
    }

    /// Binds, serves `service`, registers and spawns the lease keeper.
    pub(super) async fn launch<S>(
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

/// A builder setting that cannot work, reported before anything starts.
fn config(message: &str) -> HttpError {
    HttpError::Core(Error::Config(message.to_owned()))
}

/// Binds the callback server and works out the URL to register.
async fn bind(
    callback: Option<&str>,
    listen: Option<SocketAddr>,
) -> Result<(TcpListener, String), HttpError> {
    let callback = callback
        .map(|text| Callback::parse(text, listen.is_some()))
        .transpose()?;
    let listener = match (listen, &callback) {
        (Some(addr), _) => TcpListener::bind(addr).await?,
        (None, Some(callback)) => callback.bind().await?,
        (None, None) => {
            return Err(config(
                "a started node needs .callback(url) or .listen(addr)",
            ))
        }
    };
    let bound = listener.local_addr()?;
    let url = match callback {
        Some(callback) => callback.registered(bound.port()),
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

/// A checked `.callback(..)` URL: what the callback server binds (unless
/// `.listen(..)` says otherwise) and what it registers.
#[derive(Debug)]
struct Callback {
    scheme: String,
    host: Host,
    /// `0` binds a free port, and the registered URL carries the real one.
    port: u16,
    /// Without trailing slashes, so the mediator's `path` appends cleanly.
    path: String,
}

impl Callback {
    /// `listening`: whether `.listen(..)` was given, without which an
    /// `https://` callback cannot work.
    fn parse(text: &str, listening: bool) -> Result<Callback, HttpError> {
        let url = transport::http_url("callback", text)?;
        let host = url
            .host()
            .ok_or_else(|| Error::invalid("callback", "must name a host"))?
            .to_owned();
        if url.scheme() == "https" && !listening {
            return Err(config(
                "the callback server speaks plain HTTP: an https:// callback (TLS ended by a proxy) needs .listen(addr)",
            ));
        }
        Ok(Callback {
            scheme: url.scheme().to_owned(),
            host,
            // Both http and https have a default port, so this is never
            // the fallback.
            port: url.port_or_known_default().unwrap_or(80),
            path: url.path().trim_end_matches('/').to_owned(),
        })
    }

    /// Binds the host and port the URL names.
    async fn bind(&self) -> std::io::Result<TcpListener> {
        match &self.host {
            Host::Domain(name) => TcpListener::bind((name.as_str(), self.port)).await,
            Host::Ipv4(ip) => TcpListener::bind((*ip, self.port)).await,
            Host::Ipv6(ip) => TcpListener::bind((*ip, self.port)).await,
        }
    }

    /// The URL to register once the server is bound to `bound_port`. The
    /// port is always written out, and a query or fragment of the callback
    /// is not carried over: the mediator appends each request's own.
    fn registered(&self, bound_port: u16) -> String {
        let port = if self.port == 0 {
            bound_port
        } else {
            self.port
        };
        format!("{}://{}:{port}{}", self.scheme, self.host, self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callbacks_are_parsed() {
        for (given, bound, registered) in [
            ("http://127.0.0.1:0", 4242, "http://127.0.0.1:4242"),
            ("http://10.0.0.5:9000/", 4242, "http://10.0.0.5:9000"),
            // The default port is written out.
            ("http://node.example", 4242, "http://node.example:80"),
            ("HTTP://Node.Example:80/", 4242, "http://node.example:80"),
            // A base path is kept, without trailing slashes.
            (
                "http://node.example:8080/hooks",
                1,
                "http://node.example:8080/hooks",
            ),
            (
                "http://node.example:8080/a/b//",
                1,
                "http://node.example:8080/a/b",
            ),
            // IPv6 literals stay bracketed in the URL.
            ("http://[::1]:0/hooks/", 4242, "http://[::1]:4242/hooks"),
            ("http://[fe80::1]:9000", 1, "http://[fe80::1]:9000"),
            // Neither a query nor a fragment is registered.
            ("http://h:8080/x/?q=1#top", 1, "http://h:8080/x"),
        ] {
            let callback = Callback::parse(given, false).expect(given);
            assert_eq!(callback.registered(bound), registered, "{given}");
        }
        let ipv6 = Callback::parse("http://[::1]:0", false).expect("parses");
        assert_eq!(
            ipv6.host,
            Host::<String>::Ipv6(std::net::Ipv6Addr::LOCALHOST)
        );
        assert_eq!(ipv6.port, 0);

        // Behind a proxy that ends TLS, with .listen(..).
        let https = Callback::parse("https://node.example/base/", true).expect("parses");
        assert_eq!(https.port, 443);
        assert_eq!(https.registered(1), "https://node.example:443/base");
        assert!(matches!(
            Callback::parse("https://node.example", false),
            Err(HttpError::Core(Error::Config(_)))
        ));

        for (given, says) in [
            ("ftp://node.example", "must start with http:// or https://"),
            ("node.example:80", "must start with http:// or https://"),
            ("http://", "must name a host"),
            ("http://node.example:65536", "is not a URL"),
            ("http://[::1", "is not a URL"),
            ("/hooks", "is not a URL"),
        ] {
            let error = Callback::parse(given, false).expect_err(given).to_string();
            assert!(error.contains(says), "{given}: {error}");
        }
    }

    #[tokio::test]
    async fn the_registered_url_carries_the_bound_port() {
        let (listener, url) = bind(Some("http://127.0.0.1:0/base/"), None)
            .await
            .expect("binds");
        let port = listener.local_addr().expect("bound").port();
        assert_eq!(url, format!("http://127.0.0.1:{port}/base"));

        let listen = "127.0.0.1:0".parse().expect("addr");
        let (listener, url) = bind(None, Some(listen)).await.expect("binds");
        assert_eq!(
            url,
            format!("http://{}", listener.local_addr().expect("bound"))
        );

        for (callback, listen) in [(None, None), (None, Some("0.0.0.0:0"))] {
            let listen = listen.map(|addr| addr.parse().expect("addr"));
            assert!(matches!(
                bind(callback, listen).await,
                Err(HttpError::Core(Error::Config(_)))
            ));
        }
    }
}
