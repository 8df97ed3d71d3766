//! `mediator new-node DIR`: writes a ready-to-build node project that uses
//! the client library, as the original offered a scaffold.

use std::path::{Path, PathBuf};

use mediator_core::model::validate_name;

use crate::CliError;

/// The repository the crates come from, for the generated project's git
/// form of its dependencies (the workspace's `repository`).
pub const REPOSITORY: &str = env!("CARGO_PKG_REPOSITORY");

/// The release of the crates the generated project depends on: this
/// binary's own version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The lock file of this workspace, so the new project builds with the very
/// versions this one was tested with (and offline, from the same cache).
const WORKSPACE_LOCK: &str = include_str!("../../Cargo.lock");

/// What to generate.
#[derive(Debug, Clone)]
pub struct Scaffold {
    /// The project folder (must not exist, or be empty).
    pub dir: PathBuf,
    /// The node's group.
    pub group: String,
    /// The node's name.
    pub name: String,
    /// A local checkout holding `mediator-core/`, `transport-http/` and
    /// `transport-quic/`, for path dependencies; `None` for the released
    /// crates (`mediator-core = "0.1.0"`, from the registry).
    pub crates: Option<PathBuf>,
    /// Whether the node attaches over QUIC (dialling out, for a node
    /// without a reachable address) instead of registering an HTTP callback.
    pub quic: bool,
}

impl Scaffold {
    /// Writes the project; returns the files written.
    pub fn write(&self) -> Result<Vec<PathBuf>, CliError> {
        validate_name("group", &self.group)?;
        validate_name("name", &self.name)?;
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| CliError::Io { path, source }
        };
        if self.dir.exists() {
            let mut entries = std::fs::read_dir(&self.dir).map_err(io(&self.dir))?;
            if entries.next().is_some() {
                return Err(CliError::Config(format!(
                    "{} exists and is not empty; pick a new folder",
                    self.dir.display()
                )));
            }
        }
        let crates = match &self.crates {
            Some(given) => {
                let crates = std::fs::canonicalize(given).map_err(io(given))?;
                let transport = if self.quic {
                    "transport-quic"
                } else {
                    "transport-http"
                };
                for needed in ["mediator-core", transport] {
                    if !crates.join(needed).join("Cargo.toml").exists() {
                        return Err(CliError::Config(format!(
                            "--crates {}: holds no {needed}/; give the folder of a Mediator \
                             checkout",
                            crates.display()
                        )));
                    }
                }
                Some(crates)
            }
            None => None,
        };
        let package = package_name(&self.dir);
        let mut files = vec![(
            "Cargo.toml",
            cargo_toml(&package, crates.as_deref(), self.quic),
        )];
        // Against a checkout, the versions that checkout was tested with
        // (and offline, from the same cache); the released crates resolve
        // their own.
        if crates.is_some() {
            files.push(("Cargo.lock", WORKSPACE_LOCK.to_owned()));
        }
        files.extend([
            (
                "src/main.rs",
                if self.quic {
                    main_rs_quic(&self.group, &self.name)
                } else {
                    main_rs(&self.group, &self.name)
                },
            ),
            (".env.example", env_example(self.quic)),
            (
                "README.md",
                readme(&package, &self.group, &self.name, self.quic),
            ),
            (".gitignore", "/target\n.env\n".to_owned()),
        ]);
        let mut written = Vec::new();
        for (relative, text) in files {
            let path = self.dir.join(relative);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(io(parent))?;
            }
            std::fs::write(&path, text).map_err(io(&path))?;
            written.push(path);
        }
        Ok(written)
    }
}

/// A Cargo package name from the folder name.
fn package_name(dir: &Path) -> String {
    let raw = dir.file_name().and_then(|n| n.to_str()).unwrap_or("node");
    let name: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    // Cargo refuses a binary named like one of its build directories.
    let reserved = ["build", "deps", "examples", "incremental"].contains(&name.as_str());
    match name.chars().next() {
        Some(c) if c.is_ascii_alphabetic() && !reserved => name,
        _ => format!("node-{name}"),
    }
}

fn toml_string(path: &Path) -> String {
    path.display()
        .to_string()
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
}

fn cargo_toml(package: &str, crates: Option<&Path>, quic: bool) -> String {
    let (transport, folder) = if quic {
        ("mediator-transport-quic", "transport-quic")
    } else {
        ("mediator-transport-http", "transport-http")
    };
    let mediator = match crates {
        Some(crates) => format!(
            "# From the local checkout `mediator new-node --crates` was given.\n\
             mediator-core = {{ path = \"{core}\" }}\n\
             {transport} = {{ path = \"{path}\" }}\n",
            core = toml_string(&crates.join("mediator-core")),
            path = toml_string(&crates.join(folder)),
        ),
        None => format!(
            "# The released crates. From the repository instead, at the release's tag:\n\
             #   mediator-core = {{ git = \"{REPOSITORY}\", tag = \"v{VERSION}\" }}\n\
             # and from a local checkout `mediator new-node --crates PATH` writes path\n\
             # dependencies.\n\
             mediator-core = \"{VERSION}\"\n\
             {transport} = \"{VERSION}\"\n"
        ),
    };
    format!(
        r#"[package]
name = "{package}"
version = "0.1.0"
edition = "2021"
publish = false

# A project of its own, even when created inside another workspace.
[workspace]

[dependencies]
{mediator}bytes = "1"
tokio = {{ version = "1", features = ["full"] }}
"#
    )
}

