//! Durable storage for Twinhub.
//!
//! The hub keeps its working state in memory (one owner per device, in the service
//! crate) and uses storage for durability and restart: every acknowledged write is
//! in a committed transaction first. Storage therefore needs only a small,
//! backend-neutral interface.
//!
//! # Layout
//! - [`Store`] (this file): the trait every backend implements — load everything,
//!   commit a batch atomically and durably, check integrity.
//! - [`committer`]: [`Committer`], the single writer thread that turns many
//!   concurrent writes into one transaction and one fsync (group commit).
//! - [`sqlite`]: [`SqliteStore`], the embedded default (WAL, `synchronous=FULL`).
//! - [`memory`]: [`MemoryStore`], records in memory, for tests of the layers above
//!   (it can also be told to refuse commits).
//! - [`conformance`] (feature `conformance`): the test kit every backend must pass.

pub mod committer;
#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
pub mod memory;
pub mod sqlite;

pub use committer::{CommitStatsSnapshot, Committer};
pub use memory::MemoryStore;
pub use sqlite::SqliteStore;

/// Which keyspace a record lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Space {
    /// Device records (identity and twin), keyed by device id.
    Devices,
    /// MQTT sessions (persistent subscriptions), keyed by client id.
    Sessions,
}

/// One change inside a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mutation {
    /// Insert or replace `key` in `space`.
    Put {
        /// Keyspace.
        space: Space,
        /// Record key.
        key: String,
        /// Opaque record bytes.
        value: Vec<u8>,
    },
    /// Remove `key` from `space` (absent keys are fine).
    Delete {
        /// Keyspace.
        space: Space,
        /// Record key.
        key: String,
    },
}

/// A storage failure. The hub stops acknowledging writes after one, since it can no
/// longer promise durability.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend reported an error.
    #[error("storage backend error: {0}")]
    Backend(String),
    /// The integrity check found a problem.
    #[error("storage integrity check failed: {0}")]
    Corrupt(String),
    /// The committer thread is gone (shutdown or an earlier failure).
    #[error("the storage committer has stopped")]
    Stopped,
}

/// What [`Store::load_each`] lends each record to: its key and stored bytes.
pub type LoadVisitor<'v> = dyn FnMut(&str, &[u8]) -> Result<(), StoreError> + 'v;

/// A durable key-value store with atomic batches.
///
/// Calls block; the [`Committer`] runs them on its own thread.
pub trait Store: Send + 'static {
    /// Every record of `space`, in ascending key order.
    fn load(&mut self, space: Space) -> Result<Vec<(String, Vec<u8>)>, StoreError>;

    /// Every record of `space`, in ascending key order, lent to `visit` one at a time,
    /// so that a start need not hold every stored record in memory at once (1.5 GB for
    /// a million twins). Stops at the first error, `visit`'s included.
    fn load_each(&mut self, space: Space, visit: &mut LoadVisitor<'_>) -> Result<(), StoreError> {
        for (key, value) in self.load(space)? {
            visit(&key, &value)?;
        }
        Ok(())
    }

    /// Applies `batch` in one transaction. When this returns `Ok`, the batch is
    /// durable: it survives a crash of the process or of the machine.
    fn commit(&mut self, batch: &[Mutation]) -> Result<(), StoreError>;

    /// Checks the backend's own consistency.
    fn check_integrity(&mut self) -> Result<(), StoreError>;
}
