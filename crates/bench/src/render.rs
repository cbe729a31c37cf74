//! `render`: turns a results file (the JSON array the scenarios append to) into
//! `docs/benchmarks.md` — the machine, the command, every figure, the
//! Twinhub/mosquitto ratios and the targets met or missed.

use crate::report::format_value;
use serde_json::Value;
use std::fmt::Write as _;

fn figure(report: &Value, name: &str) -> Option<f64> {
    report["figures"]
        .as_array()?
        .iter()
        .find(|f| f["name"] == name)
        .and_then(|f| f["value"].as_f64())
}

/// Reports of `scenario` whose params include every `(key, value)` of `params`.
fn find<'r>(results: &'r [Value], scenario: &str, params: &[(&str, Value)]) -> Vec<&'r Value> {
    results
        .iter()
        .filter(|r| r["scenario"] == scenario)
        .filter(|r| params.iter().all(|(k, v)| &r["params"][*k] == v))
        .collect()
}

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse::<f64>().ok())
        .unwrap_or(0.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "- `nproc`: {cores}\n- CPU: {model}\n- memory: {:.1} GiB\n- kernel: Linux {}\n- hub, mosquitto and load generator on the same machine, over loopback\n",
        mem_kib / (1024.0 * 1024.0),
        kernel.trim()
    )
}

fn params_text(report: &Value) -> String {
    report["params"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| *k != "selective" && *k != "full_scan")
                .map(|(k, v)| {
                    format!(
                        "{k}={}",
                        v.as_str().map_or_else(|| v.to_string(), str::to_owned)
                    )
                })
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
        _ => "n/a".into(),
    }
}

fn opt(v: Option<f64>) -> String {
    v.map_or_else(|| "not measured".into(), format_value)
}

/// A target row: the measured value, the bound and whether it holds.
struct Target {
    what: String,
    measured: Option<f64>,
    unit: &'static str,
    bound: Option<f64>,
    higher_is_better: bool,
}

impl Target {
    fn row(&self) -> String {
        let status = match (self.measured, self.bound) {
            (Some(m), Some(b)) => {
                let met = if self.higher_is_better {
                    m >= b
                } else {
                    m <= b
                };
                let factor = if self.higher_is_better { b / m } else { m / b };
                if met {
                    "met".to_owned()
                } else {
                    format!("missed ({factor:.2}× off)")
                }
            }
            _ => "not measured".into(),
        };
        format!(
            "| {} | {} {} | {} {} {} | {} |\n",
            self.what,
            opt(self.measured),
            self.unit,
            if self.higher_is_better { "≥" } else { "≤" },
            opt(self.bound),
            self.unit,
            status
        )
    }
}

fn pipelined_pairs(results: &[Value], out: &mut String, targets: &mut Vec<Target>) {
    out.push_str("\n## Reported patches vs plain QoS 1 publishes\n\n");
    out.push_str("Twinhub: a reported-properties PATCH per round trip, ended by the hub's `204` (durable: committed and fsynced). Mosquitto: a QoS 1 PUBLISH ended by its PUBACK (persistence off). Same client code, TLS and payloads (~200 B JSON). \"Cores busy\" is CPU seconds per second over the run (2 cores in all): with many patches in flight the hub is the bottleneck (the bench uses a fraction of a core); with few in flight (10 × 2) the fsync per group commit bounds the rate; against mosquitto (single-threaded) server and bench share the machine about evenly, so mosquitto's figures are, if anything, understated.\n\n");
    out.push_str("| clients × in flight | Twinhub round trips/s | p50 / p99 / p99.9 ms | mosquitto acks/s | p50 / p99 / p99.9 ms | Twinhub / mosquitto | hub CPU µs/op | mosquitto CPU µs/op | cores busy: hub / bench | cores busy: mosquitto / bench |\n|---|---|---|---|---|---|---|---|---|---|\n");
    for r in find(results, "reported", &[]) {
        let (c, w) = (
            r["params"]["clients"].clone(),
            r["params"]["in_flight"].clone(),
        );
        let twin = figure(r, "round trips/s (204 received = durable)");
        let mosq = find(
            results,
            "mqtt-publish",
            &[("clients", c.clone()), ("in_flight", w.clone())],
        );
        let m = mosq.first();
        let lat = |r: &Value| {
            format!(
                "{} / {} / {}",
                opt(figure(r, "round trip p50")),
                opt(figure(r, "round trip p99")),
                opt(figure(r, "round trip p99.9"))
            )
        };
        let mosq_rate = m.and_then(|m| figure(m, "QoS 1 publishes acked/s"));
        let cores = |r: &Value| {
            format!(
                "{} / {}",
                opt(figure(r, "server CPU (cores busy)")),
                opt(figure(r, "bench CPU (cores busy)"))
            )
        };
        let _ = writeln!(
            out,
            "| {c} × {w} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            opt(twin),
            lat(r),
            opt(mosq_rate),
            m.map_or_else(|| "n/a".into(), |m| lat(m)),
            ratio(twin, mosq_rate),
            opt(figure(r, "server CPU per operation")),
            m.map_or_else(
                || "n/a".into(),
                |m| opt(figure(m, "server CPU per operation"))
            ),
            cores(r),
            m.map_or_else(|| "n/a".into(), |m| cores(m)),
        );
        targets.push(Target {
            what: format!("reported round trips/s at {c}×{w} vs mosquitto QoS 1"),
            measured: twin,
            unit: "/s",
            bound: mosq_rate,
            higher_is_better: true,
        });
    }
}

