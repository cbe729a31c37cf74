//! Persistent MQTT sessions: what each clean-session-0 client is subscribed to.
//!
//! The device SDKs connect with clean session 0 and never subscribe again after a
//! reconnect (spec §2.4), so the subscriptions must outlive a connection, and a
//! hub restart too. The hub owns them like any other device state: each client's
//! record sits in the shard of its device (so deleting the device forgets it in
//! the same transaction, and its shard lock orders its writes), in memory for the
//! MQTT endpoint to read at CONNECT, and in [`Space::Sessions`] for a restart.
//!
//! Sessions change rarely (a SUBSCRIBE after connecting, once per device), so
//! every change is written through the committer, and the MQTT endpoint answers
//! SUBSCRIBE only once it is durable.

use crate::shard::{lock, shard_index, Shard};
use crate::state::Hub;
use serde::{Deserialize, Serialize};
use std::future::Future;
use twinhub_core::{ErrorCode, HubError};
use twinhub_store::{Mutation, Space, Store, StoreError};

/// A stored session: the client's subscriptions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredSession {
    /// Topic filters and the QoS granted for each.
    pub subscriptions: Vec<StoredSubscription>,
}

/// One subscription of a stored session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredSubscription {
    /// The topic filter as the client sent it, e.g. `$iothub/twin/res/#`.
    pub filter: String,
    /// The QoS granted (0 or 1).
    pub qos: u8,
}

/// The device a client id belongs to: `{deviceId}` or `{deviceId}/{moduleId}`
/// (device ids cannot contain `/`).
fn device_of(client_id: &str) -> &str {
    client_id.split('/').next().unwrap_or(client_id)
}

/// The client ids of `device_id`'s sessions held in its shard: the device's own
/// and its modules' (`{deviceId}/...`).
pub(crate) fn session_keys(shard: &Shard, device_id: &str) -> Vec<String> {
    let modules = format!("{device_id}/");
    let own = shard
        .sessions
        .contains_key(device_id)
        .then(|| device_id.to_owned());
    own.into_iter()
        .chain(
            shard
                .sessions
                .range(modules.clone()..)
                .take_while(|(k, _)| k.starts_with(&modules))
                .map(|(k, _)| k.clone()),
        )
        .collect()
}

/// Reads the stored sessions into `shards`, dropping any whose device is gone.
pub(crate) fn load_sessions<S: Store>(
    store: &mut S,
    shards: &mut [Shard],
) -> Result<(), StoreError> {
    let mut orphans = 0usize;
    store.load_each(Space::Sessions, &mut |key, bytes| {
        let session: StoredSession = serde_json::from_slice(bytes)
            .map_err(|e| StoreError::Corrupt(format!("session record '{key}': {e}")))?;
        let device = device_of(key);
        match shards.get_mut(shard_index(device)) {
            Some(shard) if shard.devices.get(device).is_some_and(|r| r.holds(key)) => {
                shard.sessions.insert(key.to_owned(), session);
            }
            _ => orphans += 1,
        }
        Ok(())
    })?;
    if orphans > 0 {
        // Deleting a device deletes its sessions in the same transaction, so
        // this takes a store edited by hand; they are harmless and ignored.
        tracing::warn!(orphans, "stored MQTT sessions of unknown devices ignored");
    }
    Ok(())
}

impl Hub {
    /// The stored session of `client_id` (a client of `device_id`), if any.
    pub fn stored_session(&self, device_id: &str, client_id: &str) -> Option<StoredSession> {
        self.shard(device_id).sessions.get(client_id).cloned()
    }

    /// Stores (`Some`) or forgets (`None`) the session of `client_id`, a client
    /// of `device_id`.
    ///
    /// The change takes its place in the device's write order, and is visible to
    /// [`Hub::stored_session`], when this is called; the returned future resolves
    /// once it is durable. Refused for a device that does not exist (it was
    /// deleted while its client was connected).
    pub fn save_session(
        &self,
        device_id: &str,
        client_id: &str,
        session: Option<StoredSession>,
    ) -> impl Future<Output = Result<(), HubError>> + Send + 'static {
        let queued = self.queue_session(device_id, client_id, session);
        async move {
            match queued? {
                Some(ack) => ack
                    .await
                    .unwrap_or_else(|_| Err(crate::state::storage_failed())),
                None => Ok(()),
            }
        }
    }

    fn queue_session(
        &self,
        device_id: &str,
        client_id: &str,
        session: Option<StoredSession>,
    ) -> Result<Option<crate::state::Ack>, HubError> {
        if device_of(client_id) != device_id {
            return Err(HubError::new(
                ErrorCode::ArgumentInvalid,
                format!("Client id '{client_id}' is not a client of device '{device_id}'."),
            ));
        }
        let mut shard = self.shard(device_id);
        let mutation = match session {
            Some(session) => {
                let record = shard
                    .devices
                    .get(device_id)
                    .ok_or_else(|| HubError::device_not_found(device_id))?;
                if !record.holds(client_id) {
                    return Err(HubError::new(
                        ErrorCode::ModuleNotFound,
                        format!("No identity '{client_id}' on device '{device_id}'."),
                    ));
                }
                if shard.sessions.get(client_id) == Some(&session) {
                    return Ok(None);
                }
                let value = serde_json::to_vec(&session).map_err(|e| {
                    HubError::new(
                        ErrorCode::ServerError,
                        format!("cannot encode a session: {e}"),
                    )
                })?;
                shard.sessions.insert(client_id.to_owned(), session);
                Mutation::Put {
                    space: Space::Sessions,
                    key: client_id.to_owned(),
                    value,
                }
            }
            None => {
                if shard.sessions.remove(client_id).is_none() {
                    return Ok(None);
                }
                Mutation::Delete {
                    space: Space::Sessions,
                    key: client_id.to_owned(),
                }
            }
        };
        // Queued under the shard lock, like every write of the device.
        self.submit(vec![mutation]).map(Some)
    }

    /// Sessions stored, of every client.
    pub fn stored_sessions(&self) -> usize {
        self.shards().iter().map(|s| lock(s).sessions.len()).sum()
    }
}
