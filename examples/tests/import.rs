//! `mediator import-clusters`: the original's `clusters` table, made the way
//! the original made it, moved into a SQLite store from the command line.

#[path = "../../store-mysql/tests/support/mod.rs"]
mod support;

use std::process::Command;

use mediator_core::{NodeKey, Registry};
use mediator_store_sqlite::SqliteRegistry;

#[tokio::test(flavor = "multi_thread")]
async fn import_clusters_moves_the_original_table_into_sqlite() {
    let Some(db) = support::TestDb::create().await else {
        return;
    };
    db.exec(
        "CREATE TABLE clusters (id INT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY, \
         cluster VARCHAR(50) NOT NULL, node VARCHAR(50) NULL, domain VARCHAR(50) NOT NULL, \
         port VARCHAR(8) NOT NULL DEFAULT '80', created DATETIME NOT NULL, updated DATETIME NULL, \
         UNIQUE KEY cluster_node (cluster, node)); \
         INSERT INTO clusters (cluster, node, domain, port, created) VALUES \
         ('billing', 'worker', 'http://10.0.0.5', '9000', '2020-01-02 03:04:05'), \
         ('billing', NULL, 'https://billing.example', '80', '2020-01-02 03:04:05'), \
         ('bad cluster', 'x', 'http://10.0.0.6', '80', '2020-01-02 03:04:05');",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("imported.db");
    // `mediator import-clusters` from the test table into the SQLite file `to`.
    let import = |to: &std::path::Path, extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_mediator"))
            .args(["import-clusters", "--from", &db.url(), "--store"])
            .arg(format!("sqlite:{}", to.display()))
            .args(extra)
            .output()
            .unwrap()
    };
    let out = import(&path, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("2 imported, 1 skipped"), "{stdout}");
    // The skipped row's node is named as the table holds it.
    assert!(
        stdout.contains(r#"(cluster "bad cluster", node "x")"#) && !stdout.contains("Some("),
        "{stdout}"
    );

    // The same import into another store, for a script: the rows come as JSON.
    let json_store = dir.path().join("as-json.db");
    let out = import(&json_store, &["--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let imported: Vec<(&str, &str)> = report["imported"]
        .as_array()
        .expect("imported rows")
        .iter()
        .map(|row| (row["node"].as_str().unwrap(), row["url"].as_str().unwrap()))
        .collect();
    assert_eq!(
        imported,
        [
            ("billing/worker", "http://10.0.0.5:9000"),
            ("billing/", "https://billing.example")
        ],
        "{report}"
    );
    let skipped = &report["skipped"][0];
    assert_eq!(skipped["cluster"], "bad cluster", "{report}");
    assert_eq!(skipped["node"], "x", "{report}");
    assert!(skipped["reason"].as_str().is_some_and(|r| !r.is_empty()));

    let store = SqliteRegistry::open(&path).await.unwrap();
    let worker = store
        .get(&NodeKey::named("billing", "worker").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(worker.endpoint.to_string(), "http://10.0.0.5:9000");
    let unnamed = store
        .get(&NodeKey::unnamed("billing").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(unnamed.endpoint.to_string(), "https://billing.example");
    assert_eq!(store.list(None).await.unwrap().len(), 2);
    store.close().await.unwrap();
}
