//! The MQTT handshake (`connect::login`) and the pure session state machine
//! (`session::Session`) driven by generated packet sequences, backend results,
//! desired notifications and clock steps, the way the connection driver drives
//! them. Packets go through a client encoder and the hub's real decoder first,
//! so the session sees only what can reach it over a socket.
//!
//! Invariants, beyond "never panics":
//! - device isolation: a login names exactly the identity of its username and its
//!   client id; a PUBLISH to another identity's topic, or a SUBSCRIBE to another
//!   identity's filter, closes the session; nothing the hub sends names another
//!   identity;
//! - every hub packet encodes, and every hub PUBLISH topic is one the SDKs parse
//!   (`HubTopic::parse`), echoing the request id it answers;
//! - MQTT rules: a QoS 1 PUBLISH is acknowledged with its id, SUBSCRIBE gets a
//!   SUBACK with one entry per filter (QoS ≤ 1), UNSUBSCRIBE an UNSUBACK, PINGREQ
//!   a PINGRESP; QoS 2, a second CONNECT and DISCONNECT end the session;
//! - bounded state: hub QoS 1 packet ids are non-zero and unique while in flight,
//!   at most `MAX_IN_FLIGHT`; the session's count matches a model;
//! - time: `handle_timeout` before `poll_timeout` never closes, at it always does.
#![no_main]

use arbitrary::Arbitrary;
use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use twinhub_core::topic::{DeviceTopic, HubTopic};
use twinhub_core::{ErrorCode, HubError, Timestamp};
use twinhub_fuzz::JsonSpec;
use twinhub_mqtt::client::encode as encode_client;
use twinhub_mqtt::connect::login;
use twinhub_mqtt::decode::decode;
use twinhub_mqtt::encode::encode;
use twinhub_mqtt::packet::{
    ClientPacket, Connect, Publish, QoS, ServerPacket, Subscribe, Unsubscribe, Will,
};
use twinhub_mqtt::session::{Action, Close, Session, SessionParams, MAX_IN_FLIGHT};
use twinhub_mqtt::{Identity, Subscriptions};

const OWN_DEVICE: &str = "dev1";
const OWN_MODULE: &str = "m1";
const T0: i64 = 1_700_000_000;
/// The hub's packet limit is larger; this one is reached by generated inputs.
const MAX_PACKET: usize = 64 * 1024;

#[derive(Arbitrary, Debug, Clone)]
enum Id {
    Own,
    /// Another id (which may happen to spell the own one; checks compare text).
    Other(String),
    Wildcard,
}

