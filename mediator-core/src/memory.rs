//! A registry held in memory: for tests, demos and single-process use.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use crate::error::{Result, StoreError};
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
    /// Moved by every change, for [`Registry::version`].
    version: u64,
    /// Behind an `Arc` so the routing table can hold the same copy
    /// ([`Registry::shared`]); a write to a node the table holds copies it
    /// first, so the table's stays as it was until the table takes the new.
    by_id: BTreeMap<NodeId, Arc<Node>>,
    ids: HashMap<NodeKey, NodeId>,
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
        state.version += 1;
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
            return Ok(node.clone());
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
        state.version += 1;
        Ok(state.by_id.get_mut(&id).map(|node| {
            let node = Arc::make_mut(node);
            node.lease_until = now + ttl;
            node.updated = Some(now);
            node.lease_until
        }))
    }

    async fn remove(&self, id: NodeId) -> Result<u64, StoreError> {
        let mut state = self.lock()?;
        match state.by_id.remove(&id) {
            Some(node) => {
                state.ids.remove(&node.key);
                state.version += 1;
                Ok(1)
            }
            None => Ok(0),
        }
    }

    async fn remove_key(&self, key: &NodeKey) -> Result<u64, StoreError> {
        let mut state = self.lock()?;
        match state.ids.remove(key) {
            Some(id) => {
                state.by_id.remove(&id);
                state.version += 1;
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
        let expired: Vec<(NodeId, NodeKey)> = state
            .by_id
            .values()
            .filter(|node| node.is_expired(now))
            .map(|node| (node.id, node.key.clone()))
            .collect();
        if !expired.is_empty() {
            state.version += 1;
        }
        for (id, key) in &expired {
            state.by_id.remove(id);
            state.ids.remove(key);
        }
        Ok(expired.into_iter().map(|(_, key)| key).collect())
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
