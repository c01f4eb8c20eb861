//! A shard's upkeep: down-marks and reconnects, timeouts and heartbeats,
//! announcements, membership events, shutdown, and the shard's own tasks
//! (the run loop, the accept loop, housekeeping, the expiry of waiting
//! requests).

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::future;
use glommio::net::TcpListener;
use tracing::{debug, warn};

use super::{Command, Down, LocalBus, ShardCore};
use crate::channel::NodeId;
use crate::conn::{CloseReason, Conn, Dir};
use crate::error::BusError;
use crate::handler::HandlerTable;
use crate::notify::Signal;
use crate::route::{PeerEvent, PeerTable};
use crate::session::Session;
use crate::shared::Shared;
use crate::stats::Counters;
use crate::timeouts::Timeouts;

impl LocalBus {
    pub(super) fn mark_down(&self, peer: NodeId) {
        let mut down = self.0.down.borrow_mut();
        let slot = &mut down[peer.index()];
        let attempts = slot.as_ref().map(|d| d.attempts + 1).unwrap_or(0);
        let delay = self
            .0
            .shared
            .config
            .backoff
            .delay(attempts, fastrand::f64());
        if slot.is_none() {
            self.0.downs.set(self.0.downs.get() + 1);
        }
        *slot = Some(Down {
            until: Instant::now() + delay,
            attempts,
        });
        // Every other shard of the node skips it too; this shard retries
        // it and clears the mark when a connection succeeds.
        self.0.shared.set_down(peer, true);
        self.0.housekeeping.notify();
    }

    pub(super) fn clear_down(&self, peer: NodeId) {
        if self.0.down.borrow_mut()[peer.index()].take().is_some() {
            self.0.downs.set(self.0.downs.get() - 1);
        }
        self.0.shared.set_down(peer, false);
    }

    /// Every connection of this shard, both directions.
    pub(super) fn all_conns(&self) -> Vec<Rc<Conn>> {
        let out = self.0.outbound.borrow();
        let inb = self.0.inbound.borrow();
        out.iter().flatten().chain(inb.values()).cloned().collect()
    }

    /// Lets each connection's session judge it at `now`: expired ones
    /// (handshake, half frame, silence) close; idle outbound ones send a
    /// heartbeat, or close once unused for [`Timeouts::idle`] with nothing
    /// waiting on them. Connections that announced an id the node no longer
    /// has (see [`crate::MembershipContext::renumber`]) close.
    ///
    /// [`Timeouts::idle`]: crate::timeouts::Timeouts::idle
    pub(super) fn check_connections(&self) {
        let now = Instant::now();
        let t = self.0.shared.config.timeouts;
        let me = self.node_id();
        // Outbound connections to take out of the table, and why.
        let mut detach: Vec<(NodeId, CloseReason)> = Vec::new();
        // Judging a connection only queues frames and raises flags: the
        // tables are not touched meanwhile.
        let out = self.0.outbound.borrow();
        let inb = self.0.inbound.borrow();
        for conn in out.iter().flatten().chain(inb.values()) {
            let announced = conn.session.borrow().me();
            if let Some(announced) = announced.filter(|&a| a != me) {
                debug!(%announced, now = %me, "closing a connection opened under our old id");
                let reason = CloseReason::Renumbered { announced, now: me };
                match (conn.dir, conn.peer()) {
                    (Dir::Outbound, Some(peer)) => detach.push((peer, reason)),
                    _ => conn.fail(reason),
                }
                continue;
            }
            let seen = conn.observe(now);
            if conn.dir == Dir::Outbound
                && conn.is_open()
                && t.idle_close_due(&seen, conn.unanswered_calls(), || {
                    conn.queued() > 0 || self.has_waiters(conn)
                })
            {
                if let Some(peer) = conn.peer() {
                    detach.push((peer, CloseReason::Local));
                }
                continue;
            }
            let close = conn.session.borrow_mut().on_tick(now, &t, &seen);
            conn.flush_session();
            if let Some(close) = close {
                conn.fail(CloseReason::Session(close));
            }
        }
        drop((out, inb));
        for (peer, reason) in detach {
            if matches!(reason, CloseReason::Local) {
                debug!(%peer, idle = ?t.idle, "closing an unused connection");
                self.close_unused(peer);
            } else {
                self.detach_outbound(peer, reason);
            }
        }
    }

