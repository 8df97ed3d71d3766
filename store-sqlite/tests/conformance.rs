//! The registry contract, over a file database and over an in-memory one.

use std::sync::atomic::{AtomicUsize, Ordering};

use mediator_core::testkit;
use mediator_store_sqlite::SqliteRegistry;

#[tokio::test]
async fn file_database_passes_the_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let count = AtomicUsize::new(0);
    testkit::conformance(|| {
        // One fresh file per case, all removed with the directory.
        let n = count.fetch_add(1, Ordering::Relaxed);
        let path = dir.path().join(format!("case-{n}.db"));
        async move { SqliteRegistry::open(path).await.unwrap() }
    })
    .await;
    assert!(count.load(Ordering::Relaxed) > 0);
}

#[tokio::test]
async fn in_memory_database_passes_the_conformance_suite() {
    testkit::conformance(|| async { SqliteRegistry::open_in_memory().await.unwrap() }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_on_a_multi_threaded_runtime_too() {
    testkit::conformance(|| async { SqliteRegistry::open_in_memory().await.unwrap() }).await;
}
