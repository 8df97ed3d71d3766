//! The core's registry conformance suite, each case on a database of its own.

mod support;

use std::sync::{Arc, Mutex};

use mediator_store_mysql::MysqlRegistry;
use support::TestDb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_the_conformance_suite() {
    if support::skip() {
        return;
    }
    // The databases live until the suite is over, and are dropped even when
    // it panics.
    let databases = Arc::new(Mutex::new(Vec::new()));
    mediator_core::testkit::conformance(|| {
        let databases = databases.clone();
        async move {
            let db = TestDb::create().await.expect("MySQL tests are not skipped");
            let registry = MysqlRegistry::connect(&db.url())
                .await
                .unwrap_or_else(|e| panic!("opening {}: {e}", db.name));
            databases.lock().expect("database list").push(db);
            registry
        }
    })
    .await;
}
