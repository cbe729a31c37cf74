//! The command line against a live hub: `twinhub device-identity create`,
//! `twinhub device-twin update --tags`, `twinhub query -q ... [--top N]` (spec
//! iothub-query.md §2-§4, §7.7, §7.9) and the two connection-string commands of
//! the device-twin tutorial.
//!
//! Each test runs its own `twinhub serve --bind 127.0.0.1` on free ports in a
//! temporary data directory; the CLI finds the hub's port, owner key and CA in
//! that directory's `hub.json` and `ca.pem`, as it does for a local hub.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use twinhub_sdk::{DeviceClient, DeviceOptions};

/// Runs `twinhub --data-dir <data> <args>`, ignoring any TWINHUB_* variables of
/// the caller's environment.
fn twinhub(data: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_twinhub"))
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .env_remove("TWINHUB_DATA_DIR")
        .env_remove("TWINHUB_LOGIN")
        .stdin(Stdio::null())
        .output()
        .expect("run twinhub")
}

fn describe(args: &[&str], out: &Output) -> String {
    format!(
        "`twinhub {}` ({}):\n--- stdout\n{}\n--- stderr\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs a command that must succeed and returns its standard output.
fn ok(data: &Path, args: &[&str]) -> String {
    let out = twinhub(data, args);
    assert!(out.status.success(), "{}", describe(args, &out));
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// Runs a command that must succeed and print one JSON document.
fn ok_json(data: &Path, args: &[&str]) -> Value {
    let text = ok(data, args);
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("`twinhub {}` printed no JSON ({e}): {text}", args.join(" ")))
}

/// `twinhub query -q <text> [extra...]`: the printed JSON array.
fn query(data: &Path, text: &str, extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["query", "-q", text];
    args.extend_from_slice(extra);
    match ok_json(data, &args) {
        Value::Array(rows) => rows,
        other => panic!("`twinhub query -q {text:?}` must print a JSON array, got {other}"),
    }
}

/// The `deviceId`s of `rows`, checking that none repeats.
fn ids(rows: &[Value]) -> BTreeSet<String> {
    let mut set = BTreeSet::new();
    for row in rows {
        let id = row["deviceId"]
            .as_str()
            .unwrap_or_else(|| panic!("row without a deviceId: {row}"));
        assert!(set.insert(id.to_owned()), "{id} returned twice in {rows:?}");
    }
    set
}

fn set(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|s| (*s).to_owned()).collect()
}

fn create_device(data: &Path, id: &str) -> Value {
    let device = ok_json(data, &["device-identity", "create", "--device-id", id]);
    assert_eq!(device["deviceId"], id, "created device: {device}");
    device
}

fn update_tags(data: &Path, id: &str, tags: &Value) {
    let twin = ok_json(
        data,
        &[
            "device-twin",
            "update",
            "--device-id",
            id,
            "--tags",
            &tags.to_string(),
        ],
    );
    assert_eq!(twin["deviceId"], id, "updated twin: {twin}");
    for (k, v) in tags.as_object().unwrap() {
        assert_eq!(&twin["tags"][k], v, "tag {k} after update: {twin}");
    }
}

#[test]
fn query_prints_rows_limits_with_top_and_reports_errors() {
    let hub = common::Hub::start();
    let data = hub.data.as_path();

    // tags.x: 1 on three devices, 2 on one, the string "1" on one (no coercion,
    // §7.2), and nothing on the last.
    let tagged = [
        ("cq-a", json!({"x": 1, "region": "EU"})),
        ("cq-b", json!({"x": 1, "region": "US"})),
        ("cq-c", json!({"x": 1})),
        ("cq-d", json!({"x": 2, "region": "EU"})),
        ("cq-e", json!({"x": "1"})),
    ];
    for (id, tags) in &tagged {
        create_device(data, id);
        update_tags(data, id, tags);
    }
    create_device(data, "cq-f");
    let x1 = set(&["cq-a", "cq-b", "cq-c"]);

    // Projection: flat rows holding only the projected column.
    let rows = query(data, "SELECT deviceId FROM devices WHERE tags.x = 1", &[]);
    assert_eq!(ids(&rows), x1, "rows: {rows:?}");
    for row in &rows {
        assert_eq!(row.as_object().unwrap().len(), 1, "only deviceId: {row}");
    }

    // SELECT *: whole twins.
    let twins = query(data, "select * from devices where tags.x = 1", &[]);
    assert_eq!(ids(&twins), x1);
    for twin in &twins {
        assert_eq!(twin["tags"]["x"], 1, "{twin}");
        assert!(
            twin["properties"]["desired"]["$version"].is_number(),
            "desired $version in {twin}"
        );
        assert!(twin["etag"].is_string(), "etag in {twin}");
    }

    // Undefined values are left out of projected rows (§7.7).
    let rows = query(
        data,
        "SELECT deviceId, tags.region FROM devices WHERE tags.x = 1",
        &[],
    );
    let mut by_id: Vec<(String, Option<String>)> = rows
        .iter()
        .map(|r| {
            assert!(r.as_object().unwrap().len() <= 2, "{r}");
            (
                r["deviceId"].as_str().unwrap().to_owned(),
                r.get("region").map(|v| v.as_str().unwrap().to_owned()),
            )
        })
        .collect();
    by_id.sort();
    assert_eq!(
        by_id,
        vec![
            ("cq-a".into(), Some("EU".into())),
            ("cq-b".into(), Some("US".into())),
            ("cq-c".into(), None)
        ]
    );

    // A properties section projected whole keeps its `$metadata` (§7.7), as in
    // `device-twin show`.
    let shown = ok_json(data, &["device-twin", "show", "--device-id", "cq-a"]);
    let rows = query(
        data,
        "SELECT properties.desired AS d, Properties FROM devices WHERE deviceId = 'cq-a'",
        &[],
    );
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["d"], shown["properties"]["desired"], "{rows:?}");
    assert_eq!(rows[0]["properties"], shown["properties"], "{rows:?}");
    assert!(
        rows[0]["d"]["$metadata"]["$lastUpdated"].is_string(),
        "{rows:?}"
    );

    // Aggregates.
    assert_eq!(
        query(data, "SELECT COUNT() AS n FROM devices", &[]),
        vec![json!({"n": 6})]
    );
    let mut groups = query(
        data,
        "SELECT tags.x AS x, COUNT() AS n FROM devices WHERE IS_NUMBER(tags.x) GROUP BY tags.x",
        &[],
    );
    groups.sort_by_key(|g| g["x"].as_i64());
    assert_eq!(
        groups,
        vec![json!({"x": 1, "n": 3}), json!({"x": 2, "n": 1})]
    );

    // --top limits the rows printed; --top 0 prints an empty array.
    for top in [0usize, 1, 2, 3, 10] {
        let rows = query(
            data,
            "SELECT deviceId FROM devices WHERE tags.x = 1",
            &["--top", &top.to_string()],
        );
        let got = ids(&rows);
        assert_eq!(got.len(), top.min(3), "--top {top}: {rows:?}");
        assert!(got.is_subset(&x1), "--top {top}: {rows:?}");
    }
    // TOP in the query text does the same (§7.9).
    let rows = query(
        data,
        "SELECT TOP 2 deviceId FROM devices WHERE tags.x = 1",
        &[],
    );
    assert_eq!(ids(&rows).len(), 2, "{rows:?}");

    // Nothing matches: an empty array, not an error.
    assert_eq!(
        query(data, "SELECT deviceId FROM devices WHERE tags.x = 42", &[]),
        Vec::<Value>::new()
    );

    // Bad queries: non-zero exit, nothing on stdout, the hub's 400 on stderr.
    for bad in [
        "SELECT * FORM devices",
        "SELECT deviceId FROM devices WHERE tags.x =",
        "SELECT * FROM devices WHERE STARTS_WITH(deviceId, 'cq-')",
        "SELECT * FROM devices.jobs",
    ] {
        let args = ["query", "-q", bad];
        let out = twinhub(data, &args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{}", describe(&args, &out));
        assert!(out.stdout.is_empty(), "{}", describe(&args, &out));
        assert!(
            stderr.starts_with("twinhub: ")
                && stderr.contains("400")
                && stderr.contains("ArgumentInvalid"),
            "{}",
            describe(&args, &out)
        );
        assert_eq!(stderr.lines().count(), 1, "{}", describe(&args, &out));
    }
}

/// Without `--top` the CLI follows continuation tokens over pages of 100; with
/// `--top` it stops at N rows.
#[test]
fn query_follows_pages() {
    const N: usize = 230;
    let hub = common::Hub::start();
    let data = hub.data.as_path();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let service = hub.service_client("iothubowner");
    rt.block_on(async {
        for i in 0..N {
            let id = format!("page-{i:03}");
            service.create_device(&id, &json!({})).await.unwrap();
            if i % 2 == 0 {
                service
                    .update_twin(&id, &json!({"tags": {"even": true}}), None)
                    .await
                    .unwrap();
            }
        }
    });
    let all: BTreeSet<String> = (0..N).map(|i| format!("page-{i:03}")).collect();
    let even: BTreeSet<String> = (0..N).step_by(2).map(|i| format!("page-{i:03}")).collect();

    let rows = query(
        data,
        "SELECT deviceId FROM devices WHERE STARTSWITH(deviceId, 'page-')",
        &[],
    );
    assert_eq!(ids(&rows), all);
    let rows = query(data, "SELECT * FROM devices WHERE tags.even = true", &[]);
    assert_eq!(ids(&rows), even);
    let rows = query(data, "SELECT * FROM devices", &["--top", "150"]);
    let got = ids(&rows);
    assert_eq!(got.len(), 150);
    assert!(got.is_subset(&all));
    assert_eq!(
        query(
            data,
            "SELECT COUNT() AS n FROM devices WHERE tags.even = true",
            &[]
        ),
        vec![json!({"n": N.div_ceil(2)})]
    );
}

/// The tutorial's two connection strings: one line each, in IoT Hub's format,
/// and usable (the device one connects over MQTT, the service one runs a query
/// through `--login`).
#[test]
fn connection_strings_print_one_line_each() {
    let hub = common::Hub::start();
    let data = hub.data.as_path();
    let device = create_device(data, "cs-dev");
    let primary = device["authentication"]["symmetricKey"]["primaryKey"]
        .as_str()
        .unwrap()
        .to_owned();

    let args = [
        "device-identity",
        "connection-string",
        "show",
        "--device-id",
        "cs-dev",
    ];
    let out = ok(data, &args);
    assert_eq!(out.lines().count(), 1, "one line: {out:?}");
    assert!(out.ends_with('\n'), "{out:?}");
    let device_cs = out.trim_end().to_owned();
    assert_eq!(
        device_cs,
        format!("HostName=localhost;DeviceId=cs-dev;SharedAccessKey={primary}")
    );

    let args = ["connection-string", "show", "--policy-name", "service"];
    let out = ok(data, &args);
    assert_eq!(out.lines().count(), 1, "one line: {out:?}");
    let service_cs = out.trim_end().to_owned();
    assert_eq!(
        service_cs,
        format!(
            "HostName=localhost;SharedAccessKeyName=service;SharedAccessKey={}",
            hub.policy_key("service")
        )
    );
    let (_, key) = service_cs.split_once(";SharedAccessKey=").unwrap();
    assert_eq!(key.len(), 44, "base64 of 32 bytes: {key}");

    // The device connection string works: the device reports over MQTT/TLS and
    // a query sees it at once (read-your-writes, spec §8).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let options = DeviceOptions {
            ca_pem: Some(hub.ca_pem()),
            port: hub.mqtts_port,
            ..DeviceOptions::default()
        };
        let (client, _updates) = DeviceClient::connect(&device_cs, options).await.unwrap();
        client
            .patch_reported(&json!({"hello": "cli"}))
            .await
            .unwrap();
        client.disconnect().await.unwrap();
    });

    // The service connection string works with --login (service policy:
    // ServiceConnect may query, §1).
    let ca = data.join("ca.pem");
    let port = hub.https_port.to_string();
    let args = [
        "--login",
        &service_cs,
        "--ca",
        ca.to_str().unwrap(),
        "--port",
        &port,
        "query",
        "-q",
        "SELECT deviceId, properties.reported.hello AS hello FROM devices WHERE properties.reported.hello = 'cli'",
    ];
    assert_eq!(
        ok_json(data, &args),
        json!([{"deviceId": "cs-dev", "hello": "cli"}])
    );
}

