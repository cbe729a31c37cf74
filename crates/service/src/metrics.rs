//! The service layer's counters, for the hub's metrics (`GET /metrics`).
//!
//! Each layer counts what only it sees: this one acknowledged device writes,
//! desired changes published and storage; the MQTT endpoint its connections; the
//! HTTPS listener its sockets. `twinhub_http::metrics` names and renders them all,
//! in one place. Counters are relaxed atomics: each is a count on its own, and a
//! scrape needs no consistent cut across them.

use crate::events::DeviceEvent;
use crate::state::Hub;
use std::sync::atomic::{AtomicU64, Ordering};
pub use twinhub_store::committer::BATCH_BUCKETS;
pub use twinhub_store::CommitStatsSnapshot;

#[derive(Debug, Default)]
pub(crate) struct Counters {
    reported_patches: AtomicU64,
    desired_changes: AtomicU64,
    kicks: AtomicU64,
    methods_invoked: AtomicU64,
    methods_timed_out: AtomicU64,
}

impl Counters {
    /// Events published after a durable write.
    pub(crate) fn published(&self, events: &[DeviceEvent]) {
        for event in events {
            let counter = match event {
                DeviceEvent::Desired { .. } => &self.desired_changes,
                DeviceEvent::Kick => &self.kicks,
                // Published by `Hub::invoke_method`, which counts it itself.
                DeviceEvent::MethodRequest { .. } => continue,
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn reported_patch(&self) {
        self.reported_patches.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn method_invoked(&self) {
        self.methods_invoked.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn method_timed_out(&self) {
        self.methods_timed_out.fetch_add(1, Ordering::Relaxed);
    }
}

/// The service layer's metrics at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HubMetrics {
    /// Devices in the registry.
    pub devices: u64,
    /// Devices with a live MQTT session.
    pub devices_connected: u64,
    /// Stored (clean-session-0) MQTT sessions.
    pub stored_sessions: u64,
    /// Reported-property patches acknowledged (durable).
    pub reported_patches: u64,
    /// Desired-property changes published to the devices' sessions (durable).
    pub desired_changes: u64,
    /// Session closes published (device disabled, deleted or re-keyed).
    pub kicks: u64,
    /// Direct method requests delivered to a device's session.
    pub methods_invoked: u64,
    /// Direct method requests the device did not answer in time.
    pub methods_timed_out: u64,
    /// Direct method calls waiting for an answer now.
    pub methods_pending: u64,
    /// The group committer's counts.
    pub storage: CommitStatsSnapshot,
}

impl Hub {
    /// The service layer's metrics. Walks every shard (for the device counts):
    /// meant for a scrape every few seconds, not for every request.
    pub fn metrics(&self) -> HubMetrics {
        let stats = self.statistics();
        let c = &self.inner.counters;
        HubMetrics {
            devices: stats.total,
            devices_connected: stats.connected,
            stored_sessions: self.stored_sessions() as u64,
            reported_patches: c.reported_patches.load(Ordering::Relaxed),
            desired_changes: c.desired_changes.load(Ordering::Relaxed),
            kicks: c.kicks.load(Ordering::Relaxed),
            methods_invoked: c.methods_invoked.load(Ordering::Relaxed),
            methods_timed_out: c.methods_timed_out.load(Ordering::Relaxed),
            methods_pending: self.methods_pending() as u64,
            storage: self.commit_stats(),
        }
    }
}
