//! `twinhub serve`: opens the store, starts the HTTPS (REST, MQTT over WebSockets
//! and `/metrics`) and MQTT/TLS listeners, and shuts down gracefully on
//! SIGINT/SIGTERM, within 5 s (the timeouts below add up to less): stop accepting (the listening
//! sockets close), let HTTP requests in flight finish and close MQTT sessions
//! (each flushes what it has queued), refuse further writes and wait for the
//! group commit to make everything queued durable, exit 0.

use crate::config::DataDir;
use crate::device_backend::HubBackend;
use crate::{tls, Global};
use clap::Args;
use std::net::{Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::watch;
use twinhub_service::{Hub, HubConfig};
use twinhub_store::SqliteStore;

/// How long shutdown waits for requests in flight and sessions to close; what is
/// still open then is dropped.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);
/// How long shutdown waits for the last group commit.
const FLUSH_TIMEOUT: Duration = Duration::from_millis(1500);
/// How long shutdown waits for the committer thread to close the database.
const CLOSE_TIMEOUT: Duration = Duration::from_millis(400);

/// `twinhub serve` options.
#[derive(Args)]
pub(crate) struct ServeArgs {
    /// An extra host name for the certificate and SAS scopes; the first given is
    /// put in connection strings. May be repeated.
    #[arg(long = "hostname")]
    hostnames: Vec<String>,
    /// HTTPS port (REST API and MQTT over WebSockets). The Node service SDK only
    /// speaks to 443.
    #[arg(long, default_value_t = 443)]
    https_port: u16,
    /// MQTT over TLS port. The device SDKs use 8883.
    #[arg(long, default_value_t = 8883)]
    mqtts_port: u16,
    /// Address to listen on (default: every interface, IPv6 and IPv4).
    #[arg(long)]
    bind: Option<std::net::IpAddr>,
    /// Also serve the REST API over plain, unencrypted HTTP on this port
    /// (for debugging only: credentials travel in clear).
    #[arg(long)]
    insecure_http_port: Option<u16>,
    /// A PEM certificate chain to serve instead of the generated one.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// The most connections at once, per listener, that have not yet completed
    /// the TLS handshake (HTTPS) or TLS and an accepted CONNECT (MQTT); sockets
    /// beyond it are closed on arrival and counted in /metrics.
    #[arg(long, default_value_t = twinhub_mqtt::DEFAULT_MAX_UNAUTHENTICATED)]
    max_unauthenticated: usize,
    /// Seconds a client may take for each step of proving itself: the TLS
    /// handshake, the MQTT CONNECT, an HTTP request's headers.
    #[arg(long, default_value_t = 10.0, value_parser = parse_seconds)]
    handshake_timeout: f64,
}

fn parse_seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v <= 3600.0 => Ok(v),
        _ => Err("expected seconds, more than 0 and at most 3600".into()),
    }
}

async fn bind(
    addr: Option<std::net::IpAddr>,
    port: u16,
    flag: &str,
) -> Result<TcpListener, String> {
    let explain = |e: std::io::Error| {
        let hint = if e.kind() == std::io::ErrorKind::PermissionDenied {
            format!(
                "; ports below 1024 need root or the capability (`sudo setcap cap_net_bind_service=+ep $(command -v twinhub)`), or pick another port with {flag}"
            )
        } else if e.kind() == std::io::ErrorKind::AddrInUse {
            format!("; another program uses it: stop it or pick another port with {flag}")
        } else {
            String::new()
        };
        format!("cannot listen on port {port}: {e}{hint}")
    };
    match addr {
        Some(ip) => listen(SocketAddr::new(ip, port)).map_err(explain),
        None => match listen(SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), port)) {
            Ok(l) => Ok(l),
            // No IPv6 on this machine: IPv4 only.
            Err(e)
                if e.kind() != std::io::ErrorKind::PermissionDenied
                    && e.kind() != std::io::ErrorKind::AddrInUse =>
            {
                listen(SocketAddr::new(
                    std::net::Ipv4Addr::UNSPECIFIED.into(),
                    port,
                ))
                .map_err(explain)
            }
            Err(e) => Err(explain(e)),
        },
    }
}

