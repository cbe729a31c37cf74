//! Rust clients for Twinhub, sharing the pure core with the hub so that tokens,
//! connection strings and topics cannot disagree.
//!
//! # Layout
//! - [`service`]: [`ServiceClient`], the registry, twins and queries over REST.
//! - [`device`]: [`DeviceClient`], twins over MQTT/TLS with desired-property
//!   updates and automatic reconnect with twin resync.
//! - [`error`]: the client error type, [`SdkError`].

pub mod device;
pub mod error;
pub mod service;

pub use device::{DesiredUpdate, DeviceClient, DeviceOptions, MethodCall, MethodHandler};
pub use error::SdkError;
pub use service::ServiceClient;
