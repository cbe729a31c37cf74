//! The `methods` scenario: direct method round trips. Devices over MQTT/TLS
//! subscribe to method requests and answer each at once; the service invokes
//! methods at a fixed rate (open loop, round robin over the devices), and each
//! call is timed from the REST request to the REST response, which carries the
//! device's answer.

use crate::device::{Sources, Target};
use crate::fleet::{device_id, progress};
use crate::hub::HubAccess;
use crate::mqtt::Packet;
use crate::report::{Latency, Report};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Barrier;

/// `methods`: `devices` answering devices, `rate` invocations per second for
/// `duration`.
pub(crate) async fn methods(
    hub: &HubAccess,
    prefix: &str,
    devices: usize,
    rate: u32,
    duration: Duration,
    sources: &Sources,
) -> Result<Report, String> {
    let mut report = Report::new("methods");
    report
        .param("devices", devices as u64)
        .param("invocations_per_s", rate)
        .param("seconds", duration.as_secs_f64());
    let target = Target::Twinhub {
        hub: hub.clone(),
        prefix: prefix.to_owned(),
        modules: 0,
    };
    let tls = hub.tls_config()?;
    let stop = Arc::new(tokio::sync::Notify::new());
    let bar = progress(devices, "subscribe");
    let mut answerers = tokio::task::JoinSet::new();
    let ready = Arc::new(Barrier::new(devices + 1));
    for i in 0..devices {
        let mut client = target.connect(i, sources, &tls).await?;
        client.subscribe(&["$iothub/methods/POST/#"]).await?;
        bar.inc(1);
        let (stop, ready) = (stop.clone(), ready.clone());
        answerers.spawn(async move {
            ready.wait().await;
            let mut answered = 0u64;
            loop {
                let packet = tokio::select! {
                    p = client.next() => p?,
                    _ = stop.notified() => break,
                };
                let Packet::Publish { topic, payload } = packet else {
                    continue;
                };
                let Some(rid) = topic
                    .strip_prefix("$iothub/methods/POST/")
                    .and_then(|rest| rest.split_once("?$rid="))
                    .map(|(_, rid)| rid.to_owned())
                else {
                    continue;
                };
                // Echo the request: the answer is as large as the request.
                client.queue_publish(
                    &format!("$iothub/methods/res/200/?$rid={rid}"),
                    &payload,
                    false,
                );
                // Answers already queued leave in one write.
                while let Some(Packet::Publish { topic, payload }) = client.try_next()? {
                    if let Some((_, rid)) = topic.split_once("?$rid=") {
                        client.queue_publish(
                            &format!("$iothub/methods/res/200/?$rid={rid}"),
                            &payload,
                            false,
                        );
                    }
                }
                client.flush().await?;
                // One write may carry several answers.
                answered += 1;
            }
            client.disconnect().await;
            Ok::<u64, String>(answered)
        });
    }
    bar.finish_and_clear();
    ready.wait().await;

    let client = hub.http_client(256)?;
    let token = hub.owner_token()?;
    let total = (f64::from(rate) * duration.as_secs_f64()) as u64;
    let period = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut requests = tokio::task::JoinSet::new();
    let mut latency = Latency::new();
    let (mut ok, mut errors) = (0u64, 0u64);
    let mut first_error = None;
    let mut reap = |done: Result<Result<Duration, String>, tokio::task::JoinError>| match done {
        Ok(Ok(took)) => {
            latency.record(took);
            ok += 1;
        }
        Ok(Err(e)) => {
            errors += 1;
            first_error.get_or_insert(e);
        }
        Err(e) => {
            errors += 1;
            first_error.get_or_insert(e.to_string());
        }
    };
    let began = Instant::now();
    for n in 0..total {
        ticker.tick().await;
        let url = format!(
            "{}/twins/{}/methods?api-version=2021-04-12",
            hub.base_url(),
            device_id(prefix, (n as usize) % devices.max(1))
        );
        let (client, token) = (client.clone(), token.clone());
        requests.spawn(async move {
            let body = json!({"methodName": "echo", "payload": {"seq": n},
                "responseTimeoutInSeconds": 30, "connectTimeoutInSeconds": 0});
            let sent = Instant::now();
            let r = client
                .post(&url)
                .header("Authorization", &token)
                .json(&body)
                .send()
                .await
                .map_err(|e| format!("{e:#}"))?;
            let status = r.status();
            let bytes = r.bytes().await.map_err(|e| format!("{e:#}"))?;
            let took = sent.elapsed();
            if !status.is_success() {
                return Err(format!(
                    "invoke: {status}: {}",
                    String::from_utf8_lossy(&bytes)
                ));
            }
            let answer: Value = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
            if answer["payload"]["seq"] != json!(n) {
                return Err(format!("answer {answer} is not call {n}'s"));
            }
            Ok(took)
        });
        while let Some(done) = requests.try_join_next() {
            reap(done);
        }
    }
    let offered = began.elapsed();
    while let Some(done) = requests.join_next().await {
        reap(done);
    }
    let completed = began.elapsed();
    stop.notify_waiters();
    let mut answered = 0;
    while let Some(done) = answerers.join_next().await {
        match done.map_err(|e| e.to_string()).and_then(|r| r) {
            Ok(n) => answered += n,
            Err(e) => {
                report.note(format!("device: {e}"));
            }
        }
    }
    if let Some(e) = first_error {
        report.note(format!("error: {e}"));
    }
    report
        .figure("calls sent", total as f64, "")
        .figure("offered rate", total as f64 / offered.as_secs_f64(), "/s")
        .figure("completed rate", ok as f64 / completed.as_secs_f64(), "/s")
        .figure("errors", errors as f64, "")
        .figure("device answer writes", answered as f64, "")
        .latency("invoke -> device -> answer", &latency);
    Ok(report)
}
