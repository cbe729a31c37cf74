//! A section's `$metadata` as the twin keeps it in memory: a tree shaped like the
//! section's values, one slot per member in the members' order, so no key is stored
//! twice.
//!
//! [`Metadata`] (keyed, its children sorted by key) stays the stored form and the form
//! the merge edits: a section converts to it for a write and back after. Kept keyed, a
//! typical twin's ~13 metadata nodes cost 72 B each plus a vector per object; aligned
//! with the values they cost 32 B each and need no keys.
//!
//! The two forms hold the same information for every section this engine writes: a
//! node has metadata for exactly the members of its object (`merge` and `for_value`
//! keep that). Metadata children without a member, which nothing renders, are not
//! kept.

use super::{Children, Metadata};
use crate::Timestamp;
use twinhub_json::{Node, Object};

/// `lastUpdatedVersion` absent. Versions start at 1 and only grow.
const NO_VERSION: i64 = i64::MIN;

/// One node of a section's `$metadata`; see the module documentation.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct MetadataTree {
    last_updated: Timestamp,
    /// [`NO_VERSION`] when absent: an `Option<i64>` would take 16 bytes.
    last_updated_version: i64,
    /// One slot per member of the node's object, in member order; empty when the
    /// node's value is not an object or no member has metadata.
    children: Box<[Option<MetadataTree>]>,
}

impl MetadataTree {
    pub(super) fn new(now: Timestamp) -> Self {
        Self {
            last_updated: now,
            last_updated_version: NO_VERSION,
            children: Box::default(),
        }
    }

    /// `metadata` laid out along `values` (the object `metadata` describes).
    pub(super) fn from_keyed(metadata: &Metadata, values: &Object) -> Self {
        let mut children: Box<[Option<MetadataTree>]> = Box::default();
        if !metadata.children.is_empty() && !values.is_empty() {
            let empty = Object::new();
            children = values
                .iter()
                .map(|(key, node)| {
                    let members = node.as_object().unwrap_or(&empty);
                    metadata
                        .children
                        .get(key)
                        .map(|child| MetadataTree::from_keyed(child, members))
                })
                .collect();
        }
        Self {
            last_updated: metadata.last_updated,
            last_updated_version: metadata.last_updated_version.unwrap_or(NO_VERSION),
            children,
        }
    }

    /// The keyed form, for `values` (the object this node describes).
    pub(super) fn to_keyed(&self, values: &Object) -> Metadata {
        let empty = Object::new();
        let children = values
            .iter()
            .zip(self.children.iter())
            .filter_map(|((key, node), slot)| {
                let child = slot.as_ref()?;
                let members = node.as_object().unwrap_or(&empty);
                Some((key.into(), child.to_keyed(members)))
            })
            .collect::<Vec<_>>();
        Metadata {
            last_updated: self.last_updated,
            last_updated_version: self.version(),
            children: Children::from_distinct(children.into_iter()),
        }
    }

    fn version(&self) -> Option<i64> {
        (self.last_updated_version != NO_VERSION).then_some(self.last_updated_version)
    }

    /// Renders the `$metadata` object for `values`, following their key order.
    pub(super) fn render(&self, values: &Object) -> serde_json::Value {
        use serde_json::{Map, Value};
        let mut out = Map::new();
        out.insert(
            "$lastUpdated".into(),
            Value::String(self.last_updated.to_iso()),
        );
        if let Some(v) = self.version() {
            out.insert("$lastUpdatedVersion".into(), Value::from(v));
        }
        let empty = Object::new();
        for ((key, value), slot) in values.iter().zip(self.children.iter()) {
            let Some(child) = slot else {
                continue;
            };
            let members = match value {
                Node::Object(members) => members,
                _ => &empty,
            };
            out.insert(key.to_owned(), child.render(members));
        }
        Value::Object(out)
    }
}
