//! `/devices`: the identity registry.

use crate::request::{id, if_match, json_response, json_with_etag, read_json};
use crate::request::{Authorized, RegistryRead, RegistryWrite};
use crate::ApiError;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use std::collections::HashMap;
use twinhub_core::{HubError, Identity};
use twinhub_service::Hub;

/// `PUT /devices/{id}`: create (no `If-Match`) or update.
pub async fn put(
    State(hub): State<Hub>,
    path: Result<Path<String>, PathRejection>,
    _: Authorized<RegistryWrite>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
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
    _: Authorized<RegistryRead>,
) -> Result<Response, ApiError> {
    Ok(json_with_etag(&hub.get_device(&id(path)?)?))
}

/// `DELETE /devices/{id}` → 204.
pub async fn delete(
    State(hub): State<Hub>,
    path: Result<Path<String>, PathRejection>,
    _: Authorized<RegistryWrite>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    hub.delete_device(&id(path)?, &if_match(&headers)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /devices?top=N` (and Node's `GET /devices/`).
pub async fn list(
    State(hub): State<Hub>,
    Query(params): Query<HashMap<String, String>>,
    _: Authorized<RegistryRead>,
) -> Result<Response, ApiError> {
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
    _: Authorized<RegistryWrite>,
    body: Body,
) -> Result<Response, ApiError> {
    let body = read_json(body).await?;
    let outcome = hub.bulk(&body).await.map_err(|e| {
        let mut members = serde_json::Map::new();
        members.insert("isSuccessful".into(), Value::Bool(false));
        let item = serde_json::json!({"deviceId": null, "errorCode": e.code.name(), "errorStatus": e.message});
        members.insert("errors".into(), Value::Array(vec![item]));
        members.insert("warnings".into(), Value::Array(Vec::new()));
        ApiError::with_members(e, members)
    })?;
    let errors: Vec<Value> = outcome
        .errors
        .iter()
        .map(|item| {
            serde_json::json!({
                "deviceId": item.device_id,
                "errorCode": item.error.code.name(),
                "errorStatus": item.error.message,
                "operation": item.operation,
            })
        })
        .collect();
    let successful = outcome.successful();
    let status = if successful {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    Ok(json_response(
        status,
        &serde_json::json!({"isSuccessful": successful, "errors": errors, "warnings": []}),
    ))
}

/// The most identities one `POST /devices/keys/regenerate` may name (the Azure
/// CLI sends batches of 1000).
pub const MAX_KEY_ROTATIONS: usize = 1000;

/// `POST /devices/keys/regenerate`: `{"policyKey": "primaryKey"|"secondaryKey"|"both",
/// "devices": [{"id": d, "moduleId"?: m}, ...]}`. Answers 200 with the keys of
/// every identity rotated and an error for each that was not.
pub async fn regenerate_keys(
    State(hub): State<Hub>,
    _: Authorized<RegistryWrite>,
    body: Body,
) -> Result<Response, ApiError> {
    use twinhub_service::keys::KeySelection;
    let body = read_json(body).await?;
    let which = KeySelection::parse(body.get("policyKey").and_then(Value::as_str).ok_or_else(
        || HubError::invalid("policyKey is required: primaryKey, secondaryKey or both."),
    )?)?;
    let items = body
        .get("devices")
        .and_then(Value::as_array)
        .ok_or_else(|| HubError::invalid("devices must be an array of {\"id\", \"moduleId\"}."))?;
    if items.len() > MAX_KEY_ROTATIONS {
        return Err(HubError::invalid(format!(
            "At most {MAX_KEY_ROTATIONS} identities per request, this one names {}.",
            items.len()
        ))
        .into());
    }
    let mut targets = Vec::with_capacity(items.len());
    for item in items {
        let text = |key: &str| item.get(key).and_then(Value::as_str).map(str::to_owned);
        let device_id =
            text("id").ok_or_else(|| HubError::invalid("Each device needs a string \"id\"."))?;
        targets.push(match text("moduleId") {
            Some(module_id) => Identity::module(device_id, module_id),
            None => Identity::device(device_id),
        });
    }
    let outcome = hub.regenerate_keys(which, &targets).await;
    let with_ids = |identity: &Identity, mut entry: serde_json::Map<String, Value>| {
        entry.insert("id".into(), Value::String(identity.device_id.clone()));
        if let Some(m) = &identity.module_id {
            entry.insert("moduleId".into(), Value::String(m.clone()));
        }
        Value::Object(entry)
    };
    let rotated: Vec<Value> = outcome
        .rotated
        .iter()
        .map(|r| {
            let mut entry = serde_json::Map::new();
            entry.insert("primaryKey".into(), Value::String(r.primary_key.clone()));
            entry.insert(
                "secondaryKey".into(),
                Value::String(r.secondary_key.clone()),
            );
            with_ids(&r.identity, entry)
        })
        .collect();
    let errors: Vec<Value> = outcome
        .errors
        .iter()
        .map(|(identity, e)| {
            let mut entry = serde_json::Map::new();
            entry.insert("errorCode".into(), Value::String(e.code.name().into()));
            entry.insert("errorStatus".into(), Value::String(e.message.clone()));
            with_ids(identity, entry)
        })
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({"policyKey": which.as_str(), "rotatedKeys": rotated, "errors": errors}),
    ))
}
