//! The query corpus end to end through the hub: twins are created through the
//! public operations (registry, service twin patch, device reported patch) and
//! every case whose twins can be built that way runs through `POST
//! /devices/query`, following continuation tokens with a small page size.
//! Cases needing hub-managed fields loaded verbatim, module twins or
//! configurations are covered by the query crate's own corpus test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;
use twinhub_core::etag::IfMatch;
use twinhub_core::policy::default_policies;
use twinhub_core::sas;
use twinhub_service::{Hub, HubConfig};
use twinhub_store::SqliteStore;

const HOST: &str = "q.local";

fn corpus() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../query/tests/data/query-corpus.json"
    );
    serde_json::from_slice(
        &std::fs::read(path).expect("the query corpus in crates/query/tests/data"),
    )
    .unwrap()
}

struct Fixture {
    app: axum::Router,
    token: String,
    hub: Hub,
    _dir: tempfile::TempDir,
}

async fn load(corpus: &Value) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let policies = default_policies(&mut rand::rngs::OsRng);
    let token = sas::generate_token(
        HOST,
        &policies[0].primary_key,
        Some(&policies[0].name),
        i64::MAX / 2,
    )
    .unwrap();
    let config = HubConfig {
        host_names: vec![HOST.into()],
        limits: Default::default(),
        policies,
    };
    let (hub, _c) = Hub::open(config, SqliteStore::open(&dir.path().join("db")).unwrap()).unwrap();
    for twin in corpus["twins"].as_array().unwrap() {
        if twin.get("moduleId").is_some() {
            continue;
        }
        let id = twin["deviceId"].as_str().unwrap();
        let identity =
            json!({"deviceId": id, "status": twin["status"], "capabilities": twin["capabilities"]});
        hub.put_device(id, &identity, &IfMatch::Absent)
            .await
            .unwrap();
        let mut desired = twin["properties"]["desired"].clone();
        let patch = json!({"tags": twin.get("tags").cloned().unwrap_or(json!({})), "properties": {"desired": desired.take()}});
        hub.patch_twin(id, &patch, &IfMatch::Any).await.unwrap();
        let reported = twin["properties"]["reported"].clone();
        hub.patch_reported(id, &reported, None).await.unwrap();
    }
    Fixture {
        app: twinhub_http::router(hub.clone()),
        token,
        hub,
        _dir: dir,
    }
}

impl Fixture {
    async fn page(
        &self,
        query: &str,
        size: Option<&str>,
        token: Option<&str>,
    ) -> (StatusCode, axum::http::HeaderMap, Value) {
        let mut req = Request::builder()
            .method("POST")
            .uri("/devices/query?api-version=2021-04-12")
            .header("Authorization", &self.token)
            .header("Content-Type", "application/json; charset=utf-8");
        if let Some(s) = size {
            req = req.header("x-ms-max-item-count", s);
        }
        if let Some(t) = token {
            req = req.header("x-ms-continuation", t);
        }
        let req = req
            .body(Body::from(json!({"query": query}).to_string()))
            .unwrap();
        let response = self.app.clone().oneshot(req).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (status, headers, serde_json::from_slice(&bytes).unwrap())
    }

    /// Every row, following tokens; checks headers on each page.
    async fn all(&self, query: &str, size: &str) -> Result<(Vec<Value>, String), StatusCode> {
        let mut rows = Vec::new();
        let mut token: Option<String> = None;
        for _ in 0..100 {
            let (status, headers, body) = self.page(query, Some(size), token.as_deref()).await;
            if status != StatusCode::OK {
                assert_eq!(headers["iothub-errorcode"], "ArgumentInvalid");
                return Err(status);
            }
            let item_type = headers["x-ms-item-type"].to_str().unwrap().to_owned();
            rows.extend(body.as_array().unwrap().iter().cloned());
            match headers.get("x-ms-continuation") {
                Some(t) => {
                    assert!(!t.is_empty(), "empty continuation header");
                    token = Some(t.to_str().unwrap().to_owned());
                }
                None => return Ok((rows, item_type)),
            }
        }
        panic!("query {query} did not end");
    }
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// JSON equality with numbers compared by value.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(v, w)| same(v, w))
        }
        _ => a == b,
    }
}

