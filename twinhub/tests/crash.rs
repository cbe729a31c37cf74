//! Crash safety: every write the hub acknowledged is still there after `kill -9`.
//!
//! Each round starts `twinhub serve` on the same data directory, runs a few
//! hundred devices sending reported patches over MQTT/TLS and concurrent service
//! writers patching desired properties over HTTPS, kills the hub with SIGKILL at a
//! random moment, checks SQLite's integrity on the files the crash left, restarts
//! the hub and checks that every acknowledged write (every MQTT `204` and every
//! HTTP `200`) is present with its version, and that no version was handed out
//! twice.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use rand::Rng;
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use twinhub_sdk::{DeviceClient, DeviceOptions, ServiceClient};
use twinhub_store::Store;

const DEVICES: usize = 200;
const WRITERS: usize = 8;
const ROUNDS: usize = 4;

/// One acknowledged write: `key` set to `seq` on `device`, answered with `version`
/// (desired `$version` for service writes, reported `$version` for device writes).
#[derive(Debug, Clone)]
struct Ack {
    device: String,
    section: &'static str,
    key: String,
    seq: i64,
    version: i64,
}

type Acks = Arc<Mutex<Vec<Ack>>>;

fn device_id(d: usize) -> String {
    format!("crash-{d}")
}

async fn create_devices(service: &ServiceClient) -> Vec<String> {
    let mut keys = Vec::new();
    for d in 0..DEVICES {
        let device = service
            .create_device(&device_id(d), &json!({}))
            .await
            .unwrap();
        keys.push(
            device["authentication"]["symmetricKey"]["primaryKey"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    keys
}

fn spawn_service_writers(
    service: &ServiceClient,
    acks: &Acks,
    seq_base: i64,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..WRITERS)
        .map(|w| {
            let (c, acks) = (service.clone(), acks.clone());
            tokio::spawn(async move {
                for i in 1.. {
                    let seq = seq_base + i;
                    let device = device_id((w * 31 + i as usize) % DEVICES);
                    let key = format!("w{w}");
                    let patch = json!({"properties": {"desired": { key.clone(): seq }}});
                    let Ok(twin) = c.update_twin(&device, &patch, None).await else {
                        break;
                    };
                    let version = twin["properties"]["desired"]["$version"].as_i64().unwrap();
                    acks.lock().unwrap().push(Ack {
                        device,
                        section: "desired",
                        key,
                        seq,
                        version,
                    });
                }
            })
        })
        .collect()
}

async fn spawn_devices(
    hub: &common::Hub,
    keys: &[String],
    acks: &Acks,
    seq_base: i64,
) -> Vec<tokio::task::JoinHandle<()>> {
    let options = DeviceOptions {
        ca_pem: Some(hub.ca_pem()),
        port: hub.mqtts_port,
        ..DeviceOptions::default()
    };
    let mut tasks = Vec::new();
    for (d, key) in keys.iter().enumerate() {
        let cs = format!(
            "HostName=localhost;DeviceId={};SharedAccessKey={key}",
            device_id(d)
        );
        let (client, _updates) = DeviceClient::connect(&cs, options.clone()).await.unwrap();
        let acks = acks.clone();
        tasks.push(tokio::spawn(async move {
            let _updates = _updates;
            for i in 1.. {
                let seq = seq_base + i;
                let Ok(version) = client.patch_reported(&json!({ "seq": seq })).await else {
                    break;
                };
                acks.lock().unwrap().push(Ack {
                    device: device_id(d),
                    section: "reported",
                    key: "seq".into(),
                    seq,
                    version,
                });
            }
        }));
    }
    tasks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let hub = common::Hub::start_in(&data, 0, 0);
    let (https, mqtts) = (hub.https_port, hub.mqtts_port);
    let keys = create_devices(&hub.service_client("iothubowner")).await;
    drop(hub);

    let (mut total_desired, mut total_reported) = (0, 0);
    for round in 0..ROUNDS {
        let seq_base = (round as i64 + 1) * 1_000_000;
        let mut hub = common::Hub::start_in(&data, https, mqtts);
        let acks: Acks = Arc::default();
        let mut tasks = spawn_devices(&hub, &keys, &acks, seq_base).await;
        tasks.extend(spawn_service_writers(
            &hub.service_client("iothubowner"),
            &acks,
            seq_base,
        ));
        tokio::time::sleep(Duration::from_millis(
            rand::thread_rng().gen_range(300..1500),
        ))
        .await;
        hub.kill();
        // Requests in flight at the kill were never acknowledged; stop the clients.
        for task in &tasks {
            task.abort();
        }
        let acks = acks.lock().unwrap().clone();
        let count = |s: &str| acks.iter().filter(|a| a.section == s).count();
        assert!(
            count("desired") > 0 && count("reported") > 0,
            "round {round}: too few writes acknowledged"
        );
        total_desired += count("desired");
        total_reported += count("reported");

        let mut store = twinhub_store::SqliteStore::open(&data.join("twinhub.db")).unwrap();
        store.check_integrity().unwrap();
        drop(store);

        let hub = common::Hub::start_in(&data, https, mqtts);
        let service = hub.service_client("iothubowner");
        let mut twins = HashMap::new();
        for d in 0..DEVICES {
            twins.insert(device_id(d), service.get_twin(&device_id(d)).await.unwrap());
        }
        let mut versions: HashMap<(&str, &str), HashSet<i64>> = HashMap::new();
        for ack in &acks {
            assert!(
                versions
                    .entry((&ack.device, ack.section))
                    .or_default()
                    .insert(ack.version),
                "round {round}: {} $version {} of {} acknowledged twice",
                ack.section,
                ack.version,
                ack.device
            );
            let section = &twins[&ack.device]["properties"][ack.section];
            let stored = section[&ack.key].as_i64().unwrap_or(i64::MIN);
            // Each writer only raises its own key, so what is stored is at least
            // what was acknowledged.
            assert!(
                stored >= ack.seq,
                "round {round}: lost {ack:?}, stored {stored}"
            );
            assert!(
                section["$version"].as_i64().unwrap() >= ack.version,
                "round {round}: version went back for {ack:?}"
            );
        }
        drop(hub);
    }
    eprintln!("{ROUNDS} kill -9 rounds: {total_reported} acknowledged reported patches (MQTT) and {total_desired} desired patches (HTTPS), none lost");
}
