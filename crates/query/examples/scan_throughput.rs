//! Rough throughput check for the evaluator: a GROUP BY over N in-memory twins shaped like
//! real ones (`cargo run --release -p twinhub-query --example scan_throughput -- 1000000`).
//! The budget (spec §8 scale) is a full scan of 1,000,000 twins in at most one second on
//! one core, store reads included, so the query engine must take only a fraction of it.

use std::time::Instant;

use serde_json::{json, Value};
use twinhub_query::{execute_page, MemorySource, Query};

fn twin(i: usize) -> Value {
    let regions = ["US", "EU", "eu", "APAC"];
    json!({
        "deviceId": format!("device-{i:07}"),
        "etag": "AAAAAAAAAAE=",
        "status": match i % 10 { 0 => "disabled", _ => "enabled" },
        "connectionState": "Connected",
        "lastActivityTime": "2024-05-01T10:00:00.0000000Z",
        "version": 3,
        "tags": {"location": {"region": regions[i % 4], "plant": "P1"}, "deviceType": "sensor"},
        "properties": {
            "desired": {"$metadata": {"$lastUpdated": "2024-05-01T10:00:00Z"}, "$version": 1},
            "reported": {
                "temperature": (i % 50) as f64 / 2.0,
                "firmware": {"version": "1.2.0"},
                "$metadata": {"$lastUpdated": "2024-05-01T10:00:00Z"},
                "$version": 2
            }
        }
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(200_000);
    let source = MemorySource::new((0..n).map(twin));
    for text in [
        "SELECT tags.location.region AS region, COUNT() AS n, AVG(properties.reported.temperature) AS t \
         FROM devices WHERE status = 'enabled' GROUP BY tags.location.region",
        "SELECT COUNT() AS n FROM devices WHERE properties.reported.temperature > 20 AND tags.deviceType = 'sensor'",
        "SELECT TOP 100 deviceId FROM devices WHERE tags.location.region = 'nowhere'",
    ] {
        let query = Query::parse(text)?;
        let started = Instant::now();
        let page = execute_page(&query, &source, None, 1000)?;
        let elapsed = started.elapsed();
        println!(
            "{n} twins in {elapsed:?} ({:.0} ns/twin), {} rows: {text}",
            elapsed.as_nanos() as f64 / n as f64,
            page.items.len()
        );
    }
    Ok(())
}
