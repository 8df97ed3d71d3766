//! The mediator under test: composed from the memory registry (or one a
//! test gives), HS256 tokens, HTTP delivery and limits, then either served
//! on loopback by an [`HttpListener`] or answered in process by its
//! [`MediatorService`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use mediator_core::formation::PeerKey;
use mediator_core::policy::EndpointPolicy;
use mediator_core::{
    Authenticator, Claims, Clock, Deliver, Endpoint, Identity, Limits, ManualClock, Mediator,
    MemoryRegistry, NodeKey, PasswordHash, Registration, Registry, Timestamp,
};
use mediator_transport_http::client::NodeClientBuilder;
use mediator_transport_http::{
    HttpDelivery, HttpDeliveryConfig, HttpError, HttpListener, HttpPeerLink, MediatorService,
    MetricsAccess, NodeClient, TlsConfig,
};
use serde_json::json;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::http::{call_service, request, send, Answer};
use super::{key, mint, ring, SECRET};

/// How long the tokens a hub mints stay valid, on the hub's clock: longer
/// than any test moves a manual clock.
const TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

/// How to compose a [`Hub`]; from [`Hub::config`], then
/// [`start`](Self::start) or [`in_process`](Self::in_process).
pub struct HubConfig {
    limits: Limits,
    clock: Option<ManualClock>,
    tokens_without_sub: bool,
    tls: Option<TlsConfig>,
    delivery: HttpDeliveryConfig,
    drain: Duration,
    registry: Option<Arc<dyn Registry>>,
    addr: Option<SocketAddr>,
    endpoints: EndpointPolicy,
    metrics_access: MetricsAccess,
    listener: Option<ListenerChange>,
    operator_password: Option<PasswordHash>,
    secret_as_password: bool,
    console: bool,
    /// This instance's id and whether it joins a formation (announces its
    /// address and forwards to its peers).
    formation: Option<String>,
    delivers: Vec<Arc<dyn Deliver>>,
}

type ListenerChange = Box<dyn FnOnce(HttpListener) -> HttpListener + Send>;

impl Default for HubConfig {
    /// The memory registry, the system clock, a 5 s delivery deadline,
    /// tokens naming their node, plain HTTP on a free port, and a short
    /// connect timeout so a dead node fails fast.
    fn default() -> Self {
        let mut limits = Limits::default();
        limits.deadline = Duration::from_secs(5);
        HubConfig {
            limits,
            clock: None,
            tokens_without_sub: false,
            tls: None,
            delivery: HttpDeliveryConfig::default()
                .with_connect_timeout(Duration::from_millis(500)),
            drain: Duration::from_secs(5),
            registry: None,
            addr: None,
            endpoints: EndpointPolicy::default(),
            metrics_access: MetricsAccess::default(),
            listener: None,
            operator_password: None,
            secret_as_password: false,
            console: false,
            formation: None,
            delivers: Vec::new(),
        }
    }
}

impl HubConfig {
    /// The largest request body the mediator reads.
    pub fn max_body(mut self, bytes: usize) -> Self {
        self.limits.max_body = bytes;
        self
    }

