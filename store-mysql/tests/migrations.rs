//! The schema: created at open, idempotent, shared safely, and never
//! downgraded.

mod support;

use std::time::Duration;

use mediator_core::{Endpoint, NodeKey, Registration, Registry, Timestamp};
use mediator_store_mysql::{MysqlError, MysqlRegistry, SCHEMA_VERSION};
use support::TestDb;

const T0: Timestamp = Timestamp::from_millis(1_700_000_000_000);

async fn applied_versions(db: &TestDb) -> Option<String> {
    db.scalar("SELECT GROUP_CONCAT(version ORDER BY version) FROM mediator_schema")
        .await
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
    assert_eq!(SCHEMA_VERSION, 1);
    assert_eq!(applied_versions(&db).await.as_deref(), Some("1"));

    for _ in 0..2 {
        let again = MysqlRegistry::connect(&db.url()).await.expect("reopen");
        assert_eq!(again.get(&key).await.expect("get"), Some(node.clone()));
        again.close().await.expect("close");
    }
    assert_eq!(applied_versions(&db).await.as_deref(), Some("1"));
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
    assert_eq!(applied_versions(&db).await.as_deref(), Some("1"));
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
    assert_eq!(
        applied_versions(&db).await,
        Some(format!("{SCHEMA_VERSION},{newer}"))
    );
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
    let column = |name: &str| {
        format!(
            "SELECT CONCAT(COLUMN_TYPE, ' ', IS_NULLABLE, ' ', COALESCE(COLLATION_NAME, '-')) \
             FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'nodes' AND COLUMN_NAME = '{name}'"
        )
    };
    for (name, expected) in [
        ("id", "bigint(20) unsigned NO -"),
        ("group_name", "varchar(50) NO utf8mb4_bin"),
        ("node_name", "varchar(50) NO utf8mb4_bin"),
        ("endpoint", "varchar(2100) NO utf8mb4_bin"),
        ("meta", "text NO utf8mb4_bin"),
        ("created_ms", "bigint(20) NO -"),
        ("updated_ms", "bigint(20) YES -"),
        ("lease_until_ms", "bigint(20) NO -"),
    ] {
        let found = db.scalar(&column(name)).await.unwrap_or_default();
        // MySQL 8 drops display widths; MariaDB keeps them.
        let expected_short = expected.replace("(20)", "");
        assert!(
            found == expected || found == expected_short,
            "column {name}: {found:?}"
        );
    }
    let indexes = db
        .scalar(
            "SELECT GROUP_CONCAT(CONCAT(INDEX_NAME, ':', NON_UNIQUE, ':', COLUMN_NAME) \
             ORDER BY BINARY INDEX_NAME, SEQ_IN_INDEX) FROM information_schema.STATISTICS \
             WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'nodes'",
        )
        .await;
    assert_eq!(
        indexes.as_deref(),
        Some(
            "PRIMARY:0:id,nodes_group_name_node_name:0:group_name,\
             nodes_group_name_node_name:0:node_name,nodes_lease_until_ms:1:lease_until_ms"
        )
    );
}
