//! The store over real files: durability across close, refusals of files it
//! cannot use, and schema migrations (a version 1 file included).

use std::path::Path;
use std::time::Duration;

use mediator_core::formation::{Change, ChangeKind, RetiredInstance};
use mediator_core::{Endpoint, Meta, NodeKey, Registration, Registry, Timestamp};
use mediator_store_sqlite::{SqliteConfig, SqliteError, SqliteRegistry, SCHEMA_VERSION};

const T0: Timestamp = Timestamp::from_millis(1_700_000_000_000);

fn reg(group: &str, name: Option<&str>, url: &str, ttl_secs: u64) -> Registration {
    Registration::new(
        NodeKey::new(group, name).unwrap(),
        url.parse::<Endpoint>().unwrap(),
        Duration::from_secs(ttl_secs),
    )
}

fn raw(path: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(path).unwrap()
}

fn user_version(path: &Path) -> i32 {
    raw(path)
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .unwrap()
}

/// The error `open` gives for `path`, which must be one.
async fn open_err(config: SqliteConfig) -> SqliteError {
    match SqliteRegistry::with_config(config).await {
        Ok(registry) => panic!("opened {registry:?}"),
        Err(e) => e,
    }
}

fn assert_names(message: &str, path: &Path) {
    let shown = path.display().to_string();
    assert!(
        message.contains(&shown),
        "{message:?} does not name {shown}"
    );
}

#[tokio::test]
async fn reopening_after_close_shows_every_registration() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("registry.db");
    let registry = SqliteRegistry::open(&path).await.unwrap();

    let mut meta = Meta::new();
    meta.insert("version".into(), "1.2.3".into());
    meta.insert("note".into(), "zażółć \"x\"".into());
    registry
        .upsert(
            reg("users", Some("api"), "http://10.0.0.5:9000", 30).with_meta(meta),
            T0,
        )
        .await
        .unwrap();
    registry
        .upsert(reg("users", None, "https://users.example/base", 60), T0)
        .await
        .unwrap();
    registry
        .upsert(reg("cache", Some("c1"), "attached:hub-1", 90), T0)
        .await
        .unwrap();
    let doomed = registry
        .upsert(reg("cache", Some("c2"), "http://10.0.0.7:1", 90), T0)
        .await
        .unwrap();
    // An update (sets `updated`), a renewal and a removal, all to survive.
    let t1 = T0 + Duration::from_secs(10);
    registry
        .upsert(reg("users", Some("api"), "http://10.0.0.6:9000", 30), t1)
        .await
        .unwrap();
    registry
        .renew(
            &NodeKey::named("cache", "c1").unwrap(),
            Duration::from_secs(300),
            t1,
        )
        .await
        .unwrap();
    assert_eq!(registry.remove(doomed.id).await.unwrap(), 1);
    let before = registry.list(None).await.unwrap();
    assert_eq!(before.len(), 3);
    assert_eq!(before[0].updated, Some(t1));
    registry.close().await.unwrap();

    // A clean close leaves everything in the main file.
    let wal = dir.path().join("registry.db-wal");
    assert!(
        !wal.exists() || std::fs::metadata(&wal).unwrap().len() == 0,
        "WAL left with content after close"
    );

    let reopened = SqliteRegistry::open(&path).await.unwrap();
    assert_eq!(reopened.list(None).await.unwrap(), before);
    for node in &before {
        assert_eq!(reopened.get(&node.key).await.unwrap().as_ref(), Some(node));
        assert_eq!(
            reopened.get_by_id(node.id).await.unwrap().as_ref(),
            Some(node)
        );
    }
    // Ids are never reused, not even the removed one's.
    let fresh = reopened
        .upsert(reg("cache", Some("c3"), "http://10.0.0.8:1", 90), t1)
        .await
        .unwrap();
    assert!(fresh.id > doomed.id, "{} reused an id", fresh.id);
    reopened.close().await.unwrap();
}

