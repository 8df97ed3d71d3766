//! Load generator: how much a mediator costs next to calling a node directly.
//!
//! Drives `POST /one/<group>/<name>/echo` with sealed bodies (1 KiB by
//! default) at a fixed number of requests in flight (64 by default) for a
//! given time, then the same load straight at the echo node, and prints
//! requests per second, p50 and p99 latency for both, and their ratio.
//!
//! ```text
//! # Everything in this process: a mediator and an echo node on loopback.
//! loadgen --self-contained --duration 10s
//!
//! # Against a running mediator and echo node.
//! loadgen --url http://127.0.0.1:8080 --token "$TOKEN" --keys "$MEDIATOR_NODE_KEYS" \
//!     --target bench/echo --from bench/loadgen --direct http://127.0.0.1:9000
//! ```
//!
//! Both phases seal every request and open every reply, so the difference
//! between them is the mediator's hop (parsing, auth, routing, a second
//! HTTP exchange), not the cryptography.
//!
//! With `--via quic` (self-contained only) the same run also starts a QUIC
//! listener and an echo node attached over QUIC, and measures two more
//! paths with the same load: a caller over QUIC to the attached echo node,
//! and a caller over HTTP to the attached echo node, each beside the HTTP
//! path's figures of the same run.
//!
//! ```text
//! loadgen --self-contained --via quic --duration 10s
//! ```

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use mediator_core::{
    Authenticator, Claims, KeyRing, Mediator, MemoryRegistry, NodeKey, SealKey, Target, Timestamp,
    TokenMinter,
};
use mediator_examples::parse_duration;
use mediator_transport_http::client::{open_reply, seal_request, Incoming};
use mediator_transport_http::{HttpDelivery, HttpDeliveryConfig, HttpListener, NodeClient};
use mediator_transport_quic::{QuicLimits, QuicListener, QuicNodeClient, ServerTls};

/// Measures the mediator's overhead against calling an echo node directly.
#[derive(Parser, Debug)]
#[command(name = "loadgen", version)]
struct Args {
    /// The mediator's URL (not needed with --self-contained).
    #[arg(long, env = "MEDIATOR_URL")]
    url: Option<String>,

    /// The sender's token (not needed with --self-contained).
    #[arg(long, env = "MEDIATOR_TOKEN")]
    token: Option<String>,

    /// The node key ring, base64 keys separated by commas (not needed with
    /// --self-contained).
    #[arg(long, env = "MEDIATOR_NODE_KEYS")]
    keys: Option<String>,

    /// The echo node, `group/name`.
    #[arg(long, default_value = "bench/echo")]
    target: String,

    /// Who the sender is, `group/name`: the identity its token names.
    #[arg(long, default_value = "bench/loadgen")]
    from: String,

    /// The echo node's own URL, for the direct phase (skipped without it,
    /// unless --self-contained).
    #[arg(long)]
    direct: Option<String>,

    /// How long each phase runs: `10s`, `1500ms`, `2m`, or seconds.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,

    /// How long each phase runs unmeasured first, to fill connection pools.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    warmup: Duration,

    /// Requests in flight.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,

    /// Bytes per request body.
    #[arg(long, default_value_t = 1024)]
    body_size: usize,

    /// Start a mediator and an echo node in this process, on loopback.
    #[arg(long)]
    self_contained: bool,

    /// Also measure the paths to an echo node attached over QUIC (needs
    /// --self-contained): `http` (the default) measures only the HTTP paths.
    #[arg(long, value_enum, default_value_t = Via::Http)]
    via: Via,
}

/// Which transports a run measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Via {
    /// The HTTP paths only.
    Http,
    /// The HTTP paths, then the paths to an echo node attached over QUIC.
    Quic,
}

/// One request in flight: sends, checks the echo, says what went wrong.
type ShotFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// Makes one request of a phase.
type Shot = Arc<dyn Fn() -> ShotFuture + Send + Sync>;

/// What one phase measured.
struct Measured {
    ok: usize,
    errors: usize,
    first_error: Option<String>,
    elapsed: Duration,
    latencies_us: Vec<u32>,
}

impl Measured {
    fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile(&self, p: f64) -> Duration {
        if self.latencies_us.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((self.latencies_us.len() as f64 - 1.0) * p).round() as usize;
        Duration::from_micros(u64::from(self.latencies_us[rank]))
    }

