//! What `serve` and `check` say, and do, about the machine they start on:
//! the descriptor limit (raised to the hard one, default caps lowered to
//! fit what is left) and secret or key files other users can read.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

mod support;

use support::*;

/// `mediator args…` in `dir` under `ulimit -Sn soft; ulimit -Hn hard` when
/// given (the shell then becomes the mediator, so its pid is the
/// mediator's), with no mediator settings inherited.
fn command(dir: &Path, args: &[&str], limit: Option<(u64, u64)>) -> Command {
    let mut command = match limit {
        Some((soft, hard)) => {
            let mut sh = Command::new("sh");
            sh.arg("-c")
                .arg(format!(
                    "ulimit -Sn {soft} && ulimit -Hn {hard} && exec \"$0\" \"$@\""
                ))
                .arg(bin());
            sh
        }
        None => Command::new(bin()),
    };
    command
        .args(args)
        .current_dir(dir)
        .env("RUST_LOG", "info")
        .env("MEDIATOR_LOG_FORMAT", "text")
        .env_remove("MEDIATOR_SECRET")
        .env_remove("MEDIATOR_SECRET_FILE")
        .env_remove("MEDIATOR_CONFIG")
        .env_remove("MEDIATOR_STORE")
        .env_remove("MEDIATOR_LISTEN")
        .env_remove("PORT")
        .env_remove("DATABASE_URL");
    command
}

/// A running `mediator serve`, its log (standard error) in a file; killed
/// when dropped.
struct Served {
    child: Child,
    log: PathBuf,
    port: u16,
}

