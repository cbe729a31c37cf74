//! Twinhub's pure core, shared by the hub and the SDK so that they cannot disagree.
//!
//! Nothing here does I/O, spawns tasks or reads the clock: functions that need the
//! time take `now` as an argument, which keeps every rule testable with fixed times.
//!
//! # Layout
//! - [`error`]: IoT Hub's error codes ([`ErrorCode`]) and the one domain error type,
//!   [`HubError`]. Adapters turn it into wire errors (REST body, MQTT `errorCode`).
//! - [`time`]: [`Timestamp`] and IoT Hub's timestamp format (`...T12:00:00.1234567Z`).
//! - [`json`]: validation of twin JSON against IoT Hub's limits ([`Limits`]) and the
//!   size rule IoT Hub uses.
//! - [`twin`]: the twin document: sections with `$version` and `$metadata`, merge
//!   patches where `null` deletes, replace, version and etag counters, and the JSON
//!   shapes for REST and for devices. Tags and properties are kept as compact
//!   `twinhub_json` trees and edited as `serde_json` maps.
//! - [`identity`]: [`Identity`], the address of a device or a module, and device
//!   identities (keys, status, etags, generation ids) with the REST body that
//!   creates or updates one.
//! - [`sas`]: shared access signature tokens: parse, sign, verify, scope.
//! - [`policy`]: shared access policies and their permissions.
//! - [`connection_string`]: service and device connection strings.
//! - [`etag`]: `If-Match` header semantics.
//! - [`topic`]: IoT Hub's MQTT topics, subscription filters and CONNECT username.
//! - [`event`]: [`DeviceEvent`], what a device's live sessions must learn about
//!   (desired changes, method requests, being closed).
//! - [`module`]: module identities, sub-identities of a device with their own keys
//!   and twin.
//! - [`method`]: direct methods: the service's request (validated), the device's
//!   answer and how its body becomes the REST response.

pub mod connection_string;
pub mod error;
pub mod etag;
pub mod event;
pub mod identity;
pub mod json;
pub mod method;
pub mod module;
pub mod policy;
pub mod sas;
pub mod time;
pub mod topic;
pub mod twin;

pub use error::{ErrorCode, HubError};
pub use event::DeviceEvent;
pub use identity::Identity;
pub use json::Limits;
pub use time::Timestamp;
