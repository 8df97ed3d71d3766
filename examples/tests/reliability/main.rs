//! The built `mediator` binary attacked as an outside tester would, run as a
//! user runs it (`mediator serve …`), on loopback, bounded in count and time:
//! malformed and oversize requests on every route, slow and silent clients
//! under a low descriptor limit, a broadcast storm, a flood beside a quiet
//! caller, `kill -9` on SQLite, a MySQL server that freezes and goes away,
//! and SIGTERM under load.

#[path = "../support/mod.rs"]
mod support;

mod body_memory;
mod console_takeover;
mod crash;
mod fairness;
mod half_open_quic;
mod malformed;
mod redirect;
mod shutdown;
mod slow_clients;
mod store_outage;
mod storm;

use std::net::SocketAddr;
use std::time::Duration;

use http::StatusCode;
use mediator_core::{Claims, Timestamp, TokenMinter};
use serde_json::json;
use support::{as_strs, free_port, post, secret_of, serve_args, token_for, Process};

/// A `mediator serve` process in a folder of its own (its secret file, its
/// SQLite file), stopped when dropped.
pub(crate) struct Hub {
    pub(crate) process: Process,
    pub(crate) dir: tempfile::TempDir,
    pub(crate) addr: SocketAddr,
}

impl Hub {
    /// `mediator serve --store store extra…`.
    pub(crate) fn start(store: &str, extra: &[&str]) -> Hub {
        Hub::start_limited(store, extra, None)
    }

    /// Like [`start`](Self::start), with at most `max_files` descriptors.
    pub(crate) fn start_limited(store: &str, extra: &[&str], max_files: Option<u32>) -> Hub {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut args = serve_args(port, store);
        args.extend(extra.iter().map(|arg| (*arg).to_owned()));
        let process = Process::start_limited(dir.path(), &as_strs(&args), "listening", max_files);
        Hub {
            process,
            dir,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }

    /// `http://127.0.0.1:port` + `path`.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// A token for the node `key` (`group/name`), signed with the hub's secret.
    pub(crate) fn token(&self, key: &str) -> String {
        token_for(self.dir.path(), key)
    }

    /// An operator token.
    pub(crate) fn admin_token(&self) -> String {
        TokenMinter::hs256(secret_of(self.dir.path()))
            .mint(&Claims::admin(Timestamp::now(), Duration::from_secs(600)))
            .unwrap()
    }

    /// Registers `key` (`group/name`) with its callback at `node`.
    pub(crate) async fn register(&self, key: &str, node: SocketAddr) -> (StatusCode, String) {
        let (group, name) = key.split_once('/').unwrap();
        let body =
            json!({"group": group, "name": name, "url": format!("http://{node}"), "ttl": 600});
        let (status, body) = post(&self.url("/register"), &self.token(key), body.to_string()).await;
        (status, String::from_utf8_lossy(&body).into_owned())
    }
}

/// The `p`-th percentile (0–100) of `samples`, which it sorts.
pub(crate) fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    assert!(!samples.is_empty(), "no samples");
    samples.sort_unstable();
    // Rounding a percentile to an index: samples are few, the cast exact.
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let index = ((samples.len() - 1) as f64 * p / 100.0).round() as usize;
    samples[index]
}
