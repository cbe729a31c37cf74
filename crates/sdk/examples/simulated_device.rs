//! The device half of Azure's "configure your devices from a back-end service"
//! tutorial, on the Rust SDK.
//!
//! The device keeps a local copy of its desired properties, infers from each
//! patch whether a component was added, updated or deleted, applies fan and
//! climate settings, and reports `firmwareVersion`, `lastPatchReceivedId`, `fanOn`,
//! `minTemperature` and `maxTemperature` after every patch.
//!
//! ```sh
//! cargo run -p twinhub-sdk --example simulated_device -- "<device connection string>" \
//!     --ca twinhub-data/ca.pem [--until "Delete WiFi component"]
//! ```

use serde_json::{json, Map, Value};
use twinhub_sdk::{DesiredUpdate, DeviceClient, DeviceOptions, SdkError};

/// What the device saw happen to its components, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ComponentChange {
    /// A component appeared.
    Added(String),
    /// A known component changed.
    Updated(String),
    /// A known component was removed.
    Deleted(String),
}

/// The device's local state.
#[derive(Debug, Default)]
pub struct Device {
    desired: Map<String, Value>,
    reported: Map<String, Value>,
    /// Every component change seen, for the app to print or a test to check.
    pub changes: Vec<ComponentChange>,
}

/// Merges a JSON patch where `null` deletes.
fn merge(target: &mut Map<String, Value>, patch: &Map<String, Value>) {
    for (key, value) in patch {
        match value {
            Value::Null => {
                target.remove(key);
            }
            Value::Object(child) => {
                if !matches!(target.get(key), Some(Value::Object(_))) {
                    target.insert(key.clone(), Value::Object(Map::new()));
                }
                if let Some(Value::Object(t)) = target.get_mut(key) {
                    merge(t, child);
                }
            }
            other => {
                target.insert(key.clone(), other.clone());
            }
        }
    }
}

impl Device {
    /// A device that reports firmware 1.2.1 and nothing else yet.
    pub fn new() -> Self {
        let reported = json!({
            "firmwareVersion": "1.2.1",
            "lastPatchReceivedId": "",
            "fanOn": "",
            "minTemperature": "",
            "maxTemperature": "",
        });
        Self {
            reported: reported.as_object().cloned().unwrap_or_default(),
            ..Self::default()
        }
    }

    /// The reported properties to send.
    pub fn reported(&self) -> Value {
        Value::Object(self.reported.clone())
    }

    /// Applies a desired update and returns the patch id it carried, if any.
    pub fn apply(&mut self, update: &DesiredUpdate) -> Option<String> {
        let before = self
            .desired
            .get("components")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        match update {
            DesiredUpdate::Patch { patch, .. } => {
                if let Value::Object(p) = patch {
                    merge(&mut self.desired, p);
                }
            }
            DesiredUpdate::Full { desired, .. } => {
                self.desired = desired.as_object().cloned().unwrap_or_default();
            }
        }
        self.desired.remove("$version");
        let after = self
            .desired
            .get("components")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        for (name, value) in &after {
            match before.get(name) {
                None => self.changes.push(ComponentChange::Added(name.clone())),
                Some(old) if old != value => {
                    self.changes.push(ComponentChange::Updated(name.clone()))
                }
                Some(_) => {}
            }
        }
        for name in before.keys().filter(|n| !after.contains_key(*n)) {
            self.changes.push(ComponentChange::Deleted(name.clone()));
        }

        let patch_id = self
            .desired
            .get("patchId")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let unknown = || Value::String("{unknown}".into());
        self.reported.insert(
            "lastPatchReceivedId".into(),
            patch_id.clone().map_or_else(unknown, Value::String),
        );
        self.reported.insert(
            "fanOn".into(),
            self.desired.get("fanOn").cloned().unwrap_or_else(unknown),
        );
        let climate = after.get("climate");
        for key in ["minTemperature", "maxTemperature"] {
            let value = climate
                .and_then(|c| c.get(key))
                .cloned()
                .unwrap_or_else(unknown);
            self.reported.insert(key.into(), value);
        }
        patch_id
    }
}

/// Runs the device until it has handled the patch named `until` (or forever).
pub async fn run(
    connection_string: &str,
    options: DeviceOptions,
    until: Option<&str>,
) -> Result<Device, SdkError> {
    let (client, mut updates) = DeviceClient::connect(connection_string, options).await?;
    let mut device = Device::new();
    let twin = client.get_twin().await?;
    let version = twin["desired"]["$version"].as_i64().unwrap_or(0);
    device.apply(&DesiredUpdate::Full {
        version,
        desired: twin["desired"].clone(),
    });
    client.patch_reported(&device.reported()).await?;
    println!("Device twin received; reported {}", device.reported());
    while let Some(update) = updates.recv().await {
        let seen = device.changes.len();
        let patch_id = device.apply(&update);
        println!(
            "Desired properties patch {:?}",
            patch_id.as_deref().unwrap_or("{no patchId in patch}")
        );
        for change in &device.changes[seen..] {
            println!("  {change:?}");
        }
        let version = client.patch_reported(&device.reported()).await?;
        println!("  reported (version {version}): {}", device.reported());
        if until.is_some() && patch_id.as_deref() == until {
            break;
        }
    }
    client.disconnect().await?;
    Ok(device)
}

#[allow(dead_code)]
#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let connection_string = args.next().ok_or("usage: simulated_device <device connection string> [--ca PATH] [--port N] [--until PATCH_ID]")?;
    let mut options = DeviceOptions::default();
    let mut until = None;
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--ca" => options.ca_pem = Some(std::fs::read(value)?),
            "--port" => options.port = value.parse()?,
            "--until" => until = Some(value),
            other => return Err(format!("unknown option {other}").into()),
        }
    }
    run(&connection_string, options, until.as_deref()).await?;
    Ok(())
}
