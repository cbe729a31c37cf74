//! The REST API in-process: requests through the router with `oneshot`, asserting
//! status codes, IoT Hub's error shape and that failed writes change nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;
use twinhub_core::policy::{default_policies, Policy};
use twinhub_core::sas;
use twinhub_service::{Hub, HubConfig};
use twinhub_store::SqliteStore;

const HOST: &str = "testhub.local";

struct Fixture {
    app: Router,
    hub: Hub,
    policies: Vec<Policy>,
    _dir: tempfile::TempDir,
}

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
        app: twinhub_http::router(hub.clone()),
        hub,
        policies,
        _dir: dir,
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

impl Fixture {
    fn token(&self, policy: &str) -> String {
        self.token_for(policy, HOST, now() + 3600)
    }

    fn token_for(&self, policy: &str, resource: &str, expiry: i64) -> String {
        let p = self.policies.iter().find(|p| p.name == policy).unwrap();
        sas::generate_token(resource, &p.primary_key, Some(policy), expiry).unwrap()
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        auth: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> (StatusCode, axum::http::HeaderMap, Value) {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{path}?api-version=2021-04-12"));
        if let Some(a) = auth {
            req = req.header("Authorization", a);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req
            .body(body.map_or_else(Body::empty, |b| Body::from(b.to_owned())))
            .unwrap();
        let response = self.app.clone().oneshot(req).await.unwrap();
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

    async fn owner(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> (StatusCode, axum::http::HeaderMap, Value) {
        let token = self.token("iothubowner");
        let body = body.map(|b| b.to_string());
        self.call(method, path, Some(&token), headers, body.as_deref())
            .await
    }

    /// An owner call with a raw (possibly invalid or huge) body.
    async fn owner_raw(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> (StatusCode, axum::http::HeaderMap, Value) {
        let token = self.token("iothubowner");
        self.call(method, path, Some(&token), headers, Some(body))
            .await
    }

    async fn create(&self, id: &str) -> Value {
        let path = format!("/devices/{}", percent(id));
        let (status, _, body) = self
            .owner("PUT", &path, &[], Some(json!({"deviceId": id})))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }
}

fn percent(id: &str) -> String {
    percent_encoding::utf8_percent_encode(id, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn assert_error(
    status: StatusCode,
    headers: &axum::http::HeaderMap,
    body: &Value,
    want: StatusCode,
    code: &str,
) {
    assert_eq!(status, want, "{body}");
    assert_eq!(headers["iothub-errorcode"], code);
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let message = body["Message"].as_str().unwrap();
    assert!(
        message.starts_with(&format!("ErrorCode:{code};")),
        "{message}"
    );
    assert!(body["ExceptionMessage"]
        .as_str()
        .unwrap()
        .starts_with("Tracking ID:"));
}

#[tokio::test]
async fn device_lifecycle_with_status_codes() {
    let f = fixture();
    let device = f.create("dev1").await;
    assert_eq!(device["status"], "enabled");
    assert_eq!(device["authentication"]["type"], "sas");
    assert!(
        device["authentication"]["symmetricKey"]["primaryKey"]
            .as_str()
            .unwrap()
            .len()
            == 44
    );

    let (s, h, b) = f
        .owner(
            "PUT",
            "/devices/dev1",
            &[],
            Some(json!({"deviceId": "dev1"})),
        )
        .await;
    assert_error(s, &h, &b, StatusCode::CONFLICT, "DeviceAlreadyExists");

    let etag = device["etag"].as_str().unwrap().to_owned();
    let (s, h, b) = f
        .owner(
            "PUT",
            "/devices/dev1",
            &[("If-Match", "\"bogus\"")],
            Some(json!({"deviceId": "dev1", "status": "disabled"})),
        )
        .await;
    assert_error(
        s,
        &h,
        &b,
        StatusCode::PRECONDITION_FAILED,
        "PreconditionFailed",
    );
    let quoted = format!("\"{etag}\"");
    let (s, h, b) = f
        .owner(
            "PUT",
            "/devices/dev1",
            &[("If-Match", &quoted)],
            Some(json!({"deviceId": "dev1", "status": "disabled"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["status"], "disabled");
    assert_ne!(b["etag"], device["etag"]);
    assert_eq!(h["etag"], format!("\"{}\"", b["etag"].as_str().unwrap()));

    let (s, h, b) = f
        .owner(
            "PUT",
            "/devices/ghost",
            &[("If-Match", "\"*\"")],
            Some(json!({})),
        )
        .await;
    assert_error(s, &h, &b, StatusCode::NOT_FOUND, "DeviceNotFound");

    let (s, _, b) = f.owner("GET", "/devices/", &[], None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b.as_array().unwrap().len(), 1);
    let (_, _, b) = f.owner("GET", "/statistics/devices", &[], None).await;
    assert_eq!(
        b,
        json!({"totalDeviceCount": 1, "enabledDeviceCount": 0, "disabledDeviceCount": 1})
    );

    let (s, _, b) = f
        .owner("DELETE", "/devices/dev1", &[("If-Match", "\"*\"")], None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(b, Value::Null);
    let (s, h, b) = f.owner("GET", "/devices/dev1", &[], None).await;
    assert_error(s, &h, &b, StatusCode::NOT_FOUND, "DeviceNotFound");
    let (s, h, b) = f.owner("GET", "/twins/dev1", &[], None).await;
    assert_error(s, &h, &b, StatusCode::NOT_FOUND, "DeviceNotFound");
    let (s, h, b) = f.owner("DELETE", "/devices/dev1", &[], None).await;
    assert_error(s, &h, &b, StatusCode::NOT_FOUND, "DeviceNotFound");
}

#[tokio::test]
async fn ids_with_reserved_characters_are_decoded_once() {
    let f = fixture();
    let id = "dev:1;a=b$c#d?e%f";
    let device = f.create(id).await;
    assert_eq!(device["deviceId"], id);
    let (s, _, twin) = f
        .owner("GET", &format!("/twins/{}", percent(id)), &[], None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(twin["deviceId"], id);
    // "%25" must not be decoded twice into another id.
    let (s, _, _) = f.owner("GET", "/devices/dev%253A1", &[], None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn twin_patch_etags_and_replace() {
    let f = fixture();
    f.create("t1").await;
    let (s, h, twin) = f.owner("GET", "/twins/t1", &[], None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(h["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    assert_eq!(twin["etag"], "AAAAAAAAAAE=");
    assert_eq!(twin["version"], 2);

    let patch = json!({"tags": {"loc": "x"}, "properties": {"desired": {"a": {"b": 1, "c": 2}}}});
    let (s, _, twin) = f
        .owner(
            "PATCH",
            "/twins/t1",
            &[("If-Match", "\"AAAAAAAAAAE=\"")],
            Some(patch.clone()),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{twin}");
    assert_eq!(twin["etag"], "AAAAAAAAAAI=");
    assert_eq!(twin["properties"]["desired"]["$version"], 2);

    let (s, h, b) = f
        .owner(
            "PATCH",
            "/twins/t1",
            &[("If-Match", "\"AAAAAAAAAAE=\"")],
            Some(patch),
        )
        .await;
    assert_error(
        s,
        &h,
        &b,
        StatusCode::PRECONDITION_FAILED,
        "PreconditionFailed",
    );

    let (s, _, twin) = f
        .owner(
            "PATCH",
            "/twins/t1",
            &[("If-Match", "\"*\"")],
            Some(json!({"properties": {"desired": {"a": {"b": null}}}})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(twin["properties"]["desired"]["a"], json!({"c": 2}));
    assert!(twin["properties"]["desired"]["$metadata"]["a"]
        .get("b")
        .is_none());

    // A reported update in between does not move the etag (spec §7.4).
    f.hub
        .patch_reported("t1", &json!({"fw": "1"}), None)
        .await
        .unwrap();
    let (_, _, after) = f.owner("GET", "/twins/t1", &[], None).await;
    assert_eq!(after["etag"], twin["etag"]);
    assert_eq!(after["version"], twin["version"].as_i64().unwrap() + 1);

    let (s, _, twin) = f
        .owner(
            "PUT",
            "/twins/t1",
            &[("If-Match", "\"*\"")],
            Some(json!({"tags": {"n": 1}, "properties": {"desired": {"z": 1}}})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(twin["tags"], json!({"n": 1}));
    assert_eq!(twin["properties"]["desired"]["z"], 1);
    assert!(twin["properties"]["desired"].get("a").is_none());
    assert_eq!(twin["properties"]["reported"]["fw"], "1");
}

#[tokio::test]
async fn bad_input_gets_iot_hub_errors_and_changes_nothing() {
    let f = fixture();
    f.create("b1").await;
    let (_, _, before) = f.owner("GET", "/twins/b1", &[], None).await;
    let token = f.token("iothubowner");
    let nest = (0..12).fold(json!(1), |inner, i| json!({ format!("l{i}"): inner }));
    let cases: Vec<(String, &str)> = vec![
        ("{not json".into(), "IotHubFormatError"),
        ("".into(), "IotHubFormatError"),
        ("[1,2]".into(), "ArgumentInvalid"),
        ("\"text\"".into(), "ArgumentInvalid"),
        (
            json!({"properties": {"desired": {"bad.key": 1}}}).to_string(),
            "ArgumentInvalid",
        ),
        (
            json!({"properties": {"desired": {"$bad": 1}}}).to_string(),
            "ArgumentInvalid",
        ),
        (
            json!({"properties": {"desired": {"bad key": 1}}}).to_string(),
            "ArgumentInvalid",
        ),
        (
            json!({"properties": {"desired": nest}}).to_string(),
            "ArgumentInvalid",
        ),
        (
            json!({"properties": {"desired": {"s": "x".repeat(4097)}}}).to_string(),
            "ArgumentInvalid",
        ),
        (
            json!({"properties": {"desired": {"n": 4_503_599_627_370_496i64}}}).to_string(),
            "ArgumentInvalid",
        ),
        (
            json!({"properties": {"desired": {"arr": [1, null]}}}).to_string(),
            "ArgumentInvalid",
        ),
        (
            json!({"tags": {"a": "x".repeat(4000), "b": "x".repeat(4000), "c": "x".repeat(300)}})
                .to_string(),
            "ArgumentInvalid",
        ),
        (
            json!({"tags": {"ok": 1}, "properties": {"desired": {"bad.key": 1}}}).to_string(),
            "ArgumentInvalid",
        ),
    ];
    for (body, code) in cases {
        let (s, h, b) = f
            .call("PATCH", "/twins/b1", Some(&token), &[], Some(&body))
            .await;
        assert_error(s, &h, &b, StatusCode::BAD_REQUEST, code);
        let (_, _, now) = f.owner("GET", "/twins/b1", &[], None).await;
        assert_eq!(now, before, "twin changed by {body}");
    }
    let (s, h, b) = f
        .call(
            "PUT",
            "/devices/b2",
            Some(&token),
            &[],
            Some("{\"deviceId\": \"other\"}"),
        )
        .await;
    assert_error(s, &h, &b, StatusCode::BAD_REQUEST, "ArgumentInvalid");
    let (s, h, b) = f
        .call("PUT", "/devices/a%2Fb", Some(&token), &[], Some("{}"))
        .await;
    assert_error(s, &h, &b, StatusCode::BAD_REQUEST, "ArgumentInvalid");
    let (s, h, b) = f.call("GET", "/nowhere", Some(&token), &[], None).await;
    assert_error(s, &h, &b, StatusCode::NOT_FOUND, "IotHubNotFound");
}

#[tokio::test]
async fn authorization_follows_the_policy_matrix() {
    let f = fixture();
    f.create("a1").await;
    let cases: &[(&str, &str, &str, &[&str])] = &[
        (
            "GET",
            "/devices/a1",
            "",
            &["iothubowner", "registryRead", "registryReadWrite"],
        ),
        (
            "GET",
            "/devices",
            "",
            &["iothubowner", "registryRead", "registryReadWrite"],
        ),
        (
            "GET",
            "/statistics/devices",
            "",
            &["iothubowner", "registryRead", "registryReadWrite"],
        ),
        (
            "PUT",
            "/devices/new-{p}",
            "{}",
            &["iothubowner", "registryReadWrite"],
        ),
        ("GET", "/twins/a1", "", &["iothubowner", "service"]),
        (
            "PATCH",
            "/twins/a1",
            "{\"tags\":{\"x\":1}}",
            &["iothubowner", "service"],
        ),
        (
            "GET",
            "/statistics/service",
            "",
            &["iothubowner", "service"],
        ),
    ];
    for (method, path, body, allowed) in cases {
        for policy in [
            "iothubowner",
            "service",
            "device",
            "registryRead",
            "registryReadWrite",
        ] {
            let path = path.replace("{p}", policy);
            let token = f.token(policy);
            let body = (!body.is_empty()).then_some(*body);
            let (s, _, b) = f.call(method, &path, Some(&token), &[], body).await;
            if allowed.contains(&policy) {
                assert!(s.is_success(), "{policy} {method} {path}: {s} {b}");
            } else {
                assert_eq!(s, StatusCode::UNAUTHORIZED, "{policy} {method} {path}");
                assert_eq!(
                    b["Message"],
                    "ErrorCode:IotHubUnauthorizedAccess;Unauthorized"
                );
            }
        }
    }
    let bad = [
        None,
        Some("SharedAccessSignature garbage".to_owned()),
        Some(f.token_for("iothubowner", HOST, now() - 1)),
        Some(f.token_for("iothubowner", "otherhub.local", now() + 60)),
        Some(f.token_for("iothubowner", &format!("{HOST}/devices/other"), now() + 60)),
        Some(
            sas::generate_token(
                HOST,
                "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
                Some("iothubowner"),
                now() + 60,
            )
            .unwrap(),
        ),
        Some(sas::generate_token(HOST, &f.policies[0].primary_key, None, now() + 60).unwrap()),
        Some(
            sas::generate_token(
                HOST,
                &f.policies[0].primary_key,
                Some("nosuchpolicy"),
                now() + 60,
            )
            .unwrap(),
        ),
    ];
    for auth in bad {
        let (s, h, b) = f
            .call("GET", "/devices/a1", auth.as_deref(), &[], None)
            .await;
        assert_error(
            s,
            &h,
            &b,
            StatusCode::UNAUTHORIZED,
            "IotHubUnauthorizedAccess",
        );
    }
    // A scope of {host}/devices covers the registry.
    let scoped = f.token_for("iothubowner", &format!("{HOST}/devices"), now() + 60);
    let (s, _, _) = f.call("GET", "/devices/a1", Some(&scoped), &[], None).await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn bulk_create_update_delete() {
    let f = fixture();
    let items: Vec<Value> = (0..3).map(|i| json!({"id": format!("bk{i}"), "importMode": "create", "authentication": {"type": "sas", "symmetricKey": {"primaryKey": "", "secondaryKey": ""}}})).collect();
    let (s, _, b) = f
        .owner("POST", "/devices", &[], Some(Value::Array(items.clone())))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(
        b,
        json!({"isSuccessful": true, "errors": [], "warnings": []})
    );

    let (s, _, b) = f.owner("POST", "/devices", &[], Some(json!([{"id": "bk0", "importMode": "create"}, {"id": "bk9", "importMode": "create"}]))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(b["isSuccessful"], false);
    assert_eq!(b["errors"][0]["deviceId"], "bk0");
    assert_eq!(b["errors"][0]["errorCode"], "DeviceAlreadyExists");
    assert_eq!(
        f.owner("GET", "/devices/bk9", &[], None).await.0,
        StatusCode::OK
    );

    let (s, h, b) = f
        .owner(
            "POST",
            "/devices",
            &[],
            Some(json!([{"id": "x", "importMode": "create"}, {"id": "x", "importMode": "delete"}])),
        )
        .await;
    assert_error(
        s,
        &h,
        &b,
        StatusCode::BAD_REQUEST,
        "DeviceDefinedMultipleTimes",
    );
    let many: Vec<Value> = (0..101).map(|i| json!({"id": format!("m{i}")})).collect();
    let (s, h, b) = f
        .owner("POST", "/devices", &[], Some(Value::Array(many)))
        .await;
    assert_error(s, &h, &b, StatusCode::PAYLOAD_TOO_LARGE, "TooManyDevices");

    let deletes: Vec<Value> = (0..3)
        .map(|i| json!({"id": format!("bk{i}"), "importMode": "Delete"}))
        .collect();
    let (s, _, b) = f
        .owner("POST", "/devices", &[], Some(Value::Array(deletes)))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(
        f.owner("GET", "/devices/bk1", &[], None).await.0,
        StatusCode::NOT_FOUND
    );
}

/// A request body that sends `first` and then never ends (a client trickling or
/// stalling its body).
fn stalled_body(first: &'static [u8]) -> Body {
    use futures_util::StreamExt;
    let chunks = futures_util::stream::once(async move {
        Ok::<_, std::io::Error>(axum::body::Bytes::from_static(first))
    })
    .chain(futures_util::stream::pending());
    Body::from_stream(chunks)
}

fn patch_request(auth: Option<&str>, body: Body) -> Request<Body> {
    let mut req = Request::builder()
        .method("PATCH")
        .uri("/twins/d1?api-version=2021-04-12")
        .header("Content-Type", "application/json");
    if let Some(a) = auth {
        req = req.header("Authorization", a);
    }
    req.body(body).unwrap()
}

async fn error_of(response: axum::response::Response) -> (StatusCode, String, Value) {
    let status = response.status();
    let code = response.headers()["iothub-errorcode"]
        .to_str()
        .unwrap()
        .to_owned();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, code, serde_json::from_slice(&bytes).unwrap())
}

#[tokio::test]
async fn an_oversized_body_is_413_in_iot_hubs_shape_and_changes_nothing() {
    let f = fixture();
    f.create("d1").await;
    let (_, _, before) = f.owner("GET", "/twins/d1", &[], None).await;
    let big = format!(
        r#"{{"tags":{{"a":"{}"}}}}"#,
        "x".repeat(twinhub_http::request::MAX_BODY)
    );
    let (status, headers, body) = f
        .owner_raw("PATCH", "/twins/d1", &[("If-Match", "*")], &big)
        .await;
    assert_error(
        status,
        &headers,
        &body,
        StatusCode::PAYLOAD_TOO_LARGE,
        "MessageTooLarge",
    );
    let (_, _, after) = f.owner("GET", "/twins/d1", &[], None).await;
    assert_eq!(before, after);
}

#[tokio::test]
async fn an_unauthenticated_request_is_refused_before_its_body_is_read() {
    let f = fixture();
    f.create("d1").await;
    // The body never ends: a handler that read it first would never answer.
    let response = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        f.app
            .clone()
            .oneshot(patch_request(None, stalled_body(b"{\"tags\":"))),
    )
    .await
    .expect("answered without waiting for the body")
    .unwrap();
    let (status, code, _) = error_of(response).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::UNAUTHORIZED, "IotHubUnauthorizedAccess")
    );
}

#[tokio::test(start_paused = true)]
async fn a_body_that_stops_arriving_is_408_after_the_body_timeout() {
    let f = fixture();
    f.create("d1").await;
    let token = f.token("iothubowner");
    let started = tokio::time::Instant::now();
    let response = f
        .app
        .clone()
        .oneshot(patch_request(Some(&token), stalled_body(b"{\"tags\":")))
        .await
        .unwrap();
    assert!(started.elapsed() >= twinhub_http::request::BODY_TIMEOUT);
    let (status, code, body) = error_of(response).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::REQUEST_TIMEOUT, "RequestTimeout"),
        "{body}"
    );
    let (_, _, twin) = f.owner("GET", "/twins/d1", &[], None).await;
    assert!(twin.get("tags").is_none(), "nothing was written: {twin}");
}
