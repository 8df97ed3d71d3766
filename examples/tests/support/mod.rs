//! What the CLI tests share: the built binary, run as a user runs it.

#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use mediator_core::{Claims, Timestamp, TokenMinter};

pub const BIN: &str = env!("CARGO_BIN_EXE_mediator");

/// A `mediator` process, killed if a test ends early.
pub struct Process {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Process {
    /// Starts `mediator args…` in `dir` and waits until stdout shows `ready`.
    pub fn start(dir: &Path, args: &[&str], ready: &str) -> Process {
        let mut child = Command::new(BIN)
            .args(args)
            .current_dir(dir)
            .env("RUST_LOG", "warn")
            .env_remove("MEDIATOR_SECRET")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the mediator binary starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let lines: Arc<Mutex<Vec<String>>> = Arc::default();
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = Arc::clone(&lines);
        let ready = ready.to_owned();
        std::thread::spawn(move || {
            let mut told = false;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line.clone());
                if !told && line.contains(&ready) {
                    told = true;
                    let _ = tx.send(());
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("mediator {args:?} never printed {:?}", "ready"));
        Process { child, lines }
    }

    pub fn output(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(sent.success());
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the mediator did not stop after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `mediator args…` in `dir` to completion and returns its stdout.
pub fn run(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env_remove("MEDIATOR_SECRET")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mediator {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn secret_of(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("mediator.secret"))
        .unwrap()
        .trim()
        .to_owned()
}

pub fn token_for(dir: &Path, key: &str) -> String {
    TokenMinter::hs256(secret_of(dir))
        .mint(&Claims::node(
            &key.parse().unwrap(),
            Timestamp::now(),
            Duration::from_secs(600),
        ))
        .unwrap()
}

pub async fn post(url: &str, token: &str, body: impl Into<Bytes>) -> (StatusCode, Bytes) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let request = Request::post(url)
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Full::new(body.into()))
        .unwrap();
    let response = client.request(request).await.unwrap();
    let status = response.status();
    (
        status,
        response.into_body().collect().await.unwrap().to_bytes(),
    )
}

/// A plain HTTP node answering `echo:<body>` after `delay`; counts requests.
pub async fn echo_node(delay: Duration) -> (SocketAddr, Arc<Mutex<usize>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Arc<Mutex<usize>> = Arc::default();
    let count = Arc::clone(&seen);
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let count = Arc::clone(&count);
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                        let count = Arc::clone(&count);
                        async move {
                            *count.lock().unwrap() += 1;
                            let body = request.into_body().collect().await.unwrap().to_bytes();
                            tokio::time::sleep(delay).await;
                            let mut reply = b"echo:".to_vec();
                            reply.extend_from_slice(&body);
                            Ok::<_, std::convert::Infallible>(Response::new(Full::new(
                                Bytes::from(reply),
                            )))
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, seen)
}

pub fn serve_args(port: u16, store: &str) -> Vec<String> {
    vec![
        "serve".into(),
        "--listen".into(),
        format!("127.0.0.1:{port}"),
        "--store".into(),
        store.into(),
    ]
}

pub fn as_strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// Runs `mediator args…` in `dir` with `env` set and no mediator settings
/// inherited, to completion, whatever its exit code.
pub fn mediator(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .current_dir(dir)
        .env("RUST_LOG", "warn")
        .env_remove("MEDIATOR_SECRET")
        .env_remove("MEDIATOR_SECRET_FILE")
        .env_remove("MEDIATOR_CONFIG")
        .env_remove("MEDIATOR_STORE")
        .env_remove("MEDIATOR_LISTEN")
        .env_remove("MEDIATOR_URL")
        .env_remove("PORT")
        .env_remove("DATABASE_URL");
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().expect("the mediator binary runs")
}

/// The exit code and standard error of a finished command, for messages.
pub fn outcome(out: &Output) -> (Option<i32>, String) {
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
