//! The schema's versions, embedded in the crate and applied at open.
//!
//! The version a database is at lives in `PRAGMA user_version` (0 for a new
//! file). Each migration runs in its own `BEGIN IMMEDIATE` transaction that
//! also sets the new version, so a crash leaves the database at a whole
//! version, and two processes opening one file at once do not both apply it.

use std::path::Path;

use rusqlite::{Connection, TransactionBehavior};

use crate::SqliteError;

/// One step of the schema.
struct Migration {
    version: i32,
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
///
/// 1: the `nodes` table. 2: the feed of changes (`changes`,
/// `changes_compacted`, and the triggers on `nodes` that fill it) and the
/// mediator instances (`instances`).
pub const SCHEMA_VERSION: i32 = 2;

fn user_version(conn: &Connection) -> rusqlite::Result<i32> {
    conn.query_row("PRAGMA user_version", [], |row| row.get(0))
}

/// Brings the database at `path` up to [`SCHEMA_VERSION`], refusing one at a
/// version this crate does not know (a newer one).
pub(crate) fn run(conn: &mut Connection, path: &Path) -> Result<(), SqliteError> {
    let found = user_version(conn).map_err(|e| SqliteError::opening(path, e))?;
    check_known(path, found)?;
    for migration in MIGRATIONS {
        if migration.version <= found {
            continue;
        }
        let failed = |source| SqliteError::Migration {
            path: path.to_path_buf(),
            version: migration.version,
            source,
        };
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(failed)?;
        // Another process may have migrated between our read and our lock.
        let now_at = user_version(&tx).map_err(failed)?;
        check_known(path, now_at)?;
        if now_at >= migration.version {
            continue;
        }
        tx.execute_batch(migration.sql).map_err(failed)?;
        tx.pragma_update(None, "user_version", migration.version)
            .map_err(failed)?;
        tx.commit().map_err(failed)?;
    }
    Ok(())
}

fn check_known(path: &Path, found: i32) -> Result<(), SqliteError> {
    // A negative version was never written by this crate either.
    if !(0..=SCHEMA_VERSION).contains(&found) {
        return Err(SqliteError::UnknownSchemaVersion {
            path: path.to_path_buf(),
            found,
            known: SCHEMA_VERSION,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_count_up_to_the_schema_version_without_gaps() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(usize::try_from(m.version).unwrap(), i + 1);
        }
        assert_eq!(MIGRATIONS.last().map(|m| m.version), Some(SCHEMA_VERSION));
    }

    #[test]
    fn running_twice_changes_nothing() {
        let mut conn = Connection::open_in_memory().unwrap();
        let path = Path::new(":memory:");
        run(&mut conn, path).unwrap();
        run(&mut conn, path).unwrap();
        assert_eq!(user_version(&conn).unwrap(), SCHEMA_VERSION);
    }
}
