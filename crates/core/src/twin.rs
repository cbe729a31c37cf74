//! The device twin: `tags`, `properties.desired` and `properties.reported`, with
//! IoT Hub's versions, etag and `$metadata`.
//!
//! Version rules (spec §7.3, fitted to real twins):
//! - desired and reported each carry `$version`, starting at 1 and growing by one
//!   per write that changes the section;
//! - the twin `version` starts at 2 and grows by one per write of any kind;
//! - the twin etag counts service writes (tags and desired) only, so a back end
//!   holding an etag is not refused because its device reported in between (§7.4).
//!
//! Every write here is all or nothing: the whole request is validated, the result is
//! built on copies, its size is checked, and only then does it replace the state.
//!
//! The state keeps tags and property values as compact [`twinhub_json`] trees (a hub
//! holds a million twins, and a `serde_json::Map` costs a hash index and a heap block
//! per key and string). A write copies the sections it touches out as `serde_json`
//! maps, runs the merge logic there, and stores the result back compact: the copy
//! it always made anyway, plus one conversion back.

use crate::identity::DeviceIdentity;
use crate::json::{self, Limits};
use crate::module::ModuleIdentity;
use crate::{HubError, Timestamp};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use twinhub_json::Object;

mod children;
mod tree;
use children::Children;
use tree::MetadataTree;

/// `$metadata` of one node: when it last changed and, in desired, at which version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metadata {
    #[serde(rename = "t")]
    last_updated: Timestamp,
    #[serde(rename = "v", default, skip_serializing_if = "Option::is_none")]
    last_updated_version: Option<i64>,
    #[serde(rename = "c", default, skip_serializing_if = "Children::is_empty")]
    children: Children,
}

impl Metadata {
    fn new(now: Timestamp, version: Option<i64>) -> Self {
        Self {
            last_updated: now,
            last_updated_version: version,
            children: Children::default(),
        }
    }

    /// Metadata for a freshly written value: every object below it is new too.
    fn for_value(value: &Value, now: Timestamp, version: Option<i64>) -> Self {
        let mut meta = Self::new(now, version);
        if let Value::Object(members) = value {
            meta.children = Children::from_distinct(
                members
                    .iter()
                    .map(|(k, v)| (k.as_str().into(), Self::for_value(v, now, version))),
            );
        }
        meta
    }
}

/// One properties section (desired or reported): values, metadata and `$version`.
///
/// Stored as `{"values", "metadata" (keyed, [`Metadata`]), "version"}`; decoding is in
/// the `tree` module.
#[derive(Debug, Clone, PartialEq)]
pub struct Section {
    values: Object,
    metadata: MetadataTree,
    version: i64,
}

impl Serialize for Section {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Stored<'a> {
            values: &'a Object,
            metadata: Metadata,
            version: i64,
        }
        Stored {
            values: &self.values,
            metadata: self.keyed_metadata(),
            version: self.version,
        }
        .serialize(serializer)
    }
}

impl Section {
    fn new(now: Timestamp) -> Self {
        Self {
            values: Object::new(),
            metadata: MetadataTree::new(now),
            version: 1,
        }
    }

    /// The section's `$metadata` in the form the merge edits.
    fn keyed_metadata(&self) -> Metadata {
        self.metadata.to_keyed(&self.values)
    }

    /// Stores edited values and metadata.
    fn set(&mut self, values: Map<String, Value>, metadata: &Metadata) {
        self.values = Object::from_map(values);
        self.metadata = MetadataTree::from_keyed(metadata, &self.values);
    }

    /// The section's properties, without `$metadata` and `$version`.
    pub fn values(&self) -> &Object {
        &self.values
    }

    /// The section's `$version`.
    pub fn version(&self) -> i64 {
        self.version
    }

    /// The section as REST returns it: properties, `$metadata`, `$version`.
    pub fn to_json(&self) -> Value {
        self.render_full(true)
    }

    /// The section's `$metadata` object as REST returns it.
    pub fn metadata_json(&self) -> Value {
        self.metadata.render(&self.values)
    }

