//! The running node as users hold it: the core bus plus its lifecycle —
//! pause and resume, the drain on stop (SIGINT/SIGTERM/SIGHUP or `POST /stop`),
//! `wait()`, and the admin HTTP server.

use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

use domi_admin::{AdminServer, Control, Metric, PeerStatus, Status};
use domi_core::{BusError, Channel, Handler, Membership, NodeConfig, NodeState};
use tracing::{error, info, warn};

use crate::builder::NodeBuilder;

/// Why a node did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The bus did not start (configuration, bind, membership…).
    #[error(transparent)]
    Core(#[from] domi_core::StartError),
    /// The admin server could not bind.
    #[error(transparent)]
    Admin(#[from] domi_admin::AdminError),
    /// [`NodeBuilder::start_async`] could not run the start on a thread.
    #[error("the start thread failed: {0}")]
    Thread(#[source] std::io::Error),
}

/// Lifecycle settings (admin address, token, drain deadline).
#[derive(Clone, Debug)]
pub(crate) struct Lifecycle {
    pub(crate) http: Option<SocketAddr>,
    pub(crate) token: Option<String>,
    pub(crate) drain_deadline: Duration,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Lifecycle {
            http: None,
            token: None,
            drain_deadline: Duration::from_secs(8),
        }
    }
}

/// How a stop ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopOutcome {
    /// Every in-flight handler finished and every queue flushed in time.
    Drained {
        /// How long the drain took.
        ms: u64,
    },
    /// The deadline passed first; this much work was abandoned.
    Abandoned {
        /// Async handlers still running.
        handlers: u64,
        /// Bytes still queued for peers.
        queued_bytes: u64,
        /// The deadline that passed.
        ms: u64,
    },
}

impl StopOutcome {
    /// The process exit code: 0 drained, 1 abandoned.
    pub fn code(self) -> i32 {
        match self {
            StopOutcome::Drained { .. } => 0,
            StopOutcome::Abandoned { .. } => 1,
        }
    }
}

struct Shared {
    core: domi_core::Node,
    started: Instant,
    lifecycle: Lifecycle,
    admin: Mutex<Option<AdminServer>>,
    admin_addr: Option<SocketAddr>,
    stopping: AtomicBool,
    outcome: Mutex<Option<StopOutcome>>,
    stopped: Condvar,
    /// Tasks waiting for the stop ([`Node::wait_async`]).
    stop_wakers: Mutex<Vec<std::task::Waker>>,
}

/// A running node: everything of [`domi_core::Node`] (through `Deref`), plus
/// its lifecycle and admin server. Cheap to clone; `Send + Sync`.
#[derive(Clone)]
pub struct Node {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.shared.core.fmt(f)
    }
}

impl Deref for Node {
    type Target = domi_core::Node;
    fn deref(&self) -> &domi_core::Node {
        &self.shared.core
    }
}

impl Node {
    /// Starts describing a node named `name`.
    pub fn builder(name: impl Into<String>) -> NodeBuilder {
        NodeBuilder::new(name)
    }

    pub(crate) fn start(
        config: NodeConfig,
        subscriptions: Vec<(Channel, Handler)>,
        membership: Box<dyn Membership>,
        admin: Option<AdminServer>,
        lifecycle: Lifecycle,
    ) -> Result<Node, StartError> {
        let core = domi_core::Node::start(config, subscriptions, membership)?;
        let node = Node {
            shared: Arc::new(Shared {
                core,
                started: Instant::now(),
                admin_addr: admin.as_ref().map(AdminServer::local_addr),
                admin: Mutex::new(None),
                lifecycle: lifecycle.clone(),
                stopping: AtomicBool::new(false),
                outcome: Mutex::new(None),
                stopped: Condvar::new(),
                stop_wakers: Mutex::new(Vec::new()),
            }),
        };
        if let Some(mut server) = admin {
            let control = Arc::new(NodeControl(Arc::downgrade(&node.shared)));
            server.serve(lifecycle.token, control);
            *node.shared.admin.lock().unwrap_or_else(|e| e.into_inner()) = Some(server);
        }
        Ok(node)
    }

    /// The underlying core node.
    pub fn core(&self) -> &domi_core::Node {
        &self.shared.core
    }

