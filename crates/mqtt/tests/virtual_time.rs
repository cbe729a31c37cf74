//! The driver's deadlines on tokio's paused clock, over in-memory streams (and a
//! WebSocket-shaped one), so minutes pass in microseconds.

mod common;

use bytes::Bytes;
use common::*;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::DuplexStream;
use tokio::time::Instant;
use twinhub_mqtt::{MqttServer, WsByteStream};

fn server(backend: Arc<FakeBackend>) -> MqttServer {
    MqttServer::new(backend)
}

/// Serves one in-memory connection; returns the client end and the server task.
fn open(server: &MqttServer) -> (Raw<DuplexStream>, tokio::task::JoinHandle<()>) {
    let (client, server_end) = tokio::io::duplex(64 * 1024);
    let s = server.clone();
    let task = tokio::spawn(async move { s.serve_connection(server_end).await });
    (Raw::new(client), task)
}

#[tokio::test(start_paused = true)]
async fn connect_timeout_is_ten_seconds() {
    let server = server(FakeBackend::with_devices(&["dev1"]));
    let (_client, task) = open(&server);
    let started = Instant::now();
    task.await.unwrap();
    assert_eq!(started.elapsed().as_secs(), 10);
}

#[tokio::test(start_paused = true)]
async fn keep_alive_closes_after_one_and_a_half_periods() {
    let server = server(FakeBackend::with_devices(&["dev1"]));
    let (mut c, task) = open(&server);
    c.send(&connect(
        "dev1",
        &username("dev1"),
        &password("dev1"),
        false,
        60,
    ))
    .await;
    c.connack(0).await;
    let started = Instant::now();
    // Traffic resets the timer.
    tokio::time::sleep(Duration::from_secs(80)).await;
    c.send(&PINGREQ).await;
    c.expect(0xd0, &[]).await;
    task.await.unwrap();
    let elapsed = started.elapsed().as_secs_f64();
    assert!((170.0..171.0).contains(&elapsed), "{elapsed}");
    assert_eq!(server.live_connections(), 0);
}

#[tokio::test(start_paused = true)]
async fn token_expiry_closes_an_active_connection() {
    let backend = FakeBackend::with_devices(&["dev1"]);
    *backend.token_ttl.lock().unwrap() = 300;
    let server = server(backend.clone());
    let (mut c, task) = open(&server);
    c.send(&connect(
        "dev1",
        &username("dev1"),
        &password("dev1"),
        false,
        60,
    ))
    .await;
    c.connack(0).await;
    let started = Instant::now();
    // Keep-alive is honoured all along; the token still runs out.
    let pinger = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(30)).await;
            if !c.try_send(&PINGREQ).await {
                return;
            }
        }
    });
    task.await.unwrap();
    let elapsed = started.elapsed().as_secs();
    // The token's `se` is whole seconds, so it lands within the 300th second.
    assert!((299..=300).contains(&elapsed), "{elapsed}");
    pinger.abort();
    assert_eq!(backend.presence(), ["connected:dev1", "disconnected:dev1"]);
}

#[tokio::test(start_paused = true)]
async fn a_client_that_does_not_acknowledge_is_dropped() {
    let backend = FakeBackend::with_devices(&["dev1"]);
    let server = server(backend.clone());
    let (mut c, task) = open(&server);
    c.send(&connect(
        "dev1",
        &username("dev1"),
        &password("dev1"),
        false,
        0,
    ))
    .await;
    c.connack(0).await;
    c.send(&subscribe(
        1,
        &[("$iothub/twin/PATCH/properties/desired/#", 1)],
    ))
    .await;
    c.expect(0x90, &[0, 1, 1]).await;
    backend.set_desired("dev1", serde_json::json!({"a": 1}));
    let n = c.publish().await;
    assert_eq!(n.qos, 1);
    let started = Instant::now();
    task.await.unwrap();
    assert_eq!(started.elapsed().as_secs(), 60);
}

/// MQTT over a WebSocket-shaped pair of message stream and sink.
#[tokio::test]
async fn serves_over_a_websocket_byte_stream() {
    let server = server(FakeBackend::with_devices(&["dev1"]));
    let (to_server, mut from_client) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
    let incoming = futures_util::stream::poll_fn(move |cx| {
        from_client
            .poll_recv(cx)
            .map(|m| m.map(Ok::<_, std::io::Error>))
    });
    let (out_tx, mut out_rx) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
    let outgoing = futures_util::sink::unfold(out_tx, |tx, message: Bytes| async move {
        tx.send(message)
            .map_err(|_| std::io::Error::other("closed"))?;
        Ok::<_, std::io::Error>(tx)
    });
    let ws = WsByteStream::new(incoming, Box::pin(outgoing));
    let task = tokio::spawn(async move { server.serve_connection(ws).await });

    // A CONNECT split across two messages, then two packets in one message.
    let connect = connect("dev1", &username("dev1"), &password("dev1"), false, 60);
    to_server
        .send(Bytes::copy_from_slice(&connect[..7]))
        .unwrap();
    to_server
        .send(Bytes::copy_from_slice(&connect[7..]))
        .unwrap();
    let mut both = publish("$iothub/twin/GET/?$rid=w", 0, 0, b" ");
    both.extend_from_slice(&PINGREQ);
    to_server.send(Bytes::from(both)).unwrap();

    let mut received = Vec::new();
    while !received.ends_with(&[0xd0, 0x00]) {
        received.extend_from_slice(&out_rx.recv().await.unwrap());
    }
    assert_eq!(&received[..4], &[0x20, 2, 0, 0]);
    let topic = b"$iothub/twin/res/200/?$rid=w";
    assert!(received.windows(topic.len()).any(|w| w == topic));
    // The end of the message stream is the end of the connection.
    drop(to_server);
    task.await.unwrap();
}
