//! Direct methods (fleet spec §1): the request a back end sends, validated as IoT
//! Hub validates it, and the answer a device sends back, turned into the REST
//! response. Shared by the hub and the SDK's service client.

use crate::{ErrorCode, HubError};
use serde_json::{json, Value};
use std::ops::RangeInclusive;

/// The largest request payload, serialized (IoT Hub's quota: 128 KB).
pub const MAX_PAYLOAD: usize = 128 * 1024;
/// The longest method name accepted (it travels in an MQTT topic).
pub const MAX_NAME_LEN: usize = 1024;
/// `responseTimeoutInSeconds` when absent or `null`.
pub const DEFAULT_RESPONSE_TIMEOUT_SECS: u32 = 30;
/// Allowed `responseTimeoutInSeconds`.
pub const RESPONSE_TIMEOUT_SECS: RangeInclusive<u32> = 5..=300;
/// Allowed `connectTimeoutInSeconds` (default 0: fail at once when offline).
pub const CONNECT_TIMEOUT_SECS: RangeInclusive<u32> = 0..=300;

/// A validated direct method request: `POST /twins/{id}[/modules/{mid}]/methods`.
#[derive(Debug, Clone, PartialEq)]
pub struct MethodRequest {
    /// The method name, non-empty and safe to put into a topic.
    pub method_name: String,
    /// The payload handed to the device (`null` when absent).
    pub payload: Value,
    /// How long to wait for the device's answer once the request is delivered.
    pub response_timeout_secs: u32,
    /// How long to wait for the device to come online (connected and subscribed).
    pub connect_timeout_secs: u32,
}

impl MethodRequest {
    /// A request with the default timeouts.
    pub fn new(method_name: impl Into<String>, payload: Value) -> Self {
        Self {
            method_name: method_name.into(),
            payload,
            response_timeout_secs: DEFAULT_RESPONSE_TIMEOUT_SECS,
            connect_timeout_secs: 0,
        }
    }

    /// Parses and validates a request body. Unknown members are ignored (old
    /// clients send `timeoutInSeconds`); a body that is not an object is a format
    /// error; a bad member is `ArgumentInvalid`; a payload over [`MAX_PAYLOAD`] is
    /// `MessageTooLarge`.
    pub fn from_json(body: &Value) -> Result<Self, HubError> {
        let body = body.as_object().ok_or_else(|| {
            HubError::new(
                ErrorCode::IotHubFormatError,
                "The method request must be a JSON object.",
            )
        })?;
        let method_name = match body.get("methodName") {
            Some(Value::String(name)) => name.clone(),
            Some(Value::Null) | None => {
                return Err(HubError::invalid("methodName is required."));
            }
            Some(_) => return Err(HubError::invalid("methodName must be a string.")),
        };
        validate_method_name(&method_name)?;
        let response_timeout_secs = timeout(
            body.get("responseTimeoutInSeconds"),
            "responseTimeoutInSeconds",
            RESPONSE_TIMEOUT_SECS,
            DEFAULT_RESPONSE_TIMEOUT_SECS,
        )?;
        let connect_timeout_secs = timeout(
            body.get("connectTimeoutInSeconds"),
            "connectTimeoutInSeconds",
            CONNECT_TIMEOUT_SECS,
            0,
        )?;
        let payload = body.get("payload").cloned().unwrap_or(Value::Null);
        let request = Self {
            method_name,
            payload,
            response_timeout_secs,
            connect_timeout_secs,
        };
        let size = request.payload_text().len();
        if size > MAX_PAYLOAD {
            return Err(HubError::new(
                ErrorCode::MessageTooLarge,
                format!("The method payload is {size} bytes; the limit is {MAX_PAYLOAD}."),
            ));
        }
        Ok(request)
    }

    /// The request body, as the service SDKs send it.
    pub fn to_json(&self) -> Value {
        json!({
            "methodName": self.method_name,
            "payload": self.payload,
            "responseTimeoutInSeconds": self.response_timeout_secs,
            "connectTimeoutInSeconds": self.connect_timeout_secs,
        })
    }

    /// The payload as the device receives it: compact JSON (`null` is `null`).
    pub fn payload_text(&self) -> String {
        self.payload.to_string()
    }
}

