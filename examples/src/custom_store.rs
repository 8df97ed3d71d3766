//! How to write your own store: a complete [`Registry`] in one page, and
//! the one call that proves it keeps the contract.
//!
//! `VecRegistry` keeps registrations in a vector behind a lock. A real
//! store would talk to a database, but the shape is the same: implement the
//! eight methods, then run [`mediator_core::testkit::conformance`] from a
//! test (see the bottom of this file), with `mediator-core`'s `testkit`
//! feature in your dev-dependencies.
//!
//! ```
//! use mediator_examples::custom_store::VecRegistry;
//! use mediator_core::{Authenticator, Mediator};
//!
//! let mediator = Mediator::builder()
//!     .registry(VecRegistry::default())
//!     .authenticator(Authenticator::hs256("a secret of at least 32 bytes!!!"))
//!     .build()
//!     .unwrap();
//! # drop(mediator);
//! ```

use std::time::Duration;

use mediator_core::{
    async_trait, Node, NodeId, NodeKey, Registration, Registry, StoreError, Timestamp,
};
use tokio::sync::RwLock;

/// A [`Registry`] over a vector: ids count up from 1, rows stay in id order.
#[derive(Debug, Default)]
pub struct VecRegistry {
    rows: RwLock<Rows>,
}

#[derive(Debug, Default)]
struct Rows {
    last_id: u64,
    nodes: Vec<Node>,
}

#[async_trait]
impl Registry for VecRegistry {
    async fn upsert(&self, registration: Registration, now: Timestamp) -> Result<Node, StoreError> {
        // One write lock over the look-up and the insert, so two upserts of
        // one key can never both insert.
        let mut rows = self.rows.write().await;
        let lease_until = now + registration.ttl;
        if let Some(node) = rows.nodes.iter_mut().find(|n| n.key == registration.key) {
            node.endpoint = registration.endpoint;
            node.meta = registration.meta;
            node.updated = Some(now);
            node.lease_until = lease_until;
            return Ok(node.clone());
        }
        rows.last_id += 1;
        let node = Node {
            id: NodeId(rows.last_id),
            key: registration.key,
            endpoint: registration.endpoint,
            meta: registration.meta,
            created: now,
            updated: None,
            lease_until,
        };
        rows.nodes.push(node.clone());
        Ok(node)
    }

    async fn renew(
        &self,
        key: &NodeKey,
        ttl: Duration,
        now: Timestamp,
    ) -> Result<Option<Timestamp>, StoreError> {
        let mut rows = self.rows.write().await;
        Ok(rows.nodes.iter_mut().find(|n| &n.key == key).map(|node| {
            node.lease_until = now + ttl;
            node.updated = Some(now);
            node.lease_until
        }))
    }

    async fn remove(&self, id: NodeId) -> Result<u64, StoreError> {
        let mut rows = self.rows.write().await;
        let before = rows.nodes.len();
        rows.nodes.retain(|n| n.id != id);
        Ok((before - rows.nodes.len()) as u64)
    }

    async fn remove_key(&self, key: &NodeKey) -> Result<u64, StoreError> {
        let mut rows = self.rows.write().await;
        let before = rows.nodes.len();
        rows.nodes.retain(|n| &n.key != key);
        Ok((before - rows.nodes.len()) as u64)
    }

    async fn get(&self, key: &NodeKey) -> Result<Option<Node>, StoreError> {
        Ok(self
            .rows
            .read()
            .await
            .nodes
            .iter()
            .find(|n| &n.key == key)
            .cloned())
    }

    async fn get_by_id(&self, id: NodeId) -> Result<Option<Node>, StoreError> {
        Ok(self
            .rows
            .read()
            .await
            .nodes
            .iter()
            .find(|n| n.id == id)
            .cloned())
    }

    async fn list(&self, group: Option<&str>) -> Result<Vec<Node>, StoreError> {
        let rows = self.rows.read().await;
        Ok(rows
            .nodes
            .iter()
            .filter(|n| group.is_none_or(|g| n.key.group() == g))
            .cloned()
            .collect())
    }

    async fn evict_expired(&self, now: Timestamp) -> Result<Vec<NodeKey>, StoreError> {
        let mut rows = self.rows.write().await;
        let (gone, kept): (Vec<Node>, Vec<Node>) =
            rows.nodes.drain(..).partition(|n| n.is_expired(now));
        rows.nodes = kept;
        Ok(gone.into_iter().map(|n| n.key).collect())
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn keeps_the_registry_contract() {
        mediator_core::testkit::conformance(|| async { super::VecRegistry::default() }).await;
    }
}
