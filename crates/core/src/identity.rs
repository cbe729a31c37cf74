//! Identities: [`Identity`], the address of a device or of one of its modules, and
//! device identities with their keys, status, etags and generation ids (spec §6.1),
//! with the REST body that creates or updates one.

use crate::{HubError, Timestamp};
use base64::Engine as _;
use compact_str::CompactString;
use rand::{CryptoRng, Rng, RngCore};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Who a connection speaks for, or what a request addresses: a device, or a module
/// of a device. Everything that belongs to one identity (its live session, its
/// events, its direct method calls) is keyed by it, so a module can never reach
/// its device's state, nor the other way round, by forgetting a check.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    /// The device id.
    pub device_id: String,
    /// The module id, for a module identity.
    pub module_id: Option<String>,
}

impl Identity {
    /// A device identity.
    pub fn device(device_id: impl Into<String>) -> Self {
        Self {
            device_id: device_id.into(),
            module_id: None,
        }
    }

    /// A module identity.
    pub fn module(device_id: impl Into<String>, module_id: impl Into<String>) -> Self {
        Self {
            device_id: device_id.into(),
            module_id: Some(module_id.into()),
        }
    }

    /// The MQTT client id of this identity, `{deviceId}` or `{deviceId}/{moduleId}`,
    /// also its key wherever identities are kept by string (device ids cannot
    /// contain `/`, so the two forms never collide).
    pub fn client_id(&self) -> String {
        self.to_string()
    }
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.module_id {
            Some(m) => write!(f, "{}/{m}", self.device_id),
            None => f.write_str(&self.device_id),
        }
    }
}

/// Longest device or module id.
pub const MAX_ID_LEN: usize = 128;

/// Checks a device or module id: 1–128 ASCII alphanumerics or `-:.+%_#*?!(),=@;$'`.
pub fn validate_id(id: &str, what: &str) -> Result<(), HubError> {
    const EXTRA: &str = "-:.+%_#*?!(),=@;$'";
    if id.is_empty() || id.len() > MAX_ID_LEN {
        return Err(HubError::invalid(format!(
            "The {what} must be 1 to {MAX_ID_LEN} characters long."
        )));
    }
    if let Some(bad) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || EXTRA.contains(*c)))
    {
        return Err(HubError::invalid(format!(
            "The {what} contains the character {bad:?}, which is not allowed."
        )));
    }
    Ok(())
}

/// `enabled` or `disabled`: a disabled device cannot connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceStatus {
    /// The device may connect.
    Enabled,
    /// The device is refused.
    Disabled,
}

impl DeviceStatus {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Enabled => "enabled",
            Self::Disabled => "disabled",
        }
    }

    fn parse(s: &str) -> Result<Self, HubError> {
        match s.to_ascii_lowercase().as_str() {
            "enabled" => Ok(Self::Enabled),
            "disabled" => Ok(Self::Disabled),
            _ => Err(HubError::invalid(format!(
                "Unknown device status '{s}', expected 'enabled' or 'disabled'."
            ))),
        }
    }
}

/// Whether the device has a live connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConnectionState {
    /// A session is open.
    Connected,
    /// No session is open.
    Disconnected,
}

impl ConnectionState {
    /// The wire name (capitalised, as IoT Hub writes it).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connected => "Connected",
            Self::Disconnected => "Disconnected",
        }
    }
}

/// How the device authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuthenticationType {
    /// Symmetric keys and SAS tokens.
    #[serde(rename = "sas")]
    Sas,
    /// Self-signed X.509 certificates identified by thumbprint.
    #[serde(rename = "selfSigned")]
    SelfSigned,
    /// X.509 certificates signed by a registered CA.
    #[serde(rename = "certificateAuthority")]
    CertificateAuthority,
    /// No device credentials.
    #[serde(rename = "none")]
    None,
}