/// The few lines a generated node reads its settings with: the
/// environment first, then the project's `.env` (so `cargo run` works with
/// nothing exported, and a variable set in the shell still wins).
const SETTINGS_RS: &str = r#"/// Settings: the environment first, then `.env` in the working directory
/// (`NAME=value` lines; `#` starts a comment; quotes around a value are
/// dropped).
struct Settings(std::collections::HashMap<String, String>);

impl Settings {
    fn load() -> Settings {
        let text = std::fs::read_to_string(".env").unwrap_or_default();
        let file = text
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .filter_map(|line| line.split_once('='))
            .map(|(name, value)| {
                let value = value.trim();
                let unquoted = value
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                    .unwrap_or(value);
                (name.trim().to_owned(), unquoted.to_owned())
            })
            .collect();
        Settings(file)
    }

    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name)
            .ok()
            .or_else(|| self.0.get(name).cloned())
            .filter(|value| !value.is_empty())
    }

    fn required(&self, name: &str) -> Result<String, Box<dyn std::error::Error>> {
        self.get(name)
            .ok_or_else(|| format!("set {name} in .env (see .env.example) or the environment").into())
    }
}
"#;

fn main_rs(group: &str, name: &str) -> String {
    format!(
        r#"//! A Mediator node: registers as `{group}/{name}`, answers every request
//! with what it received, and deregisters on Ctrl-C.
//!
//! Settings come from `.env` (copied from `.env.example`) or the environment.

use std::time::Duration;

use bytes::Bytes;
use mediator_core::{{KeyRing, TokenMinter}};
use mediator_transport_http::client::Incoming;
use mediator_transport_http::NodeClient;

{settings}
#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {{
    let settings = Settings::load();
    // One mediator, or several of one formation, comma-separated: the node
    // registers again at the next when its own stops answering.
    let mediators = settings.required("MEDIATOR_URL")?;
    let mut mediators = mediators.split(',').map(str::trim).filter(|m| !m.is_empty());
    let mut builder = NodeClient::builder(mediators.next().unwrap_or_default());
    for other in mediators {{
        builder = builder.also_at(other);
    }}
    // The mediator secret signs this node's tokens; with a token minted by
    // `mediator token --node {group}/{name}` use `.token(..)` instead.
    let minter = TokenMinter::hs256(settings.required("MEDIATOR_SECRET")?);
    // The node key seals payloads end to end; the mediator never holds it.
    let keys: KeyRing = settings.required("MEDIATOR_NODE_KEY")?.parse()?;
    let callback = settings.get("NODE_CALLBACK").unwrap_or_else(|| "http://127.0.0.1:0".into());

    let node = builder
        .identity("{group}", Some("{name}"))
        .token_minter(minter)
        .keys(keys)
        .callback(callback)
        .ttl(Duration::from_secs(30))
        .start(|request: Incoming| async move {{
            let from = request.from.map(|k| k.to_string()).unwrap_or_else(|| "(unverified)".into());
            println!("{{from}} -> {{}}: {{}} bytes", request.path, request.body.len());
            Ok(Bytes::from(request.body))
        }})
        .await?;
    println!("{group}/{name} registered; its callback is {{}}", node.callback_url().unwrap_or("?"));

    tokio::signal::ctrl_c().await?;
    node.shutdown().await?;
    println!("{group}/{name} deregistered");
    Ok(())
}}
"#,
        settings = SETTINGS_RS
    )
}

