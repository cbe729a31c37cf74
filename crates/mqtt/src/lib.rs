//! Twinhub's MQTT device endpoint: MQTT 3.1.1 over TLS (port 8883) and over
//! WebSockets, speaking IoT Hub's twin topics to the official device SDKs.
//!
//! Bytes, rules and I/O are separate layers: the codec knows bytes, the session
//! knows MQTT rules and IoT Hub topics and is pure, and the driver moves bytes
//! and calls the hub through [`DeviceBackend`].
//!
//! # Layout
//! - [`packet`]: the packets, as the hub receives ([`ClientPacket`]) and sends
//!   ([`ServerPacket`]) them.
//! - [`decode`]: strict decoding with a size limit; every error names the MQTT
//!   3.1.1 rule it breaks.
//! - [`encode`]: encoding of the hub's packets.
//! - [`connect`]: the handshake's pure half: a CONNECT to a [`Login`] (identity
//!   from the username, client id check) or to the CONNACK code refusing it.
//! - [`session`]: the pure session state machine: QoS rules, topic and filter
//!   authorization, twin requests as actions, twin responses and desired
//!   notifications, QoS 1 packet ids and acknowledgements, keep-alive and token
//!   deadlines on a clock the caller passes in.
//! - [`backend`]: [`DeviceBackend`], the trait through which the endpoint reaches
//!   the hub (authentication, twins, desired-change events, presence).
//! - `registry`: one live connection per identity (a new CONNECT kicks the old);
//!   it reads and writes clean-session-0 subscriptions through the backend,
//!   which keeps them across connections and restarts.
//! - [`metrics`]: the endpoint's counters (unauthenticated sockets and the cap on
//!   them, CONNACK codes, notifications, why connections ended).
//! - `connection`: the per-connection task: handshake with timeout, then one
//!   `select!` loop over socket, backend, timers and kicks.
//! - `server`: [`MqttServer`]: the TLS accept loop (with the cap on sockets not
//!   yet authenticated) and the entry point for streams accepted elsewhere.
//! - [`ws`]: [`WsByteStream`], the byte-stream view of a WebSocket for MQTT over
//!   WebSockets.
//! - [`client`]: the client side as bytes (what devices send, the hub's packets
//!   as they read them), never used by the hub: one encoder for the raw-MQTT
//!   tests, the load generator and the fuzzer, checked against [`decode`].
//!
//! # Why our own codec
//! The maintained MQTT 3.1.1 codecs in Rust live inside client crates
//! (`rumqttc::mqttbytes::v4`) or are unmaintained (`mqttbytes`, last released in
//! 2021). The client one would bring a client runtime into the hub, is lenient
//! where a server must be strict (reserved flag bits, empty SUBSCRIBE, wildcard
//! topics in PUBLISH) and cannot say which rule a packet broke. The subset a
//! server needs is small (decode seven client packets, encode six), so it is
//! written here, strict, with property tests; `rumqttc` is used in tests only,
//! as an independent client to check the codec against.
//!
//! # Wiring
//! The binary builds one [`MqttServer`] over an adapter implementing
//! [`DeviceBackend`] for the hub, spawns [`MqttServer::serve`] with the TCP
//! listener for 8883, the TLS acceptor and the shutdown signal, and gives a clone
//! to the HTTP adapter, which calls [`MqttServer::serve_connection`] with a
//! [`WsByteStream`] for each upgraded `/$iothub/websocket` request.

pub mod backend;
pub mod client;
pub mod connect;
mod connection;
pub mod decode;
pub mod encode;
pub mod metrics;
pub mod packet;
mod registry;
mod server;
pub mod session;
pub mod ws;

pub use backend::{event_stream, DeviceBackend, DeviceEvent, DeviceEvents, Identity};
pub use connect::Login;
pub use connection::{MAX_PENDING_PATCHES, MAX_WRITE_BACKLOG};
pub use metrics::{CloseReason, MqttMetrics};
pub use packet::{ClientPacket, QoS, ServerPacket};
pub use server::{MqttServer, ServerConfig, DEFAULT_MAX_UNAUTHENTICATED};
pub use session::{Session, Subscriptions};
pub use ws::WsByteStream;
