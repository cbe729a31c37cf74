//! What a scenario measured: named figures and latency histograms, printed as a
//! table and written as JSON (one object per scenario run).
//!
//! Latencies are recorded in microseconds into HDR histograms with 3 significant
//! digits, so p99.9 of a million samples costs a few kilobytes and no sorting.

use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};
use std::path::Path;

/// Highest latency a histogram records, in microseconds (60 s); longer ones are
/// clamped so that a stall shows up as a 60 s outlier instead of being dropped.
const MAX_LATENCY_US: u64 = 60_000_000;

/// A latency histogram in microseconds.
pub(crate) struct Latency(Histogram<u64>);

impl Latency {
    pub(crate) fn new() -> Self {
        // 3 significant digits over 1 µs..60 s is always a valid configuration.
        Self(
            Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
                .unwrap_or_else(|_| unreachable!("1 µs..60 s at 3 digits is valid")),
        )
    }

    pub(crate) fn record(&mut self, elapsed: std::time::Duration) {
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.0.saturating_record(us.clamp(1, MAX_LATENCY_US));
    }

    pub(crate) fn add(&mut self, other: &Latency) {
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.0.add(&other.0);
    }

    pub(crate) fn count(&self) -> u64 {
        self.0.len()
    }

    fn ms_at(&self, q: f64) -> f64 {
        self.0.value_at_quantile(q) as f64 / 1000.0
    }
}

/// One number with its unit.
struct Figure {
    name: String,
    value: f64,
    unit: String,
}

/// The outcome of one scenario run.
pub(crate) struct Report {
    scenario: String,
    params: Map<String, Value>,
    figures: Vec<Figure>,
    notes: Vec<String>,
}

impl Report {
    pub(crate) fn new(scenario: &str) -> Self {
        Self {
            scenario: scenario.to_owned(),
            params: Map::new(),
            figures: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// A parameter of the run (clients, in-flight window, target...).
    pub(crate) fn param(&mut self, name: &str, value: impl Into<Value>) -> &mut Self {
        self.params.insert(name.to_owned(), value.into());
        self
    }

    pub(crate) fn figure(&mut self, name: &str, value: f64, unit: &str) -> &mut Self {
        self.figures.push(Figure {
            name: name.to_owned(),
            value,
            unit: unit.to_owned(),
        });
        self
    }

    /// Count, p50, p99, p99.9 and max of `latency`, in milliseconds.
    pub(crate) fn latency(&mut self, name: &str, latency: &Latency) -> &mut Self {
        self.figure(&format!("{name} samples"), latency.count() as f64, "");
        for (label, q) in [("p50", 0.5), ("p99", 0.99), ("p99.9", 0.999), ("max", 1.0)] {
            self.figure(&format!("{name} {label}"), latency.ms_at(q), "ms");
        }
        self
    }

    pub(crate) fn note(&mut self, text: impl Into<String>) -> &mut Self {
        self.notes.push(text.into());
        self
    }

    /// Prints the report as an aligned table on stdout.
    pub(crate) fn print(&self) {
        let params = self
            .params
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ");
        println!("== {} {}", self.scenario, params);
        let width = self.figures.iter().map(|f| f.name.len()).max().unwrap_or(0);
        for f in &self.figures {
            println!(
                "  {:<width$}  {:>14} {}",
                f.name,
                format_value(f.value),
                f.unit
            );
        }
        for n in &self.notes {
            println!("  note: {n}");
        }
    }

    pub(crate) fn to_json(&self) -> Value {
        let figures: Vec<Value> = self
            .figures
            .iter()
            .map(|f| json!({"name": f.name, "value": f.value, "unit": f.unit}))
            .collect();
        json!({
            "scenario": self.scenario,
            "params": self.params,
            "figures": figures,
            "notes": self.notes,
        })
    }
}

/// Numbers as people read them: integers without decimals, small values with three.
pub(crate) fn format_value(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else if v.abs() >= 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

/// Appends `reports` to the JSON array in `path` (creating it), so several runs
/// of the binary build one results file.
pub(crate) fn append_json(path: &Path, reports: &[Report]) -> Result<(), String> {
    let mut all = match std::fs::read(path) {
        Ok(bytes) if !bytes.is_empty() => match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Array(items)) => items,
            _ => return Err(format!("{} is not a JSON array", path.display())),
        },
        _ => Vec::new(),
    };
    all.extend(reports.iter().map(Report::to_json));
    let text = serde_json::to_string_pretty(&Value::Array(all)).map_err(|e| e.to_string())?;
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}
