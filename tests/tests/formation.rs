//! A formation over real sockets on loopback: a mediator and passive,
//! sender and standalone nodes built with `NodeClient`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use mediator_core::{Error, Fault, KeyRing, ManualClock, NodeKey, SealKey, Summary, Timestamp};
use mediator_tests::harness::{describe, eventually, json, key, minter, ring, Hub};
use mediator_transport_http::client::{Backoff, Incoming};
use mediator_transport_http::{ClientError, NodeClient};

#[tokio::test]
async fn unicast_between_passive_sender_and_standalone_nodes() {
    let hub = Hub::start().await;
    let passive = hub
        .node("users/api")
        .start(describe("passive"))
        .await
        .expect("passive node starts");
    assert!(hub.knows("users/api"));
    let callback = passive.callback_url().expect("callback");
    assert_eq!(
        callback,
        format!("http://{}", passive.local_addr().expect("bound"))
    );

    // A standalone node both answers and calls.
    let standalone = hub
        .node("billing/worker-1")
        .start(|request: Incoming| async move {
            let mut reply = b"standalone got ".to_vec();
            reply.extend_from_slice(&request.body);
            Ok(Bytes::from(reply))
        })
        .await
        .expect("standalone node starts");
    let reply = standalone
        .call(key("users/api"), "/lookup?id=7", "hello")
        .await
        .expect("standalone calls passive");
    let seen = json(&reply);
    assert_eq!(seen["node"], "passive");
    assert_eq!(seen["from"], "billing/worker-1");
    assert_eq!(seen["target"], "users/api");
    assert_eq!(seen["path"], "/lookup");
    assert_eq!(seen["query"], "id=7");
    assert_eq!(seen["method"], "POST");
    assert_eq!(seen["body"], "hello");
    assert!(seen["deadline"].as_i64().expect("deadline sent") > 0);

    // A sender-only node calls both.
    let sender = hub.sender("cron/daily").await;
    assert!(sender.callback_url().is_none());
    assert!(!hub.knows("cron/daily"), "a sender does not register");
    let reply = sender
        .call(key("billing/worker-1"), "/", Bytes::from_static(b"ping"))
        .await
        .expect("sender calls standalone");
    assert_eq!(reply, "standalone got ping");
    let seen = json(
        &sender
            .call(key("users/api"), "x/y", Vec::from(&b"\x00\xffbinary"[..]))
            .await
            .expect("sender calls passive"),
    );
    assert_eq!(seen["from"], "cron/daily");
    assert_eq!(seen["path"], "/x/y");

    // An empty body and a large one.
    assert_eq!(
        json(
            &sender
                .call(key("users/api"), "/e", "")
                .await
                .expect("empty")
        )["body"],
        ""
    );
    let big = "z".repeat(1 << 20);
    let seen = json(
        &sender
            .call(key("users/api"), "/big", big.clone())
            .await
            .expect("1 MiB"),
    );
    assert_eq!(seen["body"].as_str().map(str::len), Some(big.len()));

    standalone.shutdown().await.expect("shutdown");
    passive.shutdown().await.expect("shutdown");
    hub.stop().await;
}