    /// The section as REST returns it: properties, `$metadata` (when asked for),
    /// `$version`.
    fn render_full(&self, metadata: bool) -> Value {
        let mut out = self.values.to_map();
        if metadata {
            out.insert("$metadata".into(), self.metadata.render(&self.values));
        }
        out.insert("$version".into(), Value::from(self.version));
        Value::Object(out)
    }

    /// The section as devices see it: properties and `$version`, never `$metadata`.
    fn render_for_device(&self) -> Value {
        let mut out = self.values.to_map();
        out.insert("$version".into(), Value::from(self.version));
        Value::Object(out)
    }
}

/// Merges `patch` into `values` (RFC 7396 style: objects merge, everything else
/// replaces, `null` deletes), keeping `meta` in step. Returns whether anything
/// changed; setting a key to its current value counts as a change, as on IoT Hub.
fn merge(
    values: &mut Map<String, Value>,
    meta: &mut Metadata,
    patch: &Map<String, Value>,
    now: Timestamp,
    version: Option<i64>,
) -> bool {
    let mut changed = false;
    for (key, new) in patch {
        match new {
            Value::Null => {
                if values.shift_remove(key).is_some() {
                    meta.children.remove(key);
                    changed = true;
                }
            }
            Value::Object(child_patch) => {
                if !matches!(values.get(key), Some(Value::Object(_))) {
                    values.insert(key.clone(), Value::Object(Map::new()));
                    meta.children.insert(key, Metadata::new(now, version));
                    changed = true;
                }
                let child_meta = meta
                    .children
                    .get_or_insert_with(key, || Metadata::new(now, version));
                if let Some(Value::Object(child_values)) = values.get_mut(key) {
                    if merge(child_values, child_meta, child_patch, now, version) {
                        changed = true;
                    }
                }
            }
            other => {
                values.insert(key.clone(), other.clone());
                meta.children.insert(key, Metadata::new(now, version));
                changed = true;
            }
        }
    }
    if changed {
        meta.last_updated = now;
        meta.last_updated_version = version;
    }
    changed
}

/// The merge patch that turns `old` into `new`: `new`'s members, with `null` for
/// every key `old` has and `new` lacks, at any depth where both hold an object. A
/// device that merges it into its copy of `old` ends with exactly `new`.
fn replacement_patch(old: &Map<String, Value>, new: &Map<String, Value>) -> Map<String, Value> {
    let mut patch = new.clone();
    for (key, old_value) in old {
        match (old_value, new.get(key)) {
            (_, None) => {
                patch.insert(key.clone(), Value::Null);
            }
            (Value::Object(old_child), Some(Value::Object(new_child))) => {
                patch.insert(
                    key.clone(),
                    Value::Object(replacement_patch(old_child, new_child)),
                );
            }
            _ => {}
        }
    }
    patch
}

/// Copies a replacement document without its `null` members (which mean "absent").
fn without_nulls(obj: &Map<String, Value>) -> Map<String, Value> {
    obj.iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| {
            let v = match v {
                Value::Object(m) => Value::Object(without_nulls(m)),
                other => other.clone(),
            };
            (k.clone(), v)
        })
        .collect()
}

/// Drops the read-only members IoT Hub's own JSON carries at a section root
/// (`$metadata`, `$version`): clients send fetched twins back, and IoT Hub ignores them.
fn strip_read_only(obj: &Map<String, Value>) -> Map<String, Value> {
    obj.iter()
        .filter(|(k, _)| k.as_str() != "$metadata" && k.as_str() != "$version")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// A section in a service request: absent, `null` (clear it), or an object.
enum SectionInput {
    Absent,
    Clear,
    Patch(Map<String, Value>),
}

fn section_input(value: Option<&Value>, name: &str) -> Result<SectionInput, HubError> {
    match value {
        None => Ok(SectionInput::Absent),
        Some(Value::Null) => Ok(SectionInput::Clear),
        Some(Value::Object(m)) => Ok(SectionInput::Patch(strip_read_only(m))),
        Some(_) => Err(HubError::invalid(format!(
            "'{name}' must be a JSON object."
        ))),
    }
}

/// What a service write changed, for the caller to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceWriteOutcome {
    /// Whether the twin changed at all (a no-op write keeps every version).
    pub changed: bool,
    /// The desired-property notification for devices: the applied patch with its
    /// `null`s kept, plus `"$version"`. `None` when desired did not change.
    pub desired_notification: Option<Value>,
}

