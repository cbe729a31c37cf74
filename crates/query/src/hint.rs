//! Push-down hints for a future index (spec §8: a million twins per hub).
//!
//! A hint is a *necessary* condition taken from a top-level conjunct of the WHERE clause:
//! every document the query selects satisfies every hint, so a store may use any subset of
//! them to skip documents. It is never sufficient — the executor still evaluates the whole
//! WHERE clause on what the store yields.
//!
//! Only simple shapes are extracted: `path = constant`, `path <|<=|>|>= constant` (either
//! side), `path IN [constants]`, where the constant is a string, number or boolean and the
//! path is `deviceId`, `moduleId`, `status`, `connectionState`, `tags.…` or
//! `properties.…`. A hint holds under the query's rules: the property is matched with
//! case-insensitive names (exact match preferred) and compares without type coercion, so
//! `Equals("US")` says the property is the string `"US"`, and a range bound implies the
//! property has the bound's type.

use serde_json::Value;

use crate::ast::{CompareOp, Expr, Literal, Path, Query};
use crate::eval::number_to_json;

/// A necessary condition on one property; see the module documentation.
#[derive(Debug, Clone, PartialEq)]
pub struct ScanHint {
    /// The property, as written in the query (collection prefix removed).
    pub path: Path,
    pub condition: HintCondition,
}

#[derive(Debug, Clone, PartialEq)]
pub enum HintCondition {
    /// The property equals this string, number or boolean.
    Equals(Value),
    /// The property equals one of these (two or more) values.
    OneOf(Vec<Value>),
    /// `property op bound` holds, with `op` one of `<`, `<=`, `>`, `>=`; the property has
    /// the bound's type (number or string order; booleans order false < true).
    Range { op: CompareOp, bound: Value },
}

/// Constants a hint can carry; `null` and `undefined` never select through `=` in
/// tags/properties (they hold no nulls) and are left out for simplicity.
fn constant(expr: &Expr) -> Option<Value> {
    match expr {
        Expr::Literal(Literal::String(s)) => Some(Value::String(s.clone())),
        Expr::Literal(Literal::Number(n)) => number_to_json(*n),
        Expr::Literal(Literal::Bool(b)) => Some(Value::Bool(*b)),
        _ => None,
    }
}

fn indexable(expr: &Expr) -> Option<&Path> {
    let Expr::Path(path) = expr else {
        return None;
    };
    let segments = path.segments();
    let root = segments.first()?.folded();
    let ok = match segments.len() {
        1 => matches!(root, "deviceid" | "moduleid" | "status" | "connectionstate"),
        _ => matches!(root, "tags" | "properties"),
    };
    ok.then_some(path)
}

fn hint_of(conjunct: &Expr) -> Option<ScanHint> {
    match conjunct {
        Expr::Compare { op, left, right } => {
            let (path, value, op) = match (indexable(left), constant(right)) {
                (Some(path), Some(value)) => (path, value, *op),
                _ => (indexable(right)?, constant(left)?, op.mirrored()),
            };
            let condition = match op {
                CompareOp::Eq => HintCondition::Equals(value),
                CompareOp::Ne => return None,
                op => HintCondition::Range { op, bound: value },
            };
            Some(ScanHint {
                path: path.clone(),
                condition,
            })
        }
        Expr::In {
            value,
            list,
            negated: false,
        } => {
            let path = indexable(value)?;
            let mut values = list.iter().map(constant).collect::<Option<Vec<Value>>>()?;
            let condition = if values.len() == 1 {
                HintCondition::Equals(values.pop()?)
            } else {
                HintCondition::OneOf(values)
            };
            Some(ScanHint {
                path: path.clone(),
                condition,
            })
        }
        _ => None,
    }
}

/// Hints of `query`'s WHERE clause, in clause order.
pub(crate) fn scan_hints(query: &Query) -> Vec<ScanHint> {
    match &query.condition {
        None => Vec::new(),
        Some(Expr::And(conjuncts)) => conjuncts.iter().filter_map(hint_of).collect(),
        Some(single) => hint_of(single).into_iter().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn hints(text: &str) -> Vec<(String, HintCondition)> {
        let query: Query = text.parse().unwrap();
        query
            .scan_hints()
            .into_iter()
            .map(|h| (h.path.to_string(), h.condition))
            .collect()
    }

    #[test]
    fn conjunctive_equalities_ranges_and_lists() {
        let got = hints(
            "SELECT * FROM devices WHERE tags.location.region = 'US' AND 60 <= properties.reported.n \
             AND deviceId IN ['a', 'b'] AND status IN ['enabled'] AND connectionState != 'x' \
             AND lastActivityTime > '2024' AND STARTSWITH(deviceId, 'x')",
        );
        assert_eq!(
            got,
            vec![
                (
                    "tags.location.region".into(),
                    HintCondition::Equals(json!("US"))
                ),
                (
                    "properties.reported.n".into(),
                    HintCondition::Range {
                        op: CompareOp::Ge,
                        bound: json!(60)
                    }
                ),
                (
                    "deviceId".into(),
                    HintCondition::OneOf(vec![json!("a"), json!("b")])
                ),
                ("status".into(), HintCondition::Equals(json!("enabled"))),
            ]
        );
    }

    #[test]
    fn disjunctions_negations_and_non_constants_give_nothing() {
        assert!(hints("SELECT * FROM devices WHERE deviceId = 'a' OR deviceId = 'b'").is_empty());
        assert!(hints("SELECT * FROM devices WHERE NOT (deviceId = 'a')").is_empty());
        assert!(hints("SELECT * FROM devices WHERE deviceId NIN ['a']").is_empty());
        assert!(hints("SELECT * FROM devices WHERE tags.a = tags.b").is_empty());
        assert!(hints("SELECT * FROM devices WHERE tags.a IN ['x', tags.b]").is_empty());
        assert!(hints("SELECT * FROM devices WHERE tags = 'x'").is_empty());
        assert!(hints("SELECT * FROM devices WHERE tags.a = null").is_empty());
        assert!(hints("SELECT * FROM devices").is_empty());
    }

    #[test]
    fn single_condition_and_collection_prefix() {
        assert_eq!(
            hints("SELECT * FROM devices WHERE devices.tags.floor > -1"),
            vec![(
                "tags.floor".into(),
                HintCondition::Range {
                    op: CompareOp::Gt,
                    bound: json!(-1)
                }
            )]
        );
    }
}
