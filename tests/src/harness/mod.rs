//! One harness for every cross-crate test: a mediator under test ([`Hub`]),
//! nodes that answer what reaches them ([`EchoNode`] on plain hyper, and
//! [`NodeClient`](mediator_transport_http::NodeClient)s built by
//! [`Hub::node`]), a plain HTTP client ([`call`], [`Answer`]), and waits
//! that poll for an effect instead of sleeping ([`eventually`]).
//!
//! Time-driven behaviour (leases, expiry, renewals, backoff) is tested on a
//! [`ManualClock`](mediator_core::ManualClock) that the hub and its nodes
//! share: a test moves the clock, then waits only for the effect.
//!
//! ```
//! use std::time::Duration;
//! use mediator_core::ManualClock;
//! use mediator_tests::harness::{describe, eventually, json, key, Hub};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let clock = ManualClock::starting_now();
//! let hub = Hub::config().clock(clock.clone()).start().await;
//! let api = hub
//!     .node("users/api")
//!     .ttl(Duration::from_secs(30))
//!     .start(describe("api"))
//!     .await
//!     .unwrap();
//! let caller = hub.sender("billing/worker").await;
//! let seen = json(&caller.call(key("users/api"), "/hi", "there").await.unwrap());
//! assert_eq!(seen["from"], "billing/worker");
//!
//! // Past a third of the lease on the shared clock, the node renews it.
//! let first = hub.lease_until("users/api").unwrap();
//! clock.advance(Duration::from_secs(15));
//! eventually("the lease moves on", || hub.lease_until("users/api") > Some(first)).await;
//! # api.shutdown().await.unwrap();
//! # hub.stop().await;
//! # });
//! ```

mod echo;
pub mod framing;
mod http;
mod hub;
mod registry;
pub mod webdriver;

use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use mediator_core::{Claims, KeyRing, NodeKey, SealKey, Timestamp, TokenMinter};
use mediator_transport_http::client::Incoming;
use serde_json::{json, Value};

pub use echo::{EchoNode, Seen};
pub use http::{
    assert_error, call, call_as, call_service, count_labels, dead_url, request, send, Answer,
    Chunks,
};
pub use hub::{Hub, HubConfig, IntoKey};
pub use registry::DownRegistry;

/// The HS256 secret every hub signs and checks tokens with.
pub const SECRET: &str = "a test secret that is long enough!!";

/// The longest any wait for an effect may last before it counts as a
/// failure: generous, since effects on loopback take milliseconds and the
/// bound only matters when something is broken.
pub const PATIENCE: Duration = Duration::from_secs(5);

/// How often [`eventually`] looks again.
const POLL: Duration = Duration::from_millis(10);

/// A token minter for [`SECRET`], as a node holding the secret would have.
pub fn minter() -> TokenMinter {
    TokenMinter::hs256(SECRET)
}

/// Signs `claims` with [`SECRET`].
pub fn mint(claims: &Claims) -> String {
    minter().mint(claims).expect("mint a token")
}

/// A token as the original's children mint it: no `sub` (so it names no
/// node), issued now and valid for 9 hours, signed with [`SECRET`].
pub fn original_token() -> String {
    let now = Timestamp::now();
    mint(&Claims {
        sub: None,
        exp: (now + Duration::from_secs(9 * 3600)).as_secs(),
        iat: now.as_secs(),
        nbf: None,
        scope: None,
    })
}

/// Parses a node key (`group/name`, or `group/` for the unnamed node).
pub fn key(text: &str) -> NodeKey {
    text.parse().expect("a valid node key")
}

/// The node key ring shared by every node of the test process, so any two
/// nodes can open each other's payloads.
pub fn ring() -> KeyRing {
    static RING: OnceLock<SealKey> = OnceLock::new();
    KeyRing::new(RING.get_or_init(SealKey::generate).clone())
}

/// Parses JSON, failing the test with the text that was not.
pub fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(bytes)))
}

/// A node handler that answers with what reached it, as JSON: the node's
/// `name`, the verified sender, the target, method, path, query, deadline
/// (ms since the epoch) and body.
pub fn describe(
    name: &'static str,
) -> impl Fn(Incoming) -> std::future::Ready<Result<Bytes, mediator_core::Error>> + Send + Sync + 'static
{
    move |request: Incoming| {
        std::future::ready(Ok(Bytes::from(
            json!({
                "node": name,
                "from": request.from.as_ref().map(ToString::to_string),
                "target": request.target.to_string(),
                "method": request.method.as_str(),
                "path": request.path,
                "query": request.query,
                "deadline": request.deadline.map(|d| d.as_millis()),
                "body": String::from_utf8_lossy(&request.body),
            })
            .to_string(),
        )))
    }
}

/// Polls `check` until it holds; fails the test, naming `what`, after
/// [`PATIENCE`].
///
/// Background work (a lease keeper woken by a clock, a server stopping)
/// finishes at a moment the test cannot know: looking often and giving up
/// late keeps such tests both fast and steady.
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let start = tokio::time::Instant::now();
    while !check() {
        assert!(start.elapsed() < PATIENCE, "gave up waiting for: {what}");
        tokio::time::sleep(POLL).await;
    }
}

/// A self-signed certificate for `localhost` and 127.0.0.1, as
/// `(certificate PEM, private key PEM)`: what a hub or node serves TLS
/// with, and what a client trusting it is given as its root.
pub fn self_signed() -> (String, String) {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("a self-signed certificate");
    (certified.cert.pem(), certified.key_pair.serialize_pem())
}
