//! The [`Mediator`]: a registry, policies, deliverers, limits and a clock,
//! composed once and shared by every transport.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::auth::{Authenticator, Identity, TokenMinter};
use crate::budget::BodyBudget;
use crate::clock::{Clock, SystemClock};
use crate::context::{RequestContext, TraceContext};
use crate::deliver::{Deliver, Deliverers};
use crate::error::{Error, Result};
use crate::formation::{
    check_instance_id, ChangeKind, Forward, Instance, PeerKey, PeerLink, FEED_RETENTION,
};
use crate::inflight::InFlight;
use crate::model::{Envelope, Node, NodeId, NodeKey, Registration, Target};
use crate::policy::{
    Authenticate, Authorize, Credentials, DefaultAuthorize, EndpointPolicy, LeastInFlight, Pick,
};
use crate::record::{DeliveryStats, Recorder};
use crate::registry::Registry;
use crate::request_log::{RequestLog, TracingRequestLog, TransportStats};
use crate::router::{Deadline, DefaultRouter, Routed, Router, Routes, RoutingTable};
use crate::store_stats::{StoreStats, TimedRegistry};
use crate::time::Timestamp;

/// Bounds the mediator enforces on every request and registration.
///
/// Start from [`Limits::default`] and change what you need:
///
/// ```
/// use mediator_core::Limits;
/// use std::time::Duration;
/// let mut limits = Limits::default();
/// limits.max_body = 1 << 20;
/// limits.deadline = Duration::from_secs(2);
/// assert_eq!(limits.default_ttl, Duration::from_secs(65 * 60));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// The largest request body accepted (413 past it). Default 8 MiB.
    pub max_body: usize,
    /// How long a delivery may take unless the caller asks for less. Default 10 s.
    pub deadline: Duration,
    /// The lease of a registration that names no `ttl` (every registration of
    /// the original's children). Default 65 minutes: longer than the
    /// original's longest re-registration interval (1 hour).
    pub default_ttl: Duration,
    /// The shortest lease a node may ask for. Default 1 s.
    pub min_ttl: Duration,
    /// The longest lease a node may ask for. Default 24 hours.
    pub max_ttl: Duration,
    /// How often expired leases are swept and the routing table refreshed
    /// from the store (the staleness bound for changes made by other
    /// instances). Default 5 s.
    pub sweep_every: Duration,
    /// The most deliveries in flight at once, all callers together (a
    /// broadcast counts one per node of its group); past it requests are
    /// refused with [`Error::Overloaded`] (503). Default 10 000.
    pub max_in_flight: usize,
    /// The most deliveries in flight at once for one caller (one node; the
    /// callers that name no node share one count). Default 1 000.
    pub max_in_flight_per_caller: usize,
    /// The bytes of request bodies held in memory at once, every transport
    /// together ([`BodyBudget`]); past it requests are refused with
    /// [`Error::Overloaded`] (503). Default 256 MiB: 32 bodies at the
    /// default `max_body`.
    pub body_budget: usize,
    /// How often the store's feed of changes is read, when it keeps one
    /// ([`Registry::changes`]): the bound on how long a change made at
    /// another instance takes to be routable here. Default 50 ms.
    pub follow_every: Duration,
    /// The lease of this instance in a formation, renewed every third of
    /// it; when it runs out, the other instances detach the nodes attached
    /// here. Default 6 s.
    pub instance_ttl: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body: 8 * 1024 * 1024,
            deadline: Duration::from_secs(10),
            default_ttl: Duration::from_secs(65 * 60),
            min_ttl: Duration::from_secs(1),
            max_ttl: Duration::from_secs(24 * 60 * 60),
            sweep_every: Duration::from_secs(5),
            max_in_flight: 10_000,
            max_in_flight_per_caller: 1_000,
            body_budget: 256 * 1024 * 1024,
            follow_every: Duration::from_millis(50),
            instance_ttl: Duration::from_secs(6),
        }
    }
}

/// How many nodes a refresh reads from the store at once: enough that a
/// page's round trip is small beside its rows, few enough that a page is
/// small beside the table.
const REFRESH_PAGE: usize = 1_000;

/// How many changes one read of the feed takes at most.
const FEED_PAGE: usize = 1_000;

type RouterWrap = Box<dyn FnOnce(DefaultRouter) -> Arc<dyn Router> + Send>;

/// Composes a [`Mediator`]: a registry and an authenticator are required;
/// every policy has today's behaviour as its default.
pub struct MediatorBuilder {
    registry: Option<Arc<dyn Registry>>,
    authenticate: Option<Arc<dyn Authenticate>>,
    minter: Option<TokenMinter>,
    authorize: Arc<dyn Authorize>,
    pick: Arc<dyn Pick>,
    endpoints: EndpointPolicy,
    clock: Arc<dyn Clock>,
    delivers: Vec<Arc<dyn Deliver>>,
    recorders: Vec<Arc<dyn Recorder>>,
    limits: Limits,
    instance: String,
    wrap: Option<RouterWrap>,
    request_log: Arc<dyn RequestLog>,
    peer_key: Option<PeerKey>,
    peer_url: String,
    peer_link: Option<Arc<dyn PeerLink>>,
}