    fn line(&self, label: &str) -> String {
        let mut line = format!(
            "{label:<22} {:>9.0} req/s   p50 {:>7.2} ms   p99 {:>7.2} ms   ({} ok, {} errors)",
            self.rate(),
            self.percentile(0.50).as_secs_f64() * 1000.0,
            self.percentile(0.99).as_secs_f64() * 1000.0,
            self.ok,
            self.errors,
        );
        if let Some(error) = &self.first_error {
            line.push_str(&format!("\n{:<22} first error: {error}", ""));
        }
        line
    }
}

/// Runs `shot` from `concurrency` tasks for `warmup`, then for `duration`.
async fn phase(shot: Shot, concurrency: usize, warmup: Duration, duration: Duration) -> Measured {
    run_for(Arc::clone(&shot), concurrency, warmup).await;
    run_for(shot, concurrency, duration).await
}

async fn run_for(shot: Shot, concurrency: usize, duration: Duration) -> Measured {
    let start = Instant::now();
    let end = start + duration;
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let shot = Arc::clone(&shot);
        workers.spawn(async move {
            let mut latencies = Vec::with_capacity(16 * 1024);
            let mut errors = 0usize;
            let mut first_error = None;
            loop {
                let sent = Instant::now();
                if sent >= end {
                    break;
                }
                match shot().await {
                    Ok(()) => {
                        let micros = sent.elapsed().as_micros();
                        latencies.push(u32::try_from(micros).unwrap_or(u32::MAX));
                    }
                    Err(error) => {
                        errors += 1;
                        first_error.get_or_insert(error);
                    }
                }
            }
            (latencies, errors, first_error)
        });
    }
    let mut measured = Measured {
        ok: 0,
        errors: 0,
        first_error: None,
        elapsed: Duration::ZERO,
        latencies_us: Vec::new(),
    };
    while let Some(done) = workers.join_next().await {
        match done {
            Ok((latencies, errors, first_error)) => {
                measured.ok += latencies.len();
                measured.latencies_us.extend(latencies);
                measured.errors += errors;
                if measured.first_error.is_none() {
                    measured.first_error = first_error;
                }
            }
            Err(e) => {
                measured.errors += 1;
                measured
                    .first_error
                    .get_or_insert(format!("worker failed: {e}"));
            }
        }
    }
    measured.elapsed = start.elapsed();
    measured.latencies_us.sort_unstable();
    measured
}

/// Through the mediator: the node client's `call`.
fn mediated(client: NodeClient, target: NodeKey, body: Bytes) -> Shot {
    Arc::new(move || {
        let client = client.clone();
        let target = target.clone();
        let body = body.clone();
        Box::pin(async move {
            let reply = client
                .call(target, "/echo", body.clone())
                .await
                .map_err(|e| e.to_string())?;
            if reply == body {
                Ok(())
            } else {
                Err(format!("the echo differs ({} bytes back)", reply.len()))
            }
        })
    })
}

/// Through the mediator from a QUIC client: the same echo, over its
/// connection's streams.
fn mediated_quic(client: QuicNodeClient, target: NodeKey, body: Bytes) -> Shot {
    Arc::new(move || {
        let client = client.clone();
        let target = target.clone();
        let body = body.clone();
        Box::pin(async move {
            let reply = client
                .call(target, "/echo", body.clone())
                .await
                .map_err(|e| e.to_string())?;
            if reply == body {
                Ok(())
            } else {
                Err(format!("the echo differs ({} bytes back)", reply.len()))
            }
        })
    })
}

