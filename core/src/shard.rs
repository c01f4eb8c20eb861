//! One shard: a glommio reactor's share of the node.
//!
//! Each shard owns its listener (SO_REUSEPORT on the node's port), its
//! connections, its cached handler table, its round-robin cursors, its
//! down-marks and its waiting requests. Nothing here takes a lock or crosses
//! threads on the per-message path: the peer table is one atomic load
//! ([`crate::route::Directory`]), the handler table one relaxed epoch check.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_channel::oneshot;
use futures_lite::future;
use glommio::net::{TcpListener, TcpStream};
use rustc_hash::FxHashMap;
use tracing::{debug, warn};

use crate::auth;
use crate::channel::{Channel, NodeId};
use crate::conn::{AuthState, CloseReason, Conn, Dir};
use crate::error::{BusError, ErrorCode};
use crate::frame::{Frame, FrameKind, Meta};
use crate::handler::{Handler, HandlerTable, OwnedRequest, Replier, ReplyTo, Request};
use crate::handshake::{self, NodeInfo, NodeState};
use crate::node::Shared;
use crate::notify::{Gate, Signal};
use crate::route::{self, PeerEvent, PeerTable};
use crate::stats::Counters;

/// Work handed to a shard from outside it.
pub(crate) enum Command {
    /// Run a closure on the shard (sends from plain threads, user tasks).
    Run(Box<dyn FnOnce(&LocalBus) + Send>),
    /// Tell connected peers our channels or state changed.
    Announce,
    /// Stop the shard.
    Stop,
}

struct Waiting {
    conn: u64,
    tx: oneshot::Sender<Result<Vec<u8>, BusError>>,
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
    inbound: RefCell<FxHashMap<u64, Rc<Conn>>>,
    cursors: RefCell<FxHashMap<Channel, usize>>,
    /// Peers this shard failed to reach, indexed by node id, and how many.
    down: RefCell<Vec<Option<Down>>>,
    downs: Cell<usize>,
    pending: RefCell<FxHashMap<u64, Waiting>>,
    next_id: Cell<u64>,
    /// Membership events for this shard (see [`crate::route::Directory::subscribe`]).
    events: crossbeam_channel::Receiver<PeerEvent>,
    counters: Rc<Counters>,
    /// Async handlers running now, capped by `max_handlers`.
    in_flight: Rc<Gate>,
    stopping: Signal,
}

/// The bus as seen from inside one shard: send from handlers and shard tasks
/// without any cross-thread hop. Not `Send`; get one from a handler's request
/// or from [`crate::Node::spawn_on`].
#[derive(Clone)]
pub struct LocalBus(Rc<ShardCore>);

