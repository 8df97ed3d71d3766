//! Refusals, failures, restarts and bad input over real UDP on loopback.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use mediator_core::node::Incoming;
use mediator_core::{Claims, Endpoint, Error, NodeKey, Registration, Timestamp};
use mediator_transport_quic::{pinned_client_config, ClientError, QuicLimits, QuicNodeClient};
use tokio::sync::Notify;

use common::{echo, eventually, key, Hub};

fn status(e: &ClientError) -> Option<u16> {
    e.status()
}

#[tokio::test]
async fn refusals_carry_status_and_kind() {
    let hub = Hub::start().await;
    let _a = hub
        .node("users/a", |request: Incoming| async move {
            match request.path.as_str() {
                "/slow" => {
                    tokio::time::sleep(Duration::from_secs(3)).await;
                    Ok(Bytes::new())
                }
                "/refuse" => Err(Error::refused(409, "conflict", "already booked")),
                _ => Ok::<_, Error>(request.body),
            }
        })
        .await;
    let worker = hub.caller("billing/w1").await;

    // 404: nobody by that name.
    let e = worker
        .call(key("users/nobody"), "/", "x")
        .await
        .unwrap_err();
    assert_eq!(
        (status(&e), e.kind()),
        (Some(404), Some("unknown_target")),
        "{e}"
    );
    assert!(matches!(e, ClientError::Mediator { .. }), "{e:?}");

    // 403: the token's scope does not list the group.
    let me = key("billing/w2");
    let mut claims = Claims::node(&me, Timestamp::now(), Duration::from_secs(60));
    claims.scope = Some(vec!["cache".into()]);
    let scoped = QuicNodeClient::builder(hub.addr)
        .pin(hub.listener.fingerprint())
        .node_key(me)
        .token(hub.minter.mint(&claims).expect("token"))
        .keys(hub.keys.clone())
        .connect()
        .await
        .expect("connect");
    let e = scoped.call(key("users/a"), "/", "x").await.unwrap_err();
    assert_eq!(
        (status(&e), e.kind()),
        (Some(403), Some("forbidden")),
        "{e}"
    );

    // 413: larger than the mediator's body limit (64 KiB here).
    let e = worker
        .call(key("users/a"), "/", vec![7u8; 200 * 1024])
        .await
        .unwrap_err();
    assert_eq!(
        (status(&e), e.kind()),
        (Some(413), Some("too_large")),
        "{e}"
    );

    // 503: the group's only node is attached to another instance.
    let ghost = key("ghost/g");
    let admin = hub
        .mediator
        .authenticate(&mediator_core::Credentials::Bearer(&hub.token(&ghost)))
        .expect("identity");
    hub.mediator
        .register(
            &admin,
            Registration::new(
                ghost.clone(),
                Endpoint::attached("another-instance").expect("endpoint"),
                Duration::from_secs(60),
            ),
        )
        .await
        .expect("register");
    let e = worker.any("ghost", "/", "x").await.unwrap_err();
    assert_eq!(
        (status(&e), e.kind()),
        (Some(503), Some("no_node_available")),
        "{e}"
    );
    // Asked by name, it is unreachable, and the reason says why.
    let e = worker.call(ghost, "/", "x").await.unwrap_err();
    assert_eq!(status(&e), Some(502), "{e}");
    assert!(e.to_string().contains("another-instance"), "{e}");

    // 504: the node does not answer within the caller's time.
    let impatient = hub
        .client("billing/w3")
        .timeout(Duration::from_millis(300))
        .connect()
        .await
        .expect("connect");
    let started = Instant::now();
    let e = impatient
        .call(key("users/a"), "/slow", "x")
        .await
        .unwrap_err();
    assert_eq!(
        (status(&e), e.kind()),
        (Some(504), Some("deadline_passed")),
        "{e}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));

    // A node's own refusal keeps its status and kind.
    let e = worker
        .call(key("users/a"), "/refuse", "x")
        .await
        .unwrap_err();
    assert!(
        matches!(&e, ClientError::Node { status: 409, kind, .. } if kind == "conflict"),
        "{e:?}"
    );

    // A broadcast reports every node's part.
    let all = worker
        .broadcast("users", "/refuse", "x")
        .await
        .expect("many");
    assert_eq!((all.summary.asked, all.summary.answered), (1, 1));
    assert!(matches!(
        &all.replies[0].result,
        Err(ClientError::Node { status: 409, .. })
    ));
}

#[tokio::test]
async fn a_node_killed_mid_request_fails_the_call_quickly() {
    let hub = Hub::start().await;
    let started = Arc::new(Notify::new());
    let seen = Arc::clone(&started);
    let doomed = hub
        .node("users/a", move |_request: Incoming| {
            let seen = Arc::clone(&seen);
            async move {
                seen.notify_one();
                tokio::time::sleep(Duration::from_secs(30)).await;
                Ok::<_, Error>(Bytes::new())
            }
        })
        .await;
    let worker = hub.caller("billing/w1").await;
    let call = tokio::spawn(async move { worker.call(key("users/a"), "/", "x").await });
    started.notified().await;
    let killed = Instant::now();
    drop(doomed);
    let e = call.await.expect("join").unwrap_err();
    let took = killed.elapsed();
    assert_eq!(
        (status(&e), e.kind()),
        (Some(502), Some("node_failed")),
        "{e}"
    );
    assert!(took < Duration::from_secs(1), "took {took:?}");
    println!("a killed node's caller got 502 after {took:?}");
}

#[tokio::test]
async fn nodes_attach_again_after_a_mediator_restart() {
    let hub = Hub::start().await;
    let a = hub.node("users/a", echo("a")).await;
    let worker = hub.caller("billing/w1").await;
    assert_eq!(
        worker.call(key("users/a"), "/", "1").await.expect("before"),
        "a got 1"
    );

    // Stopped: the same port, certificate and node key, an empty registry.
    let (addr, tls, keys) = (hub.addr, hub.tls.clone(), hub.keys.clone());
    hub.listener.shutdown().await;
    let _ = hub.task.await;
    drop(hub.listener);
    drop(hub.mediator);
    assert!(eventually(Duration::from_secs(2), || !a.is_connected()).await);
    let restarted_at = Instant::now();
    // The old endpoint's driver lets go of the socket once its last
    // connection task has ended: retry the bind briefly.
    let mut tries = 0;
    let listener = loop {
        match mediator_transport_quic::QuicListener::bind(addr, &tls) {
            Ok(listener) => break listener,
            Err(e) if tries < 100 => {
                tries += 1;
                let _ = e;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("cannot bind {addr} again: {e}"),
        }
    };
    let hub = Hub::serve_on(common::mediator(), listener, tls, keys);

    a.wait_connected(Duration::from_secs(5))
        .await
        .expect("a back");
    worker
        .wait_connected(Duration::from_secs(5))
        .await
        .expect("worker back");
    let routes = hub.mediator.routes();
    assert!(
        eventually(Duration::from_secs(5), || routes
            .get(&key("users/a"))
            .is_some())
        .await
    );
    assert_eq!(
        worker.call(key("users/a"), "/", "2").await.expect("after"),
        "a got 2"
    );
    println!(
        "attached again {:?} after the restart",
        restarted_at.elapsed()
    );
}

#[tokio::test]
async fn a_wrong_certificate_fingerprint_is_refused() {
    let hub = Hub::start().await;
    let e = hub
        .client("billing/w1")
        .pin(&"00".repeat(32))
        .connect()
        .await
        .unwrap_err();
    assert!(matches!(e, ClientError::Unreachable { .. }), "{e:?}");
    // Bad pins are refused before dialling.
    let e = hub
        .client("billing/w1")
        .pin("abc")
        .connect()
        .await
        .unwrap_err();
    assert!(matches!(e, ClientError::Tls(_)), "{e:?}");
    assert_eq!(hub.mediator.routes().len(), 0);
}

#[tokio::test]
async fn a_bad_token_is_refused_at_hello() {
    let hub = Hub::start().await;
    let e = QuicNodeClient::builder(hub.addr)
        .pin(hub.listener.fingerprint())
        .node_key(key("users/a"))
        .token("not a token")
        .keys(hub.keys.clone())
        .start(echo("a"))
        .await
        .unwrap_err();
    assert_eq!(
        (e.status(), e.kind()),
        (Some(401), Some("unauthorized")),
        "{e}"
    );
    // A token for another node may not attach as this one.
    let e = QuicNodeClient::builder(hub.addr)
        .pin(hub.listener.fingerprint())
        .node_key(key("users/a"))
        .token(hub.token(&key("users/b")))
        .keys(hub.keys.clone())
        .start(echo("a"))
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(403), "{e}");
}

/// A raw connection to the listener, for frames the client never sends.
async fn raw(hub: &Hub) -> quinn::Connection {
    let mut endpoint =
        quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("endpoint");
    endpoint.set_default_client_config(
        pinned_client_config(hub.listener.fingerprint()).expect("config"),
    );
    endpoint
        .connect(hub.addr, "localhost")
        .expect("connect")
        .await
        .expect("handshake")
}

async fn send_raw(connection: &quinn::Connection, bytes: &[u8]) -> Vec<u8> {
    let (mut send, mut recv) = connection.open_bi().await.expect("stream");
    let _ = send.write_all(bytes).await;
    let _ = send.finish();
    tokio::time::timeout(Duration::from_secs(3), recv.read_to_end(1 << 20))
        .await
        .expect("answered in time")
        .unwrap_or_default()
}

fn frame(json: &str) -> Vec<u8> {
    let mut out = (json.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(json.as_bytes());
    out
}

#[tokio::test]
async fn bad_frames_are_refused_without_harm() {
    let hub = Hub::start().await;
    // Bad hellos: garbage, truncated, oversize length, wrong JSON.
    for hello in [
        b"\x00\x00\x00\x05garbage".to_vec(),
        b"\x00\x00".to_vec(),
        b"\xff\xff\xff\xff{}".to_vec(),
        frame("{\"attach\": 5}"),
        frame("{\"token\": \"x\", \"attach\": {\"group\": \"bad group\", \"ttl_ms\": 1000}}"),
    ] {
        let connection = raw(&hub).await;
        let _ = send_raw(&connection, &hello).await;
        let closed = tokio::time::timeout(Duration::from_secs(3), connection.closed()).await;
        assert!(closed.is_ok(), "a bad hello left the connection open");
    }

    // Bad request frames after a good hello are answered, not fatal.
    let connection = raw(&hub).await;
    let hello = format!("{{\"token\": \"{}\"}}", hub.token(&key("billing/w1")));
    let welcome = send_raw(&connection, &frame(&hello)).await;
    assert!(String::from_utf8_lossy(&welcome).contains("\"status\":200"));
    let garbage = send_raw(&connection, b"\x00\x00\x00\x03{{{").await;
    assert!(
        String::from_utf8_lossy(&garbage).contains("\"status\":400"),
        "{garbage:?}"
    );
    let oversize = send_raw(
        &connection,
        &frame(&format!("{{\"x\": \"{}\"}}", "y".repeat(20_000))),
    )
    .await;
    assert!(
        String::from_utf8_lossy(&oversize).contains("\"status\":431"),
        "{oversize:?}"
    );
    let truncated = send_raw(&connection, b"\x00\x00\x01\x00{\"method\"").await;
    assert!(truncated.is_empty(), "{truncated:?}");
    let bad_target = send_raw(
        &connection,
        &frame("{\"method\": \"POST\", \"path\": \"/\", \"target\": \"nogroup\"}"),
    )
    .await;
    assert!(
        String::from_utf8_lossy(&bad_target).contains("\"status\":400"),
        "{bad_target:?}"
    );

    // The mediator still serves.
    let _a = hub.node("users/a", echo("a")).await;
    let worker = hub.caller("billing/w1").await;
    assert_eq!(
        worker.call(key("users/a"), "/", "x").await.expect("call"),
        "a got x"
    );
}

#[tokio::test]
async fn a_flooding_node_does_not_starve_others() {
    let mut limits = QuicLimits::default();
    limits.max_streams = 16;
    let hub = Hub::start_with(common::mediator(), limits).await;
    let _slow = hub
        .node("slow/s", |_request: Incoming| async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            Ok::<_, Error>(Bytes::new())
        })
        .await;
    let _fast = hub.node("fast/f", echo("f")).await;

    // The flooder keeps far more calls going than its stream limit.
    let flooder = hub.caller("flood/x").await;
    let mut flood = Vec::new();
    for _ in 0..64 {
        let flooder = flooder.clone();
        flood.push(tokio::spawn(async move {
            let _ = flooder.call(key("slow/s"), "/", "x").await;
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;

    let other = hub.caller("billing/w1").await;
    let mut worst = Duration::ZERO;
    for i in 0..20 {
        let started = Instant::now();
        let reply = other
            .call(key("fast/f"), "/", format!("{i}"))
            .await
            .expect("call");
        assert_eq!(reply, format!("f got {i}"));
        worst = worst.max(started.elapsed());
    }
    assert!(
        worst < Duration::from_millis(500),
        "worst call took {worst:?}"
    );
    println!("worst of 20 calls during a flood: {worst:?}");
    for task in flood {
        task.abort();
    }
}

#[tokio::test]
async fn connections_past_the_cap_are_refused() {
    let mut limits = QuicLimits::default();
    limits.max_connections = 2;
    let hub = Hub::start_with(common::mediator(), limits).await;
    let _a = hub.node("users/a", echo("a")).await;
    let _b = hub.node("users/b", echo("b")).await;
    let e = hub.client("users/c").start(echo("c")).await.unwrap_err();
    assert!(matches!(e, ClientError::Unreachable { .. }), "{e:?}");
    let _ = NodeKey::named("users", "c");
}
