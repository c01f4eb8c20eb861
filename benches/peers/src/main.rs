//! domi-peers: measures the peer message systems ZeroMQ, NATS and Zenoh on loopback,
//! one workload per invocation, so that domi's benchmark harness can compare
//! their figures with domi's. Prints exactly one JSON line on stdout; logs and
//! progress go to stderr. Every run has an overall deadline (`--deadline-s`),
//! after which it fails instead of hanging.
//!
//! Run (from the repository root):
//!   cargo build --release --manifest-path benches/peers/Cargo.toml
//!   benches/peers/target/release/domi-peers zmq-push   --payload 64 --count 200000
//!   benches/peers/target/release/domi-peers zmq-reqrep --payload 64 --count 20000 --inflight 64
//!   benches/peers/target/release/domi-peers nats-pub   --payload 64 --count 200000
//!   benches/peers/target/release/domi-peers nats-req   --payload 64 --count 20000 --inflight 1
//!   benches/peers/target/release/domi-peers zenoh-put  --payload 64 --count 200000
//!   benches/peers/target/release/domi-peers zenoh-get  --payload 64 --count 20000 --inflight 64
//! each optionally with `--warmup N --cpu-server C --cpu-client C --deadline-s S`.
//! The nats-* workloads start a private `nats-server` (from PATH, or
//! `--nats-server PATH`) on a free loopback port and stop it at the end.

mod nats_peer;
mod zenoh_peer;
mod zmq_peer;

use std::process::Child;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::{Args, Parser, Subcommand};
use hdrhistogram::Histogram;
use serde_json::{json, Value};

#[derive(Parser)]
#[command(
    name = "domi-peers",
    about = "ZeroMQ and NATS loopback figures for domi's peer comparison (one JSON line on stdout)"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// ZeroMQ PUSH -> PULL over TCP loopback; rate counted at the receiver.
    ZmqPush(Common),
    /// ZeroMQ DEALER -> ROUTER echo; round-trip latencies and reply rate.
    ZmqReqrep(ReqArgs),
    /// NATS publish -> subscribe through a private nats-server; rate counted at the subscriber.
    NatsPub(NatsCommon),
    /// NATS request -> responder through a private nats-server; latencies and reply rate.
    NatsReq(NatsReq),
    /// Zenoh put -> subscriber, peer to peer over TCP loopback; rate counted at the subscriber.
    ZenohPut(Common),
    /// Zenoh get -> queryable echo, peer to peer over TCP loopback; latencies and reply rate.
    ZenohGet(ReqArgs),
    /// The server side of the zenoh workloads (started by them, in its own process).
    #[command(hide = true)]
    ZenohServe(ZenohServe),
}

/// The zenoh server side's settings.
#[derive(Args, Clone, Debug)]
pub struct ZenohServe {
    /// `sub` or `queryable`.
    #[arg(long)]
    pub role: String,
    /// The address to listen on.
    #[arg(long)]
    pub listen: String,
    /// Payload size in bytes.
    #[arg(long)]
    pub payload: usize,
    /// Samples to expect in all (role `sub`).
    #[arg(long)]
    pub count: u64,
    /// Samples before the clock starts (role `sub`).
    #[arg(long)]
    pub warmup: u64,
}

/// Options shared by every workload.
#[derive(Args, Clone, Debug)]
pub struct Common {
    /// Payload size in bytes.
    #[arg(long, default_value_t = 64)]
    pub payload: usize,
    /// Messages (one-way) or round trips (request/reply) that count in the figures.
    #[arg(long)]
    pub count: u64,
    /// Messages or round trips run first and left out of the figures [default: count/10].
    #[arg(long)]
    pub warmup: Option<u64>,
    /// CPU for the server side (receiver / responder, and for NATS the nats-server).
    #[arg(long)]
    pub cpu_server: Option<usize>,
    /// CPU for the client side (sender / requester).
    #[arg(long)]
    pub cpu_client: Option<usize>,
    /// Overall deadline of the run in seconds; past it the run fails.
    #[arg(long, default_value_t = 120)]
    pub deadline_s: u64,
}

impl Common {
    pub fn warmup(&self) -> u64 {
        self.warmup.unwrap_or(self.count / 10)
    }
    pub fn total(&self) -> u64 {
        self.count + self.warmup()
    }
}

#[derive(Args, Clone, Debug)]
pub struct ReqArgs {
    #[command(flatten)]
    pub common: Common,
    /// Requests outstanding at once (above 1, needs --payload >= 8 for the
    /// sequence number that matches replies to requests).
    #[arg(long, default_value_t = 1)]
    pub inflight: usize,
}

#[derive(Args, Clone, Debug)]
pub struct NatsCommon {
    #[command(flatten)]
    pub common: Common,
    /// The nats-server executable.
    #[arg(long, default_value = "nats-server")]
    pub nats_server: String,
}

#[derive(Args, Clone, Debug)]
pub struct NatsReq {
    #[command(flatten)]
    pub nats: NatsCommon,
    /// Requests outstanding at once (K tasks, each doing sequential requests).
    #[arg(long, default_value_t = 1)]
    pub inflight: usize,
}