impl AuthenticationType {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sas => "sas",
            Self::SelfSigned => "selfSigned",
            Self::CertificateAuthority => "certificateAuthority",
            Self::None => "none",
        }
    }

    fn parse(s: &str) -> Result<Self, HubError> {
        match s.to_ascii_lowercase().as_str() {
            "sas" => Ok(Self::Sas),
            "selfsigned" => Ok(Self::SelfSigned),
            "certificateauthority" => Ok(Self::CertificateAuthority),
            "none" => Ok(Self::None),
            _ => Err(HubError::invalid(format!(
                "Unknown authentication type '{s}'."
            ))),
        }
    }
}

/// A device's credentials.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Authentication {
    /// The authentication type.
    pub kind: AuthenticationType,
    /// Primary symmetric key, base64.
    pub primary_key: Option<String>,
    /// Secondary symmetric key, base64.
    pub secondary_key: Option<String>,
    /// Primary X.509 thumbprint.
    pub primary_thumbprint: Option<String>,
    /// Secondary X.509 thumbprint.
    pub secondary_thumbprint: Option<String>,
}

impl Authentication {
    /// `{"primaryThumbprint":...,"secondaryThumbprint":...}`.
    pub fn thumbprints_json(&self) -> Value {
        let mut m = Map::new();
        m.insert(
            "primaryThumbprint".into(),
            opt_string(&self.primary_thumbprint),
        );
        m.insert(
            "secondaryThumbprint".into(),
            opt_string(&self.secondary_thumbprint),
        );
        Value::Object(m)
    }

    /// The symmetric keys to try when verifying a device-signed token.
    pub fn symmetric_keys(&self) -> impl Iterator<Item = &str> {
        self.primary_key
            .iter()
            .chain(self.secondary_key.iter())
            .map(String::as_str)
    }
}

impl Authentication {
    /// SAS credentials without keys yet: where a new identity starts before its
    /// body's credentials are applied.
    pub(crate) fn sas() -> Self {
        Self {
            kind: AuthenticationType::Sas,
            primary_key: None,
            secondary_key: None,
            primary_thumbprint: None,
            secondary_thumbprint: None,
        }
    }

    /// Applies the credentials of a request body. Keys left empty are generated
    /// when `creating` (or when there are none yet) and kept otherwise, so an
    /// update never silently rotates keys.
    pub(crate) fn apply<R: RngCore + CryptoRng>(
        &mut self,
        request: &Credentials,
        rng: &mut R,
        creating: bool,
    ) {
        if let Some(kind) = request.kind {
            self.kind = kind;
        }
        if self.kind == AuthenticationType::Sas {
            let fill =
                |given: &Option<String>, current: &mut Option<String>, rng: &mut R| match given {
                    Some(key) => *current = Some(key.clone()),
                    None if creating || current.is_none() => *current = Some(generate_key(rng)),
                    None => {}
                };
            fill(&request.primary_key, &mut self.primary_key, rng);
            fill(&request.secondary_key, &mut self.secondary_key, rng);
        } else {
            self.primary_key = None;
            self.secondary_key = None;
        }
        if request.primary_thumbprint.is_some() {
            self.primary_thumbprint = request.primary_thumbprint.clone();
        }
        if request.secondary_thumbprint.is_some() {
            self.secondary_thumbprint = request.secondary_thumbprint.clone();
        }
    }

    /// `{"symmetricKey":{..},"x509Thumbprint":{..},"type":..}` of identity JSON.
    pub fn to_json(&self) -> Value {
        let mut symmetric = Map::new();
        symmetric.insert("primaryKey".into(), opt_string(&self.primary_key));
        symmetric.insert("secondaryKey".into(), opt_string(&self.secondary_key));
        let mut auth = Map::new();
        auth.insert("symmetricKey".into(), Value::Object(symmetric));
        auth.insert("x509Thumbprint".into(), self.thumbprints_json());
        auth.insert("type".into(), Value::String(self.kind.as_str().into()));
        Value::Object(auth)
    }
}

pub(crate) fn opt_string(s: &Option<String>) -> Value {
    s.as_ref().map_or(Value::Null, |s| Value::String(s.clone()))
}

