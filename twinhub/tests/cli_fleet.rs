//! The command line and the Rust SDK against a live hub for modules and direct
//! methods: `twinhub module-identity`, `module-twin`, `invoke-device-method`
//! (with and without `--module-id`), the SDK's `DeviceClient::on_methods` for a
//! device and a module, and `ServiceClient::invoke_method`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use serde_json::{json, Value};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;
use twinhub_core::method::MethodRequest;
use twinhub_core::Identity;
use twinhub_sdk::{DeviceClient, DeviceOptions};

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

fn run(data: &Path, args: &[&str]) -> (bool, String, String) {
    let out = twinhub(data, args);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ok_json(data: &Path, args: &[&str]) -> Value {
    let (ok, stdout, stderr) = run(data, args);
    assert!(
        ok,
        "`twinhub {}` failed:\n{stdout}\n{stderr}",
        args.join(" ")
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "`twinhub {}` printed no JSON ({e}): {stdout}",
            args.join(" ")
        )
    })
}

#[test]
fn modules_and_methods_from_the_command_line_and_the_rust_sdk() {
    let hub = common::Hub::start();
    let data = hub.data.as_path();
    ok_json(data, &["device-identity", "create", "-d", "dev1"]);

    let created = ok_json(
        data,
        &["module-identity", "create", "-d", "dev1", "-m", "mod1"],
    );
    assert_eq!(created["moduleId"], "mod1");
    assert_eq!(created["etag"], "MQ==");
    let (ok, _, stderr) = run(
        data,
        &["module-identity", "create", "-d", "dev1", "-m", "mod1"],
    );
    assert!(!ok, "a second create must fail");
    assert!(stderr.contains("ModuleAlreadyExistsOnDevice"), "{stderr}");
    let listed = ok_json(data, &["module-identity", "list", "-d", "dev1"]);
    assert_eq!(listed.as_array().map(Vec::len), Some(1));
    let shown = ok_json(
        data,
        &["module-identity", "show", "-d", "dev1", "-m", "mod1"],
    );
    assert_eq!(shown, created);

    let twin = ok_json(
        data,
        &[
            "module-twin",
            "update",
            "-d",
            "dev1",
            "-m",
            "mod1",
            "--desired",
            r#"{"rate":3}"#,
            "--tags",
            r#"{"t":1}"#,
        ],
    );
    assert_eq!(twin["properties"]["desired"]["rate"], 3);
    assert_eq!(twin["tags"], json!({"t": 1}));
    let replaced = ok_json(
        data,
        &[
            "module-twin",
            "replace",
            "-d",
            "dev1",
            "-m",
            "mod1",
            "--json",
            r#"{"properties":{"desired":{"only":true}}}"#,
        ],
    );
    assert!(replaced.get("tags").is_none());
    let shown = ok_json(data, &["module-twin", "show", "-d", "dev1", "-m", "mod1"]);
    assert_eq!(shown["properties"]["desired"]["only"], true);

    let device_cs = {
        let (ok, out, err) = run(
            data,
            &["device-identity", "connection-string", "show", "-d", "dev1"],
        );
        assert!(ok, "{err}");
        out.trim_end().to_owned()
    };
    let module_cs = {
        let (ok, out, err) = run(
            data,
            &[
                "module-identity",
                "connection-string",
                "show",
                "-d",
                "dev1",
                "-m",
                "mod1",
            ],
        );
        assert!(ok, "{err}");
        out.trim_end().to_owned()
    };
    let key = created["authentication"]["symmetricKey"]["primaryKey"]
        .as_str()
        .unwrap();
    assert_eq!(
        module_cs,
        format!("HostName=localhost;DeviceId=dev1;ModuleId=mod1;SharedAccessKey={key}")
    );

    // Offline: the CLI reports the hub's error and fails.
    let (ok, _, stderr) = run(
        data,
        &[
            "invoke-device-method",
            "-d",
            "dev1",
            "--method-name",
            "reboot",
        ],
    );
    assert!(!ok);
    assert!(stderr.contains("DeviceNotOnline"), "{stderr}");
    let (ok, _, stderr) = run(
        data,
        &[
            "invoke-device-method",
            "-d",
            "dev1",
            "--method-name",
            "reboot",
            "--timeout",
            "4",
        ],
    );
    assert!(!ok);
    assert!(stderr.contains("responseTimeoutInSeconds"), "{stderr}");

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let options = DeviceOptions {
        ca_pem: Some(hub.ca_pem()),
        port: hub.mqtts_port,
        ..DeviceOptions::default()
    };
    let (device, module) = rt.block_on(async {
        let (device, _) = DeviceClient::connect(&device_cs, options.clone())
            .await
            .unwrap();
        device
            .on_methods(|call| (200, json!({"device": call.name, "echo": call.payload})))
            .await
            .unwrap();
        let (module, _) = DeviceClient::connect(&module_cs, options).await.unwrap();
        module
            .on_methods(|call| (201, json!({"module": call.name})))
            .await
            .unwrap();
        // The module reports through its own twin.
        assert_eq!(module.patch_reported(&json!({"m": 1})).await.unwrap(), 2);
        (device, module)
    });

    let answer = ok_json(
        data,
        &[
            "invoke-device-method",
            "-d",
            "dev1",
            "--method-name",
            "reboot",
            "--method-payload",
            r#"{"delay":2}"#,
            "--connect-timeout",
            "10",
        ],
    );
    assert_eq!(
        answer,
        json!({"status": 200, "payload": {"device": "reboot", "echo": {"delay": 2}}})
    );
    let answer = ok_json(
        data,
        &[
            "invoke-device-method",
            "-d",
            "dev1",
            "-m",
            "mod1",
            "--method-name",
            "ping",
            "--connect-timeout",
            "10",
        ],
    );
    assert_eq!(
        answer,
        json!({"status": 201, "payload": {"module": "ping"}})
    );
    let reported = ok_json(data, &["module-twin", "show", "-d", "dev1", "-m", "mod1"]);
    assert_eq!(reported["properties"]["reported"]["m"], 1);

    // The SDK's service client.
    rt.block_on(async {
        let service = hub.service_client("service");
        let mut request = MethodRequest::new("hello", json!([1, 2]));
        request.connect_timeout_secs = 10;
        let answer = service
            .invoke_method(&Identity::device("dev1"), &request)
            .await
            .unwrap();
        assert_eq!(answer.status, 200);
        assert_eq!(answer.payload["echo"], json!([1, 2]));
        let missing = service
            .invoke_method(&Identity::module("dev1", "nope"), &request)
            .await
            .unwrap_err();
        assert!(missing.to_string().contains("ModuleNotFound"), "{missing}");
        device.disconnect().await.unwrap();
        module.disconnect().await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    });

    let (ok, _, _) = run(
        data,
        &["module-identity", "delete", "-d", "dev1", "-m", "mod1"],
    );
    assert!(ok);
    let (ok, _, stderr) = run(
        data,
        &["module-identity", "show", "-d", "dev1", "-m", "mod1"],
    );
    assert!(!ok);
    assert!(stderr.contains("ModuleNotFound"), "{stderr}");
}
