//! `mediator-bench`: one load, many paths, one run.
//!
//! Measures the same workload straight at an echo node, through the real
//! `mediator serve` binary (HTTP/1.1, h2c, and QUIC-attached nodes),
//! through nginx as a reverse proxy (when installed) and through NATS
//! request-reply (when a server answers), with one load client, and prints
//! req/s, p50, p99, the middle process's CPU seconds per 10,000 requests
//! and peak RSS, and every path's ratio to the direct path and to each
//! peer of the same run.
//!
//! The `formation-*` workloads run several `mediator serve` processes on
//! one store: how soon a node registered at one is routable at another,
//! calls forwarded between them, one to three of them behind nginx, and
//! the store calls they make while idle.
//!
//! ```text
//! cargo build --release --bin mediator --bin mediator-bench
//! target/release/mediator-bench --duration 5s --runs 3
//! target/release/mediator-bench --workloads unicast-1k-64 --paths direct,nginx,mediator-h1 --json
//! target/release/mediator-bench --workloads formation --interleave
//! ```
//!
//! Every node runs in a process of its own: the harness starts itself with
//! a hidden subcommand (`echo-node`, `quic-echo`, `nats-echo`).

mod echo;
mod load;
mod procs;
mod report;
mod run;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use mediator_core::NodeKey;
use mediator_load::parse_duration;

/// Measures the mediator beside a direct call, nginx and NATS, in one run.
#[derive(Parser, Debug)]
#[command(name = "mediator-bench", version)]
pub(crate) struct Args {
    /// Length of one measured window: `10s`, `500ms`, `1m`, or seconds.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub(crate) duration: Duration,
    /// Unmeasured load before each row's windows (fills connection pools).
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub(crate) warmup: Duration,
    /// Measured windows per row; the table shows their medians.
    #[arg(long, default_value_t = 3)]
    pub(crate) runs: usize,
    /// Measure the paths of each unicast workload in turns, one window of
    /// each at a time, instead of one path's windows after another: a
    /// machine whose speed drifts then moves every path alike, so ratios
    /// of a few percent between paths hold.
    #[arg(long)]
    pub(crate) interleave: bool,
    /// Workloads to run, comma-separated [default: all but the formation's]:
    /// unicast-1k-1, unicast-1k-64, unicast-1k-256, unicast-64k-16,
    /// broadcast-10-1, broadcast-10-16, broadcast-100-1, broadcast-100-16,
    /// churn-sqlite, churn-mysql, nodes-1k, nodes-100k; and those of
    /// several `mediator serve` processes on one store (`formation` names
    /// them all): formation-propagation-mysql, formation-propagation-sqlite,
    /// formation-forward-1k-64, formation-nginx-1k-64,
    /// formation-idle-1k-sqlite, formation-idle-100k-sqlite,
    /// formation-idle-100k-mysql. These measure fixed rows of their own
    /// and ignore --paths.
    #[arg(long, value_delimiter = ',')]
    pub(crate) workloads: Vec<String>,
    /// Nodes the propagation workloads register, one after another.
    #[arg(long, default_value_t = 300)]
    pub(crate) formation_nodes: usize,
    /// How long the idle workloads read each formation's store calls.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub(crate) idle_for: Duration,
    /// Paths to measure, comma-separated [default: all]: direct, nginx, haproxy,
    /// nats, mediator-h1, mediator-h1-quiet (the mediator with
    /// RUST_LOG=warn), mediator-h1-hyper (the mediator with
    /// --pass-through false: every call through hyper's server and client),
    /// baseline-h1 (the --baseline build), mediator-h2, mediator-quic.
    #[arg(long, value_delimiter = ',')]
    pub(crate) paths: Vec<String>,
    /// Print JSON instead of the table.
    #[arg(long)]
    pub(crate) json: bool,
    /// The `mediator` binary [default: the one beside this executable].
    #[arg(long)]
    pub(crate) mediator: Option<PathBuf>,
    /// Another build of `mediator` (an earlier one) measured beside this
    /// one as path baseline-h1, for before/after figures from one run.
    #[arg(long)]
    pub(crate) baseline: Option<PathBuf>,
    /// The nginx binary; the nginx path is skipped when it is not found.
    #[arg(long, default_value = "nginx")]
    pub(crate) nginx: String,
    /// The HAProxy binary; the haproxy path is skipped when it is not found.
    #[arg(long, default_value = "haproxy")]
    pub(crate) haproxy: String,
    /// The NATS server; the nats path is skipped when it does not answer.
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    pub(crate) nats: String,
    /// The MySQL store of the churn-mysql workload and of the formation's
    /// workloads on MySQL (its tables are created there when missing).
    #[arg(long, default_value = "mysql://root@127.0.0.1:3306/test")]
    pub(crate) mysql: String,
    /// Where the mediator's log goes (its standard error) [default: discarded].
    #[arg(long)]
    pub(crate) mediator_log: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Hidden>,
}

/// The nodes, started by the harness itself.
#[derive(Subcommand, Debug)]
enum Hidden {
    /// A hyper echo server on `ports` loopback ports.
    #[command(hide = true)]
    EchoNode {
        #[arg(long, default_value_t = 1)]
        ports: usize,
    },
    /// An echo node attached to a mediator over QUIC (MEDIATOR_SECRET mints its token).
    #[command(hide = true)]
    QuicEcho {
        #[arg(long)]
        addr: SocketAddr,
        #[arg(long)]
        pin: String,
        #[arg(long)]
        node: NodeKey,
    },
    /// A NATS replier echoing every request.
    #[command(hide = true)]
    NatsEcho {
        #[arg(long)]
        url: String,
        #[arg(long)]
        subject: String,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let mut args = Args::parse();
    let outcome = match args.command.take() {
        Some(Hidden::EchoNode { ports }) => echo::serve_http(ports).await,
        Some(Hidden::QuicEcho { addr, pin, node }) => match std::env::var("MEDIATOR_SECRET") {
            Ok(secret) => echo::serve_quic(addr, &pin, node, &secret).await,
            Err(_) => Err("quic-echo needs MEDIATOR_SECRET".into()),
        },
        Some(Hidden::NatsEcho { url, subject }) => echo::serve_nats(&url, &subject).await,
        None => run::run(args).await,
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("mediator-bench: {message}");
            ExitCode::FAILURE
        }
    }
}
