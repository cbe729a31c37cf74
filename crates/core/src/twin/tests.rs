use super::*;
use crate::identity::DeviceIdentity;
use proptest::prelude::*;
use serde_json::json;

fn t(secs: i64) -> Timestamp {
    Timestamp::from_unix_secs(secs)
}

fn limits() -> Limits {
    Limits::default()
}

fn identity() -> DeviceIdentity {
    use rand::SeedableRng;
    DeviceIdentity::create(
        "dev1",
        &json!({}),
        &mut rand::rngs::StdRng::seed_from_u64(1),
    )
    .unwrap()
}

#[test]
fn fresh_twin_matches_iot_hubs_shape() {
    let twin = Twin::new(t(0));
    let v = twin.to_json(&identity());
    assert_eq!(v["etag"], "AAAAAAAAAAE=");
    assert_eq!(v["version"], 2);
    assert_eq!(v["properties"]["desired"]["$version"], 1);
    assert_eq!(v["properties"]["reported"]["$version"], 1);
    assert_eq!(
        v["properties"]["desired"]["$metadata"],
        json!({"$lastUpdated": "1970-01-01T00:00:00.0000000Z"})
    );
    assert!(v.get("tags").is_none());
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "deviceId",
            "etag",
            "deviceEtag",
            "status",
            "statusUpdateTime",
            "connectionState",
            "lastActivityTime",
            "cloudToDeviceMessageCount",
            "authenticationType",
            "x509Thumbprint",
            "modelId",
            "version",
            "properties",
            "capabilities"
        ]
    );
}

#[test]
fn service_patch_merges_deletes_and_versions() {
    let mut twin = Twin::new(t(0));
    let out = twin
        .apply_service_patch(
            &json!({"tags": {"a": 1}, "properties": {"desired": {"x": {"y": 1, "z": 2}}}}),
            t(1),
            &limits(),
        )
        .unwrap();
    assert_eq!(
        out.desired_notification,
        Some(json!({"x": {"y": 1, "z": 2}, "$version": 2}))
    );
    assert_eq!(
        (twin.version(), twin.etag(), twin.desired().version()),
        (3, "AAAAAAAAAAI=".into(), 2)
    );

    let out = twin
        .apply_service_patch(
            &json!({"properties": {"desired": {"x": {"y": null, "w": 3}}}}),
            t(2),
            &limits(),
        )
        .unwrap();
    assert_eq!(
        out.desired_notification,
        Some(json!({"x": {"y": null, "w": 3}, "$version": 3}))
    );
    assert_eq!(
        twin.desired().values(),
        json!({"x": {"z": 2, "w": 3}}).as_object().unwrap()
    );
    let meta = &twin.to_json(&identity())["properties"]["desired"]["$metadata"];
    assert_eq!(meta["$lastUpdatedVersion"], 3);
    assert_eq!(meta["x"]["z"]["$lastUpdatedVersion"], 2);
    assert_eq!(meta["x"]["w"]["$lastUpdatedVersion"], 3);
    assert_eq!(meta["x"]["$lastUpdatedVersion"], 3);
    assert!(meta["x"].get("y").is_none());
}

#[test]
fn tags_only_patch_leaves_desired_version() {
    let mut twin = Twin::new(t(0));
    let out = twin
        .apply_service_patch(&json!({"tags": {"loc": {"plant": "R43"}}}), t(1), &limits())
        .unwrap();
    assert!(out.changed);
    assert_eq!(out.desired_notification, None);
    assert_eq!((twin.version(), twin.desired().version()), (3, 1));
    assert_eq!(twin.etag(), "AAAAAAAAAAI=");
}

#[test]
fn noop_patch_changes_nothing() {
    let mut twin = Twin::new(t(0));
    let before = twin.clone();
    let out = twin
        .apply_service_patch(
            &json!({"properties": {"desired": {"gone": null}}, "tags": {}}),
            t(1),
            &limits(),
        )
        .unwrap();
    assert!(!out.changed);
    assert_eq!(twin, before);
}