    /// Before dialling: at the outbound cap ([`NodeConfig::max_outbound`]),
    /// closes the least recently used connection that nothing depends on
    /// (not used since housekeeping last looked, no request waiting, no
    /// unanswered `call`, nothing queued). With none such, the cap is
    /// exceeded rather than a send refused.
    ///
    /// [`NodeConfig::max_outbound`]: crate::config::NodeConfig::max_outbound
    pub(super) fn make_room_for_outbound(&self) {
        let cap = self.0.shared.config.max_outbound;
        if self.0.outbound_open.get() < cap {
            return;
        }
        let now = Instant::now();
        let candidates: Vec<(Instant, Rc<Conn>)> = self
            .0
            .outbound
            .borrow()
            .iter()
            .flatten()
            .filter(|c| {
                c.is_open() && !c.used_since_last_look() && !c.unanswered_calls() && c.queued() == 0
            })
            .map(|c| (c.last_used(now), c.clone()))
            .collect();
        let victim = Timeouts::least_recently_used(candidates, |c| self.has_waiters(c))
            .and_then(|c| c.peer());
        match victim {
            Some(peer) => {
                debug!(%peer, cap, "outbound connection cap reached; closing the least recently used");
                self.close_unused(peer);
            }
            None => debug!(
                cap,
                "outbound connection cap reached, but every connection is in use"
            ),
        }
    }

    /// Whether requests wait for answers on `conn`.
    pub(super) fn has_waiters(&self, conn: &Conn) -> bool {
        self.0.pending.borrow().values().any(|w| w.conn == conn.id)
    }

    /// Takes the connection to `peer` out of the table, so the next send
    /// dials a new one, and closes it for `reason` (a local close marks no
    /// peer down). Whether there was one.
    fn detach_outbound(&self, peer: NodeId, reason: CloseReason) -> bool {
        let conn = self.0.outbound.borrow_mut()[peer.index()].take();
        match conn {
            Some(conn) => {
                self.0.outbound_open.set(self.0.outbound_open.get() - 1);
                conn.fail(reason);
                true
            }
            None => false,
        }
    }

    /// Closes the unused connection to `peer` (see [`Self::detach_outbound`]),
    /// counted in `closed_idle`.
    pub(super) fn close_unused(&self, peer: NodeId) {
        if self.detach_outbound(peer, CloseReason::Local) {
            Counters::inc(&self.0.counters.closed_idle);
        }
    }

    /// Starts a background reconnect (handshake only) to every down peer
    /// whose backoff has expired; success clears the mark.
    pub(super) fn retry_down_peers(&self) {
        if self.0.downs.get() == 0 {
            return;
        }
        let now = Instant::now();
        let due: Vec<NodeId> = self
            .0
            .down
            .borrow()
            .iter()
            .enumerate()
            .filter_map(|(id, d)| {
                d.as_ref()
                    .filter(|d| d.until <= now)
                    .and_then(|_| NodeId::new(id as u16))
            })
            .collect();
        for peer in due {
            if self.0.outbound.borrow()[peer.index()].is_none() {
                if let Err(e) = self.conn_to(peer) {
                    debug!(%peer, error = %e, "reconnect not possible now");
                }
            }
        }
    }

