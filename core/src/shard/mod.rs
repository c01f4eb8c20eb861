//! One shard: a glommio reactor's share of the node.
//!
//! Each shard owns its listener (SO_REUSEPORT on the node's port), its
//! connections, its cached handler table, its round-robin cursors, its
//! down-marks and its waiting requests. Nothing here takes a lock or crosses
//! threads on the per-message path: the peer table is one atomic load
//! ([`crate::route::Directory`]), the handler table one relaxed epoch check.
//!
//! This file holds the sending side (selection, connections, requests,
//! local delivery); `inbound` the receiving side (frames, handshake, replies,
//! closes); `upkeep` the shard's tasks (run loop, accept, housekeeping, request
//! expiry).

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::future;
use glommio::net::TcpStream;
use rustc_hash::FxHashMap;
use tracing::warn;

use crate::auth;
use crate::channel::{Channel, NodeId};
use crate::conn::{CloseReason, Conn, Dir, PushError};
use crate::error::{BusError, SendFailure, SendOp};
use crate::frame::{FrameKind, Meta};
use crate::handler::{Handler, HandlerTable, ReplyTo};
use crate::notify::Signal;
use crate::overload::Slots;
use crate::route::{self, PeerEvent, PeerTable};
use crate::session::Session;
use crate::shared::Shared;
use crate::stats::Counters;
use crate::tls::link::TlsLink;

mod breakers;
mod deliver;
mod inbound;
mod pipeline;
mod request;
mod reroute;
mod upkeep;
mod window;

pub(crate) use pipeline::routed;
pub(crate) use upkeep::run;
pub use window::{Completion, RequestWindow};

/// Work handed to a shard from outside it.
pub(crate) enum Command {
    /// Run a closure on the shard (sends from plain threads, user tasks).
    Run(Box<dyn FnOnce(&LocalBus) + Send>),
    /// Tell connected peers our channels or state changed.
    Announce,
    /// Stop the shard.
    Stop,
}

/// Which provider of a channel a message goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    /// The next one, round-robin.
    Any,
    /// The one rendezvous hashing picks for a key hash
    /// ([`crate::rendezvous`]); the runner-up when it cannot take it.
    Keyed(u64),
    /// This node only.
    To(NodeId),
}

/// What a request is: where it goes, and the pipeline stages after it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Outgoing {
    pub(crate) channel: Channel,
    pub(crate) target: Target,
    pub(crate) route: crate::frame::Route,
    /// The trace context to send (set when the node sends them).
    pub(crate) trace: Option<crate::trace::TraceContext>,
}

impl Outgoing {
    pub(crate) fn any(channel: Channel) -> Outgoing {
        Outgoing::new(channel, Target::Any)
    }

    pub(crate) fn new(channel: Channel, target: Target) -> Outgoing {
        Outgoing {
            channel,
            target,
            route: crate::frame::Route::EMPTY,
            trace: None,
        }
    }
}

/// A connection id no connection has (ids count from 1): a waiting request
/// on no connection, which only its deadline ends.
const NO_CONN: u64 = 0;

struct Waiting {
    /// The connection its answer must come on ([`NO_CONN`]: none).
    conn: u64,
    /// The peer the request went to (changed when it is re-routed) and
    /// when: what its circuit breaker counts.
    peer: NodeId,
    sent: Instant,
    /// When the caller stops waiting (what a re-routed copy carries).
    deadline: Instant,
    /// Which provider it is for (what a re-routed copy keeps).
    target: Target,
    tx: crate::window::Waiter,
}

struct Down {
    until: Instant,
    attempts: u32,
}