#[tokio::test]
async fn dropping_without_close_still_keeps_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dropped.db");
    let registry = SqliteRegistry::open(&path).await.unwrap();
    let node = registry
        .upsert(reg("g", Some("a"), "http://127.0.0.1:1", 30), T0)
        .await
        .unwrap();
    drop(registry);
    let reopened = SqliteRegistry::open(&path).await.unwrap();
    assert_eq!(reopened.get(&node.key).await.unwrap(), Some(node));
}

#[tokio::test]
async fn a_garbage_file_is_refused_naming_its_path() {
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes) in [
        (
            "large.db",
            (0..8192u32)
                .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
                .collect::<Vec<u8>>(),
        ),
        ("small.db", b"this is not a database\n".to_vec()),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, &bytes).unwrap();
        let err = open_err(SqliteConfig::file(&path)).await;
        assert!(
            matches!(err, SqliteError::NotADatabase { .. }),
            "{name}: {err:?}"
        );
        let message = err.to_string();
        assert_names(&message, &path);
        assert!(
            message.contains("not a usable SQLite database"),
            "{message}"
        );
        // At the trait boundary it is a permanent store error that keeps
        // the SQLite error as its cause.
        let store: mediator_core::StoreError = err.into();
        assert!(!store.is_temporary());
        let cause = std::error::Error::source(&store).expect("the SQLite error");
        assert_eq!(cause.to_string(), message);
        let core: mediator_core::Error = store.into();
        assert_eq!((core.status(), core.kind()), (503, "store"));
        // The file was not touched.
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
    }
}

#[tokio::test]
async fn a_database_with_a_smashed_header_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("smashed.db");
    let registry = SqliteRegistry::open(&path).await.unwrap();
    registry
        .upsert(reg("g", Some("a"), "http://127.0.0.1:1", 30), T0)
        .await
        .unwrap();
    registry.close().await.unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[..16].copy_from_slice(b"garbage garbage!");
    std::fs::write(&path, bytes).unwrap();
    let err = open_err(SqliteConfig::file(&path)).await;
    assert!(matches!(err, SqliteError::NotADatabase { .. }), "{err:?}");
    assert_names(&err.to_string(), &path);
}

#[tokio::test]
async fn a_directory_is_refused_naming_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let err = open_err(SqliteConfig::file(dir.path())).await;
    assert!(matches!(err, SqliteError::InvalidPath { .. }), "{err:?}");
    let message = err.to_string();
    assert_names(&message, dir.path());
    assert!(message.ends_with("it is a directory"), "{message}");
}

#[tokio::test]
async fn a_path_in_a_missing_directory_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no").join("such").join("registry.db");
    let err = open_err(SqliteConfig::file(&path)).await;
    assert!(matches!(err, SqliteError::InvalidPath { .. }), "{err:?}");
    let message = err.to_string();
    assert_names(&message, &path);
    assert!(
        message.contains("directory it would be in does not exist"),
        "{message}"
    );
    assert!(!dir.path().join("no").exists());
}

#[tokio::test]
async fn a_missing_file_is_refused_when_creation_is_off() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("typo.db");
    let err = open_err(SqliteConfig::file(&path).with_create_if_missing(false)).await;
    assert!(matches!(err, SqliteError::Open { .. }), "{err:?}");
    assert_names(&err.to_string(), &path);
    assert!(!path.exists());

    // An existing one opens.
    SqliteRegistry::open(&path)
        .await
        .unwrap()
        .close()
        .await
        .unwrap();
    SqliteRegistry::with_config(SqliteConfig::file(&path).with_create_if_missing(false))
        .await
        .unwrap()
        .close()
        .await
        .unwrap();
}

