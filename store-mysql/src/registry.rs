//! [`MysqlRegistry`]: the [`Registry`] over a `mysql_async` pool.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use mediator_core::formation::{
    check_instance_id, Change, ChangeKind, ChangePage, Instance, RetiredInstance,
};
use mediator_core::StoreError;
use mediator_core::{Endpoint, Meta, Node, NodeId, NodeKey, Registration, Registry, Timestamp};
use mysql_async::prelude::{FromValue, Queryable};
use mysql_async::{
    Conn, Opts, OptsBuilder, Pool, PoolConstraints, PoolOpts, Row, Transaction, TxOpts, Value,
};

use crate::{migrations, MysqlConfig, MysqlError};

/// The columns every node query reads, in [`NodeRow`] order.
const COLUMNS: &str =
    "id, group_name, node_name, endpoint, meta, created_ms, updated_ms, lease_until_ms";

/// [`COLUMNS`] of the `nodes` row joined to a change, `n`.
const JOINED_COLUMNS: &str = "n.id, n.group_name, n.node_name, n.endpoint, n.meta, \
     n.created_ms, n.updated_ms, n.lease_until_ms";

/// One row of `nodes` as the driver hands it over.
type NodeRow = (u64, String, String, String, String, i64, Option<i64>, i64);

/// The columns every instance query reads, in [`InstanceRow`] order.
const INSTANCE_COLUMNS: &str = "id, peer, started_ms, heartbeat_ms, lease_until_ms";

/// One row of `instances` as the driver hands it over.
type InstanceRow = (String, String, i64, i64, i64);

/// InnoDB's "deadlock found": the server rolled the transaction back and it
/// is safe to run it again.
const ER_LOCK_DEADLOCK: u16 = 1213;

/// "Column cannot be null": what recording a change meets when the feed's
/// row is missing (see `commit_with`).
const ER_BAD_NULL: u16 = 1048;

/// How often a transaction that lost a deadlock is run again before giving
/// up (each run stays inside the call's time bound anyway).
const DEADLOCK_RETRIES: u32 = 8;

/// The longest pause before running a deadlocked transaction again, in ms
/// per retry so far: a random pause keeps the two sides of a deadlock from
/// meeting again at once.
const DEADLOCK_PAUSE_MS: u64 = 4;

/// Evicted rows are deleted by id, and changes recorded, in chunks of this
/// many per statement, keeping each statement far below the server's
/// packet limit.
const DELETE_CHUNK: usize = 500;

/// Compaction deletes changes in statements of at most this many rows, so
/// that no single statement holds its locks for long.
const COMPACT_CHUNK: u64 = 5_000;

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

impl From<MysqlError> for Failure {
    fn from(e: MysqlError) -> Self {
        Failure::Data(e)
    }
}

/// The tables whose rows the store reads back, for naming a bad row.
#[derive(Debug, Clone, Copy)]
enum Table {
    Nodes,
    Changes,
    Instances,
}

impl Table {
    fn name(self) -> &'static str {
        match self {
            Table::Nodes => "nodes",
            Table::Changes => "changes",
            Table::Instances => "instances",
        }
    }

    fn holds(self) -> &'static str {
        match self {
            Table::Nodes => "node",
            Table::Changes => "change",
            Table::Instances => "instance",
        }
    }
}

/// What a row of `changes` records: the values of its `kind` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Recorded {
    /// The node was registered, registered again or renewed.
    Put,
    /// The node was removed.
    Removed,
}

impl Recorded {
    fn as_sql(self) -> &'static str {
        match self {
            Recorded::Put => "put",
            Recorded::Removed => "removed",
        }
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
    /// Each run again waits a random moment first, longer with each retry.
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
                        tokio::time::sleep(pause(u64::from(retries) * DEADLOCK_PAUSE_MS)).await;
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

    fn corrupt(&self, table: Table, reason: String) -> MysqlError {
        MysqlError::Corrupt {
            addr: self.addr.to_string(),
            table: table.name(),
            what: table.holds(),
            reason,
        }
    }

    fn feed_missing(&self) -> MysqlError {
        MysqlError::FeedMissing {
            addr: self.addr.to_string(),
        }
    }

