//! Two instances of a formation on one store, each on its own socket:
//! changes travel by the store's feed, and a call for a node attached to
//! the other instance is forwarded to it over the HTTP/2 link between
//! them, authenticated by the secret they share.
//!
//! The attached nodes here are answered by a deliverer of the instance's
//! own (`attached:ID`), so what reached the node can be inspected; the
//! same over real QUIC connections and separate processes is in the
//! examples' formation tests.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use mediator_core::formation::PeerKey;
use mediator_core::{
    async_trait, Deliver, DeliverError, Endpoint, Envelope, Identity, MemoryRegistry, Node,
    Registration, Registry, Reply, RequestContext, Timestamp,
};
use mediator_tests::harness::{
    assert_error, eventually, json, key, EchoNode, Hub, HubConfig, SECRET,
};

/// What an attached node received.
#[derive(Debug, Clone)]
struct Received {
    node: String,
    target: String,
    from: Option<String>,
    forwarded_by: Option<String>,
    request_id: Option<String>,
    traceparent: Option<String>,
    deadline_left: Duration,
    path: String,
    body: Vec<u8>,
    headers: Vec<String>,
}

/// The nodes attached to one instance: each answers `attached <node>`.
#[derive(Clone, Default)]
struct Attached {
    instance: &'static str,
    seen: Arc<Mutex<Vec<Received>>>,
}

impl Attached {
    fn seen(&self) -> Vec<Received> {
        self.seen.lock().expect("not poisoned").clone()
    }
}

#[async_trait]
impl Deliver for Attached {
    fn schemes(&self) -> Vec<String> {
        vec!["attached".into()]
    }

    async fn deliver(
        &self,
        node: &Node,
        envelope: &Envelope,
        cx: &RequestContext,
    ) -> Result<Reply, DeliverError> {
        if node.endpoint.attached_instance() != Some(self.instance) {
            return Err(DeliverError::unreachable("not attached here"));
        }
        self.seen.lock().expect("not poisoned").push(Received {
            node: node.key.to_string(),
            target: envelope.target.to_string(),
            from: envelope.from.as_ref().map(ToString::to_string),
            forwarded_by: cx.forwarded_by.clone(),
            request_id: cx.trace.request_id.clone(),
            traceparent: cx.trace.traceparent.clone(),
            deadline_left: cx.deadline.remaining(),
            path: envelope.path_and_query.clone(),
            body: envelope.body.to_vec(),
            headers: envelope.headers.keys().map(|k| k.to_string()).collect(),
        });
        Ok(Reply::new(
            http::StatusCode::OK,
            format!("attached {} at {}", node.key, self.instance),
        ))
    }
}

/// Two instances on one store, and their maintenance loops.
struct Formation {
    a: Hub,
    b: Hub,
    at_a: Attached,
    at_b: Attached,
    store: Arc<MemoryRegistry>,
    loops: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Formation {
    fn drop(&mut self) {
        for task in &self.loops {
            task.abort();
        }
    }
}

/// Two instances, `hub-a` and `hub-b`, on one memory store, each following
/// the feed and heartbeating its lease of `ttl`.
async fn formation(ttl: Duration) -> Formation {
    let store = Arc::new(MemoryRegistry::new());
    let instance = |id: &'static str, attached: &Attached| -> HubConfig {
        Hub::config()
            .registry(Arc::clone(&store))
            .formation(id)
            .deliver(attached.clone())
            .limits(|l| l.instance_ttl = ttl)
    };
    let (at_a, at_b) = (
        Attached {
            instance: "hub-a",
            ..Attached::default()
        },
        Attached {
            instance: "hub-b",
            ..Attached::default()
        },
    );
    let a = instance("hub-a", &at_a).start().await;
    let b = instance("hub-b", &at_b).start().await;
    let mut loops = Vec::new();
    for hub in [&a, &b] {
        hub.mediator.heartbeat().await.expect("announce");
        loops.push(hub.mediator.spawn_maintenance());
    }
    Formation {
        a,
        b,
        at_a,
        at_b,
        store,
        loops,
    }
}