impl std::fmt::Debug for MediatorBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediatorBuilder")
            .field("registry", &self.registry.is_some())
            .field("authenticate", &self.authenticate.is_some())
            .field("delivers", &self.delivers.len())
            .field("recorders", &self.recorders.len())
            .field("clock", &self.clock)
            .field("limits", &self.limits)
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

impl MediatorBuilder {
    /// The store of registrations (required).
    pub fn registry(mut self, registry: impl Registry) -> Self {
        self.registry = Some(Arc::new(registry));
        self
    }

    /// The store of registrations, already shared (required unless
    /// [`registry`](Self::registry) was given).
    pub fn shared_registry(mut self, registry: Arc<dyn Registry>) -> Self {
        self.registry = Some(registry);
        self
    }

    /// Checks JWTs with `authenticator`, and mints `/token` tokens with its
    /// key when it has a signing one (HS256). This or
    /// [`authenticate`](Self::authenticate) is required.
    pub fn authenticator(mut self, authenticator: Authenticator) -> Self {
        self.minter = authenticator.minter();
        self.authenticate = Some(Arc::new(authenticator));
        self
    }

    /// Replaces how credentials become identities.
    ///
    /// ```
    /// use mediator_core::policy::{Authenticate, Credentials};
    /// use mediator_core::*;
    ///
    /// /// Everyone is a trusted operator: only for a closed test network.
    /// struct TrustAll;
    /// impl Authenticate for TrustAll {
    ///     fn authenticate(&self, _: &Credentials<'_>, _: Timestamp) -> Result<Identity, AuthError> {
    ///         Ok(Identity::internal())
    ///     }
    /// }
    ///
    /// let mediator = Mediator::builder()
    ///     .registry(MemoryRegistry::new())
    ///     .authenticate(TrustAll)
    ///     .build()?;
    /// let who = mediator.authenticate(&Credentials::Bearer("anything"))?;
    /// assert!(who.admin);
    /// assert!(mediator.minter().is_none(), "no signing key, so no /token");
    /// # Ok::<(), Error>(())
    /// ```
    pub fn authenticate(mut self, policy: impl Authenticate) -> Self {
        self.authenticate = Some(Arc::new(policy));
        self
    }

    /// The key `/token` mints with (set by [`authenticator`](Self::authenticator)
    /// for HS256).
    pub fn token_minter(mut self, minter: TokenMinter) -> Self {
        self.minter = Some(minter);
        self
    }

    /// Replaces who may register as whom, act for whom and call whom
    /// (default [`DefaultAuthorize`]).
    ///
    /// ```
    /// use mediator_core::policy::{Authorize, DefaultAuthorize};
    /// use mediator_core::*;
    /// use std::time::Duration;
    ///
    /// /// Only admins register; everything else as by default.
    /// struct AdminsRegister;
    /// impl Authorize for AdminsRegister {
    ///     fn register_as(&self, caller: &Identity, key: &NodeKey) -> Result<()> {
    ///         if !caller.admin {
    ///             return Err(Error::Forbidden(format!("only admins register {key}")));
    ///         }
    ///         Ok(())
    ///     }
    ///     fn act_for(&self, caller: &Identity, key: &NodeKey) -> Result<()> {
    ///         DefaultAuthorize.act_for(caller, key)
    ///     }
    ///     fn call(&self, caller: &Identity, target: &Target) -> Result<()> {
    ///         DefaultAuthorize.call(caller, target)
    ///     }
    /// }
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let mediator = Mediator::builder()
    ///     .registry(MemoryRegistry::new())
    ///     .authenticator(Authenticator::hs256("a secret of at least 32 bytes!!!"))
    ///     .authorize(AdminsRegister)
    ///     .build()?;
    /// let key = NodeKey::named("users", "api")?;
    /// let node = Identity { key: Some(key.clone()), ..Identity::internal() };
    /// let node = Identity { admin: false, ..node };
    /// let registration = Registration::new(key, Endpoint::http("http://127.0.0.1:9000")?, Duration::from_secs(30));
    /// let refused = mediator.register(&node, registration).await.unwrap_err();
    /// assert_eq!(refused.status(), 403);
    /// # Ok::<(), Error>(())
    /// # }).unwrap();
    /// ```
    pub fn authorize(mut self, policy: impl Authorize) -> Self {
        self.authorize = Arc::new(policy);
        self
    }

    /// Replaces the choice of node for any-of-group requests (default
    /// [`LeastInFlight`]).
    ///
    /// ```
    /// use mediator_core::policy::{Candidate, LeastInFlight, Pick, Turn};
    /// use mediator_core::*;
    ///
    /// /// Nodes that registered with `canary=true` get no any-of-group
    /// /// traffic while another node is live; the rest as by default.
    /// struct SpareCanaries;
    /// impl Pick for SpareCanaries {
    ///     fn pick(&self, group: &str, candidates: &[Candidate<'_>], turn: &mut Turn<'_>) -> Option<usize> {
    ///         let regular: Vec<usize> = (0..candidates.len())
    ///             .filter(|&i| candidates[i].node().meta.get("canary").is_none_or(|v| v != "true"))
    ///             .collect();
    ///         if regular.is_empty() {
    ///             return LeastInFlight.pick(group, candidates, turn);
    ///         }
    ///         let chosen: Vec<Candidate<'_>> = regular.iter().map(|&i| candidates[i]).collect();
    ///         LeastInFlight.pick(group, &chosen, turn).map(|i| regular[i])
    ///     }
    /// }
    ///
    /// let mediator = Mediator::builder()
    ///     .registry(MemoryRegistry::new())
    ///     .authenticator(Authenticator::hs256("a secret of at least 32 bytes!!!"))
    ///     .pick(SpareCanaries)
    ///     .build()?;
    /// # let _ = mediator;
    /// # Ok::<(), Error>(())
    /// ```
    pub fn pick(mut self, policy: impl Pick) -> Self {
        self.pick = Arc::new(policy);
        self
    }

