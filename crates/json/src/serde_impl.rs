//! `Node` and `Object` encode to exactly the JSON of the equivalent `serde_json::Value`
//! and decode from JSON directly, without building a `Value` first.

use super::{Node, Object};
use compact_str::CompactString;
use serde::de::{Deserialize, Deserializer, Error, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::Number;
use std::cell::RefCell;
use std::fmt;

/// Scratch vectors reused by decoding, one per nesting level in use. Members are
/// gathered in one and then moved into an exactly sized allocation: growing a
/// vector and shrinking it to size would cost reallocations and, for a hub loading
/// a million twins, leave a small free gap after every object.
struct Scratch<T> {
    free: RefCell<Vec<Vec<T>>>,
}

/// Scratch vectors grown past this many elements are not kept.
const SCRATCH_KEEP: usize = 256;
/// Most scratch vectors kept per kind and thread (nesting deeper than this allocates).
const SCRATCH_DEPTH: usize = 16;

impl<T> Scratch<T> {
    const fn new() -> Self {
        Self {
            free: RefCell::new(Vec::new()),
        }
    }

    fn take(&self) -> Vec<T> {
        self.free.borrow_mut().pop().unwrap_or_default()
    }

    fn give_back(&self, mut scratch: Vec<T>) {
        scratch.clear();
        let mut free = self.free.borrow_mut();
        if scratch.capacity() <= SCRATCH_KEEP && free.len() < SCRATCH_DEPTH {
            free.push(scratch);
        }
    }
}

thread_local! {
    static MEMBERS: Scratch<(CompactString, Node)> = const { Scratch::new() };
    static ITEMS: Scratch<Node> = const { Scratch::new() };
}

impl Serialize for Node {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Node::Null => serializer.serialize_unit(),
            Node::Bool(b) => serializer.serialize_bool(*b),
            Node::Number(n) => n.serialize(serializer),
            Node::String(s) => serializer.serialize_str(s),
            Node::Array(items) => serializer.collect_seq(items.iter()),
            Node::Object(object) => object.serialize(serializer),
        }
    }
}

impl Serialize for Object {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.len()))?;
        for (key, node) in self.iter() {
            map.serialize_entry(key, node)?;
        }
        map.end()
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, b: bool) -> Result<Node, E> {
        Ok(Node::Bool(b))
    }

    fn visit_i64<E>(self, n: i64) -> Result<Node, E> {
        Ok(Node::Number(n.into()))
    }

    fn visit_u64<E>(self, n: u64) -> Result<Node, E> {
        Ok(Node::Number(n.into()))
    }

    fn visit_f64<E>(self, n: f64) -> Result<Node, E> {
        // As `serde_json::Value` does: JSON has no NaN or infinity.
        Ok(Number::from_f64(n).map_or(Node::Null, Node::Number))
    }

    fn visit_str<E: Error>(self, s: &str) -> Result<Node, E> {
        Ok(Node::String(CompactString::new(s)))
    }

    fn visit_string<E: Error>(self, s: String) -> Result<Node, E> {
        Ok(Node::String(CompactString::from(s)))
    }

    fn visit_none<E>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }

    fn visit_unit<E>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Node, D::Error> {
        Node::deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut access: A) -> Result<Node, A::Error> {
        let mut items = ITEMS.with(Scratch::take);
        while let Some(item) = access.next_element::<Node>()? {
            items.push(item);
        }
        let array: Box<[Node]> = items.drain(..).collect();
        ITEMS.with(|scratch| scratch.give_back(items));
        Ok(Node::Array(array))
    }

    fn visit_map<A: MapAccess<'de>>(self, access: A) -> Result<Node, A::Error> {
        ObjectVisitor.visit_map(access).map(Node::Object)
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Node, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct ObjectVisitor;

impl<'de> Visitor<'de> for ObjectVisitor {
    type Value = Object;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Object, A::Error> {
        let mut members = MEMBERS.with(Scratch::take);
        while let Some(key) = access.next_key::<CompactString>()? {
            let node = access.next_value::<Node>()?;
            members.push((key, node));
        }
        let object = Object::from_members(&mut members);
        MEMBERS.with(|scratch| scratch.give_back(members));
        Ok(object)
    }
}

impl<'de> Deserialize<'de> for Object {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Object, D::Error> {
        deserializer.deserialize_map(ObjectVisitor)
    }
}
