//! `mediator`: run a mediator, mint tokens and keys, inspect and call a
//! running one, scaffold a node, or start the demo formation.
//!
//! Exit codes: 0 done, 1 usage or configuration, 2 the mediator cannot be
//! reached or refused, 3 a delivery failed (see `mediator_examples::exit`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use clap::{CommandFactory, Parser, Subcommand};
use mediator_core::cipher::legacy::LegacyCipher;
use mediator_core::formation::PeerKey;
use mediator_core::node::ClientError;
use mediator_core::router::Summary;
use mediator_core::{
    Authenticator, Claims, KeyRing, Mediator, NodeKey, SealKey, Target, Timestamp, TokenMinter,
};
use mediator_examples::config::{
    apply_platform_env, secret_location, FileConfig, ServeFlags, ServeSettings,
};
use mediator_examples::demo::{self, Role};
use mediator_examples::descriptors::{self, FileLimit};
use mediator_examples::exit;
use mediator_examples::listing::{human_seconds, Listed};
use mediator_examples::logs::{self, LogFormat};
use mediator_examples::scaffold::Scaffold;
use mediator_examples::secret::{open_to_others, Secret, SecretSource};
use mediator_examples::store::{OpenStore, StoreUrl};
use mediator_examples::CliError;
use mediator_transport_http::client::legacy::LegacyClient;
use mediator_transport_http::{
    HttpDelivery, HttpError, HttpListener, HttpPeerLink, MediatorService, NodeClient, TlsConfig,
};
use mediator_transport_quic::{QuicError, QuicListener, QuicNodeClient, ServerTls};
use serde_json::{json, Value};

/// Requests allocate many small, short-lived buffers on every worker
/// thread; mimalloc's per-thread free lists serve them without the global
/// allocator's locking (see docs/benchmarks.md for what it bought).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "mediator",
    version,
    about = "A hub through which services talk to each other by name.",
    after_help = "Exit codes: 0 done; 1 usage or configuration; 2 the mediator cannot be reached \
                  or refused; 3 a delivery failed (a node failed, timed out or its reply did not \
                  open; for send to group/*, any node unless --allow-partial)."
)]
struct Cli {
    /// A TOML configuration file [default: ./mediator.toml when present].
    #[arg(long, global = true, env = "MEDIATOR_CONFIG")]
    config: Option<PathBuf>,
    /// Log lines as text or json (one object per line) [default: text].
    #[arg(long, global = true, env = "MEDIATOR_LOG_FORMAT")]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the mediator (HTTP API; SQLite store by default).
    Serve(ServeFlags),
    /// Run a mediator with four demo nodes, their pages and the console, to try it out.
    #[command(
        long_about = "Run a mediator with four demo nodes, their pages and the console, to try it out.\n\n\
            Beside what `serve` starts (the HTTP API on --listen, the store, the secret), the demo \
            turns on:\n\
            - demo/passive, demo/sender and demo/standalone: HTTP nodes, each with a page on \
            127.0.0.1 from --pages-from (8081, 8082, 8083). From the sender's page send to \
            demo/passive (one node), demo/* (every node) or demo/? (any one node), and watch \
            it arrive on the receivers' pages;\n\
            - demo/quic: a node attached over QUIC (a QUIC listener on --quic-listen, any free \
            port unless given). Send to it from the sender's page; at the path /relay it calls \
            demo/passive over HTTP in turn;\n\
            - the operator's console on 127.0.0.1:8090 (or --console-listen), with a password \
            made for the run and printed at start.\n\n\
            It prints the pages, the console and a node key for `mediator send`. Ctrl-C \
            deregisters the nodes and stops.",
        after_help = "Every option is `serve`'s; `mediator serve --help` says more of each."
    )]
    Demo {
        #[command(flatten)]
        serve: ServeFlags,
        /// Port of the first demo page; the others take the next ones.
        #[arg(long, default_value_t = 8081)]
        pages_from: u16,
        /// Other mediators of this one's formation (instances on the same
        /// store), comma-separated URLs: the HTTP demo nodes register again
        /// at the next when this one stops answering.
        #[arg(long, value_delimiter = ',', value_name = "URL")]
        also_at: Vec<String>,
    },
    /// Check the configuration, secret, store, TLS files, addresses and
    /// endpoint policy `serve` would use, and say what it would do.
    Check {
        #[command(flatten)]
        serve: ServeFlags,
        /// Print JSON instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// Print a completion script for SHELL (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell to complete in.
        shell: clap_complete::Shell,
    },
    /// Print a new node key (base64), for sealing payloads end to end.
    Keygen {
        /// Print JSON (`{"key"}`) instead of the bare key.
        #[arg(long)]
        json: bool,
    },
    /// Read an operator password from standard input and print its Argon2
    /// hash, for `operator_password_hash` (MEDIATOR_OPERATOR_PASSWORD_HASH).
    HashPassword {
        /// Print JSON (`{"hash"}`) instead of the bare hash.
        #[arg(long)]
        json: bool,
    },
    /// Mint a token signed with the mediator secret.
    Token {
        /// The node the token is for, as group/name (group/ for the unnamed node).
        #[arg(long, required_unless_present = "admin")]
        node: Option<NodeKey>,
        /// An admin token (lists nodes, admin routes).
        #[arg(long)]
        admin: bool,
        /// Groups the node may call, comma-separated [default: any].
        #[arg(long, value_delimiter = ',')]
        scope: Vec<String>,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 9 * 3600)]
        ttl_s: u64,
        /// Print JSON (`{"token", "node", "admin", "scope", "expires"}`) instead of the bare token.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        secret: SecretArgs,
    },
    /// List the nodes a running mediator has registered.
    Nodes {
        /// The mediator's URL.
        #[arg(long, env = "MEDIATOR_URL", default_value = "http://127.0.0.1:8080")]
        url: String,
        /// Only this group.
        #[arg(long)]
        group: Option<String>,
        /// Print JSON (an array of `{"id", "group", "name", "node", "url",
        /// "lease_until", "lease_left_s", "created", "updated"}`) instead of a table.
        #[arg(long)]
        json: bool,
        /// An admin token; minted from the secret when absent.
        #[arg(long, env = "MEDIATOR_TOKEN")]
        token: Option<String>,
        #[command(flatten)]
        secret: SecretArgs,
    },
    /// List the instances of the formation a running mediator is in (the
    /// mediators sharing its store).
    Instances {
        /// The mediator's URL.
        #[arg(long, env = "MEDIATOR_URL", default_value = "http://127.0.0.1:8080")]
        url: String,
        /// Print JSON (an array of `{"id", "peer", "started", "heartbeat",
        /// "lease_until", "live", "attached", "this"}`) instead of a table.
        #[arg(long)]
        json: bool,
        /// An admin token; minted from the secret when absent.
        #[arg(long, env = "MEDIATOR_TOKEN")]
        token: Option<String>,
        #[command(flatten)]
        secret: SecretArgs,
    },
    /// Call a node through a running mediator, sealing with the node key.
    Send {
        /// The mediator's URL; several of one formation, comma-separated,
        /// are tried in turn.
        #[arg(long, env = "MEDIATOR_URL", default_value = "http://127.0.0.1:8080")]
        url: String,
        /// Whom to send to: group/name, group/ (unnamed), group/* (every node) or group/? (any node).
        #[arg(long)]
        to: String,
        /// Who sends, as group/name; the token is minted for it.
        #[arg(long = "as", default_value = "cli/send")]
        sender: NodeKey,
        /// The path at the node.
        #[arg(long, default_value = "/")]
        path: String,
        /// The payload.
        #[arg(long, default_value = "")]
        data: String,
        /// The node key (base64; several comma-separated, newest first).
        #[arg(
            long,
            env = "MEDIATOR_NODE_KEY",
            required_unless_present = "legacy_passphrase"
        )]
        key: Option<String>,
        /// Speak the original's cipher (AES-256-CBC, its PROTECTED_AES256
        /// passphrase) to one of the original's Node children; the data is
        /// sent as JSON (a plain string when it is not JSON). Insecure: for
        /// compatibility only.
        #[arg(
            long,
            env = "MEDIATOR_LEGACY_PASSPHRASE",
            conflicts_with = "key",
            hide_env_values = true
        )]
        legacy_passphrase: Option<String>,
        /// Exit 0 from a broadcast (group/*) where some nodes failed, as long
        /// as one answered.
        #[arg(long)]
        allow_partial: bool,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Which transport to send through.
        #[arg(long, value_enum, default_value_t = Via::Http)]
        via: Via,
        #[command(flatten)]
        quic: QuicArgs,
        #[command(flatten)]
        secret: SecretArgs,
    },
    /// Run a small echo node: it registers (over HTTP, called back on
    /// --listen) or attaches (--via quic), answers every sealed call with
    /// the payload it received, and leaves cleanly on Ctrl-C or SIGTERM.
    /// For checking a mediator, or several, from the shell.
    EchoNode {
        /// The mediator's URL; several of one formation, comma-separated,
        /// to register again at the next when one stops answering.
        #[arg(long, env = "MEDIATOR_URL", default_value = "http://127.0.0.1:8080")]
        url: String,
        /// The node, as group/name; its tokens are minted for it.
        #[arg(long = "as")]
        node: NodeKey,
        /// The node key (base64; several comma-separated, newest first).
        #[arg(long, env = "MEDIATOR_NODE_KEY")]
        key: String,
        /// Where the node's callback server listens (over HTTP).
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// Which transport to be reached through.
        #[arg(long, value_enum, default_value_t = Via::Http)]
        via: Via,
        #[command(flatten)]
        quic: QuicArgs,
        #[command(flatten)]
        secret: SecretArgs,
    },
    /// Write a ready-to-build node project into DIR.
    NewNode {
        /// The folder to create.
        dir: PathBuf,
        /// The node's group.
        #[arg(long, default_value = "app")]
        group: String,
        /// The node's name.
        #[arg(long, default_value = "worker")]
        name: String,
        /// A local Mediator checkout: the project uses its crates by path
        /// [default: the released crates, `mediator-core = "VERSION"`].
        #[arg(long, env = "MEDIATOR_CRATES")]
        crates: Option<PathBuf>,
        /// Attach over QUIC (the node dials out; no callback address needed).
        #[arg(long)]
        quic: bool,
    },
    /// Import the original project's `clusters` table into a store.
    ImportClusters {
        /// The original's MySQL database, as mysql://user:pw@host:port/db.
        #[arg(long)]
        from: String,
        /// The original's table.
        #[arg(long, default_value = "clusters")]
        table: String,
        /// The store to import into.
        #[arg(long, env = "MEDIATOR_STORE", default_value = mediator_examples::store::DEFAULT_STORE)]
        store: String,
        /// Lease of imported registrations, in seconds (until the nodes register themselves).
        #[arg(long, default_value_t = 3900)]
        ttl_s: u64,
        /// Print JSON (`{"imported": [..], "skipped": [..]}`) instead of lines.
        #[arg(long)]
        json: bool,
    },
}