#[tokio::test]
async fn corpus_cases_through_the_hub() {
    let corpus = corpus();
    let f = load(&corpus).await;
    let mut ran = 0;
    for case in corpus["cases"].as_array().unwrap() {
        let requires: Vec<&str> = case["requires"]
            .as_array()
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if requires.iter().any(|r| *r != "identity") {
            continue;
        }
        let id = case["id"].as_str().unwrap();
        let query = case["query"].as_str().unwrap();
        ran += 1;
        for size in ["3", "100"] {
            let result = f.all(query, size).await;
            if let Some(status) = case.get("expect_error") {
                assert_eq!(
                    result.err().map(|s| s.as_u16() as i64),
                    status.as_i64(),
                    "{id}"
                );
                continue;
            }
            let (rows, item_type) = result.unwrap_or_else(|s| panic!("{id}: {s}"));
            assert_eq!(Some(item_type.as_str()), case["item_type"].as_str(), "{id}");
            if let Some(ids) = case.get("expect_ids") {
                let want = sorted(
                    ids.as_array()
                        .unwrap()
                        .iter()
                        .map(|v| v.as_str().unwrap().to_owned())
                        .collect(),
                );
                let got = sorted(
                    rows.iter()
                        .map(|r| r["deviceId"].as_str().unwrap().to_owned())
                        .collect(),
                );
                assert_eq!(got, want, "{id}");
                for row in &rows {
                    let twin = f.hub.get_twin(row["deviceId"].as_str().unwrap()).unwrap();
                    assert_eq!(row, &twin, "{id}: a SELECT * row is the whole twin");
                }
            }
            if let Some(expect) = case.get("expect") {
                let mut want: Vec<Value> = expect.as_array().unwrap().clone();
                assert_eq!(rows.len(), want.len(), "{id}: {rows:?}");
                for row in &rows {
                    let at = want
                        .iter()
                        .position(|w| same(w, row))
                        .unwrap_or_else(|| panic!("{id}: unexpected row {row}"));
                    want.remove(at);
                }
            }
            if let Some(count) = case.get("expect_count") {
                assert_eq!(rows.len() as i64, count.as_i64().unwrap(), "{id}");
            }
        }
    }
    assert!(ran >= 45, "only {ran} cases ran");
}

#[tokio::test]
async fn paging_headers_and_read_your_writes() {
    let f = load(&corpus()).await;
    let (status, headers, body) = f.page("SELECT * FROM devices", Some("5"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body.as_array().unwrap().len(), 5);
    let token = headers["x-ms-continuation"].to_str().unwrap().to_owned();
    // The token still works when the page size changes, and not for another query.
    let (status, _, body) = f
        .page("SELECT * FROM devices", Some("100"), Some(&token))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body.as_array().unwrap().len(), 9);
    let (status, headers, _) = f
        .page("SELECT deviceId FROM devices", Some("5"), Some(&token))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(headers["iothub-errorcode"], "ArgumentInvalid");
    for bad in ["0", "-1", "ten"] {
        assert_eq!(
            f.page("SELECT * FROM devices", Some(bad), None).await.0,
            StatusCode::BAD_REQUEST,
            "{bad}"
        );
    }
    let (status, _, body) = f.page("SELECT * FROM devices.modules", None, None).await;
    assert_eq!((status, body), (StatusCode::OK, json!([])));
    assert_eq!(
        f.page("SELECT * FROM devices.jobs", None, None).await.0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        f.page(&"x".repeat(8193), None, None).await.0,
        StatusCode::BAD_REQUEST
    );

    f.hub
        .patch_reported("blank-001", &json!({"fresh": 42}), None)
        .await
        .unwrap();
    let (_, _, rows) = f
        .page(
            "SELECT deviceId FROM devices WHERE properties.reported.fresh = 42",
            None,
            None,
        )
        .await;
    assert_eq!(rows, json!([{"deviceId": "blank-001"}]));
    // An empty result still carries the item type and no continuation.
    let (_, headers, rows) = f
        .page("SELECT * FROM devices WHERE tags.none = 1", None, None)
        .await;
    assert_eq!(rows, json!([]));
    assert_eq!(headers["x-ms-item-type"], "Twin");
    assert!(headers.get("x-ms-continuation").is_none());
}
