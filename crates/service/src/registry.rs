//! The identity registry: devices with keys, status, etags and generation ids.

use crate::events::DeviceEvent;
use crate::shard::{lock, DeviceRecord};
use crate::state::{Change, Effect, Hub};
use serde_json::{json, Map, Value};
use std::collections::HashSet;
use twinhub_core::etag::IfMatch;
use twinhub_core::identity::{validate_id, DeviceIdentity, DeviceStatus};
use twinhub_core::twin::Twin;
use twinhub_core::{ErrorCode, HubError, Identity};

/// Most devices `GET /devices` returns, and the most a bulk request may hold.
pub const MAX_LIST: usize = 1000;
/// Most items in one bulk registry request.
pub const MAX_BULK: usize = 100;

/// Registry counts of `GET /statistics/devices`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegistryStatistics {
    /// All devices.
    pub total: u64,
    /// Enabled devices.
    pub enabled: u64,
    /// Disabled devices.
    pub disabled: u64,
    /// Devices with a live session.
    pub connected: u64,
}

/// The outcome of a bulk request: the items that failed, in request order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BulkOutcome {
    /// One entry per failed item.
    pub errors: Vec<BulkError>,
}

impl BulkOutcome {
    /// Whether every item succeeded.
    pub fn successful(&self) -> bool {
        self.errors.is_empty()
    }
}

/// A bulk item that failed.
#[derive(Debug, Clone, PartialEq)]
pub struct BulkError {
    /// The item's device id.
    pub device_id: String,
    /// The item's `importMode`, as the request spelled it.
    pub operation: String,
    /// Why it failed.
    pub error: HubError,
}

/// Whether a write to an existing identity invalidates its live sessions.
fn kicks_sessions(before: &DeviceIdentity, after: &DeviceIdentity) -> bool {
    after.status == DeviceStatus::Disabled && before.status != DeviceStatus::Disabled
        || before.authentication != after.authentication
}

/// Closes the sessions of every module of `record`.
pub(crate) fn module_kicks(record: &DeviceRecord) -> Vec<(String, DeviceEvent)> {
    record
        .modules
        .values()
        .map(|m| {
            let id = Identity::module(m.identity.device_id.as_str(), m.identity.module_id.as_str());
            (id.client_id(), DeviceEvent::Kick)
        })
        .collect()
}

impl Hub {
    /// `PUT /devices/{id}`: creates the device when `If-Match` is absent (409 if it
    /// exists), otherwise updates it (404 if missing, 412 on an etag mismatch).
    pub async fn put_device(
        &self,
        device_id: &str,
        body: &Value,
        if_match: &IfMatch,
    ) -> Result<Value, HubError> {
        validate_id(device_id, "device id")?;
        let now = self.now();
        let if_match = if_match.clone();
        self.write(device_id, move |slot| {
            let mut rng = rand::rngs::OsRng;
            match (slot.as_mut(), &if_match) {
                (Some(_), IfMatch::Absent) => Err(HubError::new(
                    ErrorCode::DeviceAlreadyExists,
                    format!("A device with ID '{device_id}' is already registered."),
                )),
                (None, IfMatch::Absent) => {
                    let identity = DeviceIdentity::create(device_id, body, &mut rng)?;
                    let json = identity.to_json();
                    *slot = Some(DeviceRecord::new(identity, Twin::new(now)));
                    Ok(Effect::upsert(json, Vec::new()))
                }
                (None, _) => Err(HubError::device_not_found(device_id)),
                (Some(record), condition) => {
                    if !condition.matches(&record.identity.etag()) {
                        return Err(HubError::precondition(format!(
                            "The etag of device '{device_id}' does not match If-Match."
                        )));
                    }
                    let mut updated = record.identity.clone();
                    updated.update(body, now, &mut rng)?;
                    let mut effect = Effect::upsert(updated.to_json(), Vec::new());
                    if kicks_sessions(&record.identity, &updated) {
                        effect.events.push(DeviceEvent::Kick);
                    }
                    if updated.status == DeviceStatus::Disabled
                        && record.identity.status != DeviceStatus::Disabled
                    {
                        // A disabled device's modules cannot connect either.
                        effect.module_events = module_kicks(record);
                    }
                    record.identity = updated;
                    Ok(effect)
                }
            }
        })
        .await
    }

