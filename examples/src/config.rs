//! `mediator serve` settings: flags, then `MEDIATOR_*` environment
//! variables (and the platform's `PORT` and `DATABASE_URL`, see
//! [`apply_platform_env`]), then a TOML file, then defaults, in that order
//! of precedence.
//!
//! A `.env` file in the working directory is read at start-up (it never
//! overrides variables already set). The TOML file is `--config PATH`
//! (`MEDIATOR_CONFIG`), or `./mediator.toml` when present. Its keys are the
//! long flag names with `_` for `-`:
//!
//! ```toml
//! listen = "0.0.0.0:8443"
//! quic_listen = "0.0.0.0:4433"
//! console_listen = "127.0.0.1:8090"   # the operator's console; off when absent
//! trusted_proxy = ["10.0.0.5/32"]       # whose X-Forwarded-For is believed
//! store = "mysql://mediator:pw@db:3306/mediator"
//! secret_file = "/etc/mediator/secret"
//! tls_cert = "/etc/mediator/cert.pem"
//! tls_key = "/etc/mediator/key.pem"
//! allow_tokens_without_sub = true
//! deadline_ms = 10000
//! max_body = 8388608
//! default_ttl_s = 3900
//! sweep_every_s = 5
//! instance_id = "hub-1"                   # this instance in a formation [default: random]
//! peer_url = "http://10.0.0.1:8080"       # where the other instances reach this one
//! drain_s = 10
//! max_in_flight = 10000
//! operator_password_hash = "$argon2id$v=19$..."   # from `mediator hash-password`
//! secret_as_password = false
//! max_in_flight_per_caller = 1000
//! endpoint_deny = ["127.0.0.0/8", "::1"]
//! endpoint_allow = ["10.0.0.0/8"]
//! metrics_access = "open"   # or "open-without-groups", "admin"
//! header_read_timeout_ms = 30000
//! idle_timeout_ms = 60000
//! max_connections = 10000
//! pass_through = true       # HTTP/1.1 calls to http:// nodes on the pass-through
//! body_budget = 268435456   # bytes of request bodies buffered at once, all requests together
//! quic_max_connections = 10000
//! quic_max_connections_per_identity = 16
//! log_format = "json"       # or "text"; every command reads it
//! ```
//!
//! Node callbacks in link-local networks (169.254.0.0/16, fe80::/10) or at
//! the mediator's own address are always refused; `endpoint_deny` refuses
//! more networks, and a non-empty `endpoint_allow` accepts only its own.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mediator_core::policy::{EndpointPolicy, IpNetwork};
use mediator_core::Limits;
use mediator_transport_http::MetricsAccess;
use mediator_transport_quic::QuicLimits;

use crate::store::{StoreUrl, DEFAULT_STORE};
use crate::CliError;

/// The default address `serve` listens on.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// The default secret file.
pub const DEFAULT_SECRET_FILE: &str = "./mediator.secret";
/// The default TOML file, read when present.
pub const DEFAULT_CONFIG_FILE: &str = "./mediator.toml";

