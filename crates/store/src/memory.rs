//! [`MemoryStore`]: every record in memory, for tests of the layers above storage
//! (no files, no fsync), and a store that can be told to refuse commits, to test
//! what those layers do when storage fails.
//!
//! Clones share one set of records, so a test "restarts" by opening a hub on a
//! clone of the store the previous hub used.

use crate::{LoadVisitor, Mutation, Space, Store, StoreError};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// An in-memory [`Store`]; see the module documentation.
#[derive(Clone, Default)]
pub struct MemoryStore {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    spaces: Mutex<HashMap<Space, BTreeMap<String, Vec<u8>>>>,
    refuse: AtomicBool,
    commits: AtomicU64,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn spaces(&self) -> MutexGuard<'_, HashMap<Space, BTreeMap<String, Vec<u8>>>> {
        // Every commit applies whole or not at all, so a poisoned lock is usable.
        self.shared.spaces.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// While `refuse` is true every commit fails (and changes nothing), as a full
    /// or failed disk would.
    pub fn refuse_commits(&self, refuse: bool) {
        self.shared.refuse.store(refuse, Ordering::SeqCst);
    }

    /// Commits that succeeded so far.
    pub fn commits(&self) -> u64 {
        self.shared.commits.load(Ordering::SeqCst)
    }

    /// The records of `space` now, in key order.
    pub fn records(&self, space: Space) -> Vec<(String, Vec<u8>)> {
        self.spaces()
            .get(&space)
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    }
}

impl Store for MemoryStore {
    fn load(&mut self, space: Space) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        Ok(self.records(space))
    }

    fn load_each(&mut self, space: Space, visit: &mut LoadVisitor<'_>) -> Result<(), StoreError> {
        // A copy, so that `visit` runs without the lock held.
        for (key, value) in self.records(space) {
            visit(&key, &value)?;
        }
        Ok(())
    }

    fn commit(&mut self, batch: &[Mutation]) -> Result<(), StoreError> {
        if self.shared.refuse.load(Ordering::SeqCst) {
            return Err(StoreError::Backend("commits are refused (test)".into()));
        }
        let mut spaces = self.spaces();
        for mutation in batch {
            match mutation {
                Mutation::Put { space, key, value } => {
                    spaces
                        .entry(*space)
                        .or_default()
                        .insert(key.clone(), value.clone());
                }
                Mutation::Delete { space, key } => {
                    if let Some(records) = spaces.get_mut(space) {
                        records.remove(key);
                    }
                }
            }
        }
        self.shared.commits.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn check_integrity(&mut self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str) -> Mutation {
        Mutation::Put {
            space: Space::Devices,
            key: key.into(),
            value: key.as_bytes().to_vec(),
        }
    }

    #[test]
    fn memory_passes_the_conformance_kit() {
        // The kit reopens a store on the directory it was first opened on: one
        // shared store per directory stands for the files.
        let stores: Mutex<HashMap<std::path::PathBuf, MemoryStore>> = Mutex::default();
        crate::conformance::run_all(|path| {
            Ok(stores
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(path.to_owned())
                .or_default()
                .clone())
        });
    }

    #[test]
    fn a_refused_commit_changes_nothing_and_later_ones_apply() {
        let mut store = MemoryStore::new();
        store.commit(&[put("a")]).unwrap();
        store.refuse_commits(true);
        assert!(store.commit(&[put("b"), put("c")]).is_err());
        assert_eq!(store.records(Space::Devices).len(), 1);
        store.refuse_commits(false);
        store.commit(&[put("b")]).unwrap();
        assert_eq!(store.commits(), 2);
        let keys: Vec<String> = store
            .records(Space::Devices)
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, ["a", "b"]);
    }
}
