//! A node written on plain hyper, not on the node client: it shows what the
//! mediator really sends over the wire, and answers however a test's path
//! asks it to.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

/// What a node received.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The request's method.
    pub method: Method,
    /// The path and query, as sent.
    pub uri: String,
    /// The HTTP version it came over.
    pub version: http::Version,
    /// Every header.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
}

impl Seen {
    /// One header's value, when present and readable.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A node that answers every request, recording it. The path drives it:
/// - `/slow/<ms>`: waits that long, then answers as the rest of the path says;
/// - `/status/<code>`: answers with that status;
/// - `/raw`: answers the request body as `application/octet-stream`;
/// - `/big/<bytes>`: answers that many bytes;
/// - anything else: `{"label", "method", "path", "body"}` as JSON, with
///   an `x-node-label` header and hop-by-hop headers the mediator must drop.
///
/// Stops serving when dropped.
pub struct EchoNode {
    /// The name it answers with.
    pub label: String,
    /// Where it listens.
    pub addr: SocketAddr,
    /// The URL to register it at.
    pub url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: JoinHandle<()>,
}

impl EchoNode {
    /// A node on plain HTTP at `http://127.0.0.1:port`.
    pub async fn start(label: &str) -> EchoNode {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind a node");
        let addr = listener.local_addr().expect("the node's address");
        EchoNode::serve(label, listener, None, format!("http://{addr}"))
    }

    /// The same node over TLS at `https://localhost:port`, with this server
    /// config (whose ALPN decides between HTTP/2 and HTTP/1.1).
    pub async fn start_tls(label: &str, tls: rustls::ServerConfig) -> EchoNode {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind a node");
        let addr = listener.local_addr().expect("the node's address");
        let acceptor = TlsAcceptor::from(Arc::new(tls));
        EchoNode::serve(
            label,
            listener,
            Some(acceptor),
            format!("https://localhost:{}", addr.port()),
        )
    }

    fn serve(
        label: &str,
        listener: TcpListener,
        tls: Option<TlsAcceptor>,
        url: String,
    ) -> EchoNode {
        let addr = listener.local_addr().expect("the node's address");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn(accept(listener, tls, label.to_owned(), Arc::clone(&seen)));
        EchoNode {
            label: label.to_owned(),
            addr,
            url,
            seen,
            task,
        }
    }

    /// Every request received so far, oldest first.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("the record of requests").clone()
    }

    /// How many requests were received.
    pub fn count(&self) -> usize {
        self.seen.lock().expect("the record of requests").len()
    }

    /// The latest request; fails the test when there was none.
    pub fn last(&self) -> Seen {
        self.seen().pop().expect("the node was called")
    }
}

impl Drop for EchoNode {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    label: String,
    seen: Arc<Mutex<Vec<Seen>>>,
) {
    while let Ok((stream, _)) = listener.accept().await {
        let seen = Arc::clone(&seen);
        let label = label.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let seen = Arc::clone(&seen);
                let label = label.clone();
                async move { Ok::<_, Infallible>(answer(&label, &seen, req).await) }
            });
            let builder = auto::Builder::new(TokioExecutor::new());
            // A connection that fails only ends that connection; the test
            // sees it from the mediator's side.
            match tls {
                None => {
                    let _ = builder
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                }
                Some(acceptor) => {
                    if let Ok(stream) = acceptor.accept(stream).await {
                        let _ = builder
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    }
                }
            }
        });
    }
}

async fn answer(
    label: &str,
    seen: &Mutex<Vec<Seen>>,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let uri = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    seen.lock().expect("the record of requests").push(Seen {
        method: parts.method.clone(),
        uri: uri.clone(),
        version: parts.version,
        headers: parts.headers.clone(),
        body: body.clone(),
    });
    let mut path = parts.uri.path().to_owned();
    if let Some(rest) = path.strip_prefix("/slow/") {
        let (ms, after) = rest.split_once('/').unwrap_or((rest, ""));
        tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(0))).await;
        path = format!("/{after}");
    }
    let mut status = StatusCode::OK;
    if let Some(code) = path.strip_prefix("/status/") {
        let code = code.split('/').next().unwrap_or("");
        status = StatusCode::from_u16(code.parse().unwrap_or(500)).unwrap_or(StatusCode::OK);
    }
    if path == "/raw" {
        return Response::builder()
            .status(status)
            .header("content-type", "application/octet-stream")
            .body(Full::new(body))
            .expect("a valid response");
    }
    if let Some(n) = path.strip_prefix("/big/") {
        let n: usize = n.parse().unwrap_or(0);
        return Response::builder()
            .status(status)
            .body(Full::new(Bytes::from(vec![b'x'; n])))
            .expect("a valid response");
    }
    let reply = json!({
        "label": label,
        "method": parts.method.as_str(),
        "path": uri,
        "body": String::from_utf8_lossy(&body),
    });
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("x-node-label", label)
        .header("connection", "keep-alive")
        .header("keep-alive", "timeout=5")
        .body(Full::new(Bytes::from(reply.to_string())))
        .expect("a valid response")
}