#[tokio::test]
async fn a_newer_schema_version_is_refused_naming_both_versions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("newer.db");
    SqliteRegistry::open(&path)
        .await
        .unwrap()
        .close()
        .await
        .unwrap();
    let newer = SCHEMA_VERSION + 41;
    raw(&path)
        .pragma_update(None, "user_version", newer)
        .unwrap();

    let err = open_err(SqliteConfig::file(&path)).await;
    match &err {
        SqliteError::UnknownSchemaVersion { found, known, .. } => {
            assert_eq!((*found, *known), (newer, SCHEMA_VERSION));
        }
        other => panic!("{other:?}"),
    }
    let message = err.to_string();
    assert_names(&message, &path);
    assert!(
        message.contains(&format!("schema version {newer}"))
            && message.contains(&format!("up to {SCHEMA_VERSION}")),
        "{message}"
    );
    // Refused, not downgraded.
    assert_eq!(user_version(&path), newer);
}

#[tokio::test]
async fn migrations_are_idempotent_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("migrated.db");
    let registry = SqliteRegistry::open(&path).await.unwrap();
    let node = registry
        .upsert(reg("g", None, "http://127.0.0.1:1", 30), T0)
        .await
        .unwrap();
    registry.close().await.unwrap();
    let schema = |path: &Path| -> Vec<(String, String)> {
        let conn = raw(path);
        let mut stmt = conn
            .prepare("SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY name")
            .unwrap();
        let rows = stmt
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .unwrap();
        rows.map(Result::unwrap).collect()
    };
    let first = schema(&path);
    assert_eq!(user_version(&path), SCHEMA_VERSION);

    for _ in 0..3 {
        let registry = SqliteRegistry::open(&path).await.unwrap();
        assert_eq!(registry.list(None).await.unwrap(), vec![node.clone()]);
        registry.close().await.unwrap();
        assert_eq!(user_version(&path), SCHEMA_VERSION);
        assert_eq!(schema(&path), first);
    }
}

/// The first schema, as a build of version 1 wrote it.
const SCHEMA_V1: &str = include_str!("../src/migrations/0001_create_nodes.sql");

