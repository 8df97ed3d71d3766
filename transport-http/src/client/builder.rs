//! Configuring a node over HTTP: [`NodeClientBuilder`], the core's
//! builder with the HTTP settings beside it (the mediator's URL, the
//! callback server, TLS roots), and the two ways to finish it.

use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use mediator_core::node::{self as core_node, Backoff, ClientError, Handler};
use mediator_core::{Cipher, Clock, Error, KeyRing, Meta, NodeKey, TokenMinter};
use tokio::net::TcpListener;
use url::Host;

use super::calls::NodeClient;
use super::transport::{self, Transport};
use super::wire::{config, HttpWire, Serving};

pub use mediator_core::node::{DEFAULT_TIMEOUT, DEFAULT_TTL};

/// Configures a [`NodeClient`]; from [`NodeClient::builder`].
///
/// The settings every transport shares are the core's
/// ([`mediator_core::node::NodeClientBuilder`], which each setter here
/// passes on); the mediator's URL, the callback server and TLS are
/// HTTP's. Settings are checked when the client is built
/// ([`start`](Self::start), [`connect`](Self::connect)), which fail with
/// the first problem found.
pub struct NodeClientBuilder {
    core: core_node::NodeClientBuilder,
    url: String,
    /// Other mediators of the same formation, tried in turn.
    also: Vec<String>,
    callback: Option<String>,
    listen: Option<SocketAddr>,
    tls_roots: Vec<Vec<u8>>,
    timeout: Duration,
    connect_timeout: Duration,
}

impl std::fmt::Debug for NodeClientBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeClientBuilder")
            .field("url", &self.url)
            .field("core", &self.core)
            .field("callback", &self.callback)
            .field("listen", &self.listen)
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
            core: core_node::NodeClientBuilder::new(),
            url: mediator_url.into(),
            also: Vec::new(),
            callback: None,
            listen: None,
            tls_roots: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: Duration::from_secs(2),
        }
    }
}

impl NodeClientBuilder {
    /// Another mediator of the same formation (an instance sharing the
    /// store), tried when the ones before it do not answer: a call, a
    /// renewal or a registration that finds its mediator unreachable goes
    /// to the next, and stays there. A node whose mediator died so
    /// registers again at another at its next renewal (its lease keeper
    /// backs off with jitter when none answers).
    ///
    /// ```
    /// use mediator_transport_http::NodeClient;
    /// let builder = NodeClient::builder("http://10.0.0.1:8080")
    ///     .also_at("http://10.0.0.2:8080")
    ///     .also_at("http://10.0.0.3:8080");
    /// # drop(builder);
    /// ```
    pub fn also_at(mut self, mediator_url: impl Into<String>) -> Self {
        self.also.push(mediator_url.into());
        self
    }

    fn core(
        mut self,
        change: impl FnOnce(core_node::NodeClientBuilder) -> core_node::NodeClientBuilder,
    ) -> Self {
        self.core = change(self.core);
        self
    }

    /// Who this node is: its group and, optionally, its name (`None` is the
    /// group's unnamed node). Required to [`start`](Self::start); a
    /// sender that only [`connect`](Self::connect)s may leave it out when
    /// its token names no node.
    pub fn identity(self, group: impl Into<String>, name: Option<&str>) -> Self {
        self.core(|core| core.identity(group, name))
    }

    /// Who this node is, as a key.
    pub fn node_key(self, key: NodeKey) -> Self {
        self.core(|core| core.node_key(key))
    }

    /// The bearer token to present to the mediator, minted for this node.
    pub fn token(self, token: impl Into<String>) -> Self {
        self.core(|core| core.token(token))
    }

    /// Mints this node's tokens itself, on the builder's
    /// [`clock`](Self::clock), instead of a fixed one (see
    /// [`mediator_core::node::NodeClientBuilder::token_minter`]).
    pub fn token_minter(self, minter: TokenMinter) -> Self {
        self.core(|core| core.token_minter(minter))
    }

    /// The node key ring that seals and opens payloads (required).
    pub fn keys(self, keys: KeyRing) -> Self {
        self.core(|core| core.keys(keys))
    }

