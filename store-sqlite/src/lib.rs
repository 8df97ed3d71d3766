//! The SQLite registry for Mediator: the embedded default store.
//!
//! [`SqliteRegistry`] implements [`mediator_core::Registry`] over one SQLite
//! database, a file in WAL mode or a private in-memory database. It suits a
//! single mediator instance; several instances sharing one registry use the
//! MySQL store. It keeps the whole contract all the same, the feed of
//! changes and the mediator instances of a formation included, so that
//! several processes on one machine can share a file (see
//! [Feed and instances](#feed-and-instances)).
//!
//! # Usage
//!
//! ```
//! use mediator_core::{Endpoint, NodeKey, Registration, Registry, Timestamp};
//! use mediator_store_sqlite::SqliteRegistry;
//! use std::time::Duration;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let runtime = tokio::runtime::Runtime::new()?;
//! # runtime.block_on(async {
//! let dir = tempfile::tempdir()?;
//! let registry = SqliteRegistry::open(dir.path().join("registry.db")).await?;
//!
//! let key = NodeKey::named("users", "api")?;
//! let endpoint = Endpoint::http("http://10.0.0.5:9000")?;
//! let now = Timestamp::now();
//! let node = registry
//!     .upsert(Registration::new(key.clone(), endpoint, Duration::from_secs(30)), now)
//!     .await?;
//! assert_eq!(registry.get(&key).await?, Some(node));
//!
//! // Checkpoints the WAL into the main file and closes it.
//! registry.close().await?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # })
//! # }
//! ```
//!
//! [`SqliteRegistry::open_in_memory`] gives a registry that forgets
//! everything when closed, and [`SqliteRegistry::with_config`] takes a
//! [`SqliteConfig`] (busy timeout, durability, whether to create a missing
//! file, queue depth).
//!
//! # Threading
//!
//! SQLite calls block, so none of them run on the async runtime. `open`
//! starts one dedicated thread that owns the only connection; every call
//! sends its work to that thread over a bounded channel and awaits the
//! answer. This was chosen over `spawn_blocking` with a `Mutex<Connection>`
//! because:
//! - SQLite allows one writer at a time anyway, and one connection used by
//!   one thread needs no lock: calls run in the order they were made.
//! - The connection's prepared statements stay cached across calls.
//! - The runtime's blocking pool is not tied up by callers queueing on a
//!   mutex; a full queue makes callers wait asynchronously instead.
//! - [`close`](SqliteRegistry::close) is ordered after all queued work, so
//!   it can checkpoint and report errors at a well-defined point.
//!
//! Reads go through the same thread. For a registry this costs little: the
//! hot path of the mediator routes from an in-memory table and touches the
//! store only on registrations, renewals and sweeps.
//!
//! A file database has a second thread with its own connection that
//! checkpoints the WAL (copies it back into the database file) every 128
//! writes. In WAL mode with `synchronous = NORMAL` checkpoints are the only
//! time SQLite syncs to disk, so commits on the database thread do not wait
//! for the disk. Once the WAL passes 16 MiB the checkpointer holds the writer
//! back briefly so that the WAL starts over; under a sustained burst of
//! writes it can grow past that by what is written while a checkpoint runs,
//! and commits checkpoint by themselves past 64 MiB.
//! [`close`](SqliteRegistry::close) checkpoints everything and leaves the
//! WAL empty.
//!
//! # Schema
//!
//! The same as the MySQL store's: table `nodes` (`id`, `group_name`,
//! `node_name`, `endpoint`, `meta`, `created_ms`, `updated_ms`,
//! `lease_until_ms`), unique on `(group_name, node_name)` with the unnamed
//! node stored under the name `''`, and indexed on `lease_until_ms`. Times
//! are milliseconds since the Unix epoch, `endpoint` is
//! [`Endpoint`](mediator_core::Endpoint)'s text form and `meta` a JSON object.
//! The schema is versioned in `PRAGMA user_version` and migrated at open;
//! a database written by a newer build ([`SCHEMA_VERSION`] above this
//! crate's) is refused rather than guessed at.
//!
//! Version 2 adds the formation's tables:
//! - `changes` (`position`, `kind` `'put'` or `'removed'`, `node_id`,
//!   `group_name`, `node_name`): the feed, one row per write to `nodes`.
//!   Triggers on `nodes` append the rows, so each lands in the same
//!   statement, and transaction, as its write. `position` is an
//!   `AUTOINCREMENT` key, so positions never go back, not even after a
//!   compaction emptied the table.
//! - `changes_compacted` (one row, `position`): the newest position
//!   compacted away.
//! - `instances` (`id`, `peer`, `started_ms`, `heartbeat_ms`,
//!   `lease_until_ms`).
//!
//! Migrating a version 1 file keeps its nodes and writes each as a put at
//! the start of the feed.
//!
//! # Feed and instances
//!
//! [`changes`](mediator_core::Registry::changes) reads the rows after a
//! position joined to `nodes`: a put gives the node as it is when read, and
//! a put whose node is gone since reads as its removal, so a page has one
//! entry per row. [`version`](mediator_core::Registry::version) is the
//! newest position. Every process writing the file goes through the
//! triggers and SQLite's one writer, so all of them share one ordered feed.
//! [`compact_changes`](mediator_core::Registry::compact_changes) records
//! the newest position it removed, never more, so only a follower that had
//! not read a removed change is told of a gap.
//!
//! An instance that leaves or whose lease ran out takes, in one
//! transaction, every node whose `endpoint` is exactly `attached:ID`; each
//! removal enters the feed. `endpoint` has no index: that scan happens only
//! when an instance goes, and an index would cost every registration.
//!
//! # Errors
//!
//! [`SqliteError`] is the crate's one error type; the [`Registry`] methods
//! convert it into a [`mediator_core::StoreError`] that keeps it as its
//! source and says whether it is temporary (the database busy or locked by
//! another process) or not.
//! Errors about the database file name its path.
//!
//! # Performance
//!
//! Measured with criterion (`cargo bench -p mediator-store-sqlite`, bench
//! `registry`) on a file database in WAL mode with `synchronous = NORMAL`,
//! holding 100,000 nodes in 100 groups of 1,000, one call at a time from a
//! tokio runtime. Machine: 2 cores, shared with other builds while measuring
//! (load average about 3.5), so take the figures as indicative. Times are
//! criterion's estimate with its 95% interval in brackets.
//!
//! | operation | time per call | calls per second |
//! |---|---|---|
//! | upsert of an existing key | 104 µs (90–119) | about 9,600 |
//! | renew | 68 µs (60–78) | about 14,600 |
//! | get by key | 24 µs (20–32) | about 41,000 |
//! | list one group of 1,000 | 2.8 ms (2.6–3.1) | about 355 (355,000 nodes/s) |
//!
//! Every call includes the round trip to the database thread; writes add
//! the WAL append, and reads decode each node's key, endpoint and JSON meta.
//! These figures were taken at schema version 1: since version 2 each
//! upsert and renewal also appends one row to the feed, in the same
//! statement, so expect writes to cost somewhat more until measured again.
//!
//! # Writing your own store
//!
//! A store is any type implementing [`mediator_core::Registry`]. Check it
//! against the whole contract with the conformance suite that
//! `mediator-core` exports under its `testkit` feature,
//! `mediator_core::testkit::conformance`:
//!
//! ```toml
//! [dev-dependencies]
//! mediator-core = { version = "0.1", features = ["testkit"] }
//! ```
//!
//! and in a test, with your store in place of this one:
//!
//! ```
//! use mediator_store_sqlite::SqliteRegistry;
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! mediator_core::testkit::conformance(|| async {
//!     SqliteRegistry::open_in_memory().await.expect("opens")
//! })
//! .await;
//! # });
//! ```
//!
//! The suite calls the closure once per case and expects an empty registry
//! each time; it drives time through arguments and never sleeps.

#![warn(clippy::unwrap_used)]

mod config;
mod migrations;
mod registry;

use std::path::{Path, PathBuf};

pub use config::{Location, SqliteConfig, Synchronous};
pub use migrations::SCHEMA_VERSION;
pub use registry::SqliteRegistry;

#[cfg(doc)]
use mediator_core::Registry;

/// Everything that can go wrong in the SQLite store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SqliteError {
    /// The configuration was refused before anything was opened.
    #[error("invalid SQLite store configuration: {0}")]
    Config(String),
    /// The path cannot hold a database: it is a directory, or the directory
    /// it would be in does not exist.
    #[error("cannot open SQLite database {}: {reason}", path.display())]
    InvalidPath {
        /// The path given.
        path: PathBuf,
        /// What is wrong with it, in words.
        reason: &'static str,
    },
    /// The database could not be opened or created for another reason, such
    /// as missing permission.
    #[error("cannot open SQLite database {}: {source}", path.display())]
    Open {
        /// The file, or `:memory:`.
        path: PathBuf,
        /// SQLite's reason.
        source: rusqlite::Error,
    },
    /// The file exists but is not a SQLite database, or is corrupt.
    #[error(
        "{} is not a usable SQLite database (not a database file, or corrupt): {source}",
        path.display()
    )]
    NotADatabase {
        /// The file.
        path: PathBuf,
        /// SQLite's reason.
        source: rusqlite::Error,
    },
    /// The database opened but cannot be run as this store needs.
    #[error("cannot set up SQLite database {}: {reason}", path.display())]
    Setup {
        /// The file.
        path: PathBuf,
        /// What is missing, in words.
        reason: String,
    },
    /// The database's schema version is one this build does not know,
    /// normally because a newer build wrote it.
    #[error(
        "SQLite database {} has schema version {found}, but this build of \
         mediator-store-sqlite knows versions up to {known}; open it with a \
         build that knows version {found}",
        path.display()
    )]
    UnknownSchemaVersion {
        /// The file.
        path: PathBuf,
        /// The `user_version` found in the file.
        found: i32,
        /// The newest version this build knows ([`SCHEMA_VERSION`]).
        known: i32,
    },
    /// A migration failed; the database stays at the version before it.
    #[error(
        "cannot migrate SQLite database {} to schema version {version}: {source}",
        path.display()
    )]
    Migration {
        /// The file.
        path: PathBuf,
        /// The version that could not be applied.
        version: i32,
        /// SQLite's reason.
        source: rusqlite::Error,
    },
    /// A statement failed.
    #[error("SQLite {op} failed: {source}")]
    Query {
        /// The registry operation, such as `upsert`.
        op: &'static str,
        /// SQLite's reason.
        source: rusqlite::Error,
    },
    /// A stored row holds a value this crate could not have written (the
    /// table was edited by hand or by another program).
    #[error("row {id} of table nodes holds an invalid {field}: {reason}")]
    BadRow {
        /// The row's id.
        id: i64,
        /// The column or value refused, such as `endpoint`.
        field: &'static str,
        /// Why, in words.
        reason: String,
    },
    /// A stored change of the feed holds a value this crate could not have
    /// written (the table was edited by hand or by another program).
    #[error("change {position} of table changes holds an invalid {field}: {reason}")]
    BadChange {
        /// The change's position.
        position: i64,
        /// The column or value refused, such as `kind`.
        field: &'static str,
        /// Why, in words.
        reason: String,
    },
    /// A mediator instance id was refused before anything was stored: an id
    /// is 1 to 64 of `A-Z a-z 0-9 _ - .`
    /// ([`check_instance_id`](mediator_core::formation::check_instance_id)).
    #[error("refused mediator instance id {id:?}: {source}")]
    InvalidInstance {
        /// The id given.
        id: String,
        /// Why it was refused.
        source: mediator_core::Error,
    },
    /// Checkpointing or closing the database failed.
    #[error("cannot close SQLite database {}: {source}", path.display())]
    Close {
        /// The file, or `:memory:`.
        path: PathBuf,
        /// SQLite's reason.
        source: rusqlite::Error,
    },
    /// The database thread could not be started.
    #[error("cannot start the SQLite database thread: {0}")]
    Spawn(#[source] std::io::Error),
    /// The database thread has ended, so the registry can no longer answer.
    #[error("the SQLite database thread has stopped")]
    Stopped,
}

