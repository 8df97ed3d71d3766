//! Import of the original project's `clusters` table.

mod support;

use std::time::Duration;

use mediator_core::{MemoryRegistry, NodeKey, Registry, Timestamp};
use mediator_store_mysql::{import_original_clusters, ImportReport, MysqlError, MysqlRegistry};
use support::TestDb;

const NOW: Timestamp = Timestamp::from_millis(1_700_000_000_000);
const TTL: Duration = Duration::from_secs(3600);

/// The table as the original created it, with rows of every kind.
async fn original_table(db: &TestDb) {
    db.exec(
        "CREATE TABLE clusters (
            id INT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
            cluster VARCHAR(50) NOT NULL,
            node VARCHAR(50) NULL,
            domain VARCHAR(50) NOT NULL,
            port VARCHAR(8) NOT NULL DEFAULT '80',
            created DATETIME NOT NULL,
            updated DATETIME NULL,
            UNIQUE KEY cluster_node (cluster, node)
        );
        INSERT INTO clusters (id, cluster, node, domain, port, created, updated) VALUES
            (1, 'bench', 'echo', 'http://127.0.0.1', '80', '2020-01-02 03:04:05', NULL),
            (2, 'bench', NULL, 'http://127.0.0.1', '18080', '2020-01-03 00:00:00', '2021-06-07 08:09:10'),
            (3, 'web', 'tls', 'https://node.example', '8443', '2020-02-01 12:00:00', NULL),
            (4, 'web', 'bad.name', 'http://10.0.0.4', '80', '2020-02-02 12:00:00', NULL),
            (5, 'web', 'files', 'ftp://files.example', '80', '2020-02-03 12:00:00', NULL),
            (6, 'web', 'huge-port', 'http://10.0.0.6', '99999', '2020-02-04 12:00:00', NULL),
            (9, 'Web', 'api', 'https://api.example', '80', '2020-02-05 12:00:00', NULL);",
    )
    .await;
}

fn key(text: &str) -> NodeKey {
    text.parse().expect("valid key")
}

/// Checks the report and the registered nodes, the same for every target.
async fn check(report: &ImportReport, into: &dyn Registry) {
    let imported: Vec<(u64, String, String)> = report
        .imported
        .iter()
        .map(|i| (i.original_id, i.key.to_string(), i.endpoint.to_string()))
        .collect();
    assert_eq!(
        imported,
        vec![
            (1, "bench/echo".into(), "http://127.0.0.1".into()),
            (2, "bench/".into(), "http://127.0.0.1:18080".into()),
            (3, "web/tls".into(), "https://node.example:8443".into()),
            (9, "Web/api".into(), "https://api.example".into()),
        ]
    );
    let skipped: Vec<(u64, &str, Option<&str>, &str)> = report
        .skipped
        .iter()
        .map(|s| {
            (
                s.original_id,
                s.cluster.as_str(),
                s.node.as_deref(),
                s.reason.as_str(),
            )
        })
        .collect();
    assert_eq!(
        skipped,
        vec![
            (
                4,
                "web",
                Some("bad.name"),
                "invalid name: must match ^[A-Za-z0-9_-]{1,50}$, found '.'"
            ),
            (
                5,
                "web",
                Some("files"),
                "domain \"ftp://files.example\" does not start with http:// or https://"
            ),
            (
                6,
                "web",
                Some("huge-port"),
                "port \"99999\" is not a number from 1 to 65535"
            ),
        ]
    );

    let unnamed = into
        .get(&key("bench/"))
        .await
        .expect("get")
        .expect("the NULL node is the unnamed node");
    assert_eq!(unnamed.key.name(), None);
    assert_eq!(unnamed.endpoint.to_string(), "http://127.0.0.1:18080");
    assert_eq!(unnamed.created, NOW);
    assert_eq!(unnamed.updated, None);
    assert_eq!(unnamed.lease_until, NOW + TTL);
    let meta: Vec<(&str, &str)> = unnamed
        .meta
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        meta,
        vec![
            ("imported_from_id", "2"),
            ("original_created", "2020-01-03 00:00:00"),
            ("original_updated", "2021-06-07 08:09:10"),
        ]
    );
    let echo = into
        .get(&key("bench/echo"))
        .await
        .expect("get")
        .expect("imported");
    assert_eq!(
        echo.meta.get("imported_from_id").map(String::as_str),
        Some("1")
    );
    assert_eq!(echo.meta.get("original_updated"), None);
    let all = into.list(None).await.expect("list");
    assert_eq!(all.len(), 4);
    assert_eq!(
        report.to_string().lines().last(),
        Some("4 imported, 3 skipped")
    );
}

#[tokio::test]
async fn imports_into_a_memory_registry() {
    let Some(source) = TestDb::create().await else {
        return;
    };
    original_table(&source).await;
    let into = MemoryRegistry::new();
    let report = import_original_clusters(&source.url(), "clusters", &into, TTL, NOW)
        .await
        .expect("import");
    check(&report, &into).await;
}

#[tokio::test]
async fn imports_into_a_mysql_registry_in_the_same_database_once() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    original_table(&db).await;
    let into = MysqlRegistry::connect(&db.url()).await.expect("open");
    let report = import_original_clusters(&db.url(), "clusters", &into, TTL, NOW)
        .await
        .expect("import");
    check(&report, &into).await;

    let again = import_original_clusters(&db.url(), "clusters", &into, TTL, NOW)
        .await
        .expect("second import");
    assert!(again.imported.is_empty(), "{again}");
    let reasons: Vec<String> = again.skipped.iter().map(|s| s.reason.clone()).collect();
    assert_eq!(reasons.len(), 7);
    assert!(reasons.contains(&"bench/ is already registered in the target store".to_owned()));
    assert_eq!(into.list(None).await.expect("list").len(), 4);
    // The source is only read.
    assert_eq!(
        db.scalar("SELECT COUNT(*) FROM clusters").await.as_deref(),
        Some("7")
    );
    into.close().await.expect("close");
}

#[tokio::test]
async fn a_bad_table_name_or_a_missing_table_is_refused() {
    let into = MemoryRegistry::new();
    let error = import_original_clusters(
        "mysql://root@127.0.0.1:1/db",
        "clusters`; DROP TABLE x; --",
        &into,
        TTL,
        NOW,
    )
    .await
    .expect_err("not an identifier");
    assert!(matches!(error, MysqlError::TableName(_)), "{error:?}");

    let Some(db) = TestDb::create().await else {
        return;
    };
    let error = import_original_clusters(&db.url(), "clusters", &into, TTL, NOW)
        .await
        .expect_err("no such table");
    let message = error.to_string();
    assert!(
        message.contains("refused reading the clusters table") && message.contains("doesn't exist"),
        "{message}"
    );
}
