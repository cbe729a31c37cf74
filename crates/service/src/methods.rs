//! Direct methods: a back end's request travels to the target identity's live
//! session, and the device's answer back to the waiting caller (fleet spec §1).
//!
//! Nothing here is stored: a call lives as long as its caller waits. Two hops,
//! both addressed by identity, never by a pointer into a connection:
//! - out: the request is published to the identity's watchers at once, on the
//!   non-durable event path (a method call must not wait for a group commit);
//! - back: the answer finds its caller in the pending-call table by the request id
//!   the hub chose, and only if it comes from the identity the request went to.
//!
//! Which identities can take requests now (a live connection subscribed to
//! `$iothub/methods/POST/#`) is told by the MQTT endpoint. In cluster mode each
//! hop becomes a row in the target node's inbox and a doorbell (scale-out design
//! §7.4), and readiness a column of the session's row; this API stays as it is.

use crate::shard::lock;
use crate::state::Hub;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{oneshot, Notify};
use twinhub_core::method::{MethodRequest, MethodResponse};
use twinhub_core::{DeviceEvent, ErrorCode, HubError, Identity};

/// Method calls in flight and the identities that can take one.
#[derive(Default)]
pub(crate) struct Methods {
    /// Request ids are a hub-wide counter: unique per identity across reconnects.
    next_rid: AtomicU64,
    state: Mutex<State>,
    /// Woken whenever an identity becomes ready, for callers waiting to connect.
    became_ready: Notify,
}

#[derive(Default)]
struct State {
    /// Client ids whose current connection takes method requests.
    ready: HashSet<String>,
    /// Calls waiting for an answer, by request id.
    pending: HashMap<String, Waiting>,
}

struct Waiting {
    /// Only this identity may answer.
    client_id: String,
    answer: oneshot::Sender<MethodResponse>,
}

impl Methods {
    fn is_ready(&self, client_id: &str) -> bool {
        lock(&self.state).ready.contains(client_id)
    }

    /// Waits until `client_id` is ready, for at most `timeout`.
    async fn wait_ready(&self, client_id: &str, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Registered before the check, so a readiness change between the two
            // still wakes this caller.
            let notified = self.became_ready.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_ready(client_id) {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.is_ready(client_id);
            }
        }
    }
}

/// Removes a call from the table when its caller stops waiting, for whatever
/// reason (answer, timeout, or the caller's request being dropped).
struct PendingCall<'a> {
    methods: &'a Methods,
    rid: String,
}

impl Drop for PendingCall<'_> {
    fn drop(&mut self) {
        lock(&self.methods.state).pending.remove(&self.rid);
    }
}

fn not_online() -> HubError {
    HubError::new(
        ErrorCode::DeviceNotOnline,
        "Timed out waiting for device to connect.",
    )
}

fn timed_out() -> HubError {
    HubError::new(
        ErrorCode::GatewayTimeout,
        "Timed out waiting for the response from device.",
    )
}

impl Hub {
    /// `POST /twins/{id}[/modules/{mid}]/methods`: delivers `request` to the
    /// target's live session and waits for its answer. `DeviceNotFound` or
    /// `ModuleNotFound` for an unknown target; `DeviceNotOnline` when it is not
    /// connected and subscribed to method requests within the connect timeout;
    /// `GatewayTimeout` when it does not answer within the response timeout.
    pub async fn invoke_method(
        &self,
        target: &Identity,
        request: &MethodRequest,
    ) -> Result<MethodResponse, HubError> {
        self.read(&target.device_id, |record| match &target.module_id {
            Some(module_id) => record.module(module_id).map(|_| ()),
            None => Ok(()),
        })??;
        let methods = &self.inner.methods;
        let client_id = target.client_id();
        let connect = Duration::from_secs(request.connect_timeout_secs.into());
        if !methods.wait_ready(&client_id, connect).await {
            return Err(not_online());
        }
        let rid = format!("{:x}", methods.next_rid.fetch_add(1, Ordering::Relaxed) + 1);
        let (answer, answered) = oneshot::channel();
        lock(&methods.state).pending.insert(
            rid.clone(),
            Waiting {
                client_id: client_id.clone(),
                answer,
            },
        );
        let _call = PendingCall {
            methods,
            rid: rid.clone(),
        };
        self.inner.counters.method_invoked();
        self.inner.watchers.publish(
            &client_id,
            vec![DeviceEvent::MethodRequest {
                name: request.method_name.clone(),
                rid,
                payload: Arc::from(request.payload_text()),
            }],
        );
        let response = Duration::from_secs(request.response_timeout_secs.into());
        match tokio::time::timeout(response, answered).await {
            Ok(Ok(answer)) => Ok(answer),
            _ => {
                self.inner.counters.method_timed_out();
                Err(timed_out())
            }
        }
    }

    /// Whether `identity`'s current connection takes method requests (the MQTT
    /// endpoint tells; see `DeviceBackend::methods_ready`).
    pub fn methods_ready(&self, identity: &Identity, ready: bool) {
        let methods = &self.inner.methods;
        let client_id = identity.client_id();
        {
            let mut state = lock(&methods.state);
            if ready {
                state.ready.insert(client_id);
            } else {
                state.ready.remove(&client_id);
            }
        }
        if ready {
            methods.became_ready.notify_waiters();
        }
    }

    /// `identity` answered the request `rid`. Dropped when no call waits for that
    /// id (unknown, answered, timed out) or when it went to another identity.
    pub fn method_response(&self, identity: &Identity, rid: &str, status: i32, body: &[u8]) {
        let waiting = {
            let mut state = lock(&self.inner.methods.state);
            match state.pending.get(rid) {
                Some(w) if w.client_id == identity.client_id() => state.pending.remove(rid),
                _ => None,
            }
        };
        match waiting {
            Some(w) => {
                // The caller may have just given up; then nobody is left to tell.
                let _ = w.answer.send(MethodResponse::from_device(status, body));
            }
            None => {
                tracing::debug!(%identity, rid, "method answer for no waiting call dropped");
            }
        }
    }

    /// Method calls waiting for an answer.
    pub fn methods_pending(&self) -> usize {
        lock(&self.inner.methods.state).pending.len()
    }
}
