//! A lean MQTT 3.1.1 client over tokio-rustls, for load: one task owns one
//! connection, writes are batched into one buffer and flushed once per turn, and
//! nothing runs in the background (no keep-alive pings: runs are shorter than the
//! keep-alive interval). Only what the scenarios use: CONNECT, SUBSCRIBE, PUBLISH at
//! QoS 0 and 1, PUBACK, DISCONNECT.
//!
//! Inbound packets are decoded strictly enough to notice a broken stream: a bad
//! remaining length or a truncated PUBLISH is an error, not a guess.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use twinhub_mqtt::client::{put_field, remaining_length};

/// Largest inbound packet accepted (a twin GET response can be 100 KB).
const MAX_PACKET: usize = 1 << 20;

/// What CONNECT carries.
pub(crate) struct Credentials {
    pub(crate) client_id: String,
    pub(crate) username: Option<String>,
    pub(crate) password: Option<String>,
}

/// An inbound packet.
#[derive(Debug)]
pub(crate) enum Packet {
    ConnAck {
        return_code: u8,
    },
    Publish {
        topic: String,
        payload: Vec<u8>,
    },
    PubAck {
        packet_id: u16,
    },
    SubAck {
        packet_id: u16,
        codes: Vec<u8>,
    },
    /// Any other packet type (PINGRESP, ...).
    Other,
}

/// One connection.
pub(crate) struct Client {
    io: TlsStream<TcpStream>,
    inbound: Vec<u8>,
    outbound: Vec<u8>,
    next_packet_id: u16,
}

fn io_err(what: &str, e: impl std::fmt::Display) -> String {
    format!("{what}: {e}")
}

/// Splits one packet off the front of `buf`: `(first byte, body range, total length)`,
/// or `None` when more bytes are needed.
fn frame(buf: &[u8]) -> Result<Option<(u8, std::ops::Range<usize>)>, String> {
    let mut len = 0usize;
    let mut shift = 0;
    for (i, &b) in buf.iter().enumerate().skip(1).take(4) {
        len |= usize::from(b & 0x7f) << shift;
        shift += 7;
        if b & 0x80 == 0 {
            if len > MAX_PACKET {
                return Err(format!("inbound packet of {len} bytes is too large"));
            }
            let start = i + 1;
            return Ok((buf.len() >= start + len).then_some((buf[0], start..start + len)));
        }
    }
    if buf.len() >= 5 {
        return Err("malformed remaining length".into());
    }
    Ok(None)
}

