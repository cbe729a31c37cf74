//! The embedded backend: SQLite through rusqlite (bundled, so there is nothing to
//! install).
//!
//! WAL mode with `synchronous=FULL` makes every commit durable with one fsync of the
//! log; the [`Committer`](crate::Committer) puts many writes into each commit, which
//! is what makes that affordable.

use crate::{LoadVisitor, Mutation, Space, Store, StoreError};
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

/// The database holds every device's keys, so it is created owner-only (mode
/// 0600) before SQLite opens it; SQLite gives the `-wal` and `-shm` files it creates
/// the database file's mode. Files an older version left readable are tightened.
fn restrict_to_owner(path: &Path) -> std::io::Result<()> {
    use std::fs::{OpenOptions, Permissions};
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    for suffix in ["", "-wal", "-shm"] {
        let mut file = path.as_os_str().to_owned();
        file.push(suffix);
        match std::fs::set_permissions(&file, Permissions::from_mode(0o600)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        restrict_to_owner(path)
            .map_err(|e| StoreError::Backend(format!("{}: {e}", path.display())))?;
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

    fn load_each(&mut self, space: Space, visit: &mut LoadVisitor<'_>) -> Result<(), StoreError> {
        let sql = format!("SELECT key, value FROM {} ORDER BY key", table(space));
        let mut stmt = self.conn.prepare(&sql).map_err(backend)?;
        let mut rows = stmt.query([]).map_err(backend)?;
        while let Some(row) = rows.next().map_err(backend)? {
            let field = |i: usize| {
                row.get_ref(i)
                    .map_err(backend)?
                    .as_bytes()
                    .map_err(|e| StoreError::Corrupt(format!("{} row: {e}", table(space))))
            };
            let key = std::str::from_utf8(field(0)?)
                .map_err(|e| StoreError::Corrupt(format!("{} key: {e}", table(space))))?;
            visit(key, field(1)?)?;
        }
        Ok(())
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
    fn database_files_are_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("twinhub.db");
        let mode = |suffix: &str| {
            let mut file = path.as_os_str().to_owned();
            file.push(suffix);
            std::fs::metadata(file).unwrap().permissions().mode() & 0o777
        };
        let mut store = SqliteStore::open(&path).unwrap();
        store
            .commit(&[Mutation::Put {
                space: Space::Devices,
                key: "d".into(),
                value: b"keys".to_vec(),
            }])
            .unwrap();
        for suffix in ["", "-wal", "-shm"] {
            assert_eq!(mode(suffix), 0o600, "twinhub.db{suffix}");
        }
        drop(store);
        // A database an older version created world-readable is tightened on open.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let _store = SqliteStore::open(&path).unwrap();
        assert_eq!(mode(""), 0o600);
    }

    #[test]
    fn load_each_streams_what_load_returns() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(&dir.path().join("twinhub.db")).unwrap();
        let batch: Vec<Mutation> = ["b", "a", "c"]
            .iter()
            .map(|k| Mutation::Put {
                space: Space::Devices,
                key: (*k).into(),
                value: format!("value of {k}").into_bytes(),
            })
            .collect();
        store.commit(&batch).unwrap();
        let mut streamed = Vec::new();
        store
            .load_each(Space::Devices, &mut |k, v| {
                streamed.push((k.to_owned(), v.to_vec()));
                Ok(())
            })
            .unwrap();
        assert_eq!(streamed, store.load(Space::Devices).unwrap());
        assert_eq!(streamed.len(), 3);
        let mut seen = 0;
        let stopped = store.load_each(Space::Devices, &mut |_, _| {
            seen += 1;
            Err(StoreError::Stopped)
        });
        assert!(matches!(stopped, Err(StoreError::Stopped)));
        assert_eq!(seen, 1);
    }

    #[test]
    fn sqlite_passes_the_conformance_kit() {
        crate::conformance::run_all(|path| SqliteStore::open(&path.join("twinhub.db")));
    }
}