#[tokio::test]
async fn a_version_1_database_keeps_its_nodes_and_gains_the_feed_and_instances() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v1.db");
    // A file as version 1 left it: three nodes, one of them attached to
    // instance hub-1, and a fourth removed (so its id is taken).
    {
        let conn = raw(&path);
        conn.execute_batch(SCHEMA_V1).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        conn.execute_batch(
            "INSERT INTO nodes (group_name, node_name, endpoint, meta, created_ms, updated_ms, \
             lease_until_ms) VALUES \
             ('users', 'api', 'http://10.0.0.5:9000', '{\"zone\":\"eu\"}', 1000, 2000, 90000), \
             ('users', '', 'https://users.example/base', '{}', 1000, NULL, 90000), \
             ('cache', 'c1', 'attached:hub-1', '{}', 1000, NULL, 90000), \
             ('cache', 'c2', 'http://10.0.0.7:1', '{}', 1000, NULL, 90000); \
             DELETE FROM nodes WHERE node_name = 'c2';",
        )
        .unwrap();
    }
    assert_eq!(user_version(&path), 1);

    let registry = SqliteRegistry::open(&path).await.unwrap();
    assert_eq!(user_version(&path), SCHEMA_VERSION);
    let nodes = registry.list(None).await.unwrap();
    let shown: Vec<(u64, String, String, Option<i64>)> = nodes
        .iter()
        .map(|n| {
            (
                n.id.0,
                n.key.to_string(),
                n.endpoint.to_string(),
                n.updated.map(Timestamp::as_millis),
            )
        })
        .collect();
    assert_eq!(
        shown,
        vec![
            (
                1,
                "users/api".into(),
                "http://10.0.0.5:9000".into(),
                Some(2000)
            ),
            (
                2,
                "users/".into(),
                "https://users.example/base".into(),
                None
            ),
            (3, "cache/c1".into(), "attached:hub-1".into(), None),
        ]
    );
    assert_eq!(nodes[0].meta.get("zone").map(String::as_str), Some("eu"));

    // The nodes it held are the feed's first changes, so a follower reading
    // from 0 reaches them; nothing is missed.
    let page = registry.changes(0, 10).await.unwrap().unwrap();
    let puts: Vec<Change> = nodes
        .iter()
        .zip(1..)
        .map(|(node, position)| Change {
            position,
            kind: ChangeKind::Put(node.clone()),
        })
        .collect();
    assert_eq!((&page.changes, page.next, page.gap), (&puts, 3, false));
    assert_eq!(registry.version().await.unwrap(), Some(3));
    assert!(registry.instances().await.unwrap().is_empty());

    // New writes enter the feed, and ids stay unique across the migration.
    let fresh = registry
        .upsert(reg("cache", Some("c3"), "http://10.0.0.8:1", 90), T0)
        .await
        .unwrap();
    assert_eq!(
        fresh.id.0, 5,
        "the id of the node removed under v1 was reused"
    );
    let page = registry.changes(3, 10).await.unwrap().unwrap();
    assert_eq!(
        page.changes,
        vec![Change {
            position: 4,
            kind: ChangeKind::Put(fresh.clone())
        }]
    );
    assert_eq!(registry.version().await.unwrap(), Some(4));

    // A node stored under v1 goes with the instance it is attached to.
    let ttl = Duration::from_secs(6);
    registry
        .announce_instance("hub-1", "http://10.0.0.1:8080", ttl, T0)
        .await
        .unwrap();
    let c1 = NodeKey::named("cache", "c1").unwrap();
    assert_eq!(
        registry.expire_instances(T0 + ttl).await.unwrap(),
        vec![RetiredInstance {
            id: "hub-1".into(),
            detached: vec![c1.clone()],
        }]
    );
    let page = registry.changes(4, 10).await.unwrap().unwrap();
    assert_eq!(
        page.changes,
        vec![Change {
            position: 5,
            kind: ChangeKind::Removed {
                id: nodes[2].id,
                key: c1,
            }
        }]
    );
    registry.close().await.unwrap();

    // The feed and the nodes outlive a reopen.
    let reopened = SqliteRegistry::open(&path).await.unwrap();
    assert_eq!(reopened.version().await.unwrap(), Some(5));
    let keys: Vec<String> = reopened
        .list(None)
        .await
        .unwrap()
        .iter()
        .map(|n| n.key.to_string())
        .collect();
    assert_eq!(keys, vec!["users/api", "users/", "cache/c3"]);
    reopened.close().await.unwrap();
}