/// Connections the kernel may hold completed for the accept loop. The default
/// (128) overflows in a reconnect storm, and on Linux the overflow is silent: the
/// client believes it is connected while the hub never sees the socket (with SYN
/// cookies it is forgotten outright). The kernel caps it at `net.core.somaxconn`.
const LISTEN_BACKLOG: u32 = 4096;

/// How often `hub.json` is checked for policy changes.
const POLICY_POLL: Duration = Duration::from_secs(1);

fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    // As std and tokio do: a restarted hub can bind while old connections linger.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Applies the policies of `hub.json` whenever the file changes (`twinhub policy
/// ...` or an edit by hand), until the hub stops. A file that does not parse or
/// check out is logged and ignored: the policies in force stay.
async fn watch_policies(data: DataDir, hub: Hub, mut stopped: watch::Receiver<bool>) {
    let mut stamp = data.hub_file_stamp();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(POLICY_POLL) => {}
            _ = stopped.changed() => return,
        }
        let now = data.hub_file_stamp();
        if now == stamp {
            continue;
        }
        stamp = now;
        let file = match data.read_hub_file() {
            Ok(file) => file,
            Err(error) => {
                tracing::error!(%error, "hub.json changed but cannot be applied; the policies in force stay");
                continue;
            }
        };
        if *hub.policies() == *file.policies {
            continue;
        }
        let names: Vec<&str> = file.policies.iter().map(|p| p.name.as_str()).collect();
        let closed = hub.set_policies(file.policies.clone());
        tracing::info!(
            policies = ?names,
            sessions_closed = closed,
            "shared access policies changed"
        );
    }
}

/// SIGINT and SIGTERM, listened for from the start, so that a signal arriving
/// while the hub starts is not lost (nor kills it without a clean stop).
struct ShutdownSignal {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl ShutdownSignal {
    fn install() -> Result<Self, String> {
        use tokio::signal::unix::{signal, SignalKind};
        let install = |kind| signal(kind).map_err(|e| format!("cannot handle signals: {e}"));
        Ok(Self {
            interrupt: install(SignalKind::interrupt())?,
            terminate: install(SignalKind::terminate())?,
        })
    }

    async fn recv(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}

/// Runs the hub until a shutdown signal.
pub(crate) async fn run(global: &Global, args: ServeArgs) -> Result<(), String> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let mut signals = ShutdownSignal::install()?;
    let data = DataDir::new(&global.data_dir);
    data.create()?;
    let hub_file = data.load_or_init(&args.hostnames, args.https_port, args.mqtts_port)?;
    let (chain, key) = tls::server_identity(
        &data,
        &hub_file.host_names,
        args.tls_cert.as_deref(),
        args.tls_key.as_deref(),
    )?;
    let https_tls = tls::server_config(chain.clone(), key.clone_key(), &[b"http/1.1"])?;
    let mqtts_tls = tls::server_config(chain, key, &[])?;

    let store = SqliteStore::open(&data.database()).map_err(|e| e.to_string())?;
    let config = HubConfig {
        host_names: hub_file.host_names.clone(),
        limits: twinhub_core::Limits::default(),
        policies: hub_file.policies.clone(),
    };
    let (hub, committer) = Hub::open(config, store).map_err(|e| e.to_string())?;

