//! `mediator echo-node` from the shell: an echo node over HTTP and one
//! attached over QUIC answer `send`, each in both directions of the
//! formation, and leave on SIGINT / SIGTERM with exit code 0, after which
//! the mediator no longer knows them.

use std::process::Command;
use std::time::Duration;

mod support;

use support::*;

/// `mediator send …` in `dir`: its exit code and trimmed stdout and stderr.
fn send(dir: &std::path::Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(bin())
        .arg("send")
        .args(args)
        .current_dir(dir)
        .env_remove("MEDIATOR_SECRET")
        .output()
        .expect("send ran");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        String::from_utf8_lossy(&out.stderr).trim().to_owned(),
    )
}

#[test]
fn echo_nodes_over_http_and_quic_answer_send_and_leave_on_a_signal() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let port = free_port();
    let mut args = serve_args(port, "memory");
    args.extend(["--quic-listen".into(), "127.0.0.1:0".into()]);
    let hub = Process::start(dir.path(), &as_strs(&args), "QUIC listening");
    let (quic, pin) = quic_line(&hub);
    let url = format!("http://127.0.0.1:{port}");
    let key = run(dir.path(), &["keygen"]).trim().to_owned();

    let over_http = Process::start(
        dir.path(),
        &[
            "echo-node",
            "--url",
            &url,
            "--as",
            "echo/http",
            "--key",
            &key,
        ],
        "registered",
    );
    let over_quic = Process::start(
        dir.path(),
        &[
            "echo-node",
            "--via",
            "quic",
            "--quic",
            &quic,
            "--pin",
            &pin,
            "--as",
            "echo/quic",
            "--key",
            &key,
        ],
        "attached",
    );

    // Each echo node answered through either way in.
    for to in ["echo/http", "echo/quic"] {
        let (code, out, err) = send(
            dir.path(),
            &["--url", &url, "--to", to, "--key", &key, "--data", "ping"],
        );
        assert_eq!(
            (code, out.as_str()),
            (Some(0), "ping"),
            "{to} over HTTP: {err}"
        );
        let (code, out, err) = send(
            dir.path(),
            &[
                "--via", "quic", "--quic", &quic, "--pin", &pin, "--to", to, "--key", &key,
                "--data", "pong",
            ],
        );
        assert_eq!(
            (code, out.as_str()),
            (Some(0), "pong"),
            "{to} over QUIC: {err}"
        );
    }
    let (code, out, err) = send(
        dir.path(),
        &[
            "--url", &url, "--to", "echo/*", "--key", &key, "--data", "all",
        ],
    );
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(
        out.contains("echo/http: all") && out.contains("echo/quic: all"),
        "{out}"
    );

    // Ctrl-C leaves the HTTP node's registration behind it; SIGTERM the
    // QUIC node's attachment.
    let mut over_http = over_http;
    over_http.signal("INT");
    let status = over_http.wait_exit(Duration::from_secs(20));
    assert_eq!(status.code(), Some(0), "{:?}", over_http.output());
    assert!(
        over_http.output().iter().any(|l| l.contains("left")),
        "{:?}",
        over_http.output()
    );
    let status = over_quic.terminate();
    assert_eq!(status.code(), Some(0));
    for to in ["echo/http", "echo/quic"] {
        let (code, _, err) = send(
            dir.path(),
            &["--url", &url, "--to", to, "--key", &key, "--data", "gone?"],
        );
        assert_ne!(code, Some(0), "{to} still answered after leaving");
        assert!(err.contains(to), "{to}: {err}");
    }
    drop(hub);
}

#[test]
fn an_echo_node_without_a_reachable_mediator_says_where_it_looked() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let key = run(dir.path(), &["keygen"]).trim().to_owned();
    let secret = dir.path().join("mediator.secret");
    std::fs::write(&secret, "a secret of at least 32 bytes, for this test").expect("written");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).expect("private");
    }
    let url = format!("http://127.0.0.1:{}", free_port());
    let out = Command::new(bin())
        .args([
            "echo-node",
            "--url",
            &url,
            "--as",
            "echo/lost",
            "--key",
            &key,
        ])
        .current_dir(dir.path())
        .env_remove("MEDIATOR_SECRET")
        .output()
        .expect("ran");
    let err = String::from_utf8_lossy(&out.stderr);
    // 2: the mediator could not be reached.
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(&url), "{err}");
}

#[test]
fn send_and_echo_node_take_several_mediators_and_use_the_one_that_answers() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let port = free_port();
    let mut args = serve_args(port, "memory");
    args.extend(["--quic-listen".into(), "127.0.0.1:0".into()]);
    let hub = Process::start(dir.path(), &as_strs(&args), "QUIC listening");
    let (quic, pin) = quic_line(&hub);
    // The first of each list has nothing listening.
    let urls = format!("http://127.0.0.1:{},http://127.0.0.1:{port}", free_port());
    let dead_udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("a free port");
    let quics = format!("{},{quic}", dead_udp.local_addr().expect("address"));
    drop(dead_udp);
    let key = run(dir.path(), &["keygen"]).trim().to_owned();

    let node = Process::start(
        dir.path(),
        &[
            "echo-node",
            "--url",
            &urls,
            "--as",
            "echo/either",
            "--key",
            &key,
        ],
        "registered",
    );
    let (code, out, err) = send(
        dir.path(),
        &[
            "--url",
            &urls,
            "--to",
            "echo/either",
            "--key",
            &key,
            "--data",
            "over http",
        ],
    );
    assert_eq!((code, out.as_str()), (Some(0), "over http"), "{err}");
    let (code, out, err) = send(
        dir.path(),
        &[
            "--via",
            "quic",
            "--quic",
            &quics,
            "--pin",
            &pin,
            "--to",
            "echo/either",
            "--key",
            &key,
            "--data",
            "over quic",
        ],
    );
    assert_eq!((code, out.as_str()), (Some(0), "over quic"), "{err}");
    // A name stands for every address it resolves to.
    let port_of_quic = quic.rsplit(':').next().expect("a port");
    let (code, out, err) = send(
        dir.path(),
        &[
            "--via",
            "quic",
            "--quic",
            &format!("localhost:{port_of_quic}"),
            "--pin",
            &pin,
            "--to",
            "echo/either",
            "--key",
            &key,
            "--data",
            "by name",
        ],
    );
    assert_eq!((code, out.as_str()), (Some(0), "by name"), "{err}");
    let (code, _, err) = send(
        dir.path(),
        &[
            "--via",
            "quic",
            "--quic",
            "no-such-host.invalid:4433",
            "--pin",
            &pin,
            "--to",
            "echo/either",
            "--key",
            &key,
        ],
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("no-such-host.invalid"), "{err}");
    assert_eq!(node.terminate().code(), Some(0));
    drop(hub);
}
