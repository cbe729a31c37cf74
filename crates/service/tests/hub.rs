//! The service layer against a real SQLite store: durability across reopen,
//! event fan-out order, device authentication.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use serde_json::json;
use twinhub_core::etag::IfMatch;
use twinhub_core::policy::default_policies;
use twinhub_core::{sas, ErrorCode, Timestamp};
use twinhub_service::DeviceEvent;

use common::open_with as open;

fn now() -> Timestamp {
    twinhub_service::clock::now()
}

#[tokio::test]
async fn acknowledged_writes_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let policies = default_policies(&mut rand::rngs::OsRng);
    let (hub, committer) = open(dir.path(), policies.clone());
    hub.put_device("d1", &json!({}), &IfMatch::Absent)
        .await
        .unwrap();
    hub.put_device("d2", &json!({}), &IfMatch::Absent)
        .await
        .unwrap();
    hub.patch_twin(
        "d1",
        &json!({"tags": {"t": 1}, "properties": {"desired": {"x": 1}}}),
        &IfMatch::Absent,
    )
    .await
    .unwrap();
    hub.patch_reported("d1", &json!({"r": 2}), None)
        .await
        .unwrap();
    hub.delete_device("d2", &IfMatch::Any).await.unwrap();
    hub.device_connected("d1", now());
    let before = hub.get_twin("d1").unwrap();
    drop(hub);
    committer.join().unwrap();

    let (hub, _c) = open(dir.path(), policies);
    let after = hub.get_twin("d1").unwrap();
    assert_eq!(after["properties"], before["properties"]);
    assert_eq!(after["tags"], json!({"t": 1}));
    assert_eq!(after["etag"], before["etag"]);
    assert_eq!(after["version"], before["version"]);
    assert_eq!(after["connectionState"], "Disconnected");
    assert_eq!(
        hub.get_device("d2").unwrap_err().code,
        ErrorCode::DeviceNotFound
    );
}

#[tokio::test]
async fn desired_events_arrive_in_version_order() {
    let dir = tempfile::tempdir().unwrap();
    let (hub, _c) = open(dir.path(), default_policies(&mut rand::rngs::OsRng));
    hub.put_device("d", &json!({}), &IfMatch::Absent)
        .await
        .unwrap();
    let mut watch = hub.watch("d");
    let mut tasks = Vec::new();
    for i in 0..50 {
        let hub = hub.clone();
        tasks.push(tokio::spawn(async move {
            hub.patch_twin(
                "d",
                &json!({"properties": {"desired": {"i": i}}}),
                &IfMatch::Any,
            )
            .await
            .unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    hub.patch_twin("d", &json!({"tags": {"only": "tags"}}), &IfMatch::Any)
        .await
        .unwrap();
    hub.delete_device("d", &IfMatch::Any).await.unwrap();
    let mut versions = Vec::new();
    while let DeviceEvent::Desired { version, payload } = watch.recv().await.unwrap() {
        assert_eq!(payload["$version"], version);
        versions.push(version);
    }
    assert_eq!(versions, (2..52).collect::<Vec<_>>());
}

#[tokio::test]
async fn devices_authenticate_with_their_keys_or_a_device_policy() {
    let dir = tempfile::tempdir().unwrap();
    let policies = default_policies(&mut rand::rngs::OsRng);
    let (hub, _c) = open(dir.path(), policies.clone());
    let device = hub
        .put_device("d", &json!({}), &IfMatch::Absent)
        .await
        .unwrap();
    let key = device["authentication"]["symmetricKey"]["secondaryKey"]
        .as_str()
        .unwrap();
    let exp = now().unix_secs() + 60;
    let token = sas::generate_token("h.local/devices/d", key, None, exp).unwrap();
    assert_eq!(
        hub.authenticate_device("d", None, &token, now()).unwrap(),
        exp
    );
    assert!(hub
        .authenticate_device("other", None, &token, now())
        .is_err());

    let by_policy = |name: &str| {
        let p = policies.iter().find(|p| p.name == name).unwrap();
        sas::generate_token("h.local/devices/d", &p.primary_key, Some(name), exp).unwrap()
    };
    hub.authenticate_device("d", None, &by_policy("device"), now())
        .unwrap();
    hub.authenticate_device("d", None, &by_policy("iothubowner"), now())
        .unwrap();
    assert!(hub
        .authenticate_device("d", None, &by_policy("service"), now())
        .is_err());

    let expired =
        sas::generate_token("h.local/devices/d", key, None, now().unix_secs() - 1).unwrap();
    assert!(hub.authenticate_device("d", None, &expired, now()).is_err());

    hub.put_device("d", &json!({"status": "disabled"}), &IfMatch::Any)
        .await
        .unwrap();
    assert_eq!(
        hub.authenticate_device("d", None, &token, now())
            .unwrap_err()
            .code,
        ErrorCode::IotHubUnauthorizedAccess
    );
}
