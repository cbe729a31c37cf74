//! Runs the conformance corpus (`tests/data/query-corpus.json`, a copy of the project's
//! shared `spec/query-corpus.json`, kept here so a clone alone passes) through the public API: every query case through [`execute_page`] (one big page,
//! then again with tiny pages, which must give the same rows), every paging case with the
//! exact page-size sequence, tokens and errors it describes.
//!
//! Twins are loaded verbatim, including the cases that `require` identity fields, verbatim
//! hub-managed fields, module twins or `configurations`: at this level they are just JSON.
//!
//! # Decisions for the cases marked `uncertain`
//!
//! | case | decision |
//! |---|---|
//! | `nin` | NIN ≡ NOT (IN …); an undefined operand stays undefined, so twins lacking the property are excluded |
//! | `ne-excludes-missing`, `ltgt-synonym` | `!=`/`<>` with an undefined operand is undefined: twins without a region are excluded |
//! | `not-eq-excludes-missing` | NOT undefined is undefined (three-valued logic, no collapse to false) |
//! | `compare-two-properties-ne` | property vs property: undefined on either side → excluded |
//! | `endswith` | ENDSWITH is accepted in twin queries (STARTS_WITH/ENDS_WITH stay errors) |
//! | `property-names-case-insensitive-system` | names match case-insensitively; output keys use the twin's stored casing (`deviceId`) |
//! | `property-names-case-insensitive-nested` | case-insensitive matching at every path level, exact-case match preferred |
//! | `count-zero` | an aggregate query without GROUP BY always yields one row: `[{"n": 0}]` |
//! | `group-by-undefined-key` | twins lacking the grouped property form one group whose key is omitted from its row |
//! | `group-by-unaliased-key` | an unaliased group key is named by its last path segment (stored casing) |
//! | `double-quoted-string` | double-quoted strings are accepted like single-quoted ones |
//! | `err-in-parentheses` | `IN (…)` is a syntax error (400): lists take square brackets |
//! | `err-order-by` | ORDER BY is a syntax error (400): not part of the grammar |
//! | `err-group-unquoted` | reserved words (including `group`) cannot be unquoted path segments: 400; `[[group]]` works |
//! | `err-too-long` | over 8192 characters → 400 (`QueryError::TooLong`) |
//! | `page-bad-token` | a malformed or foreign token → 400 (`InvalidContinuation`) |
//! | `page-bad-max-item-count` | a non-integer (or ≤ 0) `x-ms-max-item-count` → 400 rather than silently using the default |
//! | `page-group-by` | aggregate/GROUP BY rows are paged like other rows (offset in the token) |

use std::collections::HashSet;

use serde_json::Value;
use twinhub_query::{
    execute_page, parse_max_item_count, MemorySource, Page, PageError, Query, QueryError,
};

/// Every case marked `uncertain` in the corpus must appear in the table above and here.
const DECIDED_UNCERTAIN: [&str; 19] = [
    "nin",
    "ne-excludes-missing",
    "ltgt-synonym",
    "not-eq-excludes-missing",
    "compare-two-properties-ne",
    "endswith",
    "property-names-case-insensitive-system",
    "property-names-case-insensitive-nested",
    "count-zero",
    "group-by-undefined-key",
    "group-by-unaliased-key",
    "double-quoted-string",
    "err-in-parentheses",
    "err-order-by",
    "err-group-unquoted",
    "err-too-long",
    "page-bad-token",
    "page-bad-max-item-count",
    "page-group-by",
];

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/query-corpus.json");

fn corpus() -> Value {
    let text = std::fs::read_to_string(CORPUS)
        .unwrap_or_else(|e| panic!("cannot read the corpus at {CORPUS}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("the corpus is not JSON: {e}"))
}

fn array<'a>(value: &'a Value, key: &str) -> &'a Vec<Value> {
    value
        .get(key)
        .and_then(Value::as_array)
        .unwrap_or_else(|| panic!("missing array '{key}'"))
}

