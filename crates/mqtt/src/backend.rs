//! The boundary between the MQTT endpoint and the rest of the hub.
//!
//! The driver calls a [`DeviceBackend`] for everything that is not MQTT: checking
//! credentials, reading and patching twins, learning about desired changes. The
//! service layer implements it (through a thin adapter in the binary, or in the
//! service crate itself); tests implement it with an in-memory fake.

use crate::session::Subscriptions;
use futures_util::future::BoxFuture;
use futures_util::Stream;
use std::pin::Pin;
use std::task::{Context, Poll};
use twinhub_core::{HubError, Timestamp};

pub use twinhub_core::DeviceEvent;
pub use twinhub_core::Identity;

/// A stream of one identity's events. Ending the stream closes the connection,
/// since notifications could otherwise be lost silently.
pub type DeviceEvents = Pin<Box<dyn Stream<Item = DeviceEvent> + Send>>;

/// Adapts an unbounded channel of some event type into [`DeviceEvents`] with a
/// conversion function, without a forwarding task.
pub fn event_stream<T, F>(mut rx: tokio::sync::mpsc::UnboundedReceiver<T>, mut f: F) -> DeviceEvents
where
    T: Send + 'static,
    F: FnMut(T) -> DeviceEvent + Send + 'static,
{
    Box::pin(futures_util::stream::poll_fn(
        move |cx: &mut Context<'_>| match rx.poll_recv(cx) {
            Poll::Ready(item) => Poll::Ready(item.map(&mut f)),
            Poll::Pending => Poll::Pending,
        },
    ))
}

