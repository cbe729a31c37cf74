//! Strict decoding of client packets from a byte buffer.
//!
//! [`decode`] takes one whole packet off the front of the buffer, or nothing when
//! the packet is still incomplete. Every malformation is an error naming the rule
//! of the MQTT 3.1.1 specification it breaks; the connection answers each by
//! closing ([MQTT-4.8.0-1]). A first byte no client may send (a reserved or
//! server-only type, wrong fixed flags) is refused as soon as it arrives, and a
//! packet whose announced size exceeds the limit as soon as its fixed header is
//! read: neither waits for a body to be buffered.

use crate::packet::{ClientPacket, Connect, Publish, QoS, Subscribe, Unsubscribe, Will};
use bytes::{Buf, Bytes, BytesMut};

/// Why bytes from a client are not a packet the hub accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The packet announces more bytes than the hub accepts.
    #[error("packet of {size} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Total packet size announced by the fixed header.
        size: usize,
        /// The limit in force.
        max: usize,
    },
    /// The bytes break a rule of the specification; the text names it.
    #[error("malformed packet: {0}")]
    Malformed(&'static str),
    /// A packet type clients never send to servers, or one of the QoS 2 flow
    /// (PUBREC, PUBREL, PUBCOMP), which the hub never starts.
    #[error("unexpected {0} packet from a client")]
    Unexpected(&'static str),
}

use DecodeError::Malformed;

/// Decodes the packet at the front of `buf`, removing its bytes. `Ok(None)`: more
/// bytes are needed (nothing is consumed). `max` bounds the whole packet size.
pub fn decode(buf: &mut BytesMut, max: usize) -> Result<Option<ClientPacket>, DecodeError> {
    if let Some(&first) = buf.first() {
        first_byte(first)?;
    }
    let Some((header_len, remaining)) = fixed_header(buf)? else {
        return Ok(None);
    };
    let size = header_len + remaining;
    if size > max {
        return Err(DecodeError::TooLarge { size, max });
    }
    if buf.len() < size {
        return Ok(None);
    }
    let first = buf[0];
    let mut frame = buf.split_to(size).freeze();
    frame.advance(header_len);
    let flags = first & 0x0f;
    // The type and its fixed flags were checked by `first_byte`.
    let packet = match first >> 4 {
        1 => ClientPacket::Connect(Box::new(connect(frame)?)),
        3 => ClientPacket::Publish(publish(flags, frame)?),
        4 => ClientPacket::PubAck(packet_id_only(
            frame,
            "[MQTT-3.4.1] PUBACK length must be 2",
        )?),
        8 => ClientPacket::Subscribe(subscribe(frame)?),
        10 => ClientPacket::Unsubscribe(unsubscribe(frame)?),
        12 => {
            empty(&frame, "[MQTT-3.12.1] PINGREQ has no body")?;
            ClientPacket::PingReq
        }
        14 => {
            empty(&frame, "[MQTT-3.14.1] DISCONNECT has no body")?;
            ClientPacket::Disconnect
        }
        _ => return Err(Malformed("[MQTT-2.2.1] reserved packet type 0 or 15")),
    };
    Ok(Some(packet))
}

/// Checks a packet's first byte: a type clients send, with the fixed flags the
/// specification requires of it.
fn first_byte(first: u8) -> Result<(), DecodeError> {
    let flags = first & 0x0f;
    match first >> 4 {
        1 => fixed_flags(flags, 0, "[MQTT-2.2.2-1] CONNECT flags must be 0"),
        3 => publish_flags(flags).map(drop),
        4 => fixed_flags(flags, 0, "[MQTT-2.2.2-1] PUBACK flags must be 0"),
        8 => fixed_flags(flags, 2, "[MQTT-3.8.1-1] SUBSCRIBE flags must be 0010"),
        10 => fixed_flags(flags, 2, "[MQTT-3.10.1-1] UNSUBSCRIBE flags must be 0010"),
        12 => fixed_flags(flags, 0, "[MQTT-2.2.2-1] PINGREQ flags must be 0"),
        14 => fixed_flags(flags, 0, "[MQTT-2.2.2-1] DISCONNECT flags must be 0"),
        2 => Err(DecodeError::Unexpected("CONNACK")),
        5 => Err(DecodeError::Unexpected("PUBREC")),
        6 => Err(DecodeError::Unexpected("PUBREL")),
        7 => Err(DecodeError::Unexpected("PUBCOMP")),
        9 => Err(DecodeError::Unexpected("SUBACK")),
        11 => Err(DecodeError::Unexpected("UNSUBACK")),
        13 => Err(DecodeError::Unexpected("PINGRESP")),
        _ => Err(Malformed("[MQTT-2.2.1] reserved packet type 0 or 15")),
    }
}

/// The total size of the packet at the front of `buf`, once its fixed header is
/// complete and valid.
pub fn frame_size(buf: &[u8]) -> Option<usize> {
    match fixed_header(buf) {
        Ok(Some((header, remaining))) => Some(header + remaining),
        _ => None,
    }
}

/// The fixed header's length and the remaining length, or `None` if incomplete.
fn fixed_header(buf: &[u8]) -> Result<Option<(usize, usize)>, DecodeError> {
    let mut remaining = 0usize;
    for i in 0..4 {
        let Some(&byte) = buf.get(1 + i) else {
            return Ok(None);
        };
        remaining |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(Some((2 + i, remaining)));
        }
    }
    Err(Malformed(
        "[MQTT-2.2.3] remaining length longer than four bytes",
    ))
}

