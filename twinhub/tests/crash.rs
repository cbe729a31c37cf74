//! Crash safety: every write the hub acknowledged is still there after `kill -9`.
//!
//! Each round starts `twinhub serve` on the same data directory, runs a few
//! hundred devices sending reported patches over MQTT/TLS and concurrent service
//! writers patching desired properties over HTTPS, kills the hub with SIGKILL at a
//! random moment, checks SQLite's integrity on the files the crash left, restarts
//! the hub and checks that every acknowledged write (every MQTT `204` and every
//! HTTP `200`) is present with its version, that no version was handed out twice,
//! and that versions have no gaps: a device's acknowledged reported `$version`s
//! are consecutive, continue from what the previous restart read back, and the
//! stored one is the last acknowledged or, if a patch was in flight at the kill,
//! the next one with that patch's value.
//!
//! `TWINHUB_CRASH_ROUNDS` sets the number of kill -9 rounds (default 4).

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
const DEFAULT_ROUNDS: usize = 4;

fn rounds() -> usize {
    std::env::var("TWINHUB_CRASH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(DEFAULT_ROUNDS)
}

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

async fn read_twins(service: &ServiceClient) -> HashMap<String, serde_json::Value> {
    let mut twins = HashMap::new();
    for d in 0..DEVICES {
        twins.insert(device_id(d), service.get_twin(&device_id(d)).await.unwrap());
    }
    twins
}

fn reported(twin: &serde_json::Value) -> (i64, Option<i64>) {
    let section = &twin["properties"]["reported"];
    (
        section["$version"].as_i64().unwrap(),
        section["seq"].as_i64(),
    )
}

/// Each device sends its reported patches one at a time, so the versions it was
/// acknowledged in a round are exactly `v+1, v+2, ...` where `v` is what the hub
/// read back after the previous crash, and what the hub holds now is the last of
/// them, or the next one if the patch in flight at the kill was made durable
/// (then with that patch's `seq`, one past the last acknowledged).
fn check_versions_have_no_gaps(
    round: usize,
    acks: &[Ack],
    before: &HashMap<String, serde_json::Value>,
    after: &HashMap<String, serde_json::Value>,
) {
    for (device, twin) in after {
        let (start, start_seq) = reported(&before[device]);
        let mine: Vec<&Ack> = acks
            .iter()
            .filter(|a| a.section == "reported" && &a.device == device)
            .collect();
        for (i, ack) in mine.iter().enumerate() {
            assert_eq!(
                ack.version,
                start + 1 + i as i64,
                "round {round}: {device}'s reported versions skip or repeat: {mine:?} after {start}"
            );
        }
        let (last_version, last_seq) = mine
            .last()
            .map_or((start, start_seq), |a| (a.version, Some(a.seq)));
        let (stored, stored_seq) = reported(twin);
        let in_flight_seq = mine.last().map_or(
            // Nothing acknowledged this round: a first patch may still have landed.
            Some(acks_seq_base(round) + 1),
            |a| Some(a.seq + 1),
        );
        assert!(
            (stored, stored_seq) == (last_version, last_seq)
                || (stored, stored_seq) == (last_version + 1, in_flight_seq),
            "round {round}: {device} holds reported $version {stored} seq {stored_seq:?}; \
             last acknowledged {last_version} seq {last_seq:?}"
        );

        // Desired patches come from several writers at once: every acknowledged
        // one raised the version by one, and at most one per writer was in flight.
        let desired_version =
            |t: &serde_json::Value| t["properties"]["desired"]["$version"].as_i64().unwrap();
        let grew = desired_version(twin) - desired_version(&before[device]);
        let acked = acks
            .iter()
            .filter(|a| a.section == "desired" && &a.device == device)
            .count() as i64;
        assert!(
            (acked..=acked + WRITERS as i64).contains(&grew),
            "round {round}: {device}'s desired $version grew by {grew} for {acked} acknowledged patches"
        );
    }
}

fn acks_seq_base(round: usize) -> i64 {
    (round as i64 + 1) * 1_000_000
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let hub = common::Hub::start_in(&data, 0, 0);
    let (https, mqtts) = (hub.https_port, hub.mqtts_port);
    let service = hub.service_client("iothubowner");
    let keys = create_devices(&service).await;
    let mut twins = read_twins(&service).await;
    drop(hub);

    let rounds = rounds();
    let (mut total_desired, mut total_reported) = (0, 0);
    for round in 0..rounds {
        let seq_base = acks_seq_base(round);
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
        let before = std::mem::replace(
            &mut twins,
            read_twins(&hub.service_client("iothubowner")).await,
        );
        check_versions_have_no_gaps(round, &acks, &before, &twins);
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
    eprintln!("{rounds} kill -9 rounds: {total_reported} acknowledged reported patches (MQTT) and {total_desired} desired patches (HTTPS), none lost");
}
