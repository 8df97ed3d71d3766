//! The systemd unit in `examples/deploy/` is one systemd accepts, and keeps
//! its hardening.

use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_mediator");

fn unit() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/mediator.service"))
        .unwrap()
}

#[test]
fn the_systemd_unit_is_hardened() {
    let unit = unit();
    for line in [
        "ExecStart=/usr/local/bin/mediator serve",
        "ExecStartPre=/usr/local/bin/mediator check",
        "EnvironmentFile=/etc/mediator/env",
        "DynamicUser=yes",
        "StateDirectory=mediator",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=\n",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "SystemCallFilter=@system-service",
        "LimitNOFILE=",
        "KillSignal=SIGTERM",
    ] {
        assert!(unit.contains(line), "{line:?} missing from the unit");
    }
}

#[test]
fn systemd_analyze_verifies_the_unit() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!(
            "skipped: systemd-analyze is not installed (apt-get install systemd); \
             the unit was not verified"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let verify = |text: String| {
        // The unit names the installed binary; verify against the built one.
        let path = dir.path().join("mediator.service");
        std::fs::write(&path, text).unwrap();
        Command::new("systemd-analyze")
            .args(["verify", path.to_str().unwrap()])
            .output()
            .unwrap()
    };
    let out = verify(unit().replace("/usr/local/bin/mediator", BIN));
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{said}");
    // Unknown keys and bad values are only warned about: none may appear.
    assert!(!said.contains("mediator.service"), "{said}");
    // The check can fail: a binary that is not there.
    let out = verify(unit().replace("/usr/local/bin/mediator", "/nonexistent/mediator"));
    assert!(!out.status.success());
}
