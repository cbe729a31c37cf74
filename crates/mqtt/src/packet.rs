//! MQTT 3.1.1 packets as the hub sees them: what clients may send
//! ([`ClientPacket`]) and what the hub sends ([`ServerPacket`]).
//!
//! Only the QoS 0/1 vocabulary exists: the hub never starts a QoS 2 flow and
//! closes connections that do, so PUBREC/PUBREL/PUBCOMP have no variant.

use bytes::Bytes;

/// Quality of service of a PUBLISH or a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum QoS {
    /// 0: fire and forget.
    AtMostOnce = 0,
    /// 1: acknowledged with PUBACK.
    AtLeastOnce = 1,
    /// 2: four-way handshake; decoded so the session can refuse it by name.
    ExactlyOnce = 2,
}

impl QoS {
    /// The QoS for a two-bit value, `None` for the reserved 3.
    pub fn from_bits(bits: u8) -> Option<Self> {
        match bits {
            0 => Some(Self::AtMostOnce),
            1 => Some(Self::AtLeastOnce),
            2 => Some(Self::ExactlyOnce),
            _ => None,
        }
    }
}

/// A packet a client sends to the hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientPacket {
    /// CONNECT (boxed: it is large and rare, the others are hot).
    Connect(Box<Connect>),
    /// PUBLISH.
    Publish(Publish),
    /// PUBACK for a QoS 1 PUBLISH the hub sent.
    PubAck(u16),
    /// SUBSCRIBE.
    Subscribe(Subscribe),
    /// UNSUBSCRIBE.
    Unsubscribe(Unsubscribe),
    /// PINGREQ.
    PingReq,
    /// DISCONNECT.
    Disconnect,
}

/// A packet the hub sends to a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerPacket {
    /// CONNACK.
    ConnAck {
        /// Whether a stored session was resumed.
        session_present: bool,
        /// The verdict.
        code: ConnectReturnCode,
    },
    /// PUBLISH.
    Publish(Publish),
    /// PUBACK for a client's QoS 1 PUBLISH.
    PubAck(u16),
    /// SUBACK: per filter, the granted QoS or `None` for failure (0x80).
    SubAck {
        /// The SUBSCRIBE's packet id.
        packet_id: u16,
        /// One entry per requested filter, in order.
        granted: Vec<Option<QoS>>,
    },
    /// UNSUBACK.
    UnsubAck(u16),
    /// PINGRESP.
    PingResp,
}

/// CONNACK return codes (MQTT 3.1.1 §3.2.2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectReturnCode {
    /// 0: connection accepted.
    Accepted = 0,
    /// 1: the server does not support the protocol level.
    UnacceptableProtocolVersion = 1,
    /// 2: the client id is not allowed.
    IdentifierRejected = 2,
    /// 3: the server cannot serve now.
    ServerUnavailable = 3,
    /// 4: malformed user name or password.
    BadUserNameOrPassword = 4,
    /// 5: not authorized (IoT Hub's answer to every authentication failure).
    NotAuthorized = 5,
}

/// A CONNECT packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    /// Protocol level; 4 for MQTT 3.1.1.
    pub level: u8,
    /// Clean session flag.
    pub clean_session: bool,
    /// Keep-alive in seconds; 0 disables it.
    pub keep_alive: u16,
    /// Client identifier.
    pub client_id: String,
    /// Will message, if any.
    pub will: Option<Will>,
    /// User name, if any.
    pub username: Option<String>,
    /// Password (binary in MQTT; a SAS token for IoT Hub), if any.
    pub password: Option<Bytes>,
}

/// A CONNECT's will message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will {
    /// Topic to publish the will on.
    pub topic: String,
    /// Will payload.
    pub payload: Bytes,
    /// Will QoS.
    pub qos: QoS,
    /// Will retain flag.
    pub retain: bool,
}

/// A PUBLISH packet, either direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// DUP flag (a redelivery).
    pub dup: bool,
    /// Delivery QoS.
    pub qos: QoS,
    /// RETAIN flag.
    pub retain: bool,
    /// Topic name (never a filter).
    pub topic: String,
    /// Packet id; 0 exactly when `qos` is 0.
    pub packet_id: u16,
    /// Application payload.
    pub payload: Bytes,
}

/// A SUBSCRIBE packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    /// Packet id, echoed in SUBACK.
    pub packet_id: u16,
    /// Filters with their requested QoS, at least one.
    pub filters: Vec<(String, QoS)>,
}

/// An UNSUBSCRIBE packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    /// Packet id, echoed in UNSUBACK.
    pub packet_id: u16,
    /// Filters, at least one.
    pub filters: Vec<String>,
}
