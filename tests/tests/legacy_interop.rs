//! Rust nodes and the original's Node children, both ways through our
//! mediator. The Node side (`tests/legacy_js/`) implements the original's
//! wire rules with node's own `crypto` module, independently of the Rust
//! code, and is checked against the committed OpenSSL vectors first.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use mediator_core::cipher::legacy::LegacyCipher;
use mediator_tests::harness::{key, minter, self_signed, Hub, SECRET};
use mediator_transport_http::client::legacy::{LegacyClient, LegacyIncoming};
use mediator_transport_http::{ClientError, NodeClient, TlsConfig};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const PASSPHRASE: &str = "the PROTECTED_AES256 of this formation";

/// How long a Node process may take to say something.
const NODE_PATIENCE: Duration = Duration::from_secs(20);

fn scripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/legacy_js")
}

fn node_command(script: &str) -> Command {
    let mut command = Command::new("node");
    command
        .arg(scripts().join(script))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    command
}

/// The first line the process prints, as JSON.
async fn first_line(child: &mut Child) -> Value {
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(NODE_PATIENCE, lines.next_line())
        .await
        .expect("node answered in time")
        .expect("read stdout")
        .expect("node printed a line");
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

/// Runs a Node script to its end and returns its one line of output.
async fn run(script: &str, args: &[&str], env: &[(&str, &str)]) -> Value {
    let mut command = node_command(script);
    command.args(args);
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command
        .spawn()
        .expect("node 20 must be installed to run the compatibility tests");
    let line = first_line(&mut child).await;
    let status = tokio::time::timeout(NODE_PATIENCE, child.wait())
        .await
        .expect("node finished in time")
        .expect("wait");
    assert!(status.success(), "{script} failed: {line}");
    line
}

#[tokio::test]
async fn the_node_implementation_matches_the_committed_vectors() {
    let vectors = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../mediator-core/src/cipher/legacy_vectors.json");
    let out = run("vectors.js", &[vectors.to_str().expect("utf-8 path")], &[]).await;
    assert!(out["checked"].as_u64().expect("count") >= 6, "{out}");
}

#[tokio::test]
async fn a_rust_sender_reaches_an_original_child() {
    let hub = Hub::config().tokens_without_sub().start().await;
    let mut child = node_command("child.js")
        .args([&hub.base, SECRET, PASSPHRASE, "jsland", "child"])
        .spawn()
        .expect("node 20 must be installed to run the compatibility tests");
    let ready = first_line(&mut child).await;
    // Registered in the original's dialect, answered in it.
    assert_eq!(ready["status"], 200, "{ready}");
    assert_eq!(ready["answer"]["errors"], json!({}), "{ready}");
    assert_eq!(ready["answer"]["entity"]["cluster"], "jsland");
    assert_eq!(ready["answer"]["entity"]["node"], "child");
    assert!(hub.knows("jsland/child"));

    let client = LegacyClient::new(&hub.base, SECRET, LegacyCipher::new(PASSPHRASE))
        .expect("client")
        .from_node("rustland", Some("sender"));
    let data = json!({"n": 1, "text": "héllo wörld — 你好 🌍", "list": [1, 2, 3]});
    let reply = client
        .send("jsland", Some("child"), "/echo?x=1", &data)
        .await
        .expect("the child answers");
    assert_eq!(reply["echoed"], data);
    assert_eq!(reply["fromCluster"], "rustland");
    assert_eq!(reply["fromNode"], "sender");
    assert_eq!(reply["url"], "/echo?x=1");
    assert_eq!(reply["by"], "node.js child");

    // The child refuses a payload it cannot decrypt with the original's 409.
    let stranger = LegacyClient::new(&hub.base, SECRET, LegacyCipher::new("another passphrase"))
        .expect("client");
    match stranger.send("jsland", Some("child"), "/echo", &data).await {
        Err(ClientError::Node {
            node,
            status,
            message,
            ..
        }) => {
            assert_eq!(node, "jsland/child");
            assert_eq!(status, 409);
            assert!(message.starts_with("cannot decrypt"), "{message}");
        }
        other => panic!("expected the child's 409, got {other:?}"),
    }
    // A wrong secret never gets past the mediator.
    let forger = LegacyClient::new(&hub.base, "not the secret", LegacyCipher::new(PASSPHRASE))
        .expect("client");
    match forger.send("jsland", Some("child"), "/echo", &data).await {
        Err(ClientError::Mediator { status: 401, .. }) => {}
        other => panic!("expected 401, got {other:?}"),
    }
    drop(child.stdin.take());
    let _ = tokio::time::timeout(NODE_PATIENCE, child.wait()).await;
    hub.stop().await;
}

#[tokio::test]
async fn an_original_sender_reaches_a_rust_node_over_https() {
    // The original's sending library only speaks https.
    let (cert, private) = self_signed();
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &cert).expect("write the CA");
    let hub = Hub::config()
        .tokens_without_sub()
        .tls(TlsConfig::from_pem(cert.as_bytes(), private.as_bytes()).expect("tls"))
        .start()
        .await;

    let me = key("rustland/receiver");
    let receiver = NodeClient::builder(&hub.base)
        .node_key(me.clone())
        .token_minter(minter())
        .tls_root(cert.clone())
        .callback("http://127.0.0.1:0")
        .start_legacy(
            LegacyCipher::new(PASSPHRASE),
            |request: LegacyIncoming| async move {
                Ok(json!({
                    "got": request.body,
                    "fromCluster": request.from_cluster,
                    "fromNode": request.from_node,
                    "path": request.path,
                    "query": request.query,
                    "by": "rust",
                }))
            },
        )
        .await
        .expect("the legacy node starts");
    assert!(hub.knows(&me));

    let ca = ca_file.to_str().expect("utf-8 path");
    let env = [("NODE_EXTRA_CA_CERTS", ca)];
    let data = r#"{"question":"ça va?","n":[1,2,{"deep":true}]}"#;
    let out = run(
        "sender.js",
        &[
            &hub.base,
            SECRET,
            PASSPHRASE,
            "rustland",
            "receiver",
            "/ask?lang=fr",
            data,
        ],
        &env,
    )
    .await;
    assert_eq!(out["status"], 200, "{out}");
    assert_eq!(out["node"], "rustland/receiver");
    let reply = &out["reply"];
    assert_eq!(
        reply["got"],
        serde_json::from_str::<Value>(data).expect("json")
    );
    assert_eq!(reply["fromCluster"], "jsland");
    assert_eq!(reply["fromNode"], "sender");
    assert_eq!(reply["path"], "/ask");
    assert_eq!(reply["query"], "lang=fr");
    assert_eq!(reply["by"], "rust");

    // A payload that does not decrypt: the original's 409 {"error"}.
    let out = run(
        "sender.js",
        &[
            &hub.base,
            SECRET,
            PASSPHRASE,
            "rustland",
            "receiver",
            "/ask",
            "{}",
            "00ff:1234",
        ],
        &env,
    )
    .await;
    assert_eq!(out["status"], 409, "{out}");
    assert!(out["reply"]["error"].is_string(), "{out}");

    receiver.shutdown().await.expect("shutdown");
    assert!(!hub.knows(&me));
    hub.stop().await;
}