impl LocalBus {
    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.0.shared.id
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
        if channel.is_reserved() {
            return Err(BusError::ReservedChannel { channel });
        }
        let max = self.0.shared.config.max_payload;
        if len > max as usize {
            return Err(BusError::PayloadTooLarge { len, max });
        }
        if self.0.stopping.is_raised() {
            return Err(BusError::ShuttingDown);
        }
        Ok(())
    }

    /// Whether this shard saw `id` fail and has not reconnected yet. A down
    /// peer gets no requests; housekeeping retries it in the background.
    fn is_down(&self, id: NodeId) -> bool {
        self.0.down.borrow()[id.0 as usize].is_some()
    }

    /// The current peer table (cached per shard; refreshed on change).
    fn table(&self) -> std::cell::Ref<'_, Arc<PeerTable>> {
        let changes = self.0.shared.directory.changes();
        if self.0.table.borrow().0 != changes {
            *self.0.table.borrow_mut() = (changes, self.0.shared.directory.snapshot());
        }
        std::cell::Ref::map(self.0.table.borrow(), |t| &t.1)
    }

    /// The next provider of `channel`, round-robin, skipping `exclude`.
    fn pick(&self, channel: Channel, exclude: &[NodeId]) -> Result<NodeId, BusError> {
        let table = self.table();
        let providers = table.providers(channel);
        let mut cursors = self.0.cursors.borrow_mut();
        let cursor = cursors.entry(channel).or_insert(self.0.index);
        let any_down = self.0.downs.get() > 0;
        route::select(providers, cursor, |id| {
            exclude.contains(&id) || (any_down && self.is_down(id))
        })
        .ok_or(BusError::NoProvider { channel })
    }

    fn meta(&self, kind: FrameKind, channel: Channel, reply: Channel, corr: u64) -> Meta {
        Meta {
            kind,
            channel,
            reply_channel: reply,
            source: self.node_id(),
            correlation: corr,
        }
    }

    /// The outbound connection to `peer`, opened if needed.
    fn conn_to(&self, peer: NodeId) -> Result<Rc<Conn>, BusError> {
        if let Some(c) = &self.0.outbound.borrow()[peer.0 as usize] {
            return Ok(c.clone());
        }
        let addr = self
            .table()
            .get(peer)
            .map(|p| p.addr)
            .ok_or(BusError::PeerLost { peer })?;
        let conn = Conn::new(
            self.next_id(),
            Dir::Outbound,
            self.0.shared.config.max_write_queue,
            self.0.counters.clone(),
        );
        conn.peer.set(Some(peer));
        conn.remote.set(Some(addr));
        let mut hello = self.0.shared.local_info().to_bytes();
        if self.0.shared.secret().is_some() {
            // Authenticate first: user frames wait until the server proved itself.
            let nonce_c = auth::nonce();
            hello.extend_from_slice(&nonce_c);
            conn.auth.set(AuthState::AwaitServer { nonce_c });
            conn.hold();
        }
        conn.push_control(self.node_id(), Channel::HELLO, &hello);
        self.0.outbound.borrow_mut()[peer.0 as usize] = Some(conn.clone());
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

    fn push_or_backpressure(conn: &Conn, meta: &Meta, payload: &[u8]) -> Result<(), BusError> {
        conn.push(meta, payload)
            .map_err(|_| BusError::Backpressure {
                what: "connection write queue",
            })
    }

    /// One-way message to one provider of `channel` (round-robin).
    pub fn notify(&self, channel: Channel, payload: &[u8]) -> Result<(), BusError> {
        self.check_send(channel, payload.len())?;
        let peer = self.pick(channel, &[])?;
        self.send_one_way(peer, channel, payload)
    }

    fn send_one_way(&self, peer: NodeId, channel: Channel, payload: &[u8]) -> Result<(), BusError> {
        self.0.counters.sent.set(self.0.counters.sent.get() + 1);
        if peer == self.node_id() {
            self.deliver(
                self.meta(FrameKind::OneWay, channel, Channel(0), 0),
                payload,
                ReplyTo::Nobody,
            );
            return Ok(());
        }
        let conn = self.conn_to(peer)?;
        Self::push_or_backpressure(
            &conn,
            &self.meta(FrameKind::OneWay, channel, Channel(0), 0),
            payload,
        )
    }

    /// One-way message to every routable provider of `channel`; returns how many.
    pub fn publish(&self, channel: Channel, payload: &[u8]) -> Result<usize, BusError> {
        self.check_send(channel, payload.len())?;
        let providers: Vec<NodeId> = self.table().providers(channel).to_vec();
        if providers.is_empty() {
            return Err(BusError::NoProvider { channel });
        }
        let mut sent = 0;
        let mut last_err = None;
        for peer in providers {
            match self.send_one_way(peer, channel, payload) {
                Ok(()) => sent += 1,
                Err(e) => last_err = Some(e),
            }
        }
        match (sent, last_err) {
            (0, Some(e)) => Err(e),
            _ => Ok(sent),
        }
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
        if reply_channel.is_reserved() {
            return Err(BusError::ReservedChannel {
                channel: reply_channel,
            });
        }
        let peer = self.pick(channel, &[])?;
        self.0.counters.sent.set(self.0.counters.sent.get() + 1);
        let meta = self.meta(FrameKind::Request, channel, reply_channel, 0);
        if peer == self.node_id() {
            let to = ReplyTo::LocalCall {
                bus: self.clone(),
                reply_channel,
            };
            self.deliver(meta, payload, to);
            return Ok(());
        }
        let conn = self.conn_to(peer)?;
        Self::push_or_backpressure(&conn, &meta, payload)
    }

    /// Request/response: one provider's reply, or a typed error within `timeout`.
    ///
    /// A provider that answers `Paused`, `ShuttingDown` or `NoHandler` is
    /// skipped and the next one tried, inside the same timeout.
    pub async fn request(
        &self,
        channel: Channel,
        payload: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>, BusError> {
        self.check_send(channel, payload.len())?;
        let deadline = Instant::now() + timeout;
        let mut tried: Vec<NodeId> = Vec::new();
        loop {
            let peer = match self.pick(channel, &tried) {
                Ok(p) => p,
                Err(e) if tried.is_empty() => return Err(e),
                Err(_) => return Err(BusError::NoProvider { channel }),
            };
            let rx = self.start_request(peer, channel, payload)?;
            let remaining = deadline.saturating_duration_since(Instant::now());
            let result = match rx {
                Started::Local(rx) => Self::await_reply(rx, remaining).await,
                Started::Remote(corr, rx) => {
                    let r = Self::await_reply(rx, remaining).await;
                    if r.is_none() {
                        self.0.pending.borrow_mut().remove(&corr);
                    }
                    r
                }
            };
            match result {
                None => {
                    return Err(BusError::Timeout {
                        channel,
                        after: timeout,
                    })
                }
                Some(Err(BusError::Remote { peer, code })) if code.is_retryable() => {
                    tried.push(peer);
                    if Instant::now() >= deadline {
                        return Err(BusError::Remote { peer, code });
                    }
                }
                Some(r) => return r,
            }
        }
    }

    fn start_request(
        &self,
        peer: NodeId,
        channel: Channel,
        payload: &[u8],
    ) -> Result<Started, BusError> {
        self.0.counters.sent.set(self.0.counters.sent.get() + 1);
        let (tx, rx) = oneshot::channel();
        if peer == self.node_id() {
            self.deliver(
                self.meta(FrameKind::Request, channel, Channel(0), 0),
                payload,
                ReplyTo::Waiter(tx),
            );
            return Ok(Started::Local(rx));
        }
        if self.0.pending.borrow().len() >= self.0.shared.config.max_pending {
            return Err(BusError::Backpressure {
                what: "shard request table",
            });
        }
        let conn = self.conn_to(peer)?;
        let corr = self.next_id();
        let meta = self.meta(FrameKind::Request, channel, Channel(0), corr);
        Self::push_or_backpressure(&conn, &meta, payload)?;
        self.0
            .pending
            .borrow_mut()
            .insert(corr, Waiting { conn: conn.id, tx });
        Ok(Started::Remote(corr, rx))
    }

    async fn await_reply(
        rx: oneshot::Receiver<Result<Vec<u8>, BusError>>,
        within: Duration,
    ) -> Option<Result<Vec<u8>, BusError>> {
        let reply = async { Some(rx.await.unwrap_or(Err(BusError::ShuttingDown))) };
        let timer = async {
            glommio::timer::sleep(within).await;
            None
        };
        future::or(reply, timer).await
    }

    /// Runs the handler of `meta.channel` on this shard.
    fn deliver(&self, meta: Meta, payload: &[u8], to: ReplyTo) {
        let shared = &self.0.shared;
        let expects = !matches!(to, ReplyTo::Nobody);
        let state = shared.state();
        if state != NodeState::Serving && meta.kind == FrameKind::Request {
            let code = if state == NodeState::Paused {
                Counters::inc(&self.0.counters.refused_paused);
                ErrorCode::Paused
            } else {
                Counters::inc(&self.0.counters.refused_draining);
                ErrorCode::ShuttingDown
            };
            self.refuse(to, code);
            return;
        }
        let table = self.handlers();
        let Some(handler) = table.get(meta.channel) else {
            self.0
                .counters
                .unhandled
                .set(self.0.counters.unhandled.get() + 1);
            if expects {
                self.refuse(to, ErrorCode::NoHandler);
            } else {
                debug!(channel = %meta.channel, "one-way message for a channel with no handler dropped");
            }
            return;
        };
        self.0
            .counters
            .handled
            .set(self.0.counters.handled.get() + 1);
        let replier = Replier::new(to, shared.id, shared.config.max_payload);
        match handler {
            Handler::Sync(f) => {
                let mut req = Request {
                    meta,
                    payload,
                    replier,
                    bus: self,
                };
                f(&mut req);
            }
            Handler::Async(f) => {
                let owned = OwnedRequest {
                    meta,
                    payload: payload.to_vec(),
                    replier,
                    bus: self.clone(),
                };
                let in_flight = self.0.in_flight.clone();
                in_flight.take();
                let fut = f(owned);
                glommio::spawn_local(async move {
                    fut.await;
                    in_flight.give();
                })
                .detach();
            }
        }
    }

    fn refuse(&self, to: ReplyTo, code: ErrorCode) {
        let me = self.node_id();
        match to {
            ReplyTo::Conn {
                conn, correlation, ..
            } => conn.push_error(me, correlation, code),
            ReplyTo::Waiter(tx) => {
                let _ = tx.send(Err(BusError::Remote { peer: me, code }));
            }
            ReplyTo::Nobody | ReplyTo::LocalCall { .. } => {}
        }
    }

    /// A `call` reply reaches this node's reply-channel handler.
    pub(crate) fn deliver_reply_locally(&self, reply_channel: Channel, bytes: Vec<u8>) {
        let bus = self.clone();
        glommio::spawn_local(async move {
            let meta = bus.meta(FrameKind::OneWay, reply_channel, Channel(0), 0);
            bus.deliver(meta, &bytes, ReplyTo::Nobody);
        })
        .detach();
    }

    fn handlers(&self) -> Rc<HandlerTable> {
        let epoch = self.0.shared.handler_epoch.load(Ordering::Acquire);
        let mut cached = self.0.handlers.borrow_mut();
        if cached.0 != epoch {
            let copy = HandlerTable::clone(&self.0.shared.handlers.load());
            *cached = (epoch, Rc::new(copy));
        }
        cached.1.clone()
    }

    /// Reads a connection until it closes, dispatching every frame.
    async fn serve(&self, conn: Rc<Conn>) {
        let w = conn.clone();
        glommio::spawn_local(async move {
            if let Err(e) = w.clone().write_loop().await {
                w.fail(e);
            }
        })
        .detach();
        let max = self.0.shared.config.max_payload;
        let reason = conn
            .read_loop(max, &self.0.in_flight, |frame| self.on_frame(&conn, frame))
            .await;
        self.on_closed(&conn, reason);
    }

    fn on_frame(&self, conn: &Rc<Conn>, frame: Frame<'_>) -> Result<(), CloseReason> {
        let c = &self.0.counters;
        c.frames_in.set(c.frames_in.get() + 1);
        c.bytes_in
            .set(c.bytes_in.get() + frame.payload.len() as u64 + 24);
        if !conn.open.get() {
            return self.on_handshake(conn, frame);
        }
        let meta = frame.meta;
        match meta.kind {
            FrameKind::Request | FrameKind::OneWay => {
                if meta.channel.is_reserved() {
                    return Err(CloseReason::Protocol(format!(
                        "user frame to reserved {}",
                        meta.channel
                    )));
                }
                let to = if meta.kind == FrameKind::OneWay {
                    ReplyTo::Nobody
                } else {
                    ReplyTo::Conn {
                        conn: conn.clone(),
                        correlation: meta.correlation,
                        reply_channel: meta.reply_channel,
                    }
                };
                self.deliver(meta, frame.payload, to);
            }
            FrameKind::Reply if meta.correlation == 0 => {
                let one_way = Meta {
                    kind: FrameKind::OneWay,
                    ..meta
                };
                self.deliver(one_way, frame.payload, ReplyTo::Nobody);
            }
            FrameKind::Reply => self.complete(meta.correlation, Ok(frame.payload.to_vec())),
            FrameKind::Error => {
                let code = ErrorCode::from_payload(frame.payload);
                self.complete(
                    meta.correlation,
                    Err(BusError::Remote {
                        peer: meta.source,
                        code,
                    }),
                );
            }
            FrameKind::Control => match meta.channel {
                Channel::HEARTBEAT if conn.dir == Dir::Inbound => {
                    conn.push_control(self.node_id(), Channel::HEARTBEAT, &[]);
                }
                Channel::HEARTBEAT | Channel::ANNOUNCE => {}
                other => {
                    return Err(CloseReason::Protocol(format!(
                        "unexpected control frame on {other}"
                    )))
                }
            },
        }
        Ok(())
    }

    fn on_handshake(&self, conn: &Rc<Conn>, frame: Frame<'_>) -> Result<(), CloseReason> {
        let meta = frame.meta;
        if meta.kind == FrameKind::Error {
            return Err(CloseReason::Refused(format!(
                "{:?}",
                ErrorCode::from_payload(frame.payload)
            )));
        }
        let secret = self.0.shared.secret();
        let cluster = self.0.shared.config.cluster.as_str();
        if let AuthState::AwaitClient { nonce_c, nonce_s } = conn.auth.get() {
            // Accepting side: the only acceptable frame now is the client's proof.
            if meta.kind != FrameKind::Control || meta.channel != Channel::AUTH {
                return self.refuse_inbound(conn, "expected the authentication proof");
            }
            let key = secret.unwrap_or_default();
            if let Err(e) = auth::check_client(key, cluster, &nonce_c, &nonce_s, frame.payload) {
                return self.refuse_inbound(conn, e);
            }
            conn.auth.set(AuthState::Done);
            conn.open.set(true);
            debug!(peer = ?conn.peer.get(), "connection open (authenticated)");
            return Ok(());
        }
        let expected = match conn.dir {
            Dir::Inbound => Channel::HELLO,
            Dir::Outbound => Channel::HELLO_ACK,
        };
        if meta.kind != FrameKind::Control || meta.channel != expected {
            return Err(CloseReason::Protocol(format!(
                "expected handshake, got {:?} on {}",
                meta.kind, meta.channel
            )));
        }
        let ours = self.0.shared.local_info();
        let parsed = NodeInfo::decode_prefix(frame.payload)
            .and_then(|(t, extra)| handshake::validate(&ours, &t).map(|()| (t, extra)));
        let (theirs, extra) = match parsed {
            Ok(t) => t,
            Err(e) if conn.dir == Dir::Inbound => return self.refuse_inbound(conn, e),
            Err(e) => return Err(CloseReason::Refused(e.to_string())),
        };
        match conn.dir {
            Dir::Inbound => {
                let nonce_c = match auth::hello_nonce(secret, extra) {
                    Ok(n) => n,
                    Err(e) => return self.refuse_inbound(conn, e),
                };
                conn.peer.set(Some(theirs.id));
                let mut ack = ours.to_bytes();
                match (nonce_c, secret) {
                    (Some(nonce_c), Some(key)) => {
                        let nonce_s = auth::nonce();
                        ack.extend_from_slice(&nonce_s);
                        ack.extend_from_slice(&auth::server_proof(
                            key, cluster, &nonce_c, &nonce_s,
                        ));
                        conn.auth.set(AuthState::AwaitClient { nonce_c, nonce_s });
                    }
                    _ => conn.open.set(true),
                }
                conn.push_control(self.node_id(), Channel::HELLO_ACK, &ack);
            }
            Dir::Outbound => {
                if conn.peer.get() != Some(theirs.id) {
                    return Err(CloseReason::Refused(format!(
                        "expected {:?} at that address, found {}",
                        conn.peer.get(),
                        theirs.id
                    )));
                }
                let block = auth::ack_auth(secret, extra)
                    .map_err(|e| CloseReason::Refused(e.to_string()))?;
                if let (Some((nonce_s, proof)), Some(key)) = (block, secret) {
                    let AuthState::AwaitServer { nonce_c } = conn.auth.get() else {
                        return Err(CloseReason::Protocol(
                            "unexpected authentication data".into(),
                        ));
                    };
                    auth::check_server(key, cluster, &nonce_c, &nonce_s, proof)
                        .map_err(|e| CloseReason::Refused(e.to_string()))?;
                    conn.push_control(
                        self.node_id(),
                        Channel::AUTH,
                        &auth::client_proof(key, cluster, &nonce_c, &nonce_s),
                    );
                    conn.auth.set(AuthState::Done);
                }
                conn.release_held();
                conn.open.set(true);
                self.clear_down(theirs.id);
            }
        }
        debug!(peer = %theirs.id, name = %theirs.name, dir = ?conn.dir, "handshake done");
        Ok(())
    }

    /// Answers a refused inbound handshake with an error frame, then closes.
    fn refuse_inbound(
        &self,
        conn: &Rc<Conn>,
        reason: impl std::fmt::Display,
    ) -> Result<(), CloseReason> {
        if !conn.is_closed() {
            conn.push_error(self.node_id(), 0, ErrorCode::Refused);
            conn.close_after_flush();
            Counters::inc(&self.0.counters.bad_closes);
            Counters::inc(&self.0.counters.closed_refused);
            warn!(%reason, "handshake refused");
        }
        Ok(())
    }

    fn complete(&self, corr: u64, result: Result<Vec<u8>, BusError>) {
        if let Some(w) = self.0.pending.borrow_mut().remove(&corr) {
            let _ = w.tx.send(result);
        }
    }

    fn on_closed(&self, conn: &Rc<Conn>, reason: CloseReason) {
        conn.close();
        conn.release();
        let c = &self.0.counters;
        let kind = match &reason {
            CloseReason::Eof | CloseReason::Local => None,
            CloseReason::Io(_) => Some(None),
            CloseReason::Frame(_) => Some(Some(&c.closed_malformed)),
            CloseReason::Protocol(_) => Some(Some(&c.closed_protocol)),
            CloseReason::Refused(_) => Some(Some(&c.closed_refused)),
            CloseReason::Timeout(crate::timeouts::Expired::Silence) => Some(Some(&c.closed_silent)),
            CloseReason::Timeout(_) => Some(Some(&c.closed_timeout)),
        };
        match kind {
            None => debug!(peer = ?conn.peer.get(), "connection closed: {reason}"),
            Some(counter) => {
                Counters::inc(&c.bad_closes);
                if let Some(counter) = counter {
                    Counters::inc(counter);
                }
                warn!(peer = ?conn.peer.get(), dir = ?conn.dir, "connection closed: {reason}");
            }
        }
        match conn.dir {
            Dir::Inbound => {
                self.0.inbound.borrow_mut().remove(&conn.id);
            }
            Dir::Outbound => {
                let Some(peer) = conn.peer.get() else { return };
                {
                    let mut out = self.0.outbound.borrow_mut();
                    let slot = &mut out[peer.0 as usize];
                    if slot.as_ref().map(|c| c.id) == Some(conn.id) {
                        *slot = None;
                    }
                }
                let lost: Vec<u64> = self
                    .0
                    .pending
                    .borrow()
                    .iter()
                    .filter(|(_, w)| w.conn == conn.id)
                    .map(|(k, _)| *k)
                    .collect();
                for corr in lost {
                    self.complete(corr, Err(BusError::PeerLost { peer }));
                }
                if !matches!(reason, CloseReason::Local) {
                    self.mark_down(peer);
                }
            }
        }
    }

    fn mark_down(&self, peer: NodeId) {
        let mut down = self.0.down.borrow_mut();
        let slot = &mut down[peer.0 as usize];
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
    }

    fn clear_down(&self, peer: NodeId) {
        if self.0.down.borrow_mut()[peer.0 as usize].take().is_some() {
            self.0.downs.set(self.0.downs.get() - 1);
        }
    }

    /// Every connection of this shard, both directions.
    fn all_conns(&self) -> Vec<Rc<Conn>> {
        let out = self.0.outbound.borrow();
        let inb = self.0.inbound.borrow();
        out.iter().flatten().chain(inb.values()).cloned().collect()
    }

    /// Closes connections whose handshake, frame or peer timed out, and
    /// sends heartbeats on idle outbound connections.
    fn check_connections(&self) {
        let now = Instant::now();
        let t = self.0.shared.config.timeouts;
        let conns = self.all_conns();
        for conn in conns {
            let seen = conn.observe(now);
            if let Some(expired) = t.verdict(&seen) {
                conn.fail(CloseReason::Timeout(expired));
            } else if conn.dir == Dir::Outbound && t.heartbeat_due(&seen) {
                conn.push_control(self.node_id(), Channel::HEARTBEAT, &[]);
                conn.heartbeat_sent(now);
            }
        }
    }

    /// Starts a background reconnect (handshake only) to every down peer
    /// whose backoff has expired; success clears the mark.
    fn retry_down_peers(&self) {
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
                    .map(|_| NodeId(id as u16))
            })
            .collect();
        for peer in due {
            if self.0.outbound.borrow()[peer.0 as usize].is_none() {
                if let Err(e) = self.conn_to(peer) {
                    debug!(%peer, error = %e, "reconnect not possible now");
                }
            }
        }
    }

    /// Pushes our current info to every connected peer.
    fn announce(&self) {
        let info = self.0.shared.local_info().to_bytes();
        for conn in self.0.inbound.borrow().values() {
            if conn.open.get() {
                conn.push_control(self.node_id(), Channel::ANNOUNCE, &info);
            }
        }
    }

    /// Drains membership events (never blocking): closes connections to
    /// peers that left, went down or moved, and forgets their down-marks.
    fn apply_peer_events(&self) {
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
                    let conn_addr = self.0.outbound.borrow()[id.0 as usize]
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
            let conn = self.0.outbound.borrow()[id.0 as usize].clone();
            if let Some(c) = conn {
                c.close();
            }
        }
    }

    /// Async handlers still running and bytes still queued on this shard
    /// (what a drain waits for).
    pub fn busy(&self) -> (u64, usize) {
        let queued = self.all_conns().iter().map(|c| c.queued()).sum();
        (self.0.in_flight.taken(), queued)
    }

    /// Peers this shard holds an open outbound connection to.
    pub fn connected_peers(&self) -> Vec<NodeId> {
        self.0
            .outbound
            .borrow()
            .iter()
            .flatten()
            .filter(|c| c.open.get() && !c.is_closed())
            .filter_map(|c| c.peer.get())
            .collect()
    }

    /// This shard's counters.
    pub fn counters(&self) -> crate::stats::Snapshot {
        self.0.counters.snapshot()
    }

    fn shutdown(&self) {
        self.0.stopping.raise();
        let conns = self.all_conns();
        for c in conns {
            c.close();
        }
        for (_, w) in self.0.pending.borrow_mut().drain() {
            let _ = w.tx.send(Err(BusError::ShuttingDown));
        }
    }
}

