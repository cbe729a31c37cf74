//! A device record as the query engine sees it, without rendering it.
//!
//! [`TwinDocument`] resolves query paths straight from a [`DeviceRecord`] to what the
//! twin JSON of `GET /twins` (`Twin::to_json`) would hold there: root identity fields
//! are computed (borrowed where they are stored as strings), `tags` and the property
//! sections are the twin's own compact trees (`twinhub_json`), read in place, and `$metadata` or a virtual object asked for
//! whole (`properties`, a section, `x509Thumbprint`, `capabilities`) is built only for
//! the query that asks. Names match like in the rendered JSON: the root's and
//! `properties`' member names differ under case folding, so matching their folded form
//! is the exact-first rule; inside a section the stored properties come first, then
//! `$metadata`, then `$version`, as they are rendered.

use crate::shard::{DeviceRecord, ModuleRecord};
use serde_json::{Map, Value};
use std::borrow::Cow;
use twinhub_core::twin::{Section, Twin};
use twinhub_core::Timestamp;
use twinhub_query::{descend, lookup_node, Document, Field, Segment};

/// A borrowed view of one device's twin, or of one of its modules' twins (a row
/// of `devices.modules`); see the module documentation.
#[derive(Clone, Copy)]
pub(crate) struct TwinDocument<'r> {
    record: &'r DeviceRecord,
    module: Option<&'r ModuleRecord>,
}

impl<'r> TwinDocument<'r> {
    pub(crate) fn new(record: &'r DeviceRecord) -> Self {
        Self {
            record,
            module: None,
        }
    }

    /// The twin of `module`, a module of `record`'s device.
    pub(crate) fn module(record: &'r DeviceRecord, module: &'r ModuleRecord) -> Self {
        Self {
            record,
            module: Some(module),
        }
    }

    fn twin(&self) -> &'r Twin {
        self.module.map_or(&self.record.twin, |m| &m.twin)
    }

    /// The root member whose lower-cased name is `folded`, with its stored name.
    fn root(&self, folded: &str) -> Option<(&'static str, Field<'r>)> {
        match self.module {
            Some(module) => self.module_root(module, folded),
            None => self.device_root(folded),
        }
    }

    /// A module twin's root members (fleet spec §2.2): the module's identity,
    /// the parent device's status.
    fn module_root(
        &self,
        module: &'r ModuleRecord,
        folded: &str,
    ) -> Option<(&'static str, Field<'r>)> {
        let device = &self.record.identity;
        let identity = &module.identity;
        let twin = &module.twin;
        let borrowed = |s: &'r str| Field::Str(Cow::Borrowed(s));
        let owned = |s: String| Field::Str(Cow::Owned(s));
        Some(match folded {
            "deviceid" => ("deviceId", borrowed(identity.device_id.as_str())),
            "moduleid" => ("moduleId", borrowed(identity.module_id.as_str())),
            "etag" => ("etag", owned(twin.etag())),
            "deviceetag" => ("deviceEtag", owned(identity.etag())),
            "status" => ("status", borrowed(device.status.as_str())),
            "statusupdatetime" => (
                "statusUpdateTime",
                owned(Timestamp::iso_or_never(device.status_updated_time)),
            ),
            "connectionstate" => (
                "connectionState",
                borrowed(identity.connection_state.as_str()),
            ),
            "lastactivitytime" => (
                "lastActivityTime",
                owned(Timestamp::iso_or_never(identity.last_activity_time)),
            ),
            "cloudtodevicemessagecount" => ("cloudToDeviceMessageCount", Field::Int(0)),
            "authenticationtype" => (
                "authenticationType",
                borrowed(identity.authentication.kind.as_str()),
            ),
            "x509thumbprint" => (
                "x509Thumbprint",
                Field::Owned(identity.authentication.thumbprints_json()),
            ),
            "modelid" => ("modelId", borrowed("")),
            "version" => ("version", Field::Int(twin.version())),
            "tags" if twin.tags().is_empty() => return None,
            "tags" => ("tags", Field::Object(twin.tags())),
            _ => return None,
        })
    }

    fn device_root(&self, folded: &str) -> Option<(&'static str, Field<'r>)> {
        let identity = &self.record.identity;
        let twin = &self.record.twin;
        let borrowed = |s: &'r str| Field::Str(Cow::Borrowed(s));
        let owned = |s: String| Field::Str(Cow::Owned(s));
        Some(match folded {
            "deviceid" => ("deviceId", borrowed(identity.device_id.as_str())),
            "etag" => ("etag", owned(twin.etag())),
            "deviceetag" => ("deviceEtag", owned(identity.etag())),
            "status" => ("status", borrowed(identity.status.as_str())),
            "statusreason" => ("statusReason", borrowed(identity.status_reason.as_deref()?)),
            "statusupdatetime" => (
                "statusUpdateTime",
                owned(Timestamp::iso_or_never(identity.status_updated_time)),
            ),
            "connectionstate" => (
                "connectionState",
                borrowed(identity.connection_state.as_str()),
            ),
            "lastactivitytime" => (
                "lastActivityTime",
                owned(Timestamp::iso_or_never(identity.last_activity_time)),
            ),
            "cloudtodevicemessagecount" => ("cloudToDeviceMessageCount", Field::Int(0)),
            "authenticationtype" => (
                "authenticationType",
                borrowed(identity.authentication.kind.as_str()),
            ),
            "x509thumbprint" => (
                "x509Thumbprint",
                Field::Owned(identity.authentication.thumbprints_json()),
            ),
            "modelid" => ("modelId", borrowed(&identity.model_id)),
            "version" => ("version", Field::Int(twin.version())),
            // Rendered twins leave out empty tags.
            "tags" if twin.tags().is_empty() => return None,
            "tags" => ("tags", Field::Object(twin.tags())),
            "capabilities" => {
                let mut capabilities = Map::new();
                capabilities.insert("iotEdge".into(), Value::Bool(identity.iot_edge));
                ("capabilities", Field::Owned(Value::Object(capabilities)))
            }
            _ => return None,
        })
    }

    /// `properties` and below.
    fn properties(&self, rest: &[Segment]) -> Option<(Cow<'r, str>, Field<'r>)> {
        let twin = self.twin();
        let Some((first, rest)) = rest.split_first() else {
            let mut properties = Map::new();
            properties.insert("desired".into(), twin.desired().to_json());
            properties.insert("reported".into(), twin.reported().to_json());
            return Some((
                Cow::Borrowed("properties"),
                Field::Owned(Value::Object(properties)),
            ));
        };
        let (name, section) = match first.folded() {
            "desired" => ("desired", twin.desired()),
            "reported" => ("reported", twin.reported()),
            _ => return None,
        };
        section_path(name, section, rest)
    }
}

