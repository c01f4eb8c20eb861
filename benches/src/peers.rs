//! Peer comparisons (`make bench-peers`): ZeroMQ, NATS and Zenoh through the
//! `domi-peers` binary (package `benches/peers`, kept out of the library's
//! dependencies), alternating with bus runs of the same workload so that both
//! see the same machine noise.

use std::path::Path;
use std::process::Command;

use anyhow::{anyhow, ensure, Context, Result};
use indicatif::ProgressBar;
use serde_json::Value;

use crate::bus::{Client, ServerProcess};
use crate::report::Report;
use crate::{server_args, Plan};

fn peer(bin: &Path, plan: &Plan, args: &[&str]) -> Result<Value> {
    let out = Command::new(bin)
        .args(args)
        .args([
            "--cpu-client",
            &plan.cc.to_string(),
            "--cpu-server",
            &plan.sc.to_string(),
        ])
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    ensure!(
        out.status.success(),
        "{} {:?} failed: {}",
        bin.display(),
        args,
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout)?;
    let line = text
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .ok_or_else(|| anyhow!("no JSON from {args:?}"))?;
    Ok(serde_json::from_str(line)?)
}

fn num(v: &Value, key: &str) -> Result<f64> {
    v.get(key)
        .and_then(Value::as_f64)
        .ok_or_else(|| anyhow!("peer output lacks {key}: {v}"))
}

/// Samples by figure key.
type Figures = std::collections::BTreeMap<&'static str, Vec<f64>>;

/// Runs one peer workload (`args`) and adds its `field` to figure `key`.
fn from_peer(
    f: &mut Figures,
    key: &'static str,
    bin: &Path,
    plan: &Plan,
    args: &[&str],
    field: &str,
) -> Result<()> {
    let v = peer(bin, plan, args)?;
    f.entry(key).or_default().push(num(&v, field)?);
    Ok(())
}

/// Runs the peer workloads alternating with the bus.
pub fn run(bin: &Path, plan: &Plan, report: &mut Report, bar: &ProgressBar) -> Result<()> {
    let server = ServerProcess::start(&server_args(1, vec![plan.sc], None))?;
    let client = Client::start(server.addr, 1, &[plan.cc], None)?;
    let count = plan.one_way_count(64).to_string();
    let rr64 = plan.inflight_count().to_string();
    let (rr1, _) = plan.round_trips();
    let rr1 = rr1.to_string();
    let mut f: Figures = Default::default();
    for _ in 0..plan.reps {
        bar.set_message("peers: one-way 64 B");
        f.entry("peers_bus_64_msgs")
            .or_default()
            .push(client.one_way(64, plan.one_way_count(64))?.msgs_per_sec);
        for (key, workload) in [
            ("zmq_push_64_msgs", "zmq-push"),
            ("nats_pub_64_msgs", "nats-pub"),
            ("zenoh_put_64_msgs", "zenoh-put"),
        ] {
            let args = [workload, "--payload", "64", "--count", &count];
            from_peer(&mut f, key, bin, plan, &args, "msgs_per_sec")?;
        }
        bar.inc(2);

        bar.set_message("peers: request, 64 in flight");
        let (_, r) =
            client.request_reply(64, plan.inflight_count(), plan.inflight_count() / 10, 64)?;
        f.entry("peers_bus_rr64_rate").or_default().push(r);
        for (key, workload) in [
            ("zmq_rr64_rate", "zmq-reqrep"),
            ("nats_rr64_rate", "nats-req"),
            ("zenoh_rr64_rate", "zenoh-get"),
        ] {
            let args = [
                workload,
                "--payload",
                "64",
                "--inflight",
                "64",
                "--count",
                &rr64,
            ];
            from_peer(&mut f, key, bin, plan, &args, "replies_per_sec")?;
        }
        bar.inc(2);

        bar.set_message("peers: request, 1 in flight");
        let (n0, w0) = plan.round_trips();
        let (h, _) = client.request_reply(64, n0, w0, 1)?;
        f.entry("peers_bus_rr1_p50")
            .or_default()
            .push(h.value_at_quantile(0.5) as f64 / 1e3);
        for (key, workload) in [
            ("zmq_rr1_p50", "zmq-reqrep"),
            ("nats_rr1_p50", "nats-req"),
            ("zenoh_rr1_p50", "zenoh-get"),
        ] {
            let args = [
                workload,
                "--payload",
                "64",
                "--inflight",
                "1",
                "--count",
                &rr1,
            ];
            from_peer(&mut f, key, bin, plan, &args, "p50_us")?;
        }
        bar.inc(2);
    }
    client.node.stop();
    let mut take = |k: &str| f.remove(k).unwrap_or_default();
    report.add(
        "zmq_push_64_msgs",
        "ZeroMQ PUSH/PULL 64 B",
        "msg/s",
        true,
        take("zmq_push_64_msgs"),
        None,
    );
    report.add(
        "nats_pub_64_msgs",
        "NATS pub/sub 64 B",
        "msg/s",
        true,
        take("nats_pub_64_msgs"),
        None,
    );
    report.add(
        "zenoh_put_64_msgs",
        "Zenoh put/subscribe 64 B (peer to peer)",
        "msg/s",
        true,
        take("zenoh_put_64_msgs"),
        None,
    );
    report.add(
        "peers_bus_64_msgs",
        "bus notify 64 B (alternating run)",
        "msg/s",
        true,
        take("peers_bus_64_msgs"),
        Some("zmq_push_64_msgs"),
    );
    report.add(
        "zmq_rr64_rate",
        "ZeroMQ DEALER/ROUTER 64 in flight",
        "replies/s",
        true,
        take("zmq_rr64_rate"),
        None,
    );
    report.add(
        "nats_rr64_rate",
        "NATS request 64 in flight",
        "replies/s",
        true,
        take("nats_rr64_rate"),
        None,
    );
    report.add(
        "zenoh_rr64_rate",
        "Zenoh get/queryable 64 in flight",
        "replies/s",
        true,
        take("zenoh_rr64_rate"),
        None,
    );
    report.add(
        "peers_bus_rr64_rate",
        "bus request 64 in flight (alternating run)",
        "replies/s",
        true,
        take("peers_bus_rr64_rate"),
        Some("zmq_rr64_rate"),
    );
    report.add(
        "zmq_rr1_p50",
        "ZeroMQ DEALER/ROUTER 1 in flight p50",
        "µs",
        false,
        take("zmq_rr1_p50"),
        None,
    );
    report.add(
        "nats_rr1_p50",
        "NATS request 1 in flight p50",
        "µs",
        false,
        take("nats_rr1_p50"),
        None,
    );
    report.add(
        "zenoh_rr1_p50",
        "Zenoh get/queryable 1 in flight p50",
        "µs",
        false,
        take("zenoh_rr1_p50"),
        None,
    );
    report.add(
        "peers_bus_rr1_p50",
        "bus request 1 in flight p50 (alternating run)",
        "µs",
        false,
        take("peers_bus_rr1_p50"),
        Some("zmq_rr1_p50"),
    );
    Ok(())
}
