//! Delivery to nodes that registered an HTTP callback URL.

mod peer;
mod pool;

pub use peer::HttpPeerLink;

use std::error::Error as StdError;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Uri};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::dns::{GaiResolver, Name};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use mediator_core::policy::EndpointPolicy;
use mediator_core::{
    async_trait, error_chain, Deadline, Deliver, DeliverError, Envelope, Limits, Node, Reply,
    RequestContext,
};
use tokio::net::TcpStream;
use tower_service::Service;

use crate::error::HttpError;
use crate::headers::{
    forwardable_with_room, strip_hop_by_hop, TRACEPARENT, X_MEDIATOR, X_MEDIATOR_DEADLINE,
    X_MEDIATOR_FROM, X_MEDIATOR_TARGET, X_REQUEST_ID,
};
pub(crate) use pool::IdlePool;
use pool::{Http1Conn, Http1Pool, Refused};

/// How [`HttpDelivery`] connects to nodes.
///
/// ```
/// use mediator_transport_http::{HttpDelivery, HttpDeliveryConfig};
/// use std::time::Duration;
/// let delivery = HttpDelivery::with_config(
///     HttpDeliveryConfig::default()
///         .with_connect_timeout(Duration::from_millis(500))
///         .with_max_idle_per_host(128),
/// );
/// # drop(delivery);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HttpDeliveryConfig {
    /// How long to wait for a TCP connection to a node (default 2 s). A node
    /// that does not accept in time is unreachable, so an any-of-group
    /// request moves on to another node.
    pub connect_timeout: Duration,
    /// How long an idle pooled connection is kept (default 90 s).
    pub pool_idle_timeout: Duration,
    /// How many idle connections are kept per node (default 1024). Below the
    /// number of requests in flight to one node, every request past it
    /// opens a connection and closes it after the reply: keep it above the
    /// busiest node's concurrency.
    pub max_idle_per_host: usize,
    /// The largest reply body accepted from a node (default: the mediator's
    /// default [`Limits::max_body`], 8 MiB); a bigger reply fails the
    /// delivery with "reply too large". Set it to the mediator's own
    /// `max_body` when that differs.
    pub max_reply_body: usize,
    /// The TLS settings for `https://` nodes; `None` trusts the Mozilla root
    /// certificates (webpki-roots). See [`HttpDeliveryConfig::trust_pem`]
    /// for nodes with certificates from a private authority.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl Default for HttpDeliveryConfig {
    fn default() -> Self {
        HttpDeliveryConfig {
            connect_timeout: Duration::from_secs(2),
            pool_idle_timeout: Duration::from_secs(90),
            max_idle_per_host: 1024,
            max_reply_body: Limits::default().max_body,
            tls: None,
        }
    }
}

impl HttpDeliveryConfig {
    /// Sets [`connect_timeout`](Self::connect_timeout).
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets [`pool_idle_timeout`](Self::pool_idle_timeout).
    pub fn with_pool_idle_timeout(mut self, timeout: Duration) -> Self {
        self.pool_idle_timeout = timeout;
        self
    }

    /// Sets [`max_idle_per_host`](Self::max_idle_per_host).
    pub fn with_max_idle_per_host(mut self, connections: usize) -> Self {
        self.max_idle_per_host = connections;
        self
    }

    /// Sets [`max_reply_body`](Self::max_reply_body).
    pub fn with_max_reply_body(mut self, bytes: usize) -> Self {
        self.max_reply_body = bytes;
        self
    }

