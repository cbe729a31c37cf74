//! Property tests: the canonical printer round-trips through the parser, and nothing —
//! parsing arbitrary text, mutated queries, token soup, evaluating and paging arbitrary
//! queries over arbitrary JSON — panics.

use proptest::prelude::*;
use proptest::sample::select;
use serde_json::{json, Map, Value};
use twinhub_query::{
    evaluate, execute_page, Aggregate, ArithmeticOp, Collection, CompareOp, Expr, Function,
    Literal, MemorySource, Path, Projection, Query, Select, SelectItem, MAX_QUERY_LENGTH,
};

/// Names: plain identifiers (sometimes keywords or `devices`) and arbitrary text without
/// `]` (a `[[ ]]` quoted name cannot contain `]]` or end with `]`).
fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z_$][a-zA-Z0-9_$]{0,8}",
        select(vec![
            "group",
            "SELECT",
            "devices",
            "Devices",
            "from",
            "Null",
            "in",
            "nin",
            "count",
            "x y",
            "fw-rollout-1",
            "",
            "é",
            "a.b",
            "'q'",
            "$version",
            "[",
            "top",
        ])
        .prop_map(String::from),
        "[^\\]]{0,6}",
    ]
}

fn path() -> impl Strategy<Value = Path> {
    prop::collection::vec(name(), 1..4)
        .prop_map(|names| Path::new(names).unwrap_or_else(|| panic!("one to three names")))
}

fn literal() -> impl Strategy<Value = Literal> {
    prop_oneof![
        Just(Literal::Undefined),
        Just(Literal::Null),
        any::<bool>().prop_map(Literal::Bool),
        (-1000i32..1000).prop_map(|n| Literal::Number(f64::from(n))),
        any::<f64>()
            .prop_filter("finite", |n| n.is_finite())
            .prop_map(Literal::Number),
        any::<String>().prop_map(Literal::String),
    ]
}

fn compare_op() -> impl Strategy<Value = CompareOp> {
    select(vec![
        CompareOp::Eq,
        CompareOp::Ne,
        CompareOp::Lt,
        CompareOp::Le,
        CompareOp::Gt,
        CompareOp::Ge,
    ])
}

fn arithmetic_op() -> impl Strategy<Value = ArithmeticOp> {
    select(vec![
        ArithmeticOp::Add,
        ArithmeticOp::Sub,
        ArithmeticOp::Mul,
        ArithmeticOp::Div,
        ArithmeticOp::Rem,
    ])
}

fn expr() -> impl Strategy<Value = Expr> {
    let leaf = prop_oneof![
        literal().prop_map(Expr::Literal),
        path().prop_map(Expr::Path)
    ];
    leaf.prop_recursive(5, 48, 4, |inner| {
        let call = select(Function::ALL.to_vec()).prop_flat_map({
            let inner = inner.clone();
            move |function| {
                let (min, max) = function.arity();
                prop::collection::vec(inner.clone(), min..=max.unwrap_or(4))
                    .prop_map(move |args| Expr::Call { function, args })
            }
        });
        prop_oneof![
            inner.clone().prop_map(|e| Expr::Neg(Box::new(e))),
            inner.clone().prop_map(|e| Expr::Not(Box::new(e))),
            prop::collection::vec(inner.clone(), 2..4).prop_map(Expr::And),
            prop::collection::vec(inner.clone(), 2..4).prop_map(Expr::Or),
            (compare_op(), inner.clone(), inner.clone()).prop_map(|(op, l, r)| Expr::Compare {
                op,
                left: Box::new(l),
                right: Box::new(r)
            }),
            (arithmetic_op(), inner.clone(), inner.clone()).prop_map(|(op, l, r)| {
                Expr::Arithmetic {
                    op,
                    left: Box::new(l),
                    right: Box::new(r),
                }
            }),
            (
                inner.clone(),
                prop::collection::vec(inner.clone(), 1..4),
                any::<bool>()
            )
                .prop_map(|(v, list, negated)| Expr::In {
                    value: Box::new(v),
                    list,
                    negated
                }),
            call,
        ]
    })
}

fn aggregate() -> impl Strategy<Value = Aggregate> {
    prop_oneof![
        Just(Aggregate::Count),
        expr().prop_map(Aggregate::Sum),
        expr().prop_map(Aggregate::Avg),
        expr().prop_map(Aggregate::Min),
        expr().prop_map(Aggregate::Max),
    ]
}

fn alias() -> impl Strategy<Value = Option<String>> {
    prop::option::of(name())
}

fn item(value: impl Strategy<Value = Projection>) -> impl Strategy<Value = SelectItem> {
    (value, alias()).prop_map(|(value, alias)| SelectItem { value, alias })
}