/// The node program for `--quic`: it dials the mediator's QUIC listener
/// and stays attached, so it needs no address of its own.
fn main_rs_quic(group: &str, name: &str) -> String {
    format!(
        r#"//! A Mediator node attached over QUIC as `{group}/{name}`: it dials out
//! to the mediator (no port of its own to open), answers every request with
//! what it received, and detaches on Ctrl-C.
//!
//! Settings come from `.env` (copied from `.env.example`) or the environment.

use bytes::Bytes;
use mediator_core::node::Incoming;
use mediator_core::{{KeyRing, TokenMinter}};
use mediator_transport_quic::QuicNodeClient;

{settings}
#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {{
    let settings = Settings::load();
    // One listener, or several of one formation, comma-separated: the node
    // attaches again at the next when its own goes away.
    let listeners = settings.required("MEDIATOR_QUIC")?;
    let mut addrs = Vec::new();
    for listener in listeners.split(',').map(str::trim).filter(|l| !l.is_empty()) {{
        addrs.push(listener.parse::<std::net::SocketAddr>()?);
    }}
    let (&addr, others) = addrs.split_first().ok_or("MEDIATOR_QUIC names no address")?;
    // The fingerprint `mediator serve --quic-listen` prints at start.
    let pin = settings.required("MEDIATOR_QUIC_PIN")?;
    // The mediator secret signs a fresh token at every (re)connection, so
    // an attachment outlives any one token.
    let minter = TokenMinter::hs256(settings.required("MEDIATOR_SECRET")?);
    // The node key seals payloads end to end; the mediator never holds it.
    let keys: KeyRing = settings.required("MEDIATOR_NODE_KEY")?.parse()?;

    let mut builder = QuicNodeClient::builder(addr);
    for &other in others {{
        builder = builder.also_at(other);
    }}
    let node = builder
        .pin(&pin)
        .identity("{group}", Some("{name}"))
        .token_minter(minter)
        .keys(keys)
        .start(|request: Incoming| async move {{
            let from = request.from.map(|k| k.to_string()).unwrap_or_else(|| "(unverified)".into());
            println!("{{from}} -> {{}}: {{}} bytes", request.path, request.body.len());
            Ok(Bytes::from(request.body))
        }})
        .await?;
    println!("{group}/{name} attached over QUIC to {{addr}}");

    tokio::signal::ctrl_c().await?;
    node.shutdown().await;
    Ok(())
}}
"#,
        settings = SETTINGS_RS
    )
}

fn env_example(quic: bool) -> String {
    if quic {
        return "# The mediator's QUIC listener and its certificate fingerprint,\n\
                # both printed by `mediator serve --quic-listen ADDR`.\n\
                MEDIATOR_QUIC=127.0.0.1:4433\n\
                MEDIATOR_QUIC_PIN=\n\
                # The mediator's secret (the content of its mediator.secret file).\n\
                MEDIATOR_SECRET=\n\
                # The node key shared by all nodes: `mediator keygen`.\n\
                MEDIATOR_NODE_KEY=\n"
            .to_owned();
    }
    "MEDIATOR_URL=http://127.0.0.1:8080\n\
     # The mediator's secret (the content of its mediator.secret file).\n\
     MEDIATOR_SECRET=\n\
     # The node key shared by all nodes: `mediator keygen`.\n\
     MEDIATOR_NODE_KEY=\n\
     # Where the mediator calls this node back.\n\
     NODE_CALLBACK=http://127.0.0.1:9000\n"
        .to_owned()
}

fn readme(package: &str, group: &str, name: &str, quic: bool) -> String {
    let how = if quic {
        "attached over QUIC (it dials out, so it needs no reachable address)"
    } else {
        "registered with an HTTP callback"
    };
    let via = if quic {
        "--via quic --quic \"$MEDIATOR_QUIC\" --pin \"$MEDIATOR_QUIC_PIN\" "
    } else {
        ""
    };
    format!(
        "# {package}\n\nA Mediator node {how} as `{group}/{name}`. It answers every request with \
         the payload it received.\n\n```sh\ncp .env.example .env\n\
         # fill in .env: MEDIATOR_SECRET (the mediator's secret) and MEDIATOR_NODE_KEY (`mediator keygen`)\n\
         cargo run\n```\n\nThe node reads `.env` itself; a variable set in the environment wins over it. \
         Call it from the shell through the running mediator, in this folder: the first line reads \
         `.env` into the shell (the mediator's URL, its secret, the node key), then `mediator send` \
         seals `hello` with the node key and calls the node:\n\n\
         ```sh\nset -a; . ./.env; set +a    # this node's settings, MEDIATOR_NODE_KEY among them\n\
         mediator send {via}--to {group}/{name} --key \"$MEDIATOR_NODE_KEY\" --data hello\n```\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_bad_names_and_full_folders() {
        let dir = tempfile::tempdir().unwrap();
        let bad = Scaffold {
            dir: dir.path().join("x"),
            group: "a b".into(),
            name: "n".into(),
            crates: None,
            quic: false,
        };
        assert!(bad.write().unwrap_err().to_string().contains("group"));
        std::fs::write(dir.path().join("file"), "x").unwrap();
        let full = Scaffold {
            dir: dir.path().to_owned(),
            group: "g".into(),
            name: "n".into(),
            crates: None,
            quic: true,
        };
        assert!(full.write().unwrap_err().to_string().contains("not empty"));
    }

    /// Cargo refuses a binary named like its own build directories
    /// ("the binary target name `build` is forbidden").
    #[test]
    fn folders_named_like_cargo_directories_get_a_buildable_name() {
        for dir in ["build", "deps", "examples", "incremental", "/tmp/Build"] {
            let name = package_name(Path::new(dir));
            assert!(name.starts_with("node-"), "{dir}: {name}");
        }
        assert_eq!(package_name(Path::new("builder")), "builder");
    }

    #[test]
    fn package_names_are_valid() {
        assert_eq!(package_name(Path::new("/tmp/My Node")), "my-node");
        assert_eq!(package_name(Path::new("9lives")), "node-9lives");
    }
}