#[test]
fn reported_patch_keeps_etag() {
    let mut twin = Twin::new(t(0));
    let etag = twin.etag();
    assert_eq!(
        twin.apply_reported_patch(&json!({"fw": "1.0"}), None, t(1), &limits())
            .unwrap(),
        2
    );
    assert_eq!(
        twin.apply_reported_patch(&json!({"fw": "1.1"}), Some(2), t(2), &limits())
            .unwrap(),
        3
    );
    assert_eq!(twin.etag(), etag);
    assert_eq!(twin.version(), 4);
    let err = twin
        .apply_reported_patch(&json!({"fw": "1.2"}), Some(2), t(3), &limits())
        .unwrap_err();
    assert_eq!(err.code, crate::ErrorCode::PreconditionFailed);
    let meta = &twin.to_json(&identity())["properties"]["reported"]["$metadata"];
    assert_eq!(meta["fw"], json!({"$lastUpdated": t(2).to_iso()}));
}

#[test]
fn desired_null_clears_and_notifies_removed_keys() {
    let mut twin = Twin::new(t(0));
    twin.apply_service_patch(
        &json!({"properties": {"desired": {"a": 1, "b": {"c": 2}}}}),
        t(1),
        &limits(),
    )
    .unwrap();
    let out = twin
        .apply_service_patch(&json!({"properties": {"desired": null}}), t(2), &limits())
        .unwrap();
    assert_eq!(
        out.desired_notification,
        Some(json!({"a": null, "b": null, "$version": 3}))
    );
    assert!(twin.desired().values().is_empty());
}

#[test]
fn replace_sets_exact_sections_and_notifies_removals() {
    let mut twin = Twin::new(t(0));
    twin.apply_service_patch(
        &json!({"tags": {"t": 1}, "properties": {"desired": {"a": {"x": 1}, "b": 2}}}),
        t(1),
        &limits(),
    )
    .unwrap();
    let out = twin
        .replace(
            &json!({"properties": {"desired": {"a": {"y": 2}}}}),
            t(2),
            &limits(),
        )
        .unwrap();
    assert_eq!(
        out.desired_notification,
        Some(json!({"a": {"y": 2, "x": null}, "b": null, "$version": 3}))
    );
    assert_eq!(
        twin.desired().values(),
        json!({"a": {"y": 2}}).as_object().unwrap()
    );
    assert!(twin.tags().is_empty());
    assert_eq!(twin.etag(), "AAAAAAAAAAM=");
}

#[test]
fn read_only_members_are_ignored() {
    let mut twin = Twin::new(t(0));
    let body = json!({
        "deviceId": "someone-else", "etag": "x", "version": 99, "status": "disabled",
        "properties": {"desired": {"$metadata": {"$lastUpdated": "x"}, "$version": 7, "k": 1}, "reported": {"r": 1}},
    });
    twin.apply_service_patch(&body, t(1), &limits()).unwrap();
    assert_eq!(
        twin.desired().values(),
        json!({"k": 1}).as_object().unwrap()
    );
    assert!(twin.reported().values().is_empty());
    assert_eq!(twin.desired().version(), 2);
}

#[test]
fn invalid_writes_change_nothing() {
    let mut twin = Twin::new(t(0));
    twin.apply_service_patch(&json!({"tags": {"keep": 1}}), t(1), &limits())
        .unwrap();
    let before = twin.clone();
    let bad = [
        json!([1]),
        json!({"tags": 5}),
        json!({"properties": 5}),
        json!({"tags": {"ok": 1}, "properties": {"desired": {"bad.key": 1}}}),
        json!({"properties": {"desired": {"s": "x".repeat(4097)}}}),
        json!({"tags": {"big": "x".repeat(4000), "big2": "x".repeat(4000), "big3": "x".repeat(400)}}),
    ];
    for body in bad {
        assert!(
            twin.apply_service_patch(&body, t(2), &limits()).is_err(),
            "{body}"
        );
        assert_eq!(twin, before);
    }
    assert!(twin
        .apply_reported_patch(&json!("x"), None, t(2), &limits())
        .is_err());
    assert_eq!(twin, before);
}

