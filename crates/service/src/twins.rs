//! Twin reads and writes: the service side (REST) and the identity side (MQTT),
//! for device twins and module twins alike. A module twin lives in its device's
//! record (one lock, one stored row), but its events are addressed to the
//! module's own identity, never to the device's.

use crate::events::{DeviceEvent, DeviceWatch};
use crate::shard::DeviceRecord;
use crate::state::{Effect, Hub};
use serde_json::Value;
use twinhub_core::etag::IfMatch;
use twinhub_core::identity::ConnectionState;
use twinhub_core::twin::{ServiceWriteOutcome, Twin};
use twinhub_core::{HubError, Identity, Limits, Timestamp};

fn etag_mismatch(target: &Identity) -> HubError {
    let what = match &target.module_id {
        Some(m) => format!("module '{m}' of device '{}'", target.device_id),
        None => format!("device '{}'", target.device_id),
    };
    HubError::precondition(format!("The twin etag of {what} does not match If-Match."))
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

/// The twin `target` names in `record`, with its last-activity field.
fn twin_mut<'r>(
    record: &'r mut DeviceRecord,
    target: &Identity,
) -> Result<(&'r mut Twin, &'r mut Option<Timestamp>), HubError> {
    match &target.module_id {
        None => Ok((&mut record.twin, &mut record.identity.last_activity_time)),
        Some(m) => {
            let module = record.module_mut(m)?;
            Ok((&mut module.twin, &mut module.identity.last_activity_time))
        }
    }
}

/// The REST JSON of the twin `target` names in `record`.
fn twin_json(record: &DeviceRecord, target: &Identity) -> Result<Value, HubError> {
    match &target.module_id {
        None => Ok(record.twin.to_json(&record.identity)),
        Some(m) => {
            let module = record.module(m)?;
            Ok(module
                .twin
                .to_module_json(&module.identity, &record.identity))
        }
    }
}

impl Hub {
    /// `GET /twins/{id}`.
    pub fn get_twin(&self, device_id: &str) -> Result<Value, HubError> {
        self.read(device_id, |r| r.twin.to_json(&r.identity))
    }

    /// `GET /twins/{id}` or `GET /twins/{id}/modules/{mid}`.
    pub fn twin(&self, target: &Identity) -> Result<Value, HubError> {
        self.read(&target.device_id, |r| twin_json(r, target))?
    }

    /// `PATCH /twins/{id}`: merges tags and desired properties; returns the full twin.
    pub async fn patch_twin(
        &self,
        device_id: &str,
        body: &Value,
        if_match: &IfMatch,
    ) -> Result<Value, HubError> {
        self.patch_twin_of(&Identity::device(device_id), body, if_match)
            .await
    }