#[tokio::test]
async fn rust_legacy_nodes_talk_to_each_other() {
    let hub = Hub::config().tokens_without_sub().start().await;
    let me = key("rustland/");
    let receiver = NodeClient::builder(&hub.base)
        .node_key(me.clone())
        .token(hub.token_for(&me))
        .callback("http://127.0.0.1:0")
        .start_legacy(LegacyCipher::new(PASSPHRASE), |request: LegacyIncoming| async move {
            if request.body.get("fail").is_some() {
                return Err(mediator_core::Error::refused(422, "failing", "asked to fail"));
            }
            Ok(json!({"sum": request.body["a"].as_i64().unwrap_or(0) + request.body["b"].as_i64().unwrap_or(0)}))
        })
        .await
        .expect("starts");
    let client =
        LegacyClient::new(&hub.base, SECRET, LegacyCipher::new(PASSPHRASE)).expect("client");
    let reply = client
        .send("rustland", None, "add", &json!({"a": 2, "b": 40}))
        .await
        .expect("answer");
    assert_eq!(reply, json!({"sum": 42}));
    match client
        .send("rustland", None, "add", &json!({"fail": 1}))
        .await
    {
        Err(ClientError::Node {
            status: 409,
            message,
            ..
        }) => {
            assert!(message.contains("asked to fail"), "{message}");
        }
        other => panic!("expected 409, got {other:?}"),
    }
    // The legacy node holds no node key: native calls from it say so.
    match receiver.call(key("any/one"), "/", "x").await {
        Err(ClientError::Core(mediator_core::Error::Sealed(mediator_core::CipherError::Key(
            why,
        )))) => {
            assert!(why.contains("keys"), "{why}");
        }
        other => panic!("expected a key error, got {other:?}"),
    }
    receiver.shutdown().await.expect("shutdown");
    hub.stop().await;
}
