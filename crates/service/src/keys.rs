//! Bulk key rotation: `POST /devices/keys/regenerate` (what `az iot hub
//! device-identity renew-key` and `module-identity renew-key` send). Each
//! identity gets new random keys in its own write; live sessions signed with
//! the old keys are closed, as for any re-keying.

use crate::events::DeviceEvent;
use crate::state::{Effect, Hub};
use twinhub_core::identity::{generate_key, Authentication, AuthenticationType};
use twinhub_core::{HubError, Identity};

/// Which keys to renew.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySelection {
    /// `primaryKey`.
    Primary,
    /// `secondaryKey`.
    Secondary,
    /// `both`.
    Both,
}

impl KeySelection {
    /// Reads the request's `policyKey` (`primaryKey`, `secondaryKey`, `both`;
    /// `primary` and `secondary` too), case-insensitively.
    pub fn parse(text: &str) -> Result<Self, HubError> {
        match text.to_ascii_lowercase().as_str() {
            "primarykey" | "primary" => Ok(Self::Primary),
            "secondarykey" | "secondary" => Ok(Self::Secondary),
            "both" => Ok(Self::Both),
            _ => Err(HubError::invalid(format!(
                "policyKey must be primaryKey, secondaryKey or both, not '{text}'."
            ))),
        }
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Primary => "primaryKey",
            Self::Secondary => "secondaryKey",
            Self::Both => "both",
        }
    }
}

/// An identity's keys after rotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotatedKeys {
    /// Whose keys.
    pub identity: Identity,
    /// The primary key now.
    pub primary_key: String,
    /// The secondary key now.
    pub secondary_key: String,
}

/// What a bulk rotation did: the identities rotated, and those that failed with
/// why (partial success is success: the caller sees both lists).
#[derive(Debug, Default)]
pub struct KeyRotation {
    /// Rotated identities, in request order.
    pub rotated: Vec<RotatedKeys>,
    /// Identities not rotated, with the reason.
    pub errors: Vec<(Identity, HubError)>,
}

/// Renews `which` keys of `auth`, which must be SAS credentials.
fn renew(auth: &mut Authentication, which: KeySelection) -> Result<(String, String), HubError> {
    if auth.kind != AuthenticationType::Sas {
        return Err(HubError::invalid(
            "Only identities that authenticate with symmetric keys have keys to renew.",
        ));
    }
    let mut rng = rand::rngs::OsRng;
    if matches!(which, KeySelection::Primary | KeySelection::Both) {
        auth.primary_key = Some(generate_key(&mut rng));
    }
    if matches!(which, KeySelection::Secondary | KeySelection::Both) {
        auth.secondary_key = Some(generate_key(&mut rng));
    }
    Ok((
        auth.primary_key.clone().unwrap_or_default(),
        auth.secondary_key.clone().unwrap_or_default(),
    ))
}

impl Hub {
    /// Renews the `which` keys of every identity in `targets`, one durable write
    /// each; an identity that fails (unknown, not SAS) is reported and the others
    /// go on.
    pub async fn regenerate_keys(&self, which: KeySelection, targets: &[Identity]) -> KeyRotation {
        let mut outcome = KeyRotation::default();
        for target in targets {
            match self.regenerate_one(which, target).await {
                Ok(rotated) => outcome.rotated.push(rotated),
                Err(e) => outcome.errors.push((target.clone(), e)),
            }
        }
        outcome
    }

    async fn regenerate_one(
        &self,
        which: KeySelection,
        target: &Identity,
    ) -> Result<RotatedKeys, HubError> {
        self.write(&target.device_id, |slot| {
            let record = slot
                .as_mut()
                .ok_or_else(|| HubError::device_not_found(&target.device_id))?;
            let (primary_key, secondary_key) = match &target.module_id {
                None => {
                    let keys = renew(&mut record.identity.authentication, which)?;
                    record.identity.etag_counter = record.identity.etag_counter.wrapping_add(1);
                    keys
                }
                Some(m) => {
                    let module = record.module_mut(m)?;
                    let keys = renew(&mut module.identity.authentication, which)?;
                    module.identity.etag_counter = module.identity.etag_counter.wrapping_add(1);
                    keys
                }
            };
            let rotated = RotatedKeys {
                identity: target.clone(),
                primary_key,
                secondary_key,
            };
            Ok(match target.module_id {
                None => Effect::upsert(rotated, vec![DeviceEvent::Kick]),
                Some(_) => {
                    let mut effect = Effect::upsert(rotated, Vec::new());
                    effect
                        .module_events
                        .push((target.client_id(), DeviceEvent::Kick));
                    effect
                }
            })
        })
        .await
    }
}
