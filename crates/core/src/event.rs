//! What an identity's live sessions must learn about, as the service layer publishes
//! it and the MQTT endpoint consumes it (one type, so neither maps the other's).

/// Something a device's live sessions must learn about.
#[derive(Debug, Clone, PartialEq)]
pub enum DeviceEvent {
    /// Desired properties changed.
    Desired {
        /// The new desired `$version`; it goes into the notification topic.
        version: i64,
        /// The notification body, sent as is: the patch as applied with its
        /// `null`s kept, plus `"$version"`, without `$metadata` (spec §3.3).
        payload: serde_json::Value,
    },
    /// A direct method request for the identity's live session. Published at
    /// once, not after a commit: a method call is not stored, and the caller is
    /// waiting.
    MethodRequest {
        /// The method name, put into the topic as it is.
        name: String,
        /// The request id the hub chose; the device's answer carries it back.
        rid: String,
        /// The request payload as compact JSON text (shared by every watcher).
        payload: std::sync::Arc<str>,
    },
    /// The device was deleted or disabled, its keys changed, or the policy its
    /// session signed with went away: close its sessions (the device reconnects
    /// and is authenticated afresh).
    Kick,
}
