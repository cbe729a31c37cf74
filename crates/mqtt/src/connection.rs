//! One connection's task: the CONNECT handshake, then a loop that moves bytes,
//! backend results and events through the pure [`Session`].
//!
//! One task per connection and nothing else: it owns both halves of the stream
//! and `select!`s over reading, writing, the backend's events, pending reported
//! patches, the session's deadline, a kick from a newer connection and shutdown.
//! Writes go through a bounded buffer ([`MAX_WRITE_BACKLOG`]) flushed whenever the
//! socket accepts bytes, so a client that stops reading cannot stall the task
//! (its deadlines still fire) nor grow memory without bound.
//!
//! Per idle connection this holds the session (a few hundred bytes), a small read
//! buffer and the task itself; buffers that grew for a large packet are released
//! once it is handled.

use crate::backend::{DeviceEvent, DeviceEvents, Identity};
use crate::connect::{self, Login};
use crate::decode::{decode, DecodeError};
use crate::encode::{encode, EncodeError};
use crate::metrics::{CloseReason, Unauthenticated};
use crate::packet::{ClientPacket, Connect, ConnectReturnCode, ServerPacket};
use crate::registry::Saving;
use crate::server::Shared;
use crate::session::{Action, Close, Session, SessionParams};
use bytes::BytesMut;
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesOrdered;
use futures_util::{FutureExt, StreamExt};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;
use twinhub_core::{HubError, Timestamp};

/// CONNECT packets are small (a username and a SAS token); a lower limit than
/// for later packets keeps unauthenticated clients from making the hub buffer much.
const MAX_CONNECT_PACKET: usize = 16 * 1024;
/// Bytes queued for a client that is not reading before it is disconnected.
pub const MAX_WRITE_BACKLOG: usize = 1024 * 1024;
/// Reported patches waiting for durability before the connection stops reading.
pub const MAX_PENDING_PATCHES: usize = 16;
/// The least to read at a time. A partly buffered packet gets room for all of
/// its announced size at once instead.
const READ_CHUNK: usize = 1024;
/// Buffers larger than this are dropped once empty, so a single large packet
/// does not pin memory for the rest of the connection.
const KEEP_BUFFER: usize = 16 * 1024;
/// How long a closing connection may take to flush what is queued.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Wall-clock time derived from tokio's monotonic clock, so that deadlines follow
/// `tokio::time::pause` in tests and a wall-clock step cannot fire them early.
#[derive(Debug, Clone, Copy)]
struct Clock {
    wall: Timestamp,
    mono: Instant,
}

impl Clock {
    fn start() -> Self {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
        Self {
            wall: Timestamp::from_unix_nanos(wall),
            mono: Instant::now(),
        }
    }

    fn now(&self) -> Timestamp {
        let elapsed = i64::try_from(self.mono.elapsed().as_nanos()).unwrap_or(i64::MAX);
        Timestamp::from_unix_nanos(self.wall.unix_nanos().saturating_add(elapsed))
    }

    fn instant(&self, t: Timestamp) -> Instant {
        let ahead = t.unix_nanos().saturating_sub(self.wall.unix_nanos());
        self.mono + Duration::from_nanos(u64::try_from(ahead).unwrap_or(0))
    }
}

/// Why a connection ended, for the debug log.
#[derive(Debug, thiserror::Error)]
enum End {
    #[error("{0}")]
    Session(Close),
    #[error("{0}")]
    Decode(DecodeError),
    #[error("cannot encode a packet: {0}")]
    Encode(EncodeError),
    #[error("I/O error: {0}")]
    Io(io::Error),
    #[error("client closed the stream")]
    Eof,
    #[error("replaced by a newer connection of the same identity")]
    Kicked,
    #[error("identity deleted, disabled or re-keyed")]
    BackendKick,
    #[error("the backend ended the event stream")]
    EventsEnded,
    #[error("client does not read: write backlog over the limit")]
    Backlog,
    #[error("endpoint shutting down")]
    Shutdown,
    #[error("the session change could not be stored: {0}")]
    Storage(HubError),
}

