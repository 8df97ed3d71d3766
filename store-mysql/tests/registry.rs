//! Behaviour of the MySQL store beyond the shared conformance suite.

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use mediator_core::{
    Endpoint, Error, Meta, NodeKey, Registration, Registry, StoreError, Timestamp,
};
use mediator_store_mysql::{MysqlConfig, MysqlError, MysqlRegistry};
use support::TestDb;

const T0: Timestamp = Timestamp::from_millis(1_700_000_000_000);
const TTL: Duration = Duration::from_secs(30);

fn registration(key: &NodeKey) -> Registration {
    Registration::new(
        key.clone(),
        Endpoint::http("http://127.0.0.1:9000").expect("valid endpoint"),
        TTL,
    )
}

async fn open(db: &TestDb) -> MysqlRegistry {
    MysqlRegistry::connect(&db.url())
        .await
        .unwrap_or_else(|e| panic!("opening {}: {e}", db.name))
}

#[tokio::test]
async fn bad_urls_and_settings_are_refused_before_connecting() {
    for (config, expected) in [
        (
            MysqlConfig::new("mysql://root@127.0.0.1:1"),
            "invalid mysql url: the url for mysql at 127.0.0.1:1 names no database; add /<database> to it",
        ),
        (
            MysqlConfig::new("postgres://root@127.0.0.1/db"),
            "invalid mysql url: Unsupported connection URL scheme `postgres'",
        ),
        (
            MysqlConfig::new("mysql://root@127.0.0.1:1/db").with_pool_size(0),
            "invalid mysql configuration: pool_size must be 1 to 128, got 0",
        ),
        (
            MysqlConfig::new("mysql://root@127.0.0.1:1/db").with_op_timeout(Duration::ZERO),
            "invalid mysql configuration: op_timeout must be above zero",
        ),
    ] {
        let error = MysqlRegistry::with_config(config.clone())
            .await
            .expect_err("refused");
        assert_eq!(error.to_string(), expected, "{config:?}");
        assert!(!error.is_transient());
    }
}

#[tokio::test]
async fn names_are_case_sensitive() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let registry = open(&db).await;
    let upper = NodeKey::named("Svc", "A").expect("valid key");
    let lower = NodeKey::named("svc", "a").expect("valid key");
    let a = registry
        .upsert(registration(&upper), T0)
        .await
        .expect("upsert");
    let b = registry
        .upsert(registration(&lower), T0)
        .await
        .expect("upsert");
    assert_ne!(a.id, b.id);
    assert_eq!(registry.get(&upper).await.expect("get"), Some(a));
    assert_eq!(registry.list(Some("svc")).await.expect("list"), vec![b]);
    registry.close().await.expect("close");
}

#[tokio::test]
async fn renewing_to_the_same_lease_still_finds_the_node() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let registry = open(&db).await;
    let key = NodeKey::named("g", "n").expect("valid key");
    registry
        .upsert(registration(&key), T0)
        .await
        .expect("upsert");
    for _ in 0..2 {
        assert_eq!(
            registry.renew(&key, TTL, T0).await.expect("renew"),
            Some(T0 + TTL)
        );
    }
    registry.close().await.expect("close");
}

#[tokio::test]
async fn values_too_long_are_refused_and_never_cut_short() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let registry = open(&db).await;
    let key = NodeKey::named("g", "big").expect("valid key");
    let mut meta = Meta::new();
    meta.insert("blob".into(), "x".repeat(70_000));
    let error = registry
        .upsert(registration(&key).with_meta(meta), T0)
        .await
        .expect_err("meta over 64 KiB");
    assert!(!error.is_temporary(), "{error:?}");
    let message = error.to_string();
    assert!(
        message.contains("refused upsert") && message.contains("meta"),
        "{message}"
    );
    assert_eq!(registry.list(None).await.expect("list"), vec![]);
    // The longest endpoint the model accepts fits the column whole.
    let scheme = format!("x{}", "y".repeat(31));
    let longest = Endpoint::custom(&scheme, "i".repeat(mediator_core::model::MAX_ENDPOINT_LEN))
        .expect("the longest valid endpoint");
    let stored = registry
        .upsert(Registration::new(key.clone(), longest.clone(), TTL), T0)
        .await
        .expect("stored");
    assert_eq!(stored.endpoint, longest);
    assert_eq!(
        registry.get(&key).await.expect("get").map(|n| n.endpoint),
        Some(longest)
    );
    registry.close().await.expect("close");
}

