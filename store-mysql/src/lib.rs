//! A MySQL (or MariaDB) [`Registry`](mediator_core::Registry) for Mediator,
//! for several mediator instances sharing one database.
//!
//! # Use
//!
//! ```no_run
//! use mediator_core::{Endpoint, NodeKey, Registration, Registry, Timestamp};
//! use mediator_store_mysql::{MysqlConfig, MysqlRegistry};
//! use std::time::Duration;
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! // Defaults: a pool of 10, 5 s per call, 10 s to open.
//! let registry = MysqlRegistry::connect("mysql://mediator:secret@db.internal:3306/mediator").await?;
//!
//! // Or tuned:
//! let registry = MysqlRegistry::with_config(
//!     MysqlConfig::new("mysql://mediator:secret@db.internal:3306/mediator")
//!         .with_pool_size(20)
//!         .with_op_timeout(Duration::from_secs(2))
//!         .with_connect_timeout(Duration::from_secs(5)),
//! )
//! .await?;
//!
//! let key = NodeKey::named("users", "api")?;
//! let endpoint = Endpoint::http("http://10.0.0.5:9000")?;
//! registry
//!     .upsert(Registration::new(key.clone(), endpoint, Duration::from_secs(30)), Timestamp::now())
//!     .await?;
//! assert!(registry.get(&key).await?.is_some());
//! registry.close().await?;
//! # Ok(()) }
//! ```
//!
//! The URL is `mysql://user:password@host:port/database` with the query
//! parameters of `mysql_async`; the database must exist (the store creates
//! its tables in it) and the user needs `CREATE`, `SELECT`, `INSERT`,
//! `UPDATE` and `DELETE` on it. Connections go to the host and port the URL
//! names, also on localhost (the driver's switch to the Unix socket is
//! turned off, so a proxy or tunnel in front of the server stays in the
//! path). Every session runs in strict SQL mode: a value too long for its
//! column is refused, never cut short.
//!
//! # Bounded time
//!
//! Opening (connecting and migrating) takes at most
//! [`MysqlConfig::connect_timeout`]; each call, waiting for a pooled
//! connection and reconnecting included, at most [`MysqlConfig::op_timeout`].
//! A server that refuses connections fails a call at once, a silent one
//! when the bound is reached, with
//! a [`StoreError`](mediator_core::StoreError) marked temporary, such as
//! `mysql at 127.0.0.1:3306 unreachable: no answer to get within 5s`. Idle
//! connections are checked before reuse and broken ones dropped, so calls
//! succeed again as soon as the server is back; a connection cut while it
//! sat idle may fail one call before it is noticed. Calls whose transaction
//! the server picked as a deadlock victim run again by themselves.
//!
//! # Schema
//!
//! One table, `nodes`, with the same meaning as the SQLite store's:
//!
//! | column | type | |
//! |---|---|---|
//! | `id` | `BIGINT UNSIGNED AUTO_INCREMENT` | primary key; never reused |
//! | `group_name` | `VARCHAR(50)` `utf8mb4_bin` | |
//! | `node_name` | `VARCHAR(50)` `utf8mb4_bin` | `''` for the group's unnamed node |
//! | `endpoint` | `VARCHAR(2100)` | `http(s)://...` or `attached:<instance>` |
//! | `meta` | `TEXT` | a JSON object of strings, at most 64 KiB |
//! | `created_ms`, `updated_ms`, `lease_until_ms` | `BIGINT` | ms since the epoch; `updated_ms` may be `NULL` |
//!
//! with `UNIQUE (group_name, node_name)` and an index on `lease_until_ms`.
//! Names compare byte for byte, so `A` and `a` are two nodes. An upsert is
//! one `INSERT ... ON DUPLICATE KEY UPDATE` read back in the same
//! transaction, so concurrent upserts of one key never make two rows and
//! keep its id and `created`; eviction locks the expired rows, deletes them
//! by id and returns exactly their keys.
//!
//! The schema is versioned: [`SCHEMA_VERSION`] is the version this build
//! writes, the applied versions are rows of `mediator_schema`, and opening
//! applies the missing steps (embedded SQL) under a named lock, so several
//! instances opening a new database at once migrate it once. A database at
//! a newer version is refused with [`MysqlError::SchemaTooNew`], and an
//! unrelated `nodes` table already there makes opening fail rather than be
//! adopted.
//!
//! # Import from the original project
//!
//! [`import_original_clusters`] copies the original Node.js mediator's
//! `clusters` table (`id, cluster, node, domain, port, created, updated`)
//! into any registry: `cluster` becomes the group, `node` the name (`NULL`:
//! the unnamed node), the endpoint is `domain` plus `:port` unless the port
//! is 80, and the meta keeps `imported_from_id`, `original_created` and
//! `original_updated`. Rows the mediator cannot take (invalid names, a
//! domain without `http://` or `https://`, a bad port) and rows already
//! registered are skipped, each with its reason in the [`ImportReport`].
//! The source is only read. From the command line:
//!
//! ```text
//! mediator import-clusters --from mysql://user@host/db [--table clusters] --store <store url>
//! ```
//!
//! # Performance
//!
//! `cargo bench -p mediator-store-mysql` (`benches/registry.rs`) with
//! 100,000 nodes registered (100 groups of 1,000), on 2 shared cores
//! against a local MariaDB 10.11 with its default durability (a log flush
//! per commit), pool of 16, while other builds ran on the same machine:
//!
//! | call | time per call: median of 3 runs (range) | calls per second |
//! |---|---|---|
//! | `upsert` of an existing node, one caller | 1.3 ms (0.49 – 4.2 ms) | ≈ 770 (240 – 2,000) |
//! | `upsert` of existing nodes, 16 callers at once | 4.5 ms per 16 (4.4 – 5.2 ms) | ≈ 3,500 |
//! | `renew`, one caller | 0.34 ms (0.22 – 1.5 ms) | ≈ 3,000 (650 – 4,500) |
//! | `get` by key | 82 µs (70 – 99 µs) | ≈ 12,000 |
//! | `evict_expired` with nothing due | 0.20 ms (0.15 – 0.20 ms) | ≈ 5,000 |
//! | `list` of one group of 1,000 | 4.7 ms (4.1 – 4.9 ms) | ≈ 210 (210,000 nodes/s) |
//!
//! Registering the 100,000 nodes with multi-row inserts took 1.3 – 2.7 s.
//!
//! Writes are bound by the server's commit flush; concurrent writers share
//! flushes, so throughput grows with the number of callers.
//!
//! # Tests
//!
//! The tests need a server: `MEDIATOR_TEST_MYSQL_URL` (default
//! `mysql://root@127.0.0.1:3306/test`), whose user may create databases;
//! each test works in a database of its own and drops it. Without a server
//! they fail and say how to start one (`start-stop-daemon --start --oknodo
//! --background --exec /usr/sbin/mariadbd`); `MEDIATOR_SKIP_MYSQL=1` skips
//! them instead.

