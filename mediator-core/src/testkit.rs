//! The registry conformance suite: one call checks a [`Registry`] against the
//! whole contract.
//!
//! Every store in this workspace runs it, and so can yours:
//!
//! ```
//! use mediator_core::{testkit, MemoryRegistry};
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! testkit::conformance(|| async { MemoryRegistry::new() }).await;
//! # });
//! ```
//!
//! `fresh` must return an empty registry each time it is called: every case
//! runs on its own. The suite drives time through arguments, so it never
//! sleeps. It panics at the end, listing every case that failed.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::formation::{ChangeKind, ChangePage, Instance, RetiredInstance};
use crate::model::{Endpoint, Meta, Node, NodeId, NodeKey, Registration};
use crate::registry::Registry;
use crate::time::Timestamp;
use crate::Error;

type CaseResult = Result<(), String>;
type Case<R> = fn(Arc<R>) -> Pin<Box<dyn Future<Output = CaseResult> + Send>>;

macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

macro_rules! ensure_eq {
    ($left:expr, $right:expr, $what:expr) => {{
        let (l, r) = (&$left, &$right);
        if l != r {
            return Err(format!("{}: expected {:?}, got {:?}", $what, r, l));
        }
    }};
}

/// Fails with the store's error message, named by the step that failed.
fn step<T, E: std::fmt::Display>(what: &str, result: Result<T, E>) -> Result<T, String> {
    result.map_err(|e| format!("{what}: {e}"))
}

const T0: Timestamp = Timestamp::from_millis(1_700_000_000_000);
const TTL: Duration = Duration::from_secs(30);

fn key(group: &str, name: Option<&str>) -> NodeKey {
    NodeKey::new(group, name).expect("suite keys are valid")
}

fn reg(key: &NodeKey, port: u16) -> Registration {
    Registration::new(
        key.clone(),
        Endpoint::http(format!("http://127.0.0.1:{port}")).expect("valid url"),
        TTL,
    )
}

/// Runs every case of the registry contract against registries made by `fresh`.
///
/// # Panics
/// When any case fails, after all have run, with every failure listed.
pub async fn conformance<R, F, Fut>(fresh: F)
where
    R: Registry,
    F: Fn() -> Fut,
    Fut: Future<Output = R>,
{
    let cases: Vec<(&str, Case<R>)> = vec![
        ("insert_returns_id", |r| Box::pin(insert_returns_id(r))),
        ("upsert_updates_in_place", |r| {
            Box::pin(upsert_updates_in_place(r))
        }),
        ("concurrent_upserts_make_one_row", |r| {
            Box::pin(concurrent_upserts_make_one_row(r))
        }),
        ("unnamed_node", |r| Box::pin(unnamed_node(r))),
        ("get_by_key_and_id", |r| Box::pin(get_by_key_and_id(r))),
        ("list_is_stable_and_filters_by_group", |r| {
            Box::pin(list_is_stable_and_filters_by_group(r))
        }),
        ("pages_walk_the_list_in_id_order", |r| {
            Box::pin(pages_walk_the_list_in_id_order(r))
        }),
        ("remove_by_id_and_key", |r| {
            Box::pin(remove_by_id_and_key(r))
        }),
        ("renew_extends_lease", |r| Box::pin(renew_extends_lease(r))),
        ("evict_removes_exactly_the_expired", |r| {
            Box::pin(evict_removes_exactly_the_expired(r))
        }),
        ("meta_and_endpoints_round_trip", |r| {
            Box::pin(meta_and_endpoints_round_trip(r))
        }),
        ("invalid_names_never_reach_storage", |r| {
            Box::pin(invalid_names_never_reach_storage(r))
        }),
        ("ping_answers", |r| Box::pin(ping_answers(r))),
        ("version_moves_with_every_change", |r| {
            Box::pin(version_moves_with_every_change(r))
        }),
        ("a_shared_copy_is_the_node_as_stored", |r| {
            Box::pin(a_shared_copy_is_the_node_as_stored(r))
        }),
        ("the_feed_replays_to_the_store", |r| {
            Box::pin(the_feed_replays_to_the_store(r))
        }),
        ("the_feed_reads_in_pages", |r| {
            Box::pin(the_feed_reads_in_pages(r))
        }),
        ("a_compacted_feed_reports_the_gap", |r| {
            Box::pin(a_compacted_feed_reports_the_gap(r))
        }),
        ("instances_announce_and_renew", |r| {
            Box::pin(instances_announce_and_renew(r))
        }),
        ("an_expired_instance_takes_its_nodes", |r| {
            Box::pin(an_expired_instance_takes_its_nodes(r))
        }),
        ("a_retired_instance_takes_its_nodes", |r| {
            Box::pin(a_retired_instance_takes_its_nodes(r))
        }),
    ];
    let mut failures = Vec::new();
    for (name, case) in cases {
        let registry = Arc::new(fresh().await);
        if let Err(message) = case(registry).await {
            failures.push(format!("{name}: {message}"));
        }
    }
    assert!(
        failures.is_empty(),
        "registry conformance failed:\n  {}",
        failures.join("\n  ")
    );
}