impl Id {
    fn text(&self, own: &str) -> String {
        match self {
            Id::Own => own.to_owned(),
            Id::Other(s) => s.clone(),
            Id::Wildcard => "+".to_owned(),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Rid {
    Uuid(u128),
    Text(String),
    Long(u16),
}

impl Rid {
    fn text(&self) -> String {
        match self {
            Rid::Uuid(n) => format!("{n:032x}"),
            Rid::Text(s) => s.clone(),
            // Around the 256-byte cap on echoed request ids.
            Rid::Long(n) => "r".repeat(usize::from(*n % 300)),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum TopicSpec {
    TwinGet {
        rid: Rid,
        slash: bool,
    },
    Reported {
        rid: Rid,
        version: Option<i64>,
    },
    Telemetry {
        device: Id,
        module: Option<Id>,
        properties: String,
    },
    MethodResponse {
        status: i32,
        rid: Rid,
    },
    /// `devices/{id}/` followed by anything: twin-looking topics of a device.
    DeviceScoped {
        device: Id,
        rest: String,
    },
    Raw(String),
}

#[derive(Arbitrary, Debug)]
enum PayloadSpec {
    Json(JsonSpec),
    Space,
    Bytes(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
enum FilterSpec {
    TwinResponses,
    Desired,
    Methods,
    CloudToDevice(Id),
    ModuleInputs(Id, Id),
    Raw(String),
}

#[derive(Arbitrary, Debug)]
enum PacketSpec {
    Publish {
        qos: u8,
        dup: bool,
        retain: bool,
        packet_id: u16,
        topic: TopicSpec,
        payload: PayloadSpec,
    },
    /// A PUBACK for the hub's n-th in-flight message, or for any id.
    PubAck(Option<u8>, u16),
    Subscribe(u16, Vec<(FilterSpec, u8)>),
    Unsubscribe(u16, Vec<FilterSpec>),
    PingReq,
    Disconnect,
    Connect,
}

#[derive(Arbitrary, Debug)]
enum Outcome {
    Ok(JsonSpec, i64),
    Err(u8, String),
}

#[derive(Arbitrary, Debug)]
enum Step {
    Packet(PacketSpec),
    /// Raw bytes through the decoder.
    Raw(Vec<u8>),
    /// Time passes (milliseconds, up to about 18 hours).
    Wait(u16, u8),
    /// The driver's timer fires at `poll_timeout`.
    Timer,
    /// The backend answers one of the pending twin requests.
    Complete(u8, Outcome),
    /// A desired-properties change event.
    Desired(i64, JsonSpec),
    /// A direct method request event: name, request id, payload.
    Method(String, String, JsonSpec),
}

#[derive(Arbitrary, Debug)]
struct ConnectSpec {
    level: u8,
    clean_session: bool,
    keep_alive: u16,
    client_device: Id,
    client_module: Option<Id>,
    user_host: String,
    user_device: Id,
    user_module: Option<Id>,
    user_bag: Option<String>,
    password: Option<Vec<u8>>,
    will: Option<(TopicSpec, u8)>,
}

#[derive(Arbitrary, Debug)]
struct Input {
    connect: ConnectSpec,
    module: bool,
    keep_alive: u16,
    token_ttl_secs: u16,
    restored: u8,
    steps: Vec<Step>,
}

fn topic_text(spec: &TopicSpec, own: &Identity) -> String {
    let own_device = own.device_id.as_str();
    let own_module = own.module_id.as_deref().unwrap_or(OWN_MODULE);
    match spec {
        TopicSpec::TwinGet { rid, slash: true } => format!("$iothub/twin/GET/?$rid={}", rid.text()),
        TopicSpec::TwinGet { rid, slash: false } => format!("$iothub/twin/GET?$rid={}", rid.text()),
        TopicSpec::Reported { rid, version } => DeviceTopic::ReportedPatch {
            rid: &rid.text(),
            version: *version,
        }
        .to_topic(),
        TopicSpec::Telemetry {
            device,
            module,
            properties,
        } => match module {
            Some(m) => format!(
                "devices/{}/modules/{}/messages/events/{properties}",
                device.text(own_device),
                m.text(own_module)
            ),
            None => format!(
                "devices/{}/messages/events/{properties}",
                device.text(own_device)
            ),
        },
        TopicSpec::MethodResponse { status, rid } => {
            format!("$iothub/methods/res/{status}/?$rid={}", rid.text())
        }
        TopicSpec::DeviceScoped { device, rest } => {
            format!("devices/{}/{rest}", device.text(own_device))
        }
        TopicSpec::Raw(s) => s.clone(),
    }
}

fn filter_text(spec: &FilterSpec, own: &Identity) -> String {
    let own_device = own.device_id.as_str();
    let own_module = own.module_id.as_deref().unwrap_or(OWN_MODULE);
    match spec {
        FilterSpec::TwinResponses => "$iothub/twin/res/#".into(),
        FilterSpec::Desired => "$iothub/twin/PATCH/properties/desired/#".into(),
        FilterSpec::Methods => "$iothub/methods/POST/#".into(),
        FilterSpec::CloudToDevice(d) => {
            format!("devices/{}/messages/devicebound/#", d.text(own_device))
        }
        FilterSpec::ModuleInputs(d, m) => format!(
            "devices/{}/modules/{}/inputs/#",
            d.text(own_device),
            m.text(own_module)
        ),
        FilterSpec::Raw(s) => s.clone(),
    }
}

/// Whether a filter names an identity other than `own` (device or module).
fn names_other_identity(filter: &str, own: &Identity) -> bool {
    use twinhub_core::topic::Filter;
    match Filter::parse(filter) {
        Ok(Filter::CloudToDevice { device_id }) => {
            device_id != own.device_id || own.module_id.is_some()
        }
        Ok(Filter::ModuleInputs {
            device_id,
            module_id,
        }) => device_id != own.device_id || own.module_id.as_deref() != Some(module_id),
        _ => false,
    }
}

fn qos(bits: u8) -> QoS {
    QoS::from_bits(bits % 3).unwrap_or(QoS::AtMostOnce)
}

fn at(nanos: i64) -> Timestamp {
    Timestamp::from_unix_nanos(nanos)
}

/// Checks the handshake: a login speaks exactly for its username and client id.
fn check_login(spec: &ConnectSpec) {
    let device = spec.client_device.text(OWN_DEVICE);
    let client_id = match &spec.client_module {
        Some(m) => format!("{device}/{}", m.text(OWN_MODULE)),
        None => device,
    };
    let user_device = spec.user_device.text(OWN_DEVICE);
    let mut username = format!("{}/{user_device}/", spec.user_host);
    if let Some(m) = &spec.user_module {
        username = format!("{username}{}/", m.text(OWN_MODULE));
    }
    match &spec.user_bag {
        Some(bag) => username.push_str(bag),
        None => username.push_str("?api-version=2021-04-12&DeviceClientType=fuzz"),
    }
    let identity = Identity {
        device_id: user_device,
        module_id: spec.user_module.as_ref().map(|m| m.text(OWN_MODULE)),
    };
    let will = spec.will.as_ref().map(|(topic, bits)| Will {
        topic: topic_text(topic, &identity),
        payload: Bytes::new(),
        qos: qos(*bits),
        retain: bits & 0x80 != 0,
    });
    let connect = Connect {
        level: spec.level,
        clean_session: spec.clean_session,
        keep_alive: spec.keep_alive,
        client_id,
        will,
        username: Some(username),
        password: spec.password.clone().map(Bytes::from),
    };
    let mut buf = BytesMut::from(&encode_client(&ClientPacket::Connect(Box::new(connect)))[..]);
    let Ok(Some(ClientPacket::Connect(decoded))) = decode(&mut buf, MAX_PACKET) else {
        return;
    };
    let Ok(l) = login(&decoded) else {
        return;
    };
    assert_eq!(
        l.identity.client_id(),
        decoded.client_id,
        "login under another client id"
    );
    let username = twinhub_core::topic::Username::parse(decoded.username.as_deref().unwrap_or(""))
        .expect("a login has a valid username");
    assert_eq!(l.identity.device_id, username.device_id);
    assert_eq!(l.identity.module_id.as_deref(), username.module_id);
    if let Some(w) = &decoded.will {
        match DeviceTopic::parse(&w.topic) {
            Ok(DeviceTopic::Telemetry {
                device_id,
                module_id,
                ..
            }) => {
                assert_eq!(device_id, l.identity.device_id);
                assert_eq!(module_id, l.identity.module_id.as_deref());
            }
            other => panic!("will on {other:?} accepted"),
        }
    }
}

enum Pending {
    Get(String),
    Patch(String),
}

struct Harness {
    session: Session,
    identity: Identity,
    now: i64,
    token_expiry: i64,
    in_flight: Vec<u16>,
    pending: Vec<Pending>,
    /// Request ids the hub may answer now: pending ones and just-refused ones.
    answerable: Vec<String>,
}

impl Harness {
    /// Drains the session's actions, checking each; returns them.
    fn drain(&mut self) -> Vec<Action> {
        let mut actions = Vec::new();
        while let Some(action) = self.session.poll_action() {
            match &action {
                Action::Send(packet) => self.check_sent(packet),
                Action::GetTwin { rid } => {
                    self.pending.push(Pending::Get(rid.clone()));
                }
                Action::PatchReported { rid, .. } => {
                    self.pending.push(Pending::Patch(rid.clone()));
                }
                Action::SubscriptionsChanged(s) => {
                    assert_eq!(*s, self.session.subscriptions());
                }
                Action::Activity => {}
                Action::MethodResponse { rid, .. } => {
                    assert!(rid.len() <= 256, "an over-long $rid was handed over");
                }
            }
            actions.push(action);
        }
        assert_eq!(
            self.session.in_flight(),
            self.in_flight.len(),
            "in-flight model"
        );
        assert!(self.in_flight.len() <= MAX_IN_FLIGHT);
        actions
    }

    fn check_sent(&mut self, packet: &ServerPacket) {
        let mut out = BytesMut::new();
        encode(packet, &mut out).expect("hub packets encode");
        let ServerPacket::Publish(p) = packet else {
            return;
        };
        assert!(!p.topic.is_empty() && !p.topic.contains(['#', '+', '\0']));
        match p.qos {
            QoS::AtMostOnce => assert_eq!(p.packet_id, 0),
            QoS::AtLeastOnce => {
                assert_ne!(p.packet_id, 0);
                assert!(
                    !self.in_flight.contains(&p.packet_id),
                    "packet id reused in flight"
                );
                self.in_flight.push(p.packet_id);
            }
            QoS::ExactlyOnce => panic!("hub sent QoS 2"),
        }
        match HubTopic::parse(&p.topic) {
            Ok(HubTopic::TwinResponse { rid, .. }) => {
                assert!(
                    self.answerable.iter().any(|r| r == rid),
                    "response to a request nobody made: {rid:?}"
                );
            }
            Ok(HubTopic::DesiredPatch { .. }) => {
                assert!(self.session.subscriptions().desired.is_some());
            }
            Ok(HubTopic::CloudToDevice { device_id, .. }) => {
                assert_eq!(device_id, self.identity.device_id)
            }
            Ok(HubTopic::ModuleInput {
                device_id,
                module_id,
                ..
            }) => {
                assert_eq!(device_id, self.identity.device_id);
                assert_eq!(Some(module_id), self.identity.module_id.as_deref());
            }
            Ok(HubTopic::MethodRequest { .. }) => {
                assert!(self.session.subscriptions().methods.is_some());
                assert_eq!(p.qos, QoS::AtMostOnce, "method requests are QoS 0");
            }
            Err(e) => panic!("SDKs cannot parse hub topic {:?}: {e}", p.topic),
        }
    }

    /// Feeds one client packet; `false` when the connection ends.
    fn packet(&mut self, packet: ClientPacket) -> bool {
        let bytes = encode_client(&packet);
        let mut buf = BytesMut::from(&bytes[..]);
        let decoded = match decode(&mut buf, MAX_PACKET) {
            Ok(Some(p)) => p,
            Ok(None) => panic!("a whole packet decoded as incomplete"),
            Err(_) => return false,
        };
        assert!(buf.is_empty());
        if bytes.len() < 60_000 {
            assert_eq!(decoded, packet, "client encoder and hub decoder disagree");
        }
        self.feed(decoded)
    }

    fn feed(&mut self, packet: ClientPacket) -> bool {
        // What must happen, worked out before the session sees the packet.
        let mut must_close = matches!(packet, ClientPacket::Connect(_) | ClientPacket::Disconnect);
        let mut rids = Vec::new();
        match &packet {
            ClientPacket::Publish(p) => {
                if p.qos == QoS::ExactlyOnce {
                    must_close = true;
                }
                match DeviceTopic::parse(&p.topic) {
                    // A method answer whose status is not a number is dropped,
                    // not a reason to close (fleet spec §1.3).
                    Err(twinhub_core::topic::TopicError::BadStatus)
                        if p.topic.starts_with(twinhub_core::topic::METHODS_RES) => {}
                    Err(_) => must_close = true,
                    Ok(DeviceTopic::Telemetry {
                        device_id,
                        module_id,
                        ..
                    }) => {
                        if device_id != self.identity.device_id
                            || module_id != self.identity.module_id.as_deref()
                        {
                            must_close = true;
                        }
                    }
                    Ok(
                        DeviceTopic::TwinGet { rid }
                        | DeviceTopic::ReportedPatch { rid, .. }
                        | DeviceTopic::MethodResponse { rid, .. },
                    ) => rids.push(rid.to_owned()),
                }
            }
            ClientPacket::Subscribe(s)
                if s.filters
                    .iter()
                    .any(|(f, _)| names_other_identity(f, &self.identity)) =>
            {
                must_close = true;
            }
            ClientPacket::PubAck(id) => self.in_flight.retain(|x| x != id),
            _ => {}
        }
        self.answerable.extend(rids);
        let result = self.session.handle_packet(packet.clone(), at(self.now));
        let actions = self.drain();
        if must_close {
            assert!(result.is_err(), "session stayed open after {packet:?}");
        }
        let Ok(()) = result else {
            return false;
        };
        let sent: Vec<&ServerPacket> = actions
            .iter()
            .filter_map(|a| match a {
                Action::Send(p) => Some(p),
                _ => None,
            })
            .collect();
        match &packet {
            ClientPacket::Publish(p) if p.qos == QoS::AtLeastOnce => {
                let acks = sent
                    .iter()
                    .filter(|s| **s == &ServerPacket::PubAck(p.packet_id))
                    .count();
                assert_eq!(acks, 1, "QoS 1 PUBLISH not acknowledged once");
            }
            ClientPacket::Subscribe(s) => {
                let suback = sent.iter().find_map(|p| match p {
                    ServerPacket::SubAck { packet_id, granted } if *packet_id == s.packet_id => {
                        Some(granted)
                    }
                    _ => None,
                });
                let granted = suback.expect("SUBSCRIBE without SUBACK");
                assert_eq!(granted.len(), s.filters.len());
                assert!(granted
                    .iter()
                    .all(|g| g.is_some_and(|q| q <= QoS::AtLeastOnce)));
            }
            ClientPacket::Unsubscribe(u) => {
                assert!(sent.contains(&&ServerPacket::UnsubAck(u.packet_id)));
            }
            ClientPacket::PingReq => assert!(sent.contains(&&ServerPacket::PingResp)),
            _ => {}
        }
        true
    }

    fn deadline(&self) -> i64 {
        self.session
            .poll_timeout()
            .expect("a session always has a token deadline")
            .unix_nanos()
    }

    /// Time passes; the driver's timer fires if a deadline passed.
    fn wait(&mut self, nanos: i64) -> bool {
        self.now = self.now.saturating_add(nanos);
        let deadline = self.deadline();
        assert!(
            deadline <= self.token_expiry,
            "deadline past the token's expiry"
        );
        let result = self.session.handle_timeout(at(self.now));
        self.drain();
        if self.now < deadline {
            assert_eq!(result, Ok(()), "closed before poll_timeout");
            true
        } else {
            assert!(result.is_err(), "still open after poll_timeout");
            false
        }
    }

    fn step(&mut self, step: &Step) -> bool {
        let own = self.identity.clone();
        match step {
            Step::Packet(spec) => {
                let packet = match spec {
                    PacketSpec::Publish {
                        qos: bits,
                        dup,
                        retain,
                        packet_id,
                        topic,
                        payload,
                    } => {
                        let qos = qos(*bits);
                        let payload = match payload {
                            PayloadSpec::Json(v) => {
                                serde_json::to_vec(&v.to_value()).unwrap_or_default()
                            }
                            PayloadSpec::Space => b" ".to_vec(),
                            PayloadSpec::Bytes(b) => b.clone(),
                        };
                        ClientPacket::Publish(Publish {
                            dup: *dup && qos != QoS::AtMostOnce,
                            qos,
                            retain: *retain,
                            topic: topic_text(topic, &own),
                            packet_id: if qos == QoS::AtMostOnce {
                                0
                            } else {
                                *packet_id
                            },
                            payload: Bytes::from(payload),
                        })
                    }
                    PacketSpec::PubAck(index, raw) => {
                        let id = index
                            .and_then(|i| {
                                let n = self.in_flight.len();
                                (n > 0).then(|| self.in_flight[usize::from(i) % n])
                            })
                            .unwrap_or(*raw);
                        ClientPacket::PubAck(id)
                    }
                    PacketSpec::Subscribe(id, filters) => ClientPacket::Subscribe(Subscribe {
                        packet_id: *id,
                        filters: filters
                            .iter()
                            .take(8)
                            .map(|(f, q)| (filter_text(f, &own), qos(*q)))
                            .collect(),
                    }),
                    PacketSpec::Unsubscribe(id, filters) => {
                        ClientPacket::Unsubscribe(Unsubscribe {
                            packet_id: *id,
                            filters: filters
                                .iter()
                                .take(8)
                                .map(|f| filter_text(f, &own))
                                .collect(),
                        })
                    }
                    PacketSpec::PingReq => ClientPacket::PingReq,
                    PacketSpec::Disconnect => ClientPacket::Disconnect,
                    PacketSpec::Connect => ClientPacket::Connect(Box::new(Connect {
                        level: 4,
                        clean_session: false,
                        keep_alive: 60,
                        client_id: own.client_id(),
                        will: None,
                        username: None,
                        password: None,
                    })),
                };
                self.packet(packet)
            }
            Step::Raw(bytes) => {
                let mut buf = BytesMut::from(&bytes[..]);
                loop {
                    match decode(&mut buf, MAX_PACKET) {
                        Ok(Some(p)) => {
                            if !self.feed(p) {
                                return false;
                            }
                        }
                        Ok(None) => return true,
                        Err(_) => return false,
                    }
                }
            }
            Step::Wait(millis, hours) => {
                let nanos =
                    i64::from(*millis) * 1_000_000 + i64::from(*hours % 16) * 3_600_000_000_000;
                self.wait(nanos)
            }
            Step::Timer => {
                let deadline = self.deadline();
                if deadline > self.now {
                    assert_eq!(
                        self.session.handle_timeout(at(deadline - 1)),
                        Ok(()),
                        "closed before poll_timeout"
                    );
                    self.now = deadline;
                }
                assert!(self.session.handle_timeout(at(self.now)).is_err());
                false
            }
            Step::Complete(index, outcome) => {
                if self.pending.is_empty() {
                    return true;
                }
                let i = usize::from(*index) % self.pending.len();
                let pending = self.pending.remove(i);
                let error = |code: &u8, message: &String| {
                    let codes = [
                        ErrorCode::ArgumentInvalid,
                        ErrorCode::DeviceNotFound,
                        ErrorCode::PreconditionFailed,
                        ErrorCode::ThrottlingException,
                        ErrorCode::ServerError,
                        ErrorCode::ServiceUnavailable,
                        ErrorCode::MessageTooLarge,
                    ];
                    HubError::new(codes[usize::from(*code) % codes.len()], message.clone())
                };
                let now = at(self.now);
                let result = match (pending, outcome) {
                    (Pending::Get(rid), Outcome::Ok(twin, _)) => {
                        self.session.twin_read(&rid, Ok(twin.to_value()), now)
                    }
                    (Pending::Get(rid), Outcome::Err(c, m)) => {
                        self.session.twin_read(&rid, Err(error(c, m)), now)
                    }
                    (Pending::Patch(rid), Outcome::Ok(_, version)) => {
                        self.session.reported_patched(&rid, Ok(*version), now)
                    }
                    (Pending::Patch(rid), Outcome::Err(c, m)) => {
                        self.session.reported_patched(&rid, Err(error(c, m)), now)
                    }
                };
                self.drain();
                match result {
                    Ok(()) => true,
                    Err(Close::Congested) => false,
                    Err(e) => panic!("a backend answer closed the session: {e}"),
                }
            }
            Step::Method(name, rid, payload) => {
                // The hub only sends names and rids it validated or made.
                let topic_safe = |s: &str| {
                    !s.is_empty()
                        && !s.contains(['/', '+', '#', '?', '&', '='])
                        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
                };
                if topic_safe(name) && topic_safe(rid) {
                    let payload = payload.to_value().to_string();
                    self.session
                        .method_request(name, rid, &payload, at(self.now));
                    self.drain();
                }
                true
            }
            Step::Desired(version, payload) => {
                let result =
                    self.session
                        .desired_changed(*version, &payload.to_value(), at(self.now));
                self.drain();
                match result {
                    Ok(()) => true,
                    Err(Close::Congested) => false,
                    Err(e) => panic!("a desired change closed the session: {e}"),
                }
            }
        }
    }
}

fuzz_target!(|input: Input| {
    check_login(&input.connect);

    let identity = Identity {
        device_id: OWN_DEVICE.into(),
        module_id: input.module.then(|| OWN_MODULE.into()),
    };
    let bit = |n: u8| (input.restored >> n & 1 == 1).then_some(QoS::AtLeastOnce);
    let subscriptions = Subscriptions {
        twin_responses: bit(0),
        desired: bit(1),
        methods: bit(2),
        cloud_to_device: bit(3),
        module_inputs: bit(4),
    };
    let start = T0 * 1_000_000_000;
    let token_expiry = T0 + 1 + i64::from(input.token_ttl_secs);
    let session = Session::new(
        SessionParams {
            identity: identity.clone(),
            keep_alive: input.keep_alive,
            token_expiry,
            subscriptions,
            tracking_id: 1,
        },
        at(start),
    );
    let mut h = Harness {
        session,
        identity,
        now: start,
        token_expiry: token_expiry * 1_000_000_000,
        in_flight: Vec::new(),
        pending: Vec::new(),
        answerable: Vec::new(),
    };
    h.drain();
    for step in input.steps.iter().take(256) {
        if !h.step(step) {
            break;
        }
    }
});
