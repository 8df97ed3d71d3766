//! Soak run: the `mediator` binary under moderate, mixed load for a long
//! time (10 minutes by default), watched from outside for leaks.
//!
//! Starts `mediator serve` on a free loopback port with an SQLite store in a
//! fresh folder, registers four echo nodes served by this process, then
//! drives unicast, any-of-group, broadcast and re-registration requests at a
//! fixed rate. Every `--sample-every` it prints the mediator's resident
//! memory (RSS) and open descriptors, read from `/proc`; at the end, the
//! figures at start, end and peak, the answers by status, and whether the
//! process stopped cleanly on SIGTERM. Linux only (it reads `/proc`).
//!
//! ```text
//! cargo build --release --bin mediator --bin soak
//! target/release/soak --duration 10m --rate 400
//! ```

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use mediator_core::{Claims, NodeKey, Timestamp, TokenMinter};
use mediator_load::parse_duration;
use rand::Rng;

/// Runs the mediator binary under steady load and reports its memory and descriptors.
#[derive(Parser, Debug)]
#[command(name = "soak", version)]
struct Args {
    /// How long the load runs (ms, s or m).
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    duration: Duration,
    /// Requests per second, all kinds together.
    #[arg(long, default_value_t = 400)]
    rate: u32,
    /// Requests in flight at most.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// How often the figures are sampled and printed.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    sample_every: Duration,
    /// The `mediator` binary [default: beside this one].
    #[arg(long)]
    mediator: Option<PathBuf>,
}

/// The echo nodes' group and how many there are.
const GROUP: &str = "soak";
const NODES: usize = 4;
/// Large enough for any soak: leases never run out during a run.
const LEASE_S: u64 = 24 * 3600;

/// The mediator process, killed if the run ends early.
struct Mediator {
    child: Child,
}

impl Drop for Mediator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// RSS (KiB) and open descriptors of a process, from `/proc`.
#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    rss_kib: u64,
    files: usize,
}

fn sample(pid: u32) -> Result<Sample, String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("reading /proc/{pid}/status: {e}"))?;
    let rss_kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or("no VmRSS in /proc/<pid>/status")?;
    let files = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map_err(|e| format!("reading /proc/{pid}/fd: {e}"))?
        .count();
    Ok(Sample { rss_kib, files })
}

/// Serves `echo:<body>` on a loopback port until the process ends.
async fn echo_node() -> Result<SocketAddr, String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("binding an echo node: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    |request: Request<hyper::body::Incoming>| async move {
                        let body = request.into_body().collect().await?.to_bytes();
                        let mut reply = b"echo:".to_vec();
                        reply.extend_from_slice(&body);
                        Ok::<_, hyper::Error>(hyper::Response::new(Full::new(Bytes::from(reply))))
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

/// Starts `mediator serve` in `dir` and returns it with its URL.
fn start_mediator(
    binary: &PathBuf,
    dir: &std::path::Path,
    secret: &str,
) -> Result<(Mediator, String), String> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("finding a free port: {e}"))?
        .port();
    let mut child = Command::new(binary)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args([
            "--store",
            &format!("sqlite:{}", dir.join("soak.db").display()),
        ])
        .current_dir(dir)
        .env("MEDIATOR_SECRET", secret)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("starting {}: {e}", binary.display()))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mediator = Mediator { child };
    let mut lines = BufReader::new(stdout).lines();
    loop {
        match lines.next() {
            Some(Ok(line)) if line.contains("listening on") => break,
            Some(Ok(_)) => {}
            _ => return Err("the mediator exited before it listened".into()),
        }
    }
    // Keep reading so the process never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Ok((mediator, format!("http://127.0.0.1:{port}")))
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

async fn post(client: &HttpClient, url: String, token: &str, body: Bytes) -> Result<u16, String> {
    let request = Request::post(url)
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Full::new(body))
        .map_err(|e| e.to_string())?;
    let response = client.request(request).await.map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    Ok(status)
}

fn registration(name: &str, node: SocketAddr) -> Bytes {
    Bytes::from(
        serde_json::json!({"group": GROUP, "name": name, "url": format!("http://{node}"), "ttl": LEASE_S})
            .to_string(),
    )
}

fn mint(minter: &TokenMinter, key: &str) -> Result<String, String> {
    let key: NodeKey = key.parse().map_err(|e| format!("{key}: {e}"))?;
    minter
        .mint(&Claims::node(
            &key,
            Timestamp::now(),
            Duration::from_secs(LEASE_S),
        ))
        .map_err(|e| e.to_string())
}

