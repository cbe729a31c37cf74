//! Module identities (fleet spec §2.1): sub-identities of a device with their own
//! keys and twin, and the REST body that creates or updates one.

use crate::identity::{
    member_str, opt_string, validate_id, Authentication, ConnectionState, Credentials,
    DeviceIdentity,
};
use crate::{HubError, Timestamp};
use base64::Engine as _;
use compact_str::CompactString;
use rand::{CryptoRng, Rng, RngCore};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Most modules one device may have.
pub const MAX_MODULES_PER_DEVICE: usize = 50;

/// Checks a module id: a device id's alphabet, and not one of the `$` names IoT
/// Edge reserves (`$edgeAgent`, `$edgeHub`).
pub fn validate_module_id(module_id: &str) -> Result<(), HubError> {
    validate_id(module_id, "module id")?;
    if module_id.starts_with('$') {
        return Err(HubError::invalid(format!(
            "The module id '{module_id}' is reserved: ids starting with '$' belong to IoT Edge."
        )));
    }
    Ok(())
}

/// A module in the identity registry. Modules have no status of their own: a
/// disabled device disables its modules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModuleIdentity {
    /// The parent device's id.
    pub device_id: CompactString,
    /// The module id, unique within the device.
    pub module_id: CompactString,
    /// New for each incarnation of the id.
    pub generation_id: CompactString,
    /// Counter behind the identity etag (`MQ==` when created).
    pub etag_counter: u64,
    /// Who manages the module (`iotEdge` for Edge modules), if anyone.
    pub managed_by: Option<String>,
    /// Live connection state (not meaningful after a restart).
    pub connection_state: ConnectionState,
    /// When the connection state last changed.
    pub connection_state_updated_time: Option<Timestamp>,
    /// Last time the module sent anything.
    pub last_activity_time: Option<Timestamp>,
    /// Credentials.
    pub authentication: Authentication,
}

impl ModuleIdentity {
    /// The identity etag: base64 of the counter's decimal digits.
    pub fn etag(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.etag_counter.to_string())
    }

    /// Creates a module of `device_id` from a `PUT /devices/{id}/modules/{mid}`
    /// body; keys left empty are generated.
    pub fn create<R: RngCore + CryptoRng>(
        device_id: &str,
        module_id: &str,
        body: &Value,
        rng: &mut R,
    ) -> Result<Self, HubError> {
        validate_module_id(module_id)?;
        let request = ModuleRequest::parse(device_id, module_id, body)?;
        let mut authentication = Authentication::sas();
        authentication.apply(&request.credentials, rng, true);
        Ok(Self {
            device_id: device_id.into(),
            module_id: module_id.into(),
            generation_id: rng
                .gen_range(100_000_000_000_000_000u64..1_000_000_000_000_000_000)
                .to_string()
                .into(),
            etag_counter: 1,
            managed_by: request.managed_by,
            connection_state: ConnectionState::Disconnected,
            connection_state_updated_time: None,
            last_activity_time: None,
            authentication,
        })
    }

    /// Applies an update body: empty keys keep the current ones, given keys
    /// replace them (the Node sample swaps them this way). Bumps the etag.
    pub fn update<R: RngCore + CryptoRng>(
        &mut self,
        body: &Value,
        rng: &mut R,
    ) -> Result<(), HubError> {
        let request = ModuleRequest::parse(&self.device_id, &self.module_id, body)?;
        self.authentication.apply(&request.credentials, rng, false);
        if request.managed_by.is_some() {
            self.managed_by = request.managed_by;
        }
        self.etag_counter = self.etag_counter.wrapping_add(1);
        Ok(())
    }

    /// The module JSON of `GET /devices/{id}/modules/{mid}`.
    pub fn to_json(&self) -> Value {
        let mut out = Map::new();
        out.insert("moduleId".into(), Value::String(self.module_id.to_string()));
        out.insert("managedBy".into(), opt_string(&self.managed_by));
        out.insert("deviceId".into(), Value::String(self.device_id.to_string()));
        out.insert(
            "generationId".into(),
            Value::String(self.generation_id.to_string()),
        );
        out.insert("etag".into(), Value::String(self.etag()));
        out.insert(
            "connectionState".into(),
            Value::String(self.connection_state.as_str().into()),
        );
        out.insert(
            "connectionStateUpdatedTime".into(),
            Value::String(Timestamp::iso_or_never(self.connection_state_updated_time)),
        );
        out.insert(
            "lastActivityTime".into(),
            Value::String(Timestamp::iso_or_never(self.last_activity_time)),
        );
        out.insert("cloudToDeviceMessageCount".into(), Value::from(0));
        out.insert("authentication".into(), self.authentication.to_json());
        Value::Object(out)
    }

    /// The root members of the module's twin JSON before `version`, in IoT
    /// Hub's order (fleet spec §2.2). `status` is the parent device's.
    pub fn twin_root(&self, device: &DeviceIdentity, twin_etag: String) -> Map<String, Value> {
        let mut out = Map::new();
        out.insert("deviceId".into(), Value::String(self.device_id.to_string()));
        out.insert("moduleId".into(), Value::String(self.module_id.to_string()));
        out.insert("etag".into(), Value::String(twin_etag));
        out.insert("deviceEtag".into(), Value::String(self.etag()));
        out.insert(
            "status".into(),
            Value::String(device.status.as_str().into()),
        );
        out.insert(
            "statusUpdateTime".into(),
            Value::String(Timestamp::iso_or_never(device.status_updated_time)),
        );
        out.insert(
            "connectionState".into(),
            Value::String(self.connection_state.as_str().into()),
        );
        out.insert(
            "lastActivityTime".into(),
            Value::String(Timestamp::iso_or_never(self.last_activity_time)),
        );
        out.insert("cloudToDeviceMessageCount".into(), Value::from(0));
        out.insert(
            "authenticationType".into(),
            Value::String(self.authentication.kind.as_str().into()),
        );
        out.insert(
            "x509Thumbprint".into(),
            self.authentication.thumbprints_json(),
        );
        out.insert("modelId".into(), Value::String(String::new()));
        out
    }
}

