//! Loading the working state at start, on every core.
//!
//! Decoding a million stored records is most of a restart (serde_json building
//! each twin). The store streams its rows in key order on this thread; each row
//! goes, by the shard its key hashes to, to one of a few decoding threads that
//! owns that shard, so every shard's records still arrive sorted. A thread
//! decodes each twin and, once the rows end, builds its shards'
//! maps in bulk from the sorted records: no per-key search, and full B-tree nodes
//! (inserting keys in order one by one leaves every node about half empty).
//! Rows travel in batches through bounded channels, so the stored bytes in memory
//! at once are a few batches, not the whole table.

use crate::shard::{shard_index, DeviceRecord, Shard};
use compact_str::CompactString;
use std::collections::BTreeMap;
use std::sync::mpsc::{sync_channel, Receiver};
use std::thread;
use twinhub_core::identity::ConnectionState;
use twinhub_store::{Space, Store, StoreError};

/// Rows per batch handed to a decoding thread.
const BATCH: usize = 512;
/// Batches queued per decoding thread.
const QUEUED: usize = 4;
/// Most decoding threads.
const MAX_THREADS: usize = 8;

type Rows = Vec<(CompactString, Vec<u8>)>;
/// The shards one decoding thread built: `(shard index, its map)`.
type Decoded = Vec<(usize, BTreeMap<CompactString, DeviceRecord>)>;

/// Every stored device record, in `count` shards.
pub(crate) fn load_shards<S: Store>(store: &mut S, count: usize) -> Result<Vec<Shard>, StoreError> {
    let threads = thread::available_parallelism()
        .map_or(1, usize::from)
        .clamp(1, MAX_THREADS);
    thread::scope(|scope| {
        let mut senders = Vec::with_capacity(threads);
        let mut decoders = Vec::with_capacity(threads);
        for _ in 0..threads {
            let (tx, rx) = sync_channel::<Rows>(QUEUED);
            senders.push(tx);
            decoders.push(scope.spawn(move || decode(rx, count)));
        }
        let mut batches: Vec<Rows> = (0..threads).map(|_| Vec::with_capacity(BATCH)).collect();
        let read = store.load_each(Space::Devices, &mut |key, bytes| {
            let thread = shard_index(key) % threads;
            let (Some(batch), Some(sender)) = (batches.get_mut(thread), senders.get(thread)) else {
                return Err(StoreError::Stopped);
            };
            batch.push((key.into(), bytes.to_vec()));
            if batch.len() == BATCH {
                let full = std::mem::replace(batch, Vec::with_capacity(BATCH));
                // A decoder that hung up failed; its own error is reported below.
                sender.send(full).map_err(|_| StoreError::Stopped)?;
            }
            Ok(())
        });
        for (batch, sender) in batches.into_iter().zip(&senders) {
            if !batch.is_empty() {
                // As above: a failed decoder reports its own error.
                let _ = sender.send(batch);
            }
        }
        drop(senders);
        let mut shards: Vec<Shard> = (0..count).map(|_| Shard::default()).collect();
        let mut failure = None;
        for decoder in decoders {
            match decoder.join() {
                Ok(Ok(decoded)) => {
                    for (index, devices) in decoded {
                        if let Some(shard) = shards.get_mut(index) {
                            shard.devices = devices;
                        }
                    }
                }
                Ok(Err(e)) => failure = failure.or(Some(e)),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        match (failure, read) {
            (Some(e), _) | (None, Err(e)) => Err(e),
            (None, Ok(())) => Ok(shards),
        }
    })
}

/// Decodes the rows of the shards sent to this thread.
fn decode(rows: Receiver<Rows>, count: usize) -> Result<Decoded, StoreError> {
    let mut sorted: Vec<Vec<(CompactString, DeviceRecord)>> =
        (0..count).map(|_| Vec::new()).collect();
    for batch in rows {
        for (key, bytes) in batch {
            // One UTF-8 check of the whole record (vectorised) instead of one per
            // string, which is what `from_slice` does.
            let text = std::str::from_utf8(&bytes)
                .map_err(|e| StoreError::Corrupt(format!("device record '{key}': {e}")))?;
            let mut record: DeviceRecord = serde_json::from_str(text)
                .map_err(|e| StoreError::Corrupt(format!("device record '{key}': {e}")))?;
            // Nobody is connected to a hub that just started.
            record.identity.connection_state = ConnectionState::Disconnected;
            for module in record.modules.values_mut() {
                module.identity.connection_state = ConnectionState::Disconnected;
            }
            if let Some(shard) = sorted.get_mut(shard_index(&key)) {
                shard.push((key, record));
            }
        }
    }
    Ok(sorted
        .into_iter()
        .enumerate()
        .filter(|(_, records)| !records.is_empty())
        // Keys arrive in ascending order, so this is a linear bulk build.
        .map(|(index, records)| (index, records.into_iter().collect()))
        .collect())
}