/// A device in the identity registry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceIdentity {
    /// Case-sensitive device id (inline up to 24 bytes: a hub keeps a million).
    pub device_id: CompactString,
    /// New for each incarnation of the id (18 digits, inline).
    pub generation_id: CompactString,
    /// Counter behind the identity etag; changes on every identity update.
    pub etag_counter: u64,
    /// Enabled or disabled.
    pub status: DeviceStatus,
    /// Why the status was set.
    pub status_reason: Option<String>,
    /// When the status last changed; `None` = never.
    pub status_updated_time: Option<Timestamp>,
    /// Live connection state. Not persisted meaningfully: after a restart no
    /// device is connected.
    pub connection_state: ConnectionState,
    /// When the connection state last changed.
    pub connection_state_updated_time: Option<Timestamp>,
    /// Last time the device sent anything.
    pub last_activity_time: Option<Timestamp>,
    /// Credentials.
    pub authentication: Authentication,
    /// Whether this is an IoT Edge device.
    pub iot_edge: bool,
    /// Edge scope.
    pub device_scope: Option<String>,
    /// Plug and Play model id the device announced, or empty.
    pub model_id: String,
}

/// A 32-byte random key, base64: what IoT Hub generates when a request has none.
pub fn generate_key<R: RngCore + CryptoRng>(rng: &mut R) -> String {
    let mut bytes = [0u8; 32];
    rng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

impl DeviceIdentity {
    /// The identity etag: base64 of the counter's decimal digits, like IoT Hub's.
    pub fn etag(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.etag_counter.to_string())
    }

    /// Creates an identity from a `PUT /devices/{id}` body.
    pub fn create<R: RngCore + CryptoRng>(
        device_id: &str,
        body: &Value,
        rng: &mut R,
    ) -> Result<Self, HubError> {
        let request = DeviceRequest::parse(device_id, body)?;
        let status = request.status.unwrap_or(DeviceStatus::Enabled);
        let mut identity = Self {
            device_id: device_id.into(),
            generation_id: rng
                .gen_range(100_000_000_000_000_000u64..1_000_000_000_000_000_000)
                .to_string()
                .into(),
            etag_counter: u64::from(rng.gen::<u32>()),
            status,
            status_reason: request.status_reason.clone(),
            status_updated_time: None,
            connection_state: ConnectionState::Disconnected,
            connection_state_updated_time: None,
            last_activity_time: None,
            authentication: Authentication::sas(),
            iot_edge: request.iot_edge.unwrap_or(false),
            device_scope: request.device_scope.clone(),
            model_id: String::new(),
        };
        identity
            .authentication
            .apply(&request.credentials, rng, true);
        Ok(identity)
    }

    /// Applies a `PUT /devices/{id}` body to an existing identity. Keys left empty
    /// keep their current values (so an update never silently rotates keys).
    pub fn update<R: RngCore + CryptoRng>(
        &mut self,
        body: &Value,
        now: Timestamp,
        rng: &mut R,
    ) -> Result<(), HubError> {
        let request = DeviceRequest::parse(&self.device_id, body)?;
        if let Some(status) = request.status {
            if status != self.status {
                self.status = status;
                self.status_updated_time = Some(now);
            }
        }
        if request.status_reason.is_some() {
            self.status_reason = request.status_reason.clone();
        }
        if let Some(edge) = request.iot_edge {
            self.iot_edge = edge;
        }
        if request.device_scope.is_some() {
            self.device_scope = request.device_scope.clone();
        }
        self.authentication.apply(&request.credentials, rng, false);
        self.etag_counter = self.etag_counter.wrapping_add(1);
        Ok(())
    }

    /// The identity JSON of `GET /devices/{id}` (spec §6.1).
    pub fn to_json(&self) -> Value {
        let mut out = Map::new();
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
        out.insert("status".into(), Value::String(self.status.as_str().into()));
        out.insert("statusReason".into(), opt_string(&self.status_reason));
        out.insert(
            "connectionStateUpdatedTime".into(),
            Value::String(Timestamp::iso_or_never(self.connection_state_updated_time)),
        );
        out.insert(
            "statusUpdatedTime".into(),
            Value::String(Timestamp::iso_or_never(self.status_updated_time)),
        );
        out.insert(
            "lastActivityTime".into(),
            Value::String(Timestamp::iso_or_never(self.last_activity_time)),
        );
        out.insert("cloudToDeviceMessageCount".into(), Value::from(0));
        out.insert("authentication".into(), self.authentication.to_json());
        let mut capabilities = Map::new();
        capabilities.insert("iotEdge".into(), Value::Bool(self.iot_edge));
        out.insert("capabilities".into(), Value::Object(capabilities));
        out.insert("deviceScope".into(), opt_string(&self.device_scope));
        Value::Object(out)
    }
}

