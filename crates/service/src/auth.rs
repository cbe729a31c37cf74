//! Authorization with SAS tokens (spec §8).
//!
//! Every refusal is the same `IotHubUnauthorizedAccess` / "Unauthorized": the reason
//! goes to the debug log only, so a caller cannot probe which check failed.

use crate::events::DeviceEvent;
use crate::state::Hub;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use twinhub_core::identity::DeviceStatus;
use twinhub_core::policy::{Permission, Policy};
use twinhub_core::sas::{SasError, SasToken};
use twinhub_core::{HubError, Timestamp};

fn refuse(reason: impl std::fmt::Display) -> HubError {
    tracing::debug!(%reason, "authorization refused");
    HubError::unauthorized()
}

/// The shared access policies in force, and which devices' live sessions hold
/// on to one of them: a device that connected with a policy key (`skn`) instead
/// of its own is closed when that policy is deleted, re-keyed or loses
/// DeviceConnect, as a device re-keyed through the registry is.
pub(crate) struct Policies {
    current: RwLock<Arc<[Policy]>>,
    /// Client id (`{device}` or `{device}/{module}`) → the policy its last
    /// accepted connection was signed with.
    device_sessions: Mutex<HashMap<String, String>>,
}

impl Policies {
    pub(crate) fn new(policies: Vec<Policy>) -> Self {
        Self {
            current: RwLock::new(policies.into()),
            device_sessions: Mutex::default(),
        }
    }

    fn current(&self) -> Arc<[Policy]> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.device_sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }
}

/// Whether a token signed with `old` may still be accepted under `new`.
fn still_connects(old: &Policy, new: &[Policy]) -> bool {
    new.iter().any(|p| {
        p.name == old.name && p.keys() == old.keys() && p.grants(Permission::DeviceConnect)
    })
}

impl Hub {
    /// The shared access policies in force.
    pub fn policies(&self) -> Arc<[Policy]> {
        self.inner.policies.current()
    }

    /// Replaces the shared access policies (a policy created, deleted, re-keyed
    /// or given other rights). Service requests are authorized with the new set
    /// from the next request on; live device sessions that connected with a
    /// policy whose keys or DeviceConnect right are gone are closed. Returns how
    /// many sessions were closed.
    pub fn set_policies(&self, policies: Vec<Policy>) -> usize {
        let state = &self.inner.policies;
        let new: Arc<[Policy]> = policies.into();
        let old = std::mem::replace(
            &mut *state.current.write().unwrap_or_else(|e| e.into_inner()),
            new.clone(),
        );
        let revoked: Vec<&str> = old
            .iter()
            .filter(|p| !still_connects(p, &new))
            .map(|p| p.name.as_str())
            .collect();
        let mut closed = Vec::new();
        state.sessions().retain(|device, policy| {
            let keep = !revoked.contains(&policy.as_str());
            if !keep {
                closed.push(device.clone());
            }
            keep
        });
        for device in &closed {
            self.inner.publish(device, vec![DeviceEvent::Kick]);
        }
        closed.len()
    }

    /// The host name of ours that the token's scope names, or `None`.
    fn scoped_host<'a>(&'a self, token: &SasToken) -> Option<&'a str> {
        let host = token.resource.split('/').next().unwrap_or_default();
        self.config()
            .host_names
            .iter()
            .find(|h| h.eq_ignore_ascii_case(host))
            .map(String::as_str)
    }

    /// Authorizes a service request. `authorization` is the `Authorization` header;
    /// `path` the request path (decoded, starting with `/`) that the token's scope
    /// must cover; any one of `needs` suffices.
    pub fn authorize_service(
        &self,
        authorization: Option<&str>,
        path: &str,
        needs: &[Permission],
        now: Timestamp,
    ) -> Result<(), HubError> {
        let header = authorization.ok_or_else(|| refuse("no Authorization header"))?;
        let token = SasToken::parse(header.trim()).map_err(refuse)?;
        let name = token
            .key_name
            .as_deref()
            .ok_or_else(|| refuse("service token without skn"))?;
        let policies = self.policies();
        let policy = policies
            .iter()
            .find(|p| p.name == name)
            .ok_or_else(|| refuse(format!("unknown policy '{name}'")))?;
        let host = self
            .scoped_host(&token)
            .ok_or_else(|| refuse(SasError::Scope))?;
        token
            .check_scope_and_expiry(&format!("{host}{path}"), now.unix_secs())
            .map_err(refuse)?;
        token.verify_signature(policy.keys()).map_err(refuse)?;
        if !needs.iter().any(|p| policy.grants(*p)) {
            return Err(refuse(format!("policy '{name}' lacks {needs:?}")));
        }
        Ok(())
    }

    /// Authenticates a device or module connection: a token signed with the
    /// identity's own key, or with a policy that grants DeviceConnect (`skn`),
    /// scoped to the identity. Unknown identities and those of disabled devices
    /// are refused. Returns the token's expiry.
    pub fn authenticate_device(
        &self,
        device_id: &str,
        module_id: Option<&str>,
        password: &str,
        now: Timestamp,
    ) -> Result<i64, HubError> {
        let token = SasToken::parse(password.trim()).map_err(refuse)?;
        let host = self
            .scoped_host(&token)
            .ok_or_else(|| refuse(SasError::Scope))?;
        let target = match module_id {
            Some(m) => format!("{host}/devices/{device_id}/modules/{m}"),
            None => format!("{host}/devices/{device_id}"),
        };
        token
            .check_scope_and_expiry(&target, now.unix_secs())
            .map_err(refuse)?;
        // A module's own token must be signed with the module's key: its
        // device's key does not open the module (fleet spec §2.3).
        let (status, keys) = self
            .read(device_id, |r| {
                let auth = match module_id {
                    None => Some(&r.identity.authentication),
                    Some(m) => r.modules.get(m).map(|m| &m.identity.authentication),
                };
                auth.map(|a| (r.identity.status, a.clone()))
            })
            .ok()
            .flatten()
            .ok_or_else(|| refuse(format!("unknown identity '{target}'")))?;
        if status == DeviceStatus::Disabled {
            return Err(refuse(format!("device '{device_id}' is disabled")));
        }
        let client_id = match module_id {
            Some(m) => format!("{device_id}/{m}"),
            None => device_id.to_owned(),
        };
        match token.key_name.as_deref() {
            None => {
                token
                    .verify_signature(keys.symmetric_keys())
                    .map_err(refuse)?;
                self.inner.policies.sessions().remove(&client_id);
            }
            Some(name) => {
                let policies = self.policies();
                let policy = policies
                    .iter()
                    .find(|p| p.name == name && p.grants(Permission::DeviceConnect))
                    .ok_or_else(|| refuse(format!("policy '{name}' cannot connect devices")))?;
                token.verify_signature(policy.keys()).map_err(refuse)?;
                self.inner
                    .policies
                    .sessions()
                    .insert(client_id, name.to_owned());
            }
        }
        Ok(token.expiry)
    }
}