#[tokio::test]
async fn unknown_targets_slow_nodes_and_handler_errors_are_told_apart() {
    let hub = Hub::start().await;
    let slow = hub
        .node("slow/one")
        .start(|request: Incoming| async move {
            tokio::time::sleep(Duration::from_secs(3)).await;
            Ok::<_, Error>(request.body)
        })
        .await
        .expect("slow node");
    let picky = hub
        .node("picky/one")
        .start(|request: Incoming| async move {
            if request.body.is_empty() {
                Err(Error::refused(422, "empty", "say something"))
            } else {
                Err(Error::invalid("body", "never good enough"))
            }
        })
        .await
        .expect("picky node");
    let me = key("callers/c");
    let caller = hub
        .client(&me)
        .timeout(Duration::from_millis(400))
        .connect()
        .await
        .expect("caller");

    // 404: nobody registered as that.
    match caller.call(key("nobody/here"), "/", "x").await {
        Err(ClientError::Mediator {
            status: 404,
            kind,
            fault,
            ..
        }) => {
            assert_eq!(kind, "unknown_target");
            assert_eq!(fault, Some(Fault::Caller));
        }
        other => panic!("expected 404, got {other:?}"),
    }
    // 504: the node is too slow for the caller's timeout.
    let started = std::time::Instant::now();
    match caller.call(key("slow/one"), "/", "x").await {
        Err(ClientError::Mediator {
            status: 504,
            kind,
            fault,
            message,
        }) => {
            assert_eq!(kind, "deadline_passed");
            assert_eq!(fault, Some(Fault::Node));
            assert!(message.contains("slow/one"), "{message}");
        }
        other => panic!("expected 504, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(2));
    // The node's own refusals carry its status and message.
    match caller.call(key("picky/one"), "/", "").await {
        Err(ClientError::Node {
            node,
            status,
            message,
            ..
        }) => {
            assert_eq!(node, "picky/one");
            assert_eq!(status, 422);
            assert_eq!(message, "say something");
        }
        other => panic!("expected the node's 422, got {other:?}"),
    }
    match caller.call(key("picky/one"), "/", "x").await {
        Err(ClientError::Node {
            status: 400,
            message,
            ..
        }) => {
            assert!(message.contains("never good enough"), "{message}");
        }
        other => panic!("expected the node's 400, got {other:?}"),
    }
    // 503: the group is known, but its only node is dead.
    let dead = hub
        .node("ghosts/one")
        .start(describe("ghost"))
        .await
        .expect("ghost");
    let at = hub
        .mediator
        .routes()
        .get(&key("ghosts/one"))
        .and_then(|node| node.endpoint.url().map(str::to_owned))
        .expect("the ghost's url");
    let addr = at.trim_start_matches("http://").to_owned();
    drop(dead);
    // Dead once its port refuses: the mediator answers on other threads,
    // which may call before this runtime has closed the node's socket.
    eventually("the ghost's port refuses connections", || {
        std::net::TcpStream::connect(&addr).is_err()
    })
    .await;
    match caller.any("ghosts", "/", "x").await {
        Err(ClientError::Mediator {
            status: 503, kind, ..
        }) => assert_eq!(kind, "no_node_available"),
        other => panic!("expected 503, got {other:?}"),
    }
    // 401: a token the mediator did not sign.
    let forged = NodeClient::builder(&hub.base)
        .node_key(me.clone())
        .token_minter(mediator_core::TokenMinter::hs256(
            "another secret entirely, long",
        ))
        .keys(ring())
        .connect()
        .await
        .expect("client");
    match forged.call(key("picky/one"), "/", "x").await {
        Err(ClientError::Mediator {
            status: 401, kind, ..
        }) => assert_eq!(kind, "unauthorized"),
        other => panic!("expected 401, got {other:?}"),
    }
    // A node key other than the formation's: the reply cannot be opened,
    // and the node refused the request before.
    let stranger = NodeClient::builder(&hub.base)
        .node_key(me.clone())
        .token(hub.token_for(&me))
        .keys(KeyRing::new(SealKey::generate()))
        .connect()
        .await
        .expect("client");
    match stranger.call(key("picky/one"), "/", "x").await {
        Err(ClientError::Node {
            status: 400,
            message,
            ..
        }) => {
            assert!(message.contains("unknown key id"), "{message}");
        }
        other => panic!("expected the node's 400, got {other:?}"),
    }
    // Unreachable mediator.
    let nowhere = NodeClient::builder("http://127.0.0.1:9")
        .token("t")
        .keys(ring())
        .connect()
        .await
        .expect("client");
    assert!(matches!(
        nowhere.call(key("a/b"), "/", "x").await,
        Err(ClientError::Unreachable { .. })
    ));

    slow.shutdown().await.expect("shutdown");
    picky.shutdown().await.expect("shutdown");
    hub.stop().await;
}

#[tokio::test]
async fn broadcast_with_one_dead_node() {
    let hub = Hub::start().await;
    let a = hub.node("cache/a").start(describe("a")).await.expect("a");
    let dead = hub.node("cache/b").start(describe("b")).await.expect("b");
    let c = hub.node("cache/c").start(describe("c")).await.expect("c");
    // Dropped without shutdown: its server stops, its registration stays.
    drop(dead);
    assert!(hub.knows("cache/b"));

    let sender = hub.sender("ops/console").await;
    let replies = sender
        .broadcast("cache", "/flush", "all of it")
        .await
        .expect("broadcast");
    assert_eq!(
        replies.summary,
        Summary {
            asked: 3,
            answered: 2,
            failed: 1,
            timed_out: 0
        }
    );
    let nodes: Vec<String> = replies.replies.iter().map(|r| r.node.to_string()).collect();
    assert_eq!(
        nodes,
        ["cache/a", "cache/b", "cache/c"],
        "registration order"
    );
    for reply in &replies.replies {
        assert!(reply.id.is_some());
        match (reply.node.name(), &reply.result) {
            (
                Some("b"),
                Err(ClientError::Mediator {
                    status,
                    kind,
                    fault,
                    message,
                }),
            ) => {
                assert_eq!(*status, 502);
                assert_eq!(kind, "node_unreachable");
                assert_eq!(*fault, Some(Fault::Node));
                assert!(message.contains("cache/b"), "{message}");
            }
            (Some(name @ ("a" | "c")), Ok(body)) => {
                let seen = json(body);
                assert_eq!(seen["node"], name);
                assert_eq!(seen["target"], "cache/*");
                assert_eq!(seen["from"], "ops/console");
                assert_eq!(seen["path"], "/flush");
                assert_eq!(seen["body"], "all of it");
            }
            other => panic!("unexpected entry {other:?}"),
        }
    }
    assert_eq!(replies.successes().count(), 2);

    // An unknown group is refused as a whole.
    match sender.broadcast("nothing", "/flush", "x").await {
        Err(ClientError::Mediator { status: 404, .. }) => {}
        other => panic!("expected 404, got {other:?}"),
    }
    a.shutdown().await.expect("shutdown");
    c.shutdown().await.expect("shutdown");
    hub.stop().await;
}

#[tokio::test]
async fn any_spreads_load_and_skips_a_dead_node() {
    let hub = Hub::start().await;
    let slow = |name: &'static str| {
        move |request: Incoming| async move {
            // Slow enough that concurrent requests overlap, so the least
            // busy node differs between them.
            tokio::time::sleep(Duration::from_millis(30)).await;
            let _ = request;
            Ok::<_, Error>(Bytes::from(name))
        }
    };
    let w1 = hub.node("workers/w1").start(slow("w1")).await.expect("w1");
    let w2 = hub.node("workers/w2").start(slow("w2")).await.expect("w2");
    let dead = hub.node("workers/w3").start(slow("w3")).await.expect("w3");
    drop(dead);

    let sender = hub.sender("ops/balancer").await;
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..40 {
        let sender = sender.clone();
        calls.spawn(async move { sender.any("workers", "/job", format!("job {i}")).await });
    }
    let mut counts: HashMap<String, usize> = HashMap::new();
    while let Some(done) = calls.join_next().await {
        let (replier, body) = done.expect("task").expect("any succeeds");
        assert_eq!(
            replier.to_string(),
            format!("workers/{}", String::from_utf8_lossy(&body))
        );
        *counts.entry(replier.to_string()).or_default() += 1;
    }
    assert_eq!(counts.values().sum::<usize>(), 40);
    assert!(
        !counts.contains_key("workers/w3"),
        "the dead node answered: {counts:?}"
    );
    for live in ["workers/w1", "workers/w2"] {
        assert!(
            counts.get(live).copied().unwrap_or(0) >= 5,
            "uneven: {counts:?}"
        );
    }
    w1.shutdown().await.expect("shutdown");
    w2.shutdown().await.expect("shutdown");
    hub.stop().await;
}

#[tokio::test]
async fn the_unnamed_node() {
    let hub = Hub::start().await;
    let solo = hub
        .node("solo/")
        .start(describe("unnamed"))
        .await
        .expect("unnamed node starts");
    assert!(hub.knows(NodeKey::unnamed("solo").expect("key")));
    assert_eq!(solo.key().and_then(NodeKey::name), None);

    // Built with identity(group, None) too.
    let caller_key = key("callers/");
    let caller = NodeClient::builder(&hub.base)
        .identity("callers", None)
        .token(hub.token_for(&caller_key))
        .keys(ring())
        .connect()
        .await
        .expect("unnamed sender");
    let seen = json(
        &caller
            .call(NodeKey::unnamed("solo").expect("key"), "/who", "?")
            .await
            .expect("call the unnamed node"),
    );
    assert_eq!(seen["node"], "unnamed");
    assert_eq!(seen["target"], "solo/");
    assert_eq!(seen["from"], "callers/");
    let (replier, _) = caller.any("solo", "/who", "?").await.expect("any");
    assert_eq!(replier, NodeKey::unnamed("solo").expect("key"));

    solo.shutdown().await.expect("shutdown");
    hub.stop().await;
}

#[tokio::test]
async fn shutdown_deregisters() {
    let hub = Hub::start().await;
    let n = hub
        .node("temp/one")
        .start(describe("t"))
        .await
        .expect("starts");
    let addr = n.local_addr().expect("bound");
    assert!(hub.knows("temp/one"));
    let clone = n.clone();
    n.shutdown().await.expect("deregisters");
    assert!(!hub.knows("temp/one"));
    assert!(hub
        .mediator
        .nodes(Some("temp"))
        .await
        .expect("list")
        .is_empty());
    // The callback server is gone too.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    // A second shutdown (from a clone) has nothing left to do.
    clone.shutdown().await.expect("nothing to do");
    let sender = hub.sender("ops/x").await;
    match sender.call(key("temp/one"), "/", "x").await {
        Err(ClientError::Mediator { status: 404, .. }) => {}
        other => panic!("expected 404, got {other:?}"),
    }
    hub.stop().await;
}

/// The lease the time-driven tests ask for: a renewal is due after at
/// most a third of it, which is how far they move the clock to see one.
const TTL: Duration = Duration::from_secs(30);

/// A quick backoff, so a step of [`Backoff::max`] on the clock always
/// brings the next registration attempt due.
const QUICK_BACKOFF: Backoff = Backoff {
    initial: Duration::from_millis(50),
    max: Duration::from_millis(400),
};

#[tokio::test]
async fn registers_again_after_the_mediator_restarts_empty() {
    // One clock for every mediator of the test and for the node: its
    // renewals and retries come due when the test moves it.
    let clock = ManualClock::starting_now();
    let hub = Hub::config().clock(clock.clone()).start().await;
    let addr = hub.socket();
    let me = key("durable/one");
    let n = hub
        .node(&me)
        .token_minter(minter())
        .ttl(TTL)
        .backoff(QUICK_BACKOFF)
        .start(describe("durable"))
        .await
        .expect("starts");
    assert!(hub.knows(&me));

    // The mediator goes away and comes back on the same port with an
    // empty registry.
    hub.stop().await;
    let hub = Hub::config().clock(clock.clone()).addr(addr).start().await;
    assert!(!hub.knows(&me));
    // The renewal comes due, is answered "not registered", and the node
    // registers again at once.
    clock.advance(TTL / 3);
    eventually("the node registers with the new mediator", || {
        hub.knows(&me)
    })
    .await;
    let sender = hub.sender("ops/y").await;
    let seen = json(&sender.call(me.clone(), "/", "back").await.expect("call"));
    assert_eq!(seen["body"], "back");

    // Down for a while: whatever answers at the mediator's address hangs
    // up at once, and counts the node's attempts.
    hub.stop().await;
    let attempts = Arc::new(AtomicUsize::new(0));
    let down = tokio::net::TcpListener::bind(addr)
        .await
        .expect("bind the mediator's address");
    let hanging_up = tokio::spawn({
        let attempts = Arc::clone(&attempts);
        async move {
            while let Ok((stream, _)) = down.accept().await {
                attempts.fetch_add(1, Ordering::SeqCst);
                drop(stream);
            }
        }
    });
    clock.advance(TTL / 3);
    // Each look moves the clock a backoff step on, so every failure is
    // followed by another attempt however its jitter fell.
    eventually("several failed attempts", || {
        clock.advance(QUICK_BACKOFF.max);
        attempts.load(Ordering::SeqCst) >= 3
    })
    .await;
    hanging_up.abort();
    let _ = hanging_up.await;

    // Back again: the next attempt registers.
    let hub = Hub::config().clock(clock.clone()).addr(addr).start().await;
    eventually("the node registers after an outage", || {
        clock.advance(QUICK_BACKOFF.max);
        hub.knows(&me)
    })
    .await;

    n.shutdown().await.expect("shutdown");
    assert!(!hub.knows(&me));
    hub.stop().await;
}

#[tokio::test]
async fn the_lease_is_renewed_before_it_runs_out() {
    let clock = ManualClock::starting_now();
    let hub = Hub::config().clock(clock.clone()).start().await;
    let me = key("renewing/one");
    let n = hub
        .node(&me)
        .ttl(TTL)
        .start(describe("r"))
        .await
        .expect("starts");
    let first = hub.lease_until(&me).expect("registered");
    // A third of the lease at a time, until well past the first lease:
    // each time the node renews, and a sweep then finds nothing to evict.
    while hub.now() <= first + TTL / 3 {
        let before = hub.lease_until(&me).expect("registered");
        clock.advance(TTL / 3);
        eventually("the lease moves forward", || {
            hub.lease_until(&me).is_some_and(|until| until > before)
        })
        .await;
        let gone = hub.mediator.sweep().await.expect("sweep");
        assert!(gone.is_empty(), "evicted: {gone:?}");
    }
    assert!(hub.knows(&me));
    n.shutdown().await.expect("shutdown");
    hub.stop().await;
}

#[tokio::test]
async fn a_node_whose_lease_runs_out_is_evicted() {
    let clock = ManualClock::starting_now();
    let hub = Hub::config().clock(clock.clone()).start().await;
    // The mediator's own sweeps, on its clock.
    let maintenance = hub.mediator.spawn_maintenance();
    let me = key("mortal/one");
    // Its lease keeper reads a clock of its own that never moves, as a
    // node that hung would: it never renews.
    let n = hub
        .node(&me)
        .ttl(TTL)
        .clock(ManualClock::starting_now())
        .start(describe("m"))
        .await
        .expect("starts");
    let until = hub.lease_until(&me).expect("registered");
    // Then it dies without deregistering.
    drop(n);

    // Just before the lease ends, a sweep keeps it.
    clock.set(until - Duration::from_secs(1));
    let gone = hub.mediator.sweep().await.expect("sweep");
    assert!(gone.is_empty(), "evicted early: {gone:?}");
    assert!(hub.knows(&me));

    // A sweep period past its end, the maintenance loop evicts it.
    clock.set(until + hub.mediator.limits().sweep_every);
    eventually("the maintenance sweep evicts the node", || !hub.knows(&me)).await;
    assert!(hub
        .mediator
        .nodes(Some("mortal"))
        .await
        .expect("list")
        .is_empty());
    let sender = hub.sender("ops/z").await;
    match sender.call(me, "/", "x").await {
        Err(ClientError::Mediator { status: 404, .. }) => {}
        other => panic!("expected 404, got {other:?}"),
    }
    maintenance.abort();
    hub.stop().await;
}

#[tokio::test]
async fn the_lease_keeper_follows_the_nodes_clock() {
    let hub = Hub::start().await;
    let me = key("clocked/one");
    let clock = ManualClock::new(Timestamp::now());
    let n = hub
        .node("clocked/one")
        .ttl(Duration::from_secs(60))
        .clock(clock.clone())
        .start(describe("c"))
        .await
        .expect("starts");
    let lease = || {
        hub.mediator
            .routes()
            .get(&me)
            .expect("registered")
            .lease_until
    };
    let first = lease();
    // Nothing is due for at least 16 s of the node's time (a third of the
    // lease, less a fifth of that at most for jitter): at 15 s, a keeper
    // that woke too early would show itself well within this pause.
    clock.advance(Duration::from_secs(15));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(lease(), first, "renewed before its time");
    // A third of the lease passes on the node's clock: it renews at once.
    clock.advance(Duration::from_secs(5));
    let started = std::time::Instant::now();
    eventually("the lease moves forward", || lease() > first).await;
    assert!(started.elapsed() < Duration::from_secs(2));
    n.shutdown().await.expect("shutdown");
    hub.stop().await;
}

#[tokio::test]
async fn start_refuses_what_the_mediator_refuses() {
    let hub = Hub::start().await;
    // A token for another node: 403 at registration, and nothing left bound.
    let other = key("someone/else");
    let result = NodeClient::builder(&hub.base)
        .identity("me", Some("mine"))
        .token(hub.token_for(&other))
        .keys(ring())
        .listen("127.0.0.1:0".parse().expect("addr"))
        .start(describe("x"))
        .await;
    match result {
        Err(ClientError::Mediator {
            status: 403, kind, ..
        }) => assert_eq!(kind, "forbidden"),
        other => panic!("expected 403, got {other:?}"),
    }
    // Missing pieces are configuration errors.
    for builder in [
        NodeClient::builder(&hub.base)
            .keys(ring())
            .token("t")
            .callback("http://127.0.0.1:0"),
        NodeClient::builder(&hub.base)
            .identity("a", Some("b"))
            .token("t")
            .callback("http://127.0.0.1:0"),
        NodeClient::builder(&hub.base)
            .identity("a", Some("b"))
            .keys(ring())
            .callback("http://127.0.0.1:0"),
        NodeClient::builder(&hub.base)
            .identity("a", Some("b"))
            .keys(ring())
            .token("t"),
        NodeClient::builder(&hub.base)
            .identity("a", Some("b"))
            .keys(ring())
            .token("t")
            .listen("0.0.0.0:0".parse().expect("addr")),
        NodeClient::builder(&hub.base)
            .identity("a b", Some("b"))
            .keys(ring())
            .token("t")
            .callback("http://127.0.0.1:0"),
        NodeClient::builder("ftp://x")
            .identity("a", Some("b"))
            .keys(ring())
            .token("t")
            .callback("http://127.0.0.1:0"),
        NodeClient::builder(&hub.base)
            .identity("a", Some("b"))
            .keys(ring())
            .token("t")
            .callback("https://127.0.0.1:0"),
        NodeClient::builder(&hub.base)
            .identity("a", Some("b"))
            .keys(ring())
            .token("t")
            .callback("http://127.0.0.1:0")
            .ttl(Duration::from_millis(10)),
        NodeClient::builder(&hub.base)
            .identity("a", Some("b"))
            .keys(ring())
            .token("t")
            .callback("http://127.0.0.1:0")
            .backoff(Backoff {
                initial: Duration::ZERO,
                max: Duration::from_secs(1),
            }),
    ] {
        let shown = format!("{builder:?}");
        match builder.start(describe("x")).await {
            Err(ClientError::Core(_)) => {}
            other => panic!("{shown}: expected a configuration error, got {other:?}"),
        }
    }
    hub.stop().await;
}

#[tokio::test]
async fn a_node_the_mediator_forgot_registers_again() {
    let clock = ManualClock::starting_now();
    let hub = Hub::config().clock(clock.clone()).start().await;
    let me = key("forgotten/one");
    let n = hub
        .node(&me)
        .ttl(TTL)
        .start(describe("f"))
        .await
        .expect("starts");
    let first_id = hub.mediator.routes().get(&me).expect("registered").id;
    // The operator (or an eviction) removes it: the next renewal gets 404.
    let removed = hub
        .mediator
        .remove_key(&mediator_core::Identity::internal(), &me)
        .await
        .expect("remove");
    assert_eq!(removed, 1);
    assert!(!hub.knows(&me));
    clock.advance(TTL / 3);
    eventually("the node registers again after a 404 renewal", || {
        hub.knows(&me)
    })
    .await;
    let again = hub.mediator.routes().get(&me).expect("registered");
    assert_ne!(again.id, first_id, "a new registration, not a renewal");
    n.shutdown().await.expect("shutdown");
    hub.stop().await;
}

#[tokio::test]
async fn shutdown_leaves_no_connection_of_the_callback_server_open() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let hub = Hub::start().await;
    let n = hub
        .node("temp/quiet")
        .start(describe("q"))
        .await
        .expect("starts");
    let addr = n.local_addr().expect("bound");
    // One peer connects and says nothing; another stops halfway through
    // its request head; a third sends a head and only part of the body it
    // announced, so its request never reaches the handler.
    let mut silent = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut halfway = tokio::net::TcpStream::connect(addr).await.expect("connect");
    halfway
        .write_all(b"POST / HTTP/1.1\r\nhost: x\r\n")
        .await
        .expect("write");
    let mut stalled = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stalled
        .write_all(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n0123456789")
        .await
        .expect("write");
    n.shutdown().await.expect("deregisters");
    // Once shutdown returned, the node holds nothing open.
    for (what, stream) in [
        ("silent", &mut silent),
        ("halfway", &mut halfway),
        ("stalled", &mut stalled),
    ] {
        let mut buf = [0u8; 256];
        let read = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf)).await;
        assert!(
            matches!(read, Ok(Ok(0) | Err(_))),
            "the {what} connection is still open after shutdown: {read:?}"
        );
    }
    hub.stop().await;
}
