//! The device client: IoT Hub's MQTT twin protocol over TLS (spec §2–§3), built on
//! rumqttc and the topic grammar of the shared core.
//!
//! One background task drives the MQTT connection. It matches twin responses to
//! requests by `$rid`, forwards desired-property patches in order, and after every
//! reconnect fetches the twin again: desired changes made while the device was
//! offline are not queued by the hub (§2.4), so the client hands the application
//! the full desired document when its `$version` moved.

use crate::SdkError;
use rumqttc::{
    AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS, TlsConfiguration, Transport,
};
use serde_json::Value;
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use twinhub_core::connection_string::ConnectionString;
use twinhub_core::sas;
use twinhub_core::topic::{DeviceTopic, Filter, HubTopic, Username};

/// The api-version our username announces.
const API_VERSION: &str = "2021-04-12";
/// Lifetime of the SAS tokens the client makes; the hub closes the connection
/// when one expires, and the client reconnects with a fresh one.
const TOKEN_TTL_SECS: i64 = 3600;
/// How long a twin request may wait for its response.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Connection options.
#[derive(Debug, Clone)]
pub struct DeviceOptions {
    /// A CA certificate (PEM) to trust, e.g. a Twinhub's `ca.pem`. Without it the
    /// public web roots are used.
    pub ca_pem: Option<Vec<u8>>,
    /// The MQTT/TLS port (8883).
    pub port: u16,
    /// MQTT keep-alive.
    pub keep_alive: Duration,
}

impl Default for DeviceOptions {
    fn default() -> Self {
        Self {
            ca_pem: None,
            port: 8883,
            keep_alive: Duration::from_secs(60),
        }
    }
}

/// A change of desired properties, as the application should apply it.
#[derive(Debug, Clone, PartialEq)]
pub enum DesiredUpdate {
    /// A patch from the hub: merge it (`null` deletes). `patch` includes `$version`.
    Patch {
        /// The desired `$version` after the patch.
        version: i64,
        /// The patch.
        patch: Value,
    },
    /// After a reconnect, the whole desired document (with `$version`): replace
    /// the local copy.
    Full {
        /// The desired `$version`.
        version: i64,
        /// The document.
        desired: Value,
    },
}

/// A twin response: status, reported version (PATCH), body.
type Response = (u16, Option<i64>, Vec<u8>);

/// A direct method request from the hub.
#[derive(Debug, Clone, PartialEq)]
pub struct MethodCall {
    /// The method name.
    pub name: String,
    /// The request payload (`null` when the request had none).
    pub payload: Value,
}

/// Answers direct method requests: the status and payload of the answer.
pub type MethodHandler = Arc<dyn Fn(MethodCall) -> (i32, Value) + Send + Sync>;

struct Shared {
    pending: Mutex<HashMap<String, oneshot::Sender<Response>>>,
    next_rid: AtomicU64,
    last_desired_version: AtomicU64,
    methods: Mutex<Option<MethodHandler>>,
}

/// A connected device.
#[derive(Clone)]
pub struct DeviceClient {
    mqtt: AsyncClient,
    shared: Arc<Shared>,
}

struct Credentials {
    host: String,
    device_id: String,
    module_id: Option<String>,
    key: String,
    key_name: Option<String>,
}

impl Credentials {
    fn token(&self) -> Result<String, SdkError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        let resource = match &self.module_id {
            Some(m) => format!("{}/devices/{}/modules/{m}", self.host, self.device_id),
            None => format!("{}/devices/{}", self.host, self.device_id),
        };
        sas::generate_token(
            &resource,
            &self.key,
            self.key_name.as_deref(),
            now + TOKEN_TTL_SECS,
        )
        .ok_or_else(|| SdkError::Config("the device key is not base64".into()))
    }

    fn username(&self) -> String {
        Username {
            host: &self.host,
            device_id: &self.device_id,
            module_id: self.module_id.as_deref(),
            api_version: Cow::Borrowed(API_VERSION),
            client_type: Cow::Borrowed(concat!("twinhub-sdk/", env!("CARGO_PKG_VERSION"))),
            model_id: None,
        }
        .to_username()
    }
}

