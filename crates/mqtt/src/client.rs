//! The client side of MQTT 3.1.1 as bytes: what a device sends, and the hub's
//! packets as a device reads them.
//!
//! The hub never uses this module. Tests that speak raw MQTT (socket tests, the
//! live-hub storm and abuse tests), the load generator and the fuzzer do, so they
//! share one client encoder, itself checked against the hub's strict decoder
//! (see the tests below), instead of each writing bytes its own way. It is
//! deliberately plain: any byte sequence can be built with [`packet`], malformed
//! ones included, which is what abuse tests need.

use crate::packet::{ClientPacket, Connect, QoS};
use bytes::Bytes;

/// Appends MQTT's variable-length "remaining length" of `len` (at most four
/// bytes for lengths up to 268,435,455; longer ones are written on as many bytes
/// as they need, which a test may want to send).
pub fn remaining_length(mut len: usize, out: &mut Vec<u8>) {
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

/// Appends a two-byte length and `bytes` (a UTF-8 string or binary data field),
/// cut at 65,535 bytes.
pub fn put_field(bytes: &[u8], out: &mut Vec<u8>) {
    let len = bytes.len().min(usize::from(u16::MAX));
    out.extend_from_slice(&(len as u16).to_be_bytes());
    out.extend_from_slice(&bytes[..len]);
}

/// A whole packet: `first` (type and flags), the remaining length, `body`.
pub fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 5);
    out.push(first);
    remaining_length(body.len(), &mut out);
    out.extend_from_slice(body);
    out
}

/// What a CONNECT carries; the SDKs always send a username and a password.
#[derive(Debug, Clone)]
pub struct ConnectFields<'a> {
    /// Protocol level: 4 for MQTT 3.1.1.
    pub level: u8,
    /// The client identifier (the device id for IoT Hub).
    pub client_id: &'a str,
    /// `{host}/{device}/?api-version=...`.
    pub username: &'a str,
    /// A SAS token.
    pub password: &'a str,
    /// Clean session flag.
    pub clean_session: bool,
    /// Keep-alive in seconds.
    pub keep_alive: u16,
}

/// A CONNECT with username and password (no will).
pub fn connect(fields: &ConnectFields<'_>) -> Vec<u8> {
    encode(&ClientPacket::Connect(Box::new(Connect {
        level: fields.level,
        clean_session: fields.clean_session,
        keep_alive: fields.keep_alive,
        client_id: fields.client_id.to_owned(),
        will: None,
        username: Some(fields.username.to_owned()),
        password: Some(Bytes::copy_from_slice(fields.password.as_bytes())),
    })))
}

/// A PUBLISH at `qos` (0, 1, or anything a test wants to send); `id` is written
/// only for QoS above 0.
pub fn publish(topic: &str, qos: u8, id: u16, payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    put_field(topic.as_bytes(), &mut body);
    if qos > 0 {
        body.extend_from_slice(&id.to_be_bytes());
    }
    body.extend_from_slice(payload);
    packet(0x30 | (qos << 1), &body)
}

/// A SUBSCRIBE of `filters` with their requested QoS.
pub fn subscribe(id: u16, filters: &[(&str, u8)]) -> Vec<u8> {
    let mut body = id.to_be_bytes().to_vec();
    for (filter, qos) in filters {
        put_field(filter.as_bytes(), &mut body);
        body.push(*qos);
    }
    packet(0x82, &body)
}

/// An UNSUBSCRIBE of `filters`.
pub fn unsubscribe(id: u16, filters: &[&str]) -> Vec<u8> {
    let mut body = id.to_be_bytes().to_vec();
    for filter in filters {
        put_field(filter.as_bytes(), &mut body);
    }
    packet(0xa2, &body)
}

/// A PUBACK for the hub's QoS 1 PUBLISH `id`.
pub fn puback(id: u16) -> Vec<u8> {
    packet(0x40, &id.to_be_bytes())
}

/// PINGREQ.
pub const PINGREQ: [u8; 2] = [0xc0, 0x00];

