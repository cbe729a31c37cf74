//! The MQTT endpoint: [`MqttServer`], its accept loop, and the entry point for
//! streams accepted elsewhere (MQTT over WebSockets).

use crate::backend::DeviceBackend;
use crate::connection;
use crate::metrics::{CloseReason, Counters, MqttMetrics};
use crate::registry::SessionRegistry;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

/// IoT Hub's largest device-to-cloud message.
const MAX_MESSAGE: usize = 256 * 1024;
/// Room for the topic, property bag and header around a maximal message.
const PACKET_HEADROOM: usize = 16 * 1024;

/// Limits and timeouts of the endpoint.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// How long a client may take to complete the TLS handshake.
    pub tls_handshake_timeout: Duration,
    /// How long a client may take, once its stream is open, to send CONNECT.
    pub connect_timeout: Duration,
    /// The largest packet accepted after CONNECT; a larger one closes the
    /// connection as soon as its header announces the size.
    pub max_packet_size: usize,
    /// The most connections open at once that have not completed TLS and an
    /// accepted CONNECT; a socket arriving beyond it is closed at once. Bounds
    /// what unauthenticated clients (a flood, or a reconnect storm) can make the
    /// hub hold: a TLS handshake's state and a task each.
    pub max_unauthenticated: usize,
}

/// The default [`ServerConfig::max_unauthenticated`]: well above what a burst of
/// honest reconnects needs (the hub completes a few thousand TLS handshakes and
/// CONNECTs a second, so 4096 clear within the handshake timeout), well below
/// what would cost real memory (about 60 MiB of handshake state).
pub const DEFAULT_MAX_UNAUTHENTICATED: usize = 4096;

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            tls_handshake_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            max_packet_size: MAX_MESSAGE + PACKET_HEADROOM,
            max_unauthenticated: DEFAULT_MAX_UNAUTHENTICATED,
        }
    }
}

pub(crate) struct Shared {
    pub(crate) backend: Arc<dyn DeviceBackend>,
    pub(crate) registry: SessionRegistry,
    pub(crate) config: ServerConfig,
    /// Set to true to close every connection.
    pub(crate) shutdown: watch::Sender<bool>,
    pub(crate) counters: Arc<Counters>,
    /// Connection tasks running, TLS handshakes included.
    tasks: watch::Sender<usize>,
}

/// Counts a connection task while it runs.
struct Task<'a>(&'a watch::Sender<usize>);

impl<'a> Task<'a> {
    fn start(tasks: &'a watch::Sender<usize>) -> Self {
        tasks.send_modify(|n| *n += 1);
        Self(tasks)
    }
}

impl Drop for Task<'_> {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

/// The MQTT device endpoint: a cheap-to-clone handle shared by the TLS listener
/// and the WebSocket route, so that both see one session registry (one live
/// connection per identity, whatever the transport).
#[derive(Clone)]
pub struct MqttServer {
    shared: Arc<Shared>,
}

impl MqttServer {
    /// An endpoint over `backend` with the default limits.
    pub fn new(backend: Arc<dyn DeviceBackend>) -> Self {
        Self::with_config(backend, ServerConfig::default())
    }

    /// An endpoint over `backend` with the given limits.
    pub fn with_config(backend: Arc<dyn DeviceBackend>, config: ServerConfig) -> Self {
        let (shutdown, _) = watch::channel(false);
        Self {
            shared: Arc::new(Shared {
                backend,
                registry: SessionRegistry::default(),
                config,
                shutdown,
                counters: Arc::default(),
                tasks: watch::channel(0).0,
            }),
        }
    }

    /// Accepts connections on `listener` until `shutdown` becomes true (or its
    /// sender is dropped), then closes every connection of this endpoint. Each
    /// connection gets `TCP_NODELAY`, the TLS handshake when `tls` is given (IoT
    /// Hub has no plain MQTT; `None` is for tests and TLS-terminating proxies),
    /// and its own task; beyond [`ServerConfig::max_unauthenticated`] sockets
    /// still authenticating, a new one is closed at once instead.
    pub async fn serve(
        &self,
        listener: TcpListener,
        tls: Option<TlsAcceptor>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        loop {
            if *shutdown.borrow_and_update() {
                break;
            }
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                changed = shutdown.changed() => match changed {
                    Ok(()) => continue,
                    Err(_) => break,
                },
            };
            let (tcp, peer) = match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and similar: back off instead of spinning.
                    tracing::warn!(error = %e, "MQTT accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Some(unauthenticated) = self
                .shared
                .counters
                .admit(self.shared.config.max_unauthenticated)
            else {
                // Closing costs nothing; the client retries later.
                tracing::debug!(%peer, "too many unauthenticated connections: closed");
                drop(tcp);
                continue;
            };
            // Twin responses are small and latency-bound: do not let Nagle hold them.
            let _ = tcp.set_nodelay(true);
            let server = self.clone();
            let tls = tls.clone();
            let mut stop = self.shared.shutdown.subscribe();
            tokio::spawn(async move {
                let shared = &server.shared;
                let _task = Task::start(&shared.tasks);
                let Some(acceptor) = tls else {
                    connection::run(shared, tcp, unauthenticated).await;
                    return;
                };
                let timeout = shared.config.tls_handshake_timeout;
                let handshake = tokio::select! {
                    handshake = tokio::time::timeout(timeout, acceptor.accept(tcp)) => handshake,
                    _ = stop.wait_for(|stop| *stop) => {
                        shared.counters.closed(CloseReason::Shutdown);
                        return;
                    }
                };
                match handshake {
                    Ok(Ok(stream)) => connection::run(shared, stream, unauthenticated).await,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        shared.counters.closed(CloseReason::TlsFailed);
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        shared.counters.closed(CloseReason::TlsTimeout);
                    }
                }
            });
        }
        drop(listener);
        self.shutdown();
    }

    /// Serves one MQTT connection over an already established byte stream (TLS,
    /// or a WebSocket wrapped in [`WsByteStream`](crate::WsByteStream)) until it
    /// ends. Runs on the caller's task. Counts among the unauthenticated
    /// connections until its CONNECT is accepted, and returns at once (dropping
    /// the stream) when they are at the cap.
    pub async fn serve_connection<S>(&self, stream: S)
    where
        S: AsyncRead + AsyncWrite + Send,
    {
        let shared = &self.shared;
        let _task = Task::start(&shared.tasks);
        let Some(unauthenticated) = shared.counters.admit(shared.config.max_unauthenticated) else {
            tracing::debug!("too many unauthenticated connections: closed");
            return;
        };
        connection::run(shared, stream, unauthenticated).await;
    }

    /// Closes every connection of this endpoint, now and from now on.
    pub fn shutdown(&self) {
        self.shared.shutdown.send_replace(true);
    }

    /// Resolves once no connection task of this endpoint runs (after
    /// [`MqttServer::shutdown`], within a second or so: each flushes what it has
    /// queued and closes).
    pub async fn closed(&self) {
        let mut tasks = self.shared.tasks.subscribe();
        let _ = tasks.wait_for(|n| *n == 0).await;
    }

    /// Connections currently open and authenticated.
    pub fn live_connections(&self) -> usize {
        self.shared.registry.live()
    }

    /// The endpoint's counters and gauges.
    pub fn metrics(&self) -> MqttMetrics {
        self.shared.counters.snapshot(self.shared.registry.live())
    }
}
