//! MQTT over WebSockets at the socket level: a client that never authenticates
//! cannot make the hub buffer a large WebSocket message.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::NoDevices;
use futures_util::{SinkExt, StreamExt};
use std::sync::Arc;
use std::time::Duration;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use twinhub_mqtt::MqttServer;

/// Serves the WebSocket route on 127.0.0.1:0 (plain TCP: TLS is the listener's
/// business, not the route's); returns its address.
async fn serve() -> std::net::SocketAddr {
    let mqtt = MqttServer::new(Arc::new(NoDevices));
    let app = twinhub_http::websocket::router(mqtt);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

async fn connect(
    addr: std::net::SocketAddr,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let mut request = format!("ws://{addr}{}", twinhub_http::websocket::PATH)
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", "mqtt".parse().unwrap());
    let (ws, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(response.headers()["sec-websocket-protocol"], "mqtt");
    ws
}

/// Whether the server ends the connection within 5 s (a close frame, an error or
/// the end of the stream).
async fn closed(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) -> bool {
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await
    .is_ok()
}

#[tokio::test]
async fn a_message_over_the_limit_closes_the_connection() {
    let addr = serve().await;
    let mut ws = connect(addr).await;
    // Text, which the MQTT endpoint ignores: only the size limit can close the
    // connection before the 10 s CONNECT timeout.
    let big = "x".repeat(twinhub_http::websocket::MAX_MESSAGE + 1);
    // The server may close before the whole message is written.
    let _ = ws.send(Message::Text(big.into())).await;
    assert!(closed(&mut ws).await, "an oversized message was accepted");
}

#[tokio::test]
async fn a_message_within_the_limit_reaches_the_mqtt_endpoint() {
    let addr = serve().await;
    let mut ws = connect(addr).await;
    // A CONNECT the backend refuses: the endpoint answers CONNACK 5 in a binary
    // message, then closes.
    let connect = twinhub_mqtt::client::connect(&twinhub_mqtt::client::ConnectFields {
        level: 4,
        client_id: "d1",
        username: "testhub.local/d1/?api-version=2021-04-12",
        password: "SharedAccessSignature sr=x&sig=y&se=1",
        clean_session: false,
        keep_alive: 60,
    });
    ws.send(Message::Binary(connect.into())).await.unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(reply, Message::Binary(vec![0x20, 0x02, 0x00, 0x05].into()));
    assert!(closed(&mut ws).await);
}
