//! The endpoint over real TLS sockets on 127.0.0.1, spoken to in hand-built bytes.

mod common;

use common::*;
use serde_json::json;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use twinhub_mqtt::ServerConfig;

#[tokio::test]
async fn connect_then_twin_get_and_reported_patch() {
    let hub = TestHub::start(&["dev1"]).await;
    let (mut c, present) = hub.connect("dev1", false).await;
    assert!(!present, "no stored session yet");
    assert_eq!(hub.backend.presence(), ["connected:dev1"]);

    // Python's order: GET before subscribing to twin/res; the answer still comes.
    c.send(&publish("$iothub/twin/GET/?$rid=a1", 1, 1, b" "))
        .await;
    c.expect(0x40, &[0, 1]).await;
    let res = c.publish().await;
    assert_eq!(res.topic, "$iothub/twin/res/200/?$rid=a1");
    assert_eq!(res.qos, 0);
    assert_eq!(
        res.json().unwrap(),
        json!({"desired": {"$version": 1}, "reported": {"$version": 1}})
    );

    c.send(&subscribe(2, &[("$iothub/twin/res/#", 1)])).await;
    c.expect(0x90, &[0, 2, 1]).await;
    c.send(&publish(
        "$iothub/twin/PATCH/properties/reported/?$rid=a2",
        0,
        0,
        br#"{"fw":"2.0"}"#,
    ))
    .await;
    let res = c.publish().await;
    assert_eq!(res.topic, "$iothub/twin/res/204/?$rid=a2&$version=2");
    assert!(res.payload.is_empty());
    assert_eq!(res.qos, 1);
    c.send(&puback(res.packet_id)).await;
    assert_eq!(hub.backend.reported("dev1"), (json!({"fw": "2.0"}), 2));

    // A failed precondition is an error body Node recognises (truthy errorCode).
    c.send(&publish(
        "$iothub/twin/PATCH/properties/reported/?$rid=a3&$version=1",
        0,
        0,
        br#"{"fw":"3.0"}"#,
    ))
    .await;
    let res = c.publish().await;
    assert_eq!(res.topic, "$iothub/twin/res/412/?$rid=a3");
    assert_eq!(res.json().unwrap()["errorCode"], 412_001);

    c.send(&PINGREQ).await;
    c.expect(0xd0, &[]).await;
    c.send(&DISCONNECT).await;
    assert!(c.closed().await);
    hub.wait_live(0).await;
    assert_eq!(
        hub.backend.presence(),
        ["connected:dev1", "disconnected:dev1"]
    );
}

#[tokio::test]
async fn bad_credentials_get_connack_5() {
    let hub = TestHub::start(&["dev1"]).await;
    for bytes in [
        connect(
            "dev1",
            &username("dev1"),
            "SharedAccessSignature wrong",
            false,
            60,
        ),
        connect("ghost", &username("ghost"), &password("ghost"), false, 60),
        connect("dev2", &username("dev1"), &password("dev1"), false, 60),
        connect("dev1", "not a username", &password("dev1"), false, 60),
    ] {
        let mut c = hub.raw().await;
        c.send(&bytes).await;
        assert!(!c.connack(5).await);
        assert!(c.closed().await);
    }
    let mut c = hub.raw().await;
    c.send(&connect_level(
        3,
        "dev1",
        &username("dev1"),
        &password("dev1"),
        false,
        60,
    ))
    .await;
    c.connack(1).await;
    assert!(hub.backend.presence().is_empty());
    assert_eq!(hub.server.live_connections(), 0);
}

#[tokio::test]
async fn malformed_packets_close_the_connection() {
    let hub = TestHub::start(&["dev1"]).await;
    let bad: &[&[u8]] = &[
        &[0x82, 0x02, 0x00, 0x01],             // SUBSCRIBE without filters
        &[0x80, 0x03, 0x00, 0x01, 0x00],       // SUBSCRIBE with wrong flags
        &[0x36, 0x03, 0x00, 0x01, b'a'],       // PUBLISH QoS 3
        &[0x30, 0x03, 0x00, 0x05, b'a'],       // string longer than the packet
        &[0x30, 0xff, 0xff, 0xff, 0xff, 0x01], // five-byte remaining length
        &[0x62, 0x02, 0x00, 0x01],             // PUBREL: no QoS 2 here
        &[0x00, 0x00],                         // reserved type
        &[0xc0, 0x01, 0x00],                   // PINGREQ with a body
    ];
    for bytes in bad {
        let (mut c, _) = hub.connect("dev1", true).await;
        c.send(bytes).await;
        assert!(c.closed().await, "{bytes:02x?}");
    }
    // Before CONNECT: anything else, or garbage, closes without a CONNACK.
    for bytes in [&PINGREQ[..], &[0x10, 0x02, 0x00, 0x00], &[0xff; 8]] {
        let mut c = hub.raw().await;
        c.send(bytes).await;
        assert!(c.closed().await, "{bytes:02x?}");
    }
    // The endpoint still serves.
    let (mut c, _) = hub.connect("dev1", true).await;
    c.send(&PINGREQ).await;
    c.expect(0xd0, &[]).await;
}

