//! The running node: starts the shards and is the `Send + Sync` handle that
//! plain threads use to reach them.
//!
//! Every method of [`Node`] hands its work to a shard over a bounded channel
//! (one wake-up, tens of µs on a small VM). Code that sends a lot should run
//! on a shard instead, through [`Node::spawn_on`] or inside a handler, where
//! [`LocalBus`] sends with no hop at all.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_lite::future;
use glommio::{ExecutorJoinHandle, LocalExecutorBuilder, Placement};
use tracing::{info, warn};

use crate::channel::{Channel, NodeId};
use crate::config::{ConfigError, NodeConfig};
use crate::error::{BusError, SendFailure, SendOp};
use crate::frame::PROTOCOL_VERSION;
use crate::handler::{Handler, HandlerTable};
use crate::handshake::{NodeInfo, NodeState};
use crate::membership::{LocalNode, Membership, MembershipContext, MembershipError};
use crate::route::{Directory, Peer};
use crate::shard::{self, Command, LocalBus, Outgoing};
use crate::shared::Shared;
use crate::stats::Snapshot;

/// Why a node did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A subscription was refused (reserved channel).
    #[error(transparent)]
    Subscribe(#[from] BusError),
    /// The bus address could not be bound.
    #[error("cannot bind {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// A shard's executor did not start.
    #[error("shard {shard} did not start: {reason}")]
    Executor {
        /// Which shard.
        shard: usize,
        /// What failed.
        reason: String,
    },
    /// Membership failed (e.g. etcd unreachable, cluster full).
    #[error(transparent)]
    Membership(#[from] MembershipError),
}

struct Inner {
    shared: Arc<Shared>,
    senders: Vec<async_channel::Sender<Command>>,
    next_shard: AtomicUsize,
    threads: Mutex<Vec<ExecutorJoinHandle<()>>>,
}

/// A running node. Cheap to clone; `Send + Sync`; stops when [`Node::stop`]
/// is called or the last clone is dropped.
#[derive(Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("id", &self.id())
            .field("addr", &self.local_addr())
            .finish()
    }
}

/// A task started with [`Node::spawn_on`].
pub struct ShardTask<T> {
    rx: crossbeam_channel::Receiver<T>,
}

impl<T> ShardTask<T> {
    /// Blocks until the task finishes; `None` if the node stopped first.
    pub fn join(self) -> Option<T> {
        self.rx.recv().ok()
    }

    /// Waits at most `timeout`; `None` if it did not finish in time.
    pub fn join_timeout(&self, timeout: Duration) -> Option<T> {
        self.rx.recv_timeout(timeout).ok()
    }
}

fn bind_port(addr: SocketAddr) -> Result<(socket2::Socket, SocketAddr), std::io::Error> {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    // SO_REUSEPORT lets every shard listen on this port. SO_REUSEADDR only
    // for a port given: on port 0 it would let the kernel hand the same
    // ephemeral port to another node binding port 0 at the same moment
    // (neither listening yet), and the second node's shards would then
    // fail to listen, or share the port.
    s.set_reuse_port(true)?;
    if addr.port() != 0 {
        s.set_reuse_address(true)?;
    }
    s.bind(&addr.into())?;
    let bound = s
        .local_addr()?
        .as_socket()
        .ok_or_else(|| std::io::Error::other("not an IP socket"))?;
    Ok((s, bound))
}

