//! Equality indexes over twin properties, built per shard when a query first needs
//! one and kept up to date by every write.
//!
//! A selective query (`WHERE tags.region = 'r17' AND ...`) otherwise evaluates its
//! condition on every twin until its page fills: at 0.4% selectivity a page of 100
//! rows reads ~40,000 twins, mostly cache misses. The query's push-down hints
//! ([`ScanHint`]) name properties that selected twins must equal; for the first such
//! hint on `tags.…` or `properties.…` each shard files its twins' device ids under the
//! property's value, and a cursor then visits only the ids filed under the wanted
//! value, in key order, re-checking the whole condition on each.
//!
//! The path is resolved exactly as the query resolves it ([`TwinDocument`]), so an
//! index belongs to one spelling of a path (an exact-case member wins over a
//! case-insensitive one). Only primitives are filed, under `=`'s own equality
//! (strings exactly, numbers by value): a twin whose property is anything else cannot
//! satisfy the hint. Presence updates (`touch`) change neither tags nor properties,
//! so only [`Hub::write`](crate::state::Hub) has to maintain them.

use crate::document::TwinDocument;
use crate::shard::DeviceRecord;
use compact_str::CompactString;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use twinhub_json::Node;
use twinhub_query::{Document, Field, HintCondition, Path, ScanHint};

/// Most indexes a shard keeps (each costs ~50–70 B per twin).
const MAX_INDEXES: usize = 4;

/// A primitive value as `=` compares it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum IndexKey {
    Str(Box<str>),
    /// `f64` bits, with -0 filed as 0 (`-0 = 0` is true).
    Number(u64),
    Bool(bool),
}

impl IndexKey {
    fn number(n: f64) -> IndexKey {
        IndexKey::Number(if n == 0.0 { 0.0f64 } else { n }.to_bits())
    }

    fn of_json(value: &Value) -> Option<IndexKey> {
        match value {
            Value::String(s) => Some(IndexKey::Str(s.as_str().into())),
            Value::Number(n) => n.as_f64().map(IndexKey::number),
            Value::Bool(b) => Some(IndexKey::Bool(*b)),
            _ => None,
        }
    }

    fn of_field(field: &Field<'_>) -> Option<IndexKey> {
        match field {
            Field::Json(value) => IndexKey::of_json(value),
            Field::Node(node) => match node {
                Node::String(s) => Some(IndexKey::Str(s.as_str().into())),
                Node::Number(n) => n.as_f64().map(IndexKey::number),
                Node::Bool(b) => Some(IndexKey::Bool(*b)),
                _ => None,
            },
            Field::Owned(value) => IndexKey::of_json(value),
            Field::Str(s) => Some(IndexKey::Str(s.as_ref().into())),
            // Exact: twin integers are far below 2^53.
            Field::Int(n) => Some(IndexKey::number(*n as f64)),
            Field::Bool(b) => Some(IndexKey::Bool(*b)),
            Field::Object(_) => None,
        }
    }
}

/// The first hint a shard can answer from an index: `path = constant` below `tags`
/// or `properties`.
pub(crate) fn plan(hints: &[ScanHint]) -> Option<(&Path, IndexKey)> {
    hints.iter().find_map(|hint| {
        let HintCondition::Equals(value) = &hint.condition else {
            return None;
        };
        let segments = hint.path.segments();
        let root = segments.first()?.folded();
        let indexable = segments.len() >= 2 && matches!(root, "tags" | "properties");
        indexable.then_some((&hint.path, IndexKey::of_json(value)?))
    })
}

/// One shard's twins filed by the value of one property.
pub(crate) struct EqualityIndex {
    path: Path,
    ids: HashMap<IndexKey, BTreeSet<String>>,
}

impl EqualityIndex {
    fn build(path: &Path, devices: &BTreeMap<CompactString, DeviceRecord>) -> EqualityIndex {
        let mut index = EqualityIndex {
            path: path.clone(),
            ids: HashMap::new(),
        };
        for (id, record) in devices {
            if let Some(key) = index.key_of(record) {
                index.ids.entry(key).or_default().insert(id.to_string());
            }
        }
        index
    }

    fn key_of(&self, record: &DeviceRecord) -> Option<IndexKey> {
        let document = TwinDocument::new(record);
        let (_, field) = document.resolve(self.path.segments())?;
        IndexKey::of_field(&field)
    }

    /// The ids filed under `key`, in key order.
    pub(crate) fn ids(&self, key: &IndexKey) -> Option<&BTreeSet<String>> {
        self.ids.get(key)
    }
}

/// A shard's indexes.
#[derive(Default)]
pub(crate) struct Indexes(Vec<EqualityIndex>);

impl Indexes {
    /// The index on `path`, built now from `devices` if there is none and room for it.
    pub(crate) fn ensure(
        &mut self,
        path: &Path,
        devices: &BTreeMap<CompactString, DeviceRecord>,
    ) -> Option<&EqualityIndex> {
        let found = self.0.iter().position(|index| index.path == *path);
        let position = match found {
            Some(i) => i,
            None if self.0.len() < MAX_INDEXES => {
                self.0.push(EqualityIndex::build(path, devices));
                self.0.len() - 1
            }
            None => return None,
        };
        self.0.get(position)
    }

    /// Each index's key for a record about to be written (nothing to compute, and no
    /// allocation, while the shard has no index).
    pub(crate) fn keys(&self, record: Option<&DeviceRecord>) -> Vec<Option<IndexKey>> {
        self.0
            .iter()
            .map(|index| record.and_then(|r| index.key_of(r)))
            .collect()
    }

    /// Re-files `id` after a write: `before` came from [`Indexes::keys`].
    pub(crate) fn update(
        &mut self,
        id: &str,
        before: Vec<Option<IndexKey>>,
        record: Option<&DeviceRecord>,
    ) {
        for (index, before) in self.0.iter_mut().zip(before) {
            let after = record.and_then(|r| index.key_of(r));
            if after == before {
                continue;
            }
            if let Some(old) = before {
                if let Some(ids) = index.ids.get_mut(&old) {
                    ids.remove(id);
                    if ids.is_empty() {
                        index.ids.remove(&old);
                    }
                }
            }
            if let Some(new) = after {
                index.ids.entry(new).or_default().insert(id.to_owned());
            }
        }
    }
}
