//! What a run prints: one row per workload and path, ratios against the
//! direct path and each peer of the same workload, as a table or JSON.

use std::collections::BTreeMap;

use serde::Serialize;

/// One workload along one path.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Row {
    /// The workload's name (`unicast-1k-64`, ...).
    pub(crate) workload: String,
    /// The path's name (`direct`, `mediator-h1`, ...).
    pub(crate) path: String,
    /// Requests in flight.
    pub(crate) in_flight: usize,
    /// Bytes per request body.
    pub(crate) body_bytes: usize,
    /// Requests answered as expected, all measured windows together.
    pub(crate) requests: u64,
    /// Requests that failed, all measured windows together.
    pub(crate) errors: u64,
    /// The first failure.
    pub(crate) first_error: Option<String>,
    /// Median over the windows of requests per second.
    pub(crate) req_per_s: f64,
    /// Deliveries to nodes per second (req/s times the nodes per request).
    pub(crate) deliveries_per_s: f64,
    /// Median over the windows of the median latency, ms.
    pub(crate) p50_ms: f64,
    /// Median over the windows of the 99th percentile latency, ms.
    pub(crate) p99_ms: f64,
    /// CPU seconds of the process in the middle (the mediator, nginx)
    /// per 10,000 requests, over the measured windows; of all of them
    /// together when several are (instances of a formation, nginx).
    pub(crate) cpu_s_per_10k: Option<f64>,
    /// Each middle process's part of `cpu_s_per_10k`, when there are
    /// several.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) cpu_by_process: Vec<ProcessCpu>,
    /// Peak resident memory of the process in the middle (of all of them
    /// together), MiB.
    pub(crate) peak_rss_mib: Option<f64>,
    /// Nodes registered at the mediator during the row.
    pub(crate) registered_nodes: Option<usize>,
    /// req/s over the direct path's req/s, same workload.
    pub(crate) vs_direct: Option<f64>,
    /// req/s over nginx's req/s, same workload.
    pub(crate) vs_nginx: Option<f64>,
    /// req/s over HAProxy's req/s, same workload.
    pub(crate) vs_haproxy: Option<f64>,
    /// req/s over NATS request-reply's req/s, same workload.
    pub(crate) vs_nats: Option<f64>,
    /// p99 over nginx's p99, same workload.
    pub(crate) p99_vs_nginx: Option<f64>,
    /// p99 over HAProxy's p99, same workload.
    pub(crate) p99_vs_haproxy: Option<f64>,
    /// The path of the same workload that `vs_base` compares with (a
    /// formation's local call, its one instance behind nginx).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) base: Option<String>,
    /// req/s over the `base` path's req/s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) vs_base: Option<f64>,
    /// How the row's deliveries were spread over the instances of a
    /// formation.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) shares: Vec<Share>,
}

/// One middle process's CPU in a row with several.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ProcessCpu {
    /// The process (`nginx`, `instance A`, ...).
    pub(crate) process: String,
    /// Its CPU seconds per 10,000 requests of the row.
    pub(crate) cpu_s_per_10k: f64,
}

/// How many of a row's deliveries one instance of a formation made.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Share {
    /// The instance.
    pub(crate) instance: String,
    /// Deliveries it made (warm-up included).
    pub(crate) deliveries: u64,
    /// Its fraction of the row's deliveries.
    pub(crate) share: f64,
}

/// How long after one instance answered a registration another instance
/// of the formation routed calls to the node.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Propagation {
    /// The workload's name.
    pub(crate) workload: String,
    /// The store the instances share (`sqlite`, `mysql`).
    pub(crate) store: String,
    /// Nodes registered, one after another.
    pub(crate) nodes: usize,
    /// Nodes the other instance reached within `bound_ms`.
    pub(crate) reached: usize,
    /// Nodes it did not reach within `bound_ms`.
    pub(crate) timed_out: usize,
    /// How long the other instance was polled for each node, ms.
    pub(crate) bound_ms: f64,
    /// The pause between two polls, ms.
    pub(crate) poll_ms: f64,
    /// Quantiles of the time from the registration's answer to the first
    /// answer from the node through the other instance, ms.
    pub(crate) p50_ms: f64,
    /// See `p50_ms`.
    pub(crate) p90_ms: f64,
    /// See `p50_ms`.
    pub(crate) p99_ms: f64,
    /// See `p50_ms`.
    pub(crate) max_ms: f64,
    /// The mean of the same times, ms.
    pub(crate) mean_ms: f64,
    /// Nodes reached within each bucket, in order.
    pub(crate) histogram: Vec<Bucket>,
    /// Median time the registration itself took at the first instance, ms.
    pub(crate) register_p50_ms: f64,
    /// 99th percentile of the same, ms.
    pub(crate) register_p99_ms: f64,
    /// What the first timed-out node's last poll was answered, if any.
    pub(crate) first_error: Option<String>,
}