#![warn(clippy::unwrap_used)]

mod config;
mod import;
mod migrations;
mod registry;

use std::time::Duration;

pub use config::{MysqlConfig, MAX_POOL_SIZE};
pub use import::{import_original_clusters, ImportReport, Imported, Skipped, IMPORT_READ_TIMEOUT};
pub use migrations::SCHEMA_VERSION;
pub use registry::MysqlRegistry;

/// Everything that can go wrong in this store.
///
/// Converts into a [`mediator_core::StoreError`] that keeps it as its source
/// and is temporary when [`is_transient`](MysqlError::is_transient) (or, for
/// an import whose target store failed, into that store's own error).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MysqlError {
    /// The URL could not be parsed or names no database.
    #[error("invalid mysql url: {0}")]
    Url(String),
    /// A setting is out of range.
    #[error("invalid mysql configuration: {0}")]
    Config(String),
    /// The server could not be reached, or the connection broke.
    #[error("mysql at {addr} unreachable: {reason}")]
    Unreachable {
        /// `host:port` of the server.
        addr: String,
        /// What the driver saw.
        reason: String,
    },
    /// The server did not answer within the time limit.
    #[error("mysql at {addr} unreachable: no answer to {op} within {after:?}")]
    Timeout {
        /// `host:port` of the server.
        addr: String,
        /// The operation that waited.
        op: &'static str,
        /// How long it waited.
        after: Duration,
    },
    /// The server refused a statement.
    #[error("mysql at {addr} refused {op}: {source}")]
    Server {
        /// `host:port` of the server.
        addr: String,
        /// The operation that was refused.
        op: &'static str,
        /// The server's error, with its code.
        source: mysql_async::ServerError,
    },
    /// The driver failed for a reason other than the connection.
    #[error("mysql driver failed during {op} with {addr}: {reason}")]
    Driver {
        /// `host:port` of the server.
        addr: String,
        /// The operation that failed.
        op: &'static str,
        /// What the driver said.
        reason: String,
    },
    /// The database was written by a newer version of this crate.
    #[error(
        "mysql database {database} has schema version {found}, newer than version {supported} \
         that this build knows; upgrade the mediator, or point it at another database"
    )]
    SchemaTooNew {
        /// The database.
        database: String,
        /// The version found in its `mediator_schema` table.
        found: u64,
        /// [`SCHEMA_VERSION`].
        supported: u32,
    },
    /// Bringing the schema up to date failed.
    #[error("mysql database {database} could not be migrated: {reason}")]
    Migration {
        /// The database.
        database: String,
        /// Why.
        reason: String,
    },
    /// A stored row cannot be read back as a node (written by something else).
    #[error("mysql at {addr}: table nodes holds a row that is not a valid node: {reason}")]
    Corrupt {
        /// `host:port` of the server.
        addr: String,
        /// Which row and what is wrong with it.
        reason: String,
    },
    /// An import was given a table name that is not a plain identifier.
    #[error("invalid table name {0:?}: must match ^[A-Za-z0-9_]{{1,64}}$")]
    TableName(String),
    /// The source table of an import lacks a column the original had, or
    /// holds a value of the wrong type.
    #[error("table {table} is not the original's clusters table: {reason}")]
    SourceTable {
        /// The table read.
        table: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The store an import writes into failed; rows before this one were
    /// imported.
    #[error("import stopped at original id {original_id}: the target store failed: {source}")]
    Target {
        /// The `id` of the row being imported.
        original_id: u64,
        /// The target store's error.
        source: mediator_core::StoreError,
    },
}

