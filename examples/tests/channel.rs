//! The in-process channel transport, built on the core's public seam only:
//! channel nodes call each other and HTTP nodes both ways, share
//! broadcasts with them, keep their leases on the mediator's clock, and
//! an access list wraps the router.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use mediator_core::node::Incoming;
use mediator_core::{
    async_trait, Authenticator, Claims, Clock, Deliver, DeliverError, Envelope, Error, Identity,
    KeyRing, ManualClock, Mediator, MemoryRegistry, Node, NodeKey, Reply, RequestContext, SealKey,
    Target,
};
use mediator_examples::acl::GroupAcl;
use mediator_examples::channel::{ChannelHub, ChannelNode};
use mediator_transport_http::{HttpDelivery, HttpListener, NodeClient};

const SECRET: &str = "a secret these tests share, 32 bytes+";

/// Wraps a deliverer and keeps every body it was handed: what the mediator
/// saw of each request.
#[derive(Clone)]
struct Spy<D> {
    inner: D,
    bodies: Arc<Mutex<Vec<Bytes>>>,
}

#[async_trait]
impl<D: Deliver + Clone> Deliver for Spy<D> {
    fn schemes(&self) -> Vec<String> {
        self.inner.schemes()
    }

    async fn deliver(
        &self,
        node: &Node,
        envelope: &Envelope,
        cx: &RequestContext,
    ) -> Result<Reply, DeliverError> {
        self.bodies.lock().unwrap().push(envelope.body.clone());
        self.inner.deliver(node, envelope, cx).await
    }
}

struct World {
    mediator: Mediator,
    hub: ChannelHub,
    clock: ManualClock,
    keys: KeyRing,
    seen: Arc<Mutex<Vec<Bytes>>>,
}

impl World {
    fn new() -> World {
        World::with(|builder| builder)
    }

    fn with(
        compose: impl FnOnce(mediator_core::MediatorBuilder) -> mediator_core::MediatorBuilder,
    ) -> World {
        let hub = ChannelHub::default();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let clock = ManualClock::starting_now();
        let builder = Mediator::builder()
            .registry(MemoryRegistry::new())
            .authenticator(Authenticator::hs256(SECRET))
            .deliver(Spy {
                inner: hub.clone(),
                bodies: seen.clone(),
            })
            .deliver(HttpDelivery::default())
            .clock(clock.clone());
        World {
            mediator: compose(builder).build().unwrap(),
            hub,
            clock,
            keys: KeyRing::new(SealKey::generate()),
            seen,
        }
    }

    fn token(&self, key: &NodeKey) -> String {
        self.mediator
            .minter()
            .unwrap()
            .mint(&Claims::node(
                key,
                self.clock.now(),
                Duration::from_secs(3600),
            ))
            .unwrap()
    }

    /// A channel node that answers `NAME got BODY`.
    async fn node(&self, k: &str) -> ChannelNode {
        let key: NodeKey = k.parse().unwrap();
        let name = k.to_owned();
        ChannelNode::builder(&self.hub, &self.mediator, key.clone(), self.keys.clone())
            .start(&self.token(&key), move |request: Incoming| {
                let name = name.clone();
                async move {
                    Ok::<_, Error>(Bytes::from(format!(
                        "{name} got {}",
                        String::from_utf8_lossy(&request.body)
                    )))
                }
            })
            .await
            .unwrap()
    }

    fn caller(&self, k: &str) -> ChannelNode {
        let key: NodeKey = k.parse().unwrap();
        ChannelNode::builder(&self.hub, &self.mediator, key.clone(), self.keys.clone())
            .connect(&self.token(&key))
            .unwrap()
    }
}

fn key(s: &str) -> NodeKey {
    s.parse().unwrap()
}

