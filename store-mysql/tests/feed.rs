//! The feed of changes under concurrency: several processes writing to one
//! database at once (each with a pool of its own), a follower reading the
//! feed meanwhile, and evictions and instance expiries racing each other.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mediator_core::formation::{ChangeKind, ChangePage};
use mediator_core::{Endpoint, Node, NodeId, NodeKey, Registration, Registry, Timestamp};
use mediator_store_mysql::MysqlRegistry;
use mysql_async::prelude::Queryable;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use support::TestDb;
use tokio::task::JoinSet;

const T0: Timestamp = Timestamp::from_millis(1_700_000_000_000);
/// Processes writing at once, each with its own pool.
const WRITERS: usize = 4;
/// Tasks writing at once through each process's pool.
const TASKS_PER_WRITER: usize = 4;
/// Calls each task makes.
const CALLS_PER_TASK: usize = 60;
/// Keys all writers share, so that their writes collide.
const KEYS: usize = 24;
/// The follower reads pages this small, so that it reads many.
const PAGE: usize = 7;

async fn open(db: &TestDb) -> MysqlRegistry {
    MysqlRegistry::connect(&db.url())
        .await
        .unwrap_or_else(|e| panic!("opening {}: {e}", db.name))
}

fn key(i: usize) -> NodeKey {
    if i % 8 == 0 {
        NodeKey::new(format!("g{}", i % 3), None::<String>).expect("valid key")
    } else {
        NodeKey::named(format!("g{}", i % 3), format!("n{i}")).expect("valid key")
    }
}

fn hub(writer: usize) -> String {
    format!("hub-{writer}")
}

/// Applies a page of the feed to a follower's copy, checking that its
/// positions follow `position` without a hole; returns the new position.
fn apply(copy: &mut BTreeMap<NodeId, Node>, position: u64, page: &ChangePage) -> u64 {
    assert!(!page.gap, "a gap after {position}");
    let mut last = position;
    for change in &page.changes {
        assert_eq!(
            change.position,
            last + 1,
            "the position after {last}: a change skipped or out of order"
        );
        last = change.position;
        match &change.kind {
            ChangeKind::Put(node) => {
                copy.retain(|id, held| held.key != node.key || *id == node.id);
                copy.insert(node.id, node.clone());
            }
            ChangeKind::Removed { id, .. } => {
                copy.remove(id);
            }
        }
    }
    assert_eq!(page.next, last, "the page's next position");
    last
}

