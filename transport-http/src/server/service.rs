//! The HTTP API as a tower [`Service`], for the listener and for servers of
//! the user's own.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use mediator_core::policy::IpNetwork;
use mediator_core::Mediator;
use tower_service::Service;

#[cfg(feature = "console")]
use super::console::{ConsoleCx, Sessions};
use super::metrics::{Metrics, MetricsAccess};
use super::routes;
use super::throttle::LoginThrottle;

/// The error type of bodies the service accepts and returns.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The mediator's HTTP API (every route in the [module
/// docs](crate::server) but the console's, which [`console`](Self::console)
/// serves apart) as a [`tower_service::Service`], so it can be
/// served by [`HttpListener`](super::HttpListener) or mounted in a hyper or
/// axum server of your own.
///
/// It accepts any request body that yields [`Bytes`] (hyper's `Incoming`,
/// axum's `Body`, `Full`, ...), never fails as a service (every refusal is
/// an HTTP answer with a JSON error body), and is always ready. Clones share
/// one set of request counters, the ones `GET /metrics` shows; two services
/// made with [`new`](Self::new) count apart.
///
/// # Paths
///
/// The service routes on the request's path as it receives it: `/healthz`,
/// `/one/users/api/lookup`, `/` for the console service. Mounted under a prefix,
/// the server in front must strip it, as axum's
/// `Router::nest_service("/mediator", service)` does (a request for
/// `/mediator/healthz` reaches the service as `/healthz`, and one for
/// `/mediator` as `/`); with `Router::fallback_service(service)` nothing is
/// stripped and the routes sit at the root. The path forwarded to a node is
/// the part after the target (`/lookup` above), whatever the prefix.
///
/// # The caller's address
///
/// When a request carries a [`RemoteAddr`] extension, the service records
/// it in the request's log line and span as `remote`; the listener inserts
/// one for every request. Nothing else depends on it: a request without one
/// is answered the same, only logged without an address.
///
/// # Example
///
/// Calling the service in process, as a test would:
///
/// ```
/// use bytes::Bytes;
/// use http_body_util::{BodyExt, Empty};
/// use mediator_core::{Authenticator, Mediator, MemoryRegistry};
/// use mediator_transport_http::MediatorService;
/// use tower_service::Service;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
/// let mediator = Mediator::builder()
///     .registry(MemoryRegistry::new())
///     .authenticator(Authenticator::hs256("a secret of at least 32 bytes!!!"))
///     .build()?;
/// let mut service = MediatorService::new(mediator);
///
/// let request = http::Request::get("/healthz").body(Empty::<Bytes>::new())?;
/// let response = service.call(request).await?;
/// assert_eq!(response.status(), 200);
/// let body = response.into_body().collect().await?.to_bytes();
/// assert_eq!(body, r#"{"ok":true}"#);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct MediatorService {
    shared: Arc<Shared>,
    metrics_access: MetricsAccess,
    secure_cookies: bool,
    front: Front,
}

/// Which of the mediator's faces a service shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Surface {
    /// The API, probes and metrics: what nodes and callers use.
    Api,
    /// The operator's console, and `/healthz`.
    #[cfg_attr(not(feature = "console"), allow(dead_code))]
    Console,
    /// `/metrics` and `/healthz`.
    Metrics,
}

/// What a service knows of where it is served: which face it shows, and
/// which peers are proxies whose `X-Forwarded-For` it believes.
#[derive(Clone, Debug)]
pub(crate) struct Front {
    pub(crate) surface: Surface,
    pub(crate) trusted_proxies: Arc<[IpNetwork]>,
}

impl Front {
    /// The client a request came from: the peer, or, when the peer is a
    /// trusted proxy, the last address in `X-Forwarded-For` that is not
    /// one (the proxies append; what a client wrote itself stands before
    /// them and is never believed).
    pub(crate) fn client(&self, peer: SocketAddr, headers: &http::HeaderMap) -> SocketAddr {
        let trusted = |ip: IpAddr| self.trusted_proxies.iter().any(|n| n.contains(ip));
        if self.trusted_proxies.is_empty() || !trusted(peer.ip()) {
            return peer;
        }
        let forwarded = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect::<Vec<_>>();
        for hop in forwarded.iter().rev() {
            match hop.parse::<IpAddr>() {
                Ok(ip) if trusted(ip) => continue,
                Ok(ip) => return SocketAddr::new(ip, 0),
                // A hop no proxy of ours wrote: the chain cannot be
                // followed past it, so the nearest proxy is the client.
                Err(_) => return peer,
            }
        }
        peer
    }
}