/// A device twin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Twin {
    tags: Object,
    desired: Section,
    reported: Section,
    version: i64,
    etag: u64,
}

impl Twin {
    /// The twin of a device created at `now`.
    pub fn new(now: Timestamp) -> Self {
        Self {
            tags: Object::new(),
            desired: Section::new(now),
            reported: Section::new(now),
            version: 2,
            etag: 1,
        }
    }

    /// The twin's tags.
    pub fn tags(&self) -> &Object {
        &self.tags
    }

    /// `properties.desired`.
    pub fn desired(&self) -> &Section {
        &self.desired
    }

    /// `properties.reported`.
    pub fn reported(&self) -> &Section {
        &self.reported
    }

    /// The twin `version`.
    pub fn version(&self) -> i64 {
        self.version
    }

    /// The twin etag: base64 of a big-endian 8-byte counter of service writes.
    pub fn etag(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.etag.to_be_bytes())
    }

    /// Applies a service `PATCH /twins/{id}` body: `tags` and `properties.desired`
    /// merge; `null` for either clears it; every other member is read-only and ignored.
    pub fn apply_service_patch(
        &mut self,
        body: &Value,
        now: Timestamp,
        limits: &Limits,
    ) -> Result<ServiceWriteOutcome, HubError> {
        let (tags, desired) = service_sections(body)?;
        // Edited as `serde_json` maps, stored back compact once all of it succeeded.
        let mut new_tags = None;
        let mut tags_changed = false;
        match &tags {
            SectionInput::Absent => {}
            SectionInput::Clear => {
                tags_changed = !self.tags.is_empty();
                new_tags = Some(Map::new());
            }
            SectionInput::Patch(p) => {
                json::validate_patch(p, limits, "tags")?;
                let mut tags = self.tags.to_map();
                // Tags carry no metadata; the merge only needs somewhere to write it.
                let mut scratch = Metadata::new(now, None);
                tags_changed = merge(&mut tags, &mut scratch, p, now, None);
                json::check_size(&tags, limits.max_tags_bytes, "tags")?;
                new_tags = Some(tags);
            }
        }
        let new_desired_version = self.desired.version + 1;
        let mut new_desired = None;
        let notification = match &desired {
            SectionInput::Absent => None,
            SectionInput::Clear => {
                let mut values = self.desired.values.to_map();
                let mut metadata = self.desired.keyed_metadata();
                let removed: Map<String, Value> =
                    values.keys().map(|k| (k.clone(), Value::Null)).collect();
                merge(
                    &mut values,
                    &mut metadata,
                    &removed,
                    now,
                    Some(new_desired_version),
                );
                // Clearing is a desired write even when the section was already empty:
                // devices get the (possibly empty) list of removed keys and a new version.
                metadata.last_updated = now;
                metadata.last_updated_version = Some(new_desired_version);
                new_desired = Some((values, metadata));
                Some(removed)
            }
            SectionInput::Patch(p) => {
                json::validate_patch(p, limits, "properties.desired")?;
                let mut values = self.desired.values.to_map();
                let mut metadata = self.desired.keyed_metadata();
                let changed = merge(
                    &mut values,
                    &mut metadata,
                    p,
                    now,
                    Some(new_desired_version),
                );
                if changed {
                    json::check_size(&values, limits.max_desired_bytes, "properties.desired")?;
                }
                new_desired = Some((values, metadata));
                changed.then(|| p.clone())
            }
        };
        let desired_changed = notification.is_some();
        if !tags_changed && !desired_changed {
            return Ok(ServiceWriteOutcome {
                changed: false,
                desired_notification: None,
            });
        }
        if let Some(tags) = new_tags {
            self.tags = Object::from_map(tags);
        }
        if let Some((values, metadata)) = new_desired {
            self.desired.set(values, &metadata);
        }
        self.version += 1;
        self.etag += 1;
        let desired_notification = notification.map(|mut patch| {
            self.desired.version = new_desired_version;
            patch.insert("$version".into(), Value::from(new_desired_version));
            Value::Object(patch)
        });
        Ok(ServiceWriteOutcome {
            changed: true,
            desired_notification,
        })
    }

    /// Applies a service `PUT /twins/{id}` body: `tags` and `properties.desired`
    /// become exactly what the body holds (an omitted section becomes empty).
    ///
    /// Devices are told the new desired document plus `null` for every key that
    /// disappeared, at any depth, so that clients which merge notifications
    /// converge on the new document.
    pub fn replace(
        &mut self,
        body: &Value,
        now: Timestamp,
        limits: &Limits,
    ) -> Result<ServiceWriteOutcome, HubError> {
        let (tags, desired) = service_sections(body)?;
        let tags = match tags {
            SectionInput::Patch(p) => p,
            SectionInput::Absent | SectionInput::Clear => Map::new(),
        };
        let desired = match desired {
            SectionInput::Patch(p) => p,
            SectionInput::Absent | SectionInput::Clear => Map::new(),
        };
        json::validate_patch(&tags, limits, "tags")?;
        json::validate_patch(&desired, limits, "properties.desired")?;
        let tags = without_nulls(&tags);
        let desired = without_nulls(&desired);
        json::check_size(&tags, limits.max_tags_bytes, "tags")?;
        json::check_size(&desired, limits.max_desired_bytes, "properties.desired")?;

        let version = self.desired.version + 1;
        let mut notification = replacement_patch(&self.desired.values.to_map(), &desired);
        notification.insert("$version".into(), Value::from(version));

        let mut metadata = Metadata::for_value(&Value::Object(desired.clone()), now, Some(version));
        metadata.last_updated_version = Some(version);
        self.tags = Object::from_map(tags);
        self.desired.set(desired, &metadata);
        self.desired.version = version;
        self.version += 1;
        self.etag += 1;
        Ok(ServiceWriteOutcome {
            changed: true,
            desired_notification: Some(Value::Object(notification)),
        })
    }

    /// Applies a device's reported-properties patch and returns the new reported
    /// `$version`. `expected_version`, when given, must equal the current one.
    /// The etag does not change (§7.4).
    pub fn apply_reported_patch(
        &mut self,
        patch: &Value,
        expected_version: Option<i64>,
        now: Timestamp,
        limits: &Limits,
    ) -> Result<i64, HubError> {
        let Value::Object(patch) = patch else {
            return Err(HubError::invalid(
                "A reported-properties patch must be a JSON object.",
            ));
        };
        if let Some(expected) = expected_version {
            if expected != self.reported.version {
                return Err(HubError::precondition(format!(
                    "Reported properties are at version {}, not {expected}.",
                    self.reported.version
                )));
            }
        }
        let patch = strip_read_only(patch);
        json::validate_patch(&patch, limits, "properties.reported")?;
        let mut values = self.reported.values.to_map();
        let mut metadata = self.reported.keyed_metadata();
        merge(&mut values, &mut metadata, &patch, now, None);
        json::check_size(&values, limits.max_reported_bytes, "properties.reported")?;
        // A reported patch always counts as a write: devices rely on the version
        // they get back growing with every accepted PATCH.
        metadata.last_updated = now;
        self.reported.set(values, &metadata);
        self.reported.version += 1;
        self.version += 1;
        Ok(self.reported.version)
    }

    /// `{"desired":{...,"$version":n},"reported":{...,"$version":m}}`: what a device
    /// receives for a twin GET over MQTT (no tags, no `$metadata`).
    pub fn properties_for_device(&self) -> Value {
        let mut out = Map::new();
        out.insert("desired".into(), self.desired.render_for_device());
        out.insert("reported".into(), self.reported.render_for_device());
        Value::Object(out)
    }

    /// The twin JSON of REST and query results (spec §6.2), fields in IoT Hub's order.
    pub fn to_json(&self, identity: &DeviceIdentity) -> Value {
        self.render(identity, true)
    }

    /// The twin JSON without `$metadata`: what a query's WHERE clause needs unless
    /// it names `$metadata`, and much cheaper to build.
    pub fn to_json_without_metadata(&self, identity: &DeviceIdentity) -> Value {
        self.render(identity, false)
    }

    fn render(&self, identity: &DeviceIdentity, metadata: bool) -> Value {
        let mut out = Map::new();
        out.insert(
            "deviceId".into(),
            Value::String(identity.device_id.to_string()),
        );
        out.insert("etag".into(), Value::String(self.etag()));
        out.insert("deviceEtag".into(), Value::String(identity.etag()));
        out.insert(
            "status".into(),
            Value::String(identity.status.as_str().into()),
        );
        if let Some(reason) = &identity.status_reason {
            out.insert("statusReason".into(), Value::String(reason.clone()));
        }
        out.insert(
            "statusUpdateTime".into(),
            Value::String(Timestamp::iso_or_never(identity.status_updated_time)),
        );
        out.insert(
            "connectionState".into(),
            Value::String(identity.connection_state.as_str().into()),
        );
        out.insert(
            "lastActivityTime".into(),
            Value::String(Timestamp::iso_or_never(identity.last_activity_time)),
        );
        out.insert("cloudToDeviceMessageCount".into(), Value::from(0));
        out.insert(
            "authenticationType".into(),
            Value::String(identity.authentication.kind.as_str().into()),
        );
        out.insert(
            "x509Thumbprint".into(),
            identity.authentication.thumbprints_json(),
        );
        out.insert("modelId".into(), Value::String(identity.model_id.clone()));
        self.render_body(&mut out, metadata);
        let mut capabilities = Map::new();
        capabilities.insert("iotEdge".into(), Value::Bool(identity.iot_edge));
        out.insert("capabilities".into(), Value::Object(capabilities));
        Value::Object(out)
    }
}