fn decode(first: u8, body: &[u8]) -> Result<Packet, String> {
    let u16_at = |i: usize| -> Result<u16, String> {
        body.get(i..i + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or_else(|| format!("packet type {} truncated", first >> 4))
    };
    Ok(match first >> 4 {
        2 => Packet::ConnAck {
            return_code: *body.get(1).ok_or("CONNACK truncated")?,
        },
        3 => {
            let qos = (first >> 1) & 3;
            let topic_len = usize::from(u16_at(0)?);
            let topic = body
                .get(2..2 + topic_len)
                .ok_or("PUBLISH topic truncated")?;
            let topic = String::from_utf8(topic.to_vec()).map_err(|_| "PUBLISH topic not UTF-8")?;
            let payload_start = 2 + topic_len + if qos > 0 { 2 } else { 0 };
            if qos > 0 {
                return Err(format!(
                    "unexpected QoS {qos} PUBLISH on '{topic}' (the bench subscribes at QoS 0)"
                ));
            }
            Packet::Publish {
                topic,
                payload: body
                    .get(payload_start..)
                    .ok_or("PUBLISH payload truncated")?
                    .to_vec(),
            }
        }
        4 => Packet::PubAck {
            packet_id: u16_at(0)?,
        },
        9 => Packet::SubAck {
            packet_id: u16_at(0)?,
            codes: body.get(2..).unwrap_or_default().to_vec(),
        },
        _ => Packet::Other,
    })
}

/// Opens a TCP connection from `source` (a loopback address of its own, so that
/// tens of thousands of connections do not exhaust one address's ephemeral ports).
pub(crate) async fn tcp_connect(
    target: SocketAddr,
    source: Option<IpAddr>,
) -> Result<TcpStream, String> {
    let socket = match target {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
    .map_err(|e| io_err("socket", e))?;
    if let Some(src) = source {
        socket
            .bind(SocketAddr::new(src, 0))
            .map_err(|e| io_err(&format!("bind {src}"), e))?;
    }
    let stream = socket
        .connect(target)
        .await
        .map_err(|e| io_err(&format!("connect {target}"), e))?;
    stream.set_nodelay(true).map_err(|e| io_err("nodelay", e))?;
    Ok(stream)
}

impl Client {
    /// TCP, TLS, CONNECT (clean session, keep-alive 900 s) and CONNACK.
    pub(crate) async fn connect(
        target: SocketAddr,
        source: Option<IpAddr>,
        tls: Arc<rustls::ClientConfig>,
        server_name: &str,
        credentials: &Credentials,
    ) -> Result<Self, String> {
        let tcp = tcp_connect(target, source).await?;
        let name = rustls::pki_types::ServerName::try_from(server_name.to_owned())
            .map_err(|e| io_err("server name", e))?;
        let io = TlsConnector::from(tls)
            .connect(name, tcp)
            .await
            .map_err(|e| io_err("TLS handshake", e))?;
        let mut client = Self {
            io,
            inbound: Vec::with_capacity(4096),
            outbound: Vec::with_capacity(4096),
            next_packet_id: 1,
        };
        client.queue_connect(credentials);
        client.flush().await?;
        match client.next().await? {
            Packet::ConnAck { return_code: 0 } => Ok(client),
            Packet::ConnAck { return_code } => Err(format!("CONNACK return code {return_code}")),
            other => Err(format!("expected CONNACK, got {other:?}")),
        }
    }

    fn queue_connect(&mut self, c: &Credentials) {
        let mut body = Vec::with_capacity(256);
        put_field(b"MQTT", &mut body);
        body.push(4);
        let mut flags = 0x02; // clean session
        if c.username.is_some() {
            flags |= 0x80;
        }
        if c.password.is_some() {
            flags |= 0x40;
        }
        body.push(flags);
        body.extend_from_slice(&900u16.to_be_bytes());
        put_field(c.client_id.as_bytes(), &mut body);
        if let Some(u) = &c.username {
            put_field(u.as_bytes(), &mut body);
        }
        if let Some(p) = &c.password {
            put_field(p.as_bytes(), &mut body);
        }
        self.outbound.push(0x10);
        remaining_length(body.len(), &mut self.outbound);
        self.outbound.extend_from_slice(&body);
    }

    fn packet_id(&mut self) -> u16 {
        let id = self.next_packet_id;
        self.next_packet_id = self.next_packet_id.checked_add(1).unwrap_or(1);
        id
    }

    /// Queues SUBSCRIBE for `filters` at QoS 0; returns its packet id.
    pub(crate) fn queue_subscribe(&mut self, filters: &[&str]) -> u16 {
        let id = self.packet_id();
        let len = 2 + filters.iter().map(|f| 2 + f.len() + 1).sum::<usize>();
        self.outbound.push(0x82);
        remaining_length(len, &mut self.outbound);
        self.outbound.extend_from_slice(&id.to_be_bytes());
        for f in filters {
            put_field(f.as_bytes(), &mut self.outbound);
            self.outbound.push(0);
        }
        id
    }

    /// Queues PUBLISH; at QoS 1 returns the packet id its PUBACK will carry.
    pub(crate) fn queue_publish(&mut self, topic: &str, payload: &[u8], qos1: bool) -> Option<u16> {
        let id = qos1.then(|| self.packet_id());
        let len = 2 + topic.len() + if qos1 { 2 } else { 0 } + payload.len();
        self.outbound.push(if qos1 { 0x32 } else { 0x30 });
        remaining_length(len, &mut self.outbound);
        put_field(topic.as_bytes(), &mut self.outbound);
        if let Some(id) = id {
            self.outbound.extend_from_slice(&id.to_be_bytes());
        }
        self.outbound.extend_from_slice(payload);
        id
    }

    /// Writes everything queued.
    pub(crate) async fn flush(&mut self) -> Result<(), String> {
        if self.outbound.is_empty() {
            return Ok(());
        }
        self.io
            .write_all(&self.outbound)
            .await
            .map_err(|e| io_err("write", e))?;
        self.io.flush().await.map_err(|e| io_err("flush", e))?;
        self.outbound.clear();
        Ok(())
    }

    /// The next inbound packet, reading from the socket only when no whole packet is
    /// buffered.
    pub(crate) async fn next(&mut self) -> Result<Packet, String> {
        loop {
            if let Some(p) = self.try_next()? {
                return Ok(p);
            }
            let n = self
                .io
                .read_buf(&mut self.inbound)
                .await
                .map_err(|e| io_err("read", e))?;
            if n == 0 {
                return Err("the server closed the connection".into());
            }
        }
    }

    /// The next packet if one is already buffered.
    pub(crate) fn try_next(&mut self) -> Result<Option<Packet>, String> {
        match frame(&self.inbound)? {
            Some((first, body)) => {
                let end = body.end;
                let packet = decode(first, &self.inbound[body])?;
                self.inbound.drain(..end);
                Ok(Some(packet))
            }
            None => Ok(None),
        }
    }

    /// Subscribes and waits for the SUBACK (packets before it are dropped).
    pub(crate) async fn subscribe(&mut self, filters: &[&str]) -> Result<(), String> {
        let id = self.queue_subscribe(filters);
        self.flush().await?;
        loop {
            if let Packet::SubAck { packet_id, codes } = self.next().await? {
                if packet_id != id {
                    continue;
                }
                if codes.contains(&0x80) {
                    return Err(format!("SUBACK refused {filters:?}"));
                }
                return Ok(());
            }
        }
    }

    /// DISCONNECT and close.
    pub(crate) async fn disconnect(mut self) {
        self.outbound.extend_from_slice(&[0xE0, 0]);
        let _ = self.flush().await;
        let _ = self.io.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remaining_length_round_trips_and_frames() {
        for len in [0usize, 1, 127, 128, 16_383, 16_384, 300_000] {
            let mut buf = vec![0x30];
            remaining_length(len, &mut buf);
            let header = buf.len();
            buf.resize(header + len, 0);
            let (first, body) = frame(&buf).unwrap().unwrap();
            assert_eq!((first, body), (0x30, header..header + len));
            assert!(frame(&buf[..buf.len() - 1]).unwrap().is_none() || len == 0);
        }
        assert!(frame(&[0x30, 0xff, 0xff, 0xff, 0xff, 0x01]).is_err());
    }

    #[test]
    fn decodes_a_qos0_publish_and_acks() {
        let mut buf = vec![0x30];
        let mut body = Vec::new();
        put_field(b"$iothub/twin/res/204/?$rid=1&$version=3", &mut body);
        body.extend_from_slice(b"{}");
        remaining_length(body.len(), &mut buf);
        buf.extend_from_slice(&body);
        let (first, range) = frame(&buf).unwrap().unwrap();
        match decode(first, &buf[range]).unwrap() {
            Packet::Publish { topic, payload } => {
                assert_eq!(topic, "$iothub/twin/res/204/?$rid=1&$version=3");
                assert_eq!(payload, b"{}");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            decode(0x40, &[0, 7]).unwrap(),
            Packet::PubAck { packet_id: 7 }
        ));
        assert!(matches!(
            decode(0x20, &[0, 5]).unwrap(),
            Packet::ConnAck { return_code: 5 }
        ));
    }
}
