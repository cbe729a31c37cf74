//! Authorization with SAS tokens (spec §8).
//!
//! Every refusal is the same `IotHubUnauthorizedAccess` / "Unauthorized": the reason
//! goes to the debug log only, so a caller cannot probe which check failed.

use crate::state::Hub;
use twinhub_core::identity::DeviceStatus;
use twinhub_core::policy::Permission;
use twinhub_core::sas::{SasError, SasToken};
use twinhub_core::{HubError, Timestamp};

fn refuse(reason: impl std::fmt::Display) -> HubError {
    tracing::debug!(%reason, "authorization refused");
    HubError::unauthorized()
}

impl Hub {
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
        let policy = self
            .config()
            .policies
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

    /// Authenticates a device connection: a token signed with the device's key,
    /// or with a policy that grants DeviceConnect (`skn`), scoped to the device.
    /// Unknown and disabled devices are refused. Returns the token's expiry.
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
        if module_id.is_some() {
            return Err(refuse("module identities are not supported yet"));
        }
        let auth = self
            .read(device_id, |r| {
                (r.identity.status, r.identity.authentication.clone())
            })
            .map_err(|_| refuse(format!("unknown device '{device_id}'")))?;
        if auth.0 == DeviceStatus::Disabled {
            return Err(refuse(format!("device '{device_id}' is disabled")));
        }
        match token.key_name.as_deref() {
            None => token
                .verify_signature(auth.1.symmetric_keys())
                .map_err(refuse)?,
            Some(name) => {
                let policy = self
                    .config()
                    .policies
                    .iter()
                    .find(|p| p.name == name && p.grants(Permission::DeviceConnect))
                    .ok_or_else(|| refuse(format!("policy '{name}' cannot connect devices")))?;
                token.verify_signature(policy.keys()).map_err(refuse)?;
            }
        }
        Ok(token.expiry)
    }
}
