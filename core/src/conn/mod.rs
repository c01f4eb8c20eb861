//! One TCP connection on one shard: its state (session, write queue, close),
//! queueing frames, and what housekeeping sees of it ([`Conn::observe`]:
//! idle times to housekeeping's resolution, see [`crate::stamp`]). The
//! reader and writer loops are in `socket`.
//!
//! The connection counts the bytes it queued and the bytes it handed to the
//! kernel, so when it fails it can tell which frames never left this node
//! ([`Conn::take_unsent`]): those may be sent again to another provider
//! without breaking at-most-once delivery.

use std::cell::{Cell, RefCell};
use std::io;
use std::rc::Rc;
use std::time::Instant;

use glommio::net::TcpStream;

use crate::channel::{Channel, NodeId};
use crate::error::ErrorCode;
use crate::frame::{self, FrameKind, Meta};
use crate::notify::{Event, Signal, Wake};
use crate::session::{Close, Role, Session};
use crate::stamp::{Arrival, Stamp};
use crate::stats::Counters;
use crate::timeouts::Observed;
use crate::tls::link::TlsLink;
use crate::tls::TlsClose;
use crate::write_queue::{Unsent, WriteQueue};

mod socket;

/// Which side opened the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dir {
    /// We connected (to send requests to a provider).
    Outbound,
    /// The peer connected to us.
    Inbound,
}

/// Why a frame could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PushError {
    /// The write queue is over its bound.
    Full,
    /// The connection is closing or closed.
    Closed,
}

