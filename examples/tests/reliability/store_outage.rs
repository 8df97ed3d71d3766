//! The MySQL server freezes, then goes away, then comes back, while nodes
//! keep registering: registrations are answered `503` while the store is
//! gone (never a crash, never a hang past the store's timeout), routing to
//! nodes registered before keeps working, and registrations succeed again
//! once the server is back.
//!
//! The shared server cannot be stopped, so a proxy in the test stands
//! between the mediator and it: frozen, it holds every byte; cut, it closes
//! every connection and refuses new ones; restored, it forwards again.

#[path = "../../../store-mysql/tests/support/mod.rs"]
mod mysql_support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::support::{healthy, post, token_for};
use crate::Hub;

/// A loopback TCP proxy to `upstream` that can freeze, be cut and be restored.
struct Proxy {
    addr: SocketAddr,
    upstream: String,
    frozen: watch::Sender<bool>,
    accept: Option<tokio::task::JoinHandle<()>>,
    connections: Arc<Mutex<JoinSet<()>>>,
}

impl Proxy {
    async fn start(upstream: String) -> Proxy {
        let mut proxy = Proxy {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            upstream,
            frozen: watch::channel(false).0,
            accept: None,
            connections: Arc::default(),
        };
        proxy.listen().await;
        proxy
    }

    /// Accepts on the proxy's port (any free one the first time).
    async fn listen(&mut self) {
        let listener = TcpListener::bind(self.addr).await.unwrap();
        self.addr = listener.local_addr().unwrap();
        let (upstream, frozen, connections) = (
            self.upstream.clone(),
            self.frozen.clone(),
            Arc::clone(&self.connections),
        );
        self.accept = Some(tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (upstream, frozen) = (upstream.clone(), frozen.subscribe());
                connections.lock().unwrap().spawn(async move {
                    let Ok(server) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    tokio::join!(
                        pump(client_read, server_write, frozen.clone()),
                        pump(server_read, client_write, frozen),
                    );
                });
            }
        }));
    }

    /// Stops forwarding: connections stay open, their bytes are held.
    fn freeze(&self, frozen: bool) {
        self.frozen.send_replace(frozen);
    }

    /// Closes the listener and every connection.
    async fn cut(&mut self) {
        if let Some(accept) = self.accept.take() {
            accept.abort();
            let _ = accept.await;
        }
        let mut connections = std::mem::take(&mut *self.connections.lock().unwrap());
        connections.shutdown().await;
    }

    /// Listens and forwards again, on the same port.
    async fn restore(&mut self) {
        self.freeze(false);
        self.listen().await;
    }
}