pub(crate) struct ShardCore {
    shared: Arc<Shared>,
    index: usize,
    /// This shard's own copy of the handler table (refreshed on epoch change),
    /// so a frame clones an `Rc`, never an `Arc` shared with other CPUs.
    handlers: RefCell<(u64, Rc<HandlerTable>)>,
    /// This shard's view of the peer table, refreshed when the directory's
    /// change counter moves (one atomic load per send, no shared refcount).
    table: RefCell<(u64, Arc<PeerTable>)>,
    /// Outbound connections, indexed by node id (`0..=1023`).
    outbound: RefCell<Vec<Option<Rc<Conn>>>>,
    /// How many slots of `outbound` are taken.
    outbound_open: Cell<usize>,
    inbound: RefCell<FxHashMap<u64, Rc<Conn>>>,
    /// Round-robin positions per channel ([`route::Cursors`]).
    cursors: RefCell<route::Cursors>,
    /// Circuit breakers of this shard's requests, indexed by peer id.
    breakers: RefCell<Vec<Option<crate::breaker::Breaker>>>,
    /// Peers this shard failed to reach, indexed by node id, and how many.
    down: RefCell<Vec<Option<Down>>>,
    downs: Cell<usize>,
    pending: RefCell<FxHashMap<u64, Waiting>>,
    /// The deadlines of this shard's waiting requests ([`crate::expiry`]),
    /// and the wake-up of the one task that ends them (when its timer must
    /// be set earlier).
    expiries: RefCell<crate::expiry::Expiries<crate::window::Deadline>>,
    expiry_timer: crate::notify::Wake,
    next_id: Cell<u64>,
    /// Membership events for this shard (see [`crate::route::Directory::subscribe`]).
    events: crossbeam_channel::Receiver<PeerEvent>,
    counters: Rc<Counters>,
    /// Per-channel durations and outcomes ([`crate::telemetry`]).
    telemetry: RefCell<crate::telemetry::Telemetry>,
    /// Which sync handler runs are timed ([`crate::telemetry::HandlerSampler`]).
    sampler: Cell<crate::telemetry::HandlerSampler>,
    /// The cheap clock handler runs are timed with (the TSC where stable).
    clock: quanta::Clock,
    /// Async handlers running now (capped by `max_handlers` and the
    /// per-channel caps) and the messages queued for a slot.
    slots: RefCell<Slots<deliver::Queued>>,
    stopping: Signal,
    /// The `info_epoch` this shard last announced.
    announced: Cell<u64>,
    /// How long readers try an empty socket again before arming a poll
    /// (the spin before parking, for pinned shards; zero otherwise).
    read_spin: Duration,
    /// Wakes the housekeeping task early: a connection opened or a peer was
    /// marked down while it slept a long idle round.
    housekeeping: crate::notify::Wake,
    /// Raised when a write queue that refused a frame has room again (or
    /// closed): what [`LocalBus::notify_when_ready`] waits for.
    room: Rc<crate::notify::Event>,
}

/// The bus as seen from inside one shard: send from handlers and shard tasks
/// without any cross-thread hop. Not `Send`; get one from a handler's request
/// or from [`crate::Node::spawn_on`].
#[derive(Clone)]
pub struct LocalBus(Rc<ShardCore>);