/// One bucket of a histogram of times.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Bucket {
    /// Its lower bound, ms (inclusive).
    pub(crate) from_ms: f64,
    /// Its upper bound, ms (exclusive); `None` for the last, open one.
    pub(crate) to_ms: Option<f64>,
    /// How many fell in it.
    pub(crate) count: usize,
}

/// The store calls one idle instance of a formation makes.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct StoreLoad {
    /// The workload's name.
    pub(crate) workload: String,
    /// The store the instances share (`sqlite`, `mysql`).
    pub(crate) store: String,
    /// Nodes registered in the store.
    pub(crate) nodes: usize,
    /// Seconds it took to register them (over HTTP, 64 at a time).
    pub(crate) filled_in_s: f64,
    /// Instances of the formation during the window.
    pub(crate) instances: usize,
    /// This instance.
    pub(crate) instance: String,
    /// Length of the window, s.
    pub(crate) window_s: f64,
    /// Store calls per second over the window, by operation (those with
    /// calls only).
    pub(crate) calls_per_s: BTreeMap<String, f64>,
    /// All of them together.
    pub(crate) total_per_s: f64,
    /// Store calls from the instance's start to the window, by operation
    /// (the load of the whole store at start).
    pub(crate) calls_at_start: BTreeMap<String, u64>,
    /// The instance's CPU seconds per second over the window.
    pub(crate) cpu_s_per_s: Option<f64>,
    /// The instance's peak resident memory, MiB.
    pub(crate) peak_rss_mib: Option<f64>,
}

/// A path that was asked for but not measured, and why.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Skipped {
    /// The path or workload.
    pub(crate) what: String,
    /// Why.
    pub(crate) reason: String,
}

/// The machine a run measured on.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Machine {
    /// `nproc`.
    pub(crate) cpus: usize,
    /// The CPU model.
    pub(crate) cpu_model: String,
    /// The kernel release.
    pub(crate) kernel: String,
}

impl Machine {
    /// Reads the machine's description from `/proc`.
    pub(crate) fn detect() -> Machine {
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|text| {
                text.lines()
                    .find(|line| line.starts_with("model name"))
                    .and_then(|line| line.split_once(':'))
                    .map(|(_, model)| model.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".into());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|text| text.trim().to_owned())
            .unwrap_or_else(|_| "unknown".into());
        Machine {
            cpus,
            cpu_model,
            kernel,
        }
    }
}

/// Everything a run reports.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Report {
    /// Where it ran.
    pub(crate) machine: Machine,
    /// Seconds per measured window.
    pub(crate) window_s: f64,
    /// Seconds of warm-up before the windows of each row.
    pub(crate) warmup_s: f64,
    /// Measured windows per row.
    pub(crate) runs: usize,
    /// Whether a unicast workload's paths were measured in turns.
    pub(crate) interleaved: bool,
    /// The measured rows.
    pub(crate) rows: Vec<Row>,
    /// What was not measured.
    pub(crate) skipped: Vec<Skipped>,
    /// Propagation across a formation, one entry per store.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) propagation: Vec<Propagation>,
    /// Store calls of idle instances, one entry per instance and window.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) store_load: Vec<StoreLoad>,
}

impl Report {
    /// Fills the ratio columns from the rows of the same workload.
    pub(crate) fn compute_ratios(&mut self) {
        let find = |rows: &[Row], workload: &str, path: &str| {
            rows.iter()
                .find(|r| r.workload == workload && r.path == path && r.requests > 0)
                .map(|r| (r.req_per_s, r.p99_ms))
        };
        let snapshot = self.rows.clone();
        for row in &mut self.rows {
            if row.requests == 0 {
                continue;
            }
            let ratio = |base: Option<(f64, f64)>| {
                base.filter(|(rate, _)| *rate > 0.0)
                    .map(|(rate, _)| row.req_per_s / rate)
            };
            row.vs_direct = ratio(find(&snapshot, &row.workload, "direct"));
            row.vs_nginx = ratio(find(&snapshot, &row.workload, "nginx"));
            row.vs_nats = ratio(find(&snapshot, &row.workload, "nats"));
            row.vs_haproxy = ratio(find(&snapshot, &row.workload, "haproxy"));
            let p99_ratio = |base: Option<(f64, f64)>| {
                base.filter(|(_, p99)| *p99 > 0.0)
                    .map(|(_, p99)| row.p99_ms / p99)
            };
            row.p99_vs_nginx = p99_ratio(find(&snapshot, &row.workload, "nginx"));
            row.p99_vs_haproxy = p99_ratio(find(&snapshot, &row.workload, "haproxy"));
            if let Some(base) = &row.base {
                row.vs_base = ratio(find(&snapshot, &row.workload, base));
            }
        }
    }

