//! What registered nodes cost in memory: the bytes a mediator over the
//! in-memory registry holds per node once `MEDIATOR_BENCH_NODES` nodes
//! (100,000 by default, in 100 groups, with HTTP endpoints, as the
//! `nodes-100k` row of `mediator-bench` registers them) went through
//! `Mediator::register`, and the most it holds at once while the routing
//! table is refreshed from the store.
//!
//! Run with `cargo bench -p mediator-core --bench footprint` (Linux:
//! reads the process's resident memory from `/proc/self/status`, and
//! resets its peak through `/proc/self/clear_refs`). The figures include
//! what the allocator keeps around the bytes asked of it, as a mediator
//! process's resident memory does.

#![allow(missing_docs)]

use std::time::Duration;

use mediator_core::{
    Authenticator, Endpoint, Identity, Mediator, MemoryRegistry, NodeKey, Registration,
};

/// A field of `/proc/self/status`, in bytes.
fn status(field: &str) -> Option<usize> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = text.lines().find(|l| l.starts_with(field))?;
    let kib: usize = line[field.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

fn resident() -> usize {
    status("VmRSS:").expect("/proc/self/status names VmRSS")
}

/// The most resident since the last reset.
fn peak() -> usize {
    status("VmHWM:").expect("/proc/self/status names VmHWM")
}

/// Starts a new peak from what is resident now.
fn reset_peak() -> usize {
    std::fs::write("/proc/self/clear_refs", "5").expect("resetting the peak");
    resident()
}

fn nodes() -> usize {
    std::env::var("MEDIATOR_BENCH_NODES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(100_000)
}

fn registration(i: usize) -> Registration {
    let key =
        NodeKey::named(format!("scale{}", i % 100), format!("n{}", i / 100)).expect("valid key");
    let endpoint = Endpoint::http("http://127.0.0.1:40123/").expect("valid endpoint");
    Registration::new(key, endpoint, Duration::from_secs(86_400))
}

fn main() {
    // `cargo bench` passes `--bench`; a filter that names another bench
    // leaves this one out.
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    if filter.is_some_and(|f| !"footprint".contains(&f)) {
        return;
    }
    if status("VmRSS:").is_none() {
        eprintln!("footprint: no /proc/self/status here; nothing measured");
        return;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let nodes = nodes();
    runtime.block_on(async {
        let mediator = Mediator::builder()
            .registry(MemoryRegistry::new())
            .authenticator(Authenticator::hs256(
                "a secret of at least 32 bytes for the footprint",
            ))
            .build()
            .expect("mediator");
        let caller = Identity::internal();
        let empty = reset_peak();
        for i in 0..nodes {
            mediator
                .register(&caller, registration(i))
                .await
                .expect("register");
        }
        let filled = resident();
        let fill_peak = peak();
        assert_eq!(mediator.routes().len(), nodes);

        let before = reset_peak();
        mediator.refresh().await.expect("refresh");
        let refresh_peak = peak() - before;
        let after = resident();

        let per_node = |bytes: usize| bytes as f64 / nodes as f64;
        println!("footprint/{nodes} nodes (resident bytes)");
        println!(
            "  held per node after registering: {:>8.0}",
            per_node(filled - empty)
        );
        println!(
            "  peak per node while registering: {:>8.0}",
            per_node(fill_peak - empty)
        );
        println!(
            "  extra per node during a refresh: {:>8.0}",
            per_node(refresh_peak)
        );
        println!(
            "  held per node after the refresh: {:>8.0}",
            per_node(after - empty)
        );
        println!(
            "  total held: {:.1} MiB, refresh peak {:.1} MiB",
            (after - empty) as f64 / f64::from(1 << 20),
            (after - empty + refresh_peak) as f64 / f64::from(1 << 20)
        );
    });
}
