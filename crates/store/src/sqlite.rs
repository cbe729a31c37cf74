//! The embedded backend: SQLite through rusqlite (bundled, so there is nothing to
//! install).
//!
//! WAL mode with `synchronous=FULL` makes every commit durable with one fsync of the
//! log; the [`Committer`](crate::Committer) puts many writes into each commit, which
//! is what makes that affordable.

use crate::{Mutation, Space, Store, StoreError};
use rusqlite::{params, Connection};
use std::path::Path;

/// A SQLite database file holding every keyspace.
pub struct SqliteStore {
    conn: Connection,
}

fn backend(e: rusqlite::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn table(space: Space) -> &'static str {
    match space {
        Space::Devices => "devices",
        Space::Sessions => "sessions",
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open(path).map_err(backend)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             PRAGMA foreign_keys = OFF;
             CREATE TABLE IF NOT EXISTS devices (key TEXT PRIMARY KEY NOT NULL, value BLOB NOT NULL);
             CREATE TABLE IF NOT EXISTS sessions (key TEXT PRIMARY KEY NOT NULL, value BLOB NOT NULL);",
        )
        .map_err(backend)?;
        Ok(Self { conn })
    }
}

impl Store for SqliteStore {
    fn load(&mut self, space: Space) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let sql = format!("SELECT key, value FROM {} ORDER BY key", table(space));
        let mut stmt = self.conn.prepare(&sql).map_err(backend)?;
        let rows = stmt
            .query_map([], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, Vec<u8>>(1)?))
            })
            .map_err(backend)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(backend)
    }

    fn commit(&mut self, batch: &[Mutation]) -> Result<(), StoreError> {
        let tx = self.conn.transaction().map_err(backend)?;
        for m in batch {
            match m {
                Mutation::Put { space, key, value } => {
                    let sql = format!(
                        "INSERT OR REPLACE INTO {} (key, value) VALUES (?1, ?2)",
                        table(*space)
                    );
                    tx.prepare_cached(&sql)
                        .and_then(|mut s| s.execute(params![key, value]))
                        .map_err(backend)?;
                }
                Mutation::Delete { space, key } => {
                    let sql = format!("DELETE FROM {} WHERE key = ?1", table(*space));
                    tx.prepare_cached(&sql)
                        .and_then(|mut s| s.execute(params![key]))
                        .map_err(backend)?;
                }
            }
        }
        tx.commit().map_err(backend)
    }

    fn check_integrity(&mut self) -> Result<(), StoreError> {
        let result: String = self
            .conn
            .query_row("PRAGMA integrity_check", [], |row| row.get(0))
            .map_err(backend)?;
        if result == "ok" {
            Ok(())
        } else {
            Err(StoreError::Corrupt(result))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_passes_the_conformance_kit() {
        crate::conformance::run_all(|path| SqliteStore::open(&path.join("twinhub.db")));
    }
}