/// Straight at the echo node: the same sealed request the mediator would
/// have handed over, with the headers it would have added.
fn direct(
    node_url: &str,
    keys: KeyRing,
    from: NodeKey,
    target: NodeKey,
    body: Bytes,
) -> Result<Shot, String> {
    let client: Client<HttpConnector, Full<Bytes>> = {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Client::builder(TokioExecutor::new()).build(connector)
    };
    let url = format!("{}/echo", node_url.trim_end_matches('/'));
    url.parse::<http::Uri>()
        .map_err(|e| format!("--direct {node_url:?}: {e}"))?;
    let target_text = target.to_string();
    let from_text = from.to_string();
    let state = Arc::new((
        client,
        url,
        keys,
        from,
        target,
        body,
        target_text,
        from_text,
    ));
    Ok(Arc::new(move || {
        let state = Arc::clone(&state);
        Box::pin(async move {
            let (client, url, keys, from, target, body, target_text, from_text) = &*state;
            let sealed = seal_request(
                keys,
                Some(from),
                &Target::One(target.clone()),
                "/echo",
                body,
            )
            .map_err(|e| e.to_string())?;
            let deadline = Timestamp::now() + Duration::from_secs(10);
            let request = Request::post(url.as_str())
                .header("content-type", "application/octet-stream")
                .header("x-mediator", "true")
                .header("x-mediator-target", target_text.as_str())
                .header("x-mediator-from", from_text.as_str())
                .header("x-mediator-deadline", deadline.as_millis().to_string())
                .body(Full::new(Bytes::from(sealed)))
                .map_err(|e| e.to_string())?;
            let response = client.request(request).await.map_err(|e| e.to_string())?;
            let status = response.status();
            let reply = response
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            if status != StatusCode::OK {
                return Err(format!("{status}: {}", String::from_utf8_lossy(&reply)));
            }
            let opened =
                open_reply(keys, target, Some(from), "/echo", &reply).map_err(|e| e.to_string())?;
            if opened == body.as_ref() {
                Ok(())
            } else {
                Err(format!("the echo differs ({} bytes back)", opened.len()))
            }
        })
    }))
}

/// What the phases run against.
struct Setup {
    client: NodeClient,
    target: NodeKey,
    from: NodeKey,
    keys: KeyRing,
    direct_url: Option<String>,
    /// Kept alive for the run (self-contained only).
    _hub: Option<(Mediator, SocketAddr)>,
    _echo: Option<NodeClient>,
    /// The QUIC side, with `--via quic`.
    quic: Option<QuicSetup>,
}

/// An echo node attached over QUIC and a caller over QUIC.
struct QuicSetup {
    /// Kept alive for the run.
    _listener: QuicListener,
    /// The attached echo node's key.
    target: NodeKey,
    /// A caller-only client over QUIC, as `from`.
    caller: QuicNodeClient,
    /// Kept alive for the run: dropping it would detach the node.
    _echo: QuicNodeClient,
}

/// Starts a QUIC listener for `mediator`, an echo node attached to it as
/// `target`, and a caller over QUIC as `from`.
async fn quic_side(
    mediator: &Mediator,
    minter: &TokenMinter,
    keys: &KeyRing,
    target: NodeKey,
    from: &NodeKey,
    concurrency: usize,
) -> Result<QuicSetup, String> {
    let tls = ServerTls::self_signed(&["localhost"]).map_err(|e| e.to_string())?;
    let mut limits = QuicLimits::default();
    // One caller connection carries every request in flight.
    let streams = u32::try_from(concurrency.max(64)).unwrap_or(u32::MAX);
    limits.max_streams = streams;
    let listener = QuicListener::bind_with(SocketAddr::from(([127, 0, 0, 1], 0)), &tls, limits)
        .map_err(|e| e.to_string())?;
    mediator
        .add_deliver(listener.delivery())
        .map_err(|e| e.to_string())?;
    let serving = listener.clone();
    let served = mediator.clone();
    tokio::spawn(async move { serving.serve(served).await });
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let pin = listener.fingerprint().to_owned();
    let echo_node = QuicNodeClient::builder(addr)
        .pin(&pin)
        .node_key(target.clone())
        .token_minter(minter.clone())
        .keys(keys.clone())
        .max_streams(streams)
        .start(echo)
        .await
        .map_err(|e| format!("attaching the QUIC echo node: {e}"))?;
    let caller = QuicNodeClient::builder(addr)
        .pin(&pin)
        .node_key(from.clone())
        .token_minter(minter.clone())
        .keys(keys.clone())
        .connect()
        .await
        .map_err(|e| format!("connecting the QUIC caller: {e}"))?;
    println!("self-contained: QUIC listener at {addr}, echo node {target} attached");
    Ok(QuicSetup {
        _listener: listener,
        target,
        caller,
        _echo: echo_node,
    })
}

