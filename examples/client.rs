//! A load-generating client for the `server` example: sends `--count`
//! requests of `--payload` bytes to `--channel`, keeping `--concurrency`
//! requests in flight, and reports round-trip latency and throughput.
//! The requests come from one task per request in flight, or with
//! `--window` from one task through a request window
//! (`LocalBus::request_window`).
//!
//! Run (with a server started by `cargo run --release --example server -- --tcp 127.0.0.1:7000`):
//! `cargo run --release --example client -- --peer 127.0.0.1:7000 --count 100000 --concurrency 16`
//!
//! Or against a cluster in etcd (servers started with the same `--etcd`/`--cluster`):
//! `cargo run --release --example client -- --etcd http://127.0.0.1:2379 --cluster demo --providers 2`
//! (a secured etcd takes the server's `--etcd-ca --etcd-cert --etcd-key --etcd-user`,
//! the password in `DOMI_ETCD_PASSWORD`).
//!
//! Prints one summary line to stdout (a JSON object with `--json`); exits with
//! status 0 if every request got a reply, 1 otherwise. Logs go to stderr; set
//! `RUST_LOG` (default `info`).

#![allow(clippy::print_stdout)] // an example program: its output is the point.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use domi::{Channel, Node};
use hdrhistogram::Histogram;
use tracing::warn;

#[path = "shared/bus_tls.rs"]
mod bus_tls;
#[path = "shared/etcd_security.rs"]
mod etcd_security;
use bus_tls::BusTls;
use etcd_security::EtcdSecurity;

/// How long to wait for every peer to serve the channel.
const PROVIDERS_WITHIN: Duration = Duration::from_secs(10);

/// How many failed requests are logged individually.
const LOGGED_ERRORS: u64 = 5;

#[derive(Parser)]
#[command(about = "Drives request/reply load against domi servers")]
struct Args {
    /// A server's bus address (repeatable; at least one unless `--etcd`).
    #[arg(
        long = "peer",
        required_unless_present = "etcd",
        conflicts_with = "etcd"
    )]
    peers: Vec<SocketAddr>,
    /// Bus address to bind (port 0 picks a free port; 0.0.0.0 listens on
    /// every interface).
    #[arg(long, default_value = "127.0.0.1:0")]
    tcp: SocketAddr,
    /// Bus address to tell the cluster when peers reach this node at
    /// another address than `--tcp` (port 0: the bound port).
    #[arg(long)]
    advertise: Option<SocketAddr>,
    /// Providers to wait for before starting (default: one per `--peer`, or 1 with `--etcd`).
    #[arg(long)]
    providers: Option<usize>,
    /// Spin this many microseconds before parking an idle shard (lower
    /// latency for more CPU; 0 parks at once).
    #[arg(long)]
    spin_us: Option<u64>,
    /// Pin shard i to the i-th of these CPUs (comma-separated); pinned
    /// shards also spin before parking (see --spin-us). Default: unpinned.
    #[arg(long, value_delimiter = ',')]
    cpus: Vec<usize>,
    /// Requests to send in total.
    #[arg(long, default_value_t = 10_000)]
    count: u64,
    /// Requests kept in flight.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    concurrency: u64,
    /// Keep them in flight from one task through a request window instead
    /// of one task each.
    #[arg(long)]
    window: bool,
    /// Request payload bytes.
    #[arg(long, default_value_t = 64)]
    payload: usize,
    /// Channel the requests go to.
    #[arg(long, default_value_t = 50)]
    channel: u16,
    /// Per-request timeout, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    timeout_ms: u64,
    /// Print the summary as one JSON object.
    #[arg(long)]
    json: bool,
    /// Cluster name; must match the servers'.
    #[arg(long, default_value = "default")]
    cluster: String,
    /// This node's id, 0..=1023 (static membership; derived from the address if unset).
    #[arg(long, conflicts_with = "etcd")]
    node_id: Option<u16>,
    /// Join the cluster through etcd at these endpoints (comma-separated)
    /// instead of static `--peer`s; the id then comes from etcd.
    #[arg(long, value_delimiter = ',')]
    etcd: Vec<String>,
    #[command(flatten)]
    etcd_security: EtcdSecurity,
    #[command(flatten)]
    bus_tls: BusTls,
}

/// What the load run measured.
struct Summary {
    sent: u64,
    replies: u64,
    errors: u64,
    p50_us: u64,
    p99_us: u64,
    elapsed: Duration,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let mut peers = args.peers.clone();
    peers.sort_unstable();
    peers.dedup();
    let channel = Channel(args.channel);

    let mut builder = Node::builder("client")
        .tcp(args.tcp)
        .cluster(args.cluster.clone())
        .shards(1)
        .small()
        .peers(peers.iter().copied());
    if !args.cpus.is_empty() {
        builder = builder.cpus(args.cpus.clone());
    }
    if let Some(us) = args.spin_us {
        builder = builder.spin_before_park(std::time::Duration::from_micros(us));
    }
    if let Some(id) = args.node_id {
        builder = builder.node_id(domi::NodeId::try_from(id)?);
    }
    if let Some(addr) = args.advertise {
        builder = builder.advertise(addr);
    }
    if !args.etcd.is_empty() {
        builder = builder.etcd(args.etcd.clone());
        builder = args.etcd_security.apply(&args.etcd, builder)?;
    }
    builder = args.bus_tls.apply(builder)?;
    let node = builder.start().context("starting the client node")?;
    let want = args.providers.unwrap_or(peers.len().max(1));
    if let Err(e) = node.wait_for_providers(channel, want, PROVIDERS_WITHIN) {
        let found = node.peers().providers(channel).len();
        node.stop();
        anyhow::bail!(
            "{e}: {found} of {want} provider(s) serve {channel} after {PROVIDERS_WITHIN:?} \
             (are the servers at {peers:?} {:?} running, in cluster {:?}?)",
            args.etcd,
            args.cluster
        );
    }

