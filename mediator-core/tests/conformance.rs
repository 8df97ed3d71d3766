//! The conformance suite catches registries that break the contract.

use std::time::Duration;

use mediator_core::formation::{ChangeKind, ChangePage, Instance, RetiredInstance};
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
    /// Leaves renewals out of its feed.
    FeedsNoRenewals,
    /// Forgets an expired instance but keeps the nodes attached to it.
    ExpiresInstancesOnly,
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
    async fn version(&self) -> Result<Option<u64>> {
        self.0.version().await
    }
    async fn changes(&self, after: u64, limit: usize) -> Result<Option<ChangePage>> {
        let mut page = self.0.changes(after, limit).await?;
        if let (Flaw::FeedsNoRenewals, Some(page)) = (self.1, page.as_mut()) {
            // A renewal is a Put that changed nothing but the lease.
            let nodes = self.0.list(None).await?;
            page.changes.retain(|change| match &change.kind {
                ChangeKind::Put(node) => node.updated.is_none() || !nodes.contains(node),
                ChangeKind::Removed { .. } => true,
            });
        }
        Ok(page)
    }
    async fn compact_changes(&self, through: u64) -> Result<u64> {
        self.0.compact_changes(through).await
    }
    async fn announce_instance(
        &self,
        id: &str,
        peer: &str,
        ttl: Duration,
        now: Timestamp,
    ) -> Result<Instance> {
        self.0.announce_instance(id, peer, ttl, now).await
    }
    async fn instances(&self) -> Result<Vec<Instance>> {
        self.0.instances().await
    }
    async fn retire_instance(&self, id: &str) -> Result<Vec<NodeKey>> {
        self.0.retire_instance(id).await
    }
    async fn expire_instances(&self, now: Timestamp) -> Result<Vec<RetiredInstance>> {
        if matches!(self.1, Flaw::ExpiresInstancesOnly) {
            let expired: Vec<Instance> = self
                .0
                .instances()
                .await?
                .into_iter()
                .filter(|i| i.is_expired(now))
                .collect();
            // Renewing every other instance far ahead and retiring these
            // by hand would take their nodes; so keep them by re-adding.
            let mut retired = Vec::new();
            for instance in expired {
                let nodes = self.0.list(None).await?;
                self.0.retire_instance(&instance.id).await?;
                for node in nodes {
                    if node.endpoint.attached_instance() == Some(instance.id.as_str()) {
                        let registration = Registration::new(
                            node.key.clone(),
                            node.endpoint.clone(),
                            Duration::from_secs(60),
                        );
                        self.0.upsert(registration, now).await?;
                    }
                }
                retired.push(RetiredInstance {
                    id: instance.id,
                    detached: Vec::new(),
                });
            }
            return Ok(retired);
        }
        self.0.expire_instances(now).await
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

#[tokio::test]
async fn a_registry_whose_feed_skips_renewals_fails() {
    let message = failure_of(Flaw::FeedsNoRenewals).await;
    assert!(
        message.contains("the_feed_replays_to_the_store"),
        "{message}"
    );
}

#[tokio::test]
async fn a_registry_keeping_the_nodes_of_an_expired_instance_fails() {
    let message = failure_of(Flaw::ExpiresInstancesOnly).await;
    assert!(
        message.contains("an_expired_instance_takes_its_nodes"),
        "{message}"
    );
}
