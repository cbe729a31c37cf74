//! MQTT over WebSockets: `GET /$iothub/websocket` on the HTTPS listener (spec
//! §2.1). The upgrade must echo `Sec-WebSocket-Protocol: mqtt` (Node's `ws`
//! aborts otherwise); binary messages then carry raw MQTT, served by the same
//! MQTT endpoint — and session registry — as the TLS listener on 8883.

use axum::body::Bytes;
use axum::extract::ws::{Message, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use futures_util::{SinkExt, StreamExt};
use twinhub_mqtt::{MqttServer, WsByteStream};

/// The path the device SDKs open.
pub const PATH: &str = "/$iothub/websocket";

/// The largest WebSocket message, and frame, accepted. The largest MQTT packet the
/// endpoint takes (IoT Hub's 256 KiB message plus headroom) fits with room to
/// spare; tungstenite's defaults (64 MiB a message) would let a client that never
/// authenticates make the hub buffer that much per connection. A larger message
/// closes the connection.
pub const MAX_MESSAGE: usize = 512 * 1024;

/// The WebSocket route, to merge into the REST router.
pub fn router(mqtt: MqttServer) -> Router {
    Router::new().route(PATH, get(upgrade)).with_state(mqtt)
}

async fn upgrade(State(mqtt): State<MqttServer>, ws: WebSocketUpgrade) -> Response {
    let ws = ws
        .protocols(["mqtt"])
        .max_message_size(MAX_MESSAGE)
        .max_frame_size(MAX_MESSAGE);
    ws.on_upgrade(move |socket| async move {
        let (sink, stream) = socket.split();
        let incoming = Box::pin(stream.filter_map(|message| async move {
            match message {
                Ok(Message::Binary(bytes)) => Some(Ok(bytes)),
                // Text is not MQTT; ping, pong and close are the library's business.
                Ok(_) => None,
                Err(e) => Some(Err(e)),
            }
        }));
        let outgoing = Box::pin(
            sink.with(|bytes: Bytes| async move { Ok::<_, axum::Error>(Message::Binary(bytes)) }),
        );
        mqtt.serve_connection(WsByteStream::new(incoming, outgoing))
            .await;
    })
}
