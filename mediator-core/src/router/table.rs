//! The in-memory map from targets to nodes, read on every request.
//!
//! Reads are lock-free (an `ArcSwap` of the table); writes copy one
//! group's entry, which keeps registration cheap while requests never wait
//! for it. The [`Mediator`](crate::Mediator) is its only writer: it writes
//! through on every registration it sees and refreshes from the store for
//! changes made by other instances. Others read it through [`Routes`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use crate::model::{Node, NodeId, NodeKey};
use crate::policy::{Candidate, Pick, Turn};
use crate::time::Timestamp;

/// A node as the routing table holds it, with its count of requests in flight.
#[derive(Debug)]
pub(crate) struct Slot {
    pub(crate) node: Node,
    /// Shared by every slot that replaces this one for the same key (a
    /// renew, a re-registration, a refresh), so a request that started on
    /// the old slot is uncounted on the new one when it ends.
    outstanding: Arc<AtomicUsize>,
}

impl Slot {
    /// A slot for `node` that counts on `outstanding`.
    pub(crate) fn new(node: Node, outstanding: Arc<AtomicUsize>) -> Arc<Slot> {
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

#[derive(Debug, Default)]
pub(crate) struct GroupRoutes {
    /// In id order, so broadcasts answer in a stable order.
    pub(crate) slots: Vec<Arc<Slot>>,
    /// Round-robin position among equally busy nodes.
    cursor: AtomicUsize,
}

/// The in-memory map from targets to nodes, read on every request.
#[derive(Debug, Default)]
pub(crate) struct RoutingTable {
    pub(crate) groups: ArcSwap<HashMap<String, Arc<GroupRoutes>>>,
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
}

/// A refresh under way: taken by [`RoutingTable::begin_refresh`] before
/// reading the store, and [applied](RefreshMark::apply) with what was read.
///
/// Writes to the table made in between (registrations, renewals,
/// removals, evictions this instance saw) win over the older store read.
#[derive(Debug)]
pub(crate) struct RefreshMark<'a> {
    table: &'a RoutingTable,
    seq: u64,
}

impl RefreshMark<'_> {
    /// Replaces the table with `nodes`, read from the store after this mark
    /// was taken, except for the keys written since, which keep what the
    /// writes left. Returns `false`, changing nothing, when a refresh
    /// marked later has already been applied (this read is older).
    pub(crate) fn apply(self, nodes: Vec<Node>) -> bool {
        let mut writes = self.table.writes();
        if self.seq < writes.applied {
            return false;
        }
        writes.applied = self.seq;
        let seq = self.seq;
        let written_since = |key: &NodeKey| writes.touched.get(key).is_some_and(|&at| at > seq);
        let current = self.table.groups.load();
        let mut kept: Vec<Arc<Slot>> = current
            .values()
            .flat_map(|g| g.slots.iter())
            .filter(|s| written_since(&s.node.key))
            .cloned()
            .collect();
        let nodes: Vec<Node> = nodes
            .into_iter()
            .filter(|n| !written_since(&n.key))
            .collect();
        kept.extend(RoutingTable::slots_for(&current, nodes));
        self.table.store_slots(&current, kept);
        // Only refreshes marked later may still land, and they compare
        // against their own, later, marks.
        writes.touched.retain(|_, at| *at > seq);
        // Released before `self` is dropped, which takes the lock again.
        drop(writes);
        true
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

    /// Applies `change` to the slots of `key`'s group as one copy-on-write
    /// step, recording that `key` was written.
    fn edit_group(&self, key: &NodeKey, change: impl FnOnce(&mut Vec<Arc<Slot>>)) {
        let group = key.group();
        let mut writes = self.writes();
        writes.seq += 1;
        if writes.refreshing > 0 {
            let seq = writes.seq;
            writes.touched.insert(key.clone(), seq);
        }
        let current = self.groups.load();
        let old = current.get(group);
        let mut slots = old.map(|g| g.slots.clone()).unwrap_or_default();
        change(&mut slots);
        let mut next = HashMap::clone(&current);
        if slots.is_empty() {
            next.remove(group);
        } else {
            let cursor = old.map_or(0, |g| g.cursor.load(Ordering::Relaxed));
            next.insert(
                group.to_owned(),
                Arc::new(GroupRoutes {
                    slots,
                    cursor: AtomicUsize::new(cursor),
                }),
            );
        }
        self.groups.store(Arc::new(next));
    }

    /// Adds or replaces a node (write-through on registration).
    pub(crate) fn insert(&self, node: Node) {
        let key = node.key.clone();
        self.edit_group(&key, |slots| {
            let outstanding = match slots.iter().position(|s| s.node.key == node.key) {
                Some(i) => Arc::clone(&slots.remove(i).outstanding),
                None => Arc::default(),
            };
            // Re-placed by id: a key registered again may have a new id.
            let at = slots.partition_point(|s| s.node.id < node.id);
            slots.insert(at, Slot::new(node, outstanding));
        });
    }

    /// Sets a node's lease end, if the table has it (never adds it back).
    pub(crate) fn renew(&self, key: &NodeKey, lease_until: Timestamp) {
        self.edit_group(key, |slots| {
            if let Some(slot) = slots.iter_mut().find(|s| &s.node.key == key) {
                let mut node = slot.node.clone();
                node.lease_until = lease_until;
                *slot = Slot::new(node, Arc::clone(&slot.outstanding));
            }
        });
    }

    /// Removes a node; returns whether it was there.
    pub(crate) fn remove(&self, key: &NodeKey) -> bool {
        let mut removed = false;
        self.edit_group(key, |slots| {
            let before = slots.len();
            slots.retain(|s| &s.node.key != key);
            removed = slots.len() != before;
        });
        removed
    }

    /// Removes the registration `id` of `key`; returns whether it went. A
    /// registration of the same key under another id (the node registered
    /// again after `id` was removed from the store) stays.
    pub(crate) fn remove_id(&self, key: &NodeKey, id: NodeId) -> bool {
        let mut removed = false;
        self.edit_group(key, |slots| {
            let before = slots.len();
            slots.retain(|s| &s.node.key != key || s.node.id != id);
            removed = slots.len() != before;
        });
        removed
    }

    /// Removes a node whose lease has run out by `now` (an eviction);
    /// returns whether it went. A node the table holds with a later lease
    /// registered or renewed after the store evicted it, and stays.
    pub(crate) fn remove_expired(&self, key: &NodeKey, now: Timestamp) -> bool {
        let mut removed = false;
        self.edit_group(key, |slots| {
            let before = slots.len();
            slots.retain(|s| &s.node.key != key || !s.node.is_expired(now));
            removed = slots.len() != before;
        });
        removed
    }

    /// Starts a refresh from the store: take the mark, read the store, then
    /// [apply](RefreshMark::apply) what was read.
    pub(crate) fn begin_refresh(&self) -> RefreshMark<'_> {
        let mut writes = self.writes();
        writes.seq += 1;
        writes.refreshing += 1;
        RefreshMark {
            table: self,
            seq: writes.seq,
        }
    }

