//! What a node's `/metrics` says: its counters (each with its documentation
//! as help), per-channel request and handler durations as histograms,
//! request outcomes per channel and code, per-peer connection state,
//! circuit breakers and rate limits. Rendered by `domi_admin::render`.

use domi_admin::{Metric, MetricKind, Status, Value};
use domi_core::telemetry::{Histogram, Telemetry};
use domi_core::NodeState;

use crate::Node;

/// Counters reported with labels by their own families below.
fn labelled_elsewhere(name: &str) -> bool {
    name == "rate_limited" || name.starts_with("breaker_")
}

fn number(
    name: &str,
    help: &str,
    kind: MetricKind,
    labels: Vec<(&'static str, String)>,
    value: f64,
) -> Metric {
    Metric::number(name, help, kind, labels, value)
}

fn histogram(name: &str, help: &str, channel: u16, h: &Histogram) -> Metric {
    Metric {
        name: name.into(),
        help: help.into(),
        kind: MetricKind::Histogram,
        labels: vec![("channel", channel.to_string())],
        value: Value::Histogram {
            buckets: h.cumulative(),
            sum: h.sum_seconds(),
            count: h.count(),
        },
    }
}

/// Every metric of `node`, whose status is `status`.
pub(crate) fn collect(node: &Node, status: &Status) -> Vec<Metric> {
    let mut out: Vec<Metric> = status
        .counters
        .iter()
        .filter(|(k, _)| !labelled_elsewhere(k))
        .map(|(k, v)| {
            let help = domi_core::Snapshot::help(k).unwrap_or("A domi counter.");
            number(
                &format!("domi_{k}_total"),
                &format!("{help} (Summed over shards.)"),
                MetricKind::Counter,
                vec![],
                *v as f64,
            )
        })
        .collect();
    channels(&node.telemetry(), &mut out);
    breakers(status, &mut out);
    peers(status, &mut out);
    rate_limits(node, &mut out);
    node_gauges(status, &mut out);
    out
}

/// Request and handler durations, request outcomes: per channel.
fn channels(t: &Telemetry, out: &mut Vec<Metric>) {
    let all = t.channels();
    for (ch, c) in &all {
        if c.request.count() > 0 {
            out.push(histogram(
                "domi_request_duration_seconds",
                "Duration of this node's requests, from the call to the reply or error, by channel.",
                ch.0,
                &c.request,
            ));
        }
    }
    for (ch, c) in &all {
        if c.handler.count() > 0 {
            out.push(histogram(
                "domi_handler_duration_seconds",
                "Duration of handler runs on this node (an async handler's until its future ends), by channel.",
                ch.0,
                &c.handler,
            ));
        }
    }
    for (ch, c) in &all {
        let mut outcomes: Vec<_> = c.outcomes.iter().collect();
        outcomes.sort_by_key(|(o, _)| o.label());
        for (outcome, n) in outcomes {
            out.push(number(
                "domi_requests_total",
                "This node's requests by channel and how they ended: code=\"ok\", or the error (timeout, peer_lost, no_provider, circuit_open, backpressure, application, a provider's code such as paused or handler_panicked, refused).",
                MetricKind::Counter,
                vec![
                    ("channel", ch.0.to_string()),
                    ("code", outcome.label().into()),
                ],
                *n as f64,
            ));
        }
    }
}

fn breakers(status: &Status, out: &mut Vec<Metric>) {
    for (to, key) in [
        ("open", "breaker_opened"),
        ("half_open", "breaker_half_open"),
        ("closed", "breaker_closed"),
    ] {
        let value = status
            .counters
            .iter()
            .find(|(k, _)| k.as_str() == key)
            .map_or(0, |(_, v)| *v);
        out.push(number(
            "domi_breaker_transitions_total",
            "Circuit breaker transitions of this node's requests, by the state entered.",
            MetricKind::Counter,
            vec![("to", to.into())],
            value as f64,
        ));
    }
    for p in &status.peers {
        out.push(number(
            "domi_breaker_open",
            "1 while this node's circuit breaker of the peer is open or half-open (on any shard).",
            MetricKind::Gauge,
            vec![("peer", p.id.to_string())],
            (p.breaker != "closed") as u8 as f64,
        ));
    }
}

/// Per peer: connected or not, and its state as this node sees it.
fn peers(status: &Status, out: &mut Vec<Metric>) {
    for p in &status.peers {
        out.push(number(
            "domi_peer_connected",
            "1 while this node has an open connection to the peer.",
            MetricKind::Gauge,
            vec![("peer", p.id.to_string()), ("name", p.name.clone())],
            p.connected as u8 as f64,
        ));
    }
    for p in &status.peers {
        for s in ["serving", "paused", "draining", "down"] {
            out.push(number(
                "domi_peer_state",
                "1 for the peer's current state as this node sees it (down: unreachable from here).",
                MetricKind::Gauge,
                vec![("peer", p.id.to_string()), ("state", s.into())],
                (p.state == s) as u8 as f64,
            ));
        }
    }
}

fn rate_limits(node: &Node, out: &mut Vec<Metric>) {
    if let Some((_, limited)) = node.node_rate_limit() {
        out.push(number(
            "domi_node_rate_limited_total",
            "Messages over this node's node-wide rate limit (requests answered RateLimited, one-way messages dropped), since the limit was set.",
            MetricKind::Counter,
            vec![],
            limited as f64,
        ));
    }
    for (channel, _, limited) in node.rate_limits() {
        out.push(number(
            "domi_rate_limited_total",
            "Messages over their channel's rate limit (requests answered RateLimited, one-way messages dropped), since the limit was set.",
            MetricKind::Counter,
            vec![("channel", channel.0.to_string())],
            limited as f64,
        ));
    }
}

fn node_gauges(status: &Status, out: &mut Vec<Metric>) {
    let gauge = |name: &str, help: &str, labels, value| {
        number(name, help, MetricKind::Gauge, labels, value)
    };
    for s in NodeState::ALL.map(NodeState::as_str) {
        out.push(gauge(
            "domi_state",
            "1 for the node's current state.",
            vec![("state", s.into())],
            (status.state == s) as u8 as f64,
        ));
    }
    out.push(gauge(
        "domi_peers",
        "Other nodes known.",
        vec![],
        status.peers.len() as f64,
    ));
    out.push(gauge(
        "domi_peers_connected",
        "Other nodes with an open connection.",
        vec![],
        status.peers.iter().filter(|p| p.connected).count() as f64,
    ));
    out.push(gauge(
        "domi_uptime_seconds",
        "Seconds since the node started.",
        vec![],
        status.uptime_s,
    ));
    out.push(gauge(
        "domi_shards",
        "Shards (one reactor each).",
        vec![],
        status.shards as f64,
    ));
}
