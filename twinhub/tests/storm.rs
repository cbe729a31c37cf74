//! Reconnect storms against a live `twinhub serve`.
//!
//! N devices connect the way the SDKs do (clean session 0, one SUBSCRIBE) and the
//! hub's RSS is read at that steady state. Then:
//!
//! 1. every client socket is dropped at once and every device reconnects at once
//!    (no SUBSCRIBE) and reads its twin: all are back, no session is left behind,
//!    and the hub's RSS returns near its steady level;
//! 2. the hub is killed (`kill -9`) and restarted on the same data directory, and
//!    every device reconnects at once and reads its twin: the stored sessions make
//!    desired notifications reach a sample of them without any SUBSCRIBE;
//! 3. every device disconnects: no connection is left, the stored sessions stay.
//!
//! `storm_of_reconnects` runs with `TWINHUB_STORM_DEVICES` devices (default
//! 1,000); `storm_of_10k_reconnects` is the long run (10,000 devices, client
//! sockets spread over 127.0.0.2–127.0.0.9), ignored by default:
//!
//! ```sh
//! cargo test --release -p twinhub --test storm -- --ignored --nocapture
//! ```
//!
//! `TWINHUB_STORM_HUB_ARGS` adds `twinhub serve` arguments (space-separated), e.g.
//! `--max-unauthenticated 16384` to see how the cap shapes a storm.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod lean;

use lean::{ConnectError, Device, TWIN_FILTERS};
use serde_json::json;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// Everything a device task needs.
struct Fleet {
    mqtts_port: u16,
    connector: tokio_rustls::TlsConnector,
    device_key: String,
    sources: Vec<Ipv4Addr>,
}

impl Fleet {
    fn id(i: usize) -> String {
        format!("storm-{i}")
    }

    fn source(&self, i: usize) -> Option<Ipv4Addr> {
        (!self.sources.is_empty()).then(|| self.sources[i % self.sources.len()])
    }

    /// Connects device `i`, retrying (as the SDKs do, with a growing back-off)
    /// while the hub refuses or closes; returns the connection, whether the
    /// session was resumed, and the attempts it took.
    async fn connect(&self, i: usize, deadline: Instant) -> (Device, bool, u32) {
        let id = Self::id(i);
        let password = lean::device_token(&self.device_key, &id);
        let mut backoff = Duration::from_millis(50);
        for attempt in 1.. {
            match Device::connect(
                self.mqtts_port,
                self.source(i),
                &self.connector,
                &id,
                &password,
                false,
            )
            .await
            {
                Ok((device, present)) => return (device, present, attempt),
                Err(e @ ConnectError::Refused(5)) => panic!("{id}: {e:?}"),
                Err(_) if Instant::now() < deadline => {
                    // Jitter spreads the retries of devices refused together.
                    let jitter = Duration::from_millis(rand::random::<u64>() % 100);
                    tokio::time::sleep(backoff + jitter).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
                Err(e) => panic!("{id} could not reconnect in time: {e:?}"),
            }
        }
        unreachable!()
    }
}

/// What one wave of reconnects measured.
#[derive(Debug)]
struct Wave {
    took: Duration,
    resumed: usize,
    retried: usize,
    slowest: Duration,
    /// The hub's highest RSS seen during the wave, MiB.
    peak_rss_mib: f64,
}

/// Every device reconnects at once and reads its twin.
async fn reconnect_all(
    fleet: &Arc<Fleet>,
    n: usize,
    limit: Duration,
    hub_pid: u32,
) -> (Vec<Device>, Wave) {
    let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let sampling = Arc::clone(&sampling);
        tokio::spawn(async move {
            let mut peak = 0;
            while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(lean::rss_kib(hub_pid));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            peak
        })
    };
    let started = Instant::now();
    let deadline = started + limit;
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let fleet = Arc::clone(fleet);
            tokio::spawn(async move {
                let (mut device, present, attempts) = fleet.connect(i, deadline).await;
                let twin = device.get_twin().await.expect("twin GET after reconnect");
                assert!(twin["desired"]["$version"].is_i64(), "{twin}");
                (device, present, attempts, started.elapsed())
            })
        })
        .collect();
    let mut devices = Vec::with_capacity(n);
    let mut wave = Wave {
        took: Duration::ZERO,
        resumed: 0,
        retried: 0,
        slowest: Duration::ZERO,
        peak_rss_mib: 0.0,
    };
    for task in tasks {
        let (device, present, attempts, done) = task.await.unwrap();
        devices.push(device);
        wave.resumed += usize::from(present);
        wave.retried += usize::from(attempts > 1);
        wave.slowest = wave.slowest.max(done);
    }
    wave.took = started.elapsed();
    sampling.store(false, std::sync::atomic::Ordering::Relaxed);
    wave.peak_rss_mib = mib(sampler.await.unwrap());
    (devices, wave)
}

