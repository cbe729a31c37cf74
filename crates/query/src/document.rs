//! What a query evaluates over: a [`Document`], resolved path by path.
//!
//! A twin source need not render each twin into a `serde_json::Value` to be queried: the
//! hub keeps twins in its own structures, and rendering one costs ~40× more than
//! evaluating a WHERE clause on it. A source instead lends a view that resolves a path
//! segment by segment to something borrowed from the twin ([`Field::Json`], or
//! [`Field::Node`] and [`Field::Object`] for JSON kept as a compact
//! [`twinhub_json`] tree), a computed scalar (ids, versions, etags), or — rarely, for a
//! virtual object projected whole — a value built on demand ([`Field::Owned`]).
//!
//! `serde_json::Value` is itself a document, which is what tests, `MemorySource` and
//! [`crate::evaluate`] use. Every implementation must resolve names like it: case-
//! insensitively, preferring an exact match, then the first case-insensitive one in the
//! rendered document's member order ([`lookup`]).

use std::borrow::Cow;

use serde_json::Value;
use twinhub_json::{Node, Object};

use crate::ast::Segment;
use crate::eval::{self, Datum};

/// A property's value, as a [`Document`] resolves it.
#[derive(Debug, Clone, PartialEq)]
pub enum Field<'a> {
    /// JSON stored in the document.
    Json(&'a Value),
    /// JSON stored in the document as a compact tree.
    Node(&'a Node),
    /// An object stored in the document as a compact tree outside any [`Node`] (e.g. a
    /// twin's tags).
    Object(&'a Object),
    /// A computed string (ids, etags, timestamps).
    Str(Cow<'a, str>),
    /// A computed integer (versions, counters).
    Int(i64),
    /// A computed boolean.
    Bool(bool),
    /// Built for this request because it is stored nowhere (a virtual object asked for
    /// whole, or a value inside one).
    Owned(Value),
}

impl<'a> Field<'a> {
    /// The value as JSON, cloning what is borrowed.
    pub fn into_json(self) -> Value {
        match self {
            Field::Json(v) => v.clone(),
            Field::Node(n) => n.to_value(),
            Field::Object(m) => Value::Object(m.to_map()),
            Field::Str(s) => Value::String(s.into_owned()),
            Field::Int(n) => Value::from(n),
            Field::Bool(b) => Value::Bool(b),
            Field::Owned(v) => v,
        }
    }

    /// True for a JSON `null`.
    pub fn is_null(&self) -> bool {
        matches!(
            self,
            Field::Json(Value::Null) | Field::Node(Node::Null) | Field::Owned(Value::Null)
        )
    }

    /// The string when it is borrowed from the document (ids always are).
    pub fn as_borrowed_str(&self) -> Option<&'a str> {
        match self {
            Field::Json(Value::String(s)) => Some(s),
            Field::Node(node) => node.as_str(),
            Field::Str(Cow::Borrowed(s)) => Some(s),
            _ => None,
        }
    }

    /// The value for evaluation, borrowing from the document where it can.
    pub(crate) fn into_datum(self) -> Datum<'a> {
        match self {
            Field::Json(v) => Datum::from_json(v),
            Field::Node(n) => Datum::from_node(n),
            Field::Object(m) => Datum::Object(Cow::Owned(m.to_map())),
            Field::Str(s) => Datum::Str(s),
            Field::Int(n) => int_datum(n),
            Field::Bool(b) => Datum::Bool(b),
            Field::Owned(v) => Datum::from_owned_json(v),
        }
    }

    /// The value for comparison, borrowing from this field.
    pub(crate) fn datum(&self) -> Datum<'_> {
        match self {
            Field::Json(v) => Datum::from_json(v),
            Field::Node(n) => Datum::from_node(n),
            Field::Object(m) => Datum::Object(Cow::Owned(m.to_map())),
            Field::Str(s) => Datum::Str(Cow::Borrowed(s)),
            Field::Int(n) => int_datum(*n),
            Field::Bool(b) => Datum::Bool(*b),
            Field::Owned(v) => Datum::from_json(v),
        }
    }
}

/// Integers the way a rendered twin's JSON number evaluates (`as_f64` of an `i64`).
fn int_datum(n: i64) -> Datum<'static> {
    Datum::Number(n as f64)
}

/// A document queries evaluate over; see the module documentation.
pub trait Document {
    /// Resolves `path` (never empty): the stored name of its last segment and its value,
    /// or `None` when it is undefined (a missing member, or a member of a non-object).
    fn resolve(&self, path: &[Segment]) -> Option<(Cow<'_, str>, Field<'_>)>;

    /// The root member named exactly `name`; the executor reads the ids (`deviceId`,
    /// `moduleId`, `jobId`) through it.
    fn member(&self, name: &str) -> Option<Field<'_>>;

