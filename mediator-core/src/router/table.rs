//! The in-memory map from targets to nodes, read on every request.
//!
//! Reads are lock-free: a request loads the current snapshot (an
//! `ArcSwap`) and reads it as of that instant. Writers are serialised by a
//! mutex that readers never take, and each write publishes a new snapshot.
//!
//! A snapshot is made of persistent maps (`imbl`): a hash map from key to
//! slot for unicast lookups, and per group an ordered map from id to slot
//! for broadcasts and any-of-group picks. Cloning one is a reference-count
//! bump, and changing the clone copies only the path to the changed entry,
//! sharing everything else with the snapshot readers may still hold. So a
//! registration, renewal, removal or eviction costs O(log n) whatever the
//! number of groups and the size of the group, where copying the map of
//! groups and the group's slot list made it grow with both (see
//! `benches/table.rs`: at 100,000 nodes in one group, a registration went
//! from milliseconds to tens of microseconds, mostly the mediator's own
//! work around the table).
//!
//! Choices weighed: a concurrent map of groups with a lock or an `ArcSwap`
//! per group would still copy (or lock) a whole group per write, and
//! make broadcasts lock a group a write may hold; a persistent map gives
//! one consistent snapshot per request with no lock on the read side.
//! Renewals build a new slot rather than updating an atomic lease in the
//! old one: the slot's `Node` then always carries its real lease, for
//! deliverers, pick policies and recorders alike, and the rewrite is the
//! same O(log n) path copy as any other write.
//!
//! A refresh from the store compares what it read with the table and
//! writes only the differences, so the readers' snapshots keep sharing
//! every unchanged node.
//!
//! The [`Mediator`](crate::Mediator) is its only writer: it writes through
//! on every registration it sees and refreshes from the store for changes
//! made by other instances. Others read it through [`Routes`].

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use imbl::{HashMap as SharedMap, OrdMap};

use crate::model::{Node, NodeId, NodeKey};
use crate::policy::{Candidate, Pick, Turn};
use crate::time::Timestamp;

/// A node as the routing table holds it, with its count of requests in flight.
#[derive(Debug)]
pub(crate) struct Slot {
    /// Shared with the store when it keeps its nodes in memory
    /// ([`Registry::shared`](crate::Registry::shared)), so a node is held
    /// once, not once by the store and once here.
    pub(crate) node: Arc<Node>,
    /// Shared by every slot that replaces this one for the same key (a
    /// renew, a re-registration, a refresh), so a request that started on
    /// the old slot is uncounted on the new one when it ends.
    outstanding: Arc<AtomicUsize>,
}

impl Slot {
    /// A slot for `node` that counts on `outstanding`.
    pub(crate) fn new(node: Arc<Node>, outstanding: Arc<AtomicUsize>) -> Arc<Slot> {
        Arc::new(Slot { node, outstanding })
    }
}

