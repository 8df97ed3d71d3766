//! The mediator's HTTP API: [`HttpListener`] serves a [`Mediator`] over
//! HTTP/1.1 and HTTP/2 on one port, optionally over TLS ([`TlsConfig`]).
//!
//! # Routes
//!
//! The original's routes with their shapes and statuses, and ours beside
//! them. Every JSON reply carries `content-type: application/json`,
//! `cache-control: no-cache, no-store, must-revalidate` and
//! `access-control-allow-origin: *`; every error is
//! `{"error": "<message>", "kind": "<kind>", "fault": "caller|hub|node"}`.
//!
//! | route | who | answer |
//! |---|---|---|
//! | `POST /register` | the node itself | `{"entity": row, "errors": {}}`; original dialect `{"cluster","node","domain","port"}` refused with `200 {"entity": <body>, "errors": {field: message}}`, ours `{"group","name","url","ttl","meta"}` with `400` |
//! | `POST /renew` | the node itself | `{"lease_until", "ttl"}`; `404` when not registered |
//! | `ANY /remove/:id?` | the node itself | `{"affected": n}`; `409` without id or key |
//! | `ANY /one/:group/:name?/*path` | any caller | the node's reply + `x-mediator-node` (`/one/g//p`: the unnamed node) |
//! | `ANY /any/:group/*path` | any caller | the reply of one live node, the least busy |
//! | `ANY /many/:group/*path` | any caller | `[{"then"…}|{"then_base64"…}|{"catch"…}]` + `x-mediator-summary` |
//! | `ANY /admin/clusters/:group?` | admin | `{"list": [row…]}` |
//! | `ANY /admin/cluster/:id` | admin | `{"entity": row}`; `400` when unknown |
//! | `ANY /token` | Basic `admin:<secret>` | `{"token", "verified": true, "exp"}` (admin, 9 h) |
//! | `ANY /ping`, `GET /readyz` | anyone | `{"ok": true, "store": "up"}`; `503` when the store is down |
//! | `GET /healthz` | anyone | `{"ok": true}` while the process runs |
//! | `GET /metrics` | anyone | Prometheus text (`text/plain; version=0.0.4`): `mediator_requests_total{route,status}`, `mediator_request_duration_seconds{route}` (histogram, 1 ms … 10 s), `mediator_deliveries_total{group,outcome}`, `mediator_nodes` |
//! | `GET /` | admin (Basic `admin:<secret>` in a browser) | the dashboard: an HTML page of the registered nodes, reloading every 5 s; `401` with `WWW-Authenticate: Basic realm="mediator"` without a login, `403` for a node |
//!
//! Credentials are read from `Authorization: Bearer`, the `x-jwt` header,
//! the `x-jwt` query parameter, then the `x-jwt` field of a JSON body; an
//! `Authorization: Basic admin:<secret>` login acts as the operator.
//! A missing or bad one is `401` with `WWW-Authenticate: Bearer
//! realm="mediator"`. Bodies above [`Limits::max_body`](mediator_core::Limits)
//! are refused with `413`, and one that has not arrived within
//! [`Limits::deadline`](mediator_core::Limits) with `408`. A caller may
//! shorten the delivery deadline with `x-mediator-deadline` (ms since the
//! epoch) or `x-mediator-timeout-ms`.
//!
//! # Metrics
//!
//! Each listener keeps its own counters. Requests are counted by route
//! (`one`, `any`, `many`, `register`, `renew`, `remove`, `admin` — which
//! includes the dashboard —, `token`, and `other` for probes, `/metrics`
//! and unknown paths) and status, with their latency from arrival to
//! answer. Forwarded requests count one delivery outcome (`ok`, `failed`,
//! `unreachable`, `timed_out`) per node asked, under the target group; a
//! known group without a live node counts as `unreachable`, and an unknown
//! target only under its route's status. At most 1,000 groups get their
//! own series; deliveries to groups seen after that count under
//! `group="other"`. `mediator_nodes` is the size of the routing table.
//!
//! # Background work
//!
//! The listener only answers requests. Expiring leases and refreshing the
//! routing table from a shared store is the job of
//! [`Mediator::spawn_maintenance`], which whoever composes the mediator
//! starts once, whatever transports serve it.