fn tls_config(ca_pem: Option<&[u8]>) -> Result<Arc<rustls::ClientConfig>, SdkError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_pem {
        Some(pem) => {
            for cert in rustls_pemfile::certs(&mut &pem[..]) {
                let cert =
                    cert.map_err(|e| SdkError::Config(format!("bad CA certificate: {e}")))?;
                roots
                    .add(cert)
                    .map_err(|e| SdkError::Config(format!("bad CA certificate: {e}")))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| SdkError::Config(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}

impl DeviceClient {
    /// Connects with a device or module connection string
    /// (`HostName=..;DeviceId=..[;ModuleId=..];SharedAccessKey=..`, optionally
    /// `GatewayHostName` and `SharedAccessKeyName`). Returns the client and the stream of desired
    /// updates; the connection is kept up, reconnecting, until the client and the
    /// stream are dropped.
    pub async fn connect(
        connection_string: &str,
        options: DeviceOptions,
    ) -> Result<(Self, mpsc::UnboundedReceiver<DesiredUpdate>), SdkError> {
        let cs =
            ConnectionString::parse(connection_string).map_err(|e| SdkError::Config(e.message))?;
        let field = |k: &str| {
            cs.require(k)
                .map(str::to_owned)
                .map_err(|e| SdkError::Config(e.message))
        };
        let creds = Credentials {
            host: field("HostName")?,
            device_id: field("DeviceId")?,
            module_id: cs.get("ModuleId").map(str::to_owned),
            key: field("SharedAccessKey")?,
            key_name: cs.get("SharedAccessKeyName").map(str::to_owned),
        };
        let endpoint = cs.get("GatewayHostName").unwrap_or(&creds.host).to_owned();
        let client_id = match &creds.module_id {
            Some(m) => format!("{}/{m}", creds.device_id),
            None => creds.device_id.clone(),
        };
        let mut mqtt_options = MqttOptions::new(client_id, endpoint, options.port);
        mqtt_options
            .set_keep_alive(options.keep_alive)
            .set_clean_session(false)
            .set_credentials(creds.username(), creds.token()?)
            .set_max_packet_size(300 * 1024, 300 * 1024)
            .set_transport(Transport::Tls(TlsConfiguration::Rustls(tls_config(
                options.ca_pem.as_deref(),
            )?)));
        let (mqtt, mut event_loop) = AsyncClient::new(mqtt_options, 64);
        let shared = Arc::new(Shared {
            pending: Mutex::new(HashMap::new()),
            next_rid: AtomicU64::new(1),
            last_desired_version: AtomicU64::new(0),
            methods: Mutex::new(None),
        });
        // The first CONNACK decides whether the credentials work at all.
        loop {
            match event_loop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => break,
                Ok(_) => {}
                Err(e) => return Err(SdkError::Transport(format!("cannot connect: {e}"))),
            }
        }
        let client = Self { mqtt, shared };
        for filter in [Filter::TwinResponses, Filter::DesiredPatches] {
            client
                .mqtt
                .subscribe(filter.to_filter(), QoS::AtLeastOnce)
                .await
                .map_err(|e| SdkError::Transport(e.to_string()))?;
        }
        let (updates, rx) = mpsc::unbounded_channel();
        tokio::spawn(drive(event_loop, client.clone(), creds, updates));
        Ok((client, rx))
    }

    async fn request(
        &self,
        topic: impl FnOnce(&str) -> String,
        payload: Vec<u8>,
    ) -> Result<Response, SdkError> {
        let rid = self
            .shared
            .next_rid
            .fetch_add(1, Ordering::Relaxed)
            .to_string();
        let (tx, rx) = oneshot::channel();
        lock(&self.shared.pending).insert(rid.clone(), tx);
        let sent = self
            .mqtt
            .publish(topic(&rid), QoS::AtLeastOnce, false, payload)
            .await;
        if let Err(e) = sent {
            lock(&self.shared.pending).remove(&rid);
            return Err(SdkError::Transport(e.to_string()));
        }
        match tokio::time::timeout(REQUEST_TIMEOUT, rx).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(_)) => Err(SdkError::Transport("the connection task stopped".into())),
            Err(_) => {
                lock(&self.shared.pending).remove(&rid);
                Err(SdkError::Transport("no twin response within 30 s".into()))
            }
        }
    }

    /// Reads the twin: `{"desired":{..,"$version"},"reported":{..,"$version"}}`.
    pub async fn get_twin(&self) -> Result<Value, SdkError> {
        let (status, _, body) = self
            .request(|rid| DeviceTopic::TwinGet { rid }.to_topic(), b" ".to_vec())
            .await?;
        let twin = check(status, &body)?;
        if let Some(v) = twin["desired"]["$version"].as_u64() {
            self.shared
                .last_desired_version
                .fetch_max(v, Ordering::Relaxed);
        }
        Ok(twin)
    }

    /// Merges `patch` into the reported properties; returns the new reported `$version`.
    pub async fn patch_reported(&self, patch: &Value) -> Result<i64, SdkError> {
        let body = serde_json::to_vec(patch).map_err(|e| SdkError::Config(e.to_string()))?;
        let (status, version, body) = self
            .request(
                |rid| DeviceTopic::ReportedPatch { rid, version: None }.to_topic(),
                body,
            )
            .await?;
        check(status, &body)?;
        version.ok_or_else(|| SdkError::Protocol("the hub's 204 carried no $version".into()))
    }

    /// Answers direct methods with `handler` from now on (replacing any earlier
    /// one): subscribes to method requests, and answers each on the response
    /// topic with the status and payload the handler returns. The handler runs on
    /// the connection's task, so it should return quickly.
    pub async fn on_methods(
        &self,
        handler: impl Fn(MethodCall) -> (i32, Value) + Send + Sync + 'static,
    ) -> Result<(), SdkError> {
        *lock(&self.shared.methods) = Some(Arc::new(handler));
        self.mqtt
            .subscribe(Filter::MethodRequests.to_filter(), QoS::AtLeastOnce)
            .await
            .map_err(|e| SdkError::Transport(e.to_string()))
    }

    /// Disconnects.
    pub async fn disconnect(&self) -> Result<(), SdkError> {
        self.mqtt
            .disconnect()
            .await
            .map_err(|e| SdkError::Transport(e.to_string()))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Turns a twin response into its JSON body, or the hub's error.
fn check(status: u16, body: &[u8]) -> Result<Value, SdkError> {
    let value = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        serde_json::from_slice(body)
            .map_err(|e| SdkError::Protocol(format!("twin response is not JSON: {e}")))?
    };
    if status < 300 {
        return Ok(value);
    }
    Err(SdkError::Hub {
        status,
        code: value["errorCode"].to_string(),
        message: value["message"].as_str().unwrap_or_default().to_owned(),
    })
}

/// Drives the connection: dispatches incoming publishes, reconnects with fresh
/// tokens and resynchronises desired properties after each reconnect.
async fn drive(
    mut event_loop: EventLoop,
    client: DeviceClient,
    creds: Credentials,
    updates: mpsc::UnboundedSender<DesiredUpdate>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        if updates.is_closed() && Arc::strong_count(&client.shared) <= 1 {
            return;
        }
        match event_loop.poll().await {
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                backoff = Duration::from_millis(100);
                match HubTopic::parse(&publish.topic) {
                    Ok(HubTopic::TwinResponse {
                        status,
                        rid,
                        version,
                    }) => {
                        if let Some(tx) = lock(&client.shared.pending).remove(rid) {
                            let _ = tx.send((status, version, publish.payload.to_vec()));
                        }
                    }
                    Ok(HubTopic::DesiredPatch { version }) => {
                        let Ok(patch) = serde_json::from_slice::<Value>(&publish.payload) else {
                            tracing::warn!("desired patch is not JSON; ignored");
                            continue;
                        };
                        let seen = client
                            .shared
                            .last_desired_version
                            .fetch_max(version.max(0).unsigned_abs(), Ordering::Relaxed);
                        if version.unsigned_abs() > seen
                            && updates
                                .send(DesiredUpdate::Patch { version, patch })
                                .is_err()
                        {
                            return;
                        }
                    }
                    Ok(HubTopic::MethodRequest { name, rid }) => {
                        answer_method(&client, name, rid, &publish.payload);
                    }
                    _ => {}
                }
            }
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                backoff = Duration::from_millis(100);
                let client = client.clone();
                let updates = updates.clone();
                tokio::spawn(async move { resync(client, updates, !ack.session_present).await });
            }
            Ok(_) => {}
            Err(e) => {
                if matches!(
                    e,
                    rumqttc::ConnectionError::MqttState(rumqttc::StateError::Deserialization(_))
                ) {
                    tracing::warn!(error = %e, "protocol error from the hub");
                }
                tracing::debug!(error = %e, ?backoff, "connection lost; reconnecting");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
                match creds.token() {
                    Ok(token) => {
                        event_loop
                            .mqtt_options
                            .set_credentials(creds.username(), token);
                    }
                    Err(e) => tracing::error!(error = %e, "cannot renew the token"),
                }
            }
        }
    }
}

