//! The default router, inside a mediator over the in-memory registry and a
//! manual clock, against a scripted fake deliverer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::StatusCode;
use mediator_core::{
    async_trait, Authenticator, Clock, Deliver, DeliverError, Endpoint, Envelope, Error, Fault,
    Identity, Limits, ManualClock, Mediator, MemoryRegistry, Node, NodeKey, Registration, Registry,
    Reply, RequestContext, Routed, Summary, Target,
};

/// What the fake node at a key does with a request.
#[derive(Clone, Copy)]
enum Script {
    Answer,
    Unreachable,
    Fail,
    Sleep(Duration),
}

#[derive(Default)]
struct Fake {
    scripts: Mutex<HashMap<NodeKey, Script>>,
    calls: Mutex<Vec<NodeKey>>,
}

impl Fake {
    fn script(&self, key: &NodeKey, script: Script) {
        self.scripts.lock().unwrap().insert(key.clone(), script);
    }
    fn calls(&self) -> Vec<NodeKey> {
        self.calls.lock().unwrap().clone()
    }
}

struct FakeDeliver(Arc<Fake>);

#[async_trait]
impl Deliver for FakeDeliver {
    fn schemes(&self) -> Vec<String> {
        vec!["http".into()]
    }
    async fn deliver(
        &self,
        node: &Node,
        envelope: &Envelope,
        _: &RequestContext,
    ) -> Result<Reply, DeliverError> {
        self.0.calls.lock().unwrap().push(node.key.clone());
        let script = self.0.scripts.lock().unwrap().get(&node.key).copied();
        match script.unwrap_or(Script::Answer) {
            Script::Answer => {}
            Script::Unreachable => return Err(DeliverError::unreachable("connection refused")),
            Script::Fail => return Err(DeliverError::failed("reset")),
            Script::Sleep(d) => tokio::time::sleep(d).await,
        }
        let body = format!(
            "{} got {}",
            node.key,
            String::from_utf8_lossy(&envelope.body)
        );
        Ok(Reply::new(StatusCode::OK, body))
    }
}

fn key(s: &str) -> NodeKey {
    s.parse().unwrap()
}

struct Formation {
    mediator: Mediator,
    registry: Arc<MemoryRegistry>,
    clock: ManualClock,
    fake: Arc<Fake>,
    next_port: u16,
}

impl Formation {
    fn new() -> Self {
        let registry = Arc::new(MemoryRegistry::new());
        let clock = ManualClock::starting_now();
        let fake = Arc::new(Fake::default());
        let mut limits = Limits::default();
        limits.deadline = Duration::from_secs(60);
        let mediator = Mediator::builder()
            .shared_registry(registry.clone())
            .authenticator(Authenticator::hs256("a secret only these tests know"))
            .deliver(FakeDeliver(fake.clone()))
            .clock(clock.clone())
            .limits(limits)
            .build()
            .unwrap();
        Formation {
            mediator,
            registry,
            clock,
            fake,
            next_port: 1000,
        }
    }

    /// Stores a node with `endpoint` and a lease of `lease` from now, as
    /// another instance would, and loads it into the routing table.
    async fn store(&mut self, k: &str, endpoint: Endpoint, lease: Duration) -> NodeKey {
        let registration = Registration::new(key(k), endpoint, lease);
        self.registry
            .upsert(registration, self.clock.now())
            .await
            .unwrap();
        self.mediator.refresh().await.unwrap();
        key(k)
    }

    async fn add(&mut self, k: &str, lease: Duration) -> NodeKey {
        self.next_port += 1;
        let endpoint = Endpoint::http(format!("http://127.0.0.1:{}", self.next_port)).unwrap();
        self.store(k, endpoint, lease).await
    }

    async fn live(&mut self, k: &str) -> NodeKey {
        self.add(k, Duration::from_secs(3600)).await
    }

    async fn send(&self, target: Target, budget: Duration) -> mediator_core::Result<Routed> {
        self.mediator
            .route(
                &Identity::internal(),
                Envelope::new(target, "/p", "hi"),
                Some(budget),
            )
            .await
    }
}

