//! The MQTT endpoint: [`MqttServer`], its accept loop, and the entry point for
//! streams accepted elsewhere (MQTT over WebSockets).

use crate::backend::DeviceBackend;
use crate::connection;
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
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            tls_handshake_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            max_packet_size: MAX_MESSAGE + PACKET_HEADROOM,
        }
    }
}

pub(crate) struct Shared {
    pub(crate) backend: Arc<dyn DeviceBackend>,
    pub(crate) registry: SessionRegistry,
    pub(crate) config: ServerConfig,
    /// Set to true to close every connection.
    pub(crate) shutdown: watch::Sender<bool>,
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
            }),
        }
    }

    /// Accepts connections on `listener` until `shutdown` becomes true (or its
    /// sender is dropped), then closes every connection of this endpoint. Each
    /// connection gets `TCP_NODELAY`, the TLS handshake when `tls` is given (IoT
    /// Hub has no plain MQTT; `None` is for tests and TLS-terminating proxies),
    /// and its own task.
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
            // Twin responses are small and latency-bound: do not let Nagle hold them.
            let _ = tcp.set_nodelay(true);
            let server = self.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                let Some(acceptor) = tls else {
                    server.serve_connection(tcp).await;
                    return;
                };
                let timeout = server.shared.config.tls_handshake_timeout;
                match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => server.serve_connection(stream).await,
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            });
        }
        self.shutdown();
    }

    /// Serves one MQTT connection over an already established byte stream (TLS,
    /// or a WebSocket wrapped in [`WsByteStream`](crate::WsByteStream)) until it
    /// ends. Runs on the caller's task.
    pub async fn serve_connection<S>(&self, stream: S)
    where
        S: AsyncRead + AsyncWrite + Send,
    {
        connection::run(&self.shared, stream).await;
    }

    /// Closes every connection of this endpoint, now and from now on.
    pub fn shutdown(&self) {
        self.shared.shutdown.send_replace(true);
    }

    /// Connections currently open and authenticated.
    pub fn live_connections(&self) -> usize {
        self.shared.registry.live()
    }

    /// Sessions held: live ones and the stored subscriptions of disconnected
    /// clean-session-0 clients.
    pub fn stored_sessions(&self) -> usize {
        self.shared.registry.stored()
    }
}