/// Counts a request in flight on a slot for as long as it lives.
pub(crate) struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    pub(crate) fn new(slot: Arc<Slot>) -> Self {
        slot.outstanding.fetch_add(1, Ordering::Relaxed);
        InFlight(Arc::clone(&slot.outstanding))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One group's nodes in a snapshot.
#[derive(Debug, Clone, Default)]
pub(crate) struct Group {
    /// In id order, so broadcasts answer in a stable order.
    slots: OrdMap<NodeId, Arc<Slot>>,
    /// Round-robin position among equally busy nodes, shared by every
    /// snapshot of the group for as long as the group has nodes.
    cursor: Arc<AtomicUsize>,
}

/// The table as of one write: what a request reads.
#[derive(Debug, Clone, Default)]
struct Snapshot {
    /// Every slot by key, for unicast lookups. A key's text is shared
    /// with its node, not copied, here and when a write copies the path
    /// to an entry. Ordered rather than hashed: at 100,000 keys the hash
    /// trie's sparse lower levels cost some 190 bytes a node, the B-tree
    /// some 60 (`benches/footprint.rs`), for a lookup a few comparisons
    /// longer.
    nodes: OrdMap<NodeKey, Arc<Slot>>,
    /// The same slots by group, in id order. Only groups with nodes.
    groups: SharedMap<Arc<str>, Group>,
}

impl Snapshot {
    /// Adds or replaces the node of `node.key`, keeping its in-flight
    /// count; returns the new slot.
    fn put(&mut self, node: Arc<Node>) -> Arc<Slot> {
        let outstanding = match self.take(&node.key) {
            Some(old) => Arc::clone(&old.outstanding),
            None => Arc::default(),
        };
        let slot = Slot::new(node, outstanding);
        let group = match self.groups.get_mut(slot.node.key.group()) {
            Some(group) => group,
            None => self
                .groups
                .entry(Arc::from(slot.node.key.group()))
                .or_default(),
        };
        // Ids are unique in a store; should two keys ever arrive under one
        // id, the later write wins for both maps, so they stay in step.
        if let Some(other) = group.slots.insert(slot.node.id, Arc::clone(&slot)) {
            self.nodes.remove(&other.node.key);
        }
        self.nodes.insert(slot.node.key.clone(), Arc::clone(&slot));
        slot
    }

    /// Takes the node of `key` out; a group left without nodes goes too.
    fn take(&mut self, key: &NodeKey) -> Option<Arc<Slot>> {
        let slot = self.nodes.remove(key)?;
        if let Some(group) = self.groups.get_mut(key.group()) {
            group.slots.remove(&slot.node.id);
            if group.slots.is_empty() {
                self.groups.remove(key.group());
            }
        }
        Some(slot)
    }
}

/// The in-memory map from targets to nodes, read on every request.
#[derive(Debug, Default)]
pub(crate) struct RoutingTable {
    snapshot: ArcSwap<Snapshot>,
    /// Serialises writers; readers never take it.
    write: Mutex<Writes>,
}

/// What writers share besides the table: enough to tell, when a refresh
/// from the store lands, which keys were written after it read the store.
#[derive(Debug, Default)]
struct Writes {
    /// Bumped by every write and every refresh mark.
    seq: u64,
    /// Refreshes marked and not yet finished.
    refreshing: usize,
    /// Keys written while a refresh was under way, with the `seq` of their
    /// last write. Empty whenever no refresh is.
    touched: HashMap<NodeKey, u64>,
    /// The mark of the last refresh applied.
    applied: u64,
    /// The store's version as the last finished refresh read it.
    version: Option<u64>,
}

/// A refresh under way: taken by [`RoutingTable::begin_refresh`] before
/// reading the store, then fed what was read, page by page
/// ([`read`](RefreshMark::read)), and [finished](RefreshMark::finish).
///
/// Writes to the table made in between (registrations, renewals,
/// removals, evictions this instance saw) win over the older store read.
#[derive(Debug)]
pub(crate) struct RefreshMark<'a> {
    table: &'a RoutingTable,
    seq: u64,
    /// The slots this refresh found as read (or put there), by address:
    /// whatever else the table held before the mark and was not written
    /// since is gone from the store. Addresses, not keys, so a page costs
    /// no copy of what it read; a slot alive before the mark stays alive
    /// until taken, so its address cannot be reused by another.
    seen: HashSet<usize>,
}

fn address(slot: &Arc<Slot>) -> usize {
    Arc::as_ptr(slot) as usize
}

