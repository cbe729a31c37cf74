//! An independent MQTT client (rumqttc) against the endpoint over TLS: GET the
//! twin, PATCH reported properties, receive a desired notification, reconnect
//! without re-subscribing.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use rumqttc::{
    AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS, TlsConfiguration, Transport,
};
use serde_json::{json, Value};
use std::time::Duration;

fn options(hub: &TestHub, device: &str, clean: bool) -> MqttOptions {
    let mut options = MqttOptions::new(device, HOST, hub.addr.port());
    options
        .set_credentials(username(device), password(device))
        .set_clean_session(clean)
        .set_keep_alive(Duration::from_secs(60))
        .set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            hub.client_tls.clone(),
        )));
    options
}

/// Polls the event loop until a PUBLISH arrives.
async fn next_publish(events: &mut EventLoop) -> rumqttc::Publish {
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Event::Incoming(Packet::Publish(p)) = events.poll().await.unwrap() {
                return p;
            }
        }
    })
    .await
    .expect("a PUBLISH within 5 s")
}

async fn connack(events: &mut EventLoop) -> rumqttc::ConnAck {
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Event::Incoming(Packet::ConnAck(c)) = events.poll().await.unwrap() {
                return c;
            }
        }
    })
    .await
    .expect("a CONNACK within 5 s")
}

fn topic(p: &rumqttc::Publish) -> &str {
    &p.topic
}

#[tokio::test]
async fn rumqttc_gets_patches_and_is_notified() {
    let hub = TestHub::start(&["dev1"]).await;
    let (client, mut events) = AsyncClient::new(options(&hub, "dev1", false), 16);
    let ack = connack(&mut events).await;
    assert_eq!(ack.code, rumqttc::ConnectReturnCode::Success);
    assert!(!ack.session_present);

    client
        .subscribe("$iothub/twin/res/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    client
        .subscribe("$iothub/twin/PATCH/properties/desired/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    client
        .publish("$iothub/twin/GET/?$rid=g1", QoS::AtLeastOnce, false, " ")
        .await
        .unwrap();
    let res = next_publish(&mut events).await;
    assert_eq!(topic(&res), "$iothub/twin/res/200/?$rid=g1");
    let twin: Value = serde_json::from_slice(&res.payload).unwrap();
    assert_eq!(twin["desired"]["$version"], 1);

    client
        .publish(
            "$iothub/twin/PATCH/properties/reported/?$rid=p1",
            QoS::AtMostOnce,
            false,
            r#"{"temperature":21.5}"#,
        )
        .await
        .unwrap();
    let res = next_publish(&mut events).await;
    assert_eq!(topic(&res), "$iothub/twin/res/204/?$rid=p1&$version=2");
    assert!(res.payload.is_empty());
    assert_eq!(hub.backend.reported("dev1").0, json!({"temperature": 21.5}));

    hub.backend.set_desired("dev1", json!({"interval": 10}));
    let n = next_publish(&mut events).await;
    assert_eq!(
        topic(&n),
        "$iothub/twin/PATCH/properties/desired/?$version=2"
    );
    assert_eq!(n.qos, QoS::AtLeastOnce);
    let body: Value = serde_json::from_slice(&n.payload).unwrap();
    assert_eq!(body, json!({"interval": 10, "$version": 2}));

    // Reconnect as the SDKs do: clean session 0, no SUBSCRIBE. The desired
    // subscription is still there.
    client.disconnect().await.unwrap();
    while events.poll().await.is_ok() {}
    hub.wait_live(0).await;
    let (_client, mut events) = AsyncClient::new(options(&hub, "dev1", false), 16);
    assert!(connack(&mut events).await.session_present);
    hub.backend.set_desired("dev1", json!({"interval": null}));
    let n = next_publish(&mut events).await;
    assert_eq!(
        topic(&n),
        "$iothub/twin/PATCH/properties/desired/?$version=3"
    );
    let body: Value = serde_json::from_slice(&n.payload).unwrap();
    assert_eq!(body, json!({"interval": null, "$version": 3}));
}

#[tokio::test]
async fn rumqttc_is_refused_with_a_bad_password() {
    let hub = TestHub::start(&["dev1"]).await;
    let mut options = options(&hub, "dev1", false);
    options.set_credentials(username("dev1"), "SharedAccessSignature nope");
    let (_client, mut events) = AsyncClient::new(options, 4);
    let error = tokio::time::timeout(Duration::from_secs(5), events.poll())
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(
            error,
            rumqttc::ConnectionError::ConnectionRefused(rumqttc::ConnectReturnCode::NotAuthorized)
        ),
        "{error:?}"
    );
}
