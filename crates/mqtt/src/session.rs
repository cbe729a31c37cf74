//! The MQTT session of one authenticated connection, as a pure state machine.
//!
//! No sockets, no clock, no tasks (the shape of `quinn-proto`): the driver pushes
//! in decoded packets, backend results and events, each with `now`; it pulls out
//! [`Action`]s (packets to send, twin requests to run) with
//! [`Session::poll_action`], and asks [`Session::poll_timeout`] when to call
//! [`Session::handle_timeout`]. Every rule that closes a connection returns a
//! [`Close`] saying why.
//!
//! Bounded state, whatever the client does: at most [`MAX_IN_FLIGHT`] QoS 1
//! messages awaiting PUBACK (their ids and send times, not their bytes), at most
//! [`MAX_QUEUED`] messages waiting for that window, and the actions produced by
//! the last input, which the driver drains after every call. A client that does
//! not acknowledge within [`ACK_TIMEOUT_SECS`], or lets the queue overflow, is
//! disconnected rather than buffered for.
//!
//! Outbound QoS 1 messages are not kept for redelivery on reconnect: the only
//! hub→device messages today are twin responses and desired notifications, which
//! IoT Hub does not queue for disconnected devices either (spec §2.4); clients
//! re-read the twin on reconnect.

use crate::backend::Identity;
use crate::packet::{ClientPacket, Publish, QoS, ServerPacket, Subscribe, Unsubscribe};
use bytes::Bytes;
use serde_json::Value;
use std::borrow::Cow;
use std::collections::VecDeque;
use twinhub_core::topic::{self, DeviceTopic, Filter};
use twinhub_core::{ErrorCode, HubError, Timestamp};

/// QoS 1 messages the hub may have unacknowledged on one connection.
pub const MAX_IN_FLIGHT: usize = 32;
/// QoS 1 messages that may wait for the in-flight window before the connection
/// is closed as congested.
pub const MAX_QUEUED: usize = 64;
/// How long a client may take to acknowledge a QoS 1 message.
pub const ACK_TIMEOUT_SECS: i64 = 60;
/// The most a keep-alive deadline can be: Azure's load balancer idle timeout.
const KEEP_ALIVE_CAP_SECS: i64 = 1767;
/// The least time between two [`Action::Activity`]s.
const ACTIVITY_INTERVAL_NANOS: i64 = 1_000_000_000;
/// The longest `$rid` echoed; the SDKs send 36-character UUIDs.
const MAX_RID_LEN: usize = 256;
const NANOS: i64 = 1_000_000_000;

/// What a connection is subscribed to: the granted QoS per supported filter.
/// Five fields, since IoT Hub has five filters per identity (spec §2.7).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Subscriptions {
    /// `$iothub/twin/res/#`.
    pub twin_responses: Option<QoS>,
    /// `$iothub/twin/PATCH/properties/desired/#`.
    pub desired: Option<QoS>,
    /// `$iothub/methods/POST/#`.
    pub methods: Option<QoS>,
    /// `devices/{id}/messages/devicebound/#`.
    pub cloud_to_device: Option<QoS>,
    /// `devices/{id}/modules/{mid}/inputs/#`.
    pub module_inputs: Option<QoS>,
}