impl RefreshMark<'_> {
    /// Makes the table hold `nodes`, one page of a store read begun after
    /// this mark was taken, except for the keys written since, which keep
    /// what the writes left. Returns `false`, changing nothing, when a
    /// refresh marked later has already written (this read is older).
    ///
    /// Only what differs is written: nodes the table already holds as read
    /// keep their slots, so an unchanged store costs one comparison a node.
    ///
    /// `share` turns a node to write into the one the table holds (the
    /// store's own copy, when it has one).
    pub(crate) fn read(&mut self, nodes: Vec<Node>, share: impl Fn(Node) -> Arc<Node>) -> bool {
        let Some(writes) = self.table.refresh_writes(self.seq) else {
            return false;
        };
        let seq = self.seq;
        let current = self.table.snapshot.load_full();
        if self.seen.capacity() == 0 {
            // Sized once for the whole table: one allocation, given back
            // whole when the refresh ends, where growing by doubling
            // would leave its smaller steps scattered over the heap.
            self.seen.reserve(current.nodes.len());
        }
        let mut next: Option<Snapshot> = None;
        for node in nodes {
            if writes.touched.get(&node.key).is_some_and(|&at| at > seq) {
                continue;
            }
            let held = next.as_ref().unwrap_or(&current).nodes.get(&node.key);
            if let Some(slot) = held.filter(|s| *s.node == node) {
                self.seen.insert(address(slot));
                continue;
            }
            let slot = next
                .get_or_insert_with(|| Snapshot::clone(&current))
                .put(share(node));
            self.seen.insert(address(&slot));
        }
        if let Some(next) = next {
            self.table.snapshot.store(Arc::new(next));
        }
        true
    }

    /// Ends the refresh: every node the table held before the mark that
    /// the pages did not hold, and that was not written since, goes.
    /// Returns `false`, changing nothing, when a refresh marked later has
    /// already written.
    ///
    /// `version` is the store's [version](crate::Registry::version) read
    /// after the mark and before the pages; the next refresh may skip
    /// reading the store while it is unchanged.
    pub(crate) fn finish(self, version: Option<u64>) -> bool {
        let Some(mut writes) = self.table.refresh_writes(self.seq) else {
            return false;
        };
        let seq = self.seq;
        let current = self.table.snapshot.load_full();
        let gone: Vec<&NodeKey> = current
            .nodes
            .iter()
            .filter(|(key, slot)| {
                !self.seen.contains(&address(slot))
                    && writes.touched.get(*key).is_none_or(|&at| at <= seq)
            })
            .map(|(key, _)| key)
            .collect();
        if !gone.is_empty() {
            let mut next = Snapshot::clone(&current);
            for key in gone {
                next.take(key);
            }
            self.table.snapshot.store(Arc::new(next));
        }
        writes.version = version;
        // Only refreshes marked later may still land, and they compare
        // against their own, later, marks.
        writes.touched.retain(|_, at| *at > seq);
        // Released before `self` is dropped, which takes the lock again.
        drop(writes);
        true
    }

    /// [`read`](Self::read) and [`finish`](Self::finish) in one: the whole
    /// store read at once, without a version.
    #[cfg(test)]
    pub(crate) fn apply(mut self, nodes: Vec<Node>) -> bool {
        self.read(nodes, Arc::new) && self.finish(None)
    }
}

impl Drop for RefreshMark<'_> {
    fn drop(&mut self) {
        let mut writes = self.table.writes();
        writes.refreshing = writes.refreshing.saturating_sub(1);
        if writes.refreshing == 0 {
            writes.touched.clear();
        }
    }
}