impl SqliteError {
    /// Classifies a failure while opening `path`, naming the cause where it
    /// can be told: SQLite's own "unable to open" says neither.
    pub(crate) fn opening(path: &Path, source: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode::{CannotOpen, DatabaseCorrupt, NotADatabase};
        let invalid = |reason| SqliteError::InvalidPath {
            path: path.to_path_buf(),
            reason,
        };
        match source.sqlite_error_code() {
            Some(NotADatabase | DatabaseCorrupt) => SqliteError::NotADatabase {
                path: path.to_path_buf(),
                source,
            },
            Some(CannotOpen) if path.is_dir() => invalid("it is a directory"),
            Some(CannotOpen)
                if path
                    .parent()
                    .is_some_and(|dir| !dir.as_os_str().is_empty() && !dir.is_dir()) =>
            {
                invalid("the directory it would be in does not exist")
            }
            _ => SqliteError::Open {
                path: path.to_path_buf(),
                source,
            },
        }
    }
}

impl SqliteError {
    /// Whether the same call may succeed later: SQLite answered "busy" or
    /// "locked" (another process holds the database longer than the busy
    /// timeout).
    pub fn is_temporary(&self) -> bool {
        use rusqlite::ErrorCode::{DatabaseBusy, DatabaseLocked};
        let source = match self {
            SqliteError::Query { source, .. }
            | SqliteError::Open { source, .. }
            | SqliteError::Close { source, .. } => source,
            _ => return false,
        };
        matches!(
            source.sqlite_error_code(),
            Some(DatabaseBusy | DatabaseLocked)
        )
    }
}

impl From<SqliteError> for mediator_core::StoreError {
    /// Keeps the SQLite error as the source, and whether it is temporary.
    fn from(e: SqliteError) -> Self {
        if e.is_temporary() {
            mediator_core::StoreError::temporary("SQLite store", e)
        } else {
            mediator_core::StoreError::permanent("SQLite store", e)
        }
    }
}

impl From<SqliteError> for mediator_core::Error {
    /// A [`mediator_core::Error::Store`] keeping the SQLite error as its cause.
    fn from(e: SqliteError) -> Self {
        mediator_core::Error::Store(e.into())
    }
}
