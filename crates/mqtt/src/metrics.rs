//! The MQTT endpoint's counters: connections not yet authenticated (and those
//! refused for being one too many), CONNACK codes, desired notifications sent, and
//! why connections ended. Read with [`MqttServer::metrics`](crate::MqttServer::metrics);
//! `twinhub_http::metrics` renders them.

use crate::packet::ConnectReturnCode;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// Why a connection ended, as counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The TLS handshake failed.
    TlsFailed,
    /// The TLS handshake did not complete in time.
    TlsTimeout,
    /// No CONNECT in time.
    ConnectTimeout,
    /// The first packet was not a well-formed CONNECT, or the stream ended first.
    ConnectInvalid,
    /// CONNECT refused with a CONNACK code.
    Refused,
    /// The client sent DISCONNECT or closed the stream.
    ClientClosed,
    /// A malformed or oversized packet.
    Malformed,
    /// A protocol rule or topic/filter authorization broken.
    Protocol,
    /// Keep-alive or SAS token expiry.
    Expired,
    /// Too slow: unacknowledged messages or a write backlog.
    SlowClient,
    /// A newer connection of the same identity replaced it.
    Replaced,
    /// The identity was disabled, deleted or re-keyed.
    Kicked,
    /// An I/O error on the stream.
    Io,
    /// Storage refused a session change, or another hub-side failure.
    HubError,
    /// The endpoint shut down.
    Shutdown,
}

impl CloseReason {
    /// Every reason, in the order of their counters.
    pub const ALL: [CloseReason; 15] = [
        Self::TlsFailed,
        Self::TlsTimeout,
        Self::ConnectTimeout,
        Self::ConnectInvalid,
        Self::Refused,
        Self::ClientClosed,
        Self::Malformed,
        Self::Protocol,
        Self::Expired,
        Self::SlowClient,
        Self::Replaced,
        Self::Kicked,
        Self::Io,
        Self::HubError,
        Self::Shutdown,
    ];

    /// A metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TlsFailed => "tls_failed",
            Self::TlsTimeout => "tls_timeout",
            Self::ConnectTimeout => "connect_timeout",
            Self::ConnectInvalid => "connect_invalid",
            Self::Refused => "refused",
            Self::ClientClosed => "client_closed",
            Self::Malformed => "malformed",
            Self::Protocol => "protocol",
            Self::Expired => "expired",
            Self::SlowClient => "slow_client",
            Self::Replaced => "replaced",
            Self::Kicked => "kicked",
            Self::Io => "io",
            Self::HubError => "hub_error",
            Self::Shutdown => "shutdown",
        }
    }

    fn index(self) -> usize {
        Self::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }
}

/// CONNACK return codes 0..=5, as counted.
pub const CONNACK_CODES: usize = 6;

#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Sockets accepted that have not completed TLS and CONNECT.
    pub(crate) unauthenticated: AtomicUsize,
    refused_unauthenticated: AtomicU64,
    connacks: [AtomicU64; CONNACK_CODES],
    desired_notifications: AtomicU64,
    closed: [AtomicU64; CloseReason::ALL.len()],
}

impl Counters {
    /// Admits a socket that is not authenticated yet, unless `max` of them are
    /// open already.
    pub(crate) fn admit(self: &Arc<Self>, max: usize) -> Option<Unauthenticated> {
        let admitted = self
            .unauthenticated
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok();
        if admitted {
            Some(Unauthenticated(Arc::clone(self)))
        } else {
            self.refused_unauthenticated.fetch_add(1, Ordering::Relaxed);
            None
        }
    }

    pub(crate) fn connack(&self, code: ConnectReturnCode) {
        let i = usize::from(code as u8).min(CONNACK_CODES - 1);
        self.connacks[i].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn desired_notification(&self) {
        self.desired_notifications.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn closed(&self, reason: CloseReason) {
        self.closed[reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self, live: usize) -> MqttMetrics {
        MqttMetrics {
            live_connections: live as u64,
            unauthenticated: self.unauthenticated.load(Ordering::Relaxed) as u64,
            refused_unauthenticated: self.refused_unauthenticated.load(Ordering::Relaxed),
            connacks: self.connacks.each_ref().map(|c| c.load(Ordering::Relaxed)),
            desired_notifications: self.desired_notifications.load(Ordering::Relaxed),
            closed: self.closed.each_ref().map(|c| c.load(Ordering::Relaxed)),
        }
    }
}

/// Counts one unauthenticated socket while it lives.
#[derive(Debug)]
pub(crate) struct Unauthenticated(Arc<Counters>);

impl Drop for Unauthenticated {
    fn drop(&mut self) {
        self.0.unauthenticated.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The MQTT endpoint's metrics at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MqttMetrics {
    /// Authenticated connections open now.
    pub live_connections: u64,
    /// Sockets open now that have not completed TLS and CONNECT.
    pub unauthenticated: u64,
    /// Sockets closed on arrival because the unauthenticated ones were at the cap.
    pub refused_unauthenticated: u64,
    /// CONNACKs sent, by return code (0 accepted .. 5 not authorized).
    pub connacks: [u64; CONNACK_CODES],
    /// Desired-property notifications sent to devices.
    pub desired_notifications: u64,
    /// Connections ended, by [`CloseReason::ALL`] index.
    pub closed: [u64; CloseReason::ALL.len()],
}
