//! `twinhub-bench`: a load generator for Twinhub — a simulated device fleet over
//! MQTT/TLS and a service client over REST — with every operation's latency in
//! HDR histograms, results printed as tables and appended to a JSON file.
//!
//! Traffic goes to loopback addresses only (127.0.0.0/8): the bench refuses any
//! other target.
//!
//! # Layout
//! - `main.rs`: the command line and dispatch.
//! - [`report`]: histograms, figures, tables and JSON results.
//! - [`hub`]: the hub under test — credentials from its data directory, REST and
//!   TLS clients, starting and stopping `twinhub serve`, its RSS.
//! - [`fleet`]: the simulated devices (ids, keys, twin contents) and creating them
//!   through bulk REST requests.
//! - [`load`]: writing a large fleet straight into a fresh database.
//! - [`query`]: the `query` scenario (1M twins, restart-to-ready, RSS, query latency).
//! - [`mqtt`]: a lean MQTT 3.1.1 client over tokio-rustls.
//! - [`device`]: the MQTT scenarios `connect`, `reported` and `mqtt-publish`.
//! - [`render`]: the results file as `docs/benchmarks.md`.
//! - [`rest`]: the REST scenarios `get` and `desired` (the latter with devices
//!   over MQTT).
//! - [`methods`]: the `methods` scenario (direct method round trips to devices
//!   over MQTT).

mod device;
mod fleet;
mod hub;
mod load;
mod methods;
mod mqtt;
mod query;
mod render;
mod report;
mod rest;

use clap::{Args, Parser, Subcommand};
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "twinhub-bench",
    about = "Load generator for Twinhub (loopback only)"
)]
struct Cli {
    /// Append every scenario's results to this JSON array file.
    #[arg(long, global = true)]
    json: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

/// Where the hub under test is.
#[derive(Args, Clone)]
struct HubArgs {
    /// The hub's data directory (hub.json with the owner key, ca.pem).
    #[arg(long)]
    data_dir: PathBuf,
    /// The hub's address; must be a loopback address.
    #[arg(long, default_value = "127.0.0.1")]
    addr: IpAddr,
    #[arg(long, default_value_t = 443)]
    https_port: u16,
    #[arg(long, default_value_t = 8883)]
    mqtts_port: u16,
}

/// Who MQTT clients connect to: the hub (with `--data-dir`) or any broker.
#[derive(Args, Clone)]
struct TargetArgs {
    /// The hub's data directory; omit it and give --broker-port for a plain broker.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Loopback address of the hub or broker.
    #[arg(long, default_value = "127.0.0.1")]
    addr: IpAddr,
    #[arg(long, default_value_t = 443)]
    https_port: u16,
    #[arg(long, default_value_t = 8883)]
    mqtts_port: u16,
    /// MQTT/TLS port of a plain broker (anonymous access).
    #[arg(long, conflicts_with = "data_dir")]
    broker_port: Option<u16>,
    /// CA certificate (PEM) the broker's certificate chains to.
    #[arg(long)]
    broker_ca: Option<PathBuf>,
    /// The name in the broker's certificate.
    #[arg(long, default_value = "localhost")]
    broker_name: String,
    /// Device id prefix on the hub.
    #[arg(long, default_value = "b-")]
    prefix: String,
    /// Create the devices on the hub first (bulk REST; existing ones are kept).
    #[arg(long)]
    create: bool,
    /// Connect as modules instead of devices: this many modules a device, client
    /// `i` being module `m{i % N}` of device `i / N` (created with --create).
    #[arg(long, default_value_t = 0)]
    modules: usize,
    /// Spread client sockets over this many source addresses from 127.0.0.2
    /// (one address runs out of ephemeral ports near 28k connections).
    #[arg(long, default_value_t = 8)]
    sources: u8,
}

impl TargetArgs {
    async fn target(&self, devices: usize) -> Result<device::Target, String> {
        check_loopback(self.addr)?;
        match (&self.data_dir, self.broker_port) {
            (Some(dir), _) => {
                let hub = hub::HubAccess::from_data_dir(
                    dir,
                    self.addr,
                    self.https_port,
                    self.mqtts_port,
                )?;
                if self.create {
                    let device_count = match self.modules {
                        0 => devices,
                        n => devices.div_ceil(n),
                    };
                    let took = fleet::create_devices(&hub, &self.prefix, device_count, 4).await?;
                    eprintln!(
                        "created {device_count} devices in {:.1} s ({:.0}/s)",
                        took.as_secs_f64(),
                        device_count as f64 / took.as_secs_f64()
                    );
                    if self.modules > 0 {
                        let took = fleet::create_modules(
                            &hub,
                            &self.prefix,
                            device_count,
                            self.modules,
                            8,
                        )
                        .await?;
                        eprintln!(
                            "created {} modules in {:.1} s",
                            device_count * self.modules,
                            took.as_secs_f64()
                        );
                    }
                }
                Ok(device::Target::Twinhub {
                    hub,
                    prefix: self.prefix.clone(),
                    modules: self.modules,
                })
            }
            (None, Some(port)) => {
                let ca_path = self
                    .broker_ca
                    .as_ref()
                    .ok_or("--broker-port needs --broker-ca")?;
                let ca = std::fs::read(ca_path)
                    .map_err(|e| format!("cannot read {}: {e}", ca_path.display()))?;
                Ok(device::Target::Broker {
                    addr: std::net::SocketAddr::new(self.addr, port),
                    server_name: self.broker_name.clone(),
                    tls: hub::tls_config_for(&ca)?,
                })
            }
            (None, None) => Err("give --data-dir (a Twinhub) or --broker-port (a broker)".into()),
        }
    }

