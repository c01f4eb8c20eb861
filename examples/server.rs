//! A standalone server node: serves channel 50 and replies `pong` to every
//! request. The other half of the `client` example.
//!
//! Run: `cargo run --release --example server -- --tcp 127.0.0.1:7000`
//! (add `--peer ADDR` for other static peers, `--shards N` for more shards).
//!
//! Fault injection for chaos runs: `--panic-permille N` (the handler panics on
//! N of every 1,000 requests), `--nested CH --max-handlers N` (channel CH is
//! served by an async handler that itself requests channel 50, capped).
//!
//! With etcd and the admin endpoints:
//! `cargo run --release --example server -- --etcd http://127.0.0.1:2379 --http 127.0.0.1:8080`
//!
//! With a secured etcd (TLS with a client certificate, and a user whose
//! password is read from `DOMI_ETCD_PASSWORD`, never from the command line):
//! `DOMI_ETCD_PASSWORD=… cargo run --release --example server -- --etcd https://10.0.0.1:2379
//! --etcd-ca ca.crt --etcd-cert node.crt --etcd-key node.key --etcd-user domi`
//!
//! With mutual TLS on the bus (every node with a certificate of the same CA):
//! `… --tls-cert node.crt --tls-key node.key --tls-ca ca.crt`
//!
//! After start it prints one line to stdout, `listening <addr> id <n> http <addr|->`,
//! then serves until SIGINT, SIGTERM, SIGHUP or `POST /stop`: it drains (in-flight
//! requests finish, peers fail over) and exits 0, or exits 1 if the drain takes
//! longer than `--drain-ms`. A second signal exits at once. Logs go to stderr;
//! set `RUST_LOG` (default `info`).

use std::io::Write;
use std::net::SocketAddr;

use anyhow::Context;
use clap::Parser;
use domi::{Channel, Handler, Node};

#[path = "shared/bus_tls.rs"]
mod bus_tls;
#[path = "shared/etcd_security.rs"]
mod etcd_security;
use bus_tls::BusTls;
use etcd_security::EtcdSecurity;

/// The channel served.
const PING: Channel = Channel(50);