async fn wait_for(
    what: &str,
    within: Duration,
    mut check: impl FnMut() -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>>,
) {
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(
            Instant::now() < deadline,
            "{what} not reached in {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

async fn storm(n: usize, sources: Vec<Ipv4Addr>, limit: Duration) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let args = std::env::var("TWINHUB_STORM_HUB_ARGS").unwrap_or_default();
    let args: Vec<&str> = args.split_whitespace().collect();
    let mut hub = common::Hub::start_with(&data, 0, 0, &args);
    let ca = hub.ca_pem();
    let http = lean::http_client(&ca);
    let owner = lean::service_token("iothubowner", &hub.policy_key("iothubowner"));
    let created = Instant::now();
    lean::create_devices(&http, hub.https_port, &owner, "storm-", n).await;
    eprintln!("storm: {n} devices created in {:?}", created.elapsed());
    let fleet = Arc::new(Fleet {
        mqtts_port: hub.mqtts_port,
        connector: lean::tls(&ca, &[]),
        device_key: hub.policy_key("device"),
        sources,
    });
    let metric = |name: &'static str, port: u16| {
        let (http, owner) = (http.clone(), owner.clone());
        async move { lean::metrics(&http, port, &owner).await[name] }
    };

    // Steady state: every device connected and subscribed, as the SDKs leave it.
    let started = Instant::now();
    let deadline = started + limit;
    let gate = Arc::new(Semaphore::new(128));
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let (fleet, gate) = (Arc::clone(&fleet), Arc::clone(&gate));
            tokio::spawn(async move {
                let _permit = gate.acquire().await.unwrap();
                let (mut device, _, _) = fleet.connect(i, deadline).await;
                assert_eq!(device.subscribe(&TWIN_FILTERS).await.unwrap(), [1, 1]);
                device
            })
        })
        .collect();
    let mut devices = Vec::with_capacity(n);
    for task in tasks {
        devices.push(task.await.unwrap());
    }
    eprintln!(
        "storm: {n} connected and subscribed in {:?}",
        started.elapsed()
    );
    assert_eq!(
        metric("twinhub_mqtt_connections", hub.https_port).await,
        n as f64
    );
    assert_eq!(
        metric("twinhub_mqtt_sessions_stored", hub.https_port).await,
        n as f64
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pid = hub.pid().unwrap();
    let steady = lean::rss_kib(pid);

    // 1. All dropped at once, all back at once.
    drop(devices);
    let (devices, wave) = reconnect_all(&fleet, n, limit, pid).await;
    eprintln!("storm: drop-and-reconnect of {n}: {wave:?}");
    assert_eq!(wave.resumed, n, "every stored session resumed");
    let port = hub.https_port;
    wait_for("all connections back", Duration::from_secs(10), || {
        let m = metric("twinhub_mqtt_connections", port);
        Box::pin(async move { m.await == n as f64 })
    })
    .await;
    assert_eq!(metric("twinhub_mqtt_sessions_stored", port).await, n as f64);
    assert_eq!(
        metric("twinhub_mqtt_unauthenticated_connections", port).await,
        0.0
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = lean::rss_kib(pid);
    eprintln!(
        "storm: hub RSS steady {:.1} MiB, after the storm {:.1} MiB",
        mib(steady),
        mib(after)
    );
    // Near the steady level: the old sessions' memory was given back for reuse.
    assert!(
        after <= steady + steady / 2 + 32 * 1024,
        "RSS grew from {steady} KiB to {after} KiB"
    );

    // 2. The hub dies and comes back; every device reconnects at once.
    hub.kill();
    drop(devices);
    let restarted = Instant::now();
    hub = common::Hub::start_with(&data, hub.https_port, hub.mqtts_port, &args);
    eprintln!("storm: hub restarted in {:?}", restarted.elapsed());
    let pid = hub.pid().unwrap();
    let (mut devices, wave) = reconnect_all(&fleet, n, limit, pid).await;
    eprintln!("storm: reconnect after kill -9 and restart: {wave:?}");
    assert_eq!(wave.resumed, n, "every stored session survived the restart");
    assert_eq!(metric("twinhub_mqtt_connections", port).await, n as f64);
    // Notifications reach devices that never subscribed on this connection.
    let service = hub.service_client("service");
    for i in (0..n).step_by((n / 10).max(1)) {
        let patch = json!({"properties": {"desired": {"after": i}}});
        service
            .update_twin(&Fleet::id(i), &patch, None)
            .await
            .unwrap();
        let notification = devices[i]
            .desired(Duration::from_secs(10))
            .await
            .unwrap_or_else(|| panic!("no notification for {}", Fleet::id(i)));
        assert_eq!(notification.json().unwrap()["after"], i);
    }
    let m = lean::metrics(&http, port, &owner).await;
    eprintln!(
        "storm: connacks {:?}, refused sockets {}, RSS {:.1} MiB",
        (0..6)
            .map(|c| m[&format!("twinhub_mqtt_connacks_total{{code=\"{c}\"}}")])
            .collect::<Vec<_>>(),
        m["twinhub_mqtt_refused_connections_total"],
        m["process_resident_memory_bytes"] / 1048576.0
    );

    // 3. Everyone leaves: nothing live is left behind; stored sessions remain.
    drop(devices);
    wait_for("no connection left", Duration::from_secs(10), || {
        let m = metric("twinhub_mqtt_connections", port);
        Box::pin(async move { m.await == 0.0 })
    })
    .await;
    assert_eq!(metric("twinhub_devices_connected", port).await, 0.0);
    assert_eq!(metric("twinhub_mqtt_sessions_stored", port).await, n as f64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storm_of_reconnects() {
    let n = std::env::var("TWINHUB_STORM_DEVICES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    storm(n, Vec::new(), Duration::from_secs(60)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long: 10,000 devices; run with --release -- --ignored"]
async fn storm_of_10k_reconnects() {
    let sources = (2..10).map(|last| Ipv4Addr::new(127, 0, 0, last)).collect();
    storm(10_000, sources, Duration::from_secs(300)).await;
}
