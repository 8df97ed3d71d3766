//! The Mediator: identities bound to registrations, limits, sweeping and
//! refreshing, over the in-memory registry and a recording fake deliverer.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::StatusCode;
use mediator_core::policy::Credentials;
use mediator_core::store_stats::StoreOp;
use mediator_core::{
    async_trait, Authenticator, Claims, Clock, Deliver, DeliverError, Endpoint, Envelope, Error,
    Identity, Limits, ManualClock, Mediator, MemoryRegistry, Node, NodeId, NodeKey, Registration,
    Registry, Reply, RequestContext, Routed, Target, TokenMinter,
};

const SECRET: &[u8] = b"test secret, long enough for HS256";

/// A delivery as the fake saw it: the node and the envelope's sender.
type Seen = (NodeKey, Option<NodeKey>);

/// Records who each delivered envelope claimed to be from.
#[derive(Default, Clone)]
struct Recorder(Arc<Mutex<Vec<Seen>>>);

#[async_trait]
impl Deliver for Recorder {
    fn schemes(&self) -> Vec<String> {
        vec!["http".into()]
    }
    async fn deliver(
        &self,
        node: &Node,
        envelope: &Envelope,
        _: &RequestContext,
    ) -> Result<Reply, DeliverError> {
        self.0
            .lock()
            .unwrap()
            .push((node.key.clone(), envelope.from.clone()));
        Ok(Reply::new(StatusCode::OK, "ok"))
    }
}

fn key(s: &str) -> NodeKey {
    s.parse().unwrap()
}

fn mediator_over(registry: Arc<MemoryRegistry>, recorder: Recorder) -> Mediator {
    mediator_on(registry, recorder, ManualClock::starting_now())
}

fn mediator_on(registry: Arc<MemoryRegistry>, recorder: Recorder, clock: ManualClock) -> Mediator {
    Mediator::builder()
        .shared_registry(registry)
        .authenticator(Authenticator::hs256(SECRET).allow_tokens_without_sub(true))
        .deliver(recorder)
        .clock(clock)
        .build()
        .unwrap()
}

/// Two mediators sharing one store, as two instances share a database.
fn two_over(registry: &Arc<MemoryRegistry>) -> (Mediator, Mediator) {
    (
        mediator_over(Arc::clone(registry), Recorder::default()),
        mediator_over(Arc::clone(registry), Recorder::default()),
    )
}

fn bearer(m: &Mediator, token: &str) -> Identity {
    m.authenticate(&Credentials::Bearer(token)).unwrap()
}

fn identity_of(m: &Mediator, k: &str) -> Identity {
    let token = TokenMinter::hs256(SECRET)
        .mint(&Claims::node(
            &key(k),
            m.clock().now(),
            Duration::from_secs(60),
        ))
        .unwrap();
    bearer(m, &token)
}

fn reg(k: &str) -> Registration {
    Registration::new(
        key(k),
        Endpoint::http("http://127.0.0.1:9").unwrap(),
        Duration::from_secs(30),
    )
}

#[tokio::test]
async fn a_node_registers_only_as_itself() {
    let m = mediator_over(Arc::default(), Recorder::default());
    let a = identity_of(&m, "g/a");
    let err = m.register(&a, reg("g/b")).await.unwrap_err();
    assert!(matches!(err, Error::Forbidden(_)), "{err:?}");
    assert_eq!(err.status(), 403);
    assert!(
        m.nodes(None).await.unwrap().is_empty(),
        "refused registration was stored"
    );
    m.register(&a, reg("g/a")).await.unwrap();
    m.register(&Identity::internal(), reg("g/b")).await.unwrap();
    assert_eq!(m.nodes(Some("g")).await.unwrap().len(), 2);
}

#[tokio::test]
async fn the_sender_is_the_verified_identity_whatever_the_envelope_says() {
    let recorder = Recorder::default();
    let m = mediator_over(Arc::default(), recorder.clone());
    m.register(&Identity::internal(), reg("g/target"))
        .await
        .unwrap();
    let a = identity_of(&m, "g/a");
    let forged = Envelope::new(Target::One(key("g/target")), "/x", "").from(key("g/admin"));
    m.route(&a, forged, None).await.unwrap();
    assert_eq!(recorder.0.lock().unwrap()[0].1, Some(key("g/a")));
}

