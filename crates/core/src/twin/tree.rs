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
//!
//! Loading a section decodes its stored (keyed) metadata straight into the tree
//! ([`Section`]'s `Deserialize`, through [`MetadataSeed`]): the values come first in
//! the stored record, so each child finds its member's slot as it is read, and no
//! keyed copy is built only to be thrown away.

use super::{Children, Metadata, Section};
use crate::Timestamp;
use compact_str::CompactString;
use serde::de::{DeserializeSeed, Deserializer, Error, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use std::fmt;
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
        let mut children = Vec::new();
        if !metadata.children.is_empty() {
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
            children: slots(children),
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

/// Children slots as kept: none at all when no member has metadata.
fn slots(children: Vec<Option<MetadataTree>>) -> Box<[Option<MetadataTree>]> {
    if children.iter().all(Option::is_none) {
        Box::default()
    } else {
        children.into_boxed_slice()
    }
}

/// Decodes a stored (keyed) metadata node straight into a [`MetadataTree`] laid out
/// along `values`, the object it describes. Accepts exactly what [`Metadata`]'s own
/// decoding accepts: `t` required, `v` and `c` optional, other members ignored, the
/// last of repeated children kept.
pub(super) struct MetadataSeed<'v> {
    pub(super) values: &'v Object,
}

impl<'de> DeserializeSeed<'de> for MetadataSeed<'_> {
    type Value = MetadataTree;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<MetadataTree, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for MetadataSeed<'_> {
    type Value = MetadataTree;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a metadata node")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<MetadataTree, A::Error> {
        let mut last_updated = None;
        let mut version = None;
        let mut children = Vec::new();
        let mut seen_children = false;
        while let Some(field) = access.next_key::<CompactString>()? {
            match field.as_str() {
                "t" if last_updated.is_some() => return Err(A::Error::duplicate_field("t")),
                "t" => last_updated = Some(access.next_value::<Timestamp>()?),
                "v" if version.is_some() => return Err(A::Error::duplicate_field("v")),
                "v" => version = Some(access.next_value::<Option<i64>>()?),
                "c" if seen_children => return Err(A::Error::duplicate_field("c")),
                "c" => {
                    seen_children = true;
                    children = access.next_value_seed(ChildrenSeed {
                        values: self.values,
                    })?
                }
                _ => {
                    access.next_value::<IgnoredAny>()?;
                }
            }
        }
        let last_updated = last_updated.ok_or_else(|| A::Error::missing_field("t"))?;
        Ok(MetadataTree {
            last_updated,
            last_updated_version: version.flatten().unwrap_or(NO_VERSION),
            children: slots(children),
        })
    }
}

/// A metadata node's `c`: each child goes to its member's slot; a child for no member
/// is read and dropped.
struct ChildrenSeed<'v> {
    values: &'v Object,
}

impl<'de> DeserializeSeed<'de> for ChildrenSeed<'_> {
    type Value = Vec<Option<MetadataTree>>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ChildrenSeed<'_> {
    type Value = Vec<Option<MetadataTree>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map of metadata children")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
        let mut slots: Vec<Option<MetadataTree>> = Vec::new();
        let empty = Object::new();
        while let Some(key) = access.next_key::<CompactString>()? {
            let Some(index) = self.values.iter().position(|(k, _)| k == key.as_str()) else {
                access.next_value::<IgnoredAny>()?;
                continue;
            };
            let members = self
                .values
                .iter()
                .nth(index)
                .and_then(|(_, node)| node.as_object())
                .unwrap_or(&empty);
            let child = access.next_value_seed(MetadataSeed { values: members })?;
            if slots.is_empty() {
                slots.resize_with(self.values.len(), || None);
            }
            if let Some(slot) = slots.get_mut(index) {
                *slot = Some(child);
            }
        }
        Ok(slots)
    }
}

impl<'de> Deserialize<'de> for Section {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Section, D::Error> {
        deserializer.deserialize_struct(
            "Section",
            &["values", "metadata", "version"],
            SectionVisitor,
        )
    }
}

struct SectionVisitor;

impl<'de> Visitor<'de> for SectionVisitor {
    type Value = Section;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("struct Section")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Section, A::Error> {
        let mut values: Option<Object> = None;
        let mut tree: Option<MetadataTree> = None;
        // Metadata stored before the values (never written so) is aligned afterwards.
        let mut keyed: Option<Metadata> = None;
        let mut version: Option<i64> = None;
        while let Some(field) = access.next_key::<CompactString>()? {
            match field.as_str() {
                "values" if values.is_some() => return Err(A::Error::duplicate_field("values")),
                "values" => values = Some(access.next_value()?),
                "metadata" if tree.is_some() || keyed.is_some() => {
                    return Err(A::Error::duplicate_field("metadata"))
                }
                "metadata" => match &values {
                    Some(values) => tree = Some(access.next_value_seed(MetadataSeed { values })?),
                    None => keyed = Some(access.next_value()?),
                },
                "version" if version.is_some() => return Err(A::Error::duplicate_field("version")),
                "version" => version = Some(access.next_value()?),
                _ => {
                    access.next_value::<IgnoredAny>()?;
                }
            }
        }
        let values = values.ok_or_else(|| A::Error::missing_field("values"))?;
        let metadata = match (tree, keyed) {
            (Some(tree), _) => tree,
            (None, Some(keyed)) => MetadataTree::from_keyed(&keyed, &values),
            (None, None) => return Err(A::Error::missing_field("metadata")),
        };
        let version = version.ok_or_else(|| A::Error::missing_field("version"))?;
        Ok(Section {
            values,
            metadata,
            version,
        })
    }
}
