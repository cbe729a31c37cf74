//! Security against a live `twinhub serve`: who may call what over REST, which
//! tokens are refused, device isolation over MQTT, what happens to live sessions
//! when a device is disabled, deleted or re-keyed, file permissions of the data
//! directory, and secrets kept out of the logs.
//!
//! Everything goes through the sockets a client would use: raw HTTPS requests
//! with hand-made `Authorization` headers (reqwest) and a raw MQTT client
//! (rumqttc) trusting the data directory's `ca.pem`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::Hub;
use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, EventLoop, MqttOptions, Packet, QoS,
    TlsConfiguration, Transport,
};
use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use twinhub_core::sas::generate_token;

const HOST: &str = "localhost";
const POLICIES: [&str; 5] = [
    "iothubowner",
    "service",
    "device",
    "registryRead",
    "registryReadWrite",
];
/// A well-formed key that signs nothing of this hub's.
const FORGED_KEY: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

fn now() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

/// What a test needs to talk to a hub: its ports, CA and keys.
struct Target {
    data: std::path::PathBuf,
    https_port: u16,
    mqtts_port: u16,
    http: reqwest::Client,
}

impl Target {
    fn new(data: &Path, https_port: u16, mqtts_port: u16) -> Self {
        let ca = std::fs::read(data.join("ca.pem")).unwrap();
        let http = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        Self {
            data: data.to_path_buf(),
            https_port,
            mqtts_port,
            http,
        }
    }

    fn of(hub: &Hub) -> Self {
        Self::new(&hub.data, hub.https_port, hub.mqtts_port)
    }

    fn hub_json(&self) -> Value {
        serde_json::from_slice(&std::fs::read(self.data.join("hub.json")).unwrap()).unwrap()
    }

    /// A policy's key from `hub.json` (`primaryKey` or `secondaryKey`).
    fn policy_key(&self, policy: &str, which: &str) -> String {
        let hub = self.hub_json();
        let p = hub["policies"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == policy)
            .unwrap();
        p[which].as_str().unwrap().to_owned()
    }

    /// A service token for `policy`, scoped to the whole hub, valid for an hour.
    fn token(&self, policy: &str) -> String {
        generate_token(
            HOST,
            &self.policy_key(policy, "primaryKey"),
            Some(policy),
            now() + 3600,
        )
        .unwrap()
    }

    /// A raw REST call: status, headers and JSON body (`Null` when empty).
    async fn call(
        &self,
        method: &str,
        path: &str,
        authorization: Option<&str>,
        body: Option<&Value>,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let sep = if path.contains('?') { '&' } else { '?' };
        let url = format!(
            "https://{HOST}:{}{path}{sep}api-version=2021-04-12",
            self.https_port
        );
        let mut request = self
            .http
            .request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), url);
        // Writes to existing resources carry `If-Match: "*"` as the SDKs send it;
        // a device create (`PUT /devices/{id}`) carries none.
        let create = method == "PUT" && path.starts_with("/devices/");
        if matches!(method, "PUT" | "PATCH" | "DELETE") && !create {
            request = request.header("If-Match", "\"*\"");
        }
        if let Some(a) = authorization {
            request = request.header("Authorization", a);
        }
        if let Some(b) = body {
            request = request.json(b);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, headers, body)
    }

    /// A call with the owner's token that must succeed.
    async fn owner(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let token = self.token("iothubowner");
        let (status, _, body) = self.call(method, path, Some(&token), body).await;
        assert!(
            (200..300).contains(&status),
            "{method} {path}: {status} {body}"
        );
        body
    }

    /// Whether a device exists.
    async fn exists(&self, id: &str) -> bool {
        let token = self.token("iothubowner");
        let (status, _, _) = self
            .call("GET", &format!("/devices/{id}"), Some(&token), None)
            .await;
        status == 200
    }

    /// Creates a device and returns its primary key.
    async fn create_device(&self, id: &str) -> String {
        let d = self
            .owner(
                "PUT",
                &format!("/devices/{id}"),
                Some(&json!({"deviceId": id})),
            )
            .await;
        d["authentication"]["symmetricKey"]["primaryKey"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Updates a device (`If-Match: "*"`).
    async fn update_device(&self, id: &str, body: &Value) -> Value {
        let token = self.token("iothubowner");
        let url = format!(
            "https://{HOST}:{}/devices/{id}?api-version=2021-04-12",
            self.https_port
        );
        let response = self
            .http
            .put(url)
            .header("Authorization", token)
            .header("If-Match", "\"*\"")
            .json(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
        response.json().await.unwrap()
    }

    /// The twin without the fields a connection attempt may change.
    async fn twin_content(&self, id: &str) -> Value {
        let mut twin = self.owner("GET", &format!("/twins/{id}"), None).await;
        let obj = twin.as_object_mut().unwrap();
        obj.remove("connectionState");
        obj.remove("lastActivityTime");
        twin
    }

    fn tls(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        let pem = std::fs::read(self.data.join("ca.pem")).unwrap();
        for cert in rustls_pemfile::certs(&mut &pem[..]) {
            roots.add(cert.unwrap()).unwrap();
        }
        Arc::new(
            rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
        )
    }

    /// A raw MQTT client: `client_id`, the username of `user_device`, `password`.
    fn mqtt(&self, client_id: &str, user_device: &str, password: &str) -> (AsyncClient, EventLoop) {
        let mut options = MqttOptions::new(client_id, HOST, self.mqtts_port);
        options
            .set_credentials(
                format!(
                    "{HOST}/{user_device}/?api-version=2021-04-12&DeviceClientType=security-test"
                ),
                password,
            )
            .set_clean_session(false)
            .set_keep_alive(Duration::from_secs(60))
            .set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
                self.tls(),
            )));
        AsyncClient::new(options, 16)
    }
}

