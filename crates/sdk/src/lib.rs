//! Rust clients for Twinhub, sharing the pure core with the hub so that tokens,
//! connection strings and topics cannot disagree.
//!
//! # Layout
//! - [`service`]: [`ServiceClient`], the registry, twins and queries over REST.
//! - [`error`]: the client error type, [`SdkError`].

pub mod error;
pub mod service;

pub use error::SdkError;
pub use service::ServiceClient;