    /// The admin HTTP address, if the node serves one.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.shared.admin_addr
    }

    /// Blocks until some node (this one included) serves `channel`, or
    /// returns `NoProvider` after `timeout`.
    pub fn wait_for_provider(&self, channel: Channel, timeout: Duration) -> Result<(), BusError> {
        self.wait_for_providers(channel, 1, timeout)
    }

    /// Blocks until at least `count` nodes serve `channel`.
    pub fn wait_for_providers(
        &self,
        channel: Channel,
        count: usize,
        timeout: Duration,
    ) -> Result<(), BusError> {
        self.shared.core.wait_for_providers(channel, count, timeout)
    }

    /// Takes the node out of rotation: peers stop routing new requests here
    /// (requests that still arrive are refused with `Paused` and the caller
    /// tries the next provider). The node keeps sending its own requests.
    pub fn pause(&self) {
        if self
            .shared
            .core
            .transition(NodeState::Serving, NodeState::Paused)
        {
            info!(id = %self.id(), "paused");
        }
    }

    /// Puts a paused node back in rotation.
    pub fn resume(&self) {
        if self
            .shared
            .core
            .transition(NodeState::Paused, NodeState::Serving)
        {
            info!(id = %self.id(), "resumed");
        }
    }

    /// Stops gracefully: state `draining` (peers stop routing here, new
    /// requests get `ShuttingDown` so callers fail over), in-flight handlers
    /// finish and queues flush, then the node leaves the cluster (its etcd
    /// lease is revoked) and stops. Gives up after the drain deadline.
    /// Blocks until done; a concurrent second call waits for the first.
    pub fn stop(&self) -> StopOutcome {
        if !self.begin_stop() {
            return self.wait();
        }
        self.drain_and_finish()
    }

    /// Starts [`Node::stop`] on a thread of its own and returns at once; the
    /// node is `draining` (out of rotation, `/health` 503) when it returns.
    pub fn stop_in_background(&self) {
        if !self.begin_stop() {
            return;
        }
        let node = self.clone();
        std::thread::Builder::new()
            .name("domi-drain".into())
            .spawn(move || {
                node.drain_and_finish();
            })
            .expect("spawning the drain thread");
    }

    /// Claims the stop (false if another stop came first) and enters `draining`.
    fn begin_stop(&self) -> bool {
        if self.shared.stopping.swap(true, Ordering::AcqRel) {
            return false;
        }
        self.shared.core.set_state(NodeState::Draining);
        true
    }

    fn drain_and_finish(&self) -> StopOutcome {
        let outcome = self.drain();
        self.finish(outcome);
        outcome
    }

    /// Stops at once, without draining (waiting requests fail with
    /// `ShuttingDown` or `PeerLost` on the callers' side).
    pub fn halt(&self) {
        self.shared.stopping.store(true, Ordering::Release);
        self.finish(StopOutcome::Drained { ms: 0 });
    }

    /// Blocks until the node has stopped (by `stop`, `halt`, a signal or
    /// `POST /stop`) and tells how.
    pub fn wait(&self) -> StopOutcome {
        let mut outcome = self
            .shared
            .outcome
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(o) = *outcome {
                return o;
            }
            outcome = self
                .shared
                .stopped
                .wait(outcome)
                .unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Whether the node stopped (how), registering `cx`'s waker otherwise:
    /// the poll behind [`Node::wait_async`].
    pub(crate) fn poll_stopped(
        &self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<StopOutcome> {
        let outcome = self
            .shared
            .outcome
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(o) = *outcome {
            return std::task::Poll::Ready(o);
        }
        // Registered under the outcome's lock, which `finish` takes before
        // waking: no stop can slip between the check and the registration.
        let mut wakers = self
            .shared
            .stop_wakers
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
            wakers.push(cx.waker().clone());
        }
        std::task::Poll::Pending
    }

    /// Drains on SIGINT, SIGTERM or SIGHUP; a second signal exits the
    /// process at once with code 1. Call once per process.
    pub fn stop_on_signals(&self) -> Result<(), ctrlc::Error> {
        let node = self.clone();
        let signals = AtomicUsize::new(0);
        ctrlc::set_handler(move || {
            if signals.fetch_add(1, Ordering::AcqRel) == 0 {
                info!("signal received: draining (a second signal exits at once)");
                node.stop_in_background();
            } else {
                warn!("second signal: exiting at once");
                std::process::exit(1);
            }
        })
    }

    fn drain(&self) -> StopOutcome {
        let started = Instant::now();
        let deadline = self.shared.lifecycle.drain_deadline;
        info!(id = %self.id(), deadline_ms = deadline.as_millis() as u64, "draining");
        loop {
            let left = deadline.saturating_sub(started.elapsed());
            let (handlers, queued) = self.busy(left);
            if handlers == 0 && queued == 0 {
                return StopOutcome::Drained {
                    ms: started.elapsed().as_millis() as u64,
                };
            }
            if started.elapsed() >= deadline {
                error!(id = %self.id(), handlers, queued_bytes = queued, "drain deadline passed: abandoning work");
                return StopOutcome::Abandoned {
                    handlers,
                    queued_bytes: queued,
                    ms: deadline.as_millis() as u64,
                };
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Async handlers running and bytes queued, over every shard; a shard
    /// that does not answer within `within` counts as one running handler.
    fn busy(&self, within: Duration) -> (u64, u64) {
        let (mut handlers, mut queued) = (0, 0);
        for i in 0..self.shards() {
            match self.spawn_on(i, |bus| async move { bus.busy() }) {
                Ok(task) => match task.join_timeout(within.max(Duration::from_millis(10))) {
                    Some((h, q)) => {
                        handlers += h;
                        queued += q as u64;
                    }
                    None => handlers += 1,
                },
                Err(_) => handlers += 1,
            }
        }
        (handlers, queued)
    }

    fn finish(&self, outcome: StopOutcome) {
        let started = Instant::now();
        if let Some(mut admin) = self
            .shared
            .admin
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            admin.shutdown();
        }
        // The core stop joins the shards; a shard stuck in a blocking handler
        // would hold it forever, so it runs on a thread we wait for briefly.
        let core = self.shared.core.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            core.stop();
            let _ = tx.send(());
        });
        if rx.recv_timeout(Duration::from_secs(2)).is_err() {
            warn!(id = %self.id(), "a shard did not stop; leaving it behind");
        }
        match outcome {
            StopOutcome::Drained { ms } => {
                info!(id = %self.id(), drain_ms = ms, stop_ms = started.elapsed().as_millis() as u64, "stopped")
            }
            StopOutcome::Abandoned { .. } => {
                warn!(id = %self.id(), ?outcome, "stopped after abandoning work")
            }
        }
        *self
            .shared
            .outcome
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(outcome);
        self.shared.stopped.notify_all();
        let wakers = std::mem::take(
            &mut *self
                .shared
                .stop_wakers
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        for w in wakers {
            w.wake();
        }
    }

    fn status(&self) -> Status {
        let info = self.info();
        let per_shard: Vec<_> = (0..self.shards())
            .filter_map(|i| {
                self.spawn_on(i, |bus| async move {
                    (bus.counters(), bus.connected_peers(), bus.breaker_states())
                })
                .ok()
            })
            .filter_map(|t| t.join_timeout(Duration::from_secs(2)))
            .collect();
        let connected: Vec<_> = per_shard
            .iter()
            .flat_map(|(_, c, _)| c.iter().copied())
            .collect();
        // A peer's breaker: the worst state any shard holds for it.
        let breaker = |id: domi_core::NodeId| {
            let states = per_shard
                .iter()
                .flat_map(|(_, _, b)| b.iter())
                .filter(|(p, _)| *p == id)
                .map(|(_, s)| *s);
            let mut worst = domi_core::BreakerState::Closed;
            for s in states {
                if s == domi_core::BreakerState::Open || worst == domi_core::BreakerState::Closed {
                    worst = s;
                }
            }
            worst.as_str().to_string()
        };
        let counters = per_shard
            .iter()
            .fold(domi_core::Snapshot::default(), |a, (s, _, _)| a + *s);
        let table = self.peers();
        Status {
            id: info.id.get(),
            name: info.name.clone(),
            cluster: info.cluster.clone(),
            state: info.state.as_str().into(),
            channels: info.channels.iter().map(|c| c.0).collect(),
            shards: self.shards(),
            uptime_s: self.shared.started.elapsed().as_secs_f64(),
            peers: table
                .peers()
                .filter(|p| p.info.id != info.id)
                .map(|p| PeerStatus {
                    id: p.info.id.get(),
                    name: p.info.name.clone(),
                    address: p.addr.to_string(),
                    state: if p.up {
                        p.info.state.as_str().into()
                    } else {
                        "down".into()
                    },
                    connected: connected.contains(&p.info.id),
                    breaker: breaker(p.info.id),
                })
                .collect(),
            counters: counters
                .fields()
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
        }
    }

    fn metrics(&self) -> Vec<Metric> {
        crate::metrics::collect(self, &self.status())
    }
}

/// The admin server's view of the node (weak: the server never keeps a
/// dropped node alive).
struct NodeControl(Weak<Shared>);

impl NodeControl {
    fn node(&self) -> Option<Node> {
        self.0.upgrade().map(|shared| Node { shared })
    }
}

impl Control for NodeControl {
    fn status(&self) -> Status {
        self.node().map(|n| n.status()).unwrap_or_else(|| Status {
            id: 0,
            name: String::new(),
            cluster: String::new(),
            state: "draining".into(),
            channels: vec![],
            shards: 0,
            uptime_s: 0.0,
            peers: vec![],
            counters: Default::default(),
        })
    }
    fn metrics(&self) -> Vec<Metric> {
        self.node().map(|n| n.metrics()).unwrap_or_default()
    }
    fn pause(&self) {
        if let Some(n) = self.node() {
            n.pause();
        }
    }
    fn resume(&self) {
        if let Some(n) = self.node() {
            n.resume();
        }
    }
    fn stop(&self) {
        if let Some(n) = self.node() {
            n.stop_in_background();
        }
    }
    fn is_draining(&self) -> bool {
        self.node()
            .map(|n| {
                n.shared.stopping.load(Ordering::Acquire) || n.info().state == NodeState::Draining
            })
            .unwrap_or(true)
    }
    /// The state from the node's info, without the round trip to every
    /// shard that [`Control::status`] makes: `/health` is polled.
    fn state(&self) -> String {
        let state = match self.node() {
            Some(n) if !n.shared.stopping.load(Ordering::Acquire) => n.info().state,
            _ => NodeState::Draining,
        };
        state.as_str().to_owned()
    }
}
