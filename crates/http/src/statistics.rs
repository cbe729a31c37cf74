//! `/statistics`.

use crate::request::{authorize, json_response};
use crate::ApiError;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use serde_json::json;
use twinhub_core::policy::Permission;
use twinhub_service::Hub;

/// `GET /statistics/devices`.
pub async fn devices(
    State(hub): State<Hub>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&hub, &headers, &uri, &[Permission::RegistryRead])?;
    let s = hub.statistics();
    Ok(json_response(
        StatusCode::OK,
        &json!({"totalDeviceCount": s.total, "enabledDeviceCount": s.enabled, "disabledDeviceCount": s.disabled}),
    ))
}

/// `GET /statistics/service`.
pub async fn service(
    State(hub): State<Hub>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&hub, &headers, &uri, &[Permission::ServiceConnect])?;
    let s = hub.statistics();
    Ok(json_response(
        StatusCode::OK,
        &json!({"connectedDeviceCount": s.connected}),
    ))
}
