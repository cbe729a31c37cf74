//! `GET /metrics`: the hub's counters and gauges as Prometheus text (format
//! 0.0.4), the one place where they are named.
//!
//! Each layer counts what only it sees — the service layer acknowledged writes
//! and storage ([`twinhub_service::HubMetrics`]), the MQTT endpoint its
//! connections ([`twinhub_mqtt::MqttMetrics`]), each HTTPS listener its sockets
//! ([`ListenerStats`]) — and this module reads them all at scrape time.
//!
//! Access takes a SAS token of a policy with RegistryRead or ServiceConnect (every
//! built-in policy but `device`): the figures say how many devices exist and are
//! connected, which is what `GET /statistics/devices` (RegistryRead) and
//! `/statistics/service` (ServiceConnect) disclose. Prometheus sends the token with
//! `authorization: { type: SharedAccessSignature, credentials: "sr=...&sig=...&se=...&skn=..." }`.

use crate::request::authorize;
use crate::server::ListenerStats;
use crate::ApiError;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::fmt::Write;
use std::sync::Arc;
use twinhub_core::policy::Permission;
use twinhub_core::HubError;
use twinhub_mqtt::{CloseReason, MqttMetrics, MqttServer};
use twinhub_service::metrics::BATCH_BUCKETS;
use twinhub_service::{Hub, HubMetrics};

/// The path.
pub const PATH: &str = "/metrics";

/// Where the figures come from.
#[derive(Clone)]
pub struct Sources {
    /// The hub.
    pub hub: Hub,
    /// The MQTT endpoint (TLS and WebSockets).
    pub mqtt: MqttServer,
    /// The HTTP listeners, by name (`https`, `http`).
    pub listeners: Vec<(&'static str, Arc<ListenerStats>)>,
}

/// The `/metrics` route, to merge into the REST router.
pub fn router(sources: Sources) -> Router {
    Router::new()
        .route(PATH, get(metrics))
        .with_state(Arc::new(sources))
}

async fn metrics(
    State(sources): State<Arc<Sources>>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(
        &sources.hub,
        &headers,
        &uri,
        &[Permission::RegistryRead, Permission::ServiceConnect],
    )?;
    // Counting devices walks every shard: not on a runtime worker.
    let hub = sources.hub.clone();
    let hub_metrics = tokio::task::spawn_blocking(move || hub.metrics())
        .await
        .map_err(|e| HubError::new(twinhub_core::ErrorCode::ServerError, e.to_string()))?;
    let text = render(&hub_metrics, &sources.mqtt.metrics(), &sources.listeners);
    let mut response = text.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    Ok(response)
}

/// Prometheus text for one metric family.
struct Family<'a> {
    out: &'a mut String,
}

impl Family<'_> {
    fn head(&mut self, name: &str, kind: &str, help: &str) -> &mut Self {
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        self
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{v}\"");
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    fn one(&mut self, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
        self.head(name, kind, help).sample(name, &[], value);
    }
}

/// The resident set size of this process, from `/proc/self/status` (Linux).
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// A listener metric: name, type, help, and how to read it.
type ListenerFamily = (
    &'static str,
    &'static str,
    &'static str,
    fn(&crate::server::ListenerSnapshot) -> u64,
);

