//! The `mediator` binary from the shell: its exit codes, its `--json`
//! output, `check` and `completions`, the platform's `PORT` and
//! `DATABASE_URL`, the operator login's default, and errors that name the
//! address, the file or the setting and what to do.

use std::path::Path;
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
use serde_json::{json, Value};

mod support;

use support::*;

fn stdout_json(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", outcome(out)))
}

/// A node key and a started node `app/good` that answers in capitals.
async fn good_node(dir: &Path, port: u16) -> (String, NodeClient) {
    let key = run(dir, &["keygen"]).trim().to_owned();
    let node = NodeClient::builder(format!("http://127.0.0.1:{port}"))
        .identity("app", Some("good"))
        .token(token_for(dir, "app/good"))
        .keys(KeyRing::new(SealKey::from_base64(&key).unwrap()))
        .callback("http://127.0.0.1:0")
        .start(|request: Incoming| async move {
            Ok(Bytes::from(
                String::from_utf8_lossy(&request.body).to_uppercase(),
            ))
        })
        .await
        .unwrap();
    (key, node)
}

/// Registers `key` with a callback where nothing listens.
async fn dead_node(dir: &Path, port: u16, key: &str) {
    let (group, name) = key.split_once('/').unwrap();
    let registration = json!({
        "group": group,
        "name": name,
        "url": format!("http://127.0.0.1:{}", free_port()),
        "ttl": 600,
    });
    let (status, body) = post(
        &format!("http://127.0.0.1:{port}/register"),
        &token_for(dir, key),
        registration.to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn send_exits_3_on_failed_deliveries_2_on_refusals_1_on_usage() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let hub = Process::start(
        dir.path(),
        &as_strs(&serve_args(port, "memory")),
        "listening",
    );
    let (key, node) = good_node(dir.path(), port).await;
    dead_node(dir.path(), port, "app/dead").await;
    dead_node(dir.path(), port, "lone/dead").await;
    let url = format!("http://127.0.0.1:{port}");
    let send = |to: &str, extra: &[&str]| {
        let mut args = vec![
            "send", "--url", &url, "--key", &key, "--to", to, "--data", "hi",
        ];
        args.extend_from_slice(extra);
        mediator(dir.path(), &args, &[])
    };

    let out = send("app/good", &["--json"]);
    assert_eq!(out.status.code(), Some(0), "{:?}", outcome(&out));
    assert_eq!(
        stdout_json(&out),
        json!({"node": "app/good", "reply": "HI"})
    );
    // A reply that is JSON is embedded as JSON, not as a string of it.
    let out = mediator(
        dir.path(),
        &[
            "send",
            "--url",
            &url,
            "--key",
            &key,
            "--to",
            "app/good",
            "--data",
            r#"{"text": "hi"}"#,
            "--json",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{:?}", outcome(&out));
    assert_eq!(
        stdout_json(&out),
        json!({"node": "app/good", "reply": {"TEXT": "HI"}})
    );

    // A unicast to a node that cannot be reached: a failed delivery.
    let out = send("app/dead", &[]);
    let (code, stderr) = outcome(&out);
    assert_eq!(code, Some(3), "{stderr}");
    assert!(stderr.contains("app/dead"), "{stderr}");

    // A broadcast with one failure: printed, then exit 3 unless partial
    // success is accepted.
    let out = send("app/*", &[]);
    let (code, stderr) = outcome(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(code, Some(3), "{stderr}");
    assert!(
        stdout.contains("app/good: HI") && stdout.contains("app/dead: error"),
        "{stdout}"
    );
    assert!(
        stderr.contains("1 of 2") && stderr.contains("--allow-partial"),
        "{stderr}"
    );
    let out = send("app/*", &["--allow-partial", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{:?}", outcome(&out));
    let sent = stdout_json(&out);
    assert_eq!(sent["summary"]["asked"], 2, "{sent}");
    let replies = sent["replies"].as_array().unwrap();
    assert!(
        replies
            .iter()
            .any(|r| r["node"] == "app/good" && r["reply"] == "HI"),
        "{sent}"
    );
    assert!(
        replies
            .iter()
            .any(|r| r["node"] == "app/dead" && r["error"].is_string()),
        "{sent}"
    );
    // Every node failed: non-zero even with --allow-partial.
    let out = send("lone/*", &["--allow-partial"]);
    assert_eq!(out.status.code(), Some(3), "{:?}", outcome(&out));

    // Refused by the mediator: an unknown node, named with what to do.
    let out = send("app/nobody", &[]);
    let (code, stderr) = outcome(&out);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("no node app/nobody is registered") && stderr.contains("mediator nodes"),
        "{stderr}"
    );
    // One message, over HTTP as over QUIC: not the original's wording the
    // HTTP body keeps for its Node children.
    assert!(!stderr.contains("not found"), "{stderr}");
    let out = send("ghosts/*", &[]);
    let (code, stderr) = outcome(&out);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("no node of group ghosts is registered") && !stderr.contains("not found"),
        "{stderr}"
    );
    // A token signed with another secret: refused, with the address and
    // where the secret comes from, as `nodes` says it.
    std::fs::write(dir.path().join("other.secret"), "x".repeat(40)).unwrap();
    let out = send("app/good", &["--secret-file", "other.secret"]);
    let (code, stderr) = outcome(&out);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(&url)
            && stderr.contains("bad signature")
            && stderr.contains("--secret-file"),
        "{stderr}"
    );
    let out = mediator(
        dir.path(),
        &["nodes", "--url", &url, "--secret-file", "other.secret"],
        &[],
    );
    let (code, stderr) = outcome(&out);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("listing the nodes")
            && stderr.contains("--secret-file")
            && !stderr.contains("/admin/clusters"),
        "{stderr}"
    );
    // A key that is no key: said without the decoder's words.
    let out = mediator(
        dir.path(),
        &[
            "send",
            "--url",
            &url,
            "--key",
            "abcdefghi",
            "--to",
            "app/good",
        ],
        &[],
    );
    let (code, stderr) = outcome(&out);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("--key") && !stderr.contains("Invalid input length"),
        "{stderr}"
    );

    // Usage: a target that is no target, an unknown flag.
    let out = send("a b", &[]);
    let (code, stderr) = outcome(&out);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("--to"), "{stderr}");
    let out = send("app", &[]);
    let (code, stderr) = outcome(&out);
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(
        stderr.matches("group/*").count(),
        1,
        "the forms twice: {stderr}"
    );
    let out = send("app/good", &["--no-such-flag"]);
    assert_eq!(out.status.code(), Some(1), "{:?}", outcome(&out));

    node.shutdown().await.unwrap();
    assert!(hub.terminate().success());
}