impl MysqlError {
    /// Classifies a driver error seen by `op` against the server at `addr`.
    pub(crate) fn driver(addr: &str, op: &'static str, error: mysql_async::Error) -> Self {
        use mysql_async::{DriverError, Error};
        match error {
            Error::Server(source) => MysqlError::Server {
                addr: addr.to_owned(),
                op,
                source,
            },
            Error::Url(e) => MysqlError::Url(e.to_string()),
            Error::Io(e) => MysqlError::Unreachable {
                addr: addr.to_owned(),
                reason: format!("{op} failed: {e}"),
            },
            Error::Driver(
                e @ (DriverError::ConnectionClosed
                | DriverError::PoolDisconnected
                | DriverError::PacketOutOfOrder
                | DriverError::UnexpectedPacket { .. }),
            ) => MysqlError::Unreachable {
                addr: addr.to_owned(),
                reason: format!("{op} failed: {e}"),
            },
            other => MysqlError::Driver {
                addr: addr.to_owned(),
                op,
                reason: other.to_string(),
            },
        }
    }

    /// Whether retrying the same call later may succeed (the server was
    /// unreachable or slow), as opposed to a refusal or bad data.
    ///
    /// ```
    /// use mediator_store_mysql::MysqlError;
    /// use std::time::Duration;
    /// let e = MysqlError::Timeout { addr: "db:3306".into(), op: "get", after: Duration::from_secs(5) };
    /// assert!(e.is_transient());
    /// assert!(e.to_string().starts_with("mysql at db:3306 unreachable"));
    /// assert!(!MysqlError::Config("pool_size".into()).is_transient());
    /// ```
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            MysqlError::Unreachable { .. } | MysqlError::Timeout { .. }
        )
    }
}

impl From<MysqlError> for mediator_core::StoreError {
    fn from(error: MysqlError) -> Self {
        match error {
            // The target store's own error is already what a caller of the
            // core expects; wrapping it would hide whether it is temporary.
            MysqlError::Target { source, .. } => source,
            other if other.is_transient() => {
                mediator_core::StoreError::temporary("MySQL store", other)
            }
            other => mediator_core::StoreError::permanent("MySQL store", other),
        }
    }
}

impl From<MysqlError> for mediator_core::Error {
    fn from(error: MysqlError) -> Self {
        mediator_core::Error::Store(error.into())
    }
}
