//! `kill -9` in the middle of registrations on SQLite: the file reopens
//! intact and holds every registration that was acknowledged.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mediator_core::Registry;
use mediator_store_sqlite::SqliteRegistry;
use serde_json::json;

use crate::support::{token_for, try_post};
use crate::Hub;

/// Registrations acknowledged before the kill.
const BEFORE_KILL: usize = 150;
/// Concurrent registering clients.
const WORKERS: usize = 8;

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_during_registrations_keeps_every_acknowledged_one_in_an_intact_file() {
    let mut hub = Hub::start("sqlite:hub.db", &[]);
    let acknowledged: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let url = hub.url("/register");
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            let (url, acknowledged) = (url.clone(), Arc::clone(&acknowledged));
            let dir = hub.dir.path().to_owned();
            tokio::spawn(async move {
                for i in 0.. {
                    let name = format!("n{w}-{i}");
                    let token = token_for(&dir, &format!("crash/{name}"));
                    let body = json!({"group": "crash", "name": name, "url": "http://127.0.0.1:9", "ttl": 600});
                    // No answer: the process is gone, which ends the worker.
                    let Some(status) = try_post(&url, &token, body.to_string()).await else {
                        return;
                    };
                    assert_eq!(status, 200, "registration {name} refused");
                    acknowledged.lock().unwrap().insert(name);
                }
            })
        })
        .collect();
    while acknowledged.lock().unwrap().len() < BEFORE_KILL {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    hub.process.signal("KILL");
    let status = hub.process.wait_exit(Duration::from_secs(10));
    assert!(!status.success(), "the process was not killed: {status:?}");
    for worker in workers {
        worker.await.unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    println!(
        "{} registrations acknowledged before the kill",
        acknowledged.len()
    );

    let path = hub.dir.path().join("hub.db");
    let conn = rusqlite::Connection::open(&path).unwrap();
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    drop(conn);

    let registry = SqliteRegistry::open(&path).await.unwrap();
    let stored: BTreeSet<String> = registry
        .list(Some("crash"))
        .await
        .unwrap()
        .into_iter()
        .filter_map(|node| node.key.name().map(str::to_owned))
        .collect();
    let missing: Vec<_> = acknowledged.difference(&stored).collect();
    assert!(missing.is_empty(), "acknowledged but lost: {missing:?}");
}
