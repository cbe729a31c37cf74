//! Reliability of a live `twinhub serve`: stored MQTT sessions across a
//! `kill -9` restart, and a graceful SIGTERM shutdown that finishes the request
//! in flight.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod lean;

use lean::{Device, HOST, TWIN_FILTERS};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(5);

struct Access {
    http: reqwest::Client,
    owner: String,
    device_key: String,
    mqtt: tokio_rustls::TlsConnector,
}

impl Access {
    fn of(hub: &common::Hub) -> Self {
        let ca = hub.ca_pem();
        Self {
            http: lean::http_client(&ca),
            owner: lean::service_token("iothubowner", &hub.policy_key("iothubowner")),
            device_key: hub.policy_key("device"),
            mqtt: lean::tls(&ca, &[]),
        }
    }

    async fn device(&self, hub: &common::Hub, id: &str, clean: bool) -> (Device, bool) {
        let password = lean::device_token(&self.device_key, id);
        Device::connect(hub.mqtts_port, None, &self.mqtt, id, &password, clean)
            .await
            .unwrap()
    }

    async fn rest(
        &self,
        hub: &common::Hub,
        method: &str,
        path: &str,
        body: &Value,
    ) -> (u16, Value) {
        let url = format!(
            "https://{HOST}:{}{path}?api-version=2021-04-12",
            hub.https_port
        );
        let response = self
            .http
            .request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), url)
            .header("Authorization", &self.owner)
            .json(body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn patch_desired(&self, hub: &common::Hub, id: &str, desired: Value) -> i64 {
        let (status, twin) = self
            .rest(
                hub,
                "PATCH",
                &format!("/twins/{id}"),
                &json!({"properties": {"desired": desired}}),
            )
            .await;
        assert_eq!(status, 200, "{twin}");
        twin["properties"]["desired"]["$version"].as_i64().unwrap()
    }

    async fn stored_sessions(&self, hub: &common::Hub) -> f64 {
        lean::metrics(&self.http, hub.https_port, &self.owner).await["twinhub_mqtt_sessions_stored"]
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_survive_a_hub_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut hub = common::Hub::start_in(&data, 0, 0);
    let access = Access::of(&hub);
    for id in ["sdk-like", "clean"] {
        let (status, _) = access
            .rest(&hub, "PUT", &format!("/devices/{id}"), &json!({}))
            .await;
        assert_eq!(status, 200);
    }

    // As the SDKs do: clean session 0, subscribe once.
    let (mut device, present) = access.device(&hub, "sdk-like", false).await;
    assert!(!present);
    assert_eq!(device.subscribe(&TWIN_FILTERS).await.unwrap(), [1, 1]);
    // A clean-session-1 client's subscriptions are not kept.
    let (mut clean, _) = access.device(&hub, "clean", true).await;
    clean.subscribe(&TWIN_FILTERS).await.unwrap();
    // The SUBACK came after the subscription was durable: kill -9 right away.
    assert_eq!(access.stored_sessions(&hub).await, 1.0);
    hub.kill();
    drop((device, clean));

    let hub = common::Hub::start_in(&data, hub.https_port, hub.mqtts_port);
    assert_eq!(access.stored_sessions(&hub).await, 1.0);
    // (a) A desired change while the device is away: not queued (spec §2.4), read
    // with a twin GET after reconnecting.
    let v_away = access
        .patch_desired(&hub, "sdk-like", json!({"away": 1}))
        .await;
    let (mut device, present) = access.device(&hub, "sdk-like", false).await;
    assert!(present, "the stored session is resumed");
    let twin = device.get_twin().await.unwrap();
    assert_eq!(twin["desired"]["away"], 1);
    assert_eq!(twin["desired"]["$version"], v_away);
    // (b) A change after reconnecting arrives as a notification, without any
    // SUBSCRIBE on this connection.
    let v_back = access
        .patch_desired(&hub, "sdk-like", json!({"back": true}))
        .await;
    let n = device.desired(WAIT).await.expect("desired notification");
    assert_eq!(
        n.topic,
        format!("$iothub/twin/PATCH/properties/desired/?$version={v_back}")
    );
    assert_eq!(n.json().unwrap(), json!({"back": true, "$version": v_back}));
    assert!(n.packet_id != 0, "delivered at the granted QoS 1");

    let (mut clean, present) = access.device(&hub, "clean", false).await;
    assert!(!present);
    access.patch_desired(&hub, "clean", json!({"x": 1})).await;
    assert!(clean.desired(Duration::from_millis(500)).await.is_none());
    drop(clean);

    // Deleting the device forgets its session: created again, it starts afresh.
    drop(device);
    let (status, _) = access
        .rest(&hub, "DELETE", "/devices/sdk-like", &Value::Null)
        .await;
    assert_eq!(status, 204);
    assert_eq!(access.stored_sessions(&hub).await, 0.0);
    access
        .rest(&hub, "PUT", "/devices/sdk-like", &json!({}))
        .await;
    let (mut device, present) = access.device(&hub, "sdk-like", false).await;
    assert!(!present);
    access
        .patch_desired(&hub, "sdk-like", json!({"new": 1}))
        .await;
    assert!(device.desired(Duration::from_millis(500)).await.is_none());
}

/// Sends `bytes` of an HTTP request over a fresh TLS connection to the hub.
async fn https_stream(
    hub: &common::Hub,
    connector: &tokio_rustls::TlsConnector,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let tcp = lean::tcp(hub.https_port, None).await.unwrap();
    lean::handshake(connector, tcp).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_the_request_in_flight_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut hub = common::Hub::start_in(&data, 0, 0);
    let access = Access::of(&hub);
    access.rest(&hub, "PUT", "/devices/d1", &json!({})).await;
    let (mut device, _) = access.device(&hub, "d1", false).await;
    device.subscribe(&TWIN_FILTERS).await.unwrap();
    assert_eq!(device.report(&json!({"before": 1})).await, Some(204));

    // A PATCH whose body is still arriving when SIGTERM comes.
    let https = lean::tls(&hub.ca_pem(), &[b"http/1.1"]);
    let mut request = https_stream(&hub, &https).await;
    let body = json!({"properties": {"desired": {"during": "shutdown"}}}).to_string();
    let head = format!(
        "PATCH /twins/d1?api-version=2021-04-12 HTTP/1.1\r\nHost: {HOST}\r\nAuthorization: {}\r\nContent-Type: application/json\r\nIf-Match: \"*\"\r\nContent-Length: {}\r\n\r\n",
        access.owner,
        body.len()
    );
    let (first, rest) = body.split_at(body.len() / 2);
    request.write_all(head.as_bytes()).await.unwrap();
    request.write_all(first.as_bytes()).await.unwrap();
    request.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let https_port = hub.https_port;
    let stopping = tokio::task::spawn_blocking(move || {
        let status = hub.terminate(Duration::from_secs(10));
        (hub, status)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    // No longer accepting: a new connection is refused or closed unanswered.
    let refused = match lean::tcp(https_port, None).await {
        Err(_) => true,
        Ok(tcp) => lean::handshake(&https, tcp).await.is_err(),
    };
    assert!(refused, "a new connection was served during shutdown");
    // The MQTT session is closed.
    assert!(device.closed_within(WAIT).await);
    // The request in flight completes.
    request.write_all(rest.as_bytes()).await.unwrap();
    request.flush().await.unwrap();
    let mut response = Vec::new();
    let _ = tokio::time::timeout(WAIT, request.read_to_end(&mut response)).await;
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("\"during\":\"shutdown\""), "{response}");

    let (hub, status) = stopping.await.unwrap();
    let (status, took) = status.expect("the hub did not exit within 10 s");
    assert!(status.success(), "exit status {status:?}");
    assert!(took < Duration::from_secs(5), "shutdown took {took:?}");
    eprintln!("graceful shutdown took {took:?}");

    // Everything acknowledged is there after a restart.
    let hub = common::Hub::start_in(&data, hub.https_port, hub.mqtts_port);
    let (status, twin) = access.rest(&hub, "GET", "/twins/d1", &Value::Null).await;
    assert_eq!(status, 200);
    assert_eq!(twin["properties"]["desired"]["during"], "shutdown");
    assert_eq!(twin["properties"]["reported"]["before"], 1);
    let started = Instant::now();
    let (_device, present) = access.device(&hub, "d1", false).await;
    assert!(present);
    assert!(started.elapsed() < WAIT);
}