fn fixed_flags(flags: u8, expected: u8, rule: &'static str) -> Result<(), DecodeError> {
    if flags == expected {
        Ok(())
    } else {
        Err(Malformed(rule))
    }
}

fn empty(frame: &Bytes, rule: &'static str) -> Result<(), DecodeError> {
    if frame.is_empty() {
        Ok(())
    } else {
        Err(Malformed(rule))
    }
}

fn u8_of(frame: &mut Bytes) -> Result<u8, DecodeError> {
    if frame.is_empty() {
        return Err(Malformed("[MQTT-2.2.3] packet shorter than its fields"));
    }
    Ok(frame.get_u8())
}

fn u16_of(frame: &mut Bytes) -> Result<u16, DecodeError> {
    if frame.len() < 2 {
        return Err(Malformed("[MQTT-2.2.3] packet shorter than its fields"));
    }
    Ok(frame.get_u16())
}

fn binary(frame: &mut Bytes) -> Result<Bytes, DecodeError> {
    let len = usize::from(u16_of(frame)?);
    if frame.len() < len {
        return Err(Malformed("[MQTT-1.5.3] length prefix beyond the packet"));
    }
    Ok(frame.split_to(len))
}

fn string(frame: &mut Bytes) -> Result<String, DecodeError> {
    let bytes = binary(frame)?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| Malformed("[MQTT-1.5.3-1] string is not well-formed UTF-8"))?;
    if text.contains('\0') {
        return Err(Malformed("[MQTT-1.5.3-2] string contains U+0000"));
    }
    Ok(text.to_owned())
}

fn packet_id(frame: &mut Bytes) -> Result<u16, DecodeError> {
    match u16_of(frame)? {
        0 => Err(Malformed(
            "[MQTT-2.3.1-1] packet identifier must be non-zero",
        )),
        id => Ok(id),
    }
}

fn packet_id_only(mut frame: Bytes, rule: &'static str) -> Result<u16, DecodeError> {
    if frame.len() != 2 {
        return Err(Malformed(rule));
    }
    packet_id(&mut frame)
}