/// The transports `send` can go through.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Via {
    /// The HTTP API at --url.
    Http,
    /// The QUIC listener at --quic.
    Quic,
}

/// How `send --via quic` reaches the QUIC listener and checks its certificate.
#[derive(clap::Args)]
struct QuicArgs {
    /// The mediator's QUIC listener (UDP address, or host:port), for --via
    /// quic; several of one formation, comma-separated, and every address
    /// a name resolves to, are tried in turn.
    #[arg(
        long = "quic",
        env = "MEDIATOR_QUIC",
        value_name = "ADDR",
        value_delimiter = ','
    )]
    addrs: Vec<String>,
    /// The SHA-256 fingerprint of its certificate, as `serve` prints it;
    /// with several mediators, their fingerprints comma-separated.
    #[arg(long, env = "MEDIATOR_QUIC_PIN", value_name = "FINGERPRINT")]
    pin: Option<String>,
    /// A PEM file of certificates trusted as roots, instead of a pin.
    #[arg(long, env = "MEDIATOR_QUIC_ROOT", conflicts_with = "pin")]
    root_pem: Option<PathBuf>,
    /// The name the certificate is checked against with --root-pem.
    #[arg(long, default_value = "localhost")]
    server_name: String,
}

/// Where commands other than `serve` find the mediator secret.
#[derive(clap::Args)]
struct SecretArgs {
    /// File holding the mediator secret (MEDIATOR_SECRET takes precedence)
    /// [default: `secret` or `secret_file` of the TOML file, else ./mediator.secret].
    #[arg(long, env = "MEDIATOR_SECRET_FILE")]
    secret_file: Option<PathBuf>,
}

impl QuicArgs {
    /// A client builder for the first listener, naming the others of the
    /// formation.
    async fn builder(
        &self,
    ) -> Result<(SocketAddr, mediator_transport_quic::QuicNodeClientBuilder), CliError> {
        let mut addrs: Vec<SocketAddr> = Vec::new();
        for given in &self.addrs {
            if let Ok(addr) = given.parse::<SocketAddr>() {
                addrs.push(addr);
                continue;
            }
            // A name: every address it resolves to is a mediator of the
            // formation (a DNS name with one record per instance).
            let resolved = tokio::net::lookup_host(given.as_str()).await.map_err(|e| {
                CliError::Config(format!(
                    "--quic {given}: not an address (IP:PORT) nor a name that resolves ({e})"
                ))
            })?;
            for addr in resolved {
                if !addrs.contains(&addr) {
                    addrs.push(addr);
                }
            }
        }
        let (&first, others) = addrs.split_first().ok_or_else(|| {
            CliError::Config("--via quic needs --quic ADDR (the mediator's QUIC listener)".into())
        })?;
        let mut builder = QuicNodeClient::builder(first);
        for &other in others {
            builder = builder.also_at(other);
        }
        Ok((first, builder))
    }
}

/// A client builder for the first of `urls` (comma-separated mediators of
/// one formation), naming the others.
fn http_builder(urls: &str) -> mediator_transport_http::NodeClientBuilder {
    let mut urls = urls.split(',').map(str::trim).filter(|u| !u.is_empty());
    let mut builder = NodeClient::builder(urls.next().unwrap_or_default());
    for other in urls {
        builder = builder.also_at(other);
    }
    builder
}

impl SecretArgs {
    /// The secret `serve` would use with the same flags, environment and
    /// TOML file (`config`), so the tokens minted here are the ones it accepts.
    fn resolve(&self, config: Option<&Path>) -> Result<Secret, CliError> {
        let file = FileConfig::load(config)?;
        let (secret, path) = secret_location(
            std::env::var("MEDIATOR_SECRET").ok(),
            self.secret_file.clone(),
            &file,
        );
        Secret::resolve(secret, &path, false)
    }
}

