//! One run: starts what the chosen workloads need, measures each workload
//! along each chosen path in turn, stops everything, reports.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use http::HeaderValue;
use mediator_core::{Claims, NodeKey, SealKey, Timestamp, TokenMinter};
use mediator_transport_quic::QuicNodeClient;
use tokio::process::Command;

use crate::echo::{self, Clear};
use crate::load::{self, Link, Load, Window, Work};
use crate::procs::{self, Proc};
use crate::report::{median, Machine, ProcessCpu, Report, Row, Skipped};
use crate::Args;

mod formation;

/// Every path, in the order each unicast workload measures them.
const PATHS: &[&str] = &[
    "direct",
    "nginx",
    "haproxy",
    "nats",
    "mediator-h1",
    "mediator-h1-quiet",
    "mediator-h1-hyper",
    "baseline-h1",
    "mediator-h2",
    "mediator-quic",
];

/// The reverse proxies measured beside the mediator, each in front of the
/// echo server: a process and the address it listens on.
#[derive(Default)]
struct Proxies {
    nginx: Option<(Proc, SocketAddr)>,
    haproxy: Option<(Proc, SocketAddr)>,
}

impl Proxies {
    /// The proxy a path names, when it was started.
    fn get(&self, path: &str) -> Option<&(Proc, SocketAddr)> {
        match path {
            "nginx" => self.nginx.as_ref(),
            "haproxy" => self.haproxy.as_ref(),
            _ => None,
        }
    }
}

/// The largest broadcast group.
const BROADCAST_MAX: usize = 100;

/// Requests in flight of the churn workloads.
const CHURN_IN_FLIGHT: usize = 16;

/// What a workload is.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Unicast {
        body: usize,
        in_flight: usize,
    },
    Broadcast {
        nodes: usize,
        in_flight: usize,
    },
    Churn {
        mysql: bool,
    },
    Nodes {
        count: usize,
    },
    /// Registered at one instance, routable at another: how long after.
    Propagation {
        mysql: bool,
    },
    /// Through one instance to QUIC-attached nodes, local and forwarded.
    Forward {
        in_flight: usize,
    },
    /// 1, 2 and 3 instances behind nginx.
    Balanced {
        in_flight: usize,
    },
    /// The store calls of idle instances with `nodes` registered.
    Idle {
        nodes: usize,
        mysql: bool,
    },
}

/// Every workload's name and what it is, in the order a run measures them.
const KINDS: &[(&str, Kind)] = &[
    (
        "unicast-1k-1",
        Kind::Unicast {
            body: 1024,
            in_flight: 1,
        },
    ),
    (
        "unicast-1k-64",
        Kind::Unicast {
            body: 1024,
            in_flight: 64,
        },
    ),
    (
        "unicast-1k-256",
        Kind::Unicast {
            body: 1024,
            in_flight: 256,
        },
    ),
    (
        "unicast-64k-16",
        Kind::Unicast {
            body: 64 * 1024,
            in_flight: 16,
        },
    ),
    (
        "broadcast-10-1",
        Kind::Broadcast {
            nodes: 10,
            in_flight: 1,
        },
    ),
    (
        "broadcast-10-16",
        Kind::Broadcast {
            nodes: 10,
            in_flight: 16,
        },
    ),
    (
        "broadcast-100-1",
        Kind::Broadcast {
            nodes: 100,
            in_flight: 1,
        },
    ),
    (
        "broadcast-100-16",
        Kind::Broadcast {
            nodes: 100,
            in_flight: 16,
        },
    ),
    ("churn-sqlite", Kind::Churn { mysql: false }),
    ("churn-mysql", Kind::Churn { mysql: true }),
    ("nodes-1k", Kind::Nodes { count: 1_000 }),
    ("nodes-100k", Kind::Nodes { count: 100_000 }),
    (
        "formation-propagation-mysql",
        Kind::Propagation { mysql: true },
    ),
    (
        "formation-propagation-sqlite",
        Kind::Propagation { mysql: false },
    ),
    ("formation-forward-1k-64", Kind::Forward { in_flight: 64 }),
    ("formation-nginx-1k-64", Kind::Balanced { in_flight: 64 }),
    (
        "formation-idle-1k-sqlite",
        Kind::Idle {
            nodes: 1_000,
            mysql: false,
        },
    ),
    (
        "formation-idle-100k-sqlite",
        Kind::Idle {
            nodes: 100_000,
            mysql: false,
        },
    ),
    (
        "formation-idle-100k-mysql",
        Kind::Idle {
            nodes: 100_000,
            mysql: true,
        },
    ),
];

/// What `--workloads formation` stands for: every workload of several
/// instances on one store, which a run without `--workloads` leaves out
/// (the idle ones alone take minutes).
const FORMATION: &str = "formation";

fn kind(name: &str) -> Option<Kind> {
    KINDS
        .iter()
        .find(|(known, _)| *known == name)
        .map(|(_, kind)| *kind)
}

