//! `--hot-only`: the hot-path figures alone, for profiling them — one-way
//! 16 B and 64 B next to the wire baseline, 1 and 64 requests in flight next
//! to the busy-polling floors; the same keys as the full run, so the same
//! targets are checked.

use anyhow::Result;
use indicatif::ProgressBar;

use crate::bus::{Client, ServerProcess};
use crate::report::Report;
use crate::{busy, server_args, wire, Plan};

/// Progress steps per repetition.
pub const STEPS: usize = 9;

/// Runs the hot-path workloads, alternating each with its baseline.
pub fn run(plan: &Plan, report: &mut Report, bar: &ProgressBar) -> Result<()> {
    let server = ServerProcess::start(&server_args(1, vec![plan.sc], plan.spin_us))?;
    let client = Client::start(server.addr, 1, &[plan.cc], plan.spin())?;
    for p in [16, 64] {
        let count = plan.one_way_count(p);
        let (mut wire_m, mut bus_m) = (vec![], vec![]);
        for _ in 0..plan.reps {
            bar.set_message(format!("one-way {p} B: wire"));
            wire_m.push(wire::one_way(p, count, Some(plan.cc), Some(plan.sc))?.msgs_per_sec);
            bar.inc(1);
            bar.set_message(format!("one-way {p} B: bus"));
            bus_m.push(client.one_way(p, count)?.msgs_per_sec);
            bar.inc(1);
        }
        add_frame_bytes(report, p, &wire_m, &bus_m);
        let wire_key = format!("sweep_wire_{p}_msgs");
        let label = format!("wire one-way {p} B");
        report.add(&wire_key, &label, "msg/s", true, wire_m, None);
        let label = format!("bus notify {p} B");
        let key = format!("sweep_bus_{p}_msgs");
        report.add(&key, &label, "msg/s", true, bus_m, Some(&wire_key));
    }
    let (mut bp50, mut bp99, mut b50, mut b99) = (vec![], vec![], vec![], vec![]);
    for _ in 0..plan.reps {
        let r = one_in_flight(plan, &client, bar)?;
        bp50.push(r.busy_p50);
        bp99.push(r.busy_p99);
        b50.push(r.bus_p50);
        b99.push(r.bus_p99);
    }
    add_floor(report, bp50, bp99);
    let label = "bus request 1 in flight p50";
    report.add("rr1_p50", label, "µs", false, b50, Some("busy_pp_p50"));
    let label = "bus request 1 in flight p99";
    report.add("rr1_p99", label, "µs", false, b99, Some("busy_pp_p99"));
    let n = plan.inflight_count();
    let (mut busy_rate, mut rate, mut window) = (vec![], vec![], vec![]);
    for _ in 0..plan.reps {
        bar.set_message("busy-polling requests, 64 in flight");
        busy_rate.push(busy::requests(64, n, n / 10, 64, Some(plan.cc), Some(plan.sc))?.1);
        bar.inc(1);
        bar.set_message("bus request, 64 in flight");
        rate.push(client.request_reply(64, n, n / 10, 64)?.1);
        bar.inc(1);
        bar.set_message("bus request window, 64 in flight");
        window.push(client.request_window(64, n, n / 10, 64)?.1);
        bar.inc(1);
    }
    let label = "busy-polling raw requests 64 in flight";
    report.add("busy_rr64_rate", label, "replies/s", true, busy_rate, None);
    let label = "bus request 64 in flight";
    report.add(
        "rr64_rate",
        label,
        "replies/s",
        true,
        rate,
        Some("busy_rr64_rate"),
    );
    add_window(report, window);
    client.node.stop();
    Ok(())
}