    /// Pushes our current info to every connected peer.
    pub(super) fn announce(&self) {
        let epoch = self.0.shared.info_epoch.load(Ordering::Acquire);
        self.0.announced.set(epoch);
        let info = self.0.shared.local_info().to_bytes();
        let me = self.node_id();
        for conn in self.0.inbound.borrow().values() {
            // Connections opened under an old id are about to close.
            if conn.is_open() && conn.session.borrow().me() == Some(me) {
                conn.push_announce(me, &info);
            }
        }
    }

    /// Drains membership events (never blocking): closes connections to
    /// peers that left, went down or moved, and forgets their down-marks.
    pub(super) fn apply_peer_events(&self) {
        let mut stale = Vec::new();
        while let Ok(event) = self.0.events.try_recv() {
            match event {
                PeerEvent::Joined(_) => {}
                PeerEvent::Left(id) => {
                    self.clear_down(id);
                    stale.push(id);
                }
                PeerEvent::Changed(id) => {
                    let table = self.table();
                    let conn_addr = self.0.outbound.borrow()[id.index()]
                        .as_ref()
                        .and_then(|c| c.remote.get());
                    match table.get(id) {
                        Some(p) if p.up && conn_addr.is_none_or(|a| a == p.addr) => {}
                        _ => stale.push(id),
                    }
                }
            }
        }
        for id in stale {
            let conn = self.0.outbound.borrow()[id.index()].clone();
            if let Some(c) = conn {
                c.close();
            }
        }
    }

    /// Async handlers still running or waiting for a slot, and bytes still
    /// queued on this shard's connections (what a drain waits for).
    pub fn busy(&self) -> (u64, usize) {
        let queued = self.all_conns().iter().map(|c| c.queued()).sum();
        let slots = self.0.slots.borrow();
        (slots.running() + slots.queued() as u64, queued)
    }

    /// Peers this shard holds an open outbound connection to.
    pub fn connected_peers(&self) -> Vec<NodeId> {
        self.0
            .outbound
            .borrow()
            .iter()
            .flatten()
            .filter(|c| c.is_open())
            .filter_map(|c| c.peer())
            .collect()
    }

    /// This shard's counters.
    pub fn counters(&self) -> crate::stats::Snapshot {
        self.0.counters.snapshot()
    }

    /// This shard's per-channel telemetry so far.
    pub fn telemetry(&self) -> crate::telemetry::Telemetry {
        let mut t = self.0.telemetry.borrow_mut();
        self.with_sampler(|s| s.flush(&mut t));
        t.clone()
    }

    pub(super) fn shutdown(&self) {
        self.0.stopping.raise();
        let conns = self.all_conns();
        for c in conns {
            c.close();
        }
        for (_, w) in self.0.pending.borrow_mut().drain() {
            let _ = w.tx.send(Err(BusError::ShuttingDown), None);
        }
        self.refuse_queued(crate::error::ErrorCode::ShuttingDown);
    }
}