    /// `GET /devices/{id}`.
    pub fn get_device(&self, device_id: &str) -> Result<Value, HubError> {
        self.read(device_id, |r| r.identity.to_json())
    }

    /// The identity of a device (for connection strings and tests).
    pub fn device_identity(&self, device_id: &str) -> Result<DeviceIdentity, HubError> {
        self.read(device_id, |r| r.identity.clone())
    }

    /// `DELETE /devices/{id}`: removes the device and its twin and closes its sessions.
    pub async fn delete_device(&self, device_id: &str, if_match: &IfMatch) -> Result<(), HubError> {
        let if_match = if_match.clone();
        self.write(device_id, move |slot| {
            let Some(record) = slot.as_ref() else {
                return Err(HubError::device_not_found(device_id));
            };
            if !if_match.matches(&record.identity.etag()) {
                return Err(HubError::precondition(format!(
                    "The etag of device '{device_id}' does not match If-Match."
                )));
            }
            let module_events = module_kicks(record);
            *slot = None;
            Ok(Effect {
                value: (),
                change: Change::Delete,
                events: vec![DeviceEvent::Kick],
                module_events,
            })
        })
        .await
    }

    /// `GET /devices?top=N`: up to `top` (at most 1000) devices in id order.
    pub fn list_devices(&self, top: Option<usize>) -> Vec<Value> {
        let top = top.unwrap_or(MAX_LIST).min(MAX_LIST);
        // Each shard is ordered, so the first `top` overall are among the first
        // `top` of every shard.
        let mut all: Vec<(String, Value)> = Vec::new();
        for shard in self.shards() {
            let shard = lock(shard);
            all.extend(
                shard
                    .devices
                    .iter()
                    .take(top)
                    .map(|(k, r)| (k.to_string(), r.identity.to_json())),
            );
        }
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all.into_iter().take(top).map(|(_, v)| v).collect()
    }

    /// `GET /statistics/devices` and `/statistics/service` counts.
    pub fn statistics(&self) -> RegistryStatistics {
        let mut stats = RegistryStatistics {
            total: 0,
            enabled: 0,
            disabled: 0,
            connected: 0,
        };
        for shard in self.shards() {
            let shard = lock(shard);
            for record in shard.devices.values() {
                stats.total += 1;
                match record.identity.status {
                    DeviceStatus::Enabled => stats.enabled += 1,
                    DeviceStatus::Disabled => stats.disabled += 1,
                }
                if record.identity.connection_state
                    == twinhub_core::identity::ConnectionState::Connected
                {
                    stats.connected += 1;
                }
            }
        }
        stats
    }

    /// `POST /devices`: bulk create, update and delete (spec §5.2). Items are
    /// applied one by one; failures are reported per item.
    pub async fn bulk(&self, body: &Value) -> Result<BulkOutcome, HubError> {
        let Value::Array(items) = body else {
            return Err(HubError::invalid(
                "A bulk registry request must be a JSON array.",
            ));
        };
        if items.len() > MAX_BULK {
            return Err(HubError::new(
                ErrorCode::TooManyDevices,
                format!(
                    "A bulk request may hold at most {MAX_BULK} devices, this one holds {}.",
                    items.len()
                ),
            ));
        }
        let mut seen = HashSet::new();
        let mut parsed = Vec::with_capacity(items.len());
        for item in items {
            let op = BulkItem::parse(item)?;
            if !seen.insert(op.id.clone()) {
                return Err(HubError::new(
                    ErrorCode::DeviceDefinedMultipleTimes,
                    format!("Device '{}' appears more than once in the request.", op.id),
                ));
            }
            parsed.push(op);
        }
        let mut outcome = BulkOutcome::default();
        for op in parsed {
            if let Err(error) = self.apply_bulk_item(&op).await {
                outcome.errors.push(BulkError {
                    device_id: op.id,
                    operation: op.mode_name,
                    error,
                });
            }
        }
        Ok(outcome)
    }

