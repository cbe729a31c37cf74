//! Expression evaluation over one twin (spec §7.1–§7.5).
//!
//! Values are [`Datum`]s that borrow from the twin or the query wherever possible, so a
//! WHERE clause over a million twins allocates nothing for paths, comparisons or logic.
//! *Undefined* is a value of its own: a missing property, a type mismatch, an arithmetic
//! error. It propagates through comparisons and arithmetic, and three-valued logic treats
//! it as "unknown"; only an exact `true` selects a row.

use std::borrow::Cow;
use std::cmp::Ordering;

use serde_json::{Map, Number, Value};
use twinhub_json::{Node, Object};

use crate::ast::{ArithmeticOp, CompareOp, Expr, Literal, Segment};
use crate::document::Document;
use crate::function::call;

/// The result of an expression: a JSON value (borrowed where it can be) or undefined.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Datum<'a> {
    Undefined,
    Null,
    Bool(bool),
    Number(f64),
    Str(Cow<'a, str>),
    /// Borrowed from the document, or owned when the document built it on demand.
    Object(Cow<'a, Map<String, Value>>),
    Array(Cow<'a, [Value]>),
}

impl<'a> Datum<'a> {
    pub(crate) fn from_json(value: &'a Value) -> Datum<'a> {
        match value {
            Value::Null => Datum::Null,
            Value::Bool(b) => Datum::Bool(*b),
            Value::Number(n) => n.as_f64().map_or(Datum::Undefined, Datum::Number),
            Value::String(s) => Datum::Str(Cow::Borrowed(s)),
            Value::Array(a) => Datum::Array(Cow::Borrowed(a)),
            Value::Object(o) => Datum::Object(Cow::Borrowed(o)),
        }
    }

    /// Scalars borrow from the tree; an object or array is converted, which only
    /// queries that compare or return whole objects ask for.
    pub(crate) fn from_node(node: &'a Node) -> Datum<'a> {
        match node {
            Node::Null => Datum::Null,
            Node::Bool(b) => Datum::Bool(*b),
            Node::Number(n) => n.as_f64().map_or(Datum::Undefined, Datum::Number),
            Node::String(s) => Datum::Str(Cow::Borrowed(s.as_str())),
            Node::Array(_) | Node::Object(_) => Datum::from_owned_json(node.to_value()),
        }
    }

    pub(crate) fn from_owned_json(value: Value) -> Datum<'a> {
        match value {
            Value::String(s) => Datum::Str(Cow::Owned(s)),
            Value::Array(a) => Datum::Array(Cow::Owned(a)),
            Value::Object(o) => Datum::Object(Cow::Owned(o)),
            Value::Null => Datum::Null,
            Value::Bool(b) => Datum::Bool(b),
            Value::Number(n) => n.as_f64().map_or(Datum::Undefined, Datum::Number),
        }
    }

    fn from_literal(literal: &'a Literal) -> Datum<'a> {
        match literal {
            Literal::Undefined => Datum::Undefined,
            Literal::Null => Datum::Null,
            Literal::Bool(b) => Datum::Bool(*b),
            Literal::Number(n) => Datum::Number(*n),
            Literal::String(s) => Datum::Str(Cow::Borrowed(s)),
        }
    }

    /// From a three-valued truth value.
    pub(crate) fn from_truth(truth: Option<bool>) -> Datum<'a> {
        truth.map_or(Datum::Undefined, Datum::Bool)
    }

    /// A computed number; infinities and NaN (overflow, `SQRT(-1)`) are undefined because
    /// JSON cannot carry them.
    pub(crate) fn number(n: f64) -> Datum<'a> {
        if n.is_finite() {
            Datum::Number(n)
        } else {
            Datum::Undefined
        }
    }

    pub(crate) fn is_undefined(&self) -> bool {
        matches!(self, Datum::Undefined)
    }

    /// The value as JSON, `None` when undefined.
    pub(crate) fn to_json(&self) -> Option<Value> {
        Some(match self {
            Datum::Undefined => return None,
            Datum::Null => Value::Null,
            Datum::Bool(b) => Value::Bool(*b),
            Datum::Number(n) => number_to_json(*n)?,
            Datum::Str(s) => Value::String(s.clone().into_owned()),
            Datum::Object(o) => Value::Object(o.as_ref().clone()),
            Datum::Array(a) => Value::Array(a.to_vec()),
        })
    }
}

/// Integral results print as integers (`SUM` of counts is `7`, not `7.0`), like IoT Hub.
pub(crate) fn number_to_json(n: f64) -> Option<Value> {
    const EXACT: f64 = 9_007_199_254_740_992.0;
    if n.fract() == 0.0 && n.abs() <= EXACT {
        // Exact: integral and within ±2^53.
        Some(Value::Number(Number::from(n as i64)))
    } else {
        Number::from_f64(n).map(Value::Number)
    }
}

/// Objects up to this many keys are searched linearly. Twin objects are small, and a scan
/// of IndexMap's contiguous entries is much faster on cold memory than a hash probe, which
/// touches a separate index table (measured over a million in-memory twins: a three-level
/// lookup took ~850 ns hashed and ~100 ns linear).
const LINEAR_LOOKUP_MAX: usize = 32;

/// Property names match case-insensitively, preferring an exact match (twin keys are
/// case-sensitive, so `a` and `A` may both exist), then the first case-insensitive one.
pub(crate) fn lookup<'a>(
    map: &'a Map<String, Value>,
    segment: &Segment,
) -> Option<(&'a str, &'a Value)> {
    let name = segment.name();
    if map.len() > LINEAR_LOOKUP_MAX {
        if let Some((k, v)) = map.get_key_value(name) {
            return Some((k.as_str(), v));
        }
        return map
            .iter()
            .find(|(k, _)| matches_folded(k, segment.folded()))
            .map(|(k, v)| (k.as_str(), v));
    }
    let mut folded_match = None;
    for (k, v) in map {
        if k == name {
            return Some((k.as_str(), v));
        }
        if folded_match.is_none() && matches_folded(k, segment.folded()) {
            folded_match = Some((k.as_str(), v));
        }
    }
    folded_match
}

/// [`lookup`] in a compact object. It has no hash index, so large objects are scanned
/// too; the rule is the same: an exact match, else the first case-insensitive one.
pub(crate) fn lookup_node<'a>(
    object: &'a Object,
    segment: &Segment,
) -> Option<(&'a str, &'a Node)> {
    let name = segment.name();
    let mut folded_match = None;
    for (k, v) in object.iter() {
        if k == name {
            return Some((k, v));
        }
        if folded_match.is_none() && matches_folded(k, segment.folded()) {
            folded_match = Some((k, v));
        }
    }
    folded_match
}

