//! Module identities (fleet spec §2): registry operations on the modules kept in
//! their device's record. Creating a module creates its twin; deleting one
//! deletes its twin and stored MQTT session and closes its connection.

use crate::events::DeviceEvent;
use crate::shard::{module_not_found, ModuleRecord};
use crate::state::{Change, Effect, Hub};
use serde_json::Value;
use twinhub_core::etag::IfMatch;
use twinhub_core::module::{validate_module_id, ModuleIdentity, MAX_MODULES_PER_DEVICE};
use twinhub_core::twin::Twin;
use twinhub_core::{ErrorCode, HubError, Identity};

fn etag_mismatch(device_id: &str, module_id: &str) -> HubError {
    HubError::precondition(format!(
        "The etag of module '{module_id}' of device '{device_id}' does not match If-Match."
    ))
}

/// Whether an update invalidates the module's live session.
fn kicks_session(before: &ModuleIdentity, after: &ModuleIdentity) -> bool {
    before.authentication != after.authentication
}

impl Hub {
    /// `PUT /devices/{id}/modules/{mid}`: creates the module when `If-Match` is
    /// absent (409 if it exists, 413 past the per-device limit), otherwise
    /// updates it (404 if missing, 412 on an etag mismatch).
    pub async fn put_module(
        &self,
        device_id: &str,
        module_id: &str,
        body: &Value,
        if_match: &IfMatch,
    ) -> Result<Value, HubError> {
        validate_module_id(module_id)?;
        let now = self.now();
        let client_id = Identity::module(device_id, module_id).client_id();
        self.write(device_id, |slot| {
            let record = slot
                .as_mut()
                .ok_or_else(|| HubError::device_not_found(device_id))?;
            let mut rng = rand::rngs::OsRng;
            match (record.modules.get_mut(module_id), if_match) {
                (Some(_), IfMatch::Absent) => Err(HubError::new(
                    ErrorCode::ModuleAlreadyExistsOnDevice,
                    format!("A module with ID '{module_id}' already exists on device '{device_id}'."),
                )),
                (None, IfMatch::Absent) => {
                    if record.modules.len() >= MAX_MODULES_PER_DEVICE {
                        return Err(HubError::new(
                            ErrorCode::TooManyModulesOnDevice,
                            format!(
                                "Device '{device_id}' already has {MAX_MODULES_PER_DEVICE} modules, the most a device may have."
                            ),
                        ));
                    }
                    let identity = ModuleIdentity::create(device_id, module_id, body, &mut rng)?;
                    let json = identity.to_json();
                    record.modules.insert(
                        module_id.into(),
                        ModuleRecord {
                            identity,
                            twin: Twin::new(now),
                        },
                    );
                    Ok(Effect::upsert(json, Vec::new()))
                }
                (None, _) => Err(module_not_found(device_id, module_id)),
                (Some(module), condition) => {
                    if !condition.matches(&module.identity.etag()) {
                        return Err(etag_mismatch(device_id, module_id));
                    }
                    let mut updated = module.identity.clone();
                    updated.update(body, &mut rng)?;
                    let mut effect = Effect::upsert(updated.to_json(), Vec::new());
                    if kicks_session(&module.identity, &updated) {
                        effect.module_events.push((client_id.clone(), DeviceEvent::Kick));
                    }
                    module.identity = updated;
                    Ok(effect)
                }
            }
        })
        .await
    }

    /// `GET /devices/{id}/modules/{mid}`.
    pub fn get_module(&self, device_id: &str, module_id: &str) -> Result<Value, HubError> {
        self.read(device_id, |r| Ok(r.module(module_id)?.identity.to_json()))?
    }

    /// The identity of a module (for connection strings).
    pub fn module_identity(
        &self,
        device_id: &str,
        module_id: &str,
    ) -> Result<ModuleIdentity, HubError> {
        self.read(device_id, |r| Ok(r.module(module_id)?.identity.clone()))?
    }

    /// `GET /devices/{id}/modules`: every module of the device, in id order.
    pub fn list_modules(&self, device_id: &str) -> Result<Vec<Value>, HubError> {
        self.read(device_id, |r| {
            r.modules.values().map(|m| m.identity.to_json()).collect()
        })
    }

    /// `DELETE /devices/{id}/modules/{mid}`: removes the module and its twin and
    /// closes its session.
    pub async fn delete_module(
        &self,
        device_id: &str,
        module_id: &str,
        if_match: &IfMatch,
    ) -> Result<(), HubError> {
        let client_id = Identity::module(device_id, module_id).client_id();
        self.write(device_id, |slot| {
            let record = slot
                .as_mut()
                .ok_or_else(|| HubError::device_not_found(device_id))?;
            let module = record.module(module_id)?;
            if !if_match.matches(&module.identity.etag()) {
                return Err(etag_mismatch(device_id, module_id));
            }
            record.modules.remove(module_id);
            Ok(Effect {
                value: (),
                change: Change::Upsert,
                events: Vec::new(),
                module_events: vec![(client_id.clone(), DeviceEvent::Kick)],
            })
        })
        .await
    }
}