#[derive(Parser)]
#[command(about = "A domi node replying `pong` on channel 50")]
struct Args {
    /// Node name.
    #[arg(long, default_value = "server")]
    name: String,
    /// Bus address to bind (port 0 picks a free port; 0.0.0.0 listens on
    /// every interface).
    #[arg(long, default_value = "127.0.0.1:0")]
    tcp: SocketAddr,
    /// Bus address to tell the cluster when peers reach this node at
    /// another address than `--tcp` (port 0: the bound port).
    #[arg(long)]
    advertise: Option<SocketAddr>,
    /// Admin address to tell the cluster (port 0: the bound port).
    #[arg(long, requires = "http")]
    advertise_http: Option<SocketAddr>,
    /// A static peer's bus address (repeatable).
    #[arg(long = "peer", conflicts_with = "etcd")]
    peers: Vec<SocketAddr>,
    /// Spin this many microseconds before parking an idle shard (lower
    /// latency for more CPU; 0 parks at once).
    #[arg(long)]
    spin_us: Option<u64>,
    /// Pin shard i to the i-th of these CPUs (comma-separated); pinned
    /// shards also spin before parking (see --spin-us). Default: unpinned.
    #[arg(long, value_delimiter = ',')]
    cpus: Vec<usize>,
    /// Number of shards.
    #[arg(long, default_value_t = 1)]
    shards: usize,
    /// Cluster name; peers of other clusters are refused.
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
    /// Serve the admin endpoints (/stop /pause /resume /status /metrics /health) here.
    #[arg(long)]
    http: Option<SocketAddr>,
    /// Require `Authorization: Bearer TOKEN` on mutating admin endpoints.
    #[arg(long)]
    admin_token: Option<String>,
    /// Answer after this many ms (an async handler); 0 answers inline.
    #[arg(long, default_value_t = 0)]
    delay_ms: u64,
    /// How long a stop may drain before the process exits with code 1.
    #[arg(long, default_value_t = 8000)]
    drain_ms: u64,
    /// Fault injection: the handler panics on this many of every 1,000
    /// requests (the caller gets `HandlerPanicked`; the node serves on).
    #[arg(long, default_value_t = 0)]
    panic_permille: u32,
    /// Async handlers running at once per shard (more wait in a bounded
    /// queue; over it requests are refused with `Backpressure`).
    #[arg(long)]
    max_handlers: Option<u64>,
    /// Rate limit on channel 50: this many requests per second (over it,
    /// callers get `RateLimited` and fail over to another provider).
    #[arg(long, value_name = "N")]
    rate_limit: Option<u32>,
    /// Burst of `--rate-limit` (default: a tenth of the rate, at least 1).
    #[arg(long, value_name = "N", requires = "rate_limit")]
    rate_burst: Option<u32>,
    /// Also serve this channel with a nested handler: it requests channel 50
    /// (payload `leaf`) from inside the handler and answers `pong` after
    /// that reply (an async handler; `--max-handlers` caps it).
    #[arg(long)]
    nested: Option<u16>,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let mut builder = Node::builder(args.name)
        .tcp(args.tcp)
        .cluster(args.cluster)
        .shards(args.shards)
        .small()
        .peers(args.peers);
    if !args.cpus.is_empty() {
        builder = builder.cpus(args.cpus.clone());
    }
    if let Some(us) = args.spin_us {
        builder = builder.spin_before_park(std::time::Duration::from_micros(us));
    }
    if let Some(id) = args.node_id {
        builder = builder.node_id(domi::NodeId::try_from(id)?);
    }
    if !args.etcd.is_empty() {
        builder = builder.etcd(args.etcd.clone());
        builder = args.etcd_security.apply(&args.etcd, builder)?;
    }
    builder = args.bus_tls.apply(builder)?;
    if let Some(rate) = args.rate_limit {
        let burst = args.rate_burst.unwrap_or((rate / 10).max(1));
        builder = builder.rate_limit(PING, rate, burst);
    }
    if let Some(http) = args.http {
        builder = builder.http(http);
    }
    if let Some(token) = args.admin_token {
        builder = builder.admin_token(token);
    }
    if let Some(addr) = args.advertise {
        builder = builder.advertise(addr);
    }
    if let Some(addr) = args.advertise_http {
        builder = builder.advertise_http(addr);
    }
    if let Some(n) = args.max_handlers {
        builder = builder.max_handlers(n);
    }
    if let Some(ch) = args.nested {
        builder = builder.subscribe(Channel(ch), nested_handler());
    }
    let faults = Faults::new(args.panic_permille);
    let handler = if args.delay_ms == 0 {
        Handler::sync(move |req| {
            faults.maybe_panic();
            let _ = req.reply(b"pong");
        })
    } else {
        let delay = std::time::Duration::from_millis(args.delay_ms);
        Handler::asynchronous(move |mut req| {
            let faults = faults.clone();
            async move {
                glommio::timer::sleep(delay).await;
                faults.maybe_panic();
                let _ = req.reply(b"pong");
            }
        })
    };
    let node = builder
        .drain_deadline(std::time::Duration::from_millis(args.drain_ms))
        .subscribe(PING, handler)
        .start()
        .context("starting the server node")?;
    {
        let mut out = std::io::stdout().lock();
        let http = node
            .http_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|| "-".into());
        writeln!(
            out,
            "listening {} id {} http {http}",
            node.local_addr(),
            node.id().get()
        )?;
        out.flush()?;
    }
    node.stop_on_signals()
        .context("installing the signal handler")?;
    // stdin is deliberately ignored: callers may start this with stdin closed.
    let outcome = node.wait();
    std::process::exit(outcome.code());
}

/// Panics on `permille` of every 1,000 calls (spread evenly).
#[derive(Clone)]
struct Faults {
    permille: u32,
    count: std::sync::Arc<std::sync::atomic::AtomicU32>,
}

impl Faults {
    fn new(permille: u32) -> Faults {
        Faults {
            permille: permille.min(1000),
            count: Default::default(),
        }
    }

    fn maybe_panic(&self) {
        if self.permille == 0 {
            return;
        }
        let n = self
            .count
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            % 1000;
        if n * self.permille / 1000 != (n + 1) * self.permille / 1000 {
            panic!(
                "injected handler fault (--panic-permille {})",
                self.permille
            );
        }
    }
}

/// Requests channel 50 from inside the handler before answering.
fn nested_handler() -> Handler {
    Handler::asynchronous(|mut req| async move {
        let inner = req
            .bus()
            .request(PING, b"leaf", std::time::Duration::from_secs(2))
            .await;
        // A failed nested request leaves the caller's unanswered: it gets
        // `NoReply` at once.
        if inner.is_ok() {
            let _ = req.reply(b"pong");
        }
    })
}
