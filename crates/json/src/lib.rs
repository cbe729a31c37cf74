//! A compact, immutable JSON tree for JSON a process keeps for long: a hub holds every
//! twin's tags and properties in memory, a million of them.
//!
//! `serde_json::Value` with `preserve_order` keeps each object as an `IndexMap`: a hash
//! index block, 104-byte entries and one heap block per key and per string. A twin's
//! objects have a handful of members and are read far more often than written, so here
//! an object is one exactly sized boxed slice of `(key, node)` pairs in insertion order,
//! searched linearly (no hash index), and keys and strings up to 24 bytes live inline
//! ([`CompactString`]). A typical twin's JSON drops from ~50 heap blocks to a few.
//!
//! The tree is built whole and never edited in place: writers convert to
//! `serde_json::Value` ([`Object::to_map`]), edit that, and convert back
//! ([`Object::from_map`]). It serialises to exactly the JSON the `Value` would, so the
//! stored form does not change, and decodes straight from JSON without a `Value` in
//! between.
//!
//! - [`Node`]: one JSON value.
//! - [`Object`]: a JSON object, member order kept.
//! - `serde` (module `serde_impl`): encoding and decoding.

use compact_str::CompactString;
use serde_json::{Map, Number, Value};

mod serde_impl;

/// One JSON value.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A number, as `serde_json` holds it (integers exact, floats as `f64`).
    Number(Number),
    /// A string, inline up to 24 bytes.
    String(CompactString),
    /// An array, exactly sized.
    Array(Box<[Node]>),
    /// An object.
    Object(Object),
}

/// A JSON object: its members in insertion order, exactly sized, without a hash index.
///
/// Equality ignores member order, as `serde_json::Map`'s does.
#[derive(Debug, Clone, Default)]
pub struct Object(Box<[(CompactString, Node)]>);

impl Node {
    /// The node holding `value`, taking its strings over.
    pub fn from_value(value: Value) -> Node {
        match value {
            Value::Null => Node::Null,
            Value::Bool(b) => Node::Bool(b),
            Value::Number(n) => Node::Number(n),
            Value::String(s) => Node::String(CompactString::from(s)),
            Value::Array(items) => Node::Array(items.into_iter().map(Node::from_value).collect()),
            Value::Object(map) => Node::Object(Object::from_map(map)),
        }
    }

    /// The node as a `serde_json::Value`.
    pub fn to_value(&self) -> Value {
        match self {
            Node::Null => Value::Null,
            Node::Bool(b) => Value::Bool(*b),
            Node::Number(n) => Value::Number(n.clone()),
            Node::String(s) => Value::String(s.as_str().to_owned()),
            Node::Array(items) => Value::Array(items.iter().map(Node::to_value).collect()),
            Node::Object(object) => Value::Object(object.to_map()),
        }
    }

    /// True for `null`.
    pub fn is_null(&self) -> bool {
        matches!(self, Node::Null)
    }

    /// The string, when this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Node::String(s) => Some(s.as_str()),
            _ => None,
        }
    }

    /// The object, when this is one.
    pub fn as_object(&self) -> Option<&Object> {
        match self {
            Node::Object(object) => Some(object),
            _ => None,
        }
    }
}

impl From<Value> for Node {
    fn from(value: Value) -> Node {
        Node::from_value(value)
    }
}

impl PartialEq<Value> for Node {
    fn eq(&self, other: &Value) -> bool {
        match (self, other) {
            (Node::Null, Value::Null) => true,
            (Node::Bool(a), Value::Bool(b)) => a == b,
            (Node::Number(a), Value::Number(b)) => a == b,
            (Node::String(a), Value::String(b)) => a.as_str() == b.as_str(),
            (Node::Array(a), Value::Array(b)) => {
                a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y)
            }
            (Node::Object(a), Value::Object(b)) => a == b,
            _ => false,
        }
    }
}

impl Object {
    /// An object with no members (allocates nothing).
    pub fn new() -> Object {
        Object::default()
    }

    /// The object holding `map`'s members in `map`'s order, taking its strings over.
    pub fn from_map(map: Map<String, Value>) -> Object {
        Object(
            map.into_iter()
                .map(|(key, value)| (CompactString::from(key), Node::from_value(value)))
                .collect(),
        )
    }

    /// The object as a `serde_json::Map`, members in order.
    pub fn to_map(&self) -> Map<String, Value> {
        let mut map = Map::with_capacity(self.0.len());
        for (key, node) in self.0.iter() {
            map.insert(key.as_str().to_owned(), node.to_value());
        }
        map
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when the object has no members.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The members, in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &Node)> + '_ {
        self.0.iter().map(|(key, node)| (key.as_str(), node))
    }

    /// The member named exactly `key`.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.0
            .iter()
            .find(|(k, _)| k.as_str() == key)
            .map(|(_, node)| node)
    }

    /// Members from a decoder, moved out of `members` into an exactly sized slice: in
    /// order, the value of a repeated key replacing the earlier one in its place, as
    /// `serde_json::Map` does.
    fn from_members(members: &mut Vec<(CompactString, Node)>) -> Object {
        if has_repeated_key(members) {
            let mut kept: Vec<(CompactString, Node)> = Vec::with_capacity(members.len());
            for (key, node) in members.drain(..) {
                match kept.iter_mut().find(|(k, _)| *k == key) {
                    Some(slot) => slot.1 = node,
                    None => kept.push((key, node)),
                }
            }
            return Object(kept.into_boxed_slice());
        }
        Object(members.drain(..).collect())
    }
}

fn has_repeated_key(members: &[(CompactString, Node)]) -> bool {
    if members.len() <= 16 {
        return members
            .iter()
            .enumerate()
            .any(|(i, (key, _))| members[..i].iter().any(|(k, _)| k == key));
    }
    let mut keys: Vec<&str> = members.iter().map(|(k, _)| k.as_str()).collect();
    keys.sort_unstable();
    keys.windows(2).any(|pair| pair[0] == pair[1])
}

impl PartialEq for Object {
    fn eq(&self, other: &Object) -> bool {
        self.len() == other.len() && self.iter().all(|(key, node)| other.get(key) == Some(node))
    }
}

impl PartialEq<Map<String, Value>> for Object {
    fn eq(&self, other: &Map<String, Value>) -> bool {
        self.len() == other.len()
            && self
                .iter()
                .all(|(key, node)| other.get(key).is_some_and(|value| node == value))
    }
}

impl From<Map<String, Value>> for Object {
    fn from(map: Map<String, Value>) -> Object {
        Object::from_map(map)
    }
}

#[cfg(test)]
mod tests;