async fn insert_returns_id<R: Registry>(r: Arc<R>) -> CaseResult {
    let a = key("g", Some("a"));
    let b = key("g", Some("b"));
    let na = step("upsert a", r.upsert(reg(&a, 1001), T0).await)?;
    let nb = step("upsert b", r.upsert(reg(&b, 1002), T0).await)?;
    ensure!(na.id != nb.id, "two keys got the same id {}", na.id);
    ensure_eq!(na.key, a, "key");
    ensure_eq!(na.created, T0, "created");
    ensure_eq!(na.updated, None, "updated of a new node");
    ensure_eq!(na.lease_until, T0 + TTL, "lease_until");
    ensure_eq!(
        na.endpoint,
        Endpoint::http("http://127.0.0.1:1001").expect("valid"),
        "endpoint"
    );
    Ok(())
}

async fn upsert_updates_in_place<R: Registry>(r: Arc<R>) -> CaseResult {
    let a = key("g", Some("a"));
    let first = step("first upsert", r.upsert(reg(&a, 1001), T0).await)?;
    let t1 = T0 + Duration::from_secs(5);
    let mut meta = Meta::new();
    meta.insert("version".into(), "2".into());
    let second = step(
        "second upsert",
        r.upsert(reg(&a, 2002).with_meta(meta.clone()), t1).await,
    )?;
    ensure_eq!(second.id, first.id, "id after update");
    ensure_eq!(second.created, T0, "created after update");
    ensure_eq!(second.updated, Some(t1), "updated after update");
    ensure_eq!(second.lease_until, t1 + TTL, "lease after update");
    ensure_eq!(second.meta, meta, "meta after update");
    let stored = step("get", r.get(&a).await)?;
    ensure_eq!(stored, Some(second), "stored node");
    ensure_eq!(step("list", r.list(None).await)?.len(), 1, "rows");
    Ok(())
}

async fn concurrent_upserts_make_one_row<R: Registry>(r: Arc<R>) -> CaseResult {
    let a = key("race", Some("a"));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..16u16 {
        let (r, a) = (r.clone(), a.clone());
        tasks.spawn(async move {
            r.upsert(reg(&a, 3000 + i), T0 + Duration::from_millis(u64::from(i)))
                .await
        });
    }
    let mut ids = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let node = step("concurrent upsert", joined.map_err(|e| e.to_string())?)?;
        ids.push(node.id);
    }
    ids.dedup();
    ensure!(
        ids.len() == 1,
        "concurrent upserts gave several ids: {ids:?}"
    );
    let rows = step("list", r.list(Some("race")).await)?;
    ensure_eq!(rows.len(), 1, "rows after concurrent upserts");
    Ok(())
}

async fn unnamed_node<R: Registry>(r: Arc<R>) -> CaseResult {
    let unnamed = key("g", None);
    let named = key("g", Some("n"));
    let u1 = step("upsert unnamed", r.upsert(reg(&unnamed, 1), T0).await)?;
    step("upsert named", r.upsert(reg(&named, 2), T0).await)?;
    let u2 = step(
        "upsert unnamed again",
        r.upsert(reg(&unnamed, 3), T0 + TTL).await,
    )?;
    ensure_eq!(u2.id, u1.id, "unnamed node id after update");
    ensure_eq!(u2.key.name(), None, "unnamed node's name");
    let got = step("get unnamed", r.get(&unnamed).await)?;
    ensure_eq!(
        got.map(|n| n.endpoint.to_string()),
        Some("http://127.0.0.1:3".to_owned()),
        "unnamed endpoint"
    );
    ensure_eq!(
        step("list", r.list(Some("g")).await)?.len(),
        2,
        "rows in group"
    );
    Ok(())
}

