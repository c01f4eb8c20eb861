//! The server role, run as a child process of the bench (`domi-bench server`):
//! a domi node pinned to the given CPUs that echoes requests on [`ECHO`],
//! counts one-way messages on [`SINK`] per shard, and reports those counts on
//! [`STATS`]. It prints `listening ADDR` once ready and exits when its stdin
//! closes (the bench holds the other end), so it never outlives the bench.

use std::cell::Cell;
use std::io::{BufRead, Write};
use std::sync::OnceLock;
use std::time::Instant;

use anyhow::Result;
use domi::{Channel, Handler, Node};

/// Request/reply: the reply echoes the request.
pub const ECHO: Channel = Channel(50);
/// One-way sink.
pub const SINK: Channel = Channel(52);
/// Sink statistics: request `[0]` marks (resets this shard's count), `[1]`
/// reads: reply = shard u32, count u64, first-message ns u64, now ns u64 (LE).
pub const STATS: Channel = Channel(53);

/// Server settings.
#[derive(clap::Args, Debug, Clone)]
pub struct ServerArgs {
    /// Shards.
    #[arg(long, default_value_t = 1)]
    pub shards: usize,
    /// CPUs to pin shards to, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub cpus: Vec<usize>,
    /// glommio io_memory per shard, bytes.
    #[arg(long, default_value_t = 10 << 20)]
    pub io_memory: usize,
    /// Spin this many µs before parking.
    #[arg(long)]
    pub spin_us: Option<u64>,
    /// Mutual TLS on the bus with the certificates of this directory (see
    /// [`crate::tls::BenchPki`]).
    #[arg(long)]
    pub tls_dir: Option<std::path::PathBuf>,
    /// A rate limit on the echo channel, per second (burst the same).
    #[arg(long)]
    pub rate_limit: Option<u32>,
}

thread_local! {
    static COUNT: Cell<u64> = const { Cell::new(0) };
    static FIRST: Cell<u64> = const { Cell::new(0) };
}

fn now_ns() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    BASE.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// Runs the server until stdin closes.
pub fn run(args: ServerArgs) -> Result<()> {
    now_ns();
    let mut b = Node::builder("bench-server")
        .shards(args.shards)
        .io_memory(args.io_memory)
        .subscribe(
            ECHO,
            Handler::sync(|req| {
                let _ = req.reply(req.payload());
            }),
        )
        .subscribe(
            SINK,
            Handler::sync(|_req| {
                COUNT.with(|c| {
                    let n = c.get();
                    if n == 0 {
                        FIRST.with(|f| f.set(now_ns()));
                    }
                    c.set(n + 1);
                });
            }),
        )
        .subscribe(
            STATS,
            Handler::sync(|req| {
                if req.payload().first() == Some(&0) {
                    COUNT.with(|c| c.set(0));
                }
                let mut out = Vec::with_capacity(28);
                out.extend_from_slice(&(req.bus().shard() as u32).to_le_bytes());
                out.extend_from_slice(&COUNT.with(Cell::get).to_le_bytes());
                out.extend_from_slice(&FIRST.with(Cell::get).to_le_bytes());
                out.extend_from_slice(&now_ns().to_le_bytes());
                let _ = req.reply(&out);
            }),
        );
    if !args.cpus.is_empty() {
        b = b.cpus(args.cpus.clone());
    } else {
        b = b.pin_cpus(false);
    }
    if let Some(us) = args.spin_us {
        b = b.spin_before_park(std::time::Duration::from_micros(us));
    }
    if let Some(rate) = args.rate_limit {
        b = b.rate_limit(ECHO, rate, rate);
    }
    if let Some(dir) = &args.tls_dir {
        b = b.tls(crate::tls::BenchPki::config(dir, "server")?);
    }
    let node = b.start()?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening {}", node.local_addr())?;
    out.flush()?;
    drop(out);
    // Block until the bench closes our stdin.
    let mut line = String::new();
    while std::io::stdin().lock().read_line(&mut line)? > 0 {
        line.clear();
    }
    node.stop();
    Ok(())
}