    /// Which networks a node's callback endpoint may point into (default
    /// [`EndpointPolicy::default`]: anything but link-local networks and the
    /// mediator's own listening addresses).
    pub fn endpoint_policy(mut self, policy: EndpointPolicy) -> Self {
        self.endpoints = policy;
        self
    }

    /// The clock leases, expiry and sweeps read (default [`SystemClock`]).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Adds a deliverer for the endpoint schemes it serves; [`build`](Self::build)
    /// refuses two that claim the same scheme.
    pub fn deliver(mut self, deliver: impl Deliver) -> Self {
        self.delivers.push(Arc::new(deliver));
        self
    }

    /// Adds a recorder of every delivery, beside the mediator's own
    /// [`DeliveryStats`].
    pub fn recorder(mut self, recorder: impl Recorder) -> Self {
        self.recorders.push(Arc::new(recorder));
        self
    }

    /// The default deadline of a delivery.
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.limits.deadline = deadline;
        self
    }

    /// The largest request body accepted.
    pub fn max_body(mut self, bytes: usize) -> Self {
        self.limits.max_body = bytes;
        self
    }

    /// Every limit at once.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// This instance's id, recorded for nodes attached to it. Default: random.
    pub fn instance_id(mut self, id: impl Into<String>) -> Self {
        self.instance = id.into();
        self
    }

    /// Joins this instance to a formation: other mediator instances on the
    /// same store reach it at `peer_url` (the base URL of its API) with
    /// credentials made by `key`, and it forwards calls for nodes attached
    /// to them over `link`. Without it an instance still announces itself
    /// to a store that keeps instances, with no peer address, and answers
    /// calls for nodes attached elsewhere with 503.
    pub fn formation(
        mut self,
        key: PeerKey,
        peer_url: impl Into<String>,
        link: impl PeerLink,
    ) -> Self {
        self.peer_key = Some(key);
        self.peer_url = peer_url.into();
        self.peer_link = Some(Arc::new(link));
        self
    }

    /// Where every request's record goes, whatever transport answered it
    /// (see [`RequestLog`]). Default: one `tracing` event per request
    /// ([`TracingRequestLog`]).
    pub fn request_log(mut self, log: impl RequestLog) -> Self {
        self.request_log = Arc::new(log);
        self
    }

    /// Wraps the default router (for ACLs, sharding, metrics) or replaces
    /// it; the wrapper sees each request's [`RequestContext`], with the
    /// authenticated caller.
    pub fn wrap_router(
        mut self,
        wrap: impl FnOnce(DefaultRouter) -> Arc<dyn Router> + Send + 'static,
    ) -> Self {
        self.wrap = Some(Box::new(wrap));
        self
    }

    /// Builds the mediator; fails when the registry or authenticator is
    /// missing, two deliverers claim one scheme, or a limit makes no sense.
    pub fn build(self) -> Result<Mediator> {
        let registry = self
            .registry
            .ok_or_else(|| Error::Config("a mediator needs a registry".into()))?;
        let store_stats = Arc::new(StoreStats::default());
        let registry: Arc<dyn Registry> =
            Arc::new(TimedRegistry::new(registry, Arc::clone(&store_stats)));
        let authenticate = self
            .authenticate
            .ok_or_else(|| Error::Config("a mediator needs an authenticator".into()))?;
        let limits = self.limits;
        if limits.deadline.is_zero() || limits.sweep_every.is_zero() {
            return Err(Error::Config(
                "deadline and sweep period must be above zero".into(),
            ));
        }
        if limits.min_ttl > limits.max_ttl
            || limits.default_ttl < limits.min_ttl
            || limits.default_ttl > limits.max_ttl
        {
            return Err(Error::Config(
                "leases must satisfy min_ttl <= default_ttl <= max_ttl".into(),
            ));
        }
        let mut delivers = Deliverers::default();
        for deliver in self.delivers {
            delivers.add(deliver)?;
        }
        if limits.max_in_flight == 0 || limits.max_in_flight_per_caller == 0 {
            return Err(Error::Config(
                "the bounds on deliveries in flight must be above zero".into(),
            ));
        }
        let in_flight = InFlight::new(limits.max_in_flight, limits.max_in_flight_per_caller);
        if limits.body_budget < limits.max_body {
            return Err(Error::Config(
                "the body budget must hold at least one body of max_body bytes".into(),
            ));
        }
        let bodies = BodyBudget::new(limits.body_budget);
        let stats = Arc::new(DeliveryStats::default().with_clock(Arc::clone(&self.clock)));
        let mut recorders: Vec<Arc<dyn Recorder>> = vec![Arc::clone(&stats) as Arc<dyn Recorder>];
        recorders.extend(self.recorders);
        if limits.follow_every.is_zero() || limits.instance_ttl < Duration::from_secs(1) {
            return Err(Error::Config(
                "the feed period must be above zero and the instance lease at least 1 s".into(),
            ));
        }
        check_instance_id(&self.instance)?;
        let forward = match (&self.peer_key, &self.peer_link) {
            (Some(key), Some(link)) => Some(Arc::new(Forward::new(
                self.instance.clone(),
                key.clone(),
                Arc::clone(link),
                Arc::clone(&registry),
                Arc::clone(&self.clock),
            ))),
            _ => None,
        };
        let table = Arc::new(RoutingTable::new());
        let default_router = DefaultRouter::new(
            Arc::clone(&table),
            delivers,
            self.pick,
            Arc::clone(&self.clock),
            recorders,
            forward.clone(),
        );
        let router_is_default = self.wrap.is_none();
        let router: Arc<dyn Router> = match self.wrap {
            Some(wrap) => wrap(default_router.clone()),
            None => Arc::new(default_router.clone()),
        };
        Ok(Mediator {
            inner: Arc::new(Inner {
                registry,
                authenticate,
                minter: self.minter,
                authorize: self.authorize,
                endpoints: Arc::new(self.endpoints),
                clock: self.clock,
                table,
                default_router,
                router,
                router_is_default,
                stats,
                store_stats,
                evictions: AtomicU64::new(0),
                in_flight,
                bodies,
                transports: TransportStats::default(),
                request_log: self.request_log,
                limits,
                instance: self.instance,
                peer_key: self.peer_key,
                peer_url: self.peer_url,
                forward,
                feed: tokio::sync::Mutex::new(None),
                feed_marks: std::sync::Mutex::new(std::collections::VecDeque::new()),
            }),
        })
    }
}