#[tokio::test]
async fn qos2_publish_closes() {
    let hub = TestHub::start(&["dev1"]).await;
    let (mut c, _) = hub.connect("dev1", true).await;
    c.send(&publish("$iothub/twin/GET/?$rid=1", 2, 1, b" "))
        .await;
    assert!(c.closed().await);
}

#[tokio::test]
async fn a_connect_that_never_comes_times_out() {
    let config = ServerConfig {
        connect_timeout: Duration::from_millis(200),
        ..ServerConfig::default()
    };
    let hub = TestHub::start_with(&["dev1"], config).await;
    let mut c = hub.raw().await;
    let started = std::time::Instant::now();
    assert!(c.closed().await);
    assert!(started.elapsed() >= Duration::from_millis(200));
    // Half a CONNECT is no better.
    let mut c = hub.raw().await;
    let connect = connect("dev1", &username("dev1"), &password("dev1"), false, 60);
    c.send(&connect[..10]).await;
    assert!(c.closed().await);
}

#[tokio::test]
async fn oversized_packets_close_before_being_read() {
    let hub = TestHub::start(&["dev1"]).await;
    let (mut c, _) = hub.connect("dev1", true).await;
    // Just over 256 KiB + headroom: refused from the header alone.
    let payload = vec![b'x'; 256 * 1024 + 16 * 1024];
    let packet = publish("devices/dev1/messages/events/", 0, 0, &payload);
    let _ = c.try_send(&packet[..64]).await;
    assert!(c.closed().await);

    // A 256 KiB telemetry message is fine.
    let (mut c, _) = hub.connect("dev1", true).await;
    let payload = vec![b'x'; 256 * 1024];
    c.send(&publish("devices/dev1/messages/events/", 1, 9, &payload))
        .await;
    c.expect(0x40, &[0, 9]).await;
}