/// Checks a method name: 1 to [`MAX_NAME_LEN`] bytes, none of the characters that
/// would change the meaning of the topic it travels in (`/ + # ?`), no white space
/// or control characters. The name goes into the topic unencoded: Node's device
/// SDK does not decode it, Python's does.
pub fn validate_method_name(name: &str) -> Result<(), HubError> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(HubError::invalid(format!(
            "methodName must be 1 to {MAX_NAME_LEN} bytes long."
        )));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| matches!(c, '/' | '+' | '#' | '?') || c.is_whitespace() || c.is_control())
    {
        return Err(HubError::invalid(format!(
            "methodName contains the character {bad:?}, which is not allowed."
        )));
    }
    Ok(())
}

fn timeout(
    value: Option<&Value>,
    name: &str,
    range: RangeInclusive<u32>,
    default: u32,
) -> Result<u32, HubError> {
    let out_of_range = || {
        HubError::invalid(format!(
            "{name} must be within [{}; {}].",
            range.start(),
            range.end()
        ))
    };
    match value {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Number(n)) => {
            if let Some(v) = n.as_u64() {
                u32::try_from(v)
                    .ok()
                    .filter(|v| range.contains(v))
                    .ok_or_else(out_of_range)
            } else if n.as_i64().is_some() {
                Err(out_of_range())
            } else {
                Err(HubError::invalid(format!("{name} must be an integer.")))
            }
        }
        Some(_) => Err(HubError::invalid(format!("{name} must be an integer."))),
    }
}

/// A device's answer to a direct method: the REST response `{status, payload}`.
#[derive(Debug, Clone, PartialEq)]
pub struct MethodResponse {
    /// The status the device put in the response topic.
    pub status: i32,
    /// The device's payload.
    pub payload: Value,
}

