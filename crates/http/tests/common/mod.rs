//! Test kit shared by the in-process HTTP tests.

#![allow(dead_code, unreachable_pub)]

use futures_util::future::BoxFuture;
use twinhub_core::{HubError, Timestamp};
use twinhub_mqtt::{DeviceBackend, DeviceEvents, Identity, Subscriptions};

/// An MQTT backend nobody connects to.
pub struct NoDevices;

impl DeviceBackend for NoDevices {
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
    fn stored_session(&self, _: &Identity) -> Option<Subscriptions> {
        None
    }
    fn save_session(
        &self,
        _: &Identity,
        _: Option<Subscriptions>,
    ) -> BoxFuture<'static, Result<(), HubError>> {
        Box::pin(async { Ok(()) })
    }
}