mod credentials;
mod dashboard;
mod entity;
mod metrics;
mod reply;
mod routes;
mod tls;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use mediator_core::Mediator;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

pub use tls::TlsConfig;

use crate::error::HttpError;
use metrics::Metrics;

/// Serves a [`Mediator`]'s HTTP API on one TCP port: HTTP/1.1 and HTTP/2
/// (prior knowledge in clear text, ALPN over TLS).
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

    /// How long a client may take over its TLS handshake (default 10 s) and,
    /// on HTTP/1.1, over sending a request's headers (default 30 s), so
    /// idle or slow clients cannot hold connections for ever.
    pub fn client_timeouts(mut self, handshake: Duration, header_read: Duration) -> Self {
        self.handshake_timeout = handshake;
        self.header_read_timeout = header_read;
        self
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves `mediator` until the process ends. Failed connections and
    /// accept errors are logged and do not stop the listener.
    pub async fn serve(self, mediator: Mediator) -> Result<(), HttpError> {
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
        mediator: Mediator,
        signal: impl Future<Output = ()> + Send,
    ) -> Result<(), HttpError> {
        let HttpListener {
            listener,
            local_addr,
            tls,
            drain,
            handshake_timeout,
            header_read_timeout,
        } = self;
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(header_read_timeout)
            .keep_alive(true);
        builder.http2().timer(TokioTimer::new());
        let acceptor = tls.map(|t| TlsAcceptor::from(t.server));
        let (stop_tx, stop_rx) = watch::channel(false);
        let metrics = Arc::new(Metrics::default());
        let mut connections = JoinSet::new();
        tracing::info!(
            addr = %local_addr,
            tls = acceptor.is_some(),
            "mediator http listener serving"
        );
        let mut signal = std::pin::pin!(signal);
        loop {
            tokio::select! {
                biased;
                () = &mut signal => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, remote)) => {
                        connections.spawn(connection(
                            stream,
                            remote,
                            acceptor.clone(),
                            handshake_timeout,
                            builder.clone(),
                            Served {
                                mediator: mediator.clone(),
                                metrics: Arc::clone(&metrics),
                            },
                            stop_rx.clone(),
                        ));
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

/// Resolves once the listener is shutting down.
async fn stopping(mut stop: watch::Receiver<bool>) {
    loop {
        let stopped = *stop.borrow_and_update();
        if stopped || stop.changed().await.is_err() {
            return;
        }
    }
}

/// What every connection of a listener answers with.
#[derive(Clone)]
struct Served {
    mediator: Mediator,
    /// The listener's counters, shared by its connections.
    metrics: Arc<Metrics>,
}

/// Serves one accepted connection, through TLS when configured.
async fn connection(
    stream: TcpStream,
    remote: SocketAddr,
    acceptor: Option<TlsAcceptor>,
    handshake_timeout: Duration,
    builder: auto::Builder<TokioExecutor>,
    served: Served,
    stop: watch::Receiver<bool>,
) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(%remote, error = %e, "could not set TCP_NODELAY");
    }
    match acceptor {
        None => serve_io(stream, remote, &builder, served, stop).await,
        Some(acceptor) => {
            let handshake = tokio::time::timeout(handshake_timeout, acceptor.accept(stream));
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
            serve_io(stream, remote, &builder, served, stop).await;
        }
    }
}

async fn serve_io<I>(
    io: I,
    remote: SocketAddr,
    builder: &auto::Builder<TokioExecutor>,
    served: Served,
    stop: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |request| {
        let Served { mediator, metrics } = served.clone();
        async move { Ok::<_, Infallible>(routes::handle(mediator, &metrics, request, remote).await) }
    });
    let connection = builder.serve_connection(TokioIo::new(io), service);
    let mut connection = std::pin::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = stopping(stop) => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%remote, error = %e, "connection ended with an error");
    }
}
