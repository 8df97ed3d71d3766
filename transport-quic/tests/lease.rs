//! An attachment's lease and its token on the mediator's clock: a manual
//! clock drives the renewals and the end of the hello's token.

mod common;

use std::time::Duration;

use common::{echo, eventually, key, limits, Hub, SECRET};
use mediator_core::{Authenticator, Clock, ManualClock, Mediator, MemoryRegistry, Timestamp};
use mediator_transport_quic::QuicLimits;

fn mediator_on(clock: &ManualClock) -> Mediator {
    Mediator::builder()
        .registry(MemoryRegistry::new())
        .authenticator(Authenticator::hs256(SECRET))
        .limits(limits())
        .clock(clock.clone())
        .build()
        .expect("mediator")
}

#[tokio::test]
async fn the_listener_renews_an_attachment_on_the_mediators_clock() {
    let clock = ManualClock::new(Timestamp::now());
    let hub = Hub::start_with(mediator_on(&clock), QuicLimits::default()).await;
    let _node = hub
        .client("users/a")
        .clock(clock.clone())
        .ttl(Duration::from_secs(30))
        .start(echo("a"))
        .await
        .expect("attach");
    let routes = hub.mediator.routes();
    let lease = |routes: &mediator_core::Routes| {
        routes
            .get(&key("users/a"))
            .map(|node| node.lease_until)
            .expect("attached")
    };
    let first = lease(&routes);
    assert_eq!(first, clock.now() + Duration::from_secs(30));

    // Real time passing does not renew: only the mediator's clock does.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(lease(&routes), first);

    clock.advance(Duration::from_secs(11));
    assert!(
        eventually(Duration::from_secs(2), || lease(&routes) > first).await,
        "the lease was not renewed a third of the ttl later"
    );
    assert_eq!(lease(&routes), clock.now() + Duration::from_secs(30));
}

#[tokio::test]
async fn an_expired_hello_token_ends_the_attachment_and_the_client_comes_back() {
    let clock = ManualClock::new(Timestamp::now());
    let hub = Hub::start_with(mediator_on(&clock), QuicLimits::default()).await;
    // The client mints its tokens (an hour long) on the same clock.
    let node = hub
        .client("users/a")
        .clock(clock.clone())
        .start(echo("a"))
        .await
        .expect("attach");
    let routes = hub.mediator.routes();
    let id = routes.get(&key("users/a")).expect("attached").id;

    clock.advance(Duration::from_secs(3600) + Duration::from_secs(1));
    // The listener closes the connection and detaches the node; the
    // client's backoff waits on the manual clock, so it stays away until
    // the clock moves again.
    assert!(
        eventually(Duration::from_secs(2), || !node.is_connected()
            && routes.get(&key("users/a")).is_none())
        .await,
        "the attachment outlived its token"
    );

    let mut back = false;
    for _ in 0..100 {
        clock.advance(Duration::from_millis(500));
        tokio::time::sleep(Duration::from_millis(20)).await;
        if node.is_connected() && routes.get(&key("users/a")).is_some() {
            back = true;
            break;
        }
    }
    assert!(back, "the client did not reattach with a fresh token");
    assert_ne!(routes.get(&key("users/a")).expect("attached").id, id);
    let caller = hub
        .client("billing/w1")
        .clock(clock.clone())
        .connect()
        .await
        .expect("caller");
    assert_eq!(
        caller
            .call(key("users/a"), "/", "again")
            .await
            .expect("call"),
        "a got again"
    );
}
