//! Twin queries over the working state (`POST /devices/query`).
//!
//! The query crate's paged executor evaluates [`TwinDocument`]s: borrowed views of
//! the device records, read under their shard's lock, so a twin is rendered to JSON
//! only when it becomes a row. Because queries read the same state writes update
//! before they are acknowledged, a query sees every acknowledged write
//! (read-your-writes).
//!
//! Plain queries page in device-id order: [`HubTwins::scan`] merges the 64 ordered
//! shards, each [`ShardCursor`] advancing only to its next matching twin when the
//! merge needs it, so a page reads little more than its rows' share of every shard
//! and memory is bounded by the page. Aggregates need no global order:
//! [`HubTwins::fold`] folds each shard into its own accumulator, the shards split
//! between one thread per core.
//!
//! A query with an equality hint on a tag or property (`tags.region = 'r17'`)
//! visits only the twins a per-shard index files under that value ([`crate::index`]).
//!
//! No shard lock is held for long: a cursor or a fold re-takes the lock every
//! [`BATCH`] twins, so writers to a shard wait at most one batch's evaluation.

use crate::document::TwinDocument;
use crate::index::{self, IndexKey};
use crate::shard::{lock, shard_index, Shard};
use crate::state::Hub;
use compact_str::CompactString;
use serde_json::Value;
use std::ops::{Bound, ControlFlow};
use std::sync::Mutex;
use twinhub_core::{ErrorCode, HubError};
use twinhub_query::{
    execute_page, Collection, Document, ItemType, PageError, Path, ScanRequest, TwinSource,
};

/// Twins evaluated per hold of a shard lock (~0.1–0.5 ms of work).
const BATCH: usize = 1024;

/// Most threads one aggregate query folds on.
const MAX_FOLD_PARTS: usize = 4;

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
    /// header values. A full scan takes a while (about a second per million twins):
    /// call this off the async runtime's workers.
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
        let source = HubTwins { hub: self };
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

/// The hub's twins as a query source.
struct HubTwins<'h> {
    hub: &'h Hub,
}

impl TwinSource for HubTwins<'_> {
    type Error = std::convert::Infallible;

    fn scan(
        &self,
        request: &ScanRequest<'_>,
        visit: &mut dyn FnMut(&dyn Document) -> ControlFlow<()>,
    ) -> Result<(), Self::Error> {
        match request.collection {
            Collection::Devices => {}
            Collection::Modules => {
                scan_modules(self.hub.shards(), request, visit);
                return Ok(());
            }
            Collection::Jobs => return Ok(()),
        }
        let after = request.after.map(|k| k.device_id.as_str());
        let plan = index::plan(request.hints);
        let mut cursors: Vec<ShardCursor<'_>> = self
            .hub
            .shards()
            .iter()
            .map(|shard| ShardCursor {
                shard,
                after: after.map(str::to_owned),
                head: None,
                exhausted: false,
            })
            .collect();
        loop {
            for cursor in &mut cursors {
                cursor.advance(request.filter, plan.as_ref());
            }
            let best = cursors
                .iter_mut()
                .filter(|c| c.head.is_some())
                .min_by(|a, b| a.head.cmp(&b.head));
            let Some(cursor) = best else {
                return Ok(());
            };
            let Some(key) = cursor.head.take() else {
                return Ok(());
            };
            // The twin may have changed or gone since it matched: the executor
            // re-checks it, and a deleted twin is simply not visited.
            let shard = lock(cursor.shard);
            if let Some(record) = shard.devices.get(key.as_str()) {
                if visit(&TwinDocument::new(record)).is_break() {
                    return Ok(());
                }
            }
        }
    }

    fn fold<A: Send>(
        &self,
        request: &ScanRequest<'_>,
        init: &(dyn Fn() -> A + Sync),
        visit: &(dyn Fn(&mut A, &dyn Document) + Sync),
    ) -> Result<Vec<A>, Self::Error> {
        let modules = match request.collection {
            Collection::Devices => false,
            Collection::Modules => true,
            Collection::Jobs => return Ok(Vec::new()),
        };
        let shards = self.hub.shards();
        let parts = std::thread::available_parallelism()
            .map_or(1, usize::from)
            .clamp(1, MAX_FOLD_PARTS);
        // One accumulator per shard: a shard is read in key order, which is what lets
        // the executor order groups without comparing every twin's key.
        let fold_shards = |part: &[Mutex<Shard>]| -> Vec<A> {
            part.iter()
                .map(|shard| {
                    let mut accumulator = init();
                    scan_shard(shard, modules, |document| visit(&mut accumulator, document));
                    accumulator
                })
                .collect()
        };
        if parts == 1 {
            return Ok(fold_shards(shards));
        }
        let per_thread = shards.len().div_ceil(parts);
        Ok(std::thread::scope(|scope| {
            let mut chunks = shards.chunks(per_thread);
            let first = chunks.next().unwrap_or_default();
            let others: Vec<_> = chunks
                .map(|part| scope.spawn(move || fold_shards(part)))
                .collect();
            let mut accumulators = fold_shards(first);
            for handle in others {
                match handle.join() {
                    Ok(part) => accumulators.extend(part),
                    // The evaluator does not panic; if it did, report it as here.
                    Err(panic) => std::panic::resume_unwind(panic),
                }
            }
            accumulators
        }))
    }
}

