//! Figures, repetitions, ratios against baselines, targets, and the report
//! files: a table on stdout, `report.md`, `report.json` and `throughput.svg`.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use serde::Serialize;

/// A throughput measured at the receiver.
#[derive(Clone, Copy, Debug)]
pub struct Rate {
    /// Messages per second.
    pub msgs_per_sec: f64,
    /// Payload megabytes (1e6) per second.
    pub mb_per_sec: f64,
}

impl Rate {
    /// `count` messages of `payload` bytes in `elapsed`.
    pub fn new(count: u64, payload: usize, elapsed: Duration) -> Rate {
        let secs = elapsed.as_secs_f64().max(1e-9);
        Rate {
            msgs_per_sec: count as f64 / secs,
            mb_per_sec: count as f64 * payload as f64 / secs / 1e6,
        }
    }
}

/// One figure over its repetitions.
#[derive(Clone, Debug, Serialize)]
pub struct Figure {
    /// Stable key, e.g. `oneway_64_msgs`.
    pub key: String,
    /// What it is.
    pub label: String,
    /// Unit.
    pub unit: String,
    /// Whether larger is better.
    pub higher_is_better: bool,
    /// Every repetition.
    pub samples: Vec<f64>,
    /// Smallest sample.
    pub min: f64,
    /// Median sample.
    pub median: f64,
    /// Largest sample.
    pub max: f64,
    /// Key of the baseline figure it is compared with.
    pub baseline: Option<String>,
    /// median / baseline median.
    pub ratio: Option<f64>,
}

/// A target from the benchmark issue, met or not.
#[derive(Clone, Debug, Serialize)]
pub struct Target {
    /// The target as stated.
    pub name: String,
    /// What was measured, in words and numbers.
    pub measured: String,
    /// `Some(true)` met, `Some(false)` not met, `None` not measured in this run.
    pub met: Option<bool>,
}

/// A whole run.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    /// Machine, kernel, CPU placement, settings.
    pub environment: Vec<(String, String)>,
    /// Every figure.
    pub figures: Vec<Figure>,
    /// Targets.
    pub targets: Vec<Target>,
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    v[v.len() / 2]
}

impl Report {
    /// Adds a figure from its samples.
    pub fn add(
        &mut self,
        key: &str,
        label: &str,
        unit: &str,
        higher: bool,
        samples: Vec<f64>,
        baseline: Option<&str>,
    ) {
        let mut sorted = samples.clone();
        let med = median(&mut sorted);
        let ratio = baseline.and_then(|b| self.get(b)).map(|b| med / b.median);
        self.figures.push(Figure {
            key: key.into(),
            label: label.into(),
            unit: unit.into(),
            higher_is_better: higher,
            min: sorted.first().copied().unwrap_or(f64::NAN),
            max: sorted.last().copied().unwrap_or(f64::NAN),
            median: med,
            samples,
            baseline: baseline.map(str::to_owned),
            ratio,
        });
    }

    /// A figure by key.
    pub fn get(&self, key: &str) -> Option<&Figure> {
        self.figures.iter().find(|f| f.key == key)
    }

    /// Adds a target comparing `key`'s median with `factor` × `base`'s median.
    pub fn target_ratio(&mut self, name: &str, key: &str, base: &str, factor: f64, at_least: bool) {
        let (a, b) = (
            self.get(key).map(|f| f.median),
            self.get(base).map(|f| f.median),
        );
        let (measured, met) = match (a, b) {
            (Some(a), Some(b)) => {
                let ratio = a / b;
                let met = if at_least {
                    ratio >= factor
                } else {
                    ratio <= factor
                };
                (
                    format!("{} = {:.3} × {} ({:.4} vs {:.4})", key, ratio, base, a, b),
                    Some(met),
                )
            }
            _ => (format!("not measured in this run ({key} vs {base})"), None),
        };
        self.targets.push(Target {
            name: name.into(),
            measured,
            met,
        });
    }

    /// Adds a target on an absolute value.
    pub fn target_value(&mut self, name: &str, measured: String, met: Option<bool>) {
        self.targets.push(Target {
            name: name.into(),
            measured,
            met,
        });
    }

    /// The table printed on stdout and embedded in `report.md`.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "| figure | median | min | max | unit | vs baseline |");
        let _ = writeln!(s, "|---|---:|---:|---:|---|---|");
        for f in &self.figures {
            let ratio = match (&f.baseline, f.ratio) {
                (Some(b), Some(r)) => format!("{r:.2}× {b}"),
                _ => String::new(),
            };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} |",
                f.label,
                fmt(f.median),
                fmt(f.min),
                fmt(f.max),
                f.unit,
                ratio
            );
        }
        let _ = writeln!(s);
        let _ = writeln!(s, "| target | measured | status |");
        let _ = writeln!(s, "|---|---|---|");
        for t in &self.targets {
            let status = match t.met {
                Some(true) => "met",
                Some(false) => "NOT MET",
                None => "not measured",
            };
            let _ = writeln!(s, "| {} | {} | {} |", t.name, t.measured, status);
        }
        s
    }

    /// Writes `report.md`, `report.json` and `throughput.svg` into `dir`.
    pub fn write(&self, dir: &Path, title: &str) -> Result<()> {
        std::fs::create_dir_all(dir)?;
        let mut md = format!("# {title}\n\n");
        for (k, v) in &self.environment {
            let _ = writeln!(md, "- **{k}**: {v}");
        }
        md.push('\n');
        md.push_str(&self.table());
        std::fs::write(dir.join("report.md"), md)?;
        std::fs::write(dir.join("report.json"), serde_json::to_string_pretty(self)?)?;
        crate::plot::throughput(self, &dir.join("throughput.svg"))?;
        Ok(())
    }
}

fn fmt(v: f64) -> String {
    if !v.is_finite() {
        "-".into()
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.4}")
    }
}
