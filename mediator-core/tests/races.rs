//! The routing table against concurrent writers: a refresh or a sweep that
//! read the store before a registration or a removal must not undo it when
//! it writes the table afterwards.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::StatusCode;
use mediator_core::{
    async_trait, Authenticator, Deliver, DeliverError, Endpoint, Envelope, Identity, ManualClock,
    Mediator, MemoryRegistry, Node, NodeId, NodeKey, Registration, Registry, Reply, RequestContext,
    Routed, StoreError, Target, Timestamp,
};

type Result<T> = std::result::Result<T, StoreError>;
use tokio::sync::oneshot;

/// Pauses one call between reading the store and returning to the caller.
struct Hold {
    reached: oneshot::Sender<()>,
    release: oneshot::Receiver<()>,
}

impl Hold {
    async fn wait(self) {
        let _ = self.reached.send(());
        let _ = self.release.await;
    }
}

/// A memory registry whose next `list`, `evict_expired` or `remove` can be
/// held after it has done its work, so another request can run in between.
#[derive(Default)]
struct Gated {
    inner: MemoryRegistry,
    hold_list: Mutex<Option<Hold>>,
    hold_evict: Mutex<Option<Hold>>,
    hold_remove: Mutex<Option<Hold>>,
}

/// The two ends of a hold: wait until the call is held, then release it.
struct Gate {
    reached: oneshot::Receiver<()>,
    release: oneshot::Sender<()>,
}

fn gate(slot: &Mutex<Option<Hold>>) -> Gate {
    let (reached_tx, reached) = oneshot::channel();
    let (release, release_rx) = oneshot::channel();
    *slot.lock().unwrap() = Some(Hold {
        reached: reached_tx,
        release: release_rx,
    });
    Gate { reached, release }
}

#[async_trait]
impl Registry for Gated {
    async fn upsert(&self, r: Registration, now: Timestamp) -> Result<Node> {
        self.inner.upsert(r, now).await
    }
    async fn renew(
        &self,
        key: &NodeKey,
        ttl: Duration,
        now: Timestamp,
    ) -> Result<Option<Timestamp>> {
        self.inner.renew(key, ttl, now).await
    }
    async fn remove(&self, id: NodeId) -> Result<u64> {
        let removed = self.inner.remove(id).await;
        let hold = self.hold_remove.lock().unwrap().take();
        if let Some(hold) = hold {
            hold.wait().await;
        }
        removed
    }
    async fn remove_key(&self, key: &NodeKey) -> Result<u64> {
        self.inner.remove_key(key).await
    }
    async fn get(&self, key: &NodeKey) -> Result<Option<Node>> {
        self.inner.get(key).await
    }
    async fn get_by_id(&self, id: NodeId) -> Result<Option<Node>> {
        self.inner.get_by_id(id).await
    }
    async fn list(&self, group: Option<&str>) -> Result<Vec<Node>> {
        let nodes = self.inner.list(group).await;
        let hold = self.hold_list.lock().unwrap().take();
        if let Some(hold) = hold {
            hold.wait().await;
        }
        nodes
    }
    async fn evict_expired(&self, now: Timestamp) -> Result<Vec<NodeKey>> {
        let gone = self.inner.evict_expired(now).await;
        let hold = self.hold_evict.lock().unwrap().take();
        if let Some(hold) = hold {
            hold.wait().await;
        }
        gone
    }
}

struct Ok200;

#[async_trait]
impl Deliver for Ok200 {
    fn schemes(&self) -> Vec<String> {
        vec!["http".into()]
    }
    async fn deliver(
        &self,
        _: &Node,
        _: &Envelope,
        _: &RequestContext,
    ) -> std::result::Result<Reply, DeliverError> {
        Ok(Reply::new(StatusCode::OK, "ok"))
    }
}

fn key(s: &str) -> NodeKey {
    s.parse().unwrap()
}

fn reg(k: &str) -> Registration {
    Registration::new(
        key(k),
        Endpoint::http("http://127.0.0.1:9").unwrap(),
        Duration::from_secs(30),
    )
}

fn over(registry: Arc<Gated>) -> Mediator {
    over_on(registry, ManualClock::starting_now())
}

fn over_on(registry: Arc<Gated>, clock: ManualClock) -> Mediator {
    Mediator::builder()
        .shared_registry(registry)
        .clock(clock)
        .authenticator(Authenticator::hs256(b"a secret of at least 32 bytes!!!"))
        .deliver(Ok200)
        .build()
        .unwrap()
}