/// The hub: registers nodes, authorises callers and routes their requests.
///
/// Cheap to clone; every clone shares one state. Transports take a clone.
///
/// ```
/// use mediator_core::*;
/// use std::time::Duration;
///
/// /// A deliverer that answers every request with the body it got.
/// struct Echo;
///
/// #[async_trait]
/// impl Deliver for Echo {
///     fn schemes(&self) -> Vec<String> { vec!["http".into()] }
///     async fn deliver(&self, _node: &Node, envelope: &Envelope, _cx: &RequestContext)
///         -> Result<Reply, DeliverError> {
///         Ok(Reply::new(http::StatusCode::OK, envelope.body.clone()))
///     }
/// }
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let mediator = Mediator::builder()
///     .registry(MemoryRegistry::new())
///     .authenticator(Authenticator::hs256(b"a secret of at least 32 bytes!!!"))
///     .deliver(Echo)
///     .deadline(Duration::from_secs(2))
///     .build()?;
///
/// let api = NodeKey::named("users", "api")?;
/// let me = Identity::internal();
/// mediator
///     .register(&me, Registration::new(api.clone(), Endpoint::http("http://127.0.0.1:9000")?, Duration::from_secs(30)))
///     .await?;
///
/// match mediator.route(&me, Envelope::new(Target::One(api), "/lookup", "hello"), None).await? {
///     Routed::One { reply, .. } => assert_eq!(reply.body, "hello"),
///     _ => unreachable!("a unicast has one reply"),
/// }
/// # Ok::<(), Error>(())
/// # }).unwrap();
/// ```
#[derive(Clone)]
pub struct Mediator {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Arc<dyn Registry>,
    authenticate: Arc<dyn Authenticate>,
    minter: Option<TokenMinter>,
    authorize: Arc<dyn Authorize>,
    endpoints: Arc<EndpointPolicy>,
    clock: Arc<dyn Clock>,
    table: Arc<RoutingTable>,
    default_router: DefaultRouter,
    router: Arc<dyn Router>,
    /// Whether `router` is the default router itself, unwrapped: only
    /// then may a call pass through ([`Mediator::pass`]) without it.
    router_is_default: bool,
    stats: Arc<DeliveryStats>,
    store_stats: Arc<StoreStats>,
    /// Nodes evicted by sweeps since start.
    evictions: AtomicU64,
    in_flight: InFlight,
    bodies: BodyBudget,
    transports: TransportStats,
    request_log: Arc<dyn RequestLog>,
    limits: Limits,
    instance: String,
    peer_key: Option<PeerKey>,
    /// Where peers reach this instance; empty when they do not.
    peer_url: String,
    forward: Option<Arc<Forward>>,
    /// The feed position the routing table has applied; `None` before the
    /// first full load.
    feed: tokio::sync::Mutex<Option<u64>>,
    /// When each sweep saw which feed position, oldest first: compaction
    /// forgets what this instance read [`FEED_RETENTION`] ago.
    feed_marks: std::sync::Mutex<std::collections::VecDeque<(Timestamp, u64)>>,
}

impl std::fmt::Debug for Mediator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mediator")
            .field("instance", &self.inner.instance)
            .field("nodes", &self.inner.table.len())
            .field("delivers", &self.inner.default_router.schemes())
            .field("limits", &self.inner.limits)
            .finish_non_exhaustive()
    }
}

impl Mediator {
    /// Starts composing a mediator.
    pub fn builder() -> MediatorBuilder {
        MediatorBuilder {
            registry: None,
            authenticate: None,
            minter: None,
            authorize: Arc::new(DefaultAuthorize),
            pick: Arc::new(LeastInFlight),
            endpoints: EndpointPolicy::default(),
            clock: Arc::new(SystemClock),
            delivers: Vec::new(),
            recorders: Vec::new(),
            limits: Limits::default(),
            instance: format!("mediator-{:016x}", rand::random::<u64>()),
            wrap: None,
            request_log: Arc::new(TracingRequestLog),
            peer_key: None,
            peer_url: String::new(),
            peer_link: None,
        }
    }