impl RoutingTable {
    /// An empty table.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    fn writes(&self) -> std::sync::MutexGuard<'_, Writes> {
        // A poisoned writer lock only means another writer panicked; the table
        // itself is swapped atomically and always whole, so carry on.
        self.write.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The writers' lock for the refresh marked `seq`; `None` when a
    /// refresh marked later has already written (`seq`'s read is older).
    fn refresh_writes(&self, seq: u64) -> Option<std::sync::MutexGuard<'_, Writes>> {
        let mut writes = self.writes();
        if seq < writes.applied {
            return None;
        }
        writes.applied = seq;
        Some(writes)
    }

    /// Applies `change` to a copy of the current snapshot (sharing all it
    /// does not touch) and publishes it, recording that `key` was written.
    fn edit<T>(&self, key: &NodeKey, change: impl FnOnce(&mut Snapshot) -> T) -> T {
        let mut writes = self.writes();
        writes.seq += 1;
        if writes.refreshing > 0 {
            let seq = writes.seq;
            writes.touched.insert(key.clone(), seq);
        }
        let mut next = Snapshot::clone(&self.snapshot.load());
        let out = change(&mut next);
        self.snapshot.store(Arc::new(next));
        out
    }

    /// Adds or replaces a node (write-through on registration).
    pub(crate) fn insert(&self, node: Arc<Node>) {
        let key = node.key.clone();
        // Re-placed by id: a key registered again may have a new id.
        self.edit(&key, |table| {
            table.put(node);
        });
    }

    /// Sets a node's lease end, if the table has it (never adds it back);
    /// `share` turns the renewed node into the one the table holds.
    pub(crate) fn renew(
        &self,
        key: &NodeKey,
        lease_until: Timestamp,
        now: Timestamp,
        share: impl FnOnce(Node) -> Arc<Node>,
    ) {
        self.edit(key, |table| {
            if let Some(slot) = table.nodes.get(key) {
                let mut node = Node::clone(&slot.node);
                node.lease_until = lease_until;
                node.updated = Some(now);
                table.put(share(node));
            }
        });
    }

    /// Removes the node of `key` if `which` says so; returns whether it went.
    fn remove_if(&self, key: &NodeKey, which: impl FnOnce(&Node) -> bool) -> bool {
        self.edit(key, |table| {
            let doomed = table.nodes.get(key).is_some_and(|s| which(&s.node));
            doomed && table.take(key).is_some()
        })
    }

    /// Removes a node; returns whether it was there.
    pub(crate) fn remove(&self, key: &NodeKey) -> bool {
        self.remove_if(key, |_| true)
    }

    /// Removes the registration `id` of `key`; returns whether it went. A
    /// registration of the same key under another id (the node registered
    /// again after `id` was removed from the store) stays.
    pub(crate) fn remove_id(&self, key: &NodeKey, id: NodeId) -> bool {
        self.remove_if(key, |node| node.id == id)
    }

    /// Removes `key` if the table holds it attached to instance `instance`
    /// (whose lease ran out); returns whether it went. A node that has
    /// attached elsewhere since stays.
    pub(crate) fn remove_attached(&self, key: &NodeKey, instance: &str) -> bool {
        self.remove_if(key, |node| {
            node.endpoint.attached_instance() == Some(instance)
        })
    }

    /// Removes a node whose lease has run out by `now` (an eviction);
    /// returns whether it went. A node the table holds with a later lease
    /// registered or renewed after the store evicted it, and stays.
    pub(crate) fn remove_expired(&self, key: &NodeKey, now: Timestamp) -> bool {
        self.remove_if(key, |node| node.is_expired(now))
    }

    /// Starts a refresh from the store: take the mark, read the store, then
    /// [read](RefreshMark::read) what was read into the table.
    pub(crate) fn begin_refresh(&self) -> RefreshMark<'_> {
        let mut writes = self.writes();
        writes.seq += 1;
        writes.refreshing += 1;
        RefreshMark {
            table: self,
            seq: writes.seq,
            seen: HashSet::new(),
        }
    }

    /// Whether the last finished refresh read the store at `version`: if
    /// so, the store has not changed since, and the table holds what it
    /// holds plus the writes this instance made through it.
    pub(crate) fn refreshed_at(&self, version: Option<u64>) -> bool {
        version.is_some() && self.writes().version == version
    }

    /// The node registered as `key`, live or not.
    pub(crate) fn get(&self, key: &NodeKey) -> Option<Node> {
        self.slot(key).map(|s| Node::clone(&s.node))
    }

    /// Every node of `group` in id order, live or not.
    pub(crate) fn group(&self, group: &str) -> Vec<Node> {
        self.snapshot
            .load()
            .groups
            .get(group)
            .map(|g| g.slots.values().map(|s| Node::clone(&s.node)).collect())
            .unwrap_or_default()
    }

    /// The live nodes of `group` in id order; `None` when the table holds
    /// no node of it.
    pub(crate) fn live_slots(&self, group: &str, now: Timestamp) -> Option<Vec<Arc<Slot>>> {
        let snapshot = self.snapshot.load();
        let routes = snapshot.groups.get(group)?;
        Some(
            routes
                .slots
                .values()
                .filter(|s| !s.node.is_expired(now))
                .cloned()
                .collect(),
        )
    }

    /// How many nodes of `group` the table holds, live or not.
    pub(crate) fn group_len(&self, group: &str) -> usize {
        self.snapshot
            .load()
            .groups
            .get(group)
            .map_or(0, |g| g.slots.len())
    }

    /// How many nodes of one snapshot of the table are attached to each
    /// instance.
    pub(crate) fn attached_per_instance(&self) -> std::collections::HashMap<String, usize> {
        let mut counts = std::collections::HashMap::new();
        for slot in self.snapshot.load().nodes.values() {
            if let Some(instance) = slot.node.endpoint.attached_instance() {
                *counts.entry(instance.to_owned()).or_default() += 1;
            }
        }
        counts
    }

    /// How many nodes the table holds.
    pub(crate) fn len(&self) -> usize {
        self.snapshot.load().nodes.len()
    }

    /// Whether the table is empty.
    pub(crate) fn is_empty(&self) -> bool {
        self.snapshot.load().nodes.is_empty()
    }

    pub(crate) fn slot(&self, key: &NodeKey) -> Option<Arc<Slot>> {
        self.snapshot.load().nodes.get(key).cloned()
    }

    /// Picks a live node of `group` for an any-of-group request with
    /// `pick`, skipping the nodes in `exclude` (already tried).
    pub(crate) fn pick_any(
        &self,
        pick: &dyn Pick,
        group: &str,
        now: Timestamp,
        exclude: &[NodeId],
        turn: &mut Option<usize>,
    ) -> Picked {
        let snapshot = self.snapshot.load();
        let Some(routes) = snapshot.groups.get(group) else {
            return Picked::UnknownGroup;
        };
        let live: Vec<&Arc<Slot>> = routes
            .slots
            .values()
            .filter(|s| !s.node.is_expired(now) && !exclude.contains(&s.node.id))
            .collect();
        if live.is_empty() {
            return Picked::NoneLive;
        }
        let candidates: Vec<Candidate<'_>> = live
            .iter()
            .map(|s| Candidate::new(&s.node, &s.outstanding))
            .collect();
        let mut turn = Turn::new(turn, &routes.cursor);
        match pick.pick(group, &candidates, &mut turn) {
            Some(i) if i < live.len() => Picked::Node(Arc::clone(live[i])),
            _ => Picked::NoneLive,
        }
    }
}

