//! The HTTPS listener: TLS handshakes, HTTP/1.1 with upgrades (for MQTT over
//! WebSockets), and the limits that keep slow, idle or numerous clients from
//! holding the hub's sockets:
//!
//! - at most [`ListenerConfig::max_handshaking`] sockets still in the TLS
//!   handshake; beyond that a new socket is closed on arrival (and counted);
//! - a handshake timeout;
//! - hyper's header read timeout, which runs from the moment the connection
//!   waits for a request's head (right after the handshake, and again between
//!   keep-alive requests) until the head is complete: headers trickled a byte at
//!   a time (slowloris), or none at all, close the connection when it passes.

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

/// Limits of one listener.
#[derive(Debug, Clone)]
pub struct ListenerConfig {
    /// How long a client may take to complete the TLS handshake.
    pub handshake_timeout: Duration,
    /// How long a client may take to send a request's headers (slowloris defence).
    pub header_timeout: Duration,
    /// The most sockets at once that have not completed the TLS handshake.
    pub max_handshaking: usize,
}

impl Default for ListenerConfig {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(10),
            max_handshaking: 4096,
        }
    }
}

/// What a listener counts, for `GET /metrics`.
#[derive(Debug, Default)]
pub struct ListenerStats {
    handshaking: AtomicUsize,
    refused: AtomicU64,
    open: AtomicUsize,
    handshake_failures: AtomicU64,
}

/// A copy of [`ListenerStats`] at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerSnapshot {
    /// Sockets in the TLS handshake now.
    pub handshaking: u64,
    /// Sockets closed on arrival because the handshaking ones were at the cap.
    pub refused: u64,
    /// HTTP connections open now (after the handshake).
    pub open: u64,
    /// Handshakes that failed or timed out.
    pub handshake_failures: u64,
}

impl ListenerStats {
    /// The counts now.
    pub fn snapshot(&self) -> ListenerSnapshot {
        ListenerSnapshot {
            handshaking: self.handshaking.load(Ordering::Relaxed) as u64,
            refused: self.refused.load(Ordering::Relaxed),
            open: self.open.load(Ordering::Relaxed) as u64,
            handshake_failures: self.handshake_failures.load(Ordering::Relaxed),
        }
    }
}

/// Counts one socket in a gauge while it lives.
struct Gauge(Arc<ListenerStats>, fn(&ListenerStats) -> &AtomicUsize);

impl Gauge {
    fn open(stats: &Arc<ListenerStats>, which: fn(&ListenerStats) -> &AtomicUsize) -> Self {
        which(stats).fetch_add(1, Ordering::AcqRel);
        Self(Arc::clone(stats), which)
    }

    /// Opens one unless `max` are open.
    fn open_within(
        stats: &Arc<ListenerStats>,
        which: fn(&ListenerStats) -> &AtomicUsize,
        max: usize,
    ) -> Option<Self> {
        which(stats)
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        Some(Self(Arc::clone(stats), which))
    }
}

impl Drop for Gauge {
    fn drop(&mut self) {
        (self.1)(&self.0).fetch_sub(1, Ordering::AcqRel);
    }
}

/// Serves `app` on `listener`, over TLS when `tls` is given, until `shutdown`
/// becomes true; then closes the listening socket at once, lets the requests in
/// flight finish (idle connections close) and returns when every connection is
/// done. Dropping the returned future aborts the connections still open, which is
/// how a caller bounds a graceful shutdown.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    app: Router,
    mut shutdown: watch::Receiver<bool>,
    config: ListenerConfig,
    stats: Arc<ListenerStats>,
) {
    let config = Arc::new(config);
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            _ = shutdown.changed() => break,
        };
        let (tcp, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Out of file descriptors and similar: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(handshaking) =
            Gauge::open_within(&stats, |s| &s.handshaking, config.max_handshaking)
        else {
            stats.refused.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%peer, "too many TLS handshakes in progress: closed");
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let app = app.clone();
        let tls = tls.clone();
        let shutdown = shutdown.clone();
        let (config, stats) = (Arc::clone(&config), Arc::clone(&stats));
        connections.spawn(async move {
            match tls {
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(config.handshake_timeout, acceptor.accept(tcp)).await;
                    drop(handshaking);
                    match handshake {
                        Ok(Ok(stream)) => {
                            let _open = Gauge::open(&stats, |s| &s.open);
                            serve_connection(stream, app, shutdown, &config).await;
                        }
                        Ok(Err(e)) => {
                            stats.handshake_failures.fetch_add(1, Ordering::Relaxed);
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        }
                        Err(_) => {
                            stats.handshake_failures.fetch_add(1, Ordering::Relaxed);
                            tracing::debug!(%peer, "TLS handshake timed out");
                        }
                    }
                }
                None => {
                    drop(handshaking);
                    let _open = Gauge::open(&stats, |s| &s.open);
                    serve_connection(tcp, app, shutdown, &config).await;
                }
            }
        });
    }
    // New clients are refused from now on, not left in the backlog.
    drop(listener);
    while connections.join_next().await.is_some() {}
}

async fn serve_connection<S>(
    stream: S,
    app: Router,
    mut shutdown: watch::Receiver<bool>,
    config: &ListenerConfig,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = TowerToHyperService::new(tower::ServiceExt::map_request(
        app,
        crate::request::decode_encoded_slashes,
    ));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_timeout);
    let conn = builder
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(conn);
    if *shutdown.borrow_and_update() {
        conn.as_mut().graceful_shutdown();
    }
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "HTTP connection ended with an error");
            }
        }
        _ = shutdown.changed() => {
            // Finishes the request in flight, if any, then closes.
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}