#[tokio::test(flavor = "multi_thread")]
async fn errors_name_the_address_and_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    // Nobody listening.
    let nobody = free_port();
    std::fs::write(dir.path().join("mediator.secret"), "s".repeat(40)).unwrap();
    let out = mediator(
        dir.path(),
        &["nodes", "--url", &format!("http://127.0.0.1:{nobody}")],
        &[],
    );
    let (code, stderr) = outcome(&out);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "is `mediator serve` running at http://127.0.0.1:{nobody}?"
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("configuration:"), "{stderr}");
    assert!(!stderr.contains("tcp connect error"), "{stderr}");

    let port = free_port();
    let hub = Process::start(
        dir.path(),
        &as_strs(&serve_args(port, "memory")),
        "listening",
    );
    // https:// against the plain-HTTP listener.
    let out = mediator(
        dir.path(),
        &["nodes", "--url", &format!("https://127.0.0.1:{port}")],
        &[],
    );
    let (code, stderr) = outcome(&out);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "the server at https://127.0.0.1:{port} does not speak TLS; use http://127.0.0.1:{port}"
        )),
        "{stderr}"
    );
    let key = run(dir.path(), &["keygen"]).trim().to_owned();
    let out = mediator(
        dir.path(),
        &[
            "send",
            "--url",
            &format!("https://127.0.0.1:{port}"),
            "--to",
            "a/b",
            "--key",
            &key,
        ],
        &[],
    );
    let (code, stderr) = outcome(&out);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("does not speak TLS"), "{stderr}");

    // A second mediator on the same address.
    let out = mediator(dir.path(), &as_strs(&serve_args(port, "memory")), &[]);
    let (code, stderr) = outcome(&out);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on 127.0.0.1:{port}"))
            && stderr.contains("--listen"),
        "{stderr}"
    );
    // A demo page on a port in use.
    let out = mediator(
        dir.path(),
        &[
            "demo",
            "--store",
            "memory",
            "--listen",
            "127.0.0.1:0",
            "--pages-from",
            &port.to_string(),
        ],
        &[],
    );
    let (code, stderr) = outcome(&out);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on 127.0.0.1:{port}"))
            && stderr.contains("--pages-from"),
        "{stderr}"
    );
    assert!(hub.terminate().success());
}

