//! [`SqliteRegistry`]: the [`Registry`] over one SQLite connection owned by a
//! dedicated thread.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mediator_core::formation::{
    check_instance_id, Change, ChangeKind, ChangePage, Instance, RetiredInstance,
};
use mediator_core::model::ATTACHED_SCHEME;
use mediator_core::StoreError;
use mediator_core::{
    async_trait, Endpoint, Meta, Node, NodeId, NodeKey, Registration, Registry, Timestamp,
};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Row, TransactionBehavior};
use tokio::sync::{mpsc, oneshot};

use crate::config::{Location, SqliteConfig};
use crate::{migrations, SqliteError};

/// Work for the database thread: runs with the connection, answers on its own
/// channel.
type Job = Box<dyn FnOnce(&mut Connection) + Send>;

enum Message {
    /// Work, and whether it may write (writes feed the checkpointer).
    Job { job: Job, writes: bool },
    /// Checkpoint, close the connection, answer, and end the thread.
    Close(oneshot::Sender<Result<(), SqliteError>>),
}

/// Writes between two nudges to the background checkpointer.
const WRITES_PER_NUDGE: u32 = 128;

/// WAL pages past which the checkpointer makes the WAL start over (16 MiB of
/// 4 KiB pages), briefly holding back the writer to do so.
const RESTART_PAGES: i64 = 4096;

/// WAL pages past which a commit checkpoints by itself: the backstop for a
/// checkpointer that is stuck (64 MiB of 4 KiB pages).
const AUTOCHECKPOINT_PAGES: u32 = 16_384;

/// Bytes the WAL file is cut back to when it starts over.
const JOURNAL_SIZE_LIMIT: i64 = 64 << 20;

/// A [`Registry`] kept in a SQLite database: a file (WAL mode) or memory.
///
/// One thread, started by `open`, owns the connection and runs every
/// statement in the order the calls were made; see the
/// [crate docs](crate#threading) for why. The registry is not `Clone`: share it
/// in an `Arc` (which also implements [`Registry`]). Dropping it closes the
/// database once queued work is done; [`close`](SqliteRegistry::close) does
/// the same but waits, checkpoints the WAL and reports errors.
///
/// ```
/// use mediator_core::{Endpoint, NodeKey, Registration, Registry, Timestamp};
/// use mediator_store_sqlite::SqliteRegistry;
/// use std::{sync::Arc, time::Duration};
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let registry = Arc::new(SqliteRegistry::open_in_memory().await.unwrap());
/// let key = NodeKey::unnamed("cache").unwrap();
/// let t0 = Timestamp::from_millis(1_000);
/// let reg = Registration::new(key.clone(), "attached:hub-1".parse().unwrap(), Duration::from_secs(10));
/// registry.upsert(reg, t0).await.unwrap();
/// assert_eq!(registry.evict_expired(t0 + Duration::from_secs(10)).await.unwrap(), vec![key]);
/// # });
/// ```
pub struct SqliteRegistry {
    jobs: mpsc::Sender<Message>,
    location: Location,
}

impl fmt::Debug for SqliteRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteRegistry")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

impl SqliteRegistry {
    /// Opens (creating it if missing) the database file at `path` in WAL mode
    /// and brings its schema up to date.
    ///
    /// # Errors
    /// [`SqliteError::InvalidPath`] for a directory or a path in a missing
    /// directory, [`SqliteError::Open`] when the file cannot be opened or
    /// created for another reason, [`SqliteError::NotADatabase`]
    /// when it holds something else, [`SqliteError::UnknownSchemaVersion`]
    /// when a newer build wrote it, [`SqliteError::Migration`] when the schema
    /// cannot be brought up to date. Every message names the path.
    pub async fn open(path: impl AsRef<Path>) -> Result<SqliteRegistry, SqliteError> {
        Self::with_config(SqliteConfig::file(path)).await
    }

    /// Opens a fresh, private in-memory database.
    ///
    /// # Errors
    /// Only when the database thread cannot be started.
    pub async fn open_in_memory() -> Result<SqliteRegistry, SqliteError> {
        Self::with_config(SqliteConfig::in_memory()).await
    }

    /// Opens the database `config` describes.
    ///
    /// # Errors
    /// As for [`open`](Self::open), and [`SqliteError::Config`] for a
    /// `queue_capacity` of 0.
    pub async fn with_config(config: SqliteConfig) -> Result<SqliteRegistry, SqliteError> {
        if config.queue_capacity == 0 {
            return Err(SqliteError::Config(
                "queue_capacity must be at least 1".into(),
            ));
        }
        let (jobs, queue) = mpsc::channel(config.queue_capacity);
        let (ready_tx, ready) = oneshot::channel();
        let location = config.location.clone();
        std::thread::Builder::new()
            .name("mediator-sqlite".into())
            .spawn(move || match Worker::start(&config) {
                Ok(worker) => {
                    if ready_tx.send(Ok(())).is_ok() {
                        worker.serve(queue);
                    }
                }
                Err(e) => {
                    // Nobody is left to tell when the caller gave up on open.
                    let _ = ready_tx.send(Err(e));
                }
            })
            .map_err(SqliteError::Spawn)?;
        ready.await.map_err(|_| SqliteError::Stopped)??;
        Ok(SqliteRegistry { jobs, location })
    }

