//! Aggregates and GROUP BY (spec §7.8).
//!
//! - Without GROUP BY an aggregate query has exactly one row, also over zero twins.
//! - `COUNT()` counts rows after WHERE. SUM/AVG/MIN/MAX skip undefined values; any other
//!   non-number (string, boolean, null, object) makes the aggregate undefined; over no
//!   values it is undefined. Undefined aggregates are left out of the row.
//! - Groups are distinct values of the grouped path compared like `=` (so `'EU'` and `'eu'`
//!   differ; `24` and `24.0` do not). Twins where the path is undefined form one group whose
//!   key is left out of its row. Groups come out in first-seen order, which is stable for a
//!   stable scan order and lets the pager address rows by offset.
//!
//! Per twin the work is path lookups and a hash of the borrowed key: no allocation unless a
//! new group appears.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use serde_json::{Map, Value};

use crate::ast::{Aggregate, Path, Projection, Query};
use crate::document::Document;
use crate::eval::{eval, number_to_json, Datum};
use crate::page::ResumeKey;
use crate::select::{name_items, ItemName, NamedItem};

/// Running state of one aggregate in one group.
#[derive(Debug, Clone)]
enum Accumulator {
    Count(u64),
    Numeric {
        kind: NumericKind,
        sum: f64,
        count: u64,
        min: f64,
        max: f64,
        /// A non-number value was seen: the result is undefined.
        poisoned: bool,
    },
}

#[derive(Debug, Clone, Copy)]
enum NumericKind {
    Sum,
    Avg,
    Min,
    Max,
}

impl Accumulator {
    fn new(aggregate: &Aggregate) -> Accumulator {
        let kind = match aggregate {
            Aggregate::Count => return Accumulator::Count(0),
            Aggregate::Sum(_) => NumericKind::Sum,
            Aggregate::Avg(_) => NumericKind::Avg,
            Aggregate::Min(_) => NumericKind::Min,
            Aggregate::Max(_) => NumericKind::Max,
        };
        Accumulator::Numeric {
            kind,
            sum: 0.0,
            count: 0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            poisoned: false,
        }
    }

    fn add(&mut self, value: Option<Datum<'_>>) {
        match self {
            Accumulator::Count(n) => *n += 1,
            Accumulator::Numeric {
                sum,
                count,
                min,
                max,
                poisoned,
                ..
            } => match value {
                None | Some(Datum::Undefined) => {}
                Some(Datum::Number(x)) => {
                    *sum += x;
                    *count += 1;
                    *min = min.min(x);
                    *max = max.max(x);
                }
                Some(_) => *poisoned = true,
            },
        }
    }

    /// Combines the state of the same aggregate over another part of the twins.
    fn merge(&mut self, other: &Accumulator) {
        match (self, other) {
            (Accumulator::Count(a), Accumulator::Count(b)) => *a += b,
            (
                Accumulator::Numeric {
                    sum,
                    count,
                    min,
                    max,
                    poisoned,
                    ..
                },
                Accumulator::Numeric {
                    sum: other_sum,
                    count: other_count,
                    min: other_min,
                    max: other_max,
                    poisoned: other_poisoned,
                    ..
                },
            ) => {
                *sum += other_sum;
                *count += other_count;
                *min = min.min(*other_min);
                *max = max.max(*other_max);
                *poisoned |= *other_poisoned;
            }
            // Both parts come from the same query: the kinds always agree.
            _ => {}
        }
    }

    fn result(&self) -> Option<Value> {
        match *self {
            Accumulator::Count(n) => Some(Value::from(n)),
            Accumulator::Numeric {
                kind,
                sum,
                count,
                min,
                max,
                poisoned,
            } => {
                if poisoned || count == 0 {
                    return None;
                }
                // Exact for any realistic row count (< 2^53).
                let n = count as f64;
                number_to_json(match kind {
                    NumericKind::Sum => sum,
                    NumericKind::Avg => sum / n,
                    NumericKind::Min => min,
                    NumericKind::Max => max,
                })
            }
        }
    }
}