async fn get_by_key_and_id<R: Registry>(r: Arc<R>) -> CaseResult {
    let a = key("g", Some("a"));
    let node = step("upsert", r.upsert(reg(&a, 1), T0).await)?;
    ensure_eq!(
        step("get", r.get(&a).await)?,
        Some(node.clone()),
        "get by key"
    );
    ensure_eq!(
        step("get_by_id", r.get_by_id(node.id).await)?,
        Some(node.clone()),
        "get by id"
    );
    ensure_eq!(
        step("get missing", r.get(&key("g", Some("zz"))).await)?,
        None,
        "missing key"
    );
    ensure_eq!(
        step("get other group", r.get(&key("h", Some("a"))).await)?,
        None,
        "same name, other group"
    );
    ensure_eq!(
        step(
            "get_by_id missing",
            r.get_by_id(NodeId(node.id.0 + 1000)).await
        )?,
        None,
        "missing id"
    );
    Ok(())
}

async fn list_is_stable_and_filters_by_group<R: Registry>(r: Arc<R>) -> CaseResult {
    let keys = [
        key("b", Some("1")),
        key("a", Some("1")),
        key("b", Some("2")),
        key("b", None),
        key("a", Some("0")),
    ];
    let mut ids = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        let port = u16::try_from(i).unwrap_or(0) + 1;
        ids.push(step("upsert", r.upsert(reg(k, port), T0).await)?.id);
    }
    let all = step("list all", r.list(None).await)?;
    ensure_eq!(
        all.iter().map(|n| n.key.clone()).collect::<Vec<_>>(),
        keys.to_vec(),
        "list all in id order"
    );
    ensure!(
        all.windows(2).all(|w| w[0].id < w[1].id),
        "list not ordered by id"
    );
    let b = step("list b", r.list(Some("b")).await)?;
    ensure_eq!(
        b.iter().map(|n| n.key.to_string()).collect::<Vec<_>>(),
        vec!["b/1".to_owned(), "b/2".to_owned(), "b/".to_owned()],
        "list of group b"
    );
    ensure_eq!(step("list again", r.list(None).await)?, all, "second list");
    ensure_eq!(
        step("list none", r.list(Some("nope")).await)?.len(),
        0,
        "unknown group"
    );
    Ok(())
}

async fn pages_walk_the_list_in_id_order<R: Registry>(r: Arc<R>) -> CaseResult {
    for (i, (group, name)) in [("p", "1"), ("q", "1"), ("p", "2"), ("p", "3"), ("q", "2")]
        .into_iter()
        .enumerate()
    {
        let port = u16::try_from(i).unwrap_or(0) + 1;
        step(
            "upsert",
            r.upsert(reg(&key(group, Some(name)), port), T0).await,
        )?;
    }
    for group in [None, Some("p")] {
        let whole = step("list", r.list(group).await)?;
        // Every page size, walked with the last id of each page.
        for size in 1..=whole.len() + 1 {
            let mut walked = Vec::new();
            let mut after = None;
            // A store whose pages overlap would walk for ever: no walk needs
            // more pages than there are nodes, plus the empty last one.
            for _ in 0..=whole.len() + 1 {
                let page = step("list_page", r.list_page(group, after, size).await)?;
                ensure!(
                    page.len() <= size,
                    "page of {} over limit {size}",
                    page.len()
                );
                let Some(last) = page.last() else { break };
                after = Some(last.id);
                let full = page.len() == size;
                walked.extend(page);
                if !full {
                    break;
                }
            }
            ensure_eq!(walked, whole, format!("pages of {size} of {group:?}"));
        }
        let last = whole.last().map(|n| n.id);
        ensure_eq!(
            step("page past the end", r.list_page(group, last, 10).await)?.len(),
            0,
            "page after the last id"
        );
    }
    ensure_eq!(
        step("empty page", r.list_page(None, None, 0).await)?.len(),
        0,
        "a page of zero"
    );
    Ok(())
}

async fn remove_by_id_and_key<R: Registry>(r: Arc<R>) -> CaseResult {
    let a = key("g", Some("a"));
    let b = key("g", Some("b"));
    let na = step("upsert a", r.upsert(reg(&a, 1), T0).await)?;
    step("upsert b", r.upsert(reg(&b, 2), T0).await)?;
    ensure_eq!(
        step("remove id", r.remove(na.id).await)?,
        1,
        "removed by id"
    );
    ensure_eq!(
        step("remove id again", r.remove(na.id).await)?,
        0,
        "removed twice by id"
    );
    ensure_eq!(step("get a", r.get(&a).await)?, None, "a after removal");
    ensure_eq!(
        step("remove key", r.remove_key(&b).await)?,
        1,
        "removed by key"
    );
    ensure_eq!(
        step("remove key again", r.remove_key(&b).await)?,
        0,
        "removed twice by key"
    );
    ensure_eq!(step("list", r.list(None).await)?.len(), 0, "rows left");
    let again = step("re-register a", r.upsert(reg(&a, 1), T0).await)?;
    ensure_eq!(again.updated, None, "a re-registered after removal is new");
    Ok(())
}

