//! The back-end half of Azure's "configure your devices from a back-end service"
//! tutorial, on the Rust SDK: it resets the device's desired properties, then sends
//! a sequence of patches (fan on, climate limits, a WiFi component added, updated
//! and deleted with `null`), each with the etag the previous update returned, and
//! prints the reported properties the device sent back.
//!
//! ```sh
//! cargo run -p twinhub-sdk --example service_client -- "<service connection string>" \
//!     --ca twinhub-data/ca.pem [--port 443] [--device-id MyTwinDevice] [--interval-ms 2000]
//! ```

use serde_json::{json, Value};
use std::time::Duration;
use twinhub_sdk::{SdkError, ServiceClient};

/// The tutorial's patches, in order: (patchId, desired patch).
pub fn patches() -> Vec<(&'static str, Value)> {
    vec![
        (
            "Init",
            json!({"patchId": "Init", "fanOn": "false", "components": {
                "system": {"id": "17", "units": "farenheit", "firmwareVersion": "9.75"},
                "climate": {"minTemperature": "68", "maxTemperature": "76"}}}),
        ),
        (
            "Switch fan on",
            json!({"patchId": "Switch fan on", "fanOn": "false"}),
        ),
        (
            "Set maximum temperature",
            json!({"patchId": "Set maximum temperature", "components": {"climate": {"maxTemperature": "92"}}}),
        ),
        (
            "Add WiFi component",
            json!({"patchId": "Add WiFi component", "components": {"wifi": {"channel": "6", "ssid": "my_network"}}}),
        ),
        (
            "Update WiFi component",
            json!({"patchId": "Update WiFi component", "components": {"wifi": {"channel": "13", "ssid": "my_other_network"}}}),
        ),
        (
            "Delete WiFi component",
            json!({"patchId": "Delete WiFi component", "components": {"wifi": null}}),
        ),
    ]
}

/// Sends the reset and every patch, `interval` apart; returns the twin after the last.
pub async fn run(
    client: &ServiceClient,
    device_id: &str,
    interval: Duration,
) -> Result<Value, SdkError> {
    let twin = client.get_twin(device_id).await?;
    let mut etag = twin["etag"].as_str().unwrap_or("*").to_owned();
    let twin = client
        .update_twin(
            device_id,
            &json!({"properties": {"desired": null}}),
            Some(&etag),
        )
        .await?;
    etag = twin["etag"].as_str().unwrap_or("*").to_owned();
    println!("Reset desired properties");
    tokio::time::sleep(interval).await;
    let mut last = twin;
    for (name, desired) in patches() {
        last = client
            .update_twin(
                device_id,
                &json!({"properties": {"desired": desired}}),
                Some(&etag),
            )
            .await?;
        etag = last["etag"].as_str().unwrap_or("*").to_owned();
        println!("Sent {name} patch");
        tokio::time::sleep(interval).await;
    }
    Ok(last)
}

/// Prints what the tutorial prints about the device's reported properties.
pub fn print_reported(twin: &Value) {
    let reported = &twin["properties"]["reported"];
    for (label, key) in [
        ("Last received patch", "lastPatchReceivedId"),
        ("Firmware version", "firmwareVersion"),
        ("Fan status", "fanOn"),
        ("Min temperature set", "minTemperature"),
        ("Max temperature set", "maxTemperature"),
    ] {
        println!("{label}: {}", reported[key]);
    }
}

#[allow(dead_code)]
#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let connection_string = args.next().ok_or("usage: service_client <service connection string> [--ca PATH] [--port N] [--device-id ID] [--interval-ms N]")?;
    let (mut ca, mut port, mut device_id, mut interval) =
        (None, None, "MyTwinDevice".to_owned(), 2000u64);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--ca" => ca = Some(std::fs::read(value)?),
            "--port" => port = Some(value.parse()?),
            "--device-id" => device_id = value,
            "--interval-ms" => interval = value.parse()?,
            other => return Err(format!("unknown option {other}").into()),
        }
    }
    let client = ServiceClient::from_connection_string(&connection_string, ca.as_deref(), port)?;
    run(&client, &device_id, Duration::from_millis(interval)).await?;
    println!("\nFinal reported properties from the device");
    print_reported(&client.get_twin(&device_id).await?);
    Ok(())
}
