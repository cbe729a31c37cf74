//! Validation of twin JSON against IoT Hub's limits, and IoT Hub's size rule.
//!
//! IoT Hub rejects a whole write when any key or value breaks a rule, so validation
//! runs over the entire patch before anything is applied: a write is all or nothing.

use crate::HubError;
use serde_json::{Map, Value};

/// Twin limits. The defaults are IoT Hub's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest key, in UTF-8 bytes.
    pub max_key_bytes: usize,
    /// Deepest nesting of objects below a section root (the root is level 0).
    pub max_depth: usize,
    /// Longest string value, in UTF-8 bytes.
    pub max_string_bytes: usize,
    /// Largest `tags`, by IoT Hub's size rule ([`size_of_object`]).
    pub max_tags_bytes: usize,
    /// Largest `properties.desired`.
    pub max_desired_bytes: usize,
    /// Largest `properties.reported`.
    pub max_reported_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_key_bytes: 1024,
            max_depth: 10,
            max_string_bytes: 4096,
            max_tags_bytes: 8 * 1024,
            max_desired_bytes: 32 * 1024,
            max_reported_bytes: 32 * 1024,
        }
    }
}

/// Largest integer IoT Hub stores: 2^52 - 1.
pub const MAX_INTEGER: i64 = 4_503_599_627_370_495;
/// Smallest integer IoT Hub stores: -2^52.
pub const MIN_INTEGER: i64 = -4_503_599_627_370_496;

/// Checks a patch (or a replacement document) for one twin section.
///
/// `null` member values are allowed (they delete); `null` inside arrays is not.
/// `section` names the section in error messages.
pub fn validate_patch(
    patch: &Map<String, Value>,
    limits: &Limits,
    section: &str,
) -> Result<(), HubError> {
    validate_members(patch, limits, section, 0)
}

fn validate_members(
    obj: &Map<String, Value>,
    limits: &Limits,
    path: &str,
    depth: usize,
) -> Result<(), HubError> {
    for (key, value) in obj {
        validate_key(key, limits, path)?;
        validate_value(value, limits, path, key, depth + 1, false)?;
    }
    Ok(())
}

fn validate_key(key: &str, limits: &Limits, path: &str) -> Result<(), HubError> {
    if key.is_empty() {
        return Err(HubError::invalid(format!(
            "Empty property name in '{path}'."
        )));
    }
    if key.len() > limits.max_key_bytes {
        return Err(HubError::invalid(format!(
            "Property name in '{path}' is {} bytes long, the limit is {}.",
            key.len(),
            limits.max_key_bytes
        )));
    }
    if let Some(bad) = key.chars().find(|c| is_forbidden_key_char(*c)) {
        return Err(HubError::invalid(format!(
            "Property name '{}' in '{path}' contains the forbidden character {:?}.",
            printable(key),
            bad
        )));
    }
    Ok(())
}

/// `.`, `$`, space and control characters are not allowed in twin keys.
fn is_forbidden_key_char(c: char) -> bool {
    c == '.' || c == '$' || c == ' ' || c.is_control()
}

fn validate_value(
    value: &Value,
    limits: &Limits,
    path: &str,
    key: &str,
    depth: usize,
    in_array: bool,
) -> Result<(), HubError> {
    match value {
        Value::Null if in_array => Err(HubError::invalid(format!(
            "Property '{path}.{}' holds null inside an array, and arrays may not contain null.",
            printable(key)
        ))),
        Value::Null | Value::Bool(_) => Ok(()),
        Value::Number(n) => validate_number(n, path, key),
        Value::String(s) if s.len() > limits.max_string_bytes => Err(HubError::invalid(format!(
            "Value of '{path}.{}' is {} bytes long, the limit is {}.",
            printable(key),
            s.len(),
            limits.max_string_bytes
        ))),
        Value::String(_) => Ok(()),
        Value::Array(items) => {
            check_depth(depth, limits, path, key)?;
            items
                .iter()
                .try_for_each(|item| validate_value(item, limits, path, key, depth + 1, true))
        }
        Value::Object(members) => {
            check_depth(depth, limits, path, key)?;
            let child_path = format!("{path}.{}", printable(key));
            for (k, v) in members {
                validate_key(k, limits, &child_path)?;
                validate_value(v, limits, &child_path, k, depth + 1, in_array)?;
            }
            Ok(())
        }
    }
}

fn check_depth(depth: usize, limits: &Limits, path: &str, key: &str) -> Result<(), HubError> {
    if depth > limits.max_depth {
        return Err(HubError::invalid(format!(
            "Property '{path}.{}' is nested {depth} levels deep, the limit is {}.",
            printable(key),
            limits.max_depth
        )));
    }
    Ok(())
}

