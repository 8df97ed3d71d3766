//! Shared parts of the server tests: a mediator answered in process by its
//! service or served on loopback by a listener, echo nodes that record
//! what reached them, and a plain HTTP client.

#![allow(dead_code, unreachable_pub, missing_docs)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use mediator_core::auth::{Claims, Identity};
use mediator_core::{
    async_trait, Authenticator, Endpoint, Limits, ManualClock, Mediator, MemoryRegistry, Node,
    NodeId, NodeKey, Registration, Registry, StoreError, Timestamp, TokenMinter,
};
use mediator_transport_http::{
    HttpDelivery, HttpDeliveryConfig, HttpError, HttpListener, MediatorService, TlsConfig,
};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tower_service::Service;

pub const SECRET: &str = "a test secret that is long enough!!";

/// How to compose the mediator under test.
pub struct HubConfig {
    /// The largest request body (the mediator's default when `None`).
    pub max_body: Option<usize>,
    /// The delivery deadline, also the time a request body may take.
    pub deadline: Duration,
    /// A clock to drive by hand; the system clock when `None`.
    pub clock: Option<ManualClock>,
    pub allow_tokens_without_sub: bool,
    pub tls: Option<TlsConfig>,
    pub delivery: HttpDeliveryConfig,
    pub drain: Duration,
    pub registry: Option<Arc<dyn Registry>>,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            max_body: None,
            deadline: Duration::from_secs(5),
            clock: None,
            allow_tokens_without_sub: false,
            tls: None,
            delivery: HttpDeliveryConfig::default()
                .with_connect_timeout(Duration::from_millis(500)),
            drain: Duration::from_secs(5),
            registry: None,
        }
    }
}

/// A mediator under test: answered in process by its [`MediatorService`]
/// ([`Hub::in_process`]), or served by an [`HttpListener`] on 127.0.0.1 on
/// a free port ([`Hub::start`]) built on the same service, so both count
/// into the same metrics.
pub struct Hub {
    /// The listener's address; `None` in process.
    pub addr: Option<SocketAddr>,
    /// `http(s)://addr`, or empty in process.
    pub base: String,
    pub mediator: Mediator,
    pub service: MediatorService,
    pub clock: Option<ManualClock>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), HttpError>>>,
}

impl Hub {
    /// A hub served on a socket.
    pub async fn start() -> Hub {
        Hub::start_with(HubConfig::default()).await
    }

    /// A hub answered in process, without a socket.
    pub fn in_process() -> Hub {
        Hub::in_process_with(HubConfig::default())
    }

    pub fn in_process_with(config: HubConfig) -> Hub {
        let (mediator, clock, _) = compose(config);
        Hub {
            addr: None,
            base: String::new(),
            service: MediatorService::new(mediator.clone()),
            mediator,
            clock,
            stop: None,
            task: None,
        }
    }

