//! MQTT 3.1.1 decoding of client bytes (`twinhub_mqtt::decode`).
//!
//! Invariants, beyond "never panics":
//! - `Ok(None)` consumes nothing; `Ok(Some(_))` consumes exactly `frame_size`;
//! - decoding is independent of how the bytes arrive: feeding them one byte at a
//!   time yields the same packets and the same final verdict as all at once;
//! - a decoded PUBLISH re-encodes (hub encoder) to bytes that decode to it again.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use twinhub_mqtt::decode::{decode, frame_size, DecodeError};
use twinhub_mqtt::packet::{ClientPacket, ServerPacket};

/// Small enough that the size limit is hit often; the hub's is larger.
const MAX: usize = 4096;

type Outcome = (Vec<ClientPacket>, Option<DecodeError>);

fn all_at_once(data: &[u8]) -> Outcome {
    let mut buf = BytesMut::from(data);
    let mut packets = Vec::new();
    loop {
        let before = buf.len();
        let expected = frame_size(&buf);
        match decode(&mut buf, MAX) {
            Ok(Some(p)) => {
                assert_eq!(Some(before - buf.len()), expected, "consumed != frame_size");
                packets.push(p);
            }
            Ok(None) => {
                assert_eq!(buf.len(), before, "Ok(None) consumed bytes");
                return (packets, None);
            }
            Err(e) => return (packets, Some(e)),
        }
    }
}

fn byte_by_byte(data: &[u8]) -> Outcome {
    let mut buf = BytesMut::new();
    let mut packets = Vec::new();
    for &b in data {
        buf.extend_from_slice(&[b]);
        loop {
            match decode(&mut buf, MAX) {
                Ok(Some(p)) => packets.push(p),
                Ok(None) => break,
                Err(e) => return (packets, Some(e)),
            }
        }
    }
    (packets, None)
}

fuzz_target!(|data: &[u8]| {
    let whole = all_at_once(data);
    // Byte-by-byte feeding is quadratic only in the fixed header; keep it cheap.
    if data.len() <= 2048 {
        assert_eq!(byte_by_byte(data), whole, "decoding depends on chunking");
    }
    for packet in &whole.0 {
        if let ClientPacket::Publish(p) = packet {
            let mut out = BytesMut::new();
            twinhub_mqtt::encode::encode(&ServerPacket::Publish(p.clone()), &mut out)
                .expect("a decoded PUBLISH re-encodes");
            assert_eq!(
                decode(&mut out, usize::MAX),
                Ok(Some(packet.clone())),
                "PUBLISH does not round-trip"
            );
            assert!(out.is_empty());
        }
    }
});