/// DISCONNECT.
pub const DISCONNECT: [u8; 2] = [0xe0, 0x00];

/// Encodes any packet the hub decodes, as a well-behaved client would (the
/// fuzzer builds structured input this way). Fields longer than 65,535 bytes are
/// cut.
pub fn encode(packet: &ClientPacket) -> Vec<u8> {
    match packet {
        ClientPacket::Connect(c) => {
            let mut body = Vec::new();
            put_field(b"MQTT", &mut body);
            body.push(c.level);
            let mut flags = 0u8;
            if c.clean_session {
                flags |= 0x02;
            }
            if let Some(will) = &c.will {
                flags |= 0x04 | (qos_bits(will.qos) << 3);
                if will.retain {
                    flags |= 0x20;
                }
            }
            if c.password.is_some() {
                flags |= 0x40;
            }
            if c.username.is_some() {
                flags |= 0x80;
            }
            body.push(flags);
            body.extend_from_slice(&c.keep_alive.to_be_bytes());
            put_field(c.client_id.as_bytes(), &mut body);
            if let Some(will) = &c.will {
                put_field(will.topic.as_bytes(), &mut body);
                put_field(&will.payload, &mut body);
            }
            if let Some(username) = &c.username {
                put_field(username.as_bytes(), &mut body);
            }
            if let Some(password) = &c.password {
                put_field(password, &mut body);
            }
            self::packet(0x10, &body)
        }
        ClientPacket::Publish(p) => {
            let mut body = Vec::new();
            put_field(p.topic.as_bytes(), &mut body);
            if p.qos != QoS::AtMostOnce {
                body.extend_from_slice(&p.packet_id.to_be_bytes());
            }
            body.extend_from_slice(&p.payload);
            let mut first = 0x30 | (qos_bits(p.qos) << 1);
            if p.dup {
                first |= 0x08;
            }
            if p.retain {
                first |= 0x01;
            }
            self::packet(first, &body)
        }
        ClientPacket::PubAck(id) => puback(*id),
        ClientPacket::Subscribe(s) => {
            let mut body = s.packet_id.to_be_bytes().to_vec();
            for (filter, qos) in &s.filters {
                put_field(filter.as_bytes(), &mut body);
                body.push(qos_bits(*qos));
            }
            self::packet(0x82, &body)
        }
        ClientPacket::Unsubscribe(u) => {
            let filters: Vec<&str> = u.filters.iter().map(String::as_str).collect();
            unsubscribe(u.packet_id, &filters)
        }
        ClientPacket::PingReq => PINGREQ.to_vec(),
        ClientPacket::Disconnect => DISCONNECT.to_vec(),
    }
}

fn qos_bits(qos: QoS) -> u8 {
    match qos {
        QoS::AtMostOnce => 0,
        QoS::AtLeastOnce => 1,
        QoS::ExactlyOnce => 2,
    }
}

/// Why [`take_packet`] could not frame the hub's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("remaining length longer than four bytes")]
pub struct BadLength;

/// Splits the next whole packet off the front of `buf`: `(first byte, body)`, or
/// `None` while it is incomplete.
pub fn take_packet(buf: &mut Vec<u8>) -> Result<Option<(u8, Vec<u8>)>, BadLength> {
    let mut len = 0usize;
    for i in 0..4 {
        let Some(&byte) = buf.get(1 + i) else {
            return Ok(None);
        };
        len |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            let start = 2 + i;
            if buf.len() < start + len {
                return Ok(None);
            }
            let first = buf[0];
            let body = buf[start..start + len].to_vec();
            buf.drain(..start + len);
            return Ok(Some((first, body)));
        }
    }
    Err(BadLength)
}

/// A hub PUBLISH as a device reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    /// The topic.
    pub topic: String,
    /// QoS 0 or 1.
    pub qos: u8,
    /// The packet id (0 at QoS 0).
    pub packet_id: u16,
    /// The payload.
    pub payload: Vec<u8>,
}

impl Incoming {
    /// The payload as JSON, `None` if it is not JSON.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.payload).ok()
    }
}