/// Visits every device twin of `shard` in key order (or, with `modules`, every
/// module twin of its devices), re-taking the lock every [`BATCH`] devices.
fn scan_shard(shard: &Mutex<Shard>, modules: bool, mut visit: impl FnMut(&dyn Document)) {
    let mut after: Option<String> = None;
    loop {
        let guard = lock(shard);
        let lower = after.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
        let mut seen = 0;
        let mut last = None;
        for (key, record) in guard
            .devices
            .range::<str, _>((lower, Bound::Unbounded))
            .take(BATCH)
        {
            if modules {
                for module in record.modules.values() {
                    visit(&TwinDocument::module(record, module));
                }
            } else {
                visit(&TwinDocument::new(record));
            }
            seen += 1;
            last = Some(key);
        }
        if seen < BATCH {
            return;
        }
        after = last.map(CompactString::to_string);
    }
}

/// `devices.modules` in (device id, module id) order, after the resume key.
///
/// Modules are few next to devices and spread over every shard, so the keys of
/// the matching ones are gathered first (the filter runs under each shard's
/// lock), sorted, and then visited one by one, each re-read under its lock (a
/// module deleted since is skipped; the executor re-checks the rest).
fn scan_modules(
    shards: &[Mutex<Shard>],
    request: &ScanRequest<'_>,
    visit: &mut dyn FnMut(&dyn Document) -> ControlFlow<()>,
) {
    let after = request
        .after
        .map(|k| (k.device_id.as_str(), k.item_id.as_deref().unwrap_or("")));
    let mut keys: Vec<(CompactString, CompactString)> = Vec::new();
    for shard in shards {
        let guard = lock(shard);
        let lower = after.map_or(Bound::Unbounded, |(d, _)| Bound::Included(d));
        for (device_id, record) in guard.devices.range::<str, _>((lower, Bound::Unbounded)) {
            for (module_id, module) in &record.modules {
                let key = (device_id.as_str(), module_id.as_str());
                if after.is_some_and(|a| key <= a) {
                    continue;
                }
                if (request.filter)(&TwinDocument::module(record, module)) {
                    keys.push((device_id.clone(), module_id.clone()));
                }
            }
        }
    }
    keys.sort_unstable();
    for (device_id, module_id) in keys {
        let Some(shard) = shards.get(shard_index(&device_id)) else {
            continue;
        };
        let guard = lock(shard);
        let Some(record) = guard.devices.get(device_id.as_str()) else {
            continue;
        };
        if let Some(module) = record.modules.get(module_id.as_str()) {
            if visit(&TwinDocument::module(record, module)).is_break() {
                return;
            }
        }
    }
}

/// One shard's twins in key order, advanced lazily to the next one that matches.
struct ShardCursor<'h> {
    shard: &'h Mutex<Shard>,
    /// Every twin up to this key has been examined.
    after: Option<String>,
    /// The next matching twin, not yet visited.
    head: Option<String>,
    exhausted: bool,
}

impl ShardCursor<'_> {
    /// Finds the next matching twin unless one is already waiting: among the ids an
    /// index files under the planned value when there is one, else among all.
    fn advance(
        &mut self,
        filter: &(dyn Fn(&dyn Document) -> bool + Sync),
        plan: Option<&(&Path, IndexKey)>,
    ) {
        while self.head.is_none() && !self.exhausted {
            let mut guard = lock(self.shard);
            let lower = self
                .after
                .as_deref()
                .map_or(Bound::Unbounded, Bound::Excluded);
            if let Some((path, key)) = plan {
                let shard = &mut *guard;
                if let Some(index) = shard.indexes.ensure(path, &shard.devices) {
                    let ids = index
                        .ids(key)
                        .map(|ids| ids.range::<str, _>((lower, Bound::Unbounded)));
                    let mut seen = 0;
                    let mut last = None;
                    for id in ids.into_iter().flatten().take(BATCH) {
                        seen += 1;
                        last = Some(id);
                        let record = shard.devices.get(id.as_str());
                        if record.is_some_and(|r| filter(&TwinDocument::new(r))) {
                            self.head = Some(id.clone());
                            break;
                        }
                    }
                    self.exhausted = self.head.is_none() && seen < BATCH;
                    if let Some(last) = last {
                        self.after = Some(last.to_string());
                    }
                    continue;
                }
            }
            let shard = &*guard;
            let mut seen = 0;
            let mut last = None;
            for (key, record) in shard
                .devices
                .range::<str, _>((lower, Bound::Unbounded))
                .take(BATCH)
            {
                seen += 1;
                last = Some(key);
                if filter(&TwinDocument::new(record)) {
                    self.head = Some(key.to_string());
                    break;
                }
            }
            self.exhausted = self.head.is_none() && seen < BATCH;
            if let Some(last) = last {
                self.after = Some(last.to_string());
            }
        }
    }
}
