//! What the tests of the built `mediator` binary share: starting it as a
//! user does and stopping it, minting tokens with the secret it wrote,
//! plain HTTP calls and a counting echo node.

// Each test target uses a different part.
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

/// The built `mediator` binary.
pub const BIN: &str = env!("CARGO_BIN_EXE_mediator");

/// The binary the tests run: [`BIN`], unless `MEDIATOR_TEST_BIN` names
/// another build of it (checkouts that share one target folder overwrite
/// each other's `target/debug/mediator`; each keeps its own copy in
/// `target/debug/deps`).
pub fn bin() -> String {
    std::env::var("MEDIATOR_TEST_BIN").unwrap_or_else(|_| BIN.to_owned())
}

/// A `mediator` process, killed if a test ends early.
pub struct Process {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Process {
    /// Starts `mediator args…` in `dir` and waits until stdout shows `ready`.
    pub fn start(dir: &Path, args: &[&str], ready: &str) -> Process {
        Process::start_limited(dir, args, ready, None)
    }

    /// Like [`start`](Self::start), with at most `max_files` open
    /// descriptors when given (set by the shell's `ulimit`, which then
    /// becomes the mediator: the pid is the mediator's own).
    pub fn start_limited(
        dir: &Path,
        args: &[&str],
        ready: &str,
        max_files: Option<u32>,
    ) -> Process {
        let mut command = match max_files {
            Some(limit) => {
                let mut sh = Command::new("sh");
                sh.arg("-c")
                    .arg(format!("ulimit -n {limit} && exec \"$0\" \"$@\""))
                    .arg(bin());
                sh
            }
            None => Command::new(bin()),
        };
        let mut child = command
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
        let wanted = ready.to_owned();
        std::thread::spawn(move || {
            let mut told = false;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line.clone());
                if !told && line.contains(&wanted) {
                    told = true;
                    let _ = tx.send(());
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("mediator {args:?} never printed {ready:?}"));
        Process { child, lines }
    }

    /// What the process printed on stdout so far, line by line.
    pub fn output(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// How many descriptors the process has open.
    pub fn open_files(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .expect("the mediator's /proc entry")
            .count()
    }

    /// Its resident set size in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("the mediator's /proc entry");
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/<pid>/status")
    }

    /// CPU time used so far (user and system), in clock ticks.
    pub fn cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()))
            .expect("the mediator's /proc entry");
        // The command name may hold spaces: fields are counted after its `)`.
        let after = &stat[stat
            .rfind(')')
            .expect("stat has the command in parentheses")
            + 2..];
        let fields: Vec<&str> = after.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of the whole line.
        let utime: u64 = fields[11].parse().expect("utime");
        let stime: u64 = fields[12].parse().expect("stime");
        utime + stime
    }

    /// Sends `signal` (as `kill -SIGNAL` names it: TERM, KILL…).
    pub fn signal(&self, signal: &str) {
        let pid = self.pid().to_string();
        let sent = Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -{signal} {pid} failed");
    }

    /// Waits up to `patience` for the process to exit and returns its status.
    pub fn wait_exit(&mut self, patience: Duration) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + patience;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the mediator did not exit within {patience:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        self.signal("TERM");
        self.wait_exit(Duration::from_secs(30))
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
    let out = Command::new(bin())
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
    let (status, _, body) = post_full(url, token, body).await;
    (status, body)
}

/// POSTs `body` to `url` with `token` on a new connection; the answer's
/// status, headers and body.
pub async fn post_full(
    url: &str,
    token: &str,
    body: impl Into<Bytes>,
) -> (StatusCode, http::HeaderMap, Bytes) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let request = Request::post(url)
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Full::new(body.into()))
        .unwrap();
    let response = client.request(request).await.unwrap();
    let (parts, body) = response.into_parts();
    (
        parts.status,
        parts.headers,
        body.collect().await.unwrap().to_bytes(),
    )
}

/// POSTs `body` to `url` with `token`; `None` when no whole answer came
/// back (the process is gone).
pub async fn try_post(url: &str, token: &str, body: impl Into<Bytes>) -> Option<StatusCode> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let request = Request::post(url)
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Full::new(body.into()))
        .ok()?;
    let response = client.request(request).await.ok()?;
    let status = response.status();
    response.into_body().collect().await.ok()?;
    Some(status)
}

/// A plain HTTP node answering `echo:<body>` after `delay`; counts requests.
pub async fn echo_node(delay: Duration) -> (SocketAddr, Arc<Mutex<usize>>) {
    let seen: Arc<Mutex<usize>> = Arc::default();
    let count = Arc::clone(&seen);
    let addr = node(delay, move |_| *count.lock().unwrap() += 1).await;
    (addr, seen)
}

