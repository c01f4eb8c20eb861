//! Blocking frame I/O for membership threads (std sockets, not shards): the
//! same pure codec as the bus, over a small reassembly buffer, and the
//! writing of what a [`Session`] queues.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Instant;

use domi_core::frame::{self, Decoded, Frame, FrameError, Meta};
use domi_core::session::Session;

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
    pub(crate) fn read(&mut self, s: &mut TcpStream, max: u32) -> Result<OwnedFrame, ReadError> {
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
pub(crate) fn write_queued(s: &mut TcpStream, session: &mut Session) -> io::Result<bool> {
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
