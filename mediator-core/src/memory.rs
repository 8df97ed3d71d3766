//! A registry held in memory: for tests, demos and single-process use.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ops::Bound;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use crate::error::{Result, StoreError};
use crate::formation::{Change, ChangeKind, ChangePage, Instance, RetiredInstance};
use crate::model::{Node, NodeId, NodeKey, Registration};
use crate::registry::Registry;
use crate::time::Timestamp;

/// A [`Registry`] that keeps everything in memory and forgets it on drop.
#[derive(Debug, Default)]
pub struct MemoryRegistry {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    last_id: u64,
    /// The position of the newest change, for [`Registry::version`].
    version: u64,
    /// The feed, oldest first ([`Registry::changes`]).
    feed: VecDeque<Change>,
    /// The highest position compacted away.
    compacted: u64,
    /// Announced instances, by id.
    instances: BTreeMap<String, Instance>,
    /// Behind an `Arc` so the routing table can hold the same copy
    /// ([`Registry::shared`]); a write to a node the table holds copies it
    /// first, so the table's stays as it was until the table takes the new.
    by_id: BTreeMap<NodeId, Arc<Node>>,
    ids: HashMap<NodeKey, NodeId>,
}

impl State {
    fn record(&mut self, kind: ChangeKind) {
        self.version += 1;
        self.feed.push_back(Change {
            position: self.version,
            kind,
        });
    }

    fn put(&mut self, node: &Node) {
        self.record(ChangeKind::Put(node.clone()));
    }

    fn removed(&mut self, node: &Node) {
        self.record(ChangeKind::Removed {
            id: node.id,
            key: node.key.clone(),
        });
    }

    /// Removes every node attached to `instance`, recording each removal.
    fn detach(&mut self, instance: &str) -> Vec<NodeKey> {
        let gone: Vec<Arc<Node>> = self
            .by_id
            .values()
            .filter(|node| node.endpoint.attached_instance() == Some(instance))
            .cloned()
            .collect();
        for node in &gone {
            self.by_id.remove(&node.id);
            self.ids.remove(&node.key);
            self.removed(node);
        }
        gone.iter().map(|node| node.key.clone()).collect()
    }
}

impl MemoryRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, State>, StoreError> {
        // A poisoned lock means a panic mid-update; refuse rather than serve
        // a half-written state.
        self.state
            .lock()
            .map_err(|_| StoreError::new("memory registry lock poisoned", false))
    }
}

#[async_trait]
impl Registry for MemoryRegistry {
    async fn upsert(&self, registration: Registration, now: Timestamp) -> Result<Node, StoreError> {
        let mut state = self.lock()?;
        let lease_until = now + registration.ttl;
        if let Some(id) = state.ids.get(&registration.key).copied() {
            let node = state
                .by_id
                .get_mut(&id)
                .ok_or_else(|| StoreError::new("memory registry index out of step", false))?;
            let node = Arc::make_mut(node);
            node.endpoint = registration.endpoint;
            node.meta = registration.meta;
            node.updated = Some(now);
            node.lease_until = lease_until;
            let node = node.clone();
            state.put(&node);
            return Ok(node);
        }
        state.last_id += 1;
        let id = NodeId(state.last_id);
        let node = Node {
            id,
            key: registration.key,
            endpoint: registration.endpoint,
            meta: registration.meta,
            created: now,
            updated: None,
            lease_until,
        };
        state.ids.insert(node.key.clone(), id);
        state.by_id.insert(id, Arc::new(node.clone()));
        state.put(&node);
        Ok(node)
    }

    async fn renew(
        &self,
        key: &NodeKey,
        ttl: Duration,
        now: Timestamp,
    ) -> Result<Option<Timestamp>, StoreError> {
        let mut state = self.lock()?;
        let Some(id) = state.ids.get(key).copied() else {
            return Ok(None);
        };
        let Some(node) = state.by_id.get_mut(&id) else {
            return Ok(None);
        };
        let node = Arc::make_mut(node);
        node.lease_until = now + ttl;
        node.updated = Some(now);
        let node = node.clone();
        state.put(&node);
        Ok(Some(node.lease_until))
    }

    async fn remove(&self, id: NodeId) -> Result<u64, StoreError> {
        let mut state = self.lock()?;
        match state.by_id.remove(&id) {
            Some(node) => {
                state.ids.remove(&node.key);
                state.removed(&node);
                Ok(1)
            }
            None => Ok(0),
        }
    }

    async fn remove_key(&self, key: &NodeKey) -> Result<u64, StoreError> {
        let mut state = self.lock()?;
        match state.ids.remove(key) {
            Some(id) => {
                if let Some(node) = state.by_id.remove(&id) {
                    state.removed(&node);
                }
                Ok(1)
            }
            None => Ok(0),
        }
    }

    async fn get(&self, key: &NodeKey) -> Result<Option<Node>, StoreError> {
        let state = self.lock()?;
        Ok(state
            .ids
            .get(key)
            .and_then(|id| state.by_id.get(id))
            .map(|node| Node::clone(node)))
    }