    /// Adds a deliverer after building (a transport that exists only once
    /// the mediator does, such as QUIC attachments); refuses one that
    /// claims a scheme already served.
    pub fn add_deliver(&self, deliver: impl Deliver) -> Result<()> {
        self.inner.default_router.add_deliver(Arc::new(deliver))
    }

    /// The store of registrations.
    pub fn registry(&self) -> &Arc<dyn Registry> {
        &self.inner.registry
    }

    /// The key `/token` mints with, if the mediator has one.
    pub fn minter(&self) -> Option<&TokenMinter> {
        self.inner.minter.as_ref()
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// This instance's id.
    pub fn instance_id(&self) -> &str {
        &self.inner.instance
    }

    /// The clock leases and sweeps read.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }

    /// A read-only view of the routing table.
    pub fn routes(&self) -> Routes {
        Routes::new(Arc::clone(&self.inner.table))
    }

    /// Which endpoints nodes may register; a listener records its own
    /// address here once bound ([`EndpointPolicy::add_own_address`]).
    pub fn endpoint_policy(&self) -> &EndpointPolicy {
        &self.inner.endpoints
    }

    /// Every delivery so far, per group.
    pub fn delivery_stats(&self) -> &Arc<DeliveryStats> {
        &self.inner.stats
    }

    /// Count, errors and latency of this mediator's calls to its registry.
    pub fn store_stats(&self) -> &Arc<StoreStats> {
        &self.inner.store_stats
    }

    /// Nodes evicted since start because their lease ran out.
    pub fn evictions(&self) -> u64 {
        self.inner.evictions.load(Ordering::Relaxed)
    }

    /// Where request records go ([`MediatorBuilder::request_log`]).
    pub fn request_log(&self) -> &dyn RequestLog {
        &*self.inner.request_log
    }

    /// Checks that `caller` may call `target`, by the mediator's
    /// [`Authorize`] policy.
    pub fn authorize(&self, caller: &Identity, target: &Target) -> Result<()> {
        self.inner.authorize.call(caller, target)
    }

    /// The budget every transport counts the request bodies it holds in
    /// memory against ([`Limits::body_budget`]).
    pub fn body_budget(&self) -> &BodyBudget {
        &self.inner.bodies
    }

    /// The requests answered and nodes attached by the transports that
    /// count them in the core (the QUIC listener), for the metrics.
    pub fn transport_stats(&self) -> &TransportStats {
        &self.inner.transports
    }

    /// Deliveries in flight now, over every caller (a broadcast counts
    /// one per node asked).
    pub fn deliveries_in_flight(&self) -> usize {
        self.inner.in_flight.total()
    }

    /// The schemes of the endpoints this mediator can deliver to.
    pub fn schemes(&self) -> Vec<String> {
        self.inner.default_router.schemes()
    }

    /// Checks credentials at the clock's current time.
    pub fn authenticate(&self, credentials: &Credentials<'_>) -> Result<Identity> {
        Ok(self
            .inner
            .authenticate
            .authenticate(credentials, self.inner.clock.now())?)
    }

    /// Registers (or re-registers) a node, at the clock's current time.
    ///
    /// The [`Authorize`] policy decides who may register as whom (by
    /// default, a node only as the identity its token names), and the
    /// [`EndpointPolicy`] where a node may ask to be called.
    pub async fn register(&self, caller: &Identity, registration: Registration) -> Result<Node> {
        self.inner
            .authorize
            .register_as(caller, &registration.key)?;
        self.inner.endpoints.check(&registration.endpoint)?;
        let limits = &self.inner.limits;
        if registration.ttl < limits.min_ttl || registration.ttl > limits.max_ttl {
            return Err(Error::invalid(
                "ttl",
                format!(
                    "must be between {} and {} seconds",
                    limits.min_ttl.as_secs(),
                    limits.max_ttl.as_secs()
                ),
            ));
        }
        let node = self
            .inner
            .registry
            .upsert(registration, self.inner.clock.now())
            .await?;
        self.inner.table.insert(self.share(node.clone()));
        tracing::info!(node = %node.key, id = %node.id, endpoint = %node.endpoint, "registered");
        Ok(node)
    }

    /// Extends a node's lease by `ttl` from now; `None` when the node is not
    /// registered (it should register again).
    pub async fn renew(
        &self,
        caller: &Identity,
        key: &NodeKey,
        ttl: Duration,
    ) -> Result<Option<Timestamp>> {
        self.inner.authorize.act_for(caller, key)?;
        let ttl = ttl.clamp(self.inner.limits.min_ttl, self.inner.limits.max_ttl);
        let now = self.inner.clock.now();
        let lease = self.inner.registry.renew(key, ttl, now).await?;
        // Renewals come every third of a lease from every node: routine,
        // so below the default log level.
        match lease {
            Some(lease_until) => {
                self.inner
                    .table
                    .renew(key, lease_until, now, |node| self.share(node));
                tracing::debug!(node = %key, until_ms = lease_until.as_millis(), "lease renewed");
            }
            None => {
                self.inner.table.remove(key);
                tracing::debug!(node = %key, "renewal of an unknown node");
            }
        }
        Ok(lease)
    }

    /// Removes a registration by id; returns how many went.
    ///
    /// A caller that may not act for the node under `id` (the [`Authorize`]
    /// policy refuses it as forbidden or unauthorised) gets `Ok(0)`, the
    /// very answer an unknown id gets: were the two told apart, any caller
    /// could learn which ids exist by trying them.
    pub async fn remove(&self, caller: &Identity, id: NodeId) -> Result<u64> {
        let Some(node) = self.inner.registry.get_by_id(id).await? else {
            return Ok(0);
        };
        match self.inner.authorize.act_for(caller, &node.key) {
            Ok(()) => {}
            Err(Error::Forbidden(_) | Error::Unauthorized(_)) => {
                tracing::debug!(%id, "remove refused: the caller may not act for this node");
                return Ok(0);
            }
            Err(e) => return Err(e),
        }
        let removed = self.inner.registry.remove(id).await?;
        // By id too: the key may have registered again, under a new id.
        self.inner.table.remove_id(&node.key, id);
        self.inner.stats.forget_node(&node.key);
        tracing::info!(node = %node.key, %id, "removed");
        Ok(removed)
    }

    /// Removes a registration by key; returns how many went.
    pub async fn remove_key(&self, caller: &Identity, key: &NodeKey) -> Result<u64> {
        self.inner.authorize.act_for(caller, key)?;
        let removed = self.inner.registry.remove_key(key).await?;
        self.inner.table.remove(key);
        if removed > 0 {
            self.inner.stats.forget_node(key);
            tracing::info!(node = %key, "removed");
        }
        Ok(removed)
    }

    /// Routes a request from `caller`, within `deadline` (at most the
    /// configured one), unless the bounds on deliveries in flight
    /// ([`Limits::max_in_flight`], [`Limits::max_in_flight_per_caller`])
    /// are reached: then it fails at once with [`Error::Overloaded`].
    ///
    /// The envelope's `from` is set from the caller's verified identity,
    /// whatever the caller put there, so a node cannot speak as another.
    pub async fn route(
        &self,
        caller: &Identity,
        envelope: Envelope,
        deadline: Option<Duration>,
    ) -> Result<Routed> {
        self.route_with(caller, envelope, deadline, TraceContext::default())
            .await
    }

    /// [`route`](Self::route), passing the caller's trace ids to the
    /// router and deliverers.
    pub async fn route_with(
        &self,
        caller: &Identity,
        envelope: Envelope,
        deadline: Option<Duration>,
        trace: TraceContext,
    ) -> Result<Routed> {
        self.inner.authorize.call(caller, &envelope.target)?;
        self.route_authorized(caller, envelope, deadline, trace, None)
            .await
    }

    /// [`route_with`](Self::route_with) for a caller already authorized
    /// for the envelope's target.
    pub(crate) async fn route_authorized(
        &self,
        caller: &Identity,
        mut envelope: Envelope,
        deadline: Option<Duration>,
        trace: TraceContext,
        forwarded: Option<Forwarded>,
    ) -> Result<Routed> {
        if envelope.body.len() > self.inner.limits.max_body {
            return Err(Error::TooLarge {
                limit: self.inner.limits.max_body,
            });
        }
        envelope.from = if caller.verified {
            caller.key.clone()
        } else {
            None
        };
        let budget = deadline.map_or(self.inner.limits.deadline, |d| {
            d.min(self.inner.limits.deadline)
        });
        let cx = RequestContext::new(
            caller.clone(),
            Deadline::starting(self.inner.clock.now(), budget),
        )
        .with_trace(trace)
        .with_endpoints(Arc::clone(&self.inner.endpoints))
        .with_forwarded_by(forwarded.as_ref().map(|f| f.instance.clone()));
        if let Some(forwarded) = forwarded {
            // One node, chosen where the caller called: delivered here
            // whatever the envelope's target, which the node checks.
            let _permit = self.inner.in_flight.acquire(caller, 1)?;
            return self
                .inner
                .default_router
                .one(&forwarded.node, &envelope, &cx)
                .await;
        }
        let deliveries = match &envelope.target {
            Target::All(group) => self.inner.table.group_len(group).max(1),
            Target::One(_) | Target::Any(_) => 1,
        };
        let _permit = self.inner.in_flight.acquire(caller, deliveries)?;
        self.inner.router.route(envelope, &cx).await
    }

    /// The endpoint policy as deliveries share it.
    pub(crate) fn shared_endpoint_policy(&self) -> &Arc<EndpointPolicy> {
        &self.inner.endpoints
    }

    /// The deliverer serving endpoints of `scheme`, if any.
    pub fn deliverer(&self, scheme: &str) -> Option<Arc<dyn Deliver>> {
        self.inner.default_router.deliverer_for(scheme)
    }

    /// The default router, and whether it routes every call (no router
    /// wraps it).
    pub(crate) fn default_router(&self) -> (&DefaultRouter, bool) {
        (&self.inner.default_router, self.inner.router_is_default)
    }

    /// Admits `deliveries` more deliveries for `caller` under the bounds
    /// on deliveries in flight.
    pub(crate) fn admit(
        &self,
        caller: &Identity,
        deliveries: usize,
    ) -> Result<crate::inflight::Permit<'_>> {
        self.inner.in_flight.acquire(caller, deliveries)
    }

