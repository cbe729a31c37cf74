//! Twin reads and writes: the service side (REST) and the device side (MQTT).

use crate::clock;
use crate::events::{DeviceEvent, DeviceWatch};
use crate::state::{Change, Effect, Hub};
use serde_json::Value;
use twinhub_core::etag::IfMatch;
use twinhub_core::identity::ConnectionState;
use twinhub_core::twin::ServiceWriteOutcome;
use twinhub_core::{HubError, Timestamp};

fn etag_mismatch(device_id: &str) -> HubError {
    HubError::precondition(format!(
        "The twin etag of device '{device_id}' does not match If-Match."
    ))
}

fn desired_events(outcome: &ServiceWriteOutcome) -> Vec<DeviceEvent> {
    outcome
        .desired_notification
        .as_ref()
        .and_then(|payload| {
            let version = payload.get("$version")?.as_i64()?;
            Some(DeviceEvent::Desired {
                version,
                payload: payload.clone(),
            })
        })
        .into_iter()
        .collect()
}

impl Hub {
    /// `GET /twins/{id}`.
    pub fn get_twin(&self, device_id: &str) -> Result<Value, HubError> {
        self.read(device_id, |r| r.twin.to_json(&r.identity))
    }

    /// `PATCH /twins/{id}`: merges tags and desired properties; returns the full twin.
    pub async fn patch_twin(
        &self,
        device_id: &str,
        body: &Value,
        if_match: &IfMatch,
    ) -> Result<Value, HubError> {
        self.service_twin_write(device_id, if_match, |twin, now, limits| {
            twin.apply_service_patch(body, now, limits)
        })
        .await
    }

    /// `PUT /twins/{id}`: replaces tags and desired properties; returns the full twin.
    pub async fn replace_twin(
        &self,
        device_id: &str,
        body: &Value,
        if_match: &IfMatch,
    ) -> Result<Value, HubError> {
        self.service_twin_write(device_id, if_match, |twin, now, limits| {
            twin.replace(body, now, limits)
        })
        .await
    }

    async fn service_twin_write(
        &self,
        device_id: &str,
        if_match: &IfMatch,
        apply: impl FnOnce(
            &mut twinhub_core::twin::Twin,
            Timestamp,
            &twinhub_core::Limits,
        ) -> Result<ServiceWriteOutcome, HubError>,
    ) -> Result<Value, HubError> {
        let now = clock::now();
        let limits = self.config().limits;
        self.write(device_id, |slot| {
            let record = slot
                .as_mut()
                .ok_or_else(|| HubError::device_not_found(device_id))?;
            if !if_match.matches(&record.twin.etag()) {
                return Err(etag_mismatch(device_id));
            }
            let outcome = apply(&mut record.twin, now, &limits)?;
            let json = record.twin.to_json(&record.identity);
            if !outcome.changed {
                return Ok(Effect {
                    value: json,
                    change: Change::None,
                    events: Vec::new(),
                });
            }
            Ok(Effect::upsert(json, desired_events(&outcome)))
        })
        .await
    }

    /// A device's view of its twin, for an MQTT GET:
    /// `{"desired":{..,"$version"},"reported":{..,"$version"}}`.
    pub fn twin_for_device(&self, device_id: &str) -> Result<Value, HubError> {
        self.read(device_id, |r| r.twin.properties_for_device())
    }

    /// A device's reported-properties patch. Resolves with the new reported
    /// `$version` once the write is durable.
    pub async fn patch_reported(
        &self,
        device_id: &str,
        patch: &Value,
        expected_version: Option<i64>,
    ) -> Result<i64, HubError> {
        let now = clock::now();
        let limits = self.config().limits;
        self.write(device_id, |slot| {
            let record = slot
                .as_mut()
                .ok_or_else(|| HubError::device_not_found(device_id))?;
            let version =
                record
                    .twin
                    .apply_reported_patch(patch, expected_version, now, &limits)?;
            record.identity.last_activity_time = Some(now);
            Ok(Effect::upsert(version, Vec::new()))
        })
        .await
        .inspect(|_| self.inner.counters.reported_patch())
    }

    /// Subscribes to a device's events (desired changes, kicks). Dropping the
    /// receiver unsubscribes.
    pub fn watch(&self, device_id: &str) -> DeviceWatch {
        self.inner.watchers.watch(device_id)
    }

    /// Records that a session of the device opened.
    pub fn device_connected(&self, device_id: &str, now: Timestamp) {
        self.touch(device_id, |r| {
            r.identity.connection_state = ConnectionState::Connected;
            r.identity.connection_state_updated_time = Some(now);
            r.identity.last_activity_time = Some(now);
        });
    }

    /// Records that the device's session closed.
    pub fn device_disconnected(&self, device_id: &str, now: Timestamp) {
        self.touch(device_id, |r| {
            r.identity.connection_state = ConnectionState::Disconnected;
            r.identity.connection_state_updated_time = Some(now);
        });
    }

    /// Records activity from the device (any packet).
    pub fn device_activity(&self, device_id: &str, now: Timestamp) {
        self.touch(device_id, |r| r.identity.last_activity_time = Some(now));
    }
}
