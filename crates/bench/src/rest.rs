//! The service-side scenarios: `get` (twin GETs over REST, closed loop) and
//! `desired` (desired-property PATCHes at a fixed rate, open loop, each timed from
//! the REST response to the device's notification over MQTT).

use crate::device::{Sources, Target};
use crate::fleet::{device_id, progress};
use crate::hub::HubAccess;
use crate::mqtt::Packet;
use crate::report::{Latency, Report};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Barrier;

/// `get`: `workers` concurrent requests (each on its own kept-alive connection)
/// reading twins of devices `0..devices` round robin for `duration`.
pub(crate) async fn get(
    hub: &HubAccess,
    prefix: &str,
    devices: usize,
    workers: usize,
    duration: Duration,
) -> Result<Report, String> {
    let mut report = Report::new("get");
    report
        .param("devices", devices as u64)
        .param("concurrent_requests", workers as u64)
        .param("seconds", duration.as_secs_f64());
    let client = hub.http_client(workers)?;
    let token = hub.owner_token()?;
    let start = Arc::new(Barrier::new(workers + 1));
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..workers {
        let (client, token, start, base) =
            (client.clone(), token.clone(), start.clone(), hub.base_url());
        let prefix = prefix.to_owned();
        tasks.spawn(async move {
            let mut latency = Latency::new();
            let (mut ok, mut errors) = (0u64, 0u64);
            let mut first_error = None;
            start.wait().await;
            let deadline = Instant::now() + duration;
            let mut i = w;
            while Instant::now() < deadline {
                let url = format!(
                    "{base}/twins/{}?api-version=2021-04-12",
                    device_id(&prefix, i % devices.max(1))
                );
                let t = Instant::now();
                let result = async {
                    let r = client
                        .get(&url)
                        .header("Authorization", &token)
                        .send()
                        .await
                        .map_err(|e| format!("{e:#}"))?;
                    let status = r.status();
                    let body = r.bytes().await.map_err(|e| format!("{e:#}"))?;
                    if status.is_success() {
                        Ok(body.len())
                    } else {
                        Err(format!(
                            "GET twin: {status}: {}",
                            String::from_utf8_lossy(&body)
                        ))
                    }
                }
                .await;
                match result {
                    Ok(_) => {
                        latency.record(t.elapsed());
                        ok += 1;
                    }
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert(e);
                    }
                }
                i += workers;
            }
            (latency, ok, errors, first_error)
        });
    }
    start.wait().await;
    let began = Instant::now();
    let mut latency = Latency::new();
    let (mut ok, mut errors) = (0, 0);
    while let Some(joined) = tasks.join_next().await {
        let (l, o, e, first) = joined.map_err(|e| e.to_string())?;
        latency.add(&l);
        ok += o;
        errors += e;
        if let Some(f) = first {
            report.note(format!("error: {f}"));
        }
    }
    let secs = began.elapsed().as_secs_f64();
    report
        .figure("twin GETs/s", ok as f64 / secs, "/s")
        .figure("errors", errors as f64, "")
        .latency("GET /twins/{id}", &latency);
    Ok(report)
}

/// When a patch's REST response and its device notification arrived.
#[derive(Default)]
struct Timing {
    sent: Option<Instant>,
    responded: Option<Instant>,
    notified: Option<Instant>,
}

