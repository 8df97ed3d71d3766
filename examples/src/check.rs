//! `mediator check`: validates what `serve` would start with — the
//! settings, the secret, the store, the TLS files, the listening addresses,
//! the endpoint policy, the operator login and the descriptor limit — and
//! says what `serve` would do, without starting it.
//!
//! Nothing is changed: a missing secret file or SQLite file is reported as
//! what `serve` would create, and the store is only opened (an existing
//! SQLite file, a MySQL server) to prove it answers.

use std::net::SocketAddr;
use std::path::Path;

use serde::Serialize;

use crate::config::ServeSettings;
use crate::descriptors::{self, FileLimit, Fitted};
use crate::secret::{open_to_others, Secret, MIN_SECRET_LEN};
use crate::store::{OpenStore, StoreUrl};

/// How one item of a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// As `serve` needs it.
    Ok,
    /// Works, but worth knowing (something would be created, a login is off).
    Note,
    /// Works, but weaker than it should be (a secret others can read, caps
    /// lowered to fit the descriptor limit); `serve` says so too.
    Warn,
    /// `serve` would fail, or run other than configured.
    Problem,
}

/// One checked item: what, how it came out, and the details.
#[derive(Debug, Clone, Serialize)]
pub struct Item {
    /// What was checked (`secret`, `store`, `listen`, ...).
    pub item: &'static str,
    /// How it came out.
    pub status: Status,
    /// What was found, and what to do when it is a problem.
    pub detail: String,
}

/// Everything `check` found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Every item, in the order `serve` meets them.
    pub items: Vec<Item>,
}

impl Report {
    fn add(&mut self, item: &'static str, status: Status, detail: impl Into<String>) {
        self.items.push(Item {
            item,
            status,
            detail: detail.into(),
        });
    }

    /// Marks the endpoint rules as the problem `why` (a network that does
    /// not parse), the rest having been checked without them.
    pub fn endpoint_problem(&mut self, why: impl Into<String>) {
        let why = why.into();
        match self.items.iter_mut().find(|i| i.item == "endpoints") {
            Some(item) => {
                item.status = Status::Problem;
                item.detail = why;
            }
            None => self.add("endpoints", Status::Problem, why),
        }
    }

    /// How many problems were found.
    pub fn problems(&self) -> usize {
        self.items
            .iter()
            .filter(|i| i.status == Status::Problem)
            .count()
    }
}

impl std::fmt::Display for Report {
    /// One line per item: `ok`, `note`, `WARN` or `PROBLEM`, the item, the
    /// details.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for item in &self.items {
            let status = match item.status {
                Status::Ok => "ok",
                Status::Note => "note",
                Status::Warn => "WARN",
                Status::Problem => "PROBLEM",
            };
            writeln!(f, "{status:<8} {:<10} {}", item.item, item.detail)?;
        }
        Ok(())
    }
}

/// Checks everything `serve` would start with `settings`.
pub async fn check(settings: &ServeSettings) -> Report {
    let mut report = Report::default();
    report.add("settings", Status::Ok, settings.describe());
    check_secret(settings, &mut report);
    check_operator_login(settings, &mut report);
    check_store(&settings.store, &mut report).await;
    check_tls(settings, &mut report);
    check_listen(settings, &mut report);
    check_descriptors(settings, &mut report);
    let deny = if settings.endpoint_deny.is_empty() {
        "none beside the built-in ones".to_owned()
    } else {
        settings.endpoint_deny.join(", ")
    };
    let allow = if settings.endpoint_allow.is_empty() {
        "any other network".to_owned()
    } else {
        settings.endpoint_allow.join(", ")
    };
    report.add(
        "endpoints",
        Status::Ok,
        format!(
            "node callbacks refused in link-local networks (in every IPv6 spelling) and at the \
             mediator's own addresses; denied: {deny}; allowed: {allow}"
        ),
    );
    report
}