/// Parses a PUBLISH from its first byte and body; `None` for another packet type
/// or a body too short for what its header announces.
pub fn parse_publish(first: u8, body: &[u8]) -> Option<Incoming> {
    if first >> 4 != 3 {
        return None;
    }
    let qos = (first >> 1) & 3;
    let topic_len = usize::from(u16::from_be_bytes([*body.first()?, *body.get(1)?]));
    let topic = String::from_utf8(body.get(2..2 + topic_len)?.to_vec()).ok()?;
    let mut rest = body.get(2 + topic_len..)?;
    let mut packet_id = 0;
    if qos > 0 {
        packet_id = u16::from_be_bytes([*rest.first()?, *rest.get(1)?]);
        rest = rest.get(2..)?;
    }
    Some(Incoming {
        topic,
        qos,
        packet_id,
        payload: rest.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::decode;
    use crate::encode::encode as encode_server;
    use crate::packet::ServerPacket;
    use bytes::BytesMut;

    fn decoded(bytes: &[u8]) -> ClientPacket {
        let mut buf = BytesMut::from(bytes);
        let packet = decode(&mut buf, 1 << 20)
            .expect("the hub's decoder accepts it")
            .expect("a whole packet");
        assert!(buf.is_empty(), "the packet is exactly framed");
        packet
    }

    #[test]
    fn what_a_client_sends_is_what_the_hub_decodes() {
        let connect_bytes = connect(&ConnectFields {
            level: 4,
            client_id: "d1",
            username: "h/d1/?api-version=2021-04-12",
            password: "SharedAccessSignature sr=x&sig=y&se=1",
            clean_session: false,
            keep_alive: 60,
        });
        let ClientPacket::Connect(c) = decoded(&connect_bytes) else {
            panic!("not a CONNECT");
        };
        assert_eq!(
            (c.client_id.as_str(), c.keep_alive, c.clean_session),
            ("d1", 60, false)
        );
        assert_eq!(encode(&ClientPacket::Connect(c)), connect_bytes);

        let long = vec![b'x'; 300];
        for bytes in [
            publish("$iothub/twin/GET/?$rid=1", 0, 0, b""),
            publish(
                "$iothub/twin/PATCH/properties/reported/?$rid=2",
                1,
                9,
                &long,
            ),
            subscribe(3, &[("$iothub/twin/res/#", 1), ("a/b", 0)]),
            unsubscribe(4, &["$iothub/twin/res/#"]),
            puback(5),
            PINGREQ.to_vec(),
            DISCONNECT.to_vec(),
        ] {
            assert_eq!(encode(&decoded(&bytes)), bytes);
        }
    }

    #[test]
    fn a_client_reads_what_the_hub_sends() {
        let mut out = BytesMut::new();
        encode_server(
            &ServerPacket::Publish(crate::packet::Publish {
                topic: "$iothub/twin/res/204/?$rid=1&$version=2".into(),
                qos: QoS::AtLeastOnce,
                packet_id: 7,
                payload: bytes::Bytes::from_static(b"{}"),
                dup: false,
                retain: false,
            }),
            &mut out,
        )
        .expect("encodes");
        let mut buf = out.to_vec();
        buf.push(0xd0);
        let (first, body) = take_packet(&mut buf).expect("framed").expect("whole");
        assert_eq!(buf, [0xd0], "only the first packet is taken");
        assert_eq!(take_packet(&mut buf), Ok(None));
        let publish = parse_publish(first, &body).expect("a PUBLISH");
        assert_eq!(publish.topic, "$iothub/twin/res/204/?$rid=1&$version=2");
        assert_eq!((publish.qos, publish.packet_id), (1, 7));
        assert_eq!(publish.payload, b"{}");
        assert_eq!(parse_publish(0x30, &[0, 9, b'a']), None);
        assert_eq!(
            take_packet(&mut vec![0x30, 0xff, 0xff, 0xff, 0xff, 0x01]),
            Err(BadLength)
        );
    }
}