async fn reachable(m: &Mediator, k: &str) -> bool {
    let envelope = Envelope::new(Target::One(key(k)), "/", "");
    matches!(
        m.route(&Identity::internal(), envelope, None).await,
        Ok(Routed::One { .. })
    )
}

#[tokio::test]
async fn a_refresh_does_not_drop_a_registration_made_while_it_read_the_store() {
    let registry = Arc::new(Gated::default());
    let m = over(registry.clone());
    let me = Identity::internal();
    let gate = gate(&registry.hold_list);
    let refresh = tokio::spawn({
        let m = m.clone();
        async move { m.refresh().await }
    });
    gate.reached.await.unwrap();
    m.register(&me, reg("g/fresh")).await.unwrap();
    gate.release.send(()).unwrap();
    refresh.await.unwrap().unwrap();
    assert!(
        reachable(&m, "g/fresh").await,
        "the refresh dropped a node registered while it ran"
    );
}

#[tokio::test]
async fn a_refresh_does_not_restore_a_node_removed_while_it_read_the_store() {
    let registry = Arc::new(Gated::default());
    let m = over(registry.clone());
    let me = Identity::internal();
    m.register(&me, reg("g/leaving")).await.unwrap();
    let gate = gate(&registry.hold_list);
    let refresh = tokio::spawn({
        let m = m.clone();
        async move { m.refresh().await }
    });
    gate.reached.await.unwrap();
    assert_eq!(m.remove_key(&me, &key("g/leaving")).await.unwrap(), 1);
    gate.release.send(()).unwrap();
    refresh.await.unwrap().unwrap();
    assert!(
        !reachable(&m, "g/leaving").await,
        "the refresh brought back a node removed while it ran"
    );
}

#[tokio::test]
async fn a_sweep_does_not_drop_a_node_that_registered_again_meanwhile() {
    let registry = Arc::new(Gated::default());
    let clock = ManualClock::starting_now();
    let m = over_on(registry.clone(), clock.clone());
    let me = Identity::internal();
    // Registered for 30 s, a minute ago: its lease has run out.
    m.register(&me, reg("g/back")).await.unwrap();
    clock.advance(Duration::from_secs(60));
    let gate = gate(&registry.hold_evict);
    let sweep = tokio::spawn({
        let m = m.clone();
        async move { m.sweep().await }
    });
    gate.reached.await.unwrap();
    // The node comes back, with a fresh lease, while the sweep is under way.
    m.register(&me, reg("g/back")).await.unwrap();
    gate.release.send(()).unwrap();
    assert_eq!(sweep.await.unwrap().unwrap(), vec![key("g/back")]);
    assert!(registry.get(&key("g/back")).await.unwrap().is_some());
    assert!(
        reachable(&m, "g/back").await,
        "the sweep dropped the node's fresh registration from the routing table"
    );
}

#[tokio::test]
async fn removing_an_old_registration_by_id_spares_the_new_one_of_the_same_key() {
    let registry = Arc::new(Gated::default());
    let m = over(registry.clone());
    let me = Identity::internal();
    let old = m.register(&me, reg("g/worker")).await.unwrap();
    let gate = gate(&registry.hold_remove);
    let remove = tokio::spawn({
        let m = m.clone();
        async move { m.remove(&Identity::internal(), old.id).await }
    });
    gate.reached.await.unwrap();
    // The old registration is gone from the store; a new process of the
    // same node registers before the removal reaches the routing table.
    let new = m.register(&me, reg("g/worker")).await.unwrap();
    assert_ne!(new.id, old.id);
    gate.release.send(()).unwrap();
    assert_eq!(remove.await.unwrap().unwrap(), 1);
    assert!(registry.get(&key("g/worker")).await.unwrap().is_some());
    assert!(
        reachable(&m, "g/worker").await,
        "removing the old registration dropped the new one from the routing table"
    );
}

#[tokio::test]
async fn a_huge_configured_deadline_routes_instead_of_panicking() {
    let m = Mediator::builder()
        .registry(MemoryRegistry::new())
        .authenticator(Authenticator::hs256(b"a secret of at least 32 bytes!!!"))
        .deliver(Ok200)
        .deadline(Duration::MAX)
        .build()
        .unwrap();
    let me = Identity::internal();
    m.register(&me, reg("g/a")).await.unwrap();
    let envelope = Envelope::new(Target::One(key("g/a")), "/", "");
    let routed = tokio::spawn(async move { m.route(&me, envelope, None).await.is_ok() });
    assert!(routed.await.expect("routing panicked"));
}
