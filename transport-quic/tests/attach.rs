//! Attaching, and calls between attached nodes over real UDP on loopback.

mod common;

use std::time::Duration;

use common::{echo, eventually, key, Hub};

#[tokio::test]
async fn attached_nodes_call_one_any_and_many() {
    let hub = Hub::start().await;
    let _a = hub.node("users/a", echo("a")).await;
    let _b = hub.node("users/b", echo("b")).await;
    assert_eq!(hub.listener.attached(), 2);
    let node = hub
        .mediator
        .routes()
        .get(&key("users/a"))
        .expect("registered");
    assert_eq!(
        node.endpoint.attached_instance(),
        Some(hub.mediator.instance_id())
    );

    let worker = hub.caller("billing/w1").await;
    let reply = worker
        .call(key("users/a"), "/greet?x=1", "ada")
        .await
        .expect("one");
    assert_eq!(reply, "a got ada");

    let (who, reply) = worker.any("users", "/greet", "bob").await.expect("any");
    assert!(reply.starts_with(format!("{} got", who.name().unwrap_or_default()).as_bytes()));

    let all = worker
        .broadcast("users", "/greet", "all")
        .await
        .expect("many");
    assert_eq!(
        (all.summary.asked, all.summary.answered, all.summary.failed),
        (2, 2, 0)
    );
    let mut got: Vec<String> = all
        .successes()
        .map(|(_, body)| String::from_utf8_lossy(body).into_owned())
        .collect();
    got.sort();
    assert_eq!(got, ["a got all", "b got all"]);

    // An attached node calls another attached node.
    let a = hub.client("users/a").connect().await.expect("caller as a");
    assert_eq!(
        a.call(key("users/b"), "/x", "hi").await.expect("a to b"),
        "b got hi"
    );
}

#[tokio::test]
async fn a_lost_connection_detaches_at_once() {
    let hub = Hub::start().await;
    let a = hub.node("users/a", echo("a")).await;
    assert!(hub.mediator.routes().get(&key("users/a")).is_some());
    a.shutdown().await;
    let routes = hub.mediator.routes();
    assert!(
        eventually(Duration::from_secs(2), || routes
            .get(&key("users/a"))
            .is_none())
        .await,
        "still registered after its connection closed"
    );
    assert_eq!(hub.listener.attached(), 0);
}

#[tokio::test]
async fn the_newer_attachment_under_one_name_wins() {
    let hub = Hub::start().await;
    let first = hub.node("users/a", echo("first")).await;
    let second = hub.node("users/a", echo("second")).await;
    assert!(
        eventually(Duration::from_secs(2), || first.is_superseded()).await,
        "the older connection was not closed"
    );
    assert!(second.is_connected());
    let worker = hub.caller("billing/w1").await;
    assert_eq!(
        worker.call(key("users/a"), "/", "x").await.expect("call"),
        "second got x"
    );
    // The older connection's end did not take the newer registration away.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(hub.mediator.routes().get(&key("users/a")).is_some());
    assert_eq!(hub.listener.attached(), 1);
    assert!(!first.is_connected());
}

#[tokio::test]
async fn idle_attachments_stay_up_with_keep_alive() {
    let mut limits = mediator_transport_quic::QuicLimits::default();
    limits.idle_timeout = Duration::from_millis(600);
    limits.keep_alive = Duration::from_millis(150);
    let hub = Hub::start_with(common::mediator(), limits).await;
    let _a = hub
        .client("users/a")
        .idle(Duration::from_millis(600), Duration::from_millis(150))
        .start(echo("a"))
        .await
        .expect("attach");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let worker = hub.caller("billing/w1").await;
    assert_eq!(
        worker.call(key("users/a"), "/", "x").await.expect("call"),
        "a got x"
    );
}
