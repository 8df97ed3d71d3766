//! Two mediator instances sharing one MySQL database: a node registered
//! through one is reachable through the other after a refresh, and an
//! eviction by one is seen by the other.

#[path = "../../store-mysql/tests/support/mod.rs"]
mod support;

use std::time::Duration;

use bytes::Bytes;
use mediator_core::{Authenticator, KeyRing, ManualClock, Mediator, NodeKey, SealKey};
use mediator_store_mysql::MysqlRegistry;
use mediator_transport_http::client::Incoming;
use mediator_transport_http::{HttpDelivery, HttpError, HttpListener, NodeClient};

const SECRET: &str = "a shared secret of at least 32 bytes";

/// One mediator instance over the shared database, served on loopback.
async fn instance(url: &str, clock: &ManualClock) -> (Mediator, String) {
    let mediator = Mediator::builder()
        .registry(MysqlRegistry::connect(url).await.unwrap())
        .clock(clock.clone())
        .authenticator(Authenticator::hs256(SECRET))
        .deliver(HttpDelivery::default())
        .build()
        .unwrap();
    let listener = HttpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr());
    tokio::spawn(listener.serve(mediator.clone()));
    (mediator, base)
}

#[tokio::test(flavor = "multi_thread")]
async fn instances_sharing_a_store_route_to_each_others_nodes() {
    let Some(db) = support::TestDb::create().await else {
        return;
    };
    // Both instances read one clock, which the test moves: the lease runs
    // out without waiting for it.
    let clock = ManualClock::starting_now();
    let (east, east_url) = instance(&db.url(), &clock).await;
    let (west, west_url) = instance(&db.url(), &clock).await;
    let minter = Authenticator::hs256(SECRET).minter().unwrap();
    let keys = KeyRing::new(SealKey::generate());

    let api = NodeClient::builder(&east_url)
        .identity("users", Some("api"))
        .token_minter(minter.clone())
        .keys(keys.clone())
        .callback("http://127.0.0.1:0")
        .ttl(Duration::from_secs(2))
        .start(|request: Incoming| async move {
            Ok(Bytes::from(format!(
                "api got {}",
                String::from_utf8_lossy(&request.body)
            )))
        })
        .await
        .unwrap();
    let caller = NodeClient::builder(&west_url)
        .identity("billing", Some("worker"))
        .token_minter(minter)
        .keys(keys)
        .connect()
        .await
        .unwrap();
    let target = NodeKey::named("users", "api").unwrap();

    // West has not seen the registration yet: its table is refreshed from
    // the store (by its maintenance loop in production, by hand here).
    match caller.call(target.clone(), "/x", "early").await {
        Err(HttpError::Mediator { status: 404, .. }) => {}
        other => panic!("expected 404 before the refresh, got {other:?}"),
    }
    west.refresh().await.unwrap();
    assert_eq!(
        caller.call(target.clone(), "/x", "hello").await.unwrap(),
        "api got hello"
    );

    // The node dies without deregistering; west's sweep evicts it from the
    // shared store once its lease has run out, and east drops it on refresh.
    drop(api);
    clock.advance(Duration::from_secs(3));
    let gone = west.sweep().await.unwrap();
    assert_eq!(gone, vec![target.clone()]);
    assert!(
        east.routes().get(&target).is_some(),
        "east still routes from its table"
    );
    east.refresh().await.unwrap();
    assert!(
        east.routes().get(&target).is_none(),
        "east dropped the evicted node"
    );
    match caller.call(target, "/x", "late").await {
        Err(HttpError::Mediator { status: 404, .. }) => {}
        other => panic!("expected 404 after the eviction, got {other:?}"),
    }
}
