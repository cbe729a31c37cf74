//! The fleet routes in-process: module identities and twins, bulk key rotation,
//! direct methods' request checks and errors, and paths with encoded slashes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;
use twinhub_core::policy::{default_policies, Policy};
use twinhub_core::{sas, Identity};
use twinhub_service::{Hub, HubConfig};
use twinhub_store::SqliteStore;

const HOST: &str = "fleet.local";

struct Fixture {
    hub: Hub,
    policies: Vec<Policy>,
    _dir: tempfile::TempDir,
}

type Reply = (StatusCode, axum::http::HeaderMap, Value);

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("db")).unwrap();
    let policies = default_policies(&mut rand::rngs::OsRng);
    let config = HubConfig {
        host_names: vec![HOST.into()],
        limits: Default::default(),
        policies: policies.clone(),
    };
    let (hub, _committer) = Hub::open(config, store).unwrap();
    Fixture {
        hub,
        policies,
        _dir: dir,
    }
}

impl Fixture {
    async fn call(&self, policy: &str, method: &str, path: &str, body: Option<Value>) -> Reply {
        let p = self.policies.iter().find(|p| p.name == policy).unwrap();
        let token =
            sas::generate_token(HOST, &p.primary_key, Some(policy), i64::from(u32::MAX)).unwrap();
        let request = Request::builder()
            .method(method)
            .uri(format!("{path}?api-version=2021-04-12"))
            .header("Authorization", token)
            .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
            .unwrap();
        // As the listener serves it: encoded slashes decoded before routing.
        let app = twinhub_http::router(self.hub.clone())
            .map_request(twinhub_http::request::decode_encoded_slashes);
        let response = app.oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        };
        (status, headers, value)
    }

    async fn owner(&self, method: &str, path: &str, body: Option<Value>) -> Reply {
        self.call("iothubowner", method, path, body).await
    }
}

fn assert_error((status, headers, body): &Reply, want: StatusCode, code: &str) {
    assert_eq!(*status, want, "{body}");
    assert_eq!(headers["iothub-errorcode"], code, "{body}");
    let message = body["Message"].as_str().unwrap();
    assert!(
        message.starts_with(&format!("ErrorCode:{code};")),
        "{message}"
    );
}

