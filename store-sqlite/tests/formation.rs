//! The feed of changes and the mediator instances, where the SQLite store
//! has more to get right than the conformance suite asks: compaction at the
//! edges of the feed, positions across compaction, several processes on one
//! file, and ids refused before anything is stored.

use std::path::Path;
use std::time::Duration;

use mediator_core::formation::{Change, ChangeKind, ChangePage};
use mediator_core::{Endpoint, NodeKey, Registration, Registry, Timestamp};
use mediator_store_sqlite::SqliteRegistry;

const T0: Timestamp = Timestamp::from_millis(1_700_000_000_000);
const TTL: Duration = Duration::from_secs(30);

fn reg(group: &str, name: &str, endpoint: &str) -> Registration {
    Registration::new(
        NodeKey::named(group, name).unwrap(),
        endpoint.parse::<Endpoint>().unwrap(),
        TTL,
    )
}

async fn page(registry: &SqliteRegistry, after: u64) -> ChangePage {
    registry.changes(after, 100).await.unwrap().unwrap()
}

fn positions(page: &ChangePage) -> Vec<u64> {
    page.changes.iter().map(|c| c.position).collect()
}

#[tokio::test]
async fn compaction_reports_a_gap_only_to_followers_it_left_behind() {
    let registry = SqliteRegistry::open_in_memory().await.unwrap();
    for name in ["a", "b", "c"] {
        registry
            .upsert(reg("g", name, "http://127.0.0.1:1"), T0)
            .await
            .unwrap();
    }
    assert_eq!(registry.version().await.unwrap(), Some(3));

    // Compacting through a position past the newest forgets everything, but
    // a follower that read everything missed nothing.
    assert_eq!(registry.compact_changes(100).await.unwrap(), 3);
    let current = page(&registry, 3).await;
    assert_eq!(
        (current.changes.len(), current.next, current.gap),
        (0, 3, false)
    );
    let behind = page(&registry, 2).await;
    assert_eq!(
        (behind.changes.len(), behind.next, behind.gap),
        (0, 2, true)
    );
    // The version stays where the feed ended, and positions go on from it.
    assert_eq!(registry.version().await.unwrap(), Some(3));
    registry
        .upsert(reg("g", "d", "http://127.0.0.1:1"), T0)
        .await
        .unwrap();
    assert_eq!(registry.version().await.unwrap(), Some(4));
    assert_eq!(positions(&page(&registry, 3).await), vec![4]);

    // Compacting what is already gone forgets nothing and moves nothing back.
    assert_eq!(registry.compact_changes(2).await.unwrap(), 0);
    assert!(page(&registry, 2).await.gap);
    assert!(!page(&registry, 3).await.gap);

    // A partial compaction keeps the rest.
    registry
        .upsert(reg("g", "e", "http://127.0.0.1:1"), T0)
        .await
        .unwrap();
    assert_eq!(registry.compact_changes(4).await.unwrap(), 1);
    assert!(page(&registry, 3).await.gap);
    assert_eq!(positions(&page(&registry, 4).await), vec![5]);
    assert_eq!(registry.version().await.unwrap(), Some(5));
}

#[tokio::test]
async fn positions_keep_growing_after_compaction_across_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("feed.db");
    let registry = SqliteRegistry::open(&path).await.unwrap();
    registry
        .upsert(reg("g", "a", "http://127.0.0.1:1"), T0)
        .await
        .unwrap();
    registry
        .upsert(reg("g", "a", "http://127.0.0.1:2"), T0)
        .await
        .unwrap();
    assert_eq!(registry.compact_changes(2).await.unwrap(), 2);
    registry.close().await.unwrap();

    let reopened = SqliteRegistry::open(&path).await.unwrap();
    assert_eq!(reopened.version().await.unwrap(), Some(2));
    assert!(page(&reopened, 1).await.gap);
    reopened
        .upsert(reg("g", "b", "http://127.0.0.1:1"), T0)
        .await
        .unwrap();
    assert_eq!(positions(&page(&reopened, 2).await), vec![3]);
    reopened.close().await.unwrap();
}

#[tokio::test]
async fn a_put_whose_node_is_gone_reads_as_its_removal() {
    let registry = SqliteRegistry::open_in_memory().await.unwrap();
    let node = registry
        .upsert(reg("g", "a", "http://127.0.0.1:1"), T0)
        .await
        .unwrap();
    registry.renew(&node.key, TTL, T0).await.unwrap();
    assert_eq!(registry.remove(node.id).await.unwrap(), 1);
    let again = registry
        .upsert(reg("g", "a", "http://127.0.0.1:2"), T0)
        .await
        .unwrap();
    assert_ne!(again.id, node.id);

    let removed = ChangeKind::Removed {
        id: node.id,
        key: node.key.clone(),
    };
    let kinds: Vec<ChangeKind> = page(&registry, 0)
        .await
        .changes
        .into_iter()
        .map(|c| c.kind)
        .collect();
    // One entry per write, so pages keep their size.
    assert_eq!(
        kinds,
        vec![
            removed.clone(),
            removed.clone(),
            removed,
            ChangeKind::Put(again)
        ]
    );
}