fn check_secret(settings: &ServeSettings, report: &mut Report) {
    let file = &settings.secret_file;
    if settings.secret.as_deref().is_some_and(|s| !s.is_empty()) {
        match Secret::resolve(settings.secret.clone(), file, false) {
            Ok(_) => report.add(
                "secret",
                Status::Ok,
                "from MEDIATOR_SECRET or the TOML file's `secret`",
            ),
            Err(e) => report.add("secret", Status::Problem, e.to_string()),
        }
        return;
    }
    match std::fs::metadata(file) {
        Ok(_) => match Secret::resolve(None, file, false) {
            Ok(_) => match open_to_others(file) {
                Some(why) => report.add("secret", Status::Warn, why),
                None => report.add(
                    "secret",
                    Status::Ok,
                    format!("read from {}", file.display()),
                ),
            },
            Err(e) => report.add(
                "secret",
                Status::Problem,
                format!(
                    "{}: {e}; write a secret of at least {MIN_SECRET_LEN} characters there, or delete it to have one generated",
                    file.display()
                ),
            ),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            match writable_folder(file) {
                Ok(()) => report.add(
                    "secret",
                    Status::Note,
                    format!(
                        "{} does not exist: serve would generate a secret there (mode 0600)",
                        file.display()
                    ),
                ),
                Err(why) => report.add(
                    "secret",
                    Status::Problem,
                    format!(
                        "{} does not exist and cannot be created ({why}); set MEDIATOR_SECRET or --secret-file",
                        file.display()
                    ),
                ),
            }
        }
        Err(e) => report.add(
            "secret",
            Status::Problem,
            format!("{}: {e}", file.display()),
        ),
    }
}

fn check_operator_login(settings: &ServeSettings, report: &mut Report) {
    let secret_allowed = settings.secret_as_password == Some(true);
    match &settings.operator_password_hash {
        Some(text) => match text.parse::<mediator_core::PasswordHash>() {
            Ok(_) => report.add(
                "login",
                Status::Ok,
                if secret_allowed {
                    "Basic admin login: the operator password, and the secret (secret_as_password)"
                } else {
                    "Basic admin login: the operator password"
                },
            ),
            Err(e) => report.add(
                "login",
                Status::Problem,
                format!("operator_password_hash: {e}; make one with `mediator hash-password`"),
            ),
        },
        None if secret_allowed => report.add(
            "login",
            Status::Note,
            "Basic admin login: the signing secret is the password (secret_as_password), as in the original",
        ),
        None => report.add(
            "login",
            Status::Note,
            "Basic admin login refused (no operator password: set operator_password_hash \
             (mediator hash-password) or secret_as_password); admin tokens work",
        ),
    }
}

async fn check_store(store: &StoreUrl, report: &mut Report) {
    match store {
        StoreUrl::Memory => report.add(
            "store",
            Status::Note,
            "memory: registrations are lost when the mediator stops",
        ),
        StoreUrl::Sqlite(path) if !Path::new(path).exists() => {
            match writable_folder(Path::new(path)) {
                Ok(()) => report.add(
                    "store",
                    Status::Note,
                    format!("sqlite:{path} does not exist: serve would create it"),
                ),
                Err(why) => report.add(
                    "store",
                    Status::Problem,
                    format!("sqlite:{path} does not exist and cannot be created ({why})"),
                ),
            }
        }
        StoreUrl::Sqlite(_) | StoreUrl::Mysql(_) => match OpenStore::open(store).await {
            Ok(opened) => {
                let nodes = opened.registry().list(None).await;
                let closed = opened.close().await;
                match (nodes, closed) {
                    // The settings line names the URL already.
                    (Ok(nodes), Ok(())) => report.add(
                        "store",
                        Status::Ok,
                        format!(
                            "{} opens; {} node(s) registered",
                            match store {
                                StoreUrl::Mysql(_) => "the MySQL database",
                                _ => "the SQLite file",
                            },
                            nodes.len()
                        ),
                    ),
                    (Err(e), _) => report.add(
                        "store",
                        Status::Problem,
                        format!("{store} opens but cannot be read: {e}"),
                    ),
                    (_, Err(e)) => report.add("store", Status::Problem, format!("{store}: {e}")),
                }
            }
            Err(e) => report.add("store", Status::Problem, format!("{store}: {e}")),
        },
    }
}

