//! Domain errors as IoT Hub's REST errors (spec §5.7, body form A): the status of
//! the error code, `Content-Type: application/json`, the `iothub-errorcode` header
//! and `{"Message":"ErrorCode:<Name>;<text>","ExceptionMessage":"Tracking ID:..."}`,
//! which is what the Node SDK's parser understands.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use twinhub_core::{ErrorCode, HubError};

/// A failed request.
#[derive(Debug)]
pub struct ApiError(
    pub HubError,
    Option<serde_json::Map<String, serde_json::Value>>,
);

impl ApiError {
    /// An error whose body carries `members` beside `Message`: a bulk request
    /// refused as a whole also answers in the bulk result's shape, which is all
    /// the Python SDK reads from a 400.
    pub fn with_members(
        error: HubError,
        members: serde_json::Map<String, serde_json::Value>,
    ) -> Self {
        Self(error, Some(members))
    }
}

impl From<HubError> for ApiError {
    fn from(e: HubError) -> Self {
        Self(e, None)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let HubError { code, message } = self.0;
        let tracking = uuid::Uuid::new_v4().simple().to_string();
        let now = twinhub_service::clock::now();
        let mut body = serde_json::json!({
            "Message": format!("ErrorCode:{};{}", code.name(), message),
            "ExceptionMessage": format!("Tracking ID:{tracking}-TimeStamp:{}", now.to_iso()),
        });
        if let (Some(members), Some(obj)) = (self.1, body.as_object_mut()) {
            obj.extend(members);
        }
        let status =
            StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, crate::request::json_body(&body)).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(crate::request::JSON),
        );
        headers.insert("iothub-errorcode", HeaderValue::from_static(code.name()));
        response
    }
}

/// Unknown paths.
pub async fn not_found() -> ApiError {
    ApiError::from(HubError::new(
        ErrorCode::IotHubNotFound,
        "The requested resource does not exist.",
    ))
}

/// Known paths with an unsupported method.
pub async fn method_not_allowed() -> ApiError {
    ApiError::from(HubError::new(
        ErrorCode::InvalidOperation,
        "The method is not allowed on this resource.",
    ))
}
