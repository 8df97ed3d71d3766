//! Registries that misbehave on purpose.

use std::time::Duration;

use mediator_core::{
    async_trait, MemoryRegistry, Node, NodeId, NodeKey, Registration, Registry, StoreError,
    Timestamp,
};

/// A registry that works but reports its store down to readiness checks
/// (`ping`), as a database that refuses new connections would.
pub struct DownRegistry(pub MemoryRegistry);

#[async_trait]
impl Registry for DownRegistry {
    async fn upsert(&self, r: Registration, now: Timestamp) -> Result<Node, StoreError> {
        self.0.upsert(r, now).await
    }
    async fn renew(
        &self,
        key: &NodeKey,
        ttl: Duration,
        now: Timestamp,
    ) -> Result<Option<Timestamp>, StoreError> {
        self.0.renew(key, ttl, now).await
    }
    async fn remove(&self, id: NodeId) -> Result<u64, StoreError> {
        self.0.remove(id).await
    }
    async fn remove_key(&self, key: &NodeKey) -> Result<u64, StoreError> {
        self.0.remove_key(key).await
    }
    async fn get(&self, key: &NodeKey) -> Result<Option<Node>, StoreError> {
        self.0.get(key).await
    }
    async fn get_by_id(&self, id: NodeId) -> Result<Option<Node>, StoreError> {
        self.0.get_by_id(id).await
    }
    async fn list(&self, group: Option<&str>) -> Result<Vec<Node>, StoreError> {
        self.0.list(group).await
    }
    async fn evict_expired(&self, now: Timestamp) -> Result<Vec<NodeKey>, StoreError> {
        self.0.evict_expired(now).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        Err(StoreError::new("connection refused", true))
    }
}
