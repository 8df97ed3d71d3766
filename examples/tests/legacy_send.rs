//! `mediator send --legacy-passphrase` from the shell to one of the
//! original's Node children (`tests/tests/legacy_js/child.js`), through a
//! running `mediator serve` that accepts the original's tokens.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::{json, Value};

mod support;

use support::*;

const PASSPHRASE: &str = "the PROTECTED_AES256 of this formation";

/// Kills the Node child if the test ends early.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn send_speaks_the_originals_cipher_to_its_node_child() {
    if Command::new("node").arg("--version").output().is_err() {
        // .ci/run installs Node.js; a developer machine may lack it.
        eprintln!("skipped: `node` is not installed (apt-get install nodejs)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut args = serve_args(port, "memory");
    args.push("--allow-tokens-without-sub".into());
    let hub = Process::start(dir.path(), &as_strs(&args), "listening");
    let url = format!("http://127.0.0.1:{port}");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/tests/legacy_js/child.js");
    let mut child = Child(
        Command::new("node")
            .arg(&script)
            .args([&url, &secret_of(dir.path()), PASSPHRASE, "jsland", "child"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let mut ready = String::new();
    BufReader::new(child.0.stdout.take().unwrap())
        .read_line(&mut ready)
        .unwrap();
    let ready: Value = serde_json::from_str(&ready).unwrap();
    assert_eq!(ready["status"], 200, "{ready}");

    let send = |extra: &[&str]| {
        let mut all = vec![
            "send",
            "--url",
            &url,
            "--to",
            "jsland/child",
            "--path",
            "/echo?x=1",
        ];
        all.extend_from_slice(extra);
        mediator(dir.path(), &all, &[])
    };
    let out = send(&[
        "--legacy-passphrase",
        PASSPHRASE,
        "--data",
        r#"{"n":1,"text":"héllo"}"#,
    ]);
    assert_eq!(out.status.code(), Some(0), "{:?}", outcome(&out));
    let reply: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(reply["echoed"], json!({"n": 1, "text": "héllo"}), "{reply}");
    assert_eq!(reply["by"], "node.js child");
    assert_eq!(reply["url"], "/echo?x=1");
    assert_eq!(reply["fromCluster"], "cli");
    assert_eq!(reply["fromNode"], "send");
    // Plain text goes as a JSON string; --json wraps the reply with its node.
    let out = send(&[
        "--legacy-passphrase",
        PASSPHRASE,
        "--data",
        "plain words",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{:?}", outcome(&out));
    let sent: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(sent["node"], "jsland/child");
    assert_eq!(sent["reply"]["echoed"], "plain words");

    // Another passphrase: the child refuses with the original's 409, a
    // failed delivery.
    let out = send(&["--legacy-passphrase", "another passphrase", "--data", "{}"]);
    let (code, stderr) = outcome(&out);
    assert_eq!(code, Some(3), "{stderr}");
    assert!(
        stderr.contains("409") && stderr.contains("cannot decrypt"),
        "{stderr}"
    );
    // The original's cipher speaks to one node only.
    let out = mediator(
        dir.path(),
        &[
            "send",
            "--url",
            &url,
            "--to",
            "jsland/*",
            "--legacy-passphrase",
            PASSPHRASE,
        ],
        &[],
    );
    let (code, stderr) = outcome(&out);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("one node"), "{stderr}");

    drop(child.0.stdin.take());
    assert!(hub.terminate().success());
}
