//! `make bench`: domi's throughput, latency and memory next to baselines
//! measured in the same run on the same CPUs.
//!
//! Run: `make bench` (full), `cargo run -p domi-bench -- --quick` (seconds; part
//! of `make test` so the benchmark never rots), `make bench-peers` (adds
//! ZeroMQ and NATS through the `domi-peers` binary of `benches/peers`).
//!
//! Placement: the client node (or sending thread) on CPU 0, the server node
//! (or receiving thread) in a child process on CPU 1. Every figure is the
//! median of `--reps` repetitions, with min and max in the report.

mod bus;
mod busy;
mod cluster;
mod hot;
mod peers;
mod plot;
mod policies;
mod report;
mod scale;
mod server;
mod tls;
mod wire;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use crate::bus::{Client, ServerProcess};
use crate::report::Report;
use crate::server::ServerArgs;

#[derive(Parser)]
#[command(about = "domi benchmarks against same-run baselines")]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum Cmd {
    /// Internal: the server node role (a child process of the bench).
    #[command(hide = true)]
    Server(ServerArgs),
    /// Internal: a node of the cluster run (a child process of `cluster`).
    #[command(hide = true)]
    ScaleNode(cluster::node::NodeArgs),
    /// A real cluster on this machine (`make scale`): cold start, tables,
    /// round-robin, mass kill, restart, churn, idle cost.
    Cluster(cluster::ClusterArgs),
    /// Cluster scale: 1024 records in a private etcd, time until a watcher holds them.
    Scale {
        /// Records to register.
        #[arg(long, default_value_t = 1023)]
        records: u16,
        /// Channels per record.
        #[arg(long, default_value_t = 16)]
        channels: u16,
    },
}

#[derive(clap::Args, Clone)]
struct RunArgs {
    /// Small counts: checks that everything runs, figures are not meaningful.
    #[arg(long)]
    quick: bool,
    /// Repetitions per figure.
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Where the report goes.
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
    /// Path of the `domi-peers` binary: also measure ZeroMQ and NATS.
    #[arg(long)]
    peers: Option<PathBuf>,
    /// With `--peers`: run only the peer comparisons.
    #[arg(long)]
    peers_only: bool,
    /// Run only the TLS on/off comparison (for profiling it).
    #[arg(long)]
    tls_only: bool,
    /// Run only the hot-path figures: one-way 16 B and 64 B, 64 requests in
    /// flight, each next to its baseline (for profiling them).
    #[arg(long)]
    hot_only: bool,
    /// Run only the bus's one-way `notify` of this many payload bytes, with
    /// no baseline (what `benches/profile-one-way.sh` records).
    #[arg(long, conflicts_with_all = ["hot_only", "tls_only", "peers_only", "peers"])]
    one_way_only: Option<usize>,
    /// With `--one-way-only`: messages per repetition (default: as many as
    /// the full run sends of that size).
    #[arg(long, requires = "one_way_only")]
    messages: Option<u64>,
    /// Spin this many µs before parking in every bus node of the main runs
    /// (default: the nodes' default, 50 µs; 0 parks at once).
    #[arg(long)]
    spin_us: Option<u64>,
    /// CPU of the client side.
    #[arg(long, default_value_t = 0)]
    client_cpu: usize,
    /// CPU of the server side.
    #[arg(long, default_value_t = 1)]
    server_cpu: usize,
}

pub(crate) struct Plan {
    quick: bool,
    spin_us: Option<u64>,
    reps: usize,
    cc: usize,
    sc: usize,
}

impl Plan {
    fn spin(&self) -> Option<Duration> {
        self.spin_us.map(Duration::from_micros)
    }
    fn one_way_count(&self, payload: usize) -> u64 {
        let (bytes, lo, hi) = if self.quick {
            (2e6, 100.0, 20_000.0)
        } else {
            (256e6, 2_000.0, 4_000_000.0)
        };
        (bytes / payload as f64).clamp(lo, hi) as u64
    }
    fn round_trips(&self) -> (u64, u64) {
        if self.quick {
            (300, 30)
        } else {
            (20_000, 2_000)
        }
    }
    fn inflight_count(&self) -> u64 {
        if self.quick {
            2_000
        } else {
            200_000
        }
    }
}

