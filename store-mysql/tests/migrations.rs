//! The schema: created at open, idempotent, shared safely, and never
//! downgraded.

mod support;

use std::time::Duration;

use mediator_core::formation::ChangeKind;
use mediator_core::{Endpoint, Node, NodeKey, Registration, Registry, Timestamp};
use mediator_store_mysql::{MysqlError, MysqlRegistry, SCHEMA_VERSION};
use support::TestDb;

const T0: Timestamp = Timestamp::from_millis(1_700_000_000_000);

async fn applied_versions(db: &TestDb) -> Option<String> {
    db.scalar("SELECT GROUP_CONCAT(version ORDER BY version) FROM mediator_schema")
        .await
}

/// Every version from 1 to `last`, as [`applied_versions`] lists them.
fn versions_up_to(last: u32) -> String {
    (1..=last)
        .map(|v| v.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

#[tokio::test]
async fn migrations_are_idempotent_across_reconnects() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let first = MysqlRegistry::connect(&db.url()).await.expect("first open");
    let key = NodeKey::named("g", "n").expect("valid key");
    let node = first
        .upsert(
            Registration::new(
                key.clone(),
                Endpoint::http("http://127.0.0.1:1").expect("valid endpoint"),
                Duration::from_secs(30),
            ),
            T0,
        )
        .await
        .expect("upsert");
    first.close().await.expect("close");
    assert_eq!(SCHEMA_VERSION, 2);
    assert_eq!(applied_versions(&db).await.as_deref(), Some("1,2"));

    for _ in 0..2 {
        let again = MysqlRegistry::connect(&db.url()).await.expect("reopen");
        assert_eq!(again.get(&key).await.expect("get"), Some(node.clone()));
        again.close().await.expect("close");
    }
    assert_eq!(applied_versions(&db).await.as_deref(), Some("1,2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_opening_a_new_database_at_once_migrate_it_once() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let url = db.url();
    let opens: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { MysqlRegistry::connect(&url).await })
        })
        .collect();
    for open in opens {
        let registry = open.await.expect("task ran").expect("every instance opens");
        registry.close().await.expect("close");
    }
    assert_eq!(applied_versions(&db).await.as_deref(), Some("1,2"));
}

#[tokio::test]
async fn a_newer_schema_is_refused_with_a_clear_message() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    MysqlRegistry::connect(&db.url())
        .await
        .expect("open")
        .close()
        .await
        .expect("close");
    let newer = SCHEMA_VERSION + 1;
    db.exec(&format!(
        "INSERT INTO mediator_schema (version) VALUES ({newer})"
    ))
    .await;
    let error = MysqlRegistry::connect(&db.url())
        .await
        .expect_err("a newer schema must be refused");
    assert!(
        matches!(error, MysqlError::SchemaTooNew { found, supported, .. } if found == u64::from(newer) && supported == SCHEMA_VERSION),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        format!(
            "mysql database {} has schema version {newer}, newer than version {SCHEMA_VERSION} \
             that this build knows; upgrade the mediator, or point it at another database",
            db.name
        )
    );
    // Nothing was changed by the refused open.
    assert_eq!(applied_versions(&db).await, Some(versions_up_to(newer)));
}

#[tokio::test]
async fn an_unrelated_nodes_table_is_not_adopted() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    db.exec("CREATE TABLE nodes (x INT)").await;
    let error = MysqlRegistry::connect(&db.url())
        .await
        .expect_err("someone else's nodes table");
    let message = error.to_string();
    assert!(
        message.starts_with(&format!(
            "mysql database {} could not be migrated: step to version 1 failed",
            db.name
        )) && message.contains("already exists"),
        "{message}"
    );
}