impl Node {
    /// Starts a node: validates `config`, binds its port, asks `membership`
    /// for an id, starts the shards, then starts membership.
    pub fn start(
        config: NodeConfig,
        subscriptions: Vec<(Channel, Handler)>,
        mut membership: Box<dyn Membership>,
    ) -> Result<Node, StartError> {
        config.validate()?;
        crate::fault::install_hook();
        crate::fd_limit::raise_once();
        let mut table = HandlerTable::default();
        for (ch, h) in subscriptions {
            table = table.with(ch, h)?;
        }
        let (probe, bound) = bind_port(config.tcp).map_err(|source| StartError::Bind {
            addr: config.tcp,
            source,
        })?;
        // Where peers reach us: never an unspecified address.
        let addr =
            crate::advertise::advertised(bound, config.advertise, &crate::advertise::host_addrs())
                .map_err(ConfigError::from)?;
        let mut info = NodeInfo {
            version: PROTOCOL_VERSION,
            cluster: config.cluster.clone(),
            id: NodeId::FIRST,
            name: config.name.clone(),
            instance: fastrand::u64(..),
            channels: table.channels(),
            state: NodeState::Serving,
        };
        info.id = membership.join(&info, addr)?;
        let directory = Arc::new(Directory::new());
        directory.update(|t| {
            t.with_peer(Peer {
                info: info.clone(),
                addr,
                up: true,
            })
        });
        let local = LocalNode::new(
            info.clone(),
            addr,
            config.cluster_secret.clone().map(Arc::new),
        );
        let tls = config.tls.clone();
        let shared = Arc::new(Shared::new(
            config,
            bound,
            local.clone(),
            directory.clone(),
            table,
            membership,
        ));
        let (senders, threads) = start_shards(&shared)?;
        drop(probe);
        let node = Node {
            inner: Arc::new(Inner {
                shared,
                senders,
                next_shard: AtomicUsize::new(0),
                threads: Mutex::new(threads),
            }),
        };
        let ctx = MembershipContext {
            directory,
            local,
            tls,
        };
        if let Err(e) = node.shared().membership().start(ctx) {
            node.stop();
            return Err(e.into());
        }
        info!(id = %info.id, name = %info.name, %bound, advertised = %addr, shards = node.shards(), "node started");
        Ok(node)
    }

    pub(crate) fn shared(&self) -> &Shared {
        &self.inner.shared
    }

    /// This node's id in its cluster. It changes only if the membership
    /// store gave the id to another node while this one was cut off from it
    /// (see [`crate::MembershipContext::renumber`]).
    pub fn id(&self) -> NodeId {
        self.shared().id()
    }

    /// The bus address actually bound (port 0 resolved).
    pub fn local_addr(&self) -> SocketAddr {
        self.shared().addr
    }

    /// The bus address this node tells the cluster (etcd record, its own
    /// peer-table entry): the advertise address, or the bound one, never
    /// an unspecified one (see [`crate::advertise`]).
    pub fn advertised_addr(&self) -> SocketAddr {
        self.shared().local.addr()
    }

    /// Number of shards.
    pub fn shards(&self) -> usize {
        self.inner.senders.len()
    }

    /// This node's current info (channels, state).
    pub fn info(&self) -> NodeInfo {
        self.shared().local_info()
    }

    /// The current peer table (this node included).
    pub fn peers(&self) -> Arc<crate::route::PeerTable> {
        self.shared().directory.snapshot()
    }

    /// Serves `channel` with `handler` on every shard, and tells the cluster.
    pub fn subscribe(&self, channel: Channel, handler: Handler) -> Result<(), BusError> {
        self.shared().subscribe(channel, handler)?;
        self.announce();
        Ok(())
    }

    /// Stops serving `channel`; returns whether it was served.
    pub fn unsubscribe(&self, channel: Channel) -> bool {
        let was = self.shared().unsubscribe(channel);
        if was {
            self.announce();
        }
        was
    }

    /// Sets this node's state (serving, paused, draining) and tells the cluster.
    pub fn set_state(&self, state: NodeState) {
        self.shared().set_state(state);
        self.announce();
    }

    /// Moves from state `from` to `to` and tells the cluster, atomically with
    /// respect to every other state change; returns false (and changes
    /// nothing) when the node is not in `from` — e.g. a pause racing a drain
    /// never overwrites `draining`.
    pub fn transition(&self, from: NodeState, to: NodeState) -> bool {
        let moved = self.shared().transition(from, to);
        if moved {
            self.announce();
        }
        moved
    }

    /// Asks every shard to tell its peers our new info now; a shard whose
    /// queue is full does it on its next housekeeping tick instead.
    fn announce(&self) {
        for s in &self.inner.senders {
            let _ = s.try_send(Command::Announce);
        }
    }