    /// Where this registry's database lives.
    pub fn location(&self) -> &Location {
        &self.location
    }

    /// Waits for queued work, checkpoints the WAL into the main file
    /// (leaving the `-wal` file empty or gone) and closes the database.
    ///
    /// # Errors
    /// [`SqliteError::Close`] when SQLite refuses to checkpoint or close,
    /// [`SqliteError::Stopped`] when the database thread had already ended.
    pub async fn close(self) -> Result<(), SqliteError> {
        let (done_tx, done) = oneshot::channel();
        self.jobs
            .send(Message::Close(done_tx))
            .await
            .map_err(|_| SqliteError::Stopped)?;
        done.await.map_err(|_| SqliteError::Stopped)?
    }

    /// Runs `work` on the database thread and waits for its answer; `writes`
    /// says whether it may change the database.
    async fn call<T, F>(&self, writes: bool, work: F) -> Result<T, SqliteError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, SqliteError> + Send + 'static,
    {
        let (answer_tx, answer) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            // The caller may have stopped waiting (its future was dropped);
            // the work is done regardless, as with any sent request.
            let _ = answer_tx.send(work(conn));
        });
        self.jobs
            .send(Message::Job { job, writes })
            .await
            .map_err(|_| SqliteError::Stopped)?;
        answer.await.map_err(|_| SqliteError::Stopped)?
    }
}

/// The path errors name: the file, or `:memory:`.
fn shown_path(location: &Location) -> PathBuf {
    match location {
        Location::File(path) => path.clone(),
        Location::Memory => PathBuf::from(":memory:"),
    }
}

/// Opens, configures and migrates the connection (on the database thread).
fn connect(config: &SqliteConfig) -> Result<Connection, SqliteError> {
    let path = shown_path(&config.location);
    let opening = |e| SqliteError::opening(&path, e);
    let mut conn = match &config.location {
        Location::File(file) => {
            // No URI flag: the path is taken literally, so a file name with
            // `?` or `file:` in it means that file. No mutex: only the
            // database thread ever touches the connection.
            let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
            if config.create_if_missing {
                flags |= OpenFlags::SQLITE_OPEN_CREATE;
            }
            Connection::open_with_flags(file, flags).map_err(opening)?
        }
        Location::Memory => Connection::open_in_memory().map_err(opening)?,
    };
    conn.busy_timeout(config.busy_timeout).map_err(opening)?;
    // SQLite reads the header lazily: this is the first statement that
    // touches the file, so a corrupt one is reported here.
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
        .map_err(opening)?;
    if matches!(config.location, Location::File(_)) && !mode.eq_ignore_ascii_case("wal") {
        return Err(SqliteError::Setup {
            path,
            reason: format!("WAL mode is unavailable (journal mode stays {mode:?})"),
        });
    }
    conn.pragma_update(None, "synchronous", config.synchronous.pragma_value())
        .map_err(opening)?;
    if matches!(config.location, Location::File(_)) {
        conn.pragma_update(None, "wal_autocheckpoint", AUTOCHECKPOINT_PAGES)
            .map_err(opening)?;
        // A burst of writes can grow the WAL past RESTART_PAGES while a
        // checkpoint runs; this gives the space back when it starts over.
        let _: i64 = conn
            .query_row(
                &format!("PRAGMA journal_size_limit = {}", JOURNAL_SIZE_LIMIT),
                [],
                |row| row.get(0),
            )
            .map_err(opening)?;
    }
    conn.set_prepared_statement_cache_capacity(32);
    migrations::run(&mut conn, &path)?;
    Ok(conn)
}

/// The database thread's state: the connection, and for a file the
/// checkpointer that keeps WAL checkpoints (the only fsyncs in WAL mode with
/// `synchronous = NORMAL`) off the path of commits.
struct Worker {
    conn: Connection,
    location: Location,
    checkpointer: Option<Checkpointer>,
    writes: u32,
}

impl Worker {
    fn start(config: &SqliteConfig) -> Result<Worker, SqliteError> {
        let conn = connect(config)?;
        let checkpointer = match &config.location {
            Location::File(path) => Some(Checkpointer::start(path, config)?),
            Location::Memory => None,
        };
        Ok(Worker {
            conn,
            location: config.location.clone(),
            checkpointer,
            writes: 0,
        })
    }

