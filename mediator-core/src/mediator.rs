//! The [`Mediator`]: a registry, an authenticator, a router and limits,
//! composed once and shared by every transport.

use std::sync::Arc;
use std::time::Duration;

use crate::auth::{Authenticator, Identity};
use crate::error::{Error, Result};
use crate::model::{Envelope, Node, NodeId, NodeKey, Registration};
use crate::registry::Registry;
use crate::router::{Deadline, DefaultRouter, Deliver, Routed, Router, RoutingTable};
use crate::time::Timestamp;

/// Bounds the mediator enforces on every request and registration.
#[derive(Debug, Clone, PartialEq, Eq)]
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
        }
    }
}

/// Composes a [`Mediator`].
pub struct MediatorBuilder {
    registry: Option<Arc<dyn Registry>>,
    authenticator: Option<Authenticator>,
    delivers: Vec<Arc<dyn Deliver>>,
    limits: Limits,
    instance: String,
    wrap: Option<RouterWrap>,
}

type RouterWrap = Box<dyn FnOnce(Arc<DefaultRouter>) -> Arc<dyn Router> + Send>;

impl std::fmt::Debug for MediatorBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediatorBuilder")
            .field("registry", &self.registry.is_some())
            .field("authenticator", &self.authenticator.is_some())
            .field("delivers", &self.delivers.len())
            .field("limits", &self.limits)
            .field("instance", &self.instance)
            .finish()
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

    /// How callers prove who they are (required).
    pub fn authenticator(mut self, authenticator: Authenticator) -> Self {
        self.authenticator = Some(authenticator);
        self
    }

    /// Adds a deliverer for one endpoint kind (a later one of the same kind replaces it).
    pub fn deliver(mut self, deliver: impl Deliver) -> Self {
        self.delivers.push(Arc::new(deliver));
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

    /// Wraps the default router (for policies, ACLs, metrics) or replaces it.
    pub fn wrap_router(
        mut self,
        wrap: impl FnOnce(Arc<DefaultRouter>) -> Arc<dyn Router> + Send + 'static,
    ) -> Self {
        self.wrap = Some(Box::new(wrap));
        self
    }

    /// Builds the mediator; fails when the registry or authenticator is missing
    /// or a limit makes no sense.
    pub fn build(self) -> Result<Mediator> {
        let registry = self
            .registry
            .ok_or_else(|| Error::Config("a mediator needs a registry".into()))?;
        let authenticator = self
            .authenticator
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
        let table = Arc::new(RoutingTable::new());
        let default_router = Arc::new(DefaultRouter::new(Arc::clone(&table)));
        for deliver in self.delivers {
            default_router.add_deliver(deliver);
        }
        let router: Arc<dyn Router> = match self.wrap {
            Some(wrap) => wrap(Arc::clone(&default_router)),
            None => default_router.clone(),
        };
        Ok(Mediator {
            inner: Arc::new(Inner {
                registry,
                authenticator,
                table,
                default_router,
                router,
                limits,
                instance: self.instance,
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
///     fn kind(&self) -> EndpointKind { EndpointKind::Http }
///     async fn deliver(&self, _node: &Node, envelope: &Envelope, _deadline: Deadline) -> Result<Reply> {
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
///     Routed::Many(_) => unreachable!("a unicast has one reply"),
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
    authenticator: Authenticator,
    table: Arc<RoutingTable>,
    default_router: Arc<DefaultRouter>,
    router: Arc<dyn Router>,
    limits: Limits,
    instance: String,
}

impl std::fmt::Debug for Mediator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mediator")
            .field("instance", &self.inner.instance)
            .field("nodes", &self.inner.table.len())
            .field("limits", &self.inner.limits)
            .finish()
    }
}

impl Mediator {
    /// Starts composing a mediator.
    pub fn builder() -> MediatorBuilder {
        MediatorBuilder {
            registry: None,
            authenticator: None,
            delivers: Vec::new(),
            limits: Limits::default(),
            instance: format!("mediator-{:016x}", rand::random::<u64>()),
            wrap: None,
        }
    }

    /// Adds a deliverer after building (a transport that exists only once
    /// the mediator does, such as QUIC attachments).
    pub fn with_deliver(self, deliver: impl Deliver) -> Self {
        self.inner.default_router.add_deliver(Arc::new(deliver));
        self
    }

    /// The store of registrations.
    pub fn registry(&self) -> &Arc<dyn Registry> {
        &self.inner.registry
    }

    /// How callers are authenticated.
    pub fn authenticator(&self) -> &Authenticator {
        &self.inner.authenticator
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// This instance's id.
    pub fn instance_id(&self) -> &str {
        &self.inner.instance
    }

    /// The in-memory routing table.
    pub fn table(&self) -> &Arc<RoutingTable> {
        &self.inner.table
    }

    /// Authenticates a bearer token at the current time.
    pub fn authenticate(&self, token: &str) -> Result<Identity> {
        self.inner
            .authenticator
            .authenticate(token, Timestamp::now())
    }

    /// Refuses `caller` acting for `key` unless it is that node or an admin
    /// (which the original's identity-less tokens are, where allowed).
    fn check_acts_for(caller: &Identity, key: &NodeKey) -> Result<()> {
        if caller.admin || (caller.verified && caller.key.as_ref() == Some(key)) {
            return Ok(());
        }
        Err(Error::Forbidden(match &caller.key {
            Some(own) => format!("token is for {own}, not {key}"),
            None => format!("token names no node and may not act for {key}"),
        }))
    }

    /// Registers (or re-registers) a node, at the current time.
    ///
    /// A node may register only as the identity its token names.
    pub async fn register(&self, caller: &Identity, registration: Registration) -> Result<Node> {
        self.register_at(caller, registration, Timestamp::now())
            .await
    }

    /// [`register`](Self::register) at a given time.
    pub async fn register_at(
        &self,
        caller: &Identity,
        registration: Registration,
        now: Timestamp,
    ) -> Result<Node> {
        Self::check_acts_for(caller, &registration.key)?;
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
        let node = self.inner.registry.upsert(registration, now).await?;
        self.inner.table.insert(node.clone());
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
        Self::check_acts_for(caller, key)?;
        let ttl = ttl.clamp(self.inner.limits.min_ttl, self.inner.limits.max_ttl);
        let lease = self
            .inner
            .registry
            .renew(key, ttl, Timestamp::now())
            .await?;
        match lease {
            Some(lease_until) => self.inner.table.renew(key, lease_until),
            None => {
                self.inner.table.remove(key);
            }
        }
        Ok(lease)
    }

    /// Removes a registration by id; returns how many went.
    pub async fn remove(&self, caller: &Identity, id: NodeId) -> Result<u64> {
        let Some(node) = self.inner.registry.get_by_id(id).await? else {
            return Ok(0);
        };
        Self::check_acts_for(caller, &node.key)?;
        let removed = self.inner.registry.remove(id).await?;
        // By id too: the key may have registered again, under a new id.
        self.inner.table.remove_id(&node.key, id);
        tracing::info!(node = %node.key, %id, "removed");
        Ok(removed)
    }

    /// Removes a registration by key; returns how many went.
    pub async fn remove_key(&self, caller: &Identity, key: &NodeKey) -> Result<u64> {
        Self::check_acts_for(caller, key)?;
        let removed = self.inner.registry.remove_key(key).await?;
        self.inner.table.remove(key);
        if removed > 0 {
            tracing::info!(node = %key, "removed");
        }
        Ok(removed)
    }

    /// Routes a request from `caller`, within `deadline` (at most the
    /// configured one).
    ///
    /// The envelope's `from` is set from the caller's verified identity,
    /// whatever the caller put there, so a node cannot speak as another.
    pub async fn route(
        &self,
        caller: &Identity,
        mut envelope: Envelope,
        deadline: Option<Duration>,
    ) -> Result<Routed> {
        let group = envelope.target.group();
        if !caller.may_call(group) {
            return Err(Error::Forbidden(format!(
                "this token may not call group {group}"
            )));
        }
        if envelope.body.len() > self.inner.limits.max_body {
            return Err(Error::invalid(
                "body",
                format!("must be at most {} bytes", self.inner.limits.max_body),
            ));
        }
        envelope.from = if caller.verified {
            caller.key.clone()
        } else {
            None
        };
        let budget = deadline.map_or(self.inner.limits.deadline, |d| {
            d.min(self.inner.limits.deadline)
        });
        self.inner
            .router
            .route(envelope, Deadline::after(budget))
            .await
    }

    /// Every registration, or one group's, from the store.
    pub async fn nodes(&self, group: Option<&str>) -> Result<Vec<Node>> {
        self.inner.registry.list(group).await
    }

    /// Evicts every node whose lease ended by `now`, from the store and the
    /// routing table; returns their keys.
    pub async fn sweep(&self, now: Timestamp) -> Result<Vec<NodeKey>> {
        let gone = self.inner.registry.evict_expired(now).await?;
        for key in &gone {
            // Only if still expired in the table: the node may have
            // registered again since the store evicted it.
            self.inner.table.remove_expired(key, now);
            tracing::info!(node = %key, "evicted: lease ran out");
        }
        Ok(gone)
    }

    /// Reloads the routing table from the store, picking up changes made by
    /// other instances.
    ///
    /// Registrations and removals this instance makes while the store is
    /// read are kept, not undone by the older read.
    pub async fn refresh(&self) -> Result<()> {
        let mark = self.inner.table.begin_refresh();
        let nodes = self.inner.registry.list(None).await?;
        mark.apply(nodes);
        Ok(())
    }

    /// Checks that the store answers.
    pub async fn ready(&self) -> Result<()> {
        self.inner.registry.ping().await
    }

    /// Spawns the background loop that sweeps expired leases and refreshes
    /// the routing table every [`Limits::sweep_every`]. It runs until the
    /// handle is aborted; store failures are logged and retried next period.
    pub fn spawn_maintenance(&self) -> tokio::task::JoinHandle<()> {
        let mediator = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(mediator.inner.limits.sweep_every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = mediator.sweep(Timestamp::now()).await {
                    tracing::warn!(error = %e, "lease sweep failed; retrying next period");
                }
                if let Err(e) = mediator.refresh().await {
                    tracing::warn!(error = %e, "routing table refresh failed; retrying next period");
                }
            }
        })
    }
}
