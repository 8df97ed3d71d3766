//! The built `mediator` binary, run as a user runs it: serve, restart,
//! keygen, token, send, nodes, new-node, demo, and a graceful stop under load.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
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
    let list = listed["list"].as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["group"], "app");
    let table = run(dir.path(), &["nodes", "--url", &base]);
    assert!(
        table.contains("app/echo") && table.contains("1 node(s)"),
        "{table}"
    );
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

/// The QUIC listener's address and fingerprint, from what `serve` printed.
fn quic_line(process: &Process) -> (String, String) {
    let output = process.output();
    let line = output
        .iter()
        .find(|l| l.contains("QUIC listening on"))
        .unwrap_or_else(|| panic!("no QUIC line in {output:?}"));
    let addr = line
        .split("QUIC listening on ")
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .to_owned();
    let pin = line.split_whitespace().last().unwrap().to_owned();
    assert_eq!(pin.len(), 64, "{line}");
    (addr, pin)
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

    // Another certificate's fingerprint: refused, said so, non-zero exit.
    let wrong = "ab".repeat(32);
    let out = send(&["--pin", &wrong, "--to", "app/upper", "--data", "x"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        stderr.contains("fingerprint") && stderr.contains(&addr),
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "{out:?}");
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
    // The mediator's dashboard, behind the admin login the demo prints.
    let dashboard = format!("http://{listen}/");
    assert!(output.iter().any(|l| l.contains(&dashboard)), "{output:?}");
    let anonymous = client.get(dashboard.parse().unwrap()).await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let login = base64::engine::general_purpose::STANDARD
        .encode(format!("admin:{}", secret_of(dir.path())));
    let signed_in = Request::get(&dashboard)
        .header("authorization", format!("Basic {login}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let page = client.request(signed_in).await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&html).contains("demo/passive"));
    assert!(demo.terminate().success());
}

#[test]
fn new_node_output_builds_against_the_workspace() {
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("billing-worker");
    let out = run(
        dir.path(),
        &[
            "new-node",
            project.to_str().unwrap(),
            "--group",
            "billing",
            "--name",
            "worker-1",
        ],
    );
    assert!(out.contains("src/main.rs"), "{out}");
    let main = std::fs::read_to_string(project.join("src/main.rs")).unwrap();
    assert!(main.contains(r#".identity("billing", Some("worker-1"))"#));
    let target: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/new-node-check");
    let check = Command::new(env!("CARGO"))
        .args(["check", "--offline", "--quiet"])
        .current_dir(&project)
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "the generated node does not build:\n{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let refused = Command::new(BIN)
        .args(["new-node", project.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!refused.status.success(), "new-node overwrote a project");

    // The QUIC variant: the node dials out and stays attached.
    let project = dir.path().join("edge-sensor");
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
        ],
    );
    assert!(out.contains("src/main.rs"), "{out}");
    let main = std::fs::read_to_string(project.join("src/main.rs")).unwrap();
    assert!(main.contains("QuicNodeClient::builder(addr)"), "{main}");
    assert!(main.contains(r#".identity("edge", Some("sensor"))"#));
    let env = std::fs::read_to_string(project.join(".env.example")).unwrap();
    assert!(env.contains("MEDIATOR_QUIC_PIN="), "{env}");
    let check = Command::new(env!("CARGO"))
        .args(["check", "--offline", "--quiet"])
        .current_dir(&project)
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .unwrap();
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
