//! Twinhub's IoT Hub twin query language (`POST /devices/query`), as specified in
//! `shared/spec/iothub-query.md`. Pure: no async, no I/O, no clock.
//!
//! # Layout
//! - [`error`]: [`QueryError`], every variant an HTTP 400 `ArgumentInvalid`; the limits.
//! - `lexer`: tokens with 1-based character positions; strings, `[[quoted]]` names, hex.
//! - `parser`: recursive descent over the grammar of spec §6.2, depth-capped, plus the
//!   aggregate / GROUP BY / `devices.jobs` rules.
//! - `ast`: the tree ([`Query`], [`Expr`], …) and its canonical `Display`, which re-parses
//!   to an equal tree and is what continuation tokens fingerprint.
//! - `eval`: values with *undefined*, case-insensitive path lookup, comparison without
//!   coercion, three-valued logic, arithmetic (spec §7.1–§7.5); `function`: built-ins (§7.6).
//! - `select`: projection rows and their key names (§7.7); `aggregate`: COUNT/SUM/AVG/
//!   MIN/MAX and GROUP BY (§7.8).
//! - `page`: the stateless paged executor ([`execute_page`]), [`TwinSource`],
//!   continuation tokens and the `x-ms-max-item-count` rule (§3).
//! - `document`: [`Document`], what queries evaluate over (a borrowed view of a twin, or a
//!   `serde_json::Value`), and [`Field`], what a path resolves to (JSON borrowed as a
//!   `serde_json::Value` or as a compact `twinhub_json` tree, or computed).
//! - `hint`: necessary conditions a store may push down into an index ([`ScanHint`]).
//!
//! # Serving a request
//! ```
//! use twinhub_query::{execute_page, parse_max_item_count, MemorySource, Query};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let twins = MemorySource::new([serde_json::json!({"deviceId": "d1", "tags": {"floor": 3}})]);
//! let query = Query::parse("SELECT deviceId FROM devices WHERE tags.floor > 2")?;
//! let page_size = parse_max_item_count(None)?; // x-ms-max-item-count
//! let page = execute_page(&query, &twins, None, page_size)?; // x-ms-continuation: None
//! assert_eq!(page.items, vec![serde_json::json!({"deviceId": "d1"})]);
//! assert_eq!(page.item_type.as_str(), "Raw"); // x-ms-item-type
//! assert!(page.continuation.is_none()); // last page: no x-ms-continuation header
//! # Ok(()) }
//! ```

mod aggregate;
mod ast;
mod document;
pub mod error;
mod eval;
mod function;
mod hint;
mod lexer;
mod page;
mod parser;
mod select;

use std::str::FromStr;

use serde_json::Value;

pub use ast::{
    Aggregate, ArithmeticOp, Collection, CompareOp, Expr, Function, Literal, Path, Projection,
    Query, Segment, Select, SelectItem,
};
pub use document::{descend, lookup, lookup_node, resolve_json, resolve_node, Document, Field};
pub use error::{QueryError, QueryErrorKind, MAX_EXPRESSION_DEPTH, MAX_QUERY_LENGTH};
pub use hint::{HintCondition, ScanHint};
pub use page::{
    execute_page, parse_max_item_count, parse_max_item_count_capped, ItemType, MemorySource, Page,
    PageError, ResumeKey, ScanRequest, TwinSource, DEFAULT_MAX_ITEM_COUNT, MAX_ITEM_COUNT,
};

/// Parses and validates a query text (at most [`MAX_QUERY_LENGTH`] characters).
pub fn parse(text: &str) -> Result<Query, QueryError> {
    parser::parse_query(text)
}

impl FromStr for Query {
    type Err = QueryError;

    fn from_str(text: &str) -> Result<Query, QueryError> {
        parser::parse_query(text)
    }
}

impl Query {
    /// Same as [`parse`].
    pub fn parse(text: &str) -> Result<Query, QueryError> {
        parser::parse_query(text)
    }

    /// Checks the rules beyond the grammar; [`parse`] already did for parsed queries. For
    /// trees built by hand (expression depth is the builder's responsibility).
    pub fn validate(&self) -> Result<(), QueryError> {
        parser::validate(self)
    }

    /// True for aggregate and GROUP BY queries, whose rows are computed over the whole
    /// collection rather than one per twin.
    pub fn is_aggregate(&self) -> bool {
        self.group_by.is_some()
            || matches!(&self.select, Select::Items(items)
                if items.iter().any(|i| matches!(i.value, Projection::Aggregate(_))))
    }

    /// The `x-ms-item-type` of this query's results.
    pub fn item_type(&self) -> ItemType {
        match (&self.select, self.collection) {
            (_, Collection::Jobs) => ItemType::DeviceJob,
            (Select::All, _) => ItemType::Twin,
            (Select::Items(_), _) => ItemType::Raw,
        }
    }

    /// True when `document` is in the query's collection and satisfies WHERE.
    pub fn matches<D: Document + ?Sized>(&self, document: &D) -> bool {
        select::admits(self.collection, document)
            && eval::is_selected(self.condition.as_ref(), document)
    }

    /// Necessary conditions a store may use to narrow its scan; see [`ScanHint`].
    pub fn scan_hints(&self) -> Vec<ScanHint> {
        hint::scan_hints(self)
    }
}

/// The complete result of `query` over `documents` in the given order (TOP applied),
/// without paging. Meant for tests and small in-memory sets; the server uses
/// [`execute_page`].
pub fn evaluate<'t>(query: &Query, documents: impl IntoIterator<Item = &'t Value>) -> Vec<Value> {
    let selected = documents.into_iter().filter(|d| query.matches(*d));
    let limit = query
        .top
        .map_or(usize::MAX, |t| usize::try_from(t).unwrap_or(usize::MAX));
    if query.is_aggregate() {
        let mut aggregation = aggregate::Aggregation::new(query);
        selected.for_each(|d| aggregation.add(d));
        let mut rows = aggregation.into_rows();
        rows.truncate(limit);
        return rows;
    }
    let named = select::name_items(&query.select);
    selected
        .take(limit)
        .map(|d| match query.select {
            Select::All => d.clone(),
            Select::Items(_) => select::project(&named, d),
        })
        .collect()
}