    /// Every registration, or one group's, from the store.
    pub async fn nodes(&self, group: Option<&str>) -> Result<Vec<Node>> {
        Ok(self.inner.registry.list(group).await?)
    }

    /// One page of registrations (of one group, or all), ordered by id:
    /// at most `limit`, with ids above `after`.
    pub async fn nodes_page(
        &self,
        group: Option<&str>,
        after: Option<NodeId>,
        limit: usize,
    ) -> Result<Vec<Node>> {
        Ok(self.inner.registry.list_page(group, after, limit).await?)
    }

    /// Evicts every node whose lease ended by the clock's current time,
    /// from the store and the routing table; returns their keys.
    pub async fn sweep(&self) -> Result<Vec<NodeKey>> {
        let now = self.inner.clock.now();
        let gone = self.inner.registry.evict_expired(now).await?;
        self.inner
            .evictions
            .fetch_add(gone.len() as u64, Ordering::Relaxed);
        for key in &gone {
            // Only if still expired in the table: the node may have
            // registered again since the store evicted it.
            self.inner.table.remove_expired(key, now);
            self.inner.stats.forget_node(key);
            tracing::info!(node = %key, "evicted: lease ran out");
        }
        Ok(gone)
    }

    /// Reloads the routing table from the store, picking up changes made by
    /// other instances.
    ///
    /// Registrations and removals this instance makes while the store is
    /// read are kept, not undone by the older read. The store is read a
    /// page at a time, so a refresh never holds a second copy of every
    /// node; and not at all when its [version](Registry::version) is what
    /// the last refresh read.
    pub async fn refresh(&self) -> Result<()> {
        self.reload(true).await.map(|_| ())
    }