    fn node_from_row(&self, row: Row) -> Result<Node, MysqlError> {
        let parts = mysql_async::from_row_opt::<NodeRow>(row)
            .map_err(|e| self.corrupt(Table::Nodes, format!("unexpected column types: {e}")))?;
        self.node_from_parts(parts)
    }

    fn node_from_parts(&self, parts: NodeRow) -> Result<Node, MysqlError> {
        let (id, group, name, endpoint, meta, created, updated, lease_until) = parts;
        let bad =
            |e: &dyn std::fmt::Display| self.corrupt(Table::Nodes, format!("row id {id}: {e}"));
        let key = self.key_from_parts(Table::Nodes, format!("row id {id}"), group, name)?;
        let endpoint: Endpoint = endpoint.parse().map_err(|e| bad(&e))?;
        let meta: Meta = serde_json::from_str(&meta)
            .map_err(|e| bad(&format!("meta is not a JSON object of strings: {e}")))?;
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

    /// The key stored as `group` and `name` in `row` (such as `row id 3`)
    /// of `table`.
    fn key_from_parts(
        &self,
        table: Table,
        row: impl std::fmt::Display,
        group: String,
        name: String,
    ) -> Result<NodeKey, MysqlError> {
        NodeKey::new(group, (!name.is_empty()).then_some(name))
            .map_err(|e| self.corrupt(table, format!("{row}: {e}")))
    }

    /// One row read by [`changes`](Registry::changes); `None` for the row
    /// that only carries the feed's own columns (no change after the
    /// position asked from).
    fn change_from_row(&self, mut row: Row) -> Result<Option<Change>, MysqlError> {
        let position: Option<u64> = self.take(Table::Changes, &mut row, 1)?;
        let Some(position) = position else {
            return Ok(None);
        };
        let kind: String = self.take(Table::Changes, &mut row, 2)?;
        let node_id: u64 = self.take(Table::Changes, &mut row, 3)?;
        let group: String = self.take(Table::Changes, &mut row, 4)?;
        let name: String = self.take(Table::Changes, &mut row, 5)?;
        let joined: Option<u64> = self.take(Table::Nodes, &mut row, 6)?;
        let kind = match (kind.as_str(), joined) {
            ("put", Some(id)) => {
                let parts: NodeRow = (
                    id,
                    self.take(Table::Nodes, &mut row, 7)?,
                    self.take(Table::Nodes, &mut row, 8)?,
                    self.take(Table::Nodes, &mut row, 9)?,
                    self.take(Table::Nodes, &mut row, 10)?,
                    self.take(Table::Nodes, &mut row, 11)?,
                    self.take(Table::Nodes, &mut row, 12)?,
                    self.take(Table::Nodes, &mut row, 13)?,
                );
                ChangeKind::Put(self.node_from_parts(parts)?)
            }
            // A put whose node has gone since: its removal is further on
            // in the feed, and the follower may as well apply it now.
            ("put" | "removed", _) => ChangeKind::Removed {
                id: NodeId(node_id),
                key: self.key_from_parts(
                    Table::Changes,
                    format!("position {position}"),
                    group,
                    name,
                )?,
            },
            (other, _) => {
                return Err(self.corrupt(
                    Table::Changes,
                    format!("position {position}: unknown kind {other:?}"),
                ))
            }
        };
        Ok(Some(Change { position, kind }))
    }

    /// Reads rows of `id, group_name, node_name` from `nodes`.
    fn keys_from_rows(&self, rows: Vec<Row>) -> Result<Vec<(u64, NodeKey)>, MysqlError> {
        rows.into_iter()
            .map(|row| {
                let (id, group, name) = mysql_async::from_row_opt::<(u64, String, String)>(row)
                    .map_err(|e| {
                        self.corrupt(Table::Nodes, format!("unexpected column types: {e}"))
                    })?;
                let key = self.key_from_parts(Table::Nodes, format!("row id {id}"), group, name)?;
                Ok((id, key))
            })
            .collect()
    }

    fn instance_from_row(&self, row: Row) -> Result<Instance, MysqlError> {
        let (id, peer, started, heartbeat, lease_until) =
            mysql_async::from_row_opt::<InstanceRow>(row).map_err(|e| {
                self.corrupt(Table::Instances, format!("unexpected column types: {e}"))
            })?;
        check_instance_id(&id)
            .map_err(|e| self.corrupt(Table::Instances, format!("row id {id:?}: {e}")))?;
        Ok(Instance {
            id,
            peer,
            started: Timestamp::from_millis(started),
            heartbeat: Timestamp::from_millis(heartbeat),
            lease_until: Timestamp::from_millis(lease_until),
        })
    }

    /// Column `index` of a row of `table`, taken out of it.
    fn take<T: FromValue>(
        &self,
        table: Table,
        row: &mut Row,
        index: usize,
    ) -> Result<T, MysqlError> {
        match row.take_opt::<T, usize>(index) {
            Some(Ok(value)) => Ok(value),
            Some(Err(e)) => {
                Err(self.corrupt(table, format!("column {index} has an unexpected type: {e}")))
            }
            None => Err(self.corrupt(table, format!("column {index} is missing"))),
        }
    }

    /// Appends one change of `kind` for each of `nodes` (id and key) to the
    /// feed as part of `tx`, and commits it.
    ///
    /// The positions come from the feed's one row, raised under its row
    /// lock, which `tx` holds until it commits. So positions are handed out
    /// in commit order: a transaction that takes a later position waits
    /// for this one to commit first, so a follower that has read a
    /// position can read every position before it. (An AUTO_INCREMENT id
    /// is handed out before commit, and could commit after a later one.)
    /// A rolled-back transaction gives its positions back with the row, so
    /// positions have no holes, which lets a reader tell a position it
    /// cannot see yet from one that never was (see `changes`).
    ///
    /// Every write across the formation queues for this row, so it is
    /// taken last, once the node rows are written and locked, and held as
    /// briefly as the server can: the raise, the inserts and the commit go
    /// as one batch of statements (for up to 500 changes), so no round trip
    /// to this client falls inside the hold. A transaction that holds the row then never waits
    /// for a node row, so it cannot deadlock with another write.
    async fn commit_with(
        &self,
        mut tx: Transaction<'_>,
        kind: Recorded,
        nodes: &[(u64, NodeKey)],
    ) -> Result<(), Failure> {
        if nodes.is_empty() {
            tx.commit().await?;
            return Ok(());
        }
        let count = nodes.len();
        let chunks = nodes.chunks(DELETE_CHUNK).count();
        let mut batch = format!("UPDATE feed SET head = head + {count} WHERE id = 1;");
        let mut index = 0;
        for (n, chunk) in nodes.chunks(DELETE_CHUNK).enumerate() {
            // Ids and offsets are integers and the key is quoted by the
            // driver's own escaping, so the statements can be written out.
            // Each position is read back from the raised head: were the
            // feed's row missing it would be NULL, which the NOT NULL
            // column refuses, failing the batch before its COMMIT.
            let rows: Vec<String> = chunk
                .iter()
                .map(|(id, key)| {
                    index += 1;
                    format!(
                        "((SELECT head FROM feed WHERE id = 1) - {}, '{}', {id}, {}, {})",
                        count - index,
                        kind.as_sql(),
                        Value::from(key.group()).as_sql(false),
                        Value::from(stored_name(key)).as_sql(false),
                    )
                })
                .collect();
            batch.push_str(&format!(
                " INSERT INTO changes (position, kind, node_id, group_name, node_name) VALUES {};",
                rows.join(", ")
            ));
            // One chunk per batch beyond the first, so that a large
            // eviction never sends a batch over the server's packet limit;
            // only such writes hold the row across round trips.
            if n + 1 == chunks {
                batch.push_str(" COMMIT");
            }
            tx.query_drop(std::mem::take(&mut batch))
                .await
                .map_err(|e| match e {
                    mysql_async::Error::Server(ref server) if server.code == ER_BAD_NULL => {
                        Failure::Data(self.feed_missing())
                    }
                    other => Failure::Db(other),
                })?;
        }
        // The batch committed; the driver still counts the transaction as
        // open, and this COMMIT (of nothing) tells it otherwise.
        tx.commit().await?;
        Ok(())
    }

    /// Whether the change at `position` is in the feed now: read with a
    /// lock, which sees the newest committed rows whatever the read view,
    /// and waits for a transaction still writing it.
    async fn change_exists(&self, position: u64) -> Result<bool, MysqlError> {
        let found: Option<u64> = self
            .call("changes", || async move {
                let mut conn = self.pool.get_conn().await?;
                Ok(conn
                    .exec_first(
                        "SELECT position FROM changes WHERE position = ? LOCK IN SHARE MODE",
                        (position,),
                    )
                    .await?)
            })
            .await?;
        Ok(found.is_some())
    }

    /// Deletes `nodes` (locked by `tx` already); their removals are for
    /// [`commit_with`](Self::commit_with) to record.
    async fn delete_nodes(
        &self,
        tx: &mut Transaction<'_>,
        nodes: &[(u64, NodeKey)],
    ) -> Result<(), Failure> {
        for chunk in nodes.chunks(DELETE_CHUNK) {
            // Ids are integers, so writing them into the statement cannot
            // inject anything, and it keeps one-off statements out of the
            // statement cache.
            let list = chunk
                .iter()
                .map(|(id, _)| id.to_string())
                .collect::<Vec<_>>()
                .join(",");
            tx.query_drop(format!("DELETE FROM nodes WHERE id IN ({list})"))
                .await?;
        }
        Ok(())
    }

    /// Locks the nodes attached to `instance` (endpoint `attached:ID`
    /// exactly), in id order, and returns their ids and keys.
    async fn attached_to(
        &self,
        tx: &mut Transaction<'_>,
        instance: &str,
    ) -> Result<Vec<(u64, NodeKey)>, Failure> {
        let endpoint = Endpoint::attached(instance)
            .map_err(|e| self.corrupt(Table::Instances, format!("row id {instance:?}: {e}")))?
            .to_string();
        // A locking read locks every row it scans, so it goes through the
        // endpoint index (forced: on a small table the server would rather
        // scan, and lock, the whole table) and sorts nothing. The lock
        // keeps a concurrent eviction from deleting (and reporting) these
        // rows too.
        let rows: Vec<Row> = tx
            .exec(
                "SELECT id, group_name, node_name FROM nodes FORCE INDEX (nodes_endpoint) \
                 WHERE endpoint = ? FOR UPDATE",
                (endpoint,),
            )
            .await?;
        let mut nodes = self.keys_from_rows(rows)?;
        nodes.sort_unstable_by_key(|(id, _)| *id);
        Ok(nodes)
    }
}

/// A random pause of 1 to `up_to_ms` milliseconds.
fn pause(up_to_ms: u64) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    // Every RandomState is keyed afresh, which is all the randomness a
    // pause needs, without a dependency for it.
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    Duration::from_millis(1 + random % up_to_ms.max(1))
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
        let node = self
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
                let row = row.ok_or_else(|| {
                    self.corrupt(
                        Table::Nodes,
                        format!("the row of {key} vanished inside its own transaction"),
                    )
                })?;
                let node = self.node_from_row(row)?;
                self.commit_with(tx, Recorded::Put, &[(node.id.0, node.key.clone())])
                    .await?;
                Ok(node)
            })
            .await?;
        Ok(node)
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
                let mut tx = conn.start_transaction(TxOpts::default()).await?;
                let (group, name) = (key.group(), stored_name(key));
                tx.exec_drop(
                    "UPDATE nodes SET lease_until_ms = ?, updated_ms = ? \
                     WHERE group_name = ? AND node_name = ?",
                    (lease_until.as_millis(), now.as_millis(), group, name),
                )
                .await?;
                if tx.affected_rows() == 0 {
                    tx.rollback().await?;
                    return Ok(false);
                }
                // The row is locked by the update: its id is the one renewed.
                let id: Option<u64> = tx
                    .exec_first(
                        "SELECT id FROM nodes WHERE group_name = ? AND node_name = ?",
                        (group, name),
                    )
                    .await?;
                let id = id.ok_or_else(|| {
                    self.corrupt(
                        Table::Nodes,
                        format!("the row of {key} vanished inside its own transaction"),
                    )
                })?;
                self.commit_with(tx, Recorded::Put, &[(id, key.clone())])
                    .await?;
                Ok(true)
            })
            .await?;
        Ok(found.then_some(lease_until))
    }

    async fn remove(&self, id: NodeId) -> Result<u64, StoreError> {
        Ok(self
            .call("remove", || async move {
                let mut conn = self.pool.get_conn().await?;
                let mut tx = conn.start_transaction(TxOpts::default()).await?;
                // Locked, so that of two removals at once only the one that
                // deletes the row records it.
                let rows: Vec<Row> = tx
                    .exec(
                        "SELECT id, group_name, node_name FROM nodes WHERE id = ? FOR UPDATE",
                        (id.0,),
                    )
                    .await?;
                let gone = self.keys_from_rows(rows)?;
                if gone.is_empty() {
                    tx.rollback().await?;
                    return Ok(0);
                }
                self.delete_nodes(&mut tx, &gone).await?;
                self.commit_with(tx, Recorded::Removed, &gone).await?;
                Ok(1)
            })
            .await?)
    }

    async fn remove_key(&self, key: &NodeKey) -> Result<u64, StoreError> {
        Ok(self
            .call("remove_key", || async move {
                let mut conn = self.pool.get_conn().await?;
                let mut tx = conn.start_transaction(TxOpts::default()).await?;
                let rows: Vec<Row> = tx
                    .exec(
                        "SELECT id, group_name, node_name FROM nodes \
                         WHERE group_name = ? AND node_name = ? FOR UPDATE",
                        (key.group(), stored_name(key)),
                    )
                    .await?;
                let gone = self.keys_from_rows(rows)?;
                if gone.is_empty() {
                    tx.rollback().await?;
                    return Ok(0);
                }
                self.delete_nodes(&mut tx, &gone).await?;
                self.commit_with(tx, Recorded::Removed, &gone).await?;
                Ok(1)
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
                // selected) or waits and then finds no row, and an eviction
                // by another instance at the same time waits and then finds
                // them gone. So the keys returned, and the removals
                // recorded, are exactly the rows deleted here. Through the
                // lease index, forced and unsorted, so that only the expired
                // rows are locked (see `attached_to`).
                let rows: Vec<Row> = tx
                    .exec(
                        "SELECT id, group_name, node_name FROM nodes \
                         FORCE INDEX (nodes_lease_until_ms) \
                         WHERE lease_until_ms <= ? FOR UPDATE",
                        (now.as_millis(),),
                    )
                    .await?;
                let mut gone = self.keys_from_rows(rows)?;
                gone.sort_unstable_by_key(|(id, _)| *id);
                self.delete_nodes(&mut tx, &gone).await?;
                self.commit_with(tx, Recorded::Removed, &gone).await?;
                Ok(gone.into_iter().map(|(_, key)| key).collect())
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

    /// The position of the newest change: the feed's head.
    async fn version(&self) -> Result<Option<u64>, StoreError> {
        let head: Option<u64> = self
            .call("version", || async move {
                let mut conn = self.pool.get_conn().await?;
                Ok(conn
                    .query_first("SELECT head FROM feed WHERE id = 1")
                    .await?)
            })
            .await?;
        Ok(Some(head.ok_or_else(|| self.feed_missing())?))
    }

    /// Reads the changes joined to the nodes they name, so a put gives the
    /// node as it is now; a put whose node has gone since is given as its
    /// removal.
    async fn changes(&self, after: u64, limit: usize) -> Result<Option<ChangePage>, StoreError> {
        // At least one row is read even for a page of none: the feed's row
        // comes with the first, and says whether there is a gap.
        let read = u64::try_from(limit).unwrap_or(u64::MAX).max(1);
        let rows: Vec<Row> = self
            .call("changes", || async move {
                let mut conn = self.pool.get_conn().await?;
                // One statement reads the feed's row, the changes and the
                // nodes in one read view, so the compaction mark comes with
                // the changes it covers. The page is cut inside the derived
                // table, in key order, so a follower far behind reads a
                // page, not the whole rest of the feed into a sort.
                let select = format!(
                    "SELECT f.compacted, c.position, c.kind, c.node_id, c.group_name, \
                     c.node_name, {JOINED_COLUMNS} \
                     FROM feed f \
                     LEFT JOIN (SELECT position, kind, node_id, group_name, node_name \
                         FROM changes WHERE position > ? ORDER BY position LIMIT ?) c ON TRUE \
                     LEFT JOIN nodes n ON c.kind = 'put' AND n.id = c.node_id \
                     WHERE f.id = 1 ORDER BY c.position"
                );
                Ok(conn.exec(select, (after, read)).await?)
            })
            .await?;
        let mut rows = rows.into_iter();
        let mut first = rows.next().ok_or_else(|| self.feed_missing())?;
        let compacted: u64 = self.take(Table::Changes, &mut first, 0)?;
        if after < compacted {
            return Ok(Some(ChangePage {
                changes: Vec::new(),
                next: after,
                gap: true,
            }));
        }
        // Positions have no holes (see `commit_with`), so the page is the run
        // of positions from `after + 1` on, stopping before one this read
        // does not show. Positions commit in order, so a read should show
        // every position before any it shows; but InnoDB builds a read
        // view while commits go on, and in this crate's concurrency test
        // (MariaDB 10.11, before this check) a follower was once shown a
        // position without the one before it, and would have skipped it
        // for ever. Stopping there, it reads that one next time.
        let mut changes: Vec<Change> = Vec::with_capacity(limit.min(rows.len() + 1));
        let mut expected = after.saturating_add(1);
        let mut missing = None;
        for row in std::iter::once(first).chain(rows).take(limit) {
            let Some(change) = self.change_from_row(row)? else {
                break;
            };
            if change.position != expected {
                missing = Some(expected);
                break;
            }
            expected = expected.saturating_add(1);
            changes.push(change);
        }
        // A position gone for good (compacted, with a mark the read did not
        // show, or deleted by hand) would stop the follower for ever: it
        // is told of a gap instead, and reloads.
        if let Some(position) = missing {
            if !self.change_exists(position).await? {
                return Ok(Some(ChangePage {
                    changes: Vec::new(),
                    next: after,
                    gap: true,
                }));
            }
        }
        let next = changes.last().map_or(after, |change| change.position);
        Ok(Some(ChangePage {
            changes,
            next,
            gap: false,
        }))
    }

    async fn compact_changes(&self, through: u64) -> Result<u64, StoreError> {
        Ok(self
            .call("compact_changes", || async move {
                let mut conn = self.pool.get_conn().await?;
                // The mark is raised (and committed) before any change is
                // deleted, so a follower that finds a change gone finds the
                // gap too. Never past the head: positions to come are not
                // compacted. One statement, so the feed's row is held only
                // while the server runs it.
                conn.exec_drop(
                    "UPDATE feed SET compacted = GREATEST(compacted, LEAST(?, head)) WHERE id = 1",
                    (through,),
                )
                .await?;
                let compacted: Option<u64> = conn
                    .query_first("SELECT compacted FROM feed WHERE id = 1")
                    .await?;
                let compacted = compacted.ok_or_else(|| self.feed_missing())?;
                // Up to the mark rather than `through`: what an earlier
                // compaction cut short (by its time bound) goes now. In
                // chunks, each committed on its own, so writers queue
                // behind no long delete.
                let mut gone = 0;
                loop {
                    conn.exec_drop(
                        "DELETE FROM changes WHERE position <= ? ORDER BY position LIMIT ?",
                        (compacted, COMPACT_CHUNK),
                    )
                    .await?;
                    let deleted = conn.affected_rows();
                    gone += deleted;
                    if deleted < COMPACT_CHUNK {
                        return Ok(gone);
                    }
                }
            })
            .await?)
    }

    async fn announce_instance(
        &self,
        id: &str,
        peer: &str,
        ttl: Duration,
        now: Timestamp,
    ) -> Result<Instance, StoreError> {
        check_instance_id(id).map_err(|source| MysqlError::InstanceId {
            id: id.to_owned(),
            source,
        })?;
        let (now_ms, lease_ms) = (now.as_millis(), (now + ttl).as_millis());
        let row: Option<Row> = self
            .call("announce_instance", || async move {
                let mut conn = self.pool.get_conn().await?;
                let mut tx = conn.start_transaction(TxOpts::default()).await?;
                // As an upsert of a node: the row stays locked until
                // commit, so the row read back is the one written here.
                tx.exec_drop(
                    "INSERT INTO instances (id, peer, started_ms, heartbeat_ms, lease_until_ms) \
                     VALUES (?, ?, ?, ?, ?) \
                     ON DUPLICATE KEY UPDATE peer = VALUES(peer), \
                     heartbeat_ms = VALUES(heartbeat_ms), lease_until_ms = VALUES(lease_until_ms)",
                    (id, peer, now_ms, now_ms, lease_ms),
                )
                .await?;
                let select = format!("SELECT {INSTANCE_COLUMNS} FROM instances WHERE id = ?");
                let row: Option<Row> = tx.exec_first(select, (id,)).await?;
                tx.commit().await?;
                Ok(row)
            })
            .await?;
        let row = row.ok_or_else(|| {
            self.corrupt(
                Table::Instances,
                format!("the row of instance {id} vanished inside its own transaction"),
            )
        })?;
        Ok(self.instance_from_row(row)?)
    }

    async fn instances(&self) -> Result<Vec<Instance>, StoreError> {
        let rows: Vec<Row> = self
            .call("instances", || async move {
                let mut conn = self.pool.get_conn().await?;
                let select = format!("SELECT {INSTANCE_COLUMNS} FROM instances ORDER BY id");
                Ok(conn.query(select).await?)
            })
            .await?;
        Ok(rows
            .into_iter()
            .map(|row| self.instance_from_row(row))
            .collect::<Result<_, _>>()?)
    }

    async fn retire_instance(&self, id: &str) -> Result<Vec<NodeKey>, StoreError> {
        check_instance_id(id).map_err(|source| MysqlError::InstanceId {
            id: id.to_owned(),
            source,
        })?;
        Ok(self
            .call("retire_instance", || async move {
                let mut conn = self.pool.get_conn().await?;
                let mut tx = conn.start_transaction(TxOpts::default()).await?;
                tx.exec_drop("DELETE FROM instances WHERE id = ?", (id,))
                    .await?;
                let gone = self.attached_to(&mut tx, id).await?;
                self.delete_nodes(&mut tx, &gone).await?;
                self.commit_with(tx, Recorded::Removed, &gone).await?;
                Ok(gone.into_iter().map(|(_, key)| key).collect())
            })
            .await?)
    }

    async fn expire_instances(&self, now: Timestamp) -> Result<Vec<RetiredInstance>, StoreError> {
        Ok(self
            .call("expire_instances", || async move {
                let mut conn = self.pool.get_conn().await?;
                let mut tx = conn.start_transaction(TxOpts::default()).await?;
                // Locked until commit: another process expiring at the same
                // time waits, then finds them gone, so each instance (and
                // each of its nodes) is reported by one process only.
                let mut ids: Vec<String> = tx
                    .exec(
                        "SELECT id FROM instances FORCE INDEX (instances_lease_until_ms) \
                         WHERE lease_until_ms <= ? FOR UPDATE",
                        (now.as_millis(),),
                    )
                    .await?;
                ids.sort_unstable();
                let mut retired = Vec::with_capacity(ids.len());
                let mut gone = Vec::new();
                for id in ids {
                    tx.exec_drop("DELETE FROM instances WHERE id = ?", (&id,))
                        .await?;
                    let detached = self.attached_to(&mut tx, &id).await?;
                    retired.push(RetiredInstance {
                        id,
                        detached: detached.iter().map(|(_, key)| key.clone()).collect(),
                    });
                    gone.extend(detached);
                }
                if retired.is_empty() {
                    tx.rollback().await?;
                    return Ok(retired);
                }
                self.delete_nodes(&mut tx, &gone).await?;
                self.commit_with(tx, Recorded::Removed, &gone).await?;
                Ok(retired)
            })
            .await?)
    }
}