impl Twin {
    /// The module twin JSON of REST and `devices.modules` query results (fleet
    /// spec §2.2): the module's root members, then the twin's.
    pub fn to_module_json(&self, module: &ModuleIdentity, device: &DeviceIdentity) -> Value {
        self.render_module(module, device, true)
    }

    /// [`Twin::to_module_json`] without `$metadata`.
    pub fn to_module_json_without_metadata(
        &self,
        module: &ModuleIdentity,
        device: &DeviceIdentity,
    ) -> Value {
        self.render_module(module, device, false)
    }

    fn render_module(
        &self,
        module: &ModuleIdentity,
        device: &DeviceIdentity,
        metadata: bool,
    ) -> Value {
        let mut out = module.twin_root(device, self.etag());
        self.render_body(&mut out, metadata);
        Value::Object(out)
    }

    /// `version`, `tags` (when there are any) and `properties`: the members every
    /// twin ends with.
    fn render_body(&self, out: &mut Map<String, Value>, metadata: bool) {
        out.insert("version".into(), Value::from(self.version));
        if !self.tags.is_empty() {
            out.insert("tags".into(), Value::Object(self.tags.to_map()));
        }
        let mut properties = Map::new();
        properties.insert("desired".into(), self.desired.render_full(metadata));
        properties.insert("reported".into(), self.reported.render_full(metadata));
        out.insert("properties".into(), Value::Object(properties));
    }
}

/// Splits a service twin body into its `tags` and `properties.desired` inputs.
fn service_sections(body: &Value) -> Result<(SectionInput, SectionInput), HubError> {
    let Value::Object(root) = body else {
        return Err(HubError::invalid("A twin body must be a JSON object."));
    };
    let tags = section_input(root.get("tags"), "tags")?;
    let desired = match root.get("properties") {
        None | Some(Value::Null) => SectionInput::Absent,
        Some(Value::Object(props)) => section_input(props.get("desired"), "properties.desired")?,
        Some(_) => return Err(HubError::invalid("'properties' must be a JSON object.")),
    };
    Ok((tags, desired))
}

#[cfg(test)]
mod tests;