#[test]
fn every_command_that_prints_data_speaks_json() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("mediator.secret"), "s".repeat(40)).unwrap();
    let out = mediator(dir.path(), &["keygen", "--json"], &[]);
    let key = stdout_json(&out)["key"].as_str().unwrap().to_owned();
    assert!(SealKey::from_base64(&key).is_ok(), "{key}");

    let out = mediator(
        dir.path(),
        &["token", "--node", "g/n", "--scope", "a,b", "--json"],
        &[],
    );
    let token = stdout_json(&out);
    assert_eq!(token["node"], "g/n", "{token}");
    assert_eq!(token["admin"], false, "{token}");
    assert_eq!(token["scope"], json!(["a", "b"]), "{token}");
    let who = mediator_core::Authenticator::hs256("s".repeat(40))
        .authenticate(
            token["token"].as_str().unwrap(),
            mediator_core::Timestamp::now(),
        )
        .unwrap();
    assert!(who.is_node(&"g/n".parse().unwrap()));
    let out = mediator(dir.path(), &["token", "--admin", "--json"], &[]);
    assert_eq!(stdout_json(&out)["admin"], true);

    use std::io::Write;
    let mut child = Command::new(BIN)
        .args(["hash-password", "--json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"pw\n").unwrap();
    let out = child.wait_with_output().unwrap();
    let hash: mediator_core::PasswordHash =
        stdout_json(&out)["hash"].as_str().unwrap().parse().unwrap();
    assert!(hash.verify("pw"));

    let out = mediator(
        dir.path(),
        &[
            "check",
            "--store",
            "memory",
            "--listen",
            "127.0.0.1:0",
            "--json",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{:?}", outcome(&out));
    let report = stdout_json(&out);
    assert_eq!(report["ok"], true, "{report}");
    assert!(
        report["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["item"] == "store" && i["status"] == "note"),
        "{report}"
    );
}

#[test]
fn check_finds_what_would_stop_serve_and_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let check = |args: &[&str], env: &[(&str, &str)]| {
        let mut all = vec!["check"];
        all.extend_from_slice(args);
        mediator(dir.path(), &all, env)
    };
    // Nothing configured: serve would create its secret and its database.
    let out = check(&["--listen", "127.0.0.1:0"], &[]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{stdout} {:?}", outcome(&out));
    assert!(
        stdout.contains("serve would generate a secret")
            && stdout.contains("sqlite:./mediator.db does not exist: serve would create it")
            && stdout.contains("no operator password"),
        "{stdout}"
    );
    assert!(
        !dir.path().join("mediator.secret").exists() && !dir.path().join("mediator.db").exists(),
        "check changed something"
    );

    let problem = |out: &std::process::Output, needle: &str| {
        let stdout = String::from_utf8_lossy(&out.stdout);
        let (code, stderr) = outcome(out);
        assert_eq!(code, Some(1), "{stdout}{stderr}");
        assert!(stderr.contains("check found"), "{stderr}");
        let line = stdout
            .lines()
            .find(|l| l.starts_with("PROBLEM"))
            .unwrap_or_else(|| panic!("no problem line in {stdout}"));
        assert!(line.contains(needle), "{needle:?} not in {line}");
    };
    std::fs::write(dir.path().join("short.secret"), "short").unwrap();
    let out = check(
        &["--secret-file", "short.secret", "--listen", "127.0.0.1:0"],
        &[],
    );
    problem(&out, "at least 32");
    let out = check(
        &[
            "--tls-cert",
            "nowhere.pem",
            "--tls-key",
            "nowhere.key",
            "--listen",
            "127.0.0.1:0",
        ],
        &[],
    );
    problem(&out, "nowhere.pem");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap().to_string();
    let out = check(&["--store", "memory", "--listen", &busy], &[]);
    problem(&out, &busy);
    let out = check(
        &[
            "--store",
            "memory",
            "--listen",
            "127.0.0.1:0",
            "--operator-password-hash",
            "plain",
        ],
        &[],
    );
    problem(&out, "hash-password");
    let out = check(
        &[
            "--store",
            "sqlite:/no/such/folder/m.db",
            "--listen",
            "127.0.0.1:0",
        ],
        &[],
    );
    problem(&out, "/no/such/folder");
    let out = check(
        &[
            "--store",
            &format!("mysql://root@127.0.0.1:{}/test", free_port()),
            "--listen",
            "127.0.0.1:0",
        ],
        &[],
    );
    problem(&out, "mysql://root@127.0.0.1");
    // A network that does not parse: one problem line, the rest checked.
    let out = check(
        &[
            "--store",
            "memory",
            "--listen",
            "127.0.0.1:0",
            "--endpoint-deny",
            "10.0.0.0/99",
        ],
        &[],
    );
    problem(&out, "10.0.0.0/99");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("PROBLEM  endpoints") && stdout.contains("ok       listen"),
        "{stdout}"
    );
    // An address in use names the flag of that listener, and only it.
    let out = check(
        &[
            "--store",
            "memory",
            "--listen",
            "127.0.0.1:0",
            "--console-listen",
            &busy,
        ],
        &[],
    );
    problem(&out, "--console-listen");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("--quic-listen"),
        "{:?}",
        outcome(&out)
    );
    // The settings line says where the secret comes from, as the secret line does.
    let out = check(&["--store", "memory", "--listen", "127.0.0.1:0"], &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("secret=<from ./mediator.secret>") && !stdout.contains("<unset>"),
        "{stdout}"
    );
    // A setting that cannot even be read: a usage error naming it.
    let out = check(&[], &[("MEDIATOR_DEADLINE_MS", "soon")]);
    let (code, stderr) = outcome(&out);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("deadline"), "{stderr}");
}

#[test]
fn completions_come_for_each_shell() {
    let dir = tempfile::tempdir().unwrap();
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = mediator(dir.path(), &["completions", shell], &[]);
        let script = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{shell}: {:?}", outcome(&out));
        assert!(
            script.contains("mediator") && script.contains("hash-password"),
            "{shell}: {script}"
        );
    }
    let out = mediator(dir.path(), &["completions", "tcsh"], &[]);
    let (code, stderr) = outcome(&out);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("bash"), "{stderr}");
}

