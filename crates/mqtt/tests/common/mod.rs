//! Test kit: an in-memory backend, a TLS endpoint on 127.0.0.1:0, and a raw
//! client speaking hand-built MQTT bytes.
// Test code: a failed unwrap is a failed test. Each test binary includes this
// kit and uses part of it (re-exports included).
#![allow(
    dead_code,
    unused_imports,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used
)]

use futures_util::future::BoxFuture;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio_rustls::rustls;
use twinhub_core::{HubError, Timestamp};
use twinhub_mqtt::{
    DeviceBackend, DeviceEvent, DeviceEvents, Identity, MqttServer, ServerConfig, Subscriptions,
};

pub const HOST: &str = "localhost";

pub fn password(device: &str) -> String {
    format!("SharedAccessSignature sr={HOST}%2Fdevices%2F{device}&sig=good&se=1")
}

pub fn username(device: &str) -> String {
    format!("{HOST}/{device}/?api-version=2021-04-12&DeviceClientType=test")
}

#[derive(Default)]
struct Device {
    desired: Map<String, Value>,
    desired_version: i64,
    reported: Map<String, Value>,
    reported_version: i64,
}

#[derive(Default)]
struct State {
    devices: HashMap<String, Device>,
    watchers: HashMap<String, Vec<mpsc::UnboundedSender<DeviceEvent>>>,
    presence: Vec<String>,
    sessions: HashMap<String, Subscriptions>,
    method_responses: Vec<(String, String, i32, Vec<u8>)>,
    readiness: Vec<String>,
}

/// An in-memory hub: devices whose password is [`password`], twins with
/// versions, desired-change fan-out, stored sessions, and a log of presence calls.
pub struct FakeBackend {
    state: Mutex<State>,
    /// Token lifetime in seconds from the CONNECT.
    pub token_ttl: Mutex<i64>,
    /// While false, session saves stay pending (not yet durable).
    pub saves_durable: watch::Sender<bool>,
    /// Session saves fail (storage failed).
    pub saves_fail: std::sync::atomic::AtomicBool,
}