/// Runs the method handler, if any, and publishes its answer (without one the
/// request is dropped, and the caller times out, as with IoT Hub's SDKs).
fn answer_method(client: &DeviceClient, name: &str, rid: &str, payload: &[u8]) {
    let Some(handler) = lock(&client.shared.methods).clone() else {
        return;
    };
    let payload = if payload.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        serde_json::from_slice(payload)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(payload).into_owned()))
    };
    let (status, answer) = handler(MethodCall {
        name: name.to_owned(),
        payload,
    });
    let topic = DeviceTopic::MethodResponse { status, rid }.to_topic();
    let body = answer.to_string().into_bytes();
    if let Err(e) = client.mqtt.try_publish(topic, QoS::AtMostOnce, false, body) {
        tracing::warn!(error = %e, "cannot send a method answer");
    }
}

/// After a reconnect: subscribe again if the hub lost the session, then fetch the
/// twin and hand the application the full desired document if it moved.
async fn resync(
    client: DeviceClient,
    updates: mpsc::UnboundedSender<DesiredUpdate>,
    resubscribe: bool,
) {
    if resubscribe {
        let methods = lock(&client.shared.methods).is_some();
        let filters = [Filter::TwinResponses, Filter::DesiredPatches]
            .into_iter()
            .chain(methods.then_some(Filter::MethodRequests));
        for filter in filters {
            let _ = client
                .mqtt
                .subscribe(filter.to_filter(), QoS::AtLeastOnce)
                .await;
        }
    }
    let before = client.shared.last_desired_version.load(Ordering::Relaxed);
    match client.get_twin().await {
        Ok(twin) => {
            let version = twin["desired"]["$version"].as_i64().unwrap_or(0);
            if version.unsigned_abs() > before {
                let _ = updates.send(DesiredUpdate::Full {
                    version,
                    desired: twin["desired"].clone(),
                });
            }
        }
        Err(e) => tracing::warn!(error = %e, "twin resync after reconnect failed"),
    }
}
