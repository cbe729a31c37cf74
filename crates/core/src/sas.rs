//! Shared access signature tokens (spec §8.1–8.2).
//!
//! `SharedAccessSignature sr=<uri>&sig=<signature>&se=<expiry>[&skn=<policy>]`, fields
//! in any order. The signature is HMAC-SHA256, keyed with the base64-decoded key, over
//! the `sr` value exactly as it appears in the token, a newline, and `se`.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Why a token was refused. Callers answer every variant with the same
/// "Unauthorized" so that refusals do not leak which check failed; the variants
/// exist for logs and tests.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SasError {
    /// The text is not a SAS token.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// `se` is in the past.
    #[error("token expired")]
    Expired,
    /// `sr` does not cover the resource.
    #[error("token scope does not cover the resource")]
    Scope,
    /// No key produced the signature.
    #[error("signature mismatch")]
    Signature,
}

/// A parsed SAS token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SasToken {
    /// `sr` exactly as it appears in the token (still percent-encoded).
    pub raw_resource: String,
    /// `sr` percent-decoded once.
    pub resource: String,
    /// The decoded signature bytes.
    pub signature: Vec<u8>,
    /// Expiry, seconds since the Unix epoch.
    pub expiry: i64,
    /// `skn`: the shared access policy whose key signed the token, if any.
    pub key_name: Option<String>,
}

const PREFIX: &str = "SharedAccessSignature ";

/// What `encodeURIComponent` leaves alone; the SDKs encode `sr` and `sig` this way.
const URI_COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'!')
    .remove(b'~')
    .remove(b'*')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')');

/// Percent-encodes like JavaScript's `encodeURIComponent`.
pub fn encode_component(s: &str) -> String {
    utf8_percent_encode(s, URI_COMPONENT).to_string()
}

fn decode(s: &str) -> Result<String, SasError> {
    percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| SasError::Malformed("field is not UTF-8 after percent-decoding"))
}

impl SasToken {
    /// Parses a token. Field order is free; values are percent-decoded only (a `+`
    /// stays a `+`, since base64 signatures contain it).
    pub fn parse(text: &str) -> Result<Self, SasError> {
        let body = text.strip_prefix(PREFIX).ok_or(SasError::Malformed(
            "missing 'SharedAccessSignature ' prefix",
        ))?;
        let (mut sr, mut sig, mut se, mut skn) = (None, None, None, None);
        for field in body.split('&') {
            let (name, value) = field
                .split_once('=')
                .ok_or(SasError::Malformed("field without '='"))?;
            let slot = match name {
                "sr" => &mut sr,
                "sig" => &mut sig,
                "se" => &mut se,
                "skn" => &mut skn,
                _ => continue,
            };
            if slot.replace(value).is_some() {
                return Err(SasError::Malformed("field given twice"));
            }
        }
        let raw_resource = sr.ok_or(SasError::Malformed("missing sr"))?;
        let signature_text = decode(sig.ok_or(SasError::Malformed("missing sig"))?)?;
        let signature = base64::engine::general_purpose::STANDARD
            .decode(signature_text.as_bytes())
            .map_err(|_| SasError::Malformed("sig is not base64"))?;
        let expiry = se
            .ok_or(SasError::Malformed("missing se"))?
            .parse::<i64>()
            .map_err(|_| SasError::Malformed("se is not an integer"))?;
        let key_name = skn.map(decode).transpose()?.filter(|s| !s.is_empty());
        Ok(Self {
            resource: decode(raw_resource)?,
            raw_resource: raw_resource.to_owned(),
            signature,
            expiry,
            key_name,
        })
    }

    /// Checks expiry (`se` must be in the future) and that the token's scope covers
    /// `target` (`host/path...`, unencoded).
    pub fn check_scope_and_expiry(&self, target: &str, now_secs: i64) -> Result<(), SasError> {
        if self.expiry <= now_secs {
            return Err(SasError::Expired);
        }
        if !scope_covers(&self.resource, target) {
            return Err(SasError::Scope);
        }
        Ok(())
    }

    /// Verifies the signature with any of `keys` (base64). Tries the raw `sr` first,
    /// then the decoded resource re-encoded with upper- and lower-case hex, so tokens
    /// from generators that encode differently still verify. Constant-time compare.
    pub fn verify_signature<'k>(
        &self,
        keys: impl IntoIterator<Item = &'k str>,
    ) -> Result<(), SasError> {
        let encoded = encode_component(&self.resource);
        let lower_hex = lower_percent_hex(&encoded);
        let mut candidates = vec![self.raw_resource.as_str()];
        for alt in [encoded.as_str(), lower_hex.as_str()] {
            if !candidates.contains(&alt) {
                candidates.push(alt);
            }
        }
        for key in keys {
            let Ok(key) = base64::engine::general_purpose::STANDARD.decode(key) else {
                continue;
            };
            for sr in &candidates {
                let expected = hmac_sha256(&key, &string_to_sign(sr, self.expiry));
                if bool::from(expected.ct_eq(&self.signature)) {
                    return Ok(());
                }
            }
        }
        Err(SasError::Signature)
    }
}

fn lower_percent_hex(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        let esc = rest.get(i..i + 3).unwrap_or(&rest[i..]);
        out.push_str(&esc.to_ascii_lowercase());
        rest = &rest[i + esc.len()..];
    }
    out.push_str(rest);
    out
}

fn string_to_sign(sr: &str, expiry: i64) -> String {
    format!("{sr}\n{expiry}")
}

