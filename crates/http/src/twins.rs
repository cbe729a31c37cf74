//! `/twins` and `/devices/query`.

use crate::request::{authorize, id, if_match, json_with_etag, parse_json};
use crate::ApiError;
use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Uri};
use axum::response::Response;
use twinhub_core::policy::Permission;
use twinhub_core::{ErrorCode, HubError};
use twinhub_service::Hub;

/// `GET /twins/{id}`.
pub async fn get(
    State(hub): State<Hub>,
    path: Result<Path<String>, PathRejection>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&hub, &headers, &uri, &[Permission::ServiceConnect])?;
    Ok(json_with_etag(&hub.get_twin(&id(path)?)?))
}

/// `PATCH /twins/{id}`: merge tags and desired properties.
pub async fn patch(
    State(hub): State<Hub>,
    path: Result<Path<String>, PathRejection>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    authorize(&hub, &headers, &uri, &[Permission::ServiceConnect])?;
    let device_id = id(path)?;
    let body = parse_json(&body)?;
    Ok(json_with_etag(
        &hub.patch_twin(&device_id, &body, &if_match(&headers))
            .await?,
    ))
}

/// `PUT /twins/{id}`: replace tags and desired properties.
pub async fn replace(
    State(hub): State<Hub>,
    path: Result<Path<String>, PathRejection>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    authorize(&hub, &headers, &uri, &[Permission::ServiceConnect])?;
    let device_id = id(path)?;
    let body = parse_json(&body)?;
    Ok(json_with_etag(
        &hub.replace_twin(&device_id, &body, &if_match(&headers))
            .await?,
    ))
}

/// `POST /devices/query`. The query language lands separately; until then the
/// endpoint answers like IoT Hub does for a query it cannot run.
pub async fn query(
    State(hub): State<Hub>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(
        &hub,
        &headers,
        &uri,
        &[Permission::ServiceConnect, Permission::RegistryRead],
    )?;
    Err(HubError::new(
        ErrorCode::InvalidOperation,
        "Twin queries are not available yet.",
    )
    .into())
}
