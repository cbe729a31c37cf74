//! `POST /twins/{id}/methods` and `POST /twins/{id}/modules/{mid}/methods`:
//! direct methods (fleet spec §1).

use crate::request::{json_response, read_json};
use crate::request::{Authorized, ServiceConnect};
use crate::ApiError;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use twinhub_core::method::MethodRequest;
use twinhub_core::Identity;
use twinhub_service::Hub;

/// `POST /twins/{id}/methods`.
pub async fn device(
    State(hub): State<Hub>,
    path: Result<Path<String>, PathRejection>,
    _: Authorized<ServiceConnect>,
    body: Body,
) -> Result<Response, ApiError> {
    let device_id = crate::request::id(path)?;
    invoke(&hub, Identity::device(device_id), body).await
}

/// `POST /twins/{id}/modules/{mid}/methods`.
pub async fn module(
    State(hub): State<Hub>,
    path: Result<Path<(String, String)>, PathRejection>,
    _: Authorized<ServiceConnect>,
    body: Body,
) -> Result<Response, ApiError> {
    invoke(&hub, crate::request::identity(path)?, body).await
}

/// Answers `200 {"status", "payload"}` whatever status the device chose; the
/// hub's own failures (unknown target, offline, no answer) are errors.
async fn invoke(hub: &Hub, target: Identity, body: Body) -> Result<Response, ApiError> {
    let request = MethodRequest::from_json(&read_json(body).await?)?;
    let answer = hub.invoke_method(&target, &request).await?;
    Ok(json_response(StatusCode::OK, &answer.to_json()))
}
