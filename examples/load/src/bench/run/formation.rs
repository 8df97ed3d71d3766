//! The formation's workloads: several `mediator serve` processes on one
//! store (a SQLite file of the run, or the `--mysql` server), each
//! announced in it as an instance and following its feed of changes.
//!
//! - **propagation**: instances A and B; nodes registered at A one after
//!   another, each polled through B about every millisecond until B routes
//!   to it: the time from A's answer to B's first echo.
//! - **forward**: QUIC-attached echo nodes at A and at B, called through A
//!   (over HTTP/1.1 and over QUIC): local, and forwarded to B over the link
//!   between instances; the CPU of A and of B.
//! - **balanced**: one to three instances behind nginx (a keep-alive
//!   upstream of them, round robin), an HTTP echo node registered once.
//! - **idle**: the store calls per second of one and then three idle
//!   instances over a store holding many nodes.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http::{HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use mediator_core::NodeKey;
use mediator_transport_quic::QuicNodeClient;
use rand::Rng;

use super::{body, which, Bench, Mediator};
use crate::echo::Clear;
use crate::load::{self, Link, Load, Work};
use crate::procs::{self, Proc};
use crate::report::{Bucket, Propagation, Row, Share, StoreLoad};

/// How long a node is polled for through the other instance before it
/// counts as not reached.
const PROPAGATION_BOUND: Duration = Duration::from_secs(1);

/// The pause between two polls of the other instance.
const POLL_EVERY: Duration = Duration::from_millis(1);

/// Nodes not reached one after another after which the workload stops
/// (the store keeps no feed, say).
const GIVE_UP_AFTER: usize = 5;

/// The pause before each registration is drawn uniformly below this, two
/// of the instances' periods of reading the feed (50 ms): a registration
/// then falls anywhere in the other instance's period with equal chance,
/// not always just after the read that found the previous node.
const JITTER: Duration = Duration::from_millis(100);

/// The histogram's bucket width for propagation times, and their count
/// before the open last one.
const BUCKET_MS: f64 = 10.0;
const BUCKETS: usize = 10;

/// What each poll sends.
const PING: &[u8] = b"ping";

/// The most time an instance is given to settle after its start: to load
/// the store and begin following its feed.
const SETTLE_BOUND: Duration = Duration::from_secs(120);

