//! The simulated fleet: device ids, keys, twin contents, and creating the devices
//! on a hub through the bulk registry API (`POST /devices`, at most 100 a request).
//!
//! Everything is a pure function of the device's index, so any process (the
//! loader, the load generator, a later run) derives the same ids and keys without
//! storing them.

use crate::hub::HubAccess;
use indicatif::{ProgressBar, ProgressStyle};
use rand::SeedableRng;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use twinhub_core::identity::generate_key;

/// Most devices in one bulk request (IoT Hub's limit, enforced by the hub).
pub(crate) const BULK_MAX: usize = 100;

/// Regions device twins are spread over (`tags.region` = `r0`..`r49`).
pub(crate) const REGIONS: usize = 50;

/// The id of device `i`.
pub(crate) fn device_id(prefix: &str, i: usize) -> String {
    format!("{prefix}{i:07}")
}

/// The id of a device's module `k` (the bench's module fleets).
pub(crate) fn module_id(k: usize) -> String {
    format!("m{k}")
}

/// Creates modules `0..per_device` on devices `0..devices`: client `i` of a module
/// fleet is module `i % per_device` of device `i / per_device`, with client `i`'s
/// key. `parallel` requests at a time; modules that exist already are fine.
pub(crate) async fn create_modules(
    hub: &HubAccess,
    prefix: &str,
    devices: usize,
    per_device: usize,
    parallel: usize,
) -> Result<Duration, String> {
    let client = hub.http_client(parallel)?;
    let total = devices * per_device;
    let bar = progress(total, "modules");
    let started = Instant::now();
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..parallel.max(1) {
        let (client, hub, bar, next) = (client.clone(), hub.clone(), bar.clone(), next.clone());
        let prefix = prefix.to_owned();
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= total {
                    return Ok::<(), String>(());
                }
                let (d, m) = (
                    device_id(&prefix, i / per_device),
                    module_id(i % per_device),
                );
                let response = client
                    .put(format!(
                        "{}/devices/{d}/modules/{m}?api-version=2021-04-12",
                        hub.base_url()
                    ))
                    .header("Authorization", hub.owner_token()?)
                    .json(&identity_body(i))
                    .send()
                    .await
                    .map_err(|e| format!("PUT module: {e:#}"))?;
                let status = response.status();
                // 409: a rerun over the same fleet.
                if !status.is_success() && status.as_u16() != 409 {
                    let text = response.text().await.unwrap_or_default();
                    return Err(format!("PUT /devices/{d}/modules/{m}: {status}: {text}"));
                }
                bar.inc(1);
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.map_err(|e| e.to_string())??;
    }
    bar.finish_and_clear();
    Ok(started.elapsed())
}

/// Device `i`'s primary symmetric key: 32 bytes from a generator seeded by `i`.
pub(crate) fn device_key(i: usize) -> String {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x7717_b0b0_0000_0000 ^ i as u64);
    generate_key(&mut rng)
}

/// The registry body that creates device `i` with its deterministic keys.
pub(crate) fn identity_body(i: usize) -> Value {
    let key = device_key(i);
    json!({"authentication": {"type": "sas", "symmetricKey": {"primaryKey": key, "secondaryKey": key}}})
}

/// Tags and desired properties: varied so that queries have something to select.
pub(crate) fn service_patch(i: usize) -> Value {
    json!({
        "tags": {
            "region": format!("r{}", i % REGIONS),
            "site": {"building": i % 7, "floor": (i / 7) % 12},
            "model": if i % 4 == 0 { "th-100" } else { "th-200" },
        },
        "properties": {"desired": {"telemetryInterval": 30 + 30 * (i % 4), "fw": {"version": "1.4.2"}}}
    })
}

/// A reported-properties document; `seq` varies what a device reports over time.
pub(crate) fn reported_patch(i: usize, seq: u64) -> Value {
    json!({
        "battery": {"level": ((i / REGIONS) * 37 + seq as usize) % 100, "charging": i % 5 == 0},
        "connectivity": {"type": if i % 3 == 0 { "cellular" } else { "wired" }, "rssi": -50 - (i % 40) as i64},
        "fw": {"version": if i % 10 == 0 { "1.4.1" } else { "1.4.2" }},
        "temperature": 18.5 + (i % 10) as f64 + (seq % 10) as f64 / 10.0,
        "seq": seq
    })
}

/// A progress bar on stderr for `len` steps of `what`.
pub(crate) fn progress(len: usize, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix:>12} [{elapsed_precise}] {wide_bar} {pos}/{len} ({per_sec}, eta {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_prefix(what.to_owned());
    bar
}

/// Creates devices `0..count` (ids with `prefix`) on the hub with bulk requests,
/// `parallel` requests at a time; devices that already exist are fine (a rerun).
/// Returns the time taken.
pub(crate) async fn create_devices(
    hub: &HubAccess,
    prefix: &str,
    count: usize,
    parallel: usize,
) -> Result<Duration, String> {
    let client = hub.http_client(parallel)?;
    let bar = progress(count, "create");
    let started = Instant::now();
    let chunks: Vec<(usize, usize)> = (0..count)
        .step_by(BULK_MAX)
        .map(|start| (start, (start + BULK_MAX).min(count)))
        .collect();
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let chunks = std::sync::Arc::new(chunks);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..parallel.max(1) {
        let (client, hub, bar, next, chunks) = (
            client.clone(),
            hub.clone(),
            bar.clone(),
            next.clone(),
            chunks.clone(),
        );
        let prefix = prefix.to_owned();
        tasks.spawn(async move {
            loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(&(start, end)) = chunks.get(n) else {
                    return Ok::<(), String>(());
                };
                let items: Vec<Value> = (start..end)
                    .map(|i| {
                        let mut item = identity_body(i);
                        item["id"] = Value::String(device_id(&prefix, i));
                        item["importMode"] = Value::String("create".into());
                        item
                    })
                    .collect();
                let response = client
                    .post(format!("{}/devices?api-version=2021-04-12", hub.base_url()))
                    .header("Authorization", hub.owner_token()?)
                    .json(&items)
                    .send()
                    .await
                    .map_err(|e| format!("POST /devices: {e:#}"))?;
                let status = response.status();
                let body: Value = response
                    .json()
                    .await
                    .map_err(|e| format!("POST /devices: {e}"))?;
                if !status.is_success() {
                    let errors = body["errors"].as_array().cloned().unwrap_or_default();
                    // A rerun over the same fleet: the devices are there already.
                    let all_exist = !errors.is_empty()
                        && errors
                            .iter()
                            .all(|e| e["errorCode"] == "DeviceAlreadyExists");
                    if !all_exist {
                        return Err(format!("POST /devices: {status}: {body}"));
                    }
                }
                bar.inc((end - start) as u64);
            }
        });
    }
    while let Some(result) = tasks.join_next().await {
        result.map_err(|e| e.to_string())??;
    }
    bar.finish_and_clear();
    Ok(started.elapsed())
}