    /// One job at a time, in arrival order, until closed or dropped.
    fn serve(mut self, mut queue: mpsc::Receiver<Message>) {
        while let Some(message) = queue.blocking_recv() {
            match message {
                Message::Job { job, writes } => {
                    job(&mut self.conn);
                    if writes {
                        self.wrote();
                    }
                }
                Message::Close(done) => {
                    // The caller is waiting on `done` unless its future was
                    // dropped, in which case the outcome has no reader.
                    let _ = done.send(self.close());
                    return;
                }
            }
        }
        // Every sender is gone (the registry was dropped): the connection
        // closes on drop, and SQLite checkpoints the WAL as the last
        // connection leaves.
        if let Some(checkpointer) = self.checkpointer.take() {
            checkpointer.stop();
        }
    }

    fn wrote(&mut self) {
        self.writes += 1;
        if self.writes < WRITES_PER_NUDGE {
            return;
        }
        self.writes = 0;
        if let Some(checkpointer) = &self.checkpointer {
            // A full channel means a nudge is already pending, and the
            // checkpoint it starts covers these writes too.
            let _ = checkpointer.nudge.try_send(());
        }
    }

    fn close(mut self) -> Result<(), SqliteError> {
        // Its connection must be gone for the WAL to be truncated and removed.
        if let Some(checkpointer) = self.checkpointer.take() {
            checkpointer.stop();
        }
        checkpoint_and_close(self.conn, &self.location)
    }
}

/// A thread with its own connection that copies the WAL back into the
/// database file when nudged.
///
/// Its `PASSIVE` checkpoints never block the writer, but under steady writes
/// they never catch up fully either, and SQLite only starts the WAL over
/// after a complete checkpoint. So once the WAL passes [`RESTART_PAGES`] it
/// runs a `RESTART` checkpoint, which holds the writer back for the few pages
/// left and the sync, and lets the next commit start the WAL over.
struct Checkpointer {
    nudge: std::sync::mpsc::SyncSender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Checkpointer {
    fn start(path: &Path, config: &SqliteConfig) -> Result<Checkpointer, SqliteError> {
        let opening = |e| SqliteError::opening(path, e);
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(opening)?;
        conn.busy_timeout(config.busy_timeout).map_err(opening)?;
        let (nudge, nudges) = std::sync::mpsc::sync_channel::<()>(1);
        let shown = path.display().to_string();
        let thread = std::thread::Builder::new()
            .name("mediator-sqlite-checkpoint".into())
            .spawn(move || {
                while nudges.recv().is_ok() {
                    let outcome = checkpoint(&conn, "PASSIVE").and_then(|wal_pages| {
                        if wal_pages >= RESTART_PAGES {
                            checkpoint(&conn, "RESTART")?;
                        }
                        Ok(())
                    });
                    if let Err(error) = outcome {
                        // Not fatal: commits checkpoint by themselves past
                        // AUTOCHECKPOINT_PAGES, and close checkpoints fully.
                        tracing::warn!(
                            database = %shown,
                            %error,
                            "background WAL checkpoint failed"
                        );
                    }
                }
            })
            .map_err(SqliteError::Spawn)?;
        Ok(Checkpointer { nudge, thread })
    }

    /// Ends the thread once a checkpoint in progress is done.
    fn stop(self) {
        drop(self.nudge);
        // The thread only waits on the channel just closed; an Err would
        // mean it panicked, which leaves nothing to clean up here.
        let _ = self.thread.join();
    }
}

/// Runs one checkpoint in `mode`; returns the WAL's size in pages (-1 when
/// another connection's checkpoint held it, which the next nudge retries).
fn checkpoint(conn: &Connection, mode: &str) -> rusqlite::Result<i64> {
    conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |row| {
        row.get(1)
    })
}

fn checkpoint_and_close(conn: Connection, location: &Location) -> Result<(), SqliteError> {
    let closing = |source| SqliteError::Close {
        path: shown_path(location),
        source,
    };
    if matches!(location, Location::File(_)) {
        // The row says whether another process's reader kept part of the
        // WAL; it is then checkpointed when that last connection closes,
        // which is not a failure of ours.
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .map_err(closing)?;
    }
    conn.close().map_err(|(_, e)| closing(e))
}

const COLUMNS: &str =
    "id, group_name, node_name, endpoint, meta, created_ms, updated_ms, lease_until_ms";

/// The stored form of a key: the unnamed node's name is `''`.
fn key_columns(key: &NodeKey) -> (&str, &str) {
    (key.group(), key.name().unwrap_or(""))
}

/// Reads one `COLUMNS` row back into a [`Node`]. The outer error is
/// SQLite's; the inner one refuses a row this crate could not have written.
fn node_from_row(row: &Row<'_>) -> rusqlite::Result<Result<Node, SqliteError>> {
    node_at(row, 0)
}

