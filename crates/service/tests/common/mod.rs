//! Test kit shared by the service-layer tests: a hub over SQLite in a directory.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use twinhub_core::policy::{default_policies, Policy};
use twinhub_service::{Hub, HubConfig};
use twinhub_store::SqliteStore;

/// The hub on `dir/db` (created or reopened) with `policies`, and its committer.
pub fn open_with(
    dir: &std::path::Path,
    policies: Vec<Policy>,
) -> (Hub, std::thread::JoinHandle<()>) {
    let config = HubConfig {
        host_names: vec!["h.local".into()],
        limits: Default::default(),
        policies,
    };
    Hub::open(config, SqliteStore::open(&dir.join("db")).unwrap()).unwrap()
}

/// The hub on `dir/db` with freshly keyed default policies.
pub fn open(dir: &std::path::Path) -> (Hub, std::thread::JoinHandle<()>) {
    open_with(dir, default_policies(&mut rand::rngs::OsRng))
}

/// A hub on an in-memory store (no files, no fsync) with freshly keyed default
/// policies; the store is returned so a test can reopen on it or make it fail.
pub fn open_in_memory() -> (Hub, twinhub_store::MemoryStore) {
    let store = twinhub_store::MemoryStore::new();
    let config = HubConfig {
        host_names: vec!["h.local".into()],
        limits: Default::default(),
        policies: default_policies(&mut rand::rngs::OsRng),
    };
    let (hub, _committer) = Hub::open(config, store.clone()).unwrap();
    (hub, store)
}