fn connect(mut frame: Bytes) -> Result<Connect, DecodeError> {
    if string(&mut frame)? != "MQTT" {
        return Err(Malformed("[MQTT-3.1.2-1] protocol name must be \"MQTT\""));
    }
    let level = u8_of(&mut frame)?;
    let flags = u8_of(&mut frame)?;
    let keep_alive = u16_of(&mut frame)?;
    if flags & 0x01 != 0 {
        return Err(Malformed("[MQTT-3.1.2-3] reserved CONNECT flag must be 0"));
    }
    let will_flag = flags & 0x04 != 0;
    let will_qos = (flags >> 3) & 0x03;
    let will_retain = flags & 0x20 != 0;
    let has_password = flags & 0x40 != 0;
    let has_username = flags & 0x80 != 0;
    if !will_flag && will_qos != 0 {
        return Err(Malformed(
            "[MQTT-3.1.2-13] will QoS must be 0 without a will",
        ));
    }
    if !will_flag && will_retain {
        return Err(Malformed(
            "[MQTT-3.1.2-15] will retain must be 0 without a will",
        ));
    }
    if !has_username && has_password {
        return Err(Malformed(
            "[MQTT-3.1.2-22] password flag without user name flag",
        ));
    }
    let client_id = string(&mut frame)?;
    let will = if will_flag {
        let qos =
            QoS::from_bits(will_qos).ok_or(Malformed("[MQTT-3.1.2-14] will QoS must not be 3"))?;
        let topic = string(&mut frame)?;
        let payload = binary(&mut frame)?;
        Some(Will {
            topic,
            payload,
            qos,
            retain: will_retain,
        })
    } else {
        None
    };
    let username = has_username.then(|| string(&mut frame)).transpose()?;
    let password = has_password.then(|| binary(&mut frame)).transpose()?;
    empty(&frame, "[MQTT-3.1.3-1] bytes after the CONNECT payload")?;
    Ok(Connect {
        level,
        clean_session: flags & 0x02 != 0,
        keep_alive,
        client_id,
        will,
        username,
        password,
    })
}

/// A PUBLISH's QoS and DUP from its fixed flags.
fn publish_flags(flags: u8) -> Result<(QoS, bool), DecodeError> {
    let dup = flags & 0x08 != 0;
    let qos = QoS::from_bits((flags >> 1) & 0x03)
        .ok_or(Malformed("[MQTT-3.3.1-4] PUBLISH QoS must not be 3"))?;
    if qos == QoS::AtMostOnce && dup {
        return Err(Malformed("[MQTT-3.3.1-2] DUP must be 0 for QoS 0"));
    }
    Ok((qos, dup))
}

fn publish(flags: u8, mut frame: Bytes) -> Result<Publish, DecodeError> {
    let (qos, dup) = publish_flags(flags)?;
    let retain = flags & 0x01 != 0;
    let topic = string(&mut frame)?;
    if topic.is_empty() {
        return Err(Malformed("[MQTT-4.7.3-1] topic name must not be empty"));
    }
    if topic.contains(['#', '+']) {
        return Err(Malformed(
            "[MQTT-3.3.2-2] topic name must not contain wildcards",
        ));
    }
    let packet_id = match qos {
        QoS::AtMostOnce => 0,
        _ => packet_id(&mut frame)?,
    };
    Ok(Publish {
        dup,
        qos,
        retain,
        topic,
        packet_id,
        payload: frame,
    })
}

fn subscribe(mut frame: Bytes) -> Result<Subscribe, DecodeError> {
    let packet_id = packet_id(&mut frame)?;
    let mut filters = Vec::new();
    while !frame.is_empty() {
        let filter = string(&mut frame)?;
        if filter.is_empty() {
            return Err(Malformed("[MQTT-4.7.3-1] topic filter must not be empty"));
        }
        let requested = u8_of(&mut frame)?;
        let qos = match requested & 0xfc {
            0 => QoS::from_bits(requested),
            _ => None,
        }
        .ok_or(Malformed("[MQTT-3-8.3-4] requested QoS must be 0, 1 or 2"))?;
        filters.push((filter, qos));
    }
    if filters.is_empty() {
        return Err(Malformed(
            "[MQTT-3.8.3-3] SUBSCRIBE needs at least one filter",
        ));
    }
    Ok(Subscribe { packet_id, filters })
}

