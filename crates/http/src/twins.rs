//! `/twins` and `/devices/query`.

use crate::request::{id, if_match, json_response, json_with_etag, read_json};
use crate::request::{Authorized, QueryAccess, ServiceConnect};
use crate::ApiError;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use serde_json::Value;
use twinhub_core::{ErrorCode, HubError, Identity};
use twinhub_service::Hub;

/// `GET /twins/{id}`.
pub async fn get(
    State(hub): State<Hub>,
    path: Result<Path<String>, PathRejection>,
    _: Authorized<ServiceConnect>,
) -> Result<Response, ApiError> {
    Ok(json_with_etag(&hub.twin(&Identity::device(id(path)?))?))
}

/// `PATCH /twins/{id}`: merge tags and desired properties.
pub async fn patch(
    State(hub): State<Hub>,
    path: Result<Path<String>, PathRejection>,
    _: Authorized<ServiceConnect>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let target = Identity::device(id(path)?);
    write(&hub, target, TwinWrite::Patch, &headers, body).await
}

/// `PUT /twins/{id}`: replace tags and desired properties.
pub async fn replace(
    State(hub): State<Hub>,
    path: Result<Path<String>, PathRejection>,
    _: Authorized<ServiceConnect>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let target = Identity::device(id(path)?);
    write(&hub, target, TwinWrite::Replace, &headers, body).await
}

/// Which service-side twin write.
#[derive(Debug, Clone, Copy)]
pub(crate) enum TwinWrite {
    /// Merge (`PATCH`).
    Patch,
    /// Replace (`PUT`).
    Replace,
}

/// A service-side write to the twin of a device or module (its caller holds an
/// [`Authorized<ServiceConnect>`]): body read, answered with the whole twin and
/// its etag.
pub(crate) async fn write(
    hub: &Hub,
    target: Identity,
    kind: TwinWrite,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = read_json(body).await?;
    let condition = if_match(headers);
    let twin = match kind {
        TwinWrite::Patch => hub.patch_twin_of(&target, &body, &condition).await?,
        TwinWrite::Replace => hub.replace_twin_of(&target, &body, &condition).await?,
    };
    Ok(json_with_etag(&twin))
}

/// `POST /devices/query`: one page of a twin query. `x-ms-item-type` is always
/// sent; `x-ms-continuation` only when another page exists (an empty header would
/// make the Node SDK restart the query forever).
pub async fn query(
    State(hub): State<Hub>,
    _: Authorized<QueryAccess>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = read_json(body).await?;
    let text = body.get("query").and_then(Value::as_str).ok_or_else(|| {
        HubError::invalid("The request body must be {\"query\": \"SELECT ...\"}.")
    })?;
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let (text, max_item_count, continuation) = (
        text.to_owned(),
        header("x-ms-max-item-count"),
        header("x-ms-continuation"),
    );
    // A full scan runs for up to a second per million twins: on a blocking thread
    // it stalls no runtime worker (and the requests scheduled behind it).
    let page = tokio::task::spawn_blocking(move || {
        hub.query(&text, max_item_count.as_deref(), continuation.as_deref())
    })
    .await
    .map_err(|e| HubError::new(ErrorCode::ServerError, format!("the query failed: {e}")))??;
    let mut response = json_response(StatusCode::OK, &Value::Array(page.items));
    let out = response.headers_mut();
    out.insert(
        "x-ms-item-type",
        HeaderValue::from_static(page.item_type.as_str()),
    );
    if let Some(token) = page.continuation {
        let value = HeaderValue::from_str(&token).map_err(|_| {
            HubError::new(
                ErrorCode::ServerError,
                "continuation token is not a header value",
            )
        })?;
        out.insert("x-ms-continuation", value);
    }
    Ok(response)
}