async fn renew_extends_lease<R: Registry>(r: Arc<R>) -> CaseResult {
    let a = key("g", Some("a"));
    let node = step("upsert", r.upsert(reg(&a, 1), T0).await)?;
    let t1 = T0 + Duration::from_secs(20);
    let lease = step("renew", r.renew(&a, Duration::from_secs(60), t1).await)?;
    ensure_eq!(lease, Some(t1 + Duration::from_secs(60)), "renewed lease");
    let stored = step("get", r.get(&a).await)?.ok_or("renewed node vanished")?;
    ensure_eq!(
        stored.lease_until,
        t1 + Duration::from_secs(60),
        "stored lease"
    );
    ensure_eq!(stored.id, node.id, "id after renew");
    ensure_eq!(stored.created, node.created, "created after renew");
    // A renewal is the node heard from: what an operator reads as its
    // last sign of life.
    ensure_eq!(stored.updated, Some(t1), "updated after renew");
    ensure_eq!(
        step(
            "renew unknown",
            r.renew(&key("g", Some("zz")), TTL, t1).await
        )?,
        None,
        "renew of an unknown key"
    );
    Ok(())
}

async fn evict_removes_exactly_the_expired<R: Registry>(r: Arc<R>) -> CaseResult {
    let short = key("g", Some("short"));
    let edge = key("g", None);
    let long = key("h", Some("long"));
    let mut r_short = reg(&short, 1);
    r_short.ttl = Duration::from_secs(5);
    let mut r_edge = reg(&edge, 2);
    r_edge.ttl = Duration::from_secs(10);
    let mut r_long = reg(&long, 3);
    r_long.ttl = Duration::from_secs(60);
    for reg in [r_short, r_edge, r_long] {
        step("upsert", r.upsert(reg, T0).await)?;
    }
    let none = step(
        "evict early",
        r.evict_expired(T0 + Duration::from_secs(4)).await,
    )?;
    ensure_eq!(
        none,
        Vec::<NodeKey>::new(),
        "evicted before any lease ended"
    );
    let mut gone = step("evict", r.evict_expired(T0 + Duration::from_secs(10)).await)?;
    gone.sort();
    let mut expected = vec![short.clone(), edge.clone()];
    expected.sort();
    ensure_eq!(
        gone,
        expected,
        "evicted keys (a lease ending exactly now has expired)"
    );
    let left: Vec<NodeKey> = step("list", r.list(None).await)?
        .into_iter()
        .map(|n| n.key)
        .collect();
    ensure_eq!(left, vec![long], "survivors");
    let again = step(
        "evict again",
        r.evict_expired(T0 + Duration::from_secs(10)).await,
    )?;
    ensure!(again.is_empty(), "second eviction removed {again:?}");
    Ok(())
}

async fn meta_and_endpoints_round_trip<R: Registry>(r: Arc<R>) -> CaseResult {
    let mut meta = BTreeMap::new();
    meta.insert("zone".to_owned(), "eu-west".to_owned());
    meta.insert("empty".to_owned(), String::new());
    meta.insert(
        "unicode".to_owned(),
        "zażółć \"quoted\" \\ {json}".to_owned(),
    );
    let a = key("g", Some("a"));
    let node = step(
        "upsert",
        r.upsert(reg(&a, 1).with_meta(meta.clone()), T0).await,
    )?;
    ensure_eq!(node.meta, meta, "returned meta");
    let stored = step("get", r.get(&a).await)?.ok_or("node vanished")?;
    ensure_eq!(stored.meta, meta, "stored meta");

    let attached = key("g", Some("attached"));
    let endpoint = Endpoint::attached("hub-7").map_err(|e| e.to_string())?;
    let reg_attached = Registration::new(attached.clone(), endpoint.clone(), TTL);
    step("upsert attached", r.upsert(reg_attached, T0).await)?;
    let stored = step("get attached", r.get(&attached).await)?.ok_or("attached vanished")?;
    ensure_eq!(stored.endpoint, endpoint, "attached endpoint");
    let https = key("g", Some("tls"));
    let reg_https = Registration::new(
        https.clone(),
        Endpoint::http("https://node.example:8443/base").map_err(|e| e.to_string())?,
        TTL,
    );
    step("upsert https", r.upsert(reg_https, T0).await)?;
    let stored = step("get https", r.get(&https).await)?.ok_or("https vanished")?;
    ensure_eq!(
        stored.endpoint.to_string(),
        "https://node.example:8443/base".to_owned(),
        "https endpoint"
    );
    // A transport of a team's own: the store keeps any scheme unchanged,
    // so the right deliverer is found after a restart.
    let custom = key("g", Some("custom"));
    let endpoint = Endpoint::custom("team-bus+v2", "inbox/7:a.b").map_err(|e| e.to_string())?;
    let reg_custom = Registration::new(custom.clone(), endpoint.clone(), TTL);
    step("upsert custom", r.upsert(reg_custom, T0).await)?;
    let stored = step("get custom", r.get(&custom).await)?.ok_or("custom vanished")?;
    ensure_eq!(stored.endpoint, endpoint, "custom endpoint");
    ensure_eq!(stored.endpoint.scheme(), "team-bus+v2", "custom scheme");
    Ok(())
}

