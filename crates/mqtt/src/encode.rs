//! Encoding of the hub's packets.

use crate::packet::{Publish, QoS, ServerPacket};
use bytes::{BufMut, BytesMut};

/// Largest remaining length MQTT can express (four length bytes).
const MAX_REMAINING: usize = 268_435_455;

/// Why a packet cannot be put on the wire. Only a bug or an absurd input (a topic
/// over 64 KiB, a payload over 256 MiB) gets here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// A string longer than its 16-bit length prefix allows.
    #[error("[MQTT-1.5.3] string of {0} bytes exceeds 65535")]
    StringTooLong(usize),
    /// A packet longer than the remaining-length field allows.
    #[error("[MQTT-2.2.3] packet body of {0} bytes exceeds 268435455")]
    TooLarge(usize),
}

/// Appends `packet` to `buf`. On error `buf` is unchanged.
pub fn encode(packet: &ServerPacket, buf: &mut BytesMut) -> Result<(), EncodeError> {
    match packet {
        ServerPacket::ConnAck {
            session_present,
            code,
        } => {
            buf.put_slice(&[0x20, 0x02, u8::from(*session_present), *code as u8]);
        }
        ServerPacket::Publish(publish) => encode_publish(publish, buf)?,
        ServerPacket::PubAck(id) => {
            buf.put_slice(&[0x40, 0x02]);
            buf.put_u16(*id);
        }
        ServerPacket::SubAck { packet_id, granted } => {
            let body = 2 + granted.len();
            header(buf, 0x90, body)?;
            buf.put_u16(*packet_id);
            for g in granted {
                buf.put_u8(g.map_or(0x80, |q| q as u8));
            }
        }
        ServerPacket::UnsubAck(id) => {
            buf.put_slice(&[0xb0, 0x02]);
            buf.put_u16(*id);
        }
        ServerPacket::PingResp => buf.put_slice(&[0xd0, 0x00]),
    }
    Ok(())
}

fn encode_publish(p: &Publish, buf: &mut BytesMut) -> Result<(), EncodeError> {
    let topic_len =
        u16::try_from(p.topic.len()).map_err(|_| EncodeError::StringTooLong(p.topic.len()))?;
    let id_len = if p.qos == QoS::AtMostOnce { 0 } else { 2 };
    let body = 2 + p.topic.len() + id_len + p.payload.len();
    let first = 0x30 | (u8::from(p.dup) << 3) | ((p.qos as u8) << 1) | u8::from(p.retain);
    header(buf, first, body)?;
    buf.put_u16(topic_len);
    buf.put_slice(p.topic.as_bytes());
    if id_len > 0 {
        buf.put_u16(p.packet_id);
    }
    buf.put_slice(&p.payload);
    Ok(())
}

fn header(buf: &mut BytesMut, first: u8, remaining: usize) -> Result<(), EncodeError> {
    if remaining > MAX_REMAINING {
        return Err(EncodeError::TooLarge(remaining));
    }
    buf.reserve(5 + remaining);
    buf.put_u8(first);
    let mut len = remaining;
    loop {
        // Seven bits at a time; `len % 128` always fits a byte.
        let mut byte = u8::try_from(len % 128).unwrap_or(0);
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        buf.put_u8(byte);
        if len == 0 {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::ConnectReturnCode;
    use bytes::Bytes;

    fn bytes(p: &ServerPacket) -> Vec<u8> {
        let mut buf = BytesMut::new();
        encode(p, &mut buf).unwrap();
        buf.to_vec()
    }

    #[test]
    fn fixed_packets() {
        assert_eq!(
            bytes(&ServerPacket::ConnAck {
                session_present: true,
                code: ConnectReturnCode::Accepted
            }),
            [0x20, 2, 1, 0]
        );
        assert_eq!(
            bytes(&ServerPacket::ConnAck {
                session_present: false,
                code: ConnectReturnCode::NotAuthorized
            }),
            [0x20, 2, 0, 5]
        );
        assert_eq!(bytes(&ServerPacket::PubAck(0x0102)), [0x40, 2, 1, 2]);
        assert_eq!(bytes(&ServerPacket::UnsubAck(9)), [0xb0, 2, 0, 9]);
        assert_eq!(bytes(&ServerPacket::PingResp), [0xd0, 0]);
        assert_eq!(
            bytes(&ServerPacket::SubAck {
                packet_id: 3,
                granted: vec![Some(QoS::AtMostOnce), Some(QoS::AtLeastOnce), None]
            }),
            [0x90, 5, 0, 3, 0, 1, 0x80]
        );
    }

    #[test]
    fn publish_with_multi_byte_length() {
        let p = ServerPacket::Publish(Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: "t".into(),
            packet_id: 5,
            payload: Bytes::from(vec![7u8; 200]),
        });
        let b = bytes(&p);
        // 2 + 1 + 2 + 200 = 205 = 0x4d + 1*128
        assert_eq!(&b[..7], &[0x32, 0xcd, 0x01, 0, 1, b't', 0]);
        assert_eq!(b.len(), 3 + 205);
    }

    #[test]
    fn over_long_topics_are_refused() {
        let p = ServerPacket::Publish(Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: "x".repeat(70_000),
            packet_id: 0,
            payload: Bytes::new(),
        });
        let mut buf = BytesMut::new();
        assert_eq!(
            encode(&p, &mut buf),
            Err(EncodeError::StringTooLong(70_000))
        );
        assert!(buf.is_empty());
    }
}
