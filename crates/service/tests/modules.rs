//! Module identities and module twins through the service layer, on SQLite:
//! the registry rules, module twins isolated from their device's, authentication
//! with the module's own key, `devices.modules` queries, and the cascade when
//! a module or its device goes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use serde_json::{json, Value};
use twinhub_core::etag::IfMatch;
use twinhub_core::policy::default_policies;
use twinhub_core::{sas, ErrorCode, Identity, Timestamp};
use twinhub_service::{DeviceEvent, DeviceWatch, Hub, StoredSession, StoredSubscription};

fn now() -> Timestamp {
    twinhub_service::clock::now()
}

async fn module(hub: &Hub, device: &str, module: &str) -> Value {
    hub.put_module(device, module, &json!({}), &IfMatch::Absent)
        .await
        .unwrap()
}

fn pending(watch: &mut DeviceWatch) -> bool {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    watch.poll_recv(&mut cx).is_pending()
}

#[tokio::test]
async fn registry_rules() {
    let dir = tempfile::tempdir().unwrap();
    let (hub, _c) = common::open(dir.path());
    let err = hub
        .put_module("ghost", "m1", &json!({}), &IfMatch::Absent)
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::DeviceNotFound);
    hub.put_device("d1", &json!({}), &IfMatch::Absent)
        .await
        .unwrap();
    let created = module(&hub, "d1", "m1").await;
    assert_eq!(created["etag"], "MQ==");
    assert_eq!(hub.get_module("d1", "m1").unwrap(), created);
    let err = hub
        .put_module("d1", "m1", &json!({}), &IfMatch::Absent)
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::ModuleAlreadyExistsOnDevice);
    assert_eq!(err.code.http_status(), 409);
    for bad in ["$edgeAgent", "a/b"] {
        let err = hub
            .put_module("d1", bad, &json!({}), &IfMatch::Absent)
            .await
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::ArgumentInvalid, "{bad}");
    }

    // Update: a stale etag is refused, `*` and the current etag are not, and
    // empty keys keep the current ones.
    let stale = IfMatch::parse(Some("\"Mg==\""));
    let err = hub
        .put_module("d1", "m1", &json!({}), &stale)
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::PreconditionFailed);
    let updated = hub
        .put_module(
            "d1",
            "m1",
            &json!({"managedBy": "me"}),
            &IfMatch::parse(Some("\"MQ==\"")),
        )
        .await
        .unwrap();
    assert_eq!(updated["etag"], "Mg==");
    assert_eq!(updated["managedBy"], "me");
    assert_eq!(updated["authentication"], created["authentication"]);
    let err = hub
        .put_module("d1", "nope", &json!({}), &IfMatch::Any)
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::ModuleNotFound);

    // The per-device limit.
    for i in 2..=50 {
        module(&hub, "d1", &format!("m{i}")).await;
    }
    let err = hub
        .put_module("d1", "m51", &json!({}), &IfMatch::Absent)
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::TooManyModulesOnDevice);
    assert_eq!(err.code.http_status(), 413);
    let listed = hub.list_modules("d1").unwrap();
    assert_eq!(listed.len(), 50);
    assert_eq!(
        hub.list_modules("ghost").unwrap_err().code,
        ErrorCode::DeviceNotFound
    );

    let err = hub
        .delete_module("d1", "m1", &IfMatch::parse(Some("\"MQ==\"")))
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::PreconditionFailed);
    hub.delete_module("d1", "m1", &IfMatch::Any).await.unwrap();
    assert_eq!(
        hub.get_module("d1", "m1").unwrap_err().code,
        ErrorCode::ModuleNotFound
    );
    // Modules are not devices.
    assert_eq!(hub.statistics().total, 1);
}

