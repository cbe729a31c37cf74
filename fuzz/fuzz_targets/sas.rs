//! SAS tokens, scopes, connection strings and `If-Match` (`twinhub_core::sas`,
//! `connection_string`, `etag`): everything a client sends to authenticate.
//!
//! Invariants, beyond "never panics":
//! - a parsed token never verifies with a key that did not sign it (the fixed
//!   keys below sign nothing the fuzzer can produce without knowing them);
//! - `generate_token` output parses back to the same resource, expiry and key
//!   name, verifies with its key, covers its own resource and not a sibling;
//! - `scope_covers` is reflexive and segment-wise (never `/a/b` for `/a/bc`);
//! - a connection string built by the helpers parses back to its fields.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use twinhub_core::connection_string::{self, ConnectionString};
use twinhub_core::etag::IfMatch;
use twinhub_core::sas::{generate_token, scope_covers, SasToken};

const KEY: &str = "mWO5BwVcGazLPWaM72g972iq7Yqk06qHMS+RRg1Z4Ss=";
const OTHER_KEY: &str = "EFQYVAecoYqbkit+/O0kHh8nxtAJg8KgrTTvp/N2zS0=";

#[derive(Arbitrary, Debug)]
struct Generated {
    resource: String,
    key_name: Option<String>,
    expiry: i64,
    now: i64,
    suffix: String,
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);

    // Outside text as an Authorization header / MQTT password.
    if let Ok(token) = SasToken::parse(&text) {
        let _ = token.check_scope_and_expiry("localhost/devices/dev1", 1_700_000_000);
        let _ = token.check_scope_and_expiry(&token.resource, i64::MIN);
        assert!(
            token
                .verify_signature([KEY, OTHER_KEY, "not base64", ""])
                .is_err(),
            "a token the fuzzer wrote verified with a secret key: {text:?}"
        );
    }
    for line in text.split('\n') {
        let _ = SasToken::parse(&format!("SharedAccessSignature {line}"));
        if let Some((a, b)) = line.split_once(' ') {
            let covers = scope_covers(a, b);
            if covers {
                // A scope is a segment prefix of its target, host case aside.
                let (a_host, a_path) = a.split_once('/').unwrap_or((a, ""));
                let (b_host, b_path) = b.split_once('/').unwrap_or((b, ""));
                assert!(a_host.eq_ignore_ascii_case(b_host));
                let a_segments: Vec<_> = a_path.split('/').filter(|s| !s.is_empty()).collect();
                let b_segments: Vec<_> = b_path.split('/').filter(|s| !s.is_empty()).collect();
                assert!(b_segments.starts_with(&a_segments));
            }
        }
        assert!(
            scope_covers(line, line),
            "scope does not cover itself: {line:?}"
        );
    }

    // Connection strings and If-Match headers.
    if let Ok(cs) = ConnectionString::parse(&text) {
        let _ = cs.require("HostName");
        let _ = cs.get("SharedAccessKey");
    }
    let if_match = IfMatch::parse(Some(&text));
    assert!(IfMatch::parse(None) == IfMatch::Absent);
    if let IfMatch::Etag(e) = &if_match {
        assert!(if_match.matches(e));
    }

    // Tokens the hub and SDK generate, from structured input.
    let mut u = Unstructured::new(data);
    let Ok(g) = Generated::arbitrary(&mut u) else {
        return;
    };
    let key_name = g.key_name.as_deref();
    let token = generate_token(&g.resource, KEY, key_name, g.expiry).expect("KEY is base64");
    let parsed = SasToken::parse(&token).expect("generated tokens parse");
    assert_eq!(parsed.resource, g.resource);
    assert_eq!(parsed.expiry, g.expiry);
    assert_eq!(
        parsed.key_name.as_deref(),
        key_name.filter(|k| !k.is_empty())
    );
    parsed
        .verify_signature([KEY])
        .expect("generated tokens verify");
    assert!(parsed.verify_signature([OTHER_KEY]).is_err());
    let scoped = parsed.check_scope_and_expiry(&g.resource, g.now);
    assert_eq!(scoped.is_ok(), g.expiry > g.now, "{scoped:?}");
    if !g.suffix.is_empty()
        && !g.suffix.contains('/')
        && g.resource.contains('/')
        && !g.resource.ends_with('/')
    {
        // A sibling that merely shares a prefix (`/a/b` and `/a/bc`) is not covered.
        let sibling = format!("{}{}", g.resource, g.suffix);
        assert!(!scope_covers(&g.resource, &sibling), "{sibling:?}");
    }

    let fields_ok = |s: &str| !s.contains(';') && !s.trim().is_empty() && s.trim() == s;
    if fields_ok(&g.resource) && !g.resource.contains('=') && key_name.is_some_and(fields_ok) {
        let name = key_name.unwrap_or_default();
        let cs = connection_string::service(&g.resource, name, KEY);
        let parsed = ConnectionString::parse(&cs).expect("built connection strings parse");
        assert_eq!(parsed.get("HostName"), Some(g.resource.as_str()));
        assert_eq!(parsed.get("SharedAccessKeyName"), Some(name));
        assert_eq!(parsed.get("SharedAccessKey"), Some(KEY));
    }
});
