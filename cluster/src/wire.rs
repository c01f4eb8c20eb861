//! Blocking frame I/O for membership threads (std sockets, not shards): the
//! same pure codec as the bus, over a small reassembly buffer.

use std::io::{self, Read, Write};
use std::net::TcpStream;

use domi_core::frame::{self, Decoded, FrameError, FrameKind, Meta};
use domi_core::{Channel, NodeId};

/// A frame read by a membership thread (payload copied: control traffic only).
#[derive(Debug)]
pub(crate) struct OwnedFrame {
    pub(crate) meta: Meta,
    pub(crate) payload: Vec<u8>,
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
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// Writes one control frame.
pub(crate) fn write_control(
    s: &mut TcpStream,
    me: NodeId,
    channel: Channel,
    payload: &[u8],
) -> io::Result<()> {
    let mut out = Vec::with_capacity(frame::HEADER_LEN + payload.len());
    let meta = Meta {
        kind: FrameKind::Control,
        channel,
        reply_channel: Channel(0),
        source: me,
        correlation: 0,
    };
    frame::encode(&mut out, &meta, payload);
    s.write_all(&out)
}