impl Bench<'_> {
    /// Starts instance `name` of a formation on `store` (`--instance-id
    /// bench-<pid>-<name>`, its peer address the one it listens on).
    async fn start_instance(
        &self,
        store: &str,
        name: &str,
        quic: bool,
    ) -> Result<Mediator, String> {
        let binary = procs::mediator_binary(self.args.mediator.as_deref())?;
        let id = format!("bench-{}-{name}", std::process::id());
        let mut mediator = self
            .start_mediator_with(
                &binary,
                store,
                quic,
                false,
                &["--instance-id".to_owned(), id],
            )
            .await?;
        mediator.proc.name = format!("instance {name}");
        Ok(mediator)
    }

    /// Starts the instances `names` on `store`; on a failure, stops those
    /// already started.
    async fn start_instances(
        &self,
        store: &str,
        names: &[&str],
        quic: bool,
    ) -> Result<Vec<Mediator>, String> {
        let mut started = Vec::with_capacity(names.len());
        for name in names {
            match self.start_instance(store, name, quic).await {
                Ok(mediator) => started.push(mediator),
                Err(e) => {
                    stop_all(started).await;
                    return Err(e);
                }
            }
        }
        Ok(started)
    }

    /// Waits until a call to `route` through `addr` is echoed: the
    /// instance there has read the node from the store's feed.
    async fn wait_routable(&self, addr: SocketAddr, route: &str) -> Result<(), String> {
        let caller = self.caller_token(0)?;
        let mut send = None;
        let until = Instant::now() + Duration::from_secs(15);
        let mut last = String::new();
        while Instant::now() < until {
            match post(
                &mut send,
                addr,
                route,
                Some(&caller),
                Bytes::from_static(PING),
            )
            .await
            {
                Ok((StatusCode::OK, reply)) if reply == PING => return Ok(()),
                Ok((status, reply)) => last = format!("{status}: {}", text(&reply)),
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Err(format!(
            "{route} through {addr} not routable within 15 s: {last}"
        ))
    }

    /// Nodes registered at A, each polled through B until it answers.
    pub(super) async fn propagation(&mut self, workload: &str, mysql: bool) -> Result<(), String> {
        let Some(store) = self.store_url(workload, mysql, "propagation.db").await else {
            return Ok(());
        };
        let instances = self.start_instances(&store, &["A", "B"], false).await?;
        let outcome = match &instances[..] {
            [a, b] => {
                let kind = if mysql { "mysql" } else { "sqlite" };
                self.propagate(workload, kind, a, b).await
            }
            _ => Err("two instances were asked for".into()),
        };
        stop_all(instances).await;
        let entry = outcome?;
        if !self.args.json {
            eprintln!(
                "{workload:<28} p50 {:.1} ms  p90 {:.1} ms  p99 {:.1} ms  max {:.1} ms  {} timed out",
                entry.p50_ms, entry.p90_ms, entry.p99_ms, entry.max_ms, entry.timed_out
            );
        }
        self.report.propagation.push(entry);
        Ok(())
    }

    async fn propagate(
        &self,
        workload: &str,
        store: &str,
        a: &Mediator,
        b: &Mediator,
    ) -> Result<Propagation, String> {
        let count = self.args.formation_nodes.max(1);
        let prefix = format!("p{}", std::process::id());
        let caller = self.caller_token(0)?;
        let url = &self.echo_urls[0];
        let mut at_a = None;
        let mut at_b = None;
        let mut times = histogram();
        let mut registering = histogram();
        let mut reached_ms = Vec::with_capacity(count);
        let mut timed_out = 0;
        let mut in_a_row = 0;
        let mut first_error = None;
        let mut names = Vec::with_capacity(count);
        for i in 0..count {
            let pause = rand::thread_rng().gen_range(Duration::ZERO..JITTER);
            tokio::time::sleep(pause).await;
            let name = format!("{prefix}-n{i}");
            let registration =
                format!(r#"{{"group":"bench","name":"{name}","url":"{url}","ttl":600}}"#);
            let sent = Instant::now();
            let (status, reply) = post(
                &mut at_a,
                a.addr,
                "/register",
                Some(&self.admin),
                Bytes::from(registration),
            )
            .await?;
            let registered = Instant::now();
            if status != StatusCode::OK {
                return Err(format!(
                    "registering {name} at A: {status}: {}",
                    text(&reply)
                ));
            }
            names.push(name.clone());
            record(&mut registering, registered - sent);
            let route = format!("/one/bench/{name}/echo");
            let mut last = String::new();
            let reached = loop {
                let polled = Instant::now();
                let (status, reply) = post(
                    &mut at_b,
                    b.addr,
                    &route,
                    Some(&caller),
                    Bytes::from_static(PING),
                )
                .await?;
                if status == StatusCode::OK && reply == PING {
                    break Some(registered.elapsed());
                }
                last = format!("{status}: {}", text(&reply));
                if polled.duration_since(registered) >= PROPAGATION_BOUND {
                    break None;
                }
                tokio::time::sleep_until((polled + POLL_EVERY).into()).await;
            };
            match reached {
                Some(after) => {
                    record(&mut times, after);
                    reached_ms.push(after.as_secs_f64() * 1000.0);
                    in_a_row = 0;
                }
                None => {
                    timed_out += 1;
                    in_a_row += 1;
                    first_error.get_or_insert_with(|| format!("{name}: B answered {last}"));
                    if in_a_row >= GIVE_UP_AFTER {
                        break;
                    }
                }
            }
        }
        let removals: Vec<String> = names
            .iter()
            .map(|name| format!(r#"{{"group":"bench","name":"{name}"}}"#))
            .collect();
        self.post_all(a.addr, "/remove", &removals, b"{").await?;
        let quantile = |q: f64| times.value_at_quantile(q) as f64 / 1000.0;
        let mut histogram = Vec::with_capacity(BUCKETS + 1);
        for i in 0..=BUCKETS {
            let from = i as f64 * BUCKET_MS;
            let to = (i < BUCKETS).then_some(from + BUCKET_MS);
            let count = reached_ms
                .iter()
                .filter(|ms| **ms >= from && to.is_none_or(|to| **ms < to))
                .count();
            histogram.push(Bucket {
                from_ms: from,
                to_ms: to,
                count,
            });
        }
        Ok(Propagation {
            workload: workload.to_owned(),
            store: store.to_owned(),
            nodes: names.len(),
            reached: reached_ms.len(),
            timed_out,
            bound_ms: PROPAGATION_BOUND.as_secs_f64() * 1000.0,
            poll_ms: POLL_EVERY.as_secs_f64() * 1000.0,
            p50_ms: quantile(0.50),
            p90_ms: quantile(0.90),
            p99_ms: quantile(0.99),
            max_ms: times.max() as f64 / 1000.0,
            mean_ms: if reached_ms.is_empty() {
                0.0
            } else {
                reached_ms.iter().sum::<f64>() / reached_ms.len() as f64
            },
            histogram,
            register_p50_ms: registering.value_at_quantile(0.50) as f64 / 1000.0,
            register_p99_ms: registering.value_at_quantile(0.99) as f64 / 1000.0,
            first_error,
        })
    }

    /// Through A to QUIC-attached echo nodes at A (local) and at B
    /// (forwarded over the link), callers over HTTP/1.1 and over QUIC.
    pub(super) async fn forward(&mut self, workload: &str, in_flight: usize) -> Result<(), String> {
        let Some(store) = self.store_url(workload, false, "forward.db").await else {
            return Ok(());
        };
        let instances = self.start_instances(&store, &["A", "B"], true).await?;
        let mut nodes = Vec::new();
        let outcome = match &instances[..] {
            [a, b] => {
                self.forward_rows(workload, in_flight, a, b, &mut nodes)
                    .await
            }
            _ => Err("two instances were asked for".into()),
        };
        for proc in nodes {
            proc.stop().await;
        }
        stop_all(instances).await;
        for row in outcome? {
            self.push(row);
        }
        Ok(())
    }

    async fn forward_rows(
        &self,
        workload: &str,
        in_flight: usize,
        a: &Mediator,
        b: &Mediator,
        nodes: &mut Vec<Proc>,
    ) -> Result<Vec<Row>, String> {
        nodes.push(self.start_quic_echo_as(a, "bench/qecho-a").await?);
        nodes.push(self.start_quic_echo_as(b, "bench/qecho-b").await?);
        // A learns from the feed that bench/qecho-b is attached to B.
        self.wait_routable(a.addr, "/one/bench/qecho-a/echo")
            .await?;
        self.wait_routable(a.addr, "/one/bench/qecho-b/echo")
            .await?;
        let (quic_addr, pin) = a
            .quic
            .clone()
            .ok_or("instance A printed no QUIC listener")?;
        let mut clients = Vec::new();
        for c in 0..load::mux_connections(in_flight) {
            let key: NodeKey = format!("bench/q{c}").parse().map_err(|e| format!("{e}"))?;
            clients.push(
                QuicNodeClient::builder(quic_addr)
                    .pin(&pin)
                    .node_key(key)
                    .token_minter(self.minter.clone())
                    .cipher(Clear)
                    .connect()
                    .await
                    .map_err(|e| format!("connecting to A over QUIC: {e}"))?,
            );
        }
        let payload = body(1024);
        let echo = |path: &str| Work::Echo {
            path: path.to_owned(),
            body: payload.clone(),
        };
        let quic_links = |target: &str| -> Result<Vec<Link>, String> {
            let target: NodeKey = target.parse().map_err(|e| format!("{e}"))?;
            Ok((0..in_flight)
                .map(|i| Link::Quic {
                    client: clients[i % clients.len()].clone(),
                    target: target.clone(),
                })
                .collect())
        };
        let both = vec![&a.proc, &b.proc];
        let rows = vec![
            (
                "local-h1",
                Load::new(
                    self.caller_links(a.addr, in_flight)?,
                    echo("/one/bench/qecho-a/echo"),
                ),
                both.clone(),
            ),
            (
                "forwarded-h1",
                Load::new(
                    self.caller_links(a.addr, in_flight)?,
                    echo("/one/bench/qecho-b/echo"),
                ),
                both.clone(),
            ),
            (
                "local-quic",
                Load::new(quic_links("bench/qecho-a")?, echo("/echo")),
                both.clone(),
            ),
            (
                "forwarded-quic",
                Load::new(quic_links("bench/qecho-b")?, echo("/echo")),
                both,
            ),
        ];
        let mut rows = self.measure_rows(workload, in_flight, 1024, rows).await;
        for row in &mut rows {
            row.base = match row.path.as_str() {
                "forwarded-h1" => Some("local-h1".into()),
                "forwarded-quic" => Some("local-quic".into()),
                _ => None,
            };
        }
        Ok(rows)
    }

    /// One to three instances behind nginx, and instance A alone.
    pub(super) async fn balanced(
        &mut self,
        workload: &str,
        in_flight: usize,
    ) -> Result<(), String> {
        if which(&self.args.nginx).is_none() {
            self.skip(workload, format!("{} not found", self.args.nginx));
            return Ok(());
        }
        let Some(store) = self.store_url(workload, false, "balanced.db").await else {
            return Ok(());
        };
        let instances = self
            .start_instances(&store, &["A", "B", "C"], false)
            .await?;
        let mut nginx = None;
        let outcome = self
            .balanced_rows(workload, in_flight, &instances, &mut nginx)
            .await;
        if let Some(proc) = nginx {
            proc.stop().await;
        }
        stop_all(instances).await;
        for row in outcome? {
            self.push(row);
        }
        Ok(())
    }

    async fn balanced_rows(
        &self,
        workload: &str,
        in_flight: usize,
        instances: &[Mediator],
        nginx: &mut Option<Proc>,
    ) -> Result<Vec<Row>, String> {
        let Some(a) = instances.first() else {
            return Err("no instance".into());
        };
        // One group per row, each with one node at the one echo server,
        // registered once at A: every instance routes it from the store,
        // and each instance's deliveries to a group count one row's share.
        let groups = ["lb0", "lb1", "lb2", "lb3"];
        let registrations: Vec<String> = groups
            .iter()
            .map(|group| self.echo_registration(group, "echo", 0))
            .collect();
        self.register(a, &registrations).await?;
        for instance in instances {
            for group in groups {
                self.wait_routable(instance.addr, &format!("/one/{group}/echo/echo"))
                    .await?;
            }
        }
        let upstreams: Vec<Vec<SocketAddr>> = (1..=instances.len())
            .map(|n| instances[..n].iter().map(|m| m.addr).collect())
            .collect();
        let (proc, listeners) = self.start_nginx_for("nginx-formation", &upstreams).await?;
        let nginx = &*nginx.insert(proc);
        let route = |group: &str| Work::Echo {
            path: format!("/one/{group}/echo/echo"),
            body: body(1024),
        };
        let names = ["nginx-1", "nginx-2", "nginx-3"];
        let mut rows = vec![(
            "instance-a",
            Load::new(self.caller_links(a.addr, in_flight)?, route(groups[0])),
            vec![&a.proc],
        )];
        for (n, listener) in listeners.iter().enumerate() {
            let mut middles = vec![nginx];
            middles.extend(instances[..=n].iter().map(|m| &m.proc));
            rows.push((
                names[n],
                Load::new(
                    self.caller_links(*listener, in_flight)?,
                    route(groups[n + 1]),
                ),
                middles,
            ));
        }
        let before = self.deliveries(instances).await?;
        let mut rows = self.measure_rows(workload, in_flight, 1024, rows).await;
        let after = self.deliveries(instances).await?;
        for (row, group) in rows.iter_mut().zip(groups) {
            row.base = match row.path.as_str() {
                "nginx-1" => Some("instance-a".into()),
                "nginx-2" | "nginx-3" => Some("nginx-1".into()),
                _ => None,
            };
            if row.path == "instance-a" {
                continue;
            }
            let each: Vec<(String, u64)> = instances
                .iter()
                .zip(before.iter().zip(&after))
                .map(|(m, (was, is))| {
                    let got = is.get(group).copied().unwrap_or(0);
                    let had = was.get(group).copied().unwrap_or(0);
                    (m.proc.name.clone(), got.saturating_sub(had))
                })
                .filter(|(_, count)| *count > 0)
                .collect();
            let total: u64 = each.iter().map(|(_, count)| count).sum();
            row.shares = each
                .into_iter()
                .map(|(instance, deliveries)| Share {
                    instance,
                    deliveries,
                    share: deliveries as f64 / total.max(1) as f64,
                })
                .collect();
        }
        Ok(rows)
    }

    /// Each instance's deliveries answered by nodes, by group.
    async fn deliveries(
        &self,
        instances: &[Mediator],
    ) -> Result<Vec<BTreeMap<String, u64>>, String> {
        let mut all = Vec::with_capacity(instances.len());
        for instance in instances {
            let metrics = get_text(instance.addr, "/metrics").await?;
            let mut by_group = BTreeMap::new();
            for (labels, value) in samples(&metrics, "mediator_deliveries_total") {
                if let Some(group) = labels
                    .strip_prefix("group=\"")
                    .and_then(|rest| rest.strip_suffix("\",outcome=\"ok\""))
                {
                    by_group.insert(group.to_owned(), value as u64);
                }
            }
            all.push(by_group);
        }
        Ok(all)
    }

    /// `nodes` registered in the store, then the store calls of one idle
    /// instance, and of three, over `--idle-for` each.
    pub(super) async fn idle(
        &mut self,
        workload: &str,
        nodes: usize,
        mysql: bool,
    ) -> Result<(), String> {
        let file = format!("idle-{nodes}.db");
        let Some(store) = self.store_url(workload, mysql, &file).await else {
            return Ok(());
        };
        let kind = if mysql { "mysql" } else { "sqlite" };
        let prefix = format!("i{}", std::process::id());
        let groups = 100;
        let registrations: Vec<String> = (0..nodes)
            .map(|i| {
                self.echo_registration(
                    &format!("{prefix}g{}", i % groups),
                    &format!("n{}", i / groups),
                    0,
                )
            })
            .collect();
        // A filler instance registers them and leaves the formation
        // before the measured ones start.
        let filler = self.start_instances(&store, &["fill"], false).await?;
        let started = Instant::now();
        let filled = match filler.first() {
            Some(fill) => self.register(fill, &registrations).await,
            None => Err("no filler instance".into()),
        };
        let filled_in_s = started.elapsed().as_secs_f64();
        stop_all(filler).await;
        filled?;
        if !self.args.json {
            eprintln!(
                "{workload:<28} {nodes} nodes registered in {filled_in_s:.1} s ({:.0}/s)",
                nodes as f64 / filled_in_s
            );
        }
        let mut instances = Vec::new();
        let mut entries = Vec::new();
        let mut first_readings = Vec::new();
        let mut outcome = Ok(());
        for (count, names) in [(1, &["1"][..]), (3, &["2", "3"][..])] {
            match self.start_instances(&store, names, false).await {
                Ok(started) => instances.extend(started),
                Err(e) => {
                    outcome = Err(e);
                    break;
                }
            }
            let window = async {
                for instance in &instances[first_readings.len()..] {
                    first_readings.push(settle(instance).await?);
                }
                self.store_window(&instances, &first_readings).await
            };
            match window.await {
                Ok(loads) => {
                    for (instance, load) in instances.iter().zip(loads) {
                        entries.push(StoreLoad {
                            workload: workload.to_owned(),
                            store: kind.to_owned(),
                            nodes,
                            filled_in_s,
                            instances: count,
                            instance: instance.proc.name.clone(),
                            ..load
                        });
                    }
                }
                Err(e) => {
                    outcome = Err(e);
                    break;
                }
            }
        }
        // MySQL keeps what a run leaves; a SQLite file goes with the run.
        if mysql {
            if let Some(first) = instances.first() {
                let removals: Vec<String> = (0..nodes)
                    .map(|i| {
                        format!(
                            r#"{{"group":"{prefix}g{}","name":"n{}"}}"#,
                            i % groups,
                            i / groups
                        )
                    })
                    .collect();
                if let Err(e) = self.post_all(first.addr, "/remove", &removals, b"{").await {
                    outcome = outcome.and(Err(format!("removing the idle nodes: {e}")));
                }
            }
        }
        stop_all(instances).await;
        outcome?;
        if !self.args.json {
            for entry in &entries {
                eprintln!(
                    "{workload:<28} {} of {}: {:.2} store calls/s",
                    entry.instance, entry.instances, entry.total_per_s
                );
            }
        }
        self.report.store_load.extend(entries);
        Ok(())
    }

    /// Every instance's store calls per second over one `--idle-for`
    /// window (the fields of a [`StoreLoad`] that the window measures).
    async fn store_window(
        &self,
        instances: &[Mediator],
        first_readings: &[BTreeMap<String, u64>],
    ) -> Result<Vec<StoreLoad>, String> {
        let mut before = Vec::with_capacity(instances.len());
        for instance in instances {
            before.push((
                store_calls(instance.addr).await?,
                instance.proc.cpu_seconds(),
            ));
        }
        let started = Instant::now();
        tokio::time::sleep(self.args.idle_for).await;
        let mut loads = Vec::with_capacity(instances.len());
        for ((instance, (was, cpu_was)), at_start) in
            instances.iter().zip(before).zip(first_readings)
        {
            let is = store_calls(instance.addr).await?;
            let cpu_is = instance.proc.cpu_seconds();
            let window_s = started.elapsed().as_secs_f64();
            let calls_per_s: BTreeMap<String, f64> = is
                .iter()
                .map(|(op, calls)| {
                    let delta = calls.saturating_sub(was.get(op).copied().unwrap_or(0));
                    (op.clone(), delta as f64 / window_s)
                })
                .filter(|(_, rate)| *rate > 0.0)
                .collect();
            loads.push(StoreLoad {
                workload: String::new(),
                store: String::new(),
                nodes: 0,
                filled_in_s: 0.0,
                instances: instances.len(),
                instance: instance.proc.name.clone(),
                window_s,
                total_per_s: calls_per_s.values().sum(),
                calls_per_s,
                calls_at_start: at_start
                    .iter()
                    .filter(|(_, calls)| **calls > 0)
                    .map(|(op, calls)| (op.clone(), *calls))
                    .collect(),
                cpu_s_per_s: cpu_was.zip(cpu_is).map(|(was, is)| (is - was) / window_s),
                peak_rss_mib: instance.proc.peak_rss_mib(),
            });
        }
        Ok(loads)
    }

    /// [`measure`](Bench::measure) each row, or all in turns with
    /// `--interleave`.
    async fn measure_rows(
        &self,
        workload: &str,
        in_flight: usize,
        size: usize,
        mut rows: Vec<(&str, Load, Vec<&Proc>)>,
    ) -> Vec<Row> {
        if self.args.interleave {
            return self
                .measure_in_turns(&mut rows, workload, in_flight, size)
                .await;
        }
        let mut measured = Vec::with_capacity(rows.len());
        for (path, load, middles) in &mut rows {
            measured.push(
                self.measure(load, workload, path, in_flight, size, 1, middles)
                    .await,
            );
        }
        measured
    }
}

/// Stops each instance (SIGTERM: it retires from the formation).
async fn stop_all(instances: Vec<Mediator>) {
    for instance in instances {
        instance.proc.stop().await;
    }
}

/// Waits until a just-started instance has loaded the store and follows
/// its feed (its calls that list the store stop growing), and returns its
/// store calls so far.
async fn settle(instance: &Mediator) -> Result<BTreeMap<String, u64>, String> {
    let until = Instant::now() + SETTLE_BOUND;
    let listing = |calls: &BTreeMap<String, u64>| {
        ["list", "list_page"]
            .iter()
            .map(|op| calls.get(*op).copied().unwrap_or(0))
            .sum::<u64>()
    };
    let mut last = store_calls(instance.addr).await?;
    let mut steady = 0;
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = store_calls(instance.addr).await?;
        let changes = now.get("changes").copied().unwrap_or(0);
        if listing(&now) == listing(&last) && changes > 0 {
            steady += 1;
            if steady >= 4 {
                return Ok(now);
            }
        } else {
            steady = 0;
        }
        last = now;
    }
    Err(format!(
        "{} still loading the store after {SETTLE_BOUND:?}",
        instance.proc.name
    ))
}

/// An instance's store calls so far, by operation, from its `/metrics`.
async fn store_calls(addr: SocketAddr) -> Result<BTreeMap<String, u64>, String> {
    let metrics = get_text(addr, "/metrics").await?;
    Ok(samples(&metrics, "mediator_store_calls_total")
        .into_iter()
        .filter_map(|(labels, value)| {
            let op = labels.strip_prefix("op=\"")?.strip_suffix('"')?;
            Some((op.to_owned(), value as u64))
        })
        .collect())
}

/// The samples of `name` in a Prometheus text exposition, by their labels
/// as written (`op="changes"`).
fn samples(text: &str, name: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?;
            let (labels, value) = match rest.strip_prefix('{') {
                Some(rest) => rest.split_once("} ")?,
                None => ("", rest.strip_prefix(' ')?),
            };
            Some((labels.to_owned(), value.trim().parse().ok()?))
        })
        .collect()
}

/// A histogram of times in microseconds, 1 µs to 100 s.
fn histogram() -> Histogram<u64> {
    // Valid constant bounds: construction cannot fail.
    Histogram::new_with_bounds(1, 100_000_000, 3).expect("valid histogram bounds")
}

fn record(histogram: &mut Histogram<u64>, time: Duration) {
    let micros = u64::try_from(time.as_micros()).unwrap_or(u64::MAX).max(1);
    // Past the upper bound (100 s) it saturates instead of failing.
    histogram.saturating_record(micros);
}

/// The start of a reply, for messages.
fn text(reply: &[u8]) -> String {
    String::from_utf8_lossy(&reply[..reply.len().min(200)]).into_owned()
}

/// POSTs `body` to `path` at `addr` over the HTTP/1.1 connection in
/// `send`, opening one when there is none or it broke.
async fn post(
    send: &mut Option<http1::SendRequest<Full<Bytes>>>,
    addr: SocketAddr,
    path: &str,
    auth: Option<&HeaderValue>,
    body: Bytes,
) -> Result<(StatusCode, Bytes), String> {
    let mut request = Request::builder()
        .method(Method::POST)
        .uri(path)
        .header(http::header::HOST, addr.to_string())
        .header(http::header::CONTENT_TYPE, "application/json");
    if let Some(auth) = auth {
        request = request.header(http::header::AUTHORIZATION, auth.clone());
    }
    let request = request.body(Full::new(body)).map_err(|e| e.to_string())?;
    exchange(send, addr, request).await
}

/// GETs `path` at `addr` on a connection of its own; the body must be
/// text and the answer 200.
async fn get_text(addr: SocketAddr, path: &str) -> Result<String, String> {
    let request = Request::builder()
        .method(Method::GET)
        .uri(path)
        .header(http::header::HOST, addr.to_string())
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let (status, body) = exchange(&mut None, addr, request).await?;
    if status != StatusCode::OK {
        return Err(format!("GET {path} at {addr}: {status}: {}", text(&body)));
    }
    String::from_utf8(body.to_vec()).map_err(|e| format!("GET {path} at {addr}: {e}"))
}

async fn exchange(
    send: &mut Option<http1::SendRequest<Full<Bytes>>>,
    addr: SocketAddr,
    request: Request<Full<Bytes>>,
) -> Result<(StatusCode, Bytes), String> {
    let ready = match send.as_mut() {
        Some(open) => open.ready().await.is_ok(),
        None => false,
    };
    if !ready {
        *send = Some(load::connect_h1(addr).await?);
    }
    let Some(open) = send.as_mut() else {
        return Err("no connection".into());
    };
    let response = match open.send_request(request).await {
        Ok(response) => response,
        Err(e) => {
            *send = None;
            return Err(format!("HTTP/1.1 to {addr}: {e}"));
        }
    };
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("reading the reply from {addr}: {e}"))?
        .to_bytes();
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_read_by_their_labels() {
        let text = "# HELP mediator_store_calls Calls.\n\
                    # TYPE mediator_store_calls counter\n\
                    mediator_store_calls_total{op=\"changes\"} 120\n\
                    mediator_store_calls_total{op=\"list_page\"} 101\n\
                    mediator_store_calls_totally 3\n\
                    mediator_nodes 7\n";
        assert_eq!(
            samples(text, "mediator_store_calls_total"),
            vec![
                ("op=\"changes\"".to_owned(), 120.0),
                ("op=\"list_page\"".to_owned(), 101.0)
            ]
        );
        assert_eq!(samples(text, "mediator_nodes"), vec![(String::new(), 7.0)]);
    }
}