impl Subscriptions {
    /// Whether nothing is subscribed.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// The topic filters of `identity` these subscriptions stand for, with their
    /// granted QoS: the form in which the hub stores them.
    pub fn filters(&self, identity: &Identity) -> Vec<(String, QoS)> {
        let device_id = identity.device_id.as_str();
        let module = identity.module_id.as_deref();
        let mut out = Vec::new();
        let mut push = |qos: Option<QoS>, filter: Option<Filter<'_>>| {
            if let (Some(qos), Some(filter)) = (qos, filter) {
                out.push((filter.to_filter(), qos));
            }
        };
        push(self.twin_responses, Some(Filter::TwinResponses));
        push(self.desired, Some(Filter::DesiredPatches));
        push(self.methods, Some(Filter::MethodRequests));
        push(
            self.cloud_to_device,
            module
                .is_none()
                .then_some(Filter::CloudToDevice { device_id }),
        );
        push(
            self.module_inputs,
            module.map(|module_id| Filter::ModuleInputs {
                device_id,
                module_id,
            }),
        );
        out
    }

    /// The subscriptions stored as `filters` for `identity`. Filters that are not
    /// this identity's (which a SUBSCRIBE could never have granted) are skipped,
    /// and QoS is capped at 1.
    pub fn from_filters<'f>(
        identity: &Identity,
        filters: impl IntoIterator<Item = (&'f str, QoS)>,
    ) -> Self {
        let mut subscriptions = Self::default();
        for (filter, qos) in filters {
            if let Some(kind) = filter_kind(identity, filter) {
                *subscriptions.slot(kind) = Some(qos.min(QoS::AtLeastOnce));
            }
        }
        subscriptions
    }

    fn slot(&mut self, kind: FilterKind) -> &mut Option<QoS> {
        match kind {
            FilterKind::TwinResponses => &mut self.twin_responses,
            FilterKind::Desired => &mut self.desired,
            FilterKind::Methods => &mut self.methods,
            FilterKind::CloudToDevice => &mut self.cloud_to_device,
            FilterKind::ModuleInputs => &mut self.module_inputs,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FilterKind {
    TwinResponses,
    Desired,
    Methods,
    CloudToDevice,
    ModuleInputs,
}

/// Which of `identity`'s subscriptions a filter names, if any.
fn filter_kind(identity: &Identity, filter: &str) -> Option<FilterKind> {
    let own_device = |d: &str| d == identity.device_id;
    match Filter::parse(filter).ok()? {
        Filter::TwinResponses => Some(FilterKind::TwinResponses),
        Filter::DesiredPatches => Some(FilterKind::Desired),
        Filter::MethodRequests => Some(FilterKind::Methods),
        Filter::CloudToDevice { device_id }
            if own_device(device_id) && identity.module_id.is_none() =>
        {
            Some(FilterKind::CloudToDevice)
        }
        Filter::ModuleInputs {
            device_id,
            module_id,
        } if own_device(device_id) && identity.module_id.as_deref() == Some(module_id) => {
            Some(FilterKind::ModuleInputs)
        }
        Filter::CloudToDevice { .. } | Filter::ModuleInputs { .. } => None,
    }
}

/// Something the driver must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Write a packet to the client.
    Send(ServerPacket),
    /// Read the twin and report back with [`Session::twin_read`].
    GetTwin {
        /// The request id to answer.
        rid: String,
    },
    /// Apply a reported patch and report back with [`Session::reported_patched`].
    PatchReported {
        /// The request id to answer.
        rid: String,
        /// The parsed patch (any JSON; the backend checks it is an object).
        patch: Value,
        /// The `$version` precondition, if the device sent one.
        version: Option<i64>,
    },
    /// The subscriptions changed; persist them for a clean-session-0 reconnect.
    /// Comes right before the SUBACK or UNSUBACK that confirms the change, so a
    /// driver can hold that acknowledgement until the change is durable.
    SubscriptionsChanged(Subscriptions),
    /// The device was active (throttled), for `lastActivityTime`.
    Activity,
    /// The device answered a direct method request.
    MethodResponse {
        /// The request id the hub gave the request.
        rid: String,
        /// The status from the topic.
        status: i32,
        /// The body as the device sent it.
        body: Bytes,
    },
}

/// Why a session ended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Close {
    /// The client sent DISCONNECT.
    #[error("client disconnected")]
    Disconnected,
    /// The client broke an MQTT or IoT Hub protocol rule.
    #[error("protocol violation: {0}")]
    Protocol(Cow<'static, str>),
    /// A PUBLISH to another identity's topic or to no IoT Hub topic.
    #[error("publish to a topic this identity may not use: {0}")]
    ForbiddenTopic(String),
    /// A SUBSCRIBE to an unsupported filter or another identity's.
    #[error("subscription filter not supported for this identity: {0}")]
    ForbiddenFilter(String),
    /// Nothing received within 1.5 times the keep-alive ([MQTT-3.1.2-24]).
    #[error("keep-alive expired")]
    KeepAliveTimeout,
    /// The SAS token's `se` passed.
    #[error("SAS token expired")]
    TokenExpired,
    /// A QoS 1 message stayed unacknowledged for [`ACK_TIMEOUT_SECS`].
    #[error("QoS 1 message not acknowledged in time")]
    AckTimeout,
    /// More than [`MAX_QUEUED`] messages waited for acknowledgements.
    #[error("client does not acknowledge fast enough")]
    Congested,
}

/// What a session starts from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionParams {
    /// The authenticated identity.
    pub identity: Identity,
    /// The CONNECT's keep-alive, seconds (0: none).
    pub keep_alive: u16,
    /// When the SAS token expires, Unix seconds.
    pub token_expiry: i64,
    /// Subscriptions restored from a stored session.
    pub subscriptions: Subscriptions,
    /// A number unique to this connection, for error responses' `trackingId`.
    pub tracking_id: u64,
}

