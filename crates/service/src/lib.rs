//! Twinhub's use cases, independent of any wire protocol.
//!
//! [`Hub`] is a cheap-to-clone handle around the hub's shared state. Adapters (HTTP,
//! MQTT, CLI) call it with already-decoded requests and translate its
//! [`HubError`](twinhub_core::HubError)s into their wire shapes.
//!
//! # Layout
//! - `shard`: device records (a device with its modules: the unit of locking and
//!   storage) and the shards that hold them, the bottom layer.
//! - [`state`]: the working state — device records sharded by id, each shard with one
//!   lock that orders its devices' writes — and the write path: apply a pure core
//!   operation, queue the new record for group commit, wait until it is durable,
//!   then publish its events.
//! - `load`: the working state read from storage at start, decoded on every core.
//! - [`registry`]: the identity registry (create, update, delete, list, bulk, statistics).
//! - [`modules`]: module identities, kept in their device's record.
//! - [`keys`]: bulk key rotation of devices and modules.
//! - [`twins`]: twin reads and writes, for the service side and for devices.
//! - [`auth`]: SAS-token authorization of service requests and device connections.
//! - [`events`]: [`DeviceEvent`] fan-out to the live sessions of each device.
//! - [`methods`]: direct methods, from the caller to the identity's live session
//!   and back, on the non-durable event path.
//! - [`query`]: twin queries over the working state, paged and read-your-writes;
//!   `document`: a device record as the query engine sees it, without rendering it;
//!   `index`: per-shard equality indexes built for queries' push-down hints.
//! - [`sessions`]: stored MQTT sessions (clean-session-0 subscriptions), kept with
//!   their device and written through the committer.
//! - [`metrics`]: the service layer's counters for `GET /metrics`.
//! - [`clock`]: where the hub's time comes from ([`clock::Clock`]: the wall clock, or a
//!   manual one in tests).

pub mod auth;
pub mod clock;
mod document;
pub mod events;
mod index;
pub mod keys;
mod load;
pub mod methods;
pub mod metrics;
pub mod modules;
pub mod query;
pub mod registry;
pub mod sessions;
mod shard;
pub mod state;
pub mod twins;

pub use events::{DeviceEvent, DeviceWatch};
pub use metrics::HubMetrics;
pub use sessions::{StoredSession, StoredSubscription};
pub use state::{Hub, HubConfig};