enum Started {
    Local(oneshot::Receiver<Result<Vec<u8>, BusError>>),
    Remote(u64, oneshot::Receiver<Result<Vec<u8>, BusError>>),
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
    let max_handlers = shared.config.max_handlers;
    let events = shared.directory.subscribe();
    let bus = LocalBus(Rc::new(ShardCore {
        handlers: RefCell::new((u64::MAX, Rc::new(HandlerTable::default()))),
        shared,
        index,
        table: RefCell::new((u64::MAX, Arc::new(PeerTable::new()))),
        outbound: RefCell::new(vec![None; NodeId::MAX as usize + 1]),
        inbound: RefCell::default(),
        cursors: RefCell::default(),
        down: RefCell::new((0..=NodeId::MAX).map(|_| None).collect()),
        downs: Cell::new(0),
        pending: RefCell::default(),
        next_id: Cell::new(1),
        events,
        counters: Rc::default(),
        in_flight: Rc::new(Gate::new(max_handlers)),
        stopping: Signal::default(),
    }));
    let accept = glommio::spawn_local(accept_loop(bus.clone(), listener));
    let housekeeping = glommio::spawn_local(housekeeping(bus.clone()));
    while let Ok(cmd) = commands.recv().await {
        match cmd {
            Command::Run(f) => f(&bus),
            Command::Announce => bus.announce(),
            Command::Stop => break,
        }
    }
    bus.shutdown();
    drop(accept);
    drop(housekeeping);
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
                let conn = Conn::new(
                    bus.next_id(),
                    Dir::Inbound,
                    bus.0.shared.config.max_write_queue,
                    bus.0.counters.clone(),
                );
                conn.attach(stream);
                bus.0.inbound.borrow_mut().insert(conn.id, conn.clone());
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
        glommio::timer::sleep(Duration::from_millis(50)).await;
        bus.apply_peer_events();
        bus.check_connections();
        bus.retry_down_peers();
    }
}
