//! Blocking frame I/O for membership threads (std sockets, not shards): the
//! same pure codec as the bus, over a small reassembly buffer, the writing
//! of what a [`Session`] queues, and the stream itself ([`BusStream`]),
//! through TLS when the node has it.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use domi_core::frame::{self, Decoded, Frame, FrameError, Meta};
use domi_core::session::Session;
use domi_core::tls::{classify_io, TlsClose, TlsConfig};

/// A frame read by a membership thread (payload copied: control traffic only).
#[derive(Debug)]
pub(crate) struct OwnedFrame {
    pub(crate) meta: Meta,
    pub(crate) payload: Vec<u8>,
}

impl OwnedFrame {
    /// The frame as the codec hands it out, borrowing the payload.
    pub(crate) fn frame(&self) -> Frame<'_> {
        Frame {
            meta: self.meta,
            payload: &self.payload,
        }
    }
}

/// Why a blocking frame read failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    #[error("malformed frame: {0}")]
    Frame(#[from] FrameError),
    #[error("peer closed the connection")]
    Eof,
}

/// Reassembles frames from a blocking stream.
#[derive(Default)]
pub(crate) struct Framer {
    buf: Vec<u8>,
    arrived: Option<Instant>,
}

impl Framer {
    /// The next frame; a read timeout surfaces as `Io(WouldBlock | TimedOut)`.
    pub(crate) fn read(&mut self, s: &mut impl Read, max: u32) -> Result<OwnedFrame, ReadError> {
        loop {
            if let Decoded::Frame { frame, consumed } = frame::decode(&self.buf, max)? {
                let f = OwnedFrame {
                    meta: frame.meta,
                    payload: frame.payload.to_vec(),
                };
                self.buf.drain(..consumed);
                return Ok(f);
            }
            let mut chunk = [0u8; 4096];
            let n = s.read(&mut chunk)?;
            if n == 0 {
                return Err(ReadError::Eof);
            }
            self.arrived = Some(Instant::now());
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// When bytes last arrived, if ever.
    pub(crate) fn arrived(&self) -> Option<Instant> {
        self.arrived
    }

    /// Whether part of a frame is buffered.
    pub(crate) fn mid_frame(&self) -> bool {
        !self.buf.is_empty()
    }
}

/// Writes every frame `session` queued, in one write. Returns whether
/// anything but heartbeats left (heartbeats prove nothing about the peer
/// reading, see `timeouts::Observed::write_idle`).
pub(crate) fn write_queued(s: &mut impl Write, session: &mut Session) -> io::Result<bool> {
    let mut out = Vec::new();
    let mut progress = false;
    while let Some(t) = session.poll_transmit() {
        progress |= !t.is_heartbeat();
        t.encode(&mut out);
    }
    if !out.is_empty() {
        s.write_all(&out)?;
    }
    Ok(progress)
}

/// A membership thread's connection to a peer's bus port: plain, or TLS
/// (the bus's own, with the node's certificate) when the node has it.
pub(crate) enum BusStream {
    /// TLS off.
    Plain(TcpStream),
    /// TLS on, the handshake done.
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

/// Why a [`BusStream`] could not be opened.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OpenError {
    #[error("i/o during the TLS handshake: {source}")]
    Io {
        #[from]
        source: io::Error,
    },
    #[error("the TLS handshake did not finish within {within:?}")]
    Timeout { within: Duration },
    #[error(transparent)]
    Tls(#[from] TlsClose),
}

impl BusStream {
    /// Wraps a connected socket whose read timeout is set, running the TLS
    /// handshake (for at most `within`) when `tls` is given.
    pub(crate) fn open(
        mut sock: TcpStream,
        tls: Option<&TlsConfig>,
        within: Duration,
    ) -> Result<BusStream, OpenError> {
        let Some(tls) = tls else {
            return Ok(BusStream::Plain(sock));
        };
        let mut conn = tls.client_connection(sock.peer_addr()?.ip())?;
        let deadline = Instant::now() + within;
        while conn.is_handshaking() {
            // (A peer trickling bytes keeps `complete_io` returning `Ok`.)
            if Instant::now() >= deadline {
                return Err(OpenError::Timeout { within });
            }
            match conn.complete_io(&mut sock) {
                Ok(_) => {}
                Err(e) if is_timeout(&e) => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    return Err(TlsClose::HandshakeEof.into())
                }
                Err(e) => {
                    return Err(classify_io(&e).map_or(OpenError::Io { source: e }, OpenError::Tls))
                }
            }
        }
        Ok(BusStream::Tls(Box::new(rustls::StreamOwned::new(
            conn, sock,
        ))))
    }
}

/// Whether `e` is a socket read timeout.
pub(crate) fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

impl Read for BusStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            BusStream::Plain(s) => s.read(buf),
            BusStream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for BusStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            BusStream::Plain(s) => s.write(buf),
            BusStream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            BusStream::Plain(s) => s.flush(),
            BusStream::Tls(s) => s.flush(),
        }
    }
}
