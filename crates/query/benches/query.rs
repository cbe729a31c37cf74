//! Micro-benchmarks of the query language's pure paths: parsing a query and
//! evaluating its WHERE clause against one twin, which a full scan does once per
//! twin.
//!
//! `cargo bench -p twinhub-query` runs them; CI only compiles them (`--no-run`).

#![allow(clippy::expect_used)]

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use serde_json::json;
use twinhub_query::{parse, MemorySource};

const SELECTIVE: &str = "SELECT * FROM devices WHERE tags.region = 'r17' AND properties.reported.battery.level < 30 AND properties.reported.connectivity.type IN ['cellular', 'satellite']";
const GROUP_BY: &str = "SELECT tags.region AS r, COUNT() AS n FROM devices GROUP BY tags.region";

fn twin(i: usize) -> serde_json::Value {
    json!({
        "deviceId": format!("dev-{i:07}"),
        "etag": "AAAAAAAAAAE=",
        "deviceEtag": "MTIz",
        "status": "enabled",
        "statusUpdateTime": "0001-01-01T00:00:00Z",
        "connectionState": "Disconnected",
        "lastActivityTime": "0001-01-01T00:00:00Z",
        "cloudToDeviceMessageCount": 0,
        "authenticationType": "sas",
        "version": 4,
        "tags": {"region": format!("r{}", i % 50), "site": {"building": i % 7, "floor": i % 5}},
        "properties": {
            "desired": {"telemetryInterval": 30, "$version": 2},
            "reported": {
                "battery": {"level": (i * 37) % 100},
                "connectivity": {"type": (["cellular", "wired", "wired"][i % 3])},
                "fw": "1.4.2",
                "$version": 3
            }
        }
    })
}

fn parsing(c: &mut Criterion) {
    c.bench_function("query/parse (selective, 3 conditions)", |b| {
        b.iter(|| parse(black_box(SELECTIVE)).expect("valid query"))
    });
    c.bench_function("query/parse (GROUP BY)", |b| {
        b.iter(|| parse(black_box(GROUP_BY)).expect("valid query"))
    });
}

fn matching(c: &mut Criterion) {
    let query = parse(SELECTIVE).expect("valid query");
    let hit = twin(17 + 50 * 3); // r17, cellular
    let miss = twin(18);
    c.bench_function("query/matches (selective, first condition fails)", |b| {
        b.iter(|| query.matches(black_box(&miss)))
    });
    c.bench_function("query/matches (selective, all conditions evaluated)", |b| {
        b.iter(|| query.matches(black_box(&hit)))
    });
}

fn aggregate(c: &mut Criterion) {
    let query = parse(GROUP_BY).expect("valid query");
    let twins: Vec<_> = (0..1000).map(twin).collect();
    c.bench_function("query/evaluate GROUP BY over 1,000 twins", |b| {
        b.iter(|| twinhub_query::evaluate(&query, black_box(&twins)))
    });
    let source = MemorySource::new(twins.clone());
    let selective = parse(SELECTIVE).expect("valid query");
    c.bench_function(
        "query/execute_page selective first page over 1,000 twins",
        |b| b.iter(|| twinhub_query::execute_page(&selective, black_box(&source), None, 100)),
    );
}

criterion_group!(benches, parsing, matching, aggregate);
criterion_main!(benches);
