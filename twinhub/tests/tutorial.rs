//! The device-twin tutorial end to end with our Rust SDK examples: a hub on free
//! loopback ports, `MyTwinDevice`, the simulated device over MQTT/TLS and the
//! service client over HTTPS. The device must see the WiFi component added,
//! updated and deleted, and its final reported properties must reach the back end.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code, unreachable_pub)]
#[path = "../../crates/sdk/examples/simulated_device.rs"]
mod simulated_device;

#[allow(dead_code, unreachable_pub)]
#[path = "../../crates/sdk/examples/service_client.rs"]
mod service_client;

mod common;

use serde_json::json;
use simulated_device::ComponentChange;
use std::time::Duration;
use twinhub_sdk::DeviceOptions;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tutorial_flow_with_the_rust_examples() {
    let hub = common::Hub::start();
    let service = hub.service_client("service");
    let owner = hub.service_client("iothubowner");
    let device = owner
        .create_device("MyTwinDevice", &json!({"deviceId": "MyTwinDevice"}))
        .await
        .unwrap();
    let key = device["authentication"]["symmetricKey"]["primaryKey"]
        .as_str()
        .unwrap();
    let device_cs = format!("HostName=localhost;DeviceId=MyTwinDevice;SharedAccessKey={key}");
    let options = DeviceOptions {
        ca_pem: Some(hub.ca_pem()),
        port: hub.mqtts_port,
        ..DeviceOptions::default()
    };
    let device_task = tokio::spawn(async move {
        simulated_device::run(&device_cs, options, Some("Delete WiFi component")).await
    });
    // Let the device connect and report before the back end starts.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let twin = service.get_twin("MyTwinDevice").await.unwrap();
        if twin["properties"]["reported"]["firmwareVersion"] == "1.2.1" {
            assert_eq!(twin["connectionState"], "Connected");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "device never reported"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    service_client::run(&service, "MyTwinDevice", Duration::from_millis(200))
        .await
        .unwrap();
    let device = tokio::time::timeout(Duration::from_secs(30), device_task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();

    let wifi: Vec<&ComponentChange> = device.changes.iter().filter(|c| matches!(c, ComponentChange::Added(n) | ComponentChange::Updated(n) | ComponentChange::Deleted(n) if n == "wifi")).collect();
    assert_eq!(
        wifi,
        [
            &ComponentChange::Added("wifi".into()),
            &ComponentChange::Updated("wifi".into()),
            &ComponentChange::Deleted("wifi".into())
        ]
    );
    let twin = service.get_twin("MyTwinDevice").await.unwrap();
    let reported = &twin["properties"]["reported"];
    assert_eq!(reported["lastPatchReceivedId"], "Delete WiFi component");
    assert_eq!(reported["firmwareVersion"], "1.2.1");
    assert_eq!(reported["fanOn"], "false");
    assert_eq!(reported["minTemperature"], "68");
    assert_eq!(reported["maxTemperature"], "92");
    assert_eq!(
        twin["properties"]["desired"]["components"].get("wifi"),
        None
    );
}