fn main() -> ExitCode {
    // A .env file configures like the environment, without overriding it.
    let _ = dotenvy::dotenv();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // Help and version are answers; every other parse error is a
            // usage error, with the documented code rather than clap's own.
            return if e.exit_code() == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(exit::USAGE)
            };
        }
    };
    // The flag or its variable, else the configuration file's key. A file
    // that does not load is reported by the command that reads it.
    let from_file = || {
        let file = FileConfig::load(cli.config.as_deref()).ok()?;
        file.log_format.map(|f| f.parse::<LogFormat>())
    };
    let format = match cli.log_format.map(Ok).or_else(from_file) {
        Some(Ok(format)) => format,
        None => LogFormat::default(),
        Some(Err(e)) => {
            eprintln!("error: log_format in the configuration file: {e}");
            return ExitCode::from(exit::USAGE);
        }
    };
    // Held until the end of main: dropping it writes the lines still buffered.
    let _log_writer = logs::init(format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(exit::USAGE);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// Prints `value` as one line of JSON.
fn print_json(value: &impl serde::Serialize) -> Result<(), CliError> {
    let text = serde_json::to_string(value)
        .map_err(|e| CliError::Config(format!("cannot write JSON: {e}")))?;
    println!("{text}");
    Ok(())
}

async fn run(cli: Cli) -> Result<(), CliError> {
    let config = cli.config.as_deref();
    match cli.command {
        Command::Serve(flags) => {
            let settings = settings(config, flags)?;
            serve(settings, false, |_, _| async { Ok(Vec::new()) }).await
        }
        Command::Demo {
            serve: flags,
            pages_from,
            also_at,
        } => {
            page_port(pages_from, 2)?;
            let mut settings = settings(config, flags)?;
            // The demo always shows a QUIC-attached node, on any free port
            // unless one was configured.
            if settings.quic_listen.is_none() {
                settings.quic_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
            }
            // And its operator's console, on port 8090 beside the pages (on
            // any free port when the pages take any).
            if settings.console_listen.is_none() {
                let port = if pages_from == 0 {
                    0
                } else {
                    DEMO_CONSOLE_PORT
                };
                settings.console_listen = Some(SocketAddr::from(([127, 0, 0, 1], port)));
            }
            serve(settings, true, move |served, secret| {
                start_demo(served, secret, pages_from, also_at)
            })
            .await
        }
        Command::Check { serve: flags, json } => {
            let report = match settings(config, flags.clone()) {
                Ok(settings) => mediator_examples::check::check(&settings).await,
                // A bad endpoint rule is one problem among the others:
                // check the rest without the rules, and say so.
                Err(CliError::Config(why)) if why.starts_with("endpoint network") => {
                    let without = ServeFlags {
                        endpoint_deny: Vec::new(),
                        endpoint_allow: Vec::new(),
                        ..flags
                    };
                    match settings(config, without) {
                        Ok(settings) => {
                            let mut report = mediator_examples::check::check(&settings).await;
                            report.endpoint_problem(format!(
                                "{why}; give networks in CIDR form, like 10.0.0.0/8 or fd00::/8"
                            ));
                            report
                        }
                        Err(e) => return Err(e),
                    }
                }
                // Settings that do not load at all: said as `serve` says it.
                Err(e) => return Err(e),
            };
            if json {
                print_json(&json!({ "ok": report.problems() == 0, "items": report.items }))?;
            } else {
                print!("{report}");
            }
            match report.problems() {
                0 => Ok(()),
                n => Err(CliError::Config(format!(
                    "check found {n} problem(s); serve would not start as configured"
                ))),
            }
        }
        Command::Completions { shell } => {
            // Written whole from a buffer, so a closed pipe is an error
            // like any other rather than a panic inside the generator.
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "mediator", &mut script);
            use std::io::Write;
            std::io::stdout()
                .write_all(&script)
                .map_err(|e| CliError::Config(format!("writing the completion script: {e}")))
        }
        Command::Keygen { json } => {
            let key = SealKey::generate().to_base64();
            if json {
                print_json(&json!({ "key": key }))
            } else {
                println!("{key}");
                Ok(())
            }
        }
        Command::HashPassword { json } => {
            let mut password = String::new();
            std::io::stdin()
                .read_line(&mut password)
                .map_err(|e| CliError::Config(format!("reading the password: {e}")))?;
            let password = password.trim_end_matches(['\r', '\n']);
            if password.is_empty() {
                return Err(CliError::Config(
                    "an empty password protects nothing; pipe the password in, as in \
                     `printf '%s' \"$PW\" | mediator hash-password`"
                        .into(),
                ));
            }
            let hash = mediator_core::PasswordHash::generate(password)
                .map_err(|e| CliError::Config(e.to_string()))?;
            if json {
                print_json(&json!({ "hash": hash.to_string() }))
            } else {
                println!("{hash}");
                Ok(())
            }
        }
        Command::Token {
            node,
            admin,
            scope,
            ttl_s,
            json,
            secret,
        } => {
            let minter = TokenMinter::hs256(secret.resolve(config)?.expose());
            let now = Timestamp::now();
            let ttl = Duration::from_secs(ttl_s);
            let mut claims = match (&node, admin) {
                (Some(key), false) => Claims::node(key, now, ttl),
                (Some(key), true) => Claims::node(key, now, ttl).with_scope(vec!["admin".into()]),
                (None, _) => Claims::admin(now, ttl),
            };
            if !scope.is_empty() {
                let mut all = claims.scope.take().unwrap_or_default();
                all.extend(scope);
                claims = claims.with_scope(all);
            }
            let token = minter.mint(&claims)?;
            if json {
                print_json(&json!({
                    "token": token,
                    "admin": admin || node.is_none(),
                    "node": node.map(|k| k.to_string()),
                    "scope": claims.scope,
                    "expires": (now + ttl).to_rfc3339(),
                }))
            } else {
                println!("{token}");
                Ok(())
            }
        }
        Command::Nodes {
            url,
            group,
            json,
            token,
            secret,
        } => nodes(&url, group, json, token, &secret, config).await,
        Command::Instances {
            url,
            json,
            token,
            secret,
        } => instances(&url, json, token, &secret, config).await,
        Command::Send {
            url,
            to,
            sender,
            path,
            data,
            key,
            legacy_passphrase,
            allow_partial,
            json,
            via,
            quic,
            secret,
        } => {
            let secret = secret.resolve(config)?;
            let target = to.parse::<Target>().map_err(|e| bad_target(&to, &e))?;
            let request = SendRequest {
                to: &to,
                target,
                path: &path,
                data,
                allow_partial,
                json,
            };
            if let Some(passphrase) = legacy_passphrase {
                return send_legacy(&url, &secret, sender, &passphrase, request).await;
            }
            let key = key.ok_or_else(|| {
                CliError::Config(
                    "send needs --key (MEDIATOR_NODE_KEY): the node key, from `mediator keygen`"
                        .into(),
                )
            })?;
            let keys: KeyRing = key.parse().map_err(|e| bad_key(&e))?;
            let token = TokenMinter::hs256(secret.expose()).mint(&Claims::node(
                &sender,
                Timestamp::now(),
                Duration::from_secs(300),
            ))?;
            if via == Via::Quic {
                return send_quic(quic, sender, token, keys, request).await;
            }
            let client = http_builder(&url)
                .node_key(sender)
                .token(token)
                .keys(keys)
                .connect()
                .await
                .map_err(|e| http_send_error(&url, &request, e))?;
            let sent = match &request.target {
                Target::One(key) => client
                    .call(key.clone(), request.path, request.data.clone())
                    .await
                    .map(|body| Sent::One(key.to_string(), body)),
                Target::Any(group) => client
                    .any(group, request.path, request.data.clone())
                    .await
                    .map(|(node, body)| Sent::One(node.to_string(), body)),
                Target::All(group) => client
                    .broadcast(group, request.path, request.data.clone())
                    .await
                    .map(Sent::all),
            }
            .map_err(|e| http_send_error(&url, &request, e))?;
            request.report(sent)
        }
        Command::EchoNode {
            url,
            node,
            key,
            listen,
            via,
            quic,
            secret,
        } => {
            let secret = secret.resolve(config)?;
            let keys: KeyRing = key.parse().map_err(|e| bad_key(&e))?;
            echo_node(url, node, keys, listen, via, quic, &secret).await
        }
        Command::NewNode {
            dir,
            group,
            name,
            crates,
            quic,
        } => {
            let scaffold = Scaffold {
                dir,
                group,
                name,
                crates,
                quic,
            };
            for file in scaffold.write()? {
                println!("wrote {}", file.display());
            }
            println!(
                "next: cd {} && cp .env.example .env, fill it in, then cargo run",
                scaffold.dir.display()
            );
            Ok(())
        }
        Command::ImportClusters {
            from,
            table,
            store,
            ttl_s,
            json,
        } => {
            let store = OpenStore::open(&store.parse::<StoreUrl>()?).await?;
            let registry = store.registry();
            let report = mediator_store_mysql::import_original_clusters(
                &from,
                &table,
                registry.as_ref(),
                Duration::from_secs(ttl_s),
                Timestamp::now(),
            )
            .await
            .map_err(|e| {
                CliError::Store(format!(
                    "importing table {table} from {}: {e}",
                    mediator_examples::store::redact_password(&from)
                ))
            })?;
            if json {
                print_json(&import_json(&report))?;
            } else {
                println!("{report}");
            }
            drop(registry);
            store.close().await
        }
    }
}