    let https = bind(args.bind, args.https_port, "--https-port").await?;
    let mqtts = bind(args.bind, args.mqtts_port, "--mqtts-port").await?;
    let insecure = match args.insecure_http_port {
        Some(port) => Some(bind(args.bind, port, "--insecure-http-port").await?),
        None => None,
    };
    let (stop, stopped) = watch::channel(false);
    let handshake_timeout = Duration::from_secs_f64(args.handshake_timeout);
    let mqtt_config = twinhub_mqtt::ServerConfig {
        tls_handshake_timeout: handshake_timeout,
        connect_timeout: handshake_timeout,
        max_unauthenticated: args.max_unauthenticated,
        ..twinhub_mqtt::ServerConfig::default()
    };
    let listener_config = twinhub_http::server::ListenerConfig {
        handshake_timeout,
        header_timeout: handshake_timeout,
        max_handshaking: args.max_unauthenticated,
    };
    let mqtt =
        twinhub_mqtt::MqttServer::with_config(Arc::new(HubBackend(hub.clone())), mqtt_config);
    let https_stats = Arc::new(twinhub_http::server::ListenerStats::default());
    let insecure_stats = Arc::new(twinhub_http::server::ListenerStats::default());
    let mut listeners = vec![("https", https_stats.clone())];
    if insecure.is_some() {
        listeners.push(("http", insecure_stats.clone()));
    }
    let app = twinhub_http::router(hub.clone())
        .merge(twinhub_http::websocket::router(mqtt.clone()))
        .merge(twinhub_http::metrics::router(
            twinhub_http::metrics::Sources {
                hub: hub.clone(),
                mqtt: mqtt.clone(),
                listeners,
            },
        ));
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(twinhub_http::server::serve(
        https,
        Some(tokio_rustls::TlsAcceptor::from(https_tls)),
        app.clone(),
        stopped.clone(),
        listener_config.clone(),
        https_stats,
    ));
    tasks.spawn({
        let mqtt = mqtt.clone();
        let tls = tokio_rustls::TlsAcceptor::from(mqtts_tls);
        let stopped = stopped.clone();
        async move { mqtt.serve(mqtts, Some(tls), stopped).await }
    });
    if let Some(listener) = insecure {
        tracing::warn!("serving the REST API over plain HTTP as well: credentials travel in clear");
        tasks.spawn(twinhub_http::server::serve(
            listener,
            None,
            app.clone(),
            stopped.clone(),
            listener_config,
            insecure_stats,
        ));
    }
    tasks.spawn(watch_policies(data.clone(), hub.clone(), stopped.clone()));
    // The listeners hold their own handles; this one would keep the committer
    // (and so the process) alive past shutdown.
    drop(app);
    tracing::info!(
        host = %hub.config().primary_host(),
        https_port = args.https_port,
        mqtts_port = args.mqtts_port,
        data_dir = %data.root().display(),
        "twinhub ready"
    );

    signals.recv().await;
    let started = Instant::now();
    tracing::info!("shutting down");
    // 1. Stop accepting; requests in flight finish, MQTT sessions flush and close.
    let _ = stop.send(true);
    mqtt.shutdown();
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while tasks.join_next().await.is_some() {}
        mqtt.closed().await;
    })
    .await;
    if drained.is_err() {
        tracing::warn!("connections still open after {DRAIN_TIMEOUT:?}; closing them");
    }
    // Aborts the connections that outlived the drain.
    drop(tasks);
    // 2. Refuse further writes and make everything queued durable. Handles of the
    // hub still held elsewhere (a task being aborted) do not delay this.
    match tokio::time::timeout(FLUSH_TIMEOUT, hub.close()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "the last commit failed"),
        Err(_) => tracing::error!("the last commit did not finish in {FLUSH_TIMEOUT:?}"),
    }
    drop(mqtt);
    drop(hub);
    // 3. The committer thread closes the database once the last handle is gone;
    // give it a moment, without waiting on a straggler (everything acknowledged
    // is durable already).
    let deadline = Instant::now() + CLOSE_TIMEOUT;
    while !committer.is_finished() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if committer.is_finished() {
        let _ = committer.join();
    }
    tracing::info!(took_ms = started.elapsed().as_millis() as u64, "stopped");
    Ok(())
}
