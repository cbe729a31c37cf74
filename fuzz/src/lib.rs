//! Helpers shared by the fuzz targets in `fuzz_targets/`.
//!
//! - [`encode_client`]: a client-side MQTT 3.1.1 encoder, so structure-aware
//!   targets can turn generated packets into bytes and hand the session only what
//!   the hub's real decoder accepts.
//! - [`JsonSpec`]: `arbitrary`-driven JSON values biased towards the shapes twin
//!   patches and queries care about (small key alphabet, nesting, `null`s, the
//!   integer range edges), turned into `serde_json::Value` by [`JsonSpec::to_value`].
//! - [`twins`]: the fixed twins the query target evaluates against.

use arbitrary::Arbitrary;
use serde_json::{Map, Number, Value};
use twinhub_mqtt::packet::{ClientPacket, QoS};

/// Appends MQTT's variable-length "remaining length" for `len`.
fn remaining_length(out: &mut Vec<u8>, mut len: usize) {
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if len == 0 {
            break;
        }
    }
}

fn put_binary(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = bytes.len().min(usize::from(u16::MAX));
    out.extend_from_slice(&(len as u16).to_be_bytes());
    out.extend_from_slice(&bytes[..len]);
}

/// Encodes a packet as a client would send it (no validation: a packet the
/// decoder refuses is a legitimate input too).
pub fn encode_client(packet: &ClientPacket) -> Vec<u8> {
    let (first, body) = match packet {
        ClientPacket::Connect(c) => {
            let mut body = Vec::new();
            put_binary(&mut body, b"MQTT");
            body.push(c.level);
            let mut flags = 0u8;
            if c.clean_session {
                flags |= 0x02;
            }
            if let Some(w) = &c.will {
                flags |= 0x04 | ((w.qos as u8) << 3) | (u8::from(w.retain) << 5);
            }
            if c.password.is_some() {
                flags |= 0x40;
            }
            if c.username.is_some() {
                flags |= 0x80;
            }
            body.push(flags);
            body.extend_from_slice(&c.keep_alive.to_be_bytes());
            put_binary(&mut body, c.client_id.as_bytes());
            if let Some(w) = &c.will {
                put_binary(&mut body, w.topic.as_bytes());
                put_binary(&mut body, &w.payload);
            }
            if let Some(u) = &c.username {
                put_binary(&mut body, u.as_bytes());
            }
            if let Some(p) = &c.password {
                put_binary(&mut body, p);
            }
            (0x10, body)
        }
        ClientPacket::Publish(p) => {
            let mut body = Vec::new();
            put_binary(&mut body, p.topic.as_bytes());
            if p.qos != QoS::AtMostOnce {
                body.extend_from_slice(&p.packet_id.to_be_bytes());
            }
            body.extend_from_slice(&p.payload);
            let first = 0x30 | (u8::from(p.dup) << 3) | ((p.qos as u8) << 1) | u8::from(p.retain);
            (first, body)
        }
        ClientPacket::PubAck(id) => (0x40, id.to_be_bytes().to_vec()),
        ClientPacket::Subscribe(s) => {
            let mut body = s.packet_id.to_be_bytes().to_vec();
            for (filter, qos) in &s.filters {
                put_binary(&mut body, filter.as_bytes());
                body.push(*qos as u8);
            }
            (0x82, body)
        }
        ClientPacket::Unsubscribe(u) => {
            let mut body = u.packet_id.to_be_bytes().to_vec();
            for filter in &u.filters {
                put_binary(&mut body, filter.as_bytes());
            }
            (0xa2, body)
        }
        ClientPacket::PingReq => (0xc0, Vec::new()),
        ClientPacket::Disconnect => (0xe0, Vec::new()),
    };
    let mut out = vec![first];
    remaining_length(&mut out, body.len());
    out.extend_from_slice(&body);
    out
}

/// A twin-shaped JSON value.
#[derive(Arbitrary, Debug, Clone)]
pub enum JsonSpec {
    /// `null` (deletes in a patch; refused inside arrays).
    Null,
    /// A boolean.
    Bool(bool),
    /// An integer, possibly beyond IoT Hub's ±2^52.
    Int(i64),
    /// An integer near the ±2^52 edges.
    Edge(i8),
    /// A float (non-finite ones become `null`).
    Float(f64),
    /// A short string.
    Str(String),
    /// A long string (around IoT Hub's 4 KB value limit).
    Long(u16, char),
    /// An array.
    Array(Vec<JsonSpec>),
    /// An object with keys from a small alphabet, so patches collide with what
    /// earlier patches wrote.
    Object(Vec<(KeySpec, JsonSpec)>),
}

/// An object key.
#[derive(Arbitrary, Debug, Clone)]
pub enum KeySpec {
    /// One of a few common names (`a`..`d`).
    Common(u8),
    /// `$metadata` / `$version` (read-only members IoT Hub ignores at a section root).
    Meta(bool),
    /// Anything.
    Any(String),
    /// A long key (around IoT Hub's 1 KB key limit).
    Long(u16),
}

impl KeySpec {
    /// The key text.
    pub fn text(&self) -> String {
        match self {
            KeySpec::Common(n) => ["a", "b", "c", "d"][usize::from(*n % 4)].to_owned(),
            KeySpec::Meta(true) => "$metadata".to_owned(),
            KeySpec::Meta(false) => "$version".to_owned(),
            KeySpec::Any(s) => s.clone(),
            KeySpec::Long(n) => "k".repeat(usize::from(*n % 1100) + 1000),
        }
    }
}

/// Deepest nesting [`JsonSpec::to_value`] builds; deeper is cut to `null`.
const MAX_BUILD_DEPTH: usize = 16;

impl JsonSpec {
    /// The JSON value.
    pub fn to_value(&self) -> Value {
        self.build(0)
    }

    fn build(&self, depth: usize) -> Value {
        if depth > MAX_BUILD_DEPTH {
            return Value::Null;
        }
        match self {
            JsonSpec::Null => Value::Null,
            JsonSpec::Bool(b) => Value::Bool(*b),
            JsonSpec::Int(i) => Value::from(*i),
            JsonSpec::Edge(d) => Value::from(4_503_599_627_370_495i64 + i64::from(*d % 4)),
            JsonSpec::Float(f) => Number::from_f64(*f).map_or(Value::Null, Value::Number),
            JsonSpec::Str(s) => Value::String(s.clone()),
            JsonSpec::Long(n, c) => Value::String(c.to_string().repeat(usize::from(*n % 4200))),
            JsonSpec::Array(items) => {
                Value::Array(items.iter().map(|v| v.build(depth + 1)).collect())
            }
            JsonSpec::Object(members) => {
                let mut map = Map::new();
                for (k, v) in members {
                    map.insert(k.text(), v.build(depth + 1));
                }
                Value::Object(map)
            }
        }
    }
}

/// Twins as `GET /twins/{id}` returns them (shapes from the query conformance
/// corpus), for the query target to evaluate against.
pub fn twins() -> Vec<Value> {
    match serde_json::from_str(include_str!("twins.json")) {
        Ok(Value::Array(twins)) => twins,
        _ => Vec::new(),
    }
}