/// The flags of `mediator serve`; each also reads its `MEDIATOR_*` variable.
/// `Debug` hides the store's password.
#[derive(Default, Clone, clap::Args)]
pub struct ServeFlags {
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "MEDIATOR_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// UDP address of a QUIC listener for attached nodes (off when absent); it
    /// serves the TLS certificate of --tls-cert, or one generated at start
    /// whose SHA-256 fingerprint is printed for clients to pin.
    #[arg(long, env = "MEDIATOR_QUIC_LISTEN")]
    pub quic_listen: Option<SocketAddr>,
    /// Address of the operator's console (off when absent): a listener of
    /// its own, so that no node's reply, served on the API's origin, can
    /// act as the console.
    #[arg(long, env = "MEDIATOR_CONSOLE_LISTEN")]
    pub console_listen: Option<SocketAddr>,
    /// Proxies (CIDR, comma-separated) whose X-Forwarded-For names the
    /// client, for the login backoff and the request line [default: none].
    #[arg(long, env = "MEDIATOR_TRUSTED_PROXY", value_delimiter = ',')]
    pub trusted_proxy: Vec<String>,
    /// Store URL: sqlite:PATH, mysql://user:pw@host:port/db or memory [default: sqlite:./mediator.db].
    #[arg(long, env = "MEDIATOR_STORE")]
    pub store: Option<String>,
    /// File holding the HS256 secret [default: ./mediator.secret]; the secret
    /// itself may be given as MEDIATOR_SECRET instead.
    #[arg(long, env = "MEDIATOR_SECRET_FILE")]
    pub secret_file: Option<PathBuf>,
    /// PEM certificate chain: serve HTTPS (with --tls-key).
    #[arg(long, env = "MEDIATOR_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, env = "MEDIATOR_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Accept the original project's tokens, which name no node (senders are then unverified).
    // A bare switch, as documented, that also takes `=false`; unset stays
    // `None` so the TOML file can still decide.
    #[arg(
        long,
        env = "MEDIATOR_ALLOW_TOKENS_WITHOUT_SUB",
        num_args = 0..=1,
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub allow_tokens_without_sub: Option<bool>,
    /// How long a delivery may take, in milliseconds [default: 10000].
    #[arg(long, env = "MEDIATOR_DEADLINE_MS")]
    pub deadline_ms: Option<u64>,
    /// Largest request body in bytes [default: 8 MiB].
    #[arg(long, env = "MEDIATOR_MAX_BODY")]
    pub max_body: Option<usize>,
    /// Lease of a registration that names no ttl, in seconds [default: 3900].
    #[arg(long, env = "MEDIATOR_DEFAULT_TTL_S")]
    pub default_ttl_s: Option<u64>,
    /// Period of the lease sweep and routing-table refresh, in seconds [default: 5].
    #[arg(long, env = "MEDIATOR_SWEEP_EVERY_S")]
    pub sweep_every_s: Option<u64>,
    /// This instance's id in a formation (instances sharing one store),
    /// recorded for the nodes attached to it [default: `mediator-` and 16 random hex digits].
    #[arg(long, env = "MEDIATOR_INSTANCE_ID")]
    pub instance_id: Option<String>,
    /// Where the other instances of the formation reach this one: the base
    /// URL of its API [default: the --listen address when it names one;
    /// none when listening on every address].
    #[arg(long, env = "MEDIATOR_PEER_URL")]
    pub peer_url: Option<String>,
    /// How long in-flight requests may finish after SIGTERM/SIGINT, in seconds [default: 10].
    #[arg(long, env = "MEDIATOR_DRAIN_S")]
    pub drain_s: Option<u64>,
    /// Argon2 hash of the operator's password for the Basic admin login (from `mediator hash-password`).
    #[arg(long, env = "MEDIATOR_OPERATOR_PASSWORD_HASH")]
    pub operator_password_hash: Option<String>,
    /// Also accept the signing secret as the admin password, as the original does [default: false].
    #[arg(
        long,
        env = "MEDIATOR_SECRET_AS_PASSWORD",
        num_args = 0..=1,
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub secret_as_password: Option<bool>,
    /// Most deliveries in flight, all callers together; 503 past it [default: 10000].
    #[arg(long, env = "MEDIATOR_MAX_IN_FLIGHT")]
    pub max_in_flight: Option<usize>,
    /// Most deliveries in flight for one caller; 503 past it [default: 1000].
    #[arg(long, env = "MEDIATOR_MAX_IN_FLIGHT_PER_CALLER")]
    pub max_in_flight_per_caller: Option<usize>,
    /// Networks (CIDR, comma-separated) node callbacks may not point into,
    /// beside link-local ones and the mediator itself.
    #[arg(long, env = "MEDIATOR_ENDPOINT_DENY", value_delimiter = ',')]
    pub endpoint_deny: Vec<String>,
    /// Networks (CIDR, comma-separated) node callbacks must point into [default: any].
    #[arg(long, env = "MEDIATOR_ENDPOINT_ALLOW", value_delimiter = ',')]
    pub endpoint_allow: Vec<String>,
    /// Who reads /metrics: open, open-without-groups (group names for admins only) or admin [default: open].
    #[arg(long, env = "MEDIATOR_METRICS_ACCESS")]
    pub metrics_access: Option<MetricsAccess>,
    /// How long a client may take to send a request's head, from its first byte (from accept for a silent client), in milliseconds [default: 30000].
    #[arg(long, env = "MEDIATOR_HEADER_READ_TIMEOUT_MS")]
    pub header_read_timeout_ms: Option<u64>,
    /// How long a connection with no request in flight may stay silent, in milliseconds [default: 60000].
    #[arg(long, env = "MEDIATOR_IDLE_TIMEOUT_MS")]
    pub idle_timeout_ms: Option<u64>,
    /// Most client connections open at once; new ones get 503 past it [default: 10000,
    /// lowered to fit the descriptor limit].
    #[arg(long, env = "MEDIATOR_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Whether HTTP/1.1 calls to http:// nodes take the pass-through (heads read on the raw
    /// bytes, calls copied to pooled node connections); false serves every call with hyper
    /// [default: true].
    #[arg(long, env = "MEDIATOR_PASS_THROUGH")]
    pub pass_through: Option<bool>,
    /// Bytes of request bodies buffered at once, all requests together; 503 past it,
    /// at least --max-body [default: 256 MiB].
    #[arg(long, env = "MEDIATOR_BODY_BUDGET")]
    pub body_budget: Option<usize>,
    /// Most QUIC connections (attached nodes and callers) open at once [default: 10000].
    #[arg(long, env = "MEDIATOR_QUIC_MAX_CONNECTIONS")]
    pub quic_max_connections: Option<usize>,
    /// Most QUIC connections one identity may hold at once [default: 16].
    #[arg(long, env = "MEDIATOR_QUIC_MAX_CONNECTIONS_PER_IDENTITY")]
    pub quic_max_connections_per_identity: Option<usize>,
}