/// A device token: `sr={host}/devices/{device}`, signed with `key`, no `skn`.
fn device_token(device: &str, key: &str, expiry: i64) -> String {
    generate_token(&format!("{HOST}/devices/{device}"), key, None, expiry).unwrap()
}

/// The CONNACK code, or the error that ended the connection attempt.
async fn connack(events: &mut EventLoop) -> Result<ConnectReturnCode, ConnectionError> {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(c))) => return Ok(c.code),
                Ok(_) => {}
                Err(ConnectionError::ConnectionRefused(code)) => return Ok(code),
                Err(e) => return Err(e),
            }
        }
    })
    .await
    .expect("a CONNACK within 10 s")
}

async fn connect(
    target: &Target,
    client_id: &str,
    user: &str,
    password: &str,
) -> ConnectReturnCode {
    let (_client, mut events) = target.mqtt(client_id, user, password);
    connack(&mut events).await.expect("the hub answers CONNECT")
}

/// Polls until the hub closes the connection; panics if it is still open after
/// `within`. Returns what the client saw last.
async fn closed_within(events: &mut EventLoop, within: Duration) -> ConnectionError {
    tokio::time::timeout(within, async {
        loop {
            if let Err(e) = events.poll().await {
                return e;
            }
        }
    })
    .await
    .expect("the hub closes the connection")
}

/// Connects and waits for CONNACK 0; the event loop must keep being polled.
async fn connected(target: &Target, device: &str, key: &str) -> (AsyncClient, EventLoop) {
    let (client, mut events) =
        target.mqtt(device, device, &device_token(device, key, now() + 3600));
    assert_eq!(
        connack(&mut events).await.unwrap(),
        ConnectReturnCode::Success,
        "{device} connects"
    );
    (client, events)
}

/// Publishes a reported patch and waits for the hub's `204` (the connection is
/// alive and the patch applied to the publisher's own twin).
async fn report(client: &AsyncClient, events: &mut EventLoop, rid: &str, patch: &Value) {
    client
        .subscribe("$iothub/twin/res/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    client
        .publish(
            format!("$iothub/twin/PATCH/properties/reported/?$rid={rid}"),
            QoS::AtLeastOnce,
            false,
            serde_json::to_vec(patch).unwrap(),
        )
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Event::Incoming(Packet::Publish(p)) = events.poll().await.unwrap() {
                if p.topic.starts_with("$iothub/twin/res/204/") && p.topic.contains(rid) {
                    return;
                }
            }
        }
    })
    .await
    .expect("a 204 for the reported patch");
}

// ---------------------------------------------------------------------------
// REST: the authorization matrix of spec §8.3.
// ---------------------------------------------------------------------------

const OWNER_READ: &[&str] = &["iothubowner", "registryRead", "registryReadWrite"];
const OWNER_WRITE: &[&str] = &["iothubowner", "registryReadWrite"];
const OWNER_SERVICE: &[&str] = &["iothubowner", "service"];
/// Queries and metrics: ServiceConnect or RegistryRead.
const OWNER_QUERY: &[&str] = &[
    "iothubowner",
    "service",
    "registryRead",
    "registryReadWrite",
];

fn assert_unauthorized(
    status: u16,
    headers: &reqwest::header::HeaderMap,
    body: &Value,
    what: &str,
) {
    assert_eq!(status, 401, "{what}: {body}");
    assert_eq!(
        headers
            .get("iothub-errorcode")
            .and_then(|v| v.to_str().ok()),
        Some("IotHubUnauthorizedAccess"),
        "{what}"
    );
    // One message for every refusal: nothing tells a prober which check failed.
    assert_eq!(
        body["Message"], "ErrorCode:IotHubUnauthorizedAccess;Unauthorized",
        "{what}"
    );
}