    /// `PATCH /twins/{id}[/modules/{mid}]`.
    pub async fn patch_twin_of(
        &self,
        target: &Identity,
        body: &Value,
        if_match: &IfMatch,
    ) -> Result<Value, HubError> {
        self.service_twin_write(target, if_match, |twin, now, limits| {
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
        self.replace_twin_of(&Identity::device(device_id), body, if_match)
            .await
    }

    /// `PUT /twins/{id}[/modules/{mid}]`.
    pub async fn replace_twin_of(
        &self,
        target: &Identity,
        body: &Value,
        if_match: &IfMatch,
    ) -> Result<Value, HubError> {
        self.service_twin_write(target, if_match, |twin, now, limits| {
            twin.replace(body, now, limits)
        })
        .await
    }

    async fn service_twin_write(
        &self,
        target: &Identity,
        if_match: &IfMatch,
        apply: impl FnOnce(&mut Twin, Timestamp, &Limits) -> Result<ServiceWriteOutcome, HubError>,
    ) -> Result<Value, HubError> {
        let now = self.now();
        let limits = self.config().limits;
        self.write(&target.device_id, |slot| {
            let record = slot
                .as_mut()
                .ok_or_else(|| HubError::device_not_found(&target.device_id))?;
            let (twin, _) = twin_mut(record, target)?;
            if !if_match.matches(&twin.etag()) {
                return Err(etag_mismatch(target));
            }
            let outcome = apply(twin, now, &limits)?;
            let json = twin_json(record, target)?;
            if !outcome.changed {
                return Ok(Effect::unchanged(json));
            }
            let events = desired_events(&outcome);
            Ok(match target.module_id {
                None => Effect::upsert(json, events),
                Some(_) => {
                    let mut effect = Effect::upsert(json, Vec::new());
                    let client_id = target.client_id();
                    effect.module_events =
                        events.into_iter().map(|e| (client_id.clone(), e)).collect();
                    effect
                }
            })
        })
        .await
    }

    /// A device's view of its twin, for an MQTT GET:
    /// `{"desired":{..,"$version"},"reported":{..,"$version"}}`.
    pub fn twin_for_device(&self, device_id: &str) -> Result<Value, HubError> {
        self.read(device_id, |r| r.twin.properties_for_device())
    }

    /// An identity's view of its own twin (device or module), for an MQTT GET.
    pub fn twin_for(&self, identity: &Identity) -> Result<Value, HubError> {
        self.read(&identity.device_id, |r| match &identity.module_id {
            None => Ok(r.twin.properties_for_device()),
            Some(m) => Ok(r.module(m)?.twin.properties_for_device()),
        })?
    }

    /// A device's reported-properties patch. Resolves with the new reported
    /// `$version` once the write is durable.
    pub async fn patch_reported(
        &self,
        device_id: &str,
        patch: &Value,
        expected_version: Option<i64>,
    ) -> Result<i64, HubError> {
        self.patch_reported_for(&Identity::device(device_id), patch, expected_version)
            .await
    }

    /// An identity's reported-properties patch (device or module), as
    /// [`Hub::patch_reported`]. The patch takes its place in the identity's write
    /// order when this is called, not when the future is first polled: the MQTT
    /// endpoint keeps a device's order by calling this in the order the device
    /// sent its patches, whatever order it awaits them in.
    pub fn patch_reported_for(
        &self,
        identity: &Identity,
        patch: &Value,
        expected_version: Option<i64>,
    ) -> impl std::future::Future<Output = Result<i64, HubError>> + Send + 'static {
        let now = self.now();
        let limits = self.config().limits;
        let queued = self.queue_write(&identity.device_id, |slot| {
            let record = slot
                .as_mut()
                .ok_or_else(|| HubError::device_not_found(&identity.device_id))?;
            let (twin, last_activity) = twin_mut(record, identity)?;
            let version = twin.apply_reported_patch(patch, expected_version, now, &limits)?;
            *last_activity = Some(now);
            Ok(Effect::upsert(version, Vec::new()))
        });
        let hub = self.clone();
        async move {
            let version = queued?.durable().await?;
            hub.inner.counters.reported_patch();
            Ok(version)
        }
    }

    /// Subscribes to the events of the identity whose client id is `client_id`
    /// (`{device}` or `{device}/{module}`): desired changes, method requests,
    /// kicks. Dropping the receiver unsubscribes.
    pub fn watch(&self, client_id: &str) -> DeviceWatch {
        self.inner.watchers.watch(client_id)
    }

    /// Records that a session of the device opened.
    pub fn device_connected(&self, device_id: &str, now: Timestamp) {
        self.connected(&Identity::device(device_id), now);
    }

    /// Records that the device's session closed.
    pub fn device_disconnected(&self, device_id: &str, now: Timestamp) {
        self.disconnected(&Identity::device(device_id), now);
    }

    /// Records activity from the device (any packet).
    pub fn device_activity(&self, device_id: &str, now: Timestamp) {
        self.activity(&Identity::device(device_id), now);
    }

    /// Records that a session of the identity opened.
    pub fn connected(&self, identity: &Identity, now: Timestamp) {
        self.touch_presence(identity, |state, updated, activity| {
            *state = ConnectionState::Connected;
            *updated = Some(now);
            *activity = Some(now);
        });
    }

    /// Records that the identity's session closed.
    pub fn disconnected(&self, identity: &Identity, now: Timestamp) {
        self.touch_presence(identity, |state, updated, _| {
            *state = ConnectionState::Disconnected;
            *updated = Some(now);
        });
    }

    /// Records activity from the identity (any packet).
    pub fn activity(&self, identity: &Identity, now: Timestamp) {
        self.touch_presence(identity, |_, _, activity| *activity = Some(now));
    }

    fn touch_presence(
        &self,
        identity: &Identity,
        f: impl FnOnce(&mut ConnectionState, &mut Option<Timestamp>, &mut Option<Timestamp>),
    ) {
        self.touch(&identity.device_id, |r| match &identity.module_id {
            None => {
                let i = &mut r.identity;
                f(
                    &mut i.connection_state,
                    &mut i.connection_state_updated_time,
                    &mut i.last_activity_time,
                );
            }
            Some(m) => {
                if let Some(module) = r.modules.get_mut(m.as_str()) {
                    let i = &mut module.identity;
                    f(
                        &mut i.connection_state,
                        &mut i.connection_state_updated_time,
                        &mut i.last_activity_time,
                    );
                }
            }
        });
    }
}