/// The session state of one connection.
#[derive(Debug)]
pub struct Session {
    identity: Identity,
    subscriptions: Subscriptions,
    keep_alive_nanos: Option<i64>,
    last_packet: Timestamp,
    token_expiry: Timestamp,
    in_flight: VecDeque<(u16, Timestamp)>,
    queued: VecDeque<Publish>,
    next_packet_id: u16,
    actions: VecDeque<Action>,
    last_activity: Option<Timestamp>,
    tracking_id: u64,
    errors_sent: u64,
}

fn after(t: Timestamp, nanos: i64) -> Timestamp {
    Timestamp::from_unix_nanos(t.unix_nanos().saturating_add(nanos))
}

impl Session {
    /// A session that was just accepted at `now`.
    pub fn new(params: SessionParams, now: Timestamp) -> Self {
        let keep_alive_nanos = (params.keep_alive > 0).then(|| {
            (i64::from(params.keep_alive) * 3 * NANOS / 2).min(KEEP_ALIVE_CAP_SECS * NANOS)
        });
        Self {
            identity: params.identity,
            subscriptions: params.subscriptions,
            keep_alive_nanos,
            last_packet: now,
            token_expiry: Timestamp::from_unix_secs(params.token_expiry),
            in_flight: VecDeque::new(),
            queued: VecDeque::new(),
            next_packet_id: 1,
            actions: VecDeque::new(),
            last_activity: None,
            tracking_id: params.tracking_id,
            errors_sent: 0,
        }
    }

    /// The identity this session speaks for.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The current subscriptions.
    pub fn subscriptions(&self) -> Subscriptions {
        self.subscriptions
    }

    /// The next thing to do, in order. Drain after every input.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Whether the driver should hand over backend events now. False while
    /// messages wait for the in-flight window: further events then stay in the
    /// backend's channel instead of piling up here.
    pub fn accepts_events(&self) -> bool {
        self.queued.is_empty()
    }