#[tokio::test]
async fn the_table_has_the_shared_layout() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("layout.db");
    let registry = SqliteRegistry::open(&path).await.unwrap();
    registry
        .upsert(reg("g", None, "http://127.0.0.1:1", 30), T0)
        .await
        .unwrap();
    registry.close().await.unwrap();

    let conn = raw(&path);
    let mut stmt = conn.prepare("PRAGMA table_info(nodes)").unwrap();
    let columns: Vec<(String, String, bool)> = stmt
        .query_map([], |row| Ok((row.get(1)?, row.get(2)?, row.get(3)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let expected = [
        ("id", "INTEGER", false),
        ("group_name", "TEXT", true),
        ("node_name", "TEXT", true),
        ("endpoint", "TEXT", true),
        ("meta", "TEXT", true),
        ("created_ms", "INTEGER", true),
        ("updated_ms", "INTEGER", false),
        ("lease_until_ms", "INTEGER", true),
    ];
    let expected: Vec<(String, String, bool)> = expected
        .iter()
        .map(|(n, t, nn)| ((*n).to_owned(), (*t).to_owned(), *nn))
        .collect();
    assert_eq!(columns, expected);

    // The unnamed node is stored under '' and meta as a JSON object.
    let (name, meta, updated): (String, String, Option<i64>) = conn
        .query_row(
            "SELECT node_name, meta, updated_ms FROM nodes WHERE group_name = 'g'",
            [],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
        )
        .unwrap();
    assert_eq!((name.as_str(), meta.as_str(), updated), ("", "{}", None));

    // Uniqueness holds in the database itself, not only in the store's code.
    let dup = conn.execute(
        "INSERT INTO nodes (group_name, node_name, endpoint, meta, created_ms, lease_until_ms) \
         VALUES ('g', '', 'http://x', '{}', 0, 0)",
        [],
    );
    assert!(dup.is_err());
    let indexed: i64 = conn
        .query_row(
            "SELECT count(*) FROM pragma_index_list('nodes') l, pragma_index_info(l.name) i \
             WHERE i.name = 'lease_until_ms'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(indexed, 1);
}

#[tokio::test]
async fn a_row_the_store_could_not_have_written_is_a_store_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("edited.db");
    let registry = SqliteRegistry::open(&path).await.unwrap();
    let id: i64 = raw(&path)
        .query_row(
            "INSERT INTO nodes (group_name, node_name, endpoint, meta, created_ms, lease_until_ms) \
             VALUES ('g', 'a', 'not an endpoint', '{}', 0, 0) RETURNING id",
            [],
            |row| row.get(0),
        )
        .unwrap();
    let err = registry
        .get(&NodeKey::named("g", "a").unwrap())
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains(&format!("row {id}")) && message.contains("endpoint"),
        "{message}"
    );
    assert!(!err.is_temporary(), "a bad row stays bad");
    // The store keeps answering.
    registry.ping().await.unwrap();
    assert_eq!(
        registry
            .remove_key(&NodeKey::named("g", "a").unwrap())
            .await
            .unwrap(),
        1
    );
}

#[tokio::test]
async fn two_registries_on_one_file_see_each_others_writes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.db");
    let a = SqliteRegistry::open(&path).await.unwrap();
    let b = SqliteRegistry::open(&path).await.unwrap();
    let node = a
        .upsert(reg("g", Some("a"), "http://127.0.0.1:1", 30), T0)
        .await
        .unwrap();
    assert_eq!(b.get(&node.key).await.unwrap(), Some(node.clone()));
    let again = b
        .upsert(reg("g", Some("a"), "http://127.0.0.1:2", 30), T0)
        .await
        .unwrap();
    assert_eq!(again.id, node.id);
    a.close().await.unwrap();
    b.close().await.unwrap();
}

#[tokio::test]
async fn a_zero_queue_capacity_is_refused() {
    let err = open_err(SqliteConfig::in_memory().with_queue_capacity(0)).await;
    assert!(matches!(err, SqliteError::Config(_)), "{err:?}");
}

#[tokio::test]
async fn in_memory_registries_are_separate() {
    let a = SqliteRegistry::open_in_memory().await.unwrap();
    let b = SqliteRegistry::open_in_memory().await.unwrap();
    a.upsert(reg("g", Some("a"), "http://127.0.0.1:1", 30), T0)
        .await
        .unwrap();
    assert_eq!(b.list(None).await.unwrap(), vec![]);
    a.close().await.unwrap();
    b.close().await.unwrap();
}

#[tokio::test]
async fn the_wal_stays_bounded_under_sustained_writes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("busy.db");
    let registry = SqliteRegistry::open(&path).await.unwrap();
    // About four WAL pages per upsert: 15,000 of them unchecked would leave
    // a WAL near 240 MB. Checkpoints start it over past 16 MiB, overshooting
    // by what is written while they run, which on a loaded machine running
    // a debug build can be a few times that.
    for i in 0..15_000 {
        let name = format!("n{i}");
        registry
            .upsert(reg("g", Some(&name), "http://127.0.0.1:1", 30), T0)
            .await
            .unwrap();
    }
    let wal = std::fs::metadata(dir.path().join("busy.db-wal"))
        .unwrap()
        .len();
    assert!(wal < 120 << 20, "WAL grew to {wal} bytes");
    registry.close().await.unwrap();
}