impl Default for FakeBackend {
    fn default() -> Self {
        Self {
            state: Mutex::default(),
            token_ttl: Mutex::default(),
            saves_durable: watch::channel(true).0,
            saves_fail: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

impl FakeBackend {
    pub fn with_devices(ids: &[&str]) -> Arc<Self> {
        let backend = Self::default();
        *backend.token_ttl.lock().unwrap() = 3600;
        {
            let mut state = backend.state.lock().unwrap();
            for id in ids {
                state.devices.insert(
                    (*id).to_owned(),
                    Device {
                        desired_version: 1,
                        reported_version: 1,
                        ..Device::default()
                    },
                );
            }
        }
        Arc::new(backend)
    }

    /// A service-side desired patch: applies it and notifies watchers.
    pub fn set_desired(&self, device: &str, patch: Value) -> i64 {
        let mut state = self.state.lock().unwrap();
        let d = state.devices.get_mut(device).unwrap();
        d.desired_version += 1;
        let version = d.desired_version;
        let mut payload = patch.as_object().cloned().unwrap_or_default();
        for (k, v) in &payload {
            if v.is_null() {
                d.desired.remove(k);
            } else {
                d.desired.insert(k.clone(), v.clone());
            }
        }
        payload.insert("$version".into(), json!(version));
        let event = DeviceEvent::Desired {
            version,
            payload: Value::Object(payload),
        };
        for tx in state.watchers.get(device).into_iter().flatten() {
            let _ = tx.send(event.clone());
        }
        version
    }

    /// A direct method request, published to the identity's watchers.
    pub fn send_method(&self, client_id: &str, name: &str, rid: &str, payload: &str) {
        let state = self.state.lock().unwrap();
        let event = DeviceEvent::MethodRequest {
            name: name.into(),
            rid: rid.into(),
            payload: payload.into(),
        };
        for tx in state.watchers.get(client_id).into_iter().flatten() {
            let _ = tx.send(event.clone());
        }
    }

    /// The method answers received: (client id, rid, status, body), in order.
    pub fn method_responses(&self) -> Vec<(String, String, i32, Vec<u8>)> {
        self.state.lock().unwrap().method_responses.clone()
    }

    pub fn kick(&self, device: &str) {
        let state = self.state.lock().unwrap();
        for tx in state.watchers.get(device).into_iter().flatten() {
            let _ = tx.send(DeviceEvent::Kick);
        }
    }

    pub fn reported(&self, device: &str) -> (Value, i64) {
        let state = self.state.lock().unwrap();
        let d = &state.devices[device];
        (Value::Object(d.reported.clone()), d.reported_version)
    }

    /// The stored sessions, by client id.
    pub fn stored_sessions(&self) -> HashMap<String, Subscriptions> {
        self.state.lock().unwrap().sessions.clone()
    }

    /// "dev1:true", "dev1:false": what the endpoint said about taking method
    /// requests, in call order.
    pub fn readiness(&self) -> Vec<String> {
        self.state.lock().unwrap().readiness.clone()
    }

    /// "connected:dev1", "disconnected:dev1", in call order.
    pub fn presence(&self) -> Vec<String> {
        self.state.lock().unwrap().presence.clone()
    }
}

impl DeviceBackend for FakeBackend {
    fn authenticate(&self, id: &Identity, pw: &str, now: Timestamp) -> Result<i64, HubError> {
        let state = self.state.lock().unwrap();
        if !state.devices.contains_key(&id.device_id) || pw != password(&id.device_id) {
            return Err(HubError::unauthorized());
        }
        Ok(now.unix_secs() + *self.token_ttl.lock().unwrap())
    }

    fn twin_for_device(&self, id: &Identity) -> Result<Value, HubError> {
        let state = self.state.lock().unwrap();
        let d = state
            .devices
            .get(&id.device_id)
            .ok_or_else(|| HubError::device_not_found(&id.device_id))?;
        let mut desired = d.desired.clone();
        desired.insert("$version".into(), json!(d.desired_version));
        let mut reported = d.reported.clone();
        reported.insert("$version".into(), json!(d.reported_version));
        Ok(json!({"desired": desired, "reported": reported}))
    }

    fn patch_reported(
        &self,
        id: &Identity,
        patch: Value,
        expected: Option<i64>,
    ) -> BoxFuture<'static, Result<i64, HubError>> {
        let result = (|| {
            let mut state = self.state.lock().unwrap();
            let d = state
                .devices
                .get_mut(&id.device_id)
                .ok_or_else(|| HubError::device_not_found(&id.device_id))?;
            let Value::Object(patch) = patch else {
                return Err(HubError::invalid("not an object"));
            };
            if expected.is_some_and(|v| v != d.reported_version) {
                return Err(HubError::precondition("version mismatch"));
            }
            d.reported.extend(patch);
            d.reported_version += 1;
            Ok(d.reported_version)
        })();
        Box::pin(async move {
            // A durable write takes a moment: resolve on a later poll.
            tokio::task::yield_now().await;
            result
        })
    }

    fn watch(&self, id: &Identity) -> DeviceEvents {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut state = self.state.lock().unwrap();
        let list = state.watchers.entry(id.device_id.clone()).or_default();
        list.retain(|t| !t.is_closed());
        list.push(tx);
        twinhub_mqtt::event_stream(rx, |e| e)
    }

    fn connected(&self, id: &Identity, _now: Timestamp) {
        self.state
            .lock()
            .unwrap()
            .presence
            .push(format!("connected:{id}"));
    }

    fn disconnected(&self, id: &Identity, _now: Timestamp) {
        let mut state = self.state.lock().unwrap();
        state.presence.push(format!("disconnected:{id}"));
    }

    fn activity(&self, _id: &Identity, _now: Timestamp) {}

    fn methods_ready(&self, id: &Identity, ready: bool) {
        let mut state = self.state.lock().unwrap();
        state.readiness.push(format!("{id}:{ready}"));
    }

    fn method_response(&self, id: &Identity, rid: &str, status: i32, body: &[u8]) {
        let mut state = self.state.lock().unwrap();
        state
            .method_responses
            .push((id.client_id(), rid.into(), status, body.to_vec()));
    }

    fn stored_session(&self, id: &Identity) -> Option<Subscriptions> {
        self.state
            .lock()
            .unwrap()
            .sessions
            .get(&id.client_id())
            .copied()
    }

    fn save_session(
        &self,
        id: &Identity,
        subscriptions: Option<Subscriptions>,
    ) -> BoxFuture<'static, Result<(), HubError>> {
        let mut state = self.state.lock().unwrap();
        match subscriptions {
            Some(s) => state.sessions.insert(id.client_id(), s),
            None => state.sessions.remove(&id.client_id()),
        };
        let fail = self.saves_fail.load(std::sync::atomic::Ordering::SeqCst);
        let mut durable = self.saves_durable.subscribe();
        Box::pin(async move {
            // Durable a moment later, as a commit would be.
            tokio::task::yield_now().await;
            let _ = durable.wait_for(|d| *d).await;
            if fail {
                return Err(HubError::new(
                    twinhub_core::ErrorCode::ServiceUnavailable,
                    "storage failed",
                ));
            }
            Ok(())
        })
    }
}

/// A self-signed certificate for `localhost` and `127.0.0.1`.
pub fn tls_pair() -> (
    tokio_rustls::TlsAcceptor,
    tokio_rustls::TlsConnector,
    Arc<rustls::ClientConfig>,
) {
    let rcgen::CertifiedKey { cert, key_pair } =
        rcgen::generate_simple_self_signed(vec![HOST.to_owned(), "127.0.0.1".to_owned()]).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(key_pair.serialize_der().into());
    let server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], key)
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.der().clone()).unwrap();
    let client = Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    (
        tokio_rustls::TlsAcceptor::from(Arc::new(server)),
        tokio_rustls::TlsConnector::from(client.clone()),
        client,
    )
}