/// One group: its key (`None` = undefined), the stored name of the key's last segment,
/// the accumulators, one per select item (unused for non-aggregate items), and the key
/// of its first twin in this part.
#[derive(Debug)]
struct Group {
    key: Option<Value>,
    key_name: String,
    accumulators: Vec<Accumulator>,
    first: Option<ResumeKey>,
}

/// Accumulates twins into the rows of an aggregate or GROUP BY query.
///
/// Groups come out in first-seen order of the scan. A source may fold its twins in
/// several parts, each in key order ([`crate::TwinSource::fold`]); each part records
/// the key of every group's first twin ([`Aggregation::add_keyed`]), and the merged
/// groups are ordered by the smallest, which is the first-seen order of one scan in
/// key order. The key's name and value come from that first twin too. No twin key is
/// compared per twin: a part only copies it when a group appears.
pub(crate) struct Aggregation<'q> {
    items: Vec<NamedItem<'q>>,
    group_by: Option<&'q Path>,
    groups: Vec<Group>,
    /// Hash of a group key → indices into `groups` with that hash.
    index: HashMap<u64, Vec<usize>>,
    /// Set once parts were merged: the rows must be ordered by first key.
    merged: bool,
}

impl<'q> Aggregation<'q> {
    pub(crate) fn new(query: &'q Query) -> Aggregation<'q> {
        let mut aggregation = Aggregation {
            items: name_items(&query.select),
            group_by: query.group_by.as_ref(),
            groups: Vec::new(),
            index: HashMap::new(),
            merged: false,
        };
        if aggregation.group_by.is_none() {
            // The single row exists even when no twin matches.
            aggregation.new_group(None, String::new(), None);
        }
        aggregation
    }

    fn new_group(
        &mut self,
        key: Option<Value>,
        key_name: String,
        first: Option<ResumeKey>,
    ) -> usize {
        let accumulators = self
            .items
            .iter()
            .map(|item| match item.value {
                Projection::Aggregate(aggregate) => Accumulator::new(aggregate),
                Projection::Expr(_) => Accumulator::Count(0),
            })
            .collect();
        let i = self.groups.len();
        self.groups.push(Group {
            key,
            key_name,
            accumulators,
            first,
        });
        if self.group_by.is_some() {
            let hash = key_hash(
                self.groups
                    .get(i)
                    .and_then(|g| g.key.as_ref())
                    .map(Datum::from_json)
                    .as_ref(),
            );
            self.index.entry(hash).or_default().push(i);
        }
        i
    }

    /// The index of the group whose key equals `key`.
    fn find(&self, key: Option<&Datum<'_>>) -> Option<usize> {
        self.index.get(&key_hash(key)).and_then(|candidates| {
            candidates.iter().copied().find(|&i| {
                self.groups
                    .get(i)
                    .is_some_and(|g| same_key(g.key.as_ref(), key))
            })
        })
    }

    fn group_of<D: Document + ?Sized>(&mut self, twin: &D, twin_key: Option<TwinKey<'_>>) -> usize {
        let Some(path) = self.group_by else {
            return 0;
        };
        let resolved = twin.resolve(path.segments());
        let datum = resolved
            .as_ref()
            .map(|(_, field)| field.datum())
            .filter(|d| !d.is_undefined());
        if let Some(i) = self.find(datum.as_ref()) {
            return i;
        }
        let defined = datum.is_some();
        // A part's twins arrive in key order: the first of a group is its smallest.
        let (name, key) = match resolved.filter(|_| defined) {
            Some((name, field)) => (name.into_owned(), Some(field.into_json())),
            None => (String::new(), None),
        };
        let first = twin_key.map(|(device, item)| ResumeKey {
            device_id: device.to_owned(),
            item_id: item.map(str::to_owned),
        });
        self.new_group(key, name, first)
    }

    /// Adds one twin that passed the collection filter and WHERE, in scan order.
    pub(crate) fn add<D: Document + ?Sized>(&mut self, twin: &D) {
        self.add_keyed(twin, None);
    }

    /// Adds one twin of a part (in key order within the part), with the twin's key.
    pub(crate) fn add_keyed<D: Document + ?Sized>(&mut self, twin: &D, key: Option<TwinKey<'_>>) {
        let group = self.group_of(twin, key);
        let Some(group) = self.groups.get_mut(group) else {
            return;
        };
        for (item, accumulator) in self.items.iter().zip(&mut group.accumulators) {
            if let Projection::Aggregate(aggregate) = item.value {
                accumulator.add(aggregate.argument().map(|arg| eval(arg, twin)));
            }
        }
    }

    /// Merges the groups of another part of the same query's scan.
    pub(crate) fn merge(&mut self, other: Aggregation<'q>) {
        self.merged = true;
        for group in other.groups {
            let found = if self.group_by.is_none() {
                Some(0)
            } else {
                self.find(group.key.as_ref().map(Datum::from_json).as_ref())
            };
            let Some(mine) = found.and_then(|i| self.groups.get_mut(i)) else {
                self.new_group(group.key, group.key_name, group.first);
                if let Some(added) = self.groups.last_mut() {
                    added.accumulators = group.accumulators;
                }
                continue;
            };
            for (a, b) in mine.accumulators.iter_mut().zip(&group.accumulators) {
                a.merge(b);
            }
            let earlier = match (&group.first, &mine.first) {
                (Some(theirs), Some(ours)) => theirs < ours,
                (Some(_), None) => true,
                _ => false,
            };
            if earlier {
                mine.key = group.key;
                mine.key_name = group.key_name;
                mine.first = group.first;
            }
        }
    }

    /// The result rows, one per group in first-seen order.
    pub(crate) fn into_rows(mut self) -> Vec<Value> {
        if self.merged {
            // Groups never seen in a keyed part (only the no-GROUP-BY row) go first.
            self.groups.sort_by(|a, b| a.first.cmp(&b.first));
        }
        let items = self.items;
        self.groups
            .into_iter()
            .map(|group| {
                let mut row = Map::new();
                for (item, accumulator) in items.iter().zip(&group.accumulators) {
                    let value = match item.value {
                        Projection::Aggregate(_) => accumulator.result(),
                        Projection::Expr(_) => group.key.clone(),
                    };
                    let Some(value) = value else { continue };
                    let key = match &item.name {
                        ItemName::Alias(alias) => (*alias).to_owned(),
                        ItemName::Positional(p) => p.clone(),
                        ItemName::LastSegment => group.key_name.clone(),
                    };
                    row.entry(key).or_insert(value);
                }
                Value::Object(row)
            })
            .collect()
    }
}

/// A twin's `(deviceId, moduleId)` (or `jobId`), borrowed.
pub(crate) type TwinKey<'a> = (&'a str, Option<&'a str>);

/// Hash consistent with [`same_key`]: numbers by value (with -0 = 0), objects and arrays all
/// in one bucket (rare as group keys; `same_key` separates them).
fn key_hash(key: Option<&Datum<'_>>) -> u64 {
    let mut hasher = DefaultHasher::new();
    match key {
        None | Some(Datum::Undefined) => 0u8.hash(&mut hasher),
        Some(Datum::Null) => 1u8.hash(&mut hasher),
        Some(Datum::Bool(b)) => (2u8, b).hash(&mut hasher),
        Some(Datum::Number(x)) => {
            let x = if *x == 0.0 { 0.0 } else { *x };
            (3u8, x.to_bits()).hash(&mut hasher);
        }
        Some(Datum::Str(s)) => (4u8, s.as_ref()).hash(&mut hasher),
        Some(Datum::Array(_) | Datum::Object(_)) => 5u8.hash(&mut hasher),
    }
    hasher.finish()
}

/// Group-key equality: `=` for primitives (numbers by value, strings exactly), undefined
/// with undefined, and structural equality for objects and arrays.
fn same_key(group: Option<&Value>, key: Option<&Datum<'_>>) -> bool {
    match (group, key) {
        (None, None) => true,
        (Some(g), Some(k)) => Datum::from_json(g) == *k,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use crate::Query;
    use serde_json::{json, Value};

    fn rows(text: &str, twins: &[Value]) -> Vec<Value> {
        let query: Query = text.parse().unwrap();
        crate::evaluate(&query, twins)
    }

    fn twins() -> Vec<Value> {
        vec![
            json!({"deviceId": "a", "tags": {"region": "EU", "t": 10}}),
            json!({"deviceId": "b", "tags": {"region": "eu", "t": 20}}),
            json!({"deviceId": "c", "tags": {"region": "EU", "t": "hot"}}),
            json!({"deviceId": "d", "tags": {"t": 5.5}}),
            json!({"deviceId": "e", "tags": {"region": 1}}),
            json!({"deviceId": "f", "tags": {"region": 1.0}}),
        ]
    }

    #[test]
    fn aggregates_over_zero_twins_give_one_row_with_count_zero() {
        assert_eq!(
            rows(
                "SELECT COUNT() AS n, SUM(tags.t) AS s, AVG(tags.t) AS a, MIN(tags.t), MAX(tags.t) FROM devices",
                &[]
            ),
            vec![json!({"n": 0})]
        );
        assert_eq!(
            rows("SELECT COUNT() AS n FROM devices WHERE false", &twins()),
            vec![json!({"n": 0})]
        );
    }

    #[test]
    fn group_by_separates_case_and_merges_equal_numbers() {
        let got = rows(
            "SELECT tags.region, COUNT() AS n FROM devices GROUP BY tags.region",
            &twins(),
        );
        assert_eq!(
            got,
            vec![
                json!({"region": "EU", "n": 2}),
                json!({"region": "eu", "n": 1}),
                json!({"n": 1}),
                json!({"region": 1, "n": 2}),
            ]
        );
    }

    #[test]
    fn group_by_over_zero_twins_has_no_rows() {
        assert!(rows("SELECT COUNT() AS n FROM devices GROUP BY tags.region", &[]).is_empty());
    }

    #[test]
    fn non_numbers_poison_numeric_aggregates_and_undefined_is_skipped() {
        let got = rows(
            "SELECT SUM(tags.t) AS s, MIN(tags.t) AS lo, COUNT() AS n FROM devices WHERE tags.region = 'EU'",
            &twins(),
        );
        assert_eq!(got, vec![json!({"n": 2})]);
        let got = rows(
            "SELECT SUM(tags.t) AS s, AVG(tags.t) AS a, MIN(tags.t) AS lo, MAX(tags.t) AS hi FROM devices WHERE deviceId != 'c'",
            &twins(),
        );
        assert_eq!(
            got,
            vec![json!({"s": 35.5, "a": 35.5 / 3.0, "lo": 5.5, "hi": 20})]
        );
    }

    #[test]
    fn unaliased_aggregates_are_numbered() {
        assert_eq!(
            rows(
                "SELECT COUNT(), MAX(tags.t) FROM devices WHERE tags.t > 6",
                &twins()
            ),
            vec![json!({"$1": 2, "$2": 20})]
        );
    }

    #[test]
    fn group_key_uses_stored_casing_of_the_first_twin() {
        let twins = vec![
            json!({"deviceId": "a", "tags": {"Zone": "z1"}}),
            json!({"deviceId": "b", "tags": {"zone": "z1"}}),
        ];
        assert_eq!(
            rows(
                "SELECT tags.zone, COUNT() AS n FROM devices GROUP BY tags.ZONE",
                &twins
            ),
            vec![json!({"Zone": "z1", "n": 2})]
        );
    }
}
