//! The fleet parsers: direct method request bodies (`MethodRequest::from_json`),
//! device answers (`MethodResponse::from_device`) and module identity bodies
//! (`ModuleIdentity::create` / `update`).
//!
//! Invariants, beyond "never panics":
//! - an accepted method request has a topic-safe name, timeouts in range and a
//!   payload within 128 KB, and its own JSON parses back to the same request;
//! - every device answer becomes a JSON payload that serializes and parses back
//!   (the hub never answers with a body its clients cannot parse);
//! - a module always ends with two keys that decode to 16 to 64 bytes, a failed
//!   update changes nothing, and an update that names no keys keeps them.
#![no_main]

use arbitrary::Arbitrary;
use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use rand::SeedableRng;
use twinhub_core::method::{
    MethodRequest, MethodResponse, CONNECT_TIMEOUT_SECS, MAX_PAYLOAD, RESPONSE_TIMEOUT_SECS,
};
use twinhub_core::module::ModuleIdentity;
use twinhub_fuzz::JsonSpec;

#[derive(Arbitrary, Debug)]
enum Body {
    Json(JsonSpec),
    Bytes(Vec<u8>),
    Method {
        name: Option<String>,
        response: Option<i64>,
        connect: Option<i64>,
        payload: Option<JsonSpec>,
    },
}

impl Body {
    fn to_value(&self) -> Option<serde_json::Value> {
        use serde_json::json;
        match self {
            Body::Json(v) => Some(v.to_value()),
            Body::Bytes(b) => serde_json::from_slice(b).ok(),
            Body::Method {
                name,
                response,
                connect,
                payload,
            } => Some(json!({
                "methodName": name,
                "responseTimeoutInSeconds": response,
                "connectTimeoutInSeconds": connect,
                "payload": payload.as_ref().map(JsonSpec::to_value),
            })),
        }
    }
}

#[derive(Arbitrary, Debug)]
struct Input {
    method: Body,
    status: i32,
    answer: Vec<u8>,
    module_id: String,
    module: Body,
    updates: Vec<Body>,
}

fn key_ok(key: Option<&str>) -> bool {
    key.and_then(|k| base64::engine::general_purpose::STANDARD.decode(k).ok())
        .is_some_and(|bytes| (16..=64).contains(&bytes.len()))
}

fuzz_target!(|input: Input| {
    if let Some(body) = input.method.to_value() {
        if let Ok(request) = MethodRequest::from_json(&body) {
            assert!(!request.method_name.is_empty());
            assert!(!request
                .method_name
                .contains(['/', '+', '#', '?']));
            assert!(RESPONSE_TIMEOUT_SECS.contains(&request.response_timeout_secs));
            assert!(CONNECT_TIMEOUT_SECS.contains(&request.connect_timeout_secs));
            assert!(request.payload_text().len() <= MAX_PAYLOAD);
            assert_eq!(
                MethodRequest::from_json(&request.to_json()).as_ref(),
                Ok(&request)
            );
        }
    }

    let answer = MethodResponse::from_device(input.status, &input.answer);
    let text = answer.to_json().to_string();
    let back: serde_json::Value = serde_json::from_str(&text).expect("the answer is JSON");
    assert_eq!(MethodResponse::from_json(&back).expect("its own shape"), answer);

    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let Some(body) = input.module.to_value() else {
        return;
    };
    let Ok(mut module) = ModuleIdentity::create("dev1", &input.module_id, &body, &mut rng) else {
        return;
    };
    for update in input.updates.iter().take(8) {
        let Some(body) = update.to_value() else {
            continue;
        };
        let before = module.clone();
        match module.update(&body, &mut rng) {
            Err(_) => assert_eq!(module, before, "a failed update changed the module"),
            Ok(()) => {
                let named = body
                    .pointer("/authentication/symmetricKey")
                    .and_then(|s| s.as_object())
                    .is_some_and(|s| {
                        ["primaryKey", "secondaryKey"].iter().any(|k| {
                            s.get(*k)
                                .and_then(|v| v.as_str())
                                .is_some_and(|v| !v.is_empty())
                        })
                    });
                let kind_kept = body.pointer("/authentication/type").is_none();
                if !named && kind_kept {
                    assert_eq!(module.authentication, before.authentication);
                }
            }
        }
        if module.authentication.kind == twinhub_core::identity::AuthenticationType::Sas {
            assert!(key_ok(module.authentication.primary_key.as_deref()));
            assert!(key_ok(module.authentication.secondary_key.as_deref()));
        }
        let _ = module.to_json();
    }
});
