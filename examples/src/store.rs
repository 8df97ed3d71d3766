//! Opening a registry from a store URL: `sqlite:PATH`, `mysql://…` or `memory`.

use std::sync::Arc;

use mediator_core::{MemoryRegistry, Registry};
use mediator_store_mysql::MysqlRegistry;
use mediator_store_sqlite::SqliteRegistry;

use crate::CliError;

/// The default store: an SQLite file in the working directory.
pub const DEFAULT_STORE: &str = "sqlite:./mediator.db";

/// Which store a URL names. `Debug` and `Display` hide any password.
#[derive(Clone, PartialEq, Eq)]
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

impl std::fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreUrl::Sqlite(path) => f.debug_tuple("Sqlite").field(path).finish(),
            StoreUrl::Mysql(url) => f.debug_tuple("Mysql").field(&redact_password(url)).finish(),
            StoreUrl::Memory => f.write_str("Memory"),
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
    // User info ends at the authority's last `@` (a password may hold an
    // unescaped `@`); the authority ends at the first `/`, `?` or `#`.
    let authority = rest.find(['/', '?', '#']).map_or(rest, |end| &rest[..end]);
    match authority.rsplit_once('@') {
        Some((user_info, _)) => match user_info.split_once(':') {
            Some((user, _)) => {
                let after = &rest[user_info.len()..];
                format!("{scheme}://{user}:***{after}")
            }
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
                    .map_err(|e| CliError::Store(format!("{url}: {e}")))?,
            )),
            StoreUrl::Mysql(address) => OpenStore::Mysql(Arc::new(
                MysqlRegistry::connect(address)
                    .await
                    .map_err(|e| CliError::Store(format!("{url}: {e}")))?,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_holding_an_at_sign_is_hidden_whole() {
        // mysql_async (like any URL parser) splits user info at the last `@`.
        assert_eq!(
            redact_password("mysql://u:p@ss@h:3306/db"),
            "mysql://u:***@h:3306/db"
        );
        // An `@` after the host is not user info.
        assert_eq!(
            redact_password("mysql://u:pw@h/db?x=a@b"),
            "mysql://u:***@h/db?x=a@b"
        );
        assert_eq!(
            redact_password("mysql://h/db?x=a:b@c"),
            "mysql://h/db?x=a:b@c"
        );
    }

    #[test]
    fn debug_hides_the_password() {
        let url: StoreUrl = "mysql://u:hunter2@h/db".parse().unwrap();
        let shown = format!("{url:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("mysql://u:***@h/db"), "{shown}");
    }
}
