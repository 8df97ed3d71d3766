//! A MySQL (or MariaDB) [`Registry`](mediator_core::Registry) for Mediator,
//! for several mediator instances sharing one database: the nodes, a feed of
//! their changes that every instance follows, and the instances themselves
//! with their leases (see [Formation](#formation-the-feed-and-the-instances)).
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
//! `nodes` has the same meaning as the SQLite store's:
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
//! with `UNIQUE (group_name, node_name)`, an index on `lease_until_ms` and
//! one on the first 80 characters of `endpoint` (which finds the nodes
//! attached to an instance). Names compare byte for byte, so `A` and `a` are
//! two nodes. An upsert is one `INSERT ... ON DUPLICATE KEY UPDATE` read
//! back in the same transaction, so concurrent upserts of one key never make
//! two rows and keep its id and `created`; eviction locks the expired rows
//! (through the lease index, so only them), deletes them by id and returns
//! exactly their keys.
//!
//! The feed and the instances (version 2):
//!
//! | table | columns | |
//! |---|---|---|
//! | `changes` | `position BIGINT UNSIGNED` primary key, `kind ENUM('put', 'removed')`, `node_id`, `group_name`, `node_name` | one row per change to `nodes`; the key is kept so that a put whose node has gone can be read as its removal |
//! | `feed` | `id` (always 1), `head`, `compacted` (`BIGINT UNSIGNED`) | one row: the newest position handed out and the newest compacted away |
//! | `instances` | `id VARCHAR(64)` `ascii_bin` primary key, `peer VARCHAR(2100)`, `started_ms`, `heartbeat_ms`, `lease_until_ms` (`BIGINT`) | indexed by `lease_until_ms` |
//!
//! The schema is versioned: [`SCHEMA_VERSION`] is the version this build
//! writes, the applied versions are rows of `mediator_schema`, and opening
//! applies the missing steps (embedded SQL) under a named lock, so several
//! instances opening a new database at once migrate it once. A database at
//! a newer version is refused with [`MysqlError::SchemaTooNew`], and an
//! unrelated `nodes` table already there makes opening fail rather than be
//! adopted. A database of version 1 keeps its nodes, which become the feed's
//! first changes (positions 1, 2, ... in id order), so a follower reading
//! the feed from 0 reaches them. Instances of a build before version 2 write
//! no changes: upgrade every instance sharing a database together.
//!
//! # Formation: the feed and the instances
//!
//! Every write ([`upsert`](mediator_core::Registry::upsert),
//! [`renew`](mediator_core::Registry::renew), the removals, an eviction,
//! and the removals of the nodes attached to an instance that retires or
//! whose lease ran out) appends its changes to `changes` in the same
//! transaction. Their positions are taken from `feed.head`, raised under
//! that row's lock, which the transaction holds until it commits: positions
//! commit in the order they were handed out, and have no holes (an
//! `AUTO_INCREMENT` id is handed out before commit, so 11 could commit
//! before 10 and a follower that read 11 would never read 10). The raise,
//! the inserts and the commit go to the server as one batch (up to 500
//! changes; a larger eviction sends 500 a batch), so the row is held only
//! while the server runs them, not across a round trip to the client. [`version`](mediator_core::Registry::version) is `feed.head`.
//!
//! [`changes`](mediator_core::Registry::changes) reads, in one statement,
//! the feed's row and the changes after the position asked from, joined to
//! `nodes`: a put gives the node as it is when read, and a put whose node
//! has gone since is given as its removal. A page is the run of positions
//! that follows the one asked from and stops before one its read does not
//! show, so that a follower reads it next time rather than skip it; a
//! position gone for good (compacted, or deleted by hand) is reported as a
//! gap, as is any position asked from below `feed.compacted`.
//! [`compact_changes`](mediator_core::Registry::compact_changes) raises
//! `compacted` (never past the head) first, then deletes up to it in
//! statements of 5,000 rows.
//!
//! [`announce_instance`](mediator_core::Registry::announce_instance)
//! inserts or renews an instance (its start kept);
//! [`expire_instances`](mediator_core::Registry::expire_instances) and
//! [`retire_instance`](mediator_core::Registry::retire_instance) remove
//! instances with every node whose endpoint is exactly `attached:<id>`,
//! recording each removal. Every removal locks the rows it deletes first, so
//! two processes evicting or expiring at once never both report (or record)
//! the same node or instance.
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
//! Those figures predate the feed. What it costs, from three runs of the
//! build before it and of the build with it, taken in turns on the same
//! machine (busier by then: `get` by key took 0.15 ms):
//!
//! | call | before the feed: median (range) | with the feed: median (range) |
//! |---|---|---|
//! | `upsert` of an existing node, one caller | 0.66 ms (0.62 – 0.78 ms) | 0.99 ms (0.99 – 0.99 ms) |
//! | `renew`, one caller | 0.38 ms (0.32 – 0.43 ms) | 0.91 ms (0.88 – 1.5 ms) |
//! | `upsert` of existing nodes, 16 callers at once | 3.7 ms per 16 (3.5 – 4.6 ms), ≈ 4,300/s | 6.8 ms per 16 (6.5 – 7.8 ms), ≈ 2,400/s |
//! | `changes` with nothing new (an idle follower's read) | | 0.33 ms (one run) |
//!
//! A write is now a transaction of five round trips (start, the node's
//! statement, its read back, the batch that records and commits, and a
//! closing `COMMIT` of nothing), where a renewal used to be one statement;
//! and every write of every instance queues for the feed's row, which the
//! batch holds only while the server runs it. With one counter row, a
//! formation's writes are bounded by how fast the server commits them one
//! after another, whatever the number of instances.
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
    /// A stored row cannot be read back (written by something else).
    #[error("mysql at {addr}: table {table} holds a row that is not a valid {what}: {reason}")]
    Corrupt {
        /// `host:port` of the server.
        addr: String,
        /// The table: `nodes`, `changes` or `instances`.
        table: &'static str,
        /// What its rows hold: a node, a change, an instance.
        what: &'static str,
        /// Which row and what is wrong with it.
        reason: String,
    },
    /// The `feed` table lost its one row (emptied by something else), so
    /// no change can be recorded or read.
    #[error(
        "mysql at {addr}: table feed has lost its one row, so no change can be recorded or read"
    )]
    FeedMissing {
        /// `host:port` of the server.
        addr: String,
    },
    /// An instance id broke its rule
    /// ([`check_instance_id`](mediator_core::formation::check_instance_id)),
    /// so it was never written.
    #[error("instance id {id:?} refused: {source}")]
    InstanceId {
        /// The id as given.
        id: String,
        /// The rule it broke.
        source: mediator_core::Error,
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
