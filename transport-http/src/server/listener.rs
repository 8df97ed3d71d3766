//! [`HttpListener`]: the accept loop that serves a [`MediatorService`], or
//! any tower service composed around it, on a TCP port, with TLS, both HTTP
//! versions, client timeouts and a graceful drain.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::{Request, Response};
use http_body::Body;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use mediator_core::Mediator;
use tower_service::Service;

use super::pass;
use super::service::{BoxError, MediatorService, RemoteAddr, ResponseBody};
use super::tls::TlsConfig;
use crate::deliver::HttpDelivery;
use crate::error::HttpError;

/// Serves a [`Mediator`](mediator_core::Mediator)'s HTTP API on one TCP
/// port: HTTP/1.1 and HTTP/2 (prior knowledge in clear text, ALPN over TLS).
///
/// Each connection is answered by one [`MediatorService`] (the listener's,
/// or the one handed to [`serve`](Self::serve)), with the peer's address
/// in a [`RemoteAddr`] extension of every request; the listener adds what
/// the service leaves to its server: TLS, client timeouts, graceful drain.
///
/// ```no_run
/// use mediator_core::{Authenticator, Mediator, MemoryRegistry};
/// use mediator_transport_http::{HttpDelivery, HttpListener, TlsConfig};
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let mediator = Mediator::builder()
///     .registry(MemoryRegistry::new())
///     .authenticator(Authenticator::hs256(std::env::var("SECRET")?))
///     .deliver(HttpDelivery::default())
///     .build()?;
/// let _maintenance = mediator.spawn_maintenance();
/// HttpListener::bind("0.0.0.0:8443")
///     .await?
///     .tls(TlsConfig::from_pem_files("cert.pem", "key.pem")?)
///     .serve_with_shutdown(mediator, async {
///         let _ = tokio::signal::ctrl_c().await;
///     })
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct HttpListener {
    listener: TcpListener,
    local_addr: SocketAddr,
    tls: Option<TlsConfig>,
    drain: Duration,
    handshake_timeout: Duration,
    header_read_timeout: Duration,
    idle_timeout: Duration,
    max_connections: usize,
    pass_through: bool,
    cores: usize,
}

impl HttpListener {
    /// Binds a TCP listener (`127.0.0.1:0` picks a free port; see
    /// [`local_addr`](Self::local_addr)).
    pub async fn bind(addr: impl ToSocketAddrs) -> Result<Self, HttpError> {
        Self::from_tcp(TcpListener::bind(addr).await?)
    }

    /// Serves on a listener bound elsewhere (socket activation, tests).
    pub fn from_tcp(listener: TcpListener) -> Result<Self, HttpError> {
        let local_addr = listener.local_addr()?;
        Ok(HttpListener {
            listener,
            local_addr,
            tls: None,
            drain: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: 10_000,
            pass_through: true,
            cores: std::thread::available_parallelism().map_or(1, usize::from),
        })
    }

