//! The bottom layer of the working state: device records and the shards that
//! hold them. Nothing here knows the hub: [`crate::state`] composes shards with
//! the committer, the event mailboxes and the rest, and every feature module
//! reads and writes records through it.

use crate::index::Indexes;
use crate::sessions::StoredSession;
use compact_str::CompactString;
use serde::{Deserialize, Serialize};
use std::collections::hash_map::DefaultHasher;
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::{Mutex, MutexGuard};
use twinhub_core::identity::DeviceIdentity;
use twinhub_core::module::ModuleIdentity;
use twinhub_core::twin::Twin;
use twinhub_core::{ErrorCode, HubError};

/// Number of shards. A power of two well above the core count keeps lock
/// contention negligible without making whole-hub scans expensive.
pub(crate) const SHARDS: usize = 64;

/// A device's identity and twin, with its modules': the unit of storage and of
/// locking, so a device and its modules are written in one order and deleted
/// together.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceRecord {
    /// The registry entry.
    pub identity: DeviceIdentity,
    /// The twin.
    pub twin: Twin,
    /// The device's modules by module id (stored only when there are any, so a
    /// record without modules is stored as before modules existed).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub modules: BTreeMap<CompactString, ModuleRecord>,
}

/// A module's identity and twin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModuleRecord {
    /// The registry entry.
    pub identity: ModuleIdentity,
    /// The module twin.
    pub twin: Twin,
}

impl DeviceRecord {
    /// A new device's record: its identity and a fresh twin, no modules.
    pub fn new(identity: DeviceIdentity, twin: Twin) -> Self {
        Self {
            identity,
            twin,
            modules: BTreeMap::new(),
        }
    }

    /// The module `module_id`, or `ModuleNotFound`.
    pub(crate) fn module(&self, module_id: &str) -> Result<&ModuleRecord, HubError> {
        self.modules
            .get(module_id)
            .ok_or_else(|| module_not_found(&self.identity.device_id, module_id))
    }

    /// The module `module_id` for a write, or `ModuleNotFound`.
    pub(crate) fn module_mut(&mut self, module_id: &str) -> Result<&mut ModuleRecord, HubError> {
        let device_id = self.identity.device_id.clone();
        self.modules
            .get_mut(module_id)
            .ok_or_else(|| module_not_found(&device_id, module_id))
    }

    /// Whether the identity a client id names (`{device}` or `{device}/{module}`)
    /// is this record's device or one of its modules.
    pub(crate) fn holds(&self, client_id: &str) -> bool {
        match client_id.split_once('/') {
            None => client_id == self.identity.device_id,
            Some((device, module)) => {
                device == self.identity.device_id && self.modules.contains_key(module)
            }
        }
    }
}

/// `ModuleNotFound` for `device_id`/`module_id`.
pub(crate) fn module_not_found(device_id: &str, module_id: &str) -> HubError {
    HubError::new(
        ErrorCode::ModuleNotFound,
        format!("Module {module_id} on device {device_id} not found."),
    )
}

#[derive(Default)]
pub(crate) struct Shard {
    /// Keyed by device id, inline up to 24 bytes (no heap block per device).
    pub(crate) devices: BTreeMap<CompactString, DeviceRecord>,
    /// Built by queries, maintained by [`Hub::write`](crate::Hub).
    pub(crate) indexes: Indexes,
    /// Stored MQTT sessions of the shard's devices, by client id.
    pub(crate) sessions: BTreeMap<String, StoredSession>,
}

/// Locks a shard. A poisoned lock means a panic while holding it; the data in it
/// is still consistent because every change is applied whole or not at all.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) fn shard_index(device_id: &str) -> usize {
    let mut h = DefaultHasher::new();
    device_id.hash(&mut h);
    // SHARDS is a power of two; the remainder always fits.
    usize::try_from(h.finish() % SHARDS as u64).unwrap_or(0)
}
