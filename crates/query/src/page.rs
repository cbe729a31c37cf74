//! Paging (spec §3): the stateless executor behind `POST /devices/query`.
//!
//! The server hands [`execute_page`] a parsed query, a [`TwinSource`] that scans documents
//! in ascending [`ResumeKey`] order, the client's `x-ms-continuation` token and the page
//! size. Nothing is kept between requests:
//!
//! - Plain queries stream: the scan resumes strictly after the key of the last row
//!   returned, so rows that did not change are neither repeated nor skipped, and memory is
//!   one page. Pages are filled completely and one more matching row is peeked at, so the
//!   last page carries no token (an empty token makes the Node SDK restart the query).
//! - Aggregate and GROUP BY queries are recomputed on every page and the token holds an
//!   offset into their rows (first-seen group order is stable for a stable scan order).
//! - `TOP n` spans pages: the token counts the rows already returned.
//!
//! Tokens are base64url (header-safe) JSON carrying a fingerprint of the canonical query
//! text; a token presented with another query is rejected. They stay valid when the page
//! size changes between pages (the Azure CLI does that).

use std::cmp::Ordering;
use std::convert::Infallible;
use std::fmt::{self, Debug, Display, Formatter};
use std::ops::ControlFlow;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::aggregate::Aggregation;
use crate::ast::{Collection, Query, Select};
use crate::document::Document;
use crate::error::QueryError;
use crate::eval::is_selected;
use crate::hint::ScanHint;
use crate::parser::validate;
use crate::select::{admits, name_items, project};

/// Page size when `x-ms-max-item-count` is absent (spec §3: IoT Hub pages hold ≤ 100).
pub const DEFAULT_MAX_ITEM_COUNT: usize = 100;
/// Largest page size honoured by [`parse_max_item_count`]; larger values are clamped.
pub const MAX_ITEM_COUNT: usize = 1000;
/// Tokens longer than this are rejected before decoding (real ones are ~150 characters:
/// device and module ids are at most 128 characters each).
const MAX_TOKEN_LENGTH: usize = 2048;
const TOKEN_VERSION: u64 = 1;

/// Value of the `x-ms-item-type` response header (exact case matters to the C# SDK).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ItemType {
    /// `SELECT *` over `devices` or `devices.modules`: rows are whole twins.
    Twin,
    /// `FROM devices.jobs`.
    DeviceJob,
    /// Projections and aggregates.
    Raw,
}

impl ItemType {
    pub fn as_str(self) -> &'static str {
        match self {
            ItemType::Twin => "Twin",
            ItemType::DeviceJob => "DeviceJob",
            ItemType::Raw => "Raw",
        }
    }
}

impl Display for ItemType {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Position of a document in the scan order: `(deviceId, moduleId)` for twins (device twins
/// have no `moduleId` and sort before their modules), `(deviceId, jobId)` for job records.
/// Strings order by bytes (SQLite's BINARY collation, Rust's `str` order).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ResumeKey {
    pub device_id: String,
    /// `moduleId` for module twins, `jobId` for job records, `None` for device twins.
    pub item_id: Option<String>,
}

impl ResumeKey {
    /// The key of `document` in `collection`, `None` when the ids are missing.
    pub fn of<D: Document + ?Sized>(collection: Collection, document: &D) -> Option<ResumeKey> {
        let (device, item) = key_ref(collection, document)?;
        Some(ResumeKey {
            device_id: device.to_owned(),
            item_id: item.map(str::to_owned),
        })
    }