    /// Reads the whole store into the routing table; returns the version
    /// read before the first page, so that every change after it is in
    /// the feed after that position.
    async fn reload(&self, skip_unchanged: bool) -> Result<Option<u64>> {
        let mut mark = self.inner.table.begin_refresh();
        let registry = &self.inner.registry;
        let version = registry.version().await?;
        if skip_unchanged && self.inner.table.refreshed_at(version) {
            return Ok(version);
        }
        let mut after = None;
        loop {
            let page = registry.list_page(None, after, REFRESH_PAGE).await?;
            let last_page = page.len() < REFRESH_PAGE;
            after = page.last().map(|node| node.id);
            // A refresh marked later already wrote what it read: newer.
            if !mark.read(page, |node| self.share(node)) {
                return Ok(version);
            }
            if last_page {
                break;
            }
        }
        mark.finish(version);
        Ok(version)
    }

    /// Applies the changes the store's feed holds since the last read to
    /// the routing table: what other instances changed becomes routable
    /// here without reading the whole store. The first call (and one after
    /// a gap in the feed) loads the whole store instead.
    ///
    /// Returns `false`, doing nothing, when the store keeps no feed; a
    /// mediator then [refreshes](Self::refresh) every sweep instead.
    pub async fn follow(&self) -> Result<bool> {
        let registry = &self.inner.registry;
        let mut position = self.inner.feed.lock().await;
        let mut at = match *position {
            Some(at) => at,
            None => {
                let Some(version) = registry.version().await? else {
                    return Ok(false);
                };
                if registry.changes(version, 0).await?.is_none() {
                    return Ok(false);
                }
                self.reload(false).await?;
                *position = Some(version);
                version
            }
        };
        loop {
            let Some(page) = registry.changes(at, FEED_PAGE).await? else {
                *position = None;
                return Ok(false);
            };
            if page.gap {
                tracing::warn!(
                    position = at,
                    "the store's feed was compacted past this instance; reloading the store"
                );
                let version = registry.version().await?.unwrap_or(0);
                self.reload(false).await?;
                at = version;
                *position = Some(at);
                continue;
            }
            let full = page.changes.len() >= FEED_PAGE;
            for change in page.changes {
                match change.kind {
                    ChangeKind::Put(node) => self.inner.table.insert(self.share(node)),
                    ChangeKind::Removed { id, key } => {
                        if self.inner.table.remove_id(&key, id) {
                            self.inner.stats.forget_node(&key);
                        }
                    }
                }
            }
            at = page.next;
            *position = Some(at);
            if !full {
                return Ok(true);
            }
        }
    }

    /// Forgets the feed entries this instance read [`FEED_RETENTION`] ago
    /// or earlier: every instance following the feed more closely than
    /// that has read them, and one further behind reloads.
    async fn compact(&self) -> Result<()> {
        let now = self.inner.clock.now();
        let Some(position) = *self.inner.feed.lock().await else {
            return Ok(());
        };
        let through = {
            let mut marks = self
                .inner
                .feed_marks
                .lock()
                .map_err(|_| Error::Config("feed marks lock poisoned".into()))?;
            marks.push_back((now, position));
            let mut through = None;
            while marks
                .front()
                .is_some_and(|(at, _)| *at + FEED_RETENTION <= now)
            {
                through = marks.pop_front().map(|(_, position)| position);
            }
            through
        };
        if let Some(through) = through {
            let gone = self.inner.registry.compact_changes(through).await?;
            tracing::debug!(through, gone, "feed compacted");
        }
        Ok(())
    }