/// An import's report as `import-clusters --json` prints it: each row with
/// its source id, and a skipped row's node as `null` when the table had none.
fn import_json(report: &mediator_store_mysql::ImportReport) -> serde_json::Value {
    let imported: Vec<_> = report
        .imported
        .iter()
        .map(|row| {
            json!({
                "original_id": row.original_id,
                "node": row.key.to_string(),
                "id": row.id.to_string(),
                "url": row.endpoint.to_string(),
            })
        })
        .collect();
    let skipped: Vec<_> = report
        .skipped
        .iter()
        .map(|row| {
            json!({
                "original_id": row.original_id,
                "cluster": row.cluster,
                "node": row.node,
                "reason": row.reason,
            })
        })
        .collect();
    json!({ "imported": imported, "skipped": skipped })
}

/// What `send` was asked to do.
struct SendRequest<'a> {
    to: &'a str,
    target: Target,
    path: &'a str,
    data: String,
    allow_partial: bool,
    json: bool,
}

/// What came back from a `send`.
enum Sent {
    /// One node's reply (unicast or any-of-group).
    One(String, Bytes),
    /// Every node's result of a broadcast, and the mediator's summary.
    All {
        replies: Vec<(String, Result<Bytes, String>)>,
        summary: Summary,
    },
}

impl Sent {
    /// A broadcast's results, whatever transport's error they carry.
    fn all<E: std::fmt::Display>(all: mediator_core::node::BroadcastReplies<E>) -> Sent {
        Sent::All {
            replies: all
                .replies
                .into_iter()
                .map(|r| (r.node.to_string(), r.result.map_err(|e| e.to_string())))
                .collect(),
            summary: all.summary,
        }
    }
}

impl SendRequest<'_> {
    /// Prints what came back, then fails with [`CliError::Delivery`] when a
    /// broadcast had failures it may not accept.
    fn report(&self, sent: Sent) -> Result<(), CliError> {
        let text = |body: &Bytes| String::from_utf8_lossy(body).into_owned();
        let (replies, summary) = match sent {
            Sent::One(node, body) => {
                if self.json {
                    print_json(&json!({ "node": node, "reply": reply_value(&body) }))?;
                } else if matches!(self.target, Target::One(_)) {
                    println!("{}", text(&body));
                } else {
                    println!("{node}: {}", text(&body));
                }
                return Ok(());
            }
            Sent::All { replies, summary } => (replies, summary),
        };
        let failed = replies.iter().filter(|(_, r)| r.is_err()).count();
        let answered = replies.len() - failed;
        if self.json {
            let entries: Vec<Value> = replies
                .iter()
                .map(|(node, result)| match result {
                    Ok(body) => json!({ "node": node, "reply": reply_value(body) }),
                    Err(e) => json!({ "node": node, "error": e }),
                })
                .collect();
            print_json(&json!({
                "replies": entries,
                "summary": {
                    "asked": summary.asked,
                    "answered": summary.answered,
                    "failed": summary.failed,
                    "timed_out": summary.timed_out,
                },
            }))?;
        } else {
            for (node, result) in &replies {
                match result {
                    Ok(body) => println!("{node}: {}", text(body)),
                    Err(e) => println!("{node}: error: {e}"),
                }
            }
            println!(
                "asked={} answered={} failed={} timed_out={}",
                summary.asked, summary.answered, summary.failed, summary.timed_out
            );
        }
        // The mediator's count and ours may differ (a node that answered
        // 500 was "answered" for it); a failure either way is a failure.
        let failed = failed.max(summary.failed + summary.timed_out);
        if answered == 0 {
            return Err(CliError::Delivery(format!(
                "no node of {} answered ({} asked)",
                self.to, summary.asked
            )));
        }
        if failed > 0 && !self.allow_partial {
            return Err(CliError::Delivery(format!(
                "{failed} of {} node(s) of {} failed or timed out; --allow-partial accepts a partial broadcast",
                summary.asked.max(replies.len()),
                self.to
            )));
        }
        Ok(())
    }

    /// A refusal for an unknown target, in words that name it.
    ///
    /// The mediator's own words differ by transport (over HTTP the
    /// original's `clusters not found`, which its Node children read; over
    /// QUIC `unknown target`), so they are left out: one message for both.
    fn unknown(&self, url: &str) -> CliError {
        let what = match &self.target {
            Target::One(key) => format!("no node {key} is registered"),
            Target::Any(group) | Target::All(group) => {
                format!("no node of group {group} is registered")
            }
        };
        CliError::Refused {
            url: url.to_owned(),
            message: format!("{what}; `mediator nodes` lists the registered nodes"),
        }
    }

    /// A refused token (401), in words that say which secret to check.
    fn unauthorized(&self, url: &str, message: &str) -> CliError {
        CliError::Refused {
            url: url.to_owned(),
            message: format!(
                "it did not accept the token sending to {} ({message}); {}",
                self.to,
                exit::token_hint(false)
            ),
        }
    }
}

/// A reply as `send --json` shows it: the JSON it holds, embedded as such,
/// or its text as a string when it is not JSON.
fn reply_value(body: &Bytes) -> Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()))
}

/// A client's failure in the words both transports share.
fn client_error(e: impl Into<ClientError>) -> ClientError {
    e.into()
}

/// A failed `send` over HTTP, in words that name the mediator and the target.
fn http_send_error(url: &str, request: &SendRequest<'_>, e: impl Into<ClientError>) -> CliError {
    match e.into() {
        ClientError::Unreachable { reason, .. } => CliError::Unreachable {
            url: url.to_owned(),
            reason: exit::explain_unreachable(url, &reason),
        },
        other => send_error(url, request, other),
    }
}

