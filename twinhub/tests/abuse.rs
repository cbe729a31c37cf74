//! Raw protocol abuse against a live `twinhub serve` (started with a 2 s
//! handshake timeout and a cap of 300 unauthenticated sockets per listener),
//! while a well-behaved device keeps making reported-patch round trips: at least
//! 95% of them must complete within a second each, and all of them must complete.
//!
//! - oversized MQTT packets, before and after CONNECT, close the connection from
//!   the announced size alone;
//! - a CONNECT that never completes is closed by the handshake timeout;
//! - garbage after CONNECT, and garbage instead of TLS, close the connection;
//! - slowloris on HTTPS (headers trickled a byte at a time) and an idle TLS
//!   connection are closed by hyper's header read timeout behind our TLS accept
//!   loop;
//! - a flood of sockets that never finish TLS fills the cap: the rest are closed
//!   on arrival and counted, the flood is closed by the handshake timeout, and new
//!   devices get in again.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod lean;

use lean::{Device, HOST};
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

const TIMEOUT_SECS: u64 = 2;
const CAP: usize = 300;

/// When the peer closed `stream` (reading and discarding until EOF), if within `limit`.
async fn closed_within<S: AsyncRead + Unpin>(stream: &mut S, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    tokio::time::timeout(limit, async {
        let mut chunk = [0u8; 4096];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .ok()
    .map(|()| started.elapsed())
}

fn garbage(n: usize) -> Vec<u8> {
    (0..n).map(|_| rand::random::<u8>()).collect()
}

/// Reported-patch round trips until `stop`; each one's latency, `None` if it failed.
fn spawn_good_device(
    mut device: Device,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<Option<Duration>>> {
    tokio::spawn(async move {
        let mut rounds = Vec::new();
        let mut i = 0u64;
        while !stop.load(Ordering::Relaxed) {
            i += 1;
            let started = Instant::now();
            let status = device.report(&json!({ "round": i })).await;
            rounds.push((status == Some(204)).then(|| started.elapsed()));
            if status.is_none() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        rounds
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_keeps_working_through_protocol_abuse() {
    let dir = tempfile::tempdir().unwrap();
    // The test watches the hub's metrics on a listener of their own, which the
    // flood below does not reach (a full HTTPS cap refuses scrapes too).
    let observer = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let hub = common::Hub::start_with(
        &dir.path().join("data"),
        0,
        0,
        &[
            "--handshake-timeout",
            &TIMEOUT_SECS.to_string(),
            "--max-unauthenticated",
            &CAP.to_string(),
            "--insecure-http-port",
            &observer.to_string(),
        ],
    );
    let observer = format!("http://127.0.0.1:{observer}");
    let ca = hub.ca_pem();
    let http = lean::http_client(&ca);
    let owner = lean::service_token("iothubowner", &hub.policy_key("iothubowner"));
    lean::create_devices(&http, hub.https_port, &owner, "dev-", 2).await;
    let mqtt = lean::tls(&ca, &[]);
    let https = lean::tls(&ca, &[b"http/1.1"]);
    let device_key = hub.policy_key("device");
    let password = |id: &str| lean::device_token(&device_key, id);
    let connect = |id: &'static str| {
        let (mqtt, password) = (mqtt.clone(), password(id));
        let port = hub.mqtts_port;
        async move {
            Device::connect(port, None, &mqtt, id, &password, false)
                .await
                .unwrap()
                .0
        }
    };
    let timeout = Duration::from_secs(TIMEOUT_SECS);
    let slack = Duration::from_secs(3);

    let stop = Arc::new(AtomicBool::new(false));
    let good = spawn_good_device(connect("dev-0").await, stop.clone());

    // Oversized PUBLISH after CONNECT (IoT Hub's 256 KiB message limit plus
    // headroom): closed from the header, long before the body could arrive.
    let mut bad = connect("dev-1").await;
    let oversized = lean::publish_packet(
        "devices/dev-1/messages/events/",
        1,
        1,
        &vec![b'x'; 300 * 1024],
    );
    bad.send(&oversized[..64]).await.unwrap();
    assert!(bad.closed_within(slack).await, "oversized PUBLISH");

    // Oversized CONNECT (the limit before authentication is 16 KiB).
    let tcp = lean::tcp(hub.mqtts_port, None).await.unwrap();
    let mut raw = lean::handshake(&mqtt, tcp).await.unwrap();
    let big_connect = lean::connect_packet("dev-1", &"x".repeat(100 * 1024), false);
    raw.write_all(&big_connect[..64]).await.unwrap();
    raw.flush().await.unwrap();
    let closed = closed_within(&mut raw, slack)
        .await
        .expect("oversized CONNECT");
    assert!(closed < timeout, "closed by the size, not the timeout");

    // A CONNECT that never completes.
    let tcp = lean::tcp(hub.mqtts_port, None).await.unwrap();
    let mut raw = lean::handshake(&mqtt, tcp).await.unwrap();
    let connect_bytes = lean::connect_packet("dev-1", &password("dev-1"), false);
    raw.write_all(&connect_bytes[..20]).await.unwrap();
    raw.flush().await.unwrap();
    let closed = closed_within(&mut raw, timeout + slack)
        .await
        .expect("half a CONNECT is closed by the timeout");
    assert!(closed >= timeout - Duration::from_millis(200), "{closed:?}");

    // Garbage after CONNECT, and garbage instead of TLS.
    // (A random first byte that a client may send, with a length still to come,
    // waits for the rest like any packet: bounded by the packet limit and the
    // keep-alive. These close at once.)
    let mut bad = connect("dev-1").await;
    let mut bytes = vec![0x00];
    bytes.extend(garbage(4095));
    bad.send(&bytes).await.unwrap();
    assert!(bad.closed_within(slack).await, "garbage after CONNECT");
    let mut bad = connect("dev-1").await;
    let mut body = vec![0xff, 0xff];
    body.extend(garbage(98));
    bad.send(&twinhub_mqtt::client::packet(0x30, &body))
        .await
        .unwrap();
    assert!(bad.closed_within(slack).await, "a PUBLISH of garbage");
    let mut tcp = lean::tcp(hub.mqtts_port, None).await.unwrap();
    tcp.write_all(&garbage(4096)).await.unwrap();
    closed_within(&mut tcp, slack)
        .await
        .expect("garbage instead of TLS");

    // Slowloris on HTTPS: a header byte every 100 ms never completes the head;
    // hyper's header timeout closes it (it does not restart with each byte).
    let tcp = lean::tcp(hub.https_port, None).await.unwrap();
    let stream = lean::handshake(&https, tcp).await.unwrap();
    let (mut reader, mut writer) = tokio::io::split(stream);
    let trickle = tokio::spawn(async move {
        let head = format!("GET /devices HTTP/1.1\r\nHost: {HOST}\r\nX-Slow: ");
        writer.write_all(head.as_bytes()).await?;
        writer.flush().await?;
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            writer.write_all(b"a").await?;
            writer.flush().await?;
        }
        Ok::<_, std::io::Error>(())
    });
    let mut answer = Vec::new();
    let started = Instant::now();
    let read = tokio::time::timeout(timeout + slack, reader.read_to_end(&mut answer)).await;
    let closed = started.elapsed();
    assert!(
        read.is_ok(),
        "slowloris connection still open after {closed:?}"
    );
    assert!(closed < timeout + slack, "{closed:?}");
    assert!(
        !String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"),
        "a trickled request was served"
    );
    trickle.abort();
    // An idle TLS connection (no request at all) is closed the same way.
    let tcp = lean::tcp(hub.https_port, None).await.unwrap();
    let mut idle = lean::handshake(&https, tcp).await.unwrap();
    closed_within(&mut idle, timeout + slack)
        .await
        .expect("idle HTTPS connection closed");

    // A flood of sockets that never start TLS, on both listeners: the cap holds,
    // the rest are closed on arrival.
    let flood = 2 * CAP;
    // Per listener: (refused on arrival, in the handshake now, handshakes ended).
    let accounting = |m: &std::collections::HashMap<String, f64>| {
        let mqtt_ended = ["tls_failed", "tls_timeout"]
            .map(|r| m[&format!("twinhub_mqtt_connections_closed_total{{reason=\"{r}\"}}")])
            .iter()
            .sum::<f64>();
        [
            (
                m["twinhub_mqtt_refused_connections_total"],
                m["twinhub_mqtt_unauthenticated_connections"],
                mqtt_ended,
            ),
            (
                m["twinhub_http_refused_connections_total{listener=\"https\"}"],
                m["twinhub_http_handshaking_connections{listener=\"https\"}"],
                m["twinhub_http_handshake_failures_total{listener=\"https\"}"],
            ),
        ]
    };
    let before = accounting(&lean::metrics_at(&http, &observer, &owner).await);
    let connects = [hub.mqtts_port, hub.https_port]
        .into_iter()
        .flat_map(|port| (0..flood).map(move |_| tokio::spawn(lean::tcp(port, None))))
        .collect::<Vec<_>>();
    let mut sockets = Vec::new();
    for connect in connects {
        sockets.extend(connect.await.unwrap());
    }
    assert_eq!(sockets.len(), 2 * flood);
    // Every flood socket was refused on arrival or admitted (and then is in its
    // handshake or has ended it); admitted ones never exceed the cap at once.
    let deadline = Instant::now() + timeout + slack;
    loop {
        let now = accounting(&lean::metrics_at(&http, &observer, &owner).await);
        let settled = now.iter().zip(&before).all(|(n, b)| {
            assert!(n.1 <= CAP as f64, "over the cap: {n:?}");
            n.0 - b.0 + n.1 + (n.2 - b.2) == flood as f64
        });
        if settled {
            for (n, b) in now.iter().zip(&before) {
                assert!(n.0 - b.0 >= 1.0, "the cap was never reached: {n:?}");
            }
            eprintln!("abuse: flood accounting (refused, handshaking, ended) {now:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "flood not accounted for: {now:?} from {before:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The hub closes every one of them: refused at once, or at the handshake timeout.
    let closing = Arc::new(Mutex::new(0usize));
    let waits: Vec<_> = sockets
        .into_iter()
        .map(|mut s| {
            let closing = closing.clone();
            tokio::spawn(async move {
                if closed_within(&mut s, Duration::from_secs(TIMEOUT_SECS) + slack)
                    .await
                    .is_some()
                {
                    *closing.lock().unwrap() += 1;
                }
            })
        })
        .collect();
    for w in waits {
        w.await.unwrap();
    }
    assert_eq!(
        *closing.lock().unwrap(),
        2 * flood,
        "every flood socket closed"
    );
    // And devices get in again.
    let mut after = connect("dev-1").await;
    assert_eq!(after.report(&json!({"after": "flood"})).await, Some(204));

    stop.store(true, Ordering::Relaxed);
    let rounds = good.await.unwrap();
    let completed: Vec<Duration> = rounds.iter().flatten().copied().collect();
    assert_eq!(completed.len(), rounds.len(), "a round trip failed");
    let within_a_second = completed
        .iter()
        .filter(|d| **d <= Duration::from_secs(1))
        .count();
    let slowest = completed.iter().max().copied().unwrap_or_default();
    eprintln!(
        "abuse: {} round trips, {within_a_second} within 1 s, slowest {slowest:?}",
        completed.len()
    );
    assert!(
        completed.len() >= 20,
        "too few round trips: {}",
        completed.len()
    );
    assert!(
        within_a_second * 100 >= completed.len() * 95,
        "{within_a_second} of {} within 1 s",
        completed.len()
    );

    // The hub counted what it refused and why.
    let m = lean::metrics_at(&http, &observer, &owner).await;
    let closed =
        |reason: &str| m[&format!("twinhub_mqtt_connections_closed_total{{reason=\"{reason}\"}}")];
    assert!(closed("malformed") >= 3.0, "oversized PUBLISH and garbage");
    assert!(closed("connect_invalid") >= 1.0, "oversized CONNECT");
    assert!(closed("connect_timeout") >= 1.0);
    assert!(closed("tls_failed") >= 1.0);
    assert!(closed("tls_timeout") >= CAP as f64);
    assert_eq!(m["twinhub_mqtt_unauthenticated_connections"], 0.0);
    eprintln!(
        "abuse: refused sockets mqtt {} https {}; closed {:?}",
        m["twinhub_mqtt_refused_connections_total"],
        m["twinhub_http_refused_connections_total{listener=\"https\"}"],
        [
            "malformed",
            "connect_invalid",
            "connect_timeout",
            "tls_failed",
            "tls_timeout",
            "protocol"
        ]
        .map(|r| (r, closed(r)))
    );
}
