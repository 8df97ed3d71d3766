//! How to open a [`SqliteRegistry`](crate::SqliteRegistry).

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the database lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A database file, created on first open unless
    /// [`SqliteConfig::create_if_missing`] is off.
    File(PathBuf),
    /// A private in-memory database, gone when the registry is closed or
    /// dropped. Every in-memory registry is a separate database.
    Memory,
}

impl fmt::Display for Location {
    /// The file's path, or `:memory:`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::File(path) => write!(f, "{}", path.display()),
            Location::Memory => f.write_str(":memory:"),
        }
    }
}

/// How hard SQLite pushes each commit to the disk (`PRAGMA synchronous`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Synchronous {
    /// `NORMAL`: in WAL mode the database never corrupts, but the last
    /// commits before a power cut (not a process crash) may be lost. Nodes
    /// register again on their next renewal, so this is the default.
    #[default]
    Normal,
    /// `FULL`: every commit is on the disk before it returns; slower.
    Full,
}

impl Synchronous {
    pub(crate) fn pragma_value(self) -> &'static str {
        match self {
            Synchronous::Normal => "NORMAL",
            Synchronous::Full => "FULL",
        }
    }
}

/// Settings for [`SqliteRegistry::with_config`](crate::SqliteRegistry::with_config).
///
/// Start from [`SqliteConfig::file`] or [`SqliteConfig::in_memory`] and
/// adjust with the `with_*` methods:
///
/// ```
/// use mediator_store_sqlite::{SqliteConfig, Synchronous};
/// use std::time::Duration;
/// let config = SqliteConfig::file("/var/lib/mediator/registry.db")
///     .with_busy_timeout(Duration::from_secs(2))
///     .with_synchronous(Synchronous::Full);
/// assert_eq!(config.busy_timeout, Duration::from_secs(2));
/// assert!(config.create_if_missing);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SqliteConfig {
    /// Where the database lives.
    pub location: Location,
    /// How long a statement waits for a lock held by another connection
    /// (another process on the same file) before failing. Default 5 s.
    pub busy_timeout: Duration,
    /// Durability of commits. Default [`Synchronous::Normal`].
    pub synchronous: Synchronous,
    /// Whether opening a missing file creates it. Default `true`; turn it off
    /// to catch a mistyped path instead of starting with an empty registry.
    pub create_if_missing: bool,
    /// How many requests may wait for the database thread before callers
    /// wait to enqueue (backpressure without blocking the runtime). Default
    /// 1024; must be at least 1.
    pub queue_capacity: usize,
}

impl SqliteConfig {
    /// A database file at `path`, with the defaults.
    pub fn file(path: impl AsRef<Path>) -> Self {
        Self::at(Location::File(path.as_ref().to_path_buf()))
    }

    /// A private in-memory database, with the defaults.
    pub fn in_memory() -> Self {
        Self::at(Location::Memory)
    }

    fn at(location: Location) -> Self {
        SqliteConfig {
            location,
            busy_timeout: Duration::from_secs(5),
            synchronous: Synchronous::default(),
            create_if_missing: true,
            queue_capacity: 1024,
        }
    }

    /// Sets [`busy_timeout`](Self::busy_timeout).
    pub fn with_busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// Sets [`synchronous`](Self::synchronous).
    pub fn with_synchronous(mut self, synchronous: Synchronous) -> Self {
        self.synchronous = synchronous;
        self
    }

    /// Sets [`create_if_missing`](Self::create_if_missing).
    pub fn with_create_if_missing(mut self, create: bool) -> Self {
        self.create_if_missing = create;
        self
    }

    /// Sets [`queue_capacity`](Self::queue_capacity).
    pub fn with_queue_capacity(mut self, capacity: usize) -> Self {
        self.queue_capacity = capacity;
        self
    }
}