impl std::fmt::Debug for ServeFlags {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeFlags")
            .field("listen", &self.listen)
            .field("quic_listen", &self.quic_listen)
            .field("console_listen", &self.console_listen)
            .field("trusted_proxy", &self.trusted_proxy)
            .field(
                "store",
                &self.store.as_deref().map(crate::store::redact_password),
            )
            .field("secret_file", &self.secret_file)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field("allow_tokens_without_sub", &self.allow_tokens_without_sub)
            .field("deadline_ms", &self.deadline_ms)
            .field("max_body", &self.max_body)
            .field("default_ttl_s", &self.default_ttl_s)
            .field("sweep_every_s", &self.sweep_every_s)
            .field("instance_id", &self.instance_id)
            .field("peer_url", &self.peer_url)
            .field("drain_s", &self.drain_s)
            .field("max_in_flight", &self.max_in_flight)
            .field(
                "operator_password_hash",
                &self.operator_password_hash.is_some(),
            )
            .field("secret_as_password", &self.secret_as_password)
            .field("max_in_flight_per_caller", &self.max_in_flight_per_caller)
            .field("endpoint_deny", &self.endpoint_deny)
            .field("endpoint_allow", &self.endpoint_allow)
            .field("metrics_access", &self.metrics_access)
            .field("header_read_timeout_ms", &self.header_read_timeout_ms)
            .field("idle_timeout_ms", &self.idle_timeout_ms)
            .field("max_connections", &self.max_connections)
            .field("body_budget", &self.body_budget)
            .field("quic_max_connections", &self.quic_max_connections)
            .field(
                "quic_max_connections_per_identity",
                &self.quic_max_connections_per_identity,
            )
            .finish()
    }
}

/// Where the mediator secret is looked for, by the precedence of every
/// other setting: `MEDIATOR_SECRET`, then `--secret-file`
/// (`MEDIATOR_SECRET_FILE`), then the TOML file's `secret`, then its
/// `secret_file`, then [`DEFAULT_SECRET_FILE`]. Returns the secret itself,
/// when one was given, and the file to read (or create) otherwise.
///
/// Every command uses this, so `token`, `nodes` and `send` find the very
/// secret `serve` uses.
///
/// ```
/// use mediator_examples::config::{secret_location, FileConfig};
/// use std::path::PathBuf;
/// let file = FileConfig::parse("secret = \"s\"").unwrap();
/// assert_eq!(secret_location(None, None, &file).0.as_deref(), Some("s"));
/// let flag = Some(PathBuf::from("/run/secret"));
/// assert_eq!(secret_location(None, flag.clone(), &file), (None, PathBuf::from("/run/secret")));
/// assert_eq!(secret_location(Some("env".into()), flag, &file).0.as_deref(), Some("env"));
/// ```
pub fn secret_location(
    env_secret: Option<String>,
    secret_file: Option<PathBuf>,
    file: &FileConfig,
) -> (Option<String>, PathBuf) {
    let secret = match &secret_file {
        // A file named by flag or environment outranks anything in the TOML file.
        Some(_) => env_secret,
        None => env_secret.or_else(|| file.secret.clone()),
    };
    let path = secret_file
        .or_else(|| file.secret_file.clone())
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SECRET_FILE));
    (secret, path)
}

/// The platform's variables, as a twelve-factor host (Heroku and the like)
/// sets them: `PORT` listens on `0.0.0.0:PORT` and `DATABASE_URL`
/// (`sqlite:PATH`, `sqlite://PATH` or `mysql://…`) names the store.
///
/// They rank with the environment: below a flag and the `MEDIATOR_*`
/// variable of the same setting (already in `flags`), above the TOML file.
///
/// ```
/// use mediator_examples::config::{apply_platform_env, ServeFlags};
/// let mut flags = ServeFlags::default();
/// apply_platform_env(&mut flags, Some("5000".into()), Some("sqlite:/data/m.db".into())).unwrap();
/// assert_eq!(flags.listen.unwrap().to_string(), "0.0.0.0:5000");
/// assert_eq!(flags.store.as_deref(), Some("sqlite:/data/m.db"));
/// // A flag (or MEDIATOR_LISTEN) outranks PORT.
/// let mut flags = ServeFlags { listen: Some("127.0.0.1:7000".parse().unwrap()), ..ServeFlags::default() };
/// apply_platform_env(&mut flags, Some("5000".into()), None).unwrap();
/// assert_eq!(flags.listen.unwrap().port(), 7000);
/// assert!(apply_platform_env(&mut ServeFlags::default(), Some("http".into()), None).is_err());
/// ```
pub fn apply_platform_env(
    flags: &mut ServeFlags,
    port: Option<String>,
    database_url: Option<String>,
) -> Result<(), CliError> {
    if flags.listen.is_none() {
        if let Some(port) = port.filter(|p| !p.trim().is_empty()) {
            let port: u16 = port.trim().parse().map_err(|_| {
                CliError::Config(format!(
                    "PORT={port:?} is not a port number (1-65535); unset it or use --listen"
                ))
            })?;
            flags.listen = Some(SocketAddr::from(([0, 0, 0, 0], port)));
        }
    }
    if flags.store.is_none() {
        if let Some(url) = database_url.filter(|u| !u.trim().is_empty()) {
            // Checked here so the message names the variable it came from.
            url.parse::<StoreUrl>().map_err(|e| {
                CliError::Config(format!(
                    "DATABASE_URL: {e}",
                    e = e.to_string().trim_start_matches("configuration: ")
                ))
            })?;
            flags.store = Some(url);
        }
    }
    Ok(())
}

