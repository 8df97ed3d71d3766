//! The built `mediator` binary's settings as a user gives them: every
//! command finds the secret `serve` uses, and odd flag values end in an
//! error message, never a panic.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use mediator_core::{Authenticator, NodeKey, Timestamp};

mod support;

use support::BIN;

const TOML_SECRET: &str = "a secret from mediator.toml, long enough";
const FILE_SECRET: &str = "a secret from the named file, long enough";

/// Runs `mediator args…` in `dir` with no mediator settings in the environment.
fn mediator(dir: &Path, args: &[&str]) -> Output {
    support::mediator(dir, args, &[])
}

/// The token a successful `mediator token` printed.
fn token(output: &Output) -> String {
    assert!(
        output.status.success(),
        "mediator token failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone())
        .unwrap()
        .trim()
        .to_owned()
}

fn signed_with(secret: &str, token: &str) -> bool {
    Authenticator::hs256(secret)
        .authenticate(token, Timestamp::now())
        .is_ok_and(|who| who.is_node(&"g/n".parse::<NodeKey>().unwrap()))
}

#[test]
fn token_signs_with_the_secret_serve_reads_from_the_toml_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("mediator.toml"),
        format!("secret = {TOML_SECRET:?}\n"),
    )
    .unwrap();
    let minted = token(&mediator(dir.path(), &["token", "--node", "g/n"]));
    assert!(signed_with(TOML_SECRET, &minted));
}

#[test]
fn token_reads_the_secret_file_the_toml_file_names() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("elsewhere.secret"), FILE_SECRET).unwrap();
    std::fs::write(
        dir.path().join("mediator.toml"),
        "secret_file = \"elsewhere.secret\"\n",
    )
    .unwrap();
    let minted = token(&mediator(dir.path(), &["token", "--node", "g/n"]));
    assert!(signed_with(FILE_SECRET, &minted));
}

#[test]
fn a_secret_file_flag_beats_the_toml_files_secret() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("named.secret"), FILE_SECRET).unwrap();
    std::fs::write(
        dir.path().join("mediator.toml"),
        format!("secret = {TOML_SECRET:?}\n"),
    )
    .unwrap();
    let minted = token(&mediator(
        dir.path(),
        &["token", "--node", "g/n", "--secret-file", "named.secret"],
    ));
    assert!(signed_with(FILE_SECRET, &minted));
}

#[test]
fn demo_pages_past_the_last_port_are_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .args([
            "demo",
            "--store",
            "memory",
            "--listen",
            "127.0.0.1:0",
            "--pages-from",
            "65535",
        ])
        .current_dir(dir.path())
        .env("RUST_LOG", "warn")
        .env_remove("MEDIATOR_SECRET")
        .env_remove("MEDIATOR_CONFIG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the mediator binary runs");
    // It must give up by itself; a demo that started would run until stopped.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("the demo started with pages past port 65535");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stderr = std::io::read_to_string(child.stderr.take().unwrap()).unwrap();
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("pages-from"), "{stderr}");
}