fn unsubscribe(mut frame: Bytes) -> Result<Unsubscribe, DecodeError> {
    let packet_id = packet_id(&mut frame)?;
    let mut filters = Vec::new();
    while !frame.is_empty() {
        filters.push(string(&mut frame)?);
    }
    if filters.is_empty() {
        return Err(Malformed(
            "[MQTT-3.10.3-2] UNSUBSCRIBE needs at least one filter",
        ));
    }
    Ok(Unsubscribe { packet_id, filters })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::encode;
    use crate::packet::ServerPacket;
    use proptest::prelude::*;

    fn one(bytes: &[u8]) -> Result<Option<ClientPacket>, DecodeError> {
        let mut buf = BytesMut::from(bytes);
        decode(&mut buf, 1 << 20)
    }

    #[test]
    fn decodes_a_connect() {
        let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0b1100_0000, 0, 60];
        for field in [&b"dev1"[..], b"h/dev1/?api-version=1", b"token"] {
            body.extend_from_slice(&u16::try_from(field.len()).unwrap().to_be_bytes());
            body.extend_from_slice(field);
        }
        let mut bytes = vec![0x10, u8::try_from(body.len()).unwrap()];
        bytes.extend_from_slice(&body);
        let Some(ClientPacket::Connect(c)) = one(&bytes).unwrap() else {
            panic!("not a CONNECT")
        };
        assert_eq!(c.level, 4);
        assert!(!c.clean_session);
        assert_eq!(c.keep_alive, 60);
        assert_eq!(c.client_id, "dev1");
        assert_eq!(c.username.as_deref(), Some("h/dev1/?api-version=1"));
        assert_eq!(c.password.as_deref(), Some(&b"token"[..]));
    }

    #[test]
    fn a_first_byte_no_client_sends_is_refused_without_waiting_for_the_body() {
        // Each announces a large body that has not arrived.
        for first in [0x00, 0xf0, 0x20, 0x90, 0x11, 0x83, 0x36, 0x38, 0xc1] {
            let err = one(&[first, 0xff, 0xff, 0x0f]).unwrap_err();
            assert!(
                !matches!(err, DecodeError::TooLarge { .. }),
                "{first:#x}: {err}"
            );
            assert!(one(&[first]).is_err(), "{first:#x} alone");
        }
        // Valid first bytes wait for the rest.
        for first in [0x10, 0x30, 0x32, 0x3b, 0x40, 0x82, 0xa2, 0xc0, 0xe0] {
            assert_eq!(one(&[first]), Ok(None), "{first:#x}");
        }
    }

    #[test]
    fn incomplete_packets_wait_and_consume_nothing() {
        let mut buf = BytesMut::from(&[0x30, 0x05, 0x00][..]);
        assert_eq!(decode(&mut buf, 100), Ok(None));
        assert_eq!(buf.len(), 3);
        let mut buf = BytesMut::from(&[0x30, 0x80][..]);
        assert_eq!(decode(&mut buf, 100), Ok(None));
    }

    #[test]
    fn oversized_packets_are_refused_from_the_header() {
        // Remaining length 300: refused with 3 bytes in hand.
        let mut buf = BytesMut::from(&[0x30, 0xac, 0x02][..]);
        assert_eq!(
            decode(&mut buf, 256),
            Err(DecodeError::TooLarge {
                size: 303,
                max: 256
            })
        );
    }

    #[test]
    fn rule_breaking_packets_name_the_rule() {
        let cases: &[(&[u8], &str)] = &[
            (&[0x82, 0x02, 0x00, 0x01], "[MQTT-3.8.3-3]"),
            (&[0x80, 0x03, 0x00, 0x01, 0x00], "[MQTT-3.8.1-1]"),
            (
                &[0x82, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x03],
                "[MQTT-3-8.3-4]",
            ),
            (&[0x36, 0x03, 0x00, 0x01, b'a'], "[MQTT-3.3.1-4]"),
            (&[0x38, 0x03, 0x00, 0x01, b'a'], "[MQTT-3.3.1-2]"),
            (
                &[0x32, 0x05, 0x00, 0x01, b'a', 0x00, 0x00],
                "[MQTT-2.3.1-1]",
            ),
            (&[0x30, 0x03, 0x00, 0x01, b'#'], "[MQTT-3.3.2-2]"),
            (&[0x30, 0x02, 0x00, 0x00], "[MQTT-4.7.3-1]"),
            (&[0x30, 0x04, 0x00, 0x02, 0xc3, 0x28], "[MQTT-1.5.3-1]"),
            (&[0x30, 0x03, 0x00, 0x01, 0x00], "[MQTT-1.5.3-2]"),
            (&[0xc1, 0x00], "[MQTT-2.2.2-1]"),
            (&[0xc0, 0x01, 0x00], "[MQTT-3.12.1]"),
            (&[0x40, 0x03, 0x00, 0x01, 0x00], "[MQTT-3.4.1]"),
            (&[0x30, 0xff, 0xff, 0xff, 0xff], "[MQTT-2.2.3]"),
            (&[0x00, 0x00], "[MQTT-2.2.1]"),
            (&[0xa2, 0x02, 0x00, 0x01], "[MQTT-3.10.3-2]"),
            (
                &[0x10, 0x06, 0x00, 0x04, b'M', b'Q', b'T', b'X'],
                "[MQTT-3.1.2-1]",
            ),
        ];
        for (bytes, rule) in cases {
            match one(bytes) {
                Err(DecodeError::Malformed(text)) => assert!(text.starts_with(rule), "{text}"),
                other => panic!("{bytes:02x?}: {other:?}"),
            }
        }
        assert_eq!(
            one(&[0x62, 0x02, 0x00, 0x01]),
            Err(DecodeError::Unexpected("PUBREL"))
        );
    }

    #[test]
    fn connect_flag_rules() {
        let connect = |flags: u8, tail: &[u8]| {
            let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, flags, 0, 0, 0, 1, b'c'];
            body.extend_from_slice(tail);
            let mut bytes = vec![0x10, u8::try_from(body.len()).unwrap()];
            bytes.extend_from_slice(&body);
            one(&bytes)
        };
        assert!(matches!(
            connect(0x02, &[]),
            Ok(Some(ClientPacket::Connect(_)))
        ));
        let rule = |r: Result<Option<ClientPacket>, DecodeError>| match r {
            Err(DecodeError::Malformed(t)) => t.split(']').next().unwrap_or("").to_owned() + "]",
            other => format!("{other:?}"),
        };
        assert_eq!(rule(connect(0x03, &[])), "[MQTT-3.1.2-3]");
        assert_eq!(rule(connect(0x08, &[])), "[MQTT-3.1.2-13]");
        assert_eq!(rule(connect(0x20, &[])), "[MQTT-3.1.2-15]");
        assert_eq!(rule(connect(0x40, &[])), "[MQTT-3.1.2-22]");
        assert_eq!(rule(connect(0x1c, &[0, 1, b't', 0, 0])), "[MQTT-3.1.2-14]");
        assert_eq!(rule(connect(0x02, &[0])), "[MQTT-3.1.3-1]");
        assert_eq!(rule(connect(0x80, &[])), "[MQTT-2.2.3]");
    }

    #[test]
    fn two_packets_in_one_buffer() {
        let mut buf = BytesMut::from(&[0xc0, 0x00, 0xe0, 0x00, 0xc0][..]);
        assert_eq!(decode(&mut buf, 10), Ok(Some(ClientPacket::PingReq)));
        assert_eq!(decode(&mut buf, 10), Ok(Some(ClientPacket::Disconnect)));
        assert_eq!(decode(&mut buf, 10), Ok(None));
        assert_eq!(buf.len(), 1);
    }

    proptest! {
        #[test]
        fn never_panics(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            let mut buf = BytesMut::from(&bytes[..]);
            for _ in 0..300 {
                match decode(&mut buf, 200) {
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => break,
                }
            }
        }

        #[test]
        fn never_panics_on_valid_headers(
            kind in 0u8..16, flags in 0u8..16,
            body in prop::collection::vec(any::<u8>(), 0..120),
        ) {
            let mut bytes = vec![(kind << 4) | flags, u8::try_from(body.len()).unwrap_or(0)];
            bytes.extend_from_slice(&body);
            let mut buf = BytesMut::from(&bytes[..]);
            let _ = decode(&mut buf, 1000);
        }

        #[test]
        fn publish_round_trips_through_the_encoder(
            topic in "[a-z$/?=&0-9]{1,40}", payload in prop::collection::vec(any::<u8>(), 0..600),
            qos1 in any::<bool>(), id in 1u16.., retain in any::<bool>(), dup in any::<bool>(),
        ) {
            let qos = if qos1 { QoS::AtLeastOnce } else { QoS::AtMostOnce };
            let publish = Publish {
                dup: dup && qos1, qos, retain, topic,
                packet_id: if qos1 { id } else { 0 },
                payload: Bytes::from(payload),
            };
            let mut buf = BytesMut::new();
            encode(&ServerPacket::Publish(publish.clone()), &mut buf).unwrap();
            buf.extend_from_slice(&[0x40, 0x02, 0x00, 0x07]);
            prop_assert_eq!(decode(&mut buf, 1 << 20), Ok(Some(ClientPacket::Publish(publish))));
            prop_assert_eq!(decode(&mut buf, 1 << 20), Ok(Some(ClientPacket::PubAck(7))));
            prop_assert!(buf.is_empty());
        }
    }
}