/// The TOML configuration file: the same settings as [`ServeFlags`], plus the secret.
#[derive(Default, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// See [`ServeFlags::listen`].
    pub listen: Option<SocketAddr>,
    /// See [`ServeFlags::quic_listen`].
    pub quic_listen: Option<SocketAddr>,
    /// See [`ServeFlags::console_listen`].
    pub console_listen: Option<SocketAddr>,
    /// See [`ServeFlags::trusted_proxy`].
    pub trusted_proxy: Option<Vec<String>>,
    /// See [`ServeFlags::store`].
    pub store: Option<String>,
    /// The HS256 secret itself (prefer `secret_file`).
    pub secret: Option<String>,
    /// See [`ServeFlags::secret_file`].
    pub secret_file: Option<PathBuf>,
    /// See [`ServeFlags::tls_cert`].
    pub tls_cert: Option<PathBuf>,
    /// See [`ServeFlags::tls_key`].
    pub tls_key: Option<PathBuf>,
    /// See [`ServeFlags::allow_tokens_without_sub`].
    pub allow_tokens_without_sub: Option<bool>,
    /// See [`ServeFlags::deadline_ms`].
    pub deadline_ms: Option<u64>,
    /// See [`ServeFlags::max_body`].
    pub max_body: Option<usize>,
    /// See [`ServeFlags::default_ttl_s`].
    pub default_ttl_s: Option<u64>,
    /// See [`ServeFlags::sweep_every_s`].
    pub sweep_every_s: Option<u64>,
    /// See [`ServeFlags::instance_id`].
    pub instance_id: Option<String>,
    /// See [`ServeFlags::peer_url`].
    pub peer_url: Option<String>,
    /// See [`ServeFlags::drain_s`].
    pub drain_s: Option<u64>,
    /// See [`ServeFlags::max_in_flight`].
    pub max_in_flight: Option<usize>,
    /// See [`ServeFlags::operator_password_hash`].
    pub operator_password_hash: Option<String>,
    /// See [`ServeFlags::secret_as_password`].
    pub secret_as_password: Option<bool>,
    /// See [`ServeFlags::max_in_flight_per_caller`].
    pub max_in_flight_per_caller: Option<usize>,
    /// See [`ServeFlags::endpoint_deny`].
    pub endpoint_deny: Option<Vec<String>>,
    /// See [`ServeFlags::endpoint_allow`].
    pub endpoint_allow: Option<Vec<String>>,
    /// See [`ServeFlags::metrics_access`].
    pub metrics_access: Option<String>,
    /// See [`ServeFlags::header_read_timeout_ms`].
    pub header_read_timeout_ms: Option<u64>,
    /// See [`ServeFlags::idle_timeout_ms`].
    pub idle_timeout_ms: Option<u64>,
    /// See [`ServeFlags::max_connections`].
    pub max_connections: Option<usize>,
    /// See [`ServeFlags::pass_through`].
    pub pass_through: Option<bool>,
    /// See [`ServeFlags::body_budget`].
    pub body_budget: Option<usize>,
    /// See [`ServeFlags::quic_max_connections`].
    pub quic_max_connections: Option<usize>,
    /// See [`ServeFlags::quic_max_connections_per_identity`].
    pub quic_max_connections_per_identity: Option<usize>,
    /// `text` or `json`: see the `mediator` binary's `--log-format`.
    pub log_format: Option<String>,
}

impl std::fmt::Debug for FileConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileConfig")
            .field("listen", &self.listen)
            .field(
                "store",
                &self.store.as_deref().map(crate::store::redact_password),
            )
            .field("secret", &Hidden(&self.secret))
            .field("secret_file", &self.secret_file)
            .finish_non_exhaustive()
    }
}

impl FileConfig {
    /// Reads `explicit` (which must exist), or `./mediator.toml` when present,
    /// or nothing.
    pub fn load(explicit: Option<&Path>) -> Result<FileConfig, CliError> {
        let path = match explicit {
            Some(path) => path.to_owned(),
            None if Path::new(DEFAULT_CONFIG_FILE).exists() => PathBuf::from(DEFAULT_CONFIG_FILE),
            None => return Ok(FileConfig::default()),
        };
        let text = std::fs::read_to_string(&path).map_err(|source| CliError::Io {
            path: path.clone(),
            source,
        })?;
        FileConfig::parse(&text).map_err(|e| CliError::Config(format!("{}: {e}", path.display())))
    }

    /// Parses TOML text.
    pub fn parse(text: &str) -> Result<FileConfig, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }
}

/// Everything `serve` needs, merged. `Debug` hides the secret.
#[derive(Clone)]
pub struct ServeSettings {
    /// Where to listen.
    pub listen: SocketAddr,
    /// Where the QUIC listener binds, when there is one.
    pub quic_listen: Option<SocketAddr>,
    /// Where the console's listener binds, when there is one.
    pub console_listen: Option<SocketAddr>,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNetwork>,
    /// Which store.
    pub store: StoreUrl,
    /// The secret from the environment or the TOML file, if any.
    pub secret: Option<String>,
    /// Where the secret is kept (or generated).
    pub secret_file: PathBuf,
    /// Certificate and key, when serving HTTPS.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Whether the original's tokens without `sub` are accepted.
    pub allow_tokens_without_sub: bool,
    /// Limits for the mediator.
    pub limits: Limits,
    /// How long to let in-flight requests finish on shutdown.
    pub drain: Duration,
    /// This instance's id in a formation; `None`: a random one.
    pub instance_id: Option<String>,
    /// Where its peers reach it; `None`: derived from the listener.
    pub peer_url: Option<String>,
    /// Where node callbacks may point.
    pub endpoints: EndpointPolicy,
    /// The networks denied beside the built-in ones, as configured.
    pub endpoint_deny: Vec<String>,
    /// The only networks allowed (empty: any), as configured.
    pub endpoint_allow: Vec<String>,
    /// Who reads `/metrics`.
    pub metrics_access: MetricsAccess,
    /// The operator password's hash, if configured.
    pub operator_password_hash: Option<String>,
    /// Whether the secret is also the admin password; `None`: not set (no).
    pub secret_as_password: Option<bool>,
    /// Client timeouts and the connection cap of the HTTP listener.
    pub connections: ConnectionSettings,
    /// The QUIC listener's limits, when there is one.
    pub quic_limits: QuicLimits,
    /// Which caps holding descriptors were configured; the others are
    /// defaults, lowered at start to fit the descriptor limit
    /// ([`descriptors`](crate::descriptors)).
    pub caps_given: CapsGiven,
}

