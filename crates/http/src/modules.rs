//! `/devices/{id}/modules` and `/twins/{id}/modules/{mid}`: module identities
//! and module twins (fleet spec §2.1, §2.2).

use crate::request::{id, identity, if_match, json_response, json_with_etag, read_json};
use crate::request::{Authorized, RegistryRead, RegistryWrite, ServiceConnect};
use crate::twins::{self, TwinWrite};
use crate::ApiError;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use twinhub_service::Hub;

type Ids = Result<Path<(String, String)>, PathRejection>;

/// `PUT /devices/{id}/modules/{mid}`: create (no `If-Match`) or update; 200.
pub async fn put(
    State(hub): State<Hub>,
    path: Ids,
    _: Authorized<RegistryWrite>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let module = identity(path)?;
    let body = read_json(body).await?;
    let module_id = module.module_id.as_deref().unwrap_or_default();
    let json = hub
        .put_module(&module.device_id, module_id, &body, &if_match(&headers))
        .await?;
    Ok(json_with_etag(&json))
}

/// `GET /devices/{id}/modules/{mid}`.
pub async fn get(
    State(hub): State<Hub>,
    path: Ids,
    _: Authorized<RegistryRead>,
) -> Result<Response, ApiError> {
    let module = identity(path)?;
    let module_id = module.module_id.as_deref().unwrap_or_default();
    Ok(json_with_etag(
        &hub.get_module(&module.device_id, module_id)?,
    ))
}

/// `DELETE /devices/{id}/modules/{mid}` → 204.
pub async fn delete(
    State(hub): State<Hub>,
    path: Ids,
    _: Authorized<RegistryWrite>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let module = identity(path)?;
    let module_id = module.module_id.as_deref().unwrap_or_default();
    hub.delete_module(&module.device_id, module_id, &if_match(&headers))
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /devices/{id}/modules`: every module of the device (no paging).
pub async fn list(
    State(hub): State<Hub>,
    path: Result<Path<String>, PathRejection>,
    _: Authorized<RegistryRead>,
) -> Result<Response, ApiError> {
    let modules = hub.list_modules(&id(path)?)?;
    Ok(json_response(StatusCode::OK, &Value::Array(modules)))
}

/// `GET /twins/{id}/modules/{mid}`.
pub async fn get_twin(
    State(hub): State<Hub>,
    path: Ids,
    _: Authorized<ServiceConnect>,
) -> Result<Response, ApiError> {
    Ok(json_with_etag(&hub.twin(&identity(path)?)?))
}

/// `PATCH /twins/{id}/modules/{mid}`: merge tags and desired properties.
pub async fn patch_twin(
    State(hub): State<Hub>,
    path: Ids,
    _: Authorized<ServiceConnect>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let target = identity(path)?;
    twins::write(&hub, target, TwinWrite::Patch, &headers, body).await
}

/// `PUT /twins/{id}/modules/{mid}`: replace tags and desired properties.
pub async fn replace_twin(
    State(hub): State<Hub>,
    path: Ids,
    _: Authorized<ServiceConnect>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let target = identity(path)?;
    twins::write(&hub, target, TwinWrite::Replace, &headers, body).await
}
