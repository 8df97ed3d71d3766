//! [`MysqlRegistry`]: the [`Registry`] over a `mysql_async` pool.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use mediator_core::StoreError;
use mediator_core::{Endpoint, Meta, Node, NodeId, NodeKey, Registration, Registry, Timestamp};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder, Pool, PoolConstraints, PoolOpts, Row, TxOpts};

use crate::{migrations, MysqlConfig, MysqlError};

/// The columns every node query reads, in [`NodeRow`] order.
const COLUMNS: &str =
    "id, group_name, node_name, endpoint, meta, created_ms, updated_ms, lease_until_ms";

/// One row of `nodes` as the driver hands it over.
type NodeRow = (u64, String, String, String, String, i64, Option<i64>, i64);

/// InnoDB's "deadlock found": the server rolled the transaction back and it
/// is safe to run it again.
const ER_LOCK_DEADLOCK: u16 = 1213;

/// How often a transaction that lost a deadlock is run again before giving
/// up (each run stays inside the call's time bound anyway).
const DEADLOCK_RETRIES: usize = 8;

/// Evicted rows are deleted by id in chunks of this many, keeping each
/// statement's placeholder list far below the protocol's 65,535.
const DELETE_CHUNK: usize = 500;

/// Every session gets the same strict mode: a value too long for its column
/// must fail, never be cut short, whatever the server's default.
const SESSION_SETUP: &str =
    "SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION,NO_ZERO_DATE,NO_ZERO_IN_DATE'";

/// A [`Registry`] stored in a MySQL or MariaDB database, shared by any number
/// of mediator instances.
///
/// Opening connects once, runs the [migrations](crate#schema) and keeps a
/// pool of connections. Every call is bounded by
/// [`MysqlConfig::op_timeout`]: when the server is down or silent a call
/// fails with a temporary [`StoreError`] (`mysql at
/// host:port unreachable: ...`) instead of hanging, and broken connections
/// are dropped from the pool so calls succeed again once the server is back.
///
/// ```no_run
/// use mediator_core::{Endpoint, NodeKey, Registration, Registry, Timestamp};
/// use mediator_store_mysql::MysqlRegistry;
/// use std::time::Duration;
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let registry = MysqlRegistry::connect("mysql://mediator:secret@127.0.0.1:3306/mediator").await?;
/// let key = NodeKey::named("users", "api")?;
/// let registration = Registration::new(key.clone(), Endpoint::http("http://10.0.0.5:9000")?, Duration::from_secs(30));
/// let node = registry.upsert(registration, Timestamp::now()).await?;
/// assert_eq!(registry.get(&key).await?, Some(node));
/// registry.close().await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct MysqlRegistry {
    pool: Pool,
    addr: Arc<str>,
    op_timeout: Duration,
}

/// Why one bounded operation failed, before it is named.
enum Failure {
    Db(mysql_async::Error),
    Data(MysqlError),
}

impl From<mysql_async::Error> for Failure {
    fn from(e: mysql_async::Error) -> Self {
        Failure::Db(e)
    }
}

/// The driver options `config` asks for, and the server's `host:port`.
pub(crate) fn driver_opts(config: &MysqlConfig) -> Result<(Opts, String), MysqlError> {
    config.validate()?;
    let opts = Opts::from_url(&config.url).map_err(|e| MysqlError::Url(e.to_string()))?;
    let addr = format!("{}:{}", opts.ip_or_hostname(), opts.tcp_port());
    if opts.db_name().is_none_or(str::is_empty) {
        return Err(MysqlError::Url(format!(
            "the url for mysql at {addr} names no database; add /<database> to it"
        )));
    }
    let constraints = PoolConstraints::new(1, config.pool_size).ok_or_else(|| {
        MysqlError::Config(format!("pool_size {} is not usable", config.pool_size))
    })?;
    let pool_opts = PoolOpts::default()
        .with_constraints(constraints)
        // Idle connections above the minimum go after a minute.
        .with_inactive_connection_ttl(Duration::from_secs(60))
        // No call leaves session state behind (transactions end or the
        // connection is dropped), so the reset round trip on every return
        // to the pool would only cost time.
        .with_reset_connection(false);
    let opts = OptsBuilder::from_opts(opts)
        // By default the driver swaps a loopback TCP address for the
        // server's Unix socket; connections must go where the URL says, so
        // that a proxy or tunnel on localhost stays in the path.
        .prefer_socket(false)
        // Affected rows then count matched rows, so renewing a lease to the
        // value it already has still reports the node as found.
        .client_found_rows(true)
        .setup(vec![SESSION_SETUP])
        .pool_opts(pool_opts);
    Ok((opts.into(), addr))
}

