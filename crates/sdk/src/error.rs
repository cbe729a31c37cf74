//! Client errors.

/// What went wrong talking to a hub.
#[derive(Debug, thiserror::Error)]
pub enum SdkError {
    /// The connection string or an argument is unusable.
    #[error("{0}")]
    Config(String),
    /// The request did not complete (connection, TLS, timeout).
    #[error("request failed: {0}")]
    Transport(String),
    /// The hub answered with an error.
    #[error("{status} {code}: {message}")]
    Hub {
        /// HTTP status.
        status: u16,
        /// IoT Hub error code name (from `iothub-errorcode`), or empty.
        code: String,
        /// The error message.
        message: String,
    },
    /// The hub's answer could not be understood.
    #[error("unexpected response: {0}")]
    Protocol(String),
}