async fn echo(request: Incoming) -> Result<Bytes, mediator_core::Error> {
    Ok(request.body)
}

async fn self_contained(args: &Args) -> Result<Setup, String> {
    let secret = SealKey::generate().to_base64();
    let mediator = Mediator::builder()
        .registry(MemoryRegistry::new())
        .authenticator(Authenticator::hs256(&secret))
        .deliver(HttpDelivery::with_config(
            // Keep as many idle connections to the node as there are
            // requests in flight, or the pool churns at high concurrency.
            HttpDeliveryConfig::default().with_max_idle_per_host(args.concurrency.max(32)),
        ))
        .max_body(args.body_size.max(1024) * 2 + 1024)
        .build()
        .map_err(|e| e.to_string())?;
    let listener = HttpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let addr = listener.local_addr();
    tokio::spawn(listener.serve(mediator.clone()));
    let url = format!("http://{addr}");
    let minter = TokenMinter::hs256(&secret);
    let keys = KeyRing::new(SealKey::generate());
    let target: NodeKey = args.target.parse().map_err(|e| format!("--target: {e}"))?;
    let from: NodeKey = args.from.parse().map_err(|e| format!("--from: {e}"))?;
    let echo_node = NodeClient::builder(&url)
        .node_key(target.clone())
        .token_minter(minter.clone())
        .keys(keys.clone())
        .callback("http://127.0.0.1:0")
        .start(echo)
        .await
        .map_err(|e| format!("starting the echo node: {e}"))?;
    let direct_url = echo_node.callback_url().map(str::to_owned);
    let token = minter
        .mint(&Claims::node(
            &from,
            Timestamp::now(),
            Duration::from_secs(3600),
        ))
        .map_err(|e| e.to_string())?;
    let client = NodeClient::builder(&url)
        .node_key(from.clone())
        .token(token)
        .keys(keys.clone())
        .connect()
        .await
        .map_err(|e| e.to_string())?;
    println!(
        "self-contained: mediator at {url}, echo node {target} at {}",
        direct_url.as_deref().unwrap_or("?")
    );
    let quic = match args.via {
        Via::Quic => {
            let name = format!("{}-quic", target.name().unwrap_or("echo"));
            let attached = NodeKey::named(target.group(), &name).map_err(|e| e.to_string())?;
            Some(quic_side(&mediator, &minter, &keys, attached, &from, args.concurrency).await?)
        }
        Via::Http => None,
    };
    Ok(Setup {
        client,
        target,
        from,
        keys,
        direct_url,
        _hub: Some((mediator, addr)),
        _echo: Some(echo_node),
        quic,
    })
}

async fn external(args: &Args) -> Result<Setup, String> {
    let url = args
        .url
        .as_deref()
        .ok_or("--url is required without --self-contained")?;
    let token = args
        .token
        .as_deref()
        .ok_or("--token is required without --self-contained")?;
    let keys: KeyRing = args
        .keys
        .as_deref()
        .ok_or("--keys is required without --self-contained")?
        .parse()
        .map_err(|e| format!("--keys: {e}"))?;
    let target: NodeKey = args.target.parse().map_err(|e| format!("--target: {e}"))?;
    let from: NodeKey = args.from.parse().map_err(|e| format!("--from: {e}"))?;
    let client = NodeClient::builder(url)
        .node_key(from.clone())
        .token(token)
        .keys(keys.clone())
        .connect()
        .await
        .map_err(|e| e.to_string())?;
    Ok(Setup {
        client,
        target,
        from,
        keys,
        direct_url: args.direct.clone(),
        _hub: None,
        _echo: None,
        quic: None,
    })
}