/// A section's member named by `rest` (the section itself when `rest` is empty).
fn section_path<'r>(
    name: &'static str,
    section: &'r Section,
    rest: &[Segment],
) -> Option<(Cow<'r, str>, Field<'r>)> {
    let Some((first, tail)) = rest.split_first() else {
        return Some((Cow::Borrowed(name), Field::Owned(section.to_json())));
    };
    let metadata = || Field::Owned(section.metadata_json());
    let version = || Field::Int(section.version());
    // Rendering writes `$metadata` and `$version` over any stored member so named.
    match first.name() {
        "$metadata" => return descend("$metadata", metadata(), tail),
        "$version" => return descend("$version", version(), tail),
        _ => {}
    }
    if let Some((key, value)) = lookup_node(section.values(), first) {
        return descend(key, Field::Node(value), tail);
    }
    match first.folded() {
        "$metadata" => descend("$metadata", metadata(), tail),
        "$version" => descend("$version", version(), tail),
        _ => None,
    }
}

impl Document for TwinDocument<'_> {
    fn resolve(&self, path: &[Segment]) -> Option<(Cow<'_, str>, Field<'_>)> {
        let (first, rest) = path.split_first()?;
        if first.folded() == "properties" {
            return self.properties(rest);
        }
        let (name, field) = self.root(first.folded())?;
        descend(name, field, rest)
    }

    fn member(&self, name: &str) -> Option<Field<'_>> {
        match name {
            // The executor's hot path: every twin's collection and key.
            "deviceId" => {
                return Some(Field::Str(Cow::Borrowed(
                    self.record.identity.device_id.as_str(),
                )))
            }
            "moduleId" => {
                return self
                    .module
                    .map(|m| Field::Str(Cow::Borrowed(m.identity.module_id.as_str())))
            }
            "jobId" => return None,
            _ => {}
        }
        let folded = name.to_ascii_lowercase();
        if folded == "properties" {
            return self.properties(&[]).map(|(_, field)| field);
        }
        self.root(&folded)
            .filter(|(stored, _)| *stored == name)
            .map(|(_, field)| field)
    }

    fn to_json(&self) -> Value {
        match self.module {
            Some(m) => m.twin.to_module_json(&m.identity, &self.record.identity),
            None => self.record.twin.to_json(&self.record.identity),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use twinhub_core::identity::DeviceIdentity;
    use twinhub_core::twin::Twin;
    use twinhub_core::Limits;
    use twinhub_query::Path;

    fn record(tags: bool) -> DeviceRecord {
        let mut rng = rand::thread_rng();
        let mut identity =
            DeviceIdentity::create("dev-1", &json!({"statusReason": "why"}), &mut rng).unwrap();
        identity.model_id = "dtmi:x;1".into();
        let now = Timestamp::from_unix_secs(1_700_000_000);
        let mut twin = Twin::new(now);
        let limits = Limits::default();
        let mut patch = json!({"properties": {"desired": {"mode": "eco", "Mode": "ECO",
            "nested": {"a": 1, "b": {"c": [1, 2]}}}}});
        if tags {
            patch["tags"] = json!({"region": "EU", "Region": "x", "loc": {"floor": 3}});
        }
        twin.apply_service_patch(&patch, now, &limits).unwrap();
        twin.apply_reported_patch(
            &json!({"battery": {"level": 17.5}, "fw": "1.0", "n": null}),
            None,
            now,
            &limits,
        )
        .unwrap();
        DeviceRecord::new(identity, twin)
    }

    const PATHS: &[&str] = &[
        "deviceId",
        "DEVICEID",
        "etag",
        "deviceEtag",
        "status",
        "statusReason",
        "statusUpdateTime",
        "connectionState",
        "lastActivityTime",
        "cloudToDeviceMessageCount",
        "authenticationType",
        "x509Thumbprint",
        "x509thumbprint.PrimaryThumbprint",
        "modelId",
        "version",
        "Version",
        "tags",
        "tags.region",
        "tags.Region",
        "tags.REGION",
        "tags.loc.floor",
        "tags.loc.x",
        "tags.region.x",
        "properties",
        "Properties.Desired",
        "properties.desired.mode",
        "properties.desired.Mode",
        "properties.desired.MODE",
        "properties.desired.nested.b.c",
        "properties.desired.$version",
        "properties.desired.$VERSION",
        "properties.desired.$metadata",
        "properties.desired.$metadata.nested.b",
        "properties.desired.$Metadata.$lastUpdated",
        "properties.reported.battery.level",
        "properties.reported.$version",
        "properties.reported.$version.x",
        "properties.reported.n",
        "properties.other",
        "capabilities",
        "capabilities.IOTEDGE",
        "missing",
        "deviceId.x",
    ];

    #[test]
    fn module_twins_resolve_like_their_rendered_json() {
        let mut rng = rand::thread_rng();
        let device = record(true);
        let now = Timestamp::from_unix_secs(1_700_000_000);
        let identity =
            twinhub_core::module::ModuleIdentity::create("dev-1", "mod-1", &json!({}), &mut rng)
                .unwrap();
        let mut twin = Twin::new(now);
        twin.apply_service_patch(
            &json!({"tags": {"role": "edge"}, "properties": {"desired": {"mode": "eco"}}}),
            now,
            &Limits::default(),
        )
        .unwrap();
        let module = ModuleRecord { identity, twin };
        let rendered = module
            .twin
            .to_module_json(&module.identity, &device.identity);
        let document = TwinDocument::module(&device, &module);
        let mut paths = PATHS.to_vec();
        paths.extend(["moduleId", "MODULEID", "tags.role"]);
        for text in paths {
            let path = Path::new(text.split('.')).unwrap();
            let want = rendered
                .resolve(path.segments())
                .map(|(k, f)| (k.into_owned(), f.into_json()));
            let got = document
                .resolve(path.segments())
                .map(|(k, f)| (k.into_owned(), f.into_json()));
            assert_eq!(got, want, "{text}");
        }
        assert_eq!(document.to_json(), rendered);
        assert_eq!(rendered["moduleId"], "mod-1");
        assert_eq!(rendered["status"], device.identity.status.as_str());
        for name in ["deviceId", "moduleId", "status", "tags", "capabilities"] {
            assert_eq!(
                document.member(name).map(Field::into_json),
                rendered.member(name).map(Field::into_json),
                "{name}"
            );
        }
    }

    #[test]
    fn resolves_every_path_like_the_rendered_twin() {
        for with_tags in [true, false] {
            let record = record(with_tags);
            let rendered = record.twin.to_json(&record.identity);
            let document = TwinDocument::new(&record);
            for text in PATHS {
                let path = Path::new(text.split('.')).unwrap();
                let want = rendered
                    .resolve(path.segments())
                    .map(|(k, f)| (k.into_owned(), f.into_json()));
                let got = document
                    .resolve(path.segments())
                    .map(|(k, f)| (k.into_owned(), f.into_json()));
                assert_eq!(got, want, "{text} (tags: {with_tags})");
            }
            assert_eq!(document.to_json(), rendered);
            for name in [
                "deviceId",
                "moduleId",
                "status",
                "tags",
                "deviceid",
                "properties",
            ] {
                assert_eq!(
                    document.member(name).map(Field::into_json),
                    rendered.member(name).map(Field::into_json),
                    "{name}"
                );
            }
        }
    }
}