/// What [`RoutingTable::pick_any`] found.
pub(crate) enum Picked {
    UnknownGroup,
    NoneLive,
    Node(Arc<Slot>),
}

/// A read-only view of a mediator's routing table: what requests are
/// routed by right now, and how busy each node is.
///
/// Writes go through the [`Mediator`](crate::Mediator) only (registration,
/// renewal, removal, eviction, refresh), so the table always agrees with
/// the store and with authorisation.
#[derive(Clone)]
pub struct Routes {
    table: Arc<RoutingTable>,
}

impl std::fmt::Debug for Routes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Routes")
            .field("nodes", &self.len())
            .finish()
    }
}

impl Routes {
    pub(crate) fn new(table: Arc<RoutingTable>) -> Self {
        Routes { table }
    }

    /// The node registered as `key`, live or not.
    pub fn get(&self, key: &NodeKey) -> Option<Node> {
        self.table.get(key)
    }

    /// Every node of `group` in id order, live or not.
    pub fn group(&self, group: &str) -> Vec<Node> {
        self.table.group(group)
    }

    /// How many nodes the table holds.
    /// How many nodes the table holds attached to each instance of the
    /// formation (`attached:ID`), live or not, as of one moment.
    pub fn attached_per_instance(&self) -> std::collections::HashMap<String, usize> {
        self.table.attached_per_instance()
    }

