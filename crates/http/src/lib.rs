//! The HTTPS adapter: IoT Hub's service REST API (spec §5) over the service layer.
//!
//! # Layout
//! - [`router`] (this file): the routes, built without a socket so tests drive it
//!   with `tower::ServiceExt::oneshot`.
//! - [`error`]: [`ApiError`], the one place where domain errors become HTTP
//!   responses (IoT Hub's `{"Message":"ErrorCode:..."}` body and `iothub-errorcode`).
//! - [`request`]: extracting what handlers need — [`request::Authorized`] (the SAS
//!   check, an extractor that runs before the body is read), JSON bodies, decoded
//!   ids, `If-Match` — with IoT Hub's errors on bad input.
//! - [`devices`], [`modules`], [`twins`], [`methods`], [`statistics`]: the handlers.
//! - [`websocket`]: MQTT over WebSockets at `/$iothub/websocket`, handed to the
//!   MQTT endpoint.
//! - [`metrics`]: `GET /metrics`, every layer's counters as Prometheus text.
//! - [`server`]: the TLS accept loop (HTTP/1.1 with upgrades, header timeouts, a
//!   cap on handshakes in progress).

pub mod devices;
pub mod error;
pub mod methods;
pub mod metrics;
pub mod modules;
pub mod request;
pub mod server;
pub mod statistics;
pub mod twins;
pub mod websocket;

pub use error::ApiError;

use axum::routing::{get, post, put};
use axum::Router;
use twinhub_service::Hub;

/// The REST API's routes. Callers add their own (e.g. the MQTT WebSocket
/// endpoint) with `merge` before serving.
pub fn router(hub: Hub) -> Router {
    Router::new()
        .route("/devices", get(devices::list).post(devices::bulk))
        .route("/devices/", get(devices::list))
        .route("/devices/query", post(twins::query))
        .route("/devices/keys/regenerate", post(devices::regenerate_keys))
        .route(
            "/devices/{id}",
            put(devices::put).get(devices::get).delete(devices::delete),
        )
        .route("/devices/{id}/modules", get(modules::list))
        .route("/devices/{id}/modules/", get(modules::list))
        .route(
            "/devices/{id}/modules/{mid}",
            put(modules::put).get(modules::get).delete(modules::delete),
        )
        .route(
            "/twins/{id}/modules/{mid}",
            get(modules::get_twin)
                .patch(modules::patch_twin)
                .put(modules::replace_twin),
        )
        .route(
            "/twins/{id}",
            get(twins::get).patch(twins::patch).put(twins::replace),
        )
        .route("/twins/{id}/methods", post(methods::device))
        .route("/twins/{id}/modules/{mid}/methods", post(methods::module))
        .route("/statistics/devices", get(statistics::devices))
        .route("/statistics/service", get(statistics::service))
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .with_state(hub)
}
