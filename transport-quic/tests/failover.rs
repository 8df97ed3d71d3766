//! A node attached over QUIC that knows several mediators of a formation:
//! when its mediator goes away, it dials the next and attaches there.

mod common;

use std::time::Duration;

use common::{echo, eventually, key, mediator, Hub};
use mediator_transport_quic::{QuicLimits, QuicListener};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attached_node_attaches_again_at_another_mediator_when_its_own_goes_away() {
    let a = Hub::start().await;
    // The same certificate, so one pin checks both.
    let listener_b = QuicListener::bind_with(
        "127.0.0.1:0".parse().expect("address"),
        &a.tls,
        QuicLimits::default(),
    )
    .expect("b bound");
    let b = Hub::serve_on(mediator(), listener_b, a.tls.clone(), a.keys.clone());

    let node = a
        .client("users/api")
        .also_at(b.addr)
        .connect_timeout(Duration::from_millis(500))
        .start(echo("api"))
        .await
        .expect("attached at a");
    assert_eq!(node.wire().mediator_addr(), a.addr);
    assert!(a
        .mediator
        .registry()
        .get(&key("users/api"))
        .await
        .expect("store")
        .is_some());

    // Mediator a goes away: its connections close and it answers no more.
    a.listener.shutdown().await;
    a.task.abort();
    assert!(
        eventually(Duration::from_secs(15), || node.wire().mediator_addr()
            == b.addr
            && node.is_connected())
        .await,
        "the node never attached at the other mediator"
    );
    assert!(b
        .mediator
        .registry()
        .get(&key("users/api"))
        .await
        .expect("store")
        .is_some());

    // A caller at b reaches it there.
    let caller = b.caller("billing/worker").await;
    let reply = caller
        .call(key("users/api"), "/greet", "ada")
        .await
        .expect("reached at b");
    assert_eq!(reply, "api got ada");
    node.shutdown().await;
}
