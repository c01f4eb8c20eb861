//! The quick start: a server node and a client node in one process.
//!
//! Run: `make run` (or `cargo run --release --example pingpong -- --count 200000`).
//!
//! The server serves channel 50 and replies `pong`. The client first uses the
//! seed's `call` (replies arrive on its channel 51 handler), then measures
//! request/reply round trips with one in flight, then one-way throughput with
//! `notify` driven from a task on the client's shard.

#![allow(clippy::print_stdout)] // an example program: its output is the point.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use domi::{Channel, Handler, Node};

#[derive(Parser)]
struct Args {
    /// Messages in the one-way throughput run.
    #[arg(long, default_value_t = 1_000_000)]
    count: u64,
    /// Round trips in the latency run.
    #[arg(long, default_value_t = 20_000)]
    round_trips: u64,
    /// Payload bytes.
    #[arg(long, default_value_t = 64)]
    payload: usize,
}

const PING: Channel = Channel(50);
const REPLIES: Channel = Channel(51);
const SINK: Channel = Channel(52);

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let received = Arc::new(AtomicU64::new(0));
    let r = received.clone();
    // With two CPUs or more, each node gets one of its own (pinned shards
    // also spin briefly before parking: the low-latency setting); otherwise
    // both float.
    let place = |b: domi::NodeBuilder, which: usize| {
        let cpus = domi_core::config::allowed_cpus();
        if cpus.len() >= 2 {
            b.cpus([cpus[which]])
        } else {
            b
        }
    };
    let server = place(Node::builder("server").shards(1).small(), 1)
        .subscribe(
            PING,
            Handler::sync(|req| {
                let _ = req.reply(b"pong");
            }),
        )
        .subscribe(
            SINK,
            Handler::sync(move |_req| {
                r.fetch_add(1, Ordering::Relaxed);
            }),
        )
        .start()
        .context("starting the server node")?;
    let replies = Arc::new(AtomicU64::new(0));
    let rep = replies.clone();
    let client = place(Node::builder("client").shards(1).small(), 0)
        .peer(server.local_addr())
        .subscribe(
            REPLIES,
            Handler::sync(move |req| {
                if rep.fetch_add(1, Ordering::Relaxed) < 3 {
                    println!(
                        "reply from {} on {}: {}",
                        req.source(),
                        req.channel(),
                        String::from_utf8_lossy(req.payload())
                    );
                }
            }),
        )
        .start()?;
    client.wait_for_provider(PING, Duration::from_secs(5))?;
    for _ in 0..3 {
        client.call(PING, b"ping", REPLIES)?;
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while replies.load(Ordering::Relaxed) < 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }

    let payload = vec![7u8; args.payload];
    let n = args.round_trips;
    let p = payload.clone();
    let rtt = client
        .spawn_on(0, move |bus| async move {
            let mut lat = Vec::with_capacity(n as usize);
            for _ in 0..n {
                let t = Instant::now();
                bus.request(PING, &p, Duration::from_secs(1)).await?;
                lat.push(t.elapsed());
            }
            lat.sort();
            Ok::<_, domi::BusError>(lat)
        })?
        .join()
        .context("client stopped")??;
    let pct = |q: f64| {
        rtt.get(((rtt.len().max(1) - 1) as f64 * q) as usize)
            .map_or(0.0, |d| d.as_secs_f64() * 1e6)
    };
    println!(
        "request/reply (1 in flight, {n} round trips): p50 {:.1} us, p99 {:.1} us",
        pct(0.5),
        pct(0.99)
    );

    let count = args.count;
    let p = payload.clone();
    let start = Instant::now();
    client
        .spawn_on(0, move |bus| async move {
            let mut sent = 0;
            while sent < count {
                match bus.notify(SINK, &p) {
                    Ok(()) => sent += 1,
                    Err(domi::BusError::Backpressure { .. }) => {
                        futures_lite::future::yield_now().await
                    }
                    Err(e) => return Err(e),
                }
                // Queued frames leave when the task yields: one write per batch.
                if sent % 64 == 0 {
                    futures_lite::future::yield_now().await;
                }
            }
            Ok(())
        })?
        .join()
        .context("client stopped")??;
    while received.load(Ordering::Relaxed) < count && start.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_micros(200));
    }
    let secs = start.elapsed().as_secs_f64();
    let got = received.load(Ordering::Relaxed);
    println!(
        "one-way notify: {got}/{count} messages of {} B in {:.3} s = {:.2} M msg/s, {:.1} MB/s",
        args.payload,
        secs,
        got as f64 / secs / 1e6,
        got as f64 * args.payload as f64 / secs / 1e6
    );
    client.stop();
    server.stop();
    anyhow::ensure!(got == count, "lost {} one-way messages", count - got);
    Ok(())
}