/// What the MQTT endpoint needs from the hub.
///
/// Calls come from connection tasks on the tokio runtime. The synchronous methods
/// must not block for long (a shard lock for microseconds is fine; I/O is not).
/// Errors are domain errors: the endpoint alone turns them into CONNACK codes and
/// twin error responses.
///
/// An adapter over `twinhub_service::Hub` maps each method onto the hub method of
/// the same purpose, refusing module identities until the hub has module twins:
///
/// ```ignore
/// struct HubBackend(twinhub_service::Hub);
///
/// impl DeviceBackend for HubBackend {
///     fn authenticate(&self, id: &Identity, password: &str, now: Timestamp) -> Result<i64, HubError> {
///         self.0.authenticate_device(&id.device_id, id.module_id.as_deref(), password, now)
///     }
///     fn twin_for_device(&self, id: &Identity) -> Result<Value, HubError> {
///         self.0.twin_for_device(&id.device_id)
///     }
///     fn patch_reported(&self, id: &Identity, patch: Value, version: Option<i64>)
///         -> BoxFuture<'static, Result<i64, HubError>> {
///         let (hub, device) = (self.0.clone(), id.device_id.clone());
///         Box::pin(async move { hub.patch_reported(&device, &patch, version).await })
///     }
///     fn watch(&self, id: &Identity) -> DeviceEvents {
///         let mut watch = self.0.watch(&id.device_id);
///         Box::pin(futures_util::stream::poll_fn(move |cx| watch.poll_recv(cx)))
///     }
///     fn connected(&self, id: &Identity, now: Timestamp) { self.0.device_connected(&id.device_id, now) }
///     fn disconnected(&self, id: &Identity, now: Timestamp) { self.0.device_disconnected(&id.device_id, now) }
///     fn activity(&self, id: &Identity, now: Timestamp) { self.0.device_activity(&id.device_id, now) }
///     fn stored_session(&self, id: &Identity) -> Option<Subscriptions> {
///         let stored = self.0.stored_session(&id.device_id, &id.client_id())?;
///         Some(Subscriptions::from_filters(id, /* stored filters and QoS */))
///     }
///     fn save_session(&self, id: &Identity, subscriptions: Option<Subscriptions>)
///         -> BoxFuture<'static, Result<(), HubError>> {
///         let stored = subscriptions.map(|s| /* s.filters(id) as the hub's record */);
///         Box::pin(self.0.save_session(&id.device_id, &id.client_id(), stored))
///     }
///     fn methods_ready(&self, id: &Identity, ready: bool) { self.0.methods_ready(id, ready) }
///     fn method_response(&self, id: &Identity, rid: &str, status: i32, body: &[u8]) {
///         self.0.method_response(id, rid, status, body)
///     }
/// }
/// ```
pub trait DeviceBackend: Send + Sync + 'static {
    /// Verifies a CONNECT's password, a SAS token (spec §8): signed with the
    /// identity's key, or with a shared access policy granting DeviceConnect
    /// (`skn`), scoped to `{host}/devices/{id}[/modules/{mid}]`, not expired at
    /// `now`, for an identity that exists and is enabled. Returns the token's
    /// expiry (`se`, Unix seconds): the connection is closed when it passes.
    ///
    /// Any refusal becomes CONNACK 5; `ServiceUnavailable`, `ThrottlingException`
    /// and `ServerError` become CONNACK 3.
    fn authenticate(
        &self,
        identity: &Identity,
        password: &str,
        now: Timestamp,
    ) -> Result<i64, HubError>;

    /// The identity's twin as a device sees it over MQTT:
    /// `{"desired":{..,"$version":n},"reported":{..,"$version":m}}`, no tags, no
    /// `$metadata` (spec §3.1). An error becomes a twin error response.
    fn twin_for_device(&self, identity: &Identity) -> Result<serde_json::Value, HubError>;

    /// Merges a reported-properties patch (spec §3.2, §7.1), only if the reported
    /// `$version` equals `expected_version` when one is given (else
    /// `PreconditionFailed`). Resolves with the new reported `$version` once the
    /// write is durable.
    ///
    /// Ordering: the endpoint polls the futures of one connection for the first
    /// time in the order the device sent its patches, right after this call; an
    /// implementation that takes its place in the device's write order either here
    /// or at the first poll (a plain `async` block) keeps the device's order.
    fn patch_reported(
        &self,
        identity: &Identity,
        patch: serde_json::Value,
        expected_version: Option<i64>,
    ) -> BoxFuture<'static, Result<i64, HubError>>;

    /// Subscribes to the identity's events. Desired notifications must arrive in
    /// `$version` order, each once, none dropped while the stream lives; they are
    /// not kept for identities without a live stream (spec §2.4). Dropping the
    /// stream unsubscribes. Called before CONNACK, so nothing committed after the
    /// device learns it is connected is missed.
    fn watch(&self, identity: &Identity) -> DeviceEvents;

    /// The identity's connection was accepted (connection state, timestamps).
    fn connected(&self, identity: &Identity, now: Timestamp);

    /// The identity's connection ended. Not called for a connection that a newer
    /// one of the same identity replaced, so that presence stays "connected".
    fn disconnected(&self, identity: &Identity, now: Timestamp);

    /// The device sent packets (throttled to about once a second per connection),
    /// for `lastActivityTime`.
    fn activity(&self, identity: &Identity, now: Timestamp);

    /// The stored session of a clean-session-0 client: its subscriptions, kept
    /// across connections and hub restarts (spec §2.4). `None` when there is none
    /// (never subscribed, clean session 1, or the identity was deleted since).
    /// Called at CONNECT; must be a quick in-memory read.
    fn stored_session(&self, identity: &Identity) -> Option<Subscriptions>;

    /// Stores (`Some`) or forgets (`None`) the client's session. The change must
    /// take its place when this is called: a [`DeviceBackend::stored_session`]
    /// right after sees it, and two calls are applied in call order (the endpoint
    /// calls it under the lock that decides which connection is the client's).
    /// The future resolves once the change is durable; the endpoint sends the
    /// SUBACK or UNSUBACK then, and closes the connection on an error.
    fn save_session(
        &self,
        identity: &Identity,
        subscriptions: Option<Subscriptions>,
    ) -> BoxFuture<'static, Result<(), HubError>>;

    /// Whether the identity's current connection takes direct method requests:
    /// it is live and subscribed to `$iothub/methods/POST/#` (fleet spec §1.2).
    /// Called once the connection watches its events (so a request sent as soon
    /// as it is ready reaches it), on every change of that subscription, and with
    /// `false` when the connection ends; never for a connection that a newer one
    /// replaced. Method requests then arrive as [`DeviceEvent::MethodRequest`].
    fn methods_ready(&self, identity: &Identity, ready: bool);

    /// The identity answered the method request `rid` with `status` and `body`
    /// (`$iothub/methods/res/{status}/?$rid={rid}`). An unknown or expired `rid`,
    /// or one sent to another identity, must be ignored.
    fn method_response(&self, identity: &Identity, rid: &str, status: i32, body: &[u8]);
}