/// Copies `from` to `to`, holding the bytes while frozen.
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, mut frozen: watch::Receiver<bool>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if !thawed(&mut frozen).await {
            return;
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if !thawed(&mut frozen).await || to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// Waits while frozen; false once the proxy is gone.
async fn thawed(frozen: &mut watch::Receiver<bool>) -> bool {
    while *frozen.borrow_and_update() {
        if frozen.changed().await.is_err() {
            return false;
        }
    }
    true
}

const NORMAL: u8 = 0;
const FROZEN: u8 = 1;
const CUT: u8 = 2;
const RESTORED: u8 = 3;

/// The store's bound on one call when the mediator opens a MySQL URL.
const STORE_TIMEOUT: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread")]
async fn a_frozen_then_lost_mysql_server_gets_503s_and_routing_goes_on() {
    let Some(db) = mysql_support::TestDb::create().await else {
        return;
    };
    let mut proxy = Proxy::start(mysql_support::server_addr()).await;
    let hub = Hub::start(&db.url_via(proxy.addr), &["--sweep-every-s", "1"]);
    let (node, _) = crate::support::echo_node(Duration::ZERO).await;
    assert_eq!(hub.register("app/echo", node).await.0, 200);
    let caller = hub.token("app/caller");
    let route = hub.url("/one/app/echo/x");
    assert_eq!(post(&route, &caller, "hi").await.0, 200);

    // Registration load all through: (phase when sent, status, time taken).
    let phase = Arc::new(AtomicU8::new(NORMAL));
    let outcomes: Arc<Mutex<Vec<(u8, u16, Duration)>>> = Arc::default();
    let load: Vec<_> = (0..4)
        .map(|w| {
            let (phase, outcomes) = (Arc::clone(&phase), Arc::clone(&outcomes));
            let (url, dir) = (hub.url("/register"), hub.dir.path().to_owned());
            tokio::spawn(async move {
                for i in 0.. {
                    let sent_in = phase.load(Ordering::SeqCst);
                    if sent_in == RESTORED + 1 {
                        return;
                    }
                    let name = format!("n{w}-{i}");
                    let token = token_for(&dir, &format!("load/{name}"));
                    let body = json!({"group": "load", "name": name, "url": "http://127.0.0.1:9", "ttl": 600});
                    let started = Instant::now();
                    let (status, _) = post(&url, &token, body.to_string()).await;
                    outcomes
                        .lock()
                        .unwrap()
                        .push((sent_in, status.as_u16(), started.elapsed()));
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Frozen: nothing comes back from the server.
    phase.store(FROZEN, Ordering::SeqCst);
    proxy.freeze(true);
    let frozen_until = Instant::now() + STORE_TIMEOUT + Duration::from_secs(1);
    while Instant::now() < frozen_until {
        let (status, body) = post(&route, &caller, "while frozen").await;
        assert_eq!(
            (status.as_u16(), &body[..]),
            (200, &b"echo:while frozen"[..])
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Cut: connections closed, new ones refused.
    phase.store(CUT, Ordering::SeqCst);
    proxy.cut().await;
    let cut_until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < cut_until {
        let (status, body) = post(&route, &caller, "while cut").await;
        assert_eq!((status.as_u16(), &body[..]), (200, &b"echo:while cut"[..]));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Restored: registrations succeed again.
    phase.store(RESTORED, Ordering::SeqCst);
    proxy.restore().await;
    let restored_at = Instant::now();
    let deadline = restored_at + Duration::from_secs(15);
    loop {
        let succeeded = outcomes
            .lock()
            .unwrap()
            .iter()
            .any(|(phase, status, _)| *phase == RESTORED && *status == 200);
        if succeeded {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "registrations never succeeded after the restore"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "registrations succeeded again {:?} after the restore",
        restored_at.elapsed()
    );
    phase.store(RESTORED + 1, Ordering::SeqCst);
    for worker in load {
        worker.await.unwrap();
    }

    let outcomes = outcomes.lock().unwrap().clone();
    let count = |p: u8, s: u16| outcomes.iter().filter(|o| o.0 == p && o.1 == s).count();
    println!(
        "registrations: normal {} ok; frozen {} ok, {} refused; cut {} ok, {} refused; restored {} ok, {} refused",
        count(NORMAL, 200),
        count(FROZEN, 200),
        count(FROZEN, 503),
        count(CUT, 200),
        count(CUT, 503),
        count(RESTORED, 200),
        count(RESTORED, 503)
    );
    let unclear: Vec<_> = outcomes
        .iter()
        .filter(|o| o.1 != 200 && o.1 != 503)
        .collect();
    assert!(
        unclear.is_empty(),
        "answers other than 200 and 503: {unclear:?}"
    );
    let slow: Vec<_> = outcomes
        .iter()
        .filter(|o| o.2 > STORE_TIMEOUT + Duration::from_secs(3))
        .take(10)
        .collect();
    assert!(
        slow.is_empty(),
        "registrations answered past the store's timeout: {slow:?}"
    );
    assert!(count(NORMAL, 200) > 0);
    assert!(count(FROZEN, 503) > 0, "no 503 while the server was frozen");
    assert!(count(CUT, 503) > 0, "no 503 while the server was gone");

    let mut hub = hub;
    assert!(hub.process.alive(), "the mediator died");
    assert!(healthy(hub.addr, Duration::from_secs(5)).await);
    assert_eq!(post(&route, &caller, "after").await.0, 200);
    // Every acknowledged registration is in the store (a refused one may
    // be too: a write that timed out may still have landed).
    let stored: usize = db
        .scalar("SELECT COUNT(*) FROM nodes WHERE group_name = 'load'")
        .await
        .and_then(|n| n.parse().ok())
        .expect("a count");
    let acknowledged = outcomes.iter().filter(|o| o.1 == 200).count();
    assert!(
        stored >= acknowledged,
        "{acknowledged} acknowledged, {stored} stored"
    );
}