impl End {
    fn reason(&self) -> CloseReason {
        match self {
            Self::Session(Close::Disconnected) | Self::Eof => CloseReason::ClientClosed,
            Self::Session(
                Close::Protocol(_) | Close::ForbiddenTopic(_) | Close::ForbiddenFilter(_),
            ) => CloseReason::Protocol,
            Self::Session(Close::KeepAliveTimeout | Close::TokenExpired) => CloseReason::Expired,
            Self::Session(Close::AckTimeout | Close::Congested) | Self::Backlog => {
                CloseReason::SlowClient
            }
            Self::Decode(_) => CloseReason::Malformed,
            Self::Io(_) => CloseReason::Io,
            Self::Kicked => CloseReason::Replaced,
            Self::BackendKick => CloseReason::Kicked,
            Self::Encode(_) | Self::EventsEnded | Self::Storage(_) => CloseReason::HubError,
            Self::Shutdown => CloseReason::Shutdown,
        }
    }
}

impl From<Close> for End {
    fn from(c: Close) -> Self {
        Self::Session(c)
    }
}

/// Serves one client connection until it ends. `unauthenticated` counts it
/// among the sockets that have not completed CONNECT until it has.
pub(crate) async fn run<S>(shared: &Shared, stream: S, unauthenticated: Unauthenticated)
where
    S: AsyncRead + AsyncWrite + Send,
{
    let clock = Clock::start();
    let mut shutdown = shared.shutdown.subscribe();
    if *shutdown.borrow_and_update() {
        shared.counters.closed(CloseReason::Shutdown);
        return;
    }
    let stream = std::pin::pin!(stream);
    let (mut rd, mut wr) = tokio::io::split(stream);
    let mut rbuf = BytesMut::new();
    let connect = match tokio::time::timeout(
        shared.config.connect_timeout,
        read_connect(&mut rd, &mut rbuf),
    )
    .await
    {
        Ok(Ok(connect)) => connect,
        Ok(Err(reason)) => {
            tracing::debug!(%reason, "connection closed before CONNECT");
            shared.counters.closed(CloseReason::ConnectInvalid);
            return;
        }
        Err(_) => {
            tracing::debug!("no CONNECT in time");
            shared.counters.closed(CloseReason::ConnectTimeout);
            return;
        }
    };
    let Some(login) = authenticate(shared, &connect, &clock, &mut wr).await else {
        shared.counters.closed(CloseReason::Refused);
        return;
    };
    drop(connect);
    let client_id = login.identity.client_id();
    let opened = shared
        .registry
        .open(&login.identity, login.clean_session, &*shared.backend);
    // From here on the guard reports the end to the registry and the backend,
    // even if the task is cancelled.
    let guard = Registration {
        shared,
        client_id,
        connection: opened.connection,
        identity: login.identity.clone(),
        clock,
    };
    if let Some(forgetting) = opened.forgetting {
        // A clean session answers "no session present" only once the stored one
        // is gone for good.
        if let Err(e) = forgetting.await {
            tracing::warn!(identity = %login.identity, error = %e, "cannot forget a stored session");
            refuse(shared, &mut wr, ConnectReturnCode::ServerUnavailable).await;
            shared.counters.closed(CloseReason::HubError);
            return;
        }
    }
    let now = clock.now();
    // Watch before CONNACK, so every change after the device hears "accepted" reaches it.
    let events = shared.backend.watch(&login.identity);
    // A key or policy change between the first check and the watch would close
    // a session that did not watch yet: check again, now that any later change
    // reaches this one.
    if let Err(e) = shared
        .backend
        .authenticate(&login.identity, &login.password, now)
    {
        tracing::debug!(identity = %login.identity, error = %e, "credentials changed while connecting");
        refuse(shared, &mut wr, connect::refusal_code(&e)).await;
        shared.counters.closed(CloseReason::Refused);
        return;
    }
    shared.backend.connected(&login.identity, now);
    let methods_ready = opened.subscriptions.methods.is_some();
    shared
        .registry
        .if_current(&guard.client_id, opened.connection, || {
            shared.backend.methods_ready(&login.identity, methods_ready);
        });
    tracing::debug!(identity = %login.identity, session_present = opened.session_present, "connected");
    let session = Session::new(
        SessionParams {
            identity: login.identity,
            keep_alive: login.keep_alive,
            token_expiry: login.expiry,
            subscriptions: opened.subscriptions,
            tracking_id: opened.connection,
        },
        now,
    );
    let mut conn = Connection {
        shared,
        clock,
        session,
        connection: opened.connection,
        wbuf: BytesMut::new(),
        pending: FuturesOrdered::new(),
        saving: None,
        methods_ready,
    };
    let connack = ServerPacket::ConnAck {
        session_present: opened.session_present,
        code: ConnectReturnCode::Accepted,
    };
    let end = match encode(&connack, &mut conn.wbuf) {
        Ok(()) => {
            shared.counters.connack(ConnectReturnCode::Accepted);
            drop(unauthenticated);
            conn.serve(&mut rd, &mut wr, rbuf, events, opened.kicked, &mut shutdown)
                .await
        }
        Err(e) => End::Encode(e),
    };
    tracing::debug!(identity = %guard.identity, reason = %end, "connection closed");
    shared.counters.closed(end.reason());
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        let _ = write_out(&mut wr, &mut conn.wbuf).await;
        let _ = wr.shutdown().await;
    })
    .await;
}