async fn attach(hub: &Hub, node: &str) {
    let endpoint = Endpoint::attached(hub.mediator.instance_id()).expect("an instance id");
    hub.mediator
        .register(
            &Identity::internal(),
            Registration::new(key(node), endpoint, Duration::from_secs(60)),
        )
        .await
        .expect("attach");
}

#[tokio::test]
async fn a_call_for_a_node_attached_elsewhere_is_forwarded_in_one_hop() {
    let f = formation(Duration::from_secs(6)).await;
    let (a, b, at_b) = (&f.a, &f.b, &f.at_b);
    attach(b, "users/api").await;
    eventually("hub-a learns users/api from the feed", || {
        a.knows("users/api")
    })
    .await;

    let token = a.token_for("billing/worker");
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let answer = a
        .call(
            "POST",
            "/one/users/api/lookup?id=7",
            &[
                ("authorization", &format!("Bearer {token}")),
                ("x-request-id", "call-1"),
                ("traceparent", traceparent),
                ("x-mediator-timeout-ms", "3000"),
                ("content-type", "application/octet-stream"),
            ],
            b"sealed bytes".to_vec(),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.text(), "attached users/api at hub-b");
    assert_eq!(answer.header("x-mediator-node"), Some("users/api"));
    assert_eq!(answer.header("x-request-id"), Some("call-1"));

    let seen = at_b.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let got = &seen[0];
    assert_eq!(got.node, "users/api");
    assert_eq!(got.target, "users/api");
    assert_eq!(
        got.from.as_deref(),
        Some("billing/worker"),
        "the verified sender"
    );
    assert_eq!(got.forwarded_by.as_deref(), Some("hub-a"));
    assert_eq!(got.request_id.as_deref(), Some("call-1"));
    assert_eq!(
        got.traceparent.as_deref().map(|t| &t[..35]),
        Some(&traceparent[..35]),
        "the trace continues"
    );
    assert!(
        got.deadline_left <= Duration::from_secs(3) && got.deadline_left > Duration::ZERO,
        "the caller's deadline travels: {:?} left",
        got.deadline_left
    );
    assert_eq!(got.path, "/lookup?id=7");
    assert_eq!(got.body, b"sealed bytes", "the sealed payload as sent");
    for header in &got.headers {
        assert!(
            !matches!(
                header.as_str(),
                "authorization" | "x-jwt" | "x-mediator-peer"
            ),
            "a credential reached the node: {header}"
        );
    }
    assert!(got.headers.iter().any(|h| h == "content-type"));
}

#[tokio::test]
async fn every_node_reaches_every_node_and_a_broadcast_spans_the_formation() {
    let f = formation(Duration::from_secs(6)).await;
    let (a, b, at_a, at_b) = (&f.a, &f.b, &f.at_a, &f.at_b);
    let echo = EchoNode::start("cache/http").await;
    a.register("cache/http", &echo.url).await;
    attach(a, "cache/on-a").await;
    attach(b, "cache/on-b").await;
    for hub in [a, b] {
        for node in ["cache/http", "cache/on-a", "cache/on-b"] {
            eventually(&format!("{node} routable everywhere"), || hub.knows(node)).await;
        }
    }
    for (hub, name) in [(a, "a"), (b, "b")] {
        let token = hub.token_for("ops/cron");
        for node in ["cache/on-a", "cache/on-b"] {
            let answer = hub
                .call_as("POST", &format!("/one/{node}/x"), &token, "hi")
                .await;
            assert_eq!(answer.status, 200, "{node} via {name}: {}", answer.text());
        }
        let answer = hub.call_as("POST", "/many/cache/flush", &token, "{}").await;
        assert_eq!(answer.status, 200, "{}", answer.text());
        assert_eq!(
            answer.header("x-mediator-summary"),
            Some("asked=3; answered=3; failed=0; timed_out=0"),
            "one summary for the group across both instances, via {name}"
        );
        let nodes: Vec<String> = json(answer.body.as_ref())
            .as_array()
            .expect("entries")
            .iter()
            .map(|e| e["node"].as_str().unwrap_or_default().to_owned())
            .collect();
        assert_eq!(nodes.len(), 3, "{nodes:?}");
    }
    // Each attached node was delivered to by its own instance only: two
    // unicasts and two broadcasts, each with what the caller addressed
    // (which a sealed payload is bound to), forwarded or not.
    for seen in [at_a.seen(), at_b.seen()] {
        let targets: Vec<&str> = seen.iter().map(|r| r.target.as_str()).collect();
        assert_eq!(targets.len(), 4, "{targets:?}");
        assert_eq!(
            targets.iter().filter(|t| **t == "cache/*").count(),
            2,
            "{targets:?}"
        );
    }
    assert_eq!(echo.count(), 2, "the HTTP node got both broadcasts");
}