fn one_reply(routed: Routed) -> (NodeKey, Reply) {
    match routed {
        Routed::One { node, reply } => (node, reply),
        other => panic!("expected one reply, got {other:?}"),
    }
}

const SECOND: Duration = Duration::from_secs(1);

#[tokio::test]
async fn unicast_reaches_exactly_the_named_node() {
    let mut f = Formation::new();
    let a = f.live("g/a").await;
    f.live("g/b").await;
    let (node, reply) = one_reply(f.send(Target::One(a.clone()), SECOND).await.unwrap());
    assert_eq!(node, a);
    assert_eq!(reply.body, "g/a got hi");
    assert_eq!(f.fake.calls(), vec![a]);
}

#[tokio::test]
async fn unicast_to_the_unnamed_node() {
    let mut f = Formation::new();
    f.live("g/a").await;
    let unnamed = f.live("g/").await;
    let (node, _) = one_reply(f.send(Target::One(unnamed.clone()), SECOND).await.unwrap());
    assert_eq!(node, unnamed);
}

#[tokio::test]
async fn unknown_target_is_the_callers_fault() {
    let mut f = Formation::new();
    f.live("g/a").await;
    for target in [
        Target::One(key("g/zz")),
        Target::All("nope".into()),
        Target::Any("nope".into()),
    ] {
        let err = f.send(target, SECOND).await.unwrap_err();
        assert!(matches!(err, Error::UnknownTarget(_)), "{err:?}");
        assert_eq!((err.fault(), err.status()), (Fault::Caller, 404));
    }
    assert!(f.fake.calls().is_empty());
}

