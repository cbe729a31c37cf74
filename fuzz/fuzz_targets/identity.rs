//! Device bodies of `PUT /devices/{id}` (`DeviceIdentity::create` / `update`) and
//! device ids from request paths (`validate_id`).
//!
//! Invariants, beyond "never panics":
//! - an update is all or nothing: on error the identity is unchanged;
//! - a SAS identity always ends with two keys that are base64 of 16 to 64 bytes,
//!   so a device can never be left with a key nobody can sign with by accident,
//!   and an update that names no keys never rotates them;
//! - an identity's own JSON (`GET /devices/{id}`) is accepted back as an update
//!   body and changes nothing but the etag.
#![no_main]

use arbitrary::Arbitrary;
use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use rand::SeedableRng;
use twinhub_core::identity::{validate_id, AuthenticationType, DeviceIdentity};
use twinhub_core::Timestamp;
use twinhub_fuzz::JsonSpec;

#[derive(Arbitrary, Debug)]
enum Body {
    /// A device body with the members IoT Hub reads, each optional.
    Shaped {
        device_id: Option<bool>,
        status: Option<String>,
        auth_type: Option<u8>,
        primary: Option<KeySpec>,
        secondary: Option<KeySpec>,
        edge: Option<JsonSpec>,
        reason: Option<String>,
    },
    Any(JsonSpec),
    Bytes(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
enum KeySpec {
    Empty,
    Null,
    /// base64 of this many zero bytes.
    Bytes(u8),
    Text(String),
}

impl Body {
    fn to_value(&self, id: &str) -> Option<serde_json::Value> {
        use serde_json::{json, Value};
        match self {
            Body::Shaped {
                device_id,
                status,
                auth_type,
                primary,
                secondary,
                edge,
                reason,
            } => {
                let key = |k: &Option<KeySpec>| match k {
                    None | Some(KeySpec::Null) => Value::Null,
                    Some(KeySpec::Empty) => json!(""),
                    Some(KeySpec::Bytes(n)) => json!(base64::engine::general_purpose::STANDARD
                        .encode(vec![0u8; usize::from(*n)])),
                    Some(KeySpec::Text(t)) => json!(t),
                };
                let kind = auth_type.map(|t| {
                    [
                        "sas",
                        "selfSigned",
                        "certificateAuthority",
                        "none",
                        "SAS",
                        "x",
                    ][usize::from(t % 6)]
                });
                Some(json!({
                    "deviceId": match device_id { Some(true) => json!(id), Some(false) => json!("other"), None => Value::Null },
                    "status": status,
                    "statusReason": reason,
                    "authentication": {
                        "type": kind,
                        "symmetricKey": {"primaryKey": key(primary), "secondaryKey": key(secondary)},
                    },
                    "capabilities": {"iotEdge": edge.as_ref().map(JsonSpec::to_value)},
                }))
            }
            Body::Any(v) => Some(v.to_value()),
            Body::Bytes(b) => serde_json::from_slice(b).ok(),
        }
    }
}

#[derive(Arbitrary, Debug)]
struct Input {
    id: String,
    create: Body,
    updates: Vec<Body>,
}

fn key_ok(key: Option<&str>) -> bool {
    key.and_then(|k| base64::engine::general_purpose::STANDARD.decode(k).ok())
        .is_some_and(|bytes| (16..=64).contains(&bytes.len()))
}

fn check(identity: &DeviceIdentity) {
    let auth = &identity.authentication;
    if auth.kind == AuthenticationType::Sas {
        assert!(
            key_ok(auth.primary_key.as_deref()),
            "bad primary key {auth:?}"
        );
        assert!(
            key_ok(auth.secondary_key.as_deref()),
            "bad secondary key {auth:?}"
        );
    }
    let _ = identity.to_json();
}

fuzz_target!(|input: Input| {
    let id_valid = validate_id(&input.id, "device id").is_ok();
    let id = if id_valid { input.id.as_str() } else { "dev1" };
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let Some(body) = input.create.to_value(id) else {
        return;
    };
    let Ok(mut identity) = DeviceIdentity::create(id, &body, &mut rng) else {
        return;
    };
    check(&identity);
    let now = Timestamp::from_unix_secs(1_700_000_000);
    for update in input.updates.iter().take(8) {
        let Some(body) = update.to_value(id) else {
            continue;
        };
        let before = identity.clone();
        match identity.update(&body, now, &mut rng) {
            Err(_) => assert_eq!(identity, before, "failed update changed the identity"),
            Ok(()) => {
                assert_ne!(identity.etag(), before.etag());
                let keys_named = body
                    .pointer("/authentication/symmetricKey")
                    .and_then(|s| s.as_object())
                    .is_some_and(|s| {
                        ["primaryKey", "secondaryKey"].iter().any(|k| {
                            s.get(*k)
                                .and_then(|v| v.as_str())
                                .is_some_and(|v| !v.is_empty())
                        })
                    });
                let still_sas = before.authentication.kind == AuthenticationType::Sas
                    && identity.authentication.kind == AuthenticationType::Sas;
                if still_sas && !keys_named {
                    assert_eq!(
                        identity.authentication, before.authentication,
                        "keys rotated by an update that named none"
                    );
                }
            }
        }
        check(&identity);
    }
    // The identity's own JSON goes back as an update body (clients send fetched
    // devices back) and changes nothing but the etag.
    let mut again = identity.clone();
    again
        .update(&identity.to_json(), now, &mut rng)
        .expect("an identity's own JSON is a valid update");
    again.etag_counter = identity.etag_counter;
    assert_eq!(again, identity);
});