/// A successful login and its token's expiry.
struct Authenticated {
    identity: Identity,
    /// Kept to check again once the session watches its device's events.
    password: String,
    clean_session: bool,
    keep_alive: u16,
    expiry: i64,
}

/// Checks the CONNECT with the backend; on refusal sends the CONNACK code and
/// returns `None`.
async fn authenticate<W: AsyncWrite>(
    shared: &Shared,
    connect: &Connect,
    clock: &Clock,
    wr: &mut WriteHalf<W>,
) -> Option<Authenticated> {
    let refusal = match connect::login(connect) {
        Ok(Login {
            identity,
            password,
            clean_session,
            keep_alive,
        }) => match shared
            .backend
            .authenticate(&identity, &password, clock.now())
        {
            Ok(expiry) => {
                return Some(Authenticated {
                    identity,
                    password,
                    clean_session,
                    keep_alive,
                    expiry,
                })
            }
            Err(e) => {
                tracing::debug!(%identity, error = %e, "CONNECT refused by the backend");
                connect::refusal_code(&e)
            }
        },
        Err(refusal) => {
            tracing::debug!(reason = refusal.reason, "CONNECT refused");
            refusal.code
        }
    };
    refuse(shared, wr, refusal).await;
    None
}

/// Sends a refusing CONNACK and closes the connection ([MQTT-3.2.2-5]).
async fn refuse<W: AsyncWrite>(shared: &Shared, wr: &mut WriteHalf<W>, code: ConnectReturnCode) {
    shared.counters.connack(code);
    let mut buf = BytesMut::new();
    let connack = ServerPacket::ConnAck {
        session_present: false,
        code,
    };
    if encode(&connack, &mut buf).is_ok() {
        let _ = tokio::time::timeout(CLOSE_GRACE, async {
            let _ = write_out(wr, &mut buf).await;
            let _ = wr.shutdown().await;
        })
        .await;
    }
}

