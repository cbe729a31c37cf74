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

/// The WebSocket route, to merge into the REST router.
pub fn router(mqtt: MqttServer) -> Router {
    Router::new().route(PATH, get(upgrade)).with_state(mqtt)
}

async fn upgrade(State(mqtt): State<MqttServer>, ws: WebSocketUpgrade) -> Response {
    ws.protocols(["mqtt"]).on_upgrade(move |socket| async move {
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
