//! One TCP connection on one shard: a batched write queue, a reader loop that
//! decodes frames in place, and a writer loop that flushes the queue in one
//! write per reactor turn.
//!
//! The stream is shared by the reader and writer tasks through a `RefCell`
//! that is only borrowed inside a `poll_*` call, never across an `.await`.
//!
//! The connection counts the bytes it queued and the bytes it handed to the
//! kernel, so when it fails it can tell which frames never left this node
//! ([`Conn::take_unsent`]): those may be sent again to another provider
//! without breaking at-most-once delivery.
//!
//! With TLS ([`crate::tls`]), the reader reads ciphertext into a buffer of
//! its own and has the connection's [`TlsLink`] decrypt it into the receive
//! buffer, where frames are parsed in place as without TLS; the writer has
//! the link seal the queue's bytes into records and counts a frame written
//! once every record carrying it left.

use std::cell::{Cell, Ref, RefCell};
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_lite::{future, AsyncRead, AsyncWrite};
use glommio::net::TcpStream;

use crate::channel::{Channel, NodeId};
use crate::error::ErrorCode;
use crate::frame::{self, Decoded, FrameKind, Meta};
use crate::notify::{Event, Signal, Wake};
use crate::session::{Close, Role, Session};
use crate::stats::Counters;
use crate::timeouts::Observed;
use crate::tls::link::{Pulled, TlsLink};
use crate::tls::{self, TlsClose};
use crate::write_queue::{Unsent, WriteQueue};

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
    last_read: Cell<Instant>,
    /// Last progress writing frames other than heartbeats (a heartbeat
    /// landing in the kernel's socket buffer proves nothing about the peer).
    last_write: Cell<Instant>,
    /// Frames other than heartbeats were queued since the last write.
    user_bytes: Cell<bool>,
    /// A message was queued since housekeeping last looked (see
    /// [`Conn::observe`]); a flag, so the send path reads no clock.
    used: Cell<bool>,
    /// When housekeeping last saw `used` (or creation).
    used_at: Cell<Instant>,
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
            last_read: Cell::new(Instant::now()),
            last_write: Cell::new(Instant::now()),
            user_bytes: Cell::new(false),
            used: Cell::new(false),
            used_at: Cell::new(Instant::now()),
            calls: Cell::new(0),
            mid_frame: Cell::new(false),
        });
        conn.flush_session();
        conn
    }

    /// Queues what the session wants sent (handshake answers, heartbeats,
    /// a refusal), in order, ahead of any held user frame.
    pub(crate) fn flush_session(&self) {
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
        self.used.set(true);
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

    /// Reads what the socket holds. With `spin`, an empty socket is first
    /// tried again directly for up to that long (yielding to the shard's
    /// other tasks in between), like the reactor spinning before it parks:
    /// an answer arriving meanwhile costs no io_uring poll round trip.
    async fn read_some(&self, buf: &mut [u8], spin: Duration) -> io::Result<usize> {
        if !spin.is_zero() {
            if let Some(r) = self.busy_read(buf, spin).await {
                return r;
            }
        }
        let read = poll_fn(|cx| match self.stream.borrow_mut().as_mut() {
            Some(s) => Pin::new(s).poll_read(cx, buf),
            None => std::task::Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        });
        future::or(read, async {
            self.closing.wait().await;
            Err(io::ErrorKind::ConnectionAborted.into())
        })
        .await
    }

    /// Tries a non-blocking `recv` until bytes come or `spin` passes
    /// (`None`: nothing came, arm a poll).
    async fn busy_read(&self, buf: &mut [u8], spin: Duration) -> Option<io::Result<usize>> {
        use nix::sys::socket::{recv, MsgFlags};
        self.busy(spin, |fd| recv(fd, buf, MsgFlags::MSG_DONTWAIT))
            .await
    }

    /// Tries `attempt` (a non-blocking syscall on the socket) until it is
    /// not `EAGAIN` or `spin` passes, yielding in between (`None`: still
    /// `EAGAIN`, arm a poll). A connection closed meanwhile ends it with
    /// `ConnectionAborted`, as the poll would.
    async fn busy(
        &self,
        spin: Duration,
        mut attempt: impl FnMut(std::os::fd::RawFd) -> nix::Result<usize>,
    ) -> Option<io::Result<usize>> {
        use nix::errno::Errno;
        use std::os::fd::AsRawFd;
        let started = Instant::now();
        loop {
            // The stream may have been released while we yielded.
            let fd = self.stream.borrow().as_ref()?.as_raw_fd();
            match attempt(fd) {
                Ok(n) => return Some(Ok(n)),
                Err(Errno::EAGAIN) => {}
                Err(Errno::EINTR) => continue,
                Err(e) => return Some(Err(e.into())),
            }
            if self.is_closed() {
                return Some(Err(io::ErrorKind::ConnectionAborted.into()));
            }
            if started.elapsed() >= spin {
                return None;
            }
            future::yield_now().await;
        }
    }

    /// Writes the queue's current buffer; `progress` says whether bytes
    /// leaving count as the line making progress (see `last_write`).
    async fn write_current(&self, progress: bool, spin: Duration) -> io::Result<()> {
        if let Some(tls) = &self.tls {
            return self.write_sealed(tls, progress, spin).await;
        }
        loop {
            if self.queue.borrow().unwritten().is_empty() {
                return Ok(());
            }
            let n = self
                .write_some(|| Ref::map(self.queue.borrow(), |q| q.unwritten()), spin)
                .await?;
            if progress {
                self.last_write.set(Instant::now());
            }
            self.queue.borrow_mut().advance(n);
            self.announce_room_if_drained();
        }
    }

    /// The same through TLS: the link seals the queue's bytes into records
    /// (its own handshake records and alerts go first), and the queue counts
    /// as written only the bytes whose records all left.
    async fn write_sealed(
        &self,
        tls: &RefCell<TlsLink>,
        progress: bool,
        spin: Duration,
    ) -> io::Result<()> {
        loop {
            {
                let mut link = tls.borrow_mut();
                let queue = self.queue.borrow();
                while link.seal(queue.unwritten()) {}
                if !link.wants_write() {
                    return Ok(());
                }
            }
            let n = self
                .write_some(|| Ref::map(tls.borrow(), |t| t.records()), spin)
                .await?;
            if progress {
                self.last_write.set(Instant::now());
            }
            let plain = tls.borrow_mut().wrote(n);
            self.queue.borrow_mut().advance(plain);
            self.announce_room_if_drained();
        }
    }

    /// One write of `bytes` (non-empty) to the stream, unless the connection
    /// closes first. With `spin`, a full socket is first tried again
    /// directly for up to that long, yielding in between: a producer that
    /// keeps the shard's task queue busy (glommio polls I/O only when the
    /// queue runs dry or its preemption timer fires) must not leave the
    /// writer waiting for a poll completion nobody reaps.
    async fn write_some<'a>(
        &'a self,
        bytes: impl Fn() -> Ref<'a, [u8]>,
        spin: Duration,
    ) -> io::Result<usize> {
        if !spin.is_zero() {
            if let Some(r) = self.busy_write(&bytes, spin).await {
                return nonzero_write(r?);
            }
        }
        let write = poll_fn(|cx| match self.stream.borrow_mut().as_mut() {
            Some(s) => Pin::new(s).poll_write(cx, &bytes()),
            None => std::task::Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        });
        let n = future::or(write, async {
            self.closing.wait().await;
            Err(io::ErrorKind::ConnectionAborted.into())
        })
        .await?;
        nonzero_write(n)
    }

    /// Tries a non-blocking `send` until the kernel takes bytes or `spin`
    /// passes (`None`: the socket stayed full, arm a poll).
    async fn busy_write<'a>(
        &'a self,
        bytes: &impl Fn() -> Ref<'a, [u8]>,
        spin: Duration,
    ) -> Option<io::Result<usize>> {
        use nix::sys::socket::{send, MsgFlags};
        let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
        self.busy(spin, |fd| send(fd, &bytes(), flags)).await
    }

    /// Whether the TLS layer has records to send (handshake, alerts).
    fn tls_wants_write(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.borrow().wants_write())
    }

    /// Flushes the queue whenever it is notified, until the connection
    /// closes; `spin` as for reads (see [`Conn::read_some`]). An error once
    /// the connection is closing is that close, not a failure of its own.
    pub(crate) async fn write_loop(self: Rc<Self>, spin: Duration) -> Result<(), CloseReason> {
        loop {
            self.writer.wait().await;
            if self.is_closed() {
                return Ok(());
            }
            if self.stream.borrow().is_none() {
                continue;
            }
            let progress = self.user_bytes.replace(false);
            if self.queue.borrow_mut().begin_write() || self.tls_wants_write() {
                Counters::inc(&self.counters.writes);
                if let Err(e) = self.write_current(progress, spin).await {
                    if self.is_closed() {
                        return Ok(());
                    }
                    return Err(e.into());
                }
            }
            if self.close_when_flushed.get() && self.queue.borrow().pending() == 0 {
                self.close();
                return Ok(());
            }
        }
    }

    /// Reads and decodes frames, calling `on_frame` for each, until an error.
    ///
    /// Reading never stops for overload: replies, errors and heartbeats must
    /// always get through (new requests are gated where they are delivered).
    pub(crate) async fn read_loop(
        &self,
        max_payload: u32,
        spin: Duration,
        mut on_frame: impl FnMut(frame::Frame<'_>) -> Result<(), CloseReason>,
    ) -> CloseReason {
        const INITIAL: usize = 256 * 1024;
        let mut buf = vec![0u8; INITIAL];
        let (mut start, mut end) = (0usize, 0usize);
        let mut cipher = Cipher::new(self.tls.is_some());
        // Requests and replies handled since the reader last let others run.
        let mut answered = 0usize;
        loop {
            // Decode every complete frame in the buffer. Until the handshake
            // is done, only handshake-sized frames are accepted.
            loop {
                let limit = self.session.borrow().payload_limit(max_payload);
                match frame::decode(&buf[start..end], limit) {
                    Ok(Decoded::Frame { frame, consumed }) => {
                        start += consumed;
                        answered += usize::from(frame.meta.kind.wakes_others());
                        if let Err(r) = on_frame(frame) {
                            return r;
                        }
                        // Pipelining: the replies these frames queued and the
                        // callers they woke get to run before more is read or
                        // handled (a socket that always has bytes would
                        // never make the reader wait), so answers leave while
                        // more requests arrive and the two sides overlap
                        // rather than move in lock-step bursts.
                        if answered >= YIELD_AFTER_ANSWERED {
                            answered = 0;
                            future::yield_now().await;
                        }
                    }
                    Ok(Decoded::Incomplete { need }) => {
                        let have = end - start;
                        if have == 0 {
                            start = 0;
                            end = 0;
                            if buf.len() > 4 * INITIAL {
                                buf = vec![0u8; INITIAL];
                            }
                        } else if start + have + need > buf.len() {
                            buf.copy_within(start..end, 0);
                            start = 0;
                            end = have;
                            // Grow only as bytes arrive: a header declaring a
                            // large payload costs nothing until it is sent.
                            let len = frame::grown_len(buf.len(), have, need);
                            if len > buf.len() {
                                buf.resize(len, 0);
                            }
                        }
                        break;
                    }
                    Err(frame::FrameError::BadMagic { found })
                        if self.tls.is_none() && tls::looks_like_tls(found) =>
                    {
                        return CloseReason::Tls(TlsClose::PeerUsesTls)
                    }
                    Err(e) => return CloseReason::Frame(e),
                }
            }
            self.mid_frame.set(end > start);
            if self.is_closed() {
                return self.closed_reason();
            }
            // A socket that always has bytes never makes `read_some` wait:
            // let the shard's other connections (and their heartbeats) run
            // when the reactor says this task had its share.
            glommio::yield_if_needed().await;
            match self.fill(&mut cipher, &mut buf[end..], spin).await {
                Ok(n) => {
                    end += n;
                    self.last_read.set(Instant::now());
                }
                Err(CloseReason::Io(e))
                    if e.kind() == io::ErrorKind::ConnectionAborted && self.is_closed() =>
                {
                    return self.closed_reason()
                }
                // A TLS alert is shorter than a frame header: name it.
                Err(CloseReason::Eof) if self.tls.is_none() && end - start >= 2 => {
                    let magic = u16::from_le_bytes([buf[start], buf[start + 1]]);
                    if tls::looks_like_tls(magic) {
                        return CloseReason::Tls(TlsClose::PeerUsesTls);
                    }
                    return CloseReason::Eof;
                }
                Err(r) => return r,
            }
        }
    }

    /// Reads more of the stream into `buf`: its bytes, or with TLS the
    /// plaintext of the records read into `cipher`. Never `Ok(0)`.
    async fn fill(
        &self,
        cipher: &mut Cipher,
        buf: &mut [u8],
        spin: Duration,
    ) -> Result<usize, CloseReason> {
        let Some(tls) = &self.tls else {
            return match self.read_some(buf, spin).await? {
                0 => Err(CloseReason::Eof),
                n => Ok(n),
            };
        };
        loop {
            let pulled = {
                let mut link = tls.borrow_mut();
                let was_handshaking = link.is_handshaking();
                let mut pending = &cipher.buf[cipher.start..cipher.end];
                let before = pending.len();
                let pulled = link.pull(&mut pending, buf);
                cipher.start += before - pending.len();
                if link.wants_write() || (was_handshaking && !link.is_handshaking()) {
                    self.writer.notify(); // handshake answers, or held frames
                }
                pulled
            };
            match pulled {
                Ok(Pulled::Plain(n)) => return Ok(n),
                Ok(Pulled::Closed) => return Err(CloseReason::Eof),
                Ok(Pulled::NeedMore) => {}
                Err(e) => {
                    self.send_alert(tls);
                    return Err(e.into());
                }
            }
            // Everything read was used: read more ciphertext.
            let n = self.read_some(&mut cipher.buf, spin).await?;
            // A node without TLS that this one dialled closes at once, having
            // said nothing; an accepting node closed on by a TCP check (or
            // a port scan) before any byte came is just an end.
            let silent_refusal =
                tls.borrow().is_handshaking() && (self.dir == Dir::Outbound || cipher.received > 0);
            if n == 0 {
                return Err(if silent_refusal {
                    TlsClose::HandshakeEof.into()
                } else {
                    CloseReason::Eof
                });
            }
            cipher.received += n as u64;
            (cipher.start, cipher.end) = (0, n);
        }
    }

    /// Tries once, without waiting, to write the alert TLS queued on a
    /// failure, so the peer learns why (e.g. its certificate was refused).
    /// Only when the records waiting are the link's own: sealed frames
    /// leaving here would not be counted written, and would be re-routed.
    fn send_alert(&self, tls: &RefCell<TlsLink>) {
        use std::os::fd::AsRawFd;
        let link = tls.borrow();
        if link.holds_sealed() {
            return;
        }
        let Some(fd) = self.stream.borrow().as_ref().map(|s| s.as_raw_fd()) else {
            return;
        };
        let _ =
            nix::sys::socket::send(fd, link.records(), nix::sys::socket::MsgFlags::MSG_DONTWAIT);
    }

    /// What housekeeping needs to judge this connection at `now`.
    pub(crate) fn observe(&self, now: Instant) -> Observed {
        Observed {
            use_idle: now.saturating_duration_since(self.last_used(now)),
            open: self.session.borrow().is_open(),
            mid_frame: self.mid_frame.get(),
            age: now.saturating_duration_since(self.created),
            read_idle: now.saturating_duration_since(self.last_read.get()),
            write_idle: now.saturating_duration_since(self.last_write.get()),
            // The session remembers its own heartbeats.
            heartbeat_idle: now.saturating_duration_since(self.created),
        }
    }

    /// A message arrived: the connection is in use.
    pub(crate) fn mark_used(&self) {
        self.used.set(true);
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
        self.used.get()
    }

    /// When a message was last queued or received, to housekeeping's
    /// resolution: `now` if one was since the last look.
    pub(crate) fn last_used(&self, now: Instant) -> Instant {
        if self.used.replace(false) {
            self.used_at.set(now);
        }
        self.used_at.get()
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

/// A TLS connection's ciphertext read from the socket and not yet decrypted
/// (`buf[start..end]`); empty without TLS.
struct Cipher {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Bytes read from the socket so far.
    received: u64,
}

impl Cipher {
    fn new(tls: bool) -> Cipher {
        Cipher {
            buf: if tls {
                vec![0u8; 64 * 1024]
            } else {
                Vec::new()
            },
            start: 0,
            end: 0,
            received: 0,
        }
    }
}

/// How many requests or answers a reader handles before it lets the tasks
/// and writers they woke run (one-way and control frames, which wake
/// nobody, do not count). Half of a typical window of 64 in flight: the
/// first half's answers leave while the second half is handled.
const YIELD_AFTER_ANSWERED: usize = 32;

/// A write the kernel took nothing of is an error (the stream cannot go on).
fn nonzero_write(n: usize) -> io::Result<usize> {
    if n == 0 {
        return Err(io::ErrorKind::WriteZero.into());
    }
    Ok(n)
}