/// The Prometheus text of every metric.
pub fn render(
    hub: &HubMetrics,
    mqtt: &MqttMetrics,
    listeners: &[(&'static str, Arc<ListenerStats>)],
) -> String {
    let mut out = String::with_capacity(8 * 1024);
    let mut f = Family { out: &mut out };

    f.one(
        "twinhub_devices",
        "gauge",
        "Devices in the identity registry.",
        hub.devices,
    );
    f.one(
        "twinhub_devices_connected",
        "gauge",
        "Devices with a live MQTT session.",
        hub.devices_connected,
    );
    f.one(
        "twinhub_reported_patches_total",
        "counter",
        "Reported-property patches acknowledged (durable).",
        hub.reported_patches,
    );
    f.one(
        "twinhub_desired_changes_total",
        "counter",
        "Desired-property changes committed and published to the device's sessions.",
        hub.desired_changes,
    );
    f.one(
        "twinhub_session_kicks_total",
        "counter",
        "Session closes published because a device was disabled, deleted or re-keyed.",
        hub.kicks,
    );
    f.one(
        "twinhub_methods_invoked_total",
        "counter",
        "Direct method requests delivered to a device's session.",
        hub.methods_invoked,
    );
    f.one(
        "twinhub_methods_timed_out_total",
        "counter",
        "Direct method requests not answered within their response timeout.",
        hub.methods_timed_out,
    );
    f.one(
        "twinhub_methods_pending",
        "gauge",
        "Direct method calls waiting for the device's answer.",
        hub.methods_pending,
    );

    let s = &hub.storage;
    f.one(
        "twinhub_storage_commits_total",
        "counter",
        "Storage transactions (group commits), failed ones included.",
        s.commits,
    );
    f.one(
        "twinhub_storage_failures_total",
        "counter",
        "Failed group commits; after one the hub refuses writes until restarted.",
        s.failures,
    );
    f.one(
        "twinhub_storage_mutations_total",
        "counter",
        "Records written or deleted (the last write of a key within a commit).",
        s.mutations,
    );
    f.one(
        "twinhub_storage_commit_seconds_total",
        "counter",
        "Time spent in group commits (fsync included).",
        format_args!("{:.6}", s.commit_micros as f64 / 1e6),
    );
    let name = "twinhub_storage_batch_writes";
    f.head(
        name,
        "histogram",
        "Writes (acknowledged units of work) per group commit.",
    );
    for (bound, count) in BATCH_BUCKETS.iter().zip(s.batches) {
        f.sample(
            "twinhub_storage_batch_writes_bucket",
            &[("le", &bound.to_string())],
            count,
        );
    }
    f.sample(
        "twinhub_storage_batch_writes_bucket",
        &[("le", "+Inf")],
        s.commits,
    );
    f.sample("twinhub_storage_batch_writes_sum", &[], s.jobs);
    f.sample("twinhub_storage_batch_writes_count", &[], s.commits);

    f.one(
        "twinhub_mqtt_sessions_stored",
        "gauge",
        "Stored clean-session-0 MQTT sessions (subscriptions kept across connections and restarts).",
        hub.stored_sessions,
    );
    f.one(
        "twinhub_mqtt_connections",
        "gauge",
        "Authenticated MQTT connections open (TLS and WebSockets).",
        mqtt.live_connections,
    );
    f.one(
        "twinhub_mqtt_unauthenticated_connections",
        "gauge",
        "MQTT sockets open that have not completed TLS and an accepted CONNECT.",
        mqtt.unauthenticated,
    );
    f.one(
        "twinhub_mqtt_refused_connections_total",
        "counter",
        "MQTT sockets closed on arrival: unauthenticated ones were at the cap.",
        mqtt.refused_unauthenticated,
    );
    f.head(
        "twinhub_mqtt_connacks_total",
        "counter",
        "CONNACKs sent, by return code (0 accepted, 3 server unavailable, 5 not authorized).",
    );
    for (code, count) in mqtt.connacks.iter().enumerate() {
        f.sample(
            "twinhub_mqtt_connacks_total",
            &[("code", &code.to_string())],
            count,
        );
    }
    f.head(
        "twinhub_mqtt_connections_closed_total",
        "counter",
        "MQTT connections ended, by reason.",
    );
    for (reason, count) in CloseReason::ALL.iter().zip(mqtt.closed) {
        f.sample(
            "twinhub_mqtt_connections_closed_total",
            &[("reason", reason.as_str())],
            count,
        );
    }
    f.one(
        "twinhub_mqtt_desired_notifications_total",
        "counter",
        "Desired-property notifications sent to subscribed devices.",
        mqtt.desired_notifications,
    );

    let families: [ListenerFamily; 4] = [
        (
            "twinhub_http_handshaking_connections",
            "gauge",
            "Sockets in the TLS handshake.",
            |l| l.handshaking,
        ),
        (
            "twinhub_http_connections",
            "gauge",
            "HTTP connections open after the handshake (WebSockets handed to MQTT excluded).",
            |l| l.open,
        ),
        (
            "twinhub_http_refused_connections_total",
            "counter",
            "Sockets closed on arrival: TLS handshakes in progress were at the cap.",
            |l| l.refused,
        ),
        (
            "twinhub_http_handshake_failures_total",
            "counter",
            "TLS handshakes that failed or timed out.",
            |l| l.handshake_failures,
        ),
    ];
    let snapshots: Vec<_> = listeners
        .iter()
        .map(|(name, stats)| (*name, stats.snapshot()))
        .collect();
    for (name, kind, help, value) in families {
        f.head(name, kind, help);
        for (listener, snapshot) in &snapshots {
            f.sample(name, &[("listener", listener)], value(snapshot));
        }
    }

    if let Some(rss) = resident_bytes() {
        f.one(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            rss,
        );
    }
    out
}