/// A child process (the nats-server) that the deadline watchdog must also
/// kill, since `process::exit` runs no destructors.
pub static CHILD: Mutex<Option<Child>> = Mutex::new(None);

/// Kills and reaps the registered child, if any.
pub fn kill_child() {
    let taken = CHILD.lock().map(|mut c| c.take()).unwrap_or(None);
    if let Some(mut c) = taken {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// Pins the calling thread to `cpu` (threads and processes it starts later
/// inherit the mask).
pub fn pin(cpu: Option<usize>, what: &str) -> Result<()> {
    let Some(cpu) = cpu else { return Ok(()) };
    let ids = core_affinity::get_core_ids().unwrap_or_default();
    let Some(id) = ids.into_iter().find(|c| c.id == cpu) else {
        bail!("--cpu-{what} {cpu}: no such CPU available to this process");
    };
    if !core_affinity::set_for_current(id) {
        bail!("could not pin the {what} thread to CPU {cpu}");
    }
    Ok(())
}

/// One-way figures from the rate measured at the receiver.
pub fn one_way_json(system: &str, workload: &str, c: &Common, rate: f64) -> Value {
    json!({
        "system": system,
        "workload": workload,
        "payload": c.payload,
        "count": c.count,
        "msgs_per_sec": rate,
        "mb_per_sec": rate * c.payload as f64 / 1e6,
    })
}

/// Request/reply figures from latencies in ns and the measured interval.
pub fn req_json(
    system: &str,
    workload: &str,
    c: &Common,
    inflight: usize,
    hist: &Histogram<u64>,
    secs: f64,
) -> Value {
    let us = |q: f64| hist.value_at_quantile(q) as f64 / 1e3;
    json!({
        "system": system,
        "workload": workload,
        "payload": c.payload,
        "inflight": inflight,
        "count": c.count,
        "replies_per_sec": c.count as f64 / secs.max(1e-9),
        "p50_us": us(0.5),
        "p99_us": us(0.99),
        "p999_us": us(0.999),
    })
}

/// A latency histogram in ns (3 significant digits, auto-resizing).
pub fn new_hist() -> Histogram<u64> {
    Histogram::new(3).expect("histogram")
}

fn check(c: &Common) -> Result<()> {
    if c.count == 0 {
        bail!("--count must be at least 1");
    }
    Ok(())
}

fn check_inflight(c: &Common, inflight: usize, tagged: bool) -> Result<()> {
    if inflight == 0 {
        bail!("--inflight must be at least 1");
    }
    if tagged && inflight > 1 && c.payload < 8 {
        bail!("--inflight {inflight} needs --payload >= 8 (requests carry a sequence number)");
    }
    Ok(())
}

fn run(cmd: Cmd) -> Result<Value> {
    match cmd {
        Cmd::ZmqPush(c) => {
            check(&c)?;
            zmq_peer::push_pull(&c)
        }
        Cmd::ZmqReqrep(r) => {
            check(&r.common)?;
            check_inflight(&r.common, r.inflight, true)?;
            zmq_peer::dealer_router(&r.common, r.inflight)
        }
        Cmd::NatsPub(n) => {
            check(&n.common)?;
            nats_peer::pub_sub(&n)
        }
        Cmd::NatsReq(r) => {
            check(&r.nats.common)?;
            check_inflight(&r.nats.common, r.inflight, false)?;
            nats_peer::request(&r.nats, r.inflight)
        }
        Cmd::ZenohPut(c) => {
            check(&c)?;
            zenoh_peer::put_sub(&c)
        }
        Cmd::ZenohGet(r) => {
            check(&r.common)?;
            check_inflight(&r.common, r.inflight, false)?;
            zenoh_peer::get_queryable(&r.common, r.inflight)
        }
        Cmd::ZenohServe(z) => {
            zenoh_peer::serve(&z.role, &z.listen, z.payload, z.count, z.warmup)?;
            std::process::exit(0);
        }
    }
}

fn main() {
    let cli = Cli::parse();
    let deadline = match &cli.cmd {
        Cmd::ZmqPush(c) => c.deadline_s,
        Cmd::ZmqReqrep(r) => r.common.deadline_s,
        Cmd::NatsPub(n) => n.common.deadline_s,
        Cmd::NatsReq(r) => r.nats.common.deadline_s,
        Cmd::ZenohPut(c) => c.deadline_s,
        Cmd::ZenohGet(r) => r.common.deadline_s,
        Cmd::ZenohServe(_) => 600,
    };
    std::thread::Builder::new()
        .name("deadline".into())
        .spawn(move || {
            std::thread::sleep(Duration::from_secs(deadline));
            eprintln!(
                "domi-peers: error: run exceeded its deadline of {deadline} s (--deadline-s)"
            );
            kill_child();
            std::process::exit(3);
        })
        .expect("deadline thread");
    match run(cli.cmd) {
        Ok(v) => {
            kill_child();
            println!("{v}");
        }
        Err(e) => {
            kill_child();
            eprintln!("domi-peers: error: {e:#}");
            std::process::exit(1);
        }
    }
}
