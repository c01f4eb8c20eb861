//! Per-shard counters: plain `Cell`s on the hot path, summed on demand.

use std::cell::Cell;

/// A shard's counters (single-threaded; no atomics on the message path).
#[derive(Default, Debug)]
pub(crate) struct Counters {
    pub(crate) frames_in: Cell<u64>,
    pub(crate) bytes_in: Cell<u64>,
    pub(crate) sent: Cell<u64>,
    pub(crate) handled: Cell<u64>,
    pub(crate) unhandled: Cell<u64>,
    pub(crate) bad_closes: Cell<u64>,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> Snapshot {
        Snapshot {
            frames_in: self.frames_in.get(),
            bytes_in: self.bytes_in.get(),
            sent: self.sent.get(),
            handled: self.handled.get(),
            unhandled: self.unhandled.get(),
            bad_closes: self.bad_closes.get(),
        }
    }
}

/// A copy of counters, per shard or summed over a node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Frames received.
    pub frames_in: u64,
    /// Bytes received (headers included).
    pub bytes_in: u64,
    /// Messages sent (requests, calls, one-way).
    pub sent: u64,
    /// Messages handed to a handler.
    pub handled: u64,
    /// Messages for a channel with no handler.
    pub unhandled: u64,
    /// Connections closed because of an error (malformed input, refused handshake, i/o).
    pub bad_closes: u64,
}

impl std::ops::Add for Snapshot {
    type Output = Snapshot;
    fn add(self, o: Snapshot) -> Snapshot {
        Snapshot {
            frames_in: self.frames_in + o.frames_in,
            bytes_in: self.bytes_in + o.bytes_in,
            sent: self.sent + o.sent,
            handled: self.handled + o.handled,
            unhandled: self.unhandled + o.unhandled,
            bad_closes: self.bad_closes + o.bad_closes,
        }
    }
}