#[test]
fn port_and_database_url_rank_below_flags_and_above_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let settings = |args: &[&str], env: &[(&str, &str)]| {
        let mut all = vec!["check"];
        all.extend_from_slice(args);
        let out = mediator(dir.path(), &all, env);
        assert_eq!(out.status.code(), Some(0), "{:?}", outcome(&out));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find(|l| l.contains("settings"))
            .unwrap()
            .to_owned()
    };
    let port = free_port().to_string();
    let db = dir.path().join("platform.db");
    let url = format!("sqlite:{}", db.display());
    let platform = [("PORT", port.as_str()), ("DATABASE_URL", url.as_str())];
    let line = settings(&[], &platform);
    assert!(line.contains(&format!("listen=0.0.0.0:{port}")), "{line}");
    assert!(line.contains(&format!("store={url}")), "{line}");
    // Above the TOML file...
    std::fs::write(
        dir.path().join("mediator.toml"),
        "listen = \"127.0.0.1:9\"\nstore = \"memory\"\n",
    )
    .unwrap();
    let line = settings(&[], &platform);
    assert!(line.contains(&format!("listen=0.0.0.0:{port}")), "{line}");
    assert!(line.contains(&format!("store={url}")), "{line}");
    // ...below flags and the MEDIATOR_* variables.
    let other = free_port().to_string();
    let flag = format!("127.0.0.1:{other}");
    let line = settings(&["--listen", &flag, "--store", "memory"], &platform);
    assert!(
        line.contains(&format!("listen={flag}")) && line.contains("store=memory"),
        "{line}"
    );
    let line = settings(
        &[],
        &[
            platform[0],
            platform[1],
            ("MEDIATOR_STORE", "memory"),
            ("MEDIATOR_LISTEN", &flag),
        ],
    );
    assert!(
        line.contains(&format!("listen={flag}")) && line.contains("store=memory"),
        "{line}"
    );
    std::fs::remove_file(dir.path().join("mediator.toml")).unwrap();

    // serve itself: the port and the database the platform gives.
    let mut child = Command::new(BIN)
        .arg("serve")
        .current_dir(dir.path())
        .env("RUST_LOG", "warn")
        .env("PORT", &port)
        .env("DATABASE_URL", &url)
        .env_remove("MEDIATOR_LISTEN")
        .env_remove("MEDIATOR_STORE")
        .env_remove("MEDIATOR_SECRET")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut first,
    )
    .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    // PORT binds every address; the line says so beside the URL to use here.
    assert_eq!(
        first.trim(),
        format!(
            "mediator listening on http://127.0.0.1:{port} (bound to 0.0.0.0:{port}: every \
             address of this machine)"
        )
    );
    assert!(db.exists(), "DATABASE_URL was not used");

    // Bad values name the variable.
    let out = mediator(
        dir.path(),
        &["check"],
        &[("DATABASE_URL", "postgres://db/x")],
    );
    let (code, stderr) = outcome(&out);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("DATABASE_URL"), "{stderr}");
    let out = mediator(dir.path(), &["check"], &[("PORT", "http")]);
    let (code, stderr) = outcome(&out);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("PORT"), "{stderr}");
}