    pub async fn start_with(config: HubConfig) -> Hub {
        let drain = config.drain;
        let (mediator, clock, tls) = compose(config);
        let scheme = if tls.is_some() { "https" } else { "http" };
        let mut listener = HttpListener::bind("127.0.0.1:0")
            .await
            .expect("bind")
            .drain_timeout(drain);
        if let Some(tls) = tls {
            listener = listener.tls(tls);
        }
        let addr = listener.local_addr();
        let service = MediatorService::new(mediator.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(listener.serve_with_shutdown(service.clone(), async move {
            let _ = stopped.await;
        }));
        Hub {
            addr: Some(addr),
            base: format!("{scheme}://{addr}"),
            mediator,
            service,
            clock,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// The listener's address, for tests that speak to the socket itself.
    pub fn socket(&self) -> SocketAddr {
        self.addr.expect("a hub served on a socket")
    }

    /// Sends one request the hub's way (socket or service) and collects
    /// the answer; `path` may carry a query.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Answer {
        let request = request(method, &self.url(path), headers, body);
        if self.addr.is_some() {
            send(request).await
        } else {
            call_service(&self.service, request).await
        }
    }

    /// [`call`](Self::call) with a bearer token.
    pub async fn call_as(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: impl Into<Bytes>,
    ) -> Answer {
        let bearer = format!("Bearer {token}");
        self.call(method, path, &[("authorization", &bearer)], body)
            .await
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A token minted for node `key` (`group/name` or `group/`).
    pub fn token_for(&self, key: &str) -> String {
        let key: NodeKey = key.parse().expect("valid key");
        mint(&Claims::node(
            &key,
            Timestamp::now(),
            Duration::from_secs(3600),
        ))
    }

    pub fn admin_token(&self) -> String {
        mint(&Claims::admin(Timestamp::now(), Duration::from_secs(3600)))
    }

    /// Registers `key` at `url` over HTTP with its own token; returns the id.
    pub async fn register(&self, key: &str, url: &str) -> u64 {
        let key_parsed: NodeKey = key.parse().expect("valid key");
        let answer = self
            .call_as(
                "POST",
                "/register",
                &self.token_for(key),
                json!({
                "group": key_parsed.group(),
                "name": key_parsed.name(),
                "url": url,
                    "ttl": 60,
                })
                .to_string(),
            )
            .await;
        assert_eq!(answer.status, 200, "register {key}: {}", answer.text());
        answer.json()["entity"]["id"].as_u64().expect("id")
    }

    /// Registers `key` in process with a one-second lease, then moves the
    /// hub's manual clock a minute on, so the lease has run out.
    pub async fn register_expired(&self, key: &str, url: &str) {
        let clock = self.clock.as_ref().expect("a hub with a manual clock");
        let registration = Registration::new(
            key.parse().expect("valid key"),
            Endpoint::http(url).expect("valid url"),
            Duration::from_secs(1),
        );
        self.mediator
            .register(&Identity::internal(), registration)
            .await
            .expect("register");
        clock.advance(Duration::from_secs(60));
    }

    /// Stops the listener gracefully and waits for it.
    pub async fn stop(mut self) -> Result<(), HttpError> {
        self.shutdown().await
    }

    pub async fn shutdown(&mut self) -> Result<(), HttpError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => task.await.expect("listener task"),
            None => Ok(()),
        }
    }

    pub fn take_task(&mut self) -> (oneshot::Sender<()>, JoinHandle<Result<(), HttpError>>) {
        (
            self.stop.take().expect("not stopped yet"),
            self.task.take().expect("not stopped yet"),
        )
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// Builds the mediator a config describes; returns it, its manual clock if
/// any, and the TLS settings for a listener.
fn compose(config: HubConfig) -> (Mediator, Option<ManualClock>, Option<TlsConfig>) {
    let registry: Arc<dyn Registry> = config
        .registry
        .unwrap_or_else(|| Arc::new(MemoryRegistry::new()));
    let mut limits = Limits::default();
    limits.deadline = config.deadline;
    if let Some(max_body) = config.max_body {
        limits.max_body = max_body;
    }
    let mut builder = Mediator::builder()
        .shared_registry(registry)
        .authenticator(
            Authenticator::hs256(SECRET).allow_tokens_without_sub(config.allow_tokens_without_sub),
        )
        .deliver(HttpDelivery::with_config(config.delivery))
        .limits(limits);
    if let Some(clock) = &config.clock {
        builder = builder.clock(clock.clone());
    }
    let mediator = builder.build().expect("mediator builds");
    (mediator, config.clock, config.tls)
}

/// Calls a service in process, as a server would, and collects the answer.
pub async fn call_service<B>(service: &MediatorService, request: Request<B>) -> Answer
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let response = service
        .clone()
        .call(request)
        .await
        .unwrap_or_else(|never| match never {});
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("reply body").to_bytes();
    Answer {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
    }
}

pub fn mint(claims: &Claims) -> String {
    TokenMinter::hs256(SECRET).mint(claims).expect("mint")
}

/// What a node received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: Method,
    pub uri: String,
    pub version: http::Version,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A node that answers every request, recording it. The path drives it:
/// - `/slow/<ms>`: waits that long, then answers as below;
/// - `/status/<code>`: answers with that status;
/// - `/raw`: answers the request body as `application/octet-stream`;
/// - `/big/<bytes>`: answers that many bytes;
/// - anything else: `{"label", "method", "path", "body"}` as JSON.
pub struct EchoNode {
    pub label: String,
    pub addr: SocketAddr,
    pub url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: JoinHandle<()>,
}

impl EchoNode {
    pub async fn start(label: &str) -> EchoNode {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind node");
        let addr = listener.local_addr().expect("node addr");
        EchoNode::serve(label, listener, None, format!("http://{addr}")).await
    }

    /// The same node over TLS (`https://localhost:port`), with this server config.
    pub async fn start_tls(label: &str, tls: rustls::ServerConfig) -> EchoNode {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind node");
        let addr = listener.local_addr().expect("node addr");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        EchoNode::serve(
            label,
            listener,
            Some(acceptor),
            format!("https://localhost:{}", addr.port()),
        )
        .await
    }

    async fn serve(
        label: &str,
        listener: TcpListener,
        tls: Option<tokio_rustls::TlsAcceptor>,
        url: String,
    ) -> EchoNode {
        let addr = listener.local_addr().expect("node addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let label_owned = label.to_owned();
        let seen_in = Arc::clone(&seen);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let seen = Arc::clone(&seen_in);
                let label = label_owned.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let seen = Arc::clone(&seen);
                        let label = label.clone();
                        async move { Ok::<_, Infallible>(answer(&label, &seen, req).await) }
                    });
                    let builder = auto::Builder::new(TokioExecutor::new());
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
        });
        EchoNode {
            label: label.to_owned(),
            addr,
            url,
            seen,
            task,
        }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("seen lock").clone()
    }

    pub fn count(&self) -> usize {
        self.seen.lock().expect("seen lock").len()
    }

    pub fn last(&self) -> Seen {
        self.seen().pop().expect("the node was called")
    }
}