    /// Serves HTTPS with this certificate instead of clear HTTP.
    pub fn tls(mut self, tls: TlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// How long a graceful shutdown waits for requests in flight before it
    /// closes their connections (default 30 s).
    pub fn drain_timeout(mut self, drain: Duration) -> Self {
        self.drain = drain;
        self
    }

    /// How long a client may take over its TLS handshake (default 10 s) and
    /// over sending a request's head (default 30 s), so idle or slow clients
    /// cannot hold connections for ever. The head's time runs from its first
    /// byte, and for a connection's first request from the moment it was
    /// accepted, so a client that sends nothing at all is closed too; bytes
    /// that never make a request (an HTTP/2 preface alone) count the same.
    pub fn client_timeouts(mut self, handshake: Duration, header_read: Duration) -> Self {
        self.handshake_timeout = handshake;
        self.header_read_timeout = header_read;
        self
    }

    /// How long a connection may stay silent, with no request in flight,
    /// before it is closed (default 60 s): a keep-alive HTTP/1.1 connection
    /// between requests, an HTTP/2 connection with no open stream (one that
    /// only sent the preface included), or one that never sent a byte.
    pub fn idle_timeout(mut self, idle: Duration) -> Self {
        self.idle_timeout = idle;
        self
    }

    /// How many connections may be open at once (default 10 000). Past it a
    /// new connection is answered `503` (in clear text; closed at once over
    /// TLS) and closed, and the refusals are logged once per burst, so that
    /// a flood can neither exhaust file descriptors nor fill the log.
    pub fn max_connections(mut self, max: usize) -> Self {
        self.max_connections = max.max(1);
        self
    }

    /// Whether HTTP/1.1 calls to `http://` nodes take the pass-through
    /// (default `true`): their heads read on the raw bytes and copied to a
    /// node connection with the mediator's checks, instead of being built
    /// into requests by hyper's server and client. Everything else
    /// (TLS, HTTP/2, other routes, bodies not framed by one
    /// `Content-Length`, and every refusal) is served by hyper either way,
    /// and so is everything when the listener serves a service of your own
    /// ([`serve_service_with_shutdown`](Self::serve_service_with_shutdown)),
    /// the console or the metrics, or trusts proxies. Both paths run the
    /// core's one request lifecycle; `false` sends every call through
    /// hyper.
    pub fn pass_through(mut self, on: bool) -> Self {
        self.pass_through = on;
        self
    }

    /// On how many threads of their own the pass-through's connections
    /// are served (default: one per core the process may use). Each is a
    /// single-threaded runtime with its own pool of node connections: a
    /// connection and its node connections stay on one thread, with no
    /// lock and no wake-up across threads on the way. Connections are
    /// dealt to them in turn as they are accepted. `0` serves them on the
    /// runtime the listener runs on, as every other connection is.
    pub fn pass_through_threads(mut self, threads: usize) -> Self {
        self.cores = threads;
        self
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves `mediator` (a [`Mediator`](mediator_core::Mediator), or a
    /// [`MediatorService`] whose counters are shared elsewhere) until the
    /// process ends. Failed connections and accept errors are logged and do
    /// not stop the listener.
    pub async fn serve(self, mediator: impl Into<MediatorService>) -> Result<(), HttpError> {
        self.serve_with_shutdown(mediator, std::future::pending())
            .await
    }

    /// Serves `mediator` until `signal` completes, then shuts down
    /// gracefully: stops accepting, lets requests in flight finish (idle
    /// keep-alive connections are closed, HTTP/2 clients get a GOAWAY), and
    /// after the [drain timeout](Self::drain_timeout) closes whatever is
    /// left. Returns once every connection is closed.
    pub async fn serve_with_shutdown(
        self,
        mediator: impl Into<MediatorService>,
        signal: impl Future<Output = ()> + Send,
    ) -> Result<(), HttpError> {
        let service = mediator.into();
        let own = service.mediator().clone();
        let service = if self.tls.is_some() {
            service.secure_cookies(true)
        } else {
            service
        };
        self.run(&own, service, signal).await
    }

    /// Serves any tower [`Service`] (a [`MediatorService`] under layers of
    /// your own, the API and the console mounted side by side in a router,
    /// a service of yours in front of the mediator's) until `signal`
    /// completes, with the listener's TLS, client timeouts, connection cap
    /// and drain, as [`serve_with_shutdown`](Self::serve_with_shutdown)
    /// does. Every request goes through the service's
    /// [`poll_ready`](Service::poll_ready) and [`call`](Service::call),
    /// so its layers run; each carries the peer's [`RemoteAddr`].
    ///
    /// `mediator` is the one the service answers for: the listener's own
    /// address is added to its endpoint policy, so that no node registers
    /// the mediator itself (a loop). Over TLS, turn on
    /// [`MediatorService::secure_cookies`] yourself.
    ///
    /// ```no_run
    /// use std::convert::Infallible;
    /// use mediator_core::{Authenticator, Mediator, MemoryRegistry};
    /// use mediator_transport_http::{HttpListener, MediatorService};
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let mediator = Mediator::builder()
    ///     .registry(MemoryRegistry::new())
    ///     .authenticator(Authenticator::hs256(std::env::var("SECRET")?))
    ///     .build()?;
    /// // Any tower layer fits here; this one counts nothing, it only shows the seam.
    /// let service = MediatorService::new(mediator.clone());
    /// HttpListener::bind("127.0.0.1:8080")
    ///     .await?
    ///     .serve_service_with_shutdown(&mediator, service, std::future::pending())
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn serve_service_with_shutdown<S, B>(
        self,
        mediator: &Mediator,
        service: S,
        signal: impl Future<Output = ()> + Send,
    ) -> Result<(), HttpError>
    where
        S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + Sync + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        self.run(mediator, Layered(service), signal).await
    }

    async fn run<A: Answers>(
        self,
        mediator: &Mediator,
        service: A,
        signal: impl Future<Output = ()> + Send,
    ) -> Result<(), HttpError> {
        let HttpListener {
            listener,
            local_addr,
            tls,
            drain,
            handshake_timeout,
            header_read_timeout,
            idle_timeout,
            max_connections,
            pass_through,
            cores,
        } = self;
        // Clear text only: over TLS hyper reads every byte.
        let passes = service
            .passes()
            .filter(|_| pass_through && tls.is_none())
            .and_then(pass_through_for);
        // The threads the pass-through's connections are served on, each
        // with the pass-through's own pool of node connections.
        let threads = match &passes {
            Some(through) if cores > 0 => Threads::start(cores, through)?,
            _ => Threads::default(),
        };
        // A node registered at the mediator's own address would make every
        // call to it a call to the mediator, in a loop.
        mediator.endpoint_policy().add_own_address(local_addr);
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(header_read_timeout)
            .keep_alive(true);
        builder.http2().timer(TokioTimer::new());
        let acceptor = tls.map(|t| TlsAcceptor::from(t.server));
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut connections = JoinSet::new();
        tracing::info!(
            addr = %local_addr,
            tls = acceptor.is_some(),
            "mediator http listener serving"
        );
        let mut signal = std::pin::pin!(signal);
        let mut refusing = false;
        let mut refusals = JoinSet::new();
        loop {
            tokio::select! {
                biased;
                () = &mut signal => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, remote)) if connections.len() >= max_connections => {
                        if !refusing {
                            tracing::warn!(
                                max = max_connections,
                                %remote,
                                "connection limit reached: refusing new connections"
                            );
                            refusing = true;
                        }
                        // Bounded too: a flood of refusals must not pile up.
                        if refusals.len() < max_connections {
                            refusals.spawn(refuse(stream, acceptor.is_none()));
                        }
                    }
                    Ok((stream, remote)) => {
                        if refusing {
                            tracing::info!(open = connections.len(), "accepting connections again");
                            refusing = false;
                        }
                        let limits = ConnectionLimits {
                            handshake: handshake_timeout,
                            idle: idle_timeout,
                            header_read: header_read_timeout,
                        };
                        match threads.next() {
                            Some((handle, through)) => match stream.into_std() {
                                Ok(stream) => {
                                    let task = on_thread(
                                        stream,
                                        remote,
                                        limits,
                                        builder.clone(),
                                        service.clone(),
                                        stop_rx.clone(),
                                        through.clone(),
                                    );
                                    connections.spawn_on(task, handle);
                                }
                                Err(e) => {
                                    tracing::debug!(%remote, error = %e, "could not move a connection to its thread");
                                }
                            },
                            None => {
                                connections.spawn(connection(
                                    stream,
                                    remote,
                                    acceptor.clone(),
                                    limits,
                                    builder.clone(),
                                    service.clone(),
                                    stop_rx.clone(),
                                    passes.clone(),
                                ));
                            }
                        }
                    }
                    Err(e) => {
                        // Usually out of file descriptors: pause so the loop
                        // does not spin, then keep serving those connected.
                        tracing::warn!(error = %e, "accept failed; retrying shortly");
                        tokio::select! {
                            () = &mut signal => break,
                            () = tokio::time::sleep(Duration::from_millis(100)) => {}
                        }
                    }
                },
                Some(joined) = connections.join_next(), if !connections.is_empty() => {
                    log_join(joined);
                }
                Some(_) = refusals.join_next(), if !refusals.is_empty() => {}
            }
        }
        drop(listener);
        tracing::info!(
            addr = %local_addr,
            open = connections.len(),
            "shutting down: draining connections"
        );
        // Receivers gone means every connection already ended.
        let _ = stop_tx.send(true);
        let drained = tokio::time::timeout(drain, async {
            while let Some(joined) = connections.join_next().await {
                log_join(joined);
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                open = connections.len(),
                after = ?drain,
                "drain timeout passed; closing the remaining connections"
            );
            connections.shutdown().await;
        }
        tracing::info!(addr = %local_addr, "mediator http listener stopped");
        Ok(())
    }
}