fn connects(results: &[Value], out: &mut String, targets: &mut Vec<Target>) {
    out.push_str("\n## Connections: TLS connect rate and RSS per idle connection\n\n");
    out.push_str("N clients connect (TCP + TLS 1.3 full handshake, no resumption + CONNECT/CONNACK), spread over 8 source addresses 127.0.0.2–9, then stay idle; the server's RSS (`VmRSS`) is read before and 3 s after. The server is restarted before each N.\n\n");
    out.push_str("| N | server | connects/s | connect p50 / p99 ms | failures | RSS before MiB | RSS idle MiB | KiB per connection | 100k extrapolated GiB | server CPU µs/connect |\n|---|---|---|---|---|---|---|---|---|---|\n");
    let mut largest: Option<(u64, Option<f64>)> = None;
    for r in find(results, "connect", &[]) {
        let n = r["params"]["clients"].as_u64().unwrap_or(0);
        let target = r["params"]["target"].as_str().unwrap_or("");
        let server = if target == "twinhub" {
            "Twinhub"
        } else {
            "mosquitto"
        };
        let _ = writeln!(
            out,
            "| {n} | {server} | {} | {} / {} | {} | {} | {} | {} | {} | {} |",
            opt(figure(r, "connects/s")),
            opt(figure(r, "connect (TCP+TLS+CONNACK) p50")),
            opt(figure(r, "connect (TCP+TLS+CONNACK) p99")),
            opt(figure(r, "failures")),
            opt(figure(r, "server RSS before")),
            opt(figure(r, "server RSS with clients idle")),
            opt(figure(r, "server RSS per idle TLS connection")),
            opt(figure(r, "server RSS for 100k connections (extrapolated)")),
            opt(figure(r, "server CPU per operation")),
        );
        if target == "twinhub" {
            if largest.is_none_or(|(m, _)| n > m) {
                largest = Some((n, figure(r, "server RSS per idle TLS connection")));
            }
            let mosq = find(
                results,
                "connect",
                &[("clients", n.into()), ("target", "broker".into())],
            );
            targets.push(Target {
                what: format!("TLS connects/s at N = {n} vs mosquitto"),
                measured: figure(r, "connects/s"),
                unit: "/s",
                bound: mosq.first().and_then(|m| figure(m, "connects/s")),
                higher_is_better: true,
            });
        }
    }
    if let Some((n, per)) = largest {
        targets.push(Target {
            what: format!("hub RSS per idle TLS connection (N = {n})"),
            measured: per,
            unit: "KiB",
            bound: Some(16.0),
            higher_is_better: false,
        });
    }
}

/// Desired notifications, twin GETs and queries at a glance.
fn service_side(results: &[Value], out: &mut String) {
    out.push_str("\n## Service side: direct methods, desired notifications, twin GETs, queries\n\nMethods: a REST invocation, delivered to a device over MQTT/TLS that answers at once, timed until the REST response with the answer. Desired: the notification is published by the committer at the moment the PATCH's caller is woken, so it usually reaches the device before the REST response reaches the service client; those samples count as 0 (1 µs). `REST request -> notification` is the end-to-end time.\n\n| scenario | figure | value |\n|---|---|---|\n");
    let rows: [(&str, &str, &str); 17] = [
        ("methods", "completed rate", "/s"),
        ("methods", "invoke -> device -> answer p50", "ms"),
        ("methods", "invoke -> device -> answer p99", "ms"),
        ("desired", "achieved patch rate", "/s"),
        ("desired", "REST response -> notification p50", "ms"),
        ("desired", "REST response -> notification p99", "ms"),
        ("desired", "REST request -> notification p99", "ms"),
        ("desired", "notifications missing", ""),
        ("get", "twin GETs/s", "/s"),
        ("get", "GET /twins/{id} p99", "ms"),
        ("query", "load: twins/s", "/s"),
        ("query", "restart to ready", "s"),
        ("query", "hub RSS after restart", "MiB"),
        ("query", "hub RSS per twin", "B"),
        ("query", "selective first page (100 rows) p50", "ms"),
        ("query", "selective second page (continuation) p50", "ms"),
        ("query", "full-scan GROUP BY p50", "ms"),
    ];
    for (scenario, name, unit) in rows {
        if let Some(r) = find(results, scenario, &[]).last() {
            let _ = writeln!(
                out,
                "| {scenario} ({}) | {name} | {} {unit} |",
                params_text(r),
                opt(figure(r, name))
            );
        }
    }
}