    /// Trusts only the certificate authorities in `pem` (one or more
    /// `CERTIFICATE` blocks) for `https://` nodes, replacing the Mozilla
    /// roots.
    pub fn trust_pem(mut self, pem: &[u8]) -> std::result::Result<Self, HttpError> {
        let mut roots = rustls::RootCertStore::empty();
        let mut reader = pem;
        for cert in rustls_pemfile::certs(&mut reader) {
            let cert = cert.map_err(|e| HttpError::Tls(format!("bad certificate PEM: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| HttpError::Tls(format!("unusable root certificate: {e}")))?;
        }
        if roots.is_empty() {
            return Err(HttpError::Tls("no CERTIFICATE found in the PEM".into()));
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(ring_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| HttpError::Tls(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        self.tls = Some(Arc::new(config));
        Ok(self)
    }
}

/// Delivers requests to nodes with `http://` and `https://` endpoints over
/// pooled connections: HTTP/1.1 to `http://` nodes, each connection driven
/// by the task of the request using it (no task of its own, no hand-off
/// between tasks), and to `https://` nodes HTTP/1.1 or HTTP/2 as the node
/// offers by ALPN.
///
/// What the node receives: the caller's method, path, query (without
/// `x-jwt`), content type, other end-to-end headers and body, plus
/// `x-mediator: true`, `x-mediator-from` (the verified sender, when there is
/// one), `x-mediator-target` and `x-mediator-deadline` (ms since the epoch).
/// The caller's credentials (`authorization`, `cookie`, `x-jwt`) and
/// hop-by-hop headers never reach it.
///
/// A node that cannot be connected to is [`DeliverError::unreachable`]
/// (nothing was sent, so the router may try another node of the group);
/// any failure after that is [`DeliverError::failed`]. The router enforces the
/// deadline around the whole exchange.
///
/// It connects only where the mediator's [`EndpointPolicy`] allows, which
/// reaches it with every delivery ([`RequestContext::endpoints`]): the
/// addresses a host name resolves to are
/// judged when a connection is made, those refused are dropped, and when
/// none is left the delivery fails as unreachable, naming the host and the
/// rule, without a connection being opened.
///
/// ```
/// use mediator_core::{Authenticator, Mediator, MemoryRegistry};
/// use mediator_transport_http::HttpDelivery;
/// # fn main() -> Result<(), mediator_core::Error> {
/// let mediator = Mediator::builder()
///     .registry(MemoryRegistry::new())
///     .authenticator(Authenticator::hs256("a secret of at least 32 bytes!!!"))
///     .deliver(HttpDelivery::default())
///     .build()?;
/// # drop(mediator); Ok(()) }
/// ```
#[derive(Clone)]
pub struct HttpDelivery {
    /// `https://` nodes (TLS, HTTP/2 by ALPN).
    client: Client<HttpsConnector<PolicyConnector>, Full<Bytes>>,
    /// `http://` nodes: HTTP/1.1 driven by the request's own task.
    plain: Http1Pool,
    /// `http://` nodes, for the listener's pass-through: plain sockets.
    raw: IdlePool<TcpStream>,
    connector: PolicyConnector,
    max_reply_body: usize,
    max_idle_per_host: usize,
    pool_idle_timeout: Duration,
}

/// What the listener's pass-through needs of the deliverer whose calls it
/// makes itself: its settings, and its pool of plain node connections.
#[derive(Clone)]
pub(crate) struct PassNodes {
    /// Idle connections to `http://` nodes.
    pub(crate) pool: IdlePool<TcpStream>,
    /// Connects as the deliverer does: where the endpoint policy allows,
    /// within its connect timeout.
    connector: PolicyConnector,
    /// The largest reply body accepted from a node.
    pub(crate) max_reply_body: usize,
    /// The pool's settings, for pools of the listener's own.
    pub(crate) max_idle_per_host: usize,
    pub(crate) pool_idle_timeout: Duration,
}

impl PassNodes {
    /// A new connection to the node at `authority` (`host:port`), at an
    /// address `policy` allows, exactly as the deliverer connects; any
    /// failure means nothing was sent.
    pub(crate) async fn connect(
        &self,
        authority: &str,
        policy: &Arc<EndpointPolicy>,
    ) -> Result<TcpStream, String> {
        let uri: Uri = format!("http://{authority}/")
            .parse()
            .map_err(|e| format!("bad node address {authority:?}: {e}"))?;
        self.connector
            .connect(Arc::clone(policy), uri)
            .await
            .map(TokioIo::into_inner)
            .map_err(|e| error_chain(e.as_ref()))
    }

    /// The same settings with a pool of their own.
    pub(crate) fn own_pool(&self) -> PassNodes {
        PassNodes {
            pool: IdlePool::new(self.max_idle_per_host, self.pool_idle_timeout),
            ..self.clone()
        }
    }
}

impl std::fmt::Debug for HttpDelivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpDelivery")
            .field("max_reply_body", &self.max_reply_body)
            .finish_non_exhaustive()
    }
}

impl Default for HttpDelivery {
    fn default() -> Self {
        HttpDelivery::with_config(HttpDeliveryConfig::default())
    }
}

impl HttpDelivery {
    /// A deliverer with the given connection settings.
    pub fn with_config(config: HttpDeliveryConfig) -> Self {
        let http = PolicyConnector {
            connect_timeout: config.connect_timeout,
        };
        let builder = hyper_rustls::HttpsConnectorBuilder::new();
        let builder = match &config.tls {
            Some(tls) => {
                let mut tls = rustls::ClientConfig::clone(tls);
                // The connector sets ALPN itself from the enabled versions.
                tls.alpn_protocols.clear();
                builder.with_tls_config(tls)
            }
            None => builder
                .with_provider_and_webpki_roots(ring_provider())
                // Infallible: the ring provider supports TLS 1.2 and 1.3,
                // the safe default versions, on every platform.
                .expect("the ring provider supports the default TLS versions"),
        };
        let connector = builder
            // `http://` nodes go to the plain pool, never through here.
            .https_only()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http.clone());
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(config.pool_idle_timeout)
            .pool_max_idle_per_host(config.max_idle_per_host)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(connector);
        HttpDelivery {
            client,
            plain: Http1Pool::new(config.max_idle_per_host, config.pool_idle_timeout),
            raw: IdlePool::new(config.max_idle_per_host, config.pool_idle_timeout),
            connector: http,
            max_reply_body: config.max_reply_body,
            max_idle_per_host: config.max_idle_per_host,
            pool_idle_timeout: config.pool_idle_timeout,
        }
    }

    /// What the listener's pass-through needs to make this deliverer's
    /// `http://` deliveries itself.
    pub(crate) fn pass_nodes(&self) -> PassNodes {
        PassNodes {
            pool: self.raw.clone(),
            connector: self.connector.clone(),
            max_reply_body: self.max_reply_body,
            max_idle_per_host: self.max_idle_per_host,
            pool_idle_timeout: self.pool_idle_timeout,
        }
    }

    fn request(
        &self,
        base: &str,
        envelope: &Envelope,
        cx: &RequestContext,
    ) -> Result<Request<Full<Bytes>>, String> {
        let deadline: Deadline = cx.deadline;
        let path = &envelope.path_and_query;
        let uri = if path.starts_with('/') {
            format!("{base}{path}")
        } else {
            format!("{base}/{path}")
        };
        let uri: Uri = uri.parse().map_err(|e| format!("bad url {uri:?}: {e}"))?;
        // The same for every node of a broadcast: built once, then copied.
        let headers = match cx.shared(|| node_headers(envelope, deadline, cx)) {
            Some(shared) => HeaderMap::clone(shared.as_ref().as_ref()?),
            None => node_headers(envelope, deadline, cx)?,
        };
        let mut request = Request::builder()
            .method(envelope.method.clone())
            .uri(uri)
            .body(Full::new(envelope.body.clone()))
            .map_err(|e| e.to_string())?;
        *request.headers_mut() = headers;
        Ok(request)
    }
}

/// The head of the request a node receives, but for its address: what the
/// caller sent that travels, and the mediator's own headers.
fn node_headers(
    envelope: &Envelope,
    deadline: Deadline,
    cx: &RequestContext,
) -> Result<HeaderMap, String> {
    // Room for the mediator's six headers and the `host` of HTTP/1.1.
    let mut headers = forwardable_with_room(&envelope.headers, 7);
    headers.insert(X_MEDIATOR, HeaderValue::from_static("true"));
    if let Some(from) = &envelope.from {
        headers.insert(X_MEDIATOR_FROM, header_value(&from.to_string())?);
    }
    headers.insert(
        X_MEDIATOR_TARGET,
        header_value(&envelope.target.to_string())?,
    );
    headers.insert(
        X_MEDIATOR_DEADLINE,
        HeaderValue::from(deadline.wall().as_millis()),
    );
    // The trace ids travel with the request whichever transport it came
    // in on; ids the caller sent as headers are already in `headers`.
    for (name, value) in [
        (X_REQUEST_ID, &cx.trace.request_id),
        (TRACEPARENT, &cx.trace.traceparent),
    ] {
        if let Some(value) = value {
            if !headers.contains_key(&name) {
                headers.insert(name, header_value(value)?);
            }
        }
    }
    Ok(headers)
}

type BoxError = Box<dyn StdError + Send + Sync>;

tokio::task_local! {
    /// The endpoint policy of the delivery under way, for the connector:
    /// hyper's client calls its connector with the address alone, from
    /// within the delivery's own task.
    static ENDPOINTS: Arc<EndpointPolicy>;
}

/// Connects as hyper-util's `HttpConnector` does, to the addresses the
/// endpoint policy of the delivery under way allows only (none when there
/// is none: it fails closed). Built per new connection (pooled ones are
/// reused without it), since the policy's rule on the mediator's own
/// address needs the port, which hyper's resolvers are not told.
#[derive(Clone)]
struct PolicyConnector {
    connect_timeout: Duration,
}

impl Service<Uri> for PolicyConnector {
    type Response = TokioIo<TcpStream>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        match ENDPOINTS.try_with(Arc::clone) {
            Ok(policy) => self.connect(policy, uri),
            Err(_) => Box::pin(std::future::ready(Err(
                "no endpoint policy for this connection: connections are opened only for a delivery"
                    .into(),
            ))),
        }
    }
}

impl PolicyConnector {
    /// A connection to `uri`, at an address `policy` allows.
    fn connect(
        &self,
        policy: Arc<EndpointPolicy>,
        uri: Uri,
    ) -> Pin<Box<dyn Future<Output = Result<TokioIo<TcpStream>, BoxError>> + Send>> {
        let https = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let host = uri.host().unwrap_or_default();
        // IP literals never reach the resolver, so they are judged here: a
        // registration from another instance, or one made before a rule
        // changed, is held to today's rules too.
        if let Ok(ip) = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        {
            if let Some(rule) = policy.refusal(SocketAddr::new(ip, port)) {
                tracing::warn!(%ip, port, %rule, "delivery refused by the endpoint policy");
                return Box::pin(std::future::ready(Err(format!("{ip}: {rule}").into())));
            }
        }
        let mut http = HttpConnector::new_with_resolver(PolicyResolver {
            policy,
            port,
            gai: GaiResolver::new(),
        });
        // The TLS layer wraps this connector, so it must accept https URLs.
        http.enforce_http(false);
        http.set_connect_timeout(Some(self.connect_timeout));
        http.set_nodelay(true);
        Box::pin(async move { http.call(uri).await.map_err(BoxError::from) })
    }
}

/// Resolves host names with the system resolver and keeps only the
/// addresses the endpoint policy allows at `port`.
#[derive(Clone)]
struct PolicyResolver {
    policy: Arc<EndpointPolicy>,
    port: u16,
    gai: GaiResolver,
}

impl Service<Name> for PolicyResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.gai.poll_ready(cx)
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let (policy, port) = (Arc::clone(&self.policy), self.port);
        let host = name.as_str().to_owned();
        let resolving = self.gai.call(name);
        Box::pin(async move {
            let mut allowed = Vec::new();
            let mut refused = Vec::new();
            for mut addr in resolving.await? {
                addr.set_port(port);
                match policy.refusal(addr) {
                    None => allowed.push(addr),
                    Some(rule) => refused.push(format!("{} {rule}", addr.ip())),
                }
            }
            if allowed.is_empty() && !refused.is_empty() {
                let refused = refused.join("; ");
                tracing::warn!(%host, port, %refused, "delivery refused by the endpoint policy");
                return Err(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    format!(
                        "{host} resolves only to addresses the mediator may not call: {refused}"
                    ),
                ));
            }
            if !refused.is_empty() {
                tracing::debug!(%host, refused = %refused.join("; "), "resolved addresses dropped by the endpoint policy");
            }
            Ok(allowed.into_iter())
        })
    }
}