/// An endpoint serving MQTT over TLS on 127.0.0.1:0.
pub struct TestHub {
    pub addr: SocketAddr,
    pub backend: Arc<FakeBackend>,
    pub server: MqttServer,
    pub connector: tokio_rustls::TlsConnector,
    pub client_tls: Arc<rustls::ClientConfig>,
    pub stop: watch::Sender<bool>,
}

impl TestHub {
    pub async fn start(devices: &[&str]) -> Self {
        Self::start_with(devices, ServerConfig::default()).await
    }

    pub async fn start_with(devices: &[&str], config: ServerConfig) -> Self {
        let backend = FakeBackend::with_devices(devices);
        let server = MqttServer::with_config(backend.clone(), config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (acceptor, connector, client_tls) = tls_pair();
        let (stop, stopped) = watch::channel(false);
        let s = server.clone();
        tokio::spawn(async move { s.serve(listener, Some(acceptor), stopped).await });
        Self {
            addr,
            backend,
            server,
            connector,
            client_tls,
            stop,
        }
    }

    /// A TLS connection with nothing sent yet.
    pub async fn raw(&self) -> Raw<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
        let tcp = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from(HOST).unwrap();
        Raw::new(self.connector.connect(name, tcp).await.unwrap())
    }

    /// A connected device session (CONNACK 0 checked); returns the session-present flag.
    pub async fn connect(
        &self,
        device: &str,
        clean: bool,
    ) -> (
        Raw<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>,
        bool,
    ) {
        let mut raw = self.raw().await;
        raw.send(&connect(
            device,
            &username(device),
            &password(device),
            clean,
            60,
        ))
        .await;
        let present = raw.connack(0).await;
        (raw, present)
    }

    /// Waits until the endpoint counts `n` live connections.
    pub async fn wait_live(&self, n: usize) {
        for _ in 0..200 {
            if self.server.live_connections() == n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "live connections: {} != {n}",
            self.server.live_connections()
        );
    }
}

use twinhub_mqtt::client::{self, ConnectFields};
pub use twinhub_mqtt::client::{
    packet, puback, publish, subscribe, unsubscribe, Incoming, DISCONNECT, PINGREQ,
};

/// CONNECT, MQTT 3.1.1, with username and password.
pub fn connect(
    client_id: &str,
    username: &str,
    password: &str,
    clean: bool,
    keep_alive: u16,
) -> Vec<u8> {
    connect_level(4, client_id, username, password, clean, keep_alive)
}

pub fn connect_level(
    level: u8,
    client_id: &str,
    username: &str,
    password: &str,
    clean: bool,
    keep_alive: u16,
) -> Vec<u8> {
    client::connect(&ConnectFields {
        level,
        client_id,
        username,
        password,
        clean_session: clean,
        keep_alive,
    })
}

/// A client speaking raw bytes.
pub struct Raw<S> {
    stream: S,
    buf: Vec<u8>,
}

const WAIT: Duration = Duration::from_secs(5);

impl<S: AsyncRead + AsyncWrite + Unpin> Raw<S> {
    pub fn new(stream: S) -> Self {
        Self {
            stream,
            buf: Vec::new(),
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
        self.stream.flush().await.unwrap();
    }

    /// Sends, tolerating a connection the server already closed.
    pub async fn try_send(&mut self, bytes: &[u8]) -> bool {
        self.stream.write_all(bytes).await.is_ok() && self.stream.flush().await.is_ok()
    }

    /// The next packet (first byte, body), or `None` once the server closed.
    pub async fn recv(&mut self) -> Option<(u8, Vec<u8>)> {
        tokio::time::timeout(WAIT, async {
            loop {
                if let Some(p) =
                    client::take_packet(&mut self.buf).expect("the hub frames its packets")
                {
                    return Some(p);
                }
                let mut chunk = [0u8; 4096];
                match self.stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return None,
                    Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                }
            }
        })
        .await
        .expect("no packet and no close within 5 s")
    }

    /// Whether the server closes the connection (rather than sending anything).
    pub async fn closed(&mut self) -> bool {
        self.recv().await.is_none()
    }

    /// Expects a CONNACK with `code`; returns session-present.
    pub async fn connack(&mut self, code: u8) -> bool {
        let (first, body) = self.recv().await.expect("CONNACK");
        assert_eq!(first, 0x20, "not a CONNACK");
        assert_eq!(body.len(), 2);
        assert_eq!(body[1], code, "CONNACK code");
        body[0] == 1
    }

    /// Expects a PUBLISH.
    pub async fn publish(&mut self) -> Incoming {
        let (first, body) = self.recv().await.expect("a PUBLISH, got a close");
        client::parse_publish(first, &body)
            .unwrap_or_else(|| panic!("not a PUBLISH: {first:#x} {body:?}"))
    }

    /// Expects exactly `packet`.
    pub async fn expect(&mut self, first: u8, body: &[u8]) {
        let got = self.recv().await.expect("a packet, got a close");
        assert_eq!(got, (first, body.to_vec()));
    }
}