struct Shared {
    mediator: Mediator,
    metrics: Metrics,
    logins: LoginThrottle,
    #[cfg(feature = "console")]
    sessions: Sessions,
}

impl Shared {
    #[cfg(feature = "console")]
    fn console(&self, secure: bool) -> ConsoleCx<'_> {
        ConsoleCx {
            sessions: &self.sessions,
            logins: &self.logins,
            secure,
        }
    }
}

impl MediatorService {
    /// The HTTP API of `mediator`, with counters of its own.
    pub fn new(mediator: Mediator) -> Self {
        // Calls are counted by the core: their routes show from the first
        // scrape, as this service's own do.
        mediator
            .transport_stats()
            .declare("http", &["one", "any", "many"]);
        MediatorService {
            shared: Arc::new(Shared {
                mediator,
                metrics: Metrics::default(),
                logins: LoginThrottle::default(),
                #[cfg(feature = "console")]
                sessions: Sessions::default(),
            }),
            metrics_access: MetricsAccess::default(),
            secure_cookies: false,
            front: Front {
                surface: Surface::Api,
                trusted_proxies: Arc::from(Vec::new()),
            },
        }
    }

    /// The operator's console (`/`, `/console/...`, and `/healthz`) as a
    /// service of its own, sharing this one's sessions, login backoff and
    /// settings, to be served on a listener of its own.
    ///
    /// The API service answers `404` for the console's paths: a node's
    /// reply is served on the API's origin, so the console must live on
    /// another one (another port or host) for no node's page, script or
    /// cookie ever to act as the console.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use http_body_util::Empty;
    /// use mediator_core::{Authenticator, Mediator, MemoryRegistry};
    /// use mediator_transport_http::MediatorService;
    /// use tower_service::Service;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    /// let mediator = Mediator::builder()
    ///     .registry(MemoryRegistry::new())
    ///     .authenticator(Authenticator::hs256("a secret of at least 32 bytes!!!"))
    ///     .build()?;
    /// let mut api = MediatorService::new(mediator);
    /// let mut console = api.console();
    ///
    /// let page = || http::Request::get("/").body(Empty::<Bytes>::new());
    /// assert_eq!(api.call(page()?).await?.status(), 404);
    /// // The sign-in page, until someone signs in.
    /// assert_eq!(console.call(page()?).await?.status(), 401);
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "console")]
    pub fn console(&self) -> MediatorService {
        let mut console = self.clone();
        console.front.surface = Surface::Console;
        console
    }

    /// `GET /metrics` (and `/healthz`) as a service of its own, sharing
    /// this one's counts and [`MetricsAccess`], for a scraper on a listener
    /// apart from the nodes' (every other path is `404`). The API service
    /// answers `/metrics` too.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use http_body_util::Empty;
    /// use mediator_core::{Authenticator, Mediator, MemoryRegistry};
    /// use mediator_transport_http::MediatorService;
    /// use tower_service::Service;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    /// let mediator = Mediator::builder()
    ///     .registry(MemoryRegistry::new())
    ///     .authenticator(Authenticator::hs256("a secret of at least 32 bytes!!!"))
    ///     .build()?;
    /// let mut metrics = MediatorService::new(mediator).metrics();
    /// let get = |path| http::Request::get(path).body(Empty::<Bytes>::new());
    /// assert_eq!(metrics.call(get("/metrics")?).await?.status(), 200);
    /// assert_eq!(metrics.call(get("/register")?).await?.status(), 404);
    /// # Ok(()) }
    /// ```
    pub fn metrics(&self) -> MediatorService {
        let mut metrics = self.clone();
        metrics.front.surface = Surface::Metrics;
        metrics
    }

    /// Peers whose `X-Forwarded-For` is believed (default none): a request
    /// from one of these networks is taken to come from the last address
    /// the header names that is not itself a trusted proxy, for the login
    /// backoff and the request line. Without it, every client behind a
    /// proxy shares the proxy's address, and five bad logins through it
    /// would lock the right password out for everyone.
    pub fn trusted_proxies(mut self, networks: impl IntoIterator<Item = IpNetwork>) -> Self {
        self.front.trusted_proxies = networks.into_iter().collect();
        self
    }

    /// Whether the service is reached over HTTPS: the console's session
    /// cookie is then marked `Secure` (sent only over HTTPS) and every
    /// answer carries `Strict-Transport-Security` (a year), so a browser
    /// never falls back to clear HTTP for the hub. [`HttpListener`](super::HttpListener)
    /// turns it on when it serves TLS; turn it on yourself when your own
    /// server puts TLS in front of this service.
    pub fn secure_cookies(mut self, secure: bool) -> Self {
        self.secure_cookies = secure;
        self
    }

    /// Who may read `GET /metrics` (default [`MetricsAccess::Open`]).
    pub fn metrics_access(mut self, access: MetricsAccess) -> Self {
        self.metrics_access = access;
        self
    }

    /// Whether this service answers the calls of its API (`/one`, `/any`)
    /// with nothing of its own around them: the API surface, the peer's
    /// own address as the caller's. Only then may a listener serve them on
    /// its pass-through.
    pub(crate) fn answers_calls_plainly(&self) -> bool {
        self.front.surface == Surface::Api && self.front.trusted_proxies.is_empty()
    }

    /// The mediator this service answers for.
    pub fn mediator(&self) -> &Mediator {
        &self.shared.mediator
    }

    /// Answers one request: what [`Service::call`] does, as a future the
    /// caller owns. The listener polls it in place, where `call` has to box
    /// it (tower names its future type), which costs an allocation of the
    /// whole request's state on every request.
    pub(crate) async fn answer<B>(&self, request: Request<B>) -> Response<ResponseBody>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let cx = routes::ServiceCx {
            mediator: &self.shared.mediator,
            metrics: &self.shared.metrics,
            logins: &self.shared.logins,
            secure: self.secure_cookies,
            #[cfg(feature = "console")]
            console: self.shared.console(self.secure_cookies),
            access: self.metrics_access,
            front: &self.front,
        };
        routes::handle(&cx, request).await.map(ResponseBody)
    }
}

