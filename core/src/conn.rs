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

use std::cell::{Cell, RefCell};
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
use crate::notify::{Signal, Wake};
use crate::session::{Close, Role, Session};
use crate::stats::Counters;
use crate::timeouts::Observed;
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
    #[error("closed locally")]
    Local,
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
    stream: RefCell<Option<TcpStream>>,
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
    mid_frame: Cell<bool>,
}

impl Conn {
    /// A connection driven by `session`; its first frames (the HELLO) are
    /// queued at once, and user frames are held while the session says so.
    pub(crate) fn new(
        id: u64,
        dir: Dir,
        session: Session,
        max_queue: usize,
        counters: Rc<Counters>,
    ) -> Rc<Conn> {
        let hold = session.holds_user_frames();
        let conn = Rc::new(Conn {
            id,
            dir,
            remote: Cell::new(None),
            session: RefCell::new(session),
            counters,
            stream: RefCell::new(None),
            queue: RefCell::new(WriteQueue::new(max_queue, hold)),
            writer: Wake::default(),
            closing: Signal::default(),
            close_when_flushed: Cell::new(false),
            failure: RefCell::new(None),
            created: Instant::now(),
            last_read: Cell::new(Instant::now()),
            last_write: Cell::new(Instant::now()),
            user_bytes: Cell::new(false),
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
        if self
            .queue
            .borrow_mut()
            .push(meta, payload, publish)
            .is_err()
        {
            Counters::inc(&self.counters.backpressure);
            return Err(PushError::Full);
        }
        self.user_bytes.set(true);
        let c = &self.counters;
        Counters::inc(&c.frames_out);
        c.bytes_out
            .set(c.bytes_out.get() + (frame::HEADER_LEN + payload.len()) as u64);
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
        let meta = Meta {
            kind: FrameKind::Error,
            channel: answered.channel,
            reply_channel: answered.reply_channel,
            source: me,
            correlation: answered.correlation,
        };
        let _ = self.push(&meta, &code.to_payload());
    }

    /// Queues an announcement of this node's new info (channels, state).
    pub(crate) fn push_announce(&self, me: NodeId, info: &[u8]) {
        let meta = Meta {
            kind: FrameKind::Control,
            channel: Channel::ANNOUNCE,
            reply_channel: Channel(0),
            source: me,
            correlation: 0,
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
        use nix::errno::Errno;
        use nix::sys::socket::{recv, MsgFlags};
        use std::os::fd::AsRawFd;
        let fd = self.stream.borrow().as_ref()?.as_raw_fd();
        let started = Instant::now();
        loop {
            match recv(fd, buf, MsgFlags::MSG_DONTWAIT) {
                Ok(n) => return Some(Ok(n)),
                Err(Errno::EAGAIN) => {}
                Err(Errno::EINTR) => continue,
                Err(e) => return Some(Err(e.into())),
            }
            if self.is_closed() || started.elapsed() >= spin {
                return None;
            }
            future::yield_now().await;
            // The stream may have been released while we yielded.
            self.stream.borrow().as_ref()?;
        }
    }

    /// Writes the queue's current buffer; `progress` says whether bytes
    /// leaving count as the line making progress (see `last_write`).
    async fn write_current(&self, progress: bool) -> io::Result<()> {
        loop {
            if self.queue.borrow().unwritten().is_empty() {
                return Ok(());
            }
            let write = poll_fn(|cx| {
                let queue = self.queue.borrow();
                match self.stream.borrow_mut().as_mut() {
                    Some(s) => Pin::new(s).poll_write(cx, queue.unwritten()),
                    None => std::task::Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
                }
            });
            let n = future::or(write, async {
                self.closing.wait().await;
                Err(io::ErrorKind::ConnectionAborted.into())
            })
            .await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            if progress {
                self.last_write.set(Instant::now());
            }
            self.queue.borrow_mut().advance(n);
        }
    }

    /// Flushes the queue whenever it is notified, until the connection closes.
    pub(crate) async fn write_loop(self: Rc<Self>) -> Result<(), CloseReason> {
        loop {
            self.writer.wait().await;
            if self.is_closed() {
                return Ok(());
            }
            if self.stream.borrow().is_none() {
                continue;
            }
            let progress = self.user_bytes.replace(false);
            if self.queue.borrow_mut().begin_write() {
                Counters::inc(&self.counters.writes);
                self.write_current(progress).await?;
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
        loop {
            // Decode every complete frame in the buffer. Until the handshake
            // is done, only handshake-sized frames are accepted.
            loop {
                let limit = self.session.borrow().payload_limit(max_payload);
                match frame::decode(&buf[start..end], limit) {
                    Ok(Decoded::Frame { frame, consumed }) => {
                        start += consumed;
                        if let Err(r) = on_frame(frame) {
                            return r;
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
            match self.read_some(&mut buf[end..], spin).await {
                Ok(0) => return CloseReason::Eof,
                Ok(n) => {
                    end += n;
                    self.last_read.set(Instant::now());
                }
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted && self.is_closed() => {
                    return self.closed_reason()
                }
                Err(e) => return CloseReason::Io(e),
            }
        }
    }

    /// What housekeeping needs to judge this connection at `now`.
    pub(crate) fn observe(&self, now: Instant) -> Observed {
        Observed {
            open: self.session.borrow().is_open(),
            mid_frame: self.mid_frame.get(),
            age: now.saturating_duration_since(self.created),
            read_idle: now.saturating_duration_since(self.last_read.get()),
            write_idle: now.saturating_duration_since(self.last_write.get()),
            // The session remembers its own heartbeats.
            heartbeat_idle: now.saturating_duration_since(self.created),
        }
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