#[tokio::test]
async fn two_registries_on_one_file_follow_one_feed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.db");
    let a = SqliteRegistry::open(&path).await.unwrap();
    let b = SqliteRegistry::open(&path).await.unwrap();
    let na = a
        .upsert(reg("g", "a", "http://127.0.0.1:1"), T0)
        .await
        .unwrap();
    let nb = b
        .upsert(reg("g", "b", "http://127.0.0.1:2"), T0)
        .await
        .unwrap();
    assert_eq!(a.version().await.unwrap(), Some(2));
    assert_eq!(b.version().await.unwrap(), Some(2));
    assert_eq!(
        page(&a, 0).await.changes,
        vec![
            Change {
                position: 1,
                kind: ChangeKind::Put(na)
            },
            Change {
                position: 2,
                kind: ChangeKind::Put(nb)
            },
        ]
    );

    // An instance announced through one is expired through the other, and
    // its node's removal reaches both.
    let ttl = Duration::from_secs(6);
    a.announce_instance("hub-1", "", ttl, T0).await.unwrap();
    a.upsert(reg("g", "x", "attached:hub-1"), T0).await.unwrap();
    let retired = b.expire_instances(T0 + ttl).await.unwrap();
    assert_eq!(retired.len(), 1);
    assert!(a.instances().await.unwrap().is_empty());
    let last = page(&a, 3).await;
    assert!(matches!(
        &last.changes[..],
        [Change { position: 4, kind: ChangeKind::Removed { key, .. } }] if key.to_string() == "g/x"
    ));
    a.close().await.unwrap();
    b.close().await.unwrap();
}

#[tokio::test]
async fn an_instance_takes_only_the_nodes_attached_to_exactly_it() {
    let registry = SqliteRegistry::open_in_memory().await.unwrap();
    let ttl = Duration::from_secs(6);
    for id in ["hub", "hub-1"] {
        registry.announce_instance(id, "", ttl, T0).await.unwrap();
    }
    registry
        .upsert(reg("g", "on-hub", "attached:hub"), T0)
        .await
        .unwrap();
    registry
        .upsert(reg("g", "on-hub-1", "attached:hub-1"), T0)
        .await
        .unwrap();
    registry
        .upsert(reg("g", "callback", "http://hub:80"), T0)
        .await
        .unwrap();
    assert_eq!(
        registry.retire_instance("hub").await.unwrap(),
        vec![NodeKey::named("g", "on-hub").unwrap()]
    );
    let ids: Vec<String> = registry
        .instances()
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.id)
        .collect();
    assert_eq!(ids, vec!["hub-1"]);
    // Retiring it again finds nothing and changes nothing.
    let version = registry.version().await.unwrap();
    assert!(registry.retire_instance("hub").await.unwrap().is_empty());
    assert_eq!(registry.version().await.unwrap(), version);
    assert_eq!(registry.list(None).await.unwrap().len(), 2);
}

#[tokio::test]
async fn an_invalid_instance_id_is_refused_before_anything_is_stored() {
    let registry = SqliteRegistry::open_in_memory().await.unwrap();
    let ttl = Duration::from_secs(6);
    for id in ["", "hub 1", "hub/1", &"h".repeat(65)] {
        let err = registry
            .announce_instance(id, "", ttl, T0)
            .await
            .unwrap_err();
        assert!(!err.is_temporary(), "{id:?}: {err}");
        let cause = std::error::Error::source(&err).expect("the SQLite error");
        assert!(cause.to_string().contains(&format!("{id:?}")), "{cause}");
        assert!(!registry
            .retire_instance(id)
            .await
            .unwrap_err()
            .is_temporary());
    }
    assert!(registry.instances().await.unwrap().is_empty());
}

#[tokio::test]
async fn an_expired_instance_renewed_in_time_stays() {
    let registry = SqliteRegistry::open_in_memory().await.unwrap();
    let ttl = Duration::from_secs(6);
    let first = registry
        .announce_instance("hub-1", "http://10.0.0.1:80", ttl, T0)
        .await
        .unwrap();
    let later = T0 + Duration::from_secs(5);
    let renewed = registry
        .announce_instance("hub-1", "http://10.0.0.1:80", ttl, later)
        .await
        .unwrap();
    assert_eq!(renewed.started, first.started);
    assert!(registry
        .expire_instances(T0 + ttl)
        .await
        .unwrap()
        .is_empty());
    // Announcing is not a change to the nodes: the version stays.
    assert_eq!(registry.version().await.unwrap(), Some(0));
    let gone = registry.expire_instances(later + ttl).await.unwrap();
    assert_eq!(gone.len(), 1);
}

#[tokio::test]
async fn a_change_the_store_could_not_have_written_is_a_store_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("edited.db");
    let registry = SqliteRegistry::open(&path).await.unwrap();
    edit(
        &path,
        "INSERT INTO changes (kind, node_id, group_name, node_name) \
         VALUES ('removed', 7, 'not a group', 'x')",
    );
    let err = registry.changes(0, 10).await.unwrap_err();
    let message = std::error::Error::source(&err).unwrap().to_string();
    assert!(
        message.contains("change 1") && message.contains("key"),
        "{message}"
    );
    assert!(!err.is_temporary(), "a bad row stays bad");
    // A follower past it reads on.
    registry
        .upsert(reg("g", "a", "http://127.0.0.1:1"), T0)
        .await
        .unwrap();
    assert_eq!(positions(&page(&registry, 1).await), vec![2]);
    registry.close().await.unwrap();
}

fn edit(path: &Path, sql: &str) {
    rusqlite::Connection::open(path)
        .unwrap()
        .execute_batch(sql)
        .unwrap();
}