async fn get_token(url: &str, user: &str, password: &str) -> (StatusCode, String) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let request = Request::get(format!("{url}/token"))
        .header("authorization", format!("Basic {basic}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = client.request(request).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_secret_logs_in_only_with_secret_as_password() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("serve.log");
    let port = free_port();
    let mut child = Command::new(BIN)
        .args(as_strs(&serve_args(port, "memory")))
        .current_dir(dir.path())
        .env("RUST_LOG", "warn")
        .env_remove("MEDIATOR_SECRET")
        .env_remove("MEDIATOR_SECRET_AS_PASSWORD")
        .env_remove("MEDIATOR_OPERATOR_PASSWORD_HASH")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(std::time::Instant::now() < deadline, "serve never listened");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let secret = secret_of(dir.path());
    let (status, body) = get_token(&url, "admin", &secret).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(body.contains("no operator password"), "{body}");
    // Admin tokens keep working.
    let listed = run(dir.path(), &["nodes", "--url", &url, "--json"]);
    assert_eq!(listed.trim(), "[]");
    let _ = child.kill();
    let _ = child.wait();
    let logged = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        logged
            .matches("no operator password: set operator_password_hash (mediator hash-password) or secret_as_password")
            .count(),
        1,
        "{logged}"
    );

    // The original's habit, asked for.
    let mut args = serve_args(port, "memory");
    args.push("--secret-as-password".into());
    let hub = Process::start(dir.path(), &as_strs(&args), "listening");
    let (status, body) = get_token(&url, "admin", &secret).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(hub.terminate().success());
}