/// Runs `fut` within `after`, naming its failure.
pub(crate) async fn bounded<T>(
    addr: &str,
    op: &'static str,
    after: Duration,
    fut: impl Future<Output = Result<T, mysql_async::Error>>,
) -> Result<T, MysqlError> {
    match tokio::time::timeout(after, fut).await {
        Ok(result) => result.map_err(|e| MysqlError::driver(addr, op, e)),
        Err(_) => Err(MysqlError::Timeout {
            addr: addr.to_owned(),
            op,
            after,
        }),
    }
}

impl MysqlRegistry {
    /// Opens the registry at `url` (`mysql://user:password@host:port/database`)
    /// with default [`MysqlConfig`] settings.
    ///
    /// # Errors
    /// When the URL is invalid, the server cannot be reached within
    /// [`MysqlConfig::DEFAULT_CONNECT_TIMEOUT`], or the schema cannot be
    /// brought up to date (including a database written by a newer version).
    pub async fn connect(url: &str) -> Result<MysqlRegistry, MysqlError> {
        MysqlRegistry::with_config(MysqlConfig::new(url)).await
    }

    /// Opens the registry with `config`: connects, runs the migrations, and
    /// keeps a pool of up to [`MysqlConfig::pool_size`] connections.
    ///
    /// # Errors
    /// As [`connect`](Self::connect), bounded by
    /// [`MysqlConfig::connect_timeout`].
    pub async fn with_config(config: MysqlConfig) -> Result<MysqlRegistry, MysqlError> {
        let (opts, addr) = driver_opts(&config)?;
        let lock_wait_secs = config.connect_timeout.as_secs().max(1);
        // Migrations run on a connection of their own, outside the pool, so
        // that the named lock they take never lingers on a pooled one.
        let opened = tokio::time::timeout(config.connect_timeout, async {
            let mut conn = Conn::new(opts.clone())
                .await
                .map_err(|e| MysqlError::driver(&addr, "connect", e))?;
            migrations::run(&mut conn, &addr, lock_wait_secs).await?;
            conn.disconnect()
                .await
                .map_err(|e| MysqlError::driver(&addr, "connect", e))
        })
        .await;
        match opened {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(MysqlError::Timeout {
                    addr,
                    op: "connect",
                    after: config.connect_timeout,
                })
            }
        }
        tracing::debug!(addr, "mysql registry open");
        Ok(MysqlRegistry {
            pool: Pool::new(opts),
            addr: addr.into(),
            op_timeout: config.op_timeout,
        })
    }

    /// `host:port` of the server, as error messages name it.
    pub fn address(&self) -> &str {
        &self.addr
    }

    /// Disconnects every pooled connection, waiting at most the operation
    /// timeout.
    ///
    /// # Errors
    /// When the connections could not be closed cleanly in time; they are
    /// dropped anyway.
    pub async fn close(self) -> Result<(), MysqlError> {
        bounded(&self.addr, "close", self.op_timeout, self.pool.disconnect()).await
    }

    /// Runs one call within the operation timeout, naming its failure.
    ///
    /// `work` makes the call's future; it runs again when the server chose
    /// it as a deadlock victim, since the server then rolled back all it did.
    /// Concurrent statements lock the unique key and the lease index in
    /// different orders (an upsert or renew against an eviction), so
    /// InnoDB's deadlock detection is an expected outcome, not a fault.
    async fn call<T, F, Fut>(&self, op: &'static str, work: F) -> Result<T, MysqlError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let attempts = async {
            let mut retries = 0;
            loop {
                match work().await {
                    Err(e) if is_deadlock(&e) && retries < DEADLOCK_RETRIES => {
                        retries += 1;
                        tracing::debug!(op, retries, "mysql deadlock, running again");
                    }
                    outcome => return outcome,
                }
            }
        };
        match tokio::time::timeout(self.op_timeout, attempts).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(Failure::Db(e))) => Err(MysqlError::driver(&self.addr, op, e)),
            Ok(Err(Failure::Data(e))) => Err(e),
            Err(_) => Err(MysqlError::Timeout {
                addr: self.addr.to_string(),
                op,
                after: self.op_timeout,
            }),
        }
    }

    fn corrupt(&self, reason: String) -> MysqlError {
        MysqlError::Corrupt {
            addr: self.addr.to_string(),
            reason,
        }
    }

    fn node_from_row(&self, row: Row) -> Result<Node, MysqlError> {
        let (id, group, name, endpoint, meta, created, updated, lease_until) =
            mysql_async::from_row_opt::<NodeRow>(row)
                .map_err(|e| self.corrupt(format!("unexpected column types: {e}")))?;
        let key = NodeKey::new(group, (!name.is_empty()).then_some(name))
            .map_err(|e| self.corrupt(format!("row id {id}: {e}")))?;
        let endpoint: Endpoint = endpoint
            .parse()
            .map_err(|e| self.corrupt(format!("row id {id}: {e}")))?;
        let meta: Meta = serde_json::from_str(&meta).map_err(|e| {
            self.corrupt(format!(
                "row id {id}: meta is not a JSON object of strings: {e}"
            ))
        })?;
        Ok(Node {
            id: NodeId(id),
            key,
            endpoint,
            meta,
            created: Timestamp::from_millis(created),
            updated: updated.map(Timestamp::from_millis),
            lease_until: Timestamp::from_millis(lease_until),
        })
    }

    fn nodes_from_rows(&self, rows: Vec<Row>) -> Result<Vec<Node>, MysqlError> {
        rows.into_iter()
            .map(|row| self.node_from_row(row))
            .collect()
    }
}

