//! Service and device connection strings (spec §8.4): `Key=Value;Key=Value`,
//! each value split at its first `=` (base64 keys end in `=`).

use crate::{ErrorCode, HubError};
use std::collections::HashMap;

/// A parsed connection string; keys are case-sensitive, as in the SDKs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionString {
    fields: HashMap<String, String>,
}

impl ConnectionString {
    /// Parses `Key=Value;...`; empty segments are skipped.
    pub fn parse(text: &str) -> Result<Self, HubError> {
        let mut fields = HashMap::new();
        for part in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').ok_or_else(|| {
                HubError::new(
                    ErrorCode::ArgumentInvalid,
                    format!("Connection string segment '{part}' has no '='."),
                )
            })?;
            fields.insert(k.to_owned(), v.to_owned());
        }
        Ok(Self { fields })
    }

    /// A field's value.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields.get(key).map(String::as_str)
    }

    /// A field that must be present.
    pub fn require(&self, key: &str) -> Result<&str, HubError> {
        self.get(key)
            .ok_or_else(|| HubError::invalid(format!("The connection string has no {key}.")))
    }
}

/// `HostName=..;SharedAccessKeyName=..;SharedAccessKey=..`
pub fn service(host: &str, policy: &str, key: &str) -> String {
    format!("HostName={host};SharedAccessKeyName={policy};SharedAccessKey={key}")
}

/// `HostName=..;DeviceId=..;SharedAccessKey=..`
pub fn device(host: &str, device_id: &str, key: &str) -> String {
    format!("HostName={host};DeviceId={device_id};SharedAccessKey={key}")
}

/// `HostName=..;DeviceId=..;ModuleId=..;SharedAccessKey=..`
pub fn module(host: &str, device_id: &str, module_id: &str, key: &str) -> String {
    format!("HostName={host};DeviceId={device_id};ModuleId={module_id};SharedAccessKey={key}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_split_at_the_first_equals() {
        let cs = ConnectionString::parse(&service("h", "iothubowner", "abc==")).unwrap();
        assert_eq!(cs.get("SharedAccessKey"), Some("abc=="));
        assert_eq!(cs.require("HostName").unwrap(), "h");
        assert!(cs.require("DeviceId").is_err());
        assert!(ConnectionString::parse("HostName").is_err());
    }
}
