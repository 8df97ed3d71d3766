//! Large bodies over real sockets: a caller attached over QUIC sends
//! 64 KiB and 1 MiB bodies through the mediator to a node attached over
//! QUIC, which echoes them; every byte comes back in order, also with many
//! calls in flight on one connection.

mod common;

use std::time::Duration;

use mediator_core::node::Incoming;
use mediator_core::{Authenticator, Error, Limits, Mediator, MemoryRegistry};
use mediator_transport_quic::QuicLimits;

use common::{key, Hub, SECRET};

/// A mediator that takes bodies of up to 2 MiB.
fn mediator() -> Mediator {
    let mut limits = Limits::default();
    limits.max_body = 2 * 1024 * 1024;
    limits.deadline = Duration::from_secs(20);
    Mediator::builder()
        .registry(MemoryRegistry::new())
        .authenticator(Authenticator::hs256(SECRET))
        .limits(limits)
        .build()
        .expect("mediator")
}

/// `len` bytes that differ from their neighbours, so that a chunk lost,
/// repeated or out of order shows.
fn body(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i % 251) as u8 ^ seed.wrapping_mul(31))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_of_64_kib_and_1_mib_cross_the_mediator_whole() {
    let hub = Hub::start_with(mediator(), QuicLimits::default()).await;
    let _node = hub
        .client("users/echo")
        .max_body(2 * 1024 * 1024)
        .timeout(Duration::from_secs(20))
        .start(|request: Incoming| async move { Ok::<_, Error>(request.body) })
        .await
        .expect("attach");
    let caller = hub
        .client("billing/caller")
        .timeout(Duration::from_secs(20))
        .connect()
        .await
        .expect("connect");

    for (len, seed) in [
        (0, 0),
        (1, 1),
        (64 * 1024 - 1, 2),
        (64 * 1024, 3),
        (64 * 1024 + 1, 4),
        (1024 * 1024, 5),
    ] {
        let sent = body(len, seed);
        let reply = caller
            .call(key("users/echo"), "/echo", sent.clone())
            .await
            .unwrap_or_else(|e| panic!("{len} bytes: {e}"));
        assert_eq!(reply.len(), len);
        assert!(reply == sent, "{len} bytes came back changed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_large_calls_in_flight_on_one_connection_each_get_their_own_body() {
    let hub = Hub::start_with(mediator(), QuicLimits::default()).await;
    let _node = hub
        .client("users/echo")
        .max_body(2 * 1024 * 1024)
        .timeout(Duration::from_secs(20))
        .start(|request: Incoming| async move { Ok::<_, Error>(request.body) })
        .await
        .expect("attach");
    let caller = hub
        .client("billing/caller")
        .timeout(Duration::from_secs(20))
        .connect()
        .await
        .expect("connect");

    // Sixteen 64 KiB calls and two of 1 MiB at once, as the benchmark's
    // load sends them: bursts of datagrams on both connections.
    let mut calls = tokio::task::JoinSet::new();
    for seed in 0..18u8 {
        let caller = caller.clone();
        let len = if seed < 16 { 64 * 1024 } else { 1024 * 1024 };
        calls.spawn(async move {
            let sent = body(len, seed);
            let reply = caller
                .call(key("users/echo"), "/echo", sent.clone())
                .await
                .unwrap_or_else(|e| panic!("call {seed}: {e}"));
            assert!(reply == sent, "call {seed} got another body back");
        });
    }
    while let Some(done) = calls.join_next().await {
        done.expect("call");
    }
}