#[tokio::test]
async fn the_schema_has_the_documented_shape() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    MysqlRegistry::connect(&db.url())
        .await
        .expect("open")
        .close()
        .await
        .expect("close");
    let column = |table: &str, name: &str| {
        format!(
            "SELECT CONCAT(COLUMN_TYPE, ' ', IS_NULLABLE, ' ', COALESCE(COLLATION_NAME, '-')) \
             FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = '{table}' AND COLUMN_NAME = '{name}'"
        )
    };
    for (table, name, expected) in [
        ("nodes", "id", "bigint(20) unsigned NO -"),
        ("nodes", "group_name", "varchar(50) NO utf8mb4_bin"),
        ("nodes", "node_name", "varchar(50) NO utf8mb4_bin"),
        ("nodes", "endpoint", "varchar(2100) NO utf8mb4_bin"),
        ("nodes", "meta", "text NO utf8mb4_bin"),
        ("nodes", "created_ms", "bigint(20) NO -"),
        ("nodes", "updated_ms", "bigint(20) YES -"),
        ("nodes", "lease_until_ms", "bigint(20) NO -"),
        ("changes", "position", "bigint(20) unsigned NO -"),
        ("changes", "kind", "enum('put','removed') NO utf8mb4_bin"),
        ("changes", "node_id", "bigint(20) unsigned NO -"),
        ("changes", "group_name", "varchar(50) NO utf8mb4_bin"),
        ("changes", "node_name", "varchar(50) NO utf8mb4_bin"),
        ("feed", "id", "tinyint(3) unsigned NO -"),
        ("feed", "head", "bigint(20) unsigned NO -"),
        ("feed", "compacted", "bigint(20) unsigned NO -"),
        ("instances", "id", "varchar(64) NO ascii_bin"),
        ("instances", "peer", "varchar(2100) NO utf8mb4_bin"),
        ("instances", "started_ms", "bigint(20) NO -"),
        ("instances", "heartbeat_ms", "bigint(20) NO -"),
        ("instances", "lease_until_ms", "bigint(20) NO -"),
    ] {
        let found = db.scalar(&column(table, name)).await.unwrap_or_default();
        // MySQL 8 drops display widths; MariaDB keeps them.
        let expected_short = expected.replace("(20)", "").replace("(3)", "");
        assert!(
            found == expected || found == expected_short,
            "column {table}.{name}: {found:?}"
        );
    }
    let indexes = |table: &str| {
        format!(
            "SELECT GROUP_CONCAT(CONCAT(INDEX_NAME, ':', NON_UNIQUE, ':', COLUMN_NAME, \
             COALESCE(CONCAT('(', SUB_PART, ')'), '')) \
             ORDER BY BINARY INDEX_NAME, SEQ_IN_INDEX) FROM information_schema.STATISTICS \
             WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = '{table}'"
        )
    };
    for (table, expected) in [
        (
            "nodes",
            "PRIMARY:0:id,nodes_endpoint:1:endpoint(80),nodes_group_name_node_name:0:group_name,\
             nodes_group_name_node_name:0:node_name,nodes_lease_until_ms:1:lease_until_ms",
        ),
        ("changes", "PRIMARY:0:position"),
        ("feed", "PRIMARY:0:id"),
        (
            "instances",
            "PRIMARY:0:id,instances_lease_until_ms:1:lease_until_ms",
        ),
    ] {
        assert_eq!(
            db.scalar(&indexes(table)).await.as_deref(),
            Some(expected),
            "indexes of {table}"
        );
    }
    assert_eq!(
        db.scalar("SELECT CONCAT(id, ' ', head, ' ', compacted) FROM feed")
            .await
            .as_deref(),
        Some("1 0 0"),
        "the feed's one row in a new database"
    );
}

/// The schema as a build of version 1 left it.
const VERSION_1: &str = include_str!("../src/migrations/0001_create_nodes.sql");

#[tokio::test]
async fn a_version_1_database_keeps_its_nodes_and_starts_its_feed_with_them() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    db.exec(&format!(
        "CREATE TABLE mediator_schema (version INT UNSIGNED NOT NULL PRIMARY KEY, \
         applied_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP) ENGINE = InnoDB; \
         INSERT INTO mediator_schema (version) VALUES (1); {VERSION_1}"
    ))
    .await;
    // Three nodes registered by a version-1 build, the second removed since.
    db.exec(
        "INSERT INTO nodes \
         (group_name, node_name, endpoint, meta, created_ms, updated_ms, lease_until_ms) VALUES \
         ('g', 'a', 'http://127.0.0.1:1', '{\"zone\":\"eu\"}', 1000, NULL, 31000), \
         ('g', 'b', 'http://127.0.0.1:2', '{}', 1000, NULL, 31000), \
         ('h', '', 'attached:hub-1', '{}', 1000, 2000, 32000); \
         DELETE FROM nodes WHERE id = 2",
    )
    .await;

    let registry = MysqlRegistry::connect(&db.url()).await.expect("migrate");
    assert_eq!(applied_versions(&db).await.as_deref(), Some("1,2"));
    let nodes = registry.list(None).await.expect("list");
    let described: Vec<String> = nodes
        .iter()
        .map(|n| format!("{} {} {} {:?}", n.id, n.key, n.endpoint, n.meta))
        .collect();
    assert_eq!(
        described,
        vec![
            r#"1 g/a http://127.0.0.1:1 {"zone": "eu"}"#.to_owned(),
            "3 h/ attached:hub-1 {}".to_owned(),
        ],
        "the nodes after migrating"
    );
    assert_eq!(nodes[1].updated, Some(Timestamp::from_millis(2000)));

    // The feed starts with them, in id order at positions 1, 2, so a
    // follower reading it from the start reaches the same nodes.
    assert_eq!(registry.version().await.expect("version"), Some(2));
    let page = registry
        .changes(0, 100)
        .await
        .expect("changes")
        .expect("a feed");
    assert!(!page.gap);
    assert_eq!(page.next, 2);
    let replayed: Vec<(u64, Node)> = page
        .changes
        .into_iter()
        .map(|change| match change.kind {
            ChangeKind::Put(node) => (change.position, node),
            ChangeKind::Removed { .. } => panic!("a removal at {}", change.position),
        })
        .collect();
    assert_eq!(replayed, vec![(1, nodes[0].clone()), (2, nodes[1].clone())]);

    // Writes go on after them, and the new index finds the attached node.
    let key = NodeKey::named("g", "b").expect("valid key");
    let node = registry
        .upsert(
            Registration::new(
                key,
                Endpoint::http("http://127.0.0.1:2").expect("valid endpoint"),
                Duration::from_secs(30),
            ),
            T0,
        )
        .await
        .expect("upsert");
    assert_eq!(node.id.0, 4, "ids are never reused");
    assert_eq!(registry.version().await.expect("version"), Some(3));
    assert_eq!(
        registry.retire_instance("hub-1").await.expect("retire"),
        vec![nodes[1].key.clone()]
    );
    assert_eq!(registry.version().await.expect("version"), Some(4));
    registry.close().await.expect("close");
}
