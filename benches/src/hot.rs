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
pub const STEPS: usize = 8;

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
        let wire_key = format!("sweep_wire_{p}_msgs");
        let label = format!("wire one-way {p} B");
        report.add(&wire_key, &label, "msg/s", true, wire_m, None);
        let label = format!("bus notify {p} B");
        let key = format!("sweep_bus_{p}_msgs");
        report.add(&key, &label, "msg/s", true, bus_m, Some(&wire_key));
    }
    let (n, warm) = plan.round_trips();
    let (mut bp50, mut bp99, mut b50, mut b99) = (vec![], vec![], vec![], vec![]);
    for _ in 0..plan.reps {
        bar.set_message("round trips: busy-polling ping-pong");
        let (h, _) = busy::requests(64, n, warm, 1, Some(plan.cc), Some(plan.sc))?;
        bp50.push(h.value_at_quantile(0.5) as f64 / 1e3);
        bp99.push(h.value_at_quantile(0.99) as f64 / 1e3);
        bar.inc(1);
        bar.set_message("round trips: bus request, 1 in flight");
        let (h, _) = client.request_reply(64, n, warm, 1)?;
        b50.push(h.value_at_quantile(0.5) as f64 / 1e3);
        b99.push(h.value_at_quantile(0.99) as f64 / 1e3);
        bar.inc(1);
    }
    let label = "busy-polling ping-pong p50 (the floor)";
    report.add("busy_pp_p50", label, "µs", false, bp50, None);
    report.add(
        "busy_pp_p99",
        "busy-polling ping-pong p99",
        "µs",
        false,
        bp99,
        None,
    );
    let label = "bus request 1 in flight p50";
    report.add("rr1_p50", label, "µs", false, b50, Some("busy_pp_p50"));
    let label = "bus request 1 in flight p99";
    report.add("rr1_p99", label, "µs", false, b99, Some("busy_pp_p99"));
    let n = plan.inflight_count();
    let (mut busy_rate, mut rate) = (vec![], vec![]);
    for _ in 0..plan.reps {
        bar.set_message("busy-polling requests, 64 in flight");
        busy_rate.push(busy::requests(64, n, n / 10, 64, Some(plan.cc), Some(plan.sc))?.1);
        bar.inc(1);
        bar.set_message("bus request, 64 in flight");
        rate.push(client.request_reply(64, n, n / 10, 64)?.1);
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
    client.node.stop();
    Ok(())
}