/// Picks the named entries of `all` (all of them when `asked` is empty),
/// refusing unknown names.
fn pick(asked: &[String], all: &[&'static str], what: &str) -> Result<Vec<&'static str>, String> {
    if asked.is_empty() {
        return Ok(all.to_vec());
    }
    for name in asked {
        if !all.contains(&name.as_str()) {
            return Err(format!(
                "unknown {what} {name:?}; known: {}",
                all.join(", ")
            ));
        }
    }
    Ok(all
        .iter()
        .copied()
        .filter(|name| asked.iter().any(|a| a == name))
        .collect())
}

/// The workloads asked for: every one but the formation's when none is
/// named; `formation` names all of those.
fn pick_workloads(asked: &[String]) -> Result<Vec<&'static str>, String> {
    let names: Vec<&'static str> = KINDS.iter().map(|(name, _)| *name).collect();
    let of_formation = |name: &str| name.starts_with("formation-");
    if asked.is_empty() {
        return Ok(names.into_iter().filter(|n| !of_formation(n)).collect());
    }
    let mut expanded = Vec::new();
    for name in asked {
        if name == FORMATION {
            expanded.extend(
                names
                    .iter()
                    .filter(|n| of_formation(n))
                    .map(|n| (*n).to_owned()),
            );
        } else {
            expanded.push(name.clone());
        }
    }
    pick(&expanded, &names, "workload")
}

/// A body of `size` bytes of printable text (a broadcast answers with
/// each body as a JSON string).
fn body(size: usize) -> Bytes {
    Bytes::from(
        (0..size)
            .map(|i| b"0123456789abcdef"[i % 16])
            .collect::<Vec<u8>>(),
    )
}

/// A running `mediator serve`.
struct Mediator {
    proc: Proc,
    addr: SocketAddr,
    quic: Option<(SocketAddr, String)>,
}

/// What every part of the run shares.
struct Bench<'a> {
    args: &'a Args,
    dir: tempfile::TempDir,
    secret: String,
    minter: TokenMinter,
    admin: HeaderValue,
    me: std::path::PathBuf,
    echo_urls: Vec<String>,
    report: Report,
}

pub(crate) async fn run(args: Args) -> Result<(), String> {
    if args.runs == 0 {
        return Err("--runs must be at least 1".into());
    }
    let workloads = pick_workloads(&args.workloads)?;
    let paths = pick(&args.paths, PATHS, "path")?;
    let dir = tempfile::tempdir().map_err(|e| format!("making a temporary folder: {e}"))?;
    let secret = SealKey::generate().to_base64();
    let minter = TokenMinter::hs256(&secret);
    let admin = bearer(
        &minter,
        &Claims::admin(Timestamp::now(), Duration::from_secs(86_400)),
    )?;
    let me = std::env::current_exe().map_err(|e| format!("locating this executable: {e}"))?;
    let mut bench = Bench {
        args: &args,
        dir,
        secret,
        minter,
        admin,
        me,
        echo_urls: Vec::new(),
        report: Report {
            machine: Machine::detect(),
            window_s: args.duration.as_secs_f64(),
            warmup_s: args.warmup.as_secs_f64(),
            runs: args.runs,
            interleaved: args.interleave,
            rows: Vec::new(),
            skipped: Vec::new(),
            propagation: Vec::new(),
            store_load: Vec::new(),
        },
    };
    let ports = if workloads.iter().any(|w| w.starts_with("broadcast")) {
        1 + BROADCAST_MAX
    } else {
        1
    };
    let mut echo_command = Command::new(&bench.me);
    echo_command
        .arg("echo-node")
        .arg("--ports")
        .arg(ports.to_string());
    let (echo_proc, lines) = start_node("the echo node", echo_command, echo::ECHO_READY).await?;
    bench.echo_urls = lines
        .iter()
        .filter_map(|line| line.strip_prefix(echo::ECHO_LISTENING))
        .map(str::to_owned)
        .collect();
    let outcome = bench.measure_all(&workloads, &paths).await;
    echo_proc.stop().await;
    outcome?;
    let mut report = bench.report;
    report.compute_ratios();
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?
        );
    } else {
        print!("{}", report.table());
    }
    Ok(())
}

fn bearer(minter: &TokenMinter, claims: &Claims) -> Result<HeaderValue, String> {
    let token = minter.mint(claims).map_err(|e| e.to_string())?;
    HeaderValue::from_str(&format!("Bearer {token}")).map_err(|e| e.to_string())
}

fn echo_addr(url: &str) -> Result<SocketAddr, String> {
    url.trim_start_matches("http://")
        .parse()
        .map_err(|e| format!("echo URL {url}: {e}"))
}