/// Why a connection closed (logged, and mapped to errors for waiters).
#[derive(Debug, thiserror::Error)]
pub(crate) enum CloseReason {
    #[error("peer closed the connection")]
    Eof,
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
    #[error("malformed frame: {0}")]
    Frame(#[from] frame::FrameError),
    /// The connection's protocol state machine ended it.
    #[error(transparent)]
    Session(#[from] Close),
    /// TLS failed, or one side speaks it and the other does not.
    #[error(transparent)]
    Tls(#[from] TlsClose),
    #[error("closed locally")]
    Local,
    /// The node took a new id; the connection announced the old one.
    #[error("this node's id changed from {announced} to {now}")]
    Renumbered {
        /// The id the connection announced.
        announced: NodeId,
        /// The node's id now.
        now: NodeId,
    },
}

/// One connection: its socket, its write queue, and its protocol state
/// machine ([`Session`]), which alone decides what a frame means.
pub(crate) struct Conn {
    pub(crate) id: u64,
    pub(crate) dir: Dir,
    /// The address dialled (outbound connections).
    pub(crate) remote: Cell<Option<std::net::SocketAddr>>,
    /// The connection protocol (handshake, authentication, legal frames).
    pub(crate) session: RefCell<Session>,
    counters: Rc<Counters>,
    /// The shard's "a full write queue has room again" event (see
    /// [`crate::LocalBus::notify_when_ready`]), and whether this queue
    /// refused a frame since it last announced room.
    room: Rc<Event>,
    refused: Cell<bool>,
    stream: RefCell<Option<TcpStream>>,
    /// The TLS layer, when the node has TLS on.
    tls: Option<RefCell<TlsLink>>,
    /// Outgoing bytes and what left of them (see [`WriteQueue`]).
    queue: RefCell<WriteQueue>,
    writer: Wake,
    closing: Signal,
    close_when_flushed: Cell<bool>,
    failure: RefCell<Option<CloseReason>>,
    created: Instant,
    /// Bytes arrived.
    read: Stamp,
    /// Progress writing frames other than heartbeats (a heartbeat landing
    /// in the kernel's socket buffer proves nothing about the peer).
    wrote: Stamp,
    /// Frames other than heartbeats were queued since the last write.
    user_bytes: Cell<bool>,
    /// A message was queued or received.
    used: Stamp,
    /// When the bytes being handled arrived (see [`Conn::arrival`]).
    arrival: Arrival,
    /// `call`s sent on this connection and not answered yet (their replies
    /// come back on it, so it must not close for idleness meanwhile).
    calls: Cell<u32>,
    mid_frame: Cell<bool>,
}

impl Conn {
    /// A connection driven by `session`; its first frames (the HELLO) are
    /// queued at once, and user frames are held while the session says so.
    pub(crate) fn new(
        id: u64,
        dir: Dir,
        session: Session,
        tls: Option<TlsLink>,
        max_queue: usize,
        counters: Rc<Counters>,
        room: Rc<Event>,
    ) -> Rc<Conn> {
        let hold = session.holds_user_frames();
        let conn = Rc::new(Conn {
            id,
            dir,
            remote: Cell::new(None),
            session: RefCell::new(session),
            counters,
            room,
            refused: Cell::new(false),
            stream: RefCell::new(None),
            tls: tls.map(RefCell::new),
            queue: RefCell::new(WriteQueue::new(max_queue, hold)),
            writer: Wake::default(),
            closing: Signal::default(),
            close_when_flushed: Cell::new(false),
            failure: RefCell::new(None),
            created: Instant::now(),
            read: Stamp::new(),
            wrote: Stamp::new(),
            user_bytes: Cell::new(false),
            used: Stamp::new(),
            arrival: Arrival::default(),
            calls: Cell::new(0),
            mid_frame: Cell::new(false),
        });
        conn.flush_session();
        conn
    }

    /// Queues what the session wants sent (handshake answers, heartbeats,
    /// a refusal), in order, ahead of any held user frame. Called for every
    /// frame read: when the session queued nothing (almost always), it is
    /// one check, inlined.
    #[inline]
    pub(crate) fn flush_session(&self) {
        if !self.session.borrow().has_transmit() {
            return;
        }
        loop {
            let Some(t) = self.session.borrow_mut().poll_transmit() else {
                return;
            };
            self.push_control(&t.meta, &t.payload, !t.is_heartbeat());
        }
    }

    /// The peer's id, as its session knows it: the node dialled
    /// (outbound), or the one whose HELLO was accepted (inbound).
    pub(crate) fn peer(&self) -> Option<NodeId> {
        let session = self.session.borrow();
        match session.role() {
            Role::Connect { expect } => expect,
            Role::Accept => session.peer(),
        }
    }

    /// Whether the handshake is done and the connection not closing.
    pub(crate) fn is_open(&self) -> bool {
        !self.is_closing() && self.session.borrow().is_open()
    }

    pub(crate) fn attach(&self, stream: TcpStream) {
        *self.stream.borrow_mut() = Some(stream);
        self.writer.notify();
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closing.is_raised()
    }

    /// Closed, or closing once its queue is written (a refusal on its way):
    /// nothing more it receives is acted on.
    pub(crate) fn is_closing(&self) -> bool {
        self.is_closed() || self.close_when_flushed.get()
    }

    /// Queues one frame; it leaves with everything else queued this turn.
    pub(crate) fn push(&self, meta: &Meta, payload: &[u8]) -> Result<(), PushError> {
        self.push_marked(meta, payload, false)
    }

    /// Queues one frame of a `publish` (never re-routed if it stays unsent).
    pub(crate) fn push_publish(&self, meta: &Meta, payload: &[u8]) -> Result<(), PushError> {
        self.push_marked(meta, payload, true)
    }

    fn push_marked(&self, meta: &Meta, payload: &[u8], publish: bool) -> Result<(), PushError> {
        if self.is_closed() {
            return Err(PushError::Closed);
        }
        // A frame carries the id its connection announced: the node may have
        // taken a new id since `meta` was made (see
        // `MembershipContext::renumber`), and the peer refuses any other.
        let stamped;
        let meta = match self.session.borrow().me() {
            Some(me) if me != meta.source => {
                stamped = Meta {
                    source: me,
                    ..*meta
                };
                &stamped
            }
            _ => meta,
        };
        if self
            .queue
            .borrow_mut()
            .push(meta, payload, publish)
            .is_err()
        {
            Counters::inc(&self.counters.backpressure);
            self.refused.set(true);
            return Err(PushError::Full);
        }
        self.user_bytes.set(true);
        self.used.mark();
        if meta.kind == FrameKind::Request && meta.correlation == 0 {
            self.calls.set(self.calls.get().saturating_add(1));
        }
        let c = &self.counters;
        Counters::inc(&c.frames_out);
        c.bytes_out.set(
            c.bytes_out.get() + (frame::HEADER_LEN + meta.ext.wire_len() + payload.len()) as u64,
        );
        if meta.kind == FrameKind::Reply {
            Counters::inc(&c.replies);
        }
        self.writer.notify();
        Ok(())
    }

    /// Queues an error answer to request `correlation`; a refused `call`
    /// (correlation 0) names the call's channel and reply channel, so the
    /// caller can report it.
    pub(crate) fn push_error(&self, me: NodeId, answered: &Meta, code: ErrorCode) {
        let _ = self.push_error_payload(me, answered, &code.to_payload());
    }

    /// Queues an error frame with `payload` (a code, or an application
    /// error) answering `answered`.
    pub(crate) fn push_error_payload(
        &self,
        me: NodeId,
        answered: &Meta,
        payload: &[u8],
    ) -> Result<(), PushError> {
        let meta = Meta {
            kind: FrameKind::Error,
            channel: answered.channel,
            reply_channel: answered.reply_channel,
            source: me,
            correlation: answered.correlation,
            ext: crate::frame::Ext::NONE,
        };
        self.push(&meta, payload)
    }

    /// Queues an announcement of this node's new info (channels, state).
    pub(crate) fn push_announce(&self, me: NodeId, info: &[u8]) {
        let meta = Meta {
            kind: FrameKind::Control,
            channel: Channel::ANNOUNCE,
            reply_channel: Channel(0),
            source: me,
            correlation: 0,
            ext: crate::frame::Ext::NONE,
        };
        self.push_control(&meta, info, true);
    }

    /// Queues a control or handshake frame ahead of held user frames;
    /// `progress` says whether it leaving proves the peer reads (heartbeats
    /// do not).
    fn push_control(&self, meta: &Meta, payload: &[u8], progress: bool) {
        // Control frames are small and rare, but a peer that floods
        // heartbeats and never reads must not grow the queue: over the bound
        // they are dropped (the silence timeout deals with such a peer).
        if self.queue.borrow_mut().push_control(meta, payload).is_err() {
            Counters::inc(&self.counters.backpressure);
            return;
        }
        if progress {
            self.user_bytes.set(true);
        }
        self.writer.notify();
    }

    /// Sends the frames held during authentication.
    pub(crate) fn release_held(&self) {
        self.queue.borrow_mut().release();
        self.writer.notify();
    }

    /// Takes out every queued frame that never reached the kernel whole
    /// (see [`WriteQueue::take_unsent`]). Called once the connection failed.
    pub(crate) fn take_unsent(&self) -> Vec<Unsent> {
        self.queue.borrow_mut().take_unsent()
    }

    /// Starts closing: both loops stop, queued bytes not yet written are dropped.
    pub(crate) fn close(&self) {
        self.closing.raise();
        self.writer.notify();
        // Senders waiting for room here try again (and go elsewhere).
        self.announce_room();
    }

    /// [`Conn::announce_room`] once the buffer being written is all out:
    /// the writer then takes the frames queued meanwhile over without
    /// yielding, which is when a refused frame fits (the bound counts those).
    fn announce_room_if_drained(&self) {
        if self.queue.borrow().unwritten().is_empty() {
            self.announce_room();
        }
    }

    /// Wakes the shard's senders waiting for room, once a queue that
    /// refused a frame drained (or closed).
    fn announce_room(&self) {
        if self.refused.replace(false) {
            self.room.notify_all();
        }
    }

    /// Closes because of an error seen outside the reader (e.g. by the writer).
    pub(crate) fn fail(&self, reason: CloseReason) {
        self.failure.borrow_mut().get_or_insert(reason);
        self.close();
    }

    fn closed_reason(&self) -> CloseReason {
        self.failure
            .borrow_mut()
            .take()
            .unwrap_or(CloseReason::Local)
    }

    /// Closes after the queued bytes are written (used to send a refusal).
    pub(crate) fn close_after_flush(&self) {
        self.close_when_flushed.set(true);
        self.writer.notify();
    }

    /// What housekeeping needs to judge this connection at `now`.
    pub(crate) fn observe(&self, now: Instant) -> Observed {
        Observed {
            use_idle: now.saturating_duration_since(self.last_used(now)),
            open: self.session.borrow().is_open(),
            mid_frame: self.mid_frame.get(),
            age: now.saturating_duration_since(self.created),
            read_idle: now.saturating_duration_since(self.read.at(now)),
            write_idle: now.saturating_duration_since(self.wrote.at(now)),
            // The session remembers its own heartbeats.
            heartbeat_idle: now.saturating_duration_since(self.created),
        }
    }

    /// When the bytes of the frame being handled arrived, and whether the
    /// clock was read for it just now (see [`Arrival`]). Meaningful only
    /// while the reader handles that read's frames; with TLS a read is one
    /// decrypted chunk.
    pub(crate) fn arrival(&self) -> (Instant, bool) {
        self.arrival.get(Instant::now)
    }

    /// A message arrived: the connection is in use.
    pub(crate) fn mark_used(&self) {
        self.used.mark();
    }

    /// The answer to one of our `call`s arrived (a reply or a refusal).
    pub(crate) fn call_answered(&self) {
        self.calls.set(self.calls.get().saturating_sub(1));
    }

    /// Whether `call`s sent on this connection are unanswered.
    pub(crate) fn unanswered_calls(&self) -> bool {
        self.calls.get() > 0
    }

    /// Whether a message was queued or received since housekeeping last
    /// looked.
    pub(crate) fn used_since_last_look(&self) -> bool {
        self.used.happened_since_last_look()
    }

    /// When a message was last queued or received, to housekeeping's
    /// resolution: `now` if one was since the last look.
    pub(crate) fn last_used(&self, now: Instant) -> Instant {
        self.used.at(now)
    }

    /// Bytes queued and not yet written.
    pub(crate) fn queued(&self) -> usize {
        self.queue.borrow().pending()
    }

    /// Drops the stream (closing the socket).
    pub(crate) fn release(&self) {
        self.stream.borrow_mut().take();
    }
}