#[tokio::test]
async fn a_device_cannot_use_another_devices_topics() {
    let hub = TestHub::start(&["devA", "devB"]).await;
    let before = hub.backend.reported("devB");
    let (mut b, _) = hub.connect("devB", false).await;
    for topic in [
        "devices/devB/messages/events/",
        "devices/devB/twin/PATCH/properties/reported/?$rid=1",
        "$iothub/devB/twin/PATCH/properties/reported/?$rid=1",
    ] {
        let (mut a, _) = hub.connect("devA", true).await;
        a.send(&publish(topic, 1, 1, br#"{"owned":true}"#)).await;
        assert!(a.closed().await, "{topic}");
    }
    let (mut a, _) = hub.connect("devA", true).await;
    a.send(&subscribe(1, &[("devices/devB/messages/devicebound/#", 1)]))
        .await;
    assert!(a.closed().await);
    // A's own reported patch touches A's twin only.
    let (mut a, _) = hub.connect("devA", true).await;
    a.send(&publish(
        "$iothub/twin/PATCH/properties/reported/?$rid=x",
        0,
        0,
        br#"{"mine":1}"#,
    ))
    .await;
    assert_eq!(
        a.publish().await.topic,
        "$iothub/twin/res/204/?$rid=x&$version=2"
    );
    assert_eq!(hub.backend.reported("devB"), before);
    assert_eq!(hub.backend.reported("devA").1, 2);
    // B was never disturbed.
    b.send(&PINGREQ).await;
    b.expect(0xd0, &[]).await;
}

#[tokio::test]
async fn a_second_connection_kicks_the_first() {
    let hub = TestHub::start(&["dev1"]).await;
    let (mut first, _) = hub.connect("dev1", false).await;
    let (mut second, present) = hub.connect("dev1", false).await;
    assert!(present, "the first connection's session is resumed");
    assert!(first.closed().await);
    second
        .send(&publish("$iothub/twin/GET/?$rid=k", 0, 0, b""))
        .await;
    assert_eq!(second.publish().await.topic, "$iothub/twin/res/200/?$rid=k");
    hub.wait_live(1).await;
    // The replaced connection does not mark the device disconnected.
    assert_eq!(hub.backend.presence(), ["connected:dev1", "connected:dev1"]);
}

#[tokio::test]
async fn subscriptions_survive_clean_session_0_and_not_clean_session_1() {
    let hub = TestHub::start(&["dev1"]).await;
    let (mut c, _) = hub.connect("dev1", false).await;
    c.send(&subscribe(
        1,
        &[
            ("$iothub/twin/res/#", 0),
            ("$iothub/twin/PATCH/properties/desired/#", 1),
        ],
    ))
    .await;
    c.expect(0x90, &[0, 1, 0, 1]).await;
    hub.backend.set_desired("dev1", json!({"a": 1}));
    let n = c.publish().await;
    assert_eq!(n.topic, "$iothub/twin/PATCH/properties/desired/?$version=2");
    assert_eq!(n.json().unwrap(), json!({"a": 1, "$version": 2}));
    c.send(&puback(n.packet_id)).await;
    drop(c);
    hub.wait_live(0).await;

    // Reconnect like the SDKs: clean session 0, no SUBSCRIBE.
    let (mut c, present) = hub.connect("dev1", false).await;
    assert!(present);
    hub.backend
        .set_desired("dev1", json!({"a": null, "b": "x"}));
    let n = c.publish().await;
    assert_eq!(n.topic, "$iothub/twin/PATCH/properties/desired/?$version=3");
    assert_eq!(
        n.json().unwrap(),
        json!({"a": null, "b": "x", "$version": 3})
    );
    c.send(&DISCONNECT).await;
    assert!(c.closed().await);
    hub.wait_live(0).await;

    // Clean session 1 starts empty: no notification without a subscription.
    let (mut c, present) = hub.connect("dev1", true).await;
    assert!(!present);
    hub.backend.set_desired("dev1", json!({"c": 1}));
    c.send(&PINGREQ).await;
    c.expect(0xd0, &[]).await;
}

#[tokio::test]
async fn desired_notifications_arrive_in_version_order() {
    let hub = TestHub::start(&["dev1"]).await;
    let (mut c, _) = hub.connect("dev1", true).await;
    c.send(&subscribe(
        1,
        &[("$iothub/twin/PATCH/properties/desired/#", 0)],
    ))
    .await;
    c.expect(0x90, &[0, 1, 0]).await;
    for i in 0..50 {
        hub.backend.set_desired("dev1", json!({"i": i}));
    }
    for i in 0..50 {
        let n = c.publish().await;
        assert_eq!(n.json().unwrap(), json!({"i": i, "$version": i + 2}));
    }
}

#[tokio::test]
async fn a_backend_kick_closes_the_connection() {
    let hub = TestHub::start(&["dev1"]).await;
    let (mut c, _) = hub.connect("dev1", false).await;
    hub.wait_live(1).await;
    hub.backend.kick("dev1");
    assert!(c.closed().await);
    hub.wait_live(0).await;
}

#[tokio::test]
async fn shutdown_closes_connections_and_stops_accepting() {
    let hub = TestHub::start(&["dev1"]).await;
    let (mut c, _) = hub.connect("dev1", false).await;
    hub.stop.send_replace(true);
    assert!(c.closed().await);
    hub.wait_live(0).await;
}

#[tokio::test]
async fn suback_waits_until_the_subscription_is_stored() {
    let hub = TestHub::start(&["dev1"]).await;
    let (mut c, present) = hub.connect("dev1", false).await;
    assert!(!present);
    hub.backend.saves_durable.send_replace(false);
    c.send(&subscribe(
        1,
        &[("$iothub/twin/PATCH/properties/desired/#", 1)],
    ))
    .await;
    // The connection goes on (PINGRESP), the subscription already applies, but
    // the SUBACK waits for durability.
    c.send(&PINGREQ).await;
    c.expect(0xd0, &[]).await;
    hub.backend.set_desired("dev1", json!({"a": 1}));
    let n = c.publish().await;
    assert_eq!(n.topic, "$iothub/twin/PATCH/properties/desired/?$version=2");
    c.send(&puback(n.packet_id)).await;
    assert!(hub.backend.stored_sessions().contains_key("dev1"));
    hub.backend.saves_durable.send_replace(true);
    c.expect(0x90, &[0, 1, 1]).await;
    let m = hub.server.metrics();
    assert_eq!(m.desired_notifications, 1);
    assert_eq!(m.connacks[0], 1);

    // Clean session 1 forgets the stored session before its CONNACK.
    drop(c);
    hub.wait_live(0).await;
    let (_c, present) = hub.connect("dev1", true).await;
    assert!(!present);
    assert!(hub.backend.stored_sessions().is_empty());
}

#[tokio::test]
async fn a_subscription_that_cannot_be_stored_closes_the_connection() {
    let hub = TestHub::start(&["dev1"]).await;
    let (mut c, _) = hub.connect("dev1", false).await;
    hub.backend
        .saves_fail
        .store(true, std::sync::atomic::Ordering::SeqCst);
    c.send(&subscribe(1, &[("$iothub/twin/res/#", 1)])).await;
    assert!(c.closed().await, "no SUBACK for a subscription not stored");
    hub.wait_live(0).await;
    let closed = hub.server.metrics().closed;
    let i = twinhub_mqtt::CloseReason::ALL
        .iter()
        .position(|r| *r == twinhub_mqtt::CloseReason::HubError)
        .unwrap();
    assert_eq!(closed[i], 1);
}

#[tokio::test]
async fn sockets_beyond_the_unauthenticated_cap_are_closed_at_once() {
    let config = ServerConfig {
        max_unauthenticated: 2,
        ..ServerConfig::default()
    };
    let hub = TestHub::start_with(&["dev1"], config).await;
    // Two clients that complete TLS and never send CONNECT fill the cap.
    let idle = [hub.raw().await, hub.raw().await];
    let mut tcp = tokio::net::TcpStream::connect(hub.addr).await.unwrap();
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut byte)).await;
    assert!(matches!(read, Ok(Ok(0) | Err(_))), "closed without a byte");
    let m = hub.server.metrics();
    assert_eq!((m.unauthenticated, m.refused_unauthenticated), (2, 1));
    // Once they go, devices get in again; an authenticated one no longer counts.
    drop(idle);
    for _ in 0..200 {
        if hub.server.metrics().unauthenticated == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (_c, _) = hub.connect("dev1", false).await;
    let (_d, _) = hub.connect("dev1", false).await;
    let _e = hub.raw().await;
    let _f = hub.raw().await;
    let m = hub.server.metrics();
    assert_eq!(m.refused_unauthenticated, 1);
    assert_eq!(m.live_connections, 1);
}

/// Direct methods over a real connection: readiness follows the method
/// subscription and the connection's life, requests go out at QoS 0 on the
/// method topic, and answers (QoS 0 or 1) reach the backend with their rid.
#[tokio::test]
async fn method_requests_and_answers_cross_the_connection() {
    let hub = TestHub::start(&["dev1"]).await;
    let (mut c, _) = hub.connect("dev1", false).await;
    assert_eq!(hub.backend.readiness(), ["dev1:false"]);

    // Not subscribed: a request is dropped, nothing reaches the device.
    hub.backend.send_method("dev1", "reboot", "1", "null");
    c.send(&subscribe(1, &[("$iothub/methods/POST/#", 1)]))
        .await;
    c.expect(0x90, &[0, 1, 1]).await;
    assert_eq!(hub.backend.readiness(), ["dev1:false", "dev1:true"]);

    hub.backend
        .send_method("dev1", "reboot", "2a", r#"{"delay":1}"#);
    let req = c.publish().await;
    assert_eq!(req.topic, "$iothub/methods/POST/reboot/?$rid=2a");
    assert_eq!(req.qos, 0);
    assert_eq!(req.json().unwrap(), json!({"delay": 1}));

    // Node answers at QoS 0, Python at QoS 1 with a PUBACK due.
    c.send(&publish(
        "$iothub/methods/res/200/?$rid=2a",
        0,
        0,
        b"\"done\"",
    ))
    .await;
    c.send(&publish("$iothub/methods/res/500/?$rid=2b", 1, 7, b""))
        .await;
    c.expect(0x40, &[0, 7]).await;
    // A status that is not a number is acknowledged and dropped, not a close.
    c.send(&publish("$iothub/methods/res/x/?$rid=2c", 1, 8, b""))
        .await;
    c.expect(0x40, &[0, 8]).await;
    assert_eq!(
        hub.backend.method_responses(),
        [
            (
                "dev1".to_owned(),
                "2a".to_owned(),
                200,
                b"\"done\"".to_vec()
            ),
            ("dev1".to_owned(), "2b".to_owned(), 500, Vec::new()),
        ]
    );

    c.send(&unsubscribe(9, &["$iothub/methods/POST/#"])).await;
    c.expect(0xb0, &[0, 9]).await;
    c.send(&subscribe(10, &[("$iothub/methods/POST/#", 0)]))
        .await;
    c.expect(0x90, &[0, 10, 0]).await;
    c.send(&DISCONNECT).await;
    assert!(c.closed().await);
    hub.wait_live(0).await;
    assert_eq!(
        hub.backend.readiness(),
        [
            "dev1:false",
            "dev1:true",
            "dev1:false",
            "dev1:true",
            "dev1:false"
        ]
    );

    // Clean session 0 resumes the subscription: ready from the CONNECT on.
    let (mut c, present) = hub.connect("dev1", false).await;
    assert!(present);
    assert_eq!(hub.backend.readiness().last().unwrap(), "dev1:true");
    hub.backend.send_method("dev1", "ping", "3", "null");
    let req = c.publish().await;
    assert_eq!(req.topic, "$iothub/methods/POST/ping/?$rid=3");
    assert_eq!(&req.payload[..], b"null");
}
