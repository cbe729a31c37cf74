//! A lean MQTT-over-TLS device client in hand-built bytes, and raw HTTPS, for
//! tests that need many connections (a reconnect storm) or misbehaving ones
//! (protocol abuse) against a live `twinhub serve`.
//!
//! Devices authenticate with tokens signed by the `device` policy (DeviceConnect),
//! so a test needs no per-device keys.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    dead_code,
    unreachable_pub,
    clippy::cast_possible_truncation
)]

use serde_json::Value;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls;

pub const HOST: &str = "localhost";

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A client TLS configuration trusting the hub's CA, with `alpn` protocols.
pub fn tls(ca_pem: &[u8], alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut &ca_pem[..]) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// A TCP connection to 127.0.0.1:`port` from `source` (any 127.0.0.0/8
/// address: thousands of clients spread their ephemeral ports over several).
pub async fn tcp(port: u16, source: Option<Ipv4Addr>) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    if let Some(ip) = source {
        socket.bind(SocketAddr::new(IpAddr::V4(ip), 0))?;
    }
    let stream = socket
        .connect(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
        .await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Completes TLS over `tcp`.
pub async fn handshake(
    connector: &tokio_rustls::TlsConnector,
    tcp: TcpStream,
) -> std::io::Result<TlsStream<TcpStream>> {
    let name = rustls::pki_types::ServerName::try_from(HOST).unwrap();
    connector.connect(name, tcp).await
}

pub use twinhub_mqtt::client::Incoming;
use twinhub_mqtt::client::{self, ConnectFields};

/// A device token signed with the `device` policy's key.
pub fn device_token(device_policy_key: &str, device: &str) -> String {
    twinhub_core::sas::generate_token(
        &format!("{HOST}/devices/{device}"),
        device_policy_key,
        Some("device"),
        now() + 3600,
    )
    .unwrap()
}

/// The CONNECT the SDKs send (keep-alive 60 s).
pub fn connect_packet(device: &str, password: &str, clean: bool) -> Vec<u8> {
    let username = format!("{HOST}/{device}/?api-version=2021-04-12&DeviceClientType=lean");
    client::connect(&ConnectFields {
        level: 4,
        client_id: device,
        username: &username,
        password,
        clean_session: clean,
        keep_alive: 60,
    })
}

pub use twinhub_mqtt::client::{publish as publish_packet, subscribe as subscribe_packet};

/// The twin and desired filters, at QoS 1 (as the Python SDK subscribes).
pub const TWIN_FILTERS: [(&str, u8); 2] = [
    ("$iothub/twin/res/#", 1),
    ("$iothub/twin/PATCH/properties/desired/#", 1),
];

/// An MQTT connection over TLS.
pub struct Device {
    stream: TlsStream<TcpStream>,
    buf: Vec<u8>,
    next_rid: u64,
}

/// Why a connection attempt failed.
#[derive(Debug)]
pub enum ConnectError {
    Io(std::io::Error),
    /// CONNACK with this non-zero code.
    Refused(u8),
    /// Closed or timed out before a CONNACK.
    NoConnack,
}

impl Device {
    /// Connects `device` (TLS, CONNECT); returns the session-present flag.
    pub async fn connect(
        port: u16,
        source: Option<Ipv4Addr>,
        connector: &tokio_rustls::TlsConnector,
        device: &str,
        password: &str,
        clean: bool,
    ) -> Result<(Self, bool), ConnectError> {
        let tcp = tcp(port, source).await.map_err(ConnectError::Io)?;
        let stream = handshake(connector, tcp).await.map_err(ConnectError::Io)?;
        let mut d = Self {
            stream,
            buf: Vec::new(),
            next_rid: 0,
        };
        d.send(&connect_packet(device, password, clean))
            .await
            .map_err(ConnectError::Io)?;
        match d.recv(Duration::from_secs(15)).await {
            Some((0x20, body)) if body.len() == 2 => match body[1] {
                0 => Ok((d, body[0] == 1)),
                code => Err(ConnectError::Refused(code)),
            },
            _ => Err(ConnectError::NoConnack),
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await?;
        self.stream.flush().await
    }

    /// The next packet, or `None` once the hub closed (or nothing came in `wait`).
    pub async fn recv(&mut self, wait: Duration) -> Option<(u8, Vec<u8>)> {
        tokio::time::timeout(wait, async {
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
        .ok()
        .flatten()
    }

    /// Whether the hub closes the connection within `wait` (packets it sends
    /// meanwhile are skipped).
    pub async fn closed_within(&mut self, wait: Duration) -> bool {
        tokio::time::timeout(wait, async {
            loop {
                let mut chunk = [0u8; 4096];
                match self.stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await
        .is_ok()
    }

    /// The next PUBLISH from the hub (acknowledged if QoS 1), skipping other packets.
    pub async fn publish(&mut self, wait: Duration) -> Option<Incoming> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let (first, body) = self.recv(left).await?;
            let Some(incoming) = client::parse_publish(first, &body) else {
                continue;
            };
            if incoming.qos > 0 {
                self.send(&client::puback(incoming.packet_id)).await.ok()?;
            }
            return Some(incoming);
        }
    }

    /// SUBSCRIBE and wait for its SUBACK.
    pub async fn subscribe(&mut self, filters: &[(&str, u8)]) -> Option<Vec<u8>> {
        self.send(&subscribe_packet(7, filters)).await.ok()?;
        loop {
            let (first, body) = self.recv(Duration::from_secs(10)).await?;
            if first == 0x90 {
                return Some(body[2..].to_vec());
            }
        }
    }

    fn rid(&mut self) -> String {
        self.next_rid += 1;
        format!("r{}", self.next_rid)
    }

    /// A twin request (QoS 0 publish) and its response: (status, topic, body).
    async fn request(&mut self, topic: &str, payload: &[u8]) -> Option<(u16, Incoming)> {
        let rid = self.rid();
        let topic = topic.replace("{rid}", &rid);
        self.send(&publish_packet(&topic, 0, 0, payload))
            .await
            .ok()?;
        let wanted = format!("/?$rid={rid}");
        loop {
            let p = self.publish(Duration::from_secs(10)).await?;
            if let Some(rest) = p.topic.strip_prefix("$iothub/twin/res/") {
                if p.topic.contains(&wanted) {
                    let status = rest.split('/').next()?.parse().ok()?;
                    return Some((status, p));
                }
            }
        }
    }

    /// GET twin: the device's view (`desired`, `reported`).
    pub async fn get_twin(&mut self) -> Option<Value> {
        let (status, p) = self.request("$iothub/twin/GET/?$rid={rid}", b" ").await?;
        (status == 200).then(|| p.json().unwrap())
    }

    /// A reported patch; returns the response status (204 on success).
    pub async fn report(&mut self, patch: &Value) -> Option<u16> {
        let body = serde_json::to_vec(patch).unwrap();
        let (status, _) = self
            .request("$iothub/twin/PATCH/properties/reported/?$rid={rid}", &body)
            .await?;
        Some(status)
    }

    /// The next desired-properties notification.
    pub async fn desired(&mut self, wait: Duration) -> Option<Incoming> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let p = self.publish(left).await?;
            if p.topic
                .starts_with("$iothub/twin/PATCH/properties/desired/")
            {
                return Some(p);
            }
        }
    }
}

/// The resident set size of process `pid`, in KiB (`VmRSS` of /proc/<pid>/status).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// A REST client trusting the hub's CA.
pub fn http_client(ca_pem: &[u8]) -> reqwest::Client {
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem).unwrap())
        .build()
        .unwrap()
}

/// A service token of `policy` for the whole hub.
pub fn service_token(policy: &str, key: &str) -> String {
    twinhub_core::sas::generate_token(HOST, key, Some(policy), now() + 3600).unwrap()
}

/// `GET /metrics` parsed into `name{labels}` → value.
pub async fn metrics(
    client: &reqwest::Client,
    https_port: u16,
    token: &str,
) -> std::collections::HashMap<String, f64> {
    metrics_at(client, &format!("https://{HOST}:{https_port}"), token).await
}

/// `GET {base}/metrics` parsed into `name{labels}` → value.
pub async fn metrics_at(
    client: &reqwest::Client,
    base: &str,
    token: &str,
) -> std::collections::HashMap<String, f64> {
    let text = client
        .get(format!("{base}/metrics"))
        .header("Authorization", token)
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// Creates devices `{prefix}{0..n}` through bulk requests of 100, eight at a time.
pub async fn create_devices(
    client: &reqwest::Client,
    https_port: u16,
    owner_token: &str,
    prefix: &str,
    n: usize,
) {
    let ids: Vec<String> = (0..n).map(|i| format!("{prefix}{i}")).collect();
    let gate = Arc::new(tokio::sync::Semaphore::new(8));
    let requests: Vec<_> = ids
        .chunks(100)
        .map(|chunk| {
            let body: Vec<Value> = chunk
                .iter()
                .map(|id| serde_json::json!({"id": id, "importMode": "create"}))
                .collect();
            let (client, gate) = (client.clone(), Arc::clone(&gate));
            let token = owner_token.to_owned();
            tokio::spawn(async move {
                let _permit = gate.acquire().await.unwrap();
                let response = client
                    .post(format!(
                        "https://{HOST}:{https_port}/devices?api-version=2021-04-12"
                    ))
                    .header("Authorization", token)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                assert!(
                    response.status().is_success(),
                    "bulk create: {}",
                    response.text().await.unwrap()
                );
            })
        })
        .collect();
    for request in requests {
        request.await.unwrap();
    }
}