async fn invalid_names_never_reach_storage<R: Registry>(r: Arc<R>) -> CaseResult {
    let long = "x".repeat(51);
    for (group, name) in [
        ("bad group", None),
        ("", None),
        ("g", Some("a/b")),
        ("g", Some("")),
        (long.as_str(), None),
        ("g'; DROP TABLE nodes; --", None),
    ] {
        match NodeKey::new(group, name) {
            Err(Error::Invalid { .. }) => {}
            other => return Err(format!("{group:?}/{name:?} was not refused: {other:?}")),
        }
    }
    ensure_eq!(
        step("list", r.list(None).await)?.len(),
        0,
        "rows after refusals"
    );
    Ok(())
}

async fn ping_answers<R: Registry>(r: Arc<R>) -> CaseResult {
    step("ping", r.ping().await)
}

/// A store without a version passes; one with a version must move it on
/// every change (a refresh that skipped on an unmoved version would miss
/// it) and leave it alone on reads and on writes that change nothing (or
/// a refresh would never skip).
async fn version_moves_with_every_change<R: Registry>(r: Arc<R>) -> CaseResult {
    let Some(first) = step("version", r.version().await)? else {
        return Ok(());
    };
    let a = key("g", Some("a"));
    let b = key("g", Some("b"));
    // Every version seen, in order; the last is the current one.
    let mut seen = vec![first];
    // Checks that `what` moved the version (to a number never seen
    // before) or left it alone, as `moved` says.
    macro_rules! after {
        ($what:expr, $moved:expr) => {{
            let now = step("version", r.version().await)?
                .ok_or_else(|| format!("after {}: the version went away", $what))?;
            if $moved {
                ensure!(
                    !seen.contains(&now),
                    "after {}: the version {now} was seen before ({seen:?})",
                    $what
                );
                seen.push(now);
            } else {
                ensure_eq!(
                    Some(&now),
                    seen.last(),
                    format!("the version after {}", $what)
                );
            }
        }};
    }
    after!("nothing", false);
    let na = step("upsert a", r.upsert(reg(&a, 1), T0).await)?;
    after!("an insert", true);
    step("upsert b", r.upsert(reg(&b, 2), T0).await)?;
    after!("a second insert", true);
    step("upsert a again", r.upsert(reg(&a, 3), T0).await)?;
    after!("an update", true);
    step("get", r.get(&a).await)?;
    step("get_by_id", r.get_by_id(na.id).await)?;
    step("list", r.list(None).await)?;
    step("list_page", r.list_page(Some("g"), None, 1).await)?;
    step("ping", r.ping().await)?;
    after!("reads", false);
    let lease = step("renew", r.renew(&a, TTL, T0 + TTL).await)?;
    ensure!(lease.is_some(), "renew of a registered key");
    after!("a renewal", true);
    step("evict none", r.evict_expired(T0).await)?;
    after!("an eviction that found nothing", false);
    step("remove b", r.remove_key(&b).await)?;
    after!("a removal by key", true);
    step("remove a", r.remove(na.id).await)?;
    after!("a removal by id", true);
    step("upsert b", r.upsert(reg(&b, 2), T0).await)?;
    after!("an insert", true);
    let gone = step("evict", r.evict_expired(T0 + TTL).await)?;
    ensure_eq!(gone, vec![b.clone()], "evicted");
    after!("an eviction", true);
    after!("nothing", false);
    Ok(())
}

/// A store that hands out its own copy of a node hands out only an equal
/// one: never a copy older or newer than the node asked about, nor one
/// of another node.
async fn a_shared_copy_is_the_node_as_stored<R: Registry>(r: Arc<R>) -> CaseResult {
    let a = key("g", Some("a"));
    let na = step("upsert a", r.upsert(reg(&a, 1), T0).await)?;
    if let Some(copy) = r.shared(&na) {
        ensure_eq!(*copy, na, "the copy of a node as upserted");
    }
    step("renew a", r.renew(&a, TTL, T0 + TTL).await)?;
    ensure!(
        r.shared(&na).is_none(),
        "a copy handed out for the node as it was before its renewal"
    );
    let renewed = step("get a", r.get(&a).await)?.ok_or("a is gone")?;
    if let Some(copy) = r.shared(&renewed) {
        ensure_eq!(*copy, renewed, "the copy of a renewed node");
    }
    let stranger = crate::model::Node {
        id: NodeId(u64::MAX / 2),
        ..renewed
    };
    ensure!(
        r.shared(&stranger).is_none(),
        "a copy handed out for an id the store never gave"
    );
    Ok(())
}