impl Served {
    fn start(dir: &Path, extra: &[&str], limit: Option<(u64, u64)>) -> Served {
        let port = free_port();
        let mut args = serve_args(port, "memory");
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        let log = dir.join(format!("serve-{port}.log"));
        let mut child = command(dir, &as_strs(&args), limit)
            .stdout(Stdio::piped())
            .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
            .spawn()
            .expect("the mediator binary starts");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains("listening") {
                    let _ = tx.send(());
                }
            }
        });
        let served = Served { child, log, port };
        if rx.recv_timeout(Duration::from_secs(30)).is_err() {
            panic!("serve {args:?} never listened: {}", served.log_text());
        }
        served
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The log once it holds `needle` (lines are written off the request
    /// path, a moment after they happen).
    fn log_with(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = self.log_text();
            if text.contains(needle) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "{needle:?} never logged:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The soft and hard descriptor limits the process runs under.
    fn open_files_limit(&self) -> (String, String) {
        let limits = std::fs::read_to_string(format!("/proc/{}/limits", self.child.id())).unwrap();
        let line = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .expect("a descriptor limit");
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields[3].to_owned(), fields[4].to_owned())
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The WARN lines of a log or a `check` report.
fn warnings(text: &str) -> Vec<&str> {
    text.lines().filter(|l| l.contains("WARN")).collect()
}

fn check(dir: &Path, extra: &[&str], limit: Option<(u64, u64)>) -> Output {
    let mut args = vec!["check", "--store", "memory", "--listen", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    command(dir, &args, limit).output().unwrap()
}

fn report(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The line of `check`'s report about `item`.
fn item<'a>(report: &'a str, item: &str) -> &'a str {
    report
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some(item))
        .unwrap_or_else(|| panic!("no {item} line in {report}"))
}

/// The hard descriptor limit tests run under.
fn hard_limit() -> u64 {
    let out = Command::new("sh")
        .args(["-c", "ulimit -Hn"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    match text.trim() {
        "unlimited" => u64::MAX,
        n => n.parse().expect("a number"),
    }
}

/// Whether a new connection to the mediator is answered 503 (past its
/// connection cap) rather than 200.
fn refused_for_connections(port: u16) -> bool {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .unwrap();
    let mut reply = String::new();
    let _ = stream.read_to_string(&mut reply);
    reply.starts_with("HTTP/1.1 503")
}

#[test]
fn serve_raises_its_soft_descriptor_limit_to_the_hard_one() {
    let hard = hard_limit().min(100_000);
    if hard <= 256 {
        eprintln!("skipped: the hard descriptor limit here is {hard}, no room to raise into");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let served = Served::start(dir.path(), &[], Some((256, hard)));
    assert_eq!(
        served.open_files_limit(),
        (hard.to_string(), hard.to_string()),
        "{}",
        served.log_text()
    );
}

#[test]
fn under_a_low_descriptor_limit_serve_lowers_its_default_caps_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let served = Served::start(dir.path(), &[], Some((256, 256)));
    let log = served.log_with("starting");
    let warned = warnings(&log);
    assert!(
        warned.iter().any(|l| l.contains("descriptor limit is 256")
            && l.contains("lowered to max_connections 96 and max_in_flight 96")),
        "{log}"
    );
    assert!(
        log.contains("max_connections=96 max_in_flight=96"),
        "the start line does not show the caps in force: {log}"
    );
    // The lowered cap is the one enforced: past 96 connections, a new one
    // is answered 503 at once rather than left to fail for descriptors.
    assert!(!refused_for_connections(served.port));
    let held: Vec<_> = (0..96)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", served.port)).unwrap())
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !refused_for_connections(served.port) {
        assert!(
            Instant::now() < deadline,
            "a 97th connection was served: the cap is not 96"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(held);
    drop(served);

    // An operator's own cap is kept; only the default beside it is lowered.
    let served = Served::start(dir.path(), &["--max-connections", "150"], Some((256, 256)));
    let log = served.log_with("starting");
    assert!(
        log.contains("max_connections=150 max_in_flight=42"),
        "{log}"
    );
}

#[test]
fn check_flags_a_descriptor_limit_below_what_the_caps_need() {
    let dir = tempfile::tempdir().unwrap();
    let out = check(dir.path(), &[], Some((256, 256)));
    let text = report(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    let line = item(&text, "files");
    assert!(
        line.starts_with("WARN")
            && line.contains("descriptor limit is 256")
            && line.contains("max_connections 96 and max_in_flight 96"),
        "{line}"
    );
    // Caps the operator set that the limit cannot hold: serve would fail
    // connections and deliveries for descriptors.
    let out = check(
        dir.path(),
        &["--max-connections", "5000", "--max-in-flight", "5000"],
        Some((256, 256)),
    );
    let text = report(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let line = item(&text, "files");
    assert!(
        line.starts_with("PROBLEM") && line.contains("256") && line.contains("10064"),
        "{line}"
    );
    // Caps that fit.
    let out = check(
        dir.path(),
        &["--max-connections", "50", "--max-in-flight", "50"],
        Some((256, 256)),
    );
    let line = item(&report(&out), "files").to_owned();
    assert!(
        line.starts_with("ok") && line.contains("limit 256"),
        "{line}"
    );
}

#[cfg(unix)]
#[test]
fn secret_and_key_files_other_users_can_read_are_warned_of() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let mode = |file: &str, mode: u32| {
        std::fs::set_permissions(dir.path().join(file), std::fs::Permissions::from_mode(mode))
            .unwrap();
    };
    std::fs::write(dir.path().join("mediator.secret"), "s".repeat(40)).unwrap();
    let tls = mediator_transport_quic::ServerTls::self_signed(&["localhost"]).unwrap();
    std::fs::write(dir.path().join("cert.pem"), tls.certificate_pem()).unwrap();
    std::fs::write(dir.path().join("key.pem"), tls.key_pem()).unwrap();
    mode("mediator.secret", 0o644);
    mode("key.pem", 0o640);
    let tls_args = ["--tls-cert", "cert.pem", "--tls-key", "key.pem"];

    let out = check(dir.path(), &tls_args, None);
    let text = report(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    let secret = item(&text, "secret");
    assert!(
        secret.starts_with("WARN") && secret.contains("chmod 600 ./mediator.secret"),
        "{secret}"
    );
    let key = item(&text, "tls");
    assert!(
        key.starts_with("WARN") && key.contains("mode 0640") && key.contains("chmod 600 key.pem"),
        "{key}"
    );

    let served = Served::start(dir.path(), &tls_args, None);
    let log = served.log_with("starting");
    let warned = warnings(&log);
    assert!(
        warned
            .iter()
            .any(|l| l.contains("./mediator.secret") && l.contains("chmod 600 ./mediator.secret")),
        "{log}"
    );
    assert!(
        warned
            .iter()
            .any(|l| l.contains("key.pem") && l.contains("chmod 600 key.pem")),
        "{log}"
    );
    drop(served);

    // Owner-only files draw no warning.
    mode("mediator.secret", 0o600);
    mode("key.pem", 0o600);
    let text = report(&check(dir.path(), &tls_args, None));
    assert!(item(&text, "secret").starts_with("ok"), "{text}");
    assert!(item(&text, "tls").starts_with("ok"), "{text}");
    let served = Served::start(dir.path(), &tls_args, None);
    let log = served.log_with("starting");
    assert!(!log.contains("chmod"), "{log}");
}

/// A broadcast storm under a limit of 256 descriptors: the caps lowered to
/// fit admit only what the descriptors can carry and refuse the rest with
/// 503, so no admitted delivery fails for "too many open files".
#[tokio::test(flavor = "multi_thread")]
async fn a_storm_under_a_low_descriptor_limit_loses_no_admitted_delivery() {
    const NODES: usize = 60;
    const BROADCASTS: usize = 10;
    let dir = tempfile::tempdir().unwrap();
    let served = Served::start(dir.path(), &[], Some((256, 256)));
    let base = format!("http://127.0.0.1:{}", served.port);
    for i in 0..NODES {
        // Slow enough that the broadcasts overlap.
        let (node, _) = echo_node(Duration::from_millis(300)).await;
        let key = format!("storm/n{i}");
        let body = serde_json::json!({
            "group": "storm", "name": format!("n{i}"), "url": format!("http://{node}"), "ttl": 600,
        });
        let (status, text) = post(
            &format!("{base}/register"),
            &token_for(dir.path(), &key),
            body.to_string(),
        )
        .await;
        assert_eq!(status, 200, "{text:?}");
    }
    let token = token_for(dir.path(), "storm/caller");
    let calls: Vec<_> = (0..BROADCASTS)
        .map(|i| {
            let (url, token) = (format!("{base}/many/storm/work"), token.clone());
            tokio::spawn(async move { post_full(&url, &token, format!("b{i}")).await })
        })
        .collect();
    let mut admitted = 0;
    for call in calls {
        let (status, headers, body) = call.await.unwrap();
        let text = String::from_utf8_lossy(&body);
        match status.as_u16() {
            200 => {
                admitted += 1;
                let summary = headers
                    .get("x-mediator-summary")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                assert_eq!(
                    summary,
                    format!("asked={NODES}; answered={NODES}; failed=0; timed_out=0"),
                    "an admitted broadcast lost deliveries: {text}"
                );
            }
            503 => assert!(text.contains("overloaded"), "{text}"),
            other => panic!("broadcast answered {other}: {text}"),
        }
    }
    assert!(admitted >= 1, "no broadcast was admitted");
    assert!(
        !served
            .log_text()
            .to_lowercase()
            .contains("too many open files"),
        "{}",
        served.log_text()
    );
}