/// The writable members of a device body, validated.
#[derive(Debug, Default)]
struct DeviceRequest {
    status: Option<DeviceStatus>,
    status_reason: Option<String>,
    credentials: Credentials,
    iot_edge: Option<bool>,
    device_scope: Option<String>,
}

/// The `authentication` member of a device or module body, validated.
#[derive(Debug, Default)]
pub(crate) struct Credentials {
    kind: Option<AuthenticationType>,
    primary_key: Option<String>,
    secondary_key: Option<String>,
    primary_thumbprint: Option<String>,
    secondary_thumbprint: Option<String>,
}

impl Credentials {
    /// Reads `authentication` from an identity body's root.
    pub(crate) fn parse(root: &Map<String, Value>) -> Result<Self, HubError> {
        let mut credentials = Self::default();
        if let Some(auth) = member_object(root, "authentication")? {
            credentials.kind = member_str(auth, "type")?
                .map(AuthenticationType::parse)
                .transpose()?;
            if let Some(sym) = member_object(auth, "symmetricKey")? {
                credentials.primary_key = key_member(sym, "primaryKey")?;
                credentials.secondary_key = key_member(sym, "secondaryKey")?;
            }
            if let Some(x509) = member_object(auth, "x509Thumbprint")? {
                credentials.primary_thumbprint = non_empty(member_str(x509, "primaryThumbprint")?);
                credentials.secondary_thumbprint =
                    non_empty(member_str(x509, "secondaryThumbprint")?);
            }
        }
        Ok(credentials)
    }
}

impl DeviceRequest {
    fn parse(path_id: &str, body: &Value) -> Result<Self, HubError> {
        let Value::Object(root) = body else {
            return Err(HubError::invalid("A device body must be a JSON object."));
        };
        // Read-only members (etag, generationId, connection state...) are ignored.
        if let Some(id) = member_str(root, "deviceId")? {
            if id != path_id {
                return Err(HubError::invalid(format!(
                    "The deviceId '{id}' in the body does not match the device id '{path_id}' in the path."
                )));
            }
        }
        let mut request = Self {
            status: member_str(root, "status")?
                .map(DeviceStatus::parse)
                .transpose()?,
            status_reason: member_str(root, "statusReason")?.map(str::to_owned),
            device_scope: member_str(root, "deviceScope")?.map(str::to_owned),
            ..Self::default()
        };
        if let Some(reason) = &request.status_reason {
            if reason.len() > 128 {
                return Err(HubError::invalid(
                    "statusReason is limited to 128 characters.",
                ));
            }
        }
        if let Some(caps) = member_object(root, "capabilities")? {
            request.iot_edge = match caps.get("iotEdge") {
                None | Some(Value::Null) => None,
                Some(Value::Bool(b)) => Some(*b),
                Some(_) => {
                    return Err(HubError::invalid("capabilities.iotEdge must be a boolean."))
                }
            };
        }
        request.credentials = Credentials::parse(root)?;
        Ok(request)
    }
}

fn non_empty(s: Option<&str>) -> Option<String> {
    s.filter(|s| !s.is_empty()).map(str::to_owned)
}

pub(crate) fn member_str<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
) -> Result<Option<&'a str>, HubError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(HubError::invalid(format!("'{key}' must be a string."))),
    }
}