async fn read_connect<R: AsyncRead>(
    rd: &mut ReadHalf<R>,
    rbuf: &mut BytesMut,
) -> Result<Box<Connect>, String> {
    loop {
        match decode(rbuf, MAX_CONNECT_PACKET) {
            Ok(Some(ClientPacket::Connect(connect))) => return Ok(connect),
            Ok(Some(_)) => return Err("[MQTT-3.1.0-1] the first packet must be CONNECT".into()),
            Ok(None) => {}
            Err(e) => return Err(e.to_string()),
        }
        rbuf.reserve(READ_CHUNK);
        match rd.read_buf(rbuf).await {
            Ok(0) => return Err("end of stream".into()),
            Ok(_) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// How much room to make for the next read: the rest of a partly buffered
/// packet (within the limit, which the decoder enforces), at least [`READ_CHUNK`].
fn read_room(rbuf: &[u8], max: usize) -> usize {
    crate::decode::frame_size(rbuf)
        .map_or(READ_CHUNK, |size| size.min(max).saturating_sub(rbuf.len()))
        .max(READ_CHUNK)
}

async fn write_out<W: AsyncWrite>(wr: &mut WriteHalf<W>, buf: &mut BytesMut) -> io::Result<()> {
    // Cancel safe: bytes written are removed from `buf`, the rest stays queued.
    wr.write_all_buf(buf).await?;
    wr.flush().await
}

/// Tells the registry and the backend that a connection ended.
struct Registration<'a> {
    shared: &'a Shared,
    client_id: String,
    connection: u64,
    identity: Identity,
    clock: Clock,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        let (backend, identity) = (&self.shared.backend, &self.identity);
        self.shared
            .registry
            .if_current(&self.client_id, self.connection, || {
                backend.methods_ready(identity, false);
            });
        if self.shared.registry.close(&self.client_id, self.connection) {
            self.shared
                .backend
                .disconnected(&self.identity, self.clock.now());
        }
    }
}

/// A write waiting for durability, and what to answer once it is.
enum Pending {
    /// A reported patch, with the request id to answer.
    Patch {
        rid: String,
        write: BoxFuture<'static, Result<i64, HubError>>,
    },
    /// A session change, with the SUBACK or UNSUBACK held until it is stored.
    Session {
        write: Saving,
        ack: Option<ServerPacket>,
    },
}

enum Done {
    Patched(String, Result<i64, HubError>),
    Saved(Result<(), HubError>, Option<ServerPacket>),
}

impl Future for Pending {
    type Output = Done;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Done> {
        match self.get_mut() {
            Self::Patch { rid, write } => {
                let result = std::task::ready!(write.as_mut().poll(cx));
                Poll::Ready(Done::Patched(std::mem::take(rid), result))
            }
            Self::Session { write, ack } => {
                let result = std::task::ready!(write.as_mut().poll(cx));
                Poll::Ready(Done::Saved(result, ack.take()))
            }
        }
    }
}

struct Connection<'a> {
    shared: &'a Shared,
    clock: Clock,
    session: Session,
    connection: u64,
    wbuf: BytesMut,
    /// Writes waiting for durability, answered in the order they were made.
    pending: FuturesOrdered<Pending>,
    /// A session change just queued, waiting for the acknowledgement that follows it.
    saving: Option<Saving>,
    /// What the backend was last told about this connection taking method requests.
    methods_ready: bool,
}

