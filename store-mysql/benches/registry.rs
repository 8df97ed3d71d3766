//! Throughput of the MySQL registry with 100,000 nodes registered (100
//! groups of 1,000), in a database of its own that is dropped at the end.
//!
//! Needs the server of the tests (`MEDIATOR_TEST_MYSQL_URL`, default
//! `mysql://root@127.0.0.1:3306/test`); `MEDIATOR_SKIP_MYSQL=1` skips it.
//! Run with `cargo bench -p mediator-store-mysql`.

#[path = "../tests/support/mod.rs"]
mod support;

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use mediator_core::{Endpoint, NodeKey, Registration, Registry, Timestamp};
use mediator_store_mysql::{MysqlConfig, MysqlRegistry};
use support::TestDb;

const GROUPS: usize = 100;
const PER_GROUP: usize = 1_000;
const T0: Timestamp = Timestamp::from_millis(1_700_000_000_000);
/// Leases far beyond anything the benchmark's clock reaches, so no node
/// expires while it runs.
const TTL: Duration = Duration::from_secs(86_400);
/// How many upserts run at once in the concurrent case.
const CONCURRENT: usize = 16;

fn group(g: usize) -> String {
    format!("group-{g:03}")
}

fn node(n: usize) -> String {
    format!("node-{n:04}")
}

/// Registers every node with multi-row inserts, one statement per group.
async fn fill(db: &TestDb) {
    let lease = (T0 + TTL).as_millis();
    let started = Instant::now();
    for g in 0..GROUPS {
        let mut sql = String::from(
            "INSERT INTO nodes (group_name, node_name, endpoint, meta, created_ms, lease_until_ms) VALUES ",
        );
        for n in 0..PER_GROUP {
            let separator = if n == 0 { "" } else { "," };
            // Names and numbers generated here, so writing them into the
            // statement is safe.
            write!(
                sql,
                "{separator}('{}', '{}', 'http://10.0.{}.{}:9000', '{{\"zone\":\"eu\"}}', {}, {lease})",
                group(g),
                node(n),
                g,
                n % 250,
                T0.as_millis()
            )
            .expect("writing to a String cannot fail");
        }
        db.exec(&sql).await;
    }
    println!(
        "registered {} nodes in {:?}",
        GROUPS * PER_GROUP,
        started.elapsed()
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let Some(db) = runtime.block_on(TestDb::create()) else {
        return;
    };
    let registry = runtime.block_on(async {
        let registry =
            MysqlRegistry::with_config(MysqlConfig::new(db.url()).with_pool_size(CONCURRENT))
                .await
                .expect("open the registry");
        fill(&db).await;
        Arc::new(registry)
    });
    let keys: Vec<NodeKey> = (0..GROUPS)
        .flat_map(|g| (0..PER_GROUP).map(move |n| (g, n)))
        .map(|(g, n)| NodeKey::named(group(g), node(n)).expect("valid key"))
        .collect();
    let endpoint = Endpoint::http("http://10.1.2.3:9000").expect("valid endpoint");

    let mut criterion = Criterion::default()
        .configure_from_args()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    {
        let mut bench = criterion.benchmark_group("mysql registry, 100k nodes");
        let registry = &registry;
        let mut turn = 0usize;
        let mut next = || {
            turn = (turn + 7_919) % keys.len();
            (&keys[turn], T0 + Duration::from_millis(turn as u64))
        };

        bench.throughput(Throughput::Elements(1));
        bench.bench_function("upsert (existing node)", |b| {
            b.to_async(&runtime).iter(|| {
                let (key, now) = next();
                let registration = Registration::new(key.clone(), endpoint.clone(), TTL);
                async move { registry.upsert(registration, now).await.expect("upsert") }
            });
        });
        bench.bench_function("renew", |b| {
            b.to_async(&runtime).iter(|| {
                let (key, now) = next();
                async move {
                    let lease = registry.renew(key, TTL, now).await.expect("renew");
                    assert!(lease.is_some());
                }
            });
        });
        bench.bench_function("get by key", |b| {
            b.to_async(&runtime).iter(|| {
                let (key, _) = next();
                async move {
                    let node = registry.get(key).await.expect("get");
                    assert!(node.is_some());
                }
            });
        });
        bench.bench_function("evict_expired (none due)", |b| {
            b.to_async(&runtime).iter(|| async {
                let gone = registry.evict_expired(T0).await.expect("evict");
                assert!(gone.is_empty());
            });
        });

        // What an idle mediator does every 50 ms: read the feed from its
        // head, and find nothing.
        let head = runtime
            .block_on(registry.version())
            .expect("version")
            .unwrap_or(0);
        bench.bench_function("changes (nothing new)", |b| {
            b.to_async(&runtime).iter(|| async {
                let page = registry
                    .changes(head, 1_000)
                    .await
                    .expect("changes")
                    .expect("a feed");
                assert!(page.changes.is_empty());
            });
        });

        bench.throughput(Throughput::Elements(CONCURRENT as u64));
        bench.bench_function(
            BenchmarkId::new("upsert (existing node)", format!("{CONCURRENT} at once")),
            |b| {
                b.to_async(&runtime).iter(|| {
                    // Each upsert is a task of its own, as request handlers are.
                    let mut tasks = tokio::task::JoinSet::new();
                    for _ in 0..CONCURRENT {
                        let (key, now) = next();
                        let registration = Registration::new(key.clone(), endpoint.clone(), TTL);
                        let registry = Arc::clone(registry);
                        tasks.spawn(async move { registry.upsert(registration, now).await });
                    }
                    async move {
                        while let Some(done) = tasks.join_next().await {
                            done.expect("upsert task").expect("upsert");
                        }
                    }
                });
            },
        );

        bench.throughput(Throughput::Elements(PER_GROUP as u64));
        let mut g = 0usize;
        bench.bench_function("list one group of 1,000", |b| {
            b.to_async(&runtime).iter(|| {
                g = (g + 37) % GROUPS;
                let name = group(g);
                async move {
                    let nodes = registry.list(Some(&name)).await.expect("list");
                    assert_eq!(nodes.len(), PER_GROUP);
                }
            });
        });
        bench.finish();
    }

    runtime.block_on(async {
        let count = registry.list(None).await.expect("list all").len();
        assert_eq!(count, GROUPS * PER_GROUP, "no node was lost or added");
        Arc::into_inner(registry)
            .expect("the benchmarks hold no other handle")
            .close()
            .await
            .expect("close");
    });
    drop(db);
    criterion.final_summary();
}