fn member_object<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
) -> Result<Option<&'a Map<String, Value>>, HubError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m)),
        // Node sends "" for empty sub-objects in some flows; treat as absent.
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(_) => Err(HubError::invalid(format!("'{key}' must be a JSON object."))),
    }
}

/// A symmetric key member: absent, `null` or `""` mean "generate one"; anything
/// else must be base64 of 16 to 64 bytes, as IoT Hub requires.
fn key_member(obj: &Map<String, Value>, key: &str) -> Result<Option<String>, HubError> {
    let Some(value) = member_str(obj, key)? else {
        return Ok(None);
    };
    if value.is_empty() {
        return Ok(None);
    }
    check_symmetric_key(value).map_err(|problem| {
        HubError::invalid(format!("authentication.symmetricKey.{key} {problem}."))
    })?;
    Ok(Some(value.to_owned()))
}

/// Why a symmetric key is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyProblem {
    /// Not standard base64.
    #[error("is not valid base64")]
    NotBase64,
    /// Decodes to fewer than 16 or more than 64 bytes.
    #[error("must decode to 16 to 64 bytes")]
    Length,
}

/// Checks a symmetric key (of a device or of a shared access policy): base64 of
/// 16 to 64 bytes, as IoT Hub requires.
pub fn check_symmetric_key(value: &str) -> Result<(), KeyProblem> {
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(value)
        .map_err(|_| KeyProblem::NotBase64)?;
    if !(16..=64).contains(&decoded.len()) {
        return Err(KeyProblem::Length);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rng() -> rand::rngs::StdRng {
        use rand::SeedableRng;
        rand::rngs::StdRng::seed_from_u64(7)
    }

    #[test]
    fn empty_keys_are_generated_in_every_client_form() {
        for body in [
            json!({"deviceId": "d"}),
            json!({"deviceId": "d", "authentication": {"type": "sas", "symmetricKey": {"primaryKey": "", "secondaryKey": ""}}}),
            json!({"deviceId": "d", "authentication": {"symmetricKey": {}, "type": "sas"}}),
            json!({"deviceId": "d", "authentication": {"symmetricKey": {"primaryKey": null, "secondaryKey": null}}}),
        ] {
            let id = DeviceIdentity::create("d", &body, &mut rng()).unwrap();
            let p = id.authentication.primary_key.clone().unwrap();
            let s = id.authentication.secondary_key.clone().unwrap();
            assert_ne!(p, s);
            for k in [p, s] {
                assert_eq!(
                    base64::engine::general_purpose::STANDARD
                        .decode(k)
                        .unwrap()
                        .len(),
                    32
                );
            }
        }
    }

    #[test]
    fn body_id_must_match_and_keys_must_be_base64() {
        assert!(DeviceIdentity::create("d", &json!({"deviceId": "e"}), &mut rng()).is_err());
        let bad = json!({"authentication": {"symmetricKey": {"primaryKey": "not base64!"}}});
        assert!(DeviceIdentity::create("d", &bad, &mut rng()).is_err());
    }

    #[test]
    fn update_changes_etag_and_status_time_but_keeps_keys() {
        let mut id = DeviceIdentity::create("d", &json!({}), &mut rng()).unwrap();
        let (etag, key) = (id.etag(), id.authentication.primary_key.clone());
        let later = Timestamp::from_unix_secs(2);
        id.update(&json!({"status": "disabled"}), later, &mut rng())
            .unwrap();
        assert_ne!(id.etag(), etag);
        assert_eq!(id.status, DeviceStatus::Disabled);
        assert_eq!(id.status_updated_time, Some(later));
        assert_eq!(id.authentication.primary_key, key);
    }

    #[test]
    fn ids_follow_iot_hubs_alphabet() {
        validate_id("dev:1;a=b$c#d?e%f'(x)", "device id").unwrap();
        assert!(validate_id("", "device id").is_err());
        assert!(validate_id("a/b", "device id").is_err());
        assert!(validate_id("é", "device id").is_err());
        assert!(validate_id(&"a".repeat(129), "device id").is_err());
    }
}