    pub(crate) fn pre_check(&self, channel: Channel, len: usize) -> Result<(), BusError> {
        crate::error::check_send(
            channel,
            len,
            self.shared().config.max_payload,
            self.shared().is_stopped(),
        )
    }

    pub(crate) fn has_provider(&self, channel: Channel, broadcast: bool) -> Result<(), BusError> {
        let table = self.shared().directory.load();
        let none = if broadcast {
            table.subscribers(channel).is_empty()
        } else {
            table.providers(channel).is_empty()
        };
        if none {
            Err(BusError::NoProvider { channel })
        } else {
            Ok(())
        }
    }

    /// Runs `f` on the next shard (round-robin over shards).
    pub(crate) fn run(&self, f: impl FnOnce(&LocalBus) + Send + 'static) -> Result<(), BusError> {
        let i = self.inner.next_shard.fetch_add(1, Ordering::Relaxed) % self.shards();
        self.run_on(i, f)
    }

    pub(crate) fn run_on(
        &self,
        shard: usize,
        f: impl FnOnce(&LocalBus) + Send + 'static,
    ) -> Result<(), BusError> {
        let sender = self
            .inner
            .senders
            .get(shard)
            .ok_or(BusError::Backpressure {
                what: "no such shard",
            })?;
        sender
            .try_send(Command::Run(Box::new(f)))
            .map_err(|e| match e {
                async_channel::TrySendError::Full(_) => BusError::Backpressure {
                    what: "shard command queue",
                },
                async_channel::TrySendError::Closed(_) => BusError::ShuttingDown,
            })
    }

    /// Request/response from a plain thread: blocks until the reply, or a
    /// typed error within `timeout`.
    pub fn request(
        &self,
        channel: Channel,
        payload: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>, BusError> {
        self.request_blocking(Outgoing::any(channel), None, payload, timeout)
    }

    /// A request from a plain thread (on shard `shard`, or the next one),
    /// blocking until its answer.
    pub(crate) fn request_blocking(
        &self,
        out: Outgoing,
        shard: Option<usize>,
        payload: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>, BusError> {
        let channel = out.channel;
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.request_with(out, shard, payload, timeout, None, move |r| {
            let _ = tx.send(r);
        })?;
        // The shard answers within `timeout`; the grace covers a shard that
        // cannot run the request at all (e.g. blocked by this very call made
        // from one of its own handlers), so this never hangs.
        let grace = Duration::from_secs(1);
        let limit = timeout.min(crate::timeouts::MAX_WAIT).saturating_add(grace);
        match rx.recv_timeout(limit) {
            Ok(r) => r,
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => Err(BusError::Timeout {
                channel,
                after: timeout,
            }),
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => Err(BusError::ShuttingDown),
        }
    }

    /// Request/response as a future usable on any executor (`Send`).
    /// Dropping the future cancels the request: its slot on the shard is
    /// freed at once (a reply that still comes is dropped).
    pub fn request_async(
        &self,
        channel: Channel,
        payload: &[u8],
        timeout: Duration,
    ) -> impl Future<Output = Result<Vec<u8>, BusError>> + Send + 'static {
        self.request_future(Outgoing::any(channel), None, payload, timeout)
    }

    /// A request as a `Send` future (see [`Node::request_async`]).
    pub(crate) fn request_future(
        &self,
        out: Outgoing,
        shard: Option<usize>,
        payload: &[u8],
        timeout: Duration,
    ) -> impl Future<Output = Result<Vec<u8>, BusError>> + Send + 'static {
        let (tx, rx) = futures_channel::oneshot::channel();
        let (cancel_tx, cancel_rx) = futures_channel::oneshot::channel::<()>();
        let started = self.request_with(out, shard, payload, timeout, Some(cancel_rx), move |r| {
            let _ = tx.send(r);
        });
        // Dropped with the future: the shard sees the cancellation.
        let cancel = cancel_tx;
        async move {
            let _cancel = cancel;
            started?;
            rx.await.unwrap_or(Err(BusError::ShuttingDown))
        }
    }