impl Bench<'_> {
    fn skip(&mut self, what: &str, reason: impl Into<String>) {
        let reason = reason.into();
        if !self.args.json {
            eprintln!("skipping {what}: {reason}");
        }
        self.report.skipped.push(Skipped {
            what: what.to_owned(),
            reason,
        });
    }

    async fn measure_all(&mut self, workloads: &[&str], paths: &[&str]) -> Result<(), String> {
        let needs_shared = workloads
            .iter()
            .any(|w| matches!(kind(w), Some(Kind::Unicast { .. } | Kind::Broadcast { .. })))
            && paths.iter().any(|p| p.starts_with("mediator"));
        let mut shared = None;
        let mut quiet = None;
        let mut hyper = None;
        let mut baseline = None;
        let mut quic_echo = None;
        let mut proxies = Proxies::default();
        let mut nats = None;
        let unicast = workloads
            .iter()
            .any(|w| matches!(kind(w), Some(Kind::Unicast { .. })));
        if needs_shared {
            let mediator = self.start_mediator("memory", true, false).await?;
            self.register_echo_nodes(&mediator, workloads).await?;
            if unicast && paths.contains(&"mediator-quic") {
                quic_echo = Some(self.start_quic_echo(&mediator).await?);
            }
            shared = Some(mediator);
        }
        if unicast && paths.contains(&"mediator-h1-quiet") {
            let mediator = self.start_mediator("memory", false, true).await?;
            self.register(&mediator, &[self.echo_registration("bench", "echo", 0)])
                .await?;
            quiet = Some(mediator);
        }
        if unicast && paths.contains(&"mediator-h1-hyper") {
            let binary = procs::mediator_binary(self.args.mediator.as_deref())?;
            let without = ["--pass-through".to_owned(), "false".to_owned()];
            let mediator = self
                .start_mediator_with(&binary, "memory", false, false, &without)
                .await?;
            self.register(&mediator, &[self.echo_registration("bench", "echo", 0)])
                .await?;
            hyper = Some(mediator);
        }
        if unicast && paths.contains(&"baseline-h1") {
            match self.args.baseline.clone() {
                Some(binary) => {
                    let mediator = self
                        .start_mediator_from(&binary, "memory", false, false)
                        .await?;
                    self.register(&mediator, &[self.echo_registration("bench", "echo", 0)])
                        .await?;
                    baseline = Some(mediator);
                }
                None if !self.args.paths.is_empty() => {
                    self.skip("baseline-h1", "no --baseline binary was given");
                }
                None => {}
            }
        }
        if unicast && paths.contains(&"nginx") {
            match self.start_nginx().await {
                Ok(started) => proxies.nginx = Some(started),
                Err(reason) => self.skip("nginx", reason),
            }
        }
        if unicast && paths.contains(&"haproxy") {
            match self.start_haproxy().await {
                Ok(started) => proxies.haproxy = Some(started),
                Err(reason) => self.skip("haproxy", reason),
            }
        }
        if unicast && paths.contains(&"nats") {
            match self.start_nats_echo().await {
                Ok(started) => nats = Some(started),
                Err(reason) => self.skip("nats", reason),
            }
        }
        let mut outcome = Ok(());
        for workload in workloads {
            let Some(kind) = kind(workload) else { continue };
            let result = match kind {
                Kind::Unicast { body, in_flight } => {
                    self.unicast(
                        workload,
                        body,
                        in_flight,
                        paths,
                        shared.as_ref(),
                        [quiet.as_ref(), hyper.as_ref(), baseline.as_ref()],
                        &proxies,
                        nats.as_ref(),
                    )
                    .await
                }
                Kind::Broadcast { nodes, in_flight } => match &shared {
                    Some(mediator) if paths.contains(&"mediator-h1") => {
                        self.broadcast(workload, nodes, in_flight, mediator).await
                    }
                    _ => {
                        self.skip(workload, "measured along mediator-h1 only");
                        Ok(())
                    }
                },
                Kind::Churn { mysql } => self.churn(workload, mysql).await,
                Kind::Nodes { count } => self.nodes(workload, count).await,
                Kind::Propagation { mysql } => self.propagation(workload, mysql).await,
                Kind::Forward { in_flight } => self.forward(workload, in_flight).await,
                Kind::Balanced { in_flight } => self.balanced(workload, in_flight).await,
                Kind::Idle { nodes, mysql } => self.idle(workload, nodes, mysql).await,
            };
            if let Err(e) = result {
                outcome = Err(format!("{workload}: {e}"));
                break;
            }
        }
        if let Some(proc) = quic_echo {
            proc.stop().await;
        }
        for mediator in [shared, quiet, hyper, baseline].into_iter().flatten() {
            mediator.proc.stop().await;
        }
        for (proc, _) in [proxies.nginx, proxies.haproxy].into_iter().flatten() {
            proc.stop().await;
        }
        if let Some((proc, _)) = nats {
            proc.stop().await;
        }
        outcome
    }

    /// Starts `mediator serve` as a user runs it: default settings and log
    /// level (`quiet`: RUST_LOG=warn), on loopback ports of its choosing.
    async fn start_mediator(
        &self,
        store: &str,
        quic: bool,
        quiet: bool,
    ) -> Result<Mediator, String> {
        let binary = procs::mediator_binary(self.args.mediator.as_deref())?;
        self.start_mediator_from(&binary, store, quic, quiet).await
    }

    /// [`Self::start_mediator`] with another build of the binary.
    async fn start_mediator_from(
        &self,
        binary: &Path,
        store: &str,
        quic: bool,
        quiet: bool,
    ) -> Result<Mediator, String> {
        self.start_mediator_with(binary, store, quic, quiet, &[])
            .await
    }

    /// [`Self::start_mediator_from`] with more arguments to `serve`.
    async fn start_mediator_with(
        &self,
        binary: &Path,
        store: &str,
        quic: bool,
        quiet: bool,
        extra: &[String],
    ) -> Result<Mediator, String> {
        let mut command = Command::new(binary);
        command
            .arg("serve")
            .args(extra)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--store")
            .arg(store)
            .current_dir(self.dir.path())
            .env("MEDIATOR_SECRET", &self.secret)
            .env_remove("RUST_LOG");
        if quic {
            command.arg("--quic-listen").arg("127.0.0.1:0");
        }
        if quiet {
            command.env("RUST_LOG", "warn");
        }
        let log = match &self.args.mediator_log {
            Some(path) => std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map(Stdio::from)
                .map_err(|e| format!("opening {}: {e}", path.display()))?,
            None => Stdio::null(),
        };
        command.stderr(log);
        let mut needles = vec!["mediator listening on "];
        if quic {
            needles.push("mediator QUIC listening on ");
        }
        let (proc, lines) =
            Proc::start("mediator serve", command, &needles, Duration::from_secs(30)).await?;
        let mut addr = None;
        let mut quic_addr = None;
        for line in &lines {
            if let Some(url) = line.strip_prefix("mediator listening on http://") {
                addr = url.trim().parse::<SocketAddr>().ok();
            }
            if let Some(rest) = line.strip_prefix("mediator QUIC listening on ") {
                if let Some((at, fingerprint)) = rest.split_once(", certificate SHA-256 ") {
                    quic_addr = at
                        .parse::<SocketAddr>()
                        .ok()
                        .map(|a| (a, fingerprint.trim().to_owned()));
                }
            }
        }
        let addr = addr.ok_or_else(|| format!("mediator serve printed no address: {lines:?}"))?;
        Ok(Mediator {
            proc,
            addr,
            quic: quic_addr,
        })
    }

    fn echo_registration(&self, group: &str, name: &str, port: usize) -> String {
        let url = &self.echo_urls[port.min(self.echo_urls.len() - 1)];
        format!(r#"{{"group":"{group}","name":"{name}","url":"{url}","ttl":86400}}"#)
    }

    async fn register_echo_nodes(
        &self,
        mediator: &Mediator,
        workloads: &[&str],
    ) -> Result<(), String> {
        let mut registrations = vec![self.echo_registration("bench", "echo", 0)];
        for (group, nodes) in [("b10", 10), ("b100", BROADCAST_MAX)] {
            if workloads
                .iter()
                .any(|w| matches!(kind(w), Some(Kind::Broadcast { nodes: n, .. }) if n == nodes))
            {
                for i in 0..nodes {
                    registrations.push(self.echo_registration(group, &format!("n{i}"), 1 + i));
                }
            }
        }
        self.register(mediator, &registrations).await
    }

    /// POSTs every registration to `/register` with the admin token, from
    /// up to 64 connections at once.
    async fn register(&self, mediator: &Mediator, registrations: &[String]) -> Result<(), String> {
        self.post_all(mediator.addr, "/register", registrations, b"{\"entity\"")
            .await
    }

    /// POSTs every body to `route` at `addr` with the admin token, from up
    /// to 64 connections at once; each answer must be 200 and start with
    /// `expect`.
    async fn post_all(
        &self,
        addr: SocketAddr,
        route: &'static str,
        bodies: &[String],
        expect: &'static [u8],
    ) -> Result<(), String> {
        let chunk = bodies.len().div_ceil(64).max(1);
        let mut tasks = tokio::task::JoinSet::new();
        for part in bodies.chunks(chunk) {
            let part: Vec<String> = part.to_vec();
            let admin = self.admin.clone();
            tasks.spawn(async move {
                let mut send = load::connect_h1(addr).await?;
                for registration in part {
                    let request = http::Request::post(route)
                        .header(http::header::HOST, addr.to_string())
                        .header(http::header::AUTHORIZATION, admin.clone())
                        .header(http::header::CONTENT_TYPE, "application/json")
                        .body(http_body_util::Full::new(Bytes::from(registration)))
                        .map_err(|e| e.to_string())?;
                    send.ready().await.map_err(|e| e.to_string())?;
                    let response = send
                        .send_request(request)
                        .await
                        .map_err(|e| e.to_string())?;
                    let status = response.status();
                    let body = http_body_util::BodyExt::collect(response.into_body())
                        .await
                        .map_err(|e| e.to_string())?
                        .to_bytes();
                    if status != http::StatusCode::OK || !body.starts_with(expect) {
                        return Err(format!(
                            "{route}: {status}: {}",
                            String::from_utf8_lossy(&body)
                        ));
                    }
                }
                Ok::<(), String>(())
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.map_err(|e| e.to_string())??;
        }
        Ok(())
    }

    async fn start_quic_echo(&self, mediator: &Mediator) -> Result<Proc, String> {
        self.start_quic_echo_as(mediator, "bench/qecho").await
    }

    /// An echo node attached to `mediator` over QUIC as `node`.
    async fn start_quic_echo_as(&self, mediator: &Mediator, node: &str) -> Result<Proc, String> {
        let (addr, pin) = mediator
            .quic
            .clone()
            .ok_or("the mediator printed no QUIC listener")?;
        let mut command = Command::new(&self.me);
        command
            .arg("quic-echo")
            .arg("--addr")
            .arg(addr.to_string())
            .arg("--pin")
            .arg(pin)
            .arg("--node")
            .arg(node)
            .env("MEDIATOR_SECRET", &self.secret)
            .env("RUST_LOG", "error");
        let (proc, _) = start_node("the QUIC echo node", command, echo::QUIC_READY).await?;
        Ok(proc)
    }

    /// nginx in the foreground with a config of ours: a keep-alive upstream
    /// to the echo node, the access log written (to /dev/null) as the
    /// mediator writes its request line.
    async fn start_nginx(&self) -> Result<(Proc, SocketAddr), String> {
        let upstream = echo_addr(&self.echo_urls[0])?;
        let (proc, addrs) = self.start_nginx_for("nginx", &[vec![upstream]]).await?;
        let addr = addrs.first().copied().ok_or("nginx has no listener")?;
        Ok((proc, addr))
    }

    /// nginx with one listener per entry of `upstreams`, each proxying to
    /// a keep-alive upstream of those servers (round robin); its files in
    /// the run's folder `name`. Returns the listeners' addresses in order.
    async fn start_nginx_for(
        &self,
        name: &str,
        upstreams: &[Vec<SocketAddr>],
    ) -> Result<(Proc, Vec<SocketAddr>), String> {
        let binary =
            which(&self.args.nginx).ok_or_else(|| format!("{} not found", self.args.nginx))?;
        let prefix = self.dir.path().join(name);
        std::fs::create_dir_all(prefix.join("logs")).map_err(|e| e.to_string())?;
        let mut addrs = Vec::with_capacity(upstreams.len());
        let mut blocks = String::new();
        for (i, servers) in upstreams.iter().enumerate() {
            let port = procs::free_port()?;
            addrs.push(SocketAddr::from(([127, 0, 0, 1], port)));
            let servers: String = servers
                .iter()
                .map(|server| format!(" server {server};"))
                .collect();
            blocks.push_str(&format!(
                "  upstream up{i} {{{servers} keepalive 512; keepalive_requests 1000000; }}\n\
                 \x20 server {{\n\
                 \x20   listen 127.0.0.1:{port};\n\
                 \x20   location / {{\n\
                 \x20     proxy_pass http://up{i};\n\
                 \x20     proxy_http_version 1.1;\n\
                 \x20     proxy_set_header Connection \"\";\n\
                 \x20   }}\n\
                 \x20 }}\n"
            ));
        }
        let p = prefix.display();
        let config = format!(
            "worker_processes auto;\n\
             error_log {p}/logs/error.log warn;\n\
             pid {p}/logs/nginx.pid;\n\
             events {{ worker_connections 4096; }}\n\
             http {{\n\
               access_log /dev/null;\n\
               client_body_temp_path {p}/body;\n\
               proxy_temp_path {p}/proxy;\n\
               fastcgi_temp_path {p}/fastcgi;\n\
               uwsgi_temp_path {p}/uwsgi;\n\
               scgi_temp_path {p}/scgi;\n\
               client_max_body_size 16m;\n\
               client_body_buffer_size 128k;\n\
               proxy_buffer_size 64k;\n\
               proxy_buffers 8 64k;\n\
               proxy_busy_buffers_size 128k;\n\
               keepalive_requests 1000000;\n\
             {blocks}\
             }}\n"
        );
        let conf = prefix.join("nginx.conf");
        std::fs::write(&conf, config).map_err(|e| e.to_string())?;
        let mut command = Command::new(binary);
        command
            .arg("-p")
            .arg(&prefix)
            .arg("-c")
            .arg(&conf)
            .arg("-e")
            .arg(prefix.join("logs/error.log"))
            .arg("-g")
            .arg("daemon off;")
            .stderr(Stdio::null());
        let proc = Proc::spawn_quiet("nginx", command)?;
        for addr in &addrs {
            if !procs::wait_for_port(*addr, Duration::from_secs(10)).await {
                proc.stop().await;
                let log =
                    std::fs::read_to_string(prefix.join("logs/error.log")).unwrap_or_default();
                return Err(format!("nginx did not listen on {addr}: {}", log.trim()));
            }
        }
        Ok((proc, addrs))
    }

    /// HAProxy in front of the echo server, as its users tune it for
    /// throughput: one thread per core, upstream connections reused by any
    /// client (`http-reuse always`), no log.
    async fn start_haproxy(&self) -> Result<(Proc, SocketAddr), String> {
        let binary =
            which(&self.args.haproxy).ok_or_else(|| format!("{} not found", self.args.haproxy))?;
        let dir = self.dir.path().join("haproxy");
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let port = procs::free_port()?;
        let upstream = echo_addr(&self.echo_urls[0])?;
        let threads = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        let config = format!(
            "global\n\
             \x20 nbthread {threads}\n\
             \x20 maxconn 4096\n\
             defaults\n\
             \x20 mode http\n\
             \x20 option http-keep-alive\n\
             \x20 http-reuse always\n\
             \x20 timeout connect 5s\n\
             \x20 timeout client 60s\n\
             \x20 timeout server 60s\n\
             frontend bench\n\
             \x20 bind 127.0.0.1:{port}\n\
             \x20 default_backend echo\n\
             backend echo\n\
             \x20 server echo {upstream} maxconn 4096\n"
        );
        let conf = dir.join("haproxy.cfg");
        std::fs::write(&conf, config).map_err(|e| e.to_string())?;
        let mut command = Command::new(binary);
        let log_path = dir.join("haproxy.log");
        let log = std::fs::File::create(&log_path).map_err(|e| e.to_string())?;
        // -db: in the foreground, one process whose CPU is counted.
        command.arg("-db").arg("-f").arg(&conf).stderr(log);
        let proc = Proc::spawn_quiet("haproxy", command)?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        if !procs::wait_for_port(addr, Duration::from_secs(10)).await {
            proc.stop().await;
            let said = std::fs::read_to_string(&log_path).unwrap_or_default();
            return Err(format!("haproxy did not listen on {addr}: {}", said.trim()));
        }
        Ok((proc, addr))
    }

    async fn start_nats_echo(&self) -> Result<(Proc, String), String> {
        let host = self
            .args
            .nats
            .trim_start_matches("nats://")
            .trim_end_matches('/');
        if !answers(host).await {
            return Err(format!("no NATS server answers at {}", self.args.nats));
        }
        let subject = format!("bench.{}.echo", std::process::id());
        let mut command = Command::new(&self.me);
        command
            .arg("nats-echo")
            .arg("--url")
            .arg(&self.args.nats)
            .arg("--subject")
            .arg(&subject);
        let (proc, _) = start_node("the NATS replier", command, echo::NATS_READY).await?;
        Ok((proc, subject))
    }

    /// One workload's rows: each chosen path in turn.
    #[allow(clippy::too_many_arguments)]
    async fn unicast(
        &mut self,
        workload: &str,
        size: usize,
        in_flight: usize,
        paths: &[&str],
        shared: Option<&Mediator>,
        // The quiet, hyper-only and baseline mediators, when started.
        [quiet, hyper, baseline]: [Option<&Mediator>; 3],
        proxies: &Proxies,
        nats: Option<&(Proc, String)>,
    ) -> Result<(), String> {
        let payload = body(size);
        // With --interleave, every path's load is set up first and measured
        // in turns below.
        let mut in_turns = Vec::new();
        for path in paths {
            let echo_work = |route: &str| Work::Echo {
                path: route.to_owned(),
                body: payload.clone(),
            };
            let (links, work, middle): (Vec<Link>, Work, Option<&Proc>) = match *path {
                "direct" => {
                    let addr = echo_addr(&self.echo_urls[0])?;
                    (
                        h1_links(addr, in_flight, |_| None),
                        echo_work("/echo"),
                        None,
                    )
                }
                "nginx" | "haproxy" => match proxies.get(path) {
                    Some((proc, addr)) => (
                        h1_links(*addr, in_flight, |_| None),
                        echo_work("/echo"),
                        Some(proc),
                    ),
                    None => continue,
                },
                "nats" => match nats {
                    Some((_, subject)) => {
                        let mut clients = Vec::new();
                        for _ in 0..load::mux_connections(in_flight) {
                            clients.push(
                                async_nats::connect(self.args.nats.as_str())
                                    .await
                                    .map_err(|e| format!("connecting to NATS: {e}"))?,
                            );
                        }
                        let links = (0..in_flight)
                            .map(|i| Link::Nats {
                                client: clients[i % clients.len()].clone(),
                                subject: subject.clone(),
                            })
                            .collect();
                        (links, echo_work("/echo"), None)
                    }
                    None => continue,
                },
                "mediator-h1" | "mediator-h1-quiet" | "mediator-h1-hyper" | "baseline-h1" => {
                    let mediator = match *path {
                        "mediator-h1" => shared,
                        "mediator-h1-quiet" => quiet,
                        "mediator-h1-hyper" => hyper,
                        _ => baseline,
                    };
                    let Some(mediator) = mediator else { continue };
                    let links = self.caller_links(mediator.addr, in_flight)?;
                    (
                        links,
                        echo_work("/one/bench/echo/echo"),
                        Some(&mediator.proc),
                    )
                }
                "mediator-h2" => {
                    let Some(mediator) = shared else { continue };
                    let mut sends = Vec::new();
                    for _ in 0..load::mux_connections(in_flight) {
                        sends.push(load::connect_h2(mediator.addr).await?);
                    }
                    let mut links = Vec::with_capacity(in_flight);
                    for i in 0..in_flight {
                        links.push(Link::H2 {
                            addr: mediator.addr,
                            send: sends[i % sends.len()].clone(),
                            auth: Some(self.caller_token(i)?),
                        });
                    }
                    (
                        links,
                        echo_work("/one/bench/echo/echo"),
                        Some(&mediator.proc),
                    )
                }
                "mediator-quic" => {
                    let Some(mediator) = shared else { continue };
                    let (addr, pin) = mediator
                        .quic
                        .clone()
                        .ok_or("the mediator printed no QUIC listener")?;
                    let mut clients = Vec::new();
                    for c in 0..load::mux_connections(in_flight) {
                        let key: NodeKey =
                            format!("bench/q{c}").parse().map_err(|e| format!("{e}"))?;
                        clients.push(
                            QuicNodeClient::builder(addr)
                                .pin(&pin)
                                .node_key(key)
                                .token_minter(self.minter.clone())
                                .cipher(Clear)
                                .connect()
                                .await
                                .map_err(|e| format!("connecting over QUIC: {e}"))?,
                        );
                    }
                    let target: NodeKey = "bench/qecho".parse().map_err(|e| format!("{e}"))?;
                    let links = (0..in_flight)
                        .map(|i| Link::Quic {
                            client: clients[i % clients.len()].clone(),
                            target: target.clone(),
                        })
                        .collect();
                    (links, echo_work("/echo"), Some(&mediator.proc))
                }
                _ => continue,
            };
            let mut load = Load::new(links, work);
            let middles: Vec<&Proc> = middle.into_iter().collect();
            if self.args.interleave {
                in_turns.push((*path, load, middles));
                continue;
            }
            let row = self
                .measure(&mut load, workload, path, in_flight, size, 1, &middles)
                .await;
            self.push(row);
        }
        for row in self
            .measure_in_turns(&mut in_turns, workload, in_flight, size)
            .await
        {
            self.push(row);
        }
        Ok(())
    }

    /// [`measure`](Self::measure) for several paths at once: each warms
    /// up, then the paths take turns, one window each, `runs` times. A
    /// path's CPU counts its own windows only.
    async fn measure_in_turns(
        &self,
        paths: &mut [(&str, Load, Vec<&Proc>)],
        workload: &str,
        in_flight: usize,
        size: usize,
    ) -> Vec<Row> {
        let mut tallies: Vec<Tally> = Vec::with_capacity(paths.len());
        for (_, load, _) in paths.iter_mut() {
            let mut tally = Tally::default();
            tally.count_errors(load.window(self.args.warmup).await);
            tallies.push(tally);
        }
        for _ in 0..self.args.runs {
            for ((_, load, middles), tally) in paths.iter_mut().zip(&mut tallies) {
                let before = cpu_of(middles);
                let window = load.window(self.args.duration).await;
                let after = cpu_of(middles);
                tally.add(window, cpu_between(before, after));
            }
        }
        paths
            .iter()
            .zip(tallies)
            .map(|((path, _, middles), tally)| {
                tally.row(workload, path, in_flight, size, 1, middles)
            })
            .collect()
    }

    /// One caller identity per slot, as many independent services would
    /// call: the per-caller in-flight limit then applies as in production.
    fn caller_token(&self, slot: usize) -> Result<HeaderValue, String> {
        let key: NodeKey = format!("bench/c{slot}")
            .parse()
            .map_err(|e| format!("{e}"))?;
        bearer(
            &self.minter,
            &Claims::node(&key, Timestamp::now(), Duration::from_secs(86_400)),
        )
    }

    fn caller_links(&self, addr: SocketAddr, in_flight: usize) -> Result<Vec<Link>, String> {
        (0..in_flight)
            .map(|i| {
                Ok(Link::H1 {
                    addr,
                    auth: Some(self.caller_token(i)?),
                })
            })
            .collect()
    }

    async fn broadcast(
        &mut self,
        workload: &str,
        nodes: usize,
        in_flight: usize,
        mediator: &Mediator,
    ) -> Result<(), String> {
        let links = self.caller_links(mediator.addr, in_flight)?;
        let mut load = Load::new(
            links,
            Work::Broadcast {
                path: format!("/many/b{nodes}/echo"),
                body: body(1024),
                nodes,
            },
        );
        let row = self
            .measure(
                &mut load,
                workload,
                "mediator-h1",
                in_flight,
                1024,
                nodes,
                &[&mediator.proc],
            )
            .await;
        self.push(row);
        Ok(())
    }

    /// The store URL of a workload: `--mysql` when a server answers there
    /// (else the workload is skipped: `None`), or a new SQLite file of
    /// this run named `file`.
    async fn store_url(&mut self, workload: &str, mysql: bool, file: &str) -> Option<String> {
        if !mysql {
            return Some(format!("sqlite:{}", self.dir.path().join(file).display()));
        }
        let host = self
            .args
            .mysql
            .trim_start_matches("mysql://")
            .rsplit('@')
            .next()
            .unwrap_or_default()
            .split('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        if !answers(&host).await {
            self.skip(workload, format!("no MySQL server answers at {host}"));
            return None;
        }
        Some(self.args.mysql.clone())
    }

    async fn churn(&mut self, workload: &str, mysql: bool) -> Result<(), String> {
        let Some(store) = self.store_url(workload, mysql, "churn.db").await else {
            return Ok(());
        };
        let mediator = self.start_mediator(&store, false, false).await?;
        let links = (0..CHURN_IN_FLIGHT)
            .map(|_| Link::H1 {
                addr: mediator.addr,
                auth: Some(self.admin.clone()),
            })
            .collect();
        let group = format!("churn{}", std::process::id());
        let mut load = Load::new(
            links,
            Work::Churn {
                group,
                url: self.echo_urls[0].clone(),
            },
        );
        let row = self
            .measure(
                &mut load,
                workload,
                "mediator-h1",
                CHURN_IN_FLIGHT,
                0,
                1,
                &[&mediator.proc],
            )
            .await;
        mediator.proc.stop().await;
        self.push(row);
        Ok(())
    }

    async fn nodes(&mut self, workload: &str, count: usize) -> Result<(), String> {
        let mediator = self.start_mediator("memory", false, false).await?;
        let mut registrations = Vec::with_capacity(count + 1);
        registrations.push(self.echo_registration("bench", "echo", 0));
        let groups = 100;
        for i in 0..count {
            registrations.push(self.echo_registration(
                &format!("scale{}", i % groups),
                &format!("n{}", i / groups),
                0,
            ));
        }
        let outcome = self.register(&mediator, &registrations).await;
        if let Err(e) = outcome {
            mediator.proc.stop().await;
            return Err(e);
        }
        drop(registrations);
        let in_flight = 64;
        let links = self.caller_links(mediator.addr, in_flight)?;
        let mut load = Load::new(
            links,
            Work::Echo {
                path: "/one/bench/echo/echo".into(),
                body: body(1024),
            },
        );
        let mut row = self
            .measure(
                &mut load,
                workload,
                "mediator-h1",
                in_flight,
                1024,
                1,
                &[&mediator.proc],
            )
            .await;
        row.registered_nodes = Some(count + 1);
        mediator.proc.stop().await;
        self.push(row);
        Ok(())
    }

    fn push(&mut self, row: Row) {
        if !self.args.json {
            eprintln!(
                "{:<17} {:<18} {:>9.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms  {} errors",
                row.workload, row.path, row.req_per_s, row.p50_ms, row.p99_ms, row.errors
            );
        }
        self.report.rows.push(row);
    }

    /// A warm-up window, then `runs` measured ones; the row holds their
    /// medians and the middle processes' CPU over the measured windows.
    #[allow(clippy::too_many_arguments)]
    async fn measure(
        &self,
        load: &mut Load,
        workload: &str,
        path: &str,
        in_flight: usize,
        size: usize,
        fanout: usize,
        middles: &[&Proc],
    ) -> Row {
        let mut tally = Tally::default();
        tally.count_errors(load.window(self.args.warmup).await);
        let cpu_before = cpu_of(middles);
        for _ in 0..self.args.runs {
            tally.add(load.window(self.args.duration).await, None);
        }
        let cpu_after = cpu_of(middles);
        tally.cpu_s = cpu_between(cpu_before, cpu_after);
        tally.row(workload, path, in_flight, size, fanout, middles)
    }
}

/// Starts one of the harness's own nodes and waits for its `ready` line.
async fn start_node(
    name: &str,
    command: Command,
    ready: &str,
) -> Result<(Proc, Vec<String>), String> {
    Proc::start(name, command, &[ready], Duration::from_secs(15)).await
}

/// Whether something accepts TCP connections at `host:port` within a second.
async fn answers(host: &str) -> bool {
    let connecting = tokio::net::TcpStream::connect(host);
    matches!(
        tokio::time::timeout(Duration::from_secs(1), connecting).await,
        Ok(Ok(_))
    )
}

fn h1_links(
    addr: SocketAddr,
    in_flight: usize,
    auth: impl Fn(usize) -> Option<HeaderValue>,
) -> Vec<Link> {
    (0..in_flight)
        .map(|i| Link::H1 {
            addr,
            auth: auth(i),
        })
        .collect()
}

/// `name` as given when it is a path, else the first match on PATH or in
/// /usr/sbin and /sbin (where distributions put nginx).
fn which(name: &str) -> Option<std::path::PathBuf> {
    let given = Path::new(name);
    if given.components().count() > 1 {
        return given.is_file().then(|| given.to_owned());
    }
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"])
        .map(|dir| Path::new(dir).join(name))
        .find(|candidate| candidate.is_file());
    found
}

/// CPU seconds used so far by each of `procs`; `None` when one of them
/// cannot be read.
fn cpu_of(procs: &[&Proc]) -> Option<Vec<f64>> {
    procs.iter().map(|proc| proc.cpu_seconds()).collect()
}

/// What each process used between two readings of [`cpu_of`].
fn cpu_between(before: Option<Vec<f64>>, after: Option<Vec<f64>>) -> Option<Vec<f64>> {
    let (before, after) = before.zip(after)?;
    Some(after.iter().zip(&before).map(|(a, b)| a - b).collect())
}

/// The measured windows of one row, and the middle processes' CPU over
/// them.
#[derive(Default)]
struct Tally {
    rates: Vec<f64>,
    p50: Vec<f64>,
    p99: Vec<f64>,
    requests: u64,
    errors: u64,
    first_error: Option<String>,
    /// CPU seconds of each middle process over the measured windows;
    /// `None` when unknown.
    cpu_s: Option<Vec<f64>>,
}

impl Tally {
    /// A window whose errors count and nothing else: the warm-up's, and
    /// the errors part of every measured one.
    fn count_errors(&mut self, window: Window) {
        self.errors += window.errors;
        if self.first_error.is_none() {
            self.first_error = window.first_error;
        }
    }

    /// A measured window, with the middle processes' CPU over it when
    /// counted per window.
    fn add(&mut self, window: Window, cpu_s: Option<Vec<f64>>) {
        self.rates.push(window.rate());
        self.p50.push(window.quantile_ms(0.50));
        self.p99.push(window.quantile_ms(0.99));
        self.requests += window.ok;
        self.count_errors(window);
        if let Some(cpu_s) = cpu_s {
            let total = self.cpu_s.get_or_insert_with(|| vec![0.0; cpu_s.len()]);
            for (sum, used) in total.iter_mut().zip(cpu_s) {
                *sum += used;
            }
        }
    }

    /// The row: medians of the windows, CPU per 10,000 requests (all the
    /// middle processes together, and each when there are several).
    fn row(
        self,
        workload: &str,
        path: &str,
        in_flight: usize,
        size: usize,
        fanout: usize,
        middles: &[&Proc],
    ) -> Row {
        let per_10k = |cpu_s: f64| cpu_s / self.requests.max(1) as f64 * 10_000.0;
        let known = self.cpu_s.as_ref().filter(|_| self.requests > 0);
        let cpu_s_per_10k = known.map(|each| per_10k(each.iter().sum()));
        let cpu_by_process = match known {
            Some(each) if middles.len() > 1 => middles
                .iter()
                .zip(each)
                .map(|(proc, cpu_s)| ProcessCpu {
                    process: proc.name.clone(),
                    cpu_s_per_10k: per_10k(*cpu_s),
                })
                .collect(),
            _ => Vec::new(),
        };
        let peak_rss_mib = if middles.is_empty() {
            None
        } else {
            middles
                .iter()
                .map(|proc| proc.peak_rss_mib())
                .sum::<Option<f64>>()
        };
        let req_per_s = median(self.rates);
        Row {
            workload: workload.to_owned(),
            path: path.to_owned(),
            in_flight,
            body_bytes: size,
            requests: self.requests,
            errors: self.errors,
            first_error: self.first_error,
            req_per_s,
            deliveries_per_s: req_per_s * fanout as f64,
            p50_ms: median(self.p50),
            p99_ms: median(self.p99),
            cpu_s_per_10k,
            cpu_by_process,
            peak_rss_mib,
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formation_workloads_are_asked_by_name() {
        let all = pick_workloads(&[]).expect("all");
        assert!(all.contains(&"unicast-1k-64"));
        assert!(!all.iter().any(|w| w.starts_with("formation-")));
        let formation = pick_workloads(&["formation".into()]).expect("formation");
        assert!(formation.contains(&"formation-propagation-sqlite"));
        assert!(formation.iter().all(|w| w.starts_with("formation-")));
        let one =
            pick_workloads(&["formation-forward-1k-64".into(), "nodes-1k".into()]).expect("named");
        assert_eq!(one, vec!["nodes-1k", "formation-forward-1k-64"]);
    }

    #[test]
    fn every_workload_has_a_kind_and_picks_check_names() {
        for (workload, _) in KINDS {
            assert!(kind(workload).is_some(), "{workload}");
        }
        assert_eq!(
            kind("unicast-1k-256"),
            Some(Kind::Unicast {
                body: 1024,
                in_flight: 256
            })
        );
        assert_eq!(kind("unicast-2k-3"), None);
        assert_eq!(pick(&[], PATHS, "path").expect("all").len(), PATHS.len());
        assert_eq!(
            pick(&["nats".into(), "direct".into()], PATHS, "path").expect("known"),
            vec!["direct", "nats"]
        );
        assert!(pick(&["carrier-pigeon".into()], PATHS, "path").is_err());
    }
}
