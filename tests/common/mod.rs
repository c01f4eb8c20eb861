//! Helpers shared by the integration tests: small nodes on loopback port 0,
//! and waiting for a condition with a deadline (never sleeping "long enough").

#![allow(dead_code)]

use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use domi::{Channel, Handler, Node, NodeBuilder, NodeId};

/// A one-shard, unpinned node with 1 MiB of io_uring memory and a node id
/// unique in this test process (static membership needs distinct ids).
pub fn small(name: &str) -> NodeBuilder {
    static NEXT_ID: AtomicU16 = AtomicU16::new(1);
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed) % 1024;
    Node::builder(name)
        .shards(1)
        .small()
        .node_id(NodeId::new(id).unwrap())
}

/// A server replying `pong` on `channel` and counting what it handled.
pub fn pong_server(name: &str, channel: Channel) -> (Node, Arc<AtomicUsize>) {
    let handled = Arc::new(AtomicUsize::new(0));
    let h = handled.clone();
    let node = small(name)
        .subscribe(
            channel,
            Handler::sync(move |req| {
                h.fetch_add(1, Ordering::SeqCst);
                let _ = req.reply(b"pong");
            }),
        )
        .start()
        .expect("server starts");
    (node, handled)
}

/// The peers shard 0 of `node` holds an open outbound connection to.
pub fn connected(node: &Node) -> Vec<NodeId> {
    node.spawn_on(0, |bus| async move { bus.connected_peers() })
        .unwrap()
        .join_timeout(Duration::from_secs(5))
        .expect("shard 0 answers")
}

/// Polls `cond` until it holds or `within` passes; panics with `what` on timeout.
pub fn wait_until(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Sends `n` requests on `channel` at once from shard `shard` of `node`
/// (each its own task, so they are all in flight together); returns every
/// result, in start order, and how long the whole batch took.
pub fn burst(
    node: &Node,
    shard: usize,
    channel: Channel,
    n: usize,
    timeout: Duration,
) -> (Vec<Result<Vec<u8>, domi::BusError>>, Duration) {
    node.spawn_on(shard, move |bus| async move {
        let started = Instant::now();
        let tasks: Vec<_> = (0..n)
            .map(|i| {
                let bus = bus.clone();
                glommio::spawn_local(async move {
                    let payload = format!("{i}");
                    bus.request(channel, payload.as_bytes(), timeout).await
                })
            })
            .collect();
        let mut results = Vec::with_capacity(n);
        for t in tasks {
            results.push(t.await);
        }
        (results, started.elapsed())
    })
    .expect("the burst starts")
    .join()
    .expect("the burst finishes")
}

/// Sends this test's logs (warn and up; `RUST_LOG` to see more) to the
/// test's own output; once per test process.
pub fn test_logs() {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    });
}

/// Sum of counters.
pub fn total(counts: &[&Arc<AtomicUsize>]) -> usize {
    counts.iter().map(|c| c.load(Ordering::SeqCst)).sum()
}

/// The standard wait for topology to settle.
pub const SETTLE: Duration = Duration::from_secs(10);
pub mod certs;
pub mod etcd;
pub mod fixed;
pub mod hosts;
pub mod netns;
pub mod procs;
pub mod raw;

/// One request's outcome: when it started, how long it took, the result.
pub type Outcome = (Instant, Duration, Result<Vec<u8>, domi::BusError>);

/// Keeps `in_flight` requests on `channel` going from shard 0 of `client`
/// until `stop` is set; returns every outcome.
pub fn load(
    client: &Node,
    channel: Channel,
    in_flight: usize,
    timeout: Duration,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> domi::ShardTask<Vec<Outcome>> {
    use std::cell::RefCell;
    use std::rc::Rc;
    client
        .spawn_on(0, move |bus| async move {
            let results: Rc<RefCell<Vec<Outcome>>> = Rc::default();
            let mut tasks = Vec::new();
            for _ in 0..in_flight {
                let (bus, results, stop) = (bus.clone(), results.clone(), stop.clone());
                tasks.push(glommio::spawn_local(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let t = Instant::now();
                        let r = bus.request(channel, b"ping", timeout).await;
                        results.borrow_mut().push((t, t.elapsed(), r));
                    }
                }));
            }
            for t in tasks {
                t.await;
            }
            Rc::try_unwrap(results)
                .map(RefCell::into_inner)
                .unwrap_or_default()
        })
        .expect("load starts")
}

/// Sets a load's stop flag when dropped, so that a failed assertion does
/// not leave the load running (the client would never stop).
pub struct StopOnDrop(pub Arc<std::sync::atomic::AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// The longest stretch between `from` and `to` in which no request was
/// answered (the load stalls while all its in-flight requests wait on a
/// silent peer, even when no request started later fails).
pub fn longest_stall(results: &[Outcome], from: Instant, to: Instant) -> Duration {
    let mut answered: Vec<Instant> = results
        .iter()
        .filter(|(_, _, r)| r.is_ok())
        .map(|(t, took, _)| *t + *took)
        .filter(|done| *done >= from && *done < to)
        .collect();
    answered.sort_unstable();
    answered.push(to);
    let mut last = from;
    let mut longest = Duration::ZERO;
    for done in answered {
        longest = longest.max(done.saturating_duration_since(last));
        last = done;
    }
    longest
}
