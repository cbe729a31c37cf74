//! A section's `$metadata` as the twin keeps it in memory: one flat, exactly sized
//! array with a slot for the section itself and for every member of its values, at
//! any depth, in pre-order (a member's slot, then its own members' slots, then the
//! next member's). The values' shape says where each slot is, so no key is stored
//! twice and a section's metadata is one allocation of 16 B a node.
//!
//! [`Metadata`] (keyed, its children sorted by key) stays the stored form and the form
//! the merge edits: a section converts to it for a write and back after. Kept keyed, a
//! typical twin's ~13 metadata nodes cost 72 B each plus a vector per object.
//!
//! The two forms hold the same information for every section this engine writes: a
//! node has metadata for exactly the members of its object (`merge` and `for_value`
//! keep that). A member without metadata has an empty slot (and so do all slots below
//! it); metadata children without a member, which nothing renders, are not kept.
//!
//! Loading a section decodes its stored (keyed) metadata straight into the array
//! ([`Section`]'s `Deserialize`, through [`MetadataSeed`]): the values come first in
//! the stored record, so each child finds its member's slots as it is read, and no
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
/// No metadata at all for this node.
const ABSENT: i64 = i64::MIN + 1;

/// One node's metadata: when it last changed and [`NO_VERSION`] or its version, or
/// [`ABSENT`].
#[derive(Debug, Clone, Copy, PartialEq)]
struct Slot {
    last_updated: Timestamp,
    version: i64,
}

impl Slot {
    fn absent() -> Slot {
        Slot {
            last_updated: Timestamp::from_unix_nanos(0),
            version: ABSENT,
        }
    }

    fn of(metadata: &Metadata) -> Slot {
        Slot {
            last_updated: metadata.last_updated,
            version: metadata.last_updated_version.unwrap_or(NO_VERSION),
        }
    }

    fn is_absent(self) -> bool {
        self.version == ABSENT
    }

    fn version(self) -> Option<i64> {
        (self.version != NO_VERSION && self.version != ABSENT).then_some(self.version)
    }
}

/// Slots below an object's own: one per member, at any depth.
fn below(values: &Object) -> usize {
    values
        .iter()
        .map(|(_, node)| 1 + node.as_object().map_or(0, below))
        .sum()
}

/// A section's `$metadata`; see the module documentation.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct MetadataTree(Box<[Slot]>);

impl MetadataTree {
    /// The metadata of an empty section written at `now`.
    pub(super) fn new(now: Timestamp) -> Self {
        Self(Box::new([Slot {
            last_updated: now,
            version: NO_VERSION,
        }]))
    }

    /// `metadata` laid out along `values` (the object `metadata` describes).
    pub(super) fn from_keyed(metadata: &Metadata, values: &Object) -> Self {
        let mut slots = Vec::with_capacity(1 + below(values));
        slots.push(Slot::of(metadata));
        fill(&mut slots, Some(metadata), values);
        Self(slots.into_boxed_slice())
    }

    /// The keyed form, for `values` (the object this metadata describes).
    pub(super) fn to_keyed(&self, values: &Object) -> Metadata {
        let root = self.0.first().copied().unwrap_or_else(Slot::absent);
        let mut at = 1;
        Metadata {
            last_updated: root.last_updated,
            last_updated_version: root.version(),
            children: keyed_children(&self.0, &mut at, values),
        }
    }

    /// Renders the `$metadata` object for `values`, following their key order.
    pub(super) fn render(&self, values: &Object) -> serde_json::Value {
        let root = self.0.first().copied().unwrap_or_else(Slot::absent);
        let mut at = 1;
        render(&self.0, root, &mut at, values)
    }
}

/// Pushes the slots of `values`' members (and theirs), taken from `metadata`.
fn fill(slots: &mut Vec<Slot>, metadata: Option<&Metadata>, values: &Object) {
    let empty = Object::new();
    for (key, node) in values.iter() {
        let child = metadata.and_then(|m| m.children.get(key));
        slots.push(child.map_or_else(Slot::absent, Slot::of));
        fill(slots, child, node.as_object().unwrap_or(&empty));
    }
}

/// The keyed children of `values`' members, reading their slots from `*at` on.
fn keyed_children(slots: &[Slot], at: &mut usize, values: &Object) -> Children {
    let empty = Object::new();
    let mut children = Vec::new();
    for (key, node) in values.iter() {
        let slot = slots.get(*at).copied().unwrap_or_else(Slot::absent);
        *at += 1;
        let grandchildren = keyed_children(slots, at, node.as_object().unwrap_or(&empty));
        if !slot.is_absent() {
            children.push((
                key.into(),
                Metadata {
                    last_updated: slot.last_updated,
                    last_updated_version: slot.version(),
                    children: grandchildren,
                },
            ));
        }
    }
    Children::from_distinct(children.into_iter())
}