    fn cmp_ref(&self, device: &str, item: Option<&str>) -> Ordering {
        (self.device_id.as_str(), self.item_id.as_deref()).cmp(&(device, item))
    }
}

/// Borrowed key of `document`, without allocating: ids must be borrowed strings.
fn key_ref<D: Document + ?Sized>(
    collection: Collection,
    document: &D,
) -> Option<(&str, Option<&str>)> {
    let device = document.member("deviceId")?.as_borrowed_str()?;
    let item = match collection {
        Collection::Devices => None,
        Collection::Modules => Some(document.member("moduleId")?.as_borrowed_str()?),
        Collection::Jobs => Some(document.member("jobId")?.as_borrowed_str()?),
    };
    Some((device, item))
}

/// What [`TwinSource::scan`] and [`TwinSource::fold`] are asked for.
#[derive(Clone, Copy)]
pub struct ScanRequest<'r> {
    pub collection: Collection,
    /// Yield only documents whose key is strictly greater than this (always `None` for
    /// [`TwinSource::fold`]).
    pub after: Option<&'r ResumeKey>,
    /// Necessary conditions from the WHERE clause; a source may use them to skip documents
    /// (e.g. through an index) or ignore them. The executor re-checks every document.
    pub hints: &'r [ScanHint],
    /// The collection rule and WHERE clause: false for documents the executor will drop.
    /// A source may call it to skip documents before doing anything costly with them
    /// (ordering them against other shards, taking a lock again); the executor re-checks.
    pub filter: &'r (dyn Fn(&dyn Document) -> bool + Sync),
}

impl Debug for ScanRequest<'_> {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScanRequest")
            .field("collection", &self.collection)
            .field("after", &self.after)
            .field("hints", &self.hints)
            .finish_non_exhaustive()
    }
}

/// Where documents come from: the server's store, or [`MemorySource`].
///
/// Documents are lent to a visitor rather than returned, so a source can hand out views
/// of its own structures (under its own locks) instead of rendering JSON for each; the
/// executor renders only the rows it returns.
pub trait TwinSource {
    type Error;

    /// Visits the documents of `request.collection` in ascending [`ResumeKey`] order,
    /// strictly after `request.after`, until `visit` breaks. Twins must read like the JSON
    /// `GET /twins` returns ([`Document::to_json`] is exactly it). Extra documents are
    /// harmless (the executor re-applies the collection rule, the resume key and the WHERE
    /// clause) but cost time. The executor breaks as soon as the page is full, so a lazy
    /// source reads little more than one page.
    fn scan(
        &self,
        request: &ScanRequest<'_>,
        visit: &mut dyn FnMut(&dyn Document) -> ControlFlow<()>,
    ) -> Result<(), Self::Error>;

    /// Visits every document of `request.collection` once, for aggregates: the source
    /// may split them into parts, each visited in ascending [`ResumeKey`] order and
    /// folded into its own accumulator from `init` (parts possibly on several threads),
    /// and returns the parts' accumulators. The default is one part, through
    /// [`TwinSource::scan`].
    fn fold<A: Send>(
        &self,
        request: &ScanRequest<'_>,
        init: &(dyn Fn() -> A + Sync),
        visit: &(dyn Fn(&mut A, &dyn Document) + Sync),
    ) -> Result<Vec<A>, Self::Error> {
        let mut accumulator = init();
        self.scan(request, &mut |document| {
            visit(&mut accumulator, document);
            ControlFlow::Continue(())
        })?;
        Ok(vec![accumulator])
    }
}

/// One page of results.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub items: Vec<Value>,
    /// Token for the next page; `None` on the last page (send no header at all then).
    pub continuation: Option<String>,
    pub item_type: ItemType,
}