#[tokio::test]
async fn every_endpoint_allows_exactly_the_policies_of_the_spec() {
    let hub = Hub::start();
    let t = Target::of(&hub);
    t.create_device("a1").await;
    for p in POLICIES {
        t.create_device(&format!("del-{p}")).await;
    }
    let tags = json!({"tags": {"x": 1}});
    let replace = json!({"tags": {"y": 2}, "properties": {"desired": {"z": 3}}});
    let query = json!({"query": "SELECT * FROM devices"});
    // (method, path with {p} for the policy, body, policies allowed)
    let cases: Vec<(&str, &str, Option<Value>, &[&str])> = vec![
        ("PUT", "/devices/new-{p}", Some(json!({})), OWNER_WRITE),
        ("GET", "/devices/a1", None, OWNER_READ),
        ("DELETE", "/devices/del-{p}", None, OWNER_WRITE),
        ("GET", "/devices", None, OWNER_READ),
        ("GET", "/devices/", None, OWNER_READ),
        (
            "POST",
            "/devices",
            Some(json!([{"id": "bulk-{p}", "importMode": "create"}])),
            OWNER_WRITE,
        ),
        ("GET", "/twins/a1", None, OWNER_SERVICE),
        ("PATCH", "/twins/a1", Some(tags), OWNER_SERVICE),
        ("PUT", "/twins/a1", Some(replace), OWNER_SERVICE),
        ("POST", "/devices/query", Some(query), OWNER_QUERY),
        ("GET", "/statistics/devices", None, OWNER_READ),
        // The spec's table lists "statistics" under RegistryRead; service statistics
        // are a service-client call on IoT Hub (the `service` policy reads them),
        // and Twinhub asks ServiceConnect for them (crates/http/src/statistics.rs).
        ("GET", "/statistics/service", None, OWNER_SERVICE),
        // Prometheus text: RegistryRead or ServiceConnect, like queries.
        ("GET", "/metrics", None, OWNER_QUERY),
    ];
    for (method, path, body, allowed) in &cases {
        for policy in POLICIES {
            let path = path.replace("{p}", policy);
            let body = body
                .as_ref()
                .map(|b| serde_json::from_str(&b.to_string().replace("{p}", policy)).unwrap());
            let twin_before = t.twin_content("a1").await;
            let (status, headers, answer) = t
                .call(method, &path, Some(&t.token(policy)), body.as_ref())
                .await;
            let what = format!("{policy} {method} {path}");
            if allowed.contains(&policy) {
                assert!((200..300).contains(&status), "{what}: {status} {answer}");
                continue;
            }
            assert_unauthorized(status, &headers, &answer, &what);
            // A refused request changed nothing.
            assert_eq!(
                t.twin_content("a1").await,
                twin_before,
                "{what} changed the twin"
            );
            match (*method, path.as_str()) {
                ("PUT", p) if p.starts_with("/devices/new-") => {
                    assert!(!t.exists(&format!("new-{policy}")).await, "{what} created");
                }
                ("DELETE", _) => {
                    assert!(t.exists(&format!("del-{policy}")).await, "{what} deleted")
                }
                ("POST", "/devices") => {
                    assert!(!t.exists(&format!("bulk-{policy}")).await, "{what} created");
                }
                _ => {}
            }
        }
    }
}