/// `desired`: `devices` devices subscribed to desired-property notifications; the
/// service PATCHes one of them every `1/rate` s for `duration` (round robin), and
/// each patch is timed from the REST response to the notification.
pub(crate) async fn desired(
    hub: &HubAccess,
    prefix: &str,
    devices: usize,
    rate: u32,
    duration: Duration,
    sources: &Sources,
) -> Result<Report, String> {
    let mut report = Report::new("desired");
    report
        .param("devices", devices as u64)
        .param("patches_per_s", rate)
        .param("seconds", duration.as_secs_f64());
    let target = Target::Twinhub {
        hub: hub.clone(),
        prefix: prefix.to_owned(),
        modules: 0,
    };
    let tls = hub.tls_config()?;
    let timings: Arc<Mutex<HashMap<(usize, u64), Timing>>> = Arc::default();
    let stop = Arc::new(tokio::sync::Notify::new());
    let bar = progress(devices, "subscribe");
    let mut listeners = tokio::task::JoinSet::new();
    let ready = Arc::new(Barrier::new(devices + 1));
    for i in 0..devices {
        let mut client = target.connect(i, sources, &tls).await?;
        client
            .subscribe(&["$iothub/twin/PATCH/properties/desired/#"])
            .await?;
        bar.inc(1);
        let (timings, stop, ready) = (timings.clone(), stop.clone(), ready.clone());
        listeners.spawn(async move {
            ready.wait().await;
            loop {
                let packet = tokio::select! {
                    p = client.next() => p?,
                    _ = stop.notified() => break,
                };
                if let Packet::Publish { topic, payload } = packet {
                    if !topic.starts_with("$iothub/twin/PATCH/properties/desired/") {
                        continue;
                    }
                    let at = Instant::now();
                    let body: Value =
                        serde_json::from_slice(&payload).map_err(|e| e.to_string())?;
                    if let Some(seq) = body["seq"].as_u64() {
                        let mut t = timings.lock().unwrap_or_else(|e| e.into_inner());
                        t.entry((i, seq)).or_default().notified = Some(at);
                    }
                }
            }
            client.disconnect().await;
            Ok::<(), String>(())
        });
    }
    bar.finish_and_clear();
    ready.wait().await;

    let client = hub.http_client(64)?;
    let token = hub.owner_token()?;
    let total = (f64::from(rate) * duration.as_secs_f64()) as u64;
    let period = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut requests = tokio::task::JoinSet::new();
    let began = Instant::now();
    for n in 0..total {
        ticker.tick().await;
        let i = (n as usize) % devices.max(1);
        let seq = n;
        let url = format!(
            "{}/twins/{}?api-version=2021-04-12",
            hub.base_url(),
            device_id(prefix, i)
        );
        let (client, token, timings) = (client.clone(), token.clone(), timings.clone());
        requests.spawn(async move {
            let body = json!({"properties": {"desired": {"seq": seq, "setpoint": 20 + seq % 10}}});
            let sent = Instant::now();
            let r = client
                .patch(&url)
                .header("Authorization", &token)
                .header("If-Match", "\"*\"")
                .json(&body)
                .send()
                .await
                .map_err(|e| format!("{e:#}"))?;
            let status = r.status();
            let _ = r.bytes().await;
            let at = Instant::now();
            if !status.is_success() {
                return Err(format!("PATCH twin: {status}"));
            }
            let mut t = timings.lock().unwrap_or_else(|e| e.into_inner());
            let entry = t.entry((i, seq)).or_default();
            entry.sent = Some(sent);
            entry.responded = Some(at);
            Ok(())
        });
        // Reap finished requests so the set stays small.
        while let Some(done) = requests.try_join_next() {
            done.map_err(|e| e.to_string())??;
        }
    }
    let offered = began.elapsed();
    while let Some(done) = requests.join_next().await {
        done.map_err(|e| e.to_string())??;
    }
    // Notifications for the last patches are a few milliseconds behind.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.notify_waiters();
    while let Some(done) = listeners.join_next().await {
        if let Err(e) = done.map_err(|e| e.to_string()).and_then(|r| r) {
            report.note(format!("device: {e}"));
        }
    }

    let mut response_to_notification = Latency::new();
    let mut request_to_notification = Latency::new();
    let mut rest = Latency::new();
    let (mut missing, mut before_response) = (0u64, 0u64);
    let t = timings.lock().unwrap_or_else(|e| e.into_inner());
    for timing in t.values() {
        match (timing.sent, timing.responded, timing.notified) {
            (Some(sent), Some(responded), Some(notified)) => {
                rest.record(responded - sent);
                request_to_notification.record(notified - sent);
                if notified < responded {
                    before_response += 1;
                }
                response_to_notification.record(notified.saturating_duration_since(responded));
            }
            (Some(sent), Some(responded), None) => {
                rest.record(responded - sent);
                missing += 1;
            }
            _ => missing += 1,
        }
    }
    report
        .figure("patches sent", total as f64, "")
        .figure(
            "achieved patch rate",
            total as f64 / offered.as_secs_f64(),
            "/s",
        )
        .figure("notifications missing", missing as f64, "")
        .figure(
            "notifications before the REST response",
            before_response as f64,
            "",
        )
        .latency("REST response -> notification", &response_to_notification)
        .latency("REST request -> notification", &request_to_notification)
        .latency("REST PATCH", &rest);
    Ok(report)
}
