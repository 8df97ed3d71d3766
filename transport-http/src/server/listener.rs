//! [`HttpListener`]: the accept loop that serves a [`MediatorService`] on a
//! TCP port, with TLS, both HTTP versions, client timeouts and a graceful
//! drain.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use http::Request;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use super::service::{MediatorService, RemoteAddr};
use super::tls::TlsConfig;
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
                            service.clone(),
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

/// Serves one accepted connection, through TLS when configured.
async fn connection(
    stream: TcpStream,
    remote: SocketAddr,
    acceptor: Option<TlsAcceptor>,
    handshake_timeout: Duration,
    builder: auto::Builder<TokioExecutor>,
    service: MediatorService,
    stop: watch::Receiver<bool>,
) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(%remote, error = %e, "could not set TCP_NODELAY");
    }
    match acceptor {
        None => serve_io(stream, remote, &builder, service, stop).await,
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
            serve_io(stream, remote, &builder, service, stop).await;
        }
    }
}

async fn serve_io<I>(
    io: I,
    remote: SocketAddr,
    builder: &auto::Builder<TokioExecutor>,
    service: MediatorService,
    stop: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // The same handling as `MediatorService::call`, with the peer's address
    // added, and the request's future polled in place rather than boxed.
    let service = service_fn(move |mut request: Request<Incoming>| {
        request.extensions_mut().insert(RemoteAddr(remote));
        let service = service.clone();
        async move { Ok::<_, Infallible>(service.answer(request).await) }
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