#[tokio::test]
async fn module_twins_are_their_own() {
    let dir = tempfile::tempdir().unwrap();
    let (hub, _c) = common::open(dir.path());
    hub.put_device("d1", &json!({}), &IfMatch::Absent)
        .await
        .unwrap();
    module(&hub, "d1", "m1").await;
    module(&hub, "d1", "m2").await;
    let m1 = Identity::module("d1", "m1");
    let fresh = hub.twin(&m1).unwrap();
    assert_eq!(fresh["moduleId"], "m1");
    assert_eq!(fresh["deviceId"], "d1");
    assert_eq!(fresh["etag"], "AAAAAAAAAAE=");
    assert_eq!(fresh["version"], 2);
    assert_eq!(fresh["status"], "enabled");
    assert!(fresh.get("capabilities").is_none());

    let mut device_watch = hub.watch("d1");
    let mut m1_watch = hub.watch("d1/m1");
    let mut m2_watch = hub.watch("d1/m2");
    let patched = hub
        .patch_twin_of(
            &m1,
            &json!({"tags": {"role": "edge"}, "properties": {"desired": {"rate": 5}}}),
            &IfMatch::parse(Some("\"AAAAAAAAAAE=\"")),
        )
        .await
        .unwrap();
    assert_eq!(patched["properties"]["desired"]["rate"], 5);
    assert_eq!(patched["properties"]["desired"]["$version"], 2);
    assert_eq!(patched["tags"], json!({"role": "edge"}));
    match m1_watch.recv().await.unwrap() {
        DeviceEvent::Desired { version, payload } => {
            assert_eq!(version, 2);
            assert_eq!(payload, json!({"rate": 5, "$version": 2}));
        }
        other => panic!("{other:?}"),
    }
    assert!(
        pending(&mut device_watch),
        "the device heard its module's change"
    );
    assert!(pending(&mut m2_watch), "another module heard m1's change");
    let device_twin = hub.get_twin("d1").unwrap();
    assert!(device_twin.get("tags").is_none());
    assert_eq!(device_twin["properties"]["desired"]["$version"], 1);

    let err = hub
        .patch_twin_of(
            &m1,
            &json!({"tags": {"x": 1}}),
            &IfMatch::parse(Some("\"AAAAAAAAAAE=\"")),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::PreconditionFailed);
    let err = hub
        .patch_twin_of(&Identity::module("d1", "zz"), &json!({}), &IfMatch::Any)
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::ModuleNotFound);

    // The module's own reported side, and its view of the twin.
    let version = hub
        .patch_reported_for(&m1, &json!({"fw": "2"}), None)
        .await
        .unwrap();
    assert_eq!(version, 2);
    assert_eq!(
        hub.twin_for(&m1).unwrap(),
        json!({"desired": {"rate": 5, "$version": 2}, "reported": {"fw": "2", "$version": 2}})
    );
    assert_eq!(
        hub.twin_for(&Identity::device("d1")).unwrap()["reported"],
        json!({"$version": 1})
    );
    let replaced = hub
        .replace_twin_of(
            &m1,
            &json!({"properties": {"desired": {"only": true}}}),
            &IfMatch::Any,
        )
        .await
        .unwrap();
    assert_eq!(replaced["properties"]["desired"]["only"], true);
    assert!(replaced.get("tags").is_none());

    // Presence is the module's own.
    hub.connected(&m1, now());
    assert_eq!(
        hub.get_module("d1", "m1").unwrap()["connectionState"],
        "Connected"
    );
    assert_eq!(
        hub.get_device("d1").unwrap()["connectionState"],
        "Disconnected"
    );
}

