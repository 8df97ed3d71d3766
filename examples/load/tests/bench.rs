//! The load harness end to end: a short run of a few workloads along a few
//! paths, with the real `mediator` binary, read back as JSON.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The `mediator` binary the harness drives, beside the harness as cargo
/// leaves it. A package's tests can depend on its own binaries only, so
/// when no other package's build left one there (the workspace's test run
/// does), it is built here, in the profile these tests were built in.
fn mediator() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let harness = Path::new(env!("CARGO_BIN_EXE_mediator-bench"));
        let beside = harness.with_file_name("mediator");
        if beside.is_file() {
            return beside;
        }
        let profile = match harness.parent().and_then(Path::file_name) {
            Some(dir) if dir == "debug" => "dev".to_owned(),
            Some(dir) => dir.to_string_lossy().into_owned(),
            None => panic!("{} has no folder", harness.display()),
        };
        let status = Command::new(env!("CARGO"))
            .args(["build", "--quiet", "--profile", &profile])
            .args(["-p", "mediator-examples", "--bin", "mediator"])
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building the mediator binary failed");
        assert!(
            beside.is_file(),
            "cargo built the mediator binary elsewhere than {}",
            beside.display()
        );
        beside
    })
}

#[test]
fn a_short_run_measures_every_path_it_was_asked_for() {
    let mediator = mediator();
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_mediator-bench"))
        .arg("--mediator")
        .arg(mediator)
        .args([
            "--duration",
            "300ms",
            "--warmup",
            "100ms",
            "--runs",
            "1",
            "--workloads",
            "unicast-1k-1,unicast-1k-64,broadcast-10-1,churn-sqlite",
            "--paths",
            "direct,mediator-h1,mediator-h2,mediator-quic",
            "--json",
        ])
        .env("RUST_LOG", "error")
        .output()
        .expect("the harness runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the run failed: {stderr}");
    let report: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    });
    let rows = report["rows"].as_array().expect("rows");
    let mut seen = Vec::new();
    for row in rows {
        let workload = row["workload"].as_str().expect("workload");
        let path = row["path"].as_str().expect("path");
        assert!(
            row["requests"].as_u64().unwrap_or(0) > 0,
            "{workload} along {path} answered nothing: {row}"
        );
        assert_eq!(row["errors"], 0, "{workload} along {path}: {row}");
        assert!(row["req_per_s"].as_f64().unwrap_or(0.0) > 0.0, "{row}");
        assert!(row["p99_ms"].as_f64().unwrap_or(0.0) >= row["p50_ms"].as_f64().unwrap_or(0.0));
        if path.starts_with("mediator") {
            assert!(row["peak_rss_mib"].as_f64().unwrap_or(0.0) > 0.0, "{row}");
            assert!(row["cpu_s_per_10k"].as_f64().is_some(), "{row}");
            assert!(
                row["vs_direct"].as_f64().unwrap_or(0.0) > 0.0
                    || workload.starts_with("broadcast")
                    || workload.starts_with("churn"),
                "{row}"
            );
        }
        seen.push(format!("{workload} {path}"));
    }
    for expected in [
        "unicast-1k-1 direct",
        "unicast-1k-1 mediator-h1",
        "unicast-1k-1 mediator-h2",
        "unicast-1k-1 mediator-quic",
        "unicast-1k-64 direct",
        "unicast-1k-64 mediator-h1",
        "unicast-1k-64 mediator-h2",
        "unicast-1k-64 mediator-quic",
        "broadcast-10-1 mediator-h1",
        "churn-sqlite mediator-h1",
    ] {
        assert!(
            seen.iter().any(|s| s == expected),
            "no row for {expected}: {seen:?}"
        );
    }
    let broadcast = rows
        .iter()
        .find(|r| r["workload"] == "broadcast-10-1")
        .expect("broadcast row");
    let deliveries = broadcast["deliveries_per_s"].as_f64().unwrap_or(0.0);
    let requests = broadcast["req_per_s"].as_f64().unwrap_or(0.0);
    assert!((deliveries - 10.0 * requests).abs() < 1e-6 * deliveries.max(1.0));
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "the short run took {:?}",
        started.elapsed()
    );
}

#[test]
fn unknown_paths_are_refused_with_the_known_ones_named() {
    let output = Command::new(env!("CARGO_BIN_EXE_mediator-bench"))
        .args(["--paths", "carrier-pigeon", "--json"])
        .output()
        .expect("the harness runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("carrier-pigeon") && stderr.contains("mediator-quic"),
        "{stderr}"
    );
}

