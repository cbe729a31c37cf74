//! `twinhub serve`: opens the store, starts the HTTPS (REST and MQTT over
//! WebSockets) and MQTT/TLS listeners, and shuts down gracefully on SIGINT/SIGTERM:
//! stop accepting, let requests in flight finish, commit what is queued, exit 0.

use crate::config::DataDir;
use crate::device_backend::HubBackend;
use crate::{tls, Global};
use clap::Args;
use std::net::{Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use twinhub_service::{Hub, HubConfig};
use twinhub_store::SqliteStore;

/// How long shutdown waits for requests in flight.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

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
        Some(ip) => TcpListener::bind(SocketAddr::new(ip, port))
            .await
            .map_err(explain),
        None => match TcpListener::bind((Ipv6Addr::UNSPECIFIED, port)).await {
            Ok(l) => Ok(l),
            // No IPv6 on this machine: IPv4 only.
            Err(e)
                if e.kind() != std::io::ErrorKind::PermissionDenied
                    && e.kind() != std::io::ErrorKind::AddrInUse =>
            {
                TcpListener::bind((std::net::Ipv4Addr::UNSPECIFIED, port))
                    .await
                    .map_err(explain)
            }
            Err(e) => Err(explain(e)),
        },
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
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
    let mqtt = twinhub_mqtt::MqttServer::new(std::sync::Arc::new(HubBackend(hub.clone())));
    let app =
        twinhub_http::router(hub.clone()).merge(twinhub_http::websocket::router(mqtt.clone()));
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(twinhub_http::server::serve(
        https,
        Some(tokio_rustls::TlsAcceptor::from(https_tls)),
        app.clone(),
        stopped.clone(),
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
        ));
    }
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

    shutdown_signal().await;
    tracing::info!("shutting down");
    let _ = stop.send(true);
    mqtt.shutdown();
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!("requests still in flight after {DRAIN_TIMEOUT:?}; stopping anyway");
    }
    drop(mqtt);
    drop(hub);
    // The committer finishes once the last hub handle is gone; connection tasks
    // that outlived the drain may still hold one, so do not wait forever.
    let joined = tokio::task::spawn_blocking(move || committer.join());
    if tokio::time::timeout(DRAIN_TIMEOUT, joined).await.is_err() {
        tracing::warn!("storage committer did not finish in time");
    }
    tracing::info!("stopped");
    Ok(())
}