impl LocalBus {
    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.0.shared.id()
    }

    /// This node's current info (name, channels served, state).
    pub fn info(&self) -> crate::NodeInfo {
        self.0.shared.local_info()
    }

    /// This node's state (serving, paused, draining).
    pub fn state(&self) -> crate::NodeState {
        self.0.shared.state()
    }

    /// Serves `channel` with `handler` on every shard of this node, from
    /// code running on a shard (a handler or a shard task). This shard
    /// announces the change at once, the others on their next tick.
    pub fn subscribe(&self, channel: Channel, handler: Handler) -> Result<(), BusError> {
        self.0.shared.subscribe(channel, handler)?;
        self.announce();
        Ok(())
    }

    /// Stops serving `channel`; returns whether it was served.
    pub fn unsubscribe(&self, channel: Channel) -> bool {
        let was = self.0.shared.unsubscribe(channel);
        if was {
            self.announce();
        }
        was
    }

    /// The index of the shard this bus belongs to.
    pub fn shard(&self) -> usize {
        self.0.index
    }

    fn next_id(&self) -> u64 {
        let id = self.0.next_id.get();
        self.0.next_id.set(id + 1);
        id
    }

    fn check_send(&self, channel: Channel, len: usize) -> Result<(), BusError> {
        crate::error::check_send(
            channel,
            len,
            self.0.shared.config.max_payload,
            self.0.stopping.is_raised(),
        )
    }

    /// Whether this shard saw `id` fail and has not reconnected yet, or a
    /// dial to it failed on another shard of this node. A down peer gets no
    /// requests; housekeeping retries it in the background.
    fn is_down(&self, id: NodeId) -> bool {
        self.0.down.borrow()[id.index()].is_some() || self.0.shared.is_down(id)
    }

    fn any_down(&self) -> bool {
        self.0.downs.get() > 0 || self.0.shared.any_down()
    }

    /// The current peer table (cached per shard; refreshed on change).
    fn table(&self) -> std::cell::Ref<'_, Arc<PeerTable>> {
        let changes = self.0.shared.directory.changes();
        if self.0.table.borrow().0 != changes {
            *self.0.table.borrow_mut() = (changes, self.0.shared.directory.snapshot());
        }
        std::cell::Ref::map(self.0.table.borrow(), |t| &t.1)
    }

    /// The provider of `channel` that `target` names, skipping `exclude`
    /// and peers known down.
    #[inline]
    fn pick(
        &self,
        channel: Channel,
        target: Target,
        exclude: &[NodeId],
    ) -> Result<NodeId, BusError> {
        self.pick_with(channel, target, exclude, false)
    }

    /// The same for a request: peers whose circuit breaker is open are
    /// skipped too (a half-open one takes this request as its probe).
    fn pick_for_request(
        &self,
        channel: Channel,
        target: Target,
        exclude: &[NodeId],
    ) -> Result<NodeId, BusError> {
        let breakers = self.0.shared.config.breaker.is_some();
        self.pick_with(channel, target, exclude, breakers)
    }

    /// One selection pass (round-robin, keyed or direct); with `breakers`,
    /// open ones are skipped too, and when only they stood in the way the
    /// error is `CircuitOpen`.
    #[inline]
    fn pick_with(
        &self,
        channel: Channel,
        target: Target,
        exclude: &[NodeId],
        breakers: bool,
    ) -> Result<NodeId, BusError> {
        let any_down = self.any_down();
        let me = self.node_id();
        let cut_off = Cell::new(false);
        let skip = |id: NodeId| {
            if exclude.contains(&id) || (any_down && self.is_down(id)) {
                return true;
            }
            let open = breakers && id != me && !self.breaker_allows(id);
            cut_off.set(cut_off.get() | open);
            open
        };
        let picked = match target {
            Target::Any => {
                let changes = self.0.shared.directory.changes();
                let mut cursors = self.0.cursors.borrow_mut();
                let (providers, cursor) =
                    cursors.route(changes, channel, || self.table().providers_shared(channel));
                route::select(providers, cursor, skip)
            }
            Target::Keyed(key) => {
                crate::rendezvous::select(self.table().providers(channel), key, skip)
            }
            Target::To(id) => self
                .table()
                .providers(channel)
                .contains(&id)
                .then_some(id)
                .filter(|&id| !skip(id)),
        };
        picked.ok_or_else(|| {
            if cut_off.get() {
                return BusError::CircuitOpen { channel };
            }
            Counters::inc(&self.0.counters.no_provider);
            BusError::NoProvider { channel }
        })
    }

    #[inline]
    fn meta(&self, kind: FrameKind, channel: Channel, reply: Channel, corr: u64) -> Meta {
        Meta {
            kind,
            channel,
            reply_channel: reply,
            source: self.node_id(),
            correlation: corr,
            ext: crate::frame::Ext::NONE,
        }
    }

    /// Adds the trace context of what is running now to `meta`, when this
    /// node sends trace contexts (see [`crate::trace`]). In place: moving a
    /// `Meta` through costs a copy per message on the hottest path.
    #[inline]
    fn trace(&self, meta: &mut Meta) {
        if self.0.shared.config.trace_context {
            meta.ext.trace = Some(self.trace_now());
        }
    }

    #[cold]
    fn trace_now(&self) -> crate::trace::TraceContext {
        let span = tracing::Span::current();
        crate::trace::outgoing(self.0.shared.config.propagator.as_ref(), &span)
    }

    /// The outbound connection to `peer`, opened if needed. A connection
    /// that is closing (its close not yet handled) takes nothing more:
    /// `PeerLost`, and nothing was sent (see [`LocalBus::to_next_provider`]).
    #[inline]
    fn conn_to(&self, peer: NodeId) -> Result<Rc<Conn>, BusError> {
        if let Some(c) = &self.0.outbound.borrow()[peer.index()] {
            if c.is_closed() {
                return Err(BusError::PeerLost { peer });
            }
            return Ok(c.clone());
        }
        self.dial(peer)
    }

    /// Opens the outbound connection to `peer` (see [`LocalBus::conn_to`]).
    #[cold]
    fn dial(&self, peer: NodeId) -> Result<Rc<Conn>, BusError> {
        let table = self.table();
        let entry = table.get(peer).ok_or(BusError::PeerLost { peer })?;
        // This node's own entry under the id it just gave up (the table
        // moves right after the id does; see `MembershipContext::renumber`):
        // never dial ourselves.
        if entry.info.instance == self.0.shared.local.instance() {
            return Err(BusError::PeerLost { peer });
        }
        let addr = entry.addr;
        // The HELLO is queued at once; with a secret, user frames wait
        // until the server proved itself (see `crate::session`).
        let session = Session::connect(&self.0.shared.local, Some(peer), auth::nonce());
        let tls = match self.0.shared.config.tls.as_ref() {
            None => None,
            Some(config) => match TlsLink::client(config, addr.ip()) {
                Ok(link) => Some(link),
                Err(e) => {
                    warn!(%peer, error = %e, "cannot start TLS");
                    return Err(BusError::PeerLost { peer });
                }
            },
        };
        let conn = Conn::new(
            self.next_id(),
            Dir::Outbound,
            session,
            tls,
            self.0.shared.config.max_write_queue,
            self.0.counters.clone(),
            self.0.room.clone(),
        );
        conn.remote.set(Some(addr));
        self.make_room_for_outbound();
        self.0.outbound.borrow_mut()[peer.index()] = Some(conn.clone());
        self.0.outbound_open.set(self.0.outbound_open.get() + 1);
        self.0.housekeeping.notify();
        let bus = self.clone();
        let c = conn.clone();
        glommio::spawn_local(async move {
            let timeout = bus.0.shared.config.connect_timeout;
            let connect = async { TcpStream::connect(addr).await.map_err(std::io::Error::from) };
            let timed = async {
                glommio::timer::sleep(timeout).await;
                Err(std::io::ErrorKind::TimedOut.into())
            };
            match future::or(connect, timed).await {
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    c.attach(stream);
                    bus.serve(c).await;
                }
                Err(e) => bus.on_closed(&c, CloseReason::Io(e)),
            }
        })
        .detach();
        Ok(conn)
    }

    fn push_to(conn: &Conn, peer: NodeId, meta: &Meta, payload: &[u8]) -> Result<(), BusError> {
        Self::push_err(conn.push(meta, payload), peer)
    }

    fn push_err(r: Result<(), PushError>, peer: NodeId) -> Result<(), BusError> {
        r.map_err(|e| match e {
            PushError::Full => BusError::Backpressure { what: CONN_QUEUE },
            PushError::Closed => BusError::PeerLost { peer },
        })
    }

    /// Sends with `send` to the next provider of `channel` (round-robin,
    /// skipping `exclude`), moving on to the next one while a provider
    /// cannot take the message at all — its connection is closing or its
    /// write queue is full: nothing was sent to it, so trying another keeps
    /// delivery at most once. Returns the last such error when no provider
    /// is left.
    #[inline]
    pub(super) fn to_next_provider<T>(
        &self,
        channel: Channel,
        target: Target,
        exclude: &mut Vec<NodeId>,
        mut send: impl FnMut(NodeId) -> Result<T, BusError>,
    ) -> Result<T, BusError> {
        let mut skipped = None;
        loop {
            let peer = match self.pick(channel, target, exclude) {
                Ok(p) => p,
                Err(e) => return Err(skipped.unwrap_or(e)),
            };
            match send(peer) {
                Err(e) if not_sent(&e) => {
                    exclude.push(peer);
                    // A full queue is the error to report when several
                    // providers could not take it: it says "try again", and
                    // `notify_when_ready` waits on it.
                    if !matches!(skipped, Some(BusError::Backpressure { .. })) {
                        skipped = Some(e);
                    }
                }
                r => return r,
            }
        }
    }

    /// One-way message to one provider of `channel` (round-robin).
    #[inline]
    pub fn notify(&self, channel: Channel, payload: &[u8]) -> Result<(), BusError> {
        self.check_send(channel, payload.len())?;
        self.to_next_provider(channel, Target::Any, &mut Vec::new(), |peer| {
            self.send_one_way(peer, channel, payload, false)
        })
    }

    /// [`LocalBus::notify`], waiting while every provider's write queue is
    /// full instead of failing with `Backpressure`: the task sleeps until a
    /// queue that refused a frame has written some of it out (or closed),
    /// then tries again. A producer on a shard should use this rather than
    /// retry `notify` in a loop, which keeps the shard busy and delays the
    /// very writes it waits for (see [`crate::NodeConfig::poll_interval`]).
    /// Every other error is returned at once. The wait ends only with
    /// progress on such a queue or its close (a peer that reads nothing is
    /// closed by the silence timeout; one that reads very slowly keeps the
    /// producer waiting): wrap it in a timeout (`glommio::timer::timeout`)
    /// when the producer has a deadline.
    pub async fn notify_when_ready(
        &self,
        channel: Channel,
        payload: &[u8],
    ) -> Result<(), BusError> {
        loop {
            let seen = self.0.room.count();
            match self.notify(channel, payload) {
                Err(BusError::Backpressure { .. }) => self.0.room.wait_past(seen).await,
                r => return r,
            }
        }
    }

    #[inline]
    fn send_one_way(
        &self,
        peer: NodeId,
        channel: Channel,
        payload: &[u8],
        publish: bool,
    ) -> Result<(), BusError> {
        Counters::inc(&self.0.counters.sent);
        let mut meta = self.meta(FrameKind::OneWay, channel, Channel(0), 0);
        self.trace(&mut meta);
        if peer == meta.source {
            self.deliver(&meta, payload, ReplyTo::Nobody);
            return Ok(());
        }
        let conn = self.conn_to(peer)?;
        let pushed = if publish {
            conn.push_publish(&meta, payload)
        } else {
            conn.push(&meta, payload)
        };
        Self::push_err(pushed, peer)
    }

    /// One-way message to every subscriber of `channel` that is up and not
    /// draining — paused ones included (pause only takes a node out of the
    /// round-robin of requests); returns how many copies were sent.
    ///
    /// When no copy could be sent, the last error is returned. Otherwise
    /// each copy that could not be sent (a subscriber known down, a full
    /// write queue, a closing connection) goes to the `on_send_error` hook.
    pub fn publish(&self, channel: Channel, payload: &[u8]) -> Result<usize, BusError> {
        self.check_send(channel, payload.len())?;
        let (targets, skipped): (Vec<NodeId>, Vec<NodeId>) = {
            let table = self.table();
            let all = table.subscribers(channel).iter().copied();
            if self.any_down() {
                all.partition(|&id| !self.is_down(id))
            } else {
                (all.collect(), Vec::new())
            }
        };
        if targets.is_empty() {
            Counters::inc(&self.0.counters.no_provider);
            return Err(BusError::NoProvider { channel });
        }
        let mut sent = 0;
        let mut failed: Vec<(NodeId, BusError)> = Vec::new();
        for peer in targets {
            match self.send_one_way(peer, channel, payload, true) {
                Ok(()) => sent += 1,
                Err(e) => failed.push((peer, e)),
            }
        }
        if sent == 0 {
            if let Some((_, e)) = failed.pop() {
                return Err(e);
            }
        }
        let lost = skipped
            .into_iter()
            .map(|peer| (peer, BusError::PeerLost { peer }));
        for (peer, error) in failed.into_iter().chain(lost) {
            self.send_failed(SendFailure {
                op: SendOp::Publish,
                channel,
                reply_channel: Channel(0),
                peer: Some(peer),
                error,
            });
        }
        Ok(sent)
    }

    /// The seed's `call`: one provider runs the handler; its reply is delivered
    /// to this node's `reply_channel` handler.
    pub fn call(
        &self,
        channel: Channel,
        payload: &[u8],
        reply_channel: Channel,
    ) -> Result<(), BusError> {
        self.check_send(channel, payload.len())?;
        crate::error::check_user_channel(reply_channel)?;
        let mut meta = self.meta(FrameKind::Request, channel, reply_channel, 0);
        self.trace(&mut meta);
        self.to_next_provider(channel, Target::Any, &mut Vec::new(), |peer| {
            self.send_to(peer, meta, payload)
        })
    }

    /// Sends the frame `meta` + `payload` (a request or one-way message this
    /// node originates or re-routes) to `peer`; to itself, it is delivered
    /// here (a `call`'s reply to this node's reply-channel handler).
    pub(super) fn send_to(&self, peer: NodeId, meta: Meta, payload: &[u8]) -> Result<(), BusError> {
        Counters::inc(&self.0.counters.sent);
        if peer == self.node_id() {
            let to = match meta.kind {
                FrameKind::Request => ReplyTo::LocalCall {
                    bus: self.clone(),
                    channel: meta.channel,
                    reply_channel: meta.reply_channel,
                },
                _ => ReplyTo::Nobody,
            };
            self.deliver(&meta, payload, to);
            return Ok(());
        }
        let conn = self.conn_to(peer)?;
        Self::push_to(&conn, peer, &meta, payload)
    }

    /// A `call` reply reaches this node's reply-channel handler.
    pub(crate) fn deliver_reply_locally(&self, reply_channel: Channel, bytes: Vec<u8>) {
        let bus = self.clone();
        glommio::spawn_local(async move {
            let meta = bus.meta(FrameKind::Reply, reply_channel, Channel(0), 0);
            bus.deliver(&meta, &bytes, ReplyTo::Nobody);
        })
        .detach();
    }
}

impl LocalBus {
    /// Bumps one of this shard's counters, from a module outside the shard
    /// (e.g. [`crate::watch`]).
    pub(crate) fn count(&self, counter: fn(&Counters) -> &Cell<u64>) {
        Counters::inc(counter(&self.0.counters));
    }
}

/// What a full connection write queue says (see [`not_sent`]).
const CONN_QUEUE: &str = "connection write queue";

/// Whether `e`, returned while handing a message to one provider, proves
/// nothing was sent to it (its connection is closing, or its write queue is
/// full), so another provider may take the message.
fn not_sent(e: &BusError) -> bool {
    match e {
        BusError::PeerLost { .. } => true,
        BusError::Backpressure { what } => *what == CONN_QUEUE,
        _ => false,
    }
}
