//! The default router against a scripted fake deliverer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::StatusCode;
use mediator_core::router::RoutingTable;
use mediator_core::{
    async_trait, Deadline, DefaultRouter, Deliver, Endpoint, EndpointKind, Envelope, Error, Fault,
    Node, NodeId, NodeKey, Reply, Routed, Router, Summary, Target, Timestamp,
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
    fn kind(&self) -> EndpointKind {
        EndpointKind::Http
    }
    async fn deliver(
        &self,
        node: &Node,
        envelope: &Envelope,
        _: Deadline,
    ) -> mediator_core::Result<Reply> {
        self.0.calls.lock().unwrap().push(node.key.clone());
        let script = self.0.scripts.lock().unwrap().get(&node.key).copied();
        let name = node.key.to_string();
        match script.unwrap_or(Script::Answer) {
            Script::Answer => {}
            Script::Unreachable => {
                return Err(Error::NodeUnreachable {
                    node: name,
                    reason: "connection refused".into(),
                })
            }
            Script::Fail => {
                return Err(Error::NodeFailed {
                    node: name,
                    reason: "reset".into(),
                })
            }
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
    table: Arc<RoutingTable>,
    router: DefaultRouter,
    fake: Arc<Fake>,
    next_id: u64,
}

impl Formation {
    fn new() -> Self {
        let table = Arc::new(RoutingTable::new());
        let router = DefaultRouter::new(table.clone());
        let fake = Arc::new(Fake::default());
        router.add_deliver(Arc::new(FakeDeliver(fake.clone())));
        Formation {
            table,
            router,
            fake,
            next_id: 0,
        }
    }

    fn add(&mut self, k: &str, lease: Duration) -> NodeKey {
        self.next_id += 1;
        let now = Timestamp::now();
        let node = Node {
            id: NodeId(self.next_id),
            key: key(k),
            endpoint: Endpoint::http(format!("http://127.0.0.1:{}", 1000 + self.next_id)).unwrap(),
            meta: Default::default(),
            created: now,
            updated: None,
            lease_until: now + lease,
        };
        self.table.insert(node);
        key(k)
    }

    fn live(&mut self, k: &str) -> NodeKey {
        self.add(k, Duration::from_secs(3600))
    }

    async fn send(&self, target: Target, budget: Duration) -> mediator_core::Result<Routed> {
        self.router
            .route(Envelope::new(target, "/p", "hi"), Deadline::after(budget))
            .await
    }
}

fn one_reply(routed: Routed) -> (NodeKey, Reply) {
    match routed {
        Routed::One { node, reply } => (node, reply),
        Routed::Many(_) => panic!("expected one reply"),
    }
}

const SECOND: Duration = Duration::from_secs(1);

#[tokio::test]
async fn unicast_reaches_exactly_the_named_node() {
    let mut f = Formation::new();
    let a = f.live("g/a");
    f.live("g/b");
    let (node, reply) = one_reply(f.send(Target::One(a.clone()), SECOND).await.unwrap());
    assert_eq!(node, a);
    assert_eq!(reply.body, "g/a got hi");
    assert_eq!(f.fake.calls(), vec![a]);
}

#[tokio::test]
async fn unicast_to_the_unnamed_node() {
    let mut f = Formation::new();
    f.live("g/a");
    let unnamed = f.live("g/");
    let (node, _) = one_reply(f.send(Target::One(unnamed.clone()), SECOND).await.unwrap());
    assert_eq!(node, unnamed);
}

#[tokio::test]
async fn unknown_target_is_the_callers_fault() {
    let mut f = Formation::new();
    f.live("g/a");
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
    let gone = f.add("g/a", Duration::ZERO);
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
    let slow = f.live("g/slow");
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
    let ok = f.live("cache/a");
    let dead = f.live("cache/b");
    let slow = f.live("cache/c");
    let failed = f.live("cache/d");
    f.add("cache/expired", Duration::ZERO);
    f.live("other/x");
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
        let k = f.live(&format!("g/n{i}"));
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
    let keys = [f.live("w/a"), f.live("w/b"), f.live("w/c")];
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
    let a = f.live("w/a");
    let b = f.live("w/b");
    f.fake.script(&a, Script::Sleep(Duration::from_secs(5)));
    f.fake.script(&b, Script::Sleep(Duration::from_secs(5)));
    let router = Arc::new(f);
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
    let dead = f.live("w/dead");
    let ok = f.live("w/ok");
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
    let live = [f.live("w/a"), f.live("w/b")];
    let dead = f.live("w/dead");
    f.fake.script(&dead, Script::Unreachable);
    let c = f.live("w/c");
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
    let broken = f.live("w/a");
    f.live("w/b");
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
        let k = f.live(k);
        f.fake.script(&k, Script::Unreachable);
    }
    let err = f.send(Target::Any("w".into()), SECOND).await.unwrap_err();
    assert!(matches!(err, Error::NoNodeAvailable(_)), "{err:?}");
    assert_eq!(f.fake.calls().len(), 2, "each node tried once");
}

#[tokio::test]
async fn a_node_without_a_transport_is_unreachable() {
    let f = Formation::new();
    let now = Timestamp::now();
    f.table.insert(Node {
        id: NodeId(99),
        key: key("q/attached"),
        endpoint: Endpoint::Attached {
            instance: "elsewhere".into(),
        },
        meta: Default::default(),
        created: now,
        updated: None,
        lease_until: now + Duration::from_secs(60),
    });
    let err = f
        .send(Target::One(key("q/attached")), SECOND)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NodeUnreachable { .. }), "{err:?}");
}

#[tokio::test]
async fn the_table_writes_through_and_refreshes() {
    let mut f = Formation::new();
    let a = f.live("g/a");
    f.live("g/b");
    assert_eq!(f.table.len(), 2);
    assert!(f.table.remove(&a));
    assert!(!f.table.remove(&a));
    assert!(matches!(
        f.send(Target::One(a.clone()), SECOND).await,
        Err(Error::UnknownTarget(_))
    ));
    let later = Timestamp::now() + Duration::from_secs(99);
    f.table.renew(&key("g/b"), later);
    assert_eq!(f.table.get(&key("g/b")).unwrap().lease_until, later);
    assert!(f.table.begin_refresh().apply(vec![]));
    assert!(f.table.is_empty());
}

#[tokio::test]
async fn a_deadline_already_passed_sends_nothing() {
    let mut f = Formation::new();
    let a = f.live("g/a");
    let err = f.send(Target::One(a), Duration::ZERO).await.unwrap_err();
    assert!(matches!(err, Error::DeadlinePassed { .. }), "{err:?}");
    assert!(f.fake.calls().is_empty());
}