    /// How many nodes the table holds.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// How many requests this mediator has in flight to `key` right now;
    /// `None` when the table does not hold it.
    pub fn in_flight(&self, key: &NodeKey) -> Option<usize> {
        self.table
            .slot(key)
            .map(|s| s.outstanding.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Endpoint;
    use std::time::Duration;

    fn node(k: &str, id: u64, lease_until: Timestamp) -> Node {
        Node {
            id: NodeId(id),
            key: k.parse().unwrap(),
            endpoint: Endpoint::http("http://127.0.0.1:9").unwrap(),
            meta: Default::default(),
            created: Timestamp::from_millis(0),
            updated: None,
            lease_until,
        }
    }

    fn outstanding(table: &RoutingTable, k: &NodeKey) -> usize {
        table
            .slot(k)
            .expect("in the table")
            .outstanding
            .load(Ordering::Relaxed)
    }

    /// A request in flight while its node's slot is replaced (a renew, a
    /// re-registration, a refresh) must still be uncounted when it ends,
    /// or the node looks busy forever and any-of-group avoids it.
    #[test]
    fn in_flight_counts_survive_slot_replacement() {
        let table = RoutingTable::new();
        let lease = Timestamp::from_millis(1_000_000);
        let n = node("g/a", 1, lease);
        let k = n.key.clone();
        table.insert(Arc::new(n.clone()));

        let request = InFlight::new(table.slot(&k).unwrap());
        table.renew(
            &k,
            lease + Duration::from_secs(1),
            Timestamp::from_millis(1),
            Arc::new,
        );
        table.insert(Arc::new(n.clone()));
        assert!(table.begin_refresh().apply(vec![n]));
        assert_eq!(outstanding(&table, &k), 1, "the request is still in flight");
        drop(request);
        assert_eq!(
            outstanding(&table, &k),
            0,
            "the finished request still counts"
        );
    }

    #[test]
    fn a_renewal_is_when_the_node_was_last_heard_from() {
        let table = RoutingTable::new();
        let lease = Timestamp::from_millis(1_000_000);
        let n = node("g/a", 1, lease);
        let k = n.key.clone();
        table.insert(Arc::new(n));
        let heard = Timestamp::from_millis(500_000);
        table.renew(&k, lease + Duration::from_secs(60), heard, Arc::new);
        let snapshot = table.snapshot.load_full();
        let renewed = &snapshot.nodes[&k].node;
        assert_eq!(renewed.updated, Some(heard));
        assert_eq!(renewed.lease_until, lease + Duration::from_secs(60));
    }

    /// `renew` only updates a node the table holds; racing a `remove`, it
    /// must never bring the removed node back.
    #[test]
    fn renew_never_resurrects_a_removed_node() {
        use std::sync::atomic::AtomicBool;
        let table = Arc::new(RoutingTable::new());
        let lease = Timestamp::from_millis(1_000_000);
        let n = node("g/a", 1, lease);
        let k = n.key.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let renewals = Arc::new(AtomicUsize::new(0));
        let renewer = std::thread::spawn({
            let (table, k, stop, renewals) = (
                Arc::clone(&table),
                k.clone(),
                Arc::clone(&stop),
                Arc::clone(&renewals),
            );
            move || {
                while !stop.load(Ordering::Relaxed) {
                    table.renew(&k, lease, Timestamp::from_millis(1), Arc::new);
                    renewals.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        let mut resurrected = 0;
        for _ in 0..5_000 {
            table.insert(Arc::new(n.clone()));
            table.remove(&k);
            // Wait for a renewal that began after the removal to finish:
            // the one in progress may have read the node before it went.
            let seen = renewals.load(Ordering::SeqCst);
            while renewals.load(Ordering::SeqCst) < seen + 2 {
                std::thread::yield_now();
            }
            if table.get(&k).is_some() {
                resurrected += 1;
                break;
            }
        }
        stop.store(true, Ordering::Relaxed);
        renewer.join().unwrap();
        assert_eq!(resurrected, 0, "a renew brought a removed node back");
    }

    /// Broadcasts answer in id order; a key registered again under a new
    /// id moves to its new place.
    #[test]
    fn a_key_with_a_new_id_takes_its_place_in_id_order() {
        let table = RoutingTable::new();
        let lease = Timestamp::from_millis(1_000_000);
        table.insert(Arc::new(node("g/a", 1, lease)));
        table.insert(Arc::new(node("g/b", 2, lease)));
        table.insert(Arc::new(node("g/a", 3, lease)));
        let ids: Vec<u64> = table.group("g").iter().map(|n| n.id.0).collect();
        assert_eq!(ids, vec![2, 3]);
    }

    /// Of two refreshes under way, the one that read the store later wins,
    /// whichever lands first.
    #[test]
    fn an_older_refresh_landing_late_changes_nothing() {
        let table = RoutingTable::new();
        let lease = Timestamp::from_millis(1_000_000);
        let older = table.begin_refresh();
        let newer = table.begin_refresh();
        assert!(newer.apply(vec![node("g/new", 2, lease)]));
        assert!(!older.apply(vec![node("g/old", 1, lease)]));
        let ids: Vec<u64> = table.group("g").iter().map(|n| n.id.0).collect();
        assert_eq!(ids, vec![2]);
    }

    #[test]
    fn an_empty_refresh_empties_the_table() {
        let table = RoutingTable::new();
        table.insert(Arc::new(node("g/a", 1, Timestamp::from_millis(1_000))));
        assert!(table.begin_refresh().apply(Vec::new()));
        assert!(table.is_empty());
    }

    fn ids(table: &RoutingTable, group: &str) -> Vec<u64> {
        table.group(group).iter().map(|n| n.id.0).collect()
    }

    /// A write copies the path to what it changes and shares the rest:
    /// another group's nodes are the very same map before and after.
    #[test]
    fn a_write_leaves_other_groups_shared() {
        let table = RoutingTable::new();
        let lease = Timestamp::from_millis(1_000_000);
        for i in 0..100 {
            table.insert(Arc::new(node(&format!("big/n{i}"), i, lease)));
        }
        table.insert(Arc::new(node("other/a", 1_000, lease)));
        let before = table.snapshot.load_full();
        table.insert(Arc::new(node("other/b", 1_001, lease)));
        table.renew(
            &"other/a".parse().unwrap(),
            lease + Duration::from_secs(1),
            Timestamp::from_millis(1),
            Arc::new,
        );
        table.remove(&"other/b".parse().unwrap());
        let after = table.snapshot.load_full();
        let (old, new) = (&before.groups["big"], &after.groups["big"]);
        assert!(
            old.slots.ptr_eq(&new.slots),
            "the untouched group was copied"
        );
        assert!(Arc::ptr_eq(&old.cursor, &new.cursor));
        assert_eq!(table.len(), 101);
    }

    /// A renewal changes the lease of one node and nothing else: same id,
    /// same place, same in-flight count; an unknown key stays unknown.
    #[test]
    fn a_renewal_moves_only_the_lease() {
        let table = RoutingTable::new();
        let lease = Timestamp::from_millis(1_000_000);
        table.insert(Arc::new(node("g/a", 1, lease)));
        table.insert(Arc::new(node("g/b", 2, lease)));
        let a: NodeKey = "g/a".parse().unwrap();
        let request = InFlight::new(table.slot(&a).unwrap());
        let later = lease + Duration::from_secs(30);
        table.renew(&a, later, Timestamp::from_millis(1), Arc::new);
        assert_eq!(table.get(&a).unwrap().lease_until, later);
        assert_eq!(
            table.get(&"g/b".parse().unwrap()).unwrap().lease_until,
            lease
        );
        assert_eq!(ids(&table, "g"), vec![1, 2]);
        assert_eq!(outstanding(&table, &a), 1);
        drop(request);
        table.renew(
            &"g/c".parse().unwrap(),
            later,
            Timestamp::from_millis(1),
            Arc::new,
        );
        assert_eq!(table.len(), 2);
    }

    /// The last node of a group to go takes the group with it, whichever
    /// way it goes, so an emptied group is unknown, not empty.
    #[test]
    fn the_last_node_of_a_group_frees_the_group() {
        let table = RoutingTable::new();
        let lease = Timestamp::from_millis(1_000);
        table.insert(Arc::new(node("g/a", 1, lease)));
        table.insert(Arc::new(node("g/b", 2, lease)));
        table.insert(Arc::new(node("g/c", 3, lease)));
        assert!(table.remove(&"g/a".parse().unwrap()));
        assert!(!table.remove_id(&"g/b".parse().unwrap(), NodeId(9)));
        assert!(table.remove_id(&"g/b".parse().unwrap(), NodeId(2)));
        let c: NodeKey = "g/c".parse().unwrap();
        assert!(!table.remove_expired(&c, Timestamp::from_millis(999)));
        assert_eq!(table.group_len("g"), 1);
        assert!(table.remove_expired(&c, Timestamp::from_millis(1_000)));
        assert!(table.is_empty());
        assert!(table.snapshot.load().groups.get("g").is_none());
        assert!(table.live_slots("g", Timestamp::from_millis(0)).is_none());
        let picked = table.pick_any(
            &crate::policy::LeastInFlight,
            "g",
            Timestamp::from_millis(0),
            &[],
            &mut None,
        );
        assert!(matches!(picked, Picked::UnknownGroup));
    }

    /// A refresh that reads what the table holds changes no slot; one
    /// that reads a change replaces that node only, and drops the nodes
    /// it did not read.
    #[test]
    fn a_refresh_writes_only_what_changed() {
        let table = RoutingTable::new();
        let lease = Timestamp::from_millis(1_000_000);
        let (a, b, c) = (
            node("g/a", 1, lease),
            node("g/b", 2, lease),
            node("h/c", 3, lease),
        );
        for n in [&a, &b, &c] {
            table.insert(Arc::new(n.clone()));
        }
        let slot_a = table.slot(&a.key).unwrap();
        let slot_b = table.slot(&b.key).unwrap();
        assert!(table
            .begin_refresh()
            .apply(vec![a.clone(), b.clone(), c.clone()]));
        assert!(Arc::ptr_eq(&slot_a, &table.slot(&a.key).unwrap()));
        assert!(Arc::ptr_eq(&slot_b, &table.slot(&b.key).unwrap()));

        let renewed = Node {
            lease_until: lease + Duration::from_secs(5),
            ..b.clone()
        };
        assert!(table
            .begin_refresh()
            .apply(vec![a.clone(), renewed.clone()]));
        assert!(Arc::ptr_eq(&slot_a, &table.slot(&a.key).unwrap()));
        assert_eq!(table.get(&b.key), Some(renewed));
        assert_eq!(table.get(&c.key), None);
        assert_eq!(table.group_len("h"), 0);
        assert_eq!(table.len(), 2);
    }

    /// Writers in several threads and readers in others: every read sees a
    /// whole table (groups in id order, each node under its own key and
    /// group), and the end state is exactly what the writers left.
    #[test]
    fn concurrent_writers_and_readers() {
        use std::sync::atomic::AtomicBool;
        const WRITERS: u64 = 3;
        const KEYS: u64 = 200;
        let table = Arc::new(RoutingTable::new());
        let lease = Timestamp::from_millis(1_000_000);
        let done = Arc::new(AtomicBool::new(false));
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let (table, done) = (Arc::clone(&table), Arc::clone(&done));
                std::thread::spawn(move || {
                    let mut reads = 0u64;
                    while !done.load(Ordering::Relaxed) || reads == 0 {
                        for g in 0..WRITERS {
                            let group = format!("g{g}");
                            let nodes = table.group(&group);
                            assert!(nodes.windows(2).all(|w| w[0].id < w[1].id));
                            assert!(nodes.iter().all(|n| n.key.group() == group));
                            for n in nodes.iter().take(5) {
                                if let Some(found) = table.get(&n.key) {
                                    assert_eq!(found.key, n.key);
                                }
                            }
                        }
                        reads += 1;
                    }
                    reads
                })
            })
            .collect();
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let table = Arc::clone(&table);
                std::thread::spawn(move || {
                    for round in 0..5u64 {
                        for i in 0..KEYS {
                            let id = round * 1_000_000 + w * 10_000 + i;
                            table.insert(Arc::new(node(&format!("g{w}/n{i}"), id, lease)));
                        }
                        for i in (0..KEYS).step_by(2) {
                            let key: NodeKey = format!("g{w}/n{i}").parse().unwrap();
                            table.renew(
                                &key,
                                lease + Duration::from_secs(round),
                                Timestamp::from_millis(1),
                                Arc::new,
                            );
                            assert!(table.remove(&key));
                        }
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.join().unwrap();
        }
        done.store(true, Ordering::Relaxed);
        for reader in readers {
            assert!(reader.join().unwrap() > 0);
        }
        assert_eq!(table.len(), (WRITERS * KEYS / 2) as usize);
        for w in 0..WRITERS {
            let group = format!("g{w}");
            assert_eq!(table.group_len(&group), (KEYS / 2) as usize);
            let expected: Vec<u64> = (1..KEYS)
                .step_by(2)
                .map(|i| 4 * 1_000_000 + w * 10_000 + i)
                .collect();
            assert_eq!(ids(&table, &group), expected);
        }
    }
}