    fn request_with(
        &self,
        out: Outgoing,
        shard: Option<usize>,
        payload: &[u8],
        timeout: Duration,
        cancelled: Option<futures_channel::oneshot::Receiver<()>>,
        done: impl FnOnce(Result<Vec<u8>, BusError>) + Send + 'static,
    ) -> Result<(), BusError> {
        self.pre_check(out.channel, payload.len())?;
        let payload = payload.to_vec();
        // The caller's span (on its thread): the request's span is its child.
        let parent = tracing::Span::current();
        let task = move |bus: &LocalBus| {
            let bus = bus.clone();
            let task = async move {
                let request = async { Some(bus.request_for(out, &payload, timeout).await) };
                let result = match cancelled {
                    // The caller's future was dropped: dropping the request
                    // here frees its slot (its sender half fires `Canceled`).
                    // Polled first, so a request cancelled before this task
                    // ran is never sent.
                    Some(c) => future::or(async { c.await.err().and(None) }, request).await,
                    None => request.await,
                };
                if let Some(r) = result {
                    done(r);
                }
            };
            glommio::spawn_local(tracing::Instrument::instrument(task, parent)).detach();
        };
        match shard {
            Some(i) => self.run_on(i, task),
            None => self.run(task),
        }
    }

    /// One-way message to one provider. Routing errors known now are
    /// returned; later ones (on the shard, or a provider lost before the
    /// message left) go to the `on_send_error` hook ([`SendFailure`]).
    pub fn notify(&self, channel: Channel, payload: &[u8]) -> Result<(), BusError> {
        self.pre_check(channel, payload.len())?;
        self.has_provider(channel, false)?;
        let payload = payload.to_vec();
        self.run(move |bus| {
            if let Err(error) = bus.notify(channel, &payload) {
                bus.send_failed(failure(SendOp::Notify, channel, Channel(0), error));
            }
        })
    }

    /// One-way message to every subscriber of `channel` that is not
    /// draining (paused ones included); later failures go to the
    /// `on_send_error` hook.
    pub fn publish(&self, channel: Channel, payload: &[u8]) -> Result<(), BusError> {
        self.pre_check(channel, payload.len())?;
        self.has_provider(channel, true)?;
        let payload = payload.to_vec();
        self.run(move |bus| {
            if let Err(error) = bus.publish(channel, &payload) {
                bus.send_failed(failure(SendOp::Publish, channel, Channel(0), error));
            }
        })
    }

    /// The seed's `call`: the provider's reply goes to this node's
    /// `reply_channel` handler; a refusal (or a failure after this returns)
    /// goes to the `on_send_error` hook, like the seed's `reject`.
    pub fn call(
        &self,
        channel: Channel,
        payload: &[u8],
        reply_channel: Channel,
    ) -> Result<(), BusError> {
        self.pre_check(channel, payload.len())?;
        crate::error::check_user_channel(reply_channel)?;
        self.has_provider(channel, false)?;
        let payload = payload.to_vec();
        self.run(move |bus| {
            if let Err(error) = bus.call(channel, &payload, reply_channel) {
                bus.send_failed(failure(SendOp::Call, channel, reply_channel, error));
            }
        })
    }

    /// Runs `f(bus)` as a task on shard `shard`; sends from there need no
    /// hop. A panic in the task is caught and logged (the shard lives on);
    /// its [`ShardTask`] then yields `None`.
    pub fn spawn_on<F, Fut, T>(&self, shard: usize, f: F) -> Result<ShardTask<T>, BusError>
    where
        F: FnOnce(LocalBus) -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
        T: Send + 'static,
    {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.run_on(shard, move |bus| {
            let bus = bus.clone();
            glommio::spawn_local(async move {
                let task = crate::fault::CatchPanic::new(Box::pin(async move {
                    let fut = f(bus);
                    fut.await
                }));
                match task.await {
                    Ok(v) => {
                        let _ = tx.send(v);
                    }
                    Err(p) => warn!(shard, panic = %p.message, "a shard task panicked"),
                }
            })
            .detach();
        })?;
        Ok(ShardTask { rx })
    }