    /// The table people read.
    pub(crate) fn table(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!(
            "{} CPUs, {}, kernel {}; {} x {:.1} s per row after {:.1} s of warm-up (medians){}\n",
            self.machine.cpus,
            self.machine.cpu_model,
            self.machine.kernel,
            self.runs,
            self.window_s,
            self.warmup_s,
            if self.interleaved {
                "; unicast paths in turns"
            } else {
                ""
            }
        ));
        if !self.rows.is_empty() {
            out.push_str(&format!(
            "{:<17} {:<18} {:>10} {:>11} {:>8} {:>8} {:>9} {:>8} {:>7} {:>7} {:>8} {:>7} {:>7}\n",
            "workload",
            "path",
            "req/s",
            "deliv/s",
            "p50 ms",
            "p99 ms",
            "cpu/10k",
            "rss MiB",
            "/direct",
            "/nginx",
            "/haproxy",
            "/nats",
            "errors"
            ));
        }
        let opt = |value: Option<f64>, width: usize, digits: usize| match value {
            Some(v) => format!("{v:>width$.digits$}"),
            None => format!("{:>width$}", "-"),
        };
        for row in &self.rows {
            out.push_str(&format!(
                "{:<17} {:<18} {:>10.0} {:>11.0} {:>8.2} {:>8.2} {} {} {} {} {} {} {:>7}\n",
                row.workload,
                row.path,
                row.req_per_s,
                row.deliveries_per_s,
                row.p50_ms,
                row.p99_ms,
                opt(row.cpu_s_per_10k, 9, 2),
                opt(row.peak_rss_mib, 8, 0),
                opt(row.vs_direct, 7, 2),
                opt(row.vs_nginx, 7, 2),
                opt(row.vs_haproxy, 8, 2),
                opt(row.vs_nats, 7, 2),
                row.errors,
            ));
            if let Some(error) = &row.first_error {
                out.push_str(&format!("    first error: {error}\n"));
            }
            if let (Some(base), Some(ratio)) = (&row.base, row.vs_base) {
                out.push_str(&format!("    {ratio:.2} x {base}\n"));
            }
            if !row.cpu_by_process.is_empty() {
                let each: Vec<String> = row
                    .cpu_by_process
                    .iter()
                    .map(|p| format!("{} {:.2}", p.process, p.cpu_s_per_10k))
                    .collect();
                out.push_str(&format!("    cpu/10k by process: {}\n", each.join(", ")));
            }
            if !row.shares.is_empty() {
                let each: Vec<String> = row
                    .shares
                    .iter()
                    .map(|s| format!("{} {:.1} %", s.instance, s.share * 100.0))
                    .collect();
                out.push_str(&format!(
                    "    deliveries by instance: {}\n",
                    each.join(", ")
                ));
            }
        }
        for p in &self.propagation {
            out.push_str(&format!(
                "\n{}: {} nodes registered at A, each polled through B every {:.0} ms for up to {:.0} ms\n\
                 \x20 reached {}, timed out {}; ms from A's answer to B's first echo: \
                 p50 {:.1}, p90 {:.1}, p99 {:.1}, max {:.1}, mean {:.1}; registration at A p50 {:.2}, p99 {:.2}\n",
                p.workload,
                p.nodes,
                p.poll_ms,
                p.bound_ms,
                p.reached,
                p.timed_out,
                p.p50_ms,
                p.p90_ms,
                p.p99_ms,
                p.max_ms,
                p.mean_ms,
                p.register_p50_ms,
                p.register_p99_ms,
            ));
            for bucket in &p.histogram {
                let range = match bucket.to_ms {
                    Some(to) => format!("{:>4.0}-{:<4.0} ms", bucket.from_ms, to),
                    None => format!("{:>4.0}+      ms", bucket.from_ms),
                };
                out.push_str(&format!("  {range} {:>5}\n", bucket.count));
            }
            if let Some(error) = &p.first_error {
                out.push_str(&format!("  first error: {error}\n"));
            }
        }
        if !self.store_load.is_empty() {
            out.push_str("\nstore calls per second of idle instances, by operation:\n");
        }
        for load in &self.store_load {
            let each: Vec<String> = load
                .calls_per_s
                .iter()
                .map(|(op, rate)| format!("{op} {rate:.2}"))
                .collect();
            out.push_str(&format!(
                "{} {} nodes, {} instance(s), {} over {:.0} s: {:.2}/s ({}); CPU {} s/s, RSS {} MiB\n",
                load.workload,
                load.nodes,
                load.instances,
                load.instance,
                load.window_s,
                load.total_per_s,
                each.join(", "),
                opt(load.cpu_s_per_s, 0, 4).trim(),
                opt(load.peak_rss_mib, 0, 0).trim(),
            ));
            let at_start: Vec<String> = load
                .calls_at_start
                .iter()
                .map(|(op, calls)| format!("{op} {calls}"))
                .collect();
            out.push_str(&format!(
                "    calls before the window (start, full load): {}; store filled in {:.1} s\n",
                at_start.join(", "),
                load.filled_in_s
            ));
        }
        for skipped in &self.skipped {
            out.push_str(&format!("skipped {}: {}\n", skipped.what, skipped.reason));
        }
        out
    }
}