/// Every figure of every report, in order.
fn all_figures(results: &[Value], out: &mut String) {
    out.push_str("\n## Every figure\n");
    for r in results {
        let _ = write!(
            out,
            "\n### {} ({})\n\n| figure | value | unit |\n|---|---|---|\n",
            r["scenario"].as_str().unwrap_or("?"),
            params_text(r)
        );
        for f in r["figures"].as_array().into_iter().flatten() {
            let _ = writeln!(
                out,
                "| {} | {} | {} |",
                f["name"].as_str().unwrap_or(""),
                f["value"].as_f64().map_or_else(String::new, format_value),
                f["unit"].as_str().unwrap_or("")
            );
        }
        for n in r["notes"].as_array().into_iter().flatten() {
            let _ = writeln!(out, "\nNote: {}", n.as_str().unwrap_or(""));
        }
        if let Some(q) = r["params"]["selective"].as_str() {
            let _ = writeln!(
                out,
                "\nSelective: `{q}`; full scan: `{}`.",
                r["params"]["full_scan"].as_str().unwrap_or("")
            );
        }
    }
}

/// The markdown page.
pub(crate) fn render(results: &[Value], command: &str, findings: &str) -> String {
    let mut out = String::from("# Twinhub benchmarks\n\nGenerated by `bash bench/compare.sh` with `twinhub-bench` (crates/bench); do not edit by hand — the findings at the end come from `bench/findings.md`.\n\n## Machine\n\n");
    out.push_str(&machine());
    let _ = write!(out, "\n## Command\n\n```sh\n{command}\n```\n");
    let mut targets = Vec::new();
    pipelined_pairs(results, &mut out, &mut targets);
    connects(results, &mut out, &mut targets);

    service_side(results, &mut out);
    let desired = find(results, "desired", &[]);
    if let Some(d) = desired.first() {
        targets.push(Target {
            what: format!(
                "desired p99, REST response → notification, at {} patches/s",
                d["params"]["patches_per_s"]
            ),
            measured: figure(d, "REST response -> notification p99"),
            unit: "ms",
            bound: Some(5.0),
            higher_is_better: false,
        });
    }
    for m in find(results, "methods", &[]) {
        let rate = m["params"]["invocations_per_s"].clone();
        targets.push(Target {
            what: format!("method round trip p50 at {rate} calls/s"),
            measured: figure(m, "invoke -> device -> answer p50"),
            unit: "ms",
            bound: Some(1.0),
            higher_is_better: false,
        });
        targets.push(Target {
            what: format!("method round trip p99 at {rate} calls/s"),
            measured: figure(m, "invoke -> device -> answer p99"),
            unit: "ms",
            bound: Some(5.0),
            higher_is_better: false,
        });
    }
    if let Some(q) = find(results, "query", &[]).last() {
        let twins = q["params"]["twins"].as_u64().unwrap_or(0);
        targets.push(Target {
            what: format!("query: selective first page p50 ({twins} twins)"),
            measured: figure(q, "selective first page (100 rows) p50"),
            unit: "ms",
            bound: Some(20.0),
            higher_is_better: false,
        });
        targets.push(Target {
            what: format!("query: full-scan GROUP BY p50 ({twins} twins)"),
            measured: figure(q, "full-scan GROUP BY p50"),
            unit: "ms",
            bound: Some(1000.0),
            higher_is_better: false,
        });
        targets.push(Target {
            what: format!("hub RSS with {twins} twins"),
            measured: figure(q, "hub RSS after restart"),
            unit: "MiB",
            bound: Some(2048.0),
            higher_is_better: false,
        });
        targets.push(Target {
            what: format!("restart to ready ({twins} twins)"),
            measured: figure(q, "restart to ready"),
            unit: "s",
            bound: Some(5.0),
            higher_is_better: false,
        });
    }
    let mut head =
        String::from("\n## Targets\n\n| target | measured | bound | status |\n|---|---|---|---|\n");
    for t in &targets {
        head.push_str(&t.row());
    }
    out.push_str(&head);
    all_figures(results, &mut out);
    out.push('\n');
    out.push_str(findings);
    out
}