    async fn apply_bulk_item(&self, op: &BulkItem) -> Result<(), HubError> {
        let if_match = || match &op.etag {
            Some(e) => IfMatch::Etag(e.clone()),
            None => IfMatch::Any,
        };
        match op.mode {
            BulkMode::Create => {
                self.put_device(&op.id, &op.device_body, &IfMatch::Absent)
                    .await?;
                self.apply_bulk_twin(op, &IfMatch::Any).await
            }
            BulkMode::Update | BulkMode::UpdateIfMatchEtag => {
                let condition = if op.mode == BulkMode::Update {
                    IfMatch::Any
                } else {
                    if_match()
                };
                let exists = self.get_device(&op.id).is_ok();
                if exists {
                    self.put_device(&op.id, &op.device_body, &condition).await?;
                } else if op.mode == BulkMode::Update {
                    self.put_device(&op.id, &op.device_body, &IfMatch::Absent)
                        .await?;
                } else {
                    return Err(HubError::device_not_found(&op.id));
                }
                self.apply_bulk_twin(op, &IfMatch::Any).await
            }
            BulkMode::Delete => self.delete_device(&op.id, &IfMatch::Any).await,
            BulkMode::DeleteIfMatchEtag => self.delete_device(&op.id, &if_match()).await,
            BulkMode::UpdateTwin => self.apply_bulk_twin(op, &IfMatch::Any).await,
            BulkMode::UpdateTwinIfMatchEtag => {
                let condition = op.twin_etag.clone().map_or(IfMatch::Any, IfMatch::Etag);
                self.apply_bulk_twin(op, &condition).await
            }
        }
    }

    async fn apply_bulk_twin(&self, op: &BulkItem, condition: &IfMatch) -> Result<(), HubError> {
        if op.twin_patch.as_object().is_some_and(Map::is_empty) {
            return Ok(());
        }
        self.patch_twin(&op.id, &op.twin_patch, condition)
            .await
            .map(|_| ())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BulkMode {
    Create,
    Update,
    UpdateIfMatchEtag,
    Delete,
    DeleteIfMatchEtag,
    UpdateTwin,
    UpdateTwinIfMatchEtag,
}

/// One `ExportImportDevice` item, turned into the shapes the single-device
/// operations take.
struct BulkItem {
    id: String,
    mode: BulkMode,
    mode_name: String,
    etag: Option<String>,
    twin_etag: Option<String>,
    device_body: Value,
    twin_patch: Value,
}

impl BulkItem {
    fn parse(item: &Value) -> Result<Self, HubError> {
        let Value::Object(obj) = item else {
            return Err(HubError::invalid("Each bulk item must be a JSON object."));
        };
        let text = |key: &str| obj.get(key).and_then(Value::as_str).map(str::to_owned);
        let id = text("id")
            .or_else(|| text("deviceId"))
            .ok_or_else(|| HubError::invalid("A bulk item has no 'id'."))?;
        validate_id(&id, "device id")?;
        let mode_name = text("importMode").unwrap_or_else(|| "create".into());
        // Node sends capitalised modes ("Update"), Python camelCase: match either.
        let mode = match mode_name.to_ascii_lowercase().as_str() {
            "create" => BulkMode::Create,
            "update" => BulkMode::Update,
            "updateifmatchetag" => BulkMode::UpdateIfMatchEtag,
            "delete" => BulkMode::Delete,
            "deleteifmatchetag" => BulkMode::DeleteIfMatchEtag,
            "updatetwin" => BulkMode::UpdateTwin,
            "updatetwinifmatchetag" => BulkMode::UpdateTwinIfMatchEtag,
            other => return Err(HubError::invalid(format!("Unknown importMode '{other}'."))),
        };
        let mut device_body = Map::new();
        device_body.insert("deviceId".into(), Value::String(id.clone()));
        for key in [
            "status",
            "statusReason",
            "authentication",
            "capabilities",
            "deviceScope",
        ] {
            if let Some(v) = obj.get(key) {
                device_body.insert(key.into(), v.clone());
            }
        }
        let mut twin_patch = Map::new();
        if let Some(tags) = obj.get("tags").filter(|v| !v.is_null()) {
            twin_patch.insert("tags".into(), tags.clone());
        }
        if let Some(desired) = obj
            .get("properties")
            .and_then(|p| p.get("desired"))
            .filter(|v| !v.is_null())
        {
            twin_patch.insert("properties".into(), json!({ "desired": desired }));
        }
        Ok(Self {
            id,
            mode,
            mode_name,
            etag: text("eTag").map(|e| e.trim_matches('"').to_owned()),
            twin_etag: text("twinETag").map(|e| e.trim_matches('"').to_owned()),
            device_body: Value::Object(device_body),
            twin_patch: Value::Object(twin_patch),
        })
    }
}
