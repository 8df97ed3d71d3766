//! The conformance suite catches registries that break the contract.

use std::time::Duration;

use mediator_core::{
    async_trait, testkit, MemoryRegistry, Node, NodeId, NodeKey, Registration, Registry,
    StoreError, Timestamp,
};

type Result<T> = std::result::Result<T, StoreError>;

/// Which rule the faulty registry breaks.
#[derive(Clone, Copy)]
enum Flaw {
    ListsNewestFirst,
    EvictsOneTooFew,
    ForgetsCreatedOnUpdate,
    /// Stores only the endpoint schemes it knew when it was written.
    KnowsOnlyHttpAndAttached,
    /// Seeks its pages from the id given, not past it.
    PagesRepeatTheirLastNode,
}

struct Faulty(MemoryRegistry, Flaw);

#[async_trait]
impl Registry for Faulty {
    async fn upsert(&self, registration: Registration, now: Timestamp) -> Result<Node> {
        let scheme = registration.endpoint.scheme();
        if matches!(self.1, Flaw::KnowsOnlyHttpAndAttached)
            && !matches!(scheme, "http" | "https" | "attached")
        {
            return Err(StoreError::new(
                format!("unknown endpoint scheme {scheme}"),
                false,
            ));
        }
        let mut node = self.0.upsert(registration, now).await?;
        if matches!(self.1, Flaw::ForgetsCreatedOnUpdate) && node.updated.is_some() {
            node.created = now;
        }
        Ok(node)
    }
    async fn renew(
        &self,
        key: &NodeKey,
        ttl: Duration,
        now: Timestamp,
    ) -> Result<Option<Timestamp>> {
        self.0.renew(key, ttl, now).await
    }
    async fn remove(&self, id: NodeId) -> Result<u64> {
        self.0.remove(id).await
    }
    async fn remove_key(&self, key: &NodeKey) -> Result<u64> {
        self.0.remove_key(key).await
    }
    async fn get(&self, key: &NodeKey) -> Result<Option<Node>> {
        self.0.get(key).await
    }
    async fn get_by_id(&self, id: NodeId) -> Result<Option<Node>> {
        self.0.get_by_id(id).await
    }
    async fn list(&self, group: Option<&str>) -> Result<Vec<Node>> {
        let mut nodes = self.0.list(group).await?;
        if matches!(self.1, Flaw::ListsNewestFirst) {
            nodes.reverse();
        }
        Ok(nodes)
    }
    async fn list_page(
        &self,
        group: Option<&str>,
        after: Option<NodeId>,
        limit: usize,
    ) -> Result<Vec<Node>> {
        let after = match (self.1, after) {
            (Flaw::PagesRepeatTheirLastNode, Some(NodeId(id))) => Some(NodeId(id - 1)),
            (_, after) => after,
        };
        self.0.list_page(group, after, limit).await
    }
    async fn evict_expired(&self, now: Timestamp) -> Result<Vec<NodeKey>> {
        // Evicting as of one millisecond earlier misses leases ending exactly now.
        let at = match self.1 {
            Flaw::EvictsOneTooFew => Timestamp::from_millis(now.as_millis() - 1),
            _ => now,
        };
        self.0.evict_expired(at).await
    }
}

async fn failure_of(flaw: Flaw) -> String {
    let run = tokio::spawn(testkit::conformance(move || async move {
        Faulty(MemoryRegistry::new(), flaw)
    }));
    let panic = run
        .await
        .expect_err("the suite passed a faulty registry")
        .into_panic();
    panic.downcast_ref::<String>().cloned().unwrap_or_default()
}

#[tokio::test]
async fn a_registry_listing_out_of_order_fails() {
    let message = failure_of(Flaw::ListsNewestFirst).await;
    assert!(
        message.contains("list_is_stable_and_filters_by_group"),
        "{message}"
    );
}

#[tokio::test]
async fn a_registry_missing_exactly_expired_leases_fails() {
    let message = failure_of(Flaw::EvictsOneTooFew).await;
    assert!(
        message.contains("evict_removes_exactly_the_expired"),
        "{message}"
    );
}

#[tokio::test]
async fn a_registry_losing_created_on_update_fails() {
    let message = failure_of(Flaw::ForgetsCreatedOnUpdate).await;
    assert!(message.contains("upsert_updates_in_place"), "{message}");
}

#[tokio::test]
async fn a_registry_refusing_a_teams_own_scheme_fails() {
    let message = failure_of(Flaw::KnowsOnlyHttpAndAttached).await;
    assert!(
        message.contains("meta_and_endpoints_round_trip"),
        "{message}"
    );
}

#[tokio::test]
async fn a_registry_whose_pages_overlap_fails() {
    let message = failure_of(Flaw::PagesRepeatTheirLastNode).await;
    assert!(
        message.contains("pages_walk_the_list_in_id_order"),
        "{message}"
    );
}
