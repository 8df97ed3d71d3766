//! The files of `examples/deploy/`: the systemd unit is one systemd accepts
//! and keeps its hardening; the formation's template, env files and script
//! name only flags and variables `mediator serve` takes; nginx accepts the
//! formation's load-balancer config.

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

/// A file of `examples/deploy/`.
fn deploy_file(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

/// The formation's files that configure `mediator serve`.
const FORMATION_FILES: &[&str] = &[
    "formation/mediator@.service",
    "formation/env.example",
    "formation/hub-1.env",
    "formation/hub-2.env",
    "formation/hub-3.env",
    "formation/local.sh",
];

/// `mediator SUBCOMMAND --help`.
fn help(subcommand: &str) -> String {
    let out = Command::new(BIN)
        .args([subcommand, "--help"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{subcommand} --help failed");
    String::from_utf8(out.stdout).unwrap()
}

/// The `MEDIATOR_*` names in `text`.
fn variables(text: &str) -> Vec<String> {
    text.split(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
        .filter(|word| word.starts_with("MEDIATOR_") && word.len() > "MEDIATOR_".len())
        .map(str::to_owned)
        .collect()
}

/// The long flags given to `mediator SUBCOMMAND` in a shell text, its
/// continued lines joined.
fn flags_of(text: &str, subcommand: &str) -> Vec<String> {
    let joined = text.replace("\\\n", " ");
    let mut flags = Vec::new();
    for line in joined.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some(at) = words.windows(2).position(|pair| {
            pair[0].trim_matches('"').ends_with("mediator") && pair[1] == subcommand
        }) else {
            continue;
        };
        for word in &words[at + 2..] {
            if let Some(flag) = word.strip_prefix("--") {
                let name = flag.split('=').next().unwrap_or_default();
                flags.push(format!("--{name}"));
            }
        }
    }
    flags
}

#[test]
fn the_formation_files_name_only_what_serve_accepts() {
    let serve = help("serve");
    let instances = help("instances");
    let mut seen = 0;
    for file in FORMATION_FILES {
        let text = deploy_file(file);
        for name in variables(&text) {
            // The secret itself is read apart from the flags, as documented.
            if name == "MEDIATOR_SECRET" {
                continue;
            }
            assert!(
                serve.contains(&format!("[env: {name}=")),
                "{file} names {name}, which mediator serve does not read"
            );
            seen += 1;
        }
    }
    for file in ["formation/local.sh", "formation/README.md"] {
        let text = deploy_file(file);
        for (subcommand, help) in [("serve", &serve), ("instances", &instances)] {
            for flag in flags_of(&text, subcommand) {
                assert!(
                    help.contains(&format!("{flag} ")),
                    "{file} gives mediator {subcommand} {flag}, which it does not take"
                );
                seen += 1;
            }
        }
    }
    assert!(seen >= 15, "only {seen} names checked");
    // Each instance's own addresses, and its name as its id.
    let unit = deploy_file("formation/mediator@.service");
    for line in [
        "ExecStart=/usr/local/bin/mediator serve",
        "EnvironmentFile=/etc/mediator/env",
        "EnvironmentFile=/etc/mediator/%i.env",
        "Environment=MEDIATOR_INSTANCE_ID=%i",
        "DynamicUser=yes",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "SystemCallFilter=@system-service",
        "KillSignal=SIGTERM",
    ] {
        assert!(unit.contains(line), "{line:?} missing from the template");
    }
}

#[test]
fn the_nginx_upstream_names_the_instances_listeners() {
    let conf = deploy_file("nginx-formation.conf");
    for n in 1..=3 {
        let env = deploy_file(&format!("formation/hub-{n}.env"));
        let listen = env
            .lines()
            .find_map(|line| line.strip_prefix("MEDIATOR_LISTEN="))
            .unwrap_or_else(|| panic!("hub-{n}.env has no MEDIATOR_LISTEN"));
        assert!(
            conf.contains(&format!("server {listen} ")),
            "the upstream misses hub-{n} at {listen}"
        );
        assert!(env.contains(&format!("MEDIATOR_PEER_URL=http://{listen}")));
    }
}

#[test]
fn nginx_accepts_the_formation_config() {
    let Some(nginx) = ["nginx", "/usr/sbin/nginx", "/usr/local/sbin/nginx"]
        .into_iter()
        .find(|candidate| Command::new(candidate).arg("-v").output().is_ok())
    else {
        eprintln!(
            "skipped: nginx is not installed (apt-get install nginx); \
             examples/deploy/nginx-formation.conf was not checked"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let conf = deploy_file("nginx-formation.conf");
    // Its logs and pid where this test may write; everything else as given.
    let scratch = dir.path().display().to_string();
    assert!(conf.contains("/var/log/nginx/") && conf.contains("/run/nginx-mediator.pid"));
    let conf = conf
        .replace("/var/log/nginx/", &format!("{scratch}/"))
        .replace("/run/nginx-mediator.pid", &format!("{scratch}/nginx.pid"));
    let path = dir.path().join("nginx-formation.conf");
    std::fs::write(&path, conf).unwrap();
    let out = Command::new(nginx)
        .arg("-t")
        .arg("-p")
        .arg(dir.path())
        .arg("-e")
        .arg(dir.path().join("error.log"))
        .arg("-c")
        .arg(&path)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "nginx -t: {said}");
    assert!(said.contains("test is successful"), "{said}");
}

#[test]
fn systemd_analyze_verifies_the_formation_template() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!(
            "skipped: systemd-analyze is not installed (apt-get install systemd); \
             the formation's template was not verified"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let text = deploy_file("formation/mediator@.service").replace("/usr/local/bin/mediator", BIN);
    std::fs::write(dir.path().join("mediator@.service"), &text).unwrap();
    let instance = dir.path().join("mediator@hub-1.service");
    std::fs::write(&instance, &text).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", instance.to_str().unwrap()])
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{said}");
    assert!(!said.contains("mediator@"), "{said}");
}