/// Whether `error` is a deadlock the server already rolled back, so the
/// transaction can run again.
fn is_deadlock(error: &Failure) -> bool {
    matches!(error, Failure::Db(mysql_async::Error::Server(e)) if e.code == ER_LOCK_DEADLOCK)
}

/// The stored form of an unnamed node's name (see the schema).
fn stored_name(key: &NodeKey) -> &str {
    key.name().unwrap_or("")
}

#[async_trait]
impl Registry for MysqlRegistry {
    async fn upsert(&self, registration: Registration, now: Timestamp) -> Result<Node, StoreError> {
        let key = &registration.key;
        let (group, name) = (key.group(), stored_name(key));
        let endpoint = &registration.endpoint.to_string();
        // A map of strings to strings always serialises; serde_json fails
        // only on non-string keys or a failing Serialize impl.
        let meta = &serde_json::to_string(&registration.meta).expect("a map of strings serialises");
        let (now_ms, lease_ms) = (now.as_millis(), (now + registration.ttl).as_millis());
        let row = self
            .call("upsert", || async move {
                let mut conn = self.pool.get_conn().await?;
                let mut tx = conn.start_transaction(TxOpts::default()).await?;
                // The row lock taken by the insert is held until commit, so
                // the row read back is exactly the one written here, whatever
                // other upserts of this key run meanwhile. On failure,
                // dropping the transaction with its connection rolls it back.
                tx.exec_drop(
                    "INSERT INTO nodes \
                     (group_name, node_name, endpoint, meta, created_ms, updated_ms, lease_until_ms) \
                     VALUES (?, ?, ?, ?, ?, NULL, ?) \
                     ON DUPLICATE KEY UPDATE endpoint = VALUES(endpoint), meta = VALUES(meta), \
                     updated_ms = VALUES(created_ms), lease_until_ms = VALUES(lease_until_ms)",
                    (group, name, endpoint, meta, now_ms, lease_ms),
                )
                .await?;
                let select =
                    format!("SELECT {COLUMNS} FROM nodes WHERE group_name = ? AND node_name = ?");
                let row: Option<Row> = tx.exec_first(select, (group, name)).await?;
                tx.commit().await?;
                Ok(row)
            })
            .await?;
        let row = row.ok_or_else(|| {
            self.corrupt(format!(
                "the row of {key} vanished inside its own transaction"
            ))
        })?;
        Ok(self.node_from_row(row)?)
    }

    async fn renew(
        &self,
        key: &NodeKey,
        ttl: Duration,
        now: Timestamp,
    ) -> Result<Option<Timestamp>, StoreError> {
        let lease_until = now + ttl;
        let found = self
            .call("renew", || async move {
                let mut conn = self.pool.get_conn().await?;
                conn.exec_drop(
                    "UPDATE nodes SET lease_until_ms = ?, updated_ms = ? \
                     WHERE group_name = ? AND node_name = ?",
                    (
                        lease_until.as_millis(),
                        now.as_millis(),
                        key.group(),
                        stored_name(key),
                    ),
                )
                .await?;
                Ok(conn.affected_rows())
            })
            .await?;
        Ok((found > 0).then_some(lease_until))
    }

    async fn remove(&self, id: NodeId) -> Result<u64, StoreError> {
        Ok(self
            .call("remove", || async move {
                let mut conn = self.pool.get_conn().await?;
                conn.exec_drop("DELETE FROM nodes WHERE id = ?", (id.0,))
                    .await?;
                Ok(conn.affected_rows())
            })
            .await?)
    }

    async fn remove_key(&self, key: &NodeKey) -> Result<u64, StoreError> {
        Ok(self
            .call("remove_key", || async move {
                let mut conn = self.pool.get_conn().await?;
                conn.exec_drop(
                    "DELETE FROM nodes WHERE group_name = ? AND node_name = ?",
                    (key.group(), stored_name(key)),
                )
                .await?;
                Ok(conn.affected_rows())
            })
            .await?)
    }