#[tokio::test]
async fn bad_tokens_are_refused_on_every_kind_of_endpoint() {
    let hub = Hub::start();
    let t = Target::of(&hub);
    let device_key = t.create_device("a1").await;
    t.create_device("a2").await;
    let owner = t.policy_key("iothubowner", "primaryKey");
    let later = now() + 3600;
    let signed =
        |sr: &str, key: &str, skn: Option<&str>, se: i64| generate_token(sr, key, skn, se).unwrap();
    let valid = signed(HOST, &owner, Some("iothubowner"), later);
    // The signature of a valid token with `se` moved: a tampered expiry.
    let tampered = {
        let mut parts: Vec<String> = valid.split('&').map(str::to_owned).collect();
        for p in &mut parts {
            if p.starts_with("se=") {
                *p = format!("se={}", later + 86_400);
            }
        }
        parts.join("&")
    };
    let bad: Vec<(&str, String)> = vec![
        (
            "expired",
            signed(HOST, &owner, Some("iothubowner"), now() - 10),
        ),
        (
            "forged (wrong key)",
            signed(HOST, FORGED_KEY, Some("iothubowner"), later),
        ),
        (
            "forged (another policy's key)",
            signed(
                HOST,
                &t.policy_key("registryRead", "primaryKey"),
                Some("iothubowner"),
                later,
            ),
        ),
        ("tampered expiry", tampered),
        (
            "another hub",
            signed("otherhub.example.com", &owner, Some("iothubowner"), later),
        ),
        (
            "host prefix",
            signed("localhos", &owner, Some("iothubowner"), later),
        ),
        (
            "another device's scope",
            signed(
                &format!("{HOST}/devices/a2"),
                &owner,
                Some("iothubowner"),
                later,
            ),
        ),
        (
            "segment prefix is not a scope",
            signed(&format!("{HOST}/dev"), &owner, Some("iothubowner"), later),
        ),
        (
            "without skn (policy key)",
            signed(HOST, &owner, None, later),
        ),
        (
            "without skn (device key)",
            signed(&format!("{HOST}/devices/a1"), &device_key, None, later),
        ),
        (
            "unknown policy",
            signed(HOST, &owner, Some("nosuchpolicy"), later),
        ),
        ("empty", String::new()),
        ("garbage", "SharedAccessSignature garbage".into()),
        ("bearer", "Bearer eyJhbGciOiJIUzI1NiJ9.e30.x".into()),
        (
            "no prefix",
            valid.trim_start_matches("SharedAccessSignature ").into(),
        ),
        (
            "no sig",
            valid.split("&sig=").next().unwrap().to_owned()
                + &format!("&se={later}&skn=iothubowner"),
        ),
        (
            "sig not base64",
            format!("SharedAccessSignature sr={HOST}&sig=%%%%&se={later}&skn=iothubowner"),
        ),
        (
            "se not a number",
            format!("SharedAccessSignature sr={HOST}&sig=AAAA&se=tomorrow&skn=iothubowner"),
        ),
        ("field twice", format!("{valid}&sr={HOST}")),
    ];
    let query = json!({"query": "SELECT * FROM devices"});
    let endpoints: Vec<(&str, &str, Option<Value>)> = vec![
        ("GET", "/devices/a1", None),
        ("PUT", "/devices/new1", Some(json!({}))),
        ("GET", "/twins/a1", None),
        ("PATCH", "/twins/a1", Some(json!({"tags": {"x": 1}}))),
        ("POST", "/devices/query", Some(query)),
        ("GET", "/statistics/service", None),
    ];
    for (method, path, body) in &endpoints {
        for (why, token) in &bad {
            let (status, headers, answer) = t.call(method, path, Some(token), body.as_ref()).await;
            assert_unauthorized(
                status,
                &headers,
                &answer,
                &format!("{why}: {method} {path}"),
            );
        }
        let (status, headers, answer) = t.call(method, path, None, body.as_ref()).await;
        assert_unauthorized(
            status,
            &headers,
            &answer,
            &format!("no header: {method} {path}"),
        );
    }
    // The same requests with good tokens pass: the refusals above are the tokens'.
    let secondary = signed(
        HOST,
        &t.policy_key("iothubowner", "secondaryKey"),
        Some("iothubowner"),
        later,
    );
    let upper_host = signed("LOCALHOST", &owner, Some("iothubowner"), later);
    let device_scope = signed(
        &format!("{HOST}/devices/a1"),
        &owner,
        Some("iothubowner"),
        later,
    );
    for (why, token, path) in [
        ("primary key", &valid, "/twins/a1"),
        ("secondary key", &secondary, "/twins/a1"),
        ("host case", &upper_host, "/twins/a1"),
        ("scope of the device", &device_scope, "/devices/a1"),
    ] {
        let (status, _, answer) = t.call("GET", path, Some(token), None).await;
        assert_eq!(status, 200, "{why}: {answer}");
    }
    let (status, _, _) = t.call("GET", "/devices/new1", Some(&valid), None).await;
    assert_eq!(status, 404, "a refused create created the device");
}