#[tokio::test]
async fn a_forwarded_call_is_never_forwarded_again() {
    let f = formation(Duration::from_secs(6)).await;
    let (a, b, at_a, store) = (&f.a, &f.b, &f.at_a, &f.store);
    // Instance hub-c claims hub-a's address: a call forwarded to "hub-c"
    // lands at hub-a, which holds no such node and must not pass it on.
    store
        .announce_instance("hub-c", &a.base, Duration::from_secs(60), Timestamp::now())
        .await
        .expect("announce hub-c");
    let stray = Registration::new(
        key("users/stray"),
        Endpoint::attached("hub-c").expect("id"),
        Duration::from_secs(60),
    );
    b.mediator
        .register(&Identity::internal(), stray)
        .await
        .expect("register");
    eventually("hub-a learns users/stray", || a.knows("users/stray")).await;
    let started = std::time::Instant::now();
    let answer = b
        .call_as("POST", "/one/users/stray/x", &b.token_for("ops/cron"), "hi")
        .await;
    assert_error(&answer, 503, "no_node_available", "hub");
    assert!(
        answer.text().contains("not forwarded again"),
        "{}",
        answer.text()
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "no loop, no wait"
    );
    assert!(at_a.seen().is_empty());
}

#[tokio::test]
async fn the_peer_route_takes_the_formations_credential_only() {
    let f = formation(Duration::from_secs(6)).await;
    let (a, at_a) = (&f.a, &f.at_a);
    attach(a, "users/api").await;
    let path = "/peer/one/users/api/x";
    let key = PeerKey::from_secret(SECRET.as_bytes());
    let now = Timestamp::now();
    let stale = key.sign("hub-b", Timestamp::from_millis(now.as_millis() - 120_000));
    let foreign = PeerKey::from_secret(b"another formation's secret, 32 bytes+").sign("hub-b", now);
    let node_token = a.token_for("users/api");
    let forged = format!("hub-b.{}.{}", now.as_millis(), "00".repeat(32));
    for (what, headers) in [
        ("no credential", vec![]),
        (
            "a node's token",
            vec![("authorization", format!("Bearer {node_token}"))],
        ),
        ("a forged credential", vec![("x-mediator-peer", forged)]),
        (
            "another secret's credential",
            vec![("x-mediator-peer", foreign)],
        ),
        ("a stale credential", vec![("x-mediator-peer", stale)]),
        ("garbage", vec![("x-mediator-peer", "hub-b".to_owned())]),
    ] {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let answer = a.call("POST", path, &headers, "hi").await;
        assert_error(&answer, 401, "unauthorized", "caller");
        assert!(at_a.seen().is_empty(), "{what} reached the node");
    }
    let good = key.sign("hub-b", now);
    let answer = a
        .call(
            "POST",
            path,
            &[("x-mediator-peer", &good), ("x-mediator-from", "billing/w")],
            "hi",
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(at_a.seen()[0].from.as_deref(), Some("billing/w"));
    // A peer forwards single calls only; a bad sender is refused.
    let answer = a
        .call(
            "POST",
            path,
            &[("x-mediator-peer", &good), ("x-mediator-from", "not a key")],
            "hi",
        )
        .await;
    assert_eq!(answer.status, 400, "{}", answer.text());
    // What the caller addressed must cover the node the path names.
    let answer = a
        .call(
            "POST",
            path,
            &[("x-mediator-peer", &good), ("x-mediator-target", "other/*")],
            "hi",
        )
        .await;
    assert_eq!(answer.status, 400, "{}", answer.text());
    assert!(
        answer.text().contains("does not cover"),
        "{}",
        answer.text()
    );
    assert_eq!(at_a.seen().len(), 1, "refused calls reached the node");
    // The route exists on the API only when a formation is configured: a
    // lone hub refuses every credential.
    let lone = Hub::start().await;
    let answer = lone
        .call("POST", path, &[("x-mediator-peer", &good)], "hi")
        .await;
    assert_error(&answer, 401, "unauthorized", "caller");
}

#[tokio::test]
async fn a_dead_instance_answers_503_then_its_nodes_are_detached_everywhere() {
    let mut f = formation(Duration::from_secs(1)).await;
    attach(&f.b, "users/api").await;
    let a = &f.a;
    eventually("hub-a learns users/api", || a.knows("users/api")).await;
    let token = a.token_for("ops/cron");
    let b_url = f.b.base.clone();
    // hub-b dies: no more heartbeats, nothing answers at its address.
    f.loops[1].abort();
    let b = std::mem::replace(&mut f.b, Hub::start().await);
    b.stop().await;
    let (a, store) = (&f.a, &f.store);
    // Until its lease runs out, the dead instance's nodes are refused at
    // once, never waited for.
    let started = std::time::Instant::now();
    let answer = a.call_as("POST", "/one/users/api/x", &token, "hi").await;
    if answer.status != 404 {
        assert_error(&answer, 503, "no_node_available", "hub");
    }
    assert!(started.elapsed() < Duration::from_secs(2));
    // Then hub-a retires it and its attached node.
    eventually("hub-a detaches the node of the dead instance", || {
        !a.knows("users/api")
    })
    .await;
    let answer = a.call_as("POST", "/one/users/api/x", &token, "hi").await;
    assert_eq!(answer.status, 404, "{}", answer.text());
    let instances = store.instances().await.expect("instances");
    assert_eq!(
        instances.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(),
        vec!["hub-a"],
        "{b_url} is gone from the store"
    );
}

#[tokio::test]
async fn admin_instances_lists_the_formation() {
    let f = formation(Duration::from_secs(6)).await;
    let (a, b) = (&f.a, &f.b);
    attach(b, "users/api").await;
    eventually("hub-a learns users/api", || a.knows("users/api")).await;
    let answer = a
        .call_as("GET", "/admin/instances", &a.admin_token(), "")
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let body = answer.json();
    assert_eq!(body["this"], "hub-a");
    let list = body["instances"].as_array().expect("a list");
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["id"], "hub-a");
    assert_eq!(list[0]["this"], true);
    assert_eq!(list[0]["peer"], a.base);
    assert_eq!(list[1]["id"], "hub-b");
    assert_eq!(list[1]["peer"], b.base);
    assert_eq!(list[1]["attached"], 1);
    assert_eq!(list[1]["live"], true);
    let answer = a
        .call_as("GET", "/admin/instances", &a.token_for("users/api"), "")
        .await;
    assert_error(&answer, 403, "forbidden", "caller");
}

#[tokio::test]
async fn calls_for_a_node_of_an_unknown_instance_do_not_each_read_the_store() {
    use mediator_core::store_stats::StoreOp;
    let f = formation(Duration::from_secs(6)).await;
    let a = &f.a;
    let ghost = Registration::new(
        key("users/ghost"),
        Endpoint::attached("hub-nowhere").expect("id"),
        Duration::from_secs(60),
    );
    a.mediator
        .register(&Identity::internal(), ghost)
        .await
        .expect("register");
    let token = a.token_for("ops/cron");
    let reads = || a.mediator.store_stats().snapshot(StoreOp::Instances).calls;
    let before = reads();
    for _ in 0..50 {
        let answer = a.call_as("POST", "/one/users/ghost/x", &token, "hi").await;
        assert_error(&answer, 503, "no_node_available", "hub");
        assert!(answer.text().contains("hub-nowhere"), "{}", answer.text());
    }
    // The heartbeat reads the instances every 2 s, and the calls at most
    // once a second: far fewer reads than calls.
    let read = reads() - before;
    assert!(read <= 5, "{read} store reads for 50 calls");
}