/// Renders one node whose slot is `slot`; its members' slots start at `*at`.
fn render(slots: &[Slot], slot: Slot, at: &mut usize, values: &Object) -> serde_json::Value {
    use serde_json::{Map, Value};
    let mut out = Map::new();
    out.insert(
        "$lastUpdated".into(),
        Value::String(slot.last_updated.to_iso()),
    );
    if let Some(v) = slot.version() {
        out.insert("$lastUpdatedVersion".into(), Value::from(v));
    }
    let empty = Object::new();
    for (key, node) in values.iter() {
        let child = slots.get(*at).copied().unwrap_or_else(Slot::absent);
        *at += 1;
        let members = match node {
            Node::Object(members) => members,
            _ => &empty,
        };
        if child.is_absent() {
            *at += below(members);
            continue;
        }
        out.insert(key.to_owned(), render(slots, child, at, members));
    }
    Value::Object(out)
}

/// Decodes a stored (keyed) metadata node straight into `slots`, the slots of the node
/// (first) and of everything below it along `values`, the object it describes.
/// Accepts exactly what [`Metadata`]'s own decoding accepts: `t` required, `v` and `c`
/// optional, other members ignored, the last of repeated children kept.
pub(super) struct MetadataSeed<'v, 's> {
    values: &'v Object,
    slots: &'s mut [Slot],
}

impl<'de> DeserializeSeed<'de> for MetadataSeed<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for MetadataSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a metadata node")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<(), A::Error> {
        let mut last_updated = None;
        let mut version = None;
        let mut seen_children = false;
        let (own, below) = match self.slots.split_first_mut() {
            Some(split) => split,
            None => return Err(A::Error::custom("metadata outside its values")),
        };
        while let Some(field) = access.next_key::<CompactString>()? {
            match field.as_str() {
                "t" if last_updated.is_some() => return Err(A::Error::duplicate_field("t")),
                "t" => last_updated = Some(access.next_value::<Timestamp>()?),
                "v" if version.is_some() => return Err(A::Error::duplicate_field("v")),
                "v" => version = Some(access.next_value::<Option<i64>>()?),
                "c" if seen_children => return Err(A::Error::duplicate_field("c")),
                "c" => {
                    seen_children = true;
                    access.next_value_seed(ChildrenSeed {
                        values: self.values,
                        slots: &mut *below,
                    })?;
                }
                _ => {
                    access.next_value::<IgnoredAny>()?;
                }
            }
        }
        let last_updated = last_updated.ok_or_else(|| A::Error::missing_field("t"))?;
        *own = Slot {
            last_updated,
            version: version.flatten().unwrap_or(NO_VERSION),
        };
        Ok(())
    }
}

/// A metadata node's `c`: each child goes to its member's slots; a child for no member
/// is read and dropped.
struct ChildrenSeed<'v, 's> {
    values: &'v Object,
    slots: &'s mut [Slot],
}

impl<'de> DeserializeSeed<'de> for ChildrenSeed<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ChildrenSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map of metadata children")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<(), A::Error> {
        let empty = Object::new();
        while let Some(key) = access.next_key::<CompactString>()? {
            // The member's slots start after those of the members before it.
            let mut start = 0;
            let mut found = None;
            for (k, node) in self.values.iter() {
                let members = node.as_object().unwrap_or(&empty);
                let len = 1 + below(members);
                if k == key.as_str() {
                    found = Some((members, start, len));
                    break;
                }
                start += len;
            }
            let Some((members, start, len)) = found else {
                access.next_value::<IgnoredAny>()?;
                continue;
            };
            let Some(slots) = self.slots.get_mut(start..start + len) else {
                return Err(A::Error::custom("metadata outside its values"));
            };
            // A repeated child replaces the earlier one whole.
            slots.fill(Slot::absent());
            access.next_value_seed(MetadataSeed {
                values: members,
                slots,
            })?;
        }
        Ok(())
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
                    Some(values) => {
                        let mut slots = vec![Slot::absent(); 1 + below(values)];
                        access.next_value_seed(MetadataSeed {
                            values,
                            slots: &mut slots,
                        })?;
                        tree = Some(MetadataTree(slots.into_boxed_slice()));
                    }
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