// ---------------------------------------------------------------------------
// MQTT: device isolation and live sessions.
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_device_never_reads_or_writes_another_devices_twin() {
    let hub = Hub::start();
    let t = Target::of(&hub);
    let key_a = t.create_device("iso-a").await;
    let key_b = t.create_device("iso-b").await;
    t.owner(
        "PATCH",
        "/twins/iso-b",
        Some(&json!({"tags": {"owner": "b"}, "properties": {"desired": {"secret": "b-only"}}})),
    )
    .await;
    let (client_b, mut events_b) = connected(&t, "iso-b", &key_b).await;
    report(&client_b, &mut events_b, "b1", &json!({"fw": "b"})).await;
    drop(client_b);
    let b_before = t.twin_content("iso-b").await;

    // A's own reported patch lands on A's twin only, and A's twin GET answers A's twin.
    let (client_a, mut events_a) = connected(&t, "iso-a", &key_a).await;
    report(&client_a, &mut events_a, "a1", &json!({"fw": "a"})).await;
    client_a
        .publish("$iothub/twin/GET/?$rid=get-a", QoS::AtLeastOnce, false, " ")
        .await
        .unwrap();
    let twin_a: Value = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Event::Incoming(Packet::Publish(p)) = events_a.poll().await.unwrap() {
                if p.topic.contains("get-a") {
                    assert!(p.topic.starts_with("$iothub/twin/res/200/"), "{}", p.topic);
                    return serde_json::from_slice(&p.payload).unwrap();
                }
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(twin_a["reported"]["fw"], "a");
    assert!(
        twin_a["desired"].get("secret").is_none(),
        "A read B's desired: {twin_a}"
    );
    assert_eq!(t.twin_content("iso-b").await, b_before);
    drop(client_a);

    // Every topic naming B (telemetry, a twin-looking path, a module of B) or no
    // IoT Hub topic at all closes A's connection; so does subscribing to B's
    // cloud-to-device messages.
    let forbidden_publishes = [
        "devices/iso-b/messages/events/",
        "devices/iso-b/modules/m1/messages/events/",
        "devices/iso-b/twin/PATCH/properties/reported/?$rid=x",
        "$iothub/twin/PATCH/properties/reported/iso-b/?$rid=x",
        "$iothub/twin/PATCH/properties/desired/?$rid=x",
        "devices/iso-a/../iso-b/messages/events/",
    ];
    for topic in forbidden_publishes {
        let (client, mut events) = connected(&t, "iso-a", &key_a).await;
        client
            .publish(
                topic,
                QoS::AtLeastOnce,
                false,
                serde_json::to_vec(&json!({"fw": "evil"})).unwrap(),
            )
            .await
            .unwrap();
        closed_within(&mut events, Duration::from_secs(10)).await;
        assert_eq!(
            t.twin_content("iso-b").await,
            b_before,
            "publish to {topic}"
        );
    }
    for filter in [
        "devices/iso-b/messages/devicebound/#",
        "devices/+/messages/devicebound/#",
        "devices/iso-b/modules/m1/inputs/#",
        "#",
        "$iothub/#",
    ] {
        let (client, mut events) = connected(&t, "iso-a", &key_a).await;
        client.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
        closed_within(&mut events, Duration::from_secs(10)).await;
    }

    // Credentials of one device never open a session as the other.
    let token_a = device_token("iso-a", &key_a, now() + 3600);
    let token_b = device_token("iso-b", &key_b, now() + 3600);
    let a_key_b_scope = device_token("iso-b", &key_a, now() + 3600);
    let device_policy = generate_token(
        &format!("{HOST}/devices/iso-b"),
        &key_a,
        Some("device"),
        now() + 3600,
    )
    .unwrap();
    for (why, client_id, user, password) in [
        (
            "B's client id and username, A's token",
            "iso-b",
            "iso-b",
            &token_a,
        ),
        (
            "A's client id and username, B's token",
            "iso-a",
            "iso-a",
            &token_b,
        ),
        (
            "B's client id, A's username and token",
            "iso-b",
            "iso-a",
            &token_a,
        ),
        (
            "A's client id, B's username and token",
            "iso-a",
            "iso-b",
            &token_b,
        ),
        (
            "B's scope signed with A's key",
            "iso-b",
            "iso-b",
            &a_key_b_scope,
        ),
        (
            "device policy name, A's key",
            "iso-b",
            "iso-b",
            &device_policy,
        ),
    ] {
        assert_eq!(
            connect(&t, client_id, user, password).await,
            ConnectReturnCode::NotAuthorized,
            "{why}"
        );
    }
    assert_eq!(t.twin_content("iso-b").await, b_before);
}

#[tokio::test]
async fn disabling_deleting_or_rekeying_a_device_closes_its_live_session() {
    let hub = Hub::start();
    let t = Target::of(&hub);
    let within = Duration::from_secs(10);

    // Disabled: the live session is closed, reconnects are refused until enabled.
    let key = t.create_device("dis").await;
    let (_c, mut events) = connected(&t, "dis", &key).await;
    t.update_device("dis", &json!({"deviceId": "dis", "status": "disabled"}))
        .await;
    closed_within(&mut events, within).await;
    let token = device_token("dis", &key, now() + 3600);
    assert_eq!(
        connect(&t, "dis", "dis", &token).await,
        ConnectReturnCode::NotAuthorized
    );
    t.update_device("dis", &json!({"deviceId": "dis", "status": "enabled"}))
        .await;
    assert_eq!(
        connect(&t, "dis", "dis", &token).await,
        ConnectReturnCode::Success
    );

    // Deleted: closed, and refused afterwards (also once the id is re-created:
    // the new incarnation has new keys).
    let key = t.create_device("del").await;
    let (_c, mut events) = connected(&t, "del", &key).await;
    t.owner("DELETE", "/devices/del", None).await;
    closed_within(&mut events, within).await;
    let token = device_token("del", &key, now() + 3600);
    assert_eq!(
        connect(&t, "del", "del", &token).await,
        ConnectReturnCode::NotAuthorized
    );
    t.create_device("del").await;
    assert_eq!(
        connect(&t, "del", "del", &token).await,
        ConnectReturnCode::NotAuthorized
    );

    // Re-keyed with explicit new keys: the session signed with the old key is
    // closed and the old key is refused from then on; the new one works.
    let old = t.create_device("rot").await;
    let (_c, mut events) = connected(&t, "rot", &old).await;
    let new_primary = "cm90YXRlZC1wcmltYXJ5LWtleS0wMDAwMDAwMDAwMDA=";
    let new_secondary = "cm90YXRlZC1zZWNvbmRhcnkta2V5LTAwMDAwMDAwMDA=";
    let updated = t
        .update_device(
            "rot",
            &json!({"deviceId": "rot", "authentication": {"type": "sas",
                "symmetricKey": {"primaryKey": new_primary, "secondaryKey": new_secondary}}}),
        )
        .await;
    assert_eq!(
        updated["authentication"]["symmetricKey"]["primaryKey"],
        new_primary
    );
    closed_within(&mut events, within).await;
    let old_token = device_token("rot", &old, now() + 3600);
    assert_eq!(
        connect(&t, "rot", "rot", &old_token).await,
        ConnectReturnCode::NotAuthorized
    );
    for key in [new_primary, new_secondary] {
        let token = device_token("rot", key, now() + 3600);
        assert_eq!(
            connect(&t, "rot", "rot", &token).await,
            ConnectReturnCode::Success
        );
    }

    // Expired tokens are refused, and a session ends when its token does.
    let key = t.create_device("exp").await;
    let expired = device_token("exp", &key, now() - 10);
    assert_eq!(
        connect(&t, "exp", "exp", &expired).await,
        ConnectReturnCode::NotAuthorized
    );
    let short = device_token("exp", &key, now() + 3);
    let (_c, mut events) = t.mqtt("exp", "exp", &short);
    assert_eq!(
        connack(&mut events).await.unwrap(),
        ConnectReturnCode::Success
    );
    let started = Instant::now();
    closed_within(&mut events, Duration::from_secs(15)).await;
    assert!(started.elapsed() < Duration::from_secs(15));
}

// ---------------------------------------------------------------------------
// Shared access policies changed while the hub runs (`twinhub policy ...`).
// ---------------------------------------------------------------------------

/// Runs the CLI on the hub's data directory; returns stdout, or panics with
/// stderr if `succeed` does not match the exit status.
fn policy_cli(t: &Target, args: &[&str], succeed: bool) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_twinhub"))
        .arg("--data-dir")
        .arg(&t.data)
        .arg("policy")
        .args(args)
        .output()
        .unwrap();
    assert_eq!(
        out.status.success(),
        succeed,
        "twinhub policy {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A service token for `policy` signed with `key`.
fn policy_token(policy: &str, key: &str) -> String {
    generate_token(HOST, key, Some(policy), now() + 3600).unwrap()
}

/// Polls `GET /devices` with `token` until it answers `status` (the hub applies
/// a policy change within a second); panics after 10 s.
async fn eventually_answers(t: &Target, token: &str, status: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (got, _, _) = t.call("GET", "/devices", Some(token), None).await;
        if got == status {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "GET /devices still answers {got}, not {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn policies_created_deleted_or_rekeyed_take_effect_on_the_running_hub() {
    let hub = Hub::start();
    let t = Target::of(&hub);

    // Created: usable at once for what it grants, and only that.
    let created: Value = serde_json::from_str(&policy_cli(
        &t,
        &[
            "create",
            "-n",
            "ops",
            "--permissions",
            "RegistryRead",
            "ServiceConnect",
        ],
        true,
    ))
    .unwrap();
    assert_eq!(created["keyName"], "ops");
    assert_eq!(created["rights"], "RegistryRead, ServiceConnect");
    let ops = policy_token("ops", created["primaryKey"].as_str().unwrap());
    eventually_answers(&t, &ops, 200).await;
    let (status, _, _) = t
        .call(
            "PUT",
            "/devices/by-ops",
            Some(&ops),
            Some(&json!({"deviceId": "by-ops"})),
        )
        .await;
    assert_eq!(status, 401, "ops lacks RegistryWrite");
    policy_cli(
        &t,
        &["create", "-n", "ops", "--permissions", "RegistryRead"],
        false,
    );

    // Renewed primary key: tokens signed with the old one are refused, the new
    // one and the untouched secondary work.
    let old_primary = t.policy_key("registryRead", "primaryKey");
    let secondary = t.policy_key("registryRead", "secondaryKey");
    let old_token = policy_token("registryRead", &old_primary);
    eventually_answers(&t, &old_token, 200).await;
    let renewed: Value = serde_json::from_str(&policy_cli(
        &t,
        &["renew-key", "-n", "registryRead", "--renew-key", "primary"],
        true,
    ))
    .unwrap();
    let new_primary = renewed["primaryKey"].as_str().unwrap();
    assert_ne!(new_primary, old_primary);
    assert_eq!(renewed["secondaryKey"], secondary.as_str());
    eventually_answers(&t, &old_token, 401).await;
    eventually_answers(&t, &policy_token("registryRead", new_primary), 200).await;
    eventually_answers(&t, &policy_token("registryRead", &secondary), 200).await;

    // Swapped: both keys stay valid.
    let before = [
        t.policy_key("service", "primaryKey"),
        t.policy_key("service", "secondaryKey"),
    ];
    let swapped: Value = serde_json::from_str(&policy_cli(
        &t,
        &["renew-key", "-n", "service", "--renew-key", "swap"],
        true,
    ))
    .unwrap();
    assert_eq!(swapped["primaryKey"], before[1].as_str());
    assert_eq!(swapped["secondaryKey"], before[0].as_str());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for key in &before {
        let (status, _, _) = t
            .call(
                "GET",
                "/statistics/service",
                Some(&policy_token("service", key)),
                None,
            )
            .await;
        assert_eq!(status, 200);
    }

    // Deleted: its tokens are refused; the owner policy cannot be deleted.
    let rrw = t.token("registryReadWrite");
    eventually_answers(&t, &rrw, 200).await;
    policy_cli(&t, &["delete", "-n", "registryReadWrite"], true);
    eventually_answers(&t, &rrw, 401).await;
    policy_cli(&t, &["delete", "-n", "iothubowner"], false);
    policy_cli(&t, &["delete", "-n", "no-such-policy"], false);
    let listed: Value = serde_json::from_str(&policy_cli(&t, &["list"], true)).unwrap();
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["keyName"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["iothubowner", "service", "device", "registryRead", "ops"]
    );

    // A hub.json that does not check out is ignored: the policies in force stay.
    let good = std::fs::read(t.data.join("hub.json")).unwrap();
    let mut broken = t.hub_json();
    broken["policies"][1]["primaryKey"] = json!("not a key");
    broken["policies"][4]["name"] = json!("service");
    std::fs::write(t.data.join("hub.json"), broken.to_string()).unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    eventually_answers(&t, &ops, 200).await;
    std::fs::write(t.data.join("hub.json"), good).unwrap();

    // A device connected with a policy token (skn=device) is closed when that
    // policy's key is renewed; a device connected with its own key is not.
    let own_key = t.create_device("own").await;
    let (own, mut own_events) = connected(&t, "own", &own_key).await;
    t.create_device("via-policy").await;
    let device_key = t.policy_key("device", "primaryKey");
    let via_policy = generate_token(
        &format!("{HOST}/devices/via-policy"),
        &device_key,
        Some("device"),
        now() + 3600,
    )
    .unwrap();
    let (_c, mut events) = t.mqtt("via-policy", "via-policy", &via_policy);
    assert_eq!(
        connack(&mut events).await.unwrap(),
        ConnectReturnCode::Success
    );
    policy_cli(
        &t,
        &["renew-key", "-n", "device", "--renew-key", "primary"],
        true,
    );
    closed_within(&mut events, Duration::from_secs(10)).await;
    assert_eq!(
        connect(&t, "via-policy", "via-policy", &via_policy).await,
        ConnectReturnCode::NotAuthorized
    );
    let renewed = generate_token(
        &format!("{HOST}/devices/via-policy"),
        &t.policy_key("device", "primaryKey"),
        Some("device"),
        now() + 3600,
    )
    .unwrap();
    assert_eq!(
        connect(&t, "via-policy", "via-policy", &renewed).await,
        ConnectReturnCode::Success
    );
    report(&own, &mut own_events, "1", &json!({"still": "here"})).await;
}

// ---------------------------------------------------------------------------
// Secrets: file permissions and logs.
// ---------------------------------------------------------------------------

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn the_data_directory_and_its_secrets_are_owner_only() {
    let hub = Hub::start();
    assert_eq!(mode(&hub.data), 0o700, "data directory");
    for file in ["hub.json", "ca-key.pem"] {
        assert_eq!(mode(&hub.data.join(file)), 0o600, "{file}");
    }
    // Nothing in the directory is readable or writable by group or others.
    for entry in std::fs::read_dir(&hub.data).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "pem") && path.ends_with("ca.pem") {
            continue; // The CA certificate is public.
        }
        let m = mode(&path);
        assert_eq!(m & 0o077, 0, "{} is mode {m:o}", path.display());
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A hub with `RUST_LOG=debug` whose stderr goes to `log`.
fn start_logging_hub(data: &Path, log: &Path) -> (Child, u16, u16) {
    let (https, mqtts) = (free_port(), free_port());
    let child = Command::new(env!("CARGO_BIN_EXE_twinhub"))
        .args(["serve", "--bind", "127.0.0.1"])
        .args(["--https-port", &https.to_string()])
        .args(["--mqtts-port", &mqtts.to_string()])
        .arg("--data-dir")
        .arg(data)
        .env("RUST_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    for port in [https, mqtts] {
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "hub did not start listening");
            std::thread::sleep(Duration::from_millis(25));
        }
    }
    (child, https, mqtts)
}

/// The `sig=` value of a token, as sent and percent-decoded.
fn signatures(token: &str) -> Vec<String> {
    token
        .split('&')
        .filter_map(|f| f.strip_prefix("sig="))
        .flat_map(|s| {
            [
                s.to_owned(),
                s.replace("%2B", "+")
                    .replace("%2F", "/")
                    .replace("%3D", "="),
            ]
        })
        .collect()
}

#[tokio::test]
async fn keys_and_tokens_never_reach_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log = dir.path().join("hub.log");
    let (mut child, https, mqtts) = start_logging_hub(&data, &log);
    let t = Target::new(&data, https, mqtts);
    let mut used_tokens = Vec::new();

    // Successes and failures over REST.
    let owner_token = t.token("iothubowner");
    used_tokens.push(owner_token.clone());
    let device = t
        .owner(
            "PUT",
            "/devices/logged",
            Some(&json!({"deviceId": "logged"})),
        )
        .await;
    let device_key = device["authentication"]["symmetricKey"]["primaryKey"]
        .as_str()
        .unwrap()
        .to_owned();
    let device_secondary = device["authentication"]["symmetricKey"]["secondaryKey"]
        .as_str()
        .unwrap()
        .to_owned();
    t.owner("GET", "/twins/logged", None).await;
    let forged = generate_token(HOST, FORGED_KEY, Some("iothubowner"), now() + 60).unwrap();
    let expired = generate_token(
        HOST,
        &t.policy_key("iothubowner", "primaryKey"),
        Some("iothubowner"),
        now() - 60,
    )
    .unwrap();
    let weak = t.token("registryRead");
    for token in [&forged, &expired, &weak] {
        let (status, _, _) = t
            .call(
                "PATCH",
                "/twins/logged",
                Some(token),
                Some(&json!({"tags": {"a": 1}})),
            )
            .await;
        assert_eq!(status, 401);
        used_tokens.push(token.clone());
    }

    // Successes and failures over MQTT.
    let good = device_token("logged", &device_key, now() + 3600);
    let (client, mut events) = t.mqtt("logged", "logged", &good);
    assert_eq!(
        connack(&mut events).await.unwrap(),
        ConnectReturnCode::Success
    );
    report(&client, &mut events, "r1", &json!({"x": 1})).await;
    drop(client);
    let wrong_key = device_token("logged", FORGED_KEY, now() + 3600);
    let old = device_token("logged", &device_key, now() - 60);
    for token in [&wrong_key, &old] {
        assert_eq!(
            connect(&t, "logged", "logged", token).await,
            ConnectReturnCode::NotAuthorized
        );
    }
    used_tokens.extend([good, wrong_key, old]);

    // A key rotation: the new keys travel in a request body.
    let rotated = t
        .update_device(
            "logged",
            &json!({"deviceId": "logged", "authentication": {"symmetricKey": {
                "primaryKey": "bG9nZ2VkLXJvdGF0ZWQta2V5LTAwMDAwMDAwMDAwMDA=",
                "secondaryKey": "bG9nZ2VkLXJvdGF0ZWQta2V5LTExMTExMTExMTExMTE="}}}),
        )
        .await;

    child.kill().unwrap();
    child.wait().unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("authorization refused") && text.contains("CONNECT refused"),
        "the debug log has the refusals (else this test proves nothing):\n{text}"
    );

    let mut secrets: Vec<(String, String)> = Vec::new();
    for policy in t.hub_json()["policies"].as_array().unwrap() {
        for which in ["primaryKey", "secondaryKey"] {
            secrets.push((
                format!("{} {which}", policy["name"]),
                policy[which].as_str().unwrap().to_owned(),
            ));
        }
    }
    secrets.push(("device primary key".into(), device_key));
    secrets.push(("device secondary key".into(), device_secondary));
    for which in ["primaryKey", "secondaryKey"] {
        secrets.push((
            format!("rotated {which}"),
            rotated["authentication"]["symmetricKey"][which]
                .as_str()
                .unwrap()
                .to_owned(),
        ));
    }
    for token in &used_tokens {
        for sig in signatures(token) {
            secrets.push(("a token's signature".into(), sig));
        }
    }
    for (what, secret) in &secrets {
        assert!(!secret.is_empty());
        assert!(!text.contains(secret.as_str()), "{what} is in the log");
        // Keys also must not appear without base64 padding.
        assert!(
            !text.contains(secret.trim_end_matches('=')),
            "{what} (unpadded) is in the log"
        );
    }
    assert!(!text.contains("sig="), "a token is in the log");
}