/// Which of the caps that hold descriptors were configured rather than
/// left at their defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CapsGiven {
    /// `max_connections` was configured.
    pub max_connections: bool,
    /// `max_in_flight` was configured.
    pub max_in_flight: bool,
}

/// What the HTTP listener allows its clients: how long they may take to
/// send a request's head, how long they may stay idle, how many may be
/// connected at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionSettings {
    /// From a head's first byte (from accept for a silent client) to its end.
    pub header_read_timeout: Duration,
    /// Silence allowed with no request in flight.
    pub idle_timeout: Duration,
    /// Connections open at once; new ones are refused with 503 past it.
    pub max_connections: usize,
    /// Whether HTTP/1.1 calls take the listener's pass-through.
    pub pass_through: bool,
}

impl Default for ConnectionSettings {
    /// The listener's own defaults: 30 s, 60 s, 10 000, the pass-through on.
    fn default() -> Self {
        ConnectionSettings {
            header_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: 10_000,
            pass_through: true,
        }
    }
}

fn non_empty(list: Vec<String>) -> Option<Vec<String>> {
    (!list.is_empty()).then_some(list)
}

/// A timeout of `ms` milliseconds, refused when zero (it would close every connection at once).
fn positive_ms(name: &str, ms: u64) -> Result<Duration, CliError> {
    if ms == 0 {
        return Err(CliError::Config(format!("{name} must be above zero")));
    }
    Ok(Duration::from_millis(ms))
}

/// `n`, refused when zero (it would refuse every connection).
fn at_least_one(name: &str, n: usize) -> Result<usize, CliError> {
    if n == 0 {
        return Err(CliError::Config(format!("{name} must be at least 1")));
    }
    Ok(n)
}

fn network(text: &str) -> Result<IpNetwork, CliError> {
    text.parse()
        .map_err(|e| CliError::Config(format!("endpoint network {text:?}: {e}")))
}

/// Shows whether a secret is set without showing it.
struct Hidden<'a>(&'a Option<String>);

impl std::fmt::Debug for Hidden<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "<set>" } else { "<unset>" })
    }
}