pub(crate) fn server_args(shards: usize, cpus: Vec<usize>, spin_us: Option<u64>) -> ServerArgs {
    ServerArgs {
        shards,
        cpus,
        io_memory: 10 << 20,
        spin_us,
        tls_dir: None,
        rate_limit: None,
    }
}

fn environment(plan: &Plan, args: &RunArgs) -> Vec<(String, String)> {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown".into());
    vec![
        ("date (unix s)".into(), format!("{}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0))),
        ("machine".into(), format!("{cpu}, {} CPUs", domi_available_cpus())),
        ("kernel".into(), read("/proc/sys/kernel/osrelease").trim().to_owned()),
        ("placement".into(), format!("client node / sending thread on CPU {}, server node / receiving thread (child process) on CPU {}; 2-shard runs use both CPUs on each side", args.client_cpu, args.server_cpu)),
        ("settings".into(), format!("{} repetitions per figure, mode {}, glommio io_memory 10 MiB per shard, loopback TCP, TCP_NODELAY, spin before park in the main runs: {}", plan.reps, if plan.quick { "quick" } else { "full" }, plan.spin_us.map_or("node default (50 µs)".to_string(), |us| format!("{us} µs")))),
    ]
}

fn domi_available_cpus() -> usize {
    domi::NodeConfig::new("x").shards
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let cli = Cli::parse();
    match cli.cmd {
        Some(Cmd::Server(a)) => return server::run(a),
        Some(Cmd::ScaleNode(a)) => return cluster::node::run(a),
        Some(Cmd::Cluster(a)) => return cluster::run(a),
        Some(Cmd::Scale { records, channels }) => return scale::run(records, channels),
        None => {}
    }
    let args = cli.run;
    let plan = Plan {
        quick: args.quick,
        spin_us: args.spin_us,
        reps: args.reps.max(1),
        cc: args.client_cpu,
        sc: args.server_cpu,
    };
    let mut report = Report {
        environment: environment(&plan, &args),
        ..Report::default()
    };
    let core_steps = if args.peers_only {
        0
    } else if args.hot_only {
        hot::STEPS
    } else if args.one_way_only.is_some() {
        1
    } else {
        plot::SWEEP.len() * 2 + 11 + tls::STEPS + policies::STEPS
    };
    let steps = (core_steps + if args.peers.is_some() { 6 } else { 0 }) * plan.reps;
    let bar = ProgressBar::new(steps as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );

    if args.hot_only {
        hot::run(&plan, &mut report, &bar)?;
    } else if let Some(payload) = args.one_way_only {
        let count = args.messages.unwrap_or_else(|| plan.one_way_count(payload));
        hot::one_way_only(&plan, payload, count, &mut report, &bar)?;
    } else if !(args.peers_only && args.peers.is_some()) {
        if !args.tls_only {
            run_single_shard(&plan, &mut report, &bar)?;
            run_two_shards(&plan, &mut report, &bar)?;
        }
        tls::run(&plan, &mut report, &bar)?;
        if !args.tls_only {
            policies::run(&plan, &mut report, &bar)?;
        }
    }
    if let Some(bin) = &args.peers {
        peers::run(bin, &plan, &mut report, &bar)?;
    }
    bar.finish_and_clear();
    targets(&mut report, &plan);

    let table = report.table();
    #[allow(clippy::print_stdout)]
    {
        println!("{table}");
        println!("report: {}", args.out.join("report.md").display());
    }
    report.write(&args.out, "domi benchmark report")?;
    Ok(())
}

fn run_single_shard(plan: &Plan, report: &mut Report, bar: &ProgressBar) -> Result<()> {
    let server = ServerProcess::start(&server_args(1, vec![plan.sc], plan.spin_us))?;
    let client = Client::start(server.addr, 1, &[plan.cc], plan.spin())?;
    let mut rss_under_load = Vec::new();
    for &p in &plot::SWEEP {
        let count = plan.one_way_count(p);
        let (mut wire_m, mut wire_b, mut bus_m, mut bus_b) = (vec![], vec![], vec![], vec![]);
        for _ in 0..plan.reps {
            bar.set_message(format!("one-way {p} B: wire"));
            let w = wire::one_way(p, count, Some(plan.cc), Some(plan.sc))?;
            bar.inc(1);
            bar.set_message(format!("one-way {p} B: bus"));
            let b = client.one_way(p, count)?;
            bar.inc(1);
            if p == 64 {
                rss_under_load.push(server.rss()? as f64 / (1 << 20) as f64);
            }
            wire_m.push(w.msgs_per_sec);
            wire_b.push(w.mb_per_sec);
            bus_m.push(b.msgs_per_sec);
            bus_b.push(b.mb_per_sec);
        }
        if p == 16 || p == 64 {
            hot::add_frame_bytes(report, p, &wire_m, &bus_m);
        }
        report.add(
            &format!("sweep_wire_{p}_msgs"),
            &format!("wire one-way {p} B"),
            "msg/s",
            true,
            wire_m,
            None,
        );
        report.add(
            &format!("sweep_bus_{p}_msgs"),
            &format!("bus notify {p} B"),
            "msg/s",
            true,
            bus_m,
            Some(&format!("sweep_wire_{p}_msgs")),
        );
        report.add(
            &format!("sweep_wire_{p}_mbs"),
            &format!("wire one-way {p} B"),
            "MB/s",
            true,
            wire_b,
            None,
        );
        report.add(
            &format!("sweep_bus_{p}_mbs"),
            &format!("bus notify {p} B"),
            "MB/s",
            true,
            bus_b,
            Some(&format!("sweep_wire_{p}_mbs")),
        );
    }
    report.add(
        "rss_load_first_mib",
        "server RSS under one-way load, first rep",
        "MiB",
        false,
        vec![rss_under_load[0]],
        None,
    );
    report.add(
        "rss_load_last_mib",
        "server RSS under one-way load, last rep",
        "MiB",
        false,
        vec![*rss_under_load.last().unwrap_or(&0.0)],
        None,
    );

    let (n, warm) = plan.round_trips();
    let (mut pp50, mut pp99, mut pp999, mut b50, mut b99, mut b999) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    let (mut bp50, mut bp99) = (vec![], vec![]);
    for _ in 0..plan.reps {
        bar.set_message("round trips: std ping-pong");
        let h = wire::ping_pong(64, n, warm, Some(plan.cc), Some(plan.sc))?;
        pp50.push(h.value_at_quantile(0.5) as f64 / 1e3);
        pp99.push(h.value_at_quantile(0.99) as f64 / 1e3);
        pp999.push(h.value_at_quantile(0.999) as f64 / 1e3);
        bar.inc(1);
        let r = hot::one_in_flight(plan, &client, bar)?;
        bp50.push(r.busy_p50);
        bp99.push(r.busy_p99);
        b50.push(r.bus_p50);
        b99.push(r.bus_p99);
        b999.push(r.bus_p999);
    }
    report.add(
        "wire_pp_p50",
        "std blocking ping-pong p50",
        "µs",
        false,
        pp50,
        None,
    );
    report.add(
        "wire_pp_p99",
        "std blocking ping-pong p99",
        "µs",
        false,
        pp99,
        None,
    );
    report.add(
        "wire_pp_p999",
        "std blocking ping-pong p99.9",
        "µs",
        false,
        pp999,
        None,
    );
    hot::add_floor(report, bp50, bp99);
    report.add(
        "rr1_p50",
        "bus request 1 in flight p50",
        "µs",
        false,
        b50,
        Some("wire_pp_p50"),
    );
    report.add(
        "rr1_p99",
        "bus request 1 in flight p99",
        "µs",
        false,
        b99,
        Some("wire_pp_p99"),
    );
    report.add(
        "rr1_p999",
        "bus request 1 in flight p99.9",
        "µs",
        false,
        b999,
        Some("wire_pp_p999"),
    );

    let (mut rate, mut p99, mut busy_rate, mut window) = (vec![], vec![], vec![], vec![]);
    for _ in 0..plan.reps {
        bar.set_message("busy-polling requests, 64 in flight");
        let (_, r) = busy::requests(
            64,
            plan.inflight_count(),
            plan.inflight_count() / 10,
            64,
            Some(plan.cc),
            Some(plan.sc),
        )?;
        busy_rate.push(r);
        bar.inc(1);
        bar.set_message("bus request, 64 in flight");
        let (h, r) =
            client.request_reply(64, plan.inflight_count(), plan.inflight_count() / 10, 64)?;
        rate.push(r);
        p99.push(h.value_at_quantile(0.99) as f64 / 1e3);
        bar.inc(1);
        bar.set_message("bus request window, 64 in flight");
        let n = plan.inflight_count();
        window.push(client.request_window(64, n, n / 10, 64)?.1);
        bar.inc(1);
    }
    report.add(
        "busy_rr64_rate",
        "busy-polling raw requests 64 in flight",
        "replies/s",
        true,
        busy_rate,
        None,
    );
    report.add(
        "rr64_rate",
        "bus request 64 in flight",
        "replies/s",
        true,
        rate,
        Some("busy_rr64_rate"),
    );
    report.add(
        "rr64_p99",
        "bus request 64 in flight p99",
        "µs",
        false,
        p99,
        None,
    );
    hot::add_window(report, window);
    client.node.stop();
    drop(server);

    // The other setting: both nodes park at once (no spinning), next to the
    // default (spin 50 µs before parking).
    let server = ServerProcess::start(&server_args(1, vec![plan.sc], Some(0)))?;
    let client = Client::start(server.addr, 1, &[plan.cc], Some(Duration::ZERO))?;
    let (mut s50, mut s99) = (vec![], vec![]);
    for _ in 0..plan.reps {
        bar.set_message("bus request, park at once (no spin)");
        let (h, _) = client.request_reply(64, n, warm, 1)?;
        s50.push(h.value_at_quantile(0.5) as f64 / 1e3);
        s99.push(h.value_at_quantile(0.99) as f64 / 1e3);
        bar.inc(1);
    }
    report.add(
        "rr1_nospin_p50",
        "bus request 1 in flight p50, park at once (no spin)",
        "µs",
        false,
        s50,
        Some("wire_pp_p50"),
    );
    report.add(
        "rr1_nospin_p99",
        "bus request 1 in flight p99, park at once (no spin)",
        "µs",
        false,
        s99,
        Some("wire_pp_p99"),
    );
    client.node.stop();
    Ok(())
}

fn run_two_shards(plan: &Plan, report: &mut Report, bar: &ProgressBar) -> Result<()> {
    let cpus_s = vec![plan.sc, plan.cc];
    let idle = ServerProcess::start(&server_args(2, cpus_s.clone(), None))?;
    let idle_rss = idle.rss()? as f64 / (1 << 20) as f64;
    // CPU an idle node burns (housekeeping ticks, spinning after each).
    let before = idle.cpu_seconds()?;
    let window = Duration::from_secs(2);
    std::thread::sleep(window);
    let idle_cpu = (idle.cpu_seconds()? - before) / window.as_secs_f64() * 100.0;
    drop(idle);
    report.add(
        "cpu_idle_2_shards_pct",
        "idle node CPU, 2 shards (both CPUs' time summed)",
        "%",
        false,
        vec![idle_cpu],
        None,
    );
    report.add(
        "rss_idle_2_shards_mib",
        "idle node RSS, 2 shards",
        "MiB",
        false,
        vec![idle_rss],
        None,
    );

    // 2+2 shards put two shards on each of this machine's CPUs: spinning
    // shards would steal each other's time, so these park at once.
    let server = ServerProcess::start(&server_args(2, cpus_s, Some(0)))?;
    let client = Client::start(server.addr, 2, &[plan.cc, plan.sc], Some(Duration::ZERO))?;
    let (mut m, mut r) = (vec![], vec![]);
    for _ in 0..plan.reps {
        bar.set_message("2 shards: one-way 64 B");
        m.push(client.one_way(64, plan.one_way_count(64))?.msgs_per_sec);
        bar.inc(1);
        bar.set_message("2 shards: request, 64 in flight per shard");
        r.push(
            client
                .request_reply(
                    64,
                    plan.inflight_count() / 2,
                    plan.inflight_count() / 20,
                    64,
                )?
                .1,
        );
        bar.inc(1);
    }
    report.add(
        "shards2_oneway_64_msgs",
        "2+2 shards (no spin): bus notify 64 B",
        "msg/s",
        true,
        m,
        Some("sweep_bus_64_msgs"),
    );
    report.add(
        "shards2_rr64_rate",
        "2+2 shards (no spin): request 64 in flight/shard",
        "replies/s",
        true,
        r,
        Some("rr64_rate"),
    );
    client.node.stop();
    Ok(())
}

fn targets(report: &mut Report, plan: &Plan) {
    report.target_ratio(
        "one-way 64 B ≥ 60% of wire msg/s",
        "sweep_bus_64_msgs",
        "sweep_wire_64_msgs",
        0.6,
        true,
    );
    report.target_ratio(
        "one-way 16 B ≥ 30% of wire msg/s",
        "sweep_bus_16_msgs",
        "sweep_wire_16_msgs",
        0.3,
        true,
    );
    report.target_ratio(
        "one-way 64 B ≥ 3× ZeroMQ PUSH/PULL",
        "peers_bus_64_msgs",
        "zmq_push_64_msgs",
        3.0,
        true,
    );
    report.target_ratio(
        "one-way 1 KiB ≥ 60% of wire MB/s",
        "sweep_bus_1024_mbs",
        "sweep_wire_1024_mbs",
        0.6,
        true,
    );
    report.target_ratio(
        "request 1 in flight p50 ≤ 1.25× std ping-pong p50",
        "rr1_p50",
        "wire_pp_p50",
        1.25,
        false,
    );
    report.target_ratio(
        "request 1 in flight p50 ≤ 1.5× busy-polling ping-pong p50",
        "rr1_p50",
        "busy_pp_p50",
        1.5,
        false,
    );
    report.target_ratio(
        "request 1 in flight p99 ≤ 2× busy-polling ping-pong p99",
        "rr1_p99",
        "busy_pp_p99",
        2.0,
        false,
    );
    report.target_ratio(
        "request 64 in flight ≥ 1× busy-polling raw requests",
        "rr64_rate",
        "busy_rr64_rate",
        1.0,
        true,
    );
    report.target_ratio(
        "request window 64 in flight ≥ 1× busy-polling raw requests",
        "rr64_window_rate",
        "busy_rr64_rate",
        1.0,
        true,
    );
    report.target_ratio(
        "one-way 64 B ≥ 2× Zenoh put/subscribe",
        "peers_bus_64_msgs",
        "zenoh_put_64_msgs",
        2.0,
        true,
    );
    report.target_ratio(
        "request 64 in flight ≥ 2× Zenoh get/queryable",
        "peers_bus_rr64_rate",
        "zenoh_rr64_rate",
        2.0,
        true,
    );
    report.target_ratio(
        "request 1 in flight p50 ≤ 0.5× Zenoh get/queryable",
        "peers_bus_rr1_p50",
        "zenoh_rr1_p50",
        0.5,
        false,
    );
    report.target_ratio(
        "request 64 in flight ≥ 2× ZeroMQ DEALER/ROUTER",
        "peers_bus_rr64_rate",
        "zmq_rr64_rate",
        2.0,
        true,
    );
    tls::targets(report);
    let idle = report.get("rss_idle_2_shards_mib").map(|f| f.median);
    report.target_value(
        "idle node, 2 shards: RSS ≤ 64 MiB",
        idle.map(|v| format!("{v:.1} MiB")).unwrap_or_default(),
        idle.map(|v| v <= 64.0),
    );
    let first = report.get("rss_load_first_mib").map(|f| f.median);
    let last = report.get("rss_load_last_mib").map(|f| f.median);
    let flat = match (first, last) {
        (Some(a), Some(b)) => Some((
            format!("{a:.1} → {b:.1} MiB over {} reps", plan.reps),
            b <= a * 1.1 + 1.0,
        )),
        _ => None,
    };
    report.target_value(
        "RSS flat under load (≤ 10% growth across reps)",
        flat.as_ref().map(|f| f.0.clone()).unwrap_or_default(),
        flat.map(|f| f.1),
    );
}