/// A plain HTTP node answering `echo:<body>` after `delay`, keeping every
/// body that reached it, in arrival order.
pub async fn recording_node(delay: Duration) -> (SocketAddr, Arc<Mutex<Vec<Bytes>>>) {
    let seen: Arc<Mutex<Vec<Bytes>>> = Arc::default();
    let bodies = Arc::clone(&seen);
    let addr = node(delay, move |body| bodies.lock().unwrap().push(body.clone())).await;
    (addr, seen)
}

/// Serves HTTP/1.1 on a loopback port: every request's body is shown to
/// `arrived`, then answered `echo:<body>` after `delay`.
async fn node(delay: Duration, arrived: impl Fn(&Bytes) + Send + Sync + 'static) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let arrived = Arc::new(arrived);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                // Out of descriptors for a moment: the caller will retry.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let arrived = Arc::clone(&arrived);
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                        let arrived = Arc::clone(&arrived);
                        async move {
                            let body = request.into_body().collect().await?.to_bytes();
                            arrived(&body);
                            tokio::time::sleep(delay).await;
                            let mut reply = b"echo:".to_vec();
                            reply.extend_from_slice(&body);
                            Ok::<_, hyper::Error>(Response::new(Full::new(Bytes::from(reply))))
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// What came back on a raw connection: the first response's status, head
/// and body, and how many responses the bytes held.
#[derive(Debug)]
pub struct RawAnswer {
    /// The first response's status code.
    pub status: u16,
    /// The first response's head, status line included.
    pub head: String,
    /// Everything after the first head.
    pub body: Vec<u8>,
    /// How many status lines the bytes held (more than one: the connection
    /// carried a second request).
    pub responses: usize,
}

impl RawAnswer {
    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A header of the first response, by lower-case name.
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim()
                .eq_ignore_ascii_case(name)
                .then(|| value.trim().to_owned())
        })
    }
}

/// Writes `request` on a new connection to `addr` (while reading, so a
/// server that answers before the whole request is sent is heard) and
/// reads until the server closes. `Err` says what went wrong: no
/// connection, a close without an answer, or no close within `patience`
/// (a hang).
pub async fn raw(
    addr: SocketAddr,
    request: Vec<u8>,
    patience: Duration,
) -> Result<RawAnswer, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (mut reader, mut writer) = stream.into_split();
    let sending = tokio::spawn(async move {
        // The server may close early (a 413 before the body's end): the
        // answer is what matters, not whether the rest could be written.
        let _ = writer.write_all(&request).await;
        writer
    });
    let mut bytes = Vec::new();
    let read = tokio::time::timeout(patience, async {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match reader.read(&mut buf).await {
                Ok(0) => return Ok(()),
                Ok(n) => bytes.extend_from_slice(&buf[..n]),
                // A reset after the answer arrived still leaves the answer.
                Err(_) if !bytes.is_empty() => return Ok::<_, String>(()),
                Err(e) => return Err(format!("read: {e}")),
            }
        }
    })
    .await;
    sending.abort();
    match read {
        Err(_) => {
            return Err(format!(
                "no close within {patience:?}; read so far: {:?}",
                String::from_utf8_lossy(&bytes)
            ))
        }
        Ok(Err(e)) => return Err(e),
        Ok(Ok(())) => {}
    }
    parse_answer(&bytes)
}

/// Parses the bytes of one or more HTTP/1.1 responses.
pub fn parse_answer(bytes: &[u8]) -> Result<RawAnswer, String> {
    let text = String::from_utf8_lossy(bytes);
    let Some(end) = text.find("\r\n\r\n") else {
        return Err(format!("no complete response: {text:?}"));
    };
    let head = text[..end].to_owned();
    let status = head
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("not an HTTP/1.1 status line: {head:?}"))?;
    let responses = text.match_indices("HTTP/1.1 ").count();
    Ok(RawAnswer {
        status,
        head,
        body: bytes[end + 4..].to_vec(),
        responses,
    })
}

/// Answers `GET /healthz` with 200 within `patience`.
pub async fn healthy(addr: SocketAddr, patience: Duration) -> bool {
    let request = b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n".to_vec();
    matches!(raw(addr, request, patience).await, Ok(answer) if answer.status == 200)
}

/// `mediator serve` on `port` with `store`.
pub fn serve_args(port: u16, store: &str) -> Vec<String> {
    vec![
        "serve".into(),
        "--listen".into(),
        format!("127.0.0.1:{port}"),
        "--store".into(),
        store.into(),
    ]
}

/// The arguments as `&str`s.
pub fn as_strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}
/// Runs `mediator args…` in `dir` with `env` set and no mediator settings
/// inherited, to completion, whatever its exit code.
pub fn mediator(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(bin());
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
