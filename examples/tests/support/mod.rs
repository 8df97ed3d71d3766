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

impl Process {
    /// Like [`start`](Self::start), with the log at `RUST_LOG=info` written
    /// to `log` (standard error), for tests that look for what the process
    /// logged.
    pub fn start_logged(dir: &Path, args: &[&str], ready: &str, log: &Path) -> Process {
        let log_file = std::fs::File::create(log).expect("the log file");
        let mut child = Command::new(bin())
            .args(args)
            .current_dir(dir)
            .env("RUST_LOG", "info")
            .env_remove("MEDIATOR_SECRET")
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
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
        if rx.recv_timeout(Duration::from_secs(30)).is_err() {
            let logged = std::fs::read_to_string(log).unwrap_or_default();
            panic!("mediator {args:?} never printed {ready:?}; its log:\n{logged}");
        }
        Process { child, lines }
    }
}

/// An Argon2 hash of `password`, made by `mediator hash-password` as an
/// operator makes one (the password on standard input).
pub fn hash_password(dir: &Path, password: &str) -> String {
    use std::io::Write;
    let mut child = Command::new(bin())
        .arg("hash-password")
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the mediator binary runs");
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(password.as_bytes())
        .expect("the password written");
    let out = child.wait_with_output().expect("hash-password ends");
    assert!(
        out.status.success(),
        "mediator hash-password failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Serves HTTP/1.1 on a loopback port, answering every request with what
/// `answer` makes of its head and whole body: a node that behaves as a
/// test wants (a hostile one, say).
pub async fn answering_node(
    answer: impl Fn(&http::request::Parts, &Bytes) -> Response<Full<Bytes>> + Send + Sync + 'static,
) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let answer = Arc::new(answer);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let answer = Arc::clone(&answer);
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                        let answer = Arc::clone(&answer);
                        async move {
                            let (parts, body) = request.into_parts();
                            let body = body.collect().await?.to_bytes();
                            Ok::<_, hyper::Error>(answer(&parts, &body))
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

/// Registers `key` (`group/name`) at the mediator on `api` with its callback
/// at `node`, signed with the secret in `dir`; fails the test unless the
/// registration is answered 200.
pub async fn register_node(api: SocketAddr, dir: &Path, key: &str, node: SocketAddr) {
    let (group, name) = key.split_once('/').unwrap();
    let body = serde_json::json!({
        "group": group, "name": name, "url": format!("http://{node}"), "ttl": 600,
    });
    let (status, answer) = post(
        &format!("http://{api}/register"),
        &token_for(dir, key),
        body.to_string(),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "registering {key}: {}",
        String::from_utf8_lossy(&answer)
    );
}

/// The resident set size of process `pid` in KiB, if it is still running.
pub fn rss_kib_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The largest resident set size a process reached while it was watched:
/// sampled every 5 ms on a thread of its own from [`RssPeak::watch`] until
/// [`RssPeak::stop`], so short peaks are seen too.
pub struct RssPeak {
    peak: Arc<std::sync::atomic::AtomicU64>,
    watching: Arc<std::sync::atomic::AtomicBool>,
    sampler: Option<std::thread::JoinHandle<()>>,
}

impl RssPeak {
    /// Starts watching process `pid`.
    pub fn watch(pid: u32) -> RssPeak {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        let peak = Arc::new(AtomicU64::new(rss_kib_of(pid).unwrap_or(0)));
        let watching = Arc::new(AtomicBool::new(true));
        let sampler = {
            let (peak, watching) = (Arc::clone(&peak), Arc::clone(&watching));
            std::thread::spawn(move || {
                while watching.load(Ordering::Relaxed) {
                    if let Some(rss) = rss_kib_of(pid) {
                        peak.fetch_max(rss, Ordering::Relaxed);
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
        };
        RssPeak {
            peak,
            watching,
            sampler: Some(sampler),
        }
    }

    /// The peak so far, in KiB.
    pub fn peak_kib(&self) -> u64 {
        self.peak.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Stops watching; the peak in KiB.
    pub fn stop(mut self) -> u64 {
        self.watching
            .store(false, std::sync::atomic::Ordering::Relaxed);
        if let Some(sampler) = self.sampler.take() {
            let _ = sampler.join();
        }
        self.peak_kib()
    }
}

impl Drop for RssPeak {
    fn drop(&mut self) {
        self.watching
            .store(false, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Sends `head` on a new connection to `addr`, then `len` bytes of body in
/// 64 KiB writes as fast as the server reads them, while reading; stops
/// sending as soon as a whole response head arrived. The status of that
/// response, or what went wrong (no connection, a close or reset before
/// any answer, nothing within `patience`).
pub async fn send_until_answered(
    addr: SocketAddr,
    head: String,
    len: usize,
    patience: Duration,
) -> Result<u16, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (mut reader, mut writer) = stream.into_split();
    let sending = tokio::spawn(async move {
        let chunk = vec![b'a'; 64 * 1024];
        writer.write_all(head.as_bytes()).await?;
        let mut left = len;
        while left > 0 {
            let n = left.min(chunk.len());
            writer.write_all(&chunk[..n]).await?;
            left -= n;
        }
        Ok::<_, std::io::Error>(writer)
    });
    let answer = tokio::time::timeout(patience, async {
        let mut bytes = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match reader.read(&mut buf).await {
                Ok(0) => {
                    return Err(format!(
                        "closed before a whole answer: {:?}",
                        String::from_utf8_lossy(&bytes)
                    ))
                }
                Ok(n) => bytes.extend_from_slice(&buf[..n]),
                Err(e) => {
                    return Err(format!(
                        "read: {e}, after {:?}",
                        String::from_utf8_lossy(&bytes)
                    ))
                }
            }
            if bytes.windows(4).any(|w| w == b"\r\n\r\n") {
                return parse_answer(&bytes).map(|a| a.status);
            }
        }
    })
    .await;
    sending.abort();
    answer.unwrap_or_else(|_| Err(format!("no answer within {patience:?}")))
}

/// The QUIC listener's address and certificate fingerprint, from the line
/// `serve` printed: `mediator QUIC listening on ADDR, certificate SHA-256 PIN`.
pub fn quic_line(process: &Process) -> (String, String) {
    let output = process.output();
    let line = output
        .iter()
        .find(|l| l.contains("QUIC listening on"))
        .unwrap_or_else(|| panic!("no QUIC line in {output:?}"));
    let addr = line
        .split("QUIC listening on ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .unwrap_or_else(|| panic!("no address in {line}"))
        .to_owned();
    let pin = line
        .split_whitespace()
        .last()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(pin.len(), 64, "{line}");
    (addr, pin)
}
