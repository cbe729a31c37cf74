//! Fan-out of device events to live sessions.
//!
//! Events are dispatched from the committer thread after the write that caused
//! them is durable, in commit order; commit order follows each device's write order
//! (its shard lock is held while queueing), so a device's desired notifications reach
//! its sessions in `$version` order. Channels are unbounded so that the committer
//! never blocks on a slow session and no notification is dropped while the session
//! lives; a session that stops reading is closed by its keep-alive.

use std::collections::HashMap;
use std::sync::Mutex;
use tokio::sync::mpsc;

/// Something a device's live sessions must learn about.
#[derive(Debug, Clone, PartialEq)]
pub enum DeviceEvent {
    /// Desired properties changed: `payload` is the notification body (the applied
    /// patch with `null`s kept, plus `"$version"`).
    Desired {
        /// The new desired `$version`.
        version: i64,
        /// The notification body.
        payload: serde_json::Value,
    },
    /// The device was deleted or disabled, or its keys changed: close its sessions.
    Kick,
}

/// A session's subscription to its device's events; dropping it unsubscribes.
pub type DeviceWatch = mpsc::UnboundedReceiver<DeviceEvent>;

/// Senders per device id.
#[derive(Default)]
pub(crate) struct Watchers {
    by_device: Mutex<HashMap<String, Vec<mpsc::UnboundedSender<DeviceEvent>>>>,
}

impl Watchers {
    pub(crate) fn watch(&self, device_id: &str) -> DeviceWatch {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut map = self.by_device.lock().unwrap_or_else(|e| e.into_inner());
        let senders = map.entry(device_id.to_owned()).or_default();
        senders.retain(|s| !s.is_closed());
        senders.push(tx);
        rx
    }

    pub(crate) fn publish(&self, device_id: &str, events: Vec<DeviceEvent>) {
        if events.is_empty() {
            return;
        }
        let mut map = self.by_device.lock().unwrap_or_else(|e| e.into_inner());
        let Some(senders) = map.get_mut(device_id) else {
            return;
        };
        senders.retain(|s| !s.is_closed());
        for sender in senders.iter() {
            for event in &events {
                // A send fails only when the session just went away.
                let _ = sender.send(event.clone());
            }
        }
        if senders.is_empty() {
            map.remove(device_id);
        }
    }
}