/// One writing task: random calls of every kind that writes, on keys and
/// instances shared with the other writers, at a clock shared with them.
async fn write(registry: Arc<MysqlRegistry>, writer: usize, seed: u64, clock: Arc<AtomicI64>) {
    let mut rng = StdRng::seed_from_u64(seed);
    for _ in 0..CALLS_PER_TASK {
        // Every call moves the shared clock on by 50 ms, so leases of a
        // few seconds run out while the writers run.
        let now = Timestamp::from_millis(clock.fetch_add(50, Ordering::Relaxed));
        let k = key(rng.gen_range(0..KEYS));
        let ttl = Duration::from_millis(rng.gen_range(500..4_000));
        match rng.gen_range(0..100) {
            0..=34 => {
                let endpoint = if rng.gen_bool(0.3) {
                    Endpoint::attached(hub(rng.gen_range(0..WRITERS))).expect("valid hub")
                } else {
                    Endpoint::http(format!("http://127.0.0.1:{}", rng.gen_range(1000..2000)))
                        .expect("valid url")
                };
                registry
                    .upsert(Registration::new(k, endpoint, ttl), now)
                    .await
                    .expect("upsert");
            }
            35..=59 => {
                registry.renew(&k, ttl, now).await.expect("renew");
            }
            60..=69 => {
                registry.remove_key(&k).await.expect("remove_key");
            }
            70..=74 => {
                if let Some(node) = registry.get(&k).await.expect("get") {
                    registry.remove(node.id).await.expect("remove");
                }
            }
            75..=84 => {
                registry.evict_expired(now).await.expect("evict_expired");
            }
            85..=92 => {
                registry
                    .announce_instance(&hub(writer), "", Duration::from_millis(1_500), now)
                    .await
                    .expect("announce_instance");
            }
            93..=97 => {
                registry
                    .expire_instances(now)
                    .await
                    .expect("expire_instances");
            }
            _ => {
                registry
                    .retire_instance(&hub(rng.gen_range(0..WRITERS)))
                    .await
                    .expect("retire_instance");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_of_concurrent_writers_ends_with_the_stores_nodes() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let clock = Arc::new(AtomicI64::new(T0.as_millis()));
    let mut writers = JoinSet::new();
    let started = Instant::now();
    for writer in 0..WRITERS {
        // A registry of its own: a pool of its own, as another process has.
        let registry = Arc::new(open(&db).await);
        for task in 0..TASKS_PER_WRITER {
            let seed = u64::try_from(writer * TASKS_PER_WRITER + task).expect("small");
            writers.spawn(write(registry.clone(), writer, seed, clock.clone()));
        }
    }

    // The follower reads from its last position while they write, and a
    // compactor forgets what it has read.
    let follower = open(&db).await;
    let compactor = open(&db).await;
    let done = Arc::new(AtomicBool::new(false));
    let read = Arc::new(AtomicU64::new(0));
    let compacting = {
        let (done, read) = (done.clone(), read.clone());
        tokio::spawn(async move {
            let mut compacted = 0;
            while !done.load(Ordering::Relaxed) {
                let through = read.load(Ordering::Relaxed).saturating_sub(20);
                compacted += compactor.compact_changes(through).await.expect("compact");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            compacted
        })
    };
    let following = {
        let done = done.clone();
        tokio::spawn(async move {
            let mut copy = BTreeMap::new();
            let mut position = 0;
            let mut pages = 0;
            loop {
                // Read after the flag, so that a last empty page after the
                // writers finished means the feed is read to its end.
                let finished = done.load(Ordering::Acquire);
                let page = follower
                    .changes(position, PAGE)
                    .await
                    .expect("changes")
                    .expect("a feed");
                pages += 1;
                position = apply(&mut copy, position, &page);
                read.store(position, Ordering::Relaxed);
                if page.changes.is_empty() {
                    if finished {
                        return (copy, position, pages, follower);
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
        })
    };

    let mut calls = 0;
    while let Some(joined) = writers.join_next().await {
        joined.expect("a writer panicked");
        calls += CALLS_PER_TASK;
    }
    let took = started.elapsed();
    done.store(true, Ordering::Release);
    let (copy, position, pages, follower) = following.await.expect("the follower panicked");
    let compacted = compacting.await.expect("the compactor panicked");

    let stored: BTreeMap<NodeId, Node> = follower
        .list(None)
        .await
        .expect("list")
        .into_iter()
        .map(|node| (node.id, node))
        .collect();
    assert_eq!(copy, stored, "the follower's copy against the store");
    assert_eq!(
        follower.version().await.expect("version"),
        Some(position),
        "the version against the last position read"
    );
    assert!(
        position > 500,
        "only {position} changes: the writers hardly wrote"
    );
    eprintln!(
        "{calls} calls by {} tasks in {took:?}; {position} changes read in {pages} pages; \
         {compacted} compacted",
        WRITERS * TASKS_PER_WRITER
    );
}

/// Registers `count` nodes under `group` whose leases end at `T0 + 1 s`,
/// attached to `instance` when given.
async fn register(
    registry: &MysqlRegistry,
    group: &str,
    count: usize,
    instance: Option<&str>,
) -> BTreeSet<NodeKey> {
    let mut keys = BTreeSet::new();
    for i in 0..count {
        let key = NodeKey::named(group, format!("n{i}")).expect("valid key");
        let endpoint = match instance {
            Some(instance) => Endpoint::attached(instance).expect("valid instance"),
            None => Endpoint::http("http://127.0.0.1:9000").expect("valid url"),
        };
        registry
            .upsert(
                Registration::new(key.clone(), endpoint, Duration::from_secs(1)),
                T0,
            )
            .await
            .expect("upsert");
        keys.insert(key);
    }
    keys
}

/// The removals in the feed after `after`, each key as often as it is there.
async fn removals_after(registry: &MysqlRegistry, after: u64) -> Vec<NodeKey> {
    let page = registry
        .changes(after, 100_000)
        .await
        .expect("changes")
        .expect("a feed");
    page.changes
        .into_iter()
        .map(|change| match change.kind {
            ChangeKind::Removed { key, .. } => key,
            ChangeKind::Put(node) => panic!("a put of {} among the removals", node.key),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn evictions_racing_in_two_processes_each_record_what_they_deleted() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let (a, b) = (Arc::new(open(&db).await), Arc::new(open(&db).await));
    let keys = register(&a, "race", 200, None).await;
    let start = a.version().await.expect("version").expect("a version");
    let due = T0 + Duration::from_secs(1);
    let (from_a, from_b) = tokio::join!(
        {
            let a = a.clone();
            tokio::spawn(async move { a.evict_expired(due).await.expect("evict on a") })
        },
        {
            let b = b.clone();
            tokio::spawn(async move { b.evict_expired(due).await.expect("evict on b") })
        },
    );
    let (from_a, from_b) = (from_a.expect("task a"), from_b.expect("task b"));
    let (set_a, set_b): (BTreeSet<_>, BTreeSet<_>) = (
        from_a.iter().cloned().collect(),
        from_b.iter().cloned().collect(),
    );
    assert!(set_a.is_disjoint(&set_b), "a node evicted by both");
    assert_eq!(from_a.len() + from_b.len(), keys.len());
    assert_eq!(set_a.union(&set_b).cloned().collect::<BTreeSet<_>>(), keys);
    let mut removed = removals_after(&a, start).await;
    removed.sort();
    assert_eq!(
        removed,
        keys.iter().cloned().collect::<Vec<_>>(),
        "one removal in the feed per node evicted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn instance_expiries_racing_in_two_processes_report_each_instance_once() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let (a, b) = (Arc::new(open(&db).await), Arc::new(open(&db).await));
    let ttl = Duration::from_secs(6);
    let mut attached = BTreeSet::new();
    for i in 0..3 {
        let instance = format!("hub-{i}");
        a.announce_instance(&instance, "", ttl, T0)
            .await
            .expect("announce");
        attached.extend(register(&a, &format!("g{i}"), 40, Some(&instance)).await);
    }
    // One instance renews in time and keeps its nodes.
    a.announce_instance("hub-live", "", ttl, T0 + ttl)
        .await
        .expect("announce");
    let kept = register(&a, "live", 10, Some("hub-live")).await;
    let start = a.version().await.expect("version").expect("a version");
    let due = T0 + ttl;
    let (from_a, from_b) = tokio::join!(
        {
            let a = a.clone();
            tokio::spawn(async move { a.expire_instances(due).await.expect("expire on a") })
        },
        {
            let b = b.clone();
            tokio::spawn(async move { b.expire_instances(due).await.expect("expire on b") })
        },
    );
    let retired: Vec<_> = from_a
        .expect("task a")
        .into_iter()
        .chain(from_b.expect("task b"))
        .collect();
    let mut ids: Vec<&str> = retired.iter().map(|r| r.id.as_str()).collect();
    ids.sort_unstable();
    assert_eq!(ids, vec!["hub-0", "hub-1", "hub-2"], "each instance once");
    let detached: Vec<NodeKey> = retired.iter().flat_map(|r| r.detached.clone()).collect();
    assert_eq!(detached.len(), attached.len(), "each node detached once");
    assert_eq!(detached.into_iter().collect::<BTreeSet<_>>(), attached);
    let mut removed = removals_after(&a, start).await;
    removed.sort();
    assert_eq!(
        removed,
        attached.iter().cloned().collect::<Vec<_>>(),
        "one removal in the feed per node detached"
    );
    let left: BTreeSet<NodeKey> = a
        .list(None)
        .await
        .expect("list")
        .into_iter()
        .map(|n| n.key)
        .collect();
    assert_eq!(left, kept, "the nodes of the live instance stay");
    let instances: Vec<String> = a
        .instances()
        .await
        .expect("instances")
        .into_iter()
        .map(|i| i.id)
        .collect();
    assert_eq!(instances, vec!["hub-live".to_owned()]);
}

#[tokio::test]
async fn an_invalid_instance_id_is_refused_before_the_database() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let registry = open(&db).await;
    for id in ["", "hub 1", "hub/1", &"x".repeat(65)] {
        let error = registry
            .announce_instance(id, "", Duration::from_secs(6), T0)
            .await
            .expect_err("an invalid id");
        assert!(!error.is_temporary(), "{error:?}");
        assert!(
            error
                .to_string()
                .contains(&format!("instance id {id:?} refused: invalid instance")),
            "{error}"
        );
        assert!(std::error::Error::source(&error).is_some());
    }
    assert_eq!(registry.instances().await.expect("instances"), vec![]);
}

#[tokio::test]
async fn compaction_stops_at_the_head_and_pages_of_none_still_report_gaps() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let registry = open(&db).await;
    register(&registry, "g", 3, None).await;
    // Past the head: only what exists goes, and the mark stays at the head
    // so that positions to come are read.
    assert_eq!(registry.compact_changes(1_000).await.expect("compact"), 3);
    assert_eq!(registry.compact_changes(1_000).await.expect("compact"), 0);
    let page = registry
        .changes(0, 0)
        .await
        .expect("changes")
        .expect("a feed");
    assert!(page.gap, "a page of none behind the compaction");
    assert_eq!(page.next, 0);
    let key = NodeKey::named("g", "late").expect("valid key");
    registry
        .upsert(
            Registration::new(
                key.clone(),
                Endpoint::http("http://127.0.0.1:1").expect("valid url"),
                Duration::from_secs(30),
            ),
            T0,
        )
        .await
        .expect("upsert");
    let page = registry
        .changes(3, 10)
        .await
        .expect("changes")
        .expect("a feed");
    assert!(!page.gap);
    let positions: Vec<u64> = page.changes.iter().map(|c| c.position).collect();
    assert_eq!(positions, vec![4]);
    assert_eq!(registry.version().await.expect("version"), Some(4));
    // A put whose node has gone since is given as its removal.
    registry.remove_key(&key).await.expect("remove");
    let page = registry
        .changes(3, 10)
        .await
        .expect("changes")
        .expect("a feed");
    let kinds: Vec<String> = page
        .changes
        .iter()
        .map(|c| match &c.kind {
            ChangeKind::Put(node) => format!("{} put {}", c.position, node.key),
            ChangeKind::Removed { key, .. } => format!("{} removed {key}", c.position),
        })
        .collect();
    assert_eq!(kinds, vec!["4 removed g/late", "5 removed g/late"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_position_not_yet_visible_stops_the_page_and_one_gone_for_good_is_a_gap() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let registry = Arc::new(open(&db).await);
    register(&registry, "g", 2, None).await;
    // What a read that misses a commit looks like: position 3 written but
    // not committed yet, 4 committed.
    let mut writer = mysql_async::Conn::new(
        mysql_async::OptsBuilder::from_opts(
            mysql_async::Opts::from_url(&db.url()).expect("a valid url"),
        )
        .prefer_socket(false),
    )
    .await
    .expect("a writer's connection");
    writer
        .query_drop(
            "START TRANSACTION; \
             INSERT INTO changes VALUES (3, 'removed', 1, 'g', 'n0')",
        )
        .await
        .expect("position 3, uncommitted");
    db.exec("INSERT INTO changes VALUES (4, 'removed', 2, 'g', 'n1')")
        .await;
    let reading = {
        let registry = registry.clone();
        tokio::spawn(async move { registry.changes(2, 10).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    writer.query_drop("COMMIT").await.expect("commit 3");
    let page = reading
        .await
        .expect("the reading task")
        .expect("changes")
        .expect("a feed");
    assert_eq!(
        (page.changes.len(), page.next, page.gap),
        (0, 2, false),
        "a page stops before a position its read does not show"
    );
    let page = registry
        .changes(2, 10)
        .await
        .expect("changes")
        .expect("a feed");
    let positions: Vec<u64> = page.changes.iter().map(|c| c.position).collect();
    assert_eq!(positions, vec![3, 4], "read once it is visible");

    // A position gone for good, not by compaction: the follower reloads.
    db.exec("DELETE FROM changes WHERE position = 3").await;
    let page = registry
        .changes(2, 10)
        .await
        .expect("changes")
        .expect("a feed");
    assert!(page.gap && page.changes.is_empty(), "{page:?}");
    let page = registry
        .changes(3, 10)
        .await
        .expect("changes")
        .expect("a feed");
    assert!(!page.gap);
    assert_eq!(
        page.changes.iter().map(|c| c.position).collect::<Vec<_>>(),
        vec![4]
    );
    writer.disconnect().await.expect("disconnect");
}

#[tokio::test]
async fn a_lost_feed_row_fails_writes_whole_and_says_so() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let registry = open(&db).await;
    register(&registry, "g", 1, None).await;
    db.exec("DELETE FROM feed").await;
    let key = NodeKey::named("g", "late").expect("valid key");
    let error = registry
        .upsert(
            Registration::new(
                key.clone(),
                Endpoint::http("http://127.0.0.1:1").expect("valid url"),
                Duration::from_secs(30),
            ),
            T0,
        )
        .await
        .expect_err("a write with nowhere to record it");
    assert!(!error.is_temporary(), "{error:?}");
    assert!(
        error
            .to_string()
            .contains("table feed has lost its one row"),
        "{error}"
    );
    assert_eq!(registry.get(&key).await.expect("get"), None, "rolled back");
    for error in [
        registry.version().await.expect_err("version").to_string(),
        registry
            .changes(0, 10)
            .await
            .expect_err("changes")
            .to_string(),
    ] {
        assert!(error.contains("table feed has lost its one row"), "{error}");
    }
}

#[tokio::test]
async fn an_eviction_of_thousands_records_each_at_its_own_position() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let registry = open(&db).await;
    // Written straight into the table (so not in the feed), all expired.
    let rows: Vec<String> = (0..1_234)
        .map(|i| format!("('bulk', 'n{i}', 'http://127.0.0.1:1', '{{}}', 0, 1000)"))
        .collect();
    db.exec(&format!(
        "INSERT INTO nodes (group_name, node_name, endpoint, meta, created_ms, lease_until_ms) \
         VALUES {}",
        rows.join(", ")
    ))
    .await;
    let gone = registry
        .evict_expired(Timestamp::from_millis(1_000))
        .await
        .expect("evict");
    assert_eq!(gone.len(), 1_234);
    assert_eq!(registry.version().await.expect("version"), Some(1_234));
    let page = registry
        .changes(0, 5_000)
        .await
        .expect("changes")
        .expect("a feed");
    let positions: Vec<u64> = page.changes.iter().map(|c| c.position).collect();
    assert_eq!(positions, (1..=1_234).collect::<Vec<u64>>());
    let removed: BTreeSet<NodeKey> = page
        .changes
        .into_iter()
        .map(|change| match change.kind {
            ChangeKind::Removed { key, .. } => key,
            ChangeKind::Put(node) => panic!("a put of {}", node.key),
        })
        .collect();
    assert_eq!(removed, gone.into_iter().collect::<BTreeSet<_>>());
}