    async fn get_by_id(&self, id: NodeId) -> Result<Option<Node>, StoreError> {
        Ok(self.lock()?.by_id.get(&id).map(|node| Node::clone(node)))
    }

    async fn list(&self, group: Option<&str>) -> Result<Vec<Node>, StoreError> {
        let state = self.lock()?;
        Ok(state
            .by_id
            .values()
            .filter(|node| group.is_none_or(|g| node.key.group() == g))
            .map(|node| Node::clone(node))
            .collect())
    }

    async fn list_page(
        &self,
        group: Option<&str>,
        after: Option<NodeId>,
        limit: usize,
    ) -> Result<Vec<Node>, StoreError> {
        let state = self.lock()?;
        let from = after.map_or(Bound::Unbounded, Bound::Excluded);
        Ok(state
            .by_id
            .range((from, Bound::Unbounded))
            .map(|(_, node)| node)
            .filter(|node| group.is_none_or(|g| node.key.group() == g))
            .take(limit)
            .map(|node| Node::clone(node))
            .collect())
    }

    async fn evict_expired(&self, now: Timestamp) -> Result<Vec<NodeKey>, StoreError> {
        let mut state = self.lock()?;
        let expired: Vec<Arc<Node>> = state
            .by_id
            .values()
            .filter(|node| node.is_expired(now))
            .cloned()
            .collect();
        for node in &expired {
            state.by_id.remove(&node.id);
            state.ids.remove(&node.key);
            state.removed(node);
        }
        Ok(expired.iter().map(|node| node.key.clone()).collect())
    }

    async fn changes(&self, after: u64, limit: usize) -> Result<Option<ChangePage>, StoreError> {
        let state = self.lock()?;
        if after < state.compacted {
            return Ok(Some(ChangePage {
                changes: Vec::new(),
                next: after,
                gap: true,
            }));
        }
        // Positions are consecutive, so the first change after `after`
        // sits at a known offset from the oldest one kept.
        let skip = usize::try_from(after - state.compacted)
            .unwrap_or(usize::MAX)
            .min(state.feed.len());
        let changes: Vec<Change> = state.feed.range(skip..).take(limit).cloned().collect();
        let next = changes.last().map_or(after, |change| change.position);
        Ok(Some(ChangePage {
            changes,
            next,
            gap: false,
        }))
    }

    async fn compact_changes(&self, through: u64) -> Result<u64, StoreError> {
        let mut state = self.lock()?;
        let mut gone = 0;
        while state.feed.front().is_some_and(|c| c.position <= through) {
            state.feed.pop_front();
            state.compacted += 1;
            gone += 1;
        }
        Ok(gone)
    }

    async fn announce_instance(
        &self,
        id: &str,
        peer: &str,
        ttl: Duration,
        now: Timestamp,
    ) -> Result<Instance, StoreError> {
        let fresh =
            Instance::new(id, peer, now, ttl).map_err(|e| StoreError::new(e.to_string(), false))?;
        let mut state = self.lock()?;
        let instance = state
            .instances
            .entry(id.to_owned())
            .and_modify(|held| {
                held.peer = fresh.peer.clone();
                held.heartbeat = now;
                held.lease_until = fresh.lease_until;
            })
            .or_insert(fresh);
        Ok(instance.clone())
    }

    async fn instances(&self) -> Result<Vec<Instance>, StoreError> {
        Ok(self.lock()?.instances.values().cloned().collect())
    }

    async fn retire_instance(&self, id: &str) -> Result<Vec<NodeKey>, StoreError> {
        let mut state = self.lock()?;
        state.instances.remove(id);
        Ok(state.detach(id))
    }

    async fn expire_instances(&self, now: Timestamp) -> Result<Vec<RetiredInstance>, StoreError> {
        let mut state = self.lock()?;
        let expired: Vec<String> = state
            .instances
            .values()
            .filter(|instance| instance.is_expired(now))
            .map(|instance| instance.id.clone())
            .collect();
        Ok(expired
            .into_iter()
            .map(|id| {
                state.instances.remove(&id);
                let detached = state.detach(&id);
                RetiredInstance { id, detached }
            })
            .collect())
    }

    async fn version(&self) -> Result<Option<u64>, StoreError> {
        Ok(Some(self.lock()?.version))
    }

    fn shared(&self, node: &Node) -> Option<Arc<Node>> {
        // A poisoned lock only costs the table its own copy.
        let state = self.state.lock().ok()?;
        state
            .by_id
            .get(&node.id)
            .filter(|held| ***held == *node)
            .cloned()
    }
}

#[cfg(all(test, feature = "testkit"))]
mod tests {
    #[tokio::test]
    async fn passes_the_conformance_suite() {
        crate::testkit::conformance(|| async { super::MemoryRegistry::new() }).await;
    }
}