    let count = args.count;
    let concurrency = args.concurrency;
    let payload = vec![7u8; args.payload];
    let timeout = Duration::from_millis(args.timeout_ms);
    let window = args.window;
    let summary = node
        .spawn_on(0, move |bus| async move {
            let run = Run {
                channel,
                count,
                concurrency,
                payload,
                timeout,
            };
            if window {
                run.window(bus).await
            } else {
                run.tasks(bus).await
            }
        })?
        .join()
        .context("the client node stopped before the load run finished")?;
    node.stop();

    let per_sec = if summary.elapsed.is_zero() {
        0.0
    } else {
        summary.replies as f64 / summary.elapsed.as_secs_f64()
    };
    if args.json {
        let line = serde_json::json!({
            "sent": summary.sent,
            "replies": summary.replies,
            "errors": summary.errors,
            "p50_us": summary.p50_us,
            "p99_us": summary.p99_us,
            "per_sec": per_sec,
        });
        println!("{line}");
    } else {
        println!(
            "sent {} replies {} errors {} in {:.3} s: p50 {} us, p99 {} us, {:.0} replies/s \
             ({} in flight, {} B payload)",
            summary.sent,
            summary.replies,
            summary.errors,
            summary.elapsed.as_secs_f64(),
            summary.p50_us,
            summary.p99_us,
            per_sec,
            concurrency,
            args.payload
        );
    }
    std::io::Write::flush(&mut std::io::stdout())?;
    std::process::exit(if summary.errors == 0 { 0 } else { 1 });
}

/// One load run's settings.
struct Run {
    channel: Channel,
    count: u64,
    concurrency: u64,
    payload: Vec<u8>,
    timeout: Duration,
}

impl Run {
    /// One task per request in flight, each awaiting `request` in turn.
    async fn tasks(self, bus: domi::LocalBus) -> Summary {
        let Run {
            channel,
            count,
            concurrency,
            payload,
            timeout,
        } = self;
        let issued = Rc::new(Cell::new(0u64));
        let replies = Rc::new(Cell::new(0u64));
        let errors = Rc::new(Cell::new(0u64));
        let hist = Rc::new(RefCell::new(
            Histogram::<u64>::new(3).expect("3 significant digits is valid"),
        ));
        let payload = Rc::new(payload);
        let start = Instant::now();
        let tasks: Vec<_> = (0..concurrency)
            .map(|_| {
                let (bus, issued, replies, errors, hist, payload) = (
                    bus.clone(),
                    issued.clone(),
                    replies.clone(),
                    errors.clone(),
                    hist.clone(),
                    payload.clone(),
                );
                glommio::spawn_local(async move {
                    while issued.get() < count {
                        issued.set(issued.get() + 1);
                        let t = Instant::now();
                        match bus.request(channel, &payload, timeout).await {
                            Ok(_) => {
                                let us = t.elapsed().as_micros().min(u64::MAX as u128) as u64;
                                hist.borrow_mut().saturating_record(us);
                                replies.set(replies.get() + 1);
                            }
                            Err(e) => {
                                if errors.get() < LOGGED_ERRORS {
                                    warn!(%channel, error = %e, "request failed");
                                }
                                errors.set(errors.get() + 1);
                            }
                        }
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await;
        }
        let elapsed = start.elapsed();
        let hist = hist.borrow();
        Summary {
            sent: issued.get(),
            replies: replies.get(),
            errors: errors.get(),
            p50_us: hist.value_at_quantile(0.50),
            p99_us: hist.value_at_quantile(0.99),
            elapsed,
        }
    }

    /// One task keeping `concurrency` requests in flight through a request
    /// window; latencies are the window's own (first send to the answer's read).
    async fn window(self, bus: domi::LocalBus) -> Summary {
        let mut hist = Histogram::<u64>::new(3).expect("3 significant digits is valid");
        let (mut sent, mut replies, mut errors) = (0u64, 0u64, 0u64);
        let mut window = bus.request_window(self.channel, self.timeout);
        let start = Instant::now();
        let fail = |e: &domi::BusError, errors: &mut u64| {
            if *errors < LOGGED_ERRORS {
                warn!(channel = %self.channel, error = %e, "request failed");
            }
            *errors += 1;
        };
        loop {
            while sent < self.count && window.in_flight() < self.concurrency as usize {
                sent += 1;
                if let Err(e) = window.send(&self.payload) {
                    fail(&e, &mut errors);
                }
            }
            let Some(done) = window.next().await else {
                break;
            };
            match done.result {
                Ok(_) => {
                    let us = done.took.as_micros().min(u64::MAX as u128) as u64;
                    hist.saturating_record(us);
                    replies += 1;
                }
                Err(e) => fail(&e, &mut errors),
            }
        }
        Summary {
            sent,
            replies,
            errors,
            p50_us: hist.value_at_quantile(0.50),
            p99_us: hist.value_at_quantile(0.99),
            elapsed: start.elapsed(),
        }
    }
}