/// Exact-name field of an object (for the ids the executor reads), linear when small.
pub(crate) fn field<'a>(document: &'a Value, name: &str) -> Option<&'a Value> {
    let Value::Object(map) = document else {
        return None;
    };
    if map.len() > LINEAR_LOOKUP_MAX {
        return map.get(name);
    }
    map.iter().find(|(k, _)| k.as_str() == name).map(|(_, v)| v)
}

/// True when `key` lower-cases to `folded` (already lower-cased).
///
/// For an ASCII `folded` only keys of the same length can match, so most keys are rejected
/// without reading their (cold) bytes. The one non-ASCII character folding to ASCII, the
/// Kelvin sign, is not worth a byte scan of every key.
fn matches_folded(key: &str, folded: &str) -> bool {
    if folded.is_ascii() {
        key.eq_ignore_ascii_case(folded)
    } else {
        key.chars().flat_map(char::to_lowercase).eq(folded.chars())
    }
}

/// `=` (spec §7.2): primitives of the same type compare; null equals null; anything
/// involving undefined, an object, an array or two different types is undefined.
pub(crate) fn equals(left: &Datum<'_>, right: &Datum<'_>) -> Option<bool> {
    match (left, right) {
        (Datum::Null, Datum::Null) => Some(true),
        (Datum::Bool(a), Datum::Bool(b)) => Some(a == b),
        (Datum::Number(a), Datum::Number(b)) => Some(a == b),
        (Datum::Str(a), Datum::Str(b)) => Some(a == b),
        _ => None,
    }
}