/// Failure of [`execute_page`].
#[derive(Debug, Error)]
pub enum PageError<E> {
    /// The client's fault: answer 400 `ArgumentInvalid`.
    #[error(transparent)]
    Query(#[from] QueryError),
    /// The source failed: a server error.
    #[error("twin source failed: {0}")]
    Source(E),
    /// The source yielded a selected document without `deviceId` (or `moduleId`/`jobId`),
    /// so no continuation key can be formed: a server error.
    #[error("the twin source yielded a document without its ids")]
    UnkeyedDocument,
}

/// Where a continuation resumes.
#[derive(Debug, Clone, Default, PartialEq)]
struct Position {
    /// Rows already returned (for TOP; the row offset for aggregate queries).
    returned: u64,
    /// Key of the last row returned (plain queries only).
    after: Option<ResumeKey>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenBody {
    v: u64,
    q: String,
    n: u64,
    #[serde(default)]
    d: Option<String>,
    #[serde(default)]
    m: Option<String>,
}

/// Fingerprint of the canonical query text: 128 bits of SHA-256, base64url.
fn fingerprint(query: &Query) -> String {
    let digest = Sha256::digest(query.to_string().as_bytes());
    URL_SAFE_NO_PAD.encode(digest.get(..16).unwrap_or_default())
}

fn encode_token(fingerprint: &str, position: &Position) -> String {
    let mut body = json!({"v": TOKEN_VERSION, "q": fingerprint, "n": position.returned});
    if let (Some(key), Value::Object(map)) = (&position.after, &mut body) {
        map.insert("d".into(), Value::String(key.device_id.clone()));
        if let Some(item) = &key.item_id {
            map.insert("m".into(), Value::String(item.clone()));
        }
    }
    URL_SAFE_NO_PAD.encode(body.to_string())
}

fn decode_token(token: &str, fingerprint: &str, aggregate: bool) -> Result<Position, QueryError> {
    let invalid = |why: &str| QueryError::InvalidContinuation(why.to_owned());
    if token.len() > MAX_TOKEN_LENGTH {
        return Err(invalid("the token is too long"));
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(token.trim())
        .map_err(|_| invalid("the token is not base64url"))?;
    let body: TokenBody =
        serde_json::from_slice(&bytes).map_err(|_| invalid("the token is malformed"))?;
    if body.v != TOKEN_VERSION {
        return Err(invalid("the token has an unknown version"));
    }
    if body.q != fingerprint {
        return Err(invalid(
            "the token belongs to a different query (send the same query text with it)",
        ));
    }
    let after = match (body.d, body.m, aggregate) {
        (None, None, true) => None,
        (Some(device_id), item_id, false) => Some(ResumeKey { device_id, item_id }),
        _ => return Err(invalid("the token is malformed")),
    };
    Ok(Position {
        returned: body.n,
        after,
    })
}

/// Runs one page of `query`. `continuation` is the client's `x-ms-continuation` header
/// (`None`, or blank, on the first page); `max_items` the page size from
/// [`parse_max_item_count`] (0 is treated as 1 so paging always makes progress).
pub fn execute_page<S: TwinSource + ?Sized>(
    query: &Query,
    source: &S,
    continuation: Option<&str>,
    max_items: usize,
) -> Result<Page, PageError<S::Error>> {
    validate(query)?;
    let fingerprint = fingerprint(query);
    let aggregate = query.is_aggregate();
    // A blank header is no token: Twinhub never issues one, and a client sending it means
    // "first page".
    let position = match continuation.map(str::trim).filter(|t| !t.is_empty()) {
        Some(token) => decode_token(token, &fingerprint, aggregate)?,
        None => Position::default(),
    };
    let max_items = u64::try_from(max_items.max(1)).unwrap_or(u64::MAX);
    let hints = query.scan_hints();
    let filter = |document: &dyn Document| query.matches(document);
    let (items, next) = if aggregate {
        aggregate_page(query, source, &hints, &filter, &position, max_items)?
    } else {
        scan_page(query, source, &hints, &filter, &position, max_items)?
    };
    Ok(Page {
        items,
        continuation: next.map(|p| encode_token(&fingerprint, &p)),
        item_type: query.item_type(),
    })
}

type PageParts<E> = Result<(Vec<Value>, Option<Position>), PageError<E>>;

type Filter<'f> = dyn Fn(&dyn Document) -> bool + Sync + 'f;

fn scan_page<S: TwinSource + ?Sized>(
    query: &Query,
    source: &S,
    hints: &[ScanHint],
    filter: &Filter<'_>,
    position: &Position,
    max_items: u64,
) -> PageParts<S::Error> {
    let remaining = query.top.map(|top| top.saturating_sub(position.returned));
    // When TOP caps this page there is nothing to peek for.
    let top_caps_page = remaining.is_some_and(|r| r <= max_items);
    let limit = remaining.map_or(max_items, |r| r.min(max_items));
    if limit == 0 {
        return Ok((Vec::new(), None));
    }
    let collection = query.collection;
    let named = name_items(&query.select);
    let request = ScanRequest {
        collection,
        after: position.after.as_ref(),
        hints,
        filter,
    };
    let mut items = Vec::new();
    let mut last_key = None;
    let mut more = false;
    let mut unkeyed = false;
    source
        .scan(&request, &mut |document| {
            if !admits(collection, document) || !is_selected(query.condition.as_ref(), document) {
                return ControlFlow::Continue(());
            }
            let Some((device, item)) = key_ref(collection, document) else {
                unkeyed = true;
                return ControlFlow::Break(());
            };
            // Guard against sources that ignore `after`.
            if position
                .after
                .as_ref()
                .is_some_and(|after| after.cmp_ref(device, item) != Ordering::Less)
            {
                return ControlFlow::Continue(());
            }
            if items.len() as u64 == limit {
                more = true;
                return ControlFlow::Break(());
            }
            last_key = Some(ResumeKey {
                device_id: device.to_owned(),
                item_id: item.map(str::to_owned),
            });
            items.push(match query.select {
                Select::All => document.to_json(),
                Select::Items(_) => project(&named, document),
            });
            if top_caps_page && items.len() as u64 == limit {
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        })
        .map_err(PageError::Source)?;
    if unkeyed {
        return Err(PageError::UnkeyedDocument);
    }
    let returned = position.returned + items.len() as u64;
    let next = (more && last_key.is_some()).then_some(Position {
        returned,
        after: last_key,
    });
    Ok((items, next))
}

fn aggregate_page<S: TwinSource + ?Sized>(
    query: &Query,
    source: &S,
    hints: &[ScanHint],
    filter: &Filter<'_>,
    position: &Position,
    max_items: u64,
) -> PageParts<S::Error> {
    let collection = query.collection;
    let request = ScanRequest {
        collection,
        after: None,
        hints,
        filter,
    };
    let parts = source
        .fold(
            &request,
            &|| Aggregation::new(query),
            &|aggregation, document| {
                if admits(collection, document) && is_selected(query.condition.as_ref(), document) {
                    aggregation.add_keyed(document, key_ref(collection, document));
                }
            },
        )
        .map_err(PageError::Source)?;
    let mut parts = parts.into_iter();
    let mut aggregation = parts.next().unwrap_or_else(|| Aggregation::new(query));
    for part in parts {
        aggregation.merge(part);
    }
    let rows = aggregation.into_rows();
    let total = query
        .top
        .map_or(rows.len() as u64, |top| top.min(rows.len() as u64));
    let start = position.returned.min(total);
    let end = start.saturating_add(max_items).min(total);
    let items = rows
        .into_iter()
        .skip(usize::try_from(start).unwrap_or(usize::MAX))
        .take(usize::try_from(end - start).unwrap_or(usize::MAX))
        .collect();
    let next = (end < total).then_some(Position {
        returned: end,
        after: None,
    });
    Ok((items, next))
}

/// Page size from the `x-ms-max-item-count` header (spec §3): absent (or blank) → 100;
/// not an integer, zero or negative → error; above 1000 → 1000.
pub fn parse_max_item_count(header: Option<&str>) -> Result<usize, QueryError> {
    parse_max_item_count_capped(header, MAX_ITEM_COUNT)
}

/// [`parse_max_item_count`] with a configurable cap (at least 1).
pub fn parse_max_item_count_capped(header: Option<&str>, cap: usize) -> Result<usize, QueryError> {
    let cap = cap.max(1);
    let Some(raw) = header else {
        return Ok(DEFAULT_MAX_ITEM_COUNT.min(cap));
    };
    let text = raw.trim();
    if text.is_empty() {
        return Ok(DEFAULT_MAX_ITEM_COUNT.min(cap));
    }
    let invalid = |why: &str| QueryError::InvalidMaxItemCount(format!("'{raw}' {why}"));
    let (negative, digits) = match text.as_bytes().first() {
        Some(b'-') => (true, text.get(1..).unwrap_or_default()),
        Some(b'+') => (false, text.get(1..).unwrap_or_default()),
        _ => (false, text),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid("is not an integer"));
    }
    let significant = digits.trim_start_matches('0');
    if significant.is_empty() || negative {
        return Err(invalid("must be at least 1"));
    }
    // More digits than usize holds is certainly above the cap.
    Ok(significant.parse::<usize>().map_or(cap, |n| n.min(cap)))
}

/// An in-memory [`TwinSource`] over twins (device and module), sorted by key. For tests
/// and small deployments; `devices.jobs` scans yield nothing.
#[derive(Debug, Clone, Default)]
pub struct MemorySource {
    twins: Vec<(ResumeKey, Value)>,
}

impl MemorySource {
    /// Twins without a string `deviceId` cannot be ordered and are left out.
    pub fn new(twins: impl IntoIterator<Item = Value>) -> MemorySource {
        let mut twins: Vec<(ResumeKey, Value)> = twins
            .into_iter()
            .filter_map(|twin| {
                let device_id = twin.get("deviceId")?.as_str()?.to_owned();
                let item_id = twin
                    .get("moduleId")
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                Some((ResumeKey { device_id, item_id }, twin))
            })
            .collect();
        twins.sort_by(|a, b| a.0.cmp(&b.0));
        MemorySource { twins }
    }

    pub fn len(&self) -> usize {
        self.twins.len()
    }

    pub fn is_empty(&self) -> bool {
        self.twins.is_empty()
    }
}

impl TwinSource for MemorySource {
    type Error = Infallible;

    fn scan(
        &self,
        request: &ScanRequest<'_>,
        visit: &mut dyn FnMut(&dyn Document) -> ControlFlow<()>,
    ) -> Result<(), Infallible> {
        if request.collection == Collection::Jobs {
            return Ok(());
        }
        let start = request.after.map_or(0, |after| {
            self.twins.partition_point(|(key, _)| key <= after)
        });
        let modules = request.collection == Collection::Modules;
        for (_, twin) in self
            .twins
            .get(start..)
            .unwrap_or_default()
            .iter()
            .filter(|(key, _)| key.item_id.is_some() == modules)
        {
            if visit(twin).is_break() {
                break;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::QueryErrorKind;

    fn source(n: usize) -> MemorySource {
        MemorySource::new((0..n).flat_map(|i| {
            [
                json!({"deviceId": format!("d{i:02}"), "tags": {"i": i}}),
                json!({"deviceId": format!("d{i:02}"), "moduleId": "m", "tags": {"i": i}}),
            ]
        }))
    }

    fn run_all(text: &str, source: &MemorySource, size: usize) -> Vec<Page> {
        let query: Query = text.parse().unwrap();
        let mut pages = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = execute_page(&query, source, token.as_deref(), size).unwrap();
            token = page.continuation.clone();
            pages.push(page);
            if token.is_none() || pages.len() > 100 {
                return pages;
            }
        }
    }

    fn sizes(pages: &[Page]) -> Vec<usize> {
        pages.iter().map(|p| p.items.len()).collect()
    }

    #[test]
    fn last_page_has_no_token_even_when_full() {
        let pages = run_all("SELECT * FROM devices", &source(6), 3);
        assert_eq!(sizes(&pages), [3, 3]);
        assert!(pages[0].continuation.is_some());
        assert!(pages[1].continuation.is_none());
        let empty = run_all("SELECT * FROM devices WHERE false", &source(6), 3);
        assert_eq!(sizes(&empty), [0]);
        assert!(empty[0].continuation.is_none());
    }

    #[test]
    fn modules_page_through_their_own_keys() {
        let pages = run_all(
            "SELECT deviceId, moduleId FROM devices.modules",
            &source(5),
            2,
        );
        assert_eq!(sizes(&pages), [2, 2, 1]);
        assert_eq!(
            pages[2].items[0],
            json!({"deviceId": "d04", "moduleId": "m"})
        );
        assert_eq!(pages[0].item_type, ItemType::Raw);
    }

    #[test]
    fn top_zero_and_top_exactly_page_size() {
        let pages = run_all("SELECT TOP 0 * FROM devices", &source(5), 2);
        assert_eq!(sizes(&pages), [0]);
        let pages = run_all("SELECT TOP 4 * FROM devices", &source(5), 2);
        assert_eq!(sizes(&pages), [2, 2]);
        assert!(pages[1].continuation.is_none());
    }

    #[test]
    fn aggregate_rows_page_by_offset_and_respect_top() {
        let pages = run_all(
            "SELECT TOP 5 tags.i, COUNT() AS n FROM devices GROUP BY tags.i",
            &source(7),
            2,
        );
        assert_eq!(sizes(&pages), [2, 2, 1]);
        let pages = run_all(
            "SELECT COUNT() AS n FROM devices WHERE false",
            &source(3),
            1,
        );
        assert_eq!(pages.len(), 1);
        assert_eq!(pages[0].items, vec![json!({"n": 0})]);
    }

    /// Folds its twins in two interleaved parts, like a sharded source.
    struct Split(MemorySource);

    impl TwinSource for Split {
        type Error = Infallible;

        fn scan(
            &self,
            request: &ScanRequest<'_>,
            visit: &mut dyn FnMut(&dyn Document) -> ControlFlow<()>,
        ) -> Result<(), Infallible> {
            self.0.scan(request, visit)
        }

        fn fold<A: Send>(
            &self,
            request: &ScanRequest<'_>,
            init: &(dyn Fn() -> A + Sync),
            visit: &(dyn Fn(&mut A, &dyn Document) + Sync),
        ) -> Result<Vec<A>, Infallible> {
            let mut all = Vec::new();
            self.0.scan(request, &mut |d| {
                all.push(d.to_json());
                ControlFlow::Continue(())
            })?;
            let mut parts = vec![init(), init()];
            for (i, twin) in all.iter().enumerate() {
                if let Some(part) = parts.get_mut(i % 3 / 2) {
                    visit(part, twin);
                }
            }
            Ok(parts)
        }
    }

    #[test]
    fn interleaved_parts_give_the_rows_of_one_ordered_scan() {
        let twins = (0..30).map(|i| {
            let region = match i % 5 {
                0 => json!(1.0),
                1 => json!(1),
                2 => json!("eu"),
                3 => json!(null),
                _ => json!({"o": i % 2}),
            };
            let key = if i % 4 == 0 { "Region" } else { "region" };
            json!({"deviceId": format!("d{i:02}"), "tags": {key: region, "t": i}})
        });
        let memory = MemorySource::new(twins);
        let split = Split(memory.clone());
        for text in [
            "SELECT tags.region, COUNT() AS n, SUM(tags.t) AS s, MIN(tags.t) AS lo FROM devices GROUP BY tags.region",
            "SELECT COUNT() AS n, MAX(tags.t) FROM devices WHERE tags.t > 3",
            "SELECT COUNT() AS n FROM devices WHERE false",
            "SELECT tags.x, COUNT() AS n FROM devices GROUP BY tags.x",
        ] {
            let query: Query = text.parse().unwrap();
            let want = execute_page(&query, &memory, None, 100).unwrap();
            let got = execute_page(&query, &split, None, 100).unwrap();
            assert_eq!(got, want, "{text}");
        }
    }

    #[test]
    fn tokens_are_header_safe_and_bound_to_the_query() {
        let src = source(4);
        let query: Query = "SELECT * FROM devices".parse().unwrap();
        let page = execute_page(&query, &src, None, 1).unwrap();
        let token = page.continuation.unwrap();
        assert!(token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        // Same query, other spelling: accepted.
        let same: Query = "select *   from DEVICES".parse().unwrap();
        assert!(execute_page(&same, &src, Some(&token), 1).is_ok());
        let other: Query = "SELECT deviceId FROM devices".parse().unwrap();
        let err = execute_page(&other, &src, Some(&token), 1).unwrap_err();
        assert!(
            matches!(err, PageError::Query(ref e) if e.kind() == QueryErrorKind::InvalidContinuation)
        );
        for bad in ["not-a-real-token", "e30", "!!!", "eyJ2IjoxfQ"] {
            assert!(execute_page(&query, &src, Some(bad), 1).is_err(), "{bad}");
        }
        let first = execute_page(&query, &src, None, 1).unwrap();
        assert_eq!(execute_page(&query, &src, Some(" "), 1).unwrap(), first);
    }

    #[test]
    fn aggregate_token_rejected_for_plain_query_with_same_fingerprint_shape() {
        let query: Query = "SELECT * FROM devices".parse().unwrap();
        let forged = encode_token(&fingerprint(&query), &Position::default());
        assert!(execute_page(&query, &source(2), Some(&forged), 1).is_err());
    }

    #[test]
    fn source_ignoring_after_still_pages_correctly() {
        struct Naive(Vec<Value>);
        impl TwinSource for Naive {
            type Error = Infallible;
            fn scan(
                &self,
                _: &ScanRequest<'_>,
                visit: &mut dyn FnMut(&dyn Document) -> ControlFlow<()>,
            ) -> Result<(), Infallible> {
                for twin in &self.0 {
                    if visit(twin).is_break() {
                        break;
                    }
                }
                Ok(())
            }
        }
        let naive = Naive(
            (0..5)
                .map(|i| json!({"deviceId": format!("d{i}")}))
                .collect(),
        );
        let query: Query = "SELECT deviceId FROM devices".parse().unwrap();
        let mut seen = Vec::new();
        let mut token = None;
        loop {
            let page = execute_page(&query, &naive, token.as_deref(), 2).unwrap();
            seen.extend(page.items);
            token = page.continuation;
            if token.is_none() {
                break;
            }
        }
        assert_eq!(seen.len(), 5);
    }

    #[test]
    fn source_errors_and_unkeyed_documents_surface() {
        struct Failing;
        impl TwinSource for Failing {
            type Error = &'static str;
            fn scan(
                &self,
                _: &ScanRequest<'_>,
                _: &mut dyn FnMut(&dyn Document) -> ControlFlow<()>,
            ) -> Result<(), &'static str> {
                Err("disk on fire")
            }
        }
        let query: Query = "SELECT * FROM devices".parse().unwrap();
        assert!(matches!(
            execute_page(&query, &Failing, None, 5),
            Err(PageError::Source("disk on fire"))
        ));
        struct Unkeyed(Value);
        impl TwinSource for Unkeyed {
            type Error = Infallible;
            fn scan(
                &self,
                _: &ScanRequest<'_>,
                visit: &mut dyn FnMut(&dyn Document) -> ControlFlow<()>,
            ) -> Result<(), Infallible> {
                let _ = visit(&self.0);
                Ok(())
            }
        }
        assert!(matches!(
            execute_page(&query, &Unkeyed(json!({"tags": {}})), None, 5),
            Err(PageError::UnkeyedDocument)
        ));
    }

    #[test]
    fn max_item_count_header_rules() {
        assert_eq!(parse_max_item_count(None), Ok(100));
        assert_eq!(parse_max_item_count(Some("")), Ok(100));
        assert_eq!(parse_max_item_count(Some("5")), Ok(5));
        assert_eq!(parse_max_item_count(Some(" 7 ")), Ok(7));
        assert_eq!(parse_max_item_count(Some("+3")), Ok(3));
        assert_eq!(parse_max_item_count(Some("1000")), Ok(1000));
        assert_eq!(parse_max_item_count(Some("1001")), Ok(1000));
        assert_eq!(
            parse_max_item_count(Some("99999999999999999999999999")),
            Ok(1000)
        );
        for bad in ["abc", "0", "-1", "-0", "1.5", "1e3", "+", "0x10"] {
            let err = parse_max_item_count(Some(bad)).unwrap_err();
            assert_eq!(err.kind(), QueryErrorKind::InvalidMaxItemCount, "{bad}");
        }
        assert_eq!(parse_max_item_count_capped(Some("500"), 100), Ok(100));
        assert_eq!(parse_max_item_count_capped(None, 10), Ok(10));
    }
}
