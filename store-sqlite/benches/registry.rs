//! Throughput of the SQLite registry over a file database holding 100,000
//! nodes (100 groups of 1,000), one call at a time.
//!
//! Run with `cargo bench -p mediator-store-sqlite`.

#![allow(missing_docs)] // criterion's macros generate undocumented items

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use mediator_core::{Endpoint, Meta, NodeKey, Registration, Registry, Timestamp};
use mediator_store_sqlite::SqliteRegistry;

const GROUPS: usize = 100;
const PER_GROUP: usize = 1_000;
const TTL: Duration = Duration::from_secs(60);
const T0: Timestamp = Timestamp::from_millis(1_700_000_000_000);

fn key(i: usize) -> NodeKey {
    NodeKey::named(
        format!("group-{}", i / PER_GROUP),
        format!("node-{}", i % PER_GROUP),
    )
    .expect("valid key")
}

fn registration(i: usize) -> Registration {
    let mut meta = Meta::new();
    meta.insert("version".into(), "1.4.2".into());
    meta.insert("zone".into(), format!("zone-{}", i % 3));
    Registration::new(
        key(i),
        Endpoint::http(format!(
            "http://10.{}.{}.{}:9000",
            i >> 16,
            (i >> 8) & 255,
            i & 255
        ))
        .expect("valid url"),
        TTL,
    )
    .with_meta(meta)
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let total = GROUPS * PER_GROUP;
    let registry = runtime.block_on(async {
        let registry = SqliteRegistry::open(dir.path().join("bench.db"))
            .await
            .expect("open");
        for i in 0..total {
            registry.upsert(registration(i), T0).await.expect("upsert");
        }
        registry
    });
    let keys: Vec<NodeKey> = (0..total).map(key).collect();
    // Walk the keys with a stride so consecutive calls touch different pages.
    let next = AtomicUsize::new(0);
    let pick = || next.fetch_add(7_919, Ordering::Relaxed) % total;

    let mut group = c.benchmark_group("sqlite_file_100k");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(4))
        .throughput(Throughput::Elements(1));

    group.bench_function("upsert_existing", |b| {
        b.to_async(&runtime).iter(|| {
            let i = pick();
            let registry = &registry;
            async move {
                let now = T0 + Duration::from_secs(1);
                registry.upsert(registration(i), now).await.expect("upsert")
            }
        });
    });
    group.bench_function("renew", |b| {
        b.to_async(&runtime).iter(|| {
            let key = &keys[pick()];
            let registry = &registry;
            async move {
                let lease = registry
                    .renew(key, TTL, T0 + Duration::from_secs(2))
                    .await
                    .expect("renew");
                assert!(lease.is_some());
            }
        });
    });
    group.bench_function("get_by_key", |b| {
        b.to_async(&runtime).iter(|| {
            let key = &keys[pick()];
            let registry = &registry;
            async move {
                let node = registry.get(key).await.expect("get");
                assert!(node.is_some());
            }
        });
    });
    group.throughput(Throughput::Elements(PER_GROUP as u64));
    group.bench_function("list_group_of_1000", |b| {
        b.to_async(&runtime).iter(|| {
            let group_name = format!("group-{}", pick() % GROUPS);
            let registry = &registry;
            async move {
                let nodes = registry.list(Some(&group_name)).await.expect("list");
                assert_eq!(nodes.len(), PER_GROUP);
            }
        });
    });
    group.finish();

    runtime.block_on(registry.close()).expect("close");
}

criterion_group!(benches, bench);
criterion_main!(benches);