    /// QoS 1 messages awaiting PUBACK.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// The earliest instant at which [`Session::handle_timeout`] may close the
    /// session. Calling it earlier is harmless.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        let keep_alive = self.keep_alive_nanos.map(|ka| after(self.last_packet, ka));
        let ack = self
            .in_flight
            .front()
            .map(|(_, sent)| after(*sent, ACK_TIMEOUT_SECS * NANOS));
        [Some(self.token_expiry), keep_alive, ack]
            .into_iter()
            .flatten()
            .min()
    }

    /// Checks the deadlines at `now`.
    pub fn handle_timeout(&mut self, now: Timestamp) -> Result<(), Close> {
        if now >= self.token_expiry {
            return Err(Close::TokenExpired);
        }
        if let Some(ka) = self.keep_alive_nanos {
            if now >= after(self.last_packet, ka) {
                return Err(Close::KeepAliveTimeout);
            }
        }
        if let Some((_, sent)) = self.in_flight.front() {
            if now >= after(*sent, ACK_TIMEOUT_SECS * NANOS) {
                return Err(Close::AckTimeout);
            }
        }
        Ok(())
    }

    /// Handles a packet from the client.
    pub fn handle_packet(&mut self, packet: ClientPacket, now: Timestamp) -> Result<(), Close> {
        // Any packet counts for keep-alive, not only PINGREQ ([MQTT-3.1.2-23]).
        self.last_packet = now;
        if self
            .last_activity
            .is_none_or(|t| now.unix_nanos() - t.unix_nanos() >= ACTIVITY_INTERVAL_NANOS)
        {
            self.last_activity = Some(now);
            self.actions.push_back(Action::Activity);
        }
        match packet {
            ClientPacket::Connect(_) => Err(Close::Protocol(
                "[MQTT-3.1.0-2] a second CONNECT on a connection".into(),
            )),
            ClientPacket::Publish(p) => self.on_publish(p, now),
            ClientPacket::PubAck(id) => {
                self.on_puback(id, now);
                Ok(())
            }
            ClientPacket::Subscribe(s) => self.on_subscribe(s),
            ClientPacket::Unsubscribe(u) => {
                self.on_unsubscribe(u);
                Ok(())
            }
            ClientPacket::PingReq => {
                self.actions.push_back(Action::Send(ServerPacket::PingResp));
                Ok(())
            }
            ClientPacket::Disconnect => Err(Close::Disconnected),
        }
    }

    fn on_publish(&mut self, p: Publish, now: Timestamp) -> Result<(), Close> {
        if p.qos == QoS::ExactlyOnce {
            return Err(Close::Protocol(
                "QoS 2 PUBLISH: IoT Hub closes the connection".into(),
            ));
        }
        let forbidden = || Close::ForbiddenTopic(p.topic.clone());
        let parsed = match DeviceTopic::parse(&p.topic) {
            Ok(parsed) => parsed,
            // A method answer whose status is not a number answers nothing the
            // hub can use; it is dropped, not a reason to disconnect (fleet §1.3).
            Err(topic::TopicError::BadStatus) if p.topic.starts_with(topic::METHODS_RES) => {
                if p.qos == QoS::AtLeastOnce {
                    self.actions
                        .push_back(Action::Send(ServerPacket::PubAck(p.packet_id)));
                }
                return Ok(());
            }
            Err(_) => return Err(forbidden()),
        };
        if let DeviceTopic::TwinGet { rid }
        | DeviceTopic::ReportedPatch { rid, .. }
        | DeviceTopic::MethodResponse { rid, .. } = parsed
        {
            if rid.len() > MAX_RID_LEN {
                return Err(Close::Protocol("$rid longer than 256 bytes".into()));
            }
        }
        if let DeviceTopic::Telemetry {
            device_id,
            module_id,
            ..
        } = parsed
        {
            if device_id != self.identity.device_id
                || module_id != self.identity.module_id.as_deref()
            {
                return Err(forbidden());
            }
        }
        // Acknowledge on receipt: the request is accepted, its answer comes on the
        // response topic. Telemetry is accepted and dropped (routing is out of scope).
        if p.qos == QoS::AtLeastOnce {
            self.actions
                .push_back(Action::Send(ServerPacket::PubAck(p.packet_id)));
        }
        match parsed {
            DeviceTopic::TwinGet { rid } => {
                self.actions.push_back(Action::GetTwin { rid: rid.into() });
            }
            DeviceTopic::ReportedPatch { rid, version } => {
                match serde_json::from_slice::<Value>(&p.payload) {
                    Ok(patch) => self.actions.push_back(Action::PatchReported {
                        rid: rid.into(),
                        patch,
                        version,
                    }),
                    Err(e) => {
                        let error = HubError::new(
                            ErrorCode::IotHubFormatError,
                            format!("The reported-properties patch is not JSON: {e}"),
                        );
                        self.twin_error(rid, &error, now)?;
                    }
                }
            }
            DeviceTopic::MethodResponse { status, rid } => {
                self.actions.push_back(Action::MethodResponse {
                    rid: rid.into(),
                    status,
                    body: p.payload,
                });
            }
            DeviceTopic::Telemetry { .. } => {}
        }
        Ok(())
    }

    fn on_puback(&mut self, id: u16, now: Timestamp) {
        // An unknown id is ignored: it can only be a late duplicate.
        if let Some(i) = self.in_flight.iter().position(|(pid, _)| *pid == id) {
            self.in_flight.remove(i);
        }
        while self.in_flight.len() < MAX_IN_FLIGHT {
            let Some(p) = self.queued.pop_front() else {
                break;
            };
            self.send_qos1(p, now);
        }
    }

    fn on_subscribe(&mut self, s: Subscribe) -> Result<(), Close> {
        // IoT Hub disconnects on a filter it does not support instead of granting
        // 0x80 (spec §2.6); the SDKs only use supported ones.
        let mut subscriptions = self.subscriptions;
        let mut granted = Vec::with_capacity(s.filters.len());
        for (filter, requested) in &s.filters {
            let kind = filter_kind(&self.identity, filter)
                .ok_or_else(|| Close::ForbiddenFilter(filter.clone()))?;
            let qos = (*requested).min(QoS::AtLeastOnce);
            *subscriptions.slot(kind) = Some(qos);
            granted.push(Some(qos));
        }
        self.subscriptions = subscriptions;
        self.actions
            .push_back(Action::SubscriptionsChanged(subscriptions));
        self.actions.push_back(Action::Send(ServerPacket::SubAck {
            packet_id: s.packet_id,
            granted,
        }));
        Ok(())
    }

    fn on_unsubscribe(&mut self, u: Unsubscribe) {
        // UNSUBACK is due even when nothing matched ([MQTT-3.10.4-5]).
        let before = self.subscriptions;
        for filter in &u.filters {
            if let Some(kind) = filter_kind(&self.identity, filter) {
                *self.subscriptions.slot(kind) = None;
            }
        }
        if self.subscriptions != before {
            self.actions
                .push_back(Action::SubscriptionsChanged(self.subscriptions));
        }
        self.actions
            .push_back(Action::Send(ServerPacket::UnsubAck(u.packet_id)));
    }

    /// The result of an [`Action::GetTwin`]: 200 with the twin, or an error.
    pub fn twin_read(
        &mut self,
        rid: &str,
        result: Result<Value, HubError>,
        now: Timestamp,
    ) -> Result<(), Close> {
        match result {
            Ok(twin) => {
                let body = serde_json::to_vec(&twin).unwrap_or_default();
                self.twin_response(200, rid, None, Bytes::from(body), now)
            }
            Err(e) => self.twin_error(rid, &e, now),
        }
    }

    /// The result of an [`Action::PatchReported`]: 204 with the new `$version`
    /// in the topic and an empty body (spec §3.2), or an error.
    pub fn reported_patched(
        &mut self,
        rid: &str,
        result: Result<i64, HubError>,
        now: Timestamp,
    ) -> Result<(), Close> {
        match result {
            Ok(version) => self.twin_response(204, rid, Some(version), Bytes::new(), now),
            Err(e) => self.twin_error(rid, &e, now),
        }
    }

    /// A desired-properties change: notifies the client if it subscribed.
    pub fn desired_changed(
        &mut self,
        version: i64,
        payload: &Value,
        now: Timestamp,
    ) -> Result<(), Close> {
        let Some(granted) = self.subscriptions.desired else {
            return Ok(());
        };
        let body = serde_json::to_vec(payload).unwrap_or_default();
        self.deliver(
            topic::desired_patch_topic(version),
            Bytes::from(body),
            granted,
            now,
        )
    }

    /// A direct method request: delivered at QoS 0 (IoT Hub's method requests are
    /// QoS 0) if the client subscribed to `$iothub/methods/POST/#`, else dropped
    /// (the caller then times out, as with a device that has no handler).
    pub fn method_request(&mut self, name: &str, rid: &str, payload: &str, now: Timestamp) {
        if self.subscriptions.methods.is_none() {
            return;
        }
        let topic = topic::HubTopic::MethodRequest { name, rid }.to_topic();
        let body = Bytes::copy_from_slice(payload.as_bytes());
        // QoS 0 never waits for the in-flight window, so it cannot be refused.
        let _ = self.deliver(topic, body, QoS::AtMostOnce, now);
    }

    /// A twin error: IoT Hub's JSON body (spec §3.4). Node treats a response as an
    /// error only when the body has a truthy `errorCode`, so the body is never empty.
    fn twin_error(&mut self, rid: &str, error: &HubError, now: Timestamp) -> Result<(), Close> {
        self.errors_sent += 1;
        let body = serde_json::json!({
            "errorCode": error.code.code(),
            "trackingId": format!("{:016x}{:016x}", self.tracking_id, self.errors_sent),
            "message": error.message,
            "timestampUtc": now.to_iso(),
        });
        let body = serde_json::to_vec(&body).unwrap_or_default();
        self.twin_response(error.code.http_status(), rid, None, Bytes::from(body), now)
    }

    fn twin_response(
        &mut self,
        status: u16,
        rid: &str,
        version: Option<i64>,
        body: Bytes,
        now: Timestamp,
    ) -> Result<(), Close> {
        // Delivered even without a `$iothub/twin/res/#` subscription (spec §3.5):
        // Python sends its first GET before subscribing and waits for the answer.
        let qos = self.subscriptions.twin_responses.unwrap_or(QoS::AtMostOnce);
        let topic = topic::twin_response_topic(status, rid, version);
        self.deliver(topic, body, qos, now)
    }

    fn deliver(
        &mut self,
        topic: String,
        payload: Bytes,
        granted: QoS,
        now: Timestamp,
    ) -> Result<(), Close> {
        let qos = granted.min(QoS::AtLeastOnce);
        let publish = Publish {
            dup: false,
            qos,
            retain: false,
            topic,
            packet_id: 0,
            payload,
        };
        if qos == QoS::AtMostOnce {
            self.actions
                .push_back(Action::Send(ServerPacket::Publish(publish)));
        } else if self.in_flight.len() < MAX_IN_FLIGHT && self.queued.is_empty() {
            self.send_qos1(publish, now);
        } else if self.queued.len() < MAX_QUEUED {
            self.queued.push_back(publish);
        } else {
            return Err(Close::Congested);
        }
        Ok(())
    }

    fn send_qos1(&mut self, mut publish: Publish, now: Timestamp) {
        publish.packet_id = self.allocate_packet_id();
        self.in_flight.push_back((publish.packet_id, now));
        self.actions
            .push_back(Action::Send(ServerPacket::Publish(publish)));
    }

    fn allocate_packet_id(&mut self) -> u16 {
        // At most MAX_IN_FLIGHT ids are taken, so a free one is found quickly.
        loop {
            let id = self.next_packet_id;
            self.next_packet_id = id.checked_add(1).unwrap_or(1);
            if !self.in_flight.iter().any(|(taken, _)| *taken == id) {
                return id;
            }
        }
    }
}

#[cfg(test)]
mod tests;