/// Runs one shard until it is told to stop.
pub(crate) async fn run(
    shared: Arc<Shared>,
    index: usize,
    commands: async_channel::Receiver<Command>,
    ready: crossbeam_channel::Sender<Result<(), std::io::Error>>,
) {
    let listener = match TcpListener::bind(shared.addr) {
        Ok(l) => {
            let _ = ready.send(Ok(()));
            l
        }
        Err(e) => {
            let _ = ready.send(Err(e.into()));
            return;
        }
    };
    let limits = crate::overload::Limits {
        running: shared.config.max_handlers,
        queued: shared.config.max_queued,
        queued_bytes: shared.config.max_queued_bytes,
        per_channel: shared.config.channel_concurrency.clone(),
    };
    let read_spin = reader_spin(&shared.config);
    let events = shared.directory.subscribe();
    let bus = LocalBus(Rc::new(ShardCore {
        handlers: RefCell::new((u64::MAX, Rc::new(HandlerTable::default()))),
        shared,
        index,
        table: RefCell::new((u64::MAX, Arc::new(PeerTable::new()))),
        outbound: RefCell::new(vec![None; NodeId::MAX as usize + 1]),
        outbound_open: Cell::new(0),
        inbound: RefCell::default(),
        cursors: RefCell::new(crate::route::Cursors::new(index)),
        breakers: RefCell::new((0..=NodeId::MAX).map(|_| None).collect()),
        down: RefCell::new((0..=NodeId::MAX).map(|_| None).collect()),
        downs: Cell::new(0),
        pending: RefCell::default(),
        next_id: Cell::new(1),
        events,
        counters: Rc::default(),
        telemetry: RefCell::default(),
        sampler: Cell::default(),
        clock: quanta::Clock::new(),
        slots: RefCell::new(crate::overload::Slots::new(limits)),
        stopping: Signal::default(),
        announced: Cell::new(0),
        read_spin,
        housekeeping: crate::notify::Wake::default(),
        room: Rc::default(),
        expiries: RefCell::default(),
        expiry_timer: crate::notify::Wake::default(),
    }));
    let accept = glommio::spawn_local(accept_loop(bus.clone(), listener));
    let housekeeping = glommio::spawn_local(housekeeping(bus.clone()));
    let expiries = glommio::spawn_local(expire_requests(bus.clone()));
    while let Ok(cmd) = commands.recv().await {
        match cmd {
            Command::Run(f) => f(&bus),
            Command::Announce => bus.announce(),
            Command::Stop => break,
        }
    }
    bus.shutdown();
    // Commands queued behind `Stop` are dropped, not left waiting: a caller
    // blocked on one of them sees its reply channel close (`ShuttingDown`).
    commands.close();
    while commands.try_recv().is_ok() {}
    drop(accept);
    drop(housekeeping);
    drop(expiries);
}

/// Ends the waits of this shard's requests at their deadlines: one timer
/// for the shard, set to the earliest deadline (see [`crate::expiry`]).
async fn expire_requests(bus: LocalBus) {
    while !bus.0.stopping.is_raised() {
        let next = bus.0.expiries.borrow_mut().arm();
        match next {
            Some(at) => {
                let left = at.saturating_duration_since(Instant::now());
                future::or(glommio::timer::sleep(left), bus.0.expiry_timer.wait()).await;
            }
            None => future::or(bus.0.expiry_timer.wait(), bus.0.stopping.wait()).await,
        }
        let due = bus.0.expiries.borrow_mut().due(Instant::now());
        for wait in due {
            wait.expire();
        }
    }
}