fn header_value(text: &str) -> Result<HeaderValue, String> {
    HeaderValue::from_str(text).map_err(|e| format!("bad header value {text:?}: {e}"))
}

#[async_trait]
impl Deliver for HttpDelivery {
    /// `http` and `https`.
    fn schemes(&self) -> Vec<String> {
        vec!["http".to_owned(), "https".to_owned()]
    }

    /// Itself: the listener's pass-through makes its `http://` deliveries
    /// with its settings and connections.
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }

    async fn deliver(
        &self,
        node: &Node,
        envelope: &Envelope,
        cx: &RequestContext,
    ) -> Result<Reply, DeliverError> {
        let unreachable = DeliverError::unreachable;
        let failed = DeliverError::failed;
        let Some(base) = node.endpoint.url() else {
            return Err(unreachable(format!(
                "{} is not an http endpoint",
                node.endpoint
            )));
        };
        let request = self.request(base, envelope, cx).map_err(unreachable)?;
        let max = self.max_reply_body;
        // Any connection this delivery opens is judged by its policy.
        let endpoints = Arc::clone(&cx.endpoints);
        if request.uri().scheme() == Some(&http::uri::Scheme::HTTP) {
            return self.deliver_plain(request, endpoints).await;
        }
        let sent = ENDPOINTS.scope(endpoints, self.client.request(request));
        let response = sent.await.map_err(|e| {
            if e.is_connect() {
                unreachable(error_chain(&e))
            } else {
                failed(error_chain(&e))
            }
        })?;
        read_reply(response, max).await.map_err(failed)
    }
}