impl MethodResponse {
    /// The answer from what the device published on `$iothub/methods/res/{status}`:
    /// an empty or blank body is `null`, JSON is that value, anything else becomes
    /// a JSON string of the bytes read as UTF-8 (the hub never answers with a body
    /// its clients cannot parse).
    pub fn from_device(status: i32, body: &[u8]) -> Self {
        let payload = if body.iter().all(u8::is_ascii_whitespace) {
            Value::Null
        } else {
            serde_json::from_slice(body)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()))
        };
        Self { status, payload }
    }

    /// The REST response body.
    pub fn to_json(&self) -> Value {
        json!({ "status": self.status, "payload": self.payload })
    }

    /// Reads a REST response body (what a service client receives).
    pub fn from_json(body: &Value) -> Result<Self, HubError> {
        let status = body
            .get("status")
            .and_then(Value::as_i64)
            .and_then(|s| i32::try_from(s).ok())
            .ok_or_else(|| HubError::invalid("The method response has no integer status."))?;
        let payload = body.get("payload").cloned().unwrap_or(Value::Null);
        Ok(Self { status, payload })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: Value) -> Result<MethodRequest, HubError> {
        MethodRequest::from_json(&body)
    }

    fn code(body: Value) -> ErrorCode {
        match parse(body) {
            Ok(r) => panic!("accepted: {r:?}"),
            Err(e) => e.code,
        }
    }

    #[test]
    fn the_bodies_the_sdks_send_are_accepted() {
        let node = parse(json!({"methodName":"reboot","payload":{"delay":1},
            "responseTimeoutInSeconds":15,"connectTimeoutInSeconds":0}))
        .unwrap();
        assert_eq!(node.method_name, "reboot");
        assert_eq!(node.payload, json!({"delay": 1}));
        assert_eq!(
            (node.response_timeout_secs, node.connect_timeout_secs),
            (15, 0)
        );
        let python = parse(json!({"methodName": "reboot", "payload": ""})).unwrap();
        assert_eq!(python.payload_text(), "\"\"");
        assert_eq!(python.response_timeout_secs, DEFAULT_RESPONSE_TIMEOUT_SECS);
        let bare = parse(json!({"methodName":"m","responseTimeoutInSeconds":null})).unwrap();
        assert_eq!(bare.payload_text(), "null");
        assert_eq!(bare.response_timeout_secs, 30);
        let old = parse(json!({"methodName":"m","timeoutInSeconds":3600})).unwrap();
        assert_eq!(old.response_timeout_secs, 30, "unknown members are ignored");
        assert_eq!(MethodRequest::from_json(&node.to_json()).unwrap(), node);
    }

    #[test]
    fn timeouts_are_checked_at_their_bounds() {
        for (t, ok) in [
            (4, false),
            (5, true),
            (300, true),
            (301, false),
            (-1, false),
        ] {
            let r = parse(json!({"methodName":"m","responseTimeoutInSeconds":t}));
            assert_eq!(r.is_ok(), ok, "response timeout {t}");
        }
        for (t, ok) in [(0, true), (300, true), (301, false), (-5, false)] {
            let r = parse(json!({"methodName":"m","connectTimeoutInSeconds":t}));
            assert_eq!(r.is_ok(), ok, "connect timeout {t}");
        }
        let e = parse(json!({"methodName":"m","responseTimeoutInSeconds":0})).unwrap_err();
        assert_eq!(
            e.message,
            "responseTimeoutInSeconds must be within [5; 300]."
        );
        assert_eq!(
            code(json!({"methodName":"m","responseTimeoutInSeconds":7.5})),
            ErrorCode::ArgumentInvalid
        );
        assert_eq!(
            code(json!({"methodName":"m","connectTimeoutInSeconds":"5"})),
            ErrorCode::ArgumentInvalid
        );
        assert_eq!(
            code(json!({"methodName":"m","responseTimeoutInSeconds":u64::MAX})),
            ErrorCode::ArgumentInvalid
        );
    }

    #[test]
    fn names_and_shapes_are_checked() {
        assert_eq!(code(json!([1])), ErrorCode::IotHubFormatError);
        assert_eq!(code(json!({"payload": 1})), ErrorCode::ArgumentInvalid);
        assert_eq!(code(json!({"methodName": 7})), ErrorCode::ArgumentInvalid);
        for bad in ["", "a/b", "a+b", "a#", "a?b", "a b", "a\tb", "a\u{1}"] {
            assert_eq!(
                code(json!({ "methodName": bad })),
                ErrorCode::ArgumentInvalid,
                "{bad:?}"
            );
        }
        let long = "m".repeat(MAX_NAME_LEN + 1);
        assert_eq!(
            code(json!({ "methodName": long })),
            ErrorCode::ArgumentInvalid
        );
        assert!(parse(json!({"methodName": "$weird:name.v2"})).is_ok());
    }

    #[test]
    fn payloads_over_128_kb_are_too_large() {
        // A string's serialization adds its two quotes.
        let fits = "x".repeat(MAX_PAYLOAD - 2);
        assert!(parse(json!({"methodName":"m","payload": fits})).is_ok());
        let over = "x".repeat(MAX_PAYLOAD - 1);
        assert_eq!(
            code(json!({"methodName":"m","payload": over})),
            ErrorCode::MessageTooLarge
        );
    }

    #[test]
    fn device_bodies_become_json_payloads() {
        let r = |body: &[u8]| MethodResponse::from_device(200, body).payload;
        assert_eq!(r(b""), Value::Null);
        assert_eq!(r(b"  \n"), Value::Null);
        assert_eq!(r(b"null"), Value::Null);
        assert_eq!(r(b"{\"a\": [1, 2]}"), json!({"a": [1, 2]}));
        assert_eq!(
            r(b"\"2024-01-01T00:00:00Z\""),
            json!("2024-01-01T00:00:00Z")
        );
        assert_eq!(r(b"ok"), json!("ok"));
        assert_eq!(r(b"{'a':1}"), json!("{'a':1}"));
        assert_eq!(r(&[0xff, b'a']), json!("\u{fffd}a"));
        let answer = MethodResponse::from_device(404, b"{\"x\":1}");
        assert_eq!(
            answer.to_json(),
            json!({"status": 404, "payload": {"x": 1}})
        );
        assert_eq!(
            MethodResponse::from_json(&answer.to_json()).unwrap(),
            answer
        );
    }
}
