//! Built-in scalar functions (spec §7.6).
//!
//! Twin queries officially know only `IS_DEFINED`; `STARTSWITH` is reported to work. The
//! routing-query functions are a harmless superset. Every function is total: a wrong
//! argument type gives undefined, never an error, as in the routing language. String
//! positions and lengths count Unicode scalar values.

use std::borrow::Cow;

use crate::ast::{Expr, Function};
use crate::document::Document;
use crate::eval::{eval, Datum};

/// Calls `function` with `args` (arity already checked by the parser; a missing argument
/// of a hand-built tree reads as undefined).
pub(crate) fn call<'a, D: Document + ?Sized>(
    function: Function,
    args: &'a [Expr],
    twin: &'a D,
) -> Datum<'a> {
    let arg = |i: usize| args.get(i).map_or(Datum::Undefined, |e| eval(e, twin));
    match function {
        Function::IsDefined => Datum::Bool(!arg(0).is_undefined()),
        Function::IsNull => Datum::Bool(matches!(arg(0), Datum::Null)),
        Function::IsBool => Datum::Bool(matches!(arg(0), Datum::Bool(_))),
        Function::IsNumber => Datum::Bool(matches!(arg(0), Datum::Number(_))),
        Function::IsString => Datum::Bool(matches!(arg(0), Datum::Str(_))),
        Function::IsObject => Datum::Bool(matches!(arg(0), Datum::Object(_))),
        Function::IsArray => Datum::Bool(matches!(arg(0), Datum::Array(_))),
        Function::IsPrimitive => Datum::Bool(matches!(
            arg(0),
            Datum::Null | Datum::Bool(_) | Datum::Number(_) | Datum::Str(_)
        )),
        Function::StartsWith => strings2(arg(0), arg(1), |s, p| s.starts_with(p)),
        Function::EndsWith => strings2(arg(0), arg(1), |s, p| s.ends_with(p)),
        Function::Contains => strings2(arg(0), arg(1), |s, p| s.contains(p)),
        Function::IndexOf => match (arg(0), arg(1)) {
            (Datum::Str(s), Datum::Str(fragment)) => Datum::Number(
                s.find(fragment.as_ref())
                    .map_or(-1.0, |byte| char_count(s.get(..byte).unwrap_or_default())),
            ),
            _ => Datum::Undefined,
        },
        Function::AsNumber => match arg(0) {
            Datum::Number(n) => Datum::Number(n),
            Datum::Str(s) => parse_number(&s),
            _ => Datum::Undefined,
        },
        Function::Abs => numeric(arg(0), f64::abs),
        Function::Ceiling => numeric(arg(0), f64::ceil),
        Function::Floor => numeric(arg(0), f64::floor),
        Function::Sign => numeric(arg(0), |n| {
            if n > 0.0 {
                1.0
            } else if n < 0.0 {
                -1.0
            } else {
                0.0
            }
        }),
        Function::Sqrt => numeric(arg(0), f64::sqrt),
        Function::Square => numeric(arg(0), |n| n * n),
        Function::Exp => numeric(arg(0), f64::exp),
        Function::Power => match (arg(0), arg(1)) {
            (Datum::Number(base), Datum::Number(exponent)) => Datum::number(base.powf(exponent)),
            _ => Datum::Undefined,
        },
        Function::Length => match arg(0) {
            Datum::Str(s) => Datum::Number(char_count(&s)),
            _ => Datum::Undefined,
        },
        Function::Lower => match arg(0) {
            Datum::Str(s) => Datum::Str(Cow::Owned(s.to_lowercase())),
            _ => Datum::Undefined,
        },
        Function::Upper => match arg(0) {
            Datum::Str(s) => Datum::Str(Cow::Owned(s.to_uppercase())),
            _ => Datum::Undefined,
        },
        Function::Concat => {
            let mut out = String::new();
            for i in 0..args.len() {
                match arg(i) {
                    Datum::Str(s) => out.push_str(&s),
                    _ => return Datum::Undefined,
                }
            }
            Datum::Str(Cow::Owned(out))
        }
        Function::Substring => substring(arg(0), arg(1), args.get(2).map(|e| eval(e, twin))),
    }
}

fn strings2<'a>(s: Datum<'a>, t: Datum<'a>, test: impl Fn(&str, &str) -> bool) -> Datum<'a> {
    match (s, t) {
        (Datum::Str(s), Datum::Str(t)) => Datum::Bool(test(&s, &t)),
        _ => Datum::Undefined,
    }
}

fn numeric<'a>(x: Datum<'a>, f: impl Fn(f64) -> f64) -> Datum<'a> {
    match x {
        Datum::Number(n) => Datum::number(f(n)),
        _ => Datum::Undefined,
    }
}

fn char_count(s: &str) -> f64 {
    // Twin strings are far below 2^53 characters: the conversion is exact.
    s.chars().count() as f64
}

/// `AS_NUMBER` of a string: surrounding whitespace ignored, decimal or exponent syntax,
/// finite results only (`"inf"`/`"NaN"` are not numbers here).
fn parse_number(s: &str) -> Datum<'static> {
    let text = s.trim();
    let numeric = text
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E'));
    if text.is_empty() || !numeric {
        return Datum::Undefined;
    }
    text.parse::<f64>().map_or(Datum::Undefined, Datum::number)
}

