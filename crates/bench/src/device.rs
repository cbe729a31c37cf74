//! The MQTT scenarios: `connect` (a fleet connects and stays idle: rate, failures,
//! the server's RSS per connection), `reported` (devices send reported-property
//! patches, W in flight each, until the durable `204`) and `mqtt-publish` (plain
//! QoS 1 publishes, W in flight, against any broker — the baseline).
//!
//! A [`Target`] is either a Twinhub (devices authenticate with their own SAS token)
//! or a plain broker (anonymous clients); both scenarios that can run against
//! either do exactly the same socket work apart from topics and credentials.

use crate::fleet::{device_id, device_key, module_id, progress, reported_patch};
use crate::hub::{rss_kib, CpuMeter, HubAccess};
use crate::mqtt::{Client, Credentials, Packet};
use crate::report::{Latency, Report};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Barrier, Semaphore};
use twinhub_core::sas::generate_token;
use twinhub_core::topic::HubTopic;

/// Who the clients connect to.
#[derive(Clone)]
pub(crate) enum Target {
    /// A Twinhub: each client is a registered device with its own SAS token, or,
    /// with `modules` > 0, module `m{i % modules}` of device `i / modules`.
    Twinhub {
        hub: HubAccess,
        prefix: String,
        modules: usize,
    },
    /// Any MQTT broker with TLS and anonymous access.
    Broker {
        addr: SocketAddr,
        server_name: String,
        tls: Arc<rustls::ClientConfig>,
    },
}

/// How clients spread over source addresses.
#[derive(Clone)]
pub(crate) struct Sources(Vec<IpAddr>);

impl Sources {
    /// `count` loopback source addresses from 127.0.0.`first` (`count` 0: let the
    /// kernel choose).
    pub(crate) fn loopback(first: u8, count: u8) -> Self {
        Self(
            (0..count)
                .map(|k| IpAddr::V4(Ipv4Addr::new(127, 0, 0, first.saturating_add(k))))
                .collect(),
        )
    }

    fn for_client(&self, i: usize) -> Option<IpAddr> {
        (!self.0.is_empty()).then(|| self.0[i % self.0.len()])
    }
}

impl Target {
    fn name(&self) -> &'static str {
        match self {
            Self::Twinhub { .. } => "twinhub",
            Self::Broker { .. } => "broker",
        }
    }

    fn credentials(&self, i: usize) -> Result<Credentials, String> {
        match self {
            Self::Twinhub {
                hub,
                prefix,
                modules,
            } => {
                // A module's id and key: module `m{i % modules}` of device
                // `i / modules`, keyed like client `i`.
                let (client_id, resource) = match *modules {
                    0 => {
                        let id = device_id(prefix, i);
                        (id.clone(), format!("devices/{id}"))
                    }
                    n => {
                        let (d, m) = (device_id(prefix, i / n), module_id(i % n));
                        (format!("{d}/{m}"), format!("devices/{d}/modules/{m}"))
                    }
                };
                let password = generate_token(
                    &format!("{}/{resource}", hub.host),
                    &device_key(i),
                    None,
                    crate::hub::unix_now() + 24 * 3600,
                )
                .ok_or("device key is not base64")?;
                Ok(Credentials {
                    username: Some(format!("{}/{client_id}/?api-version=2021-04-12", hub.host)),
                    password: Some(password),
                    client_id,
                })
            }
            Self::Broker { .. } => Ok(Credentials {
                client_id: format!("bench-{i}"),
                username: None,
                password: None,
            }),
        }
    }

    /// Connects client `i` (TCP + TLS + CONNECT/CONNACK).
    pub(crate) async fn connect(
        &self,
        i: usize,
        sources: &Sources,
        tls: &Arc<rustls::ClientConfig>,
    ) -> Result<Client, String> {
        let credentials = self.credentials(i)?;
        let (addr, name) = match self {
            Self::Twinhub { hub, .. } => {
                (SocketAddr::new(hub.addr, hub.mqtts_port), hub.host.as_str())
            }
            Self::Broker {
                addr, server_name, ..
            } => (*addr, server_name.as_str()),
        };
        Client::connect(addr, sources.for_client(i), tls.clone(), name, &credentials).await
    }

    fn tls(&self) -> Result<Arc<rustls::ClientConfig>, String> {
        match self {
            Self::Twinhub { hub, .. } => hub.tls_config(),
            Self::Broker { tls, .. } => Ok(tls.clone()),
        }
    }
}