/// A failed `send` over QUIC, in words that name the address and the target.
fn quic_send_error(
    addr: SocketAddr,
    request: &SendRequest<'_>,
    e: impl Into<ClientError>,
) -> CliError {
    let at = addr.to_string();
    match e.into() {
        ClientError::Unreachable { reason, .. } => CliError::Unreachable {
            reason: exit::explain_quic_unreachable(&reason),
            url: at,
        },
        ClientError::Timeout { after, .. } => CliError::Unreachable {
            reason: exit::explain_quic_unreachable(&format!("timed out after {after:?}")),
            url: at,
        },
        ClientError::Tls(reason) => CliError::Config(format!("QUIC TLS: {reason}")),
        other => send_error(&at, request, other),
    }
}

/// What both transports say alike: an unknown target, a refused token.
fn send_error(peer: &str, request: &SendRequest<'_>, e: ClientError) -> CliError {
    match e {
        ClientError::Mediator {
            status: 404, kind, ..
        } if kind == "unknown_target" => request.unknown(peer),
        ClientError::Mediator {
            status: 401,
            message,
            ..
        } => request.unauthorized(peer, &message),
        other => CliError::Client(other),
    }
}

/// A `--to` that is no target, said once with the forms there are.
fn bad_target(to: &str, error: &mediator_core::Error) -> CliError {
    let forms = "use group/name, group/ (the unnamed node), group/* (every node) or group/? \
                 (any node)";
    let why = error.to_string();
    if why.contains("group/*") {
        // The error lists the forms already.
        CliError::Config(format!("--to {to:?} is not a target; {forms}"))
    } else {
        CliError::Config(format!("--to {to:?}: {why}; {forms}"))
    }
}

/// A `--key` that is no node key, without the decoder's internals.
fn bad_key(error: &mediator_core::CipherError) -> CliError {
    let said = error.to_string();
    let why = if said.contains("not base64") {
        "it is not base64".to_owned()
    } else {
        said.trim_start_matches("bad key: ").to_owned()
    };
    CliError::Config(format!(
        "--key (MEDIATOR_NODE_KEY) is not a node key: {why}; a node key is 32 random bytes in \
         base64, as `mediator keygen` prints one"
    ))
}

/// `send --legacy-passphrase`: the original's sending library, from the
/// shell, to one of the original's children.
async fn send_legacy(
    url: &str,
    secret: &Secret,
    sender: NodeKey,
    passphrase: &str,
    request: SendRequest<'_>,
) -> Result<(), CliError> {
    let Target::One(key) = &request.target else {
        return Err(CliError::Config(format!(
            "--legacy-passphrase sends to one node (group/name or group/), not {}",
            request.to
        )));
    };
    // The original's children take any JSON; plain text goes as a string.
    let data: Value =
        serde_json::from_str(&request.data).unwrap_or_else(|_| Value::String(request.data.clone()));
    let client = LegacyClient::new(url, secret.expose(), LegacyCipher::new(passphrase))?
        .from_node(sender.group(), sender.name());
    let reply = client
        .send(key.group(), key.name(), request.path, &data)
        .await
        .map_err(|e| match client_error(e) {
            ClientError::Mediator { status: 401, message, .. } => CliError::Refused {
                url: url.to_owned(),
                message: format!(
                    "401: {message}; the original's tokens name no node: serve with --allow-tokens-without-sub"
                ),
            },
            other => http_send_error(url, &request, other),
        })?;
    if request.json {
        print_json(&json!({ "node": key.to_string(), "reply": reply }))
    } else {
        print_json(&reply)
    }
}

/// `send --via quic`: a caller-only QUIC client, then the same output as over HTTP.
async fn send_quic(
    quic: QuicArgs,
    sender: NodeKey,
    token: String,
    keys: KeyRing,
    request: SendRequest<'_>,
) -> Result<(), CliError> {
    let (addr, builder) = quic.builder().await?;
    let builder = trusting(builder.node_key(sender).token(token).keys(keys), quic)?;
    // A wrong pin fails the handshake with a message naming both
    // fingerprints, which is what the person needs to see.
    let client = builder
        .connect()
        .await
        .map_err(|e| quic_send_error(addr, &request, e))?;
    let data = request.data.clone();
    let sent = match &request.target {
        Target::One(key) => client
            .call(key.clone(), request.path, data)
            .await
            .map(|body| Sent::One(key.to_string(), body)),
        Target::Any(group) => client
            .any(group, request.path, data)
            .await
            .map(|(node, body)| Sent::One(node.to_string(), body)),
        Target::All(group) => client
            .broadcast(group, request.path, data)
            .await
            .map(Sent::all),
    };
    client.shutdown().await;
    request.report(sent.map_err(|e| quic_send_error(addr, &request, e))?)
}

/// `builder` checking the mediator's certificate as `quic` says: by its
/// pin, or against a root.
fn trusting(
    builder: mediator_transport_quic::QuicNodeClientBuilder,
    quic: QuicArgs,
) -> Result<mediator_transport_quic::QuicNodeClientBuilder, CliError> {
    match (&quic.pin, &quic.root_pem) {
        (Some(pin), _) => {
            exit::check_pin(pin).map_err(CliError::Config)?;
            Ok(builder.pin(pin))
        }
        (None, Some(root)) => {
            let pem = std::fs::read(root).map_err(|source| CliError::Io {
                path: root.clone(),
                source,
            })?;
            Ok(builder.root_pem(pem).server_name(quic.server_name))
        }
        (None, None) => Err(CliError::Config(
            "--via quic needs --pin FINGERPRINT (printed by `mediator serve`) or --root-pem FILE"
                .into(),
        )),
    }
}

/// Runs `mediator echo-node` until Ctrl-C or SIGTERM, then leaves.
async fn echo_node(
    url: String,
    node: NodeKey,
    keys: KeyRing,
    listen: SocketAddr,
    via: Via,
    quic: QuicArgs,
    secret: &Secret,
) -> Result<(), CliError> {
    // Tokens are minted as they run out: the node may run for days.
    let minter = TokenMinter::hs256(secret.expose());
    let echo = |request: mediator_core::node::Incoming| async move {
        Ok::<_, mediator_core::Error>(request.body)
    };
    let joined = |e: ClientError, peer: &str| match e {
        ClientError::Unreachable { reason, .. } => CliError::Unreachable {
            url: peer.to_owned(),
            reason: exit::explain_unreachable(peer, &reason),
        },
        ClientError::Mediator {
            status, message, ..
        } => CliError::Refused {
            url: peer.to_owned(),
            message: format!("{status}: {message}"),
        },
        other => CliError::Client(other),
    };
    let stop = async {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            match signal(SignalKind::terminate()) {
                Ok(mut term) => {
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => {}
                        _ = term.recv() => {}
                    }
                }
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    };
    match via {
        Via::Http => {
            // Several mediators of one formation, comma-separated: the node
            // registers again at the next when its own stops answering.
            let client = http_builder(&url)
                .node_key(node.clone())
                .token_minter(minter)
                .keys(keys)
                .listen(listen)
                .start(echo)
                .await
                .map_err(|e| joined(e, &url))?;
            println!("echo node {node} registered at {url}; Ctrl-C leaves");
            stop.await;
            // Deregistered now, rather than forgotten at the end of its lease.
            client.shutdown().await.map_err(|e| joined(e, &url))?;
        }
        Via::Quic => {
            let (addr, builder) = quic.builder().await?;
            let builder = builder
                .node_key(node.clone())
                .token_minter(minter)
                .keys(keys);
            let client = trusting(builder, quic)?
                .start(echo)
                .await
                .map_err(|e| joined(e, &addr.to_string()))?;
            println!("echo node {node} attached at {addr}; Ctrl-C leaves");
            stop.await;
            client.shutdown().await;
        }
    }
    println!("echo node {node} left");
    Ok(())
}