fn log_join(joined: Result<(), tokio::task::JoinError>) {
    if let Err(e) = joined {
        if e.is_panic() {
            tracing::error!(error = %e, "a connection task panicked");
        }
    }
}

/// The pass-through for `mediator`'s calls, when its `http://` nodes are
/// served by an [`HttpDelivery`] (whose settings and connections the
/// pass-through uses); a deliverer of the user's own keeps every delivery.
fn pass_through_for(mediator: &Mediator) -> Option<pass::Through> {
    let deliverer = mediator.deliverer("http")?;
    let delivery = deliverer.as_any()?.downcast_ref::<HttpDelivery>()?;
    Some(pass::Through {
        mediator: mediator.clone(),
        nodes: delivery.pass_nodes(),
    })
}

/// The threads the pass-through's connections are served on: one
/// single-threaded runtime each, with its own pass-through (and pool of
/// node connections), dealt connections in turn. Dropped, they stop, and
/// whatever still runs on them ends.
#[derive(Default)]
struct Threads {
    each: Vec<(tokio::runtime::Handle, pass::Through)>,
    stops: Vec<tokio::sync::oneshot::Sender<()>>,
    next: std::cell::Cell<usize>,
}

impl Threads {
    /// Starts `count` threads serving `through`'s calls.
    fn start(count: usize, through: &pass::Through) -> Result<Threads, HttpError> {
        let mut threads = Threads::default();
        for index in 0..count {
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let (give, handle) = std::sync::mpsc::channel();
            std::thread::Builder::new()
                .name(format!("mediator-http-{index}"))
                .spawn(move || {
                    let runtime = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(runtime) => runtime,
                        Err(e) => {
                            let _ = give.send(Err(e));
                            return;
                        }
                    };
                    let _ = give.send(Ok(runtime.handle().clone()));
                    runtime.block_on(async {
                        let _ = stopped.await;
                    });
                })?;
            let handle = handle.recv().map_err(|_| {
                HttpError::Io(std::io::Error::other("a listener thread ended at start"))
            })??;
            threads.each.push((handle, through.own_pool()));
            threads.stops.push(stop);
        }
        Ok(threads)
    }

    /// The thread the next connection goes to, if there are any.
    fn next(&self) -> Option<(&tokio::runtime::Handle, &pass::Through)> {
        let at = self.next.get();
        let (handle, through) = self.each.get(at % self.each.len().max(1))?;
        self.next.set(at.wrapping_add(1));
        Some((handle, through))
    }
}