/// The median of `values` (the upper one of an even count); 0 when empty.
pub(crate) fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(workload: &str, path: &str, rate: f64, p99: f64) -> Row {
        Row {
            workload: workload.into(),
            path: path.into(),
            in_flight: 64,
            body_bytes: 1024,
            requests: 10,
            errors: 0,
            first_error: None,
            req_per_s: rate,
            deliveries_per_s: rate,
            p50_ms: 1.0,
            p99_ms: p99,
            cpu_s_per_10k: None,
            cpu_by_process: Vec::new(),
            peak_rss_mib: None,
            registered_nodes: None,
            vs_direct: None,
            vs_nginx: None,
            vs_haproxy: None,
            vs_nats: None,
            p99_vs_nginx: None,
            p99_vs_haproxy: None,
            base: None,
            vs_base: None,
            shares: Vec::new(),
        }
    }

    #[test]
    fn ratios_compare_rows_of_one_workload_only() {
        let mut report = Report {
            machine: Machine::detect(),
            window_s: 1.0,
            warmup_s: 1.0,
            runs: 1,
            interleaved: false,
            rows: vec![
                row("w", "direct", 100.0, 1.0),
                row("w", "nginx", 50.0, 2.0),
                row("w", "mediator-h1", 75.0, 3.0),
                row("other", "mediator-h1", 10.0, 1.0),
                row("w", "haproxy", 60.0, 1.5),
            ],
            skipped: Vec::new(),
            propagation: Vec::new(),
            store_load: Vec::new(),
        };
        report.compute_ratios();
        let mediated = &report.rows[2];
        assert_eq!(mediated.vs_direct, Some(0.75));
        assert_eq!(mediated.vs_nginx, Some(1.5));
        assert_eq!(mediated.p99_vs_nginx, Some(1.5));
        assert_eq!(mediated.vs_haproxy, Some(1.25));
        assert_eq!(mediated.p99_vs_haproxy, Some(2.0));
        assert_eq!(mediated.vs_nats, None);
        assert_eq!(report.rows[3].vs_direct, None);
        assert_eq!(report.rows[3].vs_haproxy, None);
        assert!(report.table().contains("/haproxy"));
        assert!(report.table().contains("mediator-h1"));
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(Vec::new()), 0.0);
    }
}