/// Applies a page of the feed to a follower's copy of the store, in order.
fn replay(copy: &mut BTreeMap<NodeId, Node>, page: &ChangePage) {
    for change in &page.changes {
        match &change.kind {
            ChangeKind::Put(node) => {
                // A key that registered again under a new id replaces its
                // old registration.
                copy.retain(|id, held| held.key != node.key || *id == node.id);
                copy.insert(node.id, node.clone());
            }
            ChangeKind::Removed { id, .. } => {
                copy.remove(id);
            }
        }
    }
}

/// Reads the feed from `after` to its end, a page of `limit` at a time,
/// checking that positions only grow and that no page reports a gap.
async fn read_feed<R: Registry>(
    r: &R,
    after: u64,
    limit: usize,
) -> Result<(Vec<ChangePage>, u64), String> {
    let mut pages = Vec::new();
    let mut position = after;
    loop {
        let page =
            step("changes", r.changes(position, limit).await)?.ok_or("the feed went away")?;
        ensure!(
            !page.gap,
            "a gap after {position} though nothing was compacted"
        );
        ensure!(
            page.changes.len() <= limit,
            "a page of {} changes, limit {limit}",
            page.changes.len()
        );
        let mut last = position;
        for change in &page.changes {
            ensure!(
                change.position > last,
                "position {} after {last}",
                change.position
            );
            last = change.position;
        }
        ensure!(
            page.next >= last,
            "the page's next position {} is before its last change {last}",
            page.next
        );
        let done = page.next == position;
        ensure!(
            !done || page.changes.is_empty(),
            "a page with changes whose next position did not move"
        );
        position = page.next;
        pages.push(page);
        if done {
            return Ok((pages, position));
        }
    }
}

/// A store without a feed passes. One with a feed records every kind of
/// change (insert, update, renewal, removal by id and by key, eviction) so
/// that a follower replaying it from any position it read reaches the
/// store's own state; and its version is the newest position.
async fn the_feed_replays_to_the_store<R: Registry>(r: Arc<R>) -> CaseResult {
    if step("changes", r.changes(0, 10).await)?.is_none() {
        return Ok(());
    }
    let a = key("g", Some("a"));
    let b = key("g", Some("b"));
    let c = key("h", None);
    // A follower that loaded the store now.
    let na = step("upsert a", r.upsert(reg(&a, 1), T0).await)?;
    let mut copy: BTreeMap<NodeId, Node> = BTreeMap::new();
    copy.insert(na.id, na.clone());
    let start = step("version", r.version().await)?.ok_or("a feed but no version")?;
    let (_, head) = read_feed(&*r, 0, 100).await?;
    ensure_eq!(head, start, "the version beside the newest position");

    let nb = step("upsert b", r.upsert(reg(&b, 2), T0).await)?;
    step("upsert a again", r.upsert(reg(&a, 3), T0).await)?;
    let renewed = step("renew a", r.renew(&a, TTL * 2, T0 + TTL).await)?;
    step("upsert c", r.upsert(reg(&c, 4), T0).await)?;
    step("remove b", r.remove(nb.id).await)?;
    step("upsert b again", r.upsert(reg(&b, 5), T0 + TTL).await)?;
    let gone = step("evict", r.evict_expired(T0 + TTL).await)?;
    ensure_eq!(gone, vec![c.clone()], "evicted");
    step("remove a", r.remove_key(&a).await)?;
    step("upsert a again", r.upsert(reg(&a, 6), T0 + TTL).await)?;

    let (pages, head) = read_feed(&*r, start, 100).await?;
    for page in &pages {
        replay(&mut copy, page);
    }
    let stored: BTreeMap<NodeId, Node> = step("list", r.list(None).await)?
        .into_iter()
        .map(|n| (n.id, n))
        .collect();
    ensure_eq!(copy, stored, "the follower's copy after replaying the feed");
    ensure_eq!(
        step("version", r.version().await)?,
        Some(head),
        "the version beside the newest position"
    );
    ensure!(renewed.is_some(), "renew of a registered key");

    // A renewal alone is in the feed, with the new lease.
    let (_, before) = read_feed(&*r, head, 100).await?;
    let until = step("renew b", r.renew(&b, TTL * 3, T0 + TTL).await)?
        .ok_or("renew of a registered key")?;
    let (pages, _) = read_feed(&*r, before, 100).await?;
    let leases: Vec<Timestamp> = pages
        .iter()
        .flat_map(|p| &p.changes)
        .filter_map(|change| match &change.kind {
            ChangeKind::Put(node) if node.key == b => Some(node.lease_until),
            _ => None,
        })
        .collect();
    ensure_eq!(
        leases,
        vec![until],
        "the leases of b the feed gave after a renewal"
    );
    Ok(())
}