    async fn get(&self, key: &NodeKey) -> Result<Option<Node>, StoreError> {
        let row: Option<Row> = self
            .call("get", || async move {
                let mut conn = self.pool.get_conn().await?;
                let select =
                    format!("SELECT {COLUMNS} FROM nodes WHERE group_name = ? AND node_name = ?");
                Ok(conn
                    .exec_first(select, (key.group(), stored_name(key)))
                    .await?)
            })
            .await?;
        Ok(row.map(|row| self.node_from_row(row)).transpose()?)
    }

    async fn get_by_id(&self, id: NodeId) -> Result<Option<Node>, StoreError> {
        let row: Option<Row> = self
            .call("get_by_id", || async move {
                let mut conn = self.pool.get_conn().await?;
                let select = format!("SELECT {COLUMNS} FROM nodes WHERE id = ?");
                Ok(conn.exec_first(select, (id.0,)).await?)
            })
            .await?;
        Ok(row.map(|row| self.node_from_row(row)).transpose()?)
    }

    async fn list(&self, group: Option<&str>) -> Result<Vec<Node>, StoreError> {
        let rows: Vec<Row> = self
            .call("list", || async move {
                let mut conn = self.pool.get_conn().await?;
                Ok(match group {
                    Some(group) => {
                        let select =
                            format!("SELECT {COLUMNS} FROM nodes WHERE group_name = ? ORDER BY id");
                        conn.exec(select, (group,)).await?
                    }
                    None => {
                        let select = format!("SELECT {COLUMNS} FROM nodes ORDER BY id");
                        conn.exec(select, ()).await?
                    }
                })
            })
            .await?;
        Ok(self.nodes_from_rows(rows)?)
    }

    /// Seeks by id, so a page costs a page whatever the registry's size.
    async fn list_page(
        &self,
        group: Option<&str>,
        after: Option<NodeId>,
        limit: usize,
    ) -> Result<Vec<Node>, StoreError> {
        let after = after.map_or(0, |id| id.0);
        // MySQL's LIMIT takes an unsigned 64-bit count; a larger one lists
        // everything anyway.
        let limit = u64::try_from(limit).unwrap_or(u64::MAX);
        let rows: Vec<Row> = self
            .call("list_page", || async move {
                let mut conn = self.pool.get_conn().await?;
                Ok(match group {
                    Some(group) => {
                        let select = format!(
                            "SELECT {COLUMNS} FROM nodes WHERE group_name = ? AND id > ? \
                             ORDER BY id LIMIT ?"
                        );
                        conn.exec(select, (group, after, limit)).await?
                    }
                    None => {
                        let select =
                            format!("SELECT {COLUMNS} FROM nodes WHERE id > ? ORDER BY id LIMIT ?");
                        conn.exec(select, (after, limit)).await?
                    }
                })
            })
            .await?;
        Ok(self.nodes_from_rows(rows)?)
    }

    async fn evict_expired(&self, now: Timestamp) -> Result<Vec<NodeKey>, StoreError> {
        Ok(self
            .call("evict_expired", || async move {
                let mut conn = self.pool.get_conn().await?;
                let mut tx = conn.start_transaction(TxOpts::default()).await?;
                // The expired rows stay locked until commit: a renew racing
                // this eviction either lands first (and the row is no longer
                // selected) or waits and then finds no row, so the keys
                // returned are exactly the ones deleted.
                let rows: Vec<Row> = tx
                    .exec(
                        "SELECT id, group_name, node_name FROM nodes \
                         WHERE lease_until_ms <= ? ORDER BY id FOR UPDATE",
                        (now.as_millis(),),
                    )
                    .await?;
                let mut ids = Vec::with_capacity(rows.len());
                let mut keys = Vec::with_capacity(rows.len());
                for row in rows {
                    let (id, group, name) = mysql_async::from_row_opt::<(u64, String, String)>(row)
                        .map_err(|e| {
                            Failure::Data(self.corrupt(format!("unexpected column types: {e}")))
                        })?;
                    let key = NodeKey::new(group, (!name.is_empty()).then_some(name))
                        .map_err(|e| Failure::Data(self.corrupt(format!("row id {id}: {e}"))))?;
                    ids.push(id);
                    keys.push(key);
                }
                for chunk in ids.chunks(DELETE_CHUNK) {
                    // Ids are integers, so writing them into the statement
                    // cannot inject anything, and it keeps one-off
                    // statements out of the statement cache.
                    let list = chunk
                        .iter()
                        .map(u64::to_string)
                        .collect::<Vec<_>>()
                        .join(",");
                    tx.query_drop(format!("DELETE FROM nodes WHERE id IN ({list})"))
                        .await?;
                }
                tx.commit().await?;
                Ok(keys)
            })
            .await?)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(self
            .call("ping", || async move {
                let mut conn = self.pool.get_conn().await?;
                conn.ping().await?;
                Ok(())
            })
            .await?)
    }
}
