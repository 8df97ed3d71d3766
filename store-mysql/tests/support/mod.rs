//! Shared test helpers: a throwaway database per test on the real server,
//! and a loopback proxy that can be cut and restored.
//!
//! `MEDIATOR_TEST_MYSQL_URL` names the server (default
//! `mysql://root@127.0.0.1:3306/test`); `MEDIATOR_SKIP_MYSQL=1` skips the
//! tests that need it.

#![allow(dead_code, unreachable_pub)] // Each test file uses a different part.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder};
use rand::Rng;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// The server tests use unless told otherwise.
pub const DEFAULT_URL: &str = "mysql://root@127.0.0.1:3306/test";

/// How long any admin statement may take before the test fails.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

/// The server's URL.
pub fn server_url() -> String {
    std::env::var("MEDIATOR_TEST_MYSQL_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

/// True (after printing a note) when MySQL tests are to be skipped.
pub fn skip() -> bool {
    let skip = std::env::var("MEDIATOR_SKIP_MYSQL").is_ok_and(|v| v == "1");
    if skip {
        eprintln!("MEDIATOR_SKIP_MYSQL=1: skipping a test that needs MySQL");
    }
    skip
}

fn admin_opts() -> Opts {
    let opts = Opts::from_url(&server_url()).expect("MEDIATOR_TEST_MYSQL_URL is a valid mysql url");
    OptsBuilder::from_opts(opts).prefer_socket(false).into()
}

/// `host:port` of the server.
pub fn server_addr() -> String {
    let opts = admin_opts();
    format!("{}:{}", opts.ip_or_hostname(), opts.tcp_port())
}

/// The server URL with its host and port replaced by `addr` (when given) and
/// its database by `database`.
pub fn url_for(addr: Option<&str>, database: &str) -> String {
    let url = server_url();
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base.to_owned(), format!("?{query}")),
        None => (url.clone(), String::new()),
    };
    let rest = base
        .strip_prefix("mysql://")
        .expect("the url starts with mysql://");
    let authority = rest.split('/').next().unwrap_or(rest);
    let (userinfo, _host) = match authority.rsplit_once('@') {
        Some((user, host)) => (format!("{user}@"), host),
        None => (String::new(), authority),
    };
    let host = addr.map_or_else(server_addr, str::to_owned);
    format!("mysql://{userinfo}{host}/{database}{query}")
}

async fn admin_conn() -> Conn {
    match tokio::time::timeout(ADMIN_TIMEOUT, Conn::new(admin_opts())).await {
        Ok(Ok(conn)) => conn,
        outcome => {
            let reason = match outcome {
                Ok(Err(e)) => e.to_string(),
                _ => format!("no answer within {ADMIN_TIMEOUT:?}"),
            };
            panic!(
                "no MySQL/MariaDB server answers at {} ({reason}).\n\
                 Start one with `start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd`\n\
                 (user root without a password, database `test`), point MEDIATOR_TEST_MYSQL_URL at another,\n\
                 or set MEDIATOR_SKIP_MYSQL=1 to skip these tests.",
                server_addr()
            )
        }
    }
}

/// Runs `sql` on a new admin connection.
pub async fn admin(sql: &str) {
    let mut conn = admin_conn().await;
    tokio::time::timeout(ADMIN_TIMEOUT, conn.query_drop(sql))
        .await
        .expect("admin statement answered in time")
        .unwrap_or_else(|e| panic!("admin statement {sql:?} failed: {e}"));
    conn.disconnect().await.expect("admin connection closes");
}

/// A database of its own for one test, dropped when this guard drops (also
/// when the test panics).
#[derive(Debug)]
pub struct TestDb {
    /// The database's name.
    pub name: String,
}

impl TestDb {
    /// A new empty database, or `None` when MySQL tests are skipped. Panics
    /// with instructions when no server answers.
    pub async fn create() -> Option<TestDb> {
        if skip() {
            return None;
        }
        let name = format!("mediator_t_{:016x}", rand::thread_rng().gen::<u64>());
        admin(&format!("CREATE DATABASE `{name}` CHARACTER SET utf8mb4")).await;
        Some(TestDb { name })
    }