fn hmac_sha256(key: &[u8], message: &str) -> Vec<u8> {
    // HMAC accepts keys of any length, so new_from_slice cannot fail here.
    match Hmac::<Sha256>::new_from_slice(key) {
        Ok(mut mac) => {
            mac.update(message.as_bytes());
            mac.finalize().into_bytes().to_vec()
        }
        Err(_) => Vec::new(),
    }
}

/// Whether the scope `sr` (decoded) covers `target`: the host compares
/// case-insensitively, the path segment by segment (`/a/b` covers `/a/b/c`, not `/a/bc`).
pub fn scope_covers(sr: &str, target: &str) -> bool {
    let (sr_host, sr_path) = sr.split_once('/').unwrap_or((sr, ""));
    let (t_host, t_path) = target.split_once('/').unwrap_or((target, ""));
    if !sr_host.eq_ignore_ascii_case(t_host) {
        return false;
    }
    let sr_segments: Vec<&str> = sr_path.split('/').filter(|s| !s.is_empty()).collect();
    let t_segments: Vec<&str> = t_path.split('/').filter(|s| !s.is_empty()).collect();
    sr_segments.len() <= t_segments.len()
        && sr_segments.iter().zip(&t_segments).all(|(a, b)| a == b)
}

/// Makes a token for `resource` (unencoded, e.g. `host/devices/dev1`), signed with
/// the base64 `key`, valid until `expiry` (Unix seconds). `None` when the key is not base64.
pub fn generate_token(
    resource: &str,
    key: &str,
    key_name: Option<&str>,
    expiry: i64,
) -> Option<String> {
    let key = base64::engine::general_purpose::STANDARD.decode(key).ok()?;
    let sr = encode_component(resource);
    let sig = base64::engine::general_purpose::STANDARD
        .encode(hmac_sha256(&key, &string_to_sign(&sr, expiry)));
    let mut token = format!("{PREFIX}sr={sr}&sig={}&se={expiry}", encode_component(&sig));
    if let Some(name) = key_name {
        token.push_str("&skn=");
        token.push_str(&encode_component(name));
    }
    Some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "mWO5BwVcGazLPWaM72g972iq7Yqk06qHMS+RRg1Z4Ss=";

    #[test]
    fn generated_tokens_verify_and_parse_in_any_order() {
        let token = generate_token("localhost/devices/dev1", KEY, None, 2_000).unwrap();
        let parsed = SasToken::parse(&token).unwrap();
        assert_eq!(parsed.resource, "localhost/devices/dev1");
        assert_eq!(parsed.raw_resource, "localhost%2Fdevices%2Fdev1");
        parsed.verify_signature([KEY]).unwrap();
        parsed
            .check_scope_and_expiry("localhost/devices/dev1", 1_000)
            .unwrap();

        let body = token.strip_prefix(PREFIX).unwrap();
        let mut fields: Vec<&str> = body.split('&').collect();
        fields.reverse();
        let reordered = format!("{PREFIX}{}", fields.join("&"));
        SasToken::parse(&reordered)
            .unwrap()
            .verify_signature([KEY])
            .unwrap();
    }

    #[test]
    fn python_style_raw_slash_in_sig_verifies() {
        let token = generate_token("localhost", KEY, Some("iothubowner"), 2_000).unwrap();
        let raw = token.replace("%2F", "/");
        let parsed = SasToken::parse(&raw).unwrap();
        parsed.verify_signature([KEY]).unwrap();
        assert_eq!(parsed.key_name.as_deref(), Some("iothubowner"));
    }

    #[test]
    fn wrong_key_expired_and_out_of_scope_are_refused() {
        let token =
            SasToken::parse(&generate_token("localhost/devices/dev1", KEY, None, 2_000).unwrap())
                .unwrap();
        let other = "EFQYVAecoYqbkit+/O0kHh8nxtAJg8KgrTTvp/N2zS0=";
        assert_eq!(token.verify_signature([other]), Err(SasError::Signature));
        assert_eq!(
            token.check_scope_and_expiry("localhost/devices/dev1", 2_000),
            Err(SasError::Expired)
        );
        assert_eq!(
            token.check_scope_and_expiry("localhost/devices/dev10", 1_000),
            Err(SasError::Scope)
        );
        assert_eq!(
            token.check_scope_and_expiry("otherhub/devices/dev1", 1_000),
            Err(SasError::Scope)
        );
    }

    #[test]
    fn scope_is_a_segment_prefix() {
        assert!(scope_covers("localhost", "localhost/devices/a"));
        assert!(scope_covers("LOCALHOST/devices", "localhost/devices/a"));
        assert!(scope_covers(
            "localhost/devices/a",
            "localhost/devices/a/modules/m"
        ));
        assert!(!scope_covers("localhost/devices/a", "localhost/devices/ab"));
        assert!(!scope_covers(
            "localhost/devices/a/b",
            "localhost/devices/a"
        ));
        assert!(!scope_covers("localhost/devices/A", "localhost/devices/a"));
    }

    #[test]
    fn malformed_tokens_are_errors_not_panics() {
        for t in [
            "",
            "SharedAccessSignature",
            "SharedAccessSignature sr=a&sig=%%%&se=1",
            "SharedAccessSignature sr=a&sig=AAAA&se=x",
            "Bearer x",
            "SharedAccessSignature sr=a&sr=b&sig=AAAA&se=1",
        ] {
            assert!(SasToken::parse(t).is_err(), "{t:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(s in ".*") {
            let _ = SasToken::parse(&s);
            let _ = SasToken::parse(&format!("SharedAccessSignature {s}"));
        }
    }
}
