//! A connection's socket I/O: the reader loop that decodes frames in place,
//! the writer loop that flushes the write queue in one write per reactor
//! turn, and the busy-polling of an empty or full socket before arming a
//! poll.
//!
//! The stream is shared by the reader and writer tasks through a `RefCell`
//! that is only borrowed inside a `poll_*` call, never across an `.await`.
//!
//! With TLS ([`crate::tls`]), the reader reads ciphertext into a buffer of
//! its own and has the connection's [`TlsLink`] decrypt it into the receive
//! buffer, where frames are parsed in place as without TLS; the writer has
//! the link seal the queue's bytes into records and counts a frame written
//! once every record carrying it left.

use std::cell::{Ref, RefCell};
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_lite::{future, AsyncRead, AsyncWrite};

use super::{CloseReason, Conn, Dir};
use crate::frame::{self, Decoded};
use crate::stats::Counters;
use crate::tls::link::{Pulled, TlsLink};
use crate::tls::{self, TlsClose};

impl Conn {
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
        // The clock is read from the first `EAGAIN` on: most attempts
        // succeed at once and read none.
        let mut started = None;
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
            if started.get_or_insert_with(Instant::now).elapsed() >= spin {
                return None;
            }
            future::yield_now().await;
        }
    }

    /// Writes the queue's current buffer; `progress` says whether bytes
    /// leaving count as the line making progress (see `Conn::observe`).
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
                self.wrote.mark();
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
                self.wrote.mark();
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
        // Whether a frame handled since the last read woke other tasks.
        let mut woke = false;
        loop {
            // Decode every complete frame in the buffer. Until the handshake
            // is done, only handshake-sized frames are accepted.
            loop {
                let limit = self.session.borrow().payload_limit(max_payload);
                match frame::decode(&buf[start..end], limit) {
                    Ok(Decoded::Frame { frame, consumed }) => {
                        start += consumed;
                        let wakes = frame.meta.kind.wakes_others();
                        answered += usize::from(wakes);
                        woke |= wakes;
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
            // Frames that woke other tasks (callers, handlers, the writer of
            // their answers): let them run before reading on, so answers
            // leave and new requests are queued before a `recv` that would
            // only find the socket empty.
            if woke {
                woke = false;
                future::yield_now().await;
            } else {
                // A socket that always has bytes never makes `read_some`
                // wait: let the shard's other connections (and their
                // heartbeats) run when the reactor says this task had its share.
                glommio::yield_if_needed().await;
            }
            match self.fill(&mut cipher, &mut buf[end..], spin).await {
                Ok(n) => {
                    end += n;
                    self.read.mark();
                    self.arrival.reset();
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