/// How long a client may take over its TLS handshake (the listener's default).
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

fn settings(config: Option<&Path>, mut flags: ServeFlags) -> Result<ServeSettings, CliError> {
    let file = FileConfig::load(config)?;
    apply_platform_env(
        &mut flags,
        std::env::var("PORT").ok(),
        std::env::var("DATABASE_URL").ok(),
    )?;
    ServeSettings::merge(flags, file, std::env::var("MEDIATOR_SECRET").ok())
}

/// Where a running mediator is reached, for what starts beside it.
struct Served {
    /// The HTTP API's URL.
    url: String,
    /// The console's URL, when it has a listener.
    console_url: Option<String>,
    /// The QUIC listener's address and certificate fingerprint, if any.
    quic: Option<(SocketAddr, String)>,
    /// The operator password generated for this run, if one was.
    operator_password: Option<String>,
}

/// A listener that could not open its address, said with the address and
/// what to do.
fn bind_error(
    what: &str,
    flag: &str,
    addr: SocketAddr,
    io: Option<&std::io::Error>,
    other: String,
) -> CliError {
    CliError::Bind {
        what: what.to_owned(),
        addr,
        reason: io.map_or(other, |io| exit::explain_bind(io, flag)),
    }
}

/// Something started beside the mediator, stopped before it.
enum Extra {
    Http(demo::DemoNode),
    Quic(demo::QuicDemoNode),
}

impl Extra {
    async fn shutdown(self) -> Result<(), CliError> {
        match self {
            Extra::Http(node) => node.shutdown().await,
            Extra::Quic(node) => {
                node.shutdown().await;
                Ok(())
            }
        }
    }
}

/// The QUIC listener's certificate: the HTTPS one when configured (a QUIC
/// listener speaks the same TLS 1.3), otherwise one generated now for the
/// listener's names, which clients pin by its printed fingerprint.
fn quic_tls(settings: &ServeSettings, addr: SocketAddr) -> Result<ServerTls, CliError> {
    if let Some((cert, key)) = &settings.tls {
        return Ok(ServerTls::from_pem_files(cert, key)?);
    }
    let ip = loopback_if_unspecified(addr).ip().to_string();
    Ok(ServerTls::self_signed(&["localhost", &ip])?)
}