/// `--one-way-only`: the bus's one-way rate alone, `count` messages of
/// `payload` bytes per repetition (for profiling the send and receive paths).
pub fn one_way_only(
    plan: &Plan,
    payload: usize,
    count: u64,
    report: &mut Report,
    bar: &ProgressBar,
) -> Result<()> {
    let server = ServerProcess::start(&server_args(1, vec![plan.sc], plan.spin_us))?;
    let client = Client::start(server.addr, 1, &[plan.cc], plan.spin())?;
    let mut rates = vec![];
    for _ in 0..plan.reps {
        bar.set_message(format!("one-way {payload} B: bus"));
        rates.push(client.one_way(payload, count)?.msgs_per_sec);
        bar.inc(1);
    }
    let label = format!("bus notify {payload} B");
    let key = format!("sweep_bus_{payload}_msgs");
    report.add(&key, &label, "msg/s", true, rates, None);
    client.node.stop();
    Ok(())
}

/// The request window's 64-in-flight rate, next to the busy-polling raw
/// requests (the same workload from one loop).
pub fn add_window(report: &mut Report, rates: Vec<f64>) {
    report.add(
        "rr64_window_rate",
        "bus request window 64 in flight",
        "replies/s",
        true,
        rates,
        Some("busy_rr64_rate"),
    );
}

/// One repetition of the 1-in-flight round trip: the busy-polling floor,
/// then the bus (µs).
pub struct OneInFlight {
    /// The busy-polling ping-pong's p50.
    pub busy_p50: f64,
    /// Its p99.
    pub busy_p99: f64,
    /// The bus request's p50.
    pub bus_p50: f64,
    /// Its p99.
    pub bus_p99: f64,
    /// Its p99.9.
    pub bus_p999: f64,
}

/// Measures one [`OneInFlight`] repetition (2 progress steps).
pub fn one_in_flight(plan: &Plan, client: &Client, bar: &ProgressBar) -> Result<OneInFlight> {
    let (n, warm) = plan.round_trips();
    let us = |h: &hdrhistogram::Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1e3;
    bar.set_message("round trips: busy-polling ping-pong");
    let (busy, _) = busy::requests(64, n, warm, 1, Some(plan.cc), Some(plan.sc))?;
    bar.inc(1);
    bar.set_message("round trips: bus request, 1 in flight");
    let (bus, _) = client.request_reply(64, n, warm, 1)?;
    bar.inc(1);
    Ok(OneInFlight {
        busy_p50: us(&busy, 0.5),
        busy_p99: us(&busy, 0.99),
        bus_p50: us(&bus, 0.5),
        bus_p99: us(&bus, 0.99),
        bus_p999: us(&bus, 0.999),
    })
}

/// Reports the busy-polling ping-pong's p50 and p99 samples (the floor).
pub fn add_floor(report: &mut Report, p50: Vec<f64>, p99: Vec<f64>) {
    let label = "busy-polling ping-pong p50 (the floor)";
    report.add("busy_pp_p50", label, "µs", false, p50, None);
    let label = "busy-polling ping-pong p99";
    report.add("busy_pp_p99", label, "µs", false, p99, None);
}

/// The one-way rates of `p`-byte messages as bytes on the wire, frames
/// included: the wire baseline's frames carry a 4-byte length, the bus's a
/// 24-byte header. The bus's ratio says how much of the wire's byte rate it
/// reaches while running a handler per message; its msg/s ratio can reach
/// at most `(p + 4) / (p + 24)` of the wire's at the same byte rate.
pub fn add_frame_bytes(report: &mut Report, p: usize, wire_m: &[f64], bus_m: &[f64]) {
    let mb = |rates: &[f64], frame: usize| -> Vec<f64> {
        rates.iter().map(|r| r * frame as f64 / 1e6).collect()
    };
    let wire_frame = p + crate::wire::PREFIX_LEN;
    let bus_frame = p + domi::frame::HEADER_LEN;
    let wire_key = format!("frame_wire_{p}_mbs");
    let label = format!("wire one-way {p} B, frame bytes ({wire_frame} B each)");
    report.add(
        &wire_key,
        &label,
        "MB/s",
        true,
        mb(wire_m, wire_frame),
        None,
    );
    let label = format!("bus notify {p} B, frame bytes ({bus_frame} B each)");
    let key = format!("frame_bus_{p}_mbs");
    report.add(
        &key,
        &label,
        "MB/s",
        true,
        mb(bus_m, bus_frame),
        Some(&wire_key),
    );
}