    /// Any [`Cipher`] in place of a [`KeyRing`].
    pub fn cipher(self, cipher: impl Cipher) -> Self {
        self.core(|core| core.cipher(cipher))
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
    pub fn ttl(self, ttl: Duration) -> Self {
        self.core(|core| core.ttl(ttl))
    }

    /// Metadata registered with the node (version, zone, ...).
    pub fn meta(self, meta: Meta) -> Self {
        self.core(|core| core.meta(meta))
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
    /// the same time and tells which node was slow. Registrations and
    /// renewals wait as long.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self.core(|core| core.timeout(timeout))
    }

    /// How long to wait for a TCP connection to the mediator (default 2 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The backoff between registration attempts while the mediator cannot
    /// be reached (default 200 ms doubling up to 10 s, full jitter).
    pub fn backoff(self, backoff: Backoff) -> Self {
        self.core(|core| core.backoff(backoff))
    }

    /// The clock every part of the client reads and waits on (default: the
    /// system clock): the lease keeper, minted tokens, and the deadlines of
    /// requests delivered to the node. With a [`ManualClock`](mediator_core::ManualClock) a test
    /// moves the node's renewals and retries forward without waiting.
    pub fn clock(self, clock: impl Clock) -> Self {
        self.core(|core| core.clock(clock))
    }

    /// Refuses (403) requests from callers whose token names no node
    /// (default: accepted, with [`Incoming::from`] `None`).
    ///
    /// [`Incoming::from`]: mediator_core::node::Incoming::from
    pub fn require_sender(self, require: bool) -> Self {
        self.core(|core| core.require_sender(require))
    }

    /// The largest request body the callback server reads (default
    /// [`DEFAULT_MAX_BODY`](super::DEFAULT_MAX_BODY)).
    pub fn max_body(self, bytes: usize) -> Self {
        self.core(|core| core.max_body(bytes))
    }

    /// The wire these settings describe, serving `serving` once started.
    fn wire(&self, serving: Serving) -> Result<HttpWire, ClientError> {
        let mut bases = vec![transport::base_url(&self.url)?];
        for other in &self.also {
            bases.push(transport::base_url(other)?);
        }
        if self.connect_timeout.is_zero() {
            return Err(config("timeouts must be above zero"));
        }
        let tls = if self.tls_roots.is_empty() {
            None
        } else {
            Some(transport::tls_config(&self.tls_roots)?)
        };
        Ok(HttpWire {
            bases,
            current: AtomicUsize::new(0),
            transport: Transport::new(tls, self.connect_timeout)?,
            timeout: self.timeout,
            serving,
            callback: self.callback.clone(),
            listen: self.listen,
            bound: OnceLock::new(),
            server: Mutex::new(None),
        })
    }

    /// Builds a sender-only client: no callback server, no registration.
    ///
    /// Without an [`identity`](Self::identity) its requests are sealed as
    /// from no node, which is what the mediator vouches for when the token
    /// names none.
    pub async fn connect(self) -> Result<NodeClient, ClientError> {
        let wire = self.wire(Serving::Native)?;
        let client = self.core.connect(wire).await?;
        Ok(NodeClient::from(client))
    }

    /// Starts the node: serves `handler` at the callback URL, registers,
    /// and keeps the registration alive until [`NodeClient::shutdown`].
    ///
    /// Fails if the first registration fails (bad token, wrong identity,
    /// mediator down), after stopping the callback server again.
    pub async fn start(self, handler: impl Handler) -> Result<NodeClient, ClientError> {
        let wire = self.wire(Serving::Native)?;
        let client = self.core.start(wire, handler).await?;
        Ok(NodeClient::from(client))
    }

    /// Starts the node serving `serving` instead of sealed requests (the
    /// original's body shapes); `handler` is never asked.
    #[cfg(feature = "legacy")]
    pub(super) async fn start_serving(
        mut self,
        serving: Serving,
        handler: impl Handler,
        sealing: impl Cipher,
    ) -> Result<NodeClient, ClientError> {
        if !self.core.has_cipher() {
            self.core = self.core.cipher(sealing);
        }
        let wire = self.wire(serving)?;
        let client = self.core.start(wire, handler).await?;
        Ok(NodeClient::from(client))
    }
}

/// Binds the callback server and works out the URL to register.
pub(super) async fn bind(
    callback: Option<&str>,
    listen: Option<SocketAddr>,
) -> Result<(TcpListener, String), ClientError> {
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
    fn parse(text: &str, listening: bool) -> Result<Callback, ClientError> {
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
    pub(super) async fn bind(&self) -> std::io::Result<TcpListener> {
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
            Err(ClientError::Core(Error::Config(_)))
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
                Err(ClientError::Core(Error::Config(_)))
            ));
        }
    }
}
