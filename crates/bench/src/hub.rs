//! The hub under test: its credentials and CA (read from its data directory), a
//! REST client, the process itself (start, wait until ready, stop) and its RSS.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use twinhub_core::sas::generate_token;

/// How the bench reaches a hub: what `hub.json` and `ca.pem` in its data
/// directory say, plus the address the hub listens on.
#[derive(Clone)]
pub(crate) struct HubAccess {
    /// Host name SAS tokens are scoped to (the hub's primary host name).
    pub(crate) host: String,
    /// Loopback address the hub listens on.
    pub(crate) addr: std::net::IpAddr,
    pub(crate) https_port: u16,
    pub(crate) mqtts_port: u16,
    owner_key: String,
    pub(crate) ca_pem: Vec<u8>,
}

impl HubAccess {
    /// Reads `hub.json` and `ca.pem` from `data_dir`.
    pub(crate) fn from_data_dir(
        data_dir: &Path,
        addr: std::net::IpAddr,
        https_port: u16,
        mqtts_port: u16,
    ) -> Result<Self, String> {
        let read = |name: &str| {
            std::fs::read(data_dir.join(name))
                .map_err(|e| format!("cannot read {}: {e}", data_dir.join(name).display()))
        };
        let hub: Value = serde_json::from_slice(&read("hub.json")?)
            .map_err(|e| format!("hub.json is not JSON: {e}"))?;
        let host = hub["hostNames"][0]
            .as_str()
            .ok_or("hub.json has no host name")?
            .to_owned();
        let owner_key = hub["policies"]
            .as_array()
            .and_then(|ps| {
                ps.iter()
                    .find(|p| p["name"] == "iothubowner")
                    .and_then(|p| p["primaryKey"].as_str())
            })
            .ok_or("hub.json has no iothubowner key")?
            .to_owned();
        Ok(Self {
            host,
            addr,
            https_port,
            mqtts_port,
            owner_key,
            ca_pem: read("ca.pem")?,
        })
    }

    /// A raw HTTPS client trusting the hub's CA, resolving the hub's host name to
    /// its loopback address (never anything else).
    pub(crate) fn http_client(&self, pool: usize) -> Result<reqwest::Client, String> {
        let cert = reqwest::Certificate::from_pem(&self.ca_pem).map_err(|e| e.to_string())?;
        reqwest::Client::builder()
            .add_root_certificate(cert)
            .resolve(
                &self.host,
                std::net::SocketAddr::new(self.addr, self.https_port),
            )
            .pool_max_idle_per_host(pool)
            .timeout(Duration::from_secs(120))
            .build()
            .map_err(|e| e.to_string())
    }

    /// `https://host:port` for `http_client` requests.
    pub(crate) fn base_url(&self) -> String {
        format!("https://{}:{}", self.host, self.https_port)
    }

    /// A fresh owner token for REST requests.
    pub(crate) fn owner_token(&self) -> Result<String, String> {
        generate_token(
            &self.host,
            &self.owner_key,
            Some("iothubowner"),
            unix_now() + 3600,
        )
        .ok_or_else(|| "the owner key is not base64".to_owned())
    }

    /// A rustls client configuration trusting the hub's CA (for MQTT/TLS).
    pub(crate) fn tls_config(&self) -> Result<Arc<rustls::ClientConfig>, String> {
        tls_config_for(&self.ca_pem)
    }
}

/// A TLS client configuration trusting `ca_pem`, without session resumption so
/// that every connect measures a full handshake, the same against every broker.
pub(crate) fn tls_config_for(ca_pem: &[u8]) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut &ca_pem[..]) {
        roots
            .add(cert.map_err(|e| format!("bad CA PEM: {e}"))?)
            .map_err(|e| format!("bad CA certificate: {e}"))?;
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Resident set size and its peak of process `pid`, in KiB, from
/// `/proc/<pid>/status` (`VmRSS`, `VmHWM`).
pub(crate) fn rss_kib(pid: u32) -> Result<(u64, u64), String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("cannot read /proc/{pid}/status: {e}"))?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
            .ok_or_else(|| format!("/proc/{pid}/status has no {name}"))
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