/// Connects clients `0..n`, `concurrency` handshakes at a time.
async fn connect_all(
    target: &Target,
    n: usize,
    concurrency: usize,
    sources: &Sources,
) -> Result<(Vec<Client>, Latency, Vec<String>, Duration), String> {
    let tls = target.tls()?;
    let gate = Arc::new(Semaphore::new(concurrency.max(1)));
    let bar = progress(n, "connect");
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let permit = gate
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| e.to_string())?;
        let (target, sources, tls, bar) =
            (target.clone(), sources.clone(), tls.clone(), bar.clone());
        tasks.spawn(async move {
            let t = Instant::now();
            let result =
                tokio::time::timeout(Duration::from_secs(30), target.connect(i, &sources, &tls))
                    .await
                    .unwrap_or_else(|_| Err("connect timed out after 30 s".into()));
            drop(permit);
            bar.inc(1);
            (result, t.elapsed())
        });
    }
    let mut clients = Vec::with_capacity(n);
    let mut latency = Latency::new();
    let mut failures = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((Ok(client), elapsed)) => {
                latency.record(elapsed);
                clients.push(client);
            }
            Ok((Err(e), _)) => failures.push(e),
            Err(e) => failures.push(e.to_string()),
        }
    }
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    Ok((clients, latency, failures, elapsed))
}

fn summarise_failures(report: &mut Report, failures: &[String]) {
    report.figure("failures", failures.len() as f64, "");
    let mut kinds: HashMap<&str, usize> = HashMap::new();
    for f in failures {
        *kinds.entry(f.as_str()).or_default() += 1;
    }
    let mut kinds: Vec<_> = kinds.into_iter().collect();
    kinds.sort_by_key(|k| std::cmp::Reverse(k.1));
    for (text, count) in kinds.into_iter().take(3) {
        report.note(format!("{count} failed: {text}"));
    }
}

/// `connect`: `n` clients connect and stay idle; the server's RSS is read before
/// and after (`server_pid`).
pub(crate) async fn connect(
    target: &Target,
    n: usize,
    concurrency: usize,
    sources: &Sources,
    server_pid: Option<u32>,
    settle: Duration,
) -> Result<Report, String> {
    let mut report = Report::new("connect");
    report
        .param("target", target.name())
        .param("clients", n as u64)
        .param("concurrent_handshakes", concurrency as u64);
    if let Target::Twinhub { modules, .. } = target {
        if *modules > 0 {
            report.param("modules_per_device", *modules as u64);
        }
    }
    let before = server_pid.map(rss_kib).transpose()?;
    let cpu = CpuMeter::start(server_pid)?;
    let (clients, latency, failures, elapsed) =
        connect_all(target, n, concurrency, sources).await?;
    cpu.finish(&mut report, clients.len() as u64)?;
    report
        .figure("connected", clients.len() as f64, "")
        .figure(
            "connects/s",
            clients.len() as f64 / elapsed.as_secs_f64(),
            "/s",
        )
        .latency("connect (TCP+TLS+CONNACK)", &latency);
    summarise_failures(&mut report, &failures);
    if let (Some(pid), Some((before, _))) = (server_pid, before) {
        tokio::time::sleep(settle).await;
        let (after, peak) = rss_kib(pid)?;
        let per = (after.saturating_sub(before)) as f64 / clients.len().max(1) as f64;
        report
            .figure("server RSS before", before as f64 / 1024.0, "MiB")
            .figure("server RSS with clients idle", after as f64 / 1024.0, "MiB")
            .figure("server RSS peak (VmHWM)", peak as f64 / 1024.0, "MiB")
            .figure("server RSS per idle TLS connection", per, "KiB")
            .figure(
                "server RSS for 100k connections (extrapolated)",
                (before as f64 + per * 100_000.0) / (1024.0 * 1024.0),
                "GiB",
            );
    }
    let closing = Instant::now();
    for c in clients {
        drop(c);
    }
    report.figure("close all", closing.elapsed().as_secs_f64(), "s");
    Ok(report)
}

/// What a pipelined client sends and what completes it.
#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Workload {
    /// Twinhub: reported-properties PATCH, completed by `res/204` with its `$rid`.
    Reported,
    /// Any broker: QoS 1 PUBLISH, completed by its PUBACK.
    Publish,
}

/// Per-client outcome of a pipelined run.
struct Outcome {
    latency: Latency,
    completed_in_window: u64,
    errors: u64,
    first_error: Option<String>,
}