#[tokio::test]
async fn a_token_without_sub_is_unverified_and_sends_anonymously() {
    let recorder = Recorder::default();
    let m = mediator_over(Arc::default(), recorder.clone());
    m.register(&Identity::internal(), reg("g/target"))
        .await
        .unwrap();
    let now = m.clock().now().as_secs();
    let legacy = TokenMinter::hs256(SECRET)
        .mint(&Claims {
            sub: None,
            exp: now + 60,
            iat: now,
            nbf: None,
            scope: None,
        })
        .unwrap();
    let who = bearer(&m, &legacy);
    assert!(!who.verified);
    let claimed = Envelope::new(Target::One(key("g/target")), "/x", "").from(key("g/someone"));
    m.route(&who, claimed, None).await.unwrap();
    assert_eq!(recorder.0.lock().unwrap()[0].1, None);
}

#[tokio::test]
async fn scope_limits_the_groups_a_node_may_call() {
    let m = mediator_over(Arc::default(), Recorder::default());
    m.register(&Identity::internal(), reg("open/x"))
        .await
        .unwrap();
    m.register(&Identity::internal(), reg("closed/x"))
        .await
        .unwrap();
    let token = TokenMinter::hs256(SECRET)
        .mint(
            &Claims::node(&key("g/a"), m.clock().now(), Duration::from_secs(60))
                .with_scope(vec!["open".into()]),
        )
        .unwrap();
    let scoped = bearer(&m, &token);
    m.route(
        &scoped,
        Envelope::new(Target::One(key("open/x")), "/", ""),
        None,
    )
    .await
    .unwrap();
    let err = m
        .route(
            &scoped,
            Envelope::new(Target::All("closed".into()), "/", ""),
            None,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Forbidden(_)), "{err:?}");
}

#[tokio::test]
async fn limits_refuse_big_bodies_and_odd_leases() {
    let m = Mediator::builder()
        .registry(MemoryRegistry::new())
        .authenticator(Authenticator::hs256(SECRET))
        .deliver(Recorder::default())
        .max_body(10)
        .build()
        .unwrap();
    let me = Identity::internal();
    m.register(&me, reg("g/a")).await.unwrap();
    let err = m
        .route(
            &me,
            Envelope::new(Target::One(key("g/a")), "/", vec![0u8; 11]),
            None,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::TooLarge { limit: 10 }), "{err:?}");
    assert_eq!(err.status(), 413);
    for ttl in [Duration::ZERO, Duration::from_secs(365 * 86_400)] {
        let mut r = reg("g/b");
        r.ttl = ttl;
        let err = m.register(&me, r).await.unwrap_err();
        assert!(
            matches!(err, Error::Invalid { field: "ttl", .. }),
            "{err:?}"
        );
    }
}

#[tokio::test]
async fn sweep_evicts_from_store_and_routing_table() {
    let registry = Arc::new(MemoryRegistry::new());
    let clock = ManualClock::starting_now();
    let m = mediator_on(registry.clone(), Recorder::default(), clock.clone());
    let me = Identity::internal();
    let mut short = reg("g/short");
    short.ttl = Duration::from_secs(2);
    m.register(&me, short).await.unwrap();
    m.register(&me, reg("g/long")).await.unwrap();
    clock.advance(Duration::from_secs(1));
    assert!(m.sweep().await.unwrap().is_empty());
    clock.advance(Duration::from_secs(1));
    assert_eq!(m.sweep().await.unwrap(), vec![key("g/short")]);
    assert_eq!(registry.get(&key("g/short")).await.unwrap(), None);
    let err = m
        .route(
            &me,
            Envelope::new(Target::One(key("g/short")), "/", ""),
            None,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::UnknownTarget(_)), "{err:?}");
}