    /// The URL of this database on the server.
    pub fn url(&self) -> String {
        url_for(None, &self.name)
    }

    /// The URL of this database through `addr` (a proxy).
    pub fn url_via(&self, addr: SocketAddr) -> String {
        url_for(Some(&addr.to_string()), &self.name)
    }

    /// Runs `sql` in this database.
    pub async fn exec(&self, sql: &str) {
        admin(&format!("USE `{}`; {sql}", self.name)).await;
    }

    /// The first column of the first row of `sql`, run in this database.
    pub async fn scalar(&self, sql: &str) -> Option<String> {
        let mut conn = admin_conn().await;
        conn.query_drop(format!("USE `{}`", self.name))
            .await
            .expect("USE the test database");
        let value: Option<Option<String>> =
            tokio::time::timeout(ADMIN_TIMEOUT, conn.query_first(sql))
                .await
                .expect("query answered in time")
                .unwrap_or_else(|e| panic!("query {sql:?} failed: {e}"));
        conn.disconnect().await.expect("admin connection closes");
        value.flatten()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop may run inside a runtime, where blocking on another future is
        // refused: a thread with a runtime of its own does the cleanup.
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a cleanup runtime");
            runtime.block_on(async {
                let mut conn = tokio::time::timeout(ADMIN_TIMEOUT, Conn::new(admin_opts()))
                    .await
                    .ok()?
                    .ok()?;
                let dropped = conn.query_drop(format!("DROP DATABASE IF EXISTS `{name}`"));
                tokio::time::timeout(ADMIN_TIMEOUT, dropped)
                    .await
                    .ok()?
                    .ok()?;
                conn.disconnect().await.ok()
            })
        });
        if !matches!(cleanup.join(), Ok(Some(()))) {
            eprintln!(
                "could not drop test database {}; drop it by hand",
                self.name
            );
        }
    }
}

/// A free loopback port: bound, read and released.
pub fn closed_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    listener
        .local_addr()
        .expect("a bound listener has an address")
}

/// A TCP proxy on a loopback port in front of the server, which can be
/// stopped (listener and every open connection gone) and started again on
/// the same port.
#[derive(Debug)]
pub struct Proxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    upstream: String,
    accept: Option<tokio::task::JoinHandle<()>>,
    connections: Arc<Mutex<JoinSet<()>>>,
}

impl Proxy {
    /// A running proxy on a new port.
    pub async fn start() -> Proxy {
        let mut proxy = Proxy {
            addr: "127.0.0.1:0".parse().expect("a socket address"),
            upstream: server_addr(),
            accept: None,
            connections: Arc::default(),
        };
        proxy.resume().await;
        proxy
    }

    /// Listens again on the same port (the first time, on any port).
    pub async fn resume(&mut self) {
        assert!(self.accept.is_none(), "the proxy is already running");
        let listener = TcpListener::bind(self.addr)
            .await
            .expect("bind the proxy port");
        self.addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        let upstream = self.upstream.clone();
        let connections = self.connections.clone();
        self.accept = Some(tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let upstream = upstream.clone();
                connections.lock().expect("proxy lock").spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        }));
    }

    /// Closes the listener and every connection through it, and returns
    /// once they are closed.
    pub async fn stop(&mut self) {
        if let Some(accept) = self.accept.take() {
            accept.abort();
            let _ = accept.await;
        }
        let mut connections = std::mem::take(&mut *self.connections.lock().expect("proxy lock"));
        connections.shutdown().await;
    }
}

/// A listener on `addr` (port 0: any) that accepts connections and never
/// says a word, like a host whose server hangs. Aborting the task closes it.
pub async fn silent_server(addr: SocketAddr) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind(addr).await.expect("bind a loopback port");
    let addr = listener
        .local_addr()
        .expect("a bound listener has an address");
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    (addr, task)
}
