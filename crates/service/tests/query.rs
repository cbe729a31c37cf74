//! Queries answered through the per-shard equality indexes give exactly the rows of
//! a full scan, also after writes move, remove or delete indexed twins.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use serde_json::{json, Value};
use twinhub_core::etag::IfMatch;
use twinhub_service::Hub;

use common::open;

/// Every row of `text`, three at a time through continuation tokens.
fn all_rows(hub: &Hub, text: &str) -> Vec<Value> {
    let mut rows = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = hub.query(text, Some("3"), token.as_deref()).unwrap();
        rows.extend(page.items);
        token = page.continuation;
        if token.is_none() {
            return rows;
        }
    }
}

/// The same condition without push-down hints (a disjunction has none).
fn check(hub: &Hub, select: &str, condition: &str) {
    let indexed = all_rows(hub, &format!("{select} WHERE {condition}"));
    let scanned = all_rows(hub, &format!("{select} WHERE ({condition}) OR false"));
    assert_eq!(indexed, scanned, "{condition}");
}

const CONDITIONS: &[&str] = &[
    "tags.region = 'r1'",
    "tags.region = 'r1' AND properties.reported.level < 50",
    "tags.Region = 'r2'",
    "tags.REGION = 'r3'",
    "tags.floor = 2",
    "tags.floor = 2.0 AND tags.region = 'r0'",
    "properties.desired.mode = 'eco'",
    "tags.flag = true",
    "tags.region = 'nowhere'",
];

#[tokio::test]
async fn indexed_queries_return_the_rows_of_a_scan_across_writes() {
    let dir = tempfile::tempdir().unwrap();
    let (hub, _committer) = open(dir.path());
    for i in 0..60 {
        let id = format!("d{i:03}");
        hub.put_device(&id, &json!({}), &IfMatch::Absent)
            .await
            .unwrap();
        let region = if i % 7 == 0 { "Region" } else { "region" };
        let tags = json!({region: format!("r{}", i % 4), "floor": i % 3, "flag": i % 2 == 0});
        hub.patch_twin(
            &id,
            &json!({"tags": tags, "properties": {"desired": {"mode": if i % 5 == 0 { "eco" } else { "max" }}}}),
            &IfMatch::Absent,
        )
        .await
        .unwrap();
        hub.patch_reported(&id, &json!({"level": (i * 37) % 100}), None)
            .await
            .unwrap();
    }
    for select in ["SELECT *", "SELECT deviceId, tags.region"] {
        for condition in CONDITIONS {
            check(&hub, &format!("{select} FROM devices"), condition);
        }
    }
    // Move, drop and delete indexed twins; add a new one.
    for i in (1..60).step_by(4) {
        let id = format!("d{i:03}");
        hub.patch_twin(
            &id,
            &json!({"tags": {"region": "r2", "floor": null}}),
            &IfMatch::Any,
        )
        .await
        .unwrap();
    }
    hub.patch_twin("d002", &json!({"tags": null}), &IfMatch::Any)
        .await
        .unwrap();
    hub.delete_device("d005", &IfMatch::Any).await.unwrap();
    hub.put_device("d100", &json!({}), &IfMatch::Absent)
        .await
        .unwrap();
    hub.patch_twin(
        "d100",
        &json!({"tags": {"region": "r1", "floor": 2}}),
        &IfMatch::Any,
    )
    .await
    .unwrap();
    for condition in CONDITIONS {
        check(&hub, "SELECT deviceId, tags FROM devices", condition);
    }
    let rows = all_rows(
        &hub,
        "SELECT deviceId FROM devices WHERE tags.region = 'r1'",
    );
    assert!(rows.contains(&json!({"deviceId": "d100"})));
    assert!(!rows.contains(&json!({"deviceId": "d005"})));
}
