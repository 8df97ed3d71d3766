//! The node's callback server: accepts the mediator's connections and
//! serves a hyper service on each, until told to stop.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// How long requests in flight may take to finish once the server stops.
const DRAIN: Duration = Duration::from_secs(5);

/// Spawns the accept loop; it ends when `stop` changes or its sender is
/// dropped, then waits up to [`DRAIN`] for requests in flight and closes
/// every connection still open after that.
pub(crate) fn spawn<S>(
    listener: TcpListener,
    service: S,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()>
where
    S: hyper::service::Service<
            Request<hyper::body::Incoming>,
            Response = Response<Full<Bytes>>,
            Error = Infallible,
        > + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    tokio::spawn(async move {
        let graceful = GracefulShutdown::new();
        let mut builder = auto::Builder::new(TokioExecutor::new());
        // Without a timer hyper drops its timeout for reading a request
        // head, and a peer that never finishes one holds a task for ever.
        builder.http1().timer(TokioTimer::new());
        // Owned here, not detached, so none outlives the server.
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _peer)) => {
                        // Small requests and replies: do not wait to coalesce.
                        let _ = stream.set_nodelay(true);
                        let connection = builder
                            .serve_connection(TokioIo::new(stream), service.clone())
                            .into_owned();
                        let connection = graceful.watch(connection);
                        connections.spawn(async move {
                            if let Err(error) = connection.await {
                                tracing::debug!(%error, "node connection ended with an error");
                            }
                        });
                    }
                    Err(error) => {
                        // Usually out of file descriptors: wait rather than spin.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
                _ = stop.changed() => break,
            }
        }
        drop(listener);
        if tokio::time::timeout(DRAIN, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("requests still in flight after {DRAIN:?}; dropping them");
        }
        connections.shutdown().await;
    })
}