/// Ordering for `<`, `>`, … : numbers numerically, strings by code point (UTF-8 byte order
/// is code-point order), booleans false < true; everything else undefined.
fn order(left: &Datum<'_>, right: &Datum<'_>) -> Option<Ordering> {
    match (left, right) {
        (Datum::Number(a), Datum::Number(b)) => a.partial_cmp(b),
        (Datum::Str(a), Datum::Str(b)) => Some(a.as_ref().cmp(b.as_ref())),
        (Datum::Bool(a), Datum::Bool(b)) => Some(a.cmp(b)),
        _ => None,
    }
}

pub(crate) fn compare(op: CompareOp, left: &Datum<'_>, right: &Datum<'_>) -> Option<bool> {
    match op {
        CompareOp::Eq => equals(left, right),
        CompareOp::Ne => equals(left, right).map(|eq| !eq),
        CompareOp::Lt => order(left, right).map(Ordering::is_lt),
        CompareOp::Le => order(left, right).map(Ordering::is_le),
        CompareOp::Gt => order(left, right).map(Ordering::is_gt),
        CompareOp::Ge => order(left, right).map(Ordering::is_ge),
    }
}

/// Truth value for the logical operators: non-booleans count as unknown.
fn truth(datum: &Datum<'_>) -> Option<bool> {
    match datum {
        Datum::Bool(b) => Some(*b),
        _ => None,
    }
}

fn arithmetic(op: ArithmeticOp, left: &Datum<'_>, right: &Datum<'_>) -> Datum<'static> {
    let (Datum::Number(a), Datum::Number(b)) = (left, right) else {
        return Datum::Undefined;
    };
    let (a, b) = (*a, *b);
    match op {
        ArithmeticOp::Add => Datum::number(a + b),
        ArithmeticOp::Sub => Datum::number(a - b),
        ArithmeticOp::Mul => Datum::number(a * b),
        ArithmeticOp::Div if b == 0.0 => Datum::Undefined,
        ArithmeticOp::Div => Datum::number(a / b),
        ArithmeticOp::Rem if b == 0.0 => Datum::Undefined,
        // Rust's `%` on f64 is C's fmod: the result has the sign of the dividend.
        ArithmeticOp::Rem => Datum::number(a % b),
    }
}

/// Evaluates `expr` against `twin`.
pub(crate) fn eval<'a, D: Document + ?Sized>(expr: &'a Expr, twin: &'a D) -> Datum<'a> {
    match expr {
        Expr::Literal(literal) => Datum::from_literal(literal),
        Expr::Path(path) => twin
            .resolve(path.segments())
            .map_or(Datum::Undefined, |(_, field)| field.into_datum()),
        Expr::Neg(operand) => match eval(operand, twin) {
            Datum::Number(n) => Datum::Number(-n),
            _ => Datum::Undefined,
        },
        Expr::Not(operand) => Datum::from_truth(truth(&eval(operand, twin)).map(|b| !b)),
        Expr::And(operands) => {
            let mut result = Some(true);
            for operand in operands {
                match truth(&eval(operand, twin)) {
                    Some(false) => return Datum::Bool(false),
                    Some(true) => {}
                    None => result = None,
                }
            }
            Datum::from_truth(result)
        }
        Expr::Or(operands) => {
            let mut result = Some(false);
            for operand in operands {
                match truth(&eval(operand, twin)) {
                    Some(true) => return Datum::Bool(true),
                    Some(false) => {}
                    None => result = None,
                }
            }
            Datum::from_truth(result)
        }
        Expr::Compare { op, left, right } => {
            let left = eval(left, twin);
            if left.is_undefined() {
                return Datum::Undefined;
            }
            Datum::from_truth(compare(*op, &left, &eval(right, twin)))
        }
        Expr::Arithmetic { op, left, right } => {
            arithmetic(*op, &eval(left, twin), &eval(right, twin))
        }
        Expr::In {
            value,
            list,
            negated,
        } => {
            let value = eval(value, twin);
            if value.is_undefined() {
                return Datum::Undefined;
            }
            // IN is the disjunction of `value = element` (spec §7.4): any true wins, else
            // any undefined comparison makes the whole answer undefined.
            let mut result = Some(false);
            for element in list {
                match equals(&value, &eval(element, twin)) {
                    Some(true) => {
                        result = Some(true);
                        break;
                    }
                    Some(false) => {}
                    None => result = None,
                }
            }
            Datum::from_truth(result.map(|found| found != *negated))
        }
        Expr::Call { function, args } => call(*function, args, twin),
    }
}

