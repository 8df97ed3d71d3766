//! The built `mediator` binary, run as a user runs it: serve, restart,
//! keygen, token, send, nodes, new-node, demo, and a graceful stop under load.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use mediator_core::{KeyRing, SealKey};
use mediator_transport_http::client::Incoming;
use mediator_transport_http::NodeClient;
use mediator_transport_quic::QuicNodeClient;
use serde_json::{json, Value};

mod support;

use support::*;

#[tokio::test(flavor = "multi_thread")]
async fn registrations_survive_a_restart_on_the_same_sqlite_file() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let store = format!("sqlite:{}", dir.path().join("hub.db").display());
    let args = serve_args(port, &store);
    let first = Process::start(dir.path(), &as_strs(&args), "listening");
    let (node, _) = echo_node(Duration::ZERO).await;
    let base = format!("http://127.0.0.1:{port}");

    // `mediator token` output registers a node with `serve`.
    let token = run(dir.path(), &["token", "--node", "app/echo"])
        .trim()
        .to_owned();
    let registration =
        json!({"group": "app", "name": "echo", "url": format!("http://{node}"), "ttl": 600});
    let (status, body) = post(
        &format!("{base}/register"),
        &token,
        registration.to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body:?}");
    let sender = token_for(dir.path(), "app/caller");
    let (status, body) = post(&format!("{base}/one/app/echo/x"), &sender, "one").await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"echo:one"[..]));

    assert!(
        first.terminate().success(),
        "serve did not exit 0 on SIGTERM"
    );
    let _second = Process::start(dir.path(), &as_strs(&args), "listening");
    let (status, body) = post(&format!("{base}/one/app/echo/x"), &sender, "two").await;
    assert_eq!(
        (status, &body[..]),
        (StatusCode::OK, &b"echo:two"[..]),
        "routing after a restart"
    );

    let listed: Value =
        serde_json::from_str(&run(dir.path(), &["nodes", "--url", &base, "--json"])).unwrap();
    let list = listed.as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["group"], "app");
    assert_eq!(list[0]["node"], "app/echo");
    // One set of names: the original's duplicates are not repeated.
    for old in ["cluster", "domain", "port", "ttl"] {
        assert!(list[0].get(old).is_none(), "{old} in {}", list[0]);
    }
    // The lease left counts down from the 600 s granted, never up.
    let left = list[0]["lease_left_s"].as_u64().unwrap();
    assert!((1..=600).contains(&left), "{left}");
    std::thread::sleep(Duration::from_millis(1100));
    let again: Value =
        serde_json::from_str(&run(dir.path(), &["nodes", "--url", &base, "--json"])).unwrap();
    assert!(again[0]["lease_left_s"].as_u64().unwrap() < left, "{again}");
    let table = run(dir.path(), &["nodes", "--url", &base]);
    assert!(
        table.contains("app/echo") && table.contains("LEASE LEFT") && table.contains("1 node(s)"),
        "{table}"
    );

    // The first instance left its store on SIGTERM: the second is alone
    // in the formation, reachable at its listen address.
    let instances: Value =
        serde_json::from_str(&run(dir.path(), &["instances", "--url", &base, "--json"])).unwrap();
    let instances = instances.as_array().unwrap();
    assert_eq!(instances.len(), 1, "{instances:?}");
    assert_eq!(instances[0]["this"], true);
    assert_eq!(instances[0]["live"], true);
    assert_eq!(instances[0]["peer"], base.as_str());
    let table = run(dir.path(), &["instances", "--url", &base]);
    assert!(
        table.contains("INSTANCE") && table.contains(" *") && table.contains("1 instance(s)"),
        "{table}"
    );
    let nobody = format!("http://127.0.0.1:{}", free_port());
    let (code, err) = outcome(&mediator(dir.path(), &["instances", "--url", &nobody], &[]));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains(&nobody), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn keygen_keys_and_minted_tokens_carry_a_sealed_call_from_the_shell() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let args = serve_args(port, "memory");
    let _hub = Process::start(dir.path(), &as_strs(&args), "listening");
    let key_text = run(dir.path(), &["keygen"]).trim().to_owned();
    let keys = KeyRing::new(SealKey::from_base64(&key_text).unwrap());
    let token = run(dir.path(), &["token", "--node", "app/upper"])
        .trim()
        .to_owned();
    let node = NodeClient::builder(format!("http://127.0.0.1:{port}"))
        .identity("app", Some("upper"))
        .token(token)
        .keys(keys)
        .callback("http://127.0.0.1:0")
        .start(|request: Incoming| async move {
            let from = request.from.map(|k| k.to_string()).unwrap_or_default();
            let text = String::from_utf8_lossy(&request.body).to_uppercase();
            Ok(Bytes::from(format!("{text} (from {from})")))
        })
        .await
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let out = run(
        dir.path(),
        &[
            "send",
            "--url",
            &url,
            "--to",
            "app/upper",
            "--key",
            &key_text,
            "--data",
            "hi",
        ],
    );
    assert_eq!(out.trim(), "HI (from cli/send)");
    let out = run(
        dir.path(),
        &[
            "send", "--url", &url, "--to", "app/*", "--key", &key_text, "--data", "all",
        ],
    );
    assert!(
        out.contains("app/upper: ALL") && out.contains("asked=1 answered=1"),
        "{out}"
    );

    // A wrong key cannot open the node's sealed reply (nor the node the request).
    let other = SealKey::generate().to_base64();
    let failed = Command::new(BIN)
        .args([
            "send",
            "--url",
            &url,
            "--to",
            "app/upper",
            "--key",
            &other,
            "--data",
            "x",
        ])
        .current_dir(dir.path())
        .env_remove("MEDIATOR_SECRET")
        .output()
        .unwrap();
    assert!(!failed.status.success());
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_with_quic_listen_carries_a_send_via_quic_and_refuses_a_bad_pin() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut args = serve_args(port, "memory");
    args.extend(["--quic-listen".into(), "127.0.0.1:0".into()]);
    let hub = Process::start(dir.path(), &as_strs(&args), "QUIC listening");
    let (addr, pin) = quic_line(&hub);
    let key_text = run(dir.path(), &["keygen"]).trim().to_owned();
    let keys = KeyRing::new(SealKey::from_base64(&key_text).unwrap());
    let token = run(dir.path(), &["token", "--node", "app/upper"])
        .trim()
        .to_owned();
    // A node attached over QUIC, pinning the printed fingerprint.
    let node = QuicNodeClient::builder(addr.parse().unwrap())
        .pin(&pin)
        .identity("app", Some("upper"))
        .token(token)
        .keys(keys)
        .start(|request: Incoming| async move {
            let from = request.from.map(|k| k.to_string()).unwrap_or_default();
            let text = String::from_utf8_lossy(&request.body).to_uppercase();
            Ok(Bytes::from(format!("{text} (from {from})")))
        })
        .await
        .unwrap();
    let send = |extra: &[&str]| {
        let mut all = vec!["send", "--via", "quic", "--quic", &addr, "--key", &key_text];
        all.extend_from_slice(extra);
        Command::new(BIN)
            .args(all)
            .current_dir(dir.path())
            .env_remove("MEDIATOR_SECRET")
            .output()
            .unwrap()
    };
    let out = send(&["--pin", &pin, "--to", "app/upper", "--data", "hi"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "HI (from cli/send)"
    );
    let out = send(&["--pin", &pin, "--to", "app/*", "--data", "all"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success()
            && stdout.contains("app/upper: ALL")
            && stdout.contains("asked=1 answered=1"),
        "{out:?}"
    );
    // The same node through the HTTP API: both listeners serve one mediator.
    let url = format!("http://127.0.0.1:{port}");
    let over_http = run(
        dir.path(),
        &[
            "send",
            "--url",
            &url,
            "--to",
            "app/upper",
            "--key",
            &key_text,
            "--data",
            "web",
        ],
    );
    assert_eq!(over_http.trim(), "WEB (from cli/send)");

    // Another certificate's fingerprint: refused, said so, and the exit
    // code of a mediator that cannot be reached.
    let wrong = "ab".repeat(32);
    let out = send(&["--pin", &wrong, "--to", "app/upper", "--data", "x"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        stderr.contains("does not match --pin")
            && stderr.contains(&pin)
            && stderr.contains(&wrong)
            && stderr.contains(&addr)
            && !stderr.contains("error 40"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "{out:?}");
    // A pin of the wrong length: refused before dialling, naming --pin.
    let out = send(&["--pin", &pin[..16], "--to", "app/upper", "--data", "x"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        stderr.contains("--pin") && stderr.contains("64") && !stderr.contains("tls configuration"),
        "{stderr}"
    );
    // An unknown node: the words HTTP's send uses, not the listener's own.
    let out = send(&["--pin", &pin, "--to", "app/ghost", "--data", "x"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        stderr.contains("no node app/ghost is registered") && !stderr.contains("unknown target"),
        "{stderr}"
    );
    // A token minted with another secret: where the secret comes from.
    std::fs::write(dir.path().join("other.secret"), "x".repeat(40)).unwrap();
    let out = send(&[
        "--pin",
        &pin,
        "--to",
        "app/upper",
        "--secret-file",
        "other.secret",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(stderr.contains("--secret-file"), "{stderr}");
    // Nothing at that address: said so, with the flags to check.
    let closed = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let nowhere = closed.local_addr().unwrap().to_string();
    drop(closed);
    let out = Command::new(BIN)
        .args([
            "send",
            "--via",
            "quic",
            "--quic",
            &nowhere,
            "--pin",
            &pin,
            "--key",
            &key_text,
            "--to",
            "app/upper",
        ])
        .current_dir(dir.path())
        .env_remove("MEDIATOR_SECRET")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        stderr.contains(&nowhere)
            && stderr.contains("nothing answered")
            && stderr.contains("--quic-listen"),
        "{stderr}"
    );
    // Neither a pin nor a root: refused before dialling.
    let out = send(&["--to", "app/upper"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--pin"),
        "{out:?}"
    );

    assert!(hub.terminate().success());
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_quic_listener_serves_the_https_certificate_and_send_trusts_its_root() {
    let dir = tempfile::tempdir().unwrap();
    let tls = mediator_transport_quic::ServerTls::self_signed(&["localhost"]).unwrap();
    std::fs::write(dir.path().join("cert.pem"), tls.certificate_pem()).unwrap();
    std::fs::write(dir.path().join("key.pem"), tls.key_pem()).unwrap();
    let port = free_port();
    let mut args = serve_args(port, "memory");
    args.extend(
        [
            "--tls-cert",
            "cert.pem",
            "--tls-key",
            "key.pem",
            "--quic-listen",
            "127.0.0.1:0",
        ]
        .map(String::from),
    );
    let hub = Process::start(dir.path(), &as_strs(&args), "QUIC listening");
    let (addr, pin) = quic_line(&hub);
    assert_eq!(pin, tls.fingerprint(), "not the configured certificate");
    let key_text = run(dir.path(), &["keygen"]).trim().to_owned();
    let node = QuicNodeClient::builder(addr.parse().unwrap())
        .root_pem(tls.certificate_pem())
        .identity("app", Some("echo"))
        .token(token_for(dir.path(), "app/echo"))
        .keys(KeyRing::new(SealKey::from_base64(&key_text).unwrap()))
        .start(|request: Incoming| async move { Ok(request.body) })
        .await
        .unwrap();
    let out = run(
        dir.path(),
        &[
            "send",
            "--via",
            "quic",
            "--quic",
            &addr,
            "--root-pem",
            "cert.pem",
            "--to",
            "app/echo",
            "--key",
            &key_text,
            "--data",
            "rooted",
        ],
    );
    assert_eq!(out.trim(), "rooted");
    assert!(hub.terminate().success());
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_during_load_loses_no_accepted_request() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut args = serve_args(port, "memory");
    args.extend(["--drain-s".into(), "20".into()]);
    let hub = Process::start(dir.path(), &as_strs(&args), "listening");
    let (node, seen) = echo_node(Duration::from_millis(700)).await;
    let token = token_for(dir.path(), "app/slow");
    let base = format!("http://127.0.0.1:{port}");
    let registration =
        json!({"group": "app", "name": "slow", "url": format!("http://{node}"), "ttl": 600});
    assert_eq!(
        post(
            &format!("{base}/register"),
            &token,
            registration.to_string()
        )
        .await
        .0,
        StatusCode::OK
    );

    let sender = token_for(dir.path(), "app/load");
    let mut calls = Vec::new();
    for i in 0..24 {
        let (url, sender) = (format!("{base}/one/app/slow/work"), sender.clone());
        calls.push(tokio::spawn(async move {
            post(&url, &sender, format!("r{i}")).await
        }));
    }
    // Every request has reached the node before the signal.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while *seen.lock().unwrap() < 24 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "requests never reached the node"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stopping = tokio::task::spawn_blocking(move || hub.terminate());
    for (i, call) in calls.into_iter().enumerate() {
        let (status, body) = call.await.unwrap();
        assert_eq!(status, StatusCode::OK, "request {i} lost in shutdown");
        assert_eq!(body, format!("echo:r{i}"));
    }
    assert!(stopping.await.unwrap().success(), "serve did not exit 0");
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err(),
        "still accepting after shutdown"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_demo_starts_and_its_pages_answer() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let demo = Process::start(
        dir.path(),
        &[
            "demo",
            "--listen",
            &listen,
            "--store",
            "memory",
            "--pages-from",
            "0",
        ],
        "Stop with Ctrl-C",
    );
    let output = demo.output();
    let page = |name: &str| -> String {
        let line = output
            .iter()
            .find(|l| l.contains(&format!("demo/{name} ")))
            .unwrap_or_else(|| panic!("no {name} page in {output:?}"));
        line.split_whitespace()
            .last()
            .unwrap()
            .trim_end_matches('/')
            .to_owned()
    };
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    for name in ["passive", "sender", "standalone"] {
        let response = client
            .get(format!("{}/", page(name)).parse().unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let html = response.into_body().collect().await.unwrap().to_bytes();
        assert!(String::from_utf8_lossy(&html).contains(&format!("<h1>demo/{name}</h1>")));
    }
    let send = Request::post(format!("{}/send", page("sender")))
        .body(Full::new(Bytes::from(r#"{"to":"demo/*","text":"hello"}"#)))
        .unwrap();
    let response = client.request(send).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let sent: Value =
        serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap();
    // passive, standalone and the node attached over QUIC.
    assert_eq!(sent["summary"]["answered"], 3, "{sent}");
    let replies = sent["replies"].as_array().unwrap();
    assert!(
        replies
            .iter()
            .any(|r| r["node"] == "demo/quic" && r["then"]["by"] == "demo/quic"),
        "{sent}"
    );
    let inbox = client
        .get(format!("{}/messages", page("passive")).parse().unwrap())
        .await
        .unwrap();
    let inbox: Value =
        serde_json::from_slice(&inbox.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(inbox["received"][0]["text"], "hello");
    assert_eq!(inbox["received"][0]["from"], "demo/sender");
    // The mediator's dashboard, on a listener of its own, behind the
    // operator password the demo made for this run and printed once with
    // its URL; the API's origin serves no console.
    let line = output
        .iter()
        .find(|l| l.trim_start().starts_with("console "))
        .unwrap_or_else(|| panic!("no dashboard line in {output:?}"))
        .clone();
    let dashboard = line
        .split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("no console URL in {line}"))
        .to_owned();
    assert!(dashboard.starts_with("http://127.0.0.1:"), "{line}");
    assert_ne!(dashboard, format!("http://{listen}/"), "{line}");
    let on_api = client
        .get(format!("http://{listen}/").parse().unwrap())
        .await
        .unwrap();
    assert_eq!(on_api.status(), StatusCode::NOT_FOUND);
    let password = line
        .split("password: ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no password in {line}"))
        .to_owned();
    assert!(password.len() >= 20, "{line}");
    let login = |password: &str| {
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("admin:{password}"));
        Request::get(&dashboard)
            .header("authorization", format!("Basic {basic}"))
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    let anonymous = client.get(dashboard.parse().unwrap()).await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let page = client.request(login(&password)).await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&html).contains("demo/passive"));
    // The signing secret is no password, and the password is kept nowhere.
    let refused = client.request(login(&secret_of(dir.path()))).await.unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let text = std::fs::read(entry.unwrap().path()).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&text).contains(&password),
            "the password was written to disk"
        );
    }
    assert!(demo.terminate().success());
}

/// The target folder generated projects build in: the shared one when the
/// tests run with `CARGO_TARGET_DIR`, so the workspace crates' dependencies
/// are already built there, else one of their own under this workspace's.
fn generated_target() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/new-node-check"))
}

/// `PATH` with the directories of this cargo and of the built `mediator`
/// first, so the README's `cargo run` and `mediator send` find them.
fn path_with_tools() -> std::ffi::OsString {
    let mut dirs: Vec<PathBuf> = [env!("CARGO"), BIN]
        .iter()
        .filter_map(|tool| Path::new(tool).parent().map(Path::to_path_buf))
        .collect();
    dirs.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    std::env::join_paths(dirs).unwrap()
}

/// The command lines of the first ```sh block after `after` in a README.
fn sh_block(readme: &str, after: &str) -> Vec<String> {
    let from = readme
        .find(after)
        .unwrap_or_else(|| panic!("{after:?} in {readme}"));
    readme[from..]
        .split("```sh\n")
        .nth(1)
        .and_then(|block| block.split("```").next())
        .unwrap_or_else(|| panic!("no sh block in {readme}"))
        .lines()
        .filter(|line| !line.trim().is_empty() && !line.trim_start().starts_with('#'))
        .map(str::to_owned)
        .collect()
}

/// Runs README lines with `sh` in `dir`, with the tools on `PATH`, offline:
/// one line as the shell's own process, several as one script.
fn sh(dir: &Path, line: &str) -> Command {
    let script = if line.contains('\n') {
        line.to_owned()
    } else {
        format!("exec {line}")
    };
    let mut command = Command::new("sh");
    command
        .args(["-c", &script])
        .current_dir(dir)
        .env("PATH", path_with_tools())
        .env("CARGO_TARGET_DIR", generated_target())
        .env("CARGO_NET_OFFLINE", "true")
        .env("RUST_LOG", "warn");
    for name in [
        "MEDIATOR_SECRET",
        "MEDIATOR_URL",
        "MEDIATOR_NODE_KEY",
        "NODE_CALLBACK",
    ] {
        command.env_remove(name);
    }
    command
}

#[test]
fn new_node_readme_steps_build_a_node_that_registers_and_answers() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let args = serve_args(port, "memory");
    let hub = Process::start(dir.path(), &as_strs(&args), "listening");
    let project = dir.path().join("billing-worker");
    // By default the project depends on the released crates; from a local
    // checkout, `--crates` gives path dependencies (this checkout here).
    let released = dir.path().join("released");
    run(dir.path(), &["new-node", released.to_str().unwrap()]);
    let manifest = std::fs::read_to_string(released.join("Cargo.toml")).unwrap();
    let version = env!("CARGO_PKG_VERSION");
    assert!(
        manifest.contains(&format!("mediator-core = \"{version}\""))
            && manifest.contains(&format!("mediator-transport-http = \"{version}\""))
            && manifest.contains(&format!("tag = \"v{version}\""))
            && !manifest.contains("path ="),
        "{manifest}"
    );
    let checkout = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = run(
        dir.path(),
        &[
            "new-node",
            project.to_str().unwrap(),
            "--group",
            "billing",
            "--name",
            "worker-1",
            "--crates",
            checkout.to_str().unwrap(),
        ],
    );
    assert!(
        out.contains("src/main.rs") && out.contains("cp .env.example .env"),
        "{out}"
    );
    let manifest = std::fs::read_to_string(project.join("Cargo.toml")).unwrap();
    assert!(manifest.contains("mediator-core = { path = "), "{manifest}");
    let main = std::fs::read_to_string(project.join("src/main.rs")).unwrap();
    assert!(main.contains(r#".identity("billing", Some("worker-1"))"#));

    // The README's steps, verbatim: copy the example, fill it in, cargo run.
    let readme = std::fs::read_to_string(project.join("README.md")).unwrap();
    let steps = sh_block(&readme, "# ");
    assert_eq!(steps, ["cp .env.example .env", "cargo run"], "{readme}");
    assert!(sh(&project, &steps[0]).status().unwrap().success());
    let key = run(dir.path(), &["keygen"]).trim().to_owned();
    let callback = free_port();
    let filled: String = std::fs::read_to_string(project.join(".env"))
        .unwrap()
        .lines()
        .map(|line| match line.split_once('=') {
            Some(("MEDIATOR_URL", _)) => format!("MEDIATOR_URL=http://127.0.0.1:{port}\n"),
            Some(("MEDIATOR_SECRET", _)) => {
                format!("MEDIATOR_SECRET=\"{}\"\n", secret_of(dir.path()))
            }
            Some(("MEDIATOR_NODE_KEY", _)) => format!("MEDIATOR_NODE_KEY={key}\n"),
            Some(("NODE_CALLBACK", _)) => format!("NODE_CALLBACK=http://127.0.0.1:{callback}\n"),
            _ => format!("{line}\n"),
        })
        .collect();
    std::fs::write(project.join(".env"), filled).unwrap();
    // Nothing exported: the node reads .env itself. `cargo run` execs the
    // node, so the signal below reaches it.
    let mut node = sh(&project, &steps[1])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = node.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // Cargo's progress goes to stderr: drained, so it never fills the pipe.
    let stderr = node.stderr.take().unwrap();
    let errors: Arc<Mutex<String>> = Arc::default();
    let sink = Arc::clone(&errors);
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let mut all = sink.lock().unwrap();
            all.push_str(&line);
            all.push('\n');
        }
    });
    // Building takes a while the first time; registering, a moment.
    let Ok(registered) = rx.recv_timeout(Duration::from_secs(540)) else {
        let _ = node.kill();
        let _ = node.wait();
        panic!(
            "the generated node never registered:\n{}",
            errors.lock().unwrap()
        );
    };
    assert!(
        registered.contains("billing/worker-1 registered")
            && registered.contains(&format!(":{callback}")),
        "{registered}"
    );

    // The README's call, verbatim, in a fresh shell in the project's
    // folder: nothing set beforehand, the steps set what they use.
    let call = sh_block(&readme, "Call it from the shell");
    assert_eq!(call.len(), 2, "{readme}");
    assert!(call[1].contains("--key \"$MEDIATOR_NODE_KEY\""), "{readme}");
    let out = sh(&project, &call.join("\n"))
        .env_remove("MEDIATOR_SECRET_FILE")
        .env_remove("MEDIATOR_CONFIG")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "hello");

    // Ctrl-C: the node deregisters and exits 0.
    let sent = Command::new("kill")
        .args(["-INT", &node.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let status = node.wait().unwrap();
    assert!(status.success(), "{status:?}");
    // The rest of its output, up to its end: the request it answered, then
    // its goodbye.
    let rest: Vec<String> = rx.iter().collect();
    assert!(
        rest.iter().any(|l| l.contains("cli/send -> /: 5 bytes")),
        "{rest:?}"
    );
    assert!(
        rest.last()
            .is_some_and(|l| l.contains("billing/worker-1 deregistered")),
        "{rest:?}"
    );
    let listed: Value = serde_json::from_str(&run(
        dir.path(),
        &[
            "nodes",
            "--url",
            &format!("http://127.0.0.1:{port}"),
            "--json",
        ],
    ))
    .unwrap();
    assert_eq!(listed, json!([]), "the node is still listed");
    assert!(hub.terminate().success());

    let refused = Command::new(BIN)
        .args(["new-node", project.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!refused.status.success(), "new-node overwrote a project");
}

#[test]
fn new_node_quic_output_builds_against_the_workspace() {
    let dir = tempfile::tempdir().unwrap();
    // The QUIC variant: the node dials out and stays attached.
    let project = dir.path().join("edge-sensor");
    let checkout = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = run(
        dir.path(),
        &[
            "new-node",
            project.to_str().unwrap(),
            "--group",
            "edge",
            "--name",
            "sensor",
            "--quic",
            "--crates",
            checkout.to_str().unwrap(),
        ],
    );
    assert!(out.contains("src/main.rs"), "{out}");
    let main = std::fs::read_to_string(project.join("src/main.rs")).unwrap();
    assert!(main.contains("QuicNodeClient::builder(addr)"), "{main}");
    assert!(main.contains(r#".identity("edge", Some("sensor"))"#));
    assert!(main.contains("Settings::load()"), "{main}");
    let env = std::fs::read_to_string(project.join(".env.example")).unwrap();
    assert!(env.contains("MEDIATOR_QUIC_PIN="), "{env}");
    let check = sh(&project, "cargo check --quiet").output().unwrap();
    assert!(
        check.status.success(),
        "the generated QUIC node does not build:\n{}",
        String::from_utf8_lossy(&check.stderr)
    );
}

#[test]
fn hash_password_prints_an_argon2_hash_of_the_password_read() {
    use std::io::Write;
    let mut child = Command::new(BIN)
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"operator pw\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("$argon2id$"), "{text}");
    let hash: mediator_core::PasswordHash = text.parse().unwrap();
    assert!(hash.verify("operator pw"));
    assert!(!hash.verify("operator pw\n"));
}