impl HttpDelivery {
    /// Delivers over a pooled plain HTTP/1.1 connection, opening one when
    /// none is idle; a request a pooled connection refused unsent (the node
    /// had closed it) goes once more on a new one.
    async fn deliver_plain(
        &self,
        request: Request<Full<Bytes>>,
        endpoints: Arc<EndpointPolicy>,
    ) -> Result<Reply, DeliverError> {
        let uri = request.uri().clone();
        let Some(host) = uri.authority().map(|a| a.as_str()) else {
            return Err(DeliverError::unreachable(format!("no host in {uri}")));
        };
        let mut request = origin_form(request, host)?;
        let max = self.max_reply_body;
        let mut pooled = self.plain.take(host);
        loop {
            let reused = pooled.is_some();
            let mut conn = match pooled.take() {
                Some(conn) => conn,
                None => self.connect_plain(&uri, &endpoints).await?,
            };
            match conn.exchange(request, |r| read_reply(r, max)).await {
                Ok(reply) => {
                    self.plain.put(host, conn);
                    return Ok(reply);
                }
                Err(Refused::NotSent(unsent, e)) if reused => {
                    tracing::debug!(%host, error = %e, "pooled connection closed; sending on a new one");
                    request = *unsent;
                }
                Err(Refused::NotSent(_, e)) => {
                    return Err(DeliverError::unreachable(error_chain(&e)))
                }
                Err(Refused::Hyper(e)) => return Err(DeliverError::failed(error_chain(&e))),
                Err(Refused::Failed(message)) => return Err(DeliverError::failed(message)),
            }
        }
    }