/// CPU time (user + system) process `pid` has used, in seconds
/// (`/proc/<pid>/stat` fields 14 and 15, in clock ticks of 1/100 s on Linux).
pub(crate) fn cpu_secs(pid: u32) -> Result<f64, String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| format!("cannot read /proc/{pid}/stat: {e}"))?;
    // The command name may contain spaces; fields are counted after its ')'.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or("malformed /proc stat")?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .ok_or_else(|| format!("/proc/{pid}/stat has no field {}", i + 3))
    };
    // Field 14 (utime) is the 12th after the name, field 15 (stime) the 13th.
    Ok((tick(11)? + tick(12)?) as f64 / 100.0)
}

/// CPU use of the server and of this bench over a measured interval.
pub(crate) struct CpuMeter {
    server: Option<(u32, f64)>,
    bench: f64,
    started: std::time::Instant,
}

impl CpuMeter {
    pub(crate) fn start(server_pid: Option<u32>) -> Result<Self, String> {
        Ok(Self {
            server: server_pid
                .map(|p| cpu_secs(p).map(|c| (p, c)))
                .transpose()?,
            bench: cpu_secs(std::process::id())?,
            started: std::time::Instant::now(),
        })
    }

    /// Adds cores busy (CPU seconds per second) and CPU µs per operation.
    pub(crate) fn finish(
        &self,
        report: &mut crate::report::Report,
        ops: u64,
    ) -> Result<(), String> {
        let wall = self.started.elapsed().as_secs_f64();
        let per_op = |cpu: f64| cpu * 1e6 / ops.max(1) as f64;
        if let Some((pid, before)) = self.server {
            let used = cpu_secs(pid)? - before;
            report
                .figure("server CPU (cores busy)", used / wall, "")
                .figure("server CPU per operation", per_op(used), "µs");
        }
        let used = cpu_secs(std::process::id())? - self.bench;
        report
            .figure("bench CPU (cores busy)", used / wall, "")
            .figure("bench CPU per operation", per_op(used), "µs");
        Ok(())
    }
}

/// A hub process this bench started.
pub(crate) struct HubProcess {
    child: Child,
}

/// How to start `twinhub serve`.
pub(crate) struct ServeCommand {
    pub(crate) binary: PathBuf,
    pub(crate) data_dir: PathBuf,
    pub(crate) addr: std::net::IpAddr,
    pub(crate) https_port: u16,
    pub(crate) mqtts_port: u16,
    pub(crate) log: PathBuf,
}

impl HubProcess {
    /// Starts the hub and returns once it answers an HTTPS request, with the time
    /// from spawn to that answer.
    pub(crate) async fn start(cmd: &ServeCommand) -> Result<(Self, Duration), String> {
        let log = std::fs::File::create(&cmd.log)
            .map_err(|e| format!("cannot create {}: {e}", cmd.log.display()))?;
        let started = Instant::now();
        let child = Command::new(&cmd.binary)
            .arg("--data-dir")
            .arg(&cmd.data_dir)
            .arg("serve")
            .arg("--bind")
            .arg(cmd.addr.to_string())
            .arg("--https-port")
            .arg(cmd.https_port.to_string())
            .arg("--mqtts-port")
            .arg(cmd.mqtts_port.to_string())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", cmd.binary.display()))?;
        let mut hub = Self { child };
        let deadline = started + Duration::from_secs(300);
        // The port is bound only after every twin is loaded, so the first accepted
        // connection means "ready"; an HTTPS request then confirms it serves.
        loop {
            if let Ok(Some(status)) = hub.child.try_wait() {
                return Err(format!(
                    "the hub exited during start ({status}); see {}",
                    cmd.log.display()
                ));
            }
            if Instant::now() > deadline {
                hub.stop().await;
                return Err("the hub did not get ready within 300 s".into());
            }
            if tokio::net::TcpStream::connect((cmd.addr, cmd.https_port))
                .await
                .is_ok()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let access =
            HubAccess::from_data_dir(&cmd.data_dir, cmd.addr, cmd.https_port, cmd.mqtts_port)?;
        let client = access.http_client(1)?;
        let response = client
            .get(format!(
                "{}/statistics/devices?api-version=2021-04-12",
                access.base_url()
            ))
            .header("Authorization", access.owner_token()?)
            .send()
            .await
            .map_err(|e| format!("the hub accepts connections but HTTPS fails: {e:#}"))?;
        if !response.status().is_success() {
            return Err(format!("GET /statistics/devices: {}", response.status()));
        }
        Ok((hub, started.elapsed()))
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM (a graceful stop), then SIGKILL after 30 s.
    pub(crate) async fn stop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        for _ in 0..300 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