/// `SUBSTRING(s, start[, length])`: 0-based, fractional positions truncated, negative start
/// clamped to 0, out-of-range parts empty.
fn substring<'a>(s: Datum<'a>, start: Datum<'a>, length: Option<Datum<'a>>) -> Datum<'a> {
    let (Datum::Str(s), Datum::Number(start)) = (s, start) else {
        return Datum::Undefined;
    };
    let length = match length {
        None => None,
        Some(Datum::Number(n)) => Some(n),
        Some(_) => return Datum::Undefined,
    };
    // Float-to-int `as` saturates, so huge or negative values cannot wrap.
    let skip = start.trunc().max(0.0) as usize;
    let rest = s.chars().skip(skip);
    let out: String = match length {
        Some(n) => rest.take(n.trunc().max(0.0) as usize).collect(),
        None => rest.collect(),
    };
    Datum::Str(Cow::Owned(out))
}

#[cfg(test)]
mod tests {
    use crate::Query;
    use serde_json::{json, Value};

    fn value_of(expr: &str) -> Option<Value> {
        let query: Query = format!("SELECT {expr} AS v FROM devices").parse().unwrap();
        let twin = json!({"deviceId": "d", "tags": {"s": "Hello", "n": -2.5, "o": {}}});
        let rows = crate::evaluate(&query, [&twin]);
        rows.first().and_then(|r| r.get("v").cloned())
    }

    #[test]
    fn type_tests_are_false_for_undefined() {
        for f in [
            "IS_NULL",
            "IS_BOOL",
            "IS_NUMBER",
            "IS_STRING",
            "IS_OBJECT",
            "IS_ARRAY",
            "IS_PRIMITIVE",
            "IS_DEFINED",
        ] {
            assert_eq!(
                value_of(&format!("{f}(tags.missing)")),
                Some(json!(false)),
                "{f}"
            );
        }
        assert_eq!(value_of("IS_OBJECT(tags.o)"), Some(json!(true)));
        assert_eq!(value_of("IS_PRIMITIVE(tags.o)"), Some(json!(false)));
        assert_eq!(value_of("IS_PRIMITIVE(null)"), Some(json!(true)));
        assert_eq!(value_of("IS_DEFINED(null)"), Some(json!(true)));
        assert_eq!(value_of("IS_STRING(tags.s)"), Some(json!(true)));
    }

    #[test]
    fn string_functions() {
        assert_eq!(value_of("STARTSWITH(tags.s, 'He')"), Some(json!(true)));
        assert_eq!(value_of("STARTSWITH(tags.s, 'he')"), Some(json!(false)));
        assert_eq!(value_of("ENDSWITH(tags.s, 'lo')"), Some(json!(true)));
        assert_eq!(value_of("STARTSWITH(tags.n, '-')"), None);
        assert_eq!(value_of("CONTAINS(tags.s, 'ell')"), Some(json!(true)));
        assert_eq!(value_of("INDEX_OF(tags.s, 'l')"), Some(json!(2)));
        assert_eq!(value_of("INDEX_OF(tags.s, 'z')"), Some(json!(-1)));
        assert_eq!(value_of("INDEX_OF('éa', 'a')"), Some(json!(1)));
        assert_eq!(value_of("LENGTH('héllo')"), Some(json!(5)));
        assert_eq!(value_of("LOWER(tags.s)"), Some(json!("hello")));
        assert_eq!(value_of("UPPER(tags.s)"), Some(json!("HELLO")));
        assert_eq!(value_of("CONCAT(tags.s, ' ', 'x')"), Some(json!("Hello x")));
        assert_eq!(value_of("CONCAT(tags.s, 1)"), None);
        assert_eq!(value_of("SUBSTRING(tags.s, 1, 3)"), Some(json!("ell")));
        assert_eq!(value_of("SUBSTRING(tags.s, 3)"), Some(json!("lo")));
        assert_eq!(value_of("SUBSTRING(tags.s, -4, 2)"), Some(json!("He")));
        assert_eq!(value_of("SUBSTRING(tags.s, 10)"), Some(json!("")));
        assert_eq!(value_of("SUBSTRING(tags.s, 0, -1)"), Some(json!("")));
    }

    #[test]
    fn numeric_functions() {
        assert_eq!(value_of("ABS(tags.n)"), Some(json!(2.5)));
        assert_eq!(value_of("CEILING(tags.n)"), Some(json!(-2)));
        assert_eq!(value_of("FLOOR(tags.n)"), Some(json!(-3)));
        assert_eq!(value_of("SIGN(tags.n)"), Some(json!(-1)));
        assert_eq!(value_of("SQRT(16)"), Some(json!(4)));
        assert_eq!(value_of("SQRT(-1)"), None);
        assert_eq!(value_of("SQUARE(3)"), Some(json!(9)));
        assert_eq!(value_of("POWER(2, 10)"), Some(json!(1024)));
        assert_eq!(value_of("EXP(0)"), Some(json!(1)));
        assert_eq!(value_of("ABS(tags.s)"), None);
    }

    #[test]
    fn as_number_parses_numeric_strings_only() {
        assert_eq!(value_of("AS_NUMBER('75')"), Some(json!(75)));
        assert_eq!(value_of("AS_NUMBER(' 7.5 ')"), Some(json!(7.5)));
        assert_eq!(value_of("AS_NUMBER(12)"), Some(json!(12)));
        assert_eq!(value_of("AS_NUMBER('abc')"), None);
        assert_eq!(value_of("AS_NUMBER('inf')"), None);
        assert_eq!(value_of("AS_NUMBER('')"), None);
        assert_eq!(value_of("AS_NUMBER(true)"), None);
    }
}