fn source(corpus: &Value) -> MemorySource {
    let twins = array(corpus, "twins");
    let source = MemorySource::new(twins.iter().cloned());
    assert_eq!(source.len(), twins.len(), "every twin has a deviceId");
    source
}

/// A row's id: `deviceId`, or `deviceId/moduleId` for module twins.
fn row_id(row: &Value) -> String {
    let device = row["deviceId"].as_str().unwrap_or("<none>");
    match row.get("moduleId").and_then(Value::as_str) {
        Some(module) => format!("{device}/{module}"),
        None => device.to_owned(),
    }
}

/// JSON equality with numbers compared by value (`24` = `24.0`).
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(v, w)| json_eq(v, w))
        }
        _ => a == b,
    }
}

fn same_rows(expected: &[Value], actual: &[Value]) -> Result<(), String> {
    let mut unused: Vec<&Value> = actual.iter().collect();
    for want in expected {
        match unused.iter().position(|got| json_eq(want, got)) {
            Some(i) => {
                unused.swap_remove(i);
            }
            None => return Err(format!("missing row {want}; got {actual:?}")),
        }
    }
    if unused.is_empty() {
        Ok(())
    } else {
        Err(format!("unexpected rows {unused:?}"))
    }
}

fn same_ids(expected: &[Value], rows: &[Value]) -> Result<(), String> {
    let mut want: Vec<String> = expected
        .iter()
        .map(|v| v.as_str().unwrap_or_default().to_owned())
        .collect();
    let mut got: Vec<String> = rows.iter().map(row_id).collect();
    want.sort();
    got.sort();
    if want == got {
        Ok(())
    } else {
        Err(format!("ids: expected {want:?}, got {got:?}"))
    }
}

/// Runs `query` to the end; `size(i)` is the page size of page `i`.
fn run_pages(
    query: &Query,
    source: &MemorySource,
    size: impl Fn(usize) -> usize,
) -> Result<Vec<Page>, QueryError> {
    let mut pages: Vec<Page> = Vec::new();
    loop {
        let token = pages.last().and_then(|p| p.continuation.clone());
        let page = execute_page(query, source, token.as_deref(), size(pages.len())).map_err(
            |e| match e {
                PageError::Query(q) => q,
                other => panic!("unexpected executor failure: {other}"),
            },
        )?;
        let done = page.continuation.is_none();
        pages.push(page);
        if done {
            return Ok(pages);
        }
        assert!(pages.len() < 1000, "paging does not terminate");
    }
}

fn rows_of(pages: &[Page]) -> Vec<Value> {
    pages.iter().flat_map(|p| p.items.iter().cloned()).collect()
}