impl Drop for EchoNode {
    fn drop(&mut self) {
        self.task.abort();
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
    seen.lock().expect("seen lock").push(Seen {
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
            .expect("response");
    }
    if let Some(n) = path.strip_prefix("/big/") {
        let n: usize = n.parse().unwrap_or(0);
        return Response::builder()
            .status(status)
            .body(Full::new(Bytes::from(vec![b'x'; n])))
            .expect("response");
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
        .expect("response")
}

/// A request body that arrives in chunks and never says how long it is,
/// as a streamed upload does.
pub struct Chunks(std::collections::VecDeque<Bytes>);

impl Chunks {
    pub fn new(chunks: Vec<Vec<u8>>) -> Chunks {
        Chunks(chunks.into_iter().map(Bytes::from).collect())
    }
}

impl http_body::Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        std::task::Poll::Ready(
            self.0
                .pop_front()
                .map(|chunk| Ok(http_body::Frame::data(chunk))),
        )
    }
}

/// A URL where nothing listens (bound, then closed).
pub async fn dead_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    format!("http://{addr}")
}

/// A reply as the caller saw it.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text()))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A request with these headers and body; `url` may be a bare path.
pub fn request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Request<Full<Bytes>> {
    let mut request = Request::builder()
        .method(Method::from_bytes(method.as_bytes()).expect("method"))
        .uri(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.body(Full::new(body.into())).expect("request")
}

/// Sends one request over the network and collects the answer.
pub async fn call(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Answer {
    send(request(method, url, headers, body)).await
}

pub async fn send(request: Request<Full<Bytes>>) -> Answer {
    let response = client()
        .request(request)
        .await
        .expect("the mediator answers");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("reply body").to_bytes();
    Answer {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
    }
}

/// Calls with a bearer token.
pub async fn call_as(method: &str, url: &str, token: &str, body: impl Into<Bytes>) -> Answer {
    call(
        method,
        url,
        &[("authorization", &format!("Bearer {token}"))],
        body,
    )
    .await
}

/// Asserts the error body shape and returns it.
pub fn assert_error(answer: &Answer, status: u16, kind: &str, fault: &str) -> Value {
    assert_eq!(answer.status, status, "{}", answer.text());
    assert_eq!(answer.header("content-type"), Some("application/json"));
    let body = answer.json();
    assert_eq!(body["kind"], kind, "{body}");
    assert_eq!(body["fault"], fault, "{body}");
    assert!(body["error"].is_string(), "{body}");
    body
}

/// A registry whose store is down for readiness checks.
pub struct DownRegistry(pub MemoryRegistry);

#[async_trait]
impl Registry for DownRegistry {
    async fn upsert(&self, r: Registration, now: Timestamp) -> Result<Node, StoreError> {
        self.0.upsert(r, now).await
    }
    async fn renew(
        &self,
        key: &NodeKey,
        ttl: Duration,
        now: Timestamp,
    ) -> Result<Option<Timestamp>, StoreError> {
        self.0.renew(key, ttl, now).await
    }
    async fn remove(&self, id: NodeId) -> Result<u64, StoreError> {
        self.0.remove(id).await
    }
    async fn remove_key(&self, key: &NodeKey) -> Result<u64, StoreError> {
        self.0.remove_key(key).await
    }
    async fn get(&self, key: &NodeKey) -> Result<Option<Node>, StoreError> {
        self.0.get(key).await
    }
    async fn get_by_id(&self, id: NodeId) -> Result<Option<Node>, StoreError> {
        self.0.get_by_id(id).await
    }
    async fn list(&self, group: Option<&str>) -> Result<Vec<Node>, StoreError> {
        self.0.list(group).await
    }
    async fn evict_expired(&self, now: Timestamp) -> Result<Vec<NodeKey>, StoreError> {
        self.0.evict_expired(now).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        Err(StoreError::new("connection refused", true))
    }
}

/// Counts of each label among JSON replies.
pub fn count_labels(answers: &[Answer]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for answer in answers {
        let label = answer.json()["label"].as_str().unwrap_or("?").to_owned();
        *counts.entry(label).or_insert(0) += 1;
    }
    counts
}

/// A self-signed certificate for `localhost` and 127.0.0.1: (cert PEM, key PEM).
pub fn self_signed() -> (String, String) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
        .expect("self-signed certificate");
    (cert.cert.pem(), cert.key_pair.serialize_pem())
}