#[tokio::test]
async fn channel_nodes_call_one_any_and_all_sealed_end_to_end() {
    let world = World::new();
    let _a = world.node("cache/a").await;
    let _b = world.node("cache/b").await;
    let caller = world.caller("billing/worker");

    let reply = caller
        .call(Target::One(key("cache/a")), "/get", b"secret-one")
        .await
        .unwrap();
    assert_eq!(reply, "cache/a got secret-one");

    let any = caller
        .call(Target::any("cache").unwrap(), "/get", b"secret-any")
        .await
        .unwrap();
    assert!(any.ends_with(b"got secret-any"), "{any:?}");

    let all = caller
        .broadcast("cache", "/flush", b"secret-all")
        .await
        .unwrap();
    let all: BTreeMap<String, String> = all
        .into_iter()
        .map(|(k, r)| {
            (
                k.to_string(),
                String::from_utf8(r.unwrap().to_vec()).unwrap(),
            )
        })
        .collect();
    assert_eq!(
        all,
        BTreeMap::from([
            ("cache/a".into(), "cache/a got secret-all".into()),
            ("cache/b".into(), "cache/b got secret-all".into()),
        ])
    );

    // The mediator routed four requests and saw none of the plaintext.
    let seen = world.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 4);
    for body in seen {
        assert!(
            !body.windows(6).any(|w| w == b"secret"),
            "plaintext reached the mediator: {body:?}"
        );
    }
    let stats = world.mediator.delivery_stats().snapshot();
    assert_eq!(stats["cache"].total(), 4, "recorded once per delivery");
}

#[tokio::test]
async fn http_and_channel_nodes_reach_each_other_and_share_a_broadcast() {
    let world = World::new();
    let listener = HttpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr());
    tokio::spawn(listener.serve(world.mediator.clone()));

    let _chan = world.node("mixed/chan").await;
    let http_key = key("mixed/http");
    let http_node = NodeClient::builder(&url)
        .node_key(http_key.clone())
        .token(world.token(&http_key))
        .keys(world.keys.clone())
        .callback("http://127.0.0.1:0")
        .clock(world.clock.clone())
        .start(|request: Incoming| async move {
            Ok::<_, Error>(Bytes::from(format!(
                "mixed/http got {}",
                String::from_utf8_lossy(&request.body)
            )))
        })
        .await
        .unwrap();

    // HTTP node to channel node, through the HTTP API.
    let reply = http_node
        .call(key("mixed/chan"), "/x", "from http")
        .await
        .unwrap();
    assert_eq!(reply, "mixed/chan got from http");

    // Channel node to HTTP node, through the same mediator.
    let caller = world.caller("billing/worker");
    let reply = caller
        .call(Target::One(http_key), "/x", b"from chan")
        .await
        .unwrap();
    assert_eq!(reply, "mixed/http got from chan");

    // A broadcast over both kinds gathers both replies.
    let all = caller.broadcast("mixed", "/x", b"all").await.unwrap();
    let mut replies: Vec<String> = all
        .into_iter()
        .map(|(_, r)| String::from_utf8(r.unwrap().to_vec()).unwrap())
        .collect();
    replies.sort();
    assert_eq!(replies, ["mixed/chan got all", "mixed/http got all"]);
    http_node.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_channel_node_keeps_its_lease_on_the_mediators_clock() {
    let world = World::new();
    let node = ChannelNode::builder(
        &world.hub,
        &world.mediator,
        key("leased/a"),
        world.keys.clone(),
    )
    .ttl(Duration::from_secs(30))
    .start(&world.token(&key("leased/a")), |r: Incoming| async move {
        Ok::<_, Error>(r.body)
    })
    .await
    .unwrap();
    let routes = world.mediator.routes();
    let first = routes.get(node.key()).unwrap().lease_until;

    // Past a third of the lease the node renews, by itself.
    world.clock.advance(Duration::from_secs(11));
    let renewed = wait_for(|| {
        routes
            .get(node.key())
            .map(|n| n.lease_until)
            .filter(|&until| until > first)
    })
    .await;
    assert_eq!(renewed, world.clock.now() + Duration::from_secs(30));

    // The mediator forgets it (an operator removed it, or a restart): the
    // next renewal is told so, and the node registers again at once.
    world
        .mediator
        .remove_key(&Identity::internal(), node.key())
        .await
        .unwrap();
    assert!(routes.get(node.key()).is_none());
    world.clock.advance(Duration::from_secs(11));
    wait_for(|| routes.get(node.key())).await;

    // Stopped, it deregisters and stays gone, however much time passes.
    let k = node.key().clone();
    node.stop().await.unwrap();
    world.clock.advance(Duration::from_secs(60));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(routes.get(&k).is_none());
}