/// Serves a connection accepted elsewhere on the thread this task runs
/// on: its socket moves to this thread's runtime, then the pass-through
/// and hyper behind it serve it as [`connection`] does.
async fn on_thread<A: Answers>(
    stream: std::net::TcpStream,
    remote: SocketAddr,
    limits: ConnectionLimits,
    builder: auto::Builder<TokioExecutor>,
    service: A,
    stop: watch::Receiver<bool>,
    through: pass::Through,
) {
    match TcpStream::from_std(stream) {
        Ok(stream) => {
            connection(
                stream,
                remote,
                None,
                limits,
                builder,
                service,
                stop,
                Some(through),
            )
            .await;
        }
        Err(e) => {
            tracing::debug!(%remote, error = %e, "could not serve a connection on its thread");
        }
    }
}

/// Resolves once the listener is shutting down.
pub(super) async fn stopping(mut stop: watch::Receiver<bool>) {
    loop {
        let stopped = *stop.borrow_and_update();
        if stopped || stop.changed().await.is_err() {
            return;
        }
    }
}

/// The refusal of a connection past the limit: a `503` when the client
/// speaks clear HTTP (whichever version, it reads as an answer to an
/// HTTP/1.1 client and as a protocol error to an HTTP/2 one, either way the
/// end), nothing over TLS, where a clear answer would be garbage.
async fn refuse(mut stream: TcpStream, clear: bool) {
    use tokio::io::AsyncWriteExt;
    if clear {
        const BODY: &str = r#"{"error":"too many connections","kind":"overloaded","fault":"hub"}"#;
        let answer = format!(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
             retry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{BODY}",
            BODY.len()
        );
        let _ =
            tokio::time::timeout(Duration::from_secs(1), stream.write_all(answer.as_bytes())).await;
        let _ = tokio::time::timeout(Duration::from_secs(1), stream.shutdown()).await;
    }
}