/// Pages hold at most `limit` changes and continue where the last ended.
async fn the_feed_reads_in_pages<R: Registry>(r: Arc<R>) -> CaseResult {
    let Some(first) = step("changes", r.changes(0, 10).await)? else {
        return Ok(());
    };
    let start = first.next;
    for i in 0..7u16 {
        let k = key("g", Some(&format!("n{i}")));
        step("upsert", r.upsert(reg(&k, 100 + i), T0).await)?;
    }
    let (pages, _) = read_feed(&*r, start, 3).await?;
    let sizes: Vec<usize> = pages.iter().map(|p| p.changes.len()).collect();
    ensure_eq!(sizes, vec![3, 3, 1, 0], "page sizes");
    let keys: Vec<String> = pages
        .iter()
        .flat_map(|p| &p.changes)
        .filter_map(|change| match &change.kind {
            ChangeKind::Put(node) => Some(node.key.to_string()),
            ChangeKind::Removed { .. } => None,
        })
        .collect();
    let expected: Vec<String> = (0..7).map(|i| format!("g/n{i}")).collect();
    ensure_eq!(
        keys,
        expected,
        "the nodes in the feed, in the order written"
    );
    Ok(())
}

/// Compaction forgets what it covers; a follower that had not read it is
/// told of the gap, one that had is not.
async fn a_compacted_feed_reports_the_gap<R: Registry>(r: Arc<R>) -> CaseResult {
    if step("changes", r.changes(0, 10).await)?.is_none() {
        return Ok(());
    }
    let a = key("g", Some("a"));
    let b = key("g", Some("b"));
    step("upsert a", r.upsert(reg(&a, 1), T0).await)?;
    let (_, after_a) = read_feed(&*r, 0, 100).await?;
    step("upsert b", r.upsert(reg(&b, 2), T0).await)?;
    let gone = step("compact", r.compact_changes(after_a).await)?;
    ensure!(
        gone >= 1,
        "compaction through {after_a} forgot {gone} changes"
    );
    let behind = step("changes", r.changes(0, 100).await)?.ok_or("the feed went away")?;
    ensure!(
        behind.gap,
        "no gap reported to a follower behind the compaction"
    );
    let (pages, _) = read_feed(&*r, after_a, 100).await?;
    let keys: Vec<NodeKey> = pages
        .iter()
        .flat_map(|p| &p.changes)
        .filter_map(|change| match &change.kind {
            ChangeKind::Put(node) => Some(node.key.clone()),
            ChangeKind::Removed { .. } => None,
        })
        .collect();
    ensure_eq!(keys, vec![b], "what a follower past the compaction reads");
    Ok(())
}

/// A store without instances passes (it refuses the announcement). One
/// with them keeps an instance's start across renewals and moves its
/// heartbeat, lease and peer address.
async fn instances_announce_and_renew<R: Registry>(r: Arc<R>) -> CaseResult {
    let ttl = Duration::from_secs(6);
    let Ok(first) = r
        .announce_instance("hub-1", "http://10.0.0.1:80", ttl, T0)
        .await
    else {
        return Ok(());
    };
    ensure_eq!(
        first,
        Instance::new("hub-1", "http://10.0.0.1:80", T0, ttl).map_err(|e| e.to_string())?,
        "the instance as first announced"
    );
    let later = T0 + Duration::from_secs(2);
    step(
        "announce hub-0",
        r.announce_instance("hub-0", "http://10.0.0.2:80", ttl, later)
            .await,
    )?;
    let renewed = step(
        "renew hub-1",
        r.announce_instance("hub-1", "http://10.0.0.3:80", ttl, later)
            .await,
    )?;
    ensure_eq!(renewed.started, T0, "the start of a renewed instance");
    ensure_eq!(
        renewed.heartbeat,
        later,
        "the heartbeat of a renewed instance"
    );
    ensure_eq!(
        renewed.lease_until,
        later + ttl,
        "the lease of a renewed instance"
    );
    ensure_eq!(
        renewed.peer,
        "http://10.0.0.3:80",
        "the peer address of a renewed instance"
    );
    let listed = step("instances", r.instances().await)?;
    let ids: Vec<&str> = listed.iter().map(|i| i.id.as_str()).collect();
    ensure_eq!(ids, vec!["hub-0", "hub-1"], "instances, ordered by id");
    ensure_eq!(listed[1], renewed, "the instance as listed");
    Ok(())
}

