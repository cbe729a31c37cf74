//! Stored MQTT sessions, metrics and closing, against a real SQLite store.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use serde_json::json;
use twinhub_core::etag::IfMatch;
use twinhub_core::ErrorCode;
use twinhub_service::{Hub, StoredSession, StoredSubscription};
use twinhub_store::{SqliteStore, Store};

use common::open;

fn session(filters: &[&str]) -> StoredSession {
    StoredSession {
        subscriptions: filters
            .iter()
            .map(|f| StoredSubscription {
                filter: (*f).to_owned(),
                qos: 1,
            })
            .collect(),
    }
}

fn close(hub: Hub, committer: std::thread::JoinHandle<()>) {
    drop(hub);
    committer.join().unwrap();
}

#[tokio::test]
async fn sessions_survive_a_restart_and_go_with_their_device() {
    let dir = tempfile::tempdir().unwrap();
    let (hub, committer) = open(dir.path());
    for d in ["d1", "d2"] {
        hub.put_device(d, &json!({}), &IfMatch::Absent)
            .await
            .unwrap();
    }
    let twin = session(&[
        "$iothub/twin/res/#",
        "$iothub/twin/PATCH/properties/desired/#",
    ]);
    // Visible as soon as the call returns, durable once its future resolves.
    let saving = hub.save_session("d1", "d1", Some(twin.clone()));
    assert_eq!(hub.stored_session("d1", "d1"), Some(twin.clone()));
    saving.await.unwrap();
    hub.save_session("d2", "d2", Some(session(&["$iothub/twin/res/#"])))
        .await
        .unwrap();
    // A module's session is kept with its device too (the module must exist).
    hub.put_module("d2", "m1", &json!({}), &IfMatch::Absent)
        .await
        .unwrap();
    hub.save_session("d2", "d2/m1", Some(session(&["$iothub/methods/POST/#"])))
        .await
        .unwrap();
    // Saving what is stored already, or forgetting what is not, writes nothing.
    let commits = hub.metrics().storage.commits;
    hub.save_session("d1", "d1", Some(twin.clone()))
        .await
        .unwrap();
    hub.save_session("d1", "d1/none", None).await.unwrap();
    assert_eq!(hub.metrics().storage.commits, commits);
    assert_eq!(hub.stored_sessions(), 3);
    close(hub, committer);

    let (hub, committer) = open(dir.path());
    assert_eq!(hub.stored_session("d1", "d1"), Some(twin.clone()));
    assert_eq!(hub.stored_sessions(), 3);
    // Deleting a device forgets its sessions and its modules', in the same commit.
    hub.delete_device("d2", &IfMatch::Any).await.unwrap();
    assert_eq!(hub.stored_session("d2", "d2"), None);
    assert_eq!(hub.stored_session("d2", "d2/m1"), None);
    assert_eq!(hub.stored_sessions(), 1);
    // A device that does not exist (deleted under a live connection) stores nothing.
    let refused = hub
        .save_session("d2", "d2", Some(session(&["$iothub/twin/res/#"])))
        .await
        .unwrap_err();
    assert_eq!(refused.code, ErrorCode::DeviceNotFound);
    let foreign = hub.save_session("d1", "d2", Some(twin.clone())).await;
    assert!(foreign.is_err(), "a client id of another device");
    // Forgetting.
    hub.save_session("d1", "d1", None).await.unwrap();
    assert_eq!(hub.stored_session("d1", "d1"), None);
    close(hub, committer);

    let mut store = SqliteStore::open(&dir.path().join("db")).unwrap();
    assert!(store
        .load(twinhub_store::Space::Sessions)
        .unwrap()
        .is_empty());
    // A re-created device starts without a session.
    drop(store);
    let (hub, committer) = open(dir.path());
    hub.put_device("d2", &json!({}), &IfMatch::Absent)
        .await
        .unwrap();
    assert_eq!(hub.stored_session("d2", "d2"), None);
    close(hub, committer);
}

#[tokio::test]
async fn metrics_count_acknowledged_writes_and_commits() {
    let dir = tempfile::tempdir().unwrap();
    let (hub, committer) = open(dir.path());
    hub.put_device("d1", &json!({}), &IfMatch::Absent)
        .await
        .unwrap();
    let _events = hub.watch("d1");
    for i in 0..3 {
        hub.patch_reported("d1", &json!({ "r": i }), None)
            .await
            .unwrap();
    }
    hub.patch_twin(
        "d1",
        &json!({"properties": {"desired": {"x": 1}}}),
        &IfMatch::Any,
    )
    .await
    .unwrap();
    // A refused write counts nowhere.
    assert!(hub
        .patch_reported("nope", &json!({"r": 1}), None)
        .await
        .is_err());
    let m = hub.metrics();
    assert_eq!((m.devices, m.devices_connected), (1, 0));
    assert_eq!(m.reported_patches, 3);
    assert_eq!(m.desired_changes, 1);
    assert_eq!(m.storage.jobs, 5);
    assert!(m.storage.commits >= 1 && m.storage.commits <= 5);
    assert_eq!(m.storage.failures, 0);
    close(hub, committer);
}

#[tokio::test]
async fn close_flushes_and_refuses_later_writes() {
    let dir = tempfile::tempdir().unwrap();
    let (hub, committer) = open(dir.path());
    hub.put_device("d1", &json!({}), &IfMatch::Absent)
        .await
        .unwrap();
    // Queued before closing: durable when close resolves, though not yet awaited.
    let patch = json!({"r": 1});
    let queued = {
        let hub = hub.clone();
        tokio::spawn(async move { hub.patch_reported("d1", &patch, None).await })
    };
    tokio::task::yield_now().await;
    hub.close().await.unwrap();
    let late = hub.patch_reported("d1", &json!({"r": 2}), None).await;
    assert_eq!(late.unwrap_err().code, ErrorCode::ServiceUnavailable);
    let late = hub.save_session("d1", "d1", Some(session(&["$iothub/twin/res/#"])));
    assert!(late.await.is_err());
    let first = queued.await.unwrap();
    // Reads still work while closing.
    let twin = hub.get_twin("d1").unwrap();
    if first.is_ok() {
        assert_eq!(twin["properties"]["reported"]["r"], 1);
    }
    close(hub, committer);
    let (hub, committer) = open(dir.path());
    let twin = hub.get_twin("d1").unwrap();
    assert_eq!(
        twin["properties"]["reported"].get("r").is_some(),
        first.is_ok(),
        "acknowledged exactly when stored"
    );
    close(hub, committer);
}
