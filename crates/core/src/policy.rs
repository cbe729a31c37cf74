//! Shared access policies and their permissions (spec §8.3).

use crate::identity::{check_symmetric_key, generate_key};
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

/// Checks a set of policies: names of 1 to 64 letters, digits, `-`, `_` and `.`,
/// each used once; both keys valid symmetric keys; at least one right each.
pub fn validate_policies(policies: &[Policy]) -> Result<(), String> {
    for (i, p) in policies.iter().enumerate() {
        let name_ok = (1..=64).contains(&p.name.len())
            && p.name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !name_ok {
            return Err(format!(
                "policy name '{}' must be 1 to 64 letters, digits, '-', '_' or '.'",
                p.name
            ));
        }
        if policies[..i].iter().any(|q| q.name == p.name) {
            return Err(format!("policy '{}' is defined twice", p.name));
        }
        for (which, key) in [("primary", &p.primary_key), ("secondary", &p.secondary_key)] {
            check_symmetric_key(key)
                .map_err(|problem| format!("policy '{}': the {which} key {problem}", p.name))?;
        }
        if p.rights.is_empty() {
            return Err(format!("policy '{}' grants no rights", p.name));
        }
    }
    Ok(())
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
        assert_eq!(validate_policies(&policies), Ok(()));
    }

    #[test]
    fn invalid_policy_sets_are_refused() {
        let good = default_policies(&mut rand::rngs::OsRng);
        let with = |change: &dyn Fn(&mut Vec<Policy>)| {
            let mut p = good.clone();
            change(&mut p);
            validate_policies(&p)
        };
        assert!(with(&|p| p[1].name = "iothubowner".into())
            .unwrap_err()
            .contains("twice"));
        assert!(with(&|p| p[0].name = String::new()).is_err());
        assert!(with(&|p| p[0].name = "a b".into()).is_err());
        assert!(with(&|p| p[0].primary_key = "not base64!".into())
            .unwrap_err()
            .contains("primary key is not valid base64"));
        assert!(with(&|p| p[0].secondary_key = "AAAA".into())
            .unwrap_err()
            .contains("16 to 64 bytes"));
        assert!(with(&|p| p[0].rights.clear()).is_err());
        assert_eq!(with(&|p| p.retain(|q| q.name != "service")), Ok(()));
    }
}