#[tokio::test]
async fn refresh_picks_up_registrations_made_elsewhere() {
    let (one, other) = two_over(&Arc::new(MemoryRegistry::new()));
    let me = Identity::internal();
    one.register(&me, reg("g/a")).await.unwrap();
    let send = || Envelope::new(Target::One(key("g/a")), "/", "");
    assert!(matches!(
        other.route(&me, send(), None).await,
        Err(Error::UnknownTarget(_))
    ));
    other.refresh().await.unwrap();
    assert!(matches!(
        other.route(&me, send(), None).await,
        Ok(Routed::One { .. })
    ));
}

/// A refresh reads the store only when its version moved since the last
/// refresh read it: a write by another mediator sharing the store moves
/// it, and is picked up, removals and renewals included.
#[tokio::test]
async fn refresh_reads_the_store_only_after_a_change() {
    let (one, other) = two_over(&Arc::new(MemoryRegistry::new()));
    let me = Identity::internal();
    let pages = || other.store_stats().snapshot(StoreOp::ListPage).calls;
    one.register(&me, reg("g/a")).await.unwrap();
    other.refresh().await.unwrap();
    let read = pages();
    assert!(read > 0, "the first refresh read no page");
    assert!(other.routes().get(&key("g/a")).is_some());

    other.refresh().await.unwrap();
    assert_eq!(pages(), read, "a refresh over an unchanged store read it");

    let lease = one
        .renew(&me, &key("g/a"), Duration::from_secs(60))
        .await
        .unwrap();
    other.refresh().await.unwrap();
    assert!(pages() > read, "a renewal elsewhere was not read");
    assert_eq!(
        other.routes().get(&key("g/a")).unwrap().lease_until,
        lease.unwrap()
    );

    let read = pages();
    one.remove_key(&me, &key("g/a")).await.unwrap();
    other.refresh().await.unwrap();
    assert!(pages() > read, "a removal elsewhere was not read");
    assert!(other.routes().get(&key("g/a")).is_none());
}

/// Over the in-memory registry, the routing table holds the store's own
/// copy of each node rather than one of its own, through registrations,
/// renewals and refreshes.
#[tokio::test]
async fn the_table_holds_the_stores_copy_of_each_node() {
    let registry = Arc::new(MemoryRegistry::new());
    let (one, other) = two_over(&registry);
    let me = Identity::internal();
    let held = |m: &Mediator, k: &str| {
        let node = m.routes().get(&key(k)).expect("in the table");
        let stored = registry.shared(&node).expect("the store's copy");
        (node, stored)
    };
    one.register(&me, reg("g/a")).await.unwrap();
    other.refresh().await.unwrap();
    for m in [&one, &other] {
        let (node, stored) = held(m, "g/a");
        assert_eq!(node, *stored);
        assert!(
            Arc::strong_count(&stored) >= 3,
            "the store, this read and the table hold it"
        );
    }
    one.renew(&me, &key("g/a"), Duration::from_secs(60))
        .await
        .unwrap();
    let (_, stored) = held(&one, "g/a");
    // The other mediator still holds the copy from before the renewal.
    assert_eq!(
        Arc::strong_count(&stored),
        3,
        "the store, this read, one table"
    );
    drop(stored);
    other.refresh().await.unwrap();
    let (_, stored) = held(&other, "g/a");
    assert_eq!(
        Arc::strong_count(&stored),
        4,
        "the store, this read, both tables"
    );
}

#[tokio::test]
async fn nodes_remove_only_themselves() {
    let m = mediator_over(Arc::default(), Recorder::default());
    let me = Identity::internal();
    let b = m.register(&me, reg("g/b")).await.unwrap();
    let a = identity_of(&m, "g/a");
    // By id, another node's registration looks like none at all, so ids
    // cannot be probed; by key (which the caller names anyway) it is refused.
    assert_eq!(m.remove(&a, b.id).await.unwrap(), 0);
    assert_eq!(m.remove(&a, NodeId(b.id.0 + 1000)).await.unwrap(), 0);
    assert!(m.routes().get(&key("g/b")).is_some());
    assert!(matches!(
        m.remove_key(&a, &key("g/b")).await,
        Err(Error::Forbidden(_))
    ));
    assert_eq!(m.remove(&identity_of(&m, "g/b"), b.id).await.unwrap(), 1);
    assert_eq!(m.remove(&me, b.id).await.unwrap(), 0);
}