    /// Slots for `nodes`, sharing the in-flight counters of the slots
    /// `current` holds for the same keys.
    fn slots_for(current: &HashMap<String, Arc<GroupRoutes>>, nodes: Vec<Node>) -> Vec<Arc<Slot>> {
        nodes
            .into_iter()
            .map(|node| {
                let outstanding = current
                    .get(node.key.group())
                    .and_then(|g| g.slots.iter().find(|s| s.node.key == node.key))
                    .map_or_else(Arc::default, |s| Arc::clone(&s.outstanding));
                Slot::new(node, outstanding)
            })
            .collect()
    }

    /// Swaps in a table of `slots`, grouped and in id order, keeping each
    /// surviving group's round-robin position. Called with the writer lock held.
    fn store_slots(&self, current: &HashMap<String, Arc<GroupRoutes>>, slots: Vec<Arc<Slot>>) {
        let mut next: HashMap<String, Vec<Arc<Slot>>> = HashMap::new();
        for slot in slots {
            next.entry(slot.node.key.group().to_owned())
                .or_default()
                .push(slot);
        }
        let table = next
            .into_iter()
            .map(|(group, mut slots)| {
                slots.sort_by_key(|s| s.node.id);
                let cursor = current
                    .get(&group)
                    .map_or(0, |g| g.cursor.load(Ordering::Relaxed));
                let routes = GroupRoutes {
                    slots,
                    cursor: AtomicUsize::new(cursor),
                };
                (group, Arc::new(routes))
            })
            .collect();
        self.groups.store(Arc::new(table));
    }

    /// The node registered as `key`, live or not.
    pub(crate) fn get(&self, key: &NodeKey) -> Option<Node> {
        self.slot(key).map(|s| s.node.clone())
    }

    /// Every node of `group` in id order, live or not.
    pub(crate) fn group(&self, group: &str) -> Vec<Node> {
        self.groups
            .load()
            .get(group)
            .map(|g| g.slots.iter().map(|s| s.node.clone()).collect())
            .unwrap_or_default()
    }

    /// How many nodes of `group` the table holds, live or not.
    pub(crate) fn group_len(&self, group: &str) -> usize {
        self.groups.load().get(group).map_or(0, |g| g.slots.len())
    }

    /// How many nodes the table holds.
    pub(crate) fn len(&self) -> usize {
        self.groups.load().values().map(|g| g.slots.len()).sum()
    }

    /// Whether the table is empty.
    pub(crate) fn is_empty(&self) -> bool {
        self.groups.load().is_empty()
    }

    pub(crate) fn slot(&self, key: &NodeKey) -> Option<Arc<Slot>> {
        self.groups
            .load()
            .get(key.group())
            .and_then(|g| g.slots.iter().find(|s| &s.node.key == key).cloned())
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
        let groups = self.groups.load();
        let Some(routes) = groups.get(group) else {
            return Picked::UnknownGroup;
        };
        let live: Vec<&Arc<Slot>> = routes
            .slots
            .iter()
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
        table.insert(n.clone());

        let request = InFlight::new(table.slot(&k).unwrap());
        table.renew(&k, lease + Duration::from_secs(1));
        table.insert(n.clone());
        assert!(table.begin_refresh().apply(vec![n]));
        assert_eq!(outstanding(&table, &k), 1, "the request is still in flight");
        drop(request);
        assert_eq!(
            outstanding(&table, &k),
            0,
            "the finished request still counts"
        );
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
                    table.renew(&k, lease);
                    renewals.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        let mut resurrected = 0;
        for _ in 0..5_000 {
            table.insert(n.clone());
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
        table.insert(node("g/a", 1, lease));
        table.insert(node("g/b", 2, lease));
        table.insert(node("g/a", 3, lease));
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
        table.insert(node("g/a", 1, Timestamp::from_millis(1_000)));
        assert!(table.begin_refresh().apply(Vec::new()));
        assert!(table.is_empty());
    }
}