/// The time limits of one connection.
#[derive(Debug, Clone, Copy)]
struct ConnectionLimits {
    handshake: Duration,
    idle: Duration,
    header_read: Duration,
}

/// Serves one accepted connection, through TLS when configured, and on
/// the pass-through when `passes` names its mediator.
#[allow(clippy::too_many_arguments)]
async fn connection<A: Answers>(
    mut stream: TcpStream,
    remote: SocketAddr,
    acceptor: Option<TlsAcceptor>,
    limits: ConnectionLimits,
    builder: auto::Builder<TokioExecutor>,
    service: A,
    mut stop: watch::Receiver<bool>,
    passes: Option<pass::Through>,
) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(%remote, error = %e, "could not set TCP_NODELAY");
    }
    match acceptor {
        None => {
            // What the pass-through read before handing the connection over.
            let mut read = BytesMut::new();
            if let Some(through) = passes {
                let timeouts = pass::Timeouts {
                    header_read: limits.header_read,
                    idle: limits.idle,
                };
                match pass::serve(&mut stream, remote, &through, timeouts, &mut stop).await {
                    pass::Left::Closed => return,
                    pass::Left::Handover(bytes) => read = bytes,
                }
            }
            serve_io(stream, read, remote, &builder, service, stop, limits).await;
        }
        Some(acceptor) => {
            let handshake = tokio::time::timeout(limits.handshake, acceptor.accept(stream));
            let stream = tokio::select! {
                done = handshake => match done {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(e)) => {
                        tracing::debug!(%remote, error = %e, "tls handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%remote, "tls handshake timed out");
                        return;
                    }
                },
                () = stopping(stop.clone()) => return,
            };
            serve_io(
                stream,
                BytesMut::new(),
                remote,
                &builder,
                service,
                stop,
                limits,
            )
            .await;
        }
    }
}

/// What a listener serves: answers one request at a time.
///
/// A [`MediatorService`] answers in place (its future is polled where it
/// is, where tower's `call` has to box it); any other tower service
/// answers through `poll_ready` and `call` ([`Layered`]).
trait Answers: Clone + Send + Sync + 'static {
    type Body: Body<Data = Bytes, Error: Into<BoxError>> + Send + 'static;
    type Error: Into<BoxError>;

    /// The mediator whose calls may take the pass-through, when this
    /// service answers them exactly as the pass-through does.
    fn passes(&self) -> Option<&Mediator> {
        None
    }

    fn answer(
        self,
        request: Request<Incoming>,
    ) -> impl Future<Output = Result<Response<Self::Body>, Self::Error>> + Send + 'static;
}

impl Answers for MediatorService {
    type Body = ResponseBody;
    type Error = Infallible;

    fn passes(&self) -> Option<&Mediator> {
        self.answers_calls_plainly().then(|| self.mediator())
    }

    async fn answer(
        self,
        request: Request<Incoming>,
    ) -> Result<Response<ResponseBody>, Infallible> {
        Ok(MediatorService::answer(&self, request).await)
    }
}

/// A tower service as a listener serves it: ready first, then called.
#[derive(Clone)]
struct Layered<S>(S);

impl<S, B> Answers for Layered<S>
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Body = B;
    type Error = S::Error;

    fn answer(
        self,
        request: Request<Incoming>,
    ) -> impl Future<Output = Result<Response<B>, S::Error>> + Send + 'static {
        let mut service = self.0;
        async move {
            std::future::poll_fn(|cx| service.poll_ready(cx)).await?;
            service.call(request).await
        }
    }
}