/// The writable members of a module body, validated.
struct ModuleRequest {
    credentials: Credentials,
    managed_by: Option<String>,
}

impl ModuleRequest {
    fn parse(device_id: &str, module_id: &str, body: &Value) -> Result<Self, HubError> {
        let Value::Object(root) = body else {
            return Err(HubError::invalid("A module body must be a JSON object."));
        };
        // Read-only members (etag, generationId, connection state...) are ignored.
        for (member, path_id) in [("deviceId", device_id), ("moduleId", module_id)] {
            if let Some(id) = member_str(root, member)? {
                if id != path_id {
                    return Err(HubError::invalid(format!(
                        "The {member} '{id}' in the body does not match '{path_id}' in the path."
                    )));
                }
            }
        }
        Ok(Self {
            credentials: Credentials::parse(root)?,
            managed_by: member_str(root, "managedBy")?
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rng() -> rand::rngs::StdRng {
        use rand::SeedableRng;
        rand::rngs::StdRng::seed_from_u64(11)
    }

    #[test]
    fn created_from_every_sdk_body_with_generated_keys() {
        for body in [
            json!({"deviceId":"d1","moduleId":"m1","authentication":{"type":"sas","symmetricKey":{"primaryKey":"","secondaryKey":""}}}),
            json!({"moduleId": "m1", "deviceId": "d1", "authentication": {"symmetricKey": {}, "type": "sas"}}),
            json!({}),
        ] {
            let m = ModuleIdentity::create("d1", "m1", &body, &mut rng()).unwrap();
            assert_eq!(m.etag(), "MQ==");
            let json = m.to_json();
            assert_eq!(json["moduleId"], "m1");
            assert_eq!(json["deviceId"], "d1");
            assert_eq!(json["managedBy"], Value::Null);
            assert_eq!(json["connectionState"], "Disconnected");
            assert_eq!(json["authentication"]["type"], "sas");
            let p = json["authentication"]["symmetricKey"]["primaryKey"]
                .as_str()
                .unwrap();
            let s = json["authentication"]["symmetricKey"]["secondaryKey"]
                .as_str()
                .unwrap();
            assert_eq!(p.len(), 44);
            assert_ne!(p, s);
            assert!(json.get("status").is_none(), "modules have no status");
        }
    }

    #[test]
    fn ids_and_bodies_are_checked() {
        let create = |m: &str, body: Value| ModuleIdentity::create("d1", m, &body, &mut rng());
        assert!(create("$edgeAgent", json!({})).is_err());
        assert!(create("a/b", json!({})).is_err());
        assert!(create("", json!({})).is_err());
        assert!(create("m1", json!({"moduleId": "m2"})).is_err());
        assert!(create("m1", json!({"deviceId": "d2"})).is_err());
        assert!(create("m1", json!([])).is_err());
        assert!(create(
            "m1",
            json!({"authentication":{"symmetricKey":{"primaryKey":"!!"}}})
        )
        .is_err());
        let m = create("m1", json!({"managedBy": "iotEdge"})).unwrap();
        assert_eq!(m.to_json()["managedBy"], "iotEdge");
    }

    #[test]
    fn update_keeps_empty_keys_swaps_given_ones_and_bumps_the_etag() {
        let mut m = ModuleIdentity::create("d1", "m1", &json!({}), &mut rng()).unwrap();
        let (p, s) = (
            m.authentication.primary_key.clone().unwrap(),
            m.authentication.secondary_key.clone().unwrap(),
        );
        m.update(
            &json!({"authentication":{"symmetricKey":{"primaryKey":"","secondaryKey":""}}}),
            &mut rng(),
        )
        .unwrap();
        assert_eq!(m.authentication.primary_key.as_deref(), Some(p.as_str()));
        assert_eq!(m.etag(), "Mg==");
        m.update(
            &json!({"authentication":{"symmetricKey":{"primaryKey": s, "secondaryKey": p}}}),
            &mut rng(),
        )
        .unwrap();
        assert_eq!(m.authentication.primary_key.as_deref(), Some(s.as_str()));
        assert_eq!(m.authentication.secondary_key.as_deref(), Some(p.as_str()));
    }
}