    /// A new connection to the node at `uri`, where the endpoint policy
    /// allows it; any failure is unreachable (nothing was sent).
    async fn connect_plain(
        &self,
        uri: &Uri,
        endpoints: &Arc<EndpointPolicy>,
    ) -> Result<Http1Conn, DeliverError> {
        let io = self
            .connector
            .connect(Arc::clone(endpoints), uri.clone())
            .await
            .map_err(|e| DeliverError::unreachable(error_chain(e.as_ref())))?;
        Http1Conn::handshake(io)
            .await
            .map_err(|e| DeliverError::unreachable(error_chain(&e)))
    }
}

/// `request` as HTTP/1.1 sends it on a connection of its own: the path and
/// query as its target, and the node's address in `Host`.
fn origin_form(
    mut request: Request<Full<Bytes>>,
    host: &str,
) -> Result<Request<Full<Bytes>>, DeliverError> {
    // The absolute URI's own path and query, without parsing them again.
    let mut parts = std::mem::take(request.uri_mut()).into_parts();
    parts.scheme = None;
    parts.authority = None;
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
    }
    *request.uri_mut() = Uri::from_parts(parts)
        .map_err(|e| DeliverError::unreachable(format!("bad request target: {e}")))?;
    let host = HeaderValue::from_str(host)
        .map_err(|e| DeliverError::unreachable(format!("bad host {host:?}: {e}")))?;
    request.headers_mut().insert(http::header::HOST, host);
    Ok(request)
}

/// A node's response read into a [`Reply`]: its body up to `max` bytes
/// ("reply too large" past it, announced or not), hop-by-hop headers
/// dropped.
async fn read_reply<B>(response: http::Response<B>, max: usize) -> Result<Reply, String>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let (mut parts, body) = response.into_parts();
    let too_large = || format!("reply too large (over {max} bytes)");
    let announced = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|len| len > max as u64) {
        return Err(too_large());
    }
    let body = Limited::new(body, max)
        .collect()
        .await
        .map_err(|e| {
            if e.downcast_ref::<LengthLimitError>().is_some() {
                too_large()
            } else {
                format!("reading the reply: {}", error_chain(e.as_ref()))
            }
        })?
        .to_bytes();
    strip_hop_by_hop(&mut parts.headers);
    Ok(Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}

/// The rustls provider every TLS configuration of this crate builds on:
/// *ring*'s, the one backend the workspace compiles (no aws-lc).
///
/// rustls 0.23.48 deprecates `ring::default_provider` because *ring* has no
/// post-quantum key exchange; *ring* stays the chosen backend, so the
/// deprecation is acknowledged here, once, rather than warned about at
/// every build of a dependent crate.
#[allow(deprecated)]
pub(crate) fn ring_provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}
