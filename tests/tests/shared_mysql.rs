//! Two mediator instances sharing one MySQL database: a node registered
//! through one is reachable through the other after a refresh, and an
//! eviction by one is seen by the other.

#[path = "../../store-mysql/tests/support/mod.rs"]
mod support;

use std::time::Duration;

use bytes::Bytes;
use mediator_core::{ManualClock, NodeKey, SystemClock};
use mediator_store_mysql::MysqlRegistry;
use mediator_tests::harness::Hub;
use mediator_transport_http::client::Incoming;
use mediator_transport_http::ClientError;

/// One mediator instance over the shared database, served on loopback.
async fn instance(url: &str, clock: &ManualClock) -> Hub {
    Hub::config()
        .registry(MysqlRegistry::connect(url).await.unwrap())
        .clock(clock.clone())
        .start()
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn instances_sharing_a_store_route_to_each_others_nodes() {
    let Some(db) = support::TestDb::create().await else {
        return;
    };
    // Both instances read one clock, which the test moves: the lease runs
    // out without waiting for it.
    let clock = ManualClock::starting_now();
    let east = instance(&db.url(), &clock).await;
    let west = instance(&db.url(), &clock).await;

    // The node keeps its lease on the system clock, as a deployed one
    // does: only the mediators' time is moved.
    let api = east
        .node("users/api")
        .clock(SystemClock)
        .ttl(Duration::from_secs(2))
        .start(|request: Incoming| async move {
            Ok(Bytes::from(format!(
                "api got {}",
                String::from_utf8_lossy(&request.body)
            )))
        })
        .await
        .unwrap();
    let caller = west.sender("billing/worker").await;
    let target = NodeKey::named("users", "api").unwrap();

    // West has not seen the registration yet: its table is refreshed from
    // the store (by its maintenance loop in production, by hand here).
    match caller.call(target.clone(), "/x", "early").await {
        Err(ClientError::Mediator { status: 404, .. }) => {}
        other => panic!("expected 404 before the refresh, got {other:?}"),
    }
    west.mediator.refresh().await.unwrap();
    assert_eq!(
        caller.call(target.clone(), "/x", "hello").await.unwrap(),
        "api got hello"
    );

    // The node dies without deregistering; west's sweep evicts it from the
    // shared store once its lease has run out, and east drops it on refresh.
    drop(api);
    clock.advance(Duration::from_secs(3));
    let gone = west.mediator.sweep().await.unwrap();
    assert_eq!(gone, vec![target.clone()]);
    assert!(
        east.mediator.routes().get(&target).is_some(),
        "east still routes from its table"
    );
    east.mediator.refresh().await.unwrap();
    assert!(
        east.mediator.routes().get(&target).is_none(),
        "east dropped the evicted node"
    );
    match caller.call(target, "/x", "late").await {
        Err(ClientError::Mediator { status: 404, .. }) => {}
        other => panic!("expected 404 after the eviction, got {other:?}"),
    }
}
