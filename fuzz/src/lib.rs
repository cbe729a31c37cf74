//! Helpers shared by the fuzz targets in `fuzz_targets/`.
//!
//! - [`JsonSpec`]: `arbitrary`-driven JSON values biased towards the shapes twin
//!   patches and queries care about (small key alphabet, nesting, `null`s, the
//!   integer range edges), turned into `serde_json::Value` by [`JsonSpec::to_value`].
//! - [`twins`]: the fixed twins the query target evaluates against.

use arbitrary::Arbitrary;
use serde_json::{Map, Number, Value};

/// A twin-shaped JSON value.
#[derive(Arbitrary, Debug, Clone)]
pub enum JsonSpec {
    /// `null` (deletes in a patch; refused inside arrays).
    Null,
    /// A boolean.
    Bool(bool),
    /// An integer, possibly beyond IoT Hub's ±2^52.
    Int(i64),
    /// An integer near the ±2^52 edges.
    Edge(i8),
    /// A float (non-finite ones become `null`).
    Float(f64),
    /// A short string.
    Str(String),
    /// A long string (around IoT Hub's 4 KB value limit).
    Long(u16, char),
    /// An array.
    Array(Vec<JsonSpec>),
    /// An object with keys from a small alphabet, so patches collide with what
    /// earlier patches wrote.
    Object(Vec<(KeySpec, JsonSpec)>),
}

/// An object key.
#[derive(Arbitrary, Debug, Clone)]
pub enum KeySpec {
    /// One of a few common names (`a`..`d`).
    Common(u8),
    /// `$metadata` / `$version` (read-only members IoT Hub ignores at a section root).
    Meta(bool),
    /// Anything.
    Any(String),
    /// A long key (around IoT Hub's 1 KB key limit).
    Long(u16),
}

impl KeySpec {
    /// The key text.
    pub fn text(&self) -> String {
        match self {
            KeySpec::Common(n) => ["a", "b", "c", "d"][usize::from(*n % 4)].to_owned(),
            KeySpec::Meta(true) => "$metadata".to_owned(),
            KeySpec::Meta(false) => "$version".to_owned(),
            KeySpec::Any(s) => s.clone(),
            KeySpec::Long(n) => "k".repeat(usize::from(*n % 1100) + 1000),
        }
    }
}

/// Deepest nesting [`JsonSpec::to_value`] builds; deeper is cut to `null`.
const MAX_BUILD_DEPTH: usize = 16;

impl JsonSpec {
    /// The JSON value.
    pub fn to_value(&self) -> Value {
        self.build(0)
    }

    fn build(&self, depth: usize) -> Value {
        if depth > MAX_BUILD_DEPTH {
            return Value::Null;
        }
        match self {
            JsonSpec::Null => Value::Null,
            JsonSpec::Bool(b) => Value::Bool(*b),
            JsonSpec::Int(i) => Value::from(*i),
            JsonSpec::Edge(d) => Value::from(4_503_599_627_370_495i64 + i64::from(*d % 4)),
            JsonSpec::Float(f) => Number::from_f64(*f).map_or(Value::Null, Value::Number),
            JsonSpec::Str(s) => Value::String(s.clone()),
            JsonSpec::Long(n, c) => Value::String(c.to_string().repeat(usize::from(*n % 4200))),
            JsonSpec::Array(items) => {
                Value::Array(items.iter().map(|v| v.build(depth + 1)).collect())
            }
            JsonSpec::Object(members) => {
                let mut map = Map::new();
                for (k, v) in members {
                    map.insert(k.text(), v.build(depth + 1));
                }
                Value::Object(map)
            }
        }
    }
}

/// Twins as `GET /twins/{id}` returns them (shapes from the query conformance
/// corpus), for the query target to evaluate against.
pub fn twins() -> Vec<Value> {
    match serde_json::from_str(include_str!("twins.json")) {
        Ok(Value::Array(twins)) => twins,
        _ => Vec::new(),
    }
}
