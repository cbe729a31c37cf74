//! `GET /metrics` in-process: who may read it, and what it says.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use common::NoDevices;
use http_body_util::BodyExt;
use serde_json::json;
use std::sync::Arc;
use tower::ServiceExt;
use twinhub_core::etag::IfMatch;
use twinhub_core::policy::default_policies;
use twinhub_core::sas;
use twinhub_http::server::ListenerStats;
use twinhub_mqtt::MqttServer;
use twinhub_service::{Hub, HubConfig};
use twinhub_store::SqliteStore;

const HOST: &str = "testhub.local";

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

async fn get(app: &Router, auth: Option<&str>) -> (StatusCode, String) {
    let mut req = Request::builder().uri("/metrics");
    if let Some(a) = auth {
        req = req.header("Authorization", a);
    }
    let res = app
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = res.status();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

/// The value of the sample `line_start` (name and labels).
fn value(text: &str, line_start: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(line_start)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no sample {line_start}"))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn metrics_need_registry_read_or_service_connect_and_count_writes() {
    let dir = tempfile::tempdir().unwrap();
    let policies = default_policies(&mut rand::rngs::OsRng);
    let config = HubConfig {
        host_names: vec![HOST.into()],
        limits: Default::default(),
        policies: policies.clone(),
    };
    let (hub, _committer) =
        Hub::open(config, SqliteStore::open(&dir.path().join("db")).unwrap()).unwrap();
    let mqtt = MqttServer::new(Arc::new(NoDevices));
    let app = twinhub_http::metrics::router(twinhub_http::metrics::Sources {
        hub: hub.clone(),
        mqtt,
        listeners: vec![("https", Arc::new(ListenerStats::default()))],
    });
    let token = |policy: &str| {
        let p = policies.iter().find(|p| p.name == policy).unwrap();
        sas::generate_token(HOST, &p.primary_key, Some(policy), now() + 3600).unwrap()
    };

    assert_eq!(get(&app, None).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(
        get(&app, Some(&token("device"))).await.0,
        StatusCode::UNAUTHORIZED,
        "DeviceConnect alone does not read metrics"
    );
    for policy in [
        "iothubowner",
        "service",
        "registryRead",
        "registryReadWrite",
    ] {
        assert_eq!(
            get(&app, Some(&token(policy))).await.0,
            StatusCode::OK,
            "{policy}"
        );
    }

    hub.put_device("d1", &json!({}), &IfMatch::Absent)
        .await
        .unwrap();
    hub.patch_reported("d1", &json!({"a": 1}), None)
        .await
        .unwrap();
    let (status, text) = get(&app, Some(&token("service"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(value(&text, "twinhub_devices"), 1.0);
    assert_eq!(value(&text, "twinhub_reported_patches_total"), 1.0);
    assert_eq!(value(&text, "twinhub_storage_batch_writes_sum"), 2.0);
    assert!(value(&text, "twinhub_storage_commits_total") >= 1.0);
    assert_eq!(
        value(&text, "twinhub_storage_batch_writes_bucket{le=\"+Inf\"}"),
        value(&text, "twinhub_storage_commits_total")
    );
    assert_eq!(value(&text, "twinhub_mqtt_connections"), 0.0);
    assert_eq!(value(&text, "twinhub_mqtt_connacks_total{code=\"5\"}"), 0.0);
    assert_eq!(
        value(
            &text,
            "twinhub_mqtt_connections_closed_total{reason=\"malformed\"}"
        ),
        0.0
    );
    assert_eq!(
        value(
            &text,
            "twinhub_http_refused_connections_total{listener=\"https\"}"
        ),
        0.0
    );
    assert!(value(&text, "process_resident_memory_bytes") > 0.0);
    // Every sample belongs to a family declared with HELP and TYPE.
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let name = line.split(['{', ' ']).next().unwrap();
        let family = name
            .trim_end_matches("_bucket")
            .trim_end_matches("_sum")
            .trim_end_matches("_count");
        assert!(
            text.contains(&format!("# TYPE {family} "))
                || text.contains(&format!("# TYPE {name} ")),
            "{line}"
        );
    }
}
