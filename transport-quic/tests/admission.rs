//! Who may hold connections to the listener: tokens that prove an
//! identity, and a bounded number of connections each.

mod common;

use std::time::Duration;

use mediator_core::{Authenticator, Claims, Mediator, MemoryRegistry, Timestamp};
use mediator_transport_quic::{ClientError, QuicLimits, QuicNodeClient};

use common::{echo, key, Hub};

#[tokio::test]
async fn a_token_without_sub_is_refused_at_hello() {
    // The operator allows the original's tokens, for its HTTP children.
    let mediator = Mediator::builder()
        .registry(MemoryRegistry::new())
        .authenticator(Authenticator::hs256(common::SECRET).allow_tokens_without_sub(true))
        .limits(common::limits())
        .build()
        .expect("mediator");
    let hub = Hub::start_with(mediator, QuicLimits::default()).await;
    let a = hub.node("users/a", echo("a")).await;

    let mut claims = Claims::node(&key("users/a"), Timestamp::now(), Duration::from_secs(600));
    claims.sub = None;
    let without_sub = hub.minter.mint(&claims).expect("token");
    // It does pass authentication (as HTTP takes it), unverified.
    let identity = hub
        .mediator
        .authenticate(&mediator_core::Credentials::Bearer(&without_sub))
        .expect("accepted by the authenticator");
    assert!(!identity.verified);

    // Attaching as the real node is refused, and the real node stays.
    let e = QuicNodeClient::builder(hub.addr)
        .pin(hub.listener.fingerprint())
        .node_key(key("users/a"))
        .token(without_sub.clone())
        .keys(hub.keys.clone())
        .start(echo("impostor"))
        .await
        .unwrap_err();
    assert_eq!(
        (e.status(), e.kind()),
        (Some(403), Some("forbidden")),
        "{e}"
    );
    assert!(matches!(e, ClientError::Mediator { .. }), "{e:?}");
    assert!(e.to_string().contains("without sub"), "{e}");
    // Calling is refused too.
    let e = QuicNodeClient::builder(hub.addr)
        .pin(hub.listener.fingerprint())
        .token(without_sub)
        .keys(hub.keys.clone())
        .connect()
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(403), "{e}");

    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(a.is_connected() && !a.is_superseded());
    let worker = hub.caller("billing/w1").await;
    assert_eq!(
        worker.call(key("users/a"), "/", "x").await.expect("call"),
        "a got x"
    );
}

#[tokio::test]
async fn one_identity_holds_a_bounded_number_of_connections() {
    let mut limits = QuicLimits::default();
    limits.max_connections_per_identity = 2;
    let hub = Hub::start_with(common::mediator(), limits).await;

    let first = hub.caller("billing/w1").await;
    let _second = hub.caller("billing/w1").await;
    let e = hub.client("billing/w1").connect().await.unwrap_err();
    assert_eq!(
        (e.status(), e.kind()),
        (Some(429), Some("too_many_connections")),
        "{e}"
    );
    // An attachment counts under its node's key: the same identity.
    let e = hub
        .client("billing/w1")
        .start(echo("w1"))
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(429), "{e}");
    assert!(hub.mediator.routes().get(&key("billing/w1")).is_none());
    // Other identities are not affected.
    let _other = hub.caller("billing/w2").await;

    // Once one closes, the identity may connect again.
    first.shutdown().await;
    let mut again = None;
    for _ in 0..50 {
        match hub.client("billing/w1").connect().await {
            Ok(client) => {
                again = Some(client);
                break;
            }
            Err(e) => {
                assert_eq!(e.status(), Some(429), "{e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    assert!(again.is_some(), "a connection closed, yet still refused");
}
