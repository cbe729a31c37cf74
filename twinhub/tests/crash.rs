//! Crash safety: every write the hub acknowledged is still there after `kill -9`.
//!
//! Each round starts `twinhub serve` on free loopback ports, runs concurrent
//! service writers patching desired properties, kills the hub with SIGKILL at a
//! random moment, restarts it on the same data directory and checks that every
//! acknowledged write is present with its version, that no desired `$version` was
//! handed out twice, and that the database passes SQLite's integrity check.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use rand::Rng;
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use twinhub_sdk::ServiceClient;
use twinhub_store::Store;

const DEVICES: usize = 16;
const WRITERS: usize = 12;
const ROUNDS: usize = 4;

/// Kills the hub when the test ends, however it ends.
struct HubProcess(Child);

impl Drop for HubProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start(data: &Path, https: u16, mqtts: u16) -> HubProcess {
    let child = Command::new(env!("CARGO_BIN_EXE_twinhub"))
        .args([
            "serve",
            "--bind",
            "127.0.0.1",
            "--https-port",
            &https.to_string(),
            "--mqtts-port",
            &mqtts.to_string(),
        ])
        .arg("--data-dir")
        .arg(data)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start twinhub");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", https)).is_err() {
        assert!(Instant::now() < deadline, "hub did not start listening");
        std::thread::sleep(Duration::from_millis(50));
    }
    HubProcess(child)
}

fn client(data: &Path, https: u16) -> ServiceClient {
    let hub: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data.join("hub.json")).unwrap()).unwrap();
    let owner = hub["policies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "iothubowner")
        .unwrap();
    let cs = format!(
        "HostName=localhost;SharedAccessKeyName=iothubowner;SharedAccessKey={}",
        owner["primaryKey"].as_str().unwrap()
    );
    let ca = std::fs::read(data.join("ca.pem")).unwrap();
    ServiceClient::from_connection_string(&cs, Some(&ca), Some(https)).unwrap()
}

/// One acknowledged desired write: writer `w` set `w{w}` to `seq` on `device`,
/// and the hub answered with desired `$version`.
#[derive(Debug, Clone)]
struct Ack {
    device: String,
    key: String,
    seq: i64,
    version: i64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (https, mqtts) = (free_port(), free_port());
    let mut total_acks = 0;
    let mut seq_base = 0i64;
    {
        let _hub = start(&data, https, mqtts);
        let c = client(&data, https);
        for d in 0..DEVICES {
            c.create_device(&format!("crash-{d}"), &json!({}))
                .await
                .unwrap();
        }
    }
    for round in 0..ROUNDS {
        let hub = start(&data, https, mqtts);
        let c = client(&data, https);
        let acks: Arc<Mutex<Vec<Ack>>> = Arc::default();
        let mut writers = Vec::new();
        for w in 0..WRITERS {
            let c = c.clone();
            let acks = acks.clone();
            writers.push(tokio::spawn(async move {
                for i in 1.. {
                    let seq = seq_base + i;
                    let device = format!("crash-{}", (w + i as usize) % DEVICES);
                    let key = format!("w{w}");
                    let patch = json!({"properties": {"desired": { key.clone(): seq }}});
                    match c.update_twin(&device, &patch, None).await {
                        Ok(twin) => {
                            let version =
                                twin["properties"]["desired"]["$version"].as_i64().unwrap();
                            acks.lock().unwrap().push(Ack {
                                device,
                                key,
                                seq,
                                version,
                            });
                        }
                        Err(_) => break,
                    }
                }
            }));
        }
        let run_for = Duration::from_millis(rand::thread_rng().gen_range(300..1500));
        tokio::time::sleep(run_for).await;
        drop(hub); // SIGKILL
        for w in writers {
            w.await.unwrap();
        }
        seq_base += 1_000_000;
        let acks = acks.lock().unwrap().clone();
        assert!(!acks.is_empty(), "round {round}: no write was acknowledged");
        total_acks += acks.len();

        // Integrity first, on the files as the crash left them.
        let mut store = twinhub_store::SqliteStore::open(&data.join("twinhub.db")).unwrap();
        store.check_integrity().unwrap();
        drop(store);

        let _hub = start(&data, https, mqtts);
        let c = client(&data, https);
        let mut seen_versions: HashMap<&str, HashSet<i64>> = HashMap::new();
        let mut twins = HashMap::new();
        for d in 0..DEVICES {
            let id = format!("crash-{d}");
            let twin = c.get_twin(&id).await.unwrap();
            twins.insert(id, twin);
        }
        for ack in &acks {
            assert!(
                seen_versions
                    .entry(&ack.device)
                    .or_default()
                    .insert(ack.version),
                "round {round}: desired $version {} of {} acknowledged twice",
                ack.version,
                ack.device
            );
            let desired = &twins[&ack.device]["properties"]["desired"];
            let stored = desired[&ack.key].as_i64().unwrap_or(i64::MIN);
            // Writers only ever raise their own key, so the stored value is at
            // least the acknowledged one.
            assert!(
                stored >= ack.seq,
                "round {round}: lost {ack:?}; stored {stored}"
            );
            assert!(
                desired["$version"].as_i64().unwrap() >= ack.version,
                "round {round}: version went back for {ack:?}"
            );
            let meta_version = desired["$metadata"][&ack.key]["$lastUpdatedVersion"]
                .as_i64()
                .unwrap();
            assert!(meta_version >= ack.version || stored > ack.seq);
        }
    }
    eprintln!("{ROUNDS} kill -9 rounds, {total_acks} acknowledged writes, none lost");
}