async fn run(args: Args) -> Result<(), String> {
    let binary = match args.mediator {
        Some(path) => path,
        None => std::env::current_exe()
            .map_err(|e| e.to_string())?
            .with_file_name("mediator"),
    };
    let dir = std::env::temp_dir().join(format!("mediator-soak-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let secret: String = {
        let mut rng = rand::thread_rng();
        (0..48)
            .map(|_| rng.sample(rand::distributions::Alphanumeric) as char)
            .collect()
    };
    let minter = TokenMinter::hs256(&secret);
    let (mut mediator, url) = start_mediator(&binary, &dir, &secret)?;
    let pid = mediator.child.id();
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();

    let mut nodes = Vec::new();
    for i in 0..NODES {
        let node = echo_node().await?;
        let name = format!("n{i}");
        let token = mint(&minter, &format!("{GROUP}/{name}"))?;
        let status = post(
            &client,
            format!("{url}/register"),
            &token,
            registration(&name, node),
        )
        .await?;
        if status != 200 {
            return Err(format!("registering {name}: {status}"));
        }
        nodes.push((name, node, token));
    }
    let nodes = Arc::new(nodes);
    let caller = mint(&minter, "soak/caller")?;

    let start = sample(pid)?;
    let peak = Arc::new(Mutex::new(start));
    println!(
        "soak: {} at {} req/s, {} in flight; mediator pid {pid}; start: RSS {} KiB, {} descriptors",
        humanize(args.duration),
        args.rate,
        args.concurrency,
        start.rss_kib,
        start.files
    );
    let statuses: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let running = Arc::new(AtomicBool::new(true));
    // Each worker keeps its share of the rate.
    let every = Duration::from_secs_f64(args.concurrency as f64 / f64::from(args.rate.max(1)));
    let workers: Vec<_> = (0..args.concurrency)
        .map(|_| {
            let (client, url, caller, nodes, statuses, running) = (
                client.clone(),
                url.clone(),
                caller.clone(),
                Arc::clone(&nodes),
                Arc::clone(&statuses),
                Arc::clone(&running),
            );
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                while running.load(Ordering::Relaxed) {
                    tick.tick().await;
                    let roll: u32 = rand::thread_rng().gen_range(0..100);
                    let i = rand::thread_rng().gen_range(0..nodes.len());
                    let (name, node, token) = &nodes[i];
                    let (kind, outcome) = match roll {
                        0..=69 => (
                            "one",
                            post(
                                &client,
                                format!("{url}/one/{GROUP}/{name}/work"),
                                &caller,
                                Bytes::from_static(b"soak"),
                            )
                            .await,
                        ),
                        70..=84 => (
                            "any",
                            post(
                                &client,
                                format!("{url}/any/{GROUP}/work"),
                                &caller,
                                Bytes::from_static(b"soak"),
                            )
                            .await,
                        ),
                        85..=94 => (
                            "many",
                            post(
                                &client,
                                format!("{url}/many/{GROUP}/work"),
                                &caller,
                                Bytes::from_static(b"soak"),
                            )
                            .await,
                        ),
                        _ => (
                            "register",
                            post(
                                &client,
                                format!("{url}/register"),
                                token,
                                registration(name, *node),
                            )
                            .await,
                        ),
                    };
                    let key = match outcome {
                        Ok(status) => format!("{kind} {status}"),
                        Err(e) => format!("{kind} error: {e}"),
                    };
                    *statuses
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .entry(key)
                        .or_default() += 1;
                }
            })
        })
        .collect();

    let began = Instant::now();
    while began.elapsed() < args.duration {
        let left = args.duration.saturating_sub(began.elapsed());
        tokio::time::sleep(args.sample_every.min(left)).await;
        let now = sample(pid)?;
        {
            let mut peak = peak.lock().unwrap_or_else(|p| p.into_inner());
            peak.rss_kib = peak.rss_kib.max(now.rss_kib);
            peak.files = peak.files.max(now.files);
        }
        let done: u64 = statuses
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .sum();
        println!(
            "{:>6.0} s  RSS {:>7} KiB  descriptors {:>4}  requests {done}",
            began.elapsed().as_secs_f64(),
            now.rss_kib,
            now.files
        );
    }
    running.store(false, Ordering::Relaxed);
    for worker in workers {
        let _ = worker.await;
    }
    let end = sample(pid)?;
    let peak = *peak.lock().unwrap_or_else(|p| p.into_inner());
    println!("\n           RSS (KiB)  descriptors");
    println!("start      {:>9}  {:>11}", start.rss_kib, start.files);
    println!("end        {:>9}  {:>11}", end.rss_kib, end.files);
    println!(
        "peak       {:>9}  {:>11}",
        peak.rss_kib.max(end.rss_kib),
        peak.files.max(end.files)
    );
    println!("\nanswers:");
    for (what, count) in statuses.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        println!("  {what:<40} {count}");
    }

    let sent = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .map_err(|e| format!("kill: {e}"))?;
    if !sent.success() {
        return Err("could not send SIGTERM".into());
    }
    let stopped = Instant::now();
    let exit = loop {
        if let Some(status) = mediator.child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if stopped.elapsed() > Duration::from_secs(30) {
            return Err("the mediator did not stop within 30 s of SIGTERM".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    println!("\nstopped on SIGTERM in {:?}: {exit}", stopped.elapsed());
    let _ = std::fs::remove_dir_all(&dir);
    if exit.success() {
        Ok(())
    } else {
        Err(format!("the mediator exited with {exit}"))
    }
}

fn humanize(duration: Duration) -> String {
    let s = duration.as_secs();
    if s >= 60 && s % 60 == 0 {
        format!("{} min", s / 60)
    } else {
        format!("{:.1} s", duration.as_secs_f64())
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("soak: {e}");
            ExitCode::FAILURE
        }
    }
}
