//! Twin queries over the working state (`POST /devices/query`).
//!
//! The query crate's paged executor pulls twins in device-id order from
//! [`HubTwins`], which merges the 64 ordered shards lazily, a small chunk per shard
//! at a time, so memory is bounded by the page and no shard lock is held for long.
//! Because it reads the same state writes update before they are acknowledged, a
//! query sees every acknowledged write (read-your-writes).
//!
//! Twins are rendered for evaluation without `$metadata` (the costly part) unless
//! the query mentions it or projects a whole properties section; only twins that
//! match are rendered whole.

use crate::state::{lock, DeviceRecord, Hub, Shard};
use serde_json::Value;
use std::borrow::Cow;
use std::collections::VecDeque;
use std::ops::Bound;
use std::sync::Mutex;
use twinhub_core::{ErrorCode, HubError};
use twinhub_query::{
    execute_page, Collection, Expr, ItemType, PageError, Projection, Query, ScanRequest, Select,
    TwinSource,
};

/// Twins read from one shard per refill.
const CHUNK: usize = 128;

/// One page of a query's result.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryPage {
    /// The rows.
    pub items: Vec<Value>,
    /// `x-ms-item-type`.
    pub item_type: ItemType,
    /// `x-ms-continuation`, absent on the last page.
    pub continuation: Option<String>,
}

fn bad_query(e: impl std::fmt::Display) -> HubError {
    HubError::invalid(e.to_string())
}

impl Hub {
    /// Runs one page of `text`. `max_item_count` and `continuation` are the raw
    /// header values.
    pub fn query(
        &self,
        text: &str,
        max_item_count: Option<&str>,
        continuation: Option<&str>,
    ) -> Result<QueryPage, HubError> {
        let query = twinhub_query::parse(text).map_err(bad_query)?;
        let page_size = twinhub_query::parse_max_item_count(max_item_count).map_err(bad_query)?;
        if query.collection == Collection::Jobs {
            return Err(HubError::invalid(
                "Queries over devices.jobs are not supported: this hub runs no jobs.",
            ));
        }
        let source = HubTwins {
            hub: self,
            query: &query,
            needs_metadata: query.to_string().to_ascii_lowercase().contains("$metadata")
                || projects_a_section(&query),
        };
        let continuation = continuation.filter(|c| !c.is_empty());
        let page = execute_page(&query, &source, continuation, page_size).map_err(|e| match e {
            PageError::Query(q) => bad_query(q),
            PageError::Source(never) => match never {},
            PageError::UnkeyedDocument => {
                HubError::new(ErrorCode::ServerError, "a twin without a device id")
            }
        })?;
        Ok(QueryPage {
            items: page.items,
            item_type: page.item_type,
            continuation: page.continuation,
        })
    }
}

/// True when a select item is `properties`, `properties.desired` or
/// `properties.reported`: projected whole, a section keeps its `$metadata`
/// (spec §7.7), so such rows must come from the full rendering.
fn projects_a_section(query: &Query) -> bool {
    let Select::Items(items) = &query.select else {
        return false;
    };
    items.iter().any(|item| match &item.value {
        Projection::Expr(Expr::Path(path)) => match path.segments() {
            [first] => first.folded() == "properties",
            [first, second] => {
                first.folded() == "properties" && matches!(second.folded(), "desired" | "reported")
            }
            _ => false,
        },
        _ => false,
    })
}

/// The hub's twins as a query source.
struct HubTwins<'h> {
    hub: &'h Hub,
    query: &'h Query,
    needs_metadata: bool,
}

impl TwinSource for HubTwins<'_> {
    type Error = std::convert::Infallible;

    fn scan<'a>(
        &'a self,
        request: &ScanRequest<'_>,
    ) -> Box<dyn Iterator<Item = Result<Cow<'a, Value>, Self::Error>> + 'a> {
        if request.collection != Collection::Devices {
            // Module identities do not exist yet, so devices.modules is empty.
            return Box::new(std::iter::empty());
        }
        let after = request.after.map(|k| k.device_id.clone());
        let cursors = self
            .hub
            .shards()
            .iter()
            .map(|shard| ShardCursor {
                shard,
                after: after.clone(),
                buffer: VecDeque::new(),
                exhausted: false,
            })
            .collect();
        Box::new(
            Merge {
                cursors,
                source: self,
            }
            .map(|v| Ok(Cow::Owned(v))),
        )
    }
}

impl HubTwins<'_> {
    /// The twin as the query sees it, or `None` when it cannot match.
    fn view(&self, record: &DeviceRecord) -> Option<Value> {
        let full = || record.twin.to_json(&record.identity);
        if self.needs_metadata {
            return Some(full()).filter(|v| self.query.matches(v));
        }
        let light = record.twin.to_json_without_metadata(&record.identity);
        if !self.query.matches(&light) {
            None
        } else if self.query.item_type() == ItemType::Twin {
            // SELECT * rows are whole twins, metadata included.
            Some(full())
        } else {
            Some(light)
        }
    }
}

/// Reads one shard in key order, a chunk at a time.
struct ShardCursor<'h> {
    shard: &'h Mutex<Shard>,
    after: Option<String>,
    buffer: VecDeque<(String, Option<Value>)>,
    exhausted: bool,
}

impl ShardCursor<'_> {
    /// Refills the buffer when it is empty.
    fn head(&mut self, source: &HubTwins<'_>) {
        if self.buffer.is_empty() && !self.exhausted {
            let shard = lock(self.shard);
            let lower = match &self.after {
                Some(k) => Bound::Excluded(k.as_str()),
                None => Bound::Unbounded,
            };
            for (key, record) in shard
                .devices
                .range::<str, _>((lower, Bound::Unbounded))
                .take(CHUNK)
            {
                // Non-matching twins stay in the buffer as `None` so that the resume
                // position still advances past them.
                self.buffer.push_back((key.clone(), source.view(record)));
            }
            self.exhausted = self.buffer.len() < CHUNK;
            if let Some((last, _)) = self.buffer.back() {
                self.after = Some(last.clone());
            }
        }
    }
}

/// Merges the shard cursors by device id.
struct Merge<'h> {
    cursors: Vec<ShardCursor<'h>>,
    source: &'h HubTwins<'h>,
}

impl Iterator for Merge<'_> {
    type Item = Value;

    fn next(&mut self) -> Option<Value> {
        loop {
            for cursor in &mut self.cursors {
                cursor.head(self.source);
            }
            let best = self
                .cursors
                .iter()
                .enumerate()
                .filter_map(|(i, c)| c.buffer.front().map(|(k, _)| (k, i)))
                .min()
                .map(|(_, i)| i);
            let (_, view) = self.cursors[best?].buffer.pop_front()?;
            if let Some(v) = view {
                return Some(v);
            }
        }
    }
}
