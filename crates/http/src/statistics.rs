//! `/statistics`.

use crate::request::json_response;
use crate::request::{Authorized, RegistryRead, ServiceConnect};
use crate::ApiError;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::json;
use twinhub_service::Hub;

/// `GET /statistics/devices`.
pub async fn devices(
    State(hub): State<Hub>,
    _: Authorized<RegistryRead>,
) -> Result<Response, ApiError> {
    let s = hub.statistics();
    Ok(json_response(
        StatusCode::OK,
        &json!({"totalDeviceCount": s.total, "enabledDeviceCount": s.enabled, "disabledDeviceCount": s.disabled}),
    ))
}

/// `GET /statistics/service`.
pub async fn service(
    State(hub): State<Hub>,
    _: Authorized<ServiceConnect>,
) -> Result<Response, ApiError> {
    let s = hub.statistics();
    Ok(json_response(
        StatusCode::OK,
        &json!({"connectedDeviceCount": s.connected}),
    ))
}
