//! IoT Hub's error vocabulary.
//!
//! One enum of codes, each knowing its HTTP status, its numeric code (used in MQTT
//! twin error bodies) and its name (used in REST bodies and the `iothub-errorcode`
//! header). Domain code returns [`HubError`]; only the adapters decide the wire shape.

use std::fmt;

/// The IoT Hub error codes Twinhub answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// A request argument (twin key or value, body field, query) is invalid.
    ArgumentInvalid,
    /// A required argument is missing.
    ArgumentNull,
    /// The body is not parsable JSON of the expected shape.
    IotHubFormatError,
    /// The operation is not valid in the current state.
    InvalidOperation,
    /// A bulk request names the same device twice.
    DeviceDefinedMultipleTimes,
    /// A bulk request failed for some of its items.
    BulkRegistryOperationFailure,
    /// Bad, expired or insufficient credentials.
    IotHubUnauthorizedAccess,
    /// The hub has no such resource (unknown path).
    IotHubNotFound,
    /// The device does not exist.
    DeviceNotFound,
    /// The module does not exist.
    ModuleNotFound,
    /// A direct method target is not connected.
    DeviceNotOnline,
    /// The device already exists.
    DeviceAlreadyExists,
    /// An `If-Match` etag or a `$version` precondition does not hold.
    PreconditionFailed,
    /// A request body did not arrive in full in time.
    RequestTimeout,
    /// A message or document is larger than allowed.
    MessageTooLarge,
    /// A bulk request holds more devices than allowed.
    TooManyDevices,
    /// A rate limit was exceeded.
    ThrottlingException,
    /// An unexpected server failure.
    ServerError,
    /// The hub cannot serve the request now (storage failure, shutting down).
    ServiceUnavailable,
    /// A device did not answer a direct method within its response timeout.
    GatewayTimeout,
    /// A module with this id already exists on the device.
    ModuleAlreadyExistsOnDevice,
    /// The device already has the most modules allowed.
    TooManyModulesOnDevice,
}

impl ErrorCode {
    /// IoT Hub's six-digit numeric code, e.g. `400004`: the HTTP status followed by
    /// three digits. MQTT twin error bodies carry it as `errorCode`.
    pub fn code(self) -> u32 {
        match self {
            Self::InvalidOperation => 400_003,
            Self::ArgumentInvalid => 400_004,
            Self::ArgumentNull => 400_005,
            Self::IotHubFormatError => 400_006,
            Self::DeviceDefinedMultipleTimes => 400_011,
            Self::BulkRegistryOperationFailure => 400_013,
            Self::IotHubUnauthorizedAccess => 401_002,
            Self::IotHubNotFound => 404_000,
            Self::DeviceNotFound => 404_001,
            Self::ModuleNotFound => 404_010,
            Self::DeviceNotOnline => 404_103,
            Self::DeviceAlreadyExists => 409_001,
            Self::PreconditionFailed => 412_001,
            Self::RequestTimeout => 408_001,
            Self::MessageTooLarge => 413_001,
            Self::TooManyDevices => 413_002,
            Self::ThrottlingException => 429_001,
            Self::ServerError => 500_001,
            Self::ServiceUnavailable => 503_001,
            Self::GatewayTimeout => 504_101,
            Self::ModuleAlreadyExistsOnDevice => 409_301,
            Self::TooManyModulesOnDevice => 413_003,
        }
    }

    /// The HTTP status of this error.
    pub fn http_status(self) -> u16 {
        // Every code in the table is a status followed by three digits; the
        // quotient is always a valid status.
        u16::try_from(self.code() / 1000).unwrap_or(500)
    }

    /// The code's name as it appears after `ErrorCode:` and in `iothub-errorcode`.
    pub fn name(self) -> &'static str {
        match self {
            Self::ArgumentInvalid => "ArgumentInvalid",
            Self::ArgumentNull => "ArgumentNull",
            Self::IotHubFormatError => "IotHubFormatError",
            Self::InvalidOperation => "InvalidOperation",
            Self::DeviceDefinedMultipleTimes => "DeviceDefinedMultipleTimes",
            Self::BulkRegistryOperationFailure => "BulkRegistryOperationFailure",
            Self::IotHubUnauthorizedAccess => "IotHubUnauthorizedAccess",
            Self::IotHubNotFound => "IotHubNotFound",
            Self::DeviceNotFound => "DeviceNotFound",
            Self::ModuleNotFound => "ModuleNotFound",
            Self::DeviceNotOnline => "DeviceNotOnline",
            Self::DeviceAlreadyExists => "DeviceAlreadyExists",
            Self::PreconditionFailed => "PreconditionFailed",
            Self::RequestTimeout => "RequestTimeout",
            Self::MessageTooLarge => "MessageTooLarge",
            Self::TooManyDevices => "TooManyDevices",
            Self::ThrottlingException => "ThrottlingException",
            Self::ServerError => "ServerError",
            Self::ServiceUnavailable => "ServiceUnavailable",
            Self::GatewayTimeout => "GatewayTimeout",
            Self::ModuleAlreadyExistsOnDevice => "ModuleAlreadyExistsOnDevice",
            Self::TooManyModulesOnDevice => "TooManyModulesOnDevice",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A domain error: an IoT Hub error code and a human-readable message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct HubError {
    /// Which IoT Hub error this is.
    pub code: ErrorCode,
    /// What went wrong, for people.
    pub message: String,
}

impl HubError {
    /// An error with the given code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// `ArgumentInvalid` with a message.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ArgumentInvalid, message)
    }

    /// `DeviceNotFound` for a device id.
    pub fn device_not_found(device_id: &str) -> Self {
        Self::new(
            ErrorCode::DeviceNotFound,
            format!("Device '{device_id}' not found."),
        )
    }

    /// `PreconditionFailed` with a message.
    pub fn precondition(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::PreconditionFailed, message)
    }

    /// `IotHubUnauthorizedAccess`, always with IoT Hub's terse message so that a
    /// refusal does not tell an attacker which check failed.
    pub fn unauthorized() -> Self {
        Self::new(ErrorCode::IotHubUnauthorizedAccess, "Unauthorized")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_carry_their_status() {
        assert_eq!(ErrorCode::ArgumentInvalid.code(), 400_004);
        assert_eq!(ErrorCode::ArgumentInvalid.http_status(), 400);
        assert_eq!(ErrorCode::IotHubUnauthorizedAccess.http_status(), 401);
        assert_eq!(ErrorCode::PreconditionFailed.http_status(), 412);
        assert_eq!(ErrorCode::TooManyDevices.http_status(), 413);
        assert_eq!(ErrorCode::DeviceNotFound.name(), "DeviceNotFound");
    }
}
