//! The routing table at size, through the public API of a mediator over the
//! in-memory registry: filling it with 100,000 registrations (into one
//! group, and into 100,000 groups of one), then, with that many nodes
//! registered, one registration, one renewal, a unicast request, an
//! any-of-group request and a read of the whole group.
//!
//! Run with `cargo bench -p mediator-core --bench table`;
//! `MEDIATOR_BENCH_NODES=N` changes the size (100,000 by default).
//! Deliveries go to an in-process deliverer that answers at once, so the
//! figures are the mediator's own cost.

#![allow(missing_docs)] // criterion's macros generate undocumented items

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use http::StatusCode;
use mediator_core::{
    async_trait, Authenticator, Deliver, DeliverError, Endpoint, Envelope, Identity, Mediator,
    MemoryRegistry, Node, NodeKey, Registration, Reply, RequestContext, Target,
};
use tokio::runtime::Runtime;

const TTL: Duration = Duration::from_secs(600);
const SECRET: &str = "a secret of at least 32 bytes for the table bench";

/// Answers every request at once, without leaving the process.
struct AnswerAtOnce;

#[async_trait]
impl Deliver for AnswerAtOnce {
    fn schemes(&self) -> Vec<String> {
        vec!["bench".into()]
    }
    async fn deliver(
        &self,
        _: &Node,
        _: &Envelope,
        _: &RequestContext,
    ) -> Result<Reply, DeliverError> {
        Ok(Reply::new(StatusCode::OK, Bytes::new()))
    }
}

/// How the nodes of a run are spread.
#[derive(Clone, Copy)]
enum Shape {
    OneGroup,
    GroupEach,
}

impl Shape {
    fn name(self) -> &'static str {
        match self {
            Shape::OneGroup => "one_group",
            Shape::GroupEach => "group_each",
        }
    }

    fn key(self, i: usize) -> NodeKey {
        match self {
            Shape::OneGroup => NodeKey::named("big", format!("node-{i}")),
            Shape::GroupEach => NodeKey::named(format!("group-{i}"), "node"),
        }
        .expect("valid key")
    }
}

fn registration(shape: Shape, i: usize) -> Registration {
    let endpoint = Endpoint::custom("bench", format!("node-{i}")).expect("valid endpoint");
    Registration::new(shape.key(i), endpoint, TTL)
}

fn mediator() -> Mediator {
    Mediator::builder()
        .registry(MemoryRegistry::new())
        .authenticator(Authenticator::hs256(SECRET))
        .deliver(AnswerAtOnce)
        .build()
        .expect("mediator")
}

async fn fill(mediator: &Mediator, shape: Shape, nodes: usize) {
    let caller = Identity::internal();
    for i in 0..nodes {
        mediator
            .register(&caller, registration(shape, i))
            .await
            .expect("register");
    }
}

fn nodes() -> usize {
    std::env::var("MEDIATOR_BENCH_NODES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(100_000)
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Registering every node, one after the other, into a new mediator.
fn fills(c: &mut Criterion) {
    let runtime = runtime();
    let nodes = nodes();
    let mut group = c.benchmark_group("fill");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    for shape in [Shape::OneGroup, Shape::GroupEach] {
        group.bench_function(format!("{}/{nodes}", shape.name()), |b| {
            b.to_async(&runtime).iter_batched(
                mediator,
                |mediator| async move { fill(&mediator, shape, nodes).await },
                BatchSize::PerIteration,
            );
        });
    }
    group.finish();
}

/// One call at a time into a mediator that holds `nodes()` nodes.
fn at_size(c: &mut Criterion) {
    let runtime = runtime();
    let nodes = nodes();
    let caller = Identity::internal();
    for shape in [Shape::OneGroup, Shape::GroupEach] {
        let mediator = mediator();
        runtime.block_on(async {
            // Straight into the store, then one refresh: quick even where
            // registering one by one is not.
            for i in 0..nodes {
                mediator
                    .registry()
                    .upsert(registration(shape, i), mediator.clock().now())
                    .await
                    .expect("upsert");
            }
            mediator.refresh().await.expect("refresh");
        });
        assert_eq!(mediator.routes().len(), nodes);
        let mut group = c.benchmark_group(format!("at_size/{}/{nodes}", shape.name()));
        // Few samples: before this table, some of these calls took tens of
        // milliseconds at this size.
        group.sample_size(10);
        group.measurement_time(Duration::from_secs(3));
        group.warm_up_time(Duration::from_secs(1));
        let next = AtomicUsize::new(0);
        let pick = || next.fetch_add(7_919, Ordering::Relaxed) % nodes;

        group.bench_function("register_again", |b| {
            b.to_async(&runtime).iter(|| async {
                mediator
                    .register(&caller, registration(shape, pick()))
                    .await
                    .expect("register")
            });
        });
        group.bench_function("renew", |b| {
            b.to_async(&runtime).iter(|| async {
                mediator
                    .renew(&caller, &shape.key(pick()), TTL)
                    .await
                    .expect("renew")
                    .expect("registered")
            });
        });
        group.bench_function("unicast", |b| {
            b.to_async(&runtime).iter(|| async {
                let envelope = Envelope::new(Target::One(shape.key(pick())), "/x", "hi");
                mediator
                    .route(&caller, envelope, None)
                    .await
                    .expect("routed")
            });
        });
        let big = shape.key(0).group().to_owned();
        group.bench_function("any_of_group", |b| {
            b.to_async(&runtime).iter(|| async {
                let target = Target::any(big.clone()).expect("valid group");
                mediator
                    .route(&caller, Envelope::new(target, "/x", "hi"), None)
                    .await
                    .expect("routed")
            });
        });
        group.bench_function("read_group", |b| {
            b.iter(|| mediator.routes().group(&big).len());
        });
        group.bench_function("refresh_unchanged", |b| {
            b.to_async(&runtime)
                .iter(|| async { mediator.refresh().await.expect("refresh") });
        });
        group.finish();
    }
}

criterion_group!(benches, fills, at_size);
criterion_main!(benches);