#[test]
fn interleaved_paths_each_get_every_window_and_their_own_cpu() {
    let output = Command::new(env!("CARGO_BIN_EXE_mediator-bench"))
        .arg("--mediator")
        .arg(mediator())
        .args([
            "--duration",
            "200ms",
            "--warmup",
            "100ms",
            "--runs",
            "3",
            "--workloads",
            "unicast-1k-1",
            "--paths",
            "direct,mediator-h1,mediator-h1-quiet",
            "--interleave",
            "--json",
        ])
        .env("RUST_LOG", "error")
        .output()
        .expect("the harness runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the run failed: {stderr}");
    let report: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(report["interleaved"], true, "{report}");
    let rows = report["rows"].as_array().expect("rows");
    let paths: Vec<&str> = rows.iter().filter_map(|r| r["path"].as_str()).collect();
    assert_eq!(paths, ["direct", "mediator-h1", "mediator-h1-quiet"]);
    for row in rows {
        assert_eq!(row["errors"], 0, "{row}");
        // Three windows of 200 ms at one request in flight each.
        assert!(row["requests"].as_u64().unwrap_or(0) >= 3, "{row}");
        if row["path"] != "direct" {
            // Counted over this path's own windows, one at a time.
            let cpu = row["cpu_s_per_10k"].as_f64().expect("CPU");
            assert!(cpu > 0.0, "{row}");
        }
    }
    let direct = &rows[0];
    assert!(direct["vs_direct"]
        .as_f64()
        .is_some_and(|r| (r - 1.0).abs() < 1e-9));
}

#[test]
fn formation_workloads_measure_propagation_forwarding_and_idle_store_calls() {
    let output = Command::new(env!("CARGO_BIN_EXE_mediator-bench"))
        .arg("--mediator")
        .arg(mediator())
        .args([
            "--duration",
            "200ms",
            "--warmup",
            "100ms",
            "--runs",
            "1",
            "--workloads",
            "formation-propagation-sqlite,formation-forward-1k-64,formation-idle-1k-sqlite",
            "--formation-nodes",
            "5",
            "--idle-for",
            "1s",
            "--json",
        ])
        .env("RUST_LOG", "error")
        .output()
        .expect("the harness runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the run failed: {stderr}");
    let report: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    let propagation = &report["propagation"][0];
    assert_eq!(propagation["store"], "sqlite", "{report}");
    assert_eq!(propagation["reached"], 5, "{propagation}");
    assert_eq!(propagation["timed_out"], 0, "{propagation}");
    let p99 = propagation["p99_ms"].as_f64().expect("p99");
    assert!(p99 > 0.0 && p99 < 1000.0, "{propagation}");
    let counted: u64 = propagation["histogram"]
        .as_array()
        .expect("histogram")
        .iter()
        .filter_map(|bucket| bucket["count"].as_u64())
        .sum();
    assert_eq!(counted, 5, "{propagation}");
    let rows = report["rows"].as_array().expect("rows");
    let paths: Vec<&str> = rows.iter().filter_map(|r| r["path"].as_str()).collect();
    assert_eq!(
        paths,
        ["local-h1", "forwarded-h1", "local-quic", "forwarded-quic"]
    );
    for row in rows {
        assert_eq!(row["errors"], 0, "{row}");
        assert!(row["requests"].as_u64().unwrap_or(0) > 0, "{row}");
        // Instances A and B each count their own CPU.
        let each = row["cpu_by_process"].as_array().expect("CPU by process");
        assert_eq!(each.len(), 2, "{row}");
    }
    let forwarded = &rows[1];
    assert_eq!(forwarded["base"], "local-h1");
    assert!(forwarded["vs_base"].as_f64().is_some(), "{forwarded}");
    // B does the second half of a forwarded call's work.
    assert!(forwarded["cpu_by_process"][1]["cpu_s_per_10k"].as_f64() > Some(0.0));
    let loads = report["store_load"].as_array().expect("store load");
    let formations: Vec<u64> = loads
        .iter()
        .filter_map(|l| l["instances"].as_u64())
        .collect();
    assert_eq!(formations, [1, 3, 3, 3], "{report}");
    for load in loads {
        // Every instance reads the feed about every 50 ms.
        let changes = load["calls_per_s"]["changes"].as_f64().unwrap_or(0.0);
        assert!(changes > 5.0 && changes < 30.0, "{load}");
        assert!(
            load["calls_at_start"]["list_page"].as_u64() > Some(0),
            "{load}"
        );
    }
}
