//! The MQTT endpoint's view of the hub: [`DeviceBackend`] over the service layer.
//! A thin translation: the MQTT crate does not depend on the service crate, so
//! each can be tested alone (the MQTT crate against a fake backend).

use serde_json::Value;
use twinhub_core::{HubError, Timestamp};
use twinhub_mqtt::{DeviceBackend, DeviceEvents, Identity, QoS, Subscriptions};
use twinhub_service::{Hub, StoredSession, StoredSubscription};

/// The hub as the MQTT endpoint's backend.
pub(crate) struct HubBackend(pub(crate) Hub);

impl DeviceBackend for HubBackend {
    fn authenticate(&self, id: &Identity, password: &str, now: Timestamp) -> Result<i64, HubError> {
        self.0
            .authenticate_device(&id.device_id, id.module_id.as_deref(), password, now)
    }

    fn twin_for_device(&self, id: &Identity) -> Result<Value, HubError> {
        self.0.twin_for(id)
    }

    fn patch_reported(
        &self,
        id: &Identity,
        patch: Value,
        expected_version: Option<i64>,
    ) -> futures_util::future::BoxFuture<'static, Result<i64, HubError>> {
        // Queued in the device's order here, synchronously; the future only waits.
        Box::pin(self.0.patch_reported_for(id, &patch, expected_version))
    }

    fn watch(&self, id: &Identity) -> DeviceEvents {
        let mut watch = self.0.watch(&id.client_id());
        Box::pin(futures_util::stream::poll_fn(move |cx| watch.poll_recv(cx)))
    }

    fn connected(&self, id: &Identity, now: Timestamp) {
        self.0.connected(id, now);
    }

    fn disconnected(&self, id: &Identity, now: Timestamp) {
        self.0.disconnected(id, now);
    }

    fn activity(&self, id: &Identity, now: Timestamp) {
        self.0.activity(id, now);
    }

    fn methods_ready(&self, id: &Identity, ready: bool) {
        self.0.methods_ready(id, ready);
    }

    fn method_response(&self, id: &Identity, rid: &str, status: i32, body: &[u8]) {
        self.0.method_response(id, rid, status, body);
    }

    fn stored_session(&self, id: &Identity) -> Option<Subscriptions> {
        let stored = self.0.stored_session(&id.device_id, &id.client_id())?;
        let filters = stored.subscriptions.iter().filter_map(|s| {
            let qos = QoS::from_bits(s.qos)?;
            Some((s.filter.as_str(), qos))
        });
        Some(Subscriptions::from_filters(id, filters))
    }

    fn save_session(
        &self,
        id: &Identity,
        subscriptions: Option<Subscriptions>,
    ) -> futures_util::future::BoxFuture<'static, Result<(), HubError>> {
        let stored = subscriptions.map(|s| StoredSession {
            subscriptions: s
                .filters(id)
                .into_iter()
                .map(|(filter, qos)| StoredSubscription {
                    filter,
                    qos: qos as u8,
                })
                .collect(),
        });
        Box::pin(self.0.save_session(&id.device_id, &id.client_id(), stored))
    }
}