#[tokio::test]
async fn rows_written_by_something_else_are_reported_not_guessed() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let registry = open(&db).await;
    db.exec(
        "INSERT INTO nodes (group_name, node_name, endpoint, meta, created_ms, lease_until_ms) \
         VALUES ('bad group', '', 'http://h', '{}', 0, 0), ('g', 'n', 'http://h', 'not json', 0, 0)",
    )
    .await;
    let error = registry.list(None).await.expect_err("corrupt rows");
    assert!(
        error
            .to_string()
            .contains("table nodes holds a row that is not a valid node: row id 1: invalid group"),
        "{error}"
    );
    let error = registry
        .get(&NodeKey::named("g", "n").expect("valid key"))
        .await
        .expect_err("meta is not JSON");
    assert!(
        error
            .to_string()
            .contains("meta is not a JSON object of strings"),
        "{error}"
    );
    registry.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_one_database() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let (a, b) = (open(&db).await, open(&db).await);
    let key = NodeKey::named("g", "n").expect("valid key");
    let node = a.upsert(registration(&key), T0).await.expect("upsert on a");
    assert_eq!(b.get(&key).await.expect("get on b"), Some(node.clone()));
    let updated = b
        .upsert(registration(&key), T0 + TTL)
        .await
        .expect("upsert on b");
    assert_eq!((updated.id, updated.created), (node.id, node.created));
    assert_eq!(
        a.evict_expired(T0 + TTL * 2).await.expect("evict on a"),
        vec![key.clone()]
    );
    assert_eq!(b.get(&key).await.expect("get on b"), None);
    a.close().await.expect("close a");
    b.close().await.expect("close b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eviction_racing_renewals_reports_exactly_what_it_deleted() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let registry = Arc::new(open(&db).await);
    let keys: Vec<NodeKey> = (0..60)
        .map(|i| NodeKey::named("race", format!("n{i}")).expect("valid key"))
        .collect();
    for key in &keys {
        registry
            .upsert(registration(key), T0)
            .await
            .expect("upsert");
    }
    // At the end of the lease, every node renews while eviction runs.
    let at = T0 + TTL;
    let mut renewals = tokio::task::JoinSet::new();
    for key in keys.clone() {
        let registry = registry.clone();
        renewals.spawn(async move {
            let renewed = registry.renew(&key, TTL, at).await.expect("renew");
            (key, renewed.is_some())
        });
    }
    let evicted: BTreeSet<NodeKey> = registry
        .evict_expired(at)
        .await
        .expect("evict")
        .into_iter()
        .collect();
    let mut renewed = BTreeSet::new();
    while let Some(joined) = renewals.join_next().await {
        let (key, found) = joined.expect("renewal task");
        if found {
            renewed.insert(key);
        }
    }
    let left: BTreeSet<NodeKey> = registry
        .list(Some("race"))
        .await
        .expect("list")
        .into_iter()
        .map(|n| n.key)
        .collect();
    // A node is either evicted (and its renewal found nothing) or renewed
    // before the eviction (and still there); none is both, none is lost.
    assert!(
        evicted.is_disjoint(&left),
        "evicted yet present: {evicted:?}"
    );
    assert_eq!(
        left, renewed,
        "the survivors are the nodes whose renewal landed"
    );
    assert_eq!(evicted.len() + left.len(), keys.len());
}

#[tokio::test]
async fn store_errors_convert_into_core_store_errors() {
    let store = StoreError::from(MysqlError::Config("x".into()));
    assert!(!store.is_temporary());
    assert_eq!(
        std::error::Error::source(&store).map(ToString::to_string),
        Some("invalid mysql configuration: x".to_owned())
    );
    assert_eq!(Error::from(MysqlError::Config("x".into())).status(), 503);
    let timeout = MysqlError::Timeout {
        addr: "db:3306".into(),
        op: "get",
        after: Duration::from_secs(5),
    };
    assert!(StoreError::from(timeout).is_temporary());
    let target = MysqlError::Target {
        original_id: 3,
        source: StoreError::new("the target is full", true),
    };
    let kept = StoreError::from(target);
    assert!(kept.is_temporary());
    assert_eq!(kept.to_string(), "the target is full");
}