    /// The delivery deadline, which also bounds how long a request body
    /// may take to arrive.
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.limits.deadline = deadline;
        self
    }

    /// Changes any of the mediator's limits.
    pub fn limits(mut self, change: impl FnOnce(&mut Limits)) -> Self {
        change(&mut self.limits);
        self
    }

    /// Runs the mediator on this clock; [`Hub::node`] gives it to nodes
    /// too, so leases, renewals and backoff all move when the test moves it.
    pub fn clock(mut self, clock: ManualClock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Accepts tokens that name no node, as the original's children send.
    pub fn tokens_without_sub(mut self) -> Self {
        self.tokens_without_sub = true;
        self
    }

    /// Serves HTTPS with this certificate; the hub's URL names `localhost`.
    pub fn tls(mut self, tls: TlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Changes how the mediator delivers to HTTP nodes.
    pub fn delivery(
        mut self,
        change: impl FnOnce(HttpDeliveryConfig) -> HttpDeliveryConfig,
    ) -> Self {
        self.delivery = change(self.delivery);
        self
    }

    /// How long a stopping listener waits for requests in flight.
    pub fn drain(mut self, drain: Duration) -> Self {
        self.drain = drain;
        self
    }

    /// Keeps registrations in `registry` instead of a fresh memory one.
    pub fn registry(mut self, registry: impl Registry) -> Self {
        self.registry = Some(Arc::new(registry));
        self
    }

    /// Listens at `addr` instead of a free port, so a test can bring a
    /// mediator back where its nodes expect it.
    pub fn addr(mut self, addr: SocketAddr) -> Self {
        self.addr = Some(addr);
        self
    }

    /// Which networks nodes may register callbacks in.
    pub fn endpoint_policy(mut self, policy: EndpointPolicy) -> Self {
        self.endpoints = policy;
        self
    }

    /// Changes the listener's settings (timeouts, connection cap) before
    /// it serves.
    pub fn listener(
        mut self,
        change: impl FnOnce(HttpListener) -> HttpListener + Send + 'static,
    ) -> Self {
        self.listener = Some(Box::new(change));
        self
    }

    /// Checks the Basic admin login against this hash instead of the secret.
    pub fn operator_password(mut self, hash: PasswordHash) -> Self {
        self.operator_password = Some(hash);
        self
    }

    /// Accepts the secret as the Basic admin password, the original's habit.
    pub fn secret_as_password(mut self) -> Self {
        self.secret_as_password = true;
        self
    }

    /// Serves the operator's console too, on a listener of its own (see
    /// [`Hub::console_url`]).
    pub fn console(mut self) -> Self {
        self.console = true;
        self
    }

    /// Who may read `/metrics`.
    pub fn metrics_access(mut self, access: MetricsAccess) -> Self {
        self.metrics_access = access;
        self
    }

    /// Joins the hub to a formation as instance `id`: its peers reach it at
    /// its own URL, with the credential [`SECRET`] derives, over HTTP/2.
    pub fn formation(mut self, id: &str) -> Self {
        self.formation = Some(id.to_owned());
        self
    }

    /// Adds a deliverer beside HTTP delivery.
    pub fn deliver(mut self, deliver: impl Deliver) -> Self {
        self.delivers.push(Arc::new(deliver));
        self
    }

    /// Builds the mediator and serves it on loopback.
    pub async fn start(mut self) -> Hub {
        let addr = self
            .addr
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
        let drain = self.drain;
        let access = self.metrics_access;
        let change = self.listener.take();
        let with_console = self.console;
        let mut listener = HttpListener::bind(addr)
            .await
            .expect("bind the mediator")
            .drain_timeout(drain);
        if let Some(change) = change {
            listener = change(listener);
        }
        let addr = listener.local_addr();
        let base = match &self.tls {
            Some(_) => format!("https://localhost:{}", addr.port()),
            None => format!("http://{addr}"),
        };
        let (mediator, clock, tls) = self.compose(&base);
        if let Some(tls) = tls {
            listener = listener.tls(tls);
        }
        // The listener serves the hub's own service, so what a test reads
        // from it (metrics) counts requests from both ways in.
        let service = MediatorService::new(mediator.clone()).metrics_access(access);
        let console = if with_console {
            let listener = HttpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
                .await
                .expect("bind the console")
                .drain_timeout(drain);
            let base = format!("http://{}", listener.local_addr());
            let task = tokio::spawn(listener.serve(service.console()));
            Some(ConsoleListener { base, task })
        } else {
            None
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(listener.serve_with_shutdown(service.clone(), async move {
            let _ = stopped.await;
        }));
        Hub {
            mediator,
            service,
            base,
            addr: Some(addr),
            clock,
            stop: Some(stop),
            task: Some(task),
            console,
        }
    }

    /// Builds the mediator and answers it in process, without a socket.
    pub fn in_process(self) -> Hub {
        let access = self.metrics_access;
        let (mediator, clock, _) = self.compose("");
        Hub {
            service: MediatorService::new(mediator.clone()).metrics_access(access),
            mediator,
            base: String::new(),
            addr: None,
            clock,
            stop: None,
            task: None,
            console: None,
        }
    }

    fn compose(self, base: &str) -> (Mediator, Option<ManualClock>, Option<TlsConfig>) {
        let registry = self
            .registry
            .unwrap_or_else(|| Arc::new(MemoryRegistry::new()));
        let mut authenticator =
            Authenticator::hs256(SECRET).allow_tokens_without_sub(self.tokens_without_sub);
        if let Some(hash) = self.operator_password {
            authenticator = authenticator.with_operator_password(hash);
        }
        if self.secret_as_password {
            authenticator = authenticator.with_secret_as_password(true);
        }
        let mut builder = Mediator::builder()
            .shared_registry(registry)
            .authenticator(authenticator)
            .deliver(HttpDelivery::with_config(self.delivery))
            .limits(self.limits)
            .endpoint_policy(self.endpoints);
        if let Some(clock) = &self.clock {
            builder = builder.clock(clock.clone());
        }
        if let Some(id) = &self.formation {
            builder = builder.instance_id(id).formation(
                PeerKey::from_secret(SECRET.as_bytes()),
                base,
                HttpPeerLink::new(),
            );
        }
        for deliver in self.delivers {
            builder = builder.deliver(deliver);
        }
        let mediator = builder.build().expect("the mediator builds");
        (mediator, self.clock, self.tls)
    }
}

/// A node key, or its text (`group/name`, or `group/` for the unnamed
/// node), wherever the hub asks for one.
pub trait IntoKey {
    /// The key; fails the test when the text is not one.
    fn into_key(self) -> NodeKey;
}

impl IntoKey for &str {
    fn into_key(self) -> NodeKey {
        key(self)
    }
}

impl IntoKey for &String {
    fn into_key(self) -> NodeKey {
        key(self)
    }
}

impl IntoKey for &NodeKey {
    fn into_key(self) -> NodeKey {
        self.clone()
    }
}

impl IntoKey for NodeKey {
    fn into_key(self) -> NodeKey {
        self
    }
}

/// A mediator under test: served by an [`HttpListener`] on 127.0.0.1
/// ([`Hub::start`]), or answered in process by its [`MediatorService`]
/// ([`Hub::in_process`]).
///
/// Dropping it stops the listener at once; [`stop`](Self::stop) stops it
/// gracefully and frees its port before returning.
pub struct Hub {
    /// The mediator, for what a test checks or does behind the API.
    pub mediator: Mediator,
    /// The HTTP API as a service; the listener serves this one.
    pub service: MediatorService,
    /// `http://127.0.0.1:port`, `https://localhost:port`, or empty in
    /// process (then a URL is just its path).
    pub base: String,
    addr: Option<SocketAddr>,
    clock: Option<ManualClock>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), HttpError>>>,
    console: Option<ConsoleListener>,
}

/// The console's own listener, when the hub serves one.
struct ConsoleListener {
    base: String,
    task: JoinHandle<Result<(), HttpError>>,
}

impl Drop for ConsoleListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Hub {
    /// How to compose a hub other than the default.
    pub fn config() -> HubConfig {
        HubConfig::default()
    }

    /// The default hub, served on a socket.
    pub async fn start() -> Hub {
        HubConfig::default().start().await
    }

    /// The default hub, answered in process.
    pub fn in_process() -> Hub {
        HubConfig::default().in_process()
    }

    /// The listener's address, for tests that speak to the socket itself.
    pub fn socket(&self) -> SocketAddr {
        self.addr.expect("a hub served on a socket")
    }

    /// The URL of `path` (which may carry a query) at this hub.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The URL of `path` at the console's own listener (in process: just
    /// the path, answered by [`console_call`](Self::console_call)).
    pub fn console_url(&self, path: &str) -> String {
        match &self.console {
            Some(console) => format!("{}{path}", console.base),
            None if self.addr.is_none() => path.to_owned(),
            None => panic!("a hub started with `Hub::config().console()`"),
        }
    }

    /// [`call`](Self::call) to the console's listener (in process: to the
    /// API service's [`console`](MediatorService::console)).
    pub async fn console_call(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Answer {
        let request = request(method, &self.console_url(path), headers, body);
        self.answer(&self.service.console(), request).await
    }

    /// Sends `request` over the socket it names, or in process to `service`.
    async fn answer(&self, service: &MediatorService, request: Request<Full<Bytes>>) -> Answer {
        if self.addr.is_some() {
            send(request).await
        } else {
            call_service(service, request).await
        }
    }

    /// The manual clock the hub runs on.
    pub fn clock(&self) -> &ManualClock {
        self.clock.as_ref().expect("a hub with a manual clock")
    }

    /// The time as the mediator reads it.
    pub fn now(&self) -> Timestamp {
        self.mediator.clock().now()
    }

    /// Sends one request the hub's way (plain HTTP to its socket, or its
    /// service in process) and collects the answer.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Answer {
        let request = request(method, &self.url(path), headers, body);
        self.answer(&self.service, request).await
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

    /// A token naming node `key`, valid for an hour of the hub's time.
    pub fn token_for(&self, key: impl IntoKey) -> String {
        mint(&Claims::node(&key.into_key(), self.now(), TOKEN_LIFETIME))
    }

    /// An admin token, valid for an hour of the hub's time.
    pub fn admin_token(&self) -> String {
        mint(&Claims::admin(self.now(), TOKEN_LIFETIME))
    }

    /// Registers `key` at `url` over the API, with its own token and a
    /// one-minute lease; returns the registration's id.
    pub async fn register(&self, key: impl IntoKey, url: &str) -> u64 {
        let key = key.into_key();
        let body = json!({
            "group": key.group(),
            "name": key.name(),
            "url": url,
            "ttl": 60,
        });
        let answer = self
            .call_as("POST", "/register", &self.token_for(&key), body.to_string())
            .await;
        assert_eq!(answer.status, 200, "register {key}: {}", answer.text());
        answer.json()["entity"]["id"].as_u64().expect("an id")
    }

    /// Registers `key` at `url` behind the API with a one-second lease,
    /// then moves the hub's manual clock a minute on, so the lease has run
    /// out but nothing swept it yet.
    pub async fn register_expired(&self, key: impl IntoKey, url: &str) {
        let registration = Registration::new(
            key.into_key(),
            Endpoint::http(url).expect("a valid url"),
            Duration::from_secs(1),
        );
        self.mediator
            .register(&Identity::internal(), registration)
            .await
            .expect("register");
        self.clock().advance(Duration::from_secs(60));
    }

    /// Whether the routing table holds `key`.
    pub fn knows(&self, key: impl IntoKey) -> bool {
        self.mediator.routes().get(&key.into_key()).is_some()
    }

    /// Until when the routing table holds `key`'s lease.
    pub fn lease_until(&self, key: impl IntoKey) -> Option<Timestamp> {
        self.mediator
            .routes()
            .get(&key.into_key())
            .map(|node| node.lease_until)
    }

    /// A node client builder for node `key` of this hub: a token naming
    /// it, the shared [`ring`], and the hub's manual clock when it has one.
    pub fn client(&self, key: impl IntoKey) -> NodeClientBuilder {
        let key = key.into_key();
        let builder = NodeClient::builder(&self.base)
            .token(self.token_for(&key))
            .node_key(key)
            .keys(ring());
        match &self.clock {
            Some(clock) => builder.clock(clock.clone()),
            None => builder,
        }
    }

    /// [`client`](Self::client) with a callback server on a free loopback
    /// port, ready to [`start`](NodeClientBuilder::start).
    pub fn node(&self, key: impl IntoKey) -> NodeClientBuilder {
        self.client(key).callback("http://127.0.0.1:0")
    }

    /// A sender-only node `key` of this hub (it does not register).
    pub async fn sender(&self, key: impl IntoKey) -> NodeClient {
        self.client(key).connect().await.expect("a sender connects")
    }

    /// Stops the listener gracefully, waits until its port is free, and
    /// fails the test if it did not stop cleanly.
    pub async fn stop(mut self) {
        self.shutdown().await.expect("the listener stops cleanly");
    }

    /// Stops the listener gracefully and returns how it ended; the hub
    /// stays, to be looked at afterwards.
    pub async fn shutdown(&mut self) -> Result<(), HttpError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => task.await.expect("the listener task ends"),
            None => Ok(()),
        }
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}