/// The WHERE rule (spec §7.3): a row is selected only when the condition is exactly `true`.
pub(crate) fn is_selected<D: Document + ?Sized>(condition: Option<&Expr>, twin: &D) -> bool {
    condition.is_none_or(|c| eval(c, twin) == Datum::Bool(true))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Query;
    use serde_json::json;

    fn condition(text: &str) -> Expr {
        let query: Query = format!("SELECT * FROM devices WHERE {text}")
            .parse()
            .unwrap();
        query.condition.unwrap()
    }

    fn value_of(text: &str, twin: &Value) -> Option<Value> {
        eval(&condition(text), twin).to_json()
    }

    fn twin() -> Value {
        json!({
            "deviceId": "d1",
            "tags": {"region": "EU", "Region": "exact", "n": 10, "s": "75", "flag": true,
                     "obj": {"a": 1}, "nul": null, "Mixed": 1},
        })
    }

    const T: Option<bool> = Some(true);
    const F: Option<bool> = Some(false);
    const U: Option<bool> = None;

    fn lit(v: Option<bool>) -> &'static str {
        match v {
            Some(true) => "true",
            Some(false) => "false",
            None => "undefined",
        }
    }

    fn truth_of(text: &str) -> Option<bool> {
        match eval(&condition(text), &twin()) {
            Datum::Bool(b) => Some(b),
            Datum::Undefined => None,
            other => panic!("{text} gave {other:?}"),
        }
    }

    #[test]
    fn and_truth_table() {
        let table = [
            (T, T, T),
            (T, F, F),
            (T, U, U),
            (F, T, F),
            (F, F, F),
            (F, U, F),
            (U, T, U),
            (U, F, F),
            (U, U, U),
        ];
        for (a, b, want) in table {
            let text = format!("{} AND {}", lit(a), lit(b));
            assert_eq!(truth_of(&text), want, "{text}");
        }
    }

    #[test]
    fn or_truth_table() {
        let table = [
            (T, T, T),
            (T, F, T),
            (T, U, T),
            (F, T, T),
            (F, F, F),
            (F, U, U),
            (U, T, T),
            (U, F, U),
            (U, U, U),
        ];
        for (a, b, want) in table {
            let text = format!("{} OR {}", lit(a), lit(b));
            assert_eq!(truth_of(&text), want, "{text}");
        }
    }

    #[test]
    fn not_truth_table_and_non_booleans() {
        assert_eq!(truth_of("NOT true"), F);
        assert_eq!(truth_of("NOT false"), T);
        assert_eq!(truth_of("NOT undefined"), U);
        assert_eq!(truth_of("NOT 'true'"), U);
        assert_eq!(truth_of("NOT tags.missing"), U);
        assert_eq!(truth_of("1 AND true"), U);
        assert_eq!(truth_of("null OR false"), U);
    }

    #[test]
    fn equality_of_undefined_null_and_mixed_types() {
        assert_eq!(truth_of("tags.missing = tags.other"), U);
        assert_eq!(truth_of("undefined = undefined"), U);
        assert_eq!(truth_of("null = null"), T);
        assert_eq!(truth_of("tags.nul = null"), T);
        assert_eq!(truth_of("null < null"), U);
        assert_eq!(truth_of("tags.s = 75"), U);
        assert_eq!(truth_of("tags.s != 75"), U);
        assert_eq!(truth_of("'true' = true"), U);
        assert_eq!(truth_of("24 = 24.0"), T);
        assert_eq!(truth_of("tags.obj = tags.obj"), U);
        assert_eq!(truth_of("false < true"), T);
        assert_eq!(truth_of("'B' < 'a'"), T);
        assert_eq!(truth_of("'a' < 1"), U);
    }

    #[test]
    fn where_selects_only_exact_true() {
        let t = twin();
        assert!(is_selected(Some(&condition("tags.flag")), &t));
        assert!(!is_selected(Some(&condition("tags.s")), &t));
        assert!(!is_selected(Some(&condition("tags.missing")), &t));
        assert!(!is_selected(Some(&condition("null")), &t));
        assert!(!is_selected(Some(&condition("tags.obj")), &t));
        assert!(is_selected(None, &t));
    }

    #[test]
    fn property_names_prefer_exact_case_then_first_insensitive_match() {
        let t = twin();
        assert_eq!(value_of("tags.Region", &t), Some(json!("exact")));
        assert_eq!(value_of("tags.region", &t), Some(json!("EU")));
        assert_eq!(value_of("TAGS.REGION", &t), Some(json!("EU")));
        assert_eq!(value_of("Tags.mixed", &t), Some(json!(1)));
        assert_eq!(value_of("tags.n.x", &t), None);
    }

    #[test]
    fn wide_objects_use_the_same_matching_rules() {
        let mut tags = Map::new();
        for i in 0..40 {
            tags.insert(format!("k{i}"), json!(i));
        }
        tags.insert("Zone".into(), json!("upper"));
        tags.insert("zone".into(), json!("lower"));
        tags.insert("Été".into(), json!("accent"));
        let t = json!({"deviceId": "d", "tags": tags});
        assert_eq!(value_of("tags.zone", &t), Some(json!("lower")));
        assert_eq!(value_of("tags.Zone", &t), Some(json!("upper")));
        assert_eq!(value_of("tags.ZONE", &t), Some(json!("upper")));
        assert_eq!(value_of("tags.K39", &t), Some(json!(39)));
        assert_eq!(value_of("tags.ÉTÉ", &t), Some(json!("accent")));
        assert_eq!(value_of("tags.k40", &t), None);
    }

    #[test]
    fn non_ascii_names_match_case_insensitively_in_small_objects() {
        let t = json!({"deviceId": "d", "tags": {"Température": 20}});
        assert_eq!(value_of("tags.TEMPÉRATURE", &t), Some(json!(20)));
        assert_eq!(value_of("tags.température", &t), Some(json!(20)));
    }

    #[test]
    fn arithmetic_only_on_numbers() {
        let t = twin();
        assert_eq!(value_of("tags.n + 1", &t), Some(json!(11)));
        assert_eq!(value_of("tags.s + 1", &t), None);
        assert_eq!(value_of("'a' + 'b'", &t), None);
        assert_eq!(value_of("-tags.s", &t), None);
        assert_eq!(value_of("tags.n / 0", &t), None);
        assert_eq!(value_of("tags.n % 0", &t), None);
        assert_eq!(value_of("tags.n / 4", &t), Some(json!(2.5)));
        assert_eq!(value_of("1e308 * 10", &t), None);
    }

    #[test]
    fn remainder_takes_the_sign_of_the_dividend() {
        let t = twin();
        assert_eq!(value_of("-7 % 3", &t), Some(json!(-1)));
        assert_eq!(value_of("7 % -3", &t), Some(json!(1)));
        assert_eq!(value_of("5.5 % 2", &t), Some(json!(1.5)));
    }

    #[test]
    fn in_is_a_disjunction_of_equalities() {
        assert_eq!(truth_of("tags.s IN ['75', 80]"), T);
        assert_eq!(truth_of("tags.n IN [10]"), T);
        assert_eq!(truth_of("tags.n IN [9, 11]"), F);
        // 10 = '10' is undefined, so IN cannot be false.
        assert_eq!(truth_of("tags.n IN [9, '10']"), U);
        assert_eq!(truth_of("tags.n NIN [9, 11]"), T);
        assert_eq!(truth_of("tags.n NIN [10]"), F);
        assert_eq!(truth_of("tags.missing NIN [1]"), U);
        assert_eq!(truth_of("tags.missing IN [1]"), U);
    }

    #[test]
    fn integral_results_are_json_integers() {
        assert_eq!(number_to_json(7.0), Some(json!(7)));
        assert_eq!(number_to_json(-0.0), Some(json!(0)));
        assert_eq!(number_to_json(2.5), Some(json!(2.5)));
        assert_eq!(number_to_json(1e300), Some(json!(1e300)));
    }
}