fn validate_number(n: &serde_json::Number, path: &str, key: &str) -> Result<(), HubError> {
    let in_range = match (n.as_i64(), n.as_u64()) {
        (Some(i), _) => (MIN_INTEGER..=MAX_INTEGER).contains(&i),
        (None, Some(_)) => false,
        // Floating-point values are stored as doubles; only integers have a range rule.
        (None, None) => true,
    };
    if in_range {
        Ok(())
    } else {
        Err(HubError::invalid(format!(
            "Value of '{path}.{}' ({n}) is outside the integer range [{MIN_INTEGER}, {MAX_INTEGER}].",
            printable(key)
        )))
    }
}

/// Keys in messages are shortened so that a 1 KB key cannot flood a log line.
fn printable(key: &str) -> String {
    const SHOWN: usize = 64;
    if key.chars().count() <= SHOWN {
        key.to_owned()
    } else {
        let head: String = key.chars().take(SHOWN).collect();
        format!("{head}...")
    }
}

/// A section's size by IoT Hub's rule: for every member, the UTF-8 length of its key
/// plus the size of its value; strings count their UTF-8 bytes except control
/// characters, numbers 8, booleans 4, objects and arrays the sum of their contents.
pub fn size_of_object(obj: &Map<String, Value>) -> usize {
    obj.iter().map(|(k, v)| k.len() + size_of_value(v)).sum()
}

fn size_of_value(value: &Value) -> usize {
    match value {
        Value::Null => 0,
        Value::Bool(_) => 4,
        Value::Number(_) => 8,
        Value::String(s) => s
            .chars()
            .filter(|c| !c.is_control())
            .map(char::len_utf8)
            .sum(),
        Value::Array(items) => items.iter().map(size_of_value).sum(),
        Value::Object(members) => size_of_object(members),
    }
}

/// Fails with IoT Hub's error when a section would be larger than `limit`.
pub fn check_size(obj: &Map<String, Value>, limit: usize, section: &str) -> Result<(), HubError> {
    let size = size_of_object(obj);
    if size > limit {
        return Err(HubError::invalid(format!(
            "The {section} section would be {size} bytes, the limit is {limit}."
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(v: Value) -> Result<(), HubError> {
        match v {
            Value::Object(m) => validate_patch(&m, &Limits::default(), "desired"),
            _ => panic!("test input must be an object"),
        }
    }

    #[test]
    fn accepts_ordinary_values_and_null_deletes() {
        check(json!({"a": 1, "b": {"c": "x", "d": null}, "e": [1, 2, {"f": true}], "g": 1.5}))
            .unwrap();
    }

    #[test]
    fn rejects_forbidden_keys() {
        for key in ["a.b", "$a", "a b", "a\u{1}b", "a\u{85}b", ""] {
            let mut m = Map::new();
            m.insert(key.to_owned(), json!(1));
            assert!(check(Value::Object(m)).is_err(), "{key:?} accepted");
        }
    }

    #[test]
    fn depth_ten_is_allowed_eleven_is_not() {
        let nest = |levels: usize| {
            (0..levels).fold(
                json!({"property": "value"}),
                |inner, i| json!({ format!("l{i}"): inner }),
            )
        };
        // The root is level 0, so ten nested objects below it are allowed.
        check(nest(10)).unwrap();
        assert!(check(nest(11)).is_err());
    }

    #[test]
    fn integer_range_is_plus_minus_two_to_the_52() {
        check(json!({"a": MAX_INTEGER, "b": MIN_INTEGER})).unwrap();
        assert!(check(json!({"a": MAX_INTEGER + 1})).is_err());
        assert!(check(json!({"a": MIN_INTEGER - 1})).is_err());
        assert!(check(json!({"a": u64::MAX})).is_err());
    }

    #[test]
    fn strings_over_4k_and_nulls_in_arrays_are_rejected() {
        check(json!({"a": "x".repeat(4096)})).unwrap();
        assert!(check(json!({"a": "x".repeat(4097)})).is_err());
        assert!(check(json!({"a": [1, null]})).is_err());
        assert!(check(json!({"a": [{"b": null}]})).is_err());
    }

    #[test]
    fn size_follows_iot_hubs_rule() {
        let v = json!({"ab": "xyz", "n": 1, "b": true, "o": {"k": "\u{1}v"}});
        let Value::Object(m) = v else { unreachable!() };
        assert_eq!(
            size_of_object(&m),
            (2 + 3) + (1 + 8) + (1 + 4) + (1 + 1 + 1)
        );
    }
}
