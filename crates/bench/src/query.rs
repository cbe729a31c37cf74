//! The `query` scenario: a hub holding a large fleet (loaded straight into its
//! database), its start and restart time, its memory, and the latency of a
//! selective query's first page and of a full-scan GROUP BY.

use crate::hub::{rss_kib, HubAccess, HubProcess, ServeCommand};
use crate::load;
use crate::report::{Latency, Report};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// The selective query: one region in 50, then a fifth of those by battery.
pub(crate) const SELECTIVE: &str =
    "SELECT * FROM devices WHERE tags.region = 'r17' AND properties.reported.battery.level < 20";
/// The full scan.
pub(crate) const GROUP_BY: &str =
    "SELECT tags.region AS r, COUNT() AS n FROM devices GROUP BY tags.region";

pub(crate) struct QueryOptions {
    pub(crate) serve: ServeCommand,
    pub(crate) devices: usize,
    pub(crate) prefix: String,
    pub(crate) selective_runs: usize,
    pub(crate) scan_runs: usize,
    pub(crate) load_threads: usize,
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// One page of `query`; returns the rows and the continuation.
pub(crate) async fn query_page(
    hub: &HubAccess,
    client: &reqwest::Client,
    query: &str,
    page_size: usize,
    continuation: Option<&str>,
) -> Result<(Vec<Value>, Option<String>), String> {
    let mut request = client
        .post(format!(
            "{}/devices/query?api-version=2021-04-12",
            hub.base_url()
        ))
        .header("Authorization", hub.owner_token()?)
        .header("x-ms-max-item-count", page_size.to_string())
        .json(&json!({ "query": query }));
    if let Some(c) = continuation {
        request = request.header("x-ms-continuation", c);
    }
    let response = request.send().await.map_err(|e| format!("query: {e:#}"))?;
    let status = response.status();
    let continuation = response
        .headers()
        .get("x-ms-continuation")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body: Value = response.json().await.map_err(|e| format!("query: {e}"))?;
    match body {
        Value::Array(rows) if status.is_success() => Ok((rows, continuation)),
        other => Err(format!("query {query:?}: {status}: {other}")),
    }
}

pub(crate) async fn run(options: QueryOptions) -> Result<Vec<Report>, String> {
    let mut report = Report::new("query");
    report
        .param("twins", options.devices as u64)
        .param("selective", SELECTIVE)
        .param("full_scan", GROUP_BY);
    let data_dir = &options.serve.data_dir;
    if !data_dir.join("twinhub.db").exists() {
        eprintln!(
            "loading {} twins into {}",
            options.devices,
            data_dir.display()
        );
        let loaded = load::load(
            data_dir,
            &options.prefix,
            options.devices,
            options.load_threads,
        )?;
        report
            .figure("load: twins written", options.devices as f64, "")
            .figure("load: time", loaded.elapsed.as_secs_f64(), "s")
            .figure(
                "load: twins/s",
                options.devices as f64 / loaded.elapsed.as_secs_f64(),
                "/s",
            )
            .figure(
                "load: stored record size (mean)",
                loaded.record_bytes as f64 / options.devices.max(1) as f64,
                "B",
            )
            .figure(
                "load: database size",
                loaded.database_bytes as f64 / (1024.0 * 1024.0),
                "MiB",
            );
    } else {
        report.note("database already loaded (reused from an earlier run)");
    }

    // First start (creates hub.json and the CA if needed), then the measured restart.
    let (mut hub, first) = HubProcess::start(&options.serve).await?;
    report.figure("first start to ready", first.as_secs_f64(), "s");
    hub.stop().await;
    let (mut hub, restart) = HubProcess::start(&options.serve).await?;
    let result = measure(&options, &hub, restart, &mut report).await;
    hub.stop().await;
    result?;
    Ok(vec![report])
}

async fn measure(
    options: &QueryOptions,
    hub: &HubProcess,
    restart: Duration,
    report: &mut Report,
) -> Result<(), String> {
    let pid = hub.pid();
    let (rss, peak) = rss_kib(pid)?;
    report
        .figure("restart to ready", restart.as_secs_f64(), "s")
        .figure("hub RSS after restart", mib(rss), "MiB")
        .figure("hub RSS peak during restart (VmHWM)", mib(peak), "MiB")
        .figure(
            "hub RSS per twin",
            rss as f64 * 1024.0 / options.devices.max(1) as f64,
            "B",
        );
    let access = HubAccess::from_data_dir(
        &options.serve.data_dir,
        options.serve.addr,
        options.serve.https_port,
        options.serve.mqtts_port,
    )?;
    let client = access.http_client(1)?;

    // Warm the connection so the first sample is not a TLS handshake.
    query_page(
        &access,
        &client,
        "SELECT COUNT() AS n FROM devices WHERE deviceId = 'x'",
        1,
        None,
    )
    .await?;

    let mut first_page = Latency::new();
    let mut second_page = Latency::new();
    let mut rows = 0;
    for _ in 0..options.selective_runs {
        let t = Instant::now();
        let (items, continuation) = query_page(&access, &client, SELECTIVE, 100, None).await?;
        first_page.record(t.elapsed());
        rows = items.len();
        if let Some(c) = continuation {
            let t = Instant::now();
            query_page(&access, &client, SELECTIVE, 100, Some(&c)).await?;
            second_page.record(t.elapsed());
        }
    }
    report
        .latency("selective first page (100 rows)", &first_page)
        .latency("selective second page (continuation)", &second_page)
        .figure("selective first page rows", rows as f64, "");

    let mut scan = Latency::new();
    let mut groups = 0;
    let mut counted = 0u64;
    for _ in 0..options.scan_runs {
        let t = Instant::now();
        let (items, _) = query_page(&access, &client, GROUP_BY, 1000, None).await?;
        scan.record(t.elapsed());
        groups = items.len();
        counted = items.iter().filter_map(|r| r["n"].as_u64()).sum();
    }
    report
        .latency("full-scan GROUP BY", &scan)
        .figure("GROUP BY groups", groups as f64, "")
        .figure("GROUP BY twins counted", counted as f64, "");
    let (rss, peak) = rss_kib(pid)?;
    report
        .figure("hub RSS after queries", mib(rss), "MiB")
        .figure("hub RSS peak (VmHWM)", mib(peak), "MiB");
    Ok(())
}
