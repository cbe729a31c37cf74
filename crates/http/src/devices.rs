//! `/devices`: the identity registry.

use crate::request::{authorize, id, if_match, json_response, json_with_etag, read_json};
use crate::ApiError;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use std::collections::HashMap;
use twinhub_core::policy::Permission;
use twinhub_core::HubError;
use twinhub_service::Hub;

/// `PUT /devices/{id}`: create (no `If-Match`) or update.
pub async fn put(
    State(hub): State<Hub>,
    path: Result<Path<String>, PathRejection>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    authorize(&hub, &headers, &uri, &[Permission::RegistryWrite])?;
    let device_id = id(path)?;
    let body = read_json(body).await?;
    let device = hub
        .put_device(&device_id, &body, &if_match(&headers))
        .await?;
    Ok(json_with_etag(&device))
}

/// `GET /devices/{id}`.
pub async fn get(
    State(hub): State<Hub>,
    path: Result<Path<String>, PathRejection>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&hub, &headers, &uri, &[Permission::RegistryRead])?;
    Ok(json_with_etag(&hub.get_device(&id(path)?)?))
}

/// `DELETE /devices/{id}` → 204.
pub async fn delete(
    State(hub): State<Hub>,
    path: Result<Path<String>, PathRejection>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&hub, &headers, &uri, &[Permission::RegistryWrite])?;
    hub.delete_device(&id(path)?, &if_match(&headers)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /devices?top=N` (and Node's `GET /devices/`).
pub async fn list(
    State(hub): State<Hub>,
    Query(params): Query<HashMap<String, String>>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&hub, &headers, &uri, &[Permission::RegistryRead])?;
    let top = match params.get("top") {
        None => None,
        Some(t) => Some(t.parse::<usize>().map_err(|_| {
            HubError::invalid(format!("'top' must be a non-negative integer, not '{t}'."))
        })?),
    };
    Ok(json_response(
        StatusCode::OK,
        &Value::Array(hub.list_devices(top)),
    ))
}

/// `POST /devices`: bulk registry operations; 200 when every item succeeded,
/// 400 with the per-item errors otherwise.
pub async fn bulk(
    State(hub): State<Hub>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    authorize(&hub, &headers, &uri, &[Permission::RegistryWrite])?;
    let body = read_json(body).await?;
    let outcome = hub.bulk(&body).await.map_err(|e| {
        let mut members = serde_json::Map::new();
        members.insert("isSuccessful".into(), Value::Bool(false));
        let item = serde_json::json!({"deviceId": null, "errorCode": e.code.name(), "errorStatus": e.message});
        members.insert("errors".into(), Value::Array(vec![item]));
        members.insert("warnings".into(), Value::Array(Vec::new()));
        ApiError::with_members(e, members)
    })?;
    let status = if outcome.successful {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    Ok(json_response(status, &outcome.body))
}