#[tokio::test]
async fn module_identities_and_twins_over_rest() {
    let f = fixture();
    assert_error(
        &f.owner("PUT", "/devices/d1/modules/m1", Some(json!({})))
            .await,
        StatusCode::NOT_FOUND,
        "DeviceNotFound",
    );
    f.owner("PUT", "/devices/d1", Some(json!({"deviceId": "d1"})))
        .await;
    let (status, headers, created) = f
        .owner(
            "PUT",
            "/devices/d1/modules/m1",
            Some(json!({"deviceId": "d1", "moduleId": "m1"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{created}");
    assert_eq!(headers["etag"], "\"MQ==\"");
    assert_eq!(created["moduleId"], "m1");
    assert_error(
        &f.owner("PUT", "/devices/d1/modules/m1", Some(json!({})))
            .await,
        StatusCode::CONFLICT,
        "ModuleAlreadyExistsOnDevice",
    );
    assert_error(
        &f.call(
            "registryRead",
            "PUT",
            "/devices/d1/modules/m2",
            Some(json!({})),
        )
        .await,
        StatusCode::UNAUTHORIZED,
        "IotHubUnauthorizedAccess",
    );
    let (status, _, listed) = f
        .call("registryRead", "GET", "/devices/d1/modules", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(listed, json!([created]));
    let (_, _, got) = f.owner("GET", "/devices/d1/modules/m1", None).await;
    assert_eq!(got, created);

    let (status, headers, twin) = f
        .call(
            "service",
            "PATCH",
            "/twins/d1/modules/m1",
            Some(json!({"properties": {"desired": {"on": true}}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{twin}");
    assert_eq!(twin["moduleId"], "m1");
    assert_eq!(twin["properties"]["desired"]["on"], true);
    assert_eq!(
        headers["etag"],
        format!("\"{}\"", twin["etag"].as_str().unwrap())
    );
    assert_error(
        &f.call("registryRead", "GET", "/twins/d1/modules/m1", None)
            .await,
        StatusCode::UNAUTHORIZED,
        "IotHubUnauthorizedAccess",
    );
    assert_error(
        &f.owner("GET", "/twins/d1/modules/nope", None).await,
        StatusCode::NOT_FOUND,
        "ModuleNotFound",
    );
    let (status, _, body) = f.owner("DELETE", "/devices/d1/modules/m1", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(body, Value::Null);
    assert_error(
        &f.owner("GET", "/devices/d1/modules/m1", None).await,
        StatusCode::NOT_FOUND,
        "ModuleNotFound",
    );
}

#[tokio::test]
async fn bulk_key_rotation_renews_and_reports_partial_failures() {
    let f = fixture();
    let (_, _, device) = f
        .owner("PUT", "/devices/d1", Some(json!({"deviceId": "d1"})))
        .await;
    let (_, _, module) = f
        .owner("PUT", "/devices/d1/modules/m1", Some(json!({})))
        .await;
    let request = json!({"policyKey": "primaryKey", "devices": [
        {"id": "d1"}, {"id": "d1", "moduleId": "m1"}, {"id": "ghost"}, {"id": "d1", "moduleId": "nope"}
    ]});
    assert_error(
        &f.call(
            "registryRead",
            "POST",
            "/devices/keys/regenerate",
            Some(request.clone()),
        )
        .await,
        StatusCode::UNAUTHORIZED,
        "IotHubUnauthorizedAccess",
    );
    let (status, _, body) = f
        .owner("POST", "/devices/keys/regenerate", Some(request))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["policyKey"], "primaryKey");
    let rotated = body["rotatedKeys"].as_array().unwrap();
    assert_eq!(rotated.len(), 2);
    let keys = |v: &Value| v["authentication"]["symmetricKey"].clone();
    let (_, _, after) = f.owner("GET", "/devices/d1", None).await;
    assert_eq!(rotated[0]["id"], "d1");
    assert_eq!(rotated[0]["primaryKey"], keys(&after)["primaryKey"]);
    assert_ne!(keys(&after)["primaryKey"], keys(&device)["primaryKey"]);
    assert_eq!(keys(&after)["secondaryKey"], keys(&device)["secondaryKey"]);
    assert_ne!(after["etag"], device["etag"]);
    assert_eq!(rotated[1]["moduleId"], "m1");
    let (_, _, module_after) = f.owner("GET", "/devices/d1/modules/m1", None).await;
    assert_eq!(rotated[1]["primaryKey"], keys(&module_after)["primaryKey"]);
    assert_ne!(
        keys(&module_after)["primaryKey"],
        keys(&module)["primaryKey"]
    );
    let errors = body["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 2, "{body}");
    assert_eq!(errors[0]["id"], "ghost");
    assert_eq!(errors[0]["errorCode"], "DeviceNotFound");
    assert_eq!(errors[1]["errorCode"], "ModuleNotFound");

    let (_, _, both) = f
        .owner(
            "POST",
            "/devices/keys/regenerate",
            Some(json!({"policyKey": "both", "devices": [{"id": "d1"}]})),
        )
        .await;
    assert_ne!(
        both["rotatedKeys"][0]["secondaryKey"],
        keys(&after)["secondaryKey"]
    );
    for bad in [
        json!({"policyKey": "tertiaryKey", "devices": []}),
        json!({"devices": []}),
        json!({"policyKey": "both"}),
        json!({"policyKey": "both", "devices": [{"moduleId": "m"}]}),
    ] {
        assert_error(
            &f.owner("POST", "/devices/keys/regenerate", Some(bad)).await,
            StatusCode::BAD_REQUEST,
            "ArgumentInvalid",
        );
    }
}

#[tokio::test]
async fn method_calls_are_checked_before_anything_is_sent() {
    let f = fixture();
    f.owner("PUT", "/devices/d1", Some(json!({"deviceId": "d1"})))
        .await;
    let mut watch = f.hub.watch("d1");
    f.hub.methods_ready(&Identity::device("d1"), true);
    for (body, status, code) in [
        (
            json!({"methodName": "m", "responseTimeoutInSeconds": 3}),
            StatusCode::BAD_REQUEST,
            "ArgumentInvalid",
        ),
        (
            json!({"payload": 1}),
            StatusCode::BAD_REQUEST,
            "ArgumentInvalid",
        ),
        (json!("text"), StatusCode::BAD_REQUEST, "IotHubFormatError"),
        (
            json!({"methodName": "m", "payload": "x".repeat(140_000)}),
            StatusCode::PAYLOAD_TOO_LARGE,
            "MessageTooLarge",
        ),
    ] {
        assert_error(
            &f.call("service", "POST", "/twins/d1/methods", Some(body))
                .await,
            status,
            code,
        );
    }
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    assert!(
        watch.poll_recv(&mut cx).is_pending(),
        "a refused call reached the device"
    );
    assert_error(
        &f.call(
            "registryReadWrite",
            "POST",
            "/twins/d1/methods",
            Some(json!({"methodName": "m"})),
        )
        .await,
        StatusCode::UNAUTHORIZED,
        "IotHubUnauthorizedAccess",
    );
    assert_error(
        &f.call(
            "service",
            "POST",
            "/twins/ghost/methods",
            Some(json!({"methodName": "m"})),
        )
        .await,
        StatusCode::NOT_FOUND,
        "DeviceNotFound",
    );
    assert_error(
        &f.call(
            "service",
            "POST",
            "/twins/d1/modules/m9/methods",
            Some(json!({"methodName": "m"})),
        )
        .await,
        StatusCode::NOT_FOUND,
        "ModuleNotFound",
    );
    f.hub.methods_ready(&Identity::device("d1"), false);
    let offline = f
        .call(
            "service",
            "POST",
            "/twins/d1/methods",
            Some(json!({"methodName": "m"})),
        )
        .await;
    assert_error(&offline, StatusCode::NOT_FOUND, "DeviceNotOnline");
    assert_eq!(offline.1["content-type"], "application/json; charset=utf-8");
}

#[tokio::test]
async fn encoded_slashes_in_paths_are_separators() {
    let f = fixture();
    let (status, _, created) = f
        .owner(
            "PUT",
            "/devices%2Fdev%2B1",
            Some(json!({"deviceId": "dev+1"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{created}");
    assert_eq!(
        created["deviceId"], "dev+1",
        "other escapes are decoded exactly once"
    );
    let (status, _, twin) = f.owner("GET", "/twins%2Fdev%2B1", None).await;
    assert_eq!(status, StatusCode::OK, "{twin}");
    assert_eq!(twin["deviceId"], "dev+1");
    let (status, _, rows) = f
        .owner(
            "POST",
            "/devices%2fquery",
            Some(json!({"query": "SELECT deviceId FROM devices"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{rows}");
    assert_eq!(rows, json!([{"deviceId": "dev+1"}]));
    // An encoded slash inside an id is not a separator: the id is refused.
    let (status, _, body) = f.owner("PUT", "/devices/a%2Fb", Some(json!({}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    // The whole resource path as one segment, as IoT Explorer writes it.
    let (status, _, twin) = f
        .owner("GET", "/twins%2Fdev%2B1%2Fmodules%2Fnone", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{twin}");
    assert!(
        twin["Message"]
            .as_str()
            .unwrap()
            .starts_with("ErrorCode:ModuleNotFound;"),
        "{twin}"
    );
    // A literal "%25" stays a percent sign in the id: decoded once, not twice.
    let (status, _, odd) = f.owner("PUT", "/devices/a%252Fb", Some(json!({}))).await;
    assert_eq!(status, StatusCode::OK, "{odd}");
    assert_eq!(odd["deviceId"], "a%2Fb");
}