/// Reads the `COLUMNS` of a node that start at column `first` of `row`, as
/// [`node_from_row`] does.
fn node_at(row: &Row<'_>, first: usize) -> rusqlite::Result<Result<Node, SqliteError>> {
    let id: i64 = row.get(first)?;
    let group: String = row.get(first + 1)?;
    let name: String = row.get(first + 2)?;
    let endpoint: String = row.get(first + 3)?;
    let meta: String = row.get(first + 4)?;
    let created: i64 = row.get(first + 5)?;
    let updated: Option<i64> = row.get(first + 6)?;
    let lease_until: i64 = row.get(first + 7)?;
    let decoded = (|| -> Result<Node, SqliteError> {
        let key = decode_key(id, group, name)?;
        let endpoint: Endpoint = endpoint
            .parse()
            .map_err(|e: mediator_core::Error| bad_row(id, "endpoint", e))?;
        let meta: Meta = serde_json::from_str(&meta).map_err(|e| bad_row(id, "meta", e))?;
        Ok(Node {
            id: decode_id(id)?,
            key,
            endpoint,
            meta,
            created: Timestamp::from_millis(created),
            updated: updated.map(Timestamp::from_millis),
            lease_until: Timestamp::from_millis(lease_until),
        })
    })();
    Ok(decoded)
}

fn bad_row(id: i64, field: &'static str, reason: impl fmt::Display) -> SqliteError {
    SqliteError::BadRow {
        id,
        field,
        reason: reason.to_string(),
    }
}

fn decode_id(id: i64) -> Result<NodeId, SqliteError> {
    u64::try_from(id)
        .map(NodeId)
        .map_err(|_| bad_row(id, "id", "ids are positive"))
}

/// The key of a stored row: the name `''` is the unnamed node.
fn decode_key(id: i64, group: String, name: String) -> Result<NodeKey, SqliteError> {
    let name = (!name.is_empty()).then_some(name);
    NodeKey::new(group, name).map_err(|e| bad_row(id, "key", e))
}

fn query(op: &'static str) -> impl Fn(rusqlite::Error) -> SqliteError {
    move |source| SqliteError::Query { op, source }
}

/// Runs a `COLUMNS` query and decodes every row.
fn select_nodes(
    conn: &Connection,
    op: &'static str,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<Node>, SqliteError> {
    let mut stmt = conn.prepare_cached(sql).map_err(query(op))?;
    let rows = stmt.query_map(params, node_from_row).map_err(query(op))?;
    let mut nodes = Vec::new();
    for row in rows {
        nodes.push(row.map_err(query(op))??);
    }
    Ok(nodes)
}

