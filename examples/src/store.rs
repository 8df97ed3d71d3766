//! Opening a registry from a store URL: `sqlite:PATH`, `mysql://…` or `memory`.

use std::sync::Arc;

use mediator_core::{MemoryRegistry, Registry};
use mediator_store_mysql::MysqlRegistry;
use mediator_store_sqlite::SqliteRegistry;

use crate::CliError;

/// The default store: an SQLite file in the working directory.
pub const DEFAULT_STORE: &str = "sqlite:./mediator.db";

/// Which store a URL names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// An SQLite file at this path.
    Sqlite(String),
    /// A MySQL server at this URL.
    Mysql(String),
    /// Memory only: everything is lost when the process ends.
    Memory,
}

impl std::str::FromStr for StoreUrl {
    type Err = CliError;

    /// ```
    /// use mediator_examples::store::StoreUrl;
    /// assert_eq!("sqlite:./m.db".parse::<StoreUrl>().unwrap(), StoreUrl::Sqlite("./m.db".into()));
    /// assert_eq!("memory".parse::<StoreUrl>().unwrap(), StoreUrl::Memory);
    /// assert!("postgres://x".parse::<StoreUrl>().is_err());
    /// ```
    fn from_str(url: &str) -> Result<Self, CliError> {
        if url == "memory" {
            return Ok(StoreUrl::Memory);
        }
        if url.starts_with("mysql://") {
            return Ok(StoreUrl::Mysql(url.to_owned()));
        }
        match url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")) {
            Some("") => Err(CliError::Config("sqlite: needs a file path, as in sqlite:./mediator.db".into())),
            Some(path) => Ok(StoreUrl::Sqlite(path.to_owned())),
            None => Err(CliError::Config(format!(
                "unknown store {url:?}: use sqlite:PATH, mysql://user:password@host:port/database or memory"
            ))),
        }
    }
}

impl std::fmt::Display for StoreUrl {
    /// The URL without any password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreUrl::Sqlite(path) => write!(f, "sqlite:{path}"),
            StoreUrl::Memory => f.write_str("memory"),
            StoreUrl::Mysql(url) => f.write_str(&redact_password(url)),
        }
    }
}

/// Replaces the password of a `scheme://user:password@host` URL with `***`.
///
/// ```
/// use mediator_examples::store::redact_password;
/// assert_eq!(redact_password("mysql://u:pw@h/db"), "mysql://u:***@h/db");
/// assert_eq!(redact_password("mysql://u@h/db"), "mysql://u@h/db");
/// ```
pub fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.split_once('@') {
        Some((user_info, host)) => match user_info.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// An opened store, kept typed so it can be closed cleanly at shutdown.
pub enum OpenStore {
    /// An SQLite file.
    Sqlite(Arc<SqliteRegistry>),
    /// A MySQL pool.
    Mysql(Arc<MysqlRegistry>),
    /// Memory.
    Memory(Arc<MemoryRegistry>),
}

impl OpenStore {
    /// Opens the store `url` names (creating an SQLite file and running migrations as needed).
    pub async fn open(url: &StoreUrl) -> Result<OpenStore, CliError> {
        Ok(match url {
            StoreUrl::Sqlite(path) => OpenStore::Sqlite(Arc::new(
                SqliteRegistry::open(path)
                    .await
                    .map_err(|e| CliError::Store(e.to_string()))?,
            )),
            StoreUrl::Mysql(url) => OpenStore::Mysql(Arc::new(
                MysqlRegistry::connect(url)
                    .await
                    .map_err(|e| CliError::Store(e.to_string()))?,
            )),
            StoreUrl::Memory => OpenStore::Memory(Arc::new(MemoryRegistry::new())),
        })
    }

    /// The registry, shared.
    pub fn registry(&self) -> Arc<dyn Registry> {
        match self {
            OpenStore::Sqlite(r) => r.clone(),
            OpenStore::Mysql(r) => r.clone(),
            OpenStore::Memory(r) => r.clone(),
        }
    }

    /// Closes the store cleanly once nothing else holds it (an SQLite file
    /// is checkpointed, a MySQL pool disconnected).
    pub async fn close(self) -> Result<(), CliError> {
        match self {
            OpenStore::Sqlite(r) => match Arc::try_unwrap(r) {
                Ok(r) => r.close().await.map_err(|e| CliError::Store(e.to_string())),
                Err(_) => Err(CliError::Store(
                    "the store is still in use; not closed".into(),
                )),
            },
            OpenStore::Mysql(r) => match Arc::try_unwrap(r) {
                Ok(r) => r.close().await.map_err(|e| CliError::Store(e.to_string())),
                Err(_) => Err(CliError::Store(
                    "the store is still in use; not closed".into(),
                )),
            },
            OpenStore::Memory(_) => Ok(()),
        }
    }
}
