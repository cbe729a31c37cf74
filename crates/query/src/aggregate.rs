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
use crate::eval::{eval, number_to_json, resolve, Datum};
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

/// One group: its key (`None` = undefined), the stored name of the key's last segment and
/// the accumulators, one per select item (unused for non-aggregate items).
#[derive(Debug)]
struct Group {
    key: Option<Value>,
    key_name: String,
    accumulators: Vec<Accumulator>,
}

/// Accumulates twins into the rows of an aggregate or GROUP BY query.
pub(crate) struct Aggregation<'q> {
    items: Vec<NamedItem<'q>>,
    group_by: Option<&'q Path>,
    groups: Vec<Group>,
    /// Hash of a group key → indices into `groups` with that hash.
    index: HashMap<u64, Vec<usize>>,
}

impl<'q> Aggregation<'q> {
    pub(crate) fn new(query: &'q Query) -> Aggregation<'q> {
        let mut aggregation = Aggregation {
            items: name_items(&query.select),
            group_by: query.group_by.as_ref(),
            groups: Vec::new(),
            index: HashMap::new(),
        };
        if aggregation.group_by.is_none() {
            // The single row exists even when no twin matches.
            aggregation.new_group(None, String::new());
        }
        aggregation
    }

    fn new_group(&mut self, key: Option<Value>, key_name: String) -> usize {
        let accumulators = self
            .items
            .iter()
            .map(|item| match item.value {
                Projection::Aggregate(aggregate) => Accumulator::new(aggregate),
                Projection::Expr(_) => Accumulator::Count(0),
            })
            .collect();
        self.groups.push(Group {
            key,
            key_name,
            accumulators,
        });
        self.groups.len() - 1
    }

    fn group_of(&mut self, twin: &Value) -> usize {
        let Some(path) = self.group_by else {
            return 0;
        };
        let resolved = resolve(twin, path);
        let key = resolved.map(|(_, v)| v);
        let hash = key_hash(key);
        let found = self.index.get(&hash).and_then(|candidates| {
            candidates.iter().copied().find(|&i| {
                self.groups
                    .get(i)
                    .is_some_and(|g| same_key(g.key.as_ref(), key))
            })
        });
        if let Some(i) = found {
            return i;
        }
        let name = resolved.map_or_else(String::new, |(k, _)| k.to_owned());
        let i = self.new_group(key.cloned(), name);
        self.index.entry(hash).or_default().push(i);
        i
    }

    /// Adds one twin that passed the collection filter and WHERE.
    pub(crate) fn add(&mut self, twin: &Value) {
        let group = self.group_of(twin);
        let Some(group) = self.groups.get_mut(group) else {
            return;
        };
        for (item, accumulator) in self.items.iter().zip(&mut group.accumulators) {
            if let Projection::Aggregate(aggregate) = item.value {
                accumulator.add(aggregate.argument().map(|arg| eval(arg, twin)));
            }
        }
    }

    /// The result rows, one per group in first-seen order.
    pub(crate) fn into_rows(self) -> Vec<Value> {
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

/// Hash consistent with [`same_key`]: numbers by value (with -0 = 0), objects and arrays all
/// in one bucket (rare as group keys; `same_key` separates them).
fn key_hash(key: Option<&Value>) -> u64 {
    let mut hasher = DefaultHasher::new();
    match key {
        None => 0u8.hash(&mut hasher),
        Some(Value::Null) => 1u8.hash(&mut hasher),
        Some(Value::Bool(b)) => (2u8, b).hash(&mut hasher),
        Some(Value::Number(n)) => {
            let x = n.as_f64().unwrap_or(0.0);
            let x = if x == 0.0 { 0.0 } else { x };
            (3u8, x.to_bits()).hash(&mut hasher);
        }
        Some(Value::String(s)) => (4u8, s).hash(&mut hasher),
        Some(Value::Array(_) | Value::Object(_)) => 5u8.hash(&mut hasher),
    }
    hasher.finish()
}

/// Group-key equality: `=` for primitives (numbers by value, strings exactly), undefined
/// with undefined, and structural equality for objects and arrays.
fn same_key(a: Option<&Value>, b: Option<&Value>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(Value::Number(x)), Some(Value::Number(y))) => x.as_f64() == y.as_f64(),
        (Some(x), Some(y)) => x == y,
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