#[test]
fn device_view_has_versions_and_no_metadata() {
    let mut twin = Twin::new(t(0));
    twin.apply_service_patch(
        &json!({"tags": {"secret": 1}, "properties": {"desired": {"a": 1}}}),
        t(1),
        &limits(),
    )
    .unwrap();
    assert_eq!(
        twin.properties_for_device(),
        json!({"desired": {"a": 1, "$version": 2}, "reported": {"$version": 1}})
    );
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<bool>().prop_map(Value::from),
        (-1000i64..1000).prop_map(Value::from),
        "[a-z]{0,8}".prop_map(Value::from),
    ]
}

fn key() -> impl Strategy<Value = String> {
    "[a-d]{1,2}"
}

/// Patches over a small key space so that merges collide often; `None` = delete.
fn patch() -> impl Strategy<Value = Map<String, Value>> {
    let value = leaf().prop_recursive(3, 16, 4, |inner| {
        prop::collection::btree_map(key(), prop::option::weighted(0.8, inner), 0..4).prop_map(|m| {
            Value::Object(
                m.into_iter()
                    .map(|(k, v)| (k, v.unwrap_or(Value::Null)))
                    .collect(),
            )
        })
    });
    prop::collection::btree_map(key(), prop::option::weighted(0.8, value), 0..5).prop_map(|m| {
        m.into_iter()
            .map(|(k, v)| (k, v.unwrap_or(Value::Null)))
            .collect()
    })
}

/// Every non-null leaf of the patch can be read back; every null is gone.
fn assert_patch_visible(values: &Map<String, Value>, patch: &Map<String, Value>) {
    for (k, v) in patch {
        match v {
            Value::Null => assert!(!values.contains_key(k), "{k} should be deleted"),
            Value::Object(p) => match values.get(k) {
                Some(Value::Object(child)) => assert_patch_visible(child, p),
                other => panic!("{k} should be an object, is {other:?}"),
            },
            leaf => assert_eq!(values.get(k), Some(leaf)),
        }
    }
}

/// Metadata and values have exactly the same keys at every level.
fn assert_metadata_mirrors(values: &Map<String, Value>, meta: &Value) {
    let meta = meta.as_object().unwrap();
    let meta_keys: Vec<&String> = meta.keys().filter(|k| !k.starts_with('$')).collect();
    let value_keys: Vec<&String> = values.keys().collect();
    assert_eq!(meta_keys, value_keys);
    for (k, v) in values {
        if let Value::Object(child) = v {
            assert_metadata_mirrors(child, &meta[k]);
        }
    }
}