/// Runs the mediator until SIGTERM or SIGINT, with whatever `extras` starts
/// beside it (the demo nodes), then drains, closes the store and returns.
///
/// With `demo` and no operator login configured, a random operator
/// password is made for this run: only its hash is kept, and the password
/// goes to `extras` to be shown once.
async fn serve<F, Fut>(mut settings: ServeSettings, demo: bool, extras: F) -> Result<(), CliError>
where
    F: FnOnce(Served, Secret) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<Extra>, CliError>>,
{
    let operator_password = if demo
        && settings.operator_password_hash.is_none()
        && settings.secret_as_password.is_none()
    {
        let password = base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            rand::random::<[u8; 18]>(),
        );
        settings.operator_password_hash = Some(
            mediator_core::PasswordHash::generate(&password)
                .map_err(|e| CliError::Config(e.to_string()))?
                .to_string(),
        );
        Some(password)
    } else {
        None
    };
    let secret = Secret::resolve(settings.secret.clone(), &settings.secret_file, true)?;
    match &secret.source {
        SecretSource::Generated(path) => tracing::warn!(
            file = %path.display(),
            "no mediator secret was configured: generated one and saved it in this file; keep the file \
             (or set MEDIATOR_SECRET) so tokens stay valid across restarts"
        ),
        SecretSource::File(path) => {
            tracing::info!(file = %path.display(), "mediator secret read from file");
            if let Some(why) = open_to_others(path) {
                tracing::warn!(file = %path.display(), "mediator secret file {why}");
            }
        }
        SecretSource::Configured => {
            tracing::info!("mediator secret from the environment or configuration");
        }
    }
    if let Some((_, key)) = &settings.tls {
        if let Some(why) = open_to_others(key) {
            tracing::warn!(file = %key.display(), "TLS private key {why}");
        }
    }
    // Every client connection and every delivery holds a descriptor: room
    // for what the caps admit, or caps that fit the room.
    if let Some((limit, failure)) = FileLimit::raise() {
        if let Some(failure) = failure {
            tracing::warn!(soft = ?limit.soft, hard = ?limit.hard, "descriptor limit not raised: {failure}");
        }
        if let Some(soft) = limit.soft {
            if let Some(why) = descriptors::fit_settings(&mut settings, soft) {
                tracing::warn!(limit = soft, "{why}");
            }
        }
    }
    tracing::info!(settings = %settings.describe(), "starting");
    let store = OpenStore::open(&settings.store).await?;
    let mut builder = Mediator::builder();
    // Every request's line, whatever way it came in, through the binary's
    // own writer.
    if let Some(lines) = logs::request_lines() {
        builder = builder.request_log(lines);
    }
    let limits = settings.connections;
    // Bound before the mediator is built: its peers are told this address.
    let mut listener = HttpListener::bind(settings.listen)
        .await
        .map_err(|e| {
            let io = match &e {
                HttpError::Io(io) => Some(io),
                _ => None,
            };
            bind_error(
                "HTTP",
                "--listen (MEDIATOR_LISTEN, PORT)",
                settings.listen,
                io,
                e.to_string(),
            )
        })?
        .drain_timeout(settings.drain)
        .client_timeouts(TLS_HANDSHAKE_TIMEOUT, limits.header_read_timeout)
        .idle_timeout(limits.idle_timeout)
        .max_connections(limits.max_connections)
        .pass_through(limits.pass_through);
    let scheme = match &settings.tls {
        Some((cert, key)) => {
            listener = listener.tls(TlsConfig::from_pem_files(cert, key)?);
            "https"
        }
        None => "http",
    };
    let addr = listener.local_addr();
    let url = format!("{scheme}://{}", loopback_if_unspecified(addr));
    let peer_url = match &settings.peer_url {
        Some(peer_url) => peer_url.clone(),
        None if every_address(addr) => {
            tracing::warn!(
                "listening on every address with no --peer-url (MEDIATOR_PEER_URL): other \
                 instances sharing this store cannot forward calls for the nodes attached here"
            );
            String::new()
        }
        None => url.clone(),
    };
    let mut builder = builder
        .shared_registry(store.registry())
        .authenticator(operator_login(
            Authenticator::hs256(secret.expose())
                .allow_tokens_without_sub(settings.allow_tokens_without_sub),
            &settings,
        )?)
        .deliver(HttpDelivery::default())
        .limits(settings.limits.clone())
        .endpoint_policy(settings.endpoints.clone())
        .formation(
            PeerKey::from_secret(secret.expose()),
            peer_url,
            HttpPeerLink::new(),
        );
    if let Some(id) = &settings.instance_id {
        builder = builder.instance_id(id);
    }
    let mediator = builder.build()?;
    // Route to every node registered before a restart at once, not after
    // the first sweep; and be in the formation before taking calls. With a
    // feed, the first read of it loads the store and keeps its position,
    // so maintenance does not load it again.
    if !mediator.follow().await? {
        mediator.refresh().await?;
    }
    if let Err(e) = mediator.heartbeat().await {
        tracing::warn!(error = %e, "could not announce this instance in the store; retrying");
    }
    let maintenance = mediator.spawn_maintenance();
    tracing::info!(%url, store = %settings.store, nodes = mediator.routes().len(), instance = mediator.instance_id(), "mediator listening");
    logs::banner(
        &if every_address(addr) {
            format!("mediator listening on {url} (bound to {addr}: every address of this machine)")
        } else {
            format!("mediator listening on {url}")
        },
        &[("url", &url), ("bound", &addr.to_string())],
    );
    let mut quic = match settings.quic_listen {
        Some(addr) => {
            let tls = quic_tls(&settings, addr)?;
            let listener = QuicListener::bind_with(addr, &tls, settings.quic_limits.clone())
                .map_err(|e| {
                    let io = match &e {
                        QuicError::Io(io) => Some(io),
                        _ => None,
                    };
                    bind_error("QUIC", "--quic-listen", addr, io, e.to_string())
                })?;
            mediator.add_deliver(listener.delivery())?;
            let bound = listener.local_addr()?;
            let shown = loopback_if_unspecified(bound);
            let fingerprint = listener.fingerprint();
            let at = if every_address(bound) {
                format!("{bound} (every address of this machine; {shown} from here)")
            } else {
                shown.to_string()
            };
            logs::banner(
                &format!("mediator QUIC listening on {at}, certificate SHA-256 {fingerprint}"),
                &[
                    ("addr", &shown.to_string()),
                    ("bound", &bound.to_string()),
                    ("fingerprint", fingerprint),
                ],
            );
            let serving = listener.clone();
            let served = mediator.clone();
            let task = tokio::spawn(async move { serving.serve(served).await });
            Some((listener, task, shown))
        }
        None => None,
    };
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let service = MediatorService::new(mediator.clone())
        .metrics_access(settings.metrics_access)
        .trusted_proxies(settings.trusted_proxies.iter().copied());
    // Made only when served: a clone of the mediator left behind would keep
    // the store open at shutdown.
    let console_service = settings.console_listen.map(|_| service.console());
    let stopping = |mut stopped: tokio::sync::watch::Receiver<bool>| async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    };
    let mut server = tokio::spawn(listener.serve_with_shutdown(service, stopping(stopped.clone())));
    // The console on a listener, and so an origin, of its own: no node's
    // reply is ever served where the console's session lives.
    let console = match settings.console_listen.zip(console_service) {
        Some((addr, console_service)) => {
            let mut console = HttpListener::bind(addr)
                .await
                .map_err(|e| {
                    let io = match &e {
                        HttpError::Io(io) => Some(io),
                        _ => None,
                    };
                    bind_error("console", "--console-listen", addr, io, e.to_string())
                })?
                .drain_timeout(settings.drain)
                .client_timeouts(TLS_HANDSHAKE_TIMEOUT, limits.header_read_timeout)
                .idle_timeout(limits.idle_timeout)
                .max_connections(limits.max_connections);
            if let Some((cert, key)) = &settings.tls {
                console = console.tls(TlsConfig::from_pem_files(cert, key)?);
            }
            let console_url = format!(
                "{scheme}://{}",
                loopback_if_unspecified(console.local_addr())
            );
            tracing::info!(url = %console_url, "console listening");
            logs::banner(
                &if every_address(console.local_addr()) {
                    format!(
                        "mediator console on {console_url}/ (bound to {}: every address of \
                         this machine)",
                        console.local_addr()
                    )
                } else {
                    format!("mediator console on {console_url}/")
                },
                &[("url", &format!("{console_url}/"))],
            );
            let task = tokio::spawn(
                console.serve_with_shutdown(console_service, stopping(stopped.clone())),
            );
            Some((console_url, task))
        }
        None => None,
    };
    let served = Served {
        url,
        console_url: console.as_ref().map(|(url, _)| url.clone()),
        quic: quic
            .as_ref()
            .map(|(listener, _, addr)| (*addr, listener.fingerprint().to_owned())),
        operator_password,
    };
    let extras = match extras(served, secret).await {
        Ok(extras) => extras,
        Err(e) => {
            server.abort();
            if let Some((_, task)) = &console {
                task.abort();
            }
            if let Some((listener, _, _)) = &quic {
                listener.close();
            }
            return Err(e);
        }
    };
    let quic_ended = async {
        match quic.as_mut().map(|(_, task, _)| task) {
            Some(task) => task.await,
            None => std::future::pending().await,
        }
    };
    // Either server ending by itself (a fatal listener error) also stops us.
    let early = tokio::select! {
        _ = shutdown_signal() => None,
        served = &mut server => Some(served),
        ended = quic_ended => {
            tracing::error!(outcome = ?ended, "the QUIC listener stopped; shutting down");
            None
        }
    };
    // Demo nodes deregister while the mediator still answers.
    for node in extras {
        if let Err(e) = node.shutdown().await {
            tracing::warn!(error = %e, "a demo node did not shut down cleanly");
        }
    }
    // Attached nodes are detached (their connections closed) before the
    // HTTP side drains, so nobody is routed to a connection about to go.
    if let Some((listener, task, _)) = quic {
        listener.shutdown().await;
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "the QUIC listener failed"),
            Err(e) => tracing::warn!(error = %e, "the QUIC listener task failed"),
        }
    }
    let _ = stop.send(true);
    let served = match early {
        Some(served) => served,
        None => server.await,
    };
    if let Some((_, task)) = console {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "the console's listener failed"),
            Err(e) => tracing::warn!(error = %e, "the console's listener task failed"),
        }
    }
    tracing::info!("stopped accepting and drained; leaving the formation and closing the store");
    maintenance.abort();
    let _ = maintenance.await;
    // The other instances stop routing to this one now, not when its
    // lease runs out.
    if let Err(e) = mediator.leave().await {
        tracing::warn!(error = %e, "could not retire this instance from the store; its lease will run out");
    }
    drop(mediator);
    store.close().await?;
    tracing::info!("store closed; bye");
    match served {
        Ok(result) => Ok(result?),
        Err(e) => Err(CliError::Config(format!("the server task failed: {e}"))),
    }
}

/// The Basic admin login: the operator password's hash when configured,
/// and the original's `admin:<secret>` only with `secret_as_password`.
/// Without either, Basic logins are refused (said once here, at start);
/// admin tokens keep working.
fn operator_login(
    mut auth: Authenticator,
    settings: &ServeSettings,
) -> Result<Authenticator, CliError> {
    if let Some(text) = &settings.operator_password_hash {
        let hash: mediator_core::PasswordHash = text.parse().map_err(|e| {
            CliError::Config(format!(
                "operator_password_hash: {e}; make one with `mediator hash-password`"
            ))
        })?;
        auth = auth.with_operator_password(hash);
    }
    auth = auth.with_secret_as_password(settings.secret_as_password.unwrap_or(false));
    if !auth.has_operator_password() {
        tracing::warn!(
            "{}; the Basic admin login (console sign-in, /token) is refused until then, admin tokens work",
            mediator_core::auth::NO_OPERATOR_PASSWORD
        );
    }
    Ok(auth)
}

/// Whether a listener bound to `bound` listens on every address of this
/// machine (`0.0.0.0`, `::`), which its banner says rather than show only
/// the loopback address it is reached at from here.
fn every_address(bound: SocketAddr) -> bool {
    bound.ip().is_unspecified()
}

fn loopback_if_unspecified(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], addr.port()))
    } else {
        addr
    }
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = term.recv() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; stopping on SIGINT only");
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
    tracing::info!("shutdown signal received; draining");
}

/// The demo console's port, unless `--console-listen` says otherwise.
const DEMO_CONSOLE_PORT: u16 = 8090;