#[tokio::test]
async fn an_unverified_identity_that_is_not_admin_acts_for_nobody() {
    let m = mediator_over(Arc::default(), Recorder::default());
    let mut who = identity_of(&m, "g/a");
    who.verified = false;
    who.admin = false;
    let err = m.register(&who, reg("g/a")).await.unwrap_err();
    assert!(matches!(err, Error::Forbidden(_)), "{err:?}");
}

#[tokio::test]
async fn renew_reports_forgotten_nodes() {
    let m = mediator_over(Arc::default(), Recorder::default());
    let a = identity_of(&m, "g/a");
    assert_eq!(
        m.renew(&a, &key("g/a"), Duration::from_secs(30))
            .await
            .unwrap(),
        None
    );
    m.register(&a, reg("g/a")).await.unwrap();
    let lease = m
        .renew(&a, &key("g/a"), Duration::from_secs(90))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(lease, m.clock().now() + Duration::from_secs(90));
    assert_eq!(m.routes().get(&key("g/a")).unwrap().lease_until, lease);
}

#[test]
fn the_builder_names_what_is_missing() {
    let err = Mediator::builder().build().unwrap_err();
    assert!(err.to_string().contains("registry"), "{err}");
    let err = Mediator::builder()
        .registry(MemoryRegistry::new())
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("authenticator"), "{err}");
    let mut bad = Limits::default();
    bad.min_ttl = Duration::from_secs(100);
    bad.default_ttl = Duration::from_secs(1);
    let err = Mediator::builder()
        .registry(MemoryRegistry::new())
        .authenticator(Authenticator::hs256(SECRET))
        .limits(bad)
        .build()
        .unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err:?}");
    let err = Mediator::builder()
        .registry(MemoryRegistry::new())
        .authenticator(Authenticator::hs256(SECRET))
        .deliver(Recorder::default())
        .deliver(Recorder::default())
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("\"http\""), "{err}");
}

#[tokio::test]
async fn the_maintenance_loop_evicts_leases_that_ran_out() {
    let registry = Arc::new(MemoryRegistry::new());
    let clock = ManualClock::starting_now();
    let m = mediator_on(registry.clone(), Recorder::default(), clock.clone());
    let me = Identity::internal();
    let mut gone = reg("g/gone");
    gone.ttl = Duration::from_secs(1);
    m.register(&me, gone).await.unwrap();
    let mut live = reg("g/live");
    live.ttl = Duration::from_secs(3600);
    m.register(&me, live).await.unwrap();
    let maintenance = m.spawn_maintenance();
    // One sweep period on the mediator's clock, which the loop waits on.
    clock.advance(m.limits().sweep_every);
    let mut waited = 0;
    while m.routes().get(&key("g/gone")).is_some() {
        assert!(waited < 500, "no sweep after the clock moved a period");
        tokio::time::sleep(Duration::from_millis(10)).await;
        waited += 1;
    }
    maintenance.abort();
    assert_eq!(registry.get(&key("g/gone")).await.unwrap(), None);
    assert!(m.routes().get(&key("g/live")).is_some());
}

#[tokio::test]
async fn every_delivery_is_recorded_once_per_group() {
    let m = mediator_over(Arc::default(), Recorder::default());
    let me = Identity::internal();
    m.register(&me, reg("g/a")).await.unwrap();
    m.register(&me, reg("g/b")).await.unwrap();
    m.route(&me, Envelope::new(Target::One(key("g/a")), "/", ""), None)
        .await
        .unwrap();
    m.route(&me, Envelope::new(Target::all("g").unwrap(), "/", ""), None)
        .await
        .unwrap();
    let stats = m.delivery_stats().snapshot();
    let g = &stats["g"];
    assert_eq!(g.total(), 3, "one unicast and a broadcast to two");
    assert_eq!(g.outcomes().next(), Some(("ok", 3)));
}