    /// Sets (`Some`) or lifts (`None`) the rate limit of `channel` on this
    /// running node (see [`crate::limiter`]); a new limit starts with a
    /// full burst.
    pub fn set_rate_limit(
        &self,
        channel: Channel,
        limit: Option<crate::limiter::RateLimit>,
    ) -> Result<(), crate::limiter::InvalidRateLimit> {
        if let Some(l) = limit {
            l.validate(channel)?;
        }
        self.shared().limits.set(channel, limit);
        Ok(())
    }

    /// Sets (`Some`) or lifts (`None`) the node-wide rate limit on this
    /// running node: every inbound request and one-way message, whatever its
    /// channel, passes it after its channel's limit.
    pub fn set_node_rate_limit(
        &self,
        limit: Option<crate::limiter::RateLimit>,
    ) -> Result<(), crate::limiter::InvalidRateLimit> {
        if let Some(l) = limit {
            l.validate_node()?;
        }
        self.shared().limits.set_node(limit);
        Ok(())
    }

    /// The node-wide rate limit, and how many messages it refused or
    /// dropped.
    pub fn node_rate_limit(&self) -> Option<(crate::limiter::RateLimit, u64)> {
        self.shared().limits.node()
    }

    /// Every rate-limited channel: its limit, and how many messages it
    /// refused or dropped.
    pub fn rate_limits(&self) -> Vec<(Channel, crate::limiter::RateLimit, u64)> {
        self.shared().limits.snapshot()
    }

    /// Counters summed over every shard.
    pub fn stats(&self) -> Snapshot {
        self.on_every_shard(LocalBus::counters)
            .into_iter()
            .fold(Snapshot::default(), |a, b| a + b)
    }

    /// Blocks until at least `count` nodes serve `channel` (woken by each
    /// membership change, no polling); `NoProvider` after `timeout`.
    pub fn wait_for_providers(
        &self,
        channel: Channel,
        count: usize,
        timeout: Duration,
    ) -> Result<(), BusError> {
        let directory = &self.shared().directory;
        let deadline = crate::timeouts::deadline(Instant::now(), timeout);
        loop {
            let seen = directory.changes();
            if directory.load().providers(channel).len() >= count {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(BusError::NoProvider { channel });
            }
            directory.wait_changed(seen, deadline);
        }
    }

    /// A future that ends once at least `count` nodes serve `channel`
    /// (usable on any executor: it parks no thread; bound it with the
    /// executor's timeout, e.g. `tokio::time::timeout`).
    pub fn providers_ready(
        &self,
        channel: Channel,
        count: usize,
    ) -> impl Future<Output = ()> + Send + 'static {
        let shared = self.inner.shared.clone();
        async move {
            let directory = &shared.directory;
            loop {
                let seen = directory.changes();
                if directory.load().providers(channel).len() >= count {
                    return;
                }
                directory.changed(seen).await;
            }
        }
    }

    /// Per-channel request and handler durations and request outcomes,
    /// merged over every shard (see [`crate::telemetry`]).
    pub fn telemetry(&self) -> crate::telemetry::Telemetry {
        let mut total = crate::telemetry::Telemetry::default();
        for t in self.on_every_shard(LocalBus::telemetry) {
            total.merge(&t);
        }
        total
    }

    /// `f` run on every shard (a shard that does not answer within 5 s
    /// is left out).
    fn on_every_shard<T: Send + 'static>(&self, f: fn(&LocalBus) -> T) -> Vec<T> {
        (0..self.shards())
            .filter_map(|i| {
                let task = self.spawn_on(i, move |bus| async move { f(&bus) }).ok()?;
                task.join_timeout(Duration::from_secs(5))
            })
            .collect()
    }

    /// Whether [`Node::stop`] was called.
    pub fn is_stopped(&self) -> bool {
        self.shared().is_stopped()
    }

    /// Leaves the cluster and stops every shard; waiting requests fail with
    /// `ShuttingDown`. Idempotent.
    pub fn stop(&self) {
        self.inner.stop();
    }
}