#[tokio::test]
async fn modules_authenticate_with_their_own_keys_only() {
    let dir = tempfile::tempdir().unwrap();
    let policies = default_policies(&mut rand::rngs::OsRng);
    let (hub, _c) = common::open_with(dir.path(), policies.clone());
    let device = hub
        .put_device("d1", &json!({}), &IfMatch::Absent)
        .await
        .unwrap();
    let m = module(&hub, "d1", "m1").await;
    let exp = now().unix_secs() + 60;
    let key = |j: &Value| {
        j["authentication"]["symmetricKey"]["primaryKey"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let resource = "h.local/devices/d1/modules/m1";
    let own = sas::generate_token(resource, &key(&m), None, exp).unwrap();
    assert_eq!(
        hub.authenticate_device("d1", Some("m1"), &own, now())
            .unwrap(),
        exp
    );
    let with_device_key = sas::generate_token(resource, &key(&device), None, exp).unwrap();
    assert!(hub
        .authenticate_device("d1", Some("m1"), &with_device_key, now())
        .is_err());
    assert!(hub
        .authenticate_device("d1", Some("m2"), &own, now())
        .is_err());
    assert!(hub.authenticate_device("d1", None, &own, now()).is_err());
    let policy = policies.iter().find(|p| p.name == "device").unwrap();
    for scope in ["h.local/devices/d1", resource] {
        let token = sas::generate_token(scope, &policy.primary_key, Some("device"), exp).unwrap();
        hub.authenticate_device("d1", Some("m1"), &token, now())
            .unwrap();
    }
    hub.put_device("d1", &json!({"status": "disabled"}), &IfMatch::Any)
        .await
        .unwrap();
    assert!(hub
        .authenticate_device("d1", Some("m1"), &own, now())
        .is_err());
}

#[tokio::test]
async fn deleting_a_module_or_its_device_closes_sessions_and_forgets_them() {
    let dir = tempfile::tempdir().unwrap();
    let (hub, _c) = common::open(dir.path());
    hub.put_device("d1", &json!({}), &IfMatch::Absent)
        .await
        .unwrap();
    module(&hub, "d1", "m1").await;
    module(&hub, "d1", "m2").await;
    let session = StoredSession {
        subscriptions: vec![StoredSubscription {
            filter: "$iothub/methods/POST/#".into(),
            qos: 1,
        }],
    };
    for client in ["d1", "d1/m1", "d1/m2"] {
        hub.save_session("d1", client, Some(session.clone()))
            .await
            .unwrap();
    }
    assert!(hub
        .save_session("d1", "d1/none", Some(session.clone()))
        .await
        .is_err());
    let mut m1 = hub.watch("d1/m1");
    hub.delete_module("d1", "m1", &IfMatch::Any).await.unwrap();
    assert_eq!(m1.recv().await, Some(DeviceEvent::Kick));
    assert_eq!(hub.stored_session("d1", "d1/m1"), None);
    assert!(hub.stored_session("d1", "d1/m2").is_some());

    let mut m2 = hub.watch("d1/m2");
    hub.delete_device("d1", &IfMatch::Any).await.unwrap();
    assert_eq!(m2.recv().await, Some(DeviceEvent::Kick));
    assert_eq!(hub.stored_sessions(), 0);
    // A new device of the same id starts without modules.
    hub.put_device("d1", &json!({}), &IfMatch::Absent)
        .await
        .unwrap();
    assert!(hub.list_modules("d1").unwrap().is_empty());
}

#[tokio::test]
async fn modules_survive_a_restart_and_answer_queries() {
    let dir = tempfile::tempdir().unwrap();
    let policies = default_policies(&mut rand::rngs::OsRng);
    let (hub, committer) = common::open_with(dir.path(), policies.clone());
    for d in ["a-b", "a", "c"] {
        hub.put_device(d, &json!({}), &IfMatch::Absent)
            .await
            .unwrap();
    }
    for (d, m) in [("a", "x"), ("a-b", "y"), ("a", "w"), ("c", "z")] {
        module(&hub, d, m).await;
        hub.patch_twin_of(
            &Identity::module(d, m),
            &json!({"tags": {"kind": if m == "z" { "other" } else { "edge" }}}),
            &IfMatch::Any,
        )
        .await
        .unwrap();
    }
    hub.connected(&Identity::module("a", "x"), now());
    let before = hub.twin(&Identity::module("a", "x")).unwrap();
    drop(hub);
    committer.join().unwrap();

    let (hub, _c) = common::open_with(dir.path(), policies);
    let after = hub.twin(&Identity::module("a", "x")).unwrap();
    assert_eq!(after["tags"], before["tags"]);
    assert_eq!(after["etag"], before["etag"]);
    assert_eq!(after["connectionState"], "Disconnected");

    let ids = |page: &twinhub_service::query::QueryPage| -> Vec<(String, String)> {
        page.items
            .iter()
            .map(|t| {
                (
                    t["deviceId"].as_str().unwrap().to_owned(),
                    t["moduleId"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let all = hub
        .query("SELECT * FROM devices.modules", None, None)
        .unwrap();
    let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect()
    };
    assert_eq!(
        ids(&all),
        pairs(&[("a", "w"), ("a", "x"), ("a-b", "y"), ("c", "z")])
    );
    // Paged one at a time, in the same order.
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = hub
            .query(
                "SELECT * FROM devices.modules WHERE tags.kind = 'edge'",
                Some("1"),
                token.as_deref(),
            )
            .unwrap();
        seen.extend(ids(&page));
        match page.continuation {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    assert_eq!(seen, pairs(&[("a", "w"), ("a", "x"), ("a-b", "y")]));
    let count = hub
        .query(
            "SELECT COUNT() AS n FROM devices.modules WHERE deviceId = 'a'",
            None,
            None,
        )
        .unwrap();
    assert_eq!(count.items, vec![json!({"n": 2})]);
    // Device queries never return modules.
    let devices = hub.query("SELECT * FROM devices", None, None).unwrap();
    assert_eq!(devices.items.len(), 3);
    assert!(devices.items.iter().all(|t| t.get("moduleId").is_none()));
}
