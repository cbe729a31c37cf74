//! The data directory: `hub.json` (host names, ports, shared access policies), the
//! TLS material and the database. Created on first start with owner-only
//! permissions, since it holds every key of the hub.

use serde::{Deserialize, Serialize};
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;
use twinhub_core::policy::{default_policies, validate_policies, Policy};

/// The default data directory.
pub(crate) const DEFAULT_DATA_DIR: &str = "./twinhub-data";

/// `hub.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct HubFile {
    /// Host names, primary first.
    pub(crate) host_names: Vec<String>,
    /// The HTTPS port the hub last listened on (read by the CLI).
    pub(crate) https_port: u16,
    /// The MQTT/TLS port the hub last listened on.
    pub(crate) mqtts_port: u16,
    /// Shared access policies and their keys.
    pub(crate) policies: Vec<Policy>,
}

impl HubFile {
    /// The position of the policy named `name`.
    pub(crate) fn policy_index(&self, name: &str) -> Result<usize, String> {
        self.policies
            .iter()
            .position(|p| p.name == name)
            .ok_or_else(|| format!("the hub has no shared access policy '{name}'"))
    }

    /// The policy named `name`.
    pub(crate) fn policy(&self, name: &str) -> Result<&Policy, String> {
        self.policy_index(name).map(|i| &self.policies[i])
    }
}

/// Paths inside a data directory.
#[derive(Debug, Clone)]
pub(crate) struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// The data directory at `root` (not created yet).
    pub(crate) fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The directory itself.
    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// `hub.json`.
    pub(crate) fn hub_file(&self) -> PathBuf {
        self.root.join("hub.json")
    }

    /// The CA certificate clients trust.
    pub(crate) fn ca_pem(&self) -> PathBuf {
        self.root.join("ca.pem")
    }

    /// The CA's private key.
    pub(crate) fn ca_key(&self) -> PathBuf {
        self.root.join("ca-key.pem")
    }

    /// The SQLite database.
    pub(crate) fn database(&self) -> PathBuf {
        self.root.join("twinhub.db")
    }

    /// Creates the directory (mode 0700) if needed.
    pub(crate) fn create(&self) -> Result<(), String> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.root)
            .map_err(|e| {
                format!(
                    "cannot create the data directory {}: {e}",
                    self.root.display()
                )
            })
    }

    /// Reads `hub.json`.
    pub(crate) fn read_hub_file(&self) -> Result<HubFile, String> {
        let path = self.hub_file();
        let text = fs::read_to_string(&path).map_err(|e| {
            format!(
                "cannot read {}: {e} (start the hub once with `twinhub serve --data-dir {}`)",
                path.display(),
                self.root.display()
            )
        })?;
        let hub: HubFile = serde_json::from_str(&text)
            .map_err(|e| format!("{} is not valid: {e}", path.display()))?;
        validate_policies(&hub.policies)
            .map_err(|e| format!("{} is not valid: {e}", path.display()))?;
        Ok(hub)
    }

    /// When `hub.json` was last written, and its length: a change means the
    /// policies may have changed.
    pub(crate) fn hub_file_stamp(&self) -> Option<(SystemTime, u64)> {
        let meta = fs::metadata(self.hub_file()).ok()?;
        Some((meta.modified().ok()?, meta.len()))
    }

    /// Reads `hub.json`, lets `change` edit it, checks the result and writes it
    /// back. A running hub applies policy changes within a second.
    pub(crate) fn update_hub_file(
        &self,
        change: impl FnOnce(&mut HubFile) -> Result<(), String>,
    ) -> Result<HubFile, String> {
        let mut hub = self.read_hub_file()?;
        change(&mut hub)?;
        validate_policies(&hub.policies)?;
        self.write_hub_file(&hub)?;
        Ok(hub)
    }

    fn write_hub_file(&self, hub: &HubFile) -> Result<(), String> {
        let text = serde_json::to_string_pretty(hub)
            .map_err(|e| format!("cannot serialize hub.json: {e}"))?;
        self.write_private(&self.hub_file(), text.as_bytes())
    }

    /// Reads `hub.json`, or creates it with fresh policy keys; then adds `extra_hosts`.
    pub(crate) fn load_or_init(
        &self,
        extra_hosts: &[String],
        https_port: u16,
        mqtts_port: u16,
    ) -> Result<HubFile, String> {
        let mut hub = if self.hub_file().exists() {
            self.read_hub_file()?
        } else {
            HubFile {
                host_names: vec!["localhost".into()],
                https_port,
                mqtts_port,
                policies: default_policies(&mut rand::rngs::OsRng),
            }
        };
        // Names given on the command line come first: the first is the one put in
        // connection strings.
        let mut names: Vec<String> = extra_hosts.to_vec();
        for n in hub.host_names.drain(..) {
            if !names.iter().any(|m| m.eq_ignore_ascii_case(&n)) {
                names.push(n);
            }
        }
        hub.host_names = names;
        hub.https_port = https_port;
        hub.mqtts_port = mqtts_port;
        self.write_hub_file(&hub)?;
        Ok(hub)
    }

    /// Writes a file readable by the owner only, atomically (write then rename).
    pub(crate) fn write_private(&self, path: &Path, contents: &[u8]) -> Result<(), String> {
        let tmp = path.with_extension("tmp");
        let write = || -> std::io::Result<()> {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(contents)?;
            f.sync_all()?;
            fs::rename(&tmp, path)
        };
        write().map_err(|e| format!("cannot write {}: {e}", path.display()))
    }
}
