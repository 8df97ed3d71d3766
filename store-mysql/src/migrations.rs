//! The schema's versions, embedded in the crate and applied at open.
//!
//! The versions applied to a database are rows of its `mediator_schema`
//! table; the highest is the version the database is at (0 when the table is
//! new). Several mediator instances may open one database at once, so the
//! whole run holds a named lock (`GET_LOCK`) scoped to the database: the
//! first instance migrates, the others wait and then find nothing to do.
//! MySQL commits DDL implicitly, so a step is not atomic; each is recorded
//! right after it succeeds, and a step that stopped half way makes the next
//! open fail with the server's message (such as "table exists") rather than
//! run it twice.

use mysql_async::prelude::Queryable;
use mysql_async::Conn;

use crate::MysqlError;

/// One step of the schema.
struct Migration {
    version: u32,
    sql: &'static str,
}

/// Every step, in order; versions count up from 1 without gaps.
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        sql: include_str!("migrations/0001_create_nodes.sql"),
    },
    Migration {
        version: 2,
        sql: include_str!("migrations/0002_feed_and_instances.sql"),
    },
];

/// The schema version this crate writes and understands.
pub const SCHEMA_VERSION: u32 = 2;

const CREATE_SCHEMA_TABLE: &str = "CREATE TABLE IF NOT EXISTS mediator_schema (
    version    INT UNSIGNED NOT NULL PRIMARY KEY,
    applied_at TIMESTAMP    NOT NULL DEFAULT CURRENT_TIMESTAMP
) ENGINE = InnoDB";

/// Lock names are server-wide and at most 64 characters: scope the lock to
/// this database so that instances using other databases do not queue.
const LOCK_NAME: &str = "LEFT(CONCAT('mediator_schema:', DATABASE()), 64)";

/// Brings the database `conn` uses up to [`SCHEMA_VERSION`], refusing one at
/// a version this crate does not know (a newer one). `lock_wait_secs` bounds
/// the wait for another instance's migration.
pub(crate) async fn run(
    conn: &mut Conn,
    addr: &str,
    lock_wait_secs: u64,
) -> Result<(), MysqlError> {
    let fail = |e| MysqlError::driver(addr, "schema migration", e);
    let database: Option<Option<String>> =
        conn.query_first("SELECT DATABASE()").await.map_err(fail)?;
    let database = database.flatten().ok_or_else(|| {
        MysqlError::Url(format!(
            "the url for mysql at {addr} names no database; add /<database> to it"
        ))
    })?;
    let locked: Option<Option<i64>> = conn
        .exec_first(
            format!("SELECT GET_LOCK({LOCK_NAME}, ?)"),
            (lock_wait_secs,),
        )
        .await
        .map_err(fail)?;
    if locked.flatten() != Some(1) {
        return Err(MysqlError::Migration {
            database,
            reason: format!("another process held the schema lock for over {lock_wait_secs} s"),
        });
    }
    let result = migrate(conn, addr, &database).await;
    // Closing the connection would release the lock too; releasing it here
    // lets a waiting instance go on at once. A failure to release matters
    // only when migrating succeeded.
    let released = conn
        .query_drop(format!("DO RELEASE_LOCK({LOCK_NAME})"))
        .await
        .map_err(fail);
    result.and(released)
}

async fn migrate(conn: &mut Conn, addr: &str, database: &str) -> Result<(), MysqlError> {
    let fail = |e| MysqlError::driver(addr, "schema migration", e);
    conn.query_drop(CREATE_SCHEMA_TABLE).await.map_err(fail)?;
    let found: Option<u64> = conn
        .query_first("SELECT CAST(COALESCE(MAX(version), 0) AS UNSIGNED) FROM mediator_schema")
        .await
        .map_err(fail)?;
    let found = found.unwrap_or(0);
    if found > u64::from(SCHEMA_VERSION) {
        return Err(MysqlError::SchemaTooNew {
            database: database.to_owned(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    for migration in MIGRATIONS {
        if u64::from(migration.version) <= found {
            continue;
        }
        conn.query_drop(migration.sql)
            .await
            .map_err(|e| MysqlError::Migration {
                database: database.to_owned(),
                reason: format!(
                    "step to version {} failed: {}",
                    migration.version,
                    MysqlError::driver(addr, "schema migration", e)
                ),
            })?;
        conn.exec_drop(
            "INSERT INTO mediator_schema (version) VALUES (?)",
            (migration.version,),
        )
        .await
        .map_err(fail)?;
        tracing::info!(
            database,
            version = migration.version,
            "mysql schema migrated"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_count_up_to_the_schema_version_without_gaps() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(usize::try_from(m.version).expect("small"), i + 1);
        }
        assert_eq!(MIGRATIONS.last().map(|m| m.version), Some(SCHEMA_VERSION));
    }
}