fn check_case(case: &Value, corpus: &Value, source: &MemorySource) -> Result<(), String> {
    let text = case["query"].as_str().ok_or("query is not a string")?;
    if case.get("expect_error").is_some() {
        assert_eq!(case["expect_error"], 400, "only 400 errors are expected");
        // The server maps every QueryError to 400 ArgumentInvalid.
        return match Query::parse(text) {
            Err(e) => {
                assert_eq!(QueryError::HTTP_STATUS, 400);
                assert!(!e.to_string().is_empty());
                Ok(())
            }
            Ok(q) => Err(format!("parsed as {q}, expected a 400 error")),
        };
    }
    let query = Query::parse(text).map_err(|e| format!("parse failed: {e}"))?;
    let pages = run_pages(&query, source, |_| 1000).map_err(|e| e.to_string())?;
    if pages.len() != 1 {
        return Err(format!("{} pages at size 1000", pages.len()));
    }
    let rows = rows_of(&pages);
    let item_type = case["item_type"].as_str().ok_or("no item_type")?;
    if pages[0].item_type.as_str() != item_type {
        return Err(format!(
            "item type {} instead of {item_type}",
            pages[0].item_type
        ));
    }
    if let Some(ids) = case.get("expect_ids").and_then(Value::as_array) {
        same_ids(ids, &rows)?;
        // SELECT * rows are the stored twins, unchanged.
        for row in &rows {
            let original = array(corpus, "twins")
                .iter()
                .find(|t| row_id(t) == row_id(row))
                .ok_or("row without a twin")?;
            if original != row {
                return Err(format!("row {} differs from its twin", row_id(row)));
            }
        }
    }
    if let Some(expected) = case.get("expect").and_then(Value::as_array) {
        same_rows(expected, &rows)?;
    }
    if let Some(count) = case.get("expect_count").and_then(Value::as_u64) {
        check_count_subset(count, array(case, "expect_subset_of_ids"), &rows)?;
    }
    // Paging must not change the result: tiny pages give the same multiset.
    for size in [1, 2, 3] {
        let paged = rows_of(&run_pages(&query, source, |_| size).map_err(|e| e.to_string())?);
        same_rows(&rows, &paged).map_err(|e| format!("page size {size}: {e}"))?;
    }
    Ok(())
}

fn check_count_subset(count: u64, subset: &[Value], rows: &[Value]) -> Result<(), String> {
    if rows.len() as u64 != count {
        return Err(format!("{} rows instead of {count}", rows.len()));
    }
    let allowed: HashSet<&str> = subset.iter().filter_map(Value::as_str).collect();
    let ids: HashSet<String> = rows.iter().map(row_id).collect();
    if ids.len() != rows.len() {
        return Err("duplicate rows".into());
    }
    match ids.iter().find(|id| !allowed.contains(id.as_str())) {
        Some(id) => Err(format!("{id} is not among the allowed ids")),
        None => Ok(()),
    }
}

#[test]
fn every_query_case_passes() {
    let corpus = corpus();
    let source = source(&corpus);
    let cases = array(&corpus, "cases");
    assert_eq!(cases.len(), 60);
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|case| {
            check_case(case, &corpus, &source)
                .err()
                .map(|e| format!("{}: {e}", case["id"]))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "failing cases:\n{}",
        failures.join("\n")
    );
}

/// Page size header for page `i` of a paging case.
fn page_size_header(case: &Value, i: usize) -> Option<String> {
    if let Some(sequence) = case
        .get("max_item_count_sequence")
        .and_then(Value::as_array)
    {
        let last = sequence.len().saturating_sub(1);
        return sequence.get(i.min(last)).map(Value::to_string);
    }
    if let Some(raw) = case.get("max_item_count_raw") {
        return raw.as_str().map(str::to_owned);
    }
    match case.get("max_item_count") {
        None | Some(Value::Null) => None,
        Some(n) => Some(n.to_string()),
    }
}

