//! A standalone server node: serves channel 50 and replies `pong` to every
//! request. The other half of the `client` example.
//!
//! Run: `cargo run --release --example server -- --tcp 127.0.0.1:7000`
//! (add `--peer ADDR` for other static peers, `--shards N` for more shards).
//!
//! After start it prints one line to stdout, `listening <addr> id <n>`, then
//! runs until it is killed (SIGINT, SIGTERM). Logs go to stderr; set
//! `RUST_LOG` (default `info`).

use std::io::Write;
use std::net::SocketAddr;

use anyhow::Context;
use clap::Parser;
use domi::{Channel, Handler, Node};

/// The channel served.
const PING: Channel = Channel(50);

#[derive(Parser)]
#[command(about = "A domi node replying `pong` on channel 50")]
struct Args {
    /// Node name.
    #[arg(long, default_value = "server")]
    name: String,
    /// Bus address (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    tcp: SocketAddr,
    /// A static peer's bus address (repeatable).
    #[arg(long = "peer")]
    peers: Vec<SocketAddr>,
    /// Number of shards.
    #[arg(long, default_value_t = 1)]
    shards: usize,
    /// Cluster name; peers of other clusters are refused.
    #[arg(long, default_value = "default")]
    cluster: String,
    /// This node's id, 0..=1023 (static membership; derived from the address if unset).
    #[arg(long)]
    node_id: Option<u16>,
    /// Join the cluster through etcd at these endpoints (comma-separated)
    /// instead of static `--peer`s; the id then comes from etcd.
    #[arg(long, value_delimiter = ',')]
    etcd: Vec<String>,
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
    if let Some(id) = args.node_id {
        builder = builder.node_id(domi::NodeId(id));
    }
    if !args.etcd.is_empty() {
        builder = builder.etcd(args.etcd.clone());
    }
    let node = builder
        .subscribe(
            PING,
            Handler::sync(|req| {
                let _ = req.reply(b"pong");
            }),
        )
        .start()
        .context("starting the server node")?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening {} id {}", node.local_addr(), node.id().0)?;
        out.flush()?;
    }
    // Serve until killed: SIGINT and SIGTERM end the process (default action).
    // stdin is deliberately ignored: callers may start this with stdin closed.
    loop {
        std::thread::park();
    }
}
