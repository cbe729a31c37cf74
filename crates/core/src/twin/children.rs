//! The children of a `$metadata` node: a vector sorted by key and sized exactly.
//!
//! A twin's objects have a handful of members, and a non-empty `BTreeMap` allocates a
//! whole 11-slot leaf (~800 B) even for one child: with six object nodes per typical
//! twin that was ~4.8 KB of a twin's memory. Sorted, binary-searched and grown one slot
//! at a time, the same children take ~72 B each, their keys inline up to 24 bytes. The stored form is unchanged: a JSON
//! object in key order, as the `BTreeMap` wrote it.

use super::Metadata;
use compact_str::CompactString;
use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

#[derive(Debug, Clone, PartialEq, Default)]
pub(super) struct Children(Vec<(CompactString, Metadata)>);

impl Children {
    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn position(&self, key: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(k, _)| k.as_str().cmp(key))
    }

    pub(super) fn get(&self, key: &str) -> Option<&Metadata> {
        let i = self.position(key).ok()?;
        self.0.get(i).map(|(_, m)| m)
    }

    /// Sets `key`'s metadata, replacing any.
    pub(super) fn insert(&mut self, key: &str, metadata: Metadata) {
        match self.position(key) {
            Ok(i) => {
                if let Some((_, slot)) = self.0.get_mut(i) {
                    *slot = metadata;
                }
            }
            Err(i) => {
                // Exact growth: children are written rarely and kept for long.
                self.0.reserve_exact(1);
                self.0.insert(i, (key.into(), metadata));
            }
        }
    }

    pub(super) fn remove(&mut self, key: &str) {
        if let Ok(i) = self.position(key) {
            self.0.remove(i);
            self.0.shrink_to_fit();
        }
    }

    /// `key`'s metadata, inserting `make()` first when it has none.
    pub(super) fn get_or_insert_with(
        &mut self,
        key: &str,
        make: impl FnOnce() -> Metadata,
    ) -> &mut Metadata {
        let i = match self.position(key) {
            Ok(i) => i,
            Err(i) => {
                self.0.reserve_exact(1);
                self.0.insert(i, (key.into(), make()));
                i
            }
        };
        // `i` is in bounds: found, or just inserted there.
        &mut self.0[i].1
    }

    /// Children from distinct keys, in any order.
    pub(super) fn from_distinct(
        children: impl ExactSizeIterator<Item = (CompactString, Metadata)>,
    ) -> Self {
        let mut children: Vec<_> = children.collect();
        children.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        Self(children)
    }
}

impl Serialize for Children {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (key, metadata) in &self.0 {
            map.serialize_entry(key.as_str(), metadata)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Children {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ChildrenVisitor;

        impl<'de> Visitor<'de> for ChildrenVisitor {
            type Value = Children;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of metadata children")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Children, A::Error> {
                let mut children: Vec<(CompactString, Metadata)> =
                    Vec::with_capacity(access.size_hint().unwrap_or(0).min(64));
                while let Some(entry) = access.next_entry::<CompactString, Metadata>()? {
                    children.push(entry);
                }
                // Stored records are sorted and distinct; anything else is put in order
                // keeping the last of equal keys, as a map would.
                if !children.windows(2).all(|w| w[0].0 < w[1].0) {
                    children.reverse();
                    children.sort_by(|a, b| a.0.cmp(&b.0));
                    children.dedup_by(|later, earlier| later.0 == earlier.0);
                }
                children.shrink_to_fit();
                Ok(Children(children))
            }
        }

        deserializer.deserialize_map(ChildrenVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Timestamp;
    use serde_json::json;

    #[test]
    fn stored_form_is_the_sorted_map_a_btreemap_wrote() {
        let now = Timestamp::from_unix_secs(1_700_000_000);
        let value = json!({"zeta": 1, "alpha": {"y": 2, "x": 3}, "mid": null});
        let metadata = Metadata::for_value(&value, now, Some(4));
        let stored = serde_json::to_value(&metadata).unwrap();
        let keys: Vec<&String> = stored["c"].as_object().unwrap().keys().collect();
        assert_eq!(keys, ["alpha", "mid", "zeta"]);
        let inner: Vec<&String> = stored["c"]["alpha"]["c"]
            .as_object()
            .unwrap()
            .keys()
            .collect();
        assert_eq!(inner, ["x", "y"]);
        let back: Metadata = serde_json::from_value(stored).unwrap();
        assert_eq!(back, metadata);
    }

    #[test]
    fn unsorted_or_repeated_keys_decode_like_a_map() {
        let t = serde_json::to_value(Timestamp::from_unix_secs(1)).unwrap();
        let text = format!(
            r#"{{"t":{t},"c":{{"b":{{"t":{t},"v":1}},"a":{{"t":{t}}},"b":{{"t":{t},"v":2}}}}}}"#
        );
        let metadata: Metadata = serde_json::from_str(&text).unwrap();
        let keys: Vec<&str> = metadata
            .children
            .0
            .iter()
            .map(|(k, _)| k.as_str())
            .collect();
        assert_eq!(keys, ["a", "b"]);
        assert_eq!(
            metadata
                .children
                .get("b")
                .and_then(|m| m.last_updated_version),
            Some(2)
        );
    }

    #[test]
    fn inserts_and_removals_keep_order_and_exact_size() {
        let now = Timestamp::from_unix_secs(1);
        let mut children = Children::default();
        for key in ["m", "c", "x", "a", "c"] {
            children.insert(key, Metadata::new(now, None));
        }
        children.get_or_insert_with("b", || Metadata::new(now, Some(9)));
        children.remove("x");
        children.remove("nothing");
        let keys: Vec<&str> = children.0.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["a", "b", "c", "m"]);
        assert_eq!(children.0.capacity(), children.0.len());
        assert!(children.get("x").is_none());
    }
}