async fn run(args: Args) -> Result<(), String> {
    if args.concurrency == 0 {
        return Err("--concurrency must be at least 1".into());
    }
    let setup = if args.self_contained {
        self_contained(&args).await?
    } else if args.via == Via::Quic {
        return Err("--via quic measures a QUIC listener of its own: add --self-contained".into());
    } else {
        external(&args).await?
    };
    let body = Bytes::from(
        (0..args.body_size)
            .map(|i| b"0123456789abcdef"[i % 16])
            .collect::<Vec<u8>>(),
    );
    println!(
        "{} requests in flight, {}-byte bodies, {:?} per phase after {:?} of warm-up",
        args.concurrency, args.body_size, args.duration, args.warmup
    );

    // One call first, so a misconfiguration fails loudly instead of as
    // a column of errors.
    setup
        .client
        .call(setup.target.clone(), "/echo", body.clone())
        .await
        .map_err(|e| format!("the first call through the mediator failed: {e}"))?;
    let through = phase(
        mediated(setup.client.clone(), setup.target.clone(), body.clone()),
        args.concurrency,
        args.warmup,
        args.duration,
    )
    .await;
    println!("{}", through.line("through the mediator"));
    if let Some(quic) = &setup.quic {
        measure_quic(quic, &setup.client, &through, &body, &args).await?;
    }

    let Some(direct_url) = setup.direct_url.as_deref() else {
        println!("(no --direct URL: the direct phase is skipped)");
        return Ok(());
    };
    let straight = phase(
        direct(
            direct_url,
            setup.keys.clone(),
            setup.from.clone(),
            setup.target.clone(),
            body,
        )?,
        args.concurrency,
        args.warmup,
        args.duration,
    )
    .await;
    println!("{}", straight.line("straight at the node"));
    if straight.ok > 0 && through.ok > 0 {
        println!(
            "mediator / direct:     {:.2}x the throughput, {:.2}x the p50, {:.2}x the p99",
            through.rate() / straight.rate(),
            through.percentile(0.50).as_secs_f64() / straight.percentile(0.50).as_secs_f64(),
            through.percentile(0.99).as_secs_f64() / straight.percentile(0.99).as_secs_f64(),
        );
    }
    Ok(())
}

/// `a / b` for throughput, p50 and p99, as one line.
fn ratio(label: &str, a: &Measured, b: &Measured) -> String {
    if a.ok == 0 || b.ok == 0 {
        return format!("{label:<22} (no successful requests to compare)");
    }
    format!(
        "{label:<22} {:.2}x the throughput, {:.2}x the p50, {:.2}x the p99",
        a.rate() / b.rate(),
        a.percentile(0.50).as_secs_f64() / b.percentile(0.50).as_secs_f64(),
        a.percentile(0.99).as_secs_f64() / b.percentile(0.99).as_secs_f64(),
    )
}

/// The two paths to the attached echo node, each compared with the HTTP
/// path (`http`) measured in the same run.
async fn measure_quic(
    quic: &QuicSetup,
    http_client: &NodeClient,
    http: &Measured,
    body: &Bytes,
    args: &Args,
) -> Result<(), String> {
    quic.caller
        .call(quic.target.clone(), "/echo", body.clone())
        .await
        .map_err(|e| format!("the first call over QUIC failed: {e}"))?;
    let quic_to_quic = phase(
        mediated_quic(quic.caller.clone(), quic.target.clone(), body.clone()),
        args.concurrency,
        args.warmup,
        args.duration,
    )
    .await;
    println!("{}", quic_to_quic.line("QUIC -> attached node"));
    let http_to_quic = phase(
        mediated(http_client.clone(), quic.target.clone(), body.clone()),
        args.concurrency,
        args.warmup,
        args.duration,
    )
    .await;
    println!("{}", http_to_quic.line("HTTP -> attached node"));
    println!("{}", ratio("QUIC->att / HTTP:", &quic_to_quic, http));
    println!("{}", ratio("HTTP->att / HTTP:", &http_to_quic, http));
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Args::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("loadgen: {message}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("3h").is_err());
    }

    #[tokio::test]
    async fn a_short_self_contained_run_succeeds() {
        let args = Args::parse_from([
            "loadgen",
            "--self-contained",
            "--duration",
            "300ms",
            "--warmup",
            "100ms",
            "--concurrency",
            "4",
            "--body-size",
            "64",
        ]);
        run(args).await.expect("runs");
    }

    #[tokio::test]
    async fn a_short_self_contained_run_via_quic_succeeds() {
        let args = Args::parse_from([
            "loadgen",
            "--self-contained",
            "--via",
            "quic",
            "--duration",
            "300ms",
            "--warmup",
            "100ms",
            "--concurrency",
            "4",
            "--body-size",
            "64",
        ]);
        run(args).await.expect("runs");
    }
}