    /// False for documents that are not JSON objects (they belong to no collection).
    fn is_object(&self) -> bool {
        true
    }

    /// The whole document, for `SELECT *` rows.
    fn to_json(&self) -> Value;
}

impl Document for Value {
    fn resolve(&self, path: &[Segment]) -> Option<(Cow<'_, str>, Field<'_>)> {
        resolve_json(self, path).map(|(k, v)| (Cow::Borrowed(k), Field::Json(v)))
    }

    fn member(&self, name: &str) -> Option<Field<'_>> {
        eval::field(self, name).map(Field::Json)
    }

    fn is_object(&self) -> bool {
        Value::is_object(self)
    }

    fn to_json(&self) -> Value {
        self.clone()
    }
}

/// Resolves `path` inside `root`: the stored key of the last segment and its value. An
/// empty path resolves to `root` itself with an empty key.
pub fn resolve_json<'a>(root: &'a Value, path: &[Segment]) -> Option<(&'a str, &'a Value)> {
    let mut current = root;
    let mut key = "";
    for segment in path {
        let Value::Object(map) = current else {
            return None;
        };
        let (k, v) = lookup(map, segment)?;
        key = k;
        current = v;
    }
    Some((key, current))
}

/// The member of `map` that `segment` names: an exact match, else the first
/// case-insensitive one.
pub fn lookup<'a>(
    map: &'a serde_json::Map<String, Value>,
    segment: &Segment,
) -> Option<(&'a str, &'a Value)> {
    eval::lookup(map, segment)
}

/// [`lookup`] in a compact object.
pub fn lookup_node<'a>(object: &'a Object, segment: &Segment) -> Option<(&'a str, &'a Node)> {
    eval::lookup_node(object, segment)
}

/// [`resolve_json`] in a compact tree.
pub fn resolve_node<'a>(root: &'a Node, path: &[Segment]) -> Option<(&'a str, &'a Node)> {
    let mut current = root;
    let mut key = "";
    for segment in path {
        let Node::Object(object) = current else {
            return None;
        };
        let (k, v) = lookup_node(object, segment)?;
        key = k;
        current = v;
    }
    Some((key, current))
}

/// Continues resolving `rest` below a member already found (named `name`, valued
/// `field`): the building block for [`Document`] implementations.
pub fn descend<'a>(
    name: &'a str,
    field: Field<'a>,
    rest: &[Segment],
) -> Option<(Cow<'a, str>, Field<'a>)> {
    let Some((first, tail)) = rest.split_first() else {
        return Some((Cow::Borrowed(name), field));
    };
    match field {
        Field::Json(value) => {
            resolve_json(value, rest).map(|(k, v)| (Cow::Borrowed(k), Field::Json(v)))
        }
        Field::Node(node) => {
            resolve_node(node, rest).map(|(k, v)| (Cow::Borrowed(k), Field::Node(v)))
        }
        Field::Object(object) => {
            let (k, v) = lookup_node(object, first)?;
            resolve_node(v, tail).map(|(key, v)| {
                let key = if tail.is_empty() { k } else { key };
                (Cow::Borrowed(key), Field::Node(v))
            })
        }
        Field::Owned(value) => resolve_json(&value, rest)
            .map(|(k, v)| (Cow::Owned(k.to_owned()), Field::Owned(v.clone()))),
        Field::Str(_) | Field::Int(_) | Field::Bool(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Path;
    use serde_json::json;

    fn path(text: &str) -> Path {
        Path::new(text.split('.')).unwrap()
    }

    #[test]
    fn descend_matches_resolving_the_rendered_json() {
        let tags = json!({"Zone": {"a": 1, "A": 2}, "zone": 3});
        let Value::Object(map) = &tags else {
            unreachable!()
        };
        let root = json!({"tags": tags});
        for text in ["zone", "Zone", "ZONE", "Zone.a", "Zone.A", "zone.a", "x"] {
            let rest = path(text);
            let mut full = vec![crate::Segment::new("tags")];
            full.extend(rest.segments().iter().cloned());
            let want = root
                .resolve(&full)
                .map(|(k, f)| (k.into_owned(), f.into_json()));
            let node = Node::from_value(tags.clone());
            let object = Object::from_map(map.clone());
            for field in [
                Field::Object(&object),
                Field::Node(&node),
                Field::Json(&tags),
                Field::Owned(tags.clone()),
            ] {
                let got = descend("tags", field, rest.segments())
                    .map(|(k, f)| (k.into_owned(), f.into_json()));
                assert_eq!(got, want, "{text}");
            }
        }
        assert_eq!(descend("n", Field::Int(3), path("a").segments()), None);
        assert_eq!(
            descend("n", Field::Int(3), &[]).map(|(k, f)| (k.into_owned(), f.into_json())),
            Some(("n".to_owned(), json!(3)))
        );
    }
}
