//! Micro-benchmarks of the core's hot pure paths: what every twin write, twin read
//! and authenticated request runs.
//!
//! `cargo bench -p twinhub-core` runs them; CI only compiles them (`--no-run`).

#![allow(clippy::expect_used)]

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion};
use rand::SeedableRng;
use serde_json::{json, Value};
use twinhub_core::identity::DeviceIdentity;
use twinhub_core::sas::{generate_token, SasToken};
use twinhub_core::twin::Twin;
use twinhub_core::{Limits, Timestamp};

const KEY: &str = "mWO5BwVcGazLPWaM72g972iq7Yqk06qHMS+RRg1Z4Ss=";

fn now(step: i64) -> Timestamp {
    Timestamp::from_unix_nanos(1_750_000_000_000_000_000 + step)
}

/// A twin shaped like a fleet device's: a few tags, a small desired section and a
/// reported section of a dozen telemetry-ish values.
fn fleet_twin() -> (DeviceIdentity, Twin) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let identity =
        DeviceIdentity::create("sensor-000042", &json!({}), &mut rng).expect("valid identity");
    let mut twin = Twin::new(now(0));
    let limits = Limits::default();
    twin.apply_service_patch(
        &json!({
            "tags": {"region": "r17", "site": {"building": 4, "floor": 3}, "model": "th-200"},
            "properties": {"desired": {"telemetryInterval": 30, "fw": {"version": "1.4.2", "url": "https://example.invalid/fw.bin"}}}
        }),
        now(1),
        &limits,
    )
    .expect("valid service patch");
    twin.apply_reported_patch(&reported_patch(0), None, now(2), &limits)
        .expect("valid reported patch");
    (identity, twin)
}

fn reported_patch(i: i64) -> Value {
    json!({
        "temperature": 20.5 + (i % 10) as f64,
        "humidity": 40 + i % 30,
        "battery": {"level": 90 - i % 50, "charging": i % 2 == 0},
        "fw": {"version": "1.4.2", "state": "current"},
        "connectivity": {"type": "cellular", "rssi": -70 - i % 20},
        "uptime": 1000 + i
    })
}

fn patches(c: &mut Criterion) {
    let limits = Limits::default();
    let (_, twin) = fleet_twin();
    let desired =
        json!({"properties": {"desired": {"telemetryInterval": 60, "fw": {"version": "1.5.0"}}}});
    c.bench_function("twin/apply_service_patch (desired, 2 keys)", |b| {
        b.iter_batched_ref(
            || twin.clone(),
            |t| {
                t.apply_service_patch(black_box(&desired), now(3), &limits)
                    .expect("valid")
            },
            BatchSize::SmallInput,
        )
    });
    let reported = reported_patch(3);
    c.bench_function("twin/apply_reported_patch (6 keys, nested)", |b| {
        b.iter_batched_ref(
            || twin.clone(),
            |t| {
                t.apply_reported_patch(black_box(&reported), None, now(3), &limits)
                    .expect("valid")
            },
            BatchSize::SmallInput,
        )
    });
    c.bench_function("twin/clone (baseline of the two above)", |b| {
        b.iter(|| black_box(&twin).clone())
    });
}

fn render(c: &mut Criterion) {
    let (identity, twin) = fleet_twin();
    c.bench_function("twin/to_json (with $metadata)", |b| {
        b.iter(|| black_box(&twin).to_json(&identity))
    });
    c.bench_function("twin/to_json_without_metadata", |b| {
        b.iter(|| black_box(&twin).to_json_without_metadata(&identity))
    });
    c.bench_function("twin/to_json + serde_json::to_vec (REST body)", |b| {
        b.iter(|| serde_json::to_vec(&black_box(&twin).to_json(&identity)).expect("serialisable"))
    });
    c.bench_function("twin/properties_for_device (MQTT GET body)", |b| {
        b.iter(|| black_box(&twin).properties_for_device())
    });
}

fn sas(c: &mut Criterion) {
    let token = generate_token("localhost/devices/sensor-000042", KEY, None, 4_000_000_000)
        .expect("base64 key");
    c.bench_function(
        "sas/parse + check_scope_and_expiry + verify_signature",
        |b| {
            b.iter(|| {
                let t = SasToken::parse(black_box(&token)).expect("valid token");
                t.check_scope_and_expiry("localhost/devices/sensor-000042", 1_750_000_000)
                    .expect("in scope");
                t.verify_signature([KEY]).expect("valid signature");
            })
        },
    );
    c.bench_function("sas/generate_token", |b| {
        b.iter(|| {
            generate_token(
                black_box("localhost/devices/sensor-000042"),
                KEY,
                None,
                4_000_000_000,
            )
        })
    });
}

criterion_group!(benches, patches, render, sas);
criterion_main!(benches);
