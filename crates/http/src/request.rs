//! What handlers extract from requests, with IoT Hub's errors on bad input.

use axum::body::{Body, Bytes};
use axum::extract::rejection::PathRejection;
use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, Uri};
use axum::response::{IntoResponse, Response};
use percent_encoding::percent_decode_str;
use serde_json::Value;
use std::time::Duration;
use twinhub_core::etag::IfMatch;
use twinhub_core::policy::Permission;
use twinhub_core::{ErrorCode, HubError};
use twinhub_service::Hub;

use crate::ApiError;

/// The content type of every JSON response.
pub const JSON: &str = "application/json; charset=utf-8";

/// Serialises a JSON body (infallible for `Value`).
pub fn json_body(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

/// A `200` (or other status) JSON response with the content type the Node SDK
/// requires before it parses a body.
pub fn json_response(status: axum::http::StatusCode, value: &Value) -> Response {
    let mut response = (status, json_body(value)).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON));
    response
}

/// Like [`json_response`] with an `ETag: "<etag>"` header taken from the body.
pub fn json_with_etag(value: &Value) -> Response {
    let mut response = json_response(axum::http::StatusCode::OK, value);
    if let Some(etag) = value.get("etag").and_then(Value::as_str) {
        if let Ok(h) = HeaderValue::from_str(&format!("\"{etag}\"")) {
            response.headers_mut().insert(header::ETAG, h);
        }
    }
    response
}

/// The largest request body read: IoT Hub's twins are at most 32 KB a section
/// and bulk requests at most 100 identities, far below this.
pub const MAX_BODY: usize = 1024 * 1024;

/// How long a request body may take to arrive once its head has (the header
/// timeout of the listener ends with the head).
pub const BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// Reads and parses a request body as JSON. Handlers call it after authorizing,
/// so an unauthenticated client cannot make the hub buffer a body. A body over
/// [`MAX_BODY`] is `413 MessageTooLarge`, one still arriving after
/// [`BODY_TIMEOUT`] is `408 RequestTimeout`.
pub async fn read_json(body: Body) -> Result<Value, ApiError> {
    let bytes = match tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, MAX_BODY)).await
    {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(e)) => {
            let too_large = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            return Err(if too_large {
                HubError::new(
                    ErrorCode::MessageTooLarge,
                    format!("The request body exceeds {MAX_BODY} bytes."),
                )
            } else {
                HubError::new(
                    ErrorCode::IotHubFormatError,
                    format!("The request body could not be read: {e}."),
                )
            }
            .into());
        }
        Err(_) => {
            return Err(HubError::new(
                ErrorCode::RequestTimeout,
                format!(
                    "The request body did not arrive within {} s.",
                    BODY_TIMEOUT.as_secs()
                ),
            )
            .into())
        }
    };
    parse_json(&bytes)
}

/// Parses a request body as JSON; IoT Hub answers unparsable bodies with
/// `IotHubFormatError`.
fn parse_json(body: &Bytes) -> Result<Value, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(
            HubError::new(ErrorCode::IotHubFormatError, "The request body is empty.").into(),
        );
    }
    serde_json::from_slice(body).map_err(|e| {
        HubError::new(
            ErrorCode::IotHubFormatError,
            format!("The request body is not valid JSON: {e}."),
        )
        .into()
    })
}

/// The id path segment, percent-decoded exactly once (by the router).
pub fn id(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    path.map(|Path(id)| id)
        .map_err(|e| HubError::invalid(format!("Invalid path: {e}")).into())
}

/// A module's identity from its `{id}` and `{mid}` path segments, each
/// percent-decoded exactly once (by the router).
pub fn identity(
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<twinhub_core::Identity, ApiError> {
    path.map(|Path((device, module))| twinhub_core::Identity::module(device, module))
        .map_err(|e| HubError::invalid(format!("Invalid path: {e}")).into())
}

/// Turns the encoded slashes of a request path's first segment into path
/// separators before routing: IoT Explorer writes `/twins%2Fdev1` and
/// `/devices%2Fquery`, encoding the whole resource path as one segment. Only the
/// first segment is touched (a collection name never holds a slash), so an id
/// that contains an encoded slash (`/devices/a%2Fb`) stays one segment, decoded
/// once by the router and refused as an id; every other escape is left for the
/// router too.
pub fn decode_encoded_slashes<B>(mut request: axum::http::Request<B>) -> axum::http::Request<B> {
    let uri = request.uri();
    let path = uri.path();
    let first_end = path
        .get(1..)
        .and_then(|rest| rest.find('/'))
        .map_or(path.len(), |i| i + 1);
    let (first, rest) = path.split_at(first_end);
    if !first.contains("%2F") && !first.contains("%2f") {
        return request;
    }
    let decoded = format!("{}{rest}", first.replace("%2F", "/").replace("%2f", "/"));
    let rebuilt = match uri.query() {
        Some(q) => format!("{decoded}?{q}"),
        None => decoded,
    };
    let mut parts = uri.clone().into_parts();
    if let Ok(path_and_query) = rebuilt.parse() {
        parts.path_and_query = Some(path_and_query);
        if let Ok(new_uri) = Uri::from_parts(parts) {
            *request.uri_mut() = new_uri;
        }
    }
    request
}

/// The `If-Match` header.
pub fn if_match(headers: &HeaderMap) -> IfMatch {
    IfMatch::parse(headers.get(header::IF_MATCH).and_then(|v| v.to_str().ok()))
}

/// What an operation needs of the caller's policy: any one of [`Needs::ANY_OF`].
pub trait Needs: Send + Sync + 'static {
    /// The permissions, any one of which suffices.
    const ANY_OF: &'static [Permission];
}

/// Needs RegistryRead.
pub struct RegistryRead;
/// Needs RegistryWrite.
pub struct RegistryWrite;
/// Needs ServiceConnect.
pub struct ServiceConnect;
/// Needs ServiceConnect or RegistryRead (twin queries).
pub struct QueryAccess;

impl Needs for RegistryRead {
    const ANY_OF: &'static [Permission] = &[Permission::RegistryRead];
}
impl Needs for RegistryWrite {
    const ANY_OF: &'static [Permission] = &[Permission::RegistryWrite];
}
impl Needs for ServiceConnect {
    const ANY_OF: &'static [Permission] = &[Permission::ServiceConnect];
}
impl Needs for QueryAccess {
    const ANY_OF: &'static [Permission] = &[Permission::ServiceConnect, Permission::RegistryRead];
}

/// Proof that the request's SAS token is valid, scoped to its path and signed
/// with a policy that grants what `N` needs. As an extractor it runs before the
/// body is read (the body extractor comes last), so an unauthenticated client
/// never makes the hub buffer a body; every refusal is 401 `Unauthorized`.
pub struct Authorized<N: Needs>(std::marker::PhantomData<N>);

impl<N: Needs> axum::extract::FromRequestParts<Hub> for Authorized<N> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        hub: &Hub,
    ) -> Result<Self, Self::Rejection> {
        authorize(hub, &parts.headers, &parts.uri, N::ANY_OF)?;
        Ok(Self(std::marker::PhantomData))
    }
}

/// Checks the `Authorization` header against the request path's scope and the
/// permissions the operation needs (any one of `needs`).
pub fn authorize(
    hub: &Hub,
    headers: &HeaderMap,
    uri: &Uri,
    needs: &[Permission],
) -> Result<(), ApiError> {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let path = percent_decode_str(uri.path()).decode_utf8_lossy();
    hub.authorize_service(authorization, &path, needs, hub.now())
        .map_err(ApiError::from)
}
