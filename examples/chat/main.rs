//! Chat rooms over domi: browsers talk to a WebSocket gateway (axum on
//! tokio), gateways talk to room nodes over the bus; browsers never reach
//! the bus.
//!
//! The demo (one gateway and two room nodes in this process, static
//! membership), then open http://127.0.0.1:8080/ in two browser tabs:
//!
//! `cargo run --release --example chat -- --http 127.0.0.1:8080`
//!
//! Separate processes with etcd (`make etcd` in another terminal): two room
//! nodes and two gateways, browsers on either gateway see each other.
//!
//! ```text
//! cargo run --release --example chat -- --room --etcd http://127.0.0.1:2379
//! cargo run --release --example chat -- --room --etcd http://127.0.0.1:2379
//! cargo run --release --example chat -- --gateway --etcd http://127.0.0.1:2379 --http 127.0.0.1:8080
//! cargo run --release --example chat -- --gateway --etcd http://127.0.0.1:2379 --http 127.0.0.1:8081
//! ```
//!
//! Without etcd, give every process a fixed `--tcp` port and a distinct
//! `--node-id`; gateways list the room nodes as `--peer`s and room nodes
//! the gateways.
//!
//! Each process prints one line to stdout, `listening <bus addr> id <n>
//! http <addr|->` (a gateway's web address; a room node's `--admin`
//! address), then serves until SIGINT or SIGTERM. Logs go to stderr
//! (`RUST_LOG`, default `info`).
//!
//! Layout: `protocol` (the JSON messages and channels), `room` (the room
//! service), `gateway` (the WebSocket side), `page.html` (the page).

mod gateway;
mod protocol;
mod room;

use std::io::Write;
use std::net::{SocketAddr, TcpListener};

use anyhow::Context;
use clap::Parser;
use domi::{Node, NodeBuilder, NodeId};

#[derive(Parser)]
#[command(about = "Chat rooms over domi: a WebSocket gateway and room nodes")]
struct Args {
    /// Run a gateway only (browsers at --http, room nodes on the bus).
    #[arg(long, conflicts_with_all = ["room", "demo"])]
    gateway: bool,
    /// Run a room node only.
    #[arg(long, conflicts_with = "demo")]
    room: bool,
    /// One gateway and two room nodes in this process (the default).
    #[arg(long)]
    demo: bool,
    /// Where the gateway serves the page and the WebSocket (port 0 picks one).
    #[arg(long, default_value = "127.0.0.1:8080")]
    http: SocketAddr,
    /// Node name (default: `gateway` or `room`).
    #[arg(long)]
    name: Option<String>,
    /// Bus address to bind (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    tcp: SocketAddr,
    /// A static peer's bus address (repeatable).
    #[arg(long = "peer", conflicts_with = "etcd")]
    peers: Vec<SocketAddr>,
    /// This node's id, 0..=1023 (static membership).
    #[arg(long, conflicts_with = "etcd")]
    node_id: Option<u16>,
    /// Join the cluster through etcd at these endpoints (comma-separated).
    #[arg(long, value_delimiter = ',')]
    etcd: Vec<String>,
    /// Cluster name; peers of other clusters are refused.
    #[arg(long, default_value = "chat")]
    cluster: String,
    /// Serve domi's admin endpoints (/status, /metrics, /stop…) here.
    #[arg(long)]
    admin: Option<SocketAddr>,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    if args.gateway {
        run_gateway(&args)
    } else if args.room {
        run_room(&args)
    } else {
        run_demo(&args)
    }
}

/// A one-shard node with this process's membership settings.
fn builder(args: &Args, default_name: &str) -> anyhow::Result<NodeBuilder> {
    let name = args.name.clone().unwrap_or_else(|| default_name.into());
    let mut b = Node::builder(name)
        .tcp(args.tcp)
        .cluster(args.cluster.clone())
        .shards(1)
        .small()
        .peers(args.peers.iter().copied());
    if let Some(id) = args.node_id {
        b = b.node_id(NodeId::try_from(id)?);
    }
    if !args.etcd.is_empty() {
        b = b.etcd(args.etcd.clone());
    }
    if let Some(admin) = args.admin {
        b = b.http(admin);
    }
    Ok(b)
}

fn listening(node: &Node, http: Option<SocketAddr>) -> anyhow::Result<()> {
    let http = http.map(|a| a.to_string()).unwrap_or_else(|| "-".into());
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "listening {} id {} http {http}",
        node.local_addr(),
        node.id().get()
    )?;
    out.flush()?;
    Ok(())
}

fn run_room(args: &Args) -> anyhow::Result<()> {
    let (node, rooms) = room::start(builder(args, "room")?).context("starting the room node")?;
    listening(&node, node.http_addr())?;
    node.stop_on_signals()
        .context("installing the signal handler")?;
    let outcome = node.wait();
    rooms.close();
    std::process::exit(outcome.code());
}

fn run_gateway(args: &Args) -> anyhow::Result<()> {
    // Joining blocks (etcd): done before any tokio worker exists.
    let node = builder(args, "gateway")?
        .start()
        .context("starting the gateway node")?;
    let rt = runtime()?;
    rt.block_on(async {
        let listener = gateway::bind(args.http).await?;
        let web = listener.local_addr()?;
        let gw = gateway::Gateway::start(node.clone())?;
        listening(&node, Some(web))?;
        gateway::announce(&gw, web);
        gw.serve(listener, signalled()).await?;
        anyhow::Ok(())
    })?;
    drop(rt);
    node.stop();
    Ok(())
}

fn run_demo(args: &Args) -> anyhow::Result<()> {
    // Static membership needs every address up front: take three free
    // loopback ports, then start the nodes on them, each listing all three
    // (a node skips its own address).
    let addrs = free_ports(3)?;
    let node = |name: &str, id: u16, tcp: SocketAddr| {
        Node::builder(name)
            .tcp(tcp)
            .cluster(args.cluster.clone())
            .shards(1)
            .small()
            .node_id(NodeId::new(id).expect("a valid id"))
            .peers(addrs.iter().copied())
    };
    let (room1, rooms1) = room::start(node("room-1", 1, addrs[0])).context("room node 1")?;
    let (room2, rooms2) = room::start(node("room-2", 2, addrs[1])).context("room node 2")?;
    let gateway = node("gateway", 10, addrs[2])
        .start()
        .context("the gateway node")?;
    let rt = runtime()?;
    rt.block_on(async {
        let listener = gateway::bind(args.http).await?;
        let web = listener.local_addr()?;
        let gw = gateway::Gateway::start(gateway.clone())?;
        listening(&gateway, Some(web))?;
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "chat demo: open http://{web}/ in two tabs (room nodes 1 and 2, gateway 10); Ctrl-C stops"
        )?;
        drop(out);
        gw.serve(listener, signalled()).await?;
        anyhow::Ok(())
    })?;
    drop(rt);
    gateway.stop();
    rooms1.close();
    rooms2.close();
    room1.stop();
    room2.stop();
    Ok(())
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting tokio")
}

/// Completes on SIGINT or SIGTERM.
async fn signalled() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("signal received: stopping");
}

/// `n` distinct loopback addresses whose ports were free a moment ago.
fn free_ports(n: usize) -> anyhow::Result<Vec<SocketAddr>> {
    let held: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()
        .context("finding free ports")?;
    held.iter()
        .map(|l| l.local_addr().context("a bound address"))
        .collect()
}