/// Serves `io` with hyper's server, `read` (what the pass-through read of
/// it before handing it over) first.
async fn serve_io<I, A>(
    io: I,
    read: BytesMut,
    remote: SocketAddr,
    builder: &auto::Builder<TokioExecutor>,
    service: A,
    stop: watch::Receiver<bool>,
    limits: ConnectionLimits,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    A: Answers,
{
    let activity = Activity::new();
    // The peer's address goes into every request.
    let in_service = activity.clone();
    let service = service_fn(move |mut request: Request<Incoming>| {
        request.extensions_mut().insert(RemoteAddr(remote));
        let busy = in_service.busy();
        let service = service.clone();
        // The answer's future is made inside this one, in place: made
        // outside, the whole request's state would be copied into it.
        async move {
            let answer = service.answer(request).await;
            drop(busy);
            answer
        }
    });
    let io = Watched {
        io,
        read,
        activity: activity.clone(),
    };
    let connection = builder.serve_connection(TokioIo::new(io), service);
    let mut connection = std::pin::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = stopping(stop) => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
        why = activity.expired(limits.idle, limits.header_read) => {
            tracing::debug!(%remote, why, "closing the connection");
            return;
        }
    };
    if let Err(e) = result {
        tracing::debug!(%remote, error = %e, "connection ended with an error");
    }
}

/// When a connection last moved a byte, whether a request's head is being
/// read and since when, and how many of its requests are being answered:
/// what the idle and header-read timeouts read.
#[derive(Clone)]
struct Activity {
    shared: Arc<ActivityState>,
}

struct ActivityState {
    started: Instant,
    /// Milliseconds from `started` to the last byte read or written.
    last: AtomicU64,
    /// One more than the milliseconds from `started` to the first byte of a
    /// head not yet answered; 0 when none is being read.
    head_since: AtomicU64,
    busy: AtomicUsize,
}

impl Activity {
    fn new() -> Self {
        Activity {
            shared: Arc::new(ActivityState {
                started: Instant::now(),
                last: AtomicU64::new(0),
                // A new connection owes its first head from the start, so a
                // client that never sends a byte is timed like a slow one.
                head_since: AtomicU64::new(1),
                busy: AtomicUsize::new(0),
            }),
        }
    }

    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.shared.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn touch(&self) {
        self.shared.last.store(self.elapsed_ms(), Ordering::Relaxed);
    }

    /// Bytes arrived: with no request being answered, they begin the next
    /// head, whose clock starts now unless it already runs.
    fn read(&self) {
        let now = self.elapsed_ms();
        self.shared.last.store(now, Ordering::Relaxed);
        if self.shared.busy.load(Ordering::Relaxed) == 0 {
            let _ = self.shared.head_since.compare_exchange(
                0,
                now.saturating_add(1),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }

    /// Marks a request in flight until the guard is dropped: its head is
    /// whole, and a request the mediator is still answering (a slow node)
    /// is not idleness.
    fn busy(&self) -> BusyGuard {
        self.shared.busy.fetch_add(1, Ordering::Relaxed);
        self.shared.head_since.store(0, Ordering::Relaxed);
        BusyGuard(self.clone())
    }

    /// Resolves, saying why, once nothing moved for `idle` with no request
    /// in flight, or a head took longer than `header_read` from its first
    /// byte (from the connection's start for the first head).
    async fn expired(&self, idle: Duration, header_read: Duration) -> &'static str {
        loop {
            let head = self.shared.head_since.load(Ordering::Relaxed);
            let head_until = (head > 0)
                .then(|| self.shared.started + Duration::from_millis(head - 1) + header_read);
            let last = Duration::from_millis(self.shared.last.load(Ordering::Relaxed));
            let idle_until = self.shared.started + last + idle;
            let now = Instant::now();
            if head_until.is_some_and(|until| now >= until) {
                return "header read timeout";
            }
            if now >= idle_until && self.shared.busy.load(Ordering::Relaxed) == 0 {
                return "idle timeout";
            }
            let next = match head_until {
                Some(until) => until.min(idle_until),
                None => idle_until,
            };
            // Busy past the idle deadline: look again later.
            let next = if next <= now {
                now + idle.min(Duration::from_secs(1))
            } else {
                next
            };
            tokio::time::sleep_until(next.into()).await;
        }
    }
}

struct BusyGuard(Activity);

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.0.shared.busy.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

/// A connection's stream, noting every byte that moves on it, and serving
/// first the bytes read of it before it got here.
struct Watched<I> {
    io: I,
    read: BytesMut,
    activity: Activity,
}

impl<I: AsyncRead + Unpin> AsyncRead for Watched<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.read.is_empty() {
            let n = self.read.len().min(buf.remaining());
            buf.put_slice(&self.read[..n]);
            bytes::Buf::advance(&mut self.read, n);
            self.activity.read();
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.read();
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Watched<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
