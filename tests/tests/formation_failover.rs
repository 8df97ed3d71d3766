//! A node that knows several mediators of a formation: when the one it
//! registered at stops answering, its next renewal goes to another, which
//! does not know it, and it registers there; callers through the other
//! mediator then reach it.

use std::time::Duration;

use bytes::Bytes;
use mediator_core::node::Incoming;
use mediator_core::{
    Authenticator, Claims, Error, KeyRing, Mediator, MemoryRegistry, NodeKey, SealKey, Timestamp,
    TokenMinter,
};
use mediator_transport_http::{HttpDelivery, HttpListener, NodeClient};

const SECRET: &str = "a secret of at least 32 bytes, shared by the formation";

fn mediator() -> Mediator {
    Mediator::builder()
        .registry(MemoryRegistry::new())
        .authenticator(Authenticator::hs256(SECRET))
        .deliver(HttpDelivery::default())
        .build()
        .expect("mediator")
}

fn token(key: &NodeKey) -> String {
    TokenMinter::hs256(SECRET)
        .mint(&Claims::node(
            key,
            Timestamp::now(),
            Duration::from_secs(600),
        ))
        .expect("token")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_registers_again_at_another_mediator_when_its_own_stops_answering() {
    let (a, b) = (mediator(), mediator());
    let listener_a = HttpListener::bind("127.0.0.1:0").await.expect("bind a");
    let listener_b = HttpListener::bind("127.0.0.1:0").await.expect("bind b");
    let (url_a, url_b) = (
        format!("http://{}", listener_a.local_addr()),
        format!("http://{}", listener_b.local_addr()),
    );
    let (stop_a, a_stopped) = tokio::sync::oneshot::channel::<()>();
    let serving_a = tokio::spawn(listener_a.serve_with_shutdown(a.clone(), async {
        let _ = a_stopped.await;
    }));
    tokio::spawn(listener_b.serve(b.clone()));

    let keys = KeyRing::new(SealKey::generate());
    let api: NodeKey = "users/api".parse().expect("key");
    let node = NodeClient::builder(url_a.as_str())
        .also_at(url_b.as_str())
        .node_key(api.clone())
        .token(token(&api))
        .keys(keys.clone())
        .ttl(Duration::from_secs(2))
        .callback("http://127.0.0.1:0")
        .start(|request: Incoming| async move {
            Ok::<_, Error>(Bytes::from(format!(
                "api got {}",
                String::from_utf8_lossy(&request.body)
            )))
        })
        .await
        .expect("started at a");
    assert_eq!(node.mediator_url(), url_a);
    assert!(a.registry().get(&api).await.expect("store").is_some());
    assert!(b.registry().get(&api).await.expect("store").is_none());

    // Mediator a stops answering.
    let _ = stop_a.send(());
    serving_a.await.expect("joined").expect("served");

    // Within a few renewals the node is registered at b.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while b.registry().get(&api).await.expect("store").is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the node never registered at the other mediator"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(node.mediator_url(), url_b);
    b.refresh().await.expect("refreshed");

    // A caller that also knows both reaches it through b, a being gone.
    let caller_key: NodeKey = "billing/worker".parse().expect("key");
    let caller = NodeClient::builder(url_a.as_str())
        .also_at(url_b.as_str())
        .node_key(caller_key.clone())
        .token(token(&caller_key))
        .keys(keys)
        .connect()
        .await
        .expect("caller");
    let reply = caller
        .call(api.clone(), "/greet", "ada")
        .await
        .expect("reached through b");
    assert_eq!(reply, "api got ada");
    assert_eq!(caller.mediator_url(), url_b);
    node.shutdown().await.expect("left");
    assert!(b.registry().get(&api).await.expect("store").is_none());
}