async fn start_demo(
    served: Served,
    secret: Secret,
    pages_from: u16,
    also_at: Vec<String>,
) -> Result<Vec<Extra>, CliError> {
    let url = served.url.clone();
    let minter = TokenMinter::hs256(secret.expose());
    let key = SealKey::generate();
    let key_text = key.to_base64();
    let keys = KeyRing::new(key);
    let mut nodes = Vec::new();
    for (offset, role) in [Role::Passive, Role::Sender, Role::Standalone]
        .into_iter()
        .enumerate()
    {
        let page = SocketAddr::from(([127, 0, 0, 1], page_port(pages_from, offset)?));
        nodes.push(
            demo::start_node(role, &url, &also_at, minter.clone(), keys.clone(), page).await?,
        );
    }
    println!("\nThe demo formation is up. Open in a browser:");
    for node in &nodes {
        println!("  demo/{:<11} http://{}/", node.role.name(), node.page);
    }
    let mut extras: Vec<Extra> = nodes.into_iter().map(Extra::Http).collect();
    if let Some((addr, pin)) = served.quic.clone() {
        let node = demo::start_quic_node(addr, &pin, minter, keys).await?;
        println!(
            "  demo/{:<11} attached over QUIC to {addr}: send it a message from a page; \
             path /relay makes it call demo/passive over HTTP in turn",
            demo::QUIC_NODE
        );
        extras.push(Extra::Quic(node));
    }
    let password = match (&served.operator_password, &secret.source) {
        (Some(password), _) => format!("{password}  (made for this run; only its hash is kept)"),
        (None, SecretSource::File(path) | SecretSource::Generated(path)) => format!(
            "the operator password configured, or with secret_as_password the content of {}",
            path.display()
        ),
        (None, SecretSource::Configured) => {
            "the operator password configured, or with secret_as_password your MEDIATOR_SECRET"
                .to_owned()
        }
    };
    match &served.console_url {
        Some(console) => println!("  console          {console}/  (password: {password})"),
        None => println!("  console          off (start with --console-listen ADDR to see it)"),
    }
    println!("\nThen try, in another terminal (same folder):");
    println!("  cargo run --release --bin mediator -- nodes");
    println!("  cargo run --release --bin mediator -- send --to 'demo/*' --key {} --data '{{\"text\":\"hi\"}}'", key_text);
    println!("Stop with Ctrl-C.");
    Ok(extras)
}

/// The port of demo page number `offset` (from 0): 0 (any free port) when
/// `pages_from` is 0, else `pages_from + offset`, which must be a port.
fn page_port(pages_from: u16, offset: usize) -> Result<u16, CliError> {
    if pages_from == 0 {
        return Ok(0);
    }
    u16::try_from(offset)
        .ok()
        .and_then(|offset| pages_from.checked_add(offset))
        .ok_or_else(|| {
            CliError::Config(format!(
                "--pages-from {pages_from}: the demo's three pages need ports up to {}, past 65535",
                usize::from(pages_from) + offset
            ))
        })
}

/// The admin token given, or one minted from the secret for a minute.
fn admin_token(
    token: Option<String>,
    secret: &SecretArgs,
    config: Option<&Path>,
) -> Result<String, CliError> {
    Ok(match token {
        Some(token) => token,
        None => TokenMinter::hs256(secret.resolve(config)?.expose())
            .mint(&Claims::admin(Timestamp::now(), Duration::from_secs(60)))?,
    })
}

async fn nodes(
    url: &str,
    group: Option<String>,
    json: bool,
    token: Option<String>,
    secret: &SecretArgs,
    config: Option<&Path>,
) -> Result<(), CliError> {
    let token = admin_token(token, secret, config)?;
    let base = match &group {
        Some(group) => {
            mediator_core::model::validate_name("group", group)?;
            format!("/admin/clusters/{group}")
        }
        None => "/admin/clusters".to_owned(),
    };
    // Every page, however many nodes there are.
    let mut rows = Vec::new();
    let mut after: Option<u64> = None;
    loop {
        let path = match after {
            Some(id) => format!("{base}?limit=1000&after={id}"),
            None => format!("{base}?limit=1000"),
        };
        let body =
            mediator_examples::http_get_json(url, &path, "listing the nodes", &token).await?;
        let now = Timestamp::now();
        for row in body
            .get("list")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            rows.push(Listed::from_row(row, now).map_err(|e| CliError::Refused {
                url: url.to_owned(),
                message: format!("an unexpected answer listing the nodes: {e}"),
            })?);
        }
        match body.get("next").and_then(Value::as_u64) {
            Some(next) if Some(next) != after => after = Some(next),
            _ => break,
        }
    }
    if json {
        return print_json(&rows);
    }
    println!(
        "{:<6} {:<32} {:<40} {:<12}",
        "ID", "NODE", "ENDPOINT", "LEASE LEFT"
    );
    for row in &rows {
        println!(
            "{:<6} {:<32} {:<40} {:<12}",
            row.id,
            row.node,
            row.url,
            human_seconds(row.lease_left_s)
        );
    }
    println!("{} node(s)", rows.len());
    Ok(())
}

/// `mediator instances`: the formation as `/admin/instances` tells it.
async fn instances(
    url: &str,
    json: bool,
    token: Option<String>,
    secret: &SecretArgs,
    config: Option<&Path>,
) -> Result<(), CliError> {
    let token = admin_token(token, secret, config)?;
    let body =
        mediator_examples::http_get_json(url, "/admin/instances", "listing the instances", &token)
            .await?;
    let Some(list) = body.get("instances").and_then(Value::as_array) else {
        return Err(CliError::Refused {
            url: url.to_owned(),
            message: "an unexpected answer listing the instances: no \"instances\" list".into(),
        });
    };
    if json {
        return print_json(list);
    }
    println!(
        "{:<24} {:<32} {:<9} {:<9} {:<10} HEARTBEAT",
        "INSTANCE", "PEER", "LIVE", "ATTACHED", "UP"
    );
    let now = Timestamp::now();
    let text = |row: &Value, field: &str| {
        row.get(field)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    for row in list {
        let mut id = text(row, "id");
        if row.get("this").and_then(Value::as_bool) == Some(true) {
            id.push_str(" *");
        }
        let since = |field: &str| {
            time::OffsetDateTime::parse(
                &text(row, field),
                &time::format_description::well_known::Rfc3339,
            )
            .map(|at| {
                let ago = (now.as_millis() - (at.unix_timestamp_nanos() / 1_000_000) as i64).max(0)
                    as u64
                    / 1000;
                // `human_seconds` says "expired" for zero, a lease's word.
                if ago == 0 {
                    "0s".to_owned()
                } else {
                    human_seconds(ago)
                }
            })
            .unwrap_or_else(|_| "?".to_owned())
        };
        println!(
            "{:<24} {:<32} {:<9} {:<9} {:<10} {} ago",
            id,
            match text(row, "peer") {
                peer if peer.is_empty() => "-".to_owned(),
                peer => peer,
            },
            if row.get("live").and_then(Value::as_bool) == Some(true) {
                "yes"
            } else {
                "expired"
            },
            row.get("attached").and_then(Value::as_u64).unwrap_or(0),
            since("started"),
            since("heartbeat"),
        );
    }
    println!("{} instance(s); * answered this listing", list.len());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_ports_stay_ports() {
        assert_eq!(page_port(0, 2).unwrap(), 0);
        assert_eq!(page_port(8081, 2).unwrap(), 8083);
        assert_eq!(page_port(65533, 2).unwrap(), 65535);
        let err = page_port(65535, 1).unwrap_err().to_string();
        assert!(err.contains("65536"), "{err}");
    }
}
