//! Shared access policies and their permissions (spec §8.3).

use crate::identity::generate_key;
use rand::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};

/// One right a policy can grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Permission {
    /// Read the identity registry.
    RegistryRead,
    /// Write the identity registry.
    RegistryWrite,
    /// Service-side twin, query and method access.
    ServiceConnect,
    /// Connect as any device.
    DeviceConnect,
}

/// A named shared access policy with two keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Policy {
    /// The policy name (`skn` in tokens, `SharedAccessKeyName` in connection strings).
    pub name: String,
    /// Primary key, base64.
    pub primary_key: String,
    /// Secondary key, base64.
    pub secondary_key: String,
    /// What the policy grants.
    pub rights: Vec<Permission>,
}

impl Policy {
    /// Whether the policy grants `permission`.
    pub fn grants(&self, permission: Permission) -> bool {
        self.rights.contains(&permission)
    }

    /// Both keys, for signature checks.
    pub fn keys(&self) -> [&str; 2] {
        [&self.primary_key, &self.secondary_key]
    }
}

/// IoT Hub's five default policies, each with fresh random keys.
pub fn default_policies<R: RngCore + CryptoRng>(rng: &mut R) -> Vec<Policy> {
    use Permission::*;
    let table: [(&str, &[Permission]); 5] = [
        (
            "iothubowner",
            &[RegistryRead, RegistryWrite, ServiceConnect, DeviceConnect],
        ),
        ("service", &[ServiceConnect]),
        ("device", &[DeviceConnect]),
        ("registryRead", &[RegistryRead]),
        ("registryReadWrite", &[RegistryRead, RegistryWrite]),
    ];
    table
        .iter()
        .map(|(name, rights)| Policy {
            name: (*name).to_owned(),
            primary_key: generate_key(rng),
            secondary_key: generate_key(rng),
            rights: rights.to_vec(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_matrix_matches_iot_hub() {
        let policies = default_policies(&mut rand::rngs::OsRng);
        let get = |n: &str| policies.iter().find(|p| p.name == n).unwrap();
        assert!(get("iothubowner").grants(Permission::DeviceConnect));
        assert!(get("service").grants(Permission::ServiceConnect));
        assert!(!get("service").grants(Permission::RegistryRead));
        assert!(!get("registryRead").grants(Permission::RegistryWrite));
        assert!(get("registryReadWrite").grants(Permission::RegistryWrite));
        assert!(!get("device").grants(Permission::ServiceConnect));
        assert_ne!(get("service").primary_key, get("device").primary_key);
    }
}