#[tokio::test]
async fn expired_nodes_are_not_available() {
    let mut f = Formation::new();
    let gone = f.add("g/a", Duration::ZERO).await;
    for target in [
        Target::One(gone),
        Target::All("g".into()),
        Target::Any("g".into()),
    ] {
        let err = f.send(target, SECOND).await.unwrap_err();
        assert!(matches!(err, Error::NoNodeAvailable(_)), "{err:?}");
        assert_eq!((err.fault(), err.status()), (Fault::Hub, 503));
    }
    assert!(f.fake.calls().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_slow_node_passes_its_deadline() {
    let mut f = Formation::new();
    let slow = f.live("g/slow").await;
    f.fake.script(&slow, Script::Sleep(Duration::from_secs(30)));
    let err = f.send(Target::One(slow), SECOND).await.unwrap_err();
    assert!(
        matches!(err, Error::DeadlinePassed { after, .. } if after == SECOND),
        "{err:?}"
    );
    assert_eq!((err.fault(), err.status()), (Fault::Node, 504));
}

#[tokio::test(start_paused = true)]
async fn broadcast_gathers_every_node_with_a_summary() {
    let mut f = Formation::new();
    let ok = f.live("cache/a").await;
    let dead = f.live("cache/b").await;
    let slow = f.live("cache/c").await;
    let failed = f.live("cache/d").await;
    f.add("cache/expired", Duration::ZERO).await;
    f.live("other/x").await;
    f.fake.script(&dead, Script::Unreachable);
    f.fake.script(&slow, Script::Sleep(Duration::from_secs(60)));
    f.fake.script(&failed, Script::Fail);
    let Routed::Many(b) = f.send(Target::All("cache".into()), SECOND).await.unwrap() else {
        panic!("a broadcast gives many replies")
    };
    let order: Vec<_> = b.results.iter().map(|r| r.node.clone()).collect();
    assert_eq!(
        order,
        vec![ok, dead, slow, failed],
        "id order, expired left out"
    );
    assert_eq!(
        b.results[0].outcome.as_ref().unwrap().body,
        "cache/a got hi"
    );
    assert!(matches!(
        b.results[1].outcome,
        Err(Error::NodeUnreachable { .. })
    ));
    assert!(matches!(
        b.results[2].outcome,
        Err(Error::DeadlinePassed { .. })
    ));
    assert!(matches!(
        b.results[3].outcome,
        Err(Error::NodeFailed { .. })
    ));
    assert_eq!(
        b.summary,
        Summary {
            asked: 4,
            answered: 1,
            failed: 2,
            timed_out: 1
        }
    );
}

#[tokio::test(start_paused = true)]
async fn broadcast_runs_in_parallel() {
    let mut f = Formation::new();
    for i in 0..20 {
        let k = f.live(&format!("g/n{i}")).await;
        f.fake.script(&k, Script::Sleep(Duration::from_millis(500)));
    }
    let started = tokio::time::Instant::now();
    let Routed::Many(b) = f.send(Target::All("g".into()), SECOND).await.unwrap() else {
        panic!("many")
    };
    assert_eq!(b.summary.answered, 20);
    // Sequential delivery would need 10 s of (virtual) time.
    assert!(started.elapsed() < SECOND, "took {:?}", started.elapsed());
}

#[tokio::test]
async fn any_spreads_evenly_over_idle_nodes() {
    let mut f = Formation::new();
    let keys = [
        f.live("w/a").await,
        f.live("w/b").await,
        f.live("w/c").await,
    ];
    for _ in 0..9 {
        f.send(Target::Any("w".into()), SECOND).await.unwrap();
    }
    let calls = f.fake.calls();
    for k in &keys {
        assert_eq!(
            calls.iter().filter(|c| *c == k).count(),
            3,
            "{k} in {calls:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn any_prefers_the_least_busy_node() {
    let mut f = Formation::new();
    let a = f.live("w/a").await;
    let b = f.live("w/b").await;
    f.fake.script(&a, Script::Sleep(Duration::from_secs(5)));
    f.fake.script(&b, Script::Sleep(Duration::from_secs(5)));
    let router = Arc::new(f);
    let _: &Mediator = &router.mediator;
    // Two long requests occupy both nodes, one each.
    let first = tokio::spawn({
        let r = router.clone();
        async move {
            r.send(Target::Any("w".into()), Duration::from_secs(10))
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(10)).await;
    let second = tokio::spawn({
        let r = router.clone();
        async move {
            r.send(Target::Any("w".into()), Duration::from_secs(10))
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(10)).await;
    let calls = router.fake.calls();
    assert_eq!(calls.len(), 2);
    assert_ne!(
        calls[0], calls[1],
        "the second request went to the busy node: {calls:?}"
    );
    first.await.unwrap().unwrap();
    second.await.unwrap().unwrap();
}

#[tokio::test]
async fn any_skips_an_unreachable_node() {
    let mut f = Formation::new();
    let dead = f.live("w/dead").await;
    let ok = f.live("w/ok").await;
    f.fake.script(&dead, Script::Unreachable);
    for _ in 0..4 {
        let (node, _) = one_reply(f.send(Target::Any("w".into()), SECOND).await.unwrap());
        assert_eq!(node, ok);
    }
    assert!(
        f.fake.calls().contains(&dead),
        "the dead node was never tried"
    );
}

#[tokio::test]
async fn a_dead_nodes_turns_spread_evenly_over_the_others() {
    let mut f = Formation::new();
    let live = [f.live("w/a").await, f.live("w/b").await];
    let dead = f.live("w/dead").await;
    f.fake.script(&dead, Script::Unreachable);
    let c = f.live("w/c").await;
    for _ in 0..60 {
        f.send(Target::Any("w".into()), SECOND).await.unwrap();
    }
    let calls = f.fake.calls();
    for k in live.iter().chain([&c]) {
        assert_eq!(calls.iter().filter(|x| *x == k).count(), 20, "{k}");
    }
}

#[tokio::test]
async fn any_does_not_retry_after_the_request_reached_a_node() {
    let mut f = Formation::new();
    let broken = f.live("w/a").await;
    f.live("w/b").await;
    f.fake.script(&broken, Script::Fail);
    let err = f.send(Target::Any("w".into()), SECOND).await.unwrap_err();
    assert!(matches!(err, Error::NodeFailed { .. }), "{err:?}");
    assert_eq!((err.fault(), err.status()), (Fault::Node, 502));
    assert_eq!(f.fake.calls(), vec![broken]);
}

#[tokio::test]
async fn any_with_every_node_unreachable_is_no_node_available() {
    let mut f = Formation::new();
    for k in ["w/a", "w/b"] {
        let k = f.live(k).await;
        f.fake.script(&k, Script::Unreachable);
    }
    let err = f.send(Target::Any("w".into()), SECOND).await.unwrap_err();
    assert!(matches!(err, Error::NoNodeAvailable(_)), "{err:?}");
    assert_eq!(f.fake.calls().len(), 2, "each node tried once");
}

#[tokio::test]
async fn a_node_without_a_transport_is_unreachable() {
    let mut f = Formation::new();
    let attached = Endpoint::attached("elsewhere").unwrap();
    f.store("q/attached", attached, Duration::from_secs(60))
        .await;
    let err = f
        .send(Target::One(key("q/attached")), SECOND)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NodeUnreachable { .. }), "{err:?}");
}

#[tokio::test]
async fn the_table_writes_through_and_refreshes() {
    let mut f = Formation::new();
    let a = f.live("g/a").await;
    let b = f.live("g/b").await;
    let me = Identity::internal();
    let routes = f.mediator.routes();
    assert_eq!(routes.len(), 2);
    assert_eq!(f.mediator.remove_key(&me, &a).await.unwrap(), 1);
    assert_eq!(f.mediator.remove_key(&me, &a).await.unwrap(), 0);
    assert!(matches!(
        f.send(Target::One(a.clone()), SECOND).await,
        Err(Error::UnknownTarget(_))
    ));
    let lease = f
        .mediator
        .renew(&me, &b, Duration::from_secs(99))
        .await
        .unwrap();
    assert_eq!(lease, Some(f.clock.now() + Duration::from_secs(99)));
    assert_eq!(routes.get(&b).unwrap().lease_until, lease.unwrap());
    // Removed by another instance: gone from this one's table once it
    // refreshes.
    f.registry.remove_key(&b).await.unwrap();
    f.mediator.refresh().await.unwrap();
    assert!(routes.is_empty());
}

#[tokio::test]
async fn a_deadline_already_passed_sends_nothing() {
    let mut f = Formation::new();
    let a = f.live("g/a").await;
    let err = f.send(Target::One(a), Duration::ZERO).await.unwrap_err();
    assert!(matches!(err, Error::DeadlinePassed { .. }), "{err:?}");
    assert!(f.fake.calls().is_empty());
}

/// Picks the most recently registered live node, whatever the load: a
/// policy of the caller's own, given to the builder.
struct Newest;

impl mediator_core::policy::Pick for Newest {
    fn pick(
        &self,
        _group: &str,
        candidates: &[mediator_core::policy::Candidate<'_>],
        _turn: &mut mediator_core::policy::Turn<'_>,
    ) -> Option<usize> {
        (0..candidates.len()).max_by_key(|&i| candidates[i].node().id)
    }
}

#[tokio::test]
async fn a_pick_policy_from_the_builder_chooses_for_any_of_group() {
    let registry = Arc::new(MemoryRegistry::new());
    let fake = Arc::new(Fake::default());
    let mediator = Mediator::builder()
        .shared_registry(registry)
        .authenticator(Authenticator::hs256("a secret only these tests know"))
        .deliver(FakeDeliver(fake.clone()))
        .pick(Newest)
        .build()
        .unwrap();
    let me = Identity::internal();
    for k in ["w/old", "w/mid", "w/new"] {
        let endpoint = Endpoint::http("http://127.0.0.1:9").unwrap();
        mediator
            .register(
                &me,
                Registration::new(key(k), endpoint, Duration::from_secs(60)),
            )
            .await
            .unwrap();
    }
    fake.script(&key("w/new"), Script::Unreachable);
    for _ in 0..3 {
        let routed = mediator
            .route(&me, Envelope::new(Target::any("w").unwrap(), "/", ""), None)
            .await
            .unwrap();
        // The newest is unreachable, so each request falls to the next newest.
        assert_eq!(one_reply(routed).0, key("w/mid"));
    }
    let calls = fake.calls();
    assert_eq!(calls.iter().filter(|k| **k == key("w/old")).count(), 0);
    assert_eq!(calls.iter().filter(|k| **k == key("w/new")).count(), 3);
}