impl Inner {
    fn stop(&self) {
        if self.shared.stopped.swap(true, Ordering::AcqRel) {
            return;
        }
        let started = Instant::now();
        self.shared.membership().leave();
        for s in &self.senders {
            let _ = s.try_send(Command::Stop);
            s.close();
        }
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        let me = std::thread::current().name().map(str::to_owned);
        for t in threads {
            if me.as_deref() == t.thread().name() {
                continue; // stop() called from a shard: it exits by itself.
            }
            if t.join().is_err() {
                warn!("a shard panicked while stopping");
            }
        }
        info!(id = %self.shared.id(), ms = started.elapsed().as_millis() as u64, "node stopped");
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What [`crate::watch`] reaches of a node: the state its shards share and
/// their command queues (a `Send` way to run code on one shard).
impl Node {
    pub(crate) fn shared_state(&self) -> &Arc<Shared> {
        &self.inner.shared
    }

    pub(crate) fn command_senders(&self) -> &[async_channel::Sender<Command>] {
        &self.inner.senders
    }
}

pub(crate) fn failure(
    op: SendOp,
    channel: Channel,
    reply_channel: Channel,
    error: BusError,
) -> SendFailure {
    SendFailure {
        op,
        channel,
        reply_channel,
        peer: None,
        error,
    }
}

type Started = (
    Vec<async_channel::Sender<Command>>,
    Vec<ExecutorJoinHandle<()>>,
);

fn start_shards(shared: &Arc<Shared>) -> Result<Started, StartError> {
    let cfg = &shared.config;
    let mut senders = Vec::with_capacity(cfg.shards);
    let mut threads = Vec::with_capacity(cfg.shards);
    // Closing the command queues stops every shard, a late one as soon as it
    // runs; `start` waits for them only briefly, so a shard whose executor
    // has not started yet cannot hold the caller's error back.
    let stop_all = |senders: &mut Vec<async_channel::Sender<Command>>,
                    threads: Vec<ExecutorJoinHandle<()>>| {
        for s in senders.drain(..) {
            s.close();
        }
        let (done, joined) = crossbeam_channel::bounded(1);
        let joiner = std::thread::Builder::new()
            .name("domi-stop".into())
            .spawn(move || {
                for t in threads {
                    let _ = t.join();
                }
                let _ = done.send(());
            });
        if joiner.is_err() || joined.recv_timeout(Duration::from_secs(2)).is_err() {
            warn!("a shard of a node that failed to start did not stop; leaving it behind");
        }
    };
    for i in 0..cfg.shards {
        let (tx, rx) = async_channel::bounded(cfg.command_queue);
        let (ready_tx, ready_rx) = crossbeam_channel::bounded(1);
        let placement = if let Some(list) = &cfg.cpus {
            Placement::Fixed(list[i % list.len()])
        } else if cfg.pin_cpus {
            let allowed = crate::config::allowed_cpus();
            Placement::Fixed(allowed[i % allowed.len()])
        } else {
            Placement::Unbound
        };
        let mut builder = LocalExecutorBuilder::new(placement)
            .name(&format!("domi-{}-{i}", shared.id().get()))
            .io_memory(cfg.io_memory)
            .preempt_timer(cfg.poll_interval);
        if let Some(spin) = cfg.spin_before_park {
            builder = builder.spin_before_park(spin);
        }
        let sh = shared.clone();
        let handle = builder
            .spawn(move || shard::run(sh, i, rx, ready_tx))
            .map_err(|e| StartError::Executor {
                shard: i,
                reason: e.to_string(),
            });
        let handle = match handle {
            Ok(h) => h,
            Err(e) => {
                stop_all(&mut senders, threads);
                return Err(e);
            }
        };
        threads.push(handle);
        senders.push(tx);
        let result = ready_rx
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| Err(std::io::Error::other("shard did not report ready")));
        if let Err(source) = result {
            stop_all(&mut senders, threads);
            return Err(StartError::Bind {
                addr: shared.addr,
                source,
            });
        }
    }
    Ok((senders, threads))
}
