//! The hub reads time from the clock it was opened with: timestamps in twins,
//! presence and token expiry all follow a manual clock.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use twinhub_core::etag::IfMatch;
use twinhub_core::policy::default_policies;
use twinhub_core::{sas, Timestamp};
use twinhub_service::clock::ManualClock;
use twinhub_service::{Hub, HubConfig};
use twinhub_store::MemoryStore;

#[tokio::test]
async fn twin_timestamps_and_token_checks_follow_the_hubs_clock() {
    let start = Timestamp::from_unix_secs(1_900_000_000);
    let clock = Arc::new(ManualClock::new(start));
    let policies = default_policies(&mut rand::rngs::OsRng);
    let config = HubConfig {
        host_names: vec!["h.local".into()],
        limits: Default::default(),
        policies: policies.clone(),
    };
    let (hub, _committer) =
        Hub::open_with_clock(config, MemoryStore::new(), clock.clone()).unwrap();
    assert_eq!(hub.now(), start);
    hub.put_device("d1", &json!({}), &IfMatch::Absent)
        .await
        .unwrap();
    let twin = hub.get_twin("d1").unwrap();
    assert_eq!(
        twin["properties"]["desired"]["$metadata"]["$lastUpdated"],
        start.to_iso()
    );

    clock.advance(Duration::from_secs(90));
    let later = Timestamp::from_unix_secs(1_900_000_090);
    let twin = hub
        .patch_twin(
            "d1",
            &json!({"properties": {"desired": {"x": 1}}}),
            &IfMatch::Any,
        )
        .await
        .unwrap();
    assert_eq!(
        twin["properties"]["desired"]["$metadata"]["x"]["$lastUpdated"],
        later.to_iso()
    );
    hub.patch_reported("d1", &json!({"r": 1}), None)
        .await
        .unwrap();
    assert_eq!(
        hub.get_device("d1").unwrap()["lastActivityTime"],
        later.to_iso()
    );

    // A service token valid at the hub's time is accepted, whatever the wall clock says.
    let owner = policies.iter().find(|p| p.name == "iothubowner").unwrap();
    let token = sas::generate_token(
        "h.local",
        &owner.primary_key,
        Some("iothubowner"),
        1_900_000_100,
    )
    .unwrap();
    let needs = [twinhub_core::policy::Permission::RegistryRead];
    hub.authorize_service(Some(&token), "/devices/d1", &needs, hub.now())
        .unwrap();
    clock.advance(Duration::from_secs(60));
    assert!(hub
        .authorize_service(Some(&token), "/devices/d1", &needs, hub.now())
        .is_err());
}