/// Only queries that pass validation, so that printing and parsing must agree exactly.
fn query() -> impl Strategy<Value = Query> {
    let plain = prop::collection::vec(item(expr().prop_map(Projection::Expr)), 1..4)
        .prop_map(|items| (Select::Items(items), None));
    let aggregates = prop::collection::vec(item(aggregate().prop_map(Projection::Aggregate)), 1..4)
        .prop_map(|items| (Select::Items(items), None));
    let grouped =
        (path(), prop::collection::vec(any::<bool>(), 1..4)).prop_flat_map(|(group, key_items)| {
            let items: Vec<_> = key_items
                .into_iter()
                .map(|is_key| {
                    let key = Projection::Expr(Expr::Path(group.clone()));
                    if is_key {
                        item(Just(key)).boxed()
                    } else {
                        item(aggregate().prop_map(Projection::Aggregate)).boxed()
                    }
                })
                .collect();
            (items, Just(group)).prop_map(|(items, group)| (Select::Items(items), Some(group)))
        });
    let shape = prop_oneof![Just((Select::All, None)), plain, aggregates, grouped];
    let collection = select(vec![
        Collection::Devices,
        Collection::Modules,
        Collection::Jobs,
    ]);
    (
        prop::option::of(0u64..=9_007_199_254_740_992),
        shape,
        collection,
        prop::option::of(expr()),
    )
        .prop_map(|(top, (select, group_by), collection, condition)| {
            let jobs = collection == Collection::Jobs;
            Query {
                top,
                select: if jobs { Select::All } else { select },
                collection,
                condition,
                group_by: if jobs { None } else { group_by },
            }
        })
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-100i64..100).prop_map(Value::from),
        (-1e3f64..1e3).prop_map(|f| json!(f)),
        "[a-zA-Z0-9 ]{0,4}".prop_map(Value::String),
    ];
    let key = select(vec![
        "tags",
        "a",
        "A",
        "x",
        "group",
        "devices",
        "properties",
        "reported",
        "deviceId",
        "moduleId",
        "é",
        "$version",
    ]);
    leaf.prop_recursive(4, 32, 5, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            prop::collection::vec((key.clone(), inner), 0..5).prop_map(|pairs| {
                Value::Object(
                    pairs
                        .into_iter()
                        .map(|(k, v)| (k.to_owned(), v))
                        .collect::<Map<String, Value>>(),
                )
            }),
        ]
    })
}

const TOKENS: [&str; 40] = [
    "SELECT",
    "TOP",
    "*",
    "FROM",
    "devices",
    ".",
    "modules",
    "jobs",
    "WHERE",
    "GROUP",
    "BY",
    "AS",
    "AND",
    "OR",
    "NOT",
    "IN",
    "NIN",
    "[",
    "]",
    "(",
    ")",
    ",",
    "=",
    "!=",
    "<",
    ">=",
    "+",
    "-",
    "/",
    "%",
    "tags",
    "x",
    "'s'",
    "5",
    "COUNT",
    "SUM",
    "IS_DEFINED",
    "[[g]]",
    "true",
    "null",
];

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn display_round_trips_through_parse(q in query()) {
        let text = q.to_string();
        prop_assume!(text.chars().count() <= MAX_QUERY_LENGTH);
        let parsed = Query::parse(&text)
            .map_err(|e| TestCaseError::fail(format!("{text}\n{e}")))?;
        prop_assert_eq!(&parsed, &q, "{}", text);
        prop_assert_eq!(parsed.to_string(), text);
    }

    #[test]
    fn parse_never_panics_on_arbitrary_text(text in any::<String>()) {
        let _ = Query::parse(&text);
    }

    #[test]
    fn parse_never_panics_on_token_soup(tokens in prop::collection::vec(select(TOKENS.to_vec()), 0..40)) {
        let _ = Query::parse(&tokens.join(" "));
        let _ = Query::parse(&tokens.concat());
    }

    #[test]
    fn parse_never_panics_on_mutated_queries(
        q in query(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<char>(), 0u8..3), 1..6),
    ) {
        let mut chars: Vec<char> = q.to_string().chars().collect();
        for (at, c, kind) in edits {
            let i = at.index(chars.len() + 1);
            match kind {
                0 => chars.insert(i, c),
                1 if i < chars.len() => { chars.remove(i); }
                _ if i < chars.len() => chars[i] = c,
                _ => chars.push(c),
            }
        }
        let text: String = chars.into_iter().collect();
        if let Ok(parsed) = Query::parse(&text) {
            // Whatever parses must print to something that parses to the same tree.
            prop_assert_eq!(Query::parse(&parsed.to_string()).ok(), Some(parsed));
        }
    }

    #[test]
    fn evaluation_and_paging_never_panic(q in query(), twins in prop::collection::vec(json_value(), 0..4)) {
        let twins: Vec<Value> = twins
            .into_iter()
            .enumerate()
            .map(|(i, t)| {
                let mut m = match t {
                    Value::Object(m) => m,
                    other => json!({"tags": {"a": other}}).as_object().cloned().unwrap_or_default(),
                };
                // Ids as a store has them: a string deviceId, a string moduleId on modules.
                m.insert("deviceId".into(), json!(format!("d{}", i / 2)));
                m.remove("moduleId");
                if i % 2 == 1 {
                    m.insert("moduleId".into(), json!("m"));
                }
                Value::Object(m)
            })
            .collect();
        let all = evaluate(&q, &twins);
        let source = MemorySource::new(twins.clone());
        let mut paged = Vec::new();
        let mut token: Option<String> = None;
        for _ in 0..20 {
            let page = execute_page(&q, &source, token.as_deref(), 1)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            paged.extend(page.items);
            token = page.continuation;
            if token.is_none() {
                break;
            }
        }
        prop_assert!(token.is_none());
        // `evaluate` walks the input order, the pager the key order: compare as multisets.
        let mut all: Vec<String> = all.iter().map(Value::to_string).collect();
        let mut paged: Vec<String> = paged.iter().map(Value::to_string).collect();
        if q.collection == Collection::Jobs {
            // MemorySource holds no job records.
            prop_assert!(paged.is_empty());
        } else if !q.is_aggregate() {
            all.sort();
            paged.sort();
            prop_assert_eq!(all, paged);
        } else {
            prop_assert_eq!(all.len(), paged.len());
        }
    }
}