fn check_tls(settings: &ServeSettings, report: &mut Report) {
    match &settings.tls {
        None => report.add(
            "tls",
            Status::Ok,
            "off: clear-text HTTP (the original's Node senders need https)",
        ),
        Some((cert, key)) => match mediator_transport_http::TlsConfig::from_pem_files(cert, key) {
            Ok(_) => match open_to_others(key) {
                Some(why) => report.add("tls", Status::Warn, format!("private key {why}")),
                None => report.add(
                    "tls",
                    Status::Ok,
                    format!("HTTPS with {} and {}", cert.display(), key.display()),
                ),
            },
            Err(e) => report.add("tls", Status::Problem, e.to_string()),
        },
    }
}

/// The settings that name the HTTP listener's address.
const LISTEN_FLAG: &str = "--listen (MEDIATOR_LISTEN, PORT)";

fn check_listen(settings: &ServeSettings, report: &mut Report) {
    let scheme = if settings.tls.is_some() {
        "https"
    } else {
        "http"
    };
    match std::net::TcpListener::bind(settings.listen) {
        Ok(_) => report.add(
            "listen",
            Status::Ok,
            format!(
                "{} is free: serve would answer at {scheme}://{}",
                settings.listen,
                shown(settings.listen)
            ),
        ),
        Err(e) => report.add(
            "listen",
            Status::Problem,
            format!(
                "{}: {}",
                settings.listen,
                crate::exit::explain_bind(&e, LISTEN_FLAG)
            ),
        ),
    }
    if let Some(addr) = settings.console_listen {
        match std::net::TcpListener::bind(addr) {
            Ok(_) => report.add(
                "console",
                Status::Ok,
                format!(
                    "{addr} is free: serve would show the console at {scheme}://{}/",
                    shown(addr)
                ),
            ),
            Err(e) => report.add(
                "console",
                Status::Problem,
                format!(
                    "{addr}: {}",
                    crate::exit::explain_bind(&e, "--console-listen")
                ),
            ),
        }
    }
    if let Some(addr) = settings.quic_listen {
        match std::net::UdpSocket::bind(addr) {
            Ok(_) => report.add(
                "quic",
                Status::Ok,
                format!("UDP {addr} is free: serve would attach QUIC nodes there"),
            ),
            Err(e) => report.add(
                "quic",
                Status::Problem,
                format!(
                    "UDP {addr}: {}",
                    crate::exit::explain_bind(&e, "--quic-listen")
                ),
            ),
        }
    }
}

/// Whether the descriptor limit `serve` would run under holds what its
/// caps need. The limit is raised here as `serve` raises it (for this
/// process only), so the one judged is the one `serve` would get.
fn check_descriptors(settings: &ServeSettings, report: &mut Report) {
    let Some((limit, failure)) = FileLimit::raise() else {
        return;
    };
    let Some(soft) = limit.soft else {
        report.add("files", Status::Ok, "no limit on open descriptors");
        return;
    };
    let caps = descriptors::caps(settings);
    let fitted = descriptors::fit(soft, caps);
    let status = match fitted {
        Fitted::Fits { .. } => Status::Ok,
        Fitted::Lowered { .. } => Status::Warn,
        Fitted::Short { .. } => Status::Problem,
    };
    let mut detail = match descriptors::explain(soft, caps, fitted) {
        Some(why) => format!("serve would find that {why}"),
        None => format!(
            "limit {soft} open descriptors: room for max_connections {} and max_in_flight {} \
             with {} to spare",
            caps.max_connections,
            caps.max_in_flight,
            descriptors::RESERVED
        ),
    };
    if let Some(failure) = failure {
        detail.push_str(&format!(" (the soft limit stays: {failure})"));
    }
    report.add("files", status, detail);
}

fn shown(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], addr.port()))
    } else {
        addr
    }
}

/// Whether a file could be created at `path`: its folder exists and is not
/// read-only.
fn writable_folder(path: &Path) -> Result<(), String> {
    let folder = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    match std::fs::metadata(folder) {
        Ok(meta) if !meta.is_dir() => Err(format!("{} is not a folder", folder.display())),
        Ok(meta) if meta.permissions().readonly() => {
            Err(format!("{} is read-only", folder.display()))
        }
        Ok(_) => Ok(()),
        Err(e) => Err(format!("{}: {e}", folder.display())),
    }
}