    /// Renews this instance's lease in the store (announcing it the first
    /// time), retires the instances whose lease ran out with the nodes
    /// attached to them, and reads who is in the formation now.
    pub async fn heartbeat(&self) -> Result<Instance> {
        let inner = &self.inner;
        let now = inner.clock.now();
        let me = inner
            .registry
            .announce_instance(
                &inner.instance,
                &inner.peer_url,
                inner.limits.instance_ttl,
                now,
            )
            .await?;
        for retired in inner.registry.expire_instances(now).await? {
            for key in &retired.detached {
                if inner.table.remove_attached(key, &retired.id) {
                    inner.stats.forget_node(key);
                }
            }
            tracing::warn!(
                instance = %retired.id,
                detached = retired.detached.len(),
                "a mediator instance's lease ran out: the nodes attached to it are detached"
            );
        }
        if let Some(forward) = &inner.forward {
            forward.learn(inner.registry.instances().await?);
        }
        Ok(me)
    }

    /// Every instance of the formation, as the store holds it.
    pub async fn instances(&self) -> Result<Vec<Instance>> {
        Ok(self.inner.registry.instances().await?)
    }

    /// Leaves the formation: removes this instance from the store with the
    /// nodes attached to it, so other instances stop routing to them at
    /// once rather than when the lease runs out. Returns their keys.
    pub async fn leave(&self) -> Result<Vec<NodeKey>> {
        let detached = self
            .inner
            .registry
            .retire_instance(&self.inner.instance)
            .await?;
        for key in &detached {
            self.inner.table.remove_attached(key, &self.inner.instance);
        }
        tracing::info!(detached = detached.len(), "left the formation");
        Ok(detached)
    }

    /// Where this instance's peers reach it; empty when they do not.
    pub fn peer_url(&self) -> &str {
        &self.inner.peer_url
    }

    /// The instance a peer's credential names, if it is genuine and
    /// current; `401` otherwise, and when this instance is in no
    /// formation.
    pub fn verify_peer(&self, credential: &str) -> Result<String> {
        let key = self
            .inner
            .peer_key
            .as_ref()
            .ok_or_else(|| Error::unauthorized("this instance takes no forwarded calls"))?;
        Ok(key.verify(credential, self.inner.clock.now())?)
    }

    /// The store's own copy of `node` if it has one, else a new one: what
    /// the routing table holds.
    fn share(&self, node: Node) -> Arc<Node> {
        self.inner
            .registry
            .shared(&node)
            .unwrap_or_else(|| Arc::new(node))
    }

    /// Checks that the store answers.
    pub async fn ready(&self) -> Result<()> {
        Ok(self.inner.registry.ping().await?)
    }

    /// Spawns the background loop: every [`Limits::follow_every`] it reads
    /// the store's feed ([`follow`](Self::follow)); every
    /// [`Limits::sweep_every`] it sweeps expired leases, compacts the feed,
    /// and refreshes the routing table whole when the store keeps no feed;
    /// every third of [`Limits::instance_ttl`] it renews this instance in
    /// the formation ([`heartbeat`](Self::heartbeat)). It runs on the
    /// mediator's clock until the handle is aborted; store failures are
    /// logged when they start and end, and retried next period.
    pub fn spawn_maintenance(&self) -> tokio::task::JoinHandle<()> {
        let mediator = self.clone();
        tokio::spawn(async move {
            let clock = Arc::clone(&mediator.inner.clock);
            let limits = mediator.inner.limits.clone();
            let beat_every = limits.instance_ttl / 3;
            let mut next_sweep = clock.now();
            let mut next_beat = clock.now();
            let mut follows = true;
            let mut failing = Failing::default();
            loop {
                let now = clock.now();
                if now >= next_beat {
                    next_beat = now + beat_every;
                    failing.note("formation heartbeat", mediator.heartbeat().await);
                }
                if follows {
                    match mediator.follow().await {
                        Ok(true) => failing.note("feed read", Ok(())),
                        Ok(false) => follows = false,
                        Err(e) => failing.note("feed read", Err::<(), _>(e)),
                    }
                }
                if now >= next_sweep {
                    next_sweep = now + limits.sweep_every;
                    failing.note("lease sweep", mediator.sweep().await);
                    if follows {
                        failing.note("feed compaction", mediator.compact().await);
                    } else {
                        failing.note("routing table refresh", mediator.refresh().await);
                    }
                }
                let mut wake = next_sweep.min(next_beat);
                if follows {
                    wake = wake.min(clock.now() + limits.follow_every);
                }
                clock.sleep_until(wake).await;
            }
        })
    }
}

/// A call another instance of the formation forwarded here: which, and
/// the node it chose.
pub(crate) struct Forwarded {
    pub(crate) instance: String,
    pub(crate) node: NodeKey,
}

/// Which of the maintenance duties are failing now, so that a store that
/// went away is logged once when it goes and once when it is back, not
/// every period.
#[derive(Default)]
struct Failing(std::collections::BTreeSet<&'static str>);

impl Failing {
    fn note<T>(&mut self, duty: &'static str, result: Result<T>) {
        match result {
            Ok(_) => {
                if self.0.remove(duty) {
                    tracing::info!(duty, "the store answers again");
                }
            }
            Err(e) => {
                if self.0.insert(duty) {
                    tracing::warn!(duty, error = %e, "failed; retrying every period");
                } else {
                    tracing::debug!(duty, error = %e, "still failing");
                }
            }
        }
    }
}