impl From<Mediator> for MediatorService {
    fn from(mediator: Mediator) -> Self {
        MediatorService::new(mediator)
    }
}

impl fmt::Debug for MediatorService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MediatorService")
            .field("mediator", &self.shared.mediator)
            .finish_non_exhaustive()
    }
}

impl<B> Service<Request<B>> for MediatorService
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // No back-pressure of its own: limits apply per request (body size,
        // deadline), and the server in front bounds connections.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let shared = Arc::clone(&self.shared);
        let access = self.metrics_access;
        let secure = self.secure_cookies;
        let front = self.front.clone();
        ResponseFuture(Box::pin(async move {
            let cx = routes::ServiceCx {
                mediator: &shared.mediator,
                metrics: &shared.metrics,
                logins: &shared.logins,
                secure,
                #[cfg(feature = "console")]
                console: shared.console(secure),
                access,
                front: &front,
            };
            let response = routes::handle(&cx, request).await;
            Ok(response.map(ResponseBody))
        }))
    }
}

/// The future of a [`MediatorService`] call.
pub struct ResponseFuture(
    Pin<Box<dyn Future<Output = Result<Response<ResponseBody>, Infallible>> + Send>>,
);

impl Future for ResponseFuture {
    type Output = Result<Response<ResponseBody>, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.0.as_mut().poll(cx)
    }
}

impl fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

/// The body of a [`MediatorService`] answer.
///
/// Its error type is boxed so that answers streamed from nodes can fail
/// mid-way in a later version without changing this type; today every
/// answer is in memory and never fails.
#[derive(Debug)]
pub struct ResponseBody(Full<Bytes>);

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.0)
            .poll_frame(cx)
            .map_err(|never| match never {})
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.0.size_hint()
    }
}

/// The address of the peer that sent a request, as a request extension.
///
/// [`HttpListener`](super::HttpListener) inserts it into every request it
/// hands to [`MediatorService`], which logs it as `remote`. A server of
/// your own may insert it too (for instance from axum's `ConnectInfo`);
/// without it requests are answered the same.
///
/// ```
/// use mediator_transport_http::server::RemoteAddr;
///
/// let peer: std::net::SocketAddr = "127.0.0.1:40000".parse()?;
/// let mut request = http::Request::new(());
/// request.extensions_mut().insert(RemoteAddr(peer));
/// # Ok::<(), std::net::AddrParseError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RemoteAddr(pub SocketAddr);
