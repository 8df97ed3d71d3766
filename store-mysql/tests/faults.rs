//! Bounded time: an unreachable, silent or vanishing server makes calls fail
//! quickly with a clear store error, and calls succeed again once it is back.

mod support;

use std::time::{Duration, Instant};

use mediator_core::{Endpoint, NodeKey, Registration, Registry, StoreError, Timestamp};
use mediator_store_mysql::{import_original_clusters, MysqlConfig, MysqlError, MysqlRegistry};
use support::{closed_port, silent_server, Proxy, TestDb};

const T0: Timestamp = Timestamp::from_millis(1_700_000_000_000);
const TTL: Duration = Duration::from_secs(60);
/// Slack for scheduling on a loaded machine, on top of a configured bound.
const SLACK: Duration = Duration::from_secs(2);

fn registration(key: &NodeKey) -> Registration {
    Registration::new(
        key.clone(),
        Endpoint::http("http://127.0.0.1:9000").expect("valid endpoint"),
        TTL,
    )
}

/// Asserts that `error` is a store error saying the server at `addr` is
/// unreachable.
fn assert_unreachable(error: &StoreError, addr: &str, what: &str) {
    let message = error.to_string();
    assert!(
        message.contains(&format!("mysql at {addr} unreachable")),
        "{what}: unexpected message {message:?}"
    );
    assert!(error.is_temporary(), "{what}: {error:?}");
}

/// Runs every kind of call once and checks that each fails as unreachable
/// within `bound`.
async fn assert_every_call_fails(registry: &MysqlRegistry, key: &NodeKey, bound: Duration) {
    let addr = registry.address().to_owned();
    macro_rules! fails {
        ($what:expr, $call:expr) => {{
            let started = Instant::now();
            let error = $call
                .await
                .expect_err(concat!($what, " succeeded against a dead server"));
            let took = started.elapsed();
            assert!(took < bound, "{} took {took:?}, over {bound:?}", $what);
            assert_unreachable(&error, &addr, $what);
        }};
    }
    fails!("upsert", registry.upsert(registration(key), T0));
    fails!("renew", registry.renew(key, TTL, T0));
    fails!("get", registry.get(key));
    fails!("get_by_id", registry.get_by_id(mediator_core::NodeId(1)));
    fails!("list", registry.list(None));
    fails!("remove_key", registry.remove_key(key));
    fails!("evict_expired", registry.evict_expired(T0));
    fails!("ping", registry.ping());
}

#[tokio::test]
async fn a_closed_port_fails_to_open_quickly_with_a_clear_error() {
    let addr = closed_port();
    let config = MysqlConfig::new(format!("mysql://root@{addr}/test"))
        .with_connect_timeout(Duration::from_secs(3));
    let started = Instant::now();
    let error = MysqlRegistry::with_config(config)
        .await
        .expect_err("nothing listens there");
    assert!(started.elapsed() < Duration::from_secs(3) + SLACK);
    assert!(error.is_transient(), "{error:?}");
    let message = error.to_string();
    assert!(
        message.starts_with(&format!("mysql at {addr} unreachable: connect failed")),
        "{message}"
    );
    let store: StoreError = error.into();
    assert!(store.is_temporary());
    assert!(store.to_string().ends_with(&message), "{store}");
}

#[tokio::test]
async fn an_import_from_a_closed_port_fails_quickly_with_a_clear_error() {
    let addr = closed_port();
    let into = mediator_core::MemoryRegistry::new();
    let started = Instant::now();
    let error = import_original_clusters(
        &format!("mysql://root@{addr}/legacy"),
        "clusters",
        &into,
        TTL,
        T0,
    )
    .await
    .expect_err("nothing listens there");
    assert!(started.elapsed() < MysqlConfig::DEFAULT_CONNECT_TIMEOUT + SLACK);
    assert!(
        error
            .to_string()
            .starts_with(&format!("mysql at {addr} unreachable")),
        "{error}"
    );
}

#[tokio::test]
async fn a_silent_server_is_bounded_by_the_connect_timeout() {
    let (addr, server) = silent_server("127.0.0.1:0".parse().expect("an address")).await;
    let bound = Duration::from_millis(400);
    let started = Instant::now();
    let error = MysqlRegistry::with_config(
        MysqlConfig::new(format!("mysql://root@{addr}/test")).with_connect_timeout(bound),
    )
    .await
    .expect_err("the server never answers");
    assert!(started.elapsed() < bound + SLACK);
    assert!(
        matches!(error, MysqlError::Timeout { op: "connect", after, .. } if after == bound),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        format!("mysql at {addr} unreachable: no answer to connect within 400ms")
    );
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_fail_quickly_while_the_server_is_cut_off_and_succeed_once_it_is_back() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let mut proxy = Proxy::start().await;
    let op_timeout = Duration::from_secs(2);
    let registry = MysqlRegistry::with_config(
        MysqlConfig::new(db.url_via(proxy.addr))
            .with_op_timeout(op_timeout)
            .with_connect_timeout(Duration::from_secs(5)),
    )
    .await
    .expect("opens through the proxy");
    assert_eq!(registry.address(), proxy.addr.to_string());
    let key = NodeKey::named("svc", "a").expect("valid key");
    let node = registry
        .upsert(registration(&key), T0)
        .await
        .expect("registers through the proxy");

    proxy.stop().await;
    assert_every_call_fails(&registry, &key, op_timeout + SLACK).await;

    proxy.resume().await;
    assert_eq!(
        registry
            .get(&key)
            .await
            .expect("get after the server is back"),
        Some(node.clone()),
        "the data survived"
    );
    let again = registry
        .upsert(registration(&key), T0 + TTL)
        .await
        .expect("upsert after the server is back");
    assert_eq!((again.id, again.created), (node.id, node.created));
    registry
        .ping()
        .await
        .expect("ping after the server is back");
    registry.close().await.expect("closes");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_gone_silent_mid_session_times_calls_out_and_they_recover() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let mut proxy = Proxy::start().await;
    let op_timeout = Duration::from_millis(500);
    let registry = MysqlRegistry::with_config(
        MysqlConfig::new(db.url_via(proxy.addr)).with_op_timeout(op_timeout),
    )
    .await
    .expect("opens through the proxy");
    let key = NodeKey::unnamed("svc").expect("valid key");
    let node = registry
        .upsert(registration(&key), T0)
        .await
        .expect("registers");

    // The same port now accepts connections and never answers.
    proxy.stop().await;
    let (_, silent) = silent_server(proxy.addr).await;
    // The pooled connection was cut with the proxy, which the first call may
    // only learn by using it; the next call connects anew and meets silence.
    let first = registry
        .get(&key)
        .await
        .expect_err("the connection was cut");
    assert_unreachable(&first, &proxy.addr.to_string(), "first get");
    let started = Instant::now();
    let error = registry.get(&key).await.expect_err("the server is silent");
    assert!(started.elapsed() < op_timeout + SLACK);
    assert!(error.is_temporary());
    assert!(
        error.to_string().ends_with(&format!(
            "mysql at {} unreachable: no answer to get within 500ms",
            proxy.addr
        )),
        "{error}"
    );
    assert_every_call_fails(&registry, &key, op_timeout + SLACK).await;

    silent.abort();
    let _ = silent.await;
    proxy.resume().await;
    assert_eq!(
        registry
            .get(&key)
            .await
            .expect("get after the server is back"),
        Some(node)
    );
    registry.close().await.expect("closes");
    proxy.stop().await;
}
