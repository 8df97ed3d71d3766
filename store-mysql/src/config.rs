//! How to reach the server and how long to wait for it.

use std::time::Duration;

use crate::MysqlError;

/// The largest pool accepted; far beyond what one mediator instance needs,
/// and well under MySQL's default `max_connections` of 151.
pub const MAX_POOL_SIZE: usize = 128;

/// Settings of a [`MysqlRegistry`](crate::MysqlRegistry).
///
/// Built from a URL, then adjusted with the `with_*` methods:
///
/// ```
/// use mediator_store_mysql::MysqlConfig;
/// use std::time::Duration;
/// let config = MysqlConfig::new("mysql://mediator:secret@db.internal:3306/mediator")
///     .with_pool_size(20)
///     .with_op_timeout(Duration::from_secs(2));
/// assert_eq!(config.pool_size, 20);
/// assert_eq!(config.connect_timeout, MysqlConfig::DEFAULT_CONNECT_TIMEOUT);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MysqlConfig {
    /// `mysql://user:password@host:port/database`, with any query parameters
    /// `mysql_async` understands. The database must exist; the store creates
    /// its tables in it.
    pub url: String,
    /// How many connections the pool holds at most (1 to [`MAX_POOL_SIZE`]).
    pub pool_size: usize,
    /// The longest one registry call may take, waiting for a free connection
    /// and reconnecting included. Past it the call fails with a store error.
    pub op_timeout: Duration,
    /// The longest opening may take: the first connection plus migrations.
    pub connect_timeout: Duration,
}

impl MysqlConfig {
    /// The default pool size.
    pub const DEFAULT_POOL_SIZE: usize = 10;
    /// The default bound on one call.
    pub const DEFAULT_OP_TIMEOUT: Duration = Duration::from_secs(5);
    /// The default bound on opening.
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

    /// Default settings for `url`.
    pub fn new(url: impl Into<String>) -> Self {
        MysqlConfig {
            url: url.into(),
            pool_size: Self::DEFAULT_POOL_SIZE,
            op_timeout: Self::DEFAULT_OP_TIMEOUT,
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
        }
    }

    /// Sets [`pool_size`](Self::pool_size).
    pub fn with_pool_size(mut self, pool_size: usize) -> Self {
        self.pool_size = pool_size;
        self
    }

    /// Sets [`op_timeout`](Self::op_timeout).
    pub fn with_op_timeout(mut self, op_timeout: Duration) -> Self {
        self.op_timeout = op_timeout;
        self
    }

    /// Sets [`connect_timeout`](Self::connect_timeout).
    pub fn with_connect_timeout(mut self, connect_timeout: Duration) -> Self {
        self.connect_timeout = connect_timeout;
        self
    }

    /// Checks the ranges; opening calls it first.
    ///
    /// ```
    /// use mediator_store_mysql::MysqlConfig;
    /// assert!(MysqlConfig::new("mysql://h/db").with_pool_size(0).validate().is_err());
    /// assert!(MysqlConfig::new("mysql://h/db").validate().is_ok());
    /// ```
    pub fn validate(&self) -> Result<(), MysqlError> {
        if !(1..=MAX_POOL_SIZE).contains(&self.pool_size) {
            return Err(MysqlError::Config(format!(
                "pool_size must be 1 to {MAX_POOL_SIZE}, got {}",
                self.pool_size
            )));
        }
        for (name, value) in [
            ("op_timeout", self.op_timeout),
            ("connect_timeout", self.connect_timeout),
        ] {
            if value.is_zero() {
                return Err(MysqlError::Config(format!("{name} must be above zero")));
            }
        }
        Ok(())
    }
}
