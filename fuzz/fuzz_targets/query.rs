//! The twin query language (`twinhub_query`): `POST /devices/query` bodies and
//! `x-ms-continuation` / `x-ms-max-item-count` headers.
//!
//! Input: the query text, optionally followed by `\n\0` and a continuation token.
//! Invariants, beyond "never panics" and "never hangs":
//! - the canonical `Display` re-parses to an equal tree and is a fixed point;
//! - `matches` and `evaluate` run on every twin;
//! - paging through the stateless executor, one to three rows a page, returns
//!   exactly what `evaluate` returns, in order, and ends;
//! - a client's continuation token is refused or honoured, never trusted blindly.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use twinhub_query::{
    evaluate, execute_page, parse_max_item_count, Collection, MemorySource, PageError, Query,
    MAX_QUERY_LENGTH,
};

struct Fixture {
    /// Twins in scan order (device id, then module id).
    twins: Vec<serde_json::Value>,
    source: MemorySource,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let mut twins = twinhub_fuzz::twins();
        let key = |t: &serde_json::Value| {
            (
                t["deviceId"].as_str().unwrap_or_default().to_owned(),
                t.get("moduleId")
                    .and_then(|m| m.as_str())
                    .map(str::to_owned),
            )
        };
        twins.sort_by_key(key);
        let source = MemorySource::new(twins.clone());
        Fixture { twins, source }
    })
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (query_text, token) = match text.split_once("\n\0") {
        Some((q, t)) => (q, Some(t)),
        None => (&*text, None),
    };
    let _ = parse_max_item_count(token);
    let Ok(query) = Query::parse(query_text) else {
        return;
    };
    let canonical = query.to_string();
    if canonical.chars().count() <= MAX_QUERY_LENGTH {
        let reparsed = Query::parse(&canonical)
            .unwrap_or_else(|e| panic!("canonical text {canonical:?} does not parse: {e}"));
        assert_eq!(
            reparsed, query,
            "canonical text {canonical:?} parses differently"
        );
        assert_eq!(
            reparsed.to_string(),
            canonical,
            "Display is not a fixed point"
        );
    }
    let _ = query.scan_hints();

    let f = fixture();
    for twin in &f.twins {
        let _ = query.matches(twin);
    }
    // Job records are the source's business (the hub answers 400 to
    // `devices.jobs`); the twins here are none, so such a query pages nothing.
    let all = evaluate(&query, &f.twins);
    let expected = if query.collection == Collection::Jobs {
        Vec::new()
    } else {
        all
    };

    let page_size = data.len() % 3 + 1;
    let mut rows = Vec::new();
    let mut continuation: Option<String> = None;
    for _ in 0..expected.len() + f.twins.len() + 2 {
        let page = match execute_page(&query, &f.source, continuation.as_deref(), page_size) {
            Ok(page) => page,
            Err(PageError::Query(e)) => panic!("a parsed query failed to page: {e}"),
            Err(e) => panic!("paging failed: {e}"),
        };
        assert!(page.items.len() <= page_size);
        assert_eq!(page.item_type, query.item_type());
        rows.extend(page.items);
        match page.continuation {
            Some(next) => {
                assert!(!next.is_empty(), "empty continuation header");
                continuation = Some(next);
            }
            None => {
                continuation = None;
                break;
            }
        }
    }
    assert!(continuation.is_none(), "paging did not end");
    assert_eq!(rows, expected, "pages differ from the whole result");

    if let Some(token) = token {
        match execute_page(&query, &f.source, Some(token), page_size) {
            Ok(_) | Err(PageError::Query(_)) => {}
            Err(e) => panic!("a client's token caused a server error: {e}"),
        }
    }
});