/// The one row a `RETURNING` statement gives, stepping the statement to its
/// end.
///
/// `query_row` would reset the statement after the first row instead; the
/// commit then happens inside the reset, where SQLite skips its WAL hook, so
/// automatic checkpoints never run and the WAL grows without bound.
fn returning_one<T>(
    stmt: &mut rusqlite::CachedStatement<'_>,
    params: impl rusqlite::Params,
    read: impl FnOnce(&Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    let mut rows = stmt.query(params)?;
    let value = match rows.next()? {
        Some(row) => read(row)?,
        None => return Err(rusqlite::Error::QueryReturnedNoRows),
    };
    while rows.next()?.is_some() {}
    Ok(value)
}

/// A stored id, or `None` for one past `i64::MAX`, which no row can have.
fn row_id(id: NodeId) -> Option<i64> {
    i64::try_from(id.0).ok()
}

/// A feed position as SQLite stores it (`i64`); no change is stored past
/// `i64::MAX`, so a position beyond it stands for `i64::MAX`.
fn stored(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn bad_change(position: i64, field: &'static str, reason: impl fmt::Display) -> SqliteError {
    SqliteError::BadChange {
        position,
        field,
        reason: reason.to_string(),
    }
}

/// A feed read: every `changes` row after a position, with the node its
/// `put` rows name as it is now (`NULL`s when it is gone). The node's
/// columns come first so [`node_at`] reads them at 0.
const CHANGES_SQL: &str = "SELECT n.id, n.group_name, n.node_name, n.endpoint, n.meta, \
     n.created_ms, n.updated_ms, n.lease_until_ms, \
     c.position, c.kind, c.node_id, c.group_name, c.node_name \
     FROM changes c LEFT JOIN nodes n ON c.kind = 'put' AND n.id = c.node_id \
     WHERE c.position > ?1 ORDER BY c.position LIMIT ?2";

/// Reads one [`CHANGES_SQL`] row back into a [`Change`]. The outer error is
/// SQLite's; the inner one refuses a row this crate could not have written.
fn change_from_row(row: &Row<'_>) -> rusqlite::Result<Result<Change, SqliteError>> {
    let position: i64 = row.get(8)?;
    let kind: String = row.get(9)?;
    let node_id: i64 = row.get(10)?;
    let group: String = row.get(11)?;
    let name: String = row.get(12)?;
    let live = match kind.as_str() {
        "put" if row.get::<_, Option<i64>>(0)?.is_some() => Some(node_at(row, 0)?),
        // A put whose node is gone since reads as its removal: the
        // follower ends at the same state, and a page keeps one entry per
        // row, so its size does not depend on what happened since.
        "put" | "removed" => None,
        _ => {
            return Ok(Err(bad_change(
                position,
                "kind",
                format!("{kind:?} is neither 'put' nor 'removed'"),
            )))
        }
    };
    let decoded = (|| -> Result<Change, SqliteError> {
        let kind = match live {
            Some(node) => ChangeKind::Put(node?),
            None => ChangeKind::Removed {
                id: u64::try_from(node_id)
                    .map(NodeId)
                    .map_err(|_| bad_change(position, "node_id", "ids are positive"))?,
                key: NodeKey::new(group, (!name.is_empty()).then_some(name))
                    .map_err(|e| bad_change(position, "key", e))?,
            },
        };
        Ok(Change {
            position: u64::try_from(position)
                .map_err(|_| bad_change(position, "position", "positions are positive"))?,
            kind,
        })
    })();
    Ok(decoded)
}

/// The stored endpoint of every node attached to instance `id`.
fn attached_endpoint(id: &str) -> String {
    // As `Endpoint::attached` writes it; comparing the text finds exactly
    // the nodes of this instance, not those of `hub-1` when retiring `hub`.
    format!("{ATTACHED_SCHEME}:{id}")
}

/// Deletes every node attached to instance `id` (each deletion enters the
/// feed by the trigger on `nodes`) and returns their rows: id, group, name,
/// ordered by id.
///
/// No index on `endpoint`: this scans the nodes, which is paid only when
/// an instance leaves or dies, while an index would be paid by every
/// registration.
fn detach(
    conn: &Connection,
    op: &'static str,
    id: &str,
) -> Result<Vec<(i64, String, String)>, SqliteError> {
    let mut stmt = conn
        .prepare_cached("DELETE FROM nodes WHERE endpoint = ?1 RETURNING id, group_name, node_name")
        .map_err(query(op))?;
    let mut rows = stmt
        .query_map([attached_endpoint(id)], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
        })
        .map_err(query(op))?
        .collect::<rusqlite::Result<Vec<(i64, String, String)>>>()
        .map_err(query(op))?;
    // RETURNING gives rows in no set order.
    rows.sort_by_key(|(id, _, _)| *id);
    Ok(rows)
}

/// The keys of rows [`detach`] returned.
fn detached_keys(rows: Vec<(i64, String, String)>) -> Result<Vec<NodeKey>, SqliteError> {
    rows.into_iter()
        .map(|(id, group, name)| decode_key(id, group, name))
        .collect()
}

fn instance_from_row(row: &Row<'_>) -> rusqlite::Result<Instance> {
    Ok(Instance {
        id: row.get(0)?,
        peer: row.get(1)?,
        started: Timestamp::from_millis(row.get(2)?),
        heartbeat: Timestamp::from_millis(row.get(3)?),
        lease_until: Timestamp::from_millis(row.get(4)?),
    })
}

#[async_trait]
impl Registry for SqliteRegistry {
    async fn upsert(&self, registration: Registration, now: Timestamp) -> Result<Node, StoreError> {
        // A map with string keys and string values always serializes.
        let meta = serde_json::to_string(&registration.meta).expect("string map serializes");
        let lease_until = now + registration.ttl;
        let answer = self
            .call(true, move |conn| {
                // One statement, so atomic: a concurrent upsert of the same
                // key either inserts or updates, never adds a second row.
                let (group, name) = key_columns(&registration.key);
                let mut stmt = conn
                    .prepare_cached(
                        "INSERT INTO nodes (group_name, node_name, endpoint, meta, \
                         created_ms, updated_ms, lease_until_ms) \
                         VALUES (?1, ?2, ?3, ?4, ?5, NULL, ?6) \
                         ON CONFLICT (group_name, node_name) DO UPDATE SET \
                         endpoint = excluded.endpoint, meta = excluded.meta, \
                         updated_ms = excluded.created_ms, \
                         lease_until_ms = excluded.lease_until_ms \
                         RETURNING id, created_ms, updated_ms",
                    )
                    .map_err(query("upsert"))?;
                let (id, created, updated) = returning_one(
                    &mut stmt,
                    params![
                        group,
                        name,
                        registration.endpoint.to_string(),
                        meta,
                        now.as_millis(),
                        lease_until.as_millis()
                    ],
                    |row| {
                        Ok((
                            row.get::<_, i64>(0)?,
                            row.get::<_, i64>(1)?,
                            row.get::<_, Option<i64>>(2)?,
                        ))
                    },
                )
                .map_err(query("upsert"))?;
                Ok(Node {
                    id: decode_id(id)?,
                    key: registration.key,
                    endpoint: registration.endpoint,
                    meta: registration.meta,
                    created: Timestamp::from_millis(created),
                    updated: updated.map(Timestamp::from_millis),
                    lease_until,
                })
            })
            .await?;
        Ok(answer)
    }

    async fn renew(
        &self,
        key: &NodeKey,
        ttl: Duration,
        now: Timestamp,
    ) -> Result<Option<Timestamp>, StoreError> {
        let key = key.clone();
        let lease_until = now + ttl;
        let changed = self
            .call(true, move |conn| {
                let (group, name) = key_columns(&key);
                conn.prepare_cached(
                    "UPDATE nodes SET lease_until_ms = ?3, updated_ms = ?4 \
                     WHERE group_name = ?1 AND node_name = ?2",
                )
                .and_then(|mut stmt| {
                    stmt.execute(params![
                        group,
                        name,
                        lease_until.as_millis(),
                        now.as_millis()
                    ])
                })
                .map_err(query("renew"))
            })
            .await?;
        Ok((changed > 0).then_some(lease_until))
    }

    async fn remove(&self, id: NodeId) -> Result<u64, StoreError> {
        let Some(id) = row_id(id) else {
            return Ok(0);
        };
        let removed = self
            .call(true, move |conn| {
                conn.prepare_cached("DELETE FROM nodes WHERE id = ?1")
                    .and_then(|mut stmt| stmt.execute([id]))
                    .map_err(query("remove"))
            })
            .await?;
        Ok(removed as u64)
    }

    async fn remove_key(&self, key: &NodeKey) -> Result<u64, StoreError> {
        let key = key.clone();
        let removed = self
            .call(true, move |conn| {
                let (group, name) = key_columns(&key);
                conn.prepare_cached("DELETE FROM nodes WHERE group_name = ?1 AND node_name = ?2")
                    .and_then(|mut stmt| stmt.execute([group, name]))
                    .map_err(query("remove_key"))
            })
            .await?;
        Ok(removed as u64)
    }

    async fn get(&self, key: &NodeKey) -> Result<Option<Node>, StoreError> {
        let key = key.clone();
        let node = self
            .call(false, move |conn| {
                let (group, name) = key_columns(&key);
                let sql =
                    format!("SELECT {COLUMNS} FROM nodes WHERE group_name = ?1 AND node_name = ?2");
                let found = conn
                    .prepare_cached(&sql)
                    .and_then(|mut stmt| stmt.query_row([group, name], node_from_row).optional())
                    .map_err(query("get"))?;
                found.transpose()
            })
            .await?;
        Ok(node)
    }

    async fn get_by_id(&self, id: NodeId) -> Result<Option<Node>, StoreError> {
        let Some(id) = row_id(id) else {
            return Ok(None);
        };
        let node = self
            .call(false, move |conn| {
                let sql = format!("SELECT {COLUMNS} FROM nodes WHERE id = ?1");
                let found = conn
                    .prepare_cached(&sql)
                    .and_then(|mut stmt| stmt.query_row([id], node_from_row).optional())
                    .map_err(query("get_by_id"))?;
                found.transpose()
            })
            .await?;
        Ok(node)
    }

    async fn list(&self, group: Option<&str>) -> Result<Vec<Node>, StoreError> {
        let group = group.map(str::to_owned);
        let nodes = self
            .call(false, move |conn| match group {
                Some(group) => select_nodes(
                    conn,
                    "list",
                    &format!("SELECT {COLUMNS} FROM nodes WHERE group_name = ?1 ORDER BY id"),
                    [group],
                ),
                None => select_nodes(
                    conn,
                    "list",
                    &format!("SELECT {COLUMNS} FROM nodes ORDER BY id"),
                    [],
                ),
            })
            .await?;
        Ok(nodes)
    }

    /// Seeks by id, so a page costs a page whatever the registry's size.
    async fn list_page(
        &self,
        group: Option<&str>,
        after: Option<NodeId>,
        limit: usize,
    ) -> Result<Vec<Node>, StoreError> {
        let group = group.map(str::to_owned);
        // Ids are stored as SQLite integers, which every id fits; past
        // either bound nothing more can be listed anyway.
        let after = after.map_or(0, |id| i64::try_from(id.0).unwrap_or(i64::MAX));
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let nodes = self
            .call(false, move |conn| match group {
                Some(group) => select_nodes(
                    conn,
                    "list_page",
                    &format!(
                        "SELECT {COLUMNS} FROM nodes WHERE group_name = ?1 AND id > ?2 \
                         ORDER BY id LIMIT ?3"
                    ),
                    params![group, after, limit],
                ),
                None => select_nodes(
                    conn,
                    "list_page",
                    &format!("SELECT {COLUMNS} FROM nodes WHERE id > ?1 ORDER BY id LIMIT ?2"),
                    params![after, limit],
                ),
            })
            .await?;
        Ok(nodes)
    }

    async fn evict_expired(&self, now: Timestamp) -> Result<Vec<NodeKey>, StoreError> {
        let keys = self
            .call(true, move |conn| {
                // One statement: a lease renewed concurrently is either seen
                // renewed (kept) or not (evicted with its key reported).
                let mut stmt = conn
                    .prepare_cached(
                        "DELETE FROM nodes WHERE lease_until_ms <= ?1 \
                         RETURNING id, group_name, node_name",
                    )
                    .map_err(query("evict_expired"))?;
                let rows = stmt
                    .query_map([now.as_millis()], |row| {
                        Ok((
                            row.get::<_, i64>(0)?,
                            row.get::<_, String>(1)?,
                            row.get::<_, String>(2)?,
                        ))
                    })
                    .map_err(query("evict_expired"))?;
                // Step to the end before decoding so the statement completes
                // even if a row turns out to be undecodable.
                let rows = rows
                    .collect::<rusqlite::Result<Vec<_>>>()
                    .map_err(query("evict_expired"))?;
                rows.into_iter()
                    .map(|(id, group, name)| decode_key(id, group, name))
                    .collect()
            })
            .await?;
        Ok(keys)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.call(false, |conn| {
            conn.query_row("SELECT 1", [], |_| Ok(()))
                .map_err(query("ping"))
        })
        .await?;
        Ok(())
    }

    /// The position of the newest change, or the highest compacted one when
    /// compaction emptied the feed; 0 for a new database. Every process
    /// writing the file moves it, since the triggers on `nodes` record
    /// every write.
    async fn version(&self) -> Result<Option<u64>, StoreError> {
        let version = self
            .call(false, |conn| {
                // One statement, so one snapshot of both tables.
                let newest: i64 = conn
                    .prepare_cached(
                        "SELECT max(coalesce((SELECT max(position) FROM changes), 0), \
                         coalesce((SELECT max(position) FROM changes_compacted), 0))",
                    )
                    .and_then(|mut stmt| stmt.query_row([], |row| row.get(0)))
                    .map_err(query("version"))?;
                u64::try_from(newest)
                    .map_err(|_| bad_change(newest, "position", "positions are positive"))
            })
            .await?;
        Ok(Some(version))
    }

    /// Gives each `put` as the node is when the feed is read; one whose node
    /// is gone since reads as its removal.
    async fn changes(&self, after: u64, limit: usize) -> Result<Option<ChangePage>, StoreError> {
        let from = stored(after);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let page = self
            .call(false, move |conn| {
                // One read transaction, so one snapshot: a compaction by
                // another process between reading the compacted position
                // and the rows cannot hide the gap it made.
                let tx = conn.transaction().map_err(query("changes"))?;
                let compacted: i64 = tx
                    .prepare_cached("SELECT coalesce(max(position), 0) FROM changes_compacted")
                    .and_then(|mut stmt| stmt.query_row([], |row| row.get(0)))
                    .map_err(query("changes"))?;
                if from < compacted {
                    return Ok(ChangePage {
                        changes: Vec::new(),
                        next: after,
                        gap: true,
                    });
                }
                let rows = {
                    let mut stmt = tx.prepare_cached(CHANGES_SQL).map_err(query("changes"))?;
                    let rows = stmt
                        .query_map(params![from, limit], change_from_row)
                        .map_err(query("changes"))?;
                    rows.collect::<rusqlite::Result<Vec<_>>>()
                        .map_err(query("changes"))?
                };
                tx.commit().map_err(query("changes"))?;
                let changes = rows.into_iter().collect::<Result<Vec<Change>, _>>()?;
                let next = changes.last().map_or(after, |change| change.position);
                Ok(ChangePage {
                    changes,
                    next,
                    gap: false,
                })
            })
            .await?;
        Ok(Some(page))
    }

    /// Records as compacted the newest change it removed, never `through`
    /// itself: a `through` past the newest change would otherwise tell a
    /// follower that has read everything that it missed something.
    async fn compact_changes(&self, through: u64) -> Result<u64, StoreError> {
        let through = stored(through);
        let gone = self
            .call(true, move |conn| {
                let op = query("compact_changes");
                let tx = conn
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .map_err(&op)?;
                let newest_gone: Option<i64> = tx
                    .prepare_cached("SELECT max(position) FROM changes WHERE position <= ?1")
                    .and_then(|mut stmt| stmt.query_row([through], |row| row.get(0)))
                    .map_err(&op)?;
                let Some(newest_gone) = newest_gone else {
                    return Ok(0);
                };
                let gone = tx
                    .prepare_cached("DELETE FROM changes WHERE position <= ?1")
                    .and_then(|mut stmt| stmt.execute([newest_gone]))
                    .map_err(&op)?;
                // An upsert, so a row deleted by hand is written again
                // rather than the compaction going unrecorded.
                tx.prepare_cached(
                    "INSERT INTO changes_compacted (id, position) VALUES (1, ?1) \
                     ON CONFLICT (id) DO UPDATE SET \
                     position = max(position, excluded.position)",
                )
                .and_then(|mut stmt| stmt.execute([newest_gone]))
                .map_err(&op)?;
                tx.commit().map_err(&op)?;
                Ok(gone as u64)
            })
            .await?;
        Ok(gone)
    }

    async fn announce_instance(
        &self,
        id: &str,
        peer: &str,
        ttl: Duration,
        now: Timestamp,
    ) -> Result<Instance, StoreError> {
        let fresh =
            Instance::new(id, peer, now, ttl).map_err(|source| SqliteError::InvalidInstance {
                id: id.to_owned(),
                source,
            })?;
        let instance = self
            .call(true, move |conn| {
                // One statement, so a renewal racing a first announcement
                // of the same id either inserts or updates, never both.
                let mut stmt = conn
                    .prepare_cached(
                        "INSERT INTO instances \
                         (id, peer, started_ms, heartbeat_ms, lease_until_ms) \
                         VALUES (?1, ?2, ?3, ?3, ?4) \
                         ON CONFLICT (id) DO UPDATE SET peer = excluded.peer, \
                         heartbeat_ms = excluded.heartbeat_ms, \
                         lease_until_ms = excluded.lease_until_ms \
                         RETURNING started_ms",
                    )
                    .map_err(query("announce_instance"))?;
                let started = returning_one(
                    &mut stmt,
                    params![
                        fresh.id,
                        fresh.peer,
                        fresh.heartbeat.as_millis(),
                        fresh.lease_until.as_millis()
                    ],
                    |row| row.get::<_, i64>(0),
                )
                .map_err(query("announce_instance"))?;
                Ok(Instance {
                    started: Timestamp::from_millis(started),
                    ..fresh
                })
            })
            .await?;
        Ok(instance)
    }

    async fn instances(&self) -> Result<Vec<Instance>, StoreError> {
        let instances = self
            .call(false, |conn| {
                let mut stmt = conn
                    .prepare_cached(
                        "SELECT id, peer, started_ms, heartbeat_ms, lease_until_ms \
                         FROM instances ORDER BY id",
                    )
                    .map_err(query("instances"))?;
                let rows = stmt
                    .query_map([], instance_from_row)
                    .map_err(query("instances"))?;
                rows.collect::<rusqlite::Result<Vec<_>>>()
                    .map_err(query("instances"))
            })
            .await?;
        Ok(instances)
    }

    /// Refuses an id that is not a valid instance id, as
    /// [`announce_instance`](Registry::announce_instance) does: no instance
    /// can have it.
    async fn retire_instance(&self, id: &str) -> Result<Vec<NodeKey>, StoreError> {
        check_instance_id(id).map_err(|source| SqliteError::InvalidInstance {
            id: id.to_owned(),
            source,
        })?;
        let id = id.to_owned();
        let keys = self
            .call(true, move |conn| {
                let op = query("retire_instance");
                // One transaction: the instance and its nodes go together.
                let tx = conn
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .map_err(&op)?;
                tx.prepare_cached("DELETE FROM instances WHERE id = ?1")
                    .and_then(|mut stmt| stmt.execute([&id]))
                    .map_err(&op)?;
                let rows = detach(&tx, "retire_instance", &id)?;
                tx.commit().map_err(&op)?;
                // Decoded after the commit, as in `evict_expired`: a row that
                // cannot be decoded is reported, and gone all the same.
                detached_keys(rows)
            })
            .await?;
        Ok(keys)
    }

    async fn expire_instances(&self, now: Timestamp) -> Result<Vec<RetiredInstance>, StoreError> {
        let retired = self
            .call(true, move |conn| {
                let op = query("expire_instances");
                // One transaction: an instance renewing its lease meanwhile
                // is either seen renewed (kept, with its nodes) or expired
                // with all of them.
                let tx = conn
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .map_err(&op)?;
                let mut ids = {
                    let mut stmt = tx
                        .prepare_cached(
                            "DELETE FROM instances WHERE lease_until_ms <= ?1 RETURNING id",
                        )
                        .map_err(&op)?;
                    let rows = stmt
                        .query_map([now.as_millis()], |row| row.get::<_, String>(0))
                        .map_err(&op)?;
                    rows.collect::<rusqlite::Result<Vec<String>>>()
                        .map_err(&op)?
                };
                ids.sort();
                let mut gone = Vec::with_capacity(ids.len());
                for id in ids {
                    let rows = detach(&tx, "expire_instances", &id)?;
                    gone.push((id, rows));
                }
                tx.commit().map_err(&op)?;
                gone.into_iter()
                    .map(|(id, rows)| {
                        Ok(RetiredInstance {
                            id,
                            detached: detached_keys(rows)?,
                        })
                    })
                    .collect()
            })
            .await?;
        Ok(retired)
    }
}