async fn accept_loop(bus: LocalBus, listener: TcpListener) {
    loop {
        let accepted = future::or(async { Some(listener.accept().await) }, async {
            bus.0.stopping.wait().await;
            None
        })
        .await;
        match accepted {
            None => return,
            Some(Ok(stream)) => {
                let cfg = &bus.0.shared.config;
                let per_shard = cfg.max_connections.div_ceil(cfg.shards).max(1);
                if bus.0.inbound.borrow().len() >= per_shard {
                    Counters::inc(&bus.0.counters.refused_connections);
                    debug!(
                        limit = cfg.max_connections,
                        "connection refused: limit reached"
                    );
                    drop(stream);
                    continue;
                }
                let _ = stream.set_nodelay(true);
                let tls = match cfg.tls.as_ref().map(crate::tls::link::TlsLink::server) {
                    None => None,
                    Some(Ok(link)) => Some(link),
                    Some(Err(e)) => {
                        warn!(error = %e, "connection refused: cannot start TLS");
                        continue;
                    }
                };
                let conn = Conn::new(
                    bus.next_id(),
                    Dir::Inbound,
                    Session::accept(crate::auth::nonce()),
                    tls,
                    bus.0.shared.config.max_write_queue,
                    bus.0.counters.clone(),
                    bus.0.room.clone(),
                );
                conn.attach(stream);
                bus.0.inbound.borrow_mut().insert(conn.id, conn.clone());
                bus.0.housekeeping.notify();
                let b = bus.clone();
                glommio::spawn_local(async move { b.serve(conn).await }).detach();
            }
            Some(Err(e)) => {
                warn!(error = %e, "accept failed");
                glommio::timer::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

async fn housekeeping(bus: LocalBus) {
    while !bus.0.stopping.is_raised() {
        let tick = housekeeping_tick(
            bus.0.outbound_open.get(),
            bus.0.inbound.borrow().len(),
            bus.0.downs.get(),
            &bus.0.shared.config.timeouts,
        );
        // A connection opened or a peer marked down during a long idle round
        // cuts it short, so its timeouts and reconnects keep their pace.
        future::or(glommio::timer::sleep(tick), bus.0.housekeeping.wait()).await;
        bus.apply_peer_events();
        if bus.0.shared.info_epoch.load(Ordering::Acquire) != bus.0.announced.get() {
            bus.announce();
        }
        bus.check_connections();
        bus.retry_down_peers();
    }
}

/// How long a shard's housekeeping sleeps between rounds, given its open
/// connections (`outbound` dialled, `inbound` accepted) and down-marked
/// peers: 50 ms while peers are down (their reconnects are due at backoff
/// times); while connections are open, a quarter of the shortest limit to
/// watch on them ([`Timeouts::shortest`](crate::timeouts::Timeouts::shortest):
/// 125 ms by default with outbound ones, which send heartbeats; 500 ms with
/// accepted ones only); at most 1 s, which is also the pace with neither: an
/// idle node, one of hundreds on a host, wakes once a second (membership
/// events only close connections; opening a connection or marking a peer
/// down wakes the housekeeping at once).
pub(crate) fn housekeeping_tick(
    outbound: usize,
    inbound: usize,
    downs: usize,
    t: &crate::timeouts::Timeouts,
) -> Duration {
    const BUSY: Duration = Duration::from_millis(50);
    const IDLE: Duration = Duration::from_secs(1);
    if downs > 0 {
        BUSY
    } else if outbound + inbound > 0 {
        (t.shortest(outbound > 0) / 4).clamp(Duration::from_millis(1), IDLE)
    } else {
        IDLE
    }
}

/// How long a shard's readers busy-poll an empty socket: the spin before
/// parking when the shard is pinned (glommio spins only pinned executors),
/// zero otherwise.
fn reader_spin(config: &crate::config::NodeConfig) -> Duration {
    let pinned = config.cpus.is_some() || config.pin_cpus;
    match config.spin_before_park {
        Some(spin) if pinned => spin,
        _ => Duration::ZERO,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn housekeeping_slows_down_when_there_is_nothing_to_watch() {
        let t = Timeouts::default();
        assert_eq!(housekeeping_tick(0, 0, 0, &t), Duration::from_secs(1));
        assert_eq!(housekeeping_tick(3, 0, 0, &t), t.heartbeat / 4);
        assert_eq!(housekeeping_tick(3, 5, 0, &t), t.heartbeat / 4);
        assert_eq!(
            housekeeping_tick(0, 5, 0, &t),
            t.silence / 4,
            "accepted connections send no heartbeats"
        );
        assert_eq!(housekeeping_tick(0, 0, 1, &t), Duration::from_millis(50));
        assert_eq!(housekeeping_tick(3, 0, 2, &t), Duration::from_millis(50));
        let fast = Timeouts {
            handshake: Duration::from_millis(80),
            ..t
        };
        assert_eq!(housekeeping_tick(1, 0, 0, &fast), Duration::from_millis(20));
        let slow = Timeouts {
            heartbeat: Duration::from_secs(2),
            silence: Duration::from_secs(6),
            ..t
        };
        assert_eq!(
            housekeeping_tick(1, 1, 0, &slow),
            Duration::from_millis(500)
        );
        assert_eq!(housekeeping_tick(0, 1, 0, &slow), Duration::from_secs(1));
    }
}