fn check_paging_case(case: &Value, source: &MemorySource) -> Result<(), String> {
    let text = case["query"].as_str().ok_or("query is not a string")?;
    let query = Query::parse(text).map_err(|e| format!("parse failed: {e}"))?;
    if case.get("expect_error").is_some() {
        // Either the header or the token is bad; both are 400 QueryErrors.
        let size = parse_max_item_count(page_size_header(case, 0).as_deref());
        let result = size.and_then(|size| {
            let token = case.get("continuation").and_then(Value::as_str);
            execute_page(&query, source, token, size).map_err(|e| match e {
                PageError::Query(q) => q,
                other => panic!("unexpected executor failure: {other}"),
            })
        });
        return match result {
            Err(_) => Ok(()),
            Ok(page) => Err(format!("expected a 400 error, got {page:?}")),
        };
    }
    let sizes: Vec<usize> = (0..64)
        .map(|i| parse_max_item_count(page_size_header(case, i).as_deref()))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    let pages = run_pages(&query, source, |i| sizes[i.min(63)]).map_err(|e| e.to_string())?;
    let expect = &case["expect"];
    let got_sizes: Vec<u64> = pages.iter().map(|p| p.items.len() as u64).collect();
    let want_sizes: Vec<u64> = array(expect, "page_sizes")
        .iter()
        .filter_map(Value::as_u64)
        .collect();
    if got_sizes != want_sizes {
        return Err(format!(
            "page sizes {got_sizes:?} instead of {want_sizes:?}"
        ));
    }
    // A token on every page but the last, never an empty one.
    for (i, page) in pages.iter().enumerate() {
        let last = i + 1 == pages.len();
        match (&page.continuation, last) {
            (Some(t), false) if !t.is_empty() => {}
            (None, true) => {}
            (t, _) => return Err(format!("page {i}: continuation {t:?}")),
        }
        if let Some(item_type) = expect.get("item_type").and_then(Value::as_str) {
            if page.item_type.as_str() != item_type {
                return Err(format!("page {i}: item type {}", page.item_type));
            }
        }
    }
    let rows = rows_of(&pages);
    if let Some(ids) = expect.get("total_ids").and_then(Value::as_array) {
        same_ids(ids, &rows)?;
    }
    if let Some(expected) = expect.get("total_rows").and_then(Value::as_array) {
        same_rows(expected, &rows)?;
    }
    if let Some(count) = expect.get("total_count").and_then(Value::as_u64) {
        check_count_subset(count, array(expect, "subset_of_ids"), &rows)?;
    }
    if expect.get("no_duplicates") == Some(&Value::Bool(true)) {
        let ids: HashSet<String> = rows.iter().map(row_id).collect();
        if ids.len() != rows.len() {
            return Err("duplicate rows across pages".into());
        }
    }
    Ok(())
}

#[test]
fn every_paging_case_passes() {
    let corpus = corpus();
    let source = source(&corpus);
    let cases = array(&corpus, "paging_cases");
    assert_eq!(cases.len(), 8);
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|case| {
            check_paging_case(case, &source)
                .err()
                .map(|e| format!("{}: {e}", case["id"]))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "failing cases:\n{}",
        failures.join("\n")
    );
}

#[test]
fn every_uncertain_case_has_a_recorded_decision() {
    let corpus = corpus();
    let uncertain: HashSet<&str> = array(&corpus, "cases")
        .iter()
        .chain(array(&corpus, "paging_cases"))
        .filter(|c| c.get("uncertain") == Some(&Value::Bool(true)))
        .filter_map(|c| c["id"].as_str())
        .collect();
    let decided: HashSet<&str> = DECIDED_UNCERTAIN.into_iter().collect();
    assert_eq!(uncertain, decided);
}

#[test]
fn error_cases_fail_for_the_documented_reason() {
    let corpus = corpus();
    let by_id = |id: &str| {
        array(&corpus, "cases")
            .iter()
            .find(|c| c["id"] == id)
            .and_then(|c| c["query"].as_str())
            .unwrap_or_else(|| panic!("no case {id}"))
            .to_owned()
    };
    let message = |id: &str| Query::parse(&by_id(id)).unwrap_err().to_string();
    assert!(message("err-too-long").contains("8192"));
    assert!(message("err-unknown-function").contains("unknown function 'NO_SUCH_FUNCTION'"));
    assert!(message("err-unterminated-string").contains("unterminated string"));
    assert!(message("err-group-unquoted").contains("[[group]]"));
    assert!(message("err-in-parentheses").contains("expected '['"));
    assert!(message("err-order-by").contains("found 'ORDER'"));
    assert!(message("err-missing-from").contains("expected FROM, found end of query"));
    assert!(message("err-empty-query").contains("expected SELECT, found end of query"));
    assert!(message("err-misspelled-select").contains("position 1: expected SELECT, found 'SELEC'"));
    assert!(message("err-dangling-and").contains("expected an expression, found end of query"));
}
