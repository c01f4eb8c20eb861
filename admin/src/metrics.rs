//! Prometheus text exposition (format 0.0.4): samples are grouped into
//! metric families and written by the `prometheus` crate's `TextEncoder`,
//! which escapes label values and lays out histograms (`_bucket` with
//! cumulative `le` buckets, `_sum`, `_count`).

use prometheus::proto;
use prometheus::Encoder;

/// Counter, gauge or histogram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricKind {
    /// Monotonic.
    Counter,
    /// Goes up and down.
    Gauge,
    /// A distribution in cumulative buckets.
    Histogram,
}

/// One sample's value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// A counter's or a gauge's value.
    Number(f64),
    /// A histogram: `(le, observations ≤ le)` cumulative, ascending (the
    /// `+Inf` bucket is `count`), the sum of observations and their count.
    Histogram {
        /// Cumulative buckets.
        buckets: Vec<(f64, u64)>,
        /// Sum of the observations.
        sum: f64,
        /// Number of observations.
        count: u64,
    },
}

/// One sample with its help text.
#[derive(Clone, Debug, PartialEq)]
pub struct Metric {
    /// Metric name (`domi_` prefix, `_total` for counters, a unit suffix
    /// such as `_seconds` for histograms).
    pub name: String,
    /// Help text.
    pub help: String,
    /// Counter, gauge or histogram.
    pub kind: MetricKind,
    /// Labels, already valid label names; values are escaped when written.
    pub labels: Vec<(&'static str, String)>,
    /// The value.
    pub value: Value,
}

impl Metric {
    /// A counter or gauge sample.
    pub fn number(
        name: impl Into<String>,
        help: impl Into<String>,
        kind: MetricKind,
        labels: Vec<(&'static str, String)>,
        value: f64,
    ) -> Metric {
        Metric {
            name: name.into(),
            help: help.into(),
            kind,
            labels,
            value: Value::Number(value),
        }
    }
}

fn sample(m: &Metric) -> proto::Metric {
    let mut out = proto::Metric::default();
    let labels = m
        .labels
        .iter()
        .map(|(k, v)| {
            let mut l = proto::LabelPair::default();
            l.set_name((*k).into());
            l.set_value(v.clone());
            l
        })
        .collect();
    out.set_label(labels);
    match (&m.value, m.kind) {
        (Value::Number(v), MetricKind::Counter) => {
            let mut c = proto::Counter::default();
            c.set_value(*v);
            out.set_counter(c);
        }
        (Value::Number(v), _) => {
            let mut g = proto::Gauge::default();
            g.set_value(*v);
            out.set_gauge(g);
        }
        (
            Value::Histogram {
                buckets,
                sum,
                count,
            },
            _,
        ) => {
            let mut h = proto::Histogram::default();
            h.set_bucket(
                buckets
                    .iter()
                    .map(|&(le, n)| {
                        let mut b = proto::Bucket::default();
                        b.set_upper_bound(le);
                        b.set_cumulative_count(n);
                        b
                    })
                    .collect(),
            );
            h.set_sample_sum(*sum);
            h.set_sample_count(*count);
            out.set_histogram(h);
        }
    }
    out
}

/// Renders metrics; samples of one name form one family (one `HELP` and
/// `TYPE`, the first sample's), in the order names first appear.
pub fn render(metrics: &[Metric]) -> String {
    let mut families: Vec<proto::MetricFamily> = Vec::new();
    for m in metrics {
        let i = match families.iter().position(|f| f.name() == m.name) {
            Some(i) => i,
            None => {
                let mut f = proto::MetricFamily::default();
                f.set_name(m.name.clone());
                f.set_help(m.help.clone());
                f.set_field_type(match m.kind {
                    MetricKind::Counter => proto::MetricType::COUNTER,
                    MetricKind::Gauge => proto::MetricType::GAUGE,
                    MetricKind::Histogram => proto::MetricType::HISTOGRAM,
                });
                families.push(f);
                families.len() - 1
            }
        };
        families[i].mut_metric().push(sample(m));
    }
    let mut out = Vec::new();
    // Writing to a Vec fails only on an invalid family (e.g. a sample whose
    // kind differs from its family's): say so in the output, not a panic.
    if let Err(e) = prometheus::TextEncoder::new().encode(&families, &mut out) {
        tracing::error!(error = %e, "metrics could not be rendered");
        return format!("# metrics could not be rendered: {e}\n");
    }
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_help_type_labels_and_histograms() {
        let m = |name: &str, kind, labels: Vec<(&'static str, String)>, value| {
            Metric::number(name, "help text", kind, labels, value)
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
            Metric {
                name: "domi_request_duration_seconds".into(),
                help: "help text".into(),
                kind: MetricKind::Histogram,
                labels: vec![("channel", "50".into())],
                value: Value::Histogram {
                    buckets: vec![(0.001, 2), (0.01, 3)],
                    sum: 0.012,
                    count: 4,
                },
            },
        ]);
        assert_eq!(
            text,
            "# HELP domi_frames_in_total help text\n# TYPE domi_frames_in_total counter\ndomi_frames_in_total 5\n\
             # HELP domi_errors_total help text\n# TYPE domi_errors_total counter\n\
             domi_errors_total{kind=\"paused\"} 1\ndomi_errors_total{kind=\"a\\\"b\"} 2\n\
             # HELP domi_peers help text\n# TYPE domi_peers gauge\ndomi_peers 3\n\
             # HELP domi_request_duration_seconds help text\n# TYPE domi_request_duration_seconds histogram\n\
             domi_request_duration_seconds_bucket{channel=\"50\",le=\"0.001\"} 2\n\
             domi_request_duration_seconds_bucket{channel=\"50\",le=\"0.01\"} 3\n\
             domi_request_duration_seconds_bucket{channel=\"50\",le=\"+Inf\"} 4\n\
             domi_request_duration_seconds_sum{channel=\"50\"} 0.012\n\
             domi_request_duration_seconds_count{channel=\"50\"} 4\n"
        );
    }
}
