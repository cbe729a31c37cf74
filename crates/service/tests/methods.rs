//! Direct methods through the service layer, with a stand-in for the MQTT
//! endpoint: the hub's errors (unknown target, offline, no answer), waiting for a
//! device to connect, answers matched by request id and by identity. Time is
//! tokio's paused clock, so the timeouts of minutes take no time.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use serde_json::{json, Value};
use std::time::Duration;
use twinhub_core::etag::IfMatch;
use twinhub_core::method::{MethodRequest, MethodResponse};
use twinhub_core::{ErrorCode, Identity};
use twinhub_service::{DeviceEvent, DeviceWatch, Hub};

fn request(name: &str, payload: Value, response: u32, connect: u32) -> MethodRequest {
    MethodRequest {
        method_name: name.into(),
        payload,
        response_timeout_secs: response,
        connect_timeout_secs: connect,
    }
}

/// Method calls store nothing: the hub runs on an in-memory store.
async fn hub_with(devices: &[&str]) -> (Hub, twinhub_store::MemoryStore) {
    let (hub, store) = common::open_in_memory();
    for d in devices {
        hub.put_device(d, &json!({}), &IfMatch::Absent)
            .await
            .unwrap();
    }
    (hub, store)
}

/// What a device's session does with a request: the name, rid and payload.
async fn next_request(watch: &mut DeviceWatch) -> (String, String, String) {
    match watch.recv().await {
        Some(DeviceEvent::MethodRequest { name, rid, payload }) => (name, rid, payload.to_string()),
        other => panic!("expected a method request, got {other:?}"),
    }
}

#[tokio::test]
async fn a_ready_device_gets_the_request_and_its_answer_reaches_the_caller() {
    let (hub, store) = hub_with(&["d1"]).await;
    let commits = store.commits();
    let d1 = Identity::device("d1");
    let mut watch = hub.watch("d1");
    hub.methods_ready(&d1, true);

    let caller = {
        let hub = hub.clone();
        let d1 = d1.clone();
        tokio::spawn(async move {
            hub.invoke_method(&d1, &request("reboot", json!({"delay": 1}), 30, 0))
                .await
        })
    };
    let (name, rid, payload) = next_request(&mut watch).await;
    assert_eq!(
        (name.as_str(), payload.as_str()),
        ("reboot", r#"{"delay":1}"#)
    );
    assert_eq!(hub.methods_pending(), 1);

    // Another identity cannot answer it, and an unknown rid changes nothing.
    hub.method_response(&Identity::device("d2"), &rid, 200, b"\"forged\"");
    hub.method_response(&d1, "no-such-rid", 200, b"{}");
    hub.method_response(&d1, &rid, 201, b"{\"ok\":true}");
    let answer = caller.await.unwrap().unwrap();
    assert_eq!(
        answer,
        MethodResponse {
            status: 201,
            payload: json!({"ok": true})
        }
    );
    assert_eq!(hub.methods_pending(), 0);
    // A second answer for the same rid finds no caller and is dropped.
    hub.method_response(&d1, &rid, 500, b"late");

    // Request ids differ from call to call.
    let caller = {
        let hub = hub.clone();
        let d1 = d1.clone();
        tokio::spawn(async move {
            hub.invoke_method(&d1, &request("again", Value::Null, 30, 0))
                .await
        })
    };
    let (_, second_rid, payload) = next_request(&mut watch).await;
    assert_ne!(second_rid, rid);
    assert_eq!(payload, "null");
    hub.method_response(&d1, &second_rid, 404, b"not json");
    let answer = caller.await.unwrap().unwrap();
    assert_eq!((answer.status, answer.payload), (404, json!("not json")));
    assert_eq!(hub.metrics().methods_invoked, 2);
    assert_eq!(store.commits(), commits, "a method call wrote to storage");
}

#[tokio::test]
async fn unknown_targets_are_not_found() {
    let (hub, _store) = hub_with(&["d1"]).await;
    let call = request("m", Value::Null, 30, 0);
    let err = hub
        .invoke_method(&Identity::device("ghost"), &call)
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::DeviceNotFound);
    let err = hub
        .invoke_method(&Identity::module("ghost", "m"), &call)
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::DeviceNotFound);
    let err = hub
        .invoke_method(&Identity::module("d1", "m"), &call)
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::ModuleNotFound);
}