proptest! {
    #[test]
    fn patches_read_back_and_versions_grow(patches in prop::collection::vec(patch(), 1..6)) {
        let mut twin = Twin::new(t(0));
        let id = identity();
        for (i, p) in patches.iter().enumerate() {
            let before = (twin.version(), twin.desired().version(), twin.reported().version());
            let body = json!({"properties": {"desired": Value::Object(p.clone())}});
            let out = twin.apply_service_patch(&body, t(i as i64 + 1), &limits()).unwrap();
            assert_patch_visible(&twin.desired().values().to_map(), p);
            let after = (twin.version(), twin.desired().version(), twin.reported().version());
            if out.changed {
                prop_assert_eq!(after, (before.0 + 1, before.1 + 1, before.2));
                let note = out.desired_notification.unwrap();
                prop_assert_eq!(&note["$version"], &json!(after.1));
            } else {
                prop_assert_eq!(after, before);
            }
            let v = twin.reported().version();
            prop_assert_eq!(twin.apply_reported_patch(&Value::Object(p.clone()), None, t(100), &limits()).unwrap(), v + 1);
            assert_patch_visible(&twin.reported().values().to_map(), p);
            let rendered = twin.to_json(&id);
            assert_metadata_mirrors(&twin.desired().values().to_map(), &rendered["properties"]["desired"]["$metadata"]);
            assert_metadata_mirrors(&twin.reported().values().to_map(), &rendered["properties"]["reported"]["$metadata"]);
        }
    }

    #[test]
    fn stored_form_round_trips_byte_for_byte(p in patch(), q in patch(), r in patch()) {
        let mut twin = Twin::new(t(0));
        twin.apply_service_patch(&json!({"tags": Value::Object(p.clone()), "properties": {"desired": Value::Object(p)}}), t(1), &limits()).unwrap();
        twin.apply_reported_patch(&Value::Object(q.clone()), None, t(2), &limits()).unwrap();
        twin.apply_reported_patch(&Value::Object(r.clone()), None, t(3), &limits()).unwrap();
        twin.apply_service_patch(&json!({"properties": {"desired": Value::Object(q)}}), t(4), &limits()).unwrap();
        let stored = serde_json::to_vec(&twin).unwrap();
        let loaded: Twin = serde_json::from_slice(&stored).unwrap();
        prop_assert_eq!(&loaded, &twin);
        prop_assert_eq!(&serde_json::to_vec(&loaded).unwrap(), &stored);
        prop_assert_eq!(loaded.to_json(&identity()), twin.to_json(&identity()));
        // Metadata stored before the values (never written so) decodes the same.
        let mut reordered: Value = serde_json::from_slice(&stored).unwrap();
        for section in ["desired", "reported"] {
            let fields = reordered[section].as_object_mut().unwrap();
            let values = fields.shift_remove("values").unwrap();
            fields.insert("values".into(), values);
        }
        let from_reordered: Twin = serde_json::from_value(reordered).unwrap();
        prop_assert_eq!(&from_reordered, &twin);
    }

    #[test]
    fn merging_a_replace_notification_gives_the_new_document(p in patch(), r in patch()) {
        let mut twin = Twin::new(t(0));
        twin.apply_service_patch(&json!({"properties": {"desired": Value::Object(p)}}), t(1), &limits()).unwrap();
        let mut device_copy = twin.desired().values().to_map();
        let out = twin.replace(&json!({"properties": {"desired": Value::Object(r)}}), t(2), &limits()).unwrap();
        let mut note = out.desired_notification.unwrap().as_object().unwrap().clone();
        note.remove("$version");
        let mut scratch = Metadata::new(t(2), None);
        merge(&mut device_copy, &mut scratch, &note, t(2), None);
        prop_assert_eq!(&device_copy, &twin.desired().values().to_map());
    }

    #[test]
    fn patch_then_replace_equals_replace(p in patch(), r in patch()) {
        let mut a = Twin::new(t(0));
        a.apply_service_patch(&json!({"properties": {"desired": Value::Object(p)}}), t(1), &limits()).unwrap();
        a.replace(&json!({"properties": {"desired": Value::Object(r.clone())}}), t(2), &limits()).unwrap();
        let mut b = Twin::new(t(0));
        b.replace(&json!({"properties": {"desired": Value::Object(r)}}), t(2), &limits()).unwrap();
        prop_assert_eq!(a.desired().values(), b.desired().values());
    }
}

#[test]
fn stored_metadata_without_a_member_or_a_member_without_metadata_loads() {
    // Metadata for a key the values lack renders nowhere and is dropped at load; a
    // member without metadata renders without it, as before.
    let text = r#"{"tags":{},"desired":{"values":{"a":1,"b":{"x":2}},
        "metadata":{"t":1000000000,"v":2,"c":{"b":{"t":2000000000,"c":{"gone":{"t":1}}},"gone":{"t":1}}},
        "version":2},"reported":{"values":{},"metadata":{"t":1000000000},"version":1},
        "version":3,"etag":1}"#;
    let twin: Twin = serde_json::from_str(text).unwrap();
    let meta = twin.desired().metadata_json();
    assert_eq!(meta["$lastUpdatedVersion"], 2);
    assert!(meta.get("a").is_none());
    assert!(meta.get("gone").is_none());
    assert_eq!(meta["b"]["$lastUpdated"], t(2).to_iso());
    assert!(meta["b"].get("x").is_none());
    let stored: Value = serde_json::to_value(&twin).unwrap();
    assert_eq!(
        stored["desired"]["metadata"],
        json!({"t": 1000000000, "v": 2, "c": {"b": {"t": 2000000000}}})
    );
}