#[tokio::test]
async fn dead_refusing_and_unknown_channel_nodes_answer_clearly() {
    let world = World::new();
    let caller = world.caller("billing/worker");

    // Unknown target: 404, the caller's fault.
    let err = caller
        .call(Target::One(key("gone/x")), "/", b"")
        .await
        .unwrap_err();
    assert_eq!((err.status(), err.kind()), (404, "unknown_target"));

    // A node whose process went away without deregistering: nothing was
    // sent, 502 unreachable; any-of-group moves on to a live node.
    let dead = world.node("pool/dead").await;
    drop(dead);
    let _live = world.node("pool/live").await;
    let err = caller
        .call(Target::One(key("pool/dead")), "/", b"")
        .await
        .unwrap_err();
    assert_eq!((err.status(), err.kind()), (502, "node_unreachable"));
    for _ in 0..4 {
        let reply = caller
            .call(Target::any("pool").unwrap(), "/", b"hi")
            .await
            .unwrap();
        assert_eq!(reply, "pool/live got hi");
    }

    // A handler's refusal keeps its status.
    let picky = key("picky/a");
    let _picky = ChannelNode::builder(
        &world.hub,
        &world.mediator,
        picky.clone(),
        world.keys.clone(),
    )
    .start(&world.token(&picky), |_: Incoming| async move {
        Err::<Bytes, _>(Error::refused(409, "conflict", "already booked"))
    })
    .await
    .unwrap();
    let err = caller
        .call(Target::One(picky), "/book", b"")
        .await
        .unwrap_err();
    assert_eq!(err.status(), 409, "{err}");

    // A payload sealed under another key is refused by the node, not
    // opened.
    let stranger = ChannelNode::builder(
        &world.hub,
        &world.mediator,
        key("billing/stranger"),
        KeyRing::new(SealKey::generate()),
    )
    .connect(&world.token(&key("billing/stranger")))
    .unwrap();
    let err = stranger
        .call(Target::One(key("pool/live")), "/", b"hi")
        .await
        .unwrap_err();
    assert_eq!(err.status(), 400, "{err}");
}

#[tokio::test]
async fn two_deliverers_for_one_scheme_are_refused() {
    let err = Mediator::builder()
        .registry(MemoryRegistry::new())
        .authenticator(Authenticator::hs256(SECRET))
        .deliver(ChannelHub::default())
        .deliver(ChannelHub::default())
        .build()
        .unwrap_err();
    assert_eq!(err.kind(), "config");
    assert!(err.to_string().contains("\"chan\""), "{err}");

    // After building too, as a transport that starts later would add it.
    let mediator = Mediator::builder()
        .registry(MemoryRegistry::new())
        .authenticator(Authenticator::hs256(SECRET))
        .deliver(ChannelHub::default())
        .build()
        .unwrap();
    assert!(mediator.add_deliver(ChannelHub::default()).is_err());
    assert!(mediator.add_deliver(HttpDelivery::default()).is_ok());
    assert_eq!(mediator.schemes(), ["chan", "http", "https"]);
}

#[tokio::test]
async fn an_access_list_wrapped_around_the_router_decides_on_the_verified_caller() {
    let acl = GroupAcl::new().allow("billing", "users");
    let world = World::with(move |builder| {
        builder.wrap_router(move |default| Arc::new(acl.wrapping(default)))
    });
    let _api = world.node("users/api").await;
    let _vault = world.node("vault/keys").await;

    let billing = world.caller("billing/worker");
    let reply = billing
        .call(Target::One(key("users/api")), "/", b"ok")
        .await
        .unwrap();
    assert_eq!(reply, "users/api got ok");
    let err = billing
        .call(Target::One(key("vault/keys")), "/", b"no")
        .await
        .unwrap_err();
    assert_eq!(err.status(), 403, "{err}");
    assert!(
        err.to_string().contains("billing may not call vault"),
        "{err}"
    );

    // Another group is not on the list at all.
    let users = world.caller("users/other");
    let err = users
        .call(Target::any("users").unwrap(), "/", b"")
        .await
        .unwrap_err();
    assert_eq!(err.status(), 403);

    // Admins pass; the refusals never reached a node.
    let admin = world
        .mediator
        .route(
            &Identity::internal(),
            Envelope::new(Target::One(key("vault/keys")), "/", "x"),
            None,
        )
        .await;
    assert!(admin.is_ok(), "{admin:?}");
    assert_eq!(world.seen.lock().unwrap().len(), 2);
}

/// Polls `probe` until it answers, for at most five seconds of real time:
/// background tasks react to a moved clock, but not instantly.
async fn wait_for<T>(mut probe: impl FnMut() -> Option<T>) -> T {
    for _ in 0..500 {
        if let Some(found) = probe() {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the expected change never came");
}