#[tokio::test(start_paused = true)]
async fn an_offline_or_unsubscribed_device_is_not_online() {
    let (hub, _store) = hub_with(&["d1"]).await;
    let d1 = Identity::device("d1");
    let _watch = hub.watch("d1");
    let err = hub
        .invoke_method(&d1, &request("m", Value::Null, 30, 0))
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::DeviceNotOnline);
    assert_eq!(err.message, "Timed out waiting for device to connect.");

    // Ready, then no longer (unsubscribed or disconnected): offline again, and a
    // connect timeout is waited out in full.
    hub.methods_ready(&d1, true);
    hub.methods_ready(&d1, false);
    let started = tokio::time::Instant::now();
    let err = hub
        .invoke_method(&d1, &request("m", Value::Null, 30, 20))
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::DeviceNotOnline);
    assert_eq!(started.elapsed(), Duration::from_secs(20));
}

#[tokio::test(start_paused = true)]
async fn a_device_that_connects_within_the_connect_timeout_gets_the_call() {
    let (hub, _store) = hub_with(&["d1"]).await;
    let d1 = Identity::device("d1");
    let caller = {
        let hub = hub.clone();
        let d1 = d1.clone();
        tokio::spawn(async move {
            hub.invoke_method(&d1, &request("m", json!(7), 30, 60))
                .await
        })
    };
    tokio::time::sleep(Duration::from_secs(45)).await;
    assert!(!caller.is_finished(), "still waiting for the device");
    let mut watch = hub.watch("d1");
    hub.methods_ready(&d1, true);
    let (_, rid, payload) = next_request(&mut watch).await;
    assert_eq!(payload, "7");
    hub.method_response(&d1, &rid, 200, b"");
    let answer = caller.await.unwrap().unwrap();
    assert_eq!((answer.status, answer.payload), (200, Value::Null));
}

#[tokio::test(start_paused = true)]
async fn a_device_that_never_answers_times_out_with_504() {
    let (hub, _store) = hub_with(&["d1"]).await;
    let d1 = Identity::device("d1");
    let mut watch = hub.watch("d1");
    hub.methods_ready(&d1, true);
    let started = tokio::time::Instant::now();
    let caller = {
        let hub = hub.clone();
        let d1 = d1.clone();
        tokio::spawn(async move {
            hub.invoke_method(&d1, &request("m", Value::Null, 5, 0))
                .await
        })
    };
    let (_, rid, _) = next_request(&mut watch).await;
    let err = caller.await.unwrap().unwrap_err();
    assert_eq!(err.code, ErrorCode::GatewayTimeout);
    assert_eq!(err.code.http_status(), 504);
    assert_eq!(started.elapsed(), Duration::from_secs(5));
    assert_eq!(hub.methods_pending(), 0, "the expired call is forgotten");
    // Its late answer goes nowhere.
    hub.method_response(&d1, &rid, 200, b"{}");
    assert_eq!(hub.metrics().methods_timed_out, 1);
}

#[tokio::test]
async fn a_caller_that_goes_away_leaves_no_pending_call() {
    let (hub, _store) = hub_with(&["d1"]).await;
    let d1 = Identity::device("d1");
    let mut watch = hub.watch("d1");
    hub.methods_ready(&d1, true);
    let caller = {
        let hub = hub.clone();
        let d1 = d1.clone();
        tokio::spawn(async move {
            hub.invoke_method(&d1, &request("m", Value::Null, 300, 0))
                .await
        })
    };
    next_request(&mut watch).await;
    assert_eq!(hub.methods_pending(), 1);
    caller.abort();
    let _ = caller.await;
    assert_eq!(hub.methods_pending(), 0);
}