/// An instance whose lease ran out goes, with exactly the nodes attached
/// to it, and their removals are in the feed; other instances and their
/// nodes stay.
async fn an_expired_instance_takes_its_nodes<R: Registry>(r: Arc<R>) -> CaseResult {
    let ttl = Duration::from_secs(6);
    if r.announce_instance("hub-1", "", ttl, T0).await.is_err() {
        return Ok(());
    }
    step(
        "announce hub-2",
        r.announce_instance("hub-2", "", ttl, T0).await,
    )?;
    let attached = |instance: &str, k: &NodeKey| {
        Registration::new(
            k.clone(),
            Endpoint::attached(instance).expect("valid instance"),
            TTL,
        )
    };
    let x = key("g", Some("x"));
    let y = key("g", Some("y"));
    let z = key("g", Some("z"));
    let w = key("g", Some("w"));
    step("upsert x", r.upsert(attached("hub-1", &x), T0).await)?;
    step("upsert w", r.upsert(attached("hub-1", &w), T0).await)?;
    step("upsert y", r.upsert(attached("hub-2", &y), T0).await)?;
    step("upsert z", r.upsert(reg(&z, 1), T0).await)?;
    let position = step("changes", r.changes(0, 1).await)?.map(|_| ());
    let from = match position {
        Some(()) => Some(read_feed(&*r, 0, 100).await?.1),
        None => None,
    };
    let later = T0 + Duration::from_secs(4);
    step(
        "renew hub-2",
        r.announce_instance("hub-2", "", ttl, later).await,
    )?;
    ensure_eq!(
        step(
            "expire early",
            r.expire_instances(T0 + Duration::from_secs(5)).await
        )?,
        Vec::<RetiredInstance>::new(),
        "instances expired before their lease ran out"
    );
    let mut retired = step("expire", r.expire_instances(T0 + ttl).await)?;
    for instance in &mut retired {
        instance.detached.sort_by_key(ToString::to_string);
    }
    let detached = vec![w.clone(), x.clone()];
    ensure_eq!(
        retired,
        vec![RetiredInstance {
            id: "hub-1".into(),
            detached: detached.clone()
        }],
        "the instances retired"
    );
    let ids: Vec<String> = step("instances", r.instances().await)?
        .into_iter()
        .map(|i| i.id)
        .collect();
    ensure_eq!(ids, vec!["hub-2".to_owned()], "the instances left");
    let keys: Vec<NodeKey> = step("list", r.list(None).await)?
        .into_iter()
        .map(|n| n.key)
        .collect();
    ensure_eq!(keys, vec![y, z], "the nodes left");
    if let Some(from) = from {
        let (pages, _) = read_feed(&*r, from, 100).await?;
        let mut removed: Vec<NodeKey> = pages
            .iter()
            .flat_map(|p| &p.changes)
            .filter_map(|change| match &change.kind {
                ChangeKind::Removed { key, .. } => Some(key.clone()),
                ChangeKind::Put(_) => None,
            })
            .collect();
        removed.sort_by_key(ToString::to_string);
        ensure_eq!(removed, detached, "the removals in the feed");
    }
    Ok(())
}

/// An instance that leaves takes its attached nodes with it.
async fn a_retired_instance_takes_its_nodes<R: Registry>(r: Arc<R>) -> CaseResult {
    let ttl = Duration::from_secs(6);
    if r.announce_instance("hub-1", "", ttl, T0).await.is_err() {
        return Ok(());
    }
    let x = key("g", Some("x"));
    let z = key("g", Some("z"));
    let attached = Registration::new(
        x.clone(),
        Endpoint::attached("hub-1").expect("valid instance"),
        TTL,
    );
    step("upsert x", r.upsert(attached, T0).await)?;
    step("upsert z", r.upsert(reg(&z, 1), T0).await)?;
    ensure_eq!(
        step("retire", r.retire_instance("hub-1").await)?,
        vec![x],
        "the nodes detached"
    );
    ensure!(
        step("instances", r.instances().await)?.is_empty(),
        "a retired instance is still listed"
    );
    let keys: Vec<NodeKey> = step("list", r.list(None).await)?
        .into_iter()
        .map(|n| n.key)
        .collect();
    ensure_eq!(keys, vec![z], "the nodes left");
    Ok(())
}
