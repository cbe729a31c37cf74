//! Writing a large fleet straight into a fresh data directory's database.
//!
//! A million twins through REST would take hours of bulk requests; instead the
//! records are built with the same core operations the hub runs
//! (`DeviceIdentity::create`, `Twin::new`, `apply_service_patch`,
//! `apply_reported_patch`), serialised as the hub stores them (a
//! `DeviceRecord` in JSON) and committed through the same `SqliteStore`, so the
//! hub loads them at start exactly as if they had arrived one by one.

use crate::fleet::{device_id, identity_body, progress, reported_patch, service_patch};
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};
use twinhub_core::identity::DeviceIdentity;
use twinhub_core::twin::Twin;
use twinhub_core::{Limits, Timestamp};
use twinhub_service::state::DeviceRecord;
use twinhub_store::{Mutation, Space, SqliteStore, Store};

/// Records per transaction.
const BATCH: usize = 10_000;

/// What loading took.
pub(crate) struct Loaded {
    pub(crate) elapsed: Duration,
    pub(crate) record_bytes: u64,
    pub(crate) database_bytes: u64,
}

fn now() -> Timestamp {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    Timestamp::from_unix_nanos(nanos)
}

/// Device `i`'s stored record: exactly what the hub would hold after the device
/// was created, its tags and desired properties set, and one reported patch.
pub(crate) fn record(
    prefix: &str,
    i: usize,
    rng: &mut rand::rngs::StdRng,
) -> Result<Vec<u8>, String> {
    let limits = Limits::default();
    let id = device_id(prefix, i);
    let identity =
        DeviceIdentity::create(&id, &identity_body(i), rng).map_err(|e| e.message.clone())?;
    let created = now();
    let mut twin = Twin::new(created);
    twin.apply_service_patch(&service_patch(i), created, &limits)
        .map_err(|e| e.message.clone())?;
    twin.apply_reported_patch(&reported_patch(i, 0), None, created, &limits)
        .map_err(|e| e.message.clone())?;
    serde_json::to_vec(&DeviceRecord::new(identity, twin)).map_err(|e| e.to_string())
}

/// Writes devices `0..count` into `data_dir/twinhub.db`, which must not exist yet.
/// Records are built on `threads` threads; one thread commits.
pub(crate) fn load(
    data_dir: &Path,
    prefix: &str,
    count: usize,
    threads: usize,
) -> Result<Loaded, String> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(data_dir)
        .map_err(|e| format!("cannot create {}: {e}", data_dir.display()))?;
    let db = data_dir.join("twinhub.db");
    if db.exists() {
        return Err(format!(
            "{} exists: the loader only fills a fresh data directory",
            db.display()
        ));
    }
    let mut store = SqliteStore::open(&db).map_err(|e| e.to_string())?;
    let started = Instant::now();
    let bar = progress(count, "load");
    let threads = threads.max(1);
    let (tx, rx) = mpsc::sync_channel::<Result<Vec<Mutation>, String>>(threads * 2);
    let mut record_bytes = 0u64;
    std::thread::scope(|scope| -> Result<(), String> {
        for t in 0..threads {
            let tx = tx.clone();
            scope.spawn(move || {
                use rand::SeedableRng;
                let mut rng = rand::rngs::StdRng::seed_from_u64(t as u64);
                // Thread t builds batches t, t + threads, t + 2 * threads, ...
                let mut start = t * BATCH;
                while start < count {
                    let end = (start + BATCH).min(count);
                    let batch = (start..end)
                        .map(|i| {
                            record(prefix, i, &mut rng).map(|value| Mutation::Put {
                                space: Space::Devices,
                                key: device_id(prefix, i),
                                value,
                            })
                        })
                        .collect::<Result<Vec<_>, _>>();
                    if tx.send(batch).is_err() {
                        return;
                    }
                    start += threads * BATCH;
                }
            });
        }
        drop(tx);
        for batch in rx {
            let batch = batch?;
            record_bytes += batch
                .iter()
                .map(|m| match m {
                    Mutation::Put { value, .. } => value.len() as u64,
                    Mutation::Delete { .. } => 0,
                })
                .sum::<u64>();
            store.commit(&batch).map_err(|e| e.to_string())?;
            bar.inc(batch.len() as u64);
        }
        Ok(())
    })?;
    drop(store);
    bar.finish_and_clear();
    let database_bytes = ["twinhub.db", "twinhub.db-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(data_dir.join(f)).ok())
        .map(|m| m.len())
        .sum();
    Ok(Loaded {
        elapsed: started.elapsed(),
        record_bytes,
        database_bytes,
    })
}
