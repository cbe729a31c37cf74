//! Micro-benchmarks of the MQTT codec's hot packets: decoding a device's
//! reported-properties PUBLISH and encoding the hub's `204` response and a
//! desired-property notification.
//!
//! `cargo bench -p twinhub-mqtt` runs them; CI only compiles them (`--no-run`).

#![allow(clippy::expect_used)]

use bytes::{BufMut, Bytes, BytesMut};
use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion};
use twinhub_mqtt::decode::decode;
use twinhub_mqtt::encode::encode;
use twinhub_mqtt::packet::Publish;
use twinhub_mqtt::{QoS, ServerPacket};

const REPORTED: &[u8] = br#"{"battery":{"level":42,"charging":false},"connectivity":{"type":"cellular","rssi":-71},"fw":{"version":"1.4.2"},"temperature":21.7,"seq":1234}"#;

/// A QoS 0 PUBLISH to the reported-properties topic, as a device sends it.
fn reported_publish() -> BytesMut {
    let topic = b"$iothub/twin/PATCH/properties/reported/?$rid=1234";
    let mut buf = BytesMut::new();
    buf.put_u8(0x30);
    let len = 2 + topic.len() + REPORTED.len();
    // Remaining length below 16,384: two bytes at most.
    if len < 128 {
        buf.put_u8(len as u8);
    } else {
        buf.put_u8((len % 128) as u8 | 0x80);
        buf.put_u8((len / 128) as u8);
    }
    buf.put_u16(topic.len() as u16);
    buf.put_slice(topic);
    buf.put_slice(REPORTED);
    buf
}

fn decoding(c: &mut Criterion) {
    let packet = reported_publish();
    c.bench_function("mqtt/decode reported PUBLISH (QoS 0, 190 B)", |b| {
        b.iter_batched_ref(
            || packet.clone(),
            |buf| decode(black_box(buf), 256 * 1024).expect("valid packet"),
            BatchSize::SmallInput,
        )
    });
    let mut ten = BytesMut::new();
    for _ in 0..10 {
        ten.extend_from_slice(&packet);
    }
    c.bench_function("mqtt/decode 10 pipelined PUBLISHes from one buffer", |b| {
        b.iter_batched_ref(
            || ten.clone(),
            |buf| {
                while decode(black_box(buf), 256 * 1024)
                    .expect("valid packets")
                    .is_some()
                {}
            },
            BatchSize::SmallInput,
        )
    });
}

fn encoding(c: &mut Criterion) {
    let response = ServerPacket::Publish(Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: "$iothub/twin/res/204/?$rid=1234&$version=5678".into(),
        packet_id: 0,
        payload: Bytes::new(),
    });
    let mut buf = BytesMut::with_capacity(4096);
    c.bench_function("mqtt/encode twin response (204, empty body)", |b| {
        b.iter(|| {
            buf.clear();
            encode(black_box(&response), &mut buf).expect("encodable");
        })
    });
    let desired = ServerPacket::Publish(Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: "$iothub/twin/PATCH/properties/desired/?$version=17".into(),
        packet_id: 0,
        payload: Bytes::from_static(
            br#"{"telemetryInterval":60,"fw":{"version":"1.5.0"},"$version":17}"#,
        ),
    });
    c.bench_function("mqtt/encode desired notification", |b| {
        b.iter(|| {
            buf.clear();
            encode(black_box(&desired), &mut buf).expect("encodable");
        })
    });
    c.bench_function("mqtt/encode PUBACK", |b| {
        b.iter(|| {
            buf.clear();
            encode(black_box(&ServerPacket::PubAck(7)), &mut buf).expect("encodable");
        })
    });
}

criterion_group!(benches, decoding, encoding);
criterion_main!(benches);