impl std::fmt::Debug for ServeSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl ServeSettings {
    /// Merges flags (already holding environment values) over the file over defaults.
    pub fn merge(
        flags: ServeFlags,
        file: FileConfig,
        env_secret: Option<String>,
    ) -> Result<ServeSettings, CliError> {
        let (secret, secret_file) = secret_location(env_secret, flags.secret_file, &file);
        let listen = match flags.listen.or(file.listen) {
            Some(addr) => addr,
            None => DEFAULT_LISTEN
                .parse()
                .map_err(|e| CliError::Config(format!("default listen address: {e}")))?,
        };
        let store: StoreUrl = flags
            .store
            .or(file.store)
            .as_deref()
            .unwrap_or(DEFAULT_STORE)
            .parse()?;
        let tls = match (
            flags.tls_cert.or(file.tls_cert),
            flags.tls_key.or(file.tls_key),
        ) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            _ => {
                return Err(CliError::Config(
                    "TLS needs both a certificate (tls_cert) and a key (tls_key)".into(),
                ))
            }
        };
        let instance_id = flags.instance_id.or(file.instance_id);
        if let Some(id) = &instance_id {
            mediator_core::formation::check_instance_id(id)
                .map_err(|e| CliError::Config(format!("instance_id {id:?}: {e}")))?;
        }
        let peer_url = flags.peer_url.or(file.peer_url);
        if let Some(url) = &peer_url {
            let parsed: http::Uri = url
                .parse()
                .map_err(|e| CliError::Config(format!("peer_url {url:?} is not a URL: {e}")))?;
            if !matches!(parsed.scheme_str(), Some("http" | "https")) || parsed.host().is_none() {
                return Err(CliError::Config(format!(
                    "peer_url {url:?} must be an http:// or https:// URL with a host,                      where the other instances reach this one"
                )));
            }
        }
        let mut limits = Limits::default();
        if let Some(ms) = flags.deadline_ms.or(file.deadline_ms) {
            limits.deadline = Duration::from_millis(ms);
        }
        if let Some(bytes) = flags.max_body.or(file.max_body) {
            limits.max_body = bytes;
        }
        if let Some(s) = flags.default_ttl_s.or(file.default_ttl_s) {
            limits.default_ttl = Duration::from_secs(s);
        }
        if let Some(s) = flags.sweep_every_s.or(file.sweep_every_s) {
            limits.sweep_every = Duration::from_secs(s);
        }
        let max_in_flight = flags.max_in_flight.or(file.max_in_flight);
        if let Some(n) = max_in_flight {
            limits.max_in_flight = n;
        }
        if let Some(bytes) = flags.body_budget.or(file.body_budget) {
            // A budget below the largest body would refuse that body even
            // on an idle mediator.
            if bytes < limits.max_body {
                return Err(CliError::Config(format!(
                    "body_budget ({bytes} bytes) must be at least max_body ({} bytes): \
                     the budget holds every body being read at once",
                    limits.max_body
                )));
            }
            limits.body_budget = bytes;
        }
        let mut quic_limits = QuicLimits::default();
        if let Some(n) = flags.quic_max_connections.or(file.quic_max_connections) {
            quic_limits.max_connections = at_least_one("quic_max_connections", n)?;
        }
        if let Some(n) = flags
            .quic_max_connections_per_identity
            .or(file.quic_max_connections_per_identity)
        {
            quic_limits.max_connections_per_identity =
                at_least_one("quic_max_connections_per_identity", n)?;
        }
        if let Some(n) = flags
            .max_in_flight_per_caller
            .or(file.max_in_flight_per_caller)
        {
            limits.max_in_flight_per_caller = n;
        }
        let mut endpoints = EndpointPolicy::default();
        // Flags, when given, replace the file's list rather than add to it,
        // as every other setting does.
        let endpoint_deny = non_empty(flags.endpoint_deny)
            .or(file.endpoint_deny)
            .unwrap_or_default();
        for text in &endpoint_deny {
            endpoints = endpoints.deny(network(text)?);
        }
        let endpoint_allow = non_empty(flags.endpoint_allow)
            .or(file.endpoint_allow)
            .unwrap_or_default();
        for text in &endpoint_allow {
            endpoints = endpoints.allow(network(text)?);
        }
        let trusted_proxies = non_empty(flags.trusted_proxy)
            .or(file.trusted_proxy)
            .unwrap_or_default()
            .iter()
            .map(|text| {
                text.parse::<IpNetwork>().map_err(|e| {
                    CliError::Config(format!(
                        "trusted proxy {text:?}: {e}; give a network in CIDR form, like 10.0.0.5/32"
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let metrics_access = match (flags.metrics_access, file.metrics_access) {
            (Some(access), _) => access,
            (None, Some(text)) => text
                .parse()
                .map_err(|e| CliError::Config(format!("metrics_access: {e}")))?,
            (None, None) => MetricsAccess::default(),
        };
        let mut connections = ConnectionSettings::default();
        if let Some(ms) = flags.header_read_timeout_ms.or(file.header_read_timeout_ms) {
            connections.header_read_timeout = positive_ms("header_read_timeout_ms", ms)?;
        }
        if let Some(ms) = flags.idle_timeout_ms.or(file.idle_timeout_ms) {
            connections.idle_timeout = positive_ms("idle_timeout_ms", ms)?;
        }
        let max_connections = flags.max_connections.or(file.max_connections);
        if let Some(n) = max_connections {
            if n == 0 {
                return Err(CliError::Config(
                    "max_connections must be at least 1".into(),
                ));
            }
            connections.max_connections = n;
        }
        if let Some(on) = flags.pass_through.or(file.pass_through) {
            connections.pass_through = on;
        }
        Ok(ServeSettings {
            connections,
            quic_limits,
            caps_given: CapsGiven {
                max_connections: max_connections.is_some(),
                max_in_flight: max_in_flight.is_some(),
            },
            operator_password_hash: flags.operator_password_hash.or(file.operator_password_hash),
            secret_as_password: flags.secret_as_password.or(file.secret_as_password),
            endpoints,
            endpoint_deny,
            endpoint_allow,
            metrics_access,
            listen,
            quic_listen: flags.quic_listen.or(file.quic_listen),
            console_listen: flags.console_listen.or(file.console_listen),
            trusted_proxies,
            store,
            secret,
            secret_file,
            tls,
            allow_tokens_without_sub: flags
                .allow_tokens_without_sub
                .or(file.allow_tokens_without_sub)
                .unwrap_or(false),
            limits,
            drain: Duration::from_secs(flags.drain_s.or(file.drain_s).unwrap_or(10)),
            instance_id,
            peer_url,
        })
    }

    /// A one-line description for the start-up log, without secrets.
    pub fn describe(&self) -> String {
        format!(
            "listen={} quic_listen={} console_listen={} tls={} store={} secret={} allow_tokens_without_sub={} deadline={:?} max_body={} default_ttl={:?} body_budget={} max_connections={} max_in_flight={}{}",
            self.listen,
            self.quic_listen
                .map_or_else(|| "off".to_owned(), |addr| addr.to_string()),
            self.console_listen
                .map_or_else(|| "off".to_owned(), |addr| addr.to_string()),
            self.tls.is_some(),
            self.store,
            match &self.secret {
                Some(_) => "<given, hidden>".to_owned(),
                None => format!("<from {}>", self.secret_file.display()),
            },
            self.allow_tokens_without_sub,
            self.limits.deadline,
            self.limits.max_body,
            self.limits.default_ttl,
            self.limits.body_budget,
            self.connections.max_connections,
            self.limits.max_in_flight,
            match self.quic_listen {
                Some(_) => format!(
                    " quic_max_connections={} quic_max_connections_per_identity={}",
                    self.quic_limits.max_connections,
                    self.quic_limits.max_connections_per_identity
                ),
                None => String::new(),
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_beat_the_file_which_beats_defaults() {
        let file = FileConfig::parse(
            "listen = \"127.0.0.1:9000\"\nstore = \"memory\"\ndeadline_ms = 500\nsecret = \"from-file-secret-at-least-32-characters\"",
        )
        .unwrap();
        let flags = ServeFlags {
            listen: Some("127.0.0.1:7000".parse().unwrap()),
            ..ServeFlags::default()
        };
        let s = ServeSettings::merge(flags, file, None).unwrap();
        assert_eq!(s.listen.port(), 7000);
        assert_eq!(s.quic_listen, None);
        let file = FileConfig::parse("quic_listen = \"127.0.0.1:4433\"").unwrap();
        let from_file = ServeSettings::merge(ServeFlags::default(), file.clone(), None).unwrap();
        assert_eq!(from_file.quic_listen.map(|a| a.port()), Some(4433));
        let flags = ServeFlags {
            quic_listen: Some("127.0.0.1:5544".parse().unwrap()),
            ..ServeFlags::default()
        };
        let s2 = ServeSettings::merge(flags, file, None).unwrap();
        assert_eq!(s2.quic_listen.map(|a| a.port()), Some(5544));
        assert!(s2.describe().contains("quic_listen=127.0.0.1:5544"));
        assert_eq!(s.store, StoreUrl::Memory);
        assert_eq!(s.limits.deadline, Duration::from_millis(500));
        assert_eq!(s.limits.max_body, Limits::default().max_body);
        assert_eq!(
            s.secret.as_deref(),
            Some("from-file-secret-at-least-32-characters")
        );
        assert!(
            !s.describe().contains("from-file-secret"),
            "{}",
            s.describe()
        );
        let env = ServeSettings::merge(
            ServeFlags::default(),
            FileConfig::default(),
            Some("env".into()),
        )
        .unwrap();
        assert_eq!(env.secret.as_deref(), Some("env"));
        assert_eq!(env.store, StoreUrl::Sqlite("./mediator.db".into()));
    }

    #[derive(clap::Parser)]
    struct Serve {
        #[command(flatten)]
        flags: ServeFlags,
    }

    fn parse(args: &[&str]) -> ServeFlags {
        use clap::Parser;
        Serve::try_parse_from(std::iter::once("serve").chain(args.iter().copied()))
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
            .flags
    }

    #[test]
    fn endpoint_networks_come_from_flags_or_the_file() {
        let file = FileConfig::parse(
            "endpoint_deny = [\"127.0.0.0/8\"]\nendpoint_allow = [\"10.0.0.0/8\", \"127.0.0.0/8\"]",
        )
        .unwrap();
        let s = ServeSettings::merge(ServeFlags::default(), file, None).unwrap();
        let at = |url: &str| {
            s.endpoints
                .check(&mediator_core::Endpoint::http(url).unwrap())
        };
        assert!(at("http://127.0.0.1:9000").is_err());
        assert!(at("http://10.0.0.1:9000").is_ok());
        assert!(at("http://192.168.0.1:9000").is_err());
        assert!(at("http://169.254.169.254").is_err());
        let flags = parse(&["--endpoint-deny", "10.0.0.0/8,192.168.0.0/16"]);
        assert_eq!(flags.endpoint_deny.len(), 2);
        let s = ServeSettings::merge(flags, FileConfig::default(), None).unwrap();
        let at = |url: &str| {
            s.endpoints
                .check(&mediator_core::Endpoint::http(url).unwrap())
        };
        assert!(at("http://10.0.0.1:9000").is_err());
        assert!(at("http://127.0.0.1:9000").is_ok());
        let file = FileConfig::parse("max_in_flight_per_caller = 7").unwrap();
        let s = ServeSettings::merge(ServeFlags::default(), file, None).unwrap();
        assert_eq!(s.limits.max_in_flight_per_caller, 7);
        let file = FileConfig::parse("metrics_access = \"admin\"").unwrap();
        let s = ServeSettings::merge(ServeFlags::default(), file, None).unwrap();
        assert_eq!(s.metrics_access, MetricsAccess::Admin);
        let flags = parse(&["--metrics-access", "open-without-groups"]);
        assert_eq!(flags.metrics_access, Some(MetricsAccess::OpenWithoutGroups));
        let bad = ServeFlags {
            endpoint_allow: vec!["10.0.0.0/99".into()],
            ..ServeFlags::default()
        };
        assert!(ServeSettings::merge(bad, FileConfig::default(), None).is_err());
    }

    #[test]
    fn connection_limits_come_from_flags_or_the_file_and_zero_is_refused() {
        let defaults = ServeSettings::merge(ServeFlags::default(), FileConfig::default(), None)
            .unwrap()
            .connections;
        assert_eq!(defaults, ConnectionSettings::default());
        let file = FileConfig::parse(
            "header_read_timeout_ms = 700\nidle_timeout_ms = 900\nmax_connections = 40",
        )
        .unwrap();
        let flags = parse(&["--idle-timeout-ms", "1500"]);
        let s = ServeSettings::merge(flags, file, None).unwrap().connections;
        assert_eq!(s.header_read_timeout, Duration::from_millis(700));
        assert_eq!(s.idle_timeout, Duration::from_millis(1500));
        assert_eq!(s.max_connections, 40);
        for bad in [
            ["--max-connections", "0"],
            ["--idle-timeout-ms", "0"],
            ["--header-read-timeout-ms", "0"],
        ] {
            let err = ServeSettings::merge(parse(&bad), FileConfig::default(), None).unwrap_err();
            assert!(err.to_string().contains("must be"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn body_budget_and_quic_caps_come_from_flags_or_the_file() {
        let defaults =
            ServeSettings::merge(ServeFlags::default(), FileConfig::default(), None).unwrap();
        assert_eq!(defaults.limits.body_budget, Limits::default().body_budget);
        assert_eq!(defaults.quic_limits, QuicLimits::default());
        assert_eq!(defaults.caps_given, CapsGiven::default());
        let file = FileConfig::parse(
            "body_budget = 16777216\nquic_max_connections = 300\nquic_max_connections_per_identity = 4\nmax_in_flight = 50",
        )
        .unwrap();
        let s = ServeSettings::merge(ServeFlags::default(), file.clone(), None).unwrap();
        assert_eq!(s.limits.body_budget, 16_777_216);
        assert_eq!(s.quic_limits.max_connections, 300);
        assert_eq!(s.quic_limits.max_connections_per_identity, 4);
        assert_eq!(
            s.caps_given,
            CapsGiven {
                max_connections: false,
                max_in_flight: true
            }
        );
        assert!(
            s.describe().contains("body_budget=16777216"),
            "{}",
            s.describe()
        );
        let flags = parse(&[
            "--body-budget",
            "9000000",
            "--quic-max-connections",
            "20",
            "--quic-max-connections-per-identity",
            "2",
            "--max-connections",
            "30",
            "--quic-listen",
            "127.0.0.1:4433",
        ]);
        let s = ServeSettings::merge(flags, file, None).unwrap();
        assert_eq!(s.limits.body_budget, 9_000_000);
        assert_eq!(s.quic_limits.max_connections, 20);
        assert_eq!(s.quic_limits.max_connections_per_identity, 2);
        assert!(s.caps_given.max_connections && s.caps_given.max_in_flight);
        assert!(
            s.describe()
                .contains("quic_max_connections=20 quic_max_connections_per_identity=2"),
            "{}",
            s.describe()
        );
        // The budget must hold at least the largest body.
        let err = ServeSettings::merge(
            parse(&["--max-body", "2000", "--body-budget", "1000"]),
            FileConfig::default(),
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("body_budget (1000 bytes) must be at least max_body (2000 bytes)"),
            "{err}"
        );
        for bad in [
            ["--quic-max-connections", "0"],
            ["--quic-max-connections-per-identity", "0"],
        ] {
            let err = ServeSettings::merge(parse(&bad), FileConfig::default(), None).unwrap_err();
            assert!(err.to_string().contains("at least 1"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn allow_tokens_without_sub_is_a_plain_switch() {
        // As the README writes it: a bare flag.
        assert_eq!(
            parse(&["--allow-tokens-without-sub"]).allow_tokens_without_sub,
            Some(true)
        );
        assert_eq!(
            parse(&["--allow-tokens-without-sub=false"]).allow_tokens_without_sub,
            Some(false)
        );
        assert_eq!(
            parse(&["--allow-tokens-without-sub", "true", "--store", "memory"])
                .allow_tokens_without_sub,
            Some(true)
        );
        assert_eq!(
            parse(&["--allow-tokens-without-sub", "--store", "memory"]).allow_tokens_without_sub,
            Some(true)
        );
        assert_eq!(
            parse(&["--allow-tokens-without-sub=1"]).allow_tokens_without_sub,
            Some(true)
        );
        // Unset, so the TOML file still decides.
        assert_eq!(parse(&[]).allow_tokens_without_sub, None);
    }

    #[test]
    fn a_secret_file_flag_beats_a_secret_in_the_toml_file() {
        let file =
            FileConfig::parse("secret = \"from-file-secret-at-least-32-characters\"").unwrap();
        let flags = ServeFlags {
            secret_file: Some("/run/secrets/mediator".into()),
            ..ServeFlags::default()
        };
        let s = ServeSettings::merge(flags, file.clone(), None).unwrap();
        assert_eq!(s.secret, None, "the TOML secret shadowed --secret-file");
        assert_eq!(s.secret_file, PathBuf::from("/run/secrets/mediator"));
        // MEDIATOR_SECRET still comes first; without flags the TOML decides.
        let s =
            ServeSettings::merge(ServeFlags::default(), file.clone(), Some("env".into())).unwrap();
        assert_eq!(s.secret.as_deref(), Some("env"));
        let s = ServeSettings::merge(ServeFlags::default(), file, None).unwrap();
        assert_eq!(
            s.secret.as_deref(),
            Some("from-file-secret-at-least-32-characters")
        );
    }

    #[test]
    fn debug_output_hides_the_store_password() {
        let flags = ServeFlags {
            store: Some("mysql://mediator:hunter2@db:3306/mediator".into()),
            ..ServeFlags::default()
        };
        let shown = format!("{flags:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(
            shown.contains("mysql://mediator:***@db:3306/mediator"),
            "{shown}"
        );
        let settings = ServeSettings::merge(flags, FileConfig::default(), None).unwrap();
        let shown = format!("{:?} {:?}", settings, settings.store);
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn unknown_keys_and_half_tls_are_refused() {
        assert!(FileConfig::parse("lisen = \"x\"")
            .unwrap_err()
            .contains("lisen"));
        let file = FileConfig {
            tls_cert: Some("c.pem".into()),
            ..FileConfig::default()
        };
        let err = ServeSettings::merge(ServeFlags::default(), file, None).unwrap_err();
        assert!(err.to_string().contains("tls_key"), "{err}");
    }
}