/// One client's closed loop: keep `window` operations in flight until `deadline`,
/// then wait (bounded) for the ones still outstanding.
async fn pipeline(
    mut client: Client,
    i: usize,
    workload: Workload,
    window: usize,
    start: Arc<Barrier>,
    duration: Duration,
) -> Outcome {
    let mut out = Outcome {
        latency: Latency::new(),
        completed_in_window: 0,
        errors: 0,
        first_error: None,
    };
    let publish_topic = format!("bench/{i}");
    let mut in_flight: HashMap<u64, Instant> = HashMap::with_capacity(window * 2);
    let mut seq: u64 = 0;
    start.wait().await;
    let deadline = Instant::now() + duration;
    let drain_deadline = deadline + Duration::from_secs(10);
    let result: Result<(), String> = async {
        loop {
            let now = Instant::now();
            if now < deadline {
                while in_flight.len() < window {
                    seq += 1;
                    let payload = reported_patch(i, seq).to_string();
                    let id = match workload {
                        Workload::Reported => {
                            let topic =
                                format!("$iothub/twin/PATCH/properties/reported/?$rid={seq}");
                            client.queue_publish(&topic, payload.as_bytes(), false);
                            seq
                        }
                        Workload::Publish => u64::from(
                            client
                                .queue_publish(&publish_topic, payload.as_bytes(), true)
                                .unwrap_or(0),
                        ),
                    };
                    in_flight.insert(id, Instant::now());
                }
                client.flush().await?;
            } else if in_flight.is_empty() || now > drain_deadline {
                return Ok(());
            }
            let packet = tokio::time::timeout_at(drain_deadline.into(), client.next())
                .await
                .map_err(|_| {
                    format!(
                        "{} operations unanswered 10 s after the run",
                        in_flight.len()
                    )
                })??;
            let mut packets = vec![packet];
            while let Some(p) = client.try_next()? {
                packets.push(p);
            }
            for packet in packets {
                let id = match (workload, packet) {
                    (Workload::Publish, Packet::PubAck { packet_id }) => u64::from(packet_id),
                    (Workload::Reported, Packet::Publish { topic, .. }) => {
                        match HubTopic::parse(&topic) {
                            Ok(HubTopic::TwinResponse { status, rid, .. }) => {
                                let id = rid.parse::<u64>().unwrap_or(0);
                                if status != 204 {
                                    out.errors += 1;
                                    out.first_error.get_or_insert_with(|| topic.clone());
                                    in_flight.remove(&id);
                                    continue;
                                }
                                id
                            }
                            _ => continue,
                        }
                    }
                    _ => continue,
                };
                if let Some(sent) = in_flight.remove(&id) {
                    let at = Instant::now();
                    out.latency.record(at - sent);
                    if at <= deadline {
                        out.completed_in_window += 1;
                    }
                }
            }
        }
    }
    .await;
    if let Err(e) = result {
        out.errors += 1;
        out.first_error.get_or_insert(e);
    }
    client.disconnect().await;
    out
}

/// `reported` (Twinhub) or `mqtt-publish` (any broker): `clients` connections with
/// `window` operations in flight each for `duration`.
pub(crate) async fn pipelined(
    target: &Target,
    workload: Workload,
    clients: usize,
    window: usize,
    duration: Duration,
    sources: &Sources,
    server_pid: Option<u32>,
) -> Result<Report, String> {
    let mut report = Report::new(match workload {
        Workload::Reported => "reported",
        Workload::Publish => "mqtt-publish",
    });
    report
        .param("target", target.name())
        .param("clients", clients as u64)
        .param("in_flight", window as u64)
        .param("seconds", duration.as_secs_f64());
    let (mut conns, _, failures, _) = connect_all(target, clients, 100, sources).await?;
    if !failures.is_empty() {
        summarise_failures(&mut report, &failures);
        return Err(format!(
            "{} clients failed to connect: {}",
            failures.len(),
            failures[0]
        ));
    }
    if workload == Workload::Reported {
        for c in &mut conns {
            c.queue_subscribe(&["$iothub/twin/res/#"]);
        }
        let mut subscribed = tokio::task::JoinSet::new();
        for mut c in conns.drain(..) {
            subscribed.spawn(async move {
                c.flush().await?;
                loop {
                    if let Packet::SubAck { .. } = c.next().await? {
                        return Ok::<_, String>(c);
                    }
                }
            });
        }
        while let Some(r) = subscribed.join_next().await {
            conns.push(r.map_err(|e| e.to_string())??);
        }
    }
    let start = Arc::new(Barrier::new(conns.len() + 1));
    let mut tasks = tokio::task::JoinSet::new();
    for (i, c) in conns.into_iter().enumerate() {
        tasks.spawn(pipeline(c, i, workload, window, start.clone(), duration));
    }
    start.wait().await;
    let began = Instant::now();
    let cpu = CpuMeter::start(server_pid)?;
    let mut latency = Latency::new();
    let (mut completed, mut errors) = (0u64, 0u64);
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        let o = joined.map_err(|e| e.to_string())?;
        latency.add(&o.latency);
        completed += o.completed_in_window;
        errors += o.errors;
        if first_error.is_none() {
            first_error = o.first_error;
        }
    }
    let window_secs = duration.as_secs_f64().min(began.elapsed().as_secs_f64());
    let label = match workload {
        Workload::Reported => "round trips/s (204 received = durable)",
        Workload::Publish => "QoS 1 publishes acked/s",
    };
    report
        .figure(label, completed as f64 / window_secs, "/s")
        .figure("completed in window", completed as f64, "")
        .figure("errors", errors as f64, "")
        .latency("round trip", &latency);
    cpu.finish(&mut report, latency.count())?;
    if let Some(e) = first_error {
        report.note(format!("first error: {e}"));
    }
    Ok(report)
}
