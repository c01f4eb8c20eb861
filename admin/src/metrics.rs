//! Prometheus text exposition (format 0.0.4), rendered by a pure function.

use std::fmt::Write;

/// Counter or gauge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricKind {
    /// Monotonic.
    Counter,
    /// Goes up and down.
    Gauge,
}

/// One sample with its help text.
#[derive(Clone, Debug, PartialEq)]
pub struct Metric {
    /// Metric name (`domi_` prefix, `_total` for counters).
    pub name: String,
    /// Help text.
    pub help: String,
    /// Counter or gauge.
    pub kind: MetricKind,
    /// Labels, already valid label names; values are escaped here.
    pub labels: Vec<(&'static str, String)>,
    /// The value.
    pub value: f64,
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Renders metrics; samples of one name share one `HELP`/`TYPE` block.
pub fn render(metrics: &[Metric]) -> String {
    let mut out = String::new();
    let mut done: Vec<&str> = Vec::new();
    for m in metrics {
        if done.contains(&m.name.as_str()) {
            continue;
        }
        done.push(&m.name);
        let kind = match m.kind {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
        };
        let _ = writeln!(out, "# HELP {} {}", m.name, m.help);
        let _ = writeln!(out, "# TYPE {} {kind}", m.name);
        for s in metrics.iter().filter(|s| s.name == m.name) {
            if s.labels.is_empty() {
                let _ = writeln!(out, "{} {}", s.name, s.value);
            } else {
                let labels: Vec<String> = s
                    .labels
                    .iter()
                    .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
                    .collect();
                let _ = writeln!(out, "{}{{{}}} {}", s.name, labels.join(","), s.value);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_help_type_and_labels() {
        let m = |name: &str, kind, labels: Vec<(&'static str, String)>, value| Metric {
            name: name.into(),
            help: "help text".into(),
            kind,
            labels,
            value,
        };
        let text = render(&[
            m("domi_frames_in_total", MetricKind::Counter, vec![], 5.0),
            m(
                "domi_errors_total",
                MetricKind::Counter,
                vec![("kind", "paused".into())],
                1.0,
            ),
            m(
                "domi_errors_total",
                MetricKind::Counter,
                vec![("kind", "a\"b".into())],
                2.0,
            ),
            m("domi_peers", MetricKind::Gauge, vec![], 3.0),
        ]);
        assert_eq!(
            text,
            "# HELP domi_frames_in_total help text\n# TYPE domi_frames_in_total counter\ndomi_frames_in_total 5\n\
             # HELP domi_errors_total help text\n# TYPE domi_errors_total counter\n\
             domi_errors_total{kind=\"paused\"} 1\ndomi_errors_total{kind=\"a\\\"b\"} 2\n\
             # HELP domi_peers help text\n# TYPE domi_peers gauge\ndomi_peers 3\n"
        );
    }
}