impl Connection<'_> {
    async fn serve<S: AsyncRead + AsyncWrite>(
        &mut self,
        rd: &mut ReadHalf<S>,
        wr: &mut WriteHalf<S>,
        mut rbuf: BytesMut,
        mut events: DeviceEvents,
        mut kicked: oneshot::Receiver<()>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> End {
        let timer = tokio::time::sleep_until(self.clock.mono);
        tokio::pin!(timer);
        // The armed deadline. The timer is only moved earlier; when it fires for a
        // deadline that has since moved later, the session says so and it is re-armed.
        let mut armed: Option<Timestamp> = None;
        let mut unflushed = true;
        loop {
            if let Err(end) = self.run_actions() {
                return end;
            }
            if !self.wbuf.is_empty() {
                unflushed = true;
            }
            if self.wbuf.len() > MAX_WRITE_BACKLOG {
                return End::Backlog;
            }
            if let Some(deadline) = self.session.poll_timeout() {
                if armed.is_none_or(|a| deadline < a) {
                    timer.as_mut().reset(self.clock.instant(deadline));
                    armed = Some(deadline);
                }
            }
            let reading = self.pending.len() < MAX_PENDING_PATCHES;
            if reading {
                rbuf.reserve(read_room(&rbuf, self.shared.config.max_packet_size));
            }
            let step = tokio::select! {
                biased;
                _ = shutdown.changed() => Err(End::Shutdown),
                _ = &mut kicked => Err(End::Kicked),
                () = &mut timer, if armed.is_some() => {
                    armed = None;
                    self.session.handle_timeout(self.clock.now()).map_err(End::from)
                }
                written = write_out(wr, &mut self.wbuf), if unflushed => {
                    unflushed = false;
                    if self.wbuf.is_empty() && self.wbuf.capacity() > KEEP_BUFFER {
                        self.wbuf = BytesMut::new();
                    }
                    written.map_err(End::Io)
                }
                Some(done) = self.pending.next(), if !self.pending.is_empty() => {
                    let mut step = self.complete(done, &mut rbuf);
                    // A group commit completes many of this connection's writes at
                    // once: take every one already done, so their responses leave
                    // in one TLS record and one write instead of one each. (Polled
                    // without our waker; the select above polls `pending` again
                    // with it before the task sleeps.)
                    while step.is_ok() {
                        let Some(Some(done)) = self.pending.next().now_or_never() else {
                            break;
                        };
                        step = self.complete(done, &mut rbuf);
                    }
                    step
                }
                event = events.next(), if self.session.accepts_events() => match event {
                    Some(DeviceEvent::Desired { version, payload }) => {
                        if self.session.subscriptions().desired.is_some() {
                            self.shared.counters.desired_notification();
                        }
                        self.session
                            .desired_changed(version, &payload, self.clock.now())
                            .map_err(End::from)
                    }
                    Some(DeviceEvent::MethodRequest { name, rid, payload }) => {
                        self.session.method_request(&name, &rid, &payload, self.clock.now());
                        Ok(())
                    }
                    Some(DeviceEvent::Kick) => Err(End::BackendKick),
                    None => Err(End::EventsEnded),
                },
                read = rd.read_buf(&mut rbuf), if reading => match read {
                    Ok(0) => Err(End::Eof),
                    Ok(_) => self.process_buffered(&mut rbuf),
                    Err(e) => Err(End::Io(e)),
                },
            };
            if let Err(end) = step {
                return end;
            }
        }
    }

    /// Applies a finished backend call: a reported patch's result, or a stored
    /// session change whose acknowledgement was held until it was durable.
    fn complete(&mut self, done: Done, rbuf: &mut BytesMut) -> Result<(), End> {
        match done {
            Done::Patched(rid, result) => {
                let now = self.clock.now();
                match self.session.reported_patched(&rid, result, now) {
                    Ok(()) => self.process_buffered(rbuf),
                    Err(close) => Err(close.into()),
                }
            }
            Done::Saved(Ok(()), ack) => self
                .send_held(ack)
                .and_then(|()| self.process_buffered(rbuf)),
            Done::Saved(Err(e), _) => Err(End::Storage(e)),
        }
    }

    /// Handles the complete packets in `rbuf` while patches may still be queued.
    fn process_buffered(&mut self, rbuf: &mut BytesMut) -> Result<(), End> {
        while self.pending.len() < MAX_PENDING_PATCHES {
            let packet = match decode(rbuf, self.shared.config.max_packet_size) {
                Ok(Some(packet)) => packet,
                Ok(None) => break,
                Err(e) => return Err(End::Decode(e)),
            };
            self.session.handle_packet(packet, self.clock.now())?;
            self.run_actions()?;
        }
        if rbuf.is_empty() && rbuf.capacity() > KEEP_BUFFER {
            *rbuf = BytesMut::new();
        }
        Ok(())
    }

    fn send_held(&mut self, ack: Option<ServerPacket>) -> Result<(), End> {
        match ack {
            Some(packet) => encode(&packet, &mut self.wbuf).map_err(End::Encode),
            None => Ok(()),
        }
    }

    /// Queues the session change waiting in `saving`, holding `ack` until it is
    /// durable.
    fn hold_until_saved(&mut self, ack: Option<ServerPacket>) {
        if let Some(write) = self.saving.take() {
            self.pending.push_back(Pending::Session { write, ack });
        }
    }

    /// Carries out the session's actions.
    fn run_actions(&mut self) -> Result<(), End> {
        let result = self.run_actions_inner();
        // A change not followed by an acknowledgement still waits its turn.
        self.hold_until_saved(None);
        result
    }

    fn run_actions_inner(&mut self) -> Result<(), End> {
        let backend = &self.shared.backend;
        while let Some(action) = self.session.poll_action() {
            match action {
                Action::Send(
                    packet @ (ServerPacket::SubAck { .. } | ServerPacket::UnsubAck(_)),
                ) if self.saving.is_some() => {
                    self.hold_until_saved(Some(packet));
                }
                Action::Send(packet) => encode(&packet, &mut self.wbuf).map_err(End::Encode)?,
                Action::GetTwin { rid } => {
                    let twin = backend.twin_for_device(self.session.identity());
                    self.session.twin_read(&rid, twin, self.clock.now())?;
                }
                Action::PatchReported {
                    rid,
                    patch,
                    version,
                } => {
                    let mut write = backend.patch_reported(self.session.identity(), patch, version);
                    // Poll once now so each write takes its place in the device's
                    // order as the device sent it, whatever order the pending set
                    // polls in later.
                    match (&mut write).now_or_never() {
                        Some(result) => {
                            self.session
                                .reported_patched(&rid, result, self.clock.now())?;
                        }
                        None => self.pending.push_back(Pending::Patch { rid, write }),
                    }
                }
                Action::SubscriptionsChanged(subscriptions) => {
                    self.hold_until_saved(None);
                    let identity = self.session.identity();
                    let ready = subscriptions.methods.is_some();
                    if ready != self.methods_ready {
                        self.methods_ready = ready;
                        self.shared.registry.if_current(
                            &identity.client_id(),
                            self.connection,
                            || backend.methods_ready(identity, ready),
                        );
                    }
                    let Some(mut write) = self.shared.registry.update(
                        identity,
                        self.connection,
                        subscriptions,
                        &**backend,
                    ) else {
                        continue;
                    };
                    match (&mut write).now_or_never() {
                        Some(Ok(())) => {}
                        Some(Err(e)) => return Err(End::Storage(e)),
                        None => self.saving = Some(write),
                    }
                }
                Action::Activity => backend.activity(self.session.identity(), self.clock.now()),
                Action::MethodResponse { rid, status, body } => {
                    backend.method_response(self.session.identity(), &rid, status, &body);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DeviceBackend, MqttServer};
    use std::sync::Arc;

    struct Nothing;

    impl DeviceBackend for Nothing {
        fn authenticate(&self, _: &Identity, _: &str, _: Timestamp) -> Result<i64, HubError> {
            Err(HubError::unauthorized())
        }
        fn twin_for_device(&self, _: &Identity) -> Result<serde_json::Value, HubError> {
            Err(HubError::unauthorized())
        }
        fn patch_reported(
            &self,
            _: &Identity,
            _: serde_json::Value,
            _: Option<i64>,
        ) -> BoxFuture<'static, Result<i64, HubError>> {
            Box::pin(async { Err(HubError::unauthorized()) })
        }
        fn watch(&self, _: &Identity) -> DeviceEvents {
            Box::pin(futures_util::stream::pending())
        }
        fn connected(&self, _: &Identity, _: Timestamp) {}
        fn disconnected(&self, _: &Identity, _: Timestamp) {}
        fn activity(&self, _: &Identity, _: Timestamp) {}
        fn methods_ready(&self, _: &Identity, _: bool) {}
        fn method_response(&self, _: &Identity, _: &str, _: i32, _: &[u8]) {}
        fn stored_session(&self, _: &Identity) -> Option<crate::Subscriptions> {
            None
        }
        fn save_session(
            &self,
            _: &Identity,
            _: Option<crate::Subscriptions>,
        ) -> BoxFuture<'static, Result<(), HubError>> {
            Box::pin(async { Ok(()) })
        }
    }

    /// 100,000 connections in a few GiB leaves little per connection: keep the
    /// task's own state far below the TLS state it sits next to.
    #[test]
    fn per_connection_state_stays_small() {
        let server = MqttServer::new(Arc::new(Nothing));
        let (stream, _peer) = tokio::io::duplex(16);
        let task = server.serve_connection(stream);
        assert!(
            std::mem::size_of_val(&task) <= 2048,
            "{}",
            std::mem::size_of_val(&task)
        );
        assert!(std::mem::size_of::<Session>() <= 256);
    }

    #[test]
    fn clock_maps_deadlines_to_instants() {
        let clock = Clock::start();
        let later = Timestamp::from_unix_nanos(clock.wall.unix_nanos() + 1_500_000_000);
        assert_eq!(
            clock.instant(later) - clock.mono,
            Duration::from_millis(1500)
        );
        let earlier = Timestamp::from_unix_nanos(clock.wall.unix_nanos() - 1);
        assert_eq!(clock.instant(earlier), clock.mono);
        assert!(clock.now() >= clock.wall);
    }
}