/// `GET /devices` with a hand-given `Authorization` header: the status.
fn list_devices_status(hub: &common::Hub, authorization: &str) -> u16 {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let ca = reqwest::Certificate::from_pem(&hub.ca_pem()).unwrap();
        let http = reqwest::Client::builder()
            .add_root_certificate(ca)
            .build()
            .unwrap();
        http.get(format!(
            "https://localhost:{}/devices?api-version=2021-04-12",
            hub.https_port
        ))
        .header("Authorization", authorization)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
    })
}

#[test]
fn renew_key_and_generate_sas_token() {
    let hub = common::Hub::start();
    let data = hub.data.as_path();
    let created = create_device(data, "keyed");
    let key = |device: &Value, which: &str| {
        device["authentication"]["symmetricKey"][which]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (p0, s0) = (key(&created, "primaryKey"), key(&created, "secondaryKey"));

    // A device token signs with the device's current primary key, for its scope.
    let sas = |args: &[&str]| {
        let mut all = vec!["generate-sas-token"];
        all.extend_from_slice(args);
        let printed = ok_json(data, &all);
        twinhub_core::sas::SasToken::parse(printed["sas"].as_str().unwrap()).unwrap()
    };
    let device_token = sas(&["-d", "keyed", "--du", "120"]);
    assert_eq!(device_token.resource, "localhost/devices/keyed");
    assert_eq!(device_token.key_name, None);
    assert!(device_token.verify_signature([p0.as_str()]).is_ok());
    assert!(device_token.verify_signature([s0.as_str()]).is_err());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!((now + 110..=now + 130).contains(&device_token.expiry));

    // renew-key: a new primary, the secondary kept; swap exchanges them.
    let renew = |kind: &str| {
        ok_json(
            data,
            &[
                "device-identity",
                "renew-key",
                "-d",
                "keyed",
                "--key-type",
                kind,
            ],
        )
    };
    let renewed = renew("primary");
    let p1 = key(&renewed, "primaryKey");
    assert_ne!(p1, p0);
    assert_eq!(key(&renewed, "secondaryKey"), s0);
    let swapped = renew("swap");
    assert_eq!(
        (key(&swapped, "primaryKey"), key(&swapped, "secondaryKey")),
        (s0.clone(), p1.clone())
    );
    assert!(sas(&["-d", "keyed"])
        .verify_signature([s0.as_str()])
        .is_ok());
    // A stale --etag is refused, not overwritten.
    let stale = created["etag"].as_str().unwrap();
    let out = twinhub(
        data,
        &[
            "device-identity",
            "renew-key",
            "-d",
            "keyed",
            "--key-type",
            "primary",
            "--etag",
            stale,
        ],
    );
    assert!(!out.status.success(), "{}", describe(&[], &out));

    // Policy tokens work against the hub for what the policy grants.
    let owner = ok_json(data, &["generate-sas-token"]);
    assert_eq!(
        list_devices_status(&hub, owner["sas"].as_str().unwrap()),
        200
    );
    let service = ok_json(
        data,
        &[
            "generate-sas-token",
            "-n",
            "service",
            "--key-type",
            "secondary",
        ],
    );
    let service = service["sas"].as_str().unwrap();
    assert!(service.contains("skn=service"));
    assert_eq!(
        list_devices_status(&hub, service),
        401,
        "service lacks RegistryRead"
    );
    let out = twinhub(data, &["generate-sas-token", "-n", "nope"]);
    assert!(!out.status.success());
}
