//! Twin writes from outside JSON (`Twin::apply_service_patch`, `replace`,
//! `apply_reported_patch`): REST `PATCH`/`PUT /twins/{id}` bodies and devices'
//! reported patches, applied in sequence to one twin.
//!
//! Invariants, beyond "never panics":
//! - all or nothing: on error the twin is exactly as before;
//! - versions never decrease; a change bumps exactly the counters IoT Hub bumps
//!   (service writes: `version` and etag, desired `$version` when desired
//!   changed; reported patches: `version` and reported `$version`, never the etag);
//! - a no-op service patch changes nothing;
//! - the stored twin always satisfies the limits a patch is checked against (key
//!   rules, depth, value sizes, section sizes) and holds no `null`;
//! - the twin survives the store's serialisation (JSON) unchanged.
#![no_main]

use arbitrary::Arbitrary;
use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};
use twinhub_core::identity::DeviceIdentity;
use twinhub_core::json::{self, Limits};
use twinhub_core::twin::Twin;
use twinhub_core::Timestamp;
use twinhub_fuzz::JsonSpec;

#[derive(Arbitrary, Debug)]
enum Body {
    /// `{"tags": .., "properties": {"desired": .., "reported": ..}, ..}`, each part optional.
    Shaped {
        tags: Option<JsonSpec>,
        properties: Option<Properties>,
        extra: Option<JsonSpec>,
    },
    /// Any JSON value.
    Any(JsonSpec),
    /// Raw bytes, as a client sends them; not JSON is refused before the twin.
    Bytes(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
enum Properties {
    Object {
        desired: Option<JsonSpec>,
        reported: Option<JsonSpec>,
    },
    Other(JsonSpec),
}

#[derive(Arbitrary, Debug)]
enum Op {
    ServicePatch(Body),
    Replace(Body),
    Reported {
        patch: Body,
        expected_version: Option<i8>,
    },
}

#[derive(Arbitrary, Debug)]
struct Input {
    small_limits: bool,
    ops: Vec<Op>,
}

impl Body {
    fn to_value(&self) -> Option<Value> {
        match self {
            Body::Shaped {
                tags,
                properties,
                extra,
            } => {
                let mut root = Map::new();
                if let Some(t) = tags {
                    root.insert("tags".into(), t.to_value());
                }
                match properties {
                    None => {}
                    Some(Properties::Other(v)) => {
                        root.insert("properties".into(), v.to_value());
                    }
                    Some(Properties::Object { desired, reported }) => {
                        let mut props = Map::new();
                        if let Some(d) = desired {
                            props.insert("desired".into(), d.to_value());
                        }
                        if let Some(r) = reported {
                            props.insert("reported".into(), r.to_value());
                        }
                        root.insert("properties".into(), Value::Object(props));
                    }
                }
                if let Some(e) = extra {
                    root.insert("deviceId".into(), e.to_value());
                }
                Some(Value::Object(root))
            }
            Body::Any(v) => Some(v.to_value()),
            Body::Bytes(b) => serde_json::from_slice(b).ok(),
        }
    }

    /// A reported patch is the body itself (devices send the properties directly).
    fn reported_value(&self) -> Option<Value> {
        match self {
            Body::Shaped { tags: Some(t), .. } => Some(t.to_value()),
            other => other.to_value(),
        }
    }
}

fn etag_counter(twin: &Twin) -> u64 {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(twin.etag())
        .expect("etag is base64");
    u64::from_be_bytes(bytes.try_into().expect("etag is 8 bytes"))
}

fn has_null(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(items) => items.iter().any(has_null),
        Value::Object(m) => m.values().any(has_null),
        _ => false,
    }
}

fn check_section(values: &Map<String, Value>, limits: &Limits, max: usize, name: &str) {
    json::validate_patch(values, limits, name).expect("stored section breaks the rules");
    assert!(
        json::size_of_object(values) <= max,
        "{name} over its size limit"
    );
    assert!(!values.values().any(has_null), "{name} stores a null");
}

fn check_state(twin: &Twin, limits: &Limits, identity: &DeviceIdentity) {
    check_section(&twin.tags().to_map(), limits, limits.max_tags_bytes, "tags");
    check_section(
        &twin.desired().values().to_map(),
        limits,
        limits.max_desired_bytes,
        "desired",
    );
    check_section(
        &twin.reported().values().to_map(),
        limits,
        limits.max_reported_bytes,
        "reported",
    );
    let stored = serde_json::to_vec(twin).expect("twin serialises");
    let loaded: Twin = serde_json::from_slice(&stored).expect("stored twin loads");
    assert_eq!(
        &loaded, twin,
        "twin changes through the store's serialisation"
    );
    let rendered = twin.to_json(identity);
    assert_eq!(rendered["version"], twin.version());
    let _ = twin.properties_for_device();
}

fuzz_target!(|input: Input| {
    let limits = if input.small_limits {
        Limits {
            max_key_bytes: 16,
            max_depth: 3,
            max_string_bytes: 64,
            max_tags_bytes: 256,
            max_desired_bytes: 384,
            max_reported_bytes: 384,
        }
    } else {
        Limits::default()
    };
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(7);
    let identity = DeviceIdentity::create("dev1", &serde_json::json!({}), &mut rng)
        .expect("an empty body creates a device");
    let mut now = Timestamp::from_unix_secs(1_700_000_000);
    let mut twin = Twin::new(now);
    for op in input.ops.iter().take(32) {
        now = Timestamp::from_unix_nanos(now.unix_nanos() + 1_000_000);
        let before = twin.clone();
        let (b_version, b_desired, b_reported, b_etag) = (
            before.version(),
            before.desired().version(),
            before.reported().version(),
            etag_counter(&before),
        );
        match op {
            Op::ServicePatch(body) => {
                let Some(body) = body.to_value() else {
                    continue;
                };
                match twin.apply_service_patch(&body, now, &limits) {
                    Err(_) => assert_eq!(twin, before, "failed service patch changed the twin"),
                    Ok(outcome) if !outcome.changed => {
                        assert_eq!(twin, before, "no-op service patch changed the twin");
                        assert!(outcome.desired_notification.is_none());
                    }
                    Ok(outcome) => {
                        assert_eq!(twin.version(), b_version + 1);
                        assert_eq!(etag_counter(&twin), b_etag + 1);
                        assert_eq!(twin.reported(), before.reported());
                        match outcome.desired_notification {
                            Some(n) => {
                                assert_eq!(twin.desired().version(), b_desired + 1);
                                assert_eq!(n["$version"], twin.desired().version());
                            }
                            None => assert_eq!(twin.desired(), before.desired()),
                        }
                    }
                }
            }
            Op::Replace(body) => {
                let Some(body) = body.to_value() else {
                    continue;
                };
                match twin.replace(&body, now, &limits) {
                    Err(_) => assert_eq!(twin, before, "failed replace changed the twin"),
                    Ok(outcome) => {
                        assert_eq!(twin.version(), b_version + 1);
                        assert_eq!(etag_counter(&twin), b_etag + 1);
                        assert_eq!(twin.desired().version(), b_desired + 1);
                        assert_eq!(twin.reported(), before.reported());
                        let n = outcome.desired_notification.expect("replace notifies");
                        assert_eq!(n["$version"], twin.desired().version());
                        // Every key the device held is in the notification: set or null.
                        for (key, _) in before.desired().values().iter() {
                            assert!(n.get(key).is_some(), "removed key {key:?} not notified");
                        }
                    }
                }
            }
            Op::Reported {
                patch,
                expected_version,
            } => {
                let Some(patch) = patch.reported_value() else {
                    continue;
                };
                let expected = expected_version.map(i64::from);
                match twin.apply_reported_patch(&patch, expected, now, &limits) {
                    Err(_) => assert_eq!(twin, before, "failed reported patch changed the twin"),
                    Ok(v) => {
                        assert_eq!(v, b_reported + 1);
                        assert_eq!(twin.reported().version(), v);
                        assert_eq!(twin.version(), b_version + 1);
                        assert_eq!(etag_counter(&twin), b_etag, "reported patch moved the etag");
                        assert_eq!(twin.desired(), before.desired());
                        assert_eq!(twin.tags(), before.tags());
                        if let Some(e) = expected {
                            assert_eq!(e, b_reported);
                        }
                    }
                }
            }
        }
        assert!(twin.version() >= b_version);
        assert!(twin.desired().version() >= b_desired);
        assert!(twin.reported().version() >= b_reported);
        assert!(etag_counter(&twin) >= b_etag);
        check_state(&twin, &limits, &identity);
    }
});