    /// The hub (REST scenarios), with its devices created if asked.
    async fn hub(&self, devices: usize) -> Result<hub::HubAccess, String> {
        match self.target(devices).await? {
            device::Target::Twinhub { hub, .. } => Ok(hub),
            device::Target::Broker { .. } => {
                Err("this scenario needs a Twinhub (--data-dir)".into())
            }
        }
    }

    fn sources(&self) -> device::Sources {
        device::Sources::loopback(2, self.sources)
    }
}

#[derive(Subcommand)]
enum Command {
    /// Writes the markdown report of a results file (targets, ratios, every figure).
    Render {
        /// The JSON array the scenarios appended to (--json).
        #[arg(long)]
        results: PathBuf,
        /// The command line that produced the results, quoted in the page.
        #[arg(long)]
        command: String,
        /// Hand-written findings appended to the page.
        #[arg(long)]
        findings: Option<PathBuf>,
        /// Where to write the page.
        #[arg(long)]
        out: PathBuf,
    },
    /// Creates devices `0..N` on the hub (bulk REST, 100 per request; existing
    /// devices are kept).
    Create {
        #[command(flatten)]
        target: TargetArgs,
        #[arg(long)]
        devices: usize,
    },
    /// N clients connect over MQTT/TLS and stay idle: connect rate, failures,
    /// latency, and the server's RSS per idle connection (with --server-pid).
    Connect {
        #[command(flatten)]
        target: TargetArgs,
        #[arg(long, default_value_t = 1000)]
        clients: usize,
        /// Handshakes in progress at once.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// The server's process id, to read its RSS from /proc.
        #[arg(long)]
        server_pid: Option<u32>,
        /// Seconds to wait with every client idle before reading the RSS.
        #[arg(long, default_value_t = 3)]
        settle: u64,
    },
    /// Devices send reported-property patches with W in flight each; a round trip
    /// ends at the hub's `204` (the patch is durable).
    Reported {
        #[command(flatten)]
        target: TargetArgs,
        #[arg(long, default_value_t = 100)]
        clients: usize,
        #[arg(long, default_value_t = 10)]
        in_flight: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// The server's process id, to report its CPU use.
        #[arg(long)]
        server_pid: Option<u32>,
    },
    /// Twin GETs over REST (closed loop, C requests at a time).
    Get {
        #[command(flatten)]
        target: TargetArgs,
        #[arg(long, default_value_t = 1000)]
        devices: usize,
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// Desired-property PATCHes at a fixed rate; latency from the REST response to
    /// the device's notification.
    Desired {
        #[command(flatten)]
        target: TargetArgs,
        #[arg(long, default_value_t = 100)]
        devices: usize,
        #[arg(long, default_value_t = 1000)]
        rate: u32,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// Direct methods at a fixed rate to devices that answer at once; latency from
    /// the REST request to the REST response carrying the device's answer.
    Methods {
        #[command(flatten)]
        target: TargetArgs,
        #[arg(long, default_value_t = 100)]
        devices: usize,
        #[arg(long, default_value_t = 1000)]
        rate: u32,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// Plain QoS 1 publishes with W in flight per client, against any broker.
    MqttPublish {
        #[command(flatten)]
        target: TargetArgs,
        #[arg(long, default_value_t = 100)]
        clients: usize,
        #[arg(long, default_value_t = 10)]
        in_flight: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// The server's process id, to report its CPU use.
        #[arg(long)]
        server_pid: Option<u32>,
    },
    /// Loads N twins into a fresh data directory, starts the hub on it (twice:
    /// first start, then the measured restart) and measures restart-to-ready,
    /// RSS, and selective and full-scan query latency.
    Query {
        #[command(flatten)]
        hub: HubArgs,
        /// The `twinhub` binary to start.
        #[arg(long, default_value = "target/release/twinhub")]
        hub_bin: PathBuf,
        #[arg(long, default_value_t = 1_000_000)]
        devices: usize,
        /// Device id prefix.
        #[arg(long, default_value = "q-")]
        prefix: String,
        #[arg(long, default_value_t = 30)]
        selective_runs: usize,
        #[arg(long, default_value_t = 5)]
        scan_runs: usize,
        /// Threads building records while loading.
        #[arg(long, default_value_t = 2)]
        load_threads: usize,
        /// Where the started hub's stderr goes.
        #[arg(long, default_value = "/tmp/twinhub-bench-query-hub.log")]
        hub_log: PathBuf,
    },
}

fn check_loopback(addr: IpAddr) -> Result<(), String> {
    if addr.is_loopback() {
        Ok(())
    } else {
        Err(format!(
            "{addr} is not a loopback address: this bench only sends traffic to 127.0.0.0/8 or ::1"
        ))
    }
}

fn render(
    results: &std::path::Path,
    command: &str,
    findings: Option<&std::path::Path>,
    out: &std::path::Path,
) -> Result<(), String> {
    let text =
        std::fs::read(results).map_err(|e| format!("cannot read {}: {e}", results.display()))?;
    let results: Vec<serde_json::Value> = serde_json::from_slice(&text)
        .map_err(|e| format!("{} is not a results array: {e}", results.display()))?;
    let findings = match findings {
        Some(p) => {
            std::fs::read_to_string(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?
        }
        None => String::new(),
    };
    std::fs::write(out, render::render(&results, command, &findings))
        .map_err(|e| format!("cannot write {}: {e}", out.display()))
}

async fn run(cli: Cli) -> Result<Vec<report::Report>, String> {
    match cli.command {
        Command::Render {
            results,
            command,
            findings,
            out,
        } => {
            render(&results, &command, findings.as_deref(), &out)?;
            Ok(Vec::new())
        }
        Command::Create {
            mut target,
            devices,
        } => {
            target.create = true;
            target.hub(devices).await?;
            Ok(Vec::new())
        }
        Command::Connect {
            target,
            clients,
            concurrency,
            server_pid,
            settle,
        } => {
            let t = target.target(clients).await?;
            Ok(vec![
                device::connect(
                    &t,
                    clients,
                    concurrency,
                    &target.sources(),
                    server_pid,
                    std::time::Duration::from_secs(settle),
                )
                .await?,
            ])
        }
        Command::Reported {
            target,
            clients,
            in_flight,
            seconds,
            server_pid,
        } => {
            let t = target.target(clients).await?;
            Ok(vec![
                device::pipelined(
                    &t,
                    device::Workload::Reported,
                    clients,
                    in_flight,
                    std::time::Duration::from_secs(seconds),
                    &target.sources(),
                    server_pid,
                )
                .await?,
            ])
        }
        Command::Get {
            target,
            devices,
            concurrency,
            seconds,
        } => {
            let hub = target.hub(devices).await?;
            Ok(vec![
                rest::get(
                    &hub,
                    &target.prefix,
                    devices,
                    concurrency,
                    std::time::Duration::from_secs(seconds),
                )
                .await?,
            ])
        }
        Command::Desired {
            target,
            devices,
            rate,
            seconds,
        } => {
            let hub = target.hub(devices).await?;
            Ok(vec![
                rest::desired(
                    &hub,
                    &target.prefix,
                    devices,
                    rate,
                    std::time::Duration::from_secs(seconds),
                    &target.sources(),
                )
                .await?,
            ])
        }
        Command::Methods {
            target,
            devices,
            rate,
            seconds,
        } => {
            let hub = target.hub(devices).await?;
            Ok(vec![
                methods::methods(
                    &hub,
                    &target.prefix,
                    devices,
                    rate,
                    std::time::Duration::from_secs(seconds),
                    &target.sources(),
                )
                .await?,
            ])
        }
        Command::MqttPublish {
            target,
            clients,
            in_flight,
            seconds,
            server_pid,
        } => {
            let t = target.target(clients).await?;
            Ok(vec![
                device::pipelined(
                    &t,
                    device::Workload::Publish,
                    clients,
                    in_flight,
                    std::time::Duration::from_secs(seconds),
                    &target.sources(),
                    server_pid,
                )
                .await?,
            ])
        }
        Command::Query {
            hub,
            hub_bin,
            devices,
            prefix,
            selective_runs,
            scan_runs,
            load_threads,
            hub_log,
        } => {
            check_loopback(hub.addr)?;
            query::run(query::QueryOptions {
                serve: hub::ServeCommand {
                    binary: hub_bin,
                    data_dir: hub.data_dir,
                    addr: hub.addr,
                    https_port: hub.https_port,
                    mqtts_port: hub.mqtts_port,
                    log: hub_log,
                },
                devices,
                prefix,
                selective_runs,
                scan_runs,
                load_threads,
            })
            .await
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = cli.json.clone();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("twinhub-bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(reports) => {
            for r in &reports {
                r.print();
            }
            if let Some(path) = json {
                if let Err(e) = report::append_json(&path, &reports) {
                    eprintln!("twinhub-bench: {e}");
                    return ExitCode::FAILURE;
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("twinhub-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
